"""Map the repository's run-time folders into the wheel.

The framework needs ``drivers/`` (the protocol sources the native codec and the agents compile,
the reference drivers the suites build), ``guests/`` (the embedded guest recipe) and ``suites/``
(the qualification suites, run as ``pytest --pyargs hil.suites``) wherever it is installed.  They
stay at the top of the repository and are copied to ``hil/drivers``, ``hil/guests`` and
``hil/suites`` when a wheel is built; :func:`hil.paths.bundled` finds either layout.  An editable
install needs no copy: the folders are found beside ``hil/``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("drivers", "guests", "suites")  # hil.paths.BUNDLED
NOT_SHIPPED = shutil.ignore_patterns(
    "__pycache__",
    "*.pyc",
    ".*",
    "*.o",
    "*.ko",
    "*.mod",
    "*.mod.c",
    "*.cmd",
    "Module.symvers",
    "modules.order",
    "*.sys",
    "*.exe",
    "*.dll",
    "*.a",
    "*.so",
    "build",
    "out",
)


class BuildPyWithBundledFolders(build_py):
    def run(self):
        editable = getattr(self, "editable_mode", False)
        if not editable:
            # build/lib outlives the build: without this, a module since moved or deleted from
            # hil/ (a test double moved to tests/, say) would still be copied into the wheel
            shutil.rmtree(Path(self.build_lib) / "hil", ignore_errors=True)
        super().run()
        if editable:
            return
        here = Path(__file__).resolve().parent
        for name in BUNDLED:
            dest = Path(self.build_lib) / "hil" / name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(here / name, dest, ignore=NOT_SHIPPED)


setup(cmdclass={"build_py": BuildPyWithBundledFolders})
