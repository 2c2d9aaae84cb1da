// SPDX-License-Identifier: GPL-2.0
/*
 * kserver - a small, defensive kernel TCP server.
 *
 * Listens on a TCP port, admits only IPv4 clients on an allow-list, answers every request
 * with a configured reply and serves regular files beneath one directory on "FILE:<name>".
 * The wire protocol is described in PROTOCOL.md next to this file.
 *
 * Design:
 *  - one listener kthread blocks in kernel_accept();
 *  - each admitted client is a work item on a dedicated unbound workqueue (at most
 *    max_clients at once, further clients get "ERR busy"; at most max_per_addr from one
 *    address, further ones get "ERR peerlimit");
 *  - every buffer is fixed-size and lives in the per-client struct; over-long lines are
 *    discarded up to the next newline and answered with "ERR toolong";
 *  - a request line must be complete within request_timeout seconds of its first byte, or it
 *    is answered with "ERR timeout" and the connection is closed (idle_timeout alone would let
 *    a client hold its slot forever with one byte a minute);
 *  - framing=line (the default) reads newline-terminated requests and frames every response;
 *    framing=message takes each received chunk as one request and answers unframed, the way
 *    a plain send()/recv() client expects (FILE: sends the raw file, then closes);
 *  - file names are checked component by component (no '/'-prefix, no '.', '..' or empty
 *    components, no control bytes) and then resolved with vfs_path_lookup() from the served
 *    directory with LOOKUP_BENEATH | LOOKUP_NO_SYMLINKS | LOOKUP_NO_MAGICLINKS |
 *    LOOKUP_NO_XDEV: no symlink is ever followed and the lookup cannot leave the directory;
 *    only regular files are opened;
 *  - the lookup and the open run under an unprivileged credential (serve_uid/serve_gid, no
 *    capabilities, no supplementary groups): the walk checks search permission on every
 *    directory and path_permission(MAY_OPEN | MAY_READ) is the check a real open makes on the
 *    file, which dentry_open() alone would skip;
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
#include <linux/cred.h>
#include <linux/capability.h>
#include <linux/sched/task.h>
#include <linux/uidgid.h>
#include <net/sock.h>

#define KS_LINE_MAX	256	/* longest request line, newline excluded */
#define KS_RX_CHUNK	512	/* one recv */
#define KS_IO_CHUNK	4096	/* one file read / send */
#define KS_REPLY_MAX	1024	/* longest configured reply */
#define KS_ALLOW_MAX	16	/* allow-list entries */
#define KS_CLIENTS_CAP	512	/* upper bound for max_clients and max_per_addr */
#define KS_TIMEOUT_MAX	86400	/* upper bound for request_timeout, seconds */

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

static int request_timeout = 30;
module_param(request_timeout, int, 0444);
MODULE_PARM_DESC(request_timeout, "seconds from a line's first byte to its newline (default 30)");

static int max_per_addr = 16;
module_param(max_per_addr, int, 0444);
MODULE_PARM_DESC(max_per_addr, "clients at once from one address (default 16)");

static uint serve_uid = 65534;
module_param(serve_uid, uint, 0444);
MODULE_PARM_DESC(serve_uid, "uid whose permissions FILE: is opened with (default 65534)");

static uint serve_gid = 65534;
module_param(serve_gid, uint, 0444);
MODULE_PARM_DESC(serve_gid, "gid whose permissions FILE: is opened with (default 65534)");

static char *framing = "line";
module_param(framing, charp, 0444);
MODULE_PARM_DESC(framing, "'line' (default): requests end at newlines, responses are framed; "
		 "'message': one request per received chunk, raw responses");

static atomic_t st_accepted, st_refused, st_busy, st_requests, st_files, st_denied,
	st_toolong, st_timeout, st_peerlimit, st_active;

