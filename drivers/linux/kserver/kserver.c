// SPDX-License-Identifier: GPL-2.0
/*
 * kserver - a small, defensive kernel TCP server.
 *
 * Listens on a TCP port, admits only IPv4 clients on an allow-list, answers every request line
 * with a configured reply and serves regular files beneath one directory on "FILE:<name>".
 * The wire protocol is described in PROTOCOL.md next to this file.
 *
 * Design:
 *  - one listener kthread blocks in kernel_accept();
 *  - each admitted client is a work item on a dedicated unbound workqueue (at most
 *    max_clients at once, further clients get "ERR busy");
 *  - every buffer is fixed-size and lives in the per-client struct; over-long lines are
 *    discarded up to the next newline and answered with "ERR toolong";
 *  - file names are checked component by component (no '/'-prefix, no '.', '..' or empty
 *    components, no control bytes) and then resolved with vfs_path_lookup() from the served
 *    directory with LOOKUP_BENEATH | LOOKUP_NO_SYMLINKS | LOOKUP_NO_MAGICLINKS |
 *    LOOKUP_NO_XDEV: no symlink is ever followed and the lookup cannot leave the directory;
 *    only regular files are opened;
 *  - unloading sets "stopping", shuts the listening socket down (which wakes accept),
 *    stops the listener, shuts every client socket down (which wakes recv/send) and then
 *    destroy_workqueue() waits for every client work item to return.  No module code runs
 *    after module_exit returns.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/net.h>
#include <linux/in.h>
#include <linux/inet.h>
#include <linux/socket.h>
#include <linux/slab.h>
#include <linux/workqueue.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/fs.h>
#include <linux/namei.h>
#include <linux/file.h>
#include <linux/uio.h>
#include <linux/string.h>
#include <net/sock.h>

#define KS_LINE_MAX	256	/* longest request line, newline excluded */
#define KS_RX_CHUNK	512	/* one recv */
#define KS_IO_CHUNK	4096	/* one file read / send */
#define KS_REPLY_MAX	1024	/* longest configured reply */
#define KS_ALLOW_MAX	16	/* allow-list entries */
#define KS_CLIENTS_CAP	512	/* upper bound for max_clients */

#ifndef LOOKUP_BENEATH
#error "kserver needs LOOKUP_BENEATH (Linux 5.6 or later)"
#endif

/*
 * vfs_path_lookup() is EXPORT_SYMBOL in fs/namei.c but its prototype moved to fs/internal.h
 * (not shipped in kernel headers packages).  The signature has been stable since 2.6.
 */
int vfs_path_lookup(struct dentry *dentry, struct vfsmount *mnt, const char *name,
		    unsigned int flags, struct path *path);

static ushort port = 7070;
module_param(port, ushort, 0444);
MODULE_PARM_DESC(port, "TCP port to listen on (default 7070)");

static char *allow = "";
module_param(allow, charp, 0444);
MODULE_PARM_DESC(allow, "comma-separated IPv4 addresses allowed to connect (empty: nobody)");

static char *reply = "hello from kserver";
module_param(reply, charp, 0444);
MODULE_PARM_DESC(reply, "reply sent for every request line that is not FILE:<name>");

static char *root = "";
module_param(root, charp, 0444);
MODULE_PARM_DESC(root, "directory FILE:<name> may serve from (empty: file serving disabled)");

static int max_clients = 64;
module_param(max_clients, int, 0444);
MODULE_PARM_DESC(max_clients, "clients served at once; more get 'ERR busy' (1..512, default 64)");

static int idle_timeout = 60;
module_param(idle_timeout, int, 0444);
MODULE_PARM_DESC(idle_timeout, "seconds a client may stay silent before it is dropped (default 60)");

static atomic_t st_accepted, st_refused, st_busy, st_requests, st_files, st_denied,
	st_toolong, st_active;

static int ks_stats_get(char *buf, const struct kernel_param *kp)
{
	return scnprintf(buf, PAGE_SIZE,
			 "accepted=%d refused=%d busy=%d requests=%d files=%d denied=%d toolong=%d active=%d\n",
			 atomic_read(&st_accepted), atomic_read(&st_refused),
			 atomic_read(&st_busy), atomic_read(&st_requests),
			 atomic_read(&st_files), atomic_read(&st_denied),
			 atomic_read(&st_toolong), atomic_read(&st_active));
}

static const struct kernel_param_ops ks_stats_ops = { .get = ks_stats_get };
module_param_cb(stats, &ks_stats_ops, NULL, 0444);
MODULE_PARM_DESC(stats, "counters (read-only)");

static __be32 allowed[KS_ALLOW_MAX];
static int n_allowed;
static char reply_buf[KS_REPLY_MAX];
static size_t reply_len;
static struct path root_path;
static bool root_set;

