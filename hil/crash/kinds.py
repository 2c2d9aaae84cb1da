"""The crash vocabulary: every kind of crash report, and whether the guest survives it.

:class:`CrashKind` is a :class:`enum.StrEnum`, so a kind compares equal to its name
(``report.kind == "PANIC"``) and prints as it (``str(CrashKind.PANIC) == "PANIC"``): JUnit
properties, crash.txt files and the qualification history keep the plain names they had.
Making a kind from an unknown name fails at once (``CrashKind("PANC")`` raises
:class:`ValueError` listing the known ones), so a typo in a table row or in
``expect_crash(kind=...)`` cannot go unnoticed.

Adding a kind: add the member, its description in :data:`DESCRIPTIONS`, and (if the guest
carries on after it) its name in :data:`NON_FATAL`.
"""

from __future__ import annotations

import enum


class CrashKind(enum.StrEnum):
    """The class of a crash report (see :data:`DESCRIPTIONS`); :attr:`fatal` says whether the
    guest is dead after it or only tainted."""

    # fatal: the kernel (or the process hosting the driver) cannot go on
    BUG = "BUG"
    PANIC = "PANIC"
    GPF = "GPF"
    DIVIDE = "DIVIDE"
    LOCKUP = "LOCKUP"
    HANG = "HANG"
    SYZ_FAILURE = "SYZ_FAILURE"
    REBOOT = "REBOOT"
    BSOD = "BSOD"
    WINE = "WINE"
    # non-fatal: the kernel complains and carries on
    WARNING = "WARNING"
    REFCOUNT_WARNING = "REFCOUNT_WARNING"
    LOCKDEP = "LOCKDEP"
    UBSAN = "UBSAN"
    KASAN = "KASAN"
    KMSAN = "KMSAN"
    KCSAN = "KCSAN"
    KFENCE = "KFENCE"
    LEAK = "LEAK"
    ATOMIC_SLEEP = "ATOMIC_SLEEP"
    INFO = "INFO"

    @classmethod
    def _missing_(cls, value: object) -> CrashKind:
        known = ", ".join(k.value for k in cls)
        raise ValueError(f"unknown crash kind {value!r}; the kinds are: {known}")

    @property
    def fatal(self) -> bool:
        """The guest is dead after a report of this kind (otherwise it is only tainted)."""
        return self not in NON_FATAL

    @property
    def description(self) -> str:
        """One line saying what the kind means."""
        return DESCRIPTIONS[self]


# Kinds after which the kernel carries on: the guest is tainted, not dead.
NON_FATAL: frozenset[CrashKind] = frozenset(
    {
        CrashKind.WARNING,
        CrashKind.REFCOUNT_WARNING,
        CrashKind.LOCKDEP,
        CrashKind.UBSAN,
        CrashKind.KASAN,
        CrashKind.KMSAN,
        CrashKind.KCSAN,
        CrashKind.KFENCE,
        CrashKind.LEAK,
        CrashKind.ATOMIC_SLEEP,
        CrashKind.INFO,
    }
)

DESCRIPTIONS: dict[CrashKind, str] = {
    CrashKind.BUG: "kernel BUG/oops: a BUG_ON, a bad memory access or another fault the kernel could not handle",
    CrashKind.PANIC: "kernel panic: the kernel stopped (also a libvirt PANICKED event before the console names it)",
    CrashKind.GPF: "general protection or stack segment fault in kernel code",
    CrashKind.DIVIDE: "divide error in kernel code",
    CrashKind.LOCKUP: "soft or hard lockup: a CPU stopped scheduling",
    CrashKind.HANG: "hung task, RCU stall, a device that never frees, or a guest that stopped answering (NMI)",
    CrashKind.SYZ_FAILURE: "a syzkaller executor failure (SYZFAIL/SYZFATAL) printed on the console",
    CrashKind.REBOOT: "the guest booted again without a crash report first (a triple fault, a reset): its state is lost",
    CrashKind.BSOD: "Windows bug check (blue screen), named by its stop code",
    CrashKind.WINE: "unhandled exception in a driver (or program) running under Wine: its process is dead",
    CrashKind.WARNING: "WARN_ON and other kernel warnings with a stack trace",
    CrashKind.REFCOUNT_WARNING: "refcount_t overflow, underflow or use-after-free warning",
    CrashKind.LOCKDEP: "lockdep: possible deadlock, bad lock usage or lock held when returning",
    CrashKind.UBSAN: "undefined behaviour sanitizer report",
    CrashKind.KASAN: "kernel address sanitizer report: out-of-bounds or use-after-free access",
    CrashKind.KMSAN: "kernel memory sanitizer report: use of uninitialised memory",
    CrashKind.KCSAN: "kernel concurrency sanitizer report: a data race",
    CrashKind.KFENCE: "KFENCE sampled memory-safety report",
    CrashKind.LEAK: "kmemleak: unreferenced kernel memory",
    CrashKind.ATOMIC_SLEEP: "sleeping function called from atomic context / scheduling while atomic",
    CrashKind.INFO: "a kernel INFO: report too truncated to say more",
}
