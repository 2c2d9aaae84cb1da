// SPDX-License-Identifier: GPL-2.0
/*
 * hello_hil: a small module with module parameters and a /proc interface.
 *
 *   insmod hello_hil.ko greeting="hi there" repeat=3
 *   cat /proc/hello_hil          -> "hi there hi there hi there\n" then "writes: N\n"
 *   echo anything > /proc/hello_hil   counts a write
 *   echo warn > /proc/hello_hil       a deliberate WARN_ON (the tests show it is caught)
 */
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>
#include <linux/atomic.h>
#include <linux/string.h>

static char *greeting = "hello";
module_param(greeting, charp, 0444);
MODULE_PARM_DESC(greeting, "what /proc/hello_hil says");

static int repeat = 1;
module_param(repeat, int, 0444);
MODULE_PARM_DESC(repeat, "how many times it says it (1-16)");

static atomic_t writes = ATOMIC_INIT(0);
static struct proc_dir_entry *entry;

static int hello_hil_show(struct seq_file *m, void *v)
{
	int i;

	for (i = 0; i < repeat; i++)
		seq_printf(m, "%s%s", i ? " " : "", greeting);
	seq_printf(m, "\nwrites: %d\n", atomic_read(&writes));
	return 0;
}

static int hello_hil_open(struct inode *inode, struct file *file)
{
	return single_open(file, hello_hil_show, NULL);
}

static noinline void hello_hil_warn(void)
{
	WARN_ON(1);
}

static ssize_t hello_hil_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	char cmd[8] = {};

	if (copy_from_user(cmd, ubuf, min(len, sizeof(cmd) - 1)))
		return -EFAULT;
	if (!strncmp(cmd, "warn", 4))
		hello_hil_warn();
	atomic_inc(&writes);
	return len;
}

static const struct proc_ops hello_hil_ops = {
	.proc_open = hello_hil_open,
	.proc_read = seq_read,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
	.proc_write = hello_hil_write,
};

static int __init hello_hil_init(void)
{
	if (repeat < 1 || repeat > 16) {
		pr_err("hello_hil: repeat=%d is out of range (1-16)\n", repeat);
		return -EINVAL;
	}
	entry = proc_create("hello_hil", 0644, NULL, &hello_hil_ops);
	if (!entry)
		return -ENOMEM;
	pr_info("hello_hil: loaded, greeting \"%s\" x%d\n", greeting, repeat);
	return 0;
}

static void __exit hello_hil_exit(void)
{
	proc_remove(entry);
	pr_info("hello_hil: unloaded after %d writes\n", atomic_read(&writes));
}

module_init(hello_hil_init);
module_exit(hello_hil_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kernel-hil example: module parameters and a /proc file");
