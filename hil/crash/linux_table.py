"""The Linux crash table: which console lines start a crash report and how each is named.

Data only.  Each :class:`Oops` is a header (a regex matched at the start of a console message)
with a list of :class:`Format` rows tried in order; the first row whose ``title`` regex (and
``report`` regex, if any) matches names the crash.  Adding a crash kind is adding a row.

Guilty-function sources (``Format.guilty``), tried in order, their frames concatenated; the first
frame not matched by :data:`SKIP_FRAMES` (or the row's own ``skip``) is the guilty function:

- ``"header"``: the ``func`` group of the ``title`` regex;
- ``"report"``: the ``func`` group of the ``report`` regex;
- ``"rip"``: the faulting instruction line (``RIP: 0010:f+0x1/0x2``, ``pc : f+...``, ``PC is at f``);
- ``"trace"``: the frames of the first stack trace (after ``Call Trace:`` / ``backtrace:``);
- ``"after:REGEX"``: every frame from the first line matching REGEX on;
- ``"line:REGEX"``: the frames on the first line matching REGEX and the line after it;
- ``"sites:REGEX"``: the lock sites (``..., at: f+0x1/0x2``, one line per inlined frame) right
  after the first line matching REGEX (lockdep's ``takes:`` / ``is trying to acquire lock:``);
- a tuple of sources: alternatives, the first that yields any frame is used.

``extractor`` replaces "first frame not skipped" by a smarter rule: ``"stall"`` (the caller of
the first dispatch anchor, e.g. the syscall) or ``"hang"`` (what a blocked task waits in).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hil.crash.kinds import CrashKind

FUNC = r"(?P<func>(?![0-9a-f]+\b)[A-Za-z_][\w.]*)"
# Title templates use str.format: {func} is the guilty function, other names are regex groups.


@dataclass(frozen=True)
class Format:
    """One way a header's report is named.

    ``title``: regex matched at the header; ``fmt``: the title template; ``kind``: the class
    (:class:`~hil.crash.kinds.CrashKind`); ``report``: regex that must also match somewhere in the
    report (its groups feed ``fmt`` too); ``guilty``/``skip``/``extractor``: how the guilty function
    is found (module docstring); ``no_stack``: the report carries no stack, do not call it
    corrupted for lacking one; ``corrupted``: the row only names truncated reports;
    ``needs_trace``: without a stack trace this row does not apply (generic rows: user space
    prints ``WARNING:`` lines too).
    """

    title: str
    fmt: str
    kind: CrashKind
    report: str | None = None
    guilty: tuple[str | tuple[str, ...], ...] = ()
    skip: tuple[str, ...] = ()
    extractor: str = ""
    no_stack: bool = False
    corrupted: bool = False
    needs_trace: bool = False
    needs_func: bool = False  # no guilty function found: try the next row (lockdep's "at:" line lost)
    lower: tuple[str, ...] = ()  # groups to lower-case and hyphenate ("Undefined behaviour")
    implicit_stack: bool = False  # the stack follows the header without a "Call Trace:" line


@dataclass(frozen=True)
class Oops:
    """A header (regex at the start of a console message), its rows, and look-alikes to ignore.

    ``continues``: a header (regex) this one continues when it comes right after it, so the two
    make one report (syzkaller prints ``BUG: memory leak`` before kmemleak's own header).
    """

    header: str
    formats: tuple[Format, ...]
    ignores: tuple[str, ...] = field(default=())
    continues: str = ""


RIP_TRACE = ("rip", "trace")
KASAN_FREE_SKIP = ("kmem_", "slab_", "kfree", "vunmap", "vfree")
# kmemleak: the allocation's backtrace starts in kmemleak and the allocators; the caller leaked.
LEAK_SKIP = (
    "kmemleak",
    "kmalloc",
    "kcalloc",
    "kzalloc",
    "vmalloc",
    "mmap",
    "kmem",
    "slab",
    "alloc",
    "create_object",
    "idr_get",
    "list_lru_init",
    "kasprintf",
    "kvasprintf",
    "pcpu_create",
    "strdup",
    "strndup",
    "memdup",
)
QUEUE_WORK = ("^process_one_work$", "^worker_thread$")  # lockdep's lock site for work items
WARN_STACK = ("rip", "trace")
HEADER_TRACE = ("header", "trace")

# Frames that are never the bug: reporting machinery, sanitizer runtimes, locking and string
# helpers.  Regexes searched in the function name.
SKIP_FRAMES: tuple[str, ...] = (
    r"__sanitizer",
    r"__asan",
    r"kasan",
    r"__msan",
    r"kmsan",
    r"kfence",
    r"__tsan",
    r"kcsan",
    r"__ubsan",
    r"^ubsan_",
    r"__hwasan",
    r"check_memory_region",
    r"read_word_at_a_time",
    r"print_address_description",
    r"print_report",
    r"^print_",
    r"^report_",
    r"_report$",
    r"panic",
    r"invalid_op",
    r"report_bug",
    r"fixup_bug",
    r"handle_bug",
    r"do_error",
    r"_trap$",
    r"^do_trap",
    r"dump_stack",
    r"show_stack",
    r"^show_regs",
    r"^__show_regs",
    r"^die$",
    r"^__die",
    r"^oops_",
    r"^bad_area",
    r"^no_context",
    r"page_fault_oops",
    r"^handle_page_fault",
    r"^(?:asm_)?exc_page_fault",
    r"^page_fault$",
    r"^exc_",
    r"^asm_exc_",
    r"^do_kern_addr_fault",
    r"^do_user_addr_fault",
    r"^kernelmode_fixup",
    r"^__bad_area",
    r"warn_slowpath",
    r"warn_alloc",
    r"__warn",
    r"^warn_",
    r"debug_object",
    r"_is_static_object$",
    r"lockdep",
    r"perf_trace",
    r"lock_acquire",
    r"lock_release",
    r"lock_class",
    r"__lock_",
    r"reacquire_held_locks",
    r"spin_lock",
    r"spin_trylock",
    r"spin_unlock",
    r"raw_read_lock",
    r"raw_read_trylock",
    r"raw_write_lock",
    r"raw_write_trylock",
    r"^_raw_",
    r"^queued_",
    r"^do_raw_",
    r"^down$",
    r"^down_read",
    r"^down_write",
    r"^up_read",
    r"^up_write",
    r"^up$",
    r"^rwsem_",
    r"mutex_lock",
    r"mutex_trylock",
    r"mutex_unlock",
    r"mutex_remove_waiter",
    r"^__mutex_",
    r"osq_lock",
    r"osq_unlock",
    r"^lock_sock",
    r"^release_sock",
    r"^__wake_up",
    r"^refcount_",
    r"^__refcount_",
    r"^_*mem(?:cpy|cmp|set|chr|move)",
    r"^_*str(?:n?cmp|n?cpy|lcpy|scpy|n?len|r?chr|n?str|cat)",
    r"copy_to_user",
    r"copy_from_user",
    r"^_*put_user",
    r"^_*get_user",
    r"might_fault",
    r"might_sleep",
    r"__might_resched",
    r"^__?list_add",
    r"^__?list_del",
    r"^list_replace",
    r"^list_move",
    r"^list_splice",
    r"_list_.*_valid",
    r"_indirect_thunk_",
    r"^string",
    r"^pointer$",
    r"snprintf",
    r"scnprintf",
    r"kasprintf",
    r"kvasprintf",
    r"printk",
    r"^dev_(?:info|notice|warn|err|alert|crit|emerg|printk)",
    r"should_fail",
    r"program_check_exception",
    r"program_check_common",
    r"^_?del_timer",
    r"^flush_work",
    r"__cancel_work_timer",
    r"cancel_work_sync",
    r"try_to_grab_pending",
    r"flush_workqueue",
    r"drain_workqueue",
    r"destroy_workqueue",
    r"^finish_wait",
    r"kthread_stop",
    r"^kobject_del",
    r"^kobject_put",
    r"kobject_uevent_env",
    r"add_uevent_var",
    r"^rust_helper_BUG",
    r"^instrument_",
    r"^_copy_",
    r"^check_preemption_disabled",
    r"^__this_cpu_preempt_check",
    r"^debug_smp_processor_id",
    r"^__cfi_",
    r"^fortify_",
    r"^__fortify",
    r"^__stack_chk_fail",
    r"^stack_trace_",
    r"^arch_stack_walk",
    r"^trace_hardirqs",
    r"^nmi_",
    r"^arch_trigger_cpumask",
    r"^el1_",
    r"^el1h_",
    r"^__do_kernel_fault",
    r"^do_translation_fault",
    r"^do_mem_abort",
    r"^do_bad_area",
    r"^die_kernel_fault",
    r"^dump_backtrace",
    r"^arm64_serror_panic",
    # Driver-core and USB plumbing: the driver that called them is the one to name.
    r"^get_device_parent",
    r"^device_add$",
    r"^device_del$",
    r"^device_unregister",
    r"^device_destroy",
    r"^hwrng_unregister",
    r"^i2c_del_adapter",
    r"^__unregister_client",
    r"^device_for_each_child",
    r"^rollback_registered",
    r"^unregister_netdev",
    r"^sysfs_remove",
    r"^device_remove_file",
    r"^tty_unregister_device",
    r"^dummy_urb_enqueue",
    r"^usb_kill_urb",
    r"^usb_kill_anchored_urbs",
    r"^usb_control_msg",
    r"^usb_hcd_submit_urb",
    r"^usb_submit_urb",
    r"^dpm_sysfs_remove",
    r"^devres_release",
    r"^klist_",
    # Allocators and their wrappers.
    r"kmalloc",
    r"^kfree",
    r"^kvfree",
    r"^kzalloc",
    r"^kcalloc",
    r"^krealloc",
    r"^_*kmem_cache_",
    r"alloc_(?:frozen_)?pages",
    r"^free_large_kmalloc",
    r"^__free_pages",
    r"^slab_free",
    # Generic data structures and library helpers.
    r"^_*rb_(?:erase|insert|first|next|prev|last|replace)",
    r"^xas_",
    r"^xa_",
    r"^crc",
    r"^_*(?:test_and_)?(?:set|clear|change)_bit",
    r"^_*test_bit",
    r"dec_and_lock",
    r"^ref_tracker",
    r"^__?assert_fail",
    r"assertfail$",
    r"^__raw_(?:read|write)[bwlq]",
    r"^(?:read|write)[bwlq]$",
    r"^io(?:read|write)\d+",
    r"^copy_user_",
    r"^copyout",
    r"^copyin",
    r"copy_page_(?:to|from)_iter",
    r"^_*copy_(?:to|from)_iter",
    r"^walk_stackframe",
    r"^unwind_",
    r"^arch_stack_walk",
    r"^return_address",
    r"^__?mutex_",
    r"^mutex_",
    r"rq_lock",
    r"local_bh_enable",
    r"^wait_for_completion",
    r"^complete$",
    # Networking, VFS and page-cache helpers that check their callers' arguments.
    r"^skb_(?:put|push|pull|over_panic|under_panic)$",
    r"^kfree_skb",
    r"^memdup",
    r"kvmalloc",
    r"^kvzalloc",
    r"^logic_(?:in|out)[bwl]$",
    r"^device_release$",
    r"_(?:write|read)_lock$",
    r"^_*iput$",
    r"^dput$",
    r"^fast_dput$",
    r"^(?:drop|inc|clear|set)_nlink$",
    r"^mark_buffer_dirty",
    r"^_*folio_(?:unlock|lock|wait|put|get)",
    r"^(?:un)?lock_page",
    r"^put_page",
    # Workqueue and timer internals.
    r"^insert_work",
    r"queue_work",
    r"queue_delayed_work",
    r"lock_timer_base",
    r"^_*mod_timer",
    r"^add_timer",
    r"^do_tag_check_fault",
    r"^el1_abort",
    r"^el1h_64_sync",
    r"^el1_da",
    r"try_to_del_timer",
    r"^timer_delete",
    r"^timer_shutdown",
    r"^__?flush_work",
    # printk formatting, lockdep internals, atomics, address translation, usercopy hardening.
    r"^hex_string",
    r"^hex_dump",
    r"^mark_lock",
    r"^mark_held_locks",
    r"^mark_usage",
    r"^validate_chain",
    r"^check_prev_add",
    r"^check_prevs_add",
    r"^check_noncircular",
    r"^check_deadlock",
    r"^check_irq_usage",
    r"^valid_state$",
    r"^debug_check_no_locks_freed",
    r"^_*(?:arch_|raw_)?atomic\d*_",
    r"^__?virt_to_phys",
    r"^__phys_addr",
    r"^__read_once",
    r"^__seqprop",
    r"^__?check_heap_object",
    r"^__?check_object_size",
    r"^_*kobject_",
    r"^put_device$",
    r"^get_device$",
    r"^rhashtable_",
    r"^__rhashtable",
    r"^ida_(?:free|alloc)",
    r"^idr_(?:remove|alloc)",
    r"^alloc_page",
    r"^__alloc_page",
    r"^handle_(?:overflow|null_ptr_deref|object_size_mismatch)$",
    r"^va_format",
    r"^_dev_(?:info|notice|warn|err|printk)",
    r"timer_delete",
    r"^aes_(?:en|de)crypt$",
    r"srcu_struct$",
)

# Syscall and dispatch entry points for stalls: the frame just above the first anchor names
# the stall (e.g. the syscall, or the device's ioctl handler).
STALL_ANCHORS: tuple[str, ...] = (
    r"process_one_work",
    r"do_syscall_",
    r"do_fast_syscall_",
    r"sysenter_dispatch",
    r"tracesys_phase2",
    r"netif_receive_skb",
    r"do_softirq",
    r"call_timer_fn",
    r"_run_timers",
    r"run_timer_softirq",
    r"run_ksoftirqd",
    r"smpboot_thread_fn",
    r"^kthread$",
    r"start_secondary",
    r"cpu_startup_entry",
    r"ret_from_fork",
    r"vfs_write",
    r"vfs_read",
    r"vfs_iter_read",
    r"vfs_iter_write",
    r"do_iter_read",
    r"do_iter_write",
    r"vfs_ioctl",
    r"blkdev_driver_ioctl",
    r"blkdev_ioctl",
    r"^call_read_iter",
    r"^call_write_iter",
    r"do_iter_readv_writev",
    r"^call_mmap",
    r"mmap_region",
    r"do_mmap",
    r"do_dentry_open",
    r"vfs_open",
    r"^sock_sendmsg",
    r"^sock_recvmsg",
    r"^sock_release",
    r"^__sock_release",
    r"__sys_setsockopt",
    r"kernel_setsockopt",
    r"sock_common_setsockopt",
    r"__sys_listen",
    r"kernel_listen",
    r"sk_common_release",
    r"^sock_mmap",
    r"__sys_accept",
    r"kernel_accept",
    r"^sock_do_ioctl",
    r"^sock_ioctl",
    r"^compat_sock_ioctl",
    r"^nfnetlink_rcv_msg",
    r"^(?:__\w+?_)?(?:compat_)?(?:SYSC|SyS|sys|_sys)_(?:socketpair|connect|ioctl)",
    r"^ksys_ioctl",
    r"^__do_fault$",
    r"^__hrtimer_run_queues",
    r"^do_vfs_ioctl",
    r"^new_sync_read",
    r"^new_sync_write",
    r"^rtnetlink_rcv_msg",
    r"^tasklet_action",
    r"__fput",
    r"task_work_run",
    r"exit_to_usermode",
    r"el0_svc_common",
    r"invoke_syscall",
    r"^el0_svc_handler",
)
# Stalls inside these are named after the group, wherever the stack comes from.
STALL_GROUPS: tuple[tuple[str, str], ...] = (("smp_call_function", "smp_call_function"),)
STALL_STRIP_PREFIXES: tuple[str, ...] = (
    "__x64_",
    "__ia32_",
    "__arm64_",
    "__riscv_",
    "__se_",
    "__do_",
    "compat_SYSC_",
    "compat_SyS_",
    "SYSC_",
    "SyS_",
)

# Where an NMI catches a busy CPU without it being the culprit: clock reads, delays, idle
# loops.  Full-match regexes on the function name (see linux.interrupted_function).
INTERRUPTED_GENERIC: tuple[str, ...] = (
    r"read_hpet$",
    r"read_tsc$",
    r"ktime_get\w*$",
    r"native_sched_clock$",
    r"sched_clock\w*$",
    r"delay_tsc$",
    r"__delay$",
    r"__const_udelay$",
    r"udelay$",
    r"cpu_relax$",
    r"rep_nop$",
    r"native_safe_halt$",
    r"default_idle\w*$",
    r"acpi_idle\w*$",
    r"mwait_idle\w*$",
    r"cpu_idle_poll$",
    r"do_idle$",
    r"cpuidle_enter\w*$",
    r"arch_cpu_idle\w*$",
    # retpoline and return thunks: an indirect call or return passes through them
    r"__x86_indirect_(?:call_|jump_)?thunk\w*$",
    r"__indirect_thunk_start$",
    r"__x86_return_thunk$",
    r"(?:srso|retbleed)_\w*return_thunk$",
)

# Blocked tasks: these callees mean "the whole system is stuck on X", grouped under one name.
HANG_ANCHORS: tuple[tuple[str, str], ...] = (
    ("rtnl_lock", "rtnl_lock"),
    ("synchronize_rcu", "synchronize_rcu"),
    ("synchronize_srcu", "synchronize_rcu"),
    ("synchronize_net", "synchronize_rcu"),
    ("synchronize_sched", "synchronize_rcu"),
)
HANG_SKIP: tuple[str, ...] = (
    "sched",
    "_lock",
    "_slowlock",
    "down",
    "completion",
    "kthread",
    "wait",
    "synchronize",
    "context_switch",
    "__switch_to",
    "cancel_delayed_work",
    "rwsem",
    "mutex",
    "_killable",
    "flush_work",
)

STACK_START = r"Call Trace:|Call trace:|(?<!stack )backtrace(?: \(crc [0-9a-f]+\))?:|^Backtrace:"
# Lines that end a report.
END_MARKERS = r"---\[ end trace|---\[ end Kernel panic|^Kernel Offset:|^Rebooting in \d+"
# Headers that do not start a second report when they follow a first one (they belong to it).
FOLLOW_UPS = (
    r"invalid opcode:",
    r"Kernel panic - not syncing",
    r"unregister_netdevice: waiting for",
    r"PANIC: double fault",
    r"Oops: ",
    r"Internal error:",
    r"kernel BUG at",
)
# Console messages that precede a header ("watchdog: BUG: soft lockup").
HEADER_LEADS = (
    r"(?:segment-related |\S+ login: |\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |\[ |Oops: |watchdog: |NMI watchdog: |rcu: |\s+)*"
)

# An unexpected reboot: the console shows a machine booting again after it had booted (our
# guests never reboot on their own).  Matched at the start of a console message: firmware and
# the kernel's decompressor print without a timestamp, the kernel's first lines with an early one
# (below BOOT_BANNER_MAX_S).  A boot is over once a line is stamped BOOT_BANNER_MAX_S or later,
# or a line of BOOTED_MARKERS shows; a banner at the very start of a log is the first boot.
FIRMWARE_BANNERS = (
    r"(?:\x1b\[[0-9;?=]*[A-Za-z]|\x1b[^\[]|[\x00-\x08\x0b-\x1f])*"  # terminal resets before the banner
    r"(?:SeaBIOS \(version |Decompressing Linux\.\.\.|Booting the kernel\b|iPXE \(http|"
    r"BdsDxe: (?:loading|starting) Boot|U-Boot \d{4}\.\d\d)"
)
KERNEL_BANNERS = (
    r"Linux version \d+\.\d+\S* \(|Command line: |BIOS-provided physical RAM map:|Booting Linux on physical CPU "
)
BOOT_BANNER_MAX_S = 1.0
BOOTED_MARKERS = r"Run \S+ as init process|Freeing unused kernel|\S+ login: "
REBOOT_TITLE = "unexpected kernel reboot"

IRQ_ENTRY = r"apic_timer_interrupt|</IRQ>|gic_handle_irq|el1_interrupt|el1h_64_irq_handler"

OOPSES: tuple[Oops, ...] = (
    Oops(
        r"BUG:",
        (
            # syzkaller's KASAN titles (the bug, the access, the function): a team's dashboards
            # and the corpus both speak them.  6.1 says "use-after-free" where 6.3+ says
            # "slab-use-after-free"; each kernel's own word is kept.
            Format(
                r"BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in " + FUNC,
                "KASAN: invalid-free in {func}",
                CrashKind.KASAN,
                guilty=HEADER_TRACE,
                skip=KASAN_FREE_SKIP,
            ),
            Format(
                r"BUG: KASAN: (?P<bug>[a-z\-]+) in " + FUNC,
                "KASAN: {bug} {access} in {func}",
                CrashKind.KASAN,
                report=r"(?P<access>Read|Write) (?:of size|at addr)",
                guilty=HEADER_TRACE,
            ),
            Format(
                r"BUG: KASAN: (?P<bug>[a-z\-]+) on address",
                "KASAN: {bug} {access}",
                CrashKind.KASAN,
                report=r"(?P<access>Read|Write) of size",
            ),
            Format(
                r"BUG: KASAN: (?P<bug>[a-z\-]+) in " + FUNC,
                "KASAN: {bug} in {func}",
                CrashKind.KASAN,
                guilty=HEADER_TRACE,
                corrupted=True,
            ),
            Format(r"BUG: KASAN: (?P<bug>.*)", "KASAN: {bug}", CrashKind.KASAN, corrupted=True),
            Format(
                r"BUG: KMSAN: kernel-usb-infoleak",
                "KMSAN: kernel-usb-infoleak in {func}",
                CrashKind.KMSAN,
                guilty=("trace",),
                implicit_stack=True,
                skip=("usb_submit_urb", "usb_start_wait_urb", "usb_bulk_msg", "usb_interrupt_msg", "usb_control_msg"),
            ),
            Format(
                r"BUG: KMSAN: (?P<bug>[a-z\-]+)",
                "KMSAN: {bug} in {func}",
                CrashKind.KMSAN,
                guilty=("trace",),
                implicit_stack=True,
                skip=("copy_to_user", "copyout", "_copy_to_iter", "copy_to_iter", "iterate_"),
            ),
            Format(
                r"BUG: KFENCE: (?P<bug>[a-z\- ]+?) in " + FUNC,
                "KFENCE: {bug} in {func}",
                CrashKind.KFENCE,
                guilty=("header", "trace"),
                implicit_stack=True,
            ),
            Format(
                r"BUG: KCSAN: (?P<bug>[a-z\-: ]+?) in " + FUNC,
                "KCSAN: {bug} in {func}",
                CrashKind.KCSAN,
                guilty=("header",),
                no_stack=True,
            ),
            Format(
                r"BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer dereference|Kernel NULL pointer dereference)",
                "BUG: unable to handle kernel NULL pointer dereference in {func}",
                CrashKind.BUG,
                guilty=RIP_TRACE,
            ),
            Format(
                r"BUG: (?:unable to handle kernel paging request|unable to handle page fault|Unable to handle kernel (?:data access|instruction fetch)|Unable to handle unknown paging fault)",
                "BUG: unable to handle kernel paging request in {func}",
                CrashKind.BUG,
                guilty=RIP_TRACE,
            ),
            Format(
                r"BUG: (?:unable to handle kernel|Unable to handle kernel)",
                "BUG: unable to handle kernel",
                CrashKind.BUG,
                corrupted=True,
            ),
            Format(
                r"BUG: spinlock (?P<what>lockup suspected|already unlocked|recursion|bad magic|wrong owner|wrong CPU)",
                "BUG: spinlock {what} in {func}",
                CrashKind.LOCKDEP,
                guilty=("trace",),
                skip=("spin_",),
            ),
            Format(
                r"BUG: rwlock (?P<what>lockup suspected|already unlocked|recursion|bad magic|wrong owner|wrong CPU)",
                "BUG: rwlock {what} in {func}",
                CrashKind.LOCKDEP,
                guilty=("trace",),
                skip=("rwlock", "_lock$", "_unlock"),
            ),
            Format(
                r"BUG: soft lockup", "BUG: soft lockup in {func}", CrashKind.LOCKUP, guilty=RIP_TRACE, extractor="stall"
            ),
            Format(
                r"BUG: .*still has locks held!",
                "BUG: still has locks held in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:still has locks held",),
            ),
            Format(
                r"BUG: lock held when returning to user space",
                "BUG: lock held when returning to user space in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:leaving the kernel with locks still held",),
                no_stack=True,
            ),
            Format(
                r"BUG: bad unlock balance detected!",
                "BUG: bad unlock balance in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:is trying to release lock",),
            ),
            Format(
                r"BUG: held lock freed!",
                "BUG: held lock freed in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:with a lock still held there",),
            ),
            Format(
                r"BUG: (?P<what>Bad rss-counter state|non-zero \w+ on freeing mm|MAX_[A-Z_]+ too low!|workqueue lockup)",
                "BUG: {what}",
                CrashKind.BUG,
                no_stack=True,
            ),
            Format(
                r"BUG: Dentry .* still in use \(\d+\) \[unmount of (?P<fs>[^\]]+)\]",
                "BUG: Dentry still in use [unmount of {fs}]",
                CrashKind.BUG,
                no_stack=True,
            ),
            Format(
                r"BUG: Bad page (?P<what>\w+)",
                "BUG: Bad page {what} in {func}",
                CrashKind.BUG,
                guilty=("trace",),
                skip=("free_", "page", "folio", "bad_page", "put_", "release_pages", "^__", "_free"),
            ),
            Format(
                r"BUG: sleeping function called from invalid context",
                "BUG: sleeping function called from invalid context in {func}",
                CrashKind.ATOMIC_SLEEP,
                guilty=("trace",),
            ),
            Format(
                r"BUG: scheduling while atomic",
                "BUG: scheduling while atomic in {func}",
                CrashKind.ATOMIC_SLEEP,
                guilty=("trace",),
                skip=("schedule", "preempt"),
            ),
            Format(
                r"BUG: using (?P<what>__this_cpu_[a-z_]+\(\)|smp_processor_id\(\)) in preemptible",
                "BUG: using {what} in preemptible code in {func}",
                CrashKind.LOCKDEP,
                guilty=("trace",),
                skip=("preempt", "this_cpu"),
            ),
            Format(
                r"BUG: workqueue leaked lock or atomic",
                "BUG: workqueue leaked lock or atomic in {func}",
                CrashKind.LOCKDEP,
                report=r"last function: " + FUNC,
                guilty=("report",),
                no_stack=True,
            ),
            Format(
                r"BUG: memory leak",
                "memory leak in {func}",
                CrashKind.LEAK,
                guilty=("trace",),
                skip=LEAK_SKIP,
            ),
            Format(
                r"BUG: (?:TASK )?stack guard page was hit at",
                "BUG: stack guard page was hit in {func}",
                CrashKind.BUG,
                guilty=RIP_TRACE,
            ),
            Format(
                r"BUG: Invalid wait context", "WARNING: locking bug in {func}", CrashKind.LOCKDEP, guilty=("trace",)
            ),
            Format(
                r"BUG: [Nn]ested lock was not taken",
                "BUG: nested lock was not taken in {func}",
                CrashKind.LOCKDEP,
                guilty=("trace",),
            ),
            # Any other BUG: line with a stack, by its text (old lockdep headers end in " ]").
            Format(r"BUG: (?P<what>.*?[^\s\]])(?:\s*\])?\s*$", "BUG: {what}", CrashKind.BUG, needs_trace=True),
            Format(r"BUG:\s*$", "BUG: corrupted", CrashKind.BUG, corrupted=True),
        ),
        ignores=(r"BUG: no syscalls can create resource",),
    ),
    Oops(
        r"WARNING:",
        (
            Format(
                r"WARNING: .*lib/debugobjects\.c",
                "WARNING: ODEBUG bug in {func}",
                CrashKind.WARNING,
                guilty=WARN_STACK,
                skip=(
                    "debug_",
                    "rcu",
                    "hrtimer_",
                    "timer_",
                    "work_",
                    "percpu_",
                    "kmem_",
                    "slab_",
                    "kfree",
                    "vunmap",
                    "vfree",
                    "__free_",
                    "debug_check",
                    "kobject_",
                ),
            ),
            Format(
                r"WARNING: .*mm/usercopy\.c.* usercopy_warn",
                "WARNING: bad usercopy in {func}",
                CrashKind.WARNING,
                guilty=WARN_STACK,
                skip=("usercopy", "__check"),
            ),
            Format(
                r"WARNING: .*lib/kobject\.c",
                "WARNING: kobject bug in {func}",
                CrashKind.WARNING,
                guilty=WARN_STACK,
                skip=("kobject_",),
            ),
            Format(
                r"WARNING: .*fs/proc/generic\.c.* proc_register",
                "WARNING: proc registration bug in {func}",
                CrashKind.WARNING,
                guilty=WARN_STACK,
                skip=("proc_",),
            ),
            Format(
                r"WARNING: .*lib/refcount\.c",
                "WARNING: refcount bug in {func}",
                CrashKind.REFCOUNT_WARNING,
                guilty=WARN_STACK,
                skip=("refcount", "kobject_"),
            ),
            Format(
                r"WARNING: .*kernel/locking/lockdep\.c",
                "WARNING: locking bug in {func}",
                CrashKind.LOCKDEP,
                guilty=WARN_STACK,
                skip=("lock_sock", "release_sock"),
            ),
            Format(
                r"WARNING: .*mm/.*\.c.* k?.?malloc",
                "WARNING: kmalloc bug in {func}",
                CrashKind.WARNING,
                guilty=WARN_STACK,
                skip=("kmalloc", "kcalloc", "kzalloc", "krealloc", "vmalloc", "slab", "kmem"),
            ),
            Format(
                r"WARNING: .* usb_submit_urb",
                "WARNING in {func}/usb_submit_urb",
                CrashKind.WARNING,
                guilty=WARN_STACK,
                skip=("usb_submit_urb", "usb_start_wait_urb", "usb_bulk_msg", "usb_interrupt_msg", "usb_control_msg"),
            ),
            Format(
                r"WARNING: lock held when returning to user space",
                "WARNING: lock held when returning to user space in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:leaving the kernel with locks still held",),
                no_stack=True,
            ),
            Format(
                r"WARNING: (?:possible circular locking dependency|possible recursive locking) detected",
                "possible deadlock in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:is trying to acquire lock",),
                skip=QUEUE_WORK,
                needs_func=True,
            ),
            Format(
                r"WARNING: possible irq lock inversion dependency detected",
                "possible deadlock in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:just changed the state of lock",),
                skip=QUEUE_WORK,
                needs_func=True,
            ),
            Format(
                r"WARNING: (?:SOFT|HARD)IRQ-safe -> (?:SOFT|HARD)IRQ-unsafe lock order detected",
                "possible deadlock in {func}",
                CrashKind.LOCKDEP,
                guilty=(r"after:which became \w+-irq-safe at:",),
            ),
            Format(
                r"WARNING: inconsistent lock state",
                "inconsistent lock state in {func}",
                CrashKind.LOCKDEP,
                guilty=("sites:takes:", "trace"),
                needs_func=True,
            ),
            Format(
                r"WARNING: suspicious RCU usage",
                "WARNING: suspicious RCU usage in {func}",
                CrashKind.LOCKDEP,
                guilty=("trace",),
                skip=("rcu", "kmem", "slab", "kmalloc", "vmalloc", "kcalloc", "kzalloc"),
            ),
            Format(
                r"WARNING: suspicious RCU usage", "WARNING: suspicious RCU usage", CrashKind.WARNING, corrupted=True
            ),
            Format(
                r"WARNING: kernel stack regs at .* has bad '(?P<reg>[^']+)' value",
                "WARNING: kernel stack regs has bad '{reg}' value",
                CrashKind.WARNING,
                no_stack=True,
            ),
            Format(
                r"WARNING: kernel stack frame pointer at .* has bad value",
                "WARNING: kernel stack frame pointer has bad value",
                CrashKind.WARNING,
                no_stack=True,
            ),
            Format(
                r"WARNING: [Nn]ested lock was not taken",
                "WARNING: nested lock was not taken in {func}",
                CrashKind.LOCKDEP,
                guilty=("trace",),
            ),
            Format(
                r"WARNING: bad unlock balance detected!",
                "WARNING: bad unlock balance in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:is trying to release lock",),
            ),
            Format(
                r"WARNING: held lock freed!",
                "WARNING: held lock freed in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:with a lock still held there",),
            ),
            Format(
                r"WARNING: .*still has locks held!",
                "WARNING: still has locks held in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:still has locks held",),
            ),
            # Kernels before 6.16: "WARNING: CPU: 0 PID: 1 at fs/x.c:12 f+0x1/0x2"; after:
            # "WARNING: fs/x.c:12 at f+0x1/0x2, CPU#0: comm/1".
            # "[cond] " before the file: WARN_ON() printing its condition (6.18+).
            Format(
                r"WARNING: (?:CPU: \d+ PID: \d+ at )?(?:\[.*\] )?\S+:\d+ (?:at )?" + FUNC + r"\+0x",
                "WARNING in {func}",
                CrashKind.WARNING,
                guilty=("header",) + WARN_STACK,
            ),
            Format(
                r"WARNING: (?:CPU: \d+ PID: \d+ at )?(?:\[.*\] )?\S+:\d+ ",
                "WARNING in {func}",
                CrashKind.WARNING,
                guilty=WARN_STACK,
            ),
            Format(
                r"WARNING: (?P<what>possible circular locking dependency detected|possible recursive locking detected|"
                r"inconsistent lock state|possible irq lock inversion dependency detected)",
                "WARNING: {what}",
                CrashKind.WARNING,
                corrupted=True,
            ),
            Format(r"WARNING: (?P<what>.*\S)", "WARNING: {what}", CrashKind.WARNING, needs_trace=True),
            Format(r"WARNING:\s*$", "WARNING: corrupted", CrashKind.WARNING, corrupted=True),
        ),
        ignores=(
            r"WARNING: /etc/ssh/moduli does not exist",
            r"WARNING: workqueue cpumask: online intersect > possible intersect",
        ),
    ),
    Oops(
        r"INFO:",
        (
            Format(
                r"INFO: (?:possible circular locking dependency|possible recursive locking) detected",
                "possible deadlock in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:is trying to acquire lock",),
                skip=QUEUE_WORK,
                needs_func=True,
            ),
            Format(
                r"INFO: possible irq lock inversion dependency detected",
                "possible deadlock in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:just changed the state of lock",),
                skip=QUEUE_WORK,
                needs_func=True,
            ),
            Format(
                r"INFO: (?:SOFT|HARD)IRQ-safe -> (?:SOFT|HARD)IRQ-unsafe lock order detected",
                "possible deadlock in {func}",
                CrashKind.LOCKDEP,
                guilty=("after:is trying to acquire",),
                skip=QUEUE_WORK,
                needs_func=True,
            ),
            Format(
                r"INFO: inconsistent lock state",
                "inconsistent lock state in {func}",
                CrashKind.LOCKDEP,
                guilty=("sites:takes:", "trace"),
                needs_func=True,
            ),
            Format(
                r"INFO: (?P<what>possible circular locking dependency detected|possible recursive locking detected|"
                r"inconsistent lock state|possible irq lock inversion dependency detected)",
                "INFO: {what}",
                CrashKind.LOCKDEP,
                corrupted=True,
            ),
            Format(
                r"INFO: rcu_(?:preempt|sched|bh|tasks\w*) (?:self-)?detected(?: expedited)? stall",
                "INFO: rcu detected stall in {func}",
                CrashKind.HANG,
                guilty=(("after:" + IRQ_ENTRY, "after:NMI backtrace for cpu"),),
                skip=("apic_timer_interrupt", "rcu", "^tick_sched", "^update_process_times", "^hrtimer_interrupt"),
                extractor="stall",
            ),
            Format(
                r"INFO: trying to register non-static key",
                "INFO: trying to register non-static key in {func}",
                CrashKind.LOCKDEP,
                guilty=("trace",),
                skip=("stack", "lock", "IRQ"),
            ),
            Format(
                r"INFO: suspicious RCU usage",
                "INFO: suspicious RCU usage in {func}",
                CrashKind.LOCKDEP,
                guilty=("trace",),
                skip=("rcu", "kmem", "slab", "kmalloc", "vmalloc", "kcalloc", "kzalloc"),
            ),
            Format(
                r"INFO: task .* blocked (?:in I/O wait )?for more than \d+ seconds",
                "INFO: task hung in {func}",
                CrashKind.HANG,
                guilty=("trace",),
                extractor="hang",
            ),
            Format(
                r"INFO: task .* can't die for more than \d+ seconds",
                "INFO: task can't die in {func}",
                CrashKind.HANG,
                guilty=("trace",),
                extractor="hang",
            ),
            Format(
                r"INFO: (?P<what>Freed|Allocated) in " + FUNC + r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?P<rest>.*)",
                "INFO: {what} in {func} {rest}",
                CrashKind.KASAN,
                corrupted=True,
            ),
            Format(r"INFO: (?P<what>.*?[^\s\]])(?:\s*\])?\s*$", "INFO: {what}", CrashKind.INFO, needs_trace=True),
            Format(r"INFO:\s*$", "INFO: corrupted", CrashKind.INFO, corrupted=True),
        ),
        ignores=(
            r"INFO: lockdep is turned off",
            r"INFO: Stall ended before state dump start",
            r"INFO: NMI handler",
            r"INFO: recovery required on readonly filesystem",
            r"(?:handler|interrupt).*took too long",
            r"INFO: sys_.* is not present in /proc/kallsyms",
            r"INFO: no syscalls can create resource",
        ),
    ),
    Oops(
        r"UBSAN:",
        (
            Format(
                r"UBSAN: (?P<bug>[\w\- ]+?) in ",
                "UBSAN: {bug} in {func}",
                CrashKind.UBSAN,
                guilty=("trace",),
                lower=("bug",),
            ),
            Format(r"UBSAN: (?P<bug>.*\S)", "UBSAN: {bug}", CrashKind.UBSAN, corrupted=True, lower=("bug",)),
        ),
    ),
    Oops(
        r"general protection fault",
        (
            Format(
                r"general protection fault.*:", "general protection fault in {func}", CrashKind.GPF, guilty=RIP_TRACE
            ),
        ),
    ),
    Oops(
        r"stack segment: ",
        (Format(r"stack segment: ", "stack segment fault in {func}", CrashKind.GPF, guilty=RIP_TRACE),),
    ),
    Oops(
        r"Kernel panic - not syncing",
        (
            Format(
                r"Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: " + FUNC,
                "kernel panic: stack is corrupted in {func}",
                CrashKind.PANIC,
                guilty=("header", "trace"),
                skip=("stack_chk",),
                no_stack=True,
            ),
            Format(
                r"Kernel panic - not syncing: stack-protector:",
                "kernel panic: stack is corrupted in {func}",
                CrashKind.PANIC,
                guilty=("trace",),
                skip=("stack_chk",),
            ),
            Format(
                r"Kernel panic - not syncing: corrupted stack end",
                "kernel panic: corrupted stack end in {func}",
                CrashKind.PANIC,
                guilty=("trace",),
                skip=("schedule", "retint_kernel"),
                extractor="stall",
            ),
            Format(
                r"Kernel panic - not syncing: Attempted to kill init!",
                "kernel panic: Attempted to kill init!",
                CrashKind.PANIC,
                no_stack=True,
            ),
            Format(
                r"Kernel panic - not syncing: Couldn't open N_TTY ldisc",
                "kernel panic: Couldn't open N_TTY ldisc",
                CrashKind.PANIC,
                no_stack=True,
            ),
            Format(
                r"Kernel panic - not syncing: kernel stack overflow",
                "kernel stack overflow in {func}",
                CrashKind.PANIC,
                guilty=("trace",),
                skip=("stack_overflow", "handle_stack_overflow"),
            ),
            Format(
                r"Kernel panic - not syncing: (?:Oops: )?(?:kernel: )?(?P<what>Fatal exception|panic_on_warn set|hung_task: blocked tasks)",
                "kernel panic: {what}",
                CrashKind.PANIC,
                corrupted=True,
            ),
            Format(
                r"Kernel panic - not syncing: (?P<what>.*\S)", "kernel panic: {what}", CrashKind.PANIC, no_stack=True
            ),
        ),
    ),
    Oops(
        r"PANIC: double fault",
        (Format(r"PANIC: double fault", "PANIC: double fault in {func}", CrashKind.PANIC, guilty=("rip",)),),
    ),
    Oops(
        r"kernel BUG at ",
        (
            Format(
                r"kernel BUG at mm/usercopy\.c",
                "BUG: bad usercopy in {func}",
                CrashKind.BUG,
                guilty=("trace",),
                skip=("usercopy", "__check"),
            ),
            Format(
                r"kernel BUG at lib/list_debug\.c", "BUG: corrupted list in {func}", CrashKind.BUG, guilty=RIP_TRACE
            ),
            Format(r"kernel BUG at ", "kernel BUG in {func}", CrashKind.BUG, guilty=RIP_TRACE),
        ),
    ),
    Oops(r"Kernel BUG ", (Format(r"Kernel BUG (?P<what>.*\S)", "kernel BUG {what}", CrashKind.BUG, no_stack=True),)),
    Oops(
        r"BUG kmalloc-",
        (Format(r"BUG kmalloc-.*: Object already free", "BUG: Object already free", CrashKind.BUG, no_stack=True),),
    ),
    Oops(r"int3: ", (Format(r"int3: ", "int3 in {func}", CrashKind.BUG, guilty=RIP_TRACE),)),
    Oops(
        r"unregister_netdevice: waiting for",
        (
            Format(
                r"unregister_netdevice: waiting for \S+ to become free",
                "unregister_netdevice: waiting for DEV to become free",
                CrashKind.HANG,
                no_stack=True,
            ),
        ),
    ),
    Oops(
        r"VFS: Close: file count is ",
        (
            Format(
                r"VFS: Close: file count is (?:zero|0)\b",
                "VFS: Close: file count is zero (use-after-free)",
                CrashKind.BUG,
                no_stack=True,
            ),
        ),
    ),
    Oops(
        r"divide[ _]error:",
        (Format(r"divide[ _]error: ", "divide error in {func}", CrashKind.DIVIDE, guilty=("rip",)),),
    ),
    Oops(
        r"invalid opcode:", (Format(r"invalid opcode: ", "invalid opcode in {func}", CrashKind.BUG, guilty=("rip",)),)
    ),
    Oops(
        r"(?:NMI )?[Ww]atchdog(?::)? [Ww]atchdog detected hard LOCKUP|Watchdog detected hard LOCKUP",
        (
            Format(
                r".*hard LOCKUP", "BUG: hard lockup in {func}", CrashKind.LOCKUP, guilty=RIP_TRACE, extractor="stall"
            ),
        ),
    ),
    Oops(
        r"Unable to handle kernel ",
        (
            Format(
                r"Unable to handle kernel NULL pointer dereference",
                "BUG: unable to handle kernel NULL pointer dereference in {func}",
                CrashKind.BUG,
                guilty=RIP_TRACE,
            ),
            Format(
                r"Unable to handle kernel access to user memory",
                "BUG: unable to handle kernel access to user memory in {func}",
                CrashKind.BUG,
                guilty=RIP_TRACE,
            ),
            Format(
                r"Unable to handle kernel \w",  # paging request, a permission fault (read, write, execute)
                "BUG: unable to handle kernel paging request in {func}",
                CrashKind.BUG,
                guilty=RIP_TRACE,
            ),
        ),
    ),
    Oops(
        r"Internal error:", (Format(r"Internal error:", "Internal error in {func}", CrashKind.BUG, guilty=RIP_TRACE),)
    ),
    Oops(
        r"Unhandled fault:",
        (Format(r"Unhandled fault:", "Unhandled fault in {func}", CrashKind.BUG, guilty=RIP_TRACE),),
    ),
    Oops(
        r"Alignment trap:", (Format(r"Alignment trap:", "Alignment trap in {func}", CrashKind.BUG, guilty=RIP_TRACE),)
    ),
    Oops(
        r"VFS: Busy inodes after unmount",
        (
            Format(
                r"VFS: Busy inodes after unmount",
                "VFS: Busy inodes after unmount (use-after-free)",
                CrashKind.BUG,
                no_stack=True,
            ),
        ),
    ),
    Oops(
        r"trusty: panic",
        (
            Format(
                r"trusty: panic .* ASSERT FAILED at \([^)]*\): (?P<what>.*\S)",
                "trusty: ASSERT FAILED: {what}",
                CrashKind.PANIC,
                no_stack=True,
            ),
            Format(r"trusty: panic", "trusty: ASSERT FAILED:", CrashKind.PANIC, corrupted=True),
        ),
    ),
    Oops(
        r"attempt to \w+ with overflow",
        (
            Format(
                r"(?P<what>attempt to \w+ with overflow)",
                "{what} in {func}",
                CrashKind.BUG,
                guilty=("trace",),
                skip=("rust_begin_unwind", "panicking", "^_RNvNtCs\\w*4core"),
            ),
        ),
    ),
    # kmemleak's report (/sys/kernel/debug/kmemleak): one object, its allocation's backtrace
    Oops(
        r"unreferenced object 0x[0-9a-f]+ \(size \d+\):",
        (
            Format(
                r"unreferenced object",
                "memory leak in {func}",
                CrashKind.LEAK,
                guilty=("trace",),
                skip=LEAK_SKIP,
            ),
        ),
        continues=r"BUG: memory leak\s*$",
    ),
    Oops(
        r"SYZFAIL:|.*SYZFATAL:",
        (Format(r"(?:.*)?(?P<what>SYZFAIL:.*\S|SYZFATAL:.*\S)", "{what}", CrashKind.SYZ_FAILURE, no_stack=True),),
    ),
)
