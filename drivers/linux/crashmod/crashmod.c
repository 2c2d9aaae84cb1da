// SPDX-License-Identifier: GPL-2.0
/*
 * hil_crash: crashes a test guest's kernel on command, for the crash-detection suite.
 *
 *   echo <command> > /proc/hil_crash
 *
 * Commands (each in its own noinline function, so crash titles name it):
 *   null      NULL pointer dereference          -> hil_crash_null_deref
 *   bug       BUG()                             -> hil_crash_bug
 *   warn      WARN_ON(1), the kernel goes on    -> hil_crash_warn
 *   lockup    a kernel thread spins with preemption disabled for spin_s seconds (a soft lockup
 *             once that is more than 2 * kernel.watchdog_thresh; the write returns at once)
 *                                               -> hil_crash_soft_lockup
 *   hung      the writer sleeps uninterruptibly (D state) for hung_s seconds (a hung task
 *             once that is more than kernel.hung_task_timeout_secs) -> hil_crash_hung_task
 *   freeze    every CPU spins with interrupts off for spin_s seconds: a silent, unresponsive
 *             guest (only an NMI gets through)  -> hil_crash_freeze_cpu
 *
 * Seeded bugs for a debug kernel (KASAN, lockdep, DEBUG_ATOMIC_SLEEP, kmemleak, UBSAN): each is
 * reported there and the kernel goes on.  A stock kernel mostly does not notice them (double_free
 * may trip the allocator's own checks; sleep_atomic and abba are silent without their debug
 * options):
 *   uaf          kmalloc, kfree, then read the object          -> hil_crash_use_after_free
 *   oob          kmalloc(N), then read byte [N]                -> hil_crash_out_of_bounds
 *   double_free  kfree the same object twice                   -> hil_crash_double_free
 *   abba         take mutex A then B, later B then A, in one thread: lockdep's "possible
 *                circular locking dependency" (no real deadlock) -> hil_crash_abba
 *   sleep_atomic might_sleep() under a spinlock                -> hil_crash_sleep_in_atomic
 *   leak         kmalloc 8 objects and drop the only pointers (kmemleak reports them on a
 *                scan, see /sys/kernel/debug/kmemleak)         -> hil_crash_leak
 *   ubsan_index  an array indexed past its end with a runtime index (inside its struct, so
 *                only UBSAN's bounds check sees it)            -> hil_crash_array_index
 * KASAN reports only its first bug per boot (unless booted with kasan_multi_shot), and lockdep
 * turns itself off after its first report or once the kernel is tainted (a KASAN report): one
 * KASAN bug per boot, abba before it.
 *
 * Also at load time: insmod hil_crash.ko crash=<command>.
 */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>
#include <linux/jiffies.h>
#include <linux/completion.h>
#include <linux/stop_machine.h>
#include <linux/string.h>
#include <linux/delay.h>
#include <linux/kthread.h>
#include <linux/err.h>
#include <linux/slab.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/compiler.h>

static unsigned int spin_s = 8;
module_param(spin_s, uint, 0644);
MODULE_PARM_DESC(spin_s, "seconds the lockup and freeze commands spin (default 8)");

static unsigned int hung_s = 60;
module_param(hung_s, uint, 0644);
MODULE_PARM_DESC(hung_s, "seconds the hung command sleeps in D state (default 60)");

static char *crash = "";
module_param(crash, charp, 0444);
MODULE_PARM_DESC(crash, "a command to run at load time (see the source)");

/* volatile so the compiler cannot see the NULL and turn the store into a trap */
static int *volatile hil_crash_ptr;
static DECLARE_COMPLETION(hil_crash_never);

/* Runtime sizes and indexes, so the compiler can neither see nor warn about the bugs. */
static volatile size_t hil_crash_size = 100;
static volatile int hil_crash_index = 4;
static DEFINE_MUTEX(hil_crash_lock_a);
static DEFINE_MUTEX(hil_crash_lock_b);
static DEFINE_SPINLOCK(hil_crash_spinlock);

/* An array with a neighbour: [4] is past the array (UBSAN) but inside the struct (not KASAN). */
static struct {
	int slots[4];
	int after;
} hil_crash_table;