static struct socket *listen_sock;
static struct task_struct *listen_task;
static struct workqueue_struct *client_wq;
static LIST_HEAD(clients);
static DEFINE_MUTEX(clients_lock);	/* protects clients, n_clients, stopping */
static int n_clients;
static bool stopping;

struct ks_client {
	struct list_head node;
	struct work_struct work;
	struct socket *sock;
	struct sockaddr_in peer;
	size_t line_len;
	bool discarding;
	char line[KS_LINE_MAX + 1];
	u8 rx[KS_RX_CHUNK];
	u8 io[KS_IO_CHUNK];
};

/* ---- helpers ---------------------------------------------------------------------------- */

static int ks_send_all(struct socket *sock, const void *buf, size_t len)
{
	while (len) {
		struct kvec iov = { .iov_base = (void *)buf, .iov_len = len };
		struct msghdr msg = { .msg_flags = MSG_NOSIGNAL };
		int n = kernel_sendmsg(sock, &msg, &iov, 1, len);

		if (n <= 0)
			return n ? n : -EPIPE;
		buf += n;
		len -= n;
	}
	return 0;
}

static int ks_send_err(struct ks_client *c, const char *reason)
{
	char hdr[48];
	int n = scnprintf(hdr, sizeof(hdr), "ERR %s\n", reason);

	return ks_send_all(c->sock, hdr, n);
}

static int ks_send_ok_header(struct ks_client *c, loff_t len)
{
	char hdr[48];
	int n = scnprintf(hdr, sizeof(hdr), "OK %lld\n", (long long)len);

	return ks_send_all(c->sock, hdr, n);
}

static bool ks_allowed(__be32 addr)
{
	int i;

	for (i = 0; i < n_allowed; i++)
		if (allowed[i] == addr)
			return true;
	return false;
}

/*
 * A name is acceptable when it is relative, made of non-empty components none of which is
 * "." or "..", and holds no NUL or control byte.  The lookup flags enforce the same again.
 */
static bool ks_name_ok(const char *name, size_t len)
{
	size_t i, comp_start = 0;

	if (len == 0 || len > KS_LINE_MAX || name[0] == '/')
		return false;
	for (i = 0; i <= len; i++) {
		unsigned char ch = i < len ? name[i] : '/';

		if (ch < 0x20 || ch == 0x7f)
			return false;
		if (ch != '/')
			continue;
		if (i == comp_start)
			return false;	/* empty component: "a//b" or trailing '/' */
		if (i - comp_start == 1 && name[comp_start] == '.')
			return false;
		if (i - comp_start == 2 && name[comp_start] == '.' && name[comp_start + 1] == '.')
			return false;
		comp_start = i + 1;
	}
	return true;
}

static void ks_refuse_name(struct ks_client *c, const char *why)
{
	atomic_inc(&st_denied);
	pr_warn_ratelimited("refused file request from %pI4:%u (%s)\n", &c->peer.sin_addr,
			    ntohs(c->peer.sin_port), why);
}

/* Returns 0 to keep the connection, < 0 to close it. */
static int ks_send_file(struct ks_client *c, const char *name, size_t len)
{
	unsigned int flags = LOOKUP_BENEATH | LOOKUP_NO_SYMLINKS | LOOKUP_NO_MAGICLINKS |
			     LOOKUP_NO_XDEV;
	struct path p;
	struct file *filp;
	loff_t size, pos = 0, sent = 0;
	int err;

	if (!root_set)
		return ks_send_err(c, "disabled");
	if (!ks_name_ok(name, len)) {
		ks_refuse_name(c, "bad name");
		return ks_send_err(c, "denied");
	}
	err = vfs_path_lookup(root_path.dentry, root_path.mnt, name, flags, &p);
	if (err == -ENOENT || err == -ENOTDIR)
		return ks_send_err(c, "notfound");
	if (err) {
		/* -ELOOP: a symlink on the way; -EXDEV: would leave the directory or mount */
		ks_refuse_name(c, err == -ELOOP ? "symlink" : err == -EXDEV ? "escape" : "lookup");
		return ks_send_err(c, "denied");
	}
	if (!d_is_reg(p.dentry)) {
		bool link = d_is_symlink(p.dentry);

		path_put(&p);
		if (link) {
			ks_refuse_name(c, "symlink");
			return ks_send_err(c, "denied");
		}
		return ks_send_err(c, "notfile");
	}
	filp = dentry_open(&p, O_RDONLY | O_LARGEFILE, current_cred());
	path_put(&p);
	if (IS_ERR(filp))
		return ks_send_err(c, PTR_ERR(filp) == -EACCES ? "denied" : "io");

	size = i_size_read(file_inode(filp));
	err = ks_send_ok_header(c, size);
	while (!err && sent < size) {
		ssize_t n = kernel_read(filp, c->io, min_t(loff_t, size - sent, KS_IO_CHUNK), &pos);

		if (n <= 0 || READ_ONCE(stopping)) {
			err = n < 0 ? n : -EIO;	/* file shrank or unload: close, the client sees a short body */
			break;
		}
		err = ks_send_all(c->sock, c->io, n);
		sent += n;
	}
	fput(filp);
	if (!err)
		atomic_inc(&st_files);
	return err;
}

