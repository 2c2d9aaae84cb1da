"""The lab: one process's guests of every kind, its libvirt connection, runtime folder and snapshot.

Usable from a script as well as from pytest::

    with Lab(load_config()) as lab:
        guest = lab.linux_guest("demo")               # libvirt + qemu-guest-agent
        print(guest.run("uname -r").text)
        win = lab.windows_guest(image, user="hil", password=pw)   # libvirt + WinRM (a lab)
        wine = lab.wine_guest(workdir, tools=tools)   # a Wine prefix (no libvirt needed)

Every guest the lab makes carries this process's owner record, and :meth:`Lab.close` destroys
them all (the leak sweep removes them when the process dies before it can).  The libvirt
connection is opened when the first libvirt guest is asked for, so Wine-only runs need no
libvirt daemon.

Fast reset: the first Linux guest is booted cold, brought to ready, and its memory saved next
to its (then frozen) overlay.  Every later guest gets a fresh overlay on top of that frozen
one and is restored from the save file: a clean guest in about a second instead of a boot.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hil.config import HilConfig
from hil.deploy.artifacts import check_kernel
from hil.deploy.kmod import kernel_release
from hil.errors import EnvironmentProblem, HilError
from hil.guest.base import Guest
from hil.guest.libvirt_guest import LibvirtGuest
from hil.guest.linux import LinuxGuest
from hil.guest.state import GuestState
from hil.guest.windows_lab import WINRM_GUEST_PORT, WindowsLabGuest
from hil.guest.wine import WineGuest
from hil.images.linux_image import LinuxImage, ensure_linux_image
from hil.paths import ensure_dir, runtime_dir
from hil.provision import domain_xml as dx
from hil.provision.accel import choose_accel
from hil.provision.daemons import open_connection
from hil.provision.owner import Owner
from hil.provision.spec import GuestSpec, free_local_port
from hil.provision.sweep import OWNER_FILE, sweep
from hil.steps import Progress, step

log = logging.getLogger("hil.lab")


@dataclass(frozen=True)
class Snapshot:
    """A ready guest's saved memory and its frozen disk: the source of every fast reset."""

    name: str
    save_file: Path
    disk: Path
    xml: str