static int ks_stats_get(char *buf, const struct kernel_param *kp)
{
	return scnprintf(buf, PAGE_SIZE,
			 "accepted=%d refused=%d busy=%d requests=%d files=%d denied=%d toolong=%d "
			 "timeout=%d peerlimit=%d active=%d\n",
			 atomic_read(&st_accepted), atomic_read(&st_refused),
			 atomic_read(&st_busy), atomic_read(&st_requests),
			 atomic_read(&st_files), atomic_read(&st_denied),
			 atomic_read(&st_toolong), atomic_read(&st_timeout),
			 atomic_read(&st_peerlimit), atomic_read(&st_active));
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
static bool msg_framing;			/* framing=message */
static const struct cred *serve_cred;	/* FILE: lookups and opens run as this */

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
	bool in_line;			/* a line has begun and its newline has not arrived */
	unsigned long deadline;		/* jiffies by which that line must be complete */
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

/*
 * Look @name up beneath root and open it for reading.  Runs under serve_cred: the walk checks
 * search permission on every directory as serve_uid/serve_gid, and path_permission() makes the
 * read check of a real open (may_open()), which dentry_open() does not make.  Returns the file,
 * or NULL with *reason set to the ERR reason.
 */
static struct file *ks_open(struct ks_client *c, const char *name, const char **reason)
{
	unsigned int flags = LOOKUP_BENEATH | LOOKUP_NO_SYMLINKS | LOOKUP_NO_MAGICLINKS |
			     LOOKUP_NO_XDEV;
	struct path p;
	struct file *filp;
	int err;

	*reason = "denied";
	err = vfs_path_lookup(root_path.dentry, root_path.mnt, name, flags, &p);
	if (err == -ENOENT || err == -ENOTDIR) {
		*reason = "notfound";
		return NULL;
	}
	if (err) {
		/*
		 * -EACCES: a directory on the way may not be searched; -ELOOP: a symlink on the
		 * way; -EXDEV: would leave the directory or mount
		 */
		ks_refuse_name(c, err == -EACCES ? "permission" : err == -ELOOP ? "symlink" :
			       err == -EXDEV ? "escape" : "lookup");
		return NULL;
	}
	if (!d_is_reg(p.dentry)) {
		bool link = d_is_symlink(p.dentry);

		path_put(&p);
		if (link)
			ks_refuse_name(c, "symlink");
		else
			*reason = "notfile";
		return NULL;
	}
	err = path_permission(&p, MAY_OPEN | MAY_READ);
	if (err) {
		path_put(&p);
		ks_refuse_name(c, "permission");
		return NULL;
	}
	filp = dentry_open(&p, O_RDONLY | O_LARGEFILE, serve_cred);
	path_put(&p);
	if (IS_ERR(filp)) {
		if (PTR_ERR(filp) == -EACCES || PTR_ERR(filp) == -EPERM)
			ks_refuse_name(c, "permission");
		else
			*reason = "io";
		return NULL;
	}
	return filp;
}

/* Returns 0 to keep the connection, < 0 to close it. */
static int ks_send_file(struct ks_client *c, const char *name, size_t len)
{
	const struct cred *old;
	const char *reason;
	struct file *filp;
	loff_t size, pos = 0, sent = 0;
	int err;

	if (!root_set)
		return ks_send_err(c, "disabled");
	if (!ks_name_ok(name, len)) {
		ks_refuse_name(c, "bad name");
		return ks_send_err(c, "denied");
	}
	old = override_creds(serve_cred);
	filp = ks_open(c, name, &reason);
	revert_creds(old);
	if (!filp)
		return ks_send_err(c, reason);

	size = i_size_read(file_inode(filp));
	err = msg_framing ? 0 : ks_send_ok_header(c, size);	/* message framing: raw bytes */
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

/* Answers the request in c->line[0..len); returns 0 to keep the connection, < 0 to close it. */
static int ks_handle_request(struct ks_client *c, size_t len)
{
	int err;

	if (len && c->line[len - 1] == '\r')
		len--;
	c->line[len] = '\0';
	atomic_inc(&st_requests);
	if (len >= 5 && !memcmp(c->line, "FILE:", 5)) {
		err = ks_send_file(c, c->line + 5, len - 5);
		/* message framing: the close marks the end of the file (or of its ERR line) */
		return err ?: (msg_framing ? -ESHUTDOWN : 0);
	}
	if (msg_framing)
		return ks_send_all(c->sock, reply_buf, reply_len);	/* one send, unframed */
	err = ks_send_ok_header(c, reply_len);
	return err ?: ks_send_all(c->sock, reply_buf, reply_len);
}

/*
 * The receive timeout for the next recv: idle_timeout, or less when a line has begun and its
 * deadline comes first (*on_deadline is then true).
 */
static long ks_recv_timeout(struct ks_client *c, bool *on_deadline)
{
	long idle = (long)idle_timeout * HZ;
	long left;

	*on_deadline = false;
	if (!c->in_line)
		return idle;
	left = (long)(c->deadline - jiffies);
	if (left > idle)
		return idle;
	*on_deadline = true;
	return max(left, 1L);
}

/* framing=line: requests end at '\n'; every one must be complete within request_timeout. */
static void ks_serve_lines(struct ks_client *c)
{
	while (!READ_ONCE(stopping)) {
		struct kvec iov = { .iov_base = c->rx, .iov_len = sizeof(c->rx) };
		struct msghdr msg = { };
		bool on_deadline;
		int i, n;

		if (c->in_line && time_after_eq(jiffies, c->deadline)) {
			atomic_inc(&st_timeout);
			pr_warn_ratelimited("client %pI4:%u: request not complete within %d s, closing\n",
					    &c->peer.sin_addr, ntohs(c->peer.sin_port), request_timeout);
			ks_send_err(c, "timeout");
			return;
		}
		WRITE_ONCE(c->sock->sk->sk_rcvtimeo, ks_recv_timeout(c, &on_deadline));
		n = kernel_recvmsg(c->sock, &msg, &iov, 1, sizeof(c->rx), 0);
		if (n == -EAGAIN && on_deadline)
			continue;	/* the deadline passed: answered above */
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
					err = ks_handle_request(c, c->line_len);
				}
				c->line_len = 0;
				c->in_line = false;
				if (err)
					return;
				continue;
			}
			if (!c->in_line) {
				c->in_line = true;
				c->deadline = jiffies + (unsigned long)request_timeout * HZ;
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

/*
 * framing=message: each received chunk is one request (a trailing "\n" or "\r\n" is dropped).
 * A chunk longer than KS_LINE_MAX is answered with "ERR toolong" and the connection is closed:
 * where the next message would start cannot be told.
 */
static void ks_serve_messages(struct ks_client *c)
{
	while (!READ_ONCE(stopping)) {
		struct kvec iov = { .iov_base = c->line, .iov_len = KS_LINE_MAX + 1 };
		struct msghdr msg = { };
		int n = kernel_recvmsg(c->sock, &msg, &iov, 1, KS_LINE_MAX + 1, 0);
		size_t len;

		if (n <= 0)
			return;	/* closed, shut down, idle timeout or error */
		if (n > KS_LINE_MAX) {
			atomic_inc(&st_toolong);
			ks_send_err(c, "toolong");
			return;
		}
		len = n;
		if (c->line[len - 1] == '\n')
			len--;
		if (ks_handle_request(c, len))
			return;
	}
}

static void ks_client_work(struct work_struct *w)
{
	struct ks_client *c = container_of(w, struct ks_client, work);

	if (msg_framing)
		ks_serve_messages(c);
	else
		ks_serve_lines(c);

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

/* Clients connected from @addr; clients_lock held. */
static int ks_clients_from(__be32 addr)
{
	struct ks_client *c;
	int n = 0;

	list_for_each_entry(c, &clients, node)
		if (c->peer.sin_addr.s_addr == addr)
			n++;
	return n;
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
	if (!stopping && ks_clients_from(peer.sin_addr.s_addr) >= max_per_addr) {
		mutex_unlock(&clients_lock);
		kfree(c);
		atomic_inc(&st_peerlimit);
		pr_warn_ratelimited("refused client %pI4:%u: %d clients from this address already\n",
				    &peer.sin_addr, ntohs(peer.sin_port), max_per_addr);
		ks_reject(cs, "ERR peerlimit\n");
		return;
	}
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

/*
 * The credential FILE: is looked up and opened with: a copy of init's (no supplementary
 * groups, the kernel's LSM label) with serve_uid/serve_gid and every capability dropped, so
 * that DAC is enforced as for that user (no CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH...).
 */
static int ks_make_cred(void)
{
	kuid_t uid = make_kuid(&init_user_ns, serve_uid);
	kgid_t gid = make_kgid(&init_user_ns, serve_gid);
	struct cred *cred;

	if (!uid_valid(uid) || !gid_valid(gid)) {
		pr_err("serve_uid %u / serve_gid %u: not a valid id\n", serve_uid, serve_gid);
		return -EINVAL;
	}
	cred = prepare_kernel_cred(&init_task);
	if (!cred)
		return -ENOMEM;
	cred->uid = cred->euid = cred->suid = cred->fsuid = uid;
	cred->gid = cred->egid = cred->sgid = cred->fsgid = gid;
	cap_clear(cred->cap_inheritable);
	cap_clear(cred->cap_permitted);
	cap_clear(cred->cap_effective);
	cap_clear(cred->cap_bset);
	cap_clear(cred->cap_ambient);
	serve_cred = cred;
	return 0;
}

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
	if (request_timeout < 1 || request_timeout > KS_TIMEOUT_MAX) {
		pr_err("request_timeout must be 1..%d seconds\n", KS_TIMEOUT_MAX);
		return -EINVAL;
	}
	if (max_per_addr < 1 || max_per_addr > KS_CLIENTS_CAP) {
		pr_err("max_per_addr must be 1..%d\n", KS_CLIENTS_CAP);
		return -EINVAL;
	}
	if (framing && sysfs_streq(framing, "message")) {
		msg_framing = true;
	} else if (!framing || !sysfs_streq(framing, "line")) {
		pr_err("framing must be 'line' or 'message'\n");
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

	err = ks_make_cred();
	if (err)
		return err;
	if (root && *root) {
		err = kern_path(root, LOOKUP_FOLLOW | LOOKUP_DIRECTORY, &root_path);
		if (err) {
			pr_err("root '%s': cannot open directory (%d)\n", root, err);
			goto out_cred;
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
	pr_info("listening on port %u, %d allowed address(es), %s framing, files %s%s (as %u:%u)\n",
		port, n_allowed, msg_framing ? "message" : "line", root_set ? "from " : "disabled",
		root_set ? root : "", serve_uid, serve_gid);
	return 0;

out_sock:
	sock_release(listen_sock);
out_wq:
	destroy_workqueue(client_wq);
out_root:
	if (root_set)
		path_put(&root_path);
out_cred:
	put_cred(serve_cred);
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
	put_cred(serve_cred);
	pr_info("stopped: accepted=%d refused=%d requests=%d files=%d denied=%d timeout=%d peerlimit=%d\n",
		atomic_read(&st_accepted), atomic_read(&st_refused), atomic_read(&st_requests),
		atomic_read(&st_files), atomic_read(&st_denied), atomic_read(&st_timeout),
		atomic_read(&st_peerlimit));
}

module_init(ks_init);
module_exit(ks_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kernel-hil test server: allow-listed TCP chat replies and confined file serving");
