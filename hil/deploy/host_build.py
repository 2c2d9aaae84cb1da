"""Compiling one C file on the host, cached by what goes into it.

Used for the small tools copied into guests (``hil.deploy.reference``) and for the collector's
native protocol codec (``hil.protocol.native``).  The cache key is the source, the files it
includes, the flags and the compiler's version; the output is written under a temporary name
and renamed, so concurrent builders (xdist workers) never see a partial file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from hil.errors import EnvironmentProblem, HilError
from hil.paths import cache_root


def compiler_messages(output: str, limit: int = 60) -> str:
    """The lines of a failed build a human needs: errors and warnings first."""
    lines = output.splitlines()
    keep = [ln for ln in lines if re.search(r"(error|warning|undefined|\*\*\*)", ln, re.I)]
    return "\n".join((keep or lines)[-limit:])


def compile_c(
    source: Path,
    *,
    flags: Iterable[str],
    cc: str = "gcc",
    depends: Iterable[Path] = (),
    cache: str = "kmod/tools",
    output: str | None = None,
) -> Path:
    """Compile ``source`` with ``cc`` and ``flags`` into ``<cache root>/<cache>/<key>/<output>``
    (``output`` defaults to the source's stem); ``depends`` are the headers it includes."""
    source, flags = Path(source), list(flags)
    if shutil.which(cc) is None:
        raise EnvironmentProblem(f"'{cc}' not found", "apt-get install -y gcc libc6-dev")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    h = hashlib.sha256(source.read_bytes())
    for dep in depends:
        h.update(Path(dep).read_bytes())
    h.update("\0".join([cc, version, *flags]).encode())
    out = cache_root() / cache / h.hexdigest()[:24] / (output or source.stem)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    proc = subprocess.run(
        [cc, *flags, "-o", str(tmp), str(source)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise HilError(f"compiling {source.name} failed:\n{compiler_messages(proc.stdout + proc.stderr)}")
    os.replace(tmp, out)
    return out