static int ks_handle_line(struct ks_client *c)
{
	size_t len = c->line_len;

	if (len && c->line[len - 1] == '\r')
		len--;
	c->line[len] = '\0';
	atomic_inc(&st_requests);
	if (len >= 5 && !memcmp(c->line, "FILE:", 5))
		return ks_send_file(c, c->line + 5, len - 5);
	{
		int err = ks_send_ok_header(c, reply_len);

		return err ? err : ks_send_all(c->sock, reply_buf, reply_len);
	}
}

static void ks_serve(struct ks_client *c)
{
	while (!READ_ONCE(stopping)) {
		struct kvec iov = { .iov_base = c->rx, .iov_len = sizeof(c->rx) };
		struct msghdr msg = { };
		int i, n = kernel_recvmsg(c->sock, &msg, &iov, 1, sizeof(c->rx), 0);

		if (n <= 0)
			return;	/* closed, shut down, idle timeout or error */
		for (i = 0; i < n; i++) {
			u8 ch = c->rx[i];
			int err;

			if (ch == '\n') {
				if (c->discarding) {
					atomic_inc(&st_toolong);
					c->discarding = false;
					err = ks_send_err(c, "toolong");
				} else {
					err = ks_handle_line(c);
				}
				c->line_len = 0;
				if (err)
					return;
				continue;
			}
			if (c->discarding)
				continue;
			if (c->line_len >= KS_LINE_MAX) {
				c->discarding = true;
				continue;
			}
			c->line[c->line_len++] = ch;
		}
	}
}

static void ks_client_work(struct work_struct *w)
{
	struct ks_client *c = container_of(w, struct ks_client, work);

	ks_serve(c);

	mutex_lock(&clients_lock);
	list_del(&c->node);
	n_clients--;
	mutex_unlock(&clients_lock);

	kernel_sock_shutdown(c->sock, SHUT_RDWR);
	sock_release(c->sock);
	kfree(c);
	atomic_dec(&st_active);
}

/* ---- listener --------------------------------------------------------------------------- */

static void ks_reject(struct socket *cs, const char *line)
{
	cs->sk->sk_sndtimeo = HZ;
	ks_send_all(cs, line, strlen(line));
	kernel_sock_shutdown(cs, SHUT_RDWR);
	sock_release(cs);
}

static void ks_admit(struct socket *cs)
{
	struct sockaddr_in peer = { };
	struct ks_client *c;

	if (kernel_getpeername(cs, (struct sockaddr *)&peer) < 0 || peer.sin_family != AF_INET) {
		sock_release(cs);
		return;
	}
	if (!ks_allowed(peer.sin_addr.s_addr)) {
		atomic_inc(&st_refused);
		pr_warn_ratelimited("refused client %pI4:%u: not on the allow-list\n",
				    &peer.sin_addr, ntohs(peer.sin_port));
		ks_reject(cs, "ERR forbidden\n");
		return;
	}

	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c) {
		ks_reject(cs, "ERR busy\n");
		return;
	}
	mutex_lock(&clients_lock);
	if (stopping || n_clients >= max_clients) {
		mutex_unlock(&clients_lock);
		kfree(c);
		atomic_inc(&st_busy);
		ks_reject(cs, "ERR busy\n");
		return;
	}
	c->sock = cs;
	c->peer = peer;
	cs->sk->sk_rcvtimeo = (long)idle_timeout * HZ;
	cs->sk->sk_sndtimeo = 10 * HZ;
	INIT_WORK(&c->work, ks_client_work);
	list_add_tail(&c->node, &clients);
	n_clients++;
	atomic_inc(&st_active);
	atomic_inc(&st_accepted);
	queue_work(client_wq, &c->work);
	mutex_unlock(&clients_lock);
}

static int ks_listen_fn(void *unused)
{
	while (!kthread_should_stop() && !READ_ONCE(stopping)) {
		struct socket *cs = NULL;
		int err = kernel_accept(listen_sock, &cs, 0);

		if (err < 0) {
			if (READ_ONCE(stopping))
				break;
			pr_warn_ratelimited("accept failed: %d\n", err);
			schedule_timeout_interruptible(HZ / 10);	/* back off, not a sync point */
			continue;
		}
		ks_admit(cs);
	}
	/* Stay until kthread_stop() so that it never races with our exit. */
	set_current_state(TASK_INTERRUPTIBLE);
	while (!kthread_should_stop()) {
		schedule();
		set_current_state(TASK_INTERRUPTIBLE);
	}
	__set_current_state(TASK_RUNNING);
	return 0;
}

