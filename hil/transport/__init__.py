"""Guest transports: how the framework runs commands and moves files inside a guest.

Suites depend on the :class:`~hil.transport.base.GuestTransport` protocol only; the
qemu-guest-agent implementation serves Linux guests, WinRM and Wine ones serve Windows.
"""
