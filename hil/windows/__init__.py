"""The Windows lab path: libvirt domain pieces, a WinRM transport, deployment helpers.

Nothing here can run on the development hosts (no Windows image can be had there); the code is
exercised against a fake WS-Man server and at the XML/parser level, and runs for real where a
lab points ``HIL_WINDOWS_IMAGE`` (or ``[windows] image``) at a Windows image built as described
in guests/windows/README.md.
"""

from hil.windows.domain import windows_domain_xml
from hil.windows.winrm import WinRMTransport

__all__ = ["WinRMTransport", "windows_domain_xml"]
