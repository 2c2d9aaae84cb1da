"""The states every guest goes through, and which moves between them are legal.

::

    DEFINED ──boot/restore──> BOOTED ──agent answers──> READY ──save──> SAVED
       │                      ^  ^  │                    │  │
       └─restore paused─> PAUSED─┘  └──> CRASHED <───────┘  │
                 (ready ahead of need)  ^                   │
                                 └──────┴──── reboot ───────┘
    any state ──destroy──> DESTROYED (final)

Like labgrid's strategies, a guest knows its state and refuses what the state forbids (no
command on a crashed guest, no second boot), so a failure says what happened instead of
hanging on an agent that will never answer.
"""

from __future__ import annotations

import enum

from hil.errors import GuestError


class GuestState(enum.Enum):
    DEFINED = "defined"
    PAUSED = "paused"  # restored but not running: costs no CPU until it is handed out
    BOOTED = "booted"
    READY = "ready"
    SAVED = "saved"
    CRASHED = "crashed"
    DESTROYED = "destroyed"


TRANSITIONS: dict[GuestState, frozenset[GuestState]] = {
    GuestState.DEFINED: frozenset({GuestState.BOOTED, GuestState.PAUSED, GuestState.DESTROYED}),
    GuestState.PAUSED: frozenset({GuestState.BOOTED, GuestState.DESTROYED}),
    GuestState.BOOTED: frozenset({GuestState.READY, GuestState.CRASHED, GuestState.DESTROYED}),
    GuestState.READY: frozenset({GuestState.BOOTED, GuestState.SAVED, GuestState.CRASHED, GuestState.DESTROYED}),
    GuestState.SAVED: frozenset({GuestState.DESTROYED}),
    GuestState.CRASHED: frozenset({GuestState.DESTROYED}),
    GuestState.DESTROYED: frozenset(),
}


class GuestKind(enum.Enum):
    """What a guest is, for reports, owner records and the leak sweep."""

    LINUX = "linux"  # libvirt domain + qemu-guest-agent
    WINDOWS = "windows"  # libvirt domain + WinRM (a lab's Windows image)
    WINE = "wine"  # a Wine prefix on the host: kernel drivers in winedevice.exe


def check_transition(name: str, old: GuestState, new: GuestState) -> None:
    """Raise :class:`GuestError` when ``old -> new`` is not a legal move."""
    if old is new or new in TRANSITIONS[old]:
        return
    raise GuestError(f"guest {name} cannot go from {old.value} to {new.value}")
