"""The Windows lab path's pieces: the WinRM transport and the sc.exe/fltmc/verifier helpers.

The guest itself is :class:`hil.guest.windows_lab.WindowsLabGuest` (made by
:meth:`hil.lab.Lab.windows_guest`).  Nothing here can run on the development hosts (no Windows
image can be had there); the code is exercised against a fake WS-Man server (tests/) and at the
XML/parser level, and runs for real where a lab points ``HIL_WINDOWS_IMAGE`` (or
``[windows] image``) at a Windows image built as described in guests/windows/README.md.
"""

from hil.windows.winrm import WinRMTransport

__all__ = ["WinRMTransport"]