static noinline void hil_crash_null_deref(void)
{
	pr_info("hil_crash: NULL pointer dereference\n");
	*hil_crash_ptr = 0x41;
}

static noinline void hil_crash_bug(void)
{
	pr_info("hil_crash: BUG()\n");
	BUG();
}

static noinline void hil_crash_warn(void)
{
	pr_info("hil_crash: WARN_ON(1)\n");
	WARN_ON(1);
}

/*
 * A kernel thread of its own, so the stall is named after it: a lockup reached through the
 * write() syscall would be named after the syscall's entry point (proc_reg_write).
 */
static noinline int hil_crash_soft_lockup(void *unused)
{
	unsigned long end = jiffies + spin_s * HZ;

	pr_info("hil_crash: spinning %u s with preemption disabled\n", spin_s);
	preempt_disable();
	while (time_before(jiffies, end))
		cpu_relax();
	preempt_enable();
	pr_info("hil_crash: spin done\n");
	return 0;
}

static noinline void hil_crash_hung_task(void)
{
	pr_info("hil_crash: sleeping %u s uninterruptibly\n", hung_s);
	wait_for_completion_timeout(&hil_crash_never, (unsigned long)hung_s * HZ);
	pr_info("hil_crash: sleep done\n");
}

static noinline int hil_crash_freeze_cpu(void *unused)
{
	u64 end = ktime_get_mono_fast_ns() + (u64)spin_s * NSEC_PER_SEC;

	/* stop_machine runs this on every CPU with interrupts disabled */
	while (ktime_get_mono_fast_ns() < end)
		cpu_relax();
	return 0;
}

static noinline void hil_crash_use_after_free(void)
{
	char *p = kmalloc(hil_crash_size, GFP_KERNEL);

	if (!p)
		return;
	pr_info("hil_crash: read after kfree\n");
	kfree(p);
	OPTIMIZER_HIDE_VAR(p);
	pr_info("hil_crash: read 0x%x\n", READ_ONCE(p[0]));
}

static noinline void hil_crash_out_of_bounds(void)
{
	size_t n = hil_crash_size;
	char *p = kmalloc(n, GFP_KERNEL);

	if (!p)
		return;
	pr_info("hil_crash: read byte %zu of a %zu-byte object\n", n, n);
	OPTIMIZER_HIDE_VAR(p);
	pr_info("hil_crash: read 0x%x\n", READ_ONCE(p[n]));
	kfree(p);
}

static noinline void hil_crash_double_free(void)
{
	char *p = kmalloc(hil_crash_size, GFP_KERNEL);

	if (!p)
		return;
	pr_info("hil_crash: kfree twice\n");
	kfree(p);
	OPTIMIZER_HIDE_VAR(p);
	kfree(p);
	/* a call after the second kfree: as a tail call it would leave this frame off the stack */
	pr_info("hil_crash: freed twice\n");
}

static noinline void hil_crash_abba(void)
{
	pr_info("hil_crash: lock A then B, then B then A\n");
	mutex_lock(&hil_crash_lock_a);
	mutex_lock(&hil_crash_lock_b);
	mutex_unlock(&hil_crash_lock_b);
	mutex_unlock(&hil_crash_lock_a);

	mutex_lock(&hil_crash_lock_b);
	mutex_lock(&hil_crash_lock_a);
	mutex_unlock(&hil_crash_lock_a);
	mutex_unlock(&hil_crash_lock_b);
}

static noinline void hil_crash_sleep_in_atomic(void)
{
	pr_info("hil_crash: might_sleep() under a spinlock\n");
	spin_lock(&hil_crash_spinlock);
	might_sleep();
	spin_unlock(&hil_crash_spinlock);
}

/*
 * kmemleak reports an object only when no word of the memory it scans holds the object's address,
 * and it scans every task's stack whole, a dead task's cached stack too (stacks are zeroed only
 * when reused).  kmalloc's own frames leave the address below hil_crash_leak's: without this the
 * seeded leak went unreported about one run in five.  The debug flavour boots with init_on_alloc=1
 * for the other stale copy (the free-list link in the object allocated before it).  A copy can
 * still lie where nothing here reaches (a register an interrupt saved on a per-CPU stack), so the
 * command leaks HIL_CRASH_LEAKS objects and a test needs one of them reported.
 */
