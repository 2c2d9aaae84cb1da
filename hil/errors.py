"""Errors that name the problem and the fix.

Every error a user can cause (bad config, missing image, unreachable libvirt, a guest that
stops answering) is a :class:`HilError`: one line saying what is wrong, one saying what to do.
The CLI and the pytest plugin print these without a traceback.
"""

from __future__ import annotations


class HilError(Exception):
    """A failure with a human-readable problem statement and, where known, the fix."""

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.problem}\n  fix: {self.fix}"
        return self.problem


class ConfigError(HilError):
    """The configuration (hil.toml, [tool.hil], command-line options) is invalid."""


class EnvironmentProblem(HilError):
    """Something the host must provide (a daemon, a package, a permission) is missing."""


class GuestError(HilError):
    """A guest did not do what was asked: a command timed out, the agent died, a boot failed."""
