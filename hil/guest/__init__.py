"""One guest model for every kind of guest: see :mod:`hil.guest.base`."""

from hil.guest.base import Guest
from hil.guest.state import GuestKind, GuestState

__all__ = ["Guest", "GuestKind", "GuestState"]
