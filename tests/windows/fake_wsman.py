"""A FAKE WS-Management server on 127.0.0.1, for testing the WinRM transport offline.

No open-source server implements the Windows cmd shell resource, so this answers exactly the
SOAP requests pywinrm sends (Create shell, Command, Receive, Signal, Delete shell) with
well-formed WS-Man responses, checks HTTP Basic credentials, and hands each command line to a
``handler(command, arguments) -> (stdout, stderr, exit_code)``.

:class:`FakeWindowsHost` is a handler that behaves like a tiny Windows box for the commands
kernel-hil sends: it decodes ``powershell -EncodedCommand``, emulates the transport's file
copy scripts on an in-memory file system, and answers ``sc``/``fltmc``/``bcdedit``/``verifier``
with canned output while recording every command.  It is a protocol-level test double, not an
emulator: anything else gets exit code 9009 ("not recognized").
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_COMMAND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
ACTION_RECEIVE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
ACTION_SIGNAL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"

Handler = Callable[[str, list[str]], tuple[bytes, bytes, int | None]]  # exit code None: never finishes


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}">'
        f"<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo><a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


@dataclass
class _Command:
    stdout: bytes
    stderr: bytes
    code: int | None  # None: never finishes (a hung command)
    receives: int = 0


@dataclass
class FakeWsman:
    """The server.  ``with FakeWsman(handler) as srv: ... srv.port``.

    Records every request's action in ``actions`` and every command line in ``commands``.
    ``receives_per_command`` spreads each command's stdout over that many Receive responses
    (state Running until the last, as a real server does for long output); a handler returning
    exit code None makes a command that never finishes.
    """

    handler: Handler
    user: str = "hil"
    password: str = "fake-password"
    host: str = "127.0.0.1"
    port: int = 0
    actions: list[str] = field(default_factory=list)
    commands: list[tuple[str, list[str]]] = field(default_factory=list)
    shells: set[str] = field(default_factory=set)
    receives_per_command: int = 1

    def __post_init__(self):
        self._cmds: dict[str, _Command] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeWsman:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> FakeWsman:
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                expected = "Basic " + base64.b64encode(f"{fake.user}:{fake.password}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, reply = fake._dispatch(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self._server = ThreadingHTTPServer((self.host, self.port), H)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-wsman", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _dispatch(self, body: bytes) -> tuple[int, bytes]:
        root = ET.fromstring(body)
        action = root.findtext("s:Header/a:Action", namespaces=NS) or ""
        msg_id = root.findtext("s:Header/a:MessageID", namespaces=NS) or ""
        shell_id = None
        for sel in root.iterfind("s:Header/w:SelectorSet/w:Selector", NS):
            if sel.get("Name") == "ShellId":
                shell_id = sel.text
        with self._lock:
            self.actions.append(action.rsplit("/", 1)[-1])
        if action == ACTION_CREATE:
            sid = str(uuid.uuid4()).upper()
            with self._lock:
                self.shells.add(sid)
            body_xml = (
                f'<x:ResourceCreated xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer">'
                f"<a:Address>http://{self.host}:{self.port}/wsman</a:Address><a:ReferenceParameters>"
                f"<w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI>"
                f'<w:SelectorSet><w:Selector Name="ShellId">{sid}</w:Selector></w:SelectorSet>'
                f"</a:ReferenceParameters></x:ResourceCreated><rsp:Shell><rsp:ShellId>{sid}</rsp:ShellId></rsp:Shell>"
            )
            return 200, _envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", msg_id, body_xml)
        if shell_id not in self.shells:
            return 500, _envelope(
                "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault",
                msg_id,
                "<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code>"
                '<s:Reason><s:Text xml:lang="en-US">unknown shell</s:Text></s:Reason></s:Fault>',
            )
        if action == ACTION_COMMAND:
            line = root.find("s:Body/rsp:CommandLine", NS)
            assert line is not None, "a Command request has a CommandLine"
            command = line.findtext("rsp:Command", namespaces=NS) or ""
            args_text = line.findtext("rsp:Arguments", namespaces=NS) or ""
            args = args_text.split(" ") if args_text else []
            with self._lock:
                self.commands.append((command, args))
            try:
                out, err, code = self.handler(command, args)
            except Exception as exc:  # a handler bug shows up as the command's stderr
                out, err, code = b"", f"fake handler error: {exc!r}".encode(), 1
            cid = str(uuid.uuid4()).upper()
            with self._lock:
                self._cmds[cid] = _Command(out, err, code)
            return 200, _envelope(
                ACTION_COMMAND + "Response",
                msg_id,
                f"<rsp:CommandResponse><rsp:CommandId>{cid}</rsp:CommandId></rsp:CommandResponse>",
            )
        if action == ACTION_RECEIVE:
            stream = root.find("s:Body/rsp:Receive/rsp:DesiredStream", NS)
            cid = (stream.get("CommandId") if stream is not None else None) or ""
            with self._lock:
                cmd = self._cmds.get(cid)
            if cmd is None:
                return 500, _envelope(
                    "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault",
                    msg_id,
                    "<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code>"
                    '<s:Reason><s:Text xml:lang="en-US">unknown command</s:Text></s:Reason></s:Fault>',
                )
            with self._lock:
                cmd.receives += 1
                n = max(1, self.receives_per_command)
                last = cmd.code is not None and cmd.receives >= n
                size = -(-len(cmd.stdout) // n) if cmd.stdout else 0
                piece = cmd.stdout[(cmd.receives - 1) * size : cmd.receives * size] if cmd.code is not None else b""
            parts = []
            if piece:
                parts.append(
                    f'<rsp:Stream Name="stdout" CommandId="{cid}">{base64.b64encode(piece).decode()}</rsp:Stream>'
                )
            if last:
                if cmd.stderr:
                    parts.append(
                        f'<rsp:Stream Name="stderr" CommandId="{cid}">{base64.b64encode(cmd.stderr).decode()}</rsp:Stream>'
                    )
                for name in ("stdout", "stderr"):
                    parts.append(f'<rsp:Stream Name="{name}" CommandId="{cid}" End="true"></rsp:Stream>')
                parts.append(
                    f'<rsp:CommandState CommandId="{cid}" State="{DONE}"><rsp:ExitCode>{cmd.code}</rsp:ExitCode></rsp:CommandState>'
                )
            else:
                parts.append(f'<rsp:CommandState CommandId="{cid}" State="{RUNNING}"/>')
            return 200, _envelope(
                ACTION_RECEIVE + "Response", msg_id, "<rsp:ReceiveResponse>" + "".join(parts) + "</rsp:ReceiveResponse>"
            )
        if action == ACTION_SIGNAL:
            sig = root.find("s:Body/rsp:Signal", NS)
            with self._lock:
                self._cmds.pop((sig.get("CommandId") if sig is not None else None) or "", None)
            return 200, _envelope(ACTION_SIGNAL + "Response", msg_id, "<rsp:SignalResponse/>")
        if action == ACTION_DELETE:
            with self._lock:
                self.shells.discard(shell_id)
            return 200, _envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", msg_id, "")
        return 500, _envelope(
            "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault",
            msg_id,
            "<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code>"
            f'<s:Reason><s:Text xml:lang="en-US">unsupported action {action}</s:Text></s:Reason></s:Fault>',
        )


# ---- a tiny Windows for kernel-hil's own commands ---------------------------------------------

_APPEND = re.compile(
    r"^\$p='(?P<path>(?:[^']|'')*)\.hilpart';\$b=\[Convert\]::FromBase64String\('(?P<data>[A-Za-z0-9+/=]*)'\);"
    r"\$f=\[IO\.File\]::Open\(\$p,'(?P<mode>Create|Append)','Write'\)"
)
_COMMIT = re.compile(r"^\$p='(?P<path>(?:[^']|'')*)';\$h=.*if\(\$h -ne '(?P<sha>[0-9a-f]{64})'\)")
_SIZE = re.compile(r"^\(Get-Item -LiteralPath '(?P<path>(?:[^']|'')*)'\)\.Length$")
_READ = re.compile(
    r"^\$f=\[IO\.File\]::OpenRead\('(?P<path>(?:[^']|'')*)'\);\$f\.Seek\((?P<off>\d+),'Begin'\).*New-Object byte\[\] (?P<count>\d+);"
)


# WinRMTransport.spawn: cmd.exe /v:on /c "<command> & echo !errorlevel!> "<rc file>""
_SPAWN = re.compile(r"""^\$a='/v:on /c "'\+'(?P<cmd>(?:[^']|'')*)'\+' & echo !errorlevel!> "(?P<rc>[^"]+)""';""")
_SPAWN_RC = re.compile(r"^\$p='(?P<rc>(?:[^']|'')*)';if\(Test-Path")


