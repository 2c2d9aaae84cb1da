"""A team's own Windows sources through hil.deploy.windows_build: real mingw-w64, no mocks.

Every test builds into a cache folder of its own (``HIL_CACHE_DIR``), so its first build is
never a hit left by an earlier run, and runs leave nothing behind in the machine's cache.
"""

from __future__ import annotations

import shutil
import textwrap
import uuid
from pathlib import Path

import pytest

from hil.deploy import pecheck, windows_build
from hil.deploy.windows_build import BuildError, Target

pytestmark = [
    pytest.mark.windows,
    pytest.mark.skipif(
        shutil.which(windows_build.CC) is None,
        reason=f"mingw-w64 is not installed (apt-get install -y {windows_build.APT_PACKAGES})",
    ),
]

# A WSK client that compiles only with the shipped headers on the include path (wsk.h is not in
# mingw-w64) and links the shipped protocol codec; its marker comes from the team's own header.
DRIVER_C = """\
#include <ntddk.h>
#include <wsk.h>
#include "hil_proto.h"
#include "team.h"
#include "sub/more.h"

static const WSK_CLIENT_DISPATCH dispatch = {MAKE_WSK_VERSION(1, 0), 0, NULL};
static WSK_REGISTRATION registration;
static const char marker[] = TEAM_MARKER MORE_MARKER;

static VOID NTAPI Unload(PDRIVER_OBJECT driver)
{
    WskDeregister(&registration);
}

NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path)
{
    UCHAR frame[HIL_REQUEST_FRAME_LEN];
    WSK_CLIENT_NPI npi = {NULL, &dispatch};

    DbgPrint("%s %d\\n", marker, hil_encode_request(frame, sizeof(frame), 1));
    driver->DriverUnload = Unload;
    return WskRegister(&npi, &registration);
}
"""


def token() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HIL_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def project(tmp_path) -> Path:
    """A team's tree: driver/teamdrv.c (+ driver/sub/more.h), include/team.h."""
    (tmp_path / "driver" / "sub").mkdir(parents=True)
    (tmp_path / "include").mkdir()
    (tmp_path / "driver" / "teamdrv.c").write_text(DRIVER_C)
    (tmp_path / "driver" / "sub" / "more.h").write_text('#define MORE_MARKER " more"\n')
    (tmp_path / "include" / "team.h").write_text(f'#define TEAM_MARKER "team-{token()}"\n')
    return tmp_path


def build(project: Path, **kw) -> Path:
    return windows_build.build_driver(
        ["driver/teamdrv.c", *windows_build.PROTOCOL_SOURCES], source_root=project, include_dirs=["include"], **kw
    )


def test_unchanged_sources_are_a_cache_hit(project):
    key = windows_build.build_key([Target("teamdrv.sys", ["driver/teamdrv.c"], "driver")], project)
    first = build(project)
    assert first.name == "teamdrv.sys" and first.parent.parent == windows_build.build_root()
    built_at = first.stat().st_mtime_ns
    again = build(project)
    assert again == first and again.stat().st_mtime_ns == built_at  # found, not rebuilt
    # The same rows give the same key: a lookup, not a build (the build's own result says so).
    res = windows_build.build(
        [
            Target(
                "teamdrv.sys",
                ["driver/teamdrv.c", *windows_build.PROTOCOL_SOURCES],
                "driver",
                windows_build.NT_LIBS,
                include_dirs=["include"],
            )
        ],
        project,
    )
    assert res.cached and res["teamdrv.sys"] == first
    assert key != res.key  # other rows (no codec, no include dir), other key


def test_a_changed_header_of_the_team_is_a_new_build(project):
    first = build(project)
    assert b"team-" in first.read_bytes()
    new = token()
    (project / "include" / "team.h").write_text(f'#define TEAM_MARKER "team-{new}"\n')
    second = build(project)
    assert second != first and f"team-{new}".encode() in second.read_bytes()
    # a header below the source's folder counts too, however deep
    (project / "driver" / "sub" / "more.h").write_text(f'#define MORE_MARKER " more-{new}"\n')
    third = build(project)
    assert third not in (first, second) and f"more-{new}".encode() in third.read_bytes()
    # and the outputs of earlier builds are untouched
    assert first.is_file() and second.is_file()


def test_shipped_include_dirs_and_codec_make_a_loadable_driver(project):
    sys_file = build(project)
    report = pecheck.check_driver(sys_file).raise_for_problems()
    assert report.subsystem == pecheck.IMAGE_SUBSYSTEM_NATIVE
    assert report.checksum_stored == report.checksum_computed != 0
    imports = {d.upper(): set(fs) for d, fs in report.imports.items()}
    assert {"WskRegister", "WskDeregister"} <= imports["NETIO.SYS"]
    assert all(d.exists() for d in windows_build.SHIPPED_INCLUDE_DIRS)


def test_a_compile_error_names_the_file_and_line(project):
    src = project / "driver" / "teamdrv.c"
    lines = DRIVER_C.splitlines()
    lines.insert(9, "static int broken = undeclared_identifier;")  # line 10
    src.write_text("\n".join(lines) + f"\n/* {token()} */\n")
    with pytest.raises(BuildError) as err:
        build(project)
    first_line = str(err.value).splitlines()[0]
    assert f"{src}:10: 'undeclared_identifier' undeclared" in first_line
    assert first_line.startswith("building teamdrv.sys failed:")
    assert err.value.fix == f"correct {src} at line 10"


def test_a_driver_calling_user_mode_is_refused_by_the_pe_check(tmp_path):
    (tmp_path / "bad.c").write_text(
        textwrap.dedent(f"""\
        #include <ntddk.h>
        __declspec(dllimport) unsigned long __stdcall GetTickCount(void);
        NTSTATUS NTAPI DriverEntry(PDRIVER_OBJECT d, PUNICODE_STRING r)
        {{
            DbgPrint("{token()} %lu", GetTickCount());
            return STATUS_SUCCESS;
        }}
        """)
    )
    with pytest.raises(
        BuildError,
        match=r"bad\.sys is not a loadable kernel driver: imports from non-kernel "
        r"modules: KERNEL32\.dll",
    ):
        windows_build.build_driver([tmp_path / "bad.c"], libs=["ntoskrnl", "kernel32"])


def test_a_missing_source_is_named_with_the_root_it_was_looked_up_in(tmp_path):
    with pytest.raises(BuildError) as err:
        windows_build.build_driver(["driver/absent.c"], source_root=tmp_path)
    assert str(tmp_path / "driver" / "absent.c") in err.value.problem
    assert str(tmp_path) in err.value.fix


def test_a_console_program_builds_from_absolute_paths(tmp_path):
    (tmp_path / "hello.c").write_text(f'#include <stdio.h>\nint wmain(void) {{ puts("hello {token()}"); return 0; }}\n')
    exe = windows_build.build_exe([tmp_path / "hello.c"])
    assert exe.name == "hello.exe"
    assert pecheck.inspect(exe).subsystem == 3  # IMAGE_SUBSYSTEM_WINDOWS_CUI


def test_mingw_fixture_fails_the_test_with_the_compilers_messages(pytester):
    """Through the public fixture, a team's broken source is a failed test naming file and line."""
    (pytester.path / "driver").mkdir()
    (pytester.path / "driver" / "mine.c").write_text(f"/* {token()} */\n#include <ntddk.h>\nint x = y;\n")
    pytester.makepyfile(
        test_team="""
        def test_build(mingw):
            mingw.build_driver(["driver/mine.c"])
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*kernel-hil mingw: building mine.sys failed: *driver/mine.c:3: 'y' undeclared*"])