/* ---- load / unload ---------------------------------------------------------------------- */

static int ks_parse_allow(void)
{
	const char *s = allow;

	n_allowed = 0;
	while (s && *s) {
		const char *end;
		size_t len = strcspn(s, ", ");

		if (len) {
			if (n_allowed == KS_ALLOW_MAX) {
				pr_err("allow: more than %d addresses\n", KS_ALLOW_MAX);
				return -EINVAL;
			}
			if (!in4_pton(s, len, (u8 *)&allowed[n_allowed], -1, &end) || end != s + len) {
				pr_err("allow: '%.*s' is not an IPv4 address\n", (int)min_t(size_t, len, 64), s);
				return -EINVAL;
			}
			n_allowed++;
		}
		s += len;
		if (*s)
			s++;
	}
	if (!n_allowed)
		pr_warn("allow-list is empty: every client will be refused\n");
	return 0;
}

static int __init ks_init(void)
{
	struct sockaddr_in addr = { };
	int err;

	if (max_clients < 1 || max_clients > KS_CLIENTS_CAP) {
		pr_err("max_clients must be 1..%d\n", KS_CLIENTS_CAP);
		return -EINVAL;
	}
	if (idle_timeout < 1) {
		pr_err("idle_timeout must be at least 1 second\n");
		return -EINVAL;
	}
	err = ks_parse_allow();
	if (err)
		return err;
	reply_len = reply ? strlen(reply) : 0;
	if (reply_len > KS_REPLY_MAX) {
		pr_err("reply longer than %d bytes\n", KS_REPLY_MAX);
		return -EINVAL;
	}
	memcpy(reply_buf, reply, reply_len);

	if (root && *root) {
		err = kern_path(root, LOOKUP_FOLLOW | LOOKUP_DIRECTORY, &root_path);
		if (err) {
			pr_err("root '%s': cannot open directory (%d)\n", root, err);
			return err;
		}
		root_set = true;
	}

	client_wq = alloc_workqueue("kserver_clients", WQ_UNBOUND, max_clients);
	if (!client_wq) {
		err = -ENOMEM;
		goto out_root;
	}

	err = sock_create_kern(&init_net, AF_INET, SOCK_STREAM, IPPROTO_TCP, &listen_sock);
	if (err)
		goto out_wq;
	sock_set_reuseaddr(listen_sock->sk);
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_ANY);
	addr.sin_port = htons(port);
	err = kernel_bind(listen_sock, (struct sockaddr *)&addr, sizeof(addr));
	if (err) {
		pr_err("cannot bind port %u (%d)\n", port, err);
		goto out_sock;
	}
	err = kernel_listen(listen_sock, 128);
	if (err)
		goto out_sock;

	listen_task = kthread_run(ks_listen_fn, NULL, "kserver_listen");
	if (IS_ERR(listen_task)) {
		err = PTR_ERR(listen_task);
		goto out_sock;
	}
	pr_info("listening on port %u, %d allowed address(es), files %s%s\n", port, n_allowed,
		root_set ? "from " : "disabled", root_set ? root : "");
	return 0;

out_sock:
	sock_release(listen_sock);
out_wq:
	destroy_workqueue(client_wq);
out_root:
	if (root_set)
		path_put(&root_path);
	return err;
}

static void __exit ks_exit(void)
{
	struct ks_client *c;

	mutex_lock(&clients_lock);
	WRITE_ONCE(stopping, true);
	mutex_unlock(&clients_lock);

	kernel_sock_shutdown(listen_sock, SHUT_RDWR);	/* wakes kernel_accept() */
	kthread_stop(listen_task);

	mutex_lock(&clients_lock);
	list_for_each_entry(c, &clients, node)
		kernel_sock_shutdown(c->sock, SHUT_RDWR);	/* wakes recv/send */
	mutex_unlock(&clients_lock);
	destroy_workqueue(client_wq);	/* waits for every client work item */

	sock_release(listen_sock);
	if (root_set)
		path_put(&root_path);
	pr_info("stopped: accepted=%d refused=%d requests=%d files=%d denied=%d\n",
		atomic_read(&st_accepted), atomic_read(&st_refused), atomic_read(&st_requests),
		atomic_read(&st_files), atomic_read(&st_denied));
}

module_init(ks_init);
module_exit(ks_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kernel-hil test server: allow-listed TCP chat replies and confined file serving");