@dataclass
class FakeWindowsHost:
    """Handler emulating the commands kernel-hil sends (see module docstring).

    files: the guest's files by lower-case path; testsigning: what bcdedit reports;
    services: name -> state ("STOPPED"/"RUNNING"); ps_scripts / cmd_lines: what was run.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    testsigning: bool = True
    services: dict[str, str] = field(default_factory=dict)
    filters: set[str] = field(default_factory=set)
    verifier_drivers: set[str] = field(default_factory=set)
    ps_scripts: list[str] = field(default_factory=list)
    cmd_lines: list[str] = field(default_factory=list)
    registry: dict[str, dict[str, str]] = field(default_factory=dict)
    spawned: list[str] = field(default_factory=list)

    def __call__(self, command: str, args: list[str]) -> tuple[bytes, bytes, int | None]:
        if command.lower().startswith("powershell") and "-EncodedCommand" in args:
            script = base64.b64decode(args[args.index("-EncodedCommand") + 1]).decode("utf-16-le")
            self.ps_scripts.append(script)
            return self.powershell(script)
        line = " ".join([command, *args]).strip()
        self.cmd_lines.append(line)
        return self.cmd(line)

    @staticmethod
    def _unq(s: str) -> str:
        return s.replace("''", "'")

    def powershell(self, script: str) -> tuple[bytes, bytes, int]:
        if m := _APPEND.match(script):
            key = self._unq(m["path"]).lower() + ".hilpart"
            chunk = base64.b64decode(m["data"])
            self.files[key] = chunk if m["mode"] == "Create" else self.files.get(key, b"") + chunk
            return b"", b"", 0
        if m := _COMMIT.match(script):
            path = self._unq(m["path"]).lower()
            part = self.files.pop(path + ".hilpart", None)
            if part is None or hashlib.sha256(part).hexdigest() != m["sha"]:
                return b"", b"hash mismatch", 3
            self.files[path] = part
            return b"", b"", 0
        if m := _SIZE.match(script):
            data = self.files.get(self._unq(m["path"]).lower())
            if data is None:
                return b"", b"Get-Item : Cannot find path", 1
            return f"{len(data)}\r\n".encode(), b"", 0
        if m := _READ.match(script):
            data = self.files.get(self._unq(m["path"]).lower())
            if data is None:
                return b"", b"file not found", 1
            off, count = int(m["off"]), int(m["count"])
            return base64.b64encode(data[off : off + count]) + b"\r\n", b"", 0
        if script.startswith("New-Item -ItemType Directory"):
            return b"", b"", 0
        if m := _SPAWN.match(script):
            # the background command runs to completion at once; its exit code lands in the file
            line = self._unq(m["cmd"])
            self.spawned.append(line)
            _, _, code = self.cmd(line)
            self.files[m["rc"].lower()] = f"{code if code is not None else 259}\r\n".encode()
            return f"{4000 + len(self.spawned)}\r\n".encode(), b"", 0
        if m := _SPAWN_RC.match(script):
            data = self.files.pop(self._unq(m["rc"]).lower(), b"")
            return data.strip() + b"\r\n" if data else b"", b"", 0
        return b"", b"fake: unsupported PowerShell script", 1

    def cmd(self, line: str) -> tuple[bytes, bytes, int | None]:
        words = line.split()
        low = [w.lower() for w in words]
        if low[:1] == ["hang"]:
            return b"", b"", None
        if low[:2] == ["reg", "add"] and "/v" in low and "/d" in low:
            key = words[2].strip('"')
            self.registry.setdefault(key, {})[words[low.index("/v") + 1]] = words[low.index("/d") + 1]
            return b"The operation completed successfully.\r\n", b"", 0
        if low[:1] == ["echo"]:
            return (" ".join(words[1:]) + "\r\n").encode(), b"", 0
        if low[:2] == ["bcdedit", "/enum"]:
            ts = "Yes" if self.testsigning else "No"
            return (
                f"Windows Boot Loader\r\n-------------------\r\nidentifier              {{current}}\r\ntestsigning             {ts}\r\n".encode(),
                b"",
                0,
            )
        if low[:1] == ["sc"] and len(words) >= 3:
            verb, name = low[1], words[2]
            if verb == "create":
                if name in self.services:
                    return b"[SC] CreateService FAILED 1073:\r\n", b"", 1073
                self.services[name] = "STOPPED"
                return b"[SC] CreateService SUCCESS\r\n", b"", 0
            if name not in self.services:
                return b"[SC] OpenService FAILED 1060:\r\n", b"", 1060
            if verb == "start":
                self.services[name] = "RUNNING"
                return b"SERVICE_NAME: " + name.encode() + b"\r\n        STATE              : 4  RUNNING\r\n", b"", 0
            if verb == "stop":
                self.services[name] = "STOPPED"
                return b"SERVICE_NAME: " + name.encode() + b"\r\n        STATE              : 1  STOPPED\r\n", b"", 0
            if verb == "delete":
                del self.services[name]
                return b"[SC] DeleteService SUCCESS\r\n", b"", 0
            if verb == "query":
                state = {"RUNNING": "4  RUNNING", "STOPPED": "1  STOPPED"}[self.services[name]]
                return f"SERVICE_NAME: {name}\r\n        STATE              : {state}\r\n".encode(), b"", 0
        if low[:1] == ["fltmc"] and len(words) >= 3:
            if low[1] == "load":
                self.filters.add(words[2].lower())
                return b"", b"", 0
            if low[1] == "unload":
                if words[2].lower() not in self.filters:
                    return b"Unload failed with error: 0x801f0013\r\n", b"", 0x801F0013 & 0x7FFFFFFF
                self.filters.discard(words[2].lower())
                return b"", b"", 0
        if low[:1] == ["verifier"]:
            if "/reset" in low:
                self.verifier_drivers.clear()
                return b"", b"", 0
            if "/driver" in low:
                self.verifier_drivers.update(w.lower() for w in words[low.index("/driver") + 1 :])
                return b"The system reboot is required for the changes to take effect.\r\n", b"", 2
            if "/querysettings" in low:
                names = " ".join(sorted(self.verifier_drivers)) or "None"
                return f"Verified Drivers:\r\n\r\n{names}\r\n".encode(), b"", 0
        return b"", f"'{words[0] if words else ''}' is not recognized as an internal or external command".encode(), 9009