#define HIL_CRASH_LEAKS 8

static noinline void hil_crash_scrub_stack(unsigned int frames)
{
	char words[384];

	memzero_explicit(words, sizeof(words));
	if (frames)
		hil_crash_scrub_stack(frames - 1);
	barrier_data(words);	/* no tail call: each frame lies below the last */
}

static noinline void hil_crash_leak(void)
{
	int i;

	for (i = 0; i < HIL_CRASH_LEAKS; i++) {
		void *p = kmalloc(hil_crash_size, GFP_KERNEL);

		if (!p)
			return;
		OPTIMIZER_HIDE_VAR(p);	/* else the compiler drops the memset of memory nobody reads */
		memset(p, 0x4c, hil_crash_size);
	}
	pr_info("hil_crash: leaked %d objects of %zu bytes\n", HIL_CRASH_LEAKS, (size_t)hil_crash_size);
}

static noinline void hil_crash_array_index(void)
{
	int i = hil_crash_index;

	pr_info("hil_crash: slots[%d] of %zu\n", i, ARRAY_SIZE(hil_crash_table.slots));
	hil_crash_table.slots[i] = 1;
}

static int hil_crash_run(const char *cmd)
{
	if (sysfs_streq(cmd, "null"))
		hil_crash_null_deref();
	else if (sysfs_streq(cmd, "bug"))
		hil_crash_bug();
	else if (sysfs_streq(cmd, "warn"))
		hil_crash_warn();
	else if (sysfs_streq(cmd, "lockup")) {
		struct task_struct *t = kthread_run(hil_crash_soft_lockup, NULL, "hil_crash_spin");

		if (IS_ERR(t))
			return PTR_ERR(t);
	}
	else if (sysfs_streq(cmd, "hung"))
		hil_crash_hung_task();
	else if (sysfs_streq(cmd, "freeze")) {
		pr_info("hil_crash: freezing every CPU for %u s\n", spin_s);
		stop_machine(hil_crash_freeze_cpu, NULL, cpu_online_mask);
	} else if (sysfs_streq(cmd, "uaf"))
		hil_crash_use_after_free();
	else if (sysfs_streq(cmd, "oob"))
		hil_crash_out_of_bounds();
	else if (sysfs_streq(cmd, "double_free"))
		hil_crash_double_free();
	else if (sysfs_streq(cmd, "abba"))
		hil_crash_abba();
	else if (sysfs_streq(cmd, "sleep_atomic"))
		hil_crash_sleep_in_atomic();
	else if (sysfs_streq(cmd, "leak")) {
		hil_crash_leak();
		hil_crash_scrub_stack(12);	/* about 5 KiB below this frame */
	}
	else if (sysfs_streq(cmd, "ubsan_index"))
		hil_crash_array_index();
	else
		return -EINVAL;
	return 0;
}

static ssize_t hil_crash_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	char cmd[16];
	int err;

	if (len >= sizeof(cmd))
		return -EINVAL;
	if (copy_from_user(cmd, buf, len))
		return -EFAULT;
	cmd[len] = '\0';
	err = hil_crash_run(cmd);
	return err ? err : len;
}

static const struct proc_ops hil_crash_ops = {
	.proc_write = hil_crash_write,
	.proc_lseek = noop_llseek,
};

static int __init hil_crash_init(void)
{
	if (!proc_create("hil_crash", 0200, NULL, &hil_crash_ops))
		return -ENOMEM;
	pr_info("hil_crash: loaded; commands: null bug warn lockup hung freeze uaf oob double_free abba sleep_atomic leak ubsan_index\n");
	if (crash[0] && hil_crash_run(crash)) {
		remove_proc_entry("hil_crash", NULL);
		return -EINVAL;
	}
	return 0;
}

static void __exit hil_crash_exit(void)
{
	complete_all(&hil_crash_never);
	remove_proc_entry("hil_crash", NULL);
}

module_init(hil_crash_init);
module_exit(hil_crash_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kernel-hil: crash the guest kernel on command (test suites only)");
