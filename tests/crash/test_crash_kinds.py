"""One short report per crash kind, as a Debian 6.1 guest prints them: the table names each."""

from __future__ import annotations

import pytest

from hil.crash import parse

P = "[  101.000000] "

TRACE = """Call Trace:
 <TASK>
 hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
 __x64_sys_ioctl+0x90/0xd0
 do_syscall_64+0x58/0xc0
 entry_SYSCALL_64_after_hwframe+0x64/0xce
 </TASK>
Modules linked in: hil_demo(OE)
"""

CASES = {
    "sysrq": (
        """sysrq: Trigger a crash
Kernel panic - not syncing: sysrq triggered crash
CPU: 0 PID: 812 Comm: bash Tainted: G           OE      6.1.0-18-amd64 #1  Debian 6.1.76-1
Call Trace:
 <TASK>
 dump_stack_lvl+0x44/0x5c
 panic+0x118/0x2ed
 sysrq_handle_crash+0x16/0x20
 __handle_sysrq.cold+0x43/0x11b
 write_sysrq_trigger+0x24/0x40
 proc_reg_write+0x56/0xa0
 vfs_write+0xc7/0x3c0
 </TASK>
Kernel Offset: 0x2e000000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)
---[ end Kernel panic - not syncing: sysrq triggered crash ]---
""",
        "kernel panic: sysrq triggered crash",
        "PANIC",
    ),
    "warning": (
        """------------[ cut here ]------------
WARNING: CPU: 1 PID: 731 at drivers/misc/hil_demo.c:88 hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
Modules linked in: hil_demo(OE)
RIP: 0010:hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
"""
        + TRACE
        + "---[ end trace 0000000000000000 ]---\n",
        "WARNING in hil_demo_ioctl",
        "WARNING",
    ),
    "kasan": (
        """==================================================================
BUG: KASAN: slab-use-after-free in hil_demo_rx+0x4e/0x120 [hil_demo]
Read of size 8 at addr ffff88800a1b2c08 by task hil-agent/731

CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OE      6.1.0-18-amd64 #1
Call Trace:
 <TASK>
 dump_stack_lvl+0x44/0x5c
 print_report+0x184/0x4be
 kasan_report+0xc3/0x100
 hil_demo_rx+0x4e/0x120 [hil_demo]
 hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
 </TASK>

Allocated by task 731:
 kasan_save_stack+0x1e/0x40
 hil_demo_open+0x31/0x90 [hil_demo]
==================================================================
""",
        "KASAN: slab-use-after-free Read in hil_demo_rx",
        "KASAN",
    ),
    "ubsan": (
        """================================================================================
UBSAN: shift-out-of-bounds in drivers/misc/hil_demo.c:120:19
shift exponent 64 is too large for 64-bit type 'long unsigned int'
CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OE      6.1.0-18-amd64 #1
Call Trace:
 <TASK>
 dump_stack_lvl+0x44/0x5c
 __ubsan_handle_shift_out_of_bounds.cold+0x61/0xef
 hil_demo_set_mask+0x88/0x90 [hil_demo]
 hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
 </TASK>
================================================================================
""",
        "UBSAN: shift-out-of-bounds in hil_demo_set_mask",
        "UBSAN",
    ),
    "gpf": (
        """general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI
CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OE      6.1.0-18-amd64 #1
RIP: 0010:hil_demo_unlink+0x12/0x40 [hil_demo]
RSP: 0018:ffffb4e7c04bfd78 EFLAGS: 00010246
"""
        + TRACE,
        "general protection fault in hil_demo_unlink",
        "GPF",
    ),
    "soft_lockup": (
        """watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [hil-agent:731]
Modules linked in: hil_demo(OE)
CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OEL     6.1.0-18-amd64 #1
RIP: 0010:hil_demo_spin+0x9/0x20 [hil_demo]
RSP: 0018:ffffb4e7c04bfd78 EFLAGS: 00000202
"""
        + TRACE,
        "BUG: soft lockup in hil_demo_ioctl",
        "LOCKUP",
    ),
    "hard_lockup": (
        """NMI watchdog: Watchdog detected hard LOCKUP on cpu 1
Modules linked in: hil_demo(OE)
CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OE      6.1.0-18-amd64 #1
RIP: 0010:hil_demo_spin_irqoff+0x9/0x20 [hil_demo]
RSP: 0018:ffffb4e7c04bfd78 EFLAGS: 00000046
"""
        + TRACE,
        "BUG: hard lockup in hil_demo_ioctl",
        "LOCKUP",
    ),
    "rcu_stall": (
        """rcu: INFO: rcu_preempt self-detected stall on CPU
rcu: 	1-....: (21000 ticks this GP) idle=9b4/1/0x4000000000000000 softirq=4512/4512 fqs=5152
	(t=21001 jiffies g=10657 q=212 ncpus=2)
NMI backtrace for cpu 1
CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OEL     6.1.0-18-amd64 #1
Call Trace:
 <IRQ>
 dump_stack_lvl+0x44/0x5c
 nmi_cpu_backtrace.cold+0x30/0x70
 rcu_dump_cpu_stacks+0xc7/0x100
 rcu_sched_clock_irq.cold+0x4c/0x300
 update_process_times+0x8c/0xc0
 tick_sched_timer+0x73/0x90
 __hrtimer_run_queues+0x112/0x2b0
 hrtimer_interrupt+0xfe/0x220
 __sysvec_apic_timer_interrupt+0x59/0x110
 sysvec_apic_timer_interrupt+0x7b/0x90
 </IRQ>
 <TASK>
 asm_sysvec_apic_timer_interrupt+0x16/0x20
RIP: 0010:hil_demo_spin+0x9/0x20 [hil_demo]
RSP: 0018:ffffb4e7c04bfd78 EFLAGS: 00000202
 hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
 __x64_sys_ioctl+0x90/0xd0
 do_syscall_64+0x58/0xc0
 entry_SYSCALL_64_after_hwframe+0x64/0xce
 </TASK>
""",
        "INFO: rcu detected stall in hil_demo_ioctl",
        "HANG",
    ),
    "rcu_stall_nmi": (
        """rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:
rcu: 	1-...!: (0 ticks this GP) idle=b3c/1/0x4000000000000000 softirq=4512/4512 fqs=2433
	(detected by 0, t=21002 jiffies, g=10657, q=212 ncpus=2)
Sending NMI from CPU 0 to CPUs 1:
NMI backtrace for cpu 1
CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OEL     6.1.0-18-amd64 #1
RIP: 0010:hil_demo_spin+0x9/0x20 [hil_demo]
RSP: 0018:ffffb4e7c04bfd78 EFLAGS: 00000202
"""
        + TRACE,
        "INFO: rcu detected stall in hil_demo_ioctl",
        "HANG",
    ),
    "hung_task": (
        """INFO: task hil-agent:731 blocked for more than 120 seconds.
      Tainted: G           OE      6.1.0-18-amd64 #1
"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
task:hil-agent       state:D stack:0     pid:731   ppid:702    flags:0x00004002
Call Trace:
 <TASK>
 __schedule+0x34d/0x9e0
 schedule+0x5a/0xd0
 schedule_preempt_disabled+0x11/0x20
 __mutex_lock.constprop.0+0x399/0x700
 hil_demo_flush+0x21/0x80 [hil_demo]
 hil_demo_release+0x1c/0x40 [hil_demo]
 __fput+0x91/0x250
 task_work_run+0x59/0x90
 </TASK>
""",
        "INFO: task hung in hil_demo_flush",
        "HANG",
    ),
    "kernel_bug": (
        """------------[ cut here ]------------
kernel BUG at drivers/misc/hil_demo.c:42!
invalid opcode: 0000 [#1] PREEMPT SMP NOPTI
CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OE      6.1.0-18-amd64 #1
RIP: 0010:hil_demo_check.part.0+0x5/0x10 [hil_demo]
"""
        + TRACE
        + "---[ end trace 0000000000000000 ]---\n",
        "kernel BUG in hil_demo_check",
        "BUG",
    ),
    "list_corruption": (
        """list_del corruption, ffff88800a1b2c08->next is LIST_POISON1 (dead000000000100)
------------[ cut here ]------------
kernel BUG at lib/list_debug.c:56!
invalid opcode: 0000 [#1] PREEMPT SMP NOPTI
RIP: 0010:__list_del_entry_valid.cold+0x1d/0x47
"""
        + TRACE.replace(" hil_demo_ioctl+", " hil_demo_remove+0x22/0x60 [hil_demo]\n hil_demo_ioctl+"),
        "BUG: corrupted list in hil_demo_remove",
        "BUG",
    ),
    "divide_error": (
        """divide error: 0000 [#1] PREEMPT SMP NOPTI
CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OE      6.1.0-18-amd64 #1
RIP: 0010:hil_demo_rate+0x14/0x30 [hil_demo]
"""
        + TRACE,
        "divide error in hil_demo_rate",
        "DIVIDE",
    ),
    "double_fault": (
        """PANIC: double fault, error_code: 0x0
CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OE      6.1.0-18-amd64 #1
RIP: 0010:hil_demo_recurse+0x8/0x30 [hil_demo]
"""
        + TRACE,
        "PANIC: double fault in hil_demo_recurse",
        "PANIC",
    ),
    "stack_protector": (
        """Kernel panic - not syncing: stack-protector: Kernel stack is corrupted in: hil_demo_copy+0x9c/0xa0 [hil_demo]
CPU: 1 PID: 731 Comm: hil-agent Tainted: G           OE      6.1.0-18-amd64 #1
"""
        + TRACE,
        "kernel panic: stack is corrupted in hil_demo_copy",
        "PANIC",
    ),
    "kfence": (
        """==================================================================
BUG: KFENCE: out-of-bounds read in hil_demo_parse+0x3a/0x80 [hil_demo]

Out-of-bounds read at 0x00000000a3b1c2d4 (33B right of kfence-#12):
 hil_demo_parse+0x3a/0x80 [hil_demo]
 hil_demo_ioctl+0x1b2/0x2f0 [hil_demo]
==================================================================
""",
        "KFENCE: out-of-bounds read in hil_demo_parse",
        "KFENCE",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kind_is_named(name):
    log, title, kind = CASES[name]
    text = "[  100.000000] hil-agent[702]: running test\n" + "".join(P + line + "\n" for line in log.splitlines())
    rep = parse(text)
    assert rep is not None
    assert (rep.title, rep.kind) == (title, kind)
    assert not rep.corrupted
