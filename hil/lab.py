"""The lab: one process's guests of every kind, its libvirt connection, runtime folder and snapshot.

Usable from a script as well as from pytest::

    with Lab(load_config()) as lab:
        guest = lab.linux_guest("demo")               # libvirt + qemu-guest-agent
        print(guest.run("uname -r").text)
        win = lab.windows_guest(image, user="hil", password=pw)   # libvirt + WinRM (a lab)
        wine = lab.wine_guest(workdir, tools=tools)   # a Wine prefix (no libvirt needed)

Every guest the lab makes carries this process's owner record, and :meth:`Lab.close` destroys
them all (the leak sweep removes them when the process dies before it can).

Reset out of the test's way: a Linux guest is a restored copy of a cached snapshot
(:mod:`hil.provision.snapshot_cache`: one cold boot per change of inputs, shared by sessions
and workers).  While a test runs, the lab prepares the next copy in the background (restored,
resumed, agent answering, clock set; ``[linux] ready_pool`` of them, bounded by memory), so
handing it out costs nothing.  A finished guest is destroyed by a reaper thread, off the next
test's path.  The libvirt
connection is opened when the first libvirt guest is asked for, so Wine-only runs need no
libvirt daemon.

"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import inspect
import itertools
import json
import logging
import random
import shutil
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from hil.config import HilConfig, HostConfig
from hil.deploy.artifacts import check_kernel
from hil.deploy.kmod import kernel_release
from hil.errors import EnvironmentProblem, GuestError, HilError
from hil.guest.base import Guest
from hil.guest.libvirt_guest import LibvirtGuest
from hil.guest.linux import LinuxGuest
from hil.guest.state import GuestState
from hil.guest.windows_lab import WINRM_GUEST_PORT, WindowsLabGuest
from hil.guest.wine import WineGuest
from hil.hosts.host import GuestHost, HostLost, remote_accel
from hil.hosts.sweep import sweep_host_files
from hil.images.debug_kernel import BOOT_PARAMETERS as DEBUG_BOOT_PARAMETERS
from hil.images.debug_kernel import DebugKernel, ensure_debug_kernel, install_modules
from hil.images.linux_image import LinuxImage, ensure_linux_image
from hil.paths import ensure_dir, runtime_dir
from hil.provision import domain_xml as dx
from hil.provision.accel import choose_accel
from hil.provision.owner import Owner
from hil.provision.snapshot_cache import Snapshot, SnapshotCache, base_name, snapshot_key
from hil.provision.spec import GuestSpec, free_local_port
from hil.provision.sweep import OWNER_FILE, sweep
from hil.steps import Progress, step

log = logging.getLogger("hil.lab")


class Lab:
    """config; owner: whose guests these are; accel: overrides the config's; hosts: the libvirt
    hosts in this process's order of preference (the pytest plugin places each xdist worker:
    :func:`hil.hosts.placement.assign`), the first one used until it is lost; default: the
    config's hosts in their order."""

    def __init__(
        self,
        config: HilConfig,
        owner: Owner | None = None,
        accel: str | None = None,
        hosts: list[HostConfig] | None = None,
    ):
        self.config = config
        self.owner = owner or Owner.current()
        self.requested_accel = accel or config.accel
        self.hosts = [GuestHost(h, on_lost=self._host_lost) for h in (hosts or config.host_list())]
        self.host = self.hosts[0]
        self._swept_hosts: set[str] = set()
        self._accel: str | None = None
        self.dir: Path | None = None
        self.guests: list[Guest] = []
        self._counter = itertools.count(1)
        self._image: LinuxImage | None = None
        self._image_files: tuple[Path, Path | None, Path | None] | None = None
        self._debug_kernel: DebugKernel | None = None
        self._snapshot: Snapshot | None = None
        self._snapshot_error: HilError | None = None
        self.cold_boot_s: float | None = None
        self._lock = threading.Lock()  # guests is touched by the filler and reaper threads too
        self._ready: deque[Future[LinuxGuest]] = deque()  # paused copies, restored ahead of need
        self._filler = ThreadPoolExecutor(1, thread_name_prefix="hil-ready")
        self._reaper = ThreadPoolExecutor(1, thread_name_prefix="hil-reaper")

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
        """The current host's libvirt connection, opened (and dead sessions' domains and
        files on that host swept) on first use."""
        host = self._current_host()
        if host.uri not in self._swept_hosts:
            with step("libvirt-connect", uri=host.uri):
                swept = sweep(host.conn, runtime_dir(), wine_run_dir=Path("/nonexistent"))
                files = sweep_host_files(host, runtime_dir()) if host.remote else []
            self._swept_hosts.add(host.uri)
            if swept.domains or files:
                log.warning(
                    "removed dead sessions' leftovers on %s: %s",
                    host.uri,
                    ", ".join(swept.domains + files),
                )
        return host.conn

    @property
    def listen_address(self) -> str:
        """Where a server of this machine listens for the current host's guests to reach it
        (127.0.0.1 for this machine's guests; see :mod:`hil.hosts.host`)."""
        return self._current_host().listen_address

    @property
    def snapshot_cache(self) -> SnapshotCache:
        return self._current_host().snapshot_cache

    def _current_host(self) -> GuestHost:
        """The host guests go to: the first of :attr:`hosts` not lost."""
        if self.host.lost is None:
            return self.host
        lost = self.host
        for host in self.hosts:
            if host.lost is None:
                log.warning("libvirt host %s is lost (%s): this worker goes on on %s", lost.uri, lost.lost, host.uri)
                self.host = host
                self._accel = None
                self._image_files = None
                self._snapshot, self._snapshot_error = None, None
                for fut in self._ready:  # copies made on the lost host
                    fut.cancel()
                self._ready.clear()
                return host
        raise HostLost(
            f"every libvirt host of this run is lost ({', '.join(f'{h.uri}: {h.lost}' for h in self.hosts)})",
            "look at libvirtd on those hosts; `hil doctor --uri URI` checks one",
        )

    def _host_lost(self, host: GuestHost) -> None:
        """A host's connection closed: its guests fail at once with that reason (their crash
        monitors stop: a vanished host is not a guest crash)."""
        with self._lock:
            guests = [g for g in self.guests if isinstance(g, LibvirtGuest) and g.host_uri == host.uri]
        for g in guests:
            g.mark_host_lost(host.lost or "lost")

    @property
    def accel(self) -> str:
        """``kvm`` where it really works, else ``tcg`` (resolved once per host)."""
        if self._accel is None:
            host = self._current_host()
            self._accel = (
                remote_accel(host.conn, self.requested_accel) if host.remote else choose_accel(self.requested_accel)
            )
        return self._accel

    def close(self) -> None:
        """Destroy every guest this lab made and remove its runtime folder (kept guests stay)."""
        for fut in self._ready:
            fut.cancel()
        self._filler.shutdown(wait=True)  # a restore in flight finishes and is destroyed below
        self._reaper.shutdown(wait=True)
        self._ready.clear()
        kept = False
        with self._lock:
            guests = list(self.guests)
        for g in guests:
            if g.kept:
                kept = True
                continue
            try:
                g.destroy()
            except Exception as exc:  # keep cleaning the others
                log.error("could not destroy %s: %s", g.name, exc)
                continue
            if isinstance(g, LibvirtGuest) and g.host_uri and self._remote(g.host_uri):
                self._remove_files(g)  # a local guest's files go with the runtime folder
        self.guests.clear()
        for host in self.hosts:
            host.close()
        if self.dir is not None and self.dir.exists():
            if kept:
                owner = {**self.owner.as_dict(), "keep": "1"}
                (self.dir / OWNER_FILE).write_text(json.dumps(owner))
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
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
                if lx.flavour == "debug":  # the same disk, booted on the debug kernel built for it
                    k = self._debug_kernel = ensure_debug_kernel(Progress("debug kernel"), image=self._image)
                    self._image = dataclasses.replace(
                        self._image,
                        kernel=k.bzimage,
                        initrd=None,
                        cmdline=f"{self._image.cmdline} {DEBUG_BOOT_PARAMETERS}",
                        kernel_release=k.release,
                        kbuild_dir=k.kbuild_dir,
                    )
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
    def _dir(self) -> Path:
        """The runtime folder of a started lab (overlays, console logs, transcripts)."""
        if self.dir is None:
            raise HilError("the lab is not started: it has no runtime folder", "call Lab.start() first")
        return self.dir

    def _new_name(self) -> str:
        return f"{self.owner.prefix()}{next(self._counter)}"

    def _overlay(self, backing: Path, name: str) -> Path:
        host = self._current_host()
        return host.overlay(backing, host.file(f"{name}.qcow2", self._dir()))

    def _host_image(self) -> tuple[Path, Path | None, Path | None]:
        """The image's disk, kernel and initrd as the current host sees them (uploaded once
        per content to a remote host, with progress)."""
        if self._image_files is None:
            img, host = self.linux_image(), self._current_host()
            progress = Progress(f"upload to {host.uri}") if host.remote else None
            with step("host-image", uri=host.uri):
                self._image_files = (
                    host.upload(img.disk, "image", ".qcow2", progress) or img.disk,
                    host.upload(img.kernel, "kernel", progress=progress),
                    host.upload(img.initrd, "initrd", progress=progress),
                )
        return self._image_files

    def _linux_spec(self, name: str, disk: Path, instance: str | None = None) -> GuestSpec:
        img = self.linux_image()
        _, kernel, initrd = self._host_image()
        return GuestSpec(
            name=name,
            instance=instance or name,
            disk=disk,
            accel=self.accel,
            memory_mib=self.config.linux.memory_mib,
            vcpus=self.config.linux.vcpus,
            kernel=kernel,
            initrd=initrd,
            cmdline=img.cmdline if img.kernel else None,
            owner=self.owner.as_dict(),
            **self._host_side(instance or name),
        )

    def _host_side(self, instance: str) -> dict:
        """The spec's fields that depend on the host: console log paths, forwards' address."""
        host = self._current_host()
        console = f"{instance}.console.log"
        return {
            "console_log": host.file(console, self._dir()),
            "console_local": self._dir() / console if host.remote else None,
            "forward_address": host.forward_address,
        }

    def _on_host(self, g: LibvirtGuest) -> LibvirtGuest:
        """Tell a new guest where it runs; a remote host's console log is created there and
        followed into the local file from now on."""
        host = self._current_host()
        g.host_uri = host.uri
        g.controller_address, g.listen_address = host.controller_address, host.listen_address
        if host.remote:
            assert g.spec.console_local is not None
            host.store.empty_file(g.spec.console_log.name)
            g.console_mirror = host.store.mirror(g.spec.console_log.name, g.spec.console_local).start()
        with self._lock:
            self.guests.append(g)
        return g

    def _guest(self, spec: GuestSpec) -> LinuxGuest:
        img = self.linux_image()
        g = LinuxGuest(
            self.conn,
            spec,
            transcript=self._dir() / f"{spec.instance}.agent.log",
            kernel_release=img.kernel_release,
            kbuild_dir=img.kbuild_dir,
        )
        self._on_host(g)
        return g

    def boot_linux_guest(self, name: str | None = None, disk: Path | None = None) -> LinuxGuest:
        """A cold-booted guest, on a fresh overlay of the base image unless ``disk`` is given."""
        name = name or self._new_name()
        g = self._guest(self._linux_spec(name, disk or self._overlay(self._host_image()[0], name)))
        g.boot()
        assert g.transport is not None
        usual, g.transport.agent_timeout = g.transport.agent_timeout, 60.0  # booting: slow answers
        with step("cold-boot-ready", guest=name) as rec:
            g.wait_ready(self.config.linux.boot_timeout_s)
            if self._debug_kernel is not None:
                install_modules(g, self._debug_kernel)  # once: every restored copy has them
            _settle(g)
        g.transport.agent_timeout = usual
        self.cold_boot_s = rec.duration
        return g

    # --- snapshots and ready copies -------------------------------------------------------------
    def snapshot_inputs(self) -> dict[str, object]:
        """Everything that changes what a restore gives: the snapshot cache's key."""
        img = self.linux_image()

        def identity(path: Path | None) -> list[object] | None:
            if path is None:
                return None
            st = Path(path).stat()
            return [str(path), st.st_size, st.st_mtime_ns]

        template = self._linux_spec(base_name("0" * 16), Path("/disk.qcow2"))
        template.console_log, template.console_local, template.owner = Path("/console.log"), None, {}
        return {
            "host": self._current_host().uri if self._current_host().remote else "local",
            "image": identity(img.disk),
            "kernel": identity(img.kernel),
            "initrd": identity(img.initrd),
            "domain": dx.domain_xml(template),  # spec, accel, memory, vcpus, cmdline, XML builder
            "libvirt": self.conn.getLibVersion(),
            "qemu": self.conn.getVersion(),
            "settle": hashlib.sha256(inspect.getsource(_settle).encode()).hexdigest(),
        }

    def snapshot(self) -> Snapshot:
        """The ready-guest snapshot for this lab's inputs: from the cache, or made once (a cold
        boot, settled and saved) under the cache's lock.

        A failure is remembered: every later test gets the same error at once instead of
        another doomed boot.
        """
        self._current_host()
        if self._snapshot_error is not None:
            raise self._snapshot_error
        if self._snapshot is None:
            key = snapshot_key(self.snapshot_inputs())
            try:
                with self.snapshot_cache.locked(key), step("snapshot", key=key) as rec:
                    snap = self.snapshot_cache.load(key)
                    rec.args["cached"] = str(snap is not None)
                    if snap is None:
                        snap = self._make_snapshot(key)
            except HilError as exc:
                self._snapshot_error = exc
                raise
            self._snapshot = snap
            self.snapshot_cache.prune(keep=key)
        return self._snapshot

    def _make_snapshot(self, key: str) -> Snapshot:
        cache, host = self.snapshot_cache, self._current_host()
        cache.prepare(key)
        disk = host.overlay(self._host_image()[0], cache.disk_file(key))
        g = self.boot_linux_guest(name=base_name(key), disk=disk)
        xml = g.save(cache.save_file(key))
        if g.console_mirror is not None:
            g.console_mirror.stop()
            host.remove(g.spec.console_log)
        with self._lock:
            self.guests.remove(g)
        return cache.store(key, xml)

    def _restore_copy(self, paused: bool) -> LinuxGuest:
        """A restored copy of the snapshot on a fresh overlay, under a variant identity this
        process holds (so several copies, and other workers' copies, can live at once)."""
        import libvirt

        snap = self.snapshot()
        skip: set[int] = set()
        while True:
            lease = self.snapshot_cache.lease(snap, skip)
            instance = self._new_name()
            disk = self._overlay(snap.disk, instance)
            spec = self._linux_spec(lease.name, disk, instance=instance)
            xml = dx.with_changes(
                snap.xml,
                name=lease.name,
                uuid=lease.uuid,
                disk=str(disk),
                console_log=str(spec.console_log),
                owner=self.owner.as_dict(),
            )
            g = self._guest(spec)
            g.lease = lease
            try:
                g.restore(lease.save_file, xml, paused=paused)
                return g
            except GuestError:
                self._forget(g)
                g.lease = None
                lease.release()
                # a domain of that identity still runs (a kept guest of an ended session): next
                if not _domain_exists(self.conn, lease.name, libvirt):
                    raise
                skip.add(lease.index)

    def ready_pool_size(self) -> int:
        """How many paused copies to keep ahead of need: ``[linux] ready_pool``, fewer when the
        host's available memory would not hold them next to the running guest."""
        want = self.config.linux.ready_pool
        if want <= 0:
            return 0
        try:
            meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
            available_mib = int(meminfo["MemAvailable"].split()[0]) // 1024
        except (OSError, KeyError, ValueError):
            return want
        fits = max(0, available_mib // self.config.linux.memory_mib - 2)  # the running guest, a margin
        if fits < want:
            log.warning("ready_pool %d reduced to %d: %d MiB available", want, fits, available_mib)
        return min(want, fits)

    def _fill_ready(self, upcoming: int | None) -> None:
        """Prepare copies ahead: up to the pool size, and no more than ``upcoming`` (the guests
        the caller knows it will ask for next; None: unknown) -- a copy nobody asks for costs
        a restore and a destroy, which in a one-test run is all the time it has."""
        want = self.ready_pool_size() if upcoming is None else min(upcoming, self.ready_pool_size())
        while len(self._ready) < want:
            self._ready.append(self._filler.submit(self._prepare_ready_copy))

    def _prepare_ready_copy(self) -> LinuxGuest:
        """A copy made ready in the background: restored, resumed, agent answering, clock
        set.  It then idles until a test asks for it: measured at 0.8 % of a core under TCG,
        while resuming and setting the clock at hand-out took 0.5-1.8 s in the test's path
        (the guest's first process after a restore is slow under TCG)."""
        g = self._restore_copy(paused=True)
        g.resume()
        g.wait_ready(30)
        g.sync_clock()
        return g

    def linux_guest(self, label: str = "", upcoming: int | None = None) -> LinuxGuest:
        """A clean, ready Linux guest (a restored copy, or cold-booted without snapshots),
        watched for hangs from now on (not while it boots: a slow boot is not a hang).
        ``upcoming``: how many more guests the caller knows it will ask for after this one
        (the pytest plugin looks at the next tests); None: assume the pool's size."""
        try:
            g = self._fresh_linux_guest(upcoming)
        except HilError:
            if self.host.check_alive():
                raise
            g = self._fresh_linux_guest(upcoming)  # the host went away meanwhile: on the next one
        g.hang_timeout_s = self.config.linux.hang_timeout_s or None
        if g.monitor is not None:
            g.monitor.hang_timeout_s = g.hang_timeout_s
        return g

    def _fresh_linux_guest(self, upcoming: int | None) -> LinuxGuest:
        self._current_host()  # a lost host's snapshot and ready copies are dropped here
        if not self.config.linux.snapshot:
            return self.boot_linux_guest()
        self.snapshot()
        while self._ready:
            try:
                g = self._ready.popleft().result()
            except HilError as exc:  # a background restore failed: say so, restore here instead
                log.warning("a ready copy could not be prepared: %s", exc)
                continue
            if g.state is GuestState.READY:
                self._fill_ready(upcoming)  # the next copy gets ready while this one's test runs
                return g
            self.discard(g)  # it crashed while it waited: never the next test's problem
        self._fill_ready(upcoming)  # no copy was ready: the next one starts while this one is made
        return self._prepare_ready_copy()

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
        host = self._current_host()
        side = self._host_side(name)
        spec = GuestSpec(
            name=name,
            instance=name,
            os="windows",
            disk=self._overlay(host.upload(image.resolve(), "windows", ".qcow2") or image, name),
            accel=self.accel,
            memory_mib=memory_mib,
            vcpus=vcpus,
            forwards=[(free_local_port() if not host.remote else random.randrange(20000, 60000), WINRM_GUEST_PORT)],
            owner=self.owner.as_dict(),
            **side,
        )
        g = WindowsLabGuest(self.conn, spec, user=user, password=password, boot_timeout=boot_timeout)
        self._on_host(g)
        if wait:
            g.boot()
        else:
            g.start_domain()
        return g

    def wine_guest(self, workdir: Path, tools: dict[str, Path] | None = None, **kw: str) -> WineGuest:
        """A fresh Wine prefix (cloned from the cached template) with ``tools`` in ``C:\\hil``,
        booted; its DbgPrint log goes to ``workdir``.  Needs no libvirt."""
        g = WineGuest(workdir, self.owner, tools=tools, **kw)
        with self._lock:
            self.guests.append(g)
        g.boot()
        return g

    def discard(self, guest: Guest, keep: bool = False) -> None:
        """End a guest's life: destroy it and delete its overlay in the background (off the
        next test's path; :meth:`close` waits for it), or keep it for debugging."""
        if keep:
            guest.keep()
            return
        self._reaper.submit(self._destroy, guest)

    def _destroy(self, guest: Guest) -> None:
        try:
            guest.destroy()
        except Exception as exc:  # the reaper keeps going; close() retries what is left
            log.error("could not destroy %s: %s", guest.name, exc)
            return
        self._forget(guest)

    def _forget(self, guest: Guest) -> None:
        with self._lock:
            if guest in self.guests:
                self.guests.remove(guest)
        if isinstance(guest, LibvirtGuest):
            self._remove_files(guest)

    def _remove_files(self, guest: LibvirtGuest) -> None:
        """A finished guest's overlay (and on a remote host its console log: the local mirror
        stays with the runtime folder)."""
        host = next((h for h in self.hosts if h.uri == guest.host_uri), None)
        if host is None or host.lost is not None:
            return
        try:
            host.remove(guest.spec.disk)
            if host.remote:
                host.remove(guest.spec.console_log)
        except HilError as exc:
            log.warning("could not remove %s's files on %s: %s", guest.name, host.uri, exc)

    def _remote(self, uri: str) -> bool:
        return any(h.uri == uri and h.remote for h in self.hosts)


def _domain_exists(conn, name: str, libvirt) -> bool:
    try:
        conn.lookupByName(name)
        return True
    except libvirt.libvirtError:
        return False


def _settle(g: LinuxGuest) -> None:
    """Wait for boot-time services to finish so every snapshot is taken in the same state."""
    r = g.run("systemctl is-system-running --wait 2>/dev/null || true", timeout=120)
    log.info("guest %s system state: %s", g.name, r.text.strip())
    # an NMI from the hang detector panics with the interrupted CPU's stack (instead of printing
    # "Dazed and confused"), so a hang is named after the function it is stuck in
    g.run("sysctl -q -w kernel.unknown_nmi_panic=1", timeout=30).check()
    # a smaller save file restores faster: flush and drop the page cache first ...
    g.run("sync && echo 3 > /proc/sys/vm/drop_caches", timeout=60).check()
    # ... then read back what every handed-out copy runs at once (the shell, timeout, date for
    # the clock): from a cold page cache under TCG that first exec took 0.4-1.8 s, measured
    g.run("date -u >/dev/null && true", timeout=60).check()