class Lab:
    def __init__(self, config: HilConfig, owner: Owner | None = None, accel: str | None = None):
        self.config = config
        self.owner = owner or Owner.current()
        self.requested_accel = accel or config.accel
        self._conn = None
        self._accel: str | None = None
        self.dir: Path | None = None
        self.guests: list[Guest] = []
        self._counter = itertools.count(1)
        self._image: LinuxImage | None = None
        self._snapshot: Snapshot | None = None
        self._snapshot_error: HilError | None = None
        self.cold_boot_s: float | None = None

    # --- session ------------------------------------------------------------------------
    def start(self) -> Lab:
        with step("lab-start", worker=self.owner.worker):
            swept = sweep(None, runtime_dir())
            if swept.dirs or swept.prefixes:
                log.warning(
                    "removed leftovers of dead sessions: %d folders, %d Wine prefixes",
                    len(swept.dirs),
                    len(swept.prefixes),
                )
            self.dir = ensure_dir(runtime_dir() / f"{self.owner.session}-{self.owner.worker}")
            (self.dir / OWNER_FILE).write_text(json.dumps(self.owner.as_dict()))
            atexit.register(self.close)
        return self

    @property
    def conn(self):
        """The libvirt connection, opened (and dead sessions' domains swept) on first use."""
        if self._conn is None:
            with step("libvirt-connect", uri=self.config.libvirt_uri):
                self._conn = open_connection(self.config.libvirt_uri)
                swept = sweep(self._conn, runtime_dir(), wine_run_dir=Path("/nonexistent"))
            if swept.domains:
                log.warning("removed dead sessions' domains: %s", ", ".join(swept.domains))
        return self._conn

    @property
    def accel(self) -> str:
        """``kvm`` where it really works, else ``tcg`` (resolved once)."""
        if self._accel is None:
            self._accel = choose_accel(self.requested_accel)
        return self._accel

    def close(self) -> None:
        """Destroy every guest this lab made and remove its runtime folder (kept guests stay)."""
        kept = False
        for g in self.guests:
            if g.kept:
                kept = True
                continue
            try:
                g.destroy()
            except Exception as exc:  # keep cleaning the others
                log.error("could not destroy %s: %s", g.name, exc)
        self.guests.clear()
        if self.dir is not None and self.dir.exists():
            if kept:
                owner = {**self.owner.as_dict(), "keep": "1"}
                (self.dir / OWNER_FILE).write_text(json.dumps(owner))
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        atexit.unregister(self.close)

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- images -------------------------------------------------------------------------
    def linux_image(self) -> LinuxImage:
        if self._image is None:
            lx = self.config.linux
            if lx.image == "embedded":
                self._image = ensure_linux_image(progress=Progress("image linux"))
            else:
                self._image = LinuxImage(
                    dir=Path(lx.image).parent,
                    disk=Path(lx.image),
                    kernel=Path(lx.kernel) if lx.kernel else None,
                    initrd=Path(lx.initrd) if lx.initrd else None,
                    cmdline=lx.cmdline or "root=/dev/vda rw console=ttyS0,115200",
                    kernel_release=kernel_release(Path(lx.kbuild_dir)) if lx.kbuild_dir else "",
                    kbuild_dir=Path(lx.kbuild_dir) if lx.kbuild_dir else None,
                )
            if self._image.kernel_release not in ("", "unknown"):
                # a team's .ko built for another kernel is refused here, before any guest boots
                check_kernel(
                    self.config.drivers, self._image.kernel_release, self.config.source, self._image.kbuild_dir
                )
        return self._image

    # --- guests -------------------------------------------------------------------------
    def _new_name(self) -> str:
        return f"{self.owner.prefix()}{next(self._counter)}"

    def _overlay(self, backing: Path, name: str) -> Path:
        path = self.dir / f"{name}.qcow2"
        try:
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing), str(path)],
                check=True,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise EnvironmentProblem("qemu-img is not installed", "apt-get install qemu-utils") from None
        except subprocess.CalledProcessError as exc:
            raise HilError(
                f"cannot create an overlay on {backing}: {exc.stderr.strip()}",
                "check that the image exists and is a qcow2 file",
            ) from None
        return path

    def _linux_spec(self, name: str, disk: Path, instance: str | None = None) -> GuestSpec:
        img = self.linux_image()
        return GuestSpec(
            name=name,
            instance=instance or name,
            disk=disk,
            console_log=self.dir / f"{instance or name}.console.log",
            accel=self.accel,
            memory_mib=self.config.linux.memory_mib,
            vcpus=self.config.linux.vcpus,
            kernel=img.kernel,
            initrd=img.initrd,
            cmdline=img.cmdline if img.kernel else None,
            owner=self.owner.as_dict(),
        )

    def _guest(self, spec: GuestSpec) -> LinuxGuest:
        img = self.linux_image()
        g = LinuxGuest(
            self.conn,
            spec,
            transcript=self.dir / f"{spec.instance}.agent.log",
            kernel_release=img.kernel_release,
            kbuild_dir=img.kbuild_dir,
        )
        self.guests.append(g)
        return g

    def boot_linux_guest(self) -> LinuxGuest:
        """A cold-booted guest on a fresh overlay of the base image."""
        img = self.linux_image()
        name = self._new_name()
        g = self._guest(self._linux_spec(name, self._overlay(img.disk, name)))
        g.boot()
        usual, g.transport.agent_timeout = g.transport.agent_timeout, 60.0  # booting: slow answers
        with step("cold-boot-ready", guest=name) as rec:
            g.wait_ready(self.config.linux.boot_timeout_s)
            _settle(g)
        g.transport.agent_timeout = usual
        self.cold_boot_s = rec.duration
        return g

    def snapshot(self) -> Snapshot:
        """Boot once and save; later guests restore from it.

        A failure is remembered: every later test gets the same error at once instead of
        another doomed boot.
        """
        if self._snapshot_error is not None:
            raise self._snapshot_error
        if self._snapshot is None:
            try:
                g = self.boot_linux_guest()
            except HilError as exc:
                self._snapshot_error = exc
                raise
            save_file = self.dir / "template.save"
            xml = g.save(save_file)
            self.guests.remove(g)
            self._snapshot = Snapshot(name=g.name, save_file=save_file, disk=g.spec.disk, xml=xml)
        return self._snapshot

    def linux_guest(self, label: str = "") -> LinuxGuest:
        """A clean, ready Linux guest (restored from the snapshot, or cold-booted), watched for
        hangs from now on (not while it boots: a slow boot is not a hang)."""
        g = self._fresh_linux_guest()
        g.hang_timeout_s = self.config.linux.hang_timeout_s or None
        if g.monitor is not None:
            g.monitor.hang_timeout_s = g.hang_timeout_s
        return g

    def _fresh_linux_guest(self) -> LinuxGuest:
        if not self.config.linux.snapshot:
            return self.boot_linux_guest()
        snap = self.snapshot()
        if any(isinstance(g, LinuxGuest) and g.restored and g.state is not GuestState.DESTROYED for g in self.guests):
            # a restored copy carries the snapshot's UUID: a second one at once must boot cold
            return self.boot_linux_guest()
        # libvirt insists that a restored domain keeps its saved name (and UUID): instances
        # of one snapshot share the domain name and differ in overlay and log files
        instance = self._new_name()
        disk = self._overlay(snap.disk, instance)
        spec = self._linux_spec(snap.name, disk, instance=instance)
        g = self._guest(spec)
        g.restore(snap.save_file, dx.with_changes(snap.xml, disk=str(disk), console_log=str(spec.console_log)))
        g.wait_ready(30)
        g.sync_clock()
        return g

    def windows_guest(
        self,
        image: Path,
        *,
        user: str,
        password: str,
        memory_mib: int = 4096,
        vcpus: int = 2,
        boot_timeout: float = 900.0,
        wait: bool = True,
    ) -> WindowsLabGuest:
        """A Windows lab guest on a fresh overlay of ``image`` (a prepared qcow2), booted and
        answering WinRM (``wait=False``: its domain started, WinRM not waited for); watched by
        the crash monitor like a Linux guest."""
        image = Path(image)
        if not image.is_file():
            raise EnvironmentProblem(
                f"Windows image {image} does not exist", "build one as described in guests/windows/README.md"
            )
        name = self._new_name()
        spec = GuestSpec(
            name=name,
            instance=name,
            os="windows",
            disk=self._overlay(image.resolve(), name),
            console_log=self.dir / f"{name}.console.log",
            accel=self.accel,
            memory_mib=memory_mib,
            vcpus=vcpus,
            forwards=[(free_local_port(), WINRM_GUEST_PORT)],
            owner=self.owner.as_dict(),
        )
        g = WindowsLabGuest(self.conn, spec, user=user, password=password, boot_timeout=boot_timeout)
        self.guests.append(g)
        if wait:
            g.boot()
        else:
            g.start_domain()
        return g

    def wine_guest(self, workdir: Path, tools: dict[str, Path] | None = None, **kw: str) -> WineGuest:
        """A fresh Wine prefix (cloned from the cached template) with ``tools`` in ``C:\\hil``,
        booted; its DbgPrint log goes to ``workdir``.  Needs no libvirt."""
        g = WineGuest(workdir, self.owner, tools=tools, **kw)
        self.guests.append(g)
        g.boot()
        return g

    def discard(self, guest: Guest, keep: bool = False) -> None:
        """End a guest's life: destroy it and delete its overlay, or keep it for debugging."""
        if keep:
            guest.keep()
            return
        guest.destroy()
        if guest in self.guests:
            self.guests.remove(guest)
        if isinstance(guest, LibvirtGuest):
            guest.spec.disk.unlink(missing_ok=True)


def _settle(g: LinuxGuest) -> None:
    """Wait for boot-time services to finish so every snapshot is taken in the same state."""
    r = g.run("systemctl is-system-running --wait 2>/dev/null || true", timeout=120)
    log.info("guest %s system state: %s", g.name, r.text.strip())
    # an NMI from the hang detector panics with the interrupted CPU's stack (instead of printing
    # "Dazed and confused"), so a hang is named after the function it is stuck in
    g.run("sysctl -q -w kernel.unknown_nmi_panic=1", timeout=30).check()
    # a smaller save file restores faster: flush and drop the page cache first
    g.run("sync && echo 3 > /proc/sys/vm/drop_caches", timeout=60).check()
