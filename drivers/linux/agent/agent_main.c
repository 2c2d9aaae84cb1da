// SPDX-License-Identifier: GPL-2.0
/*
 * hil_agent - process creation/exit agent for kernel-hil (Linux kernel module).
 *
 * Sees every exec and every process exit through the sched_process_exec and
 * sched_process_exit tracepoints, records PID, image path, image size and the image's
 * SHA-256, keeps the records in a bounded buffer in wire encoding and sends them to the
 * collector when it asks (drivers/protocol/PROTOCOL.md; the codec is the shared
 * drivers/protocol/hil_proto.c compiled into this module).
 *
 * Paths through the module:
 *  - probes (atomic, hot path): take a reference on the exec'd file and keep writers off it
 *    until it is hashed, stamp the time, append a small event to a bounded pending list, kick
 *    one work item.  Nothing else.  "exited" is the exit of the last thread of a process.
 *  - one ordered work item (process context): for each pending event, in order, resolve the
 *    path (d_path), the size, the SHA-256 (kernel crypto "sha256", read through the exec'd
 *    file, cached per inode where the filesystem keeps a change counter), encode the record
 *    with hil_encode_process_record() and append it to the record buffer.  Images on network
 *    and FUSE filesystems are not hashed: their server could stall this worker forever.
 *  - one connection kthread: connects to collector:port, says HELLO, answers each REQUEST with
 *    RECORDS frames + END (with the count of records dropped since the previous END), and
 *    reconnects with exponential back-off when the collector goes away.  Records leave the
 *    buffer only once their RECORDS frame has been written to the socket.  On unload a frame
 *    being sent gets AGENT_STOP_GRACE to finish, then the connection is reset.
 *
 * Nothing is dropped silently: a full pending list, a failed allocation or a full record
 * buffer increments "dropped", which the next END reports and the stats parameter shows.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/tracepoint.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/binfmts.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/dcache.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/workqueue.h>
#include <linux/list.h>
#include <linux/spinlock.h>
#include <linux/mutex.h>
#include <linux/net.h>
#include <linux/in.h>
#include <linux/inet.h>
#include <linux/utsname.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/uio.h>
#include <linux/version.h>
#include <linux/hash.h>
#include <linux/iversion.h>
#include <linux/magic.h>
#include <linux/pid.h>
#include <linux/pid_namespace.h>
#include <linux/completion.h>
#include <crypto/hash.h>
#include <net/sock.h>

#include "hil_proto.h"

#define AGENT_KIND		"linux-kmod"
#define AGENT_HASH_CHUNK	(64 * 1024)
#define AGENT_HCACHE		64		/* SHA-256 cache entries (per inode identity) */
#define AGENT_LAT_MAX		65536		/* latency samples kept */
#define AGENT_TS_LEN		8		/* internal timestamp in front of each record */
#define AGENT_MAX_FRAME_RECS	(HIL_MAX_PAYLOAD / HIL_PROCESS_PREFIX_LEN + 1)
#define AGENT_BACKOFF_MIN_MS	100
#define AGENT_SEND_SLICE	HZ		/* one kernel_sendmsg() waits at most this long */
#define AGENT_SEND_STALL	(10 * HZ)	/* no progress for this long: the collector is gone */
#define AGENT_STOP_GRACE	(3 * HZ)	/* unloading: a frame being sent may finish meanwhile */
#define AGENT_EXIT_BUCKETS	64		/* processes whose exit was reported, by tgid hash */
#define AGENT_EXIT_WAYS		8

static char *collector = "10.0.2.2";
module_param(collector, charp, 0444);
MODULE_PARM_DESC(collector, "collector IPv4 address (default 10.0.2.2, the host under QEMU user networking)");

static ushort port = 7171;
module_param(port, ushort, 0444);
MODULE_PARM_DESC(port, "collector TCP port (default 7171)");

static int buffer_kb = 4096;
module_param(buffer_kb, int, 0444);
MODULE_PARM_DESC(buffer_kb, "record buffer size in KiB (16..262144, default 4096)");

static int max_pending = 16384;
module_param(max_pending, int, 0444);
MODULE_PARM_DESC(max_pending, "events waiting for hashing at most (default 16384)");

static int backoff_max_ms = 2000;
module_param(backoff_max_ms, int, 0444);
MODULE_PARM_DESC(backoff_max_ms, "longest wait between reconnection attempts (default 2000 ms)");

static int hash_max_mb = 256;
module_param(hash_max_mb, int, 0444);
MODULE_PARM_DESC(hash_max_mb, "images larger than this are not hashed (sha256 sent as zeros)");

/*
 * The collector's shared token, sent in HELLO (PROTOCOL.md 3.1) so that a collector can refuse
 * peers that merely reach its port.  Permission 0: not in /sys/module, so an unprivileged
 * process of the guest cannot read it; no .get for the same reason.
 */
static char *token;

static int token_set(const char *val, const struct kernel_param *kp)
{
	if (strnlen(val, HIL_MAX_TOKEN + 1) > HIL_MAX_TOKEN) {
		pr_err("token is longer than %u bytes\n", HIL_MAX_TOKEN);
		return -EINVAL;
	}
	return param_set_charp(val, kp);
}

static const struct kernel_param_ops token_ops = {
	.set = token_set,
	.free = param_free_charp,
};
module_param_cb(token, &token_ops, &token, 0);
MODULE_PARM_DESC(token, "shared secret for the collector's HELLO check, 0..255 bytes (default: none)");

/* ---- counters ---------------------------------------------------------------------------- */

static atomic64_t st_exec, st_exit, st_recorded, st_dropped, st_sent, st_batches, st_connects,
	st_hashed, st_hash_hits, st_hash_fail, st_hash_remote, st_hash_unstable, st_exit_unclaimed;
static atomic_t dropped_unreported;	/* reported by the next END, then reset */
static atomic_t n_pending;
static int connected;

static void count_drop(void)
{
	atomic64_inc(&st_dropped);
	atomic_inc(&dropped_unreported);
}

/* ---- record buffer: [u64 t_ns][wire record] ... between rhead and rtail ------------------ */

static u8 *rbuf;
static size_t rcap, rhead, rtail;
static DEFINE_MUTEX(rlock);

static void rbuf_append(u64 t_ns, const u8 *rec, size_t len)
{
	size_t need = AGENT_TS_LEN + len;

	mutex_lock(&rlock);
	if (rtail + need > rcap && rhead > 0) {
		memmove(rbuf, rbuf + rhead, rtail - rhead);
		rtail -= rhead;
		rhead = 0;
	}
	if (rtail + need > rcap) {
		mutex_unlock(&rlock);
		count_drop();
		return;
	}
	memcpy(rbuf + rtail, &t_ns, AGENT_TS_LEN);
	memcpy(rbuf + rtail + AGENT_TS_LEN, rec, len);
	rtail += need;
	mutex_unlock(&rlock);
	atomic64_inc(&st_recorded);
}

static size_t rbuf_used(void)
{
	size_t n;

	mutex_lock(&rlock);
	n = rtail - rhead;
	mutex_unlock(&rlock);
	return n;
}

/* ---- latency samples (exec/exit to "record written to the collector socket") ------------ */

static u32 *lat;
static u64 lat_n;
static DEFINE_MUTEX(lat_lock);

static void lat_add(const u64 *ts, u32 n, u64 now)
{
	u32 i;

	mutex_lock(&lat_lock);
	for (i = 0; i < n; i++) {
		u64 us = now > ts[i] ? div_u64(now - ts[i], 1000) : 0;

		lat[lat_n % AGENT_LAT_MAX] = (u32)min_t(u64, us, U32_MAX);
		lat_n++;
	}
	mutex_unlock(&lat_lock);
}

static int lat_show(struct seq_file *m, void *v)
{
	u64 i, first;

	mutex_lock(&lat_lock);
	first = lat_n > AGENT_LAT_MAX ? lat_n - AGENT_LAT_MAX : 0;
	seq_printf(m, "# total=%llu kept=%llu unit=us\n", lat_n, lat_n - first);
	for (i = first; i < lat_n; i++)
		seq_printf(m, "%u\n", lat[i % AGENT_LAT_MAX]);
	mutex_unlock(&lat_lock);
	return 0;
}

static int lat_open(struct inode *inode, struct file *file)
{
	return single_open_size(file, lat_show, NULL, 16 * AGENT_LAT_MAX);
}

static ssize_t lat_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	mutex_lock(&lat_lock);
	lat_n = 0;	/* any write resets the samples */
	mutex_unlock(&lat_lock);
	return len;
}

static const struct proc_ops lat_ops = {
	.proc_open = lat_open,
	.proc_read = seq_read,
	.proc_write = lat_write,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
};

static struct proc_dir_entry *lat_proc;

/* ---- stats parameter --------------------------------------------------------------------- */

static int stats_get(char *buf, const struct kernel_param *kp)
{
	return scnprintf(buf, PAGE_SIZE,
			 "exec=%lld exit=%lld recorded=%lld dropped=%lld sent=%lld batches=%lld connects=%lld connected=%d pending=%d buffered_bytes=%zu hashed=%lld hash_cache_hits=%lld hash_failures=%lld hash_skipped_remote=%lld hash_skipped_writable=%lld exit_untracked=%lld\n",
			 atomic64_read(&st_exec), atomic64_read(&st_exit),
			 atomic64_read(&st_recorded), atomic64_read(&st_dropped),
			 atomic64_read(&st_sent), atomic64_read(&st_batches),
			 atomic64_read(&st_connects), READ_ONCE(connected),
			 atomic_read(&n_pending), rbuf ? rbuf_used() : 0,
			 atomic64_read(&st_hashed), atomic64_read(&st_hash_hits),
			 atomic64_read(&st_hash_fail), atomic64_read(&st_hash_remote),
			 atomic64_read(&st_hash_unstable), atomic64_read(&st_exit_unclaimed));
}

static const struct kernel_param_ops stats_ops = { .get = stats_get };
module_param_cb(stats, &stats_ops, NULL, 0444);
MODULE_PARM_DESC(stats, "counters (read-only)");

/* ---- events from the probes -------------------------------------------------------------- */

struct agent_event {
	struct list_head node;
	u64 t_ns;
	u32 pid;
	u16 type;
	struct file *file;	/* exec: the image, referenced */
	bool write_denied;	/* exec: deny_write_access(file) held until hashed */
	char *fallback_path;	/* exec without a file (should not happen) */
};

/* The worker is done with the event's image: writers may have it again. */
static void put_event_file(struct agent_event *ev)
{
	if (!ev->file)
		return;
	if (ev->write_denied)
		allow_write_access(ev->file);
	fput(ev->file);
	ev->file = NULL;
}

static LIST_HEAD(pending);
static DEFINE_SPINLOCK(pend_lock);
static struct workqueue_struct *event_wq;
static struct work_struct drain_work;
static bool stopping;

static void queue_event(struct agent_event *ev)
{
	unsigned long flags;

	spin_lock_irqsave(&pend_lock, flags);
	list_add_tail(&ev->node, &pending);
	spin_unlock_irqrestore(&pend_lock, flags);
	queue_work(event_wq, &drain_work);
}

static struct agent_event *new_event(u16 type, u32 pid)
{
	struct agent_event *ev;

	if (atomic_inc_return(&n_pending) > max_pending)
		goto drop;
	ev = kmalloc(sizeof(*ev), GFP_ATOMIC | __GFP_NOWARN);
	if (!ev)
		goto drop;
	ev->t_ns = ktime_get_ns();
	ev->type = type;
	ev->pid = pid;
	ev->file = NULL;
	ev->write_denied = false;
	ev->fallback_path = NULL;
	return ev;
drop:
	atomic_dec(&n_pending);
	count_drop();
	return NULL;
}

static void probe_exec(void *data, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct agent_event *ev;

	if (unlikely(READ_ONCE(stopping)))
		return;
	atomic64_inc(&st_exec);
	ev = new_event(HIL_REC_PROCESS_CREATED, p->tgid);
	if (!ev)
		return;
	if (bprm->file) {
		/*
		 * The hash must be of what was executed.  exec keeps writers off the image while
		 * the process runs; from here we keep them off (ETXTBSY) until the worker has
		 * hashed it, so a process that exits at once cannot have its image rewritten in
		 * place before the hash.  Both are the kernel's i_writecount, atomic.
		 */
		ev->file = get_file(bprm->file);
		ev->write_denied = !deny_write_access(ev->file);
	} else {
		ev->fallback_path = kstrdup(bprm->filename, GFP_ATOMIC | __GFP_NOWARN);
	}
	queue_event(ev);
}

/*
 * "exited" is reported once per process, when its last thread exits: a thread-group leader
 * may end (and stay a zombie) while other threads run on.  do_exit() counts the group's live
 * threads down before this tracepoint, so the last one finds signal->live at 0; threads ending
 * at the same moment may all find it so.  The first of them claims the process here; a claim
 * is reused once no thread of its process can reach the tracepoint any more.
 */
struct exit_claim {
	pid_t tgid;	/* 0: free */
	u64 start;	/* the group leader's start_time: with tgid, the process's identity */
};

static struct exit_claim exit_claims[AGENT_EXIT_BUCKETS][AGENT_EXIT_WAYS];
static DEFINE_SPINLOCK(exit_lock);

/* Every thread of the claimed process has passed exit_notify() (or is gone). Under RCU. */
static bool exit_claim_done(const struct exit_claim *c)
{
	struct task_struct *leader, *t;

	leader = pid_task(find_pid_ns(c->tgid, &init_pid_ns), PIDTYPE_TGID);
	if (!leader || leader->start_time != c->start)
		return true;
	for_each_thread(leader, t) {
		if (!t->exit_state)
			return false;
	}
	return true;
}

/* true: the caller reports the exit of p's process (no other thread did or will). */
static bool claim_exit(struct task_struct *p)
{
	struct exit_claim *way = exit_claims[hash_32(p->tgid, ilog2(AGENT_EXIT_BUCKETS))];
	struct exit_claim *slot = NULL;
	u64 start = p->group_leader->start_time;
	unsigned long flags;
	bool mine = true;
	int i;

	spin_lock_irqsave(&exit_lock, flags);
	for (i = 0; i < AGENT_EXIT_WAYS; i++) {
		if (way[i].tgid == p->tgid && way[i].start == start) {
			mine = false;
			goto out;
		}
		if (!way[i].tgid && !slot)
			slot = &way[i];
	}
	if (!slot) {
		rcu_read_lock();
		for (i = 0; i < AGENT_EXIT_WAYS; i++) {
			if (exit_claim_done(&way[i])) {
				way[i].tgid = 0;
				if (!slot)
					slot = &way[i];
			}
		}
		rcu_read_unlock();
	}
	if (slot) {
		slot->tgid = p->tgid;
		slot->start = start;
	} else {
		/* every way busy with a process still exiting: report unclaimed, counted */
		atomic64_inc(&st_exit_unclaimed);
	}
out:
	spin_unlock_irqrestore(&exit_lock, flags);
	return mine;
}

static void probe_exit(void *data, struct task_struct *p)
{
	struct agent_event *ev;

	/* user processes only; the last thread of the group, once */
	if (unlikely(READ_ONCE(stopping)) || (p->flags & PF_KTHREAD) ||
	    atomic_read(&p->signal->live) || !claim_exit(p))
		return;
	atomic64_inc(&st_exit);
	ev = new_event(HIL_REC_PROCESS_EXITED, p->tgid);
	if (ev)
		queue_event(ev);
}

/* ---- SHA-256 of images, cached per inode while its i_version is unchanged ---------------- */

struct hcache_ent {
	bool valid;
	dev_t dev;
	unsigned long ino;
	u32 gen;
	loff_t size;
	u64 iversion;
	u8 sha[HIL_SHA256_LEN];
};

static struct hcache_ent hcache[AGENT_HCACHE];	/* used by the ordered worker only */
static unsigned int hcache_next;
static struct crypto_shash *sha_tfm;
static u8 *hash_buf;
static char *path_buf;
static u8 *rec_buf;

/*
 * Filesystems whose reads may wait on a server or a userspace daemon (NFS, CIFS, 9p, Ceph,
 * FUSE and virtiofs...): one that never answers would hold this ordered worker, every record
 * behind it and rmmod for good, so their images are not hashed (counted in stats).  Hashed:
 * block-device filesystems and memory ones; FUSE on a block device (fuseblk) is a daemon still.
 */
static bool fs_may_block(const struct super_block *sb)
{
	if (sb->s_magic == FUSE_SUPER_MAGIC)
		return true;
	if (sb->s_type->fs_flags & FS_REQUIRES_DEV)
		return false;
	return sb->s_magic != TMPFS_MAGIC && sb->s_magic != RAMFS_MAGIC;
}

/*
 * 0 and out filled, or < 0 (out untouched: the record carries zeros).  file is the exec'd
 * image, kept from writers by the caller; inode is the inode that holds its bytes (the real
 * one under overlayfs).
 *
 * A cached hash is used only while the inode's i_version says nothing was written since it
 * was taken (querying i_version makes the next write bump it).  Size, mtime and ctime would
 * not do: a same-size rewrite within one clock tick leaves them all as they were.  On
 * filesystems without i_version every exec is hashed.
 */
static int image_sha256(struct file *file, struct inode *inode, loff_t size, u8 *out)
{
	bool cacheable = IS_I_VERSION(inode);
	struct hcache_ent *e;
	u64 iversion = 0;
	loff_t pos = 0;
	int i, err;

	if (size > (loff_t)hash_max_mb << 20)
		return -EFBIG;
	if (cacheable) {
		iversion = inode_query_iversion(inode);
		for (i = 0; i < AGENT_HCACHE; i++) {
			e = &hcache[i];
			if (e->valid && e->ino == inode->i_ino && e->dev == inode->i_sb->s_dev &&
			    e->gen == inode->i_generation && e->size == size &&
			    e->iversion == iversion) {
				memcpy(out, e->sha, HIL_SHA256_LEN);
				atomic64_inc(&st_hash_hits);
				return 0;
			}
		}
	}

	{
		SHASH_DESC_ON_STACK(desc, sha_tfm);

		desc->tfm = sha_tfm;
		err = crypto_shash_init(desc);
		while (!err && pos < size) {
			ssize_t n = kernel_read(file, hash_buf, min_t(loff_t, size - pos, AGENT_HASH_CHUNK), &pos);

			if (n <= 0) {
				err = n < 0 ? n : -EIO;	/* shrank under us */
				break;
			}
			err = crypto_shash_update(desc, hash_buf, n);
			cond_resched();
		}
		if (!err)
			err = crypto_shash_final(desc, out);
		shash_desc_zero(desc);
	}
	if (err) {
		atomic64_inc(&st_hash_fail);
		return err;
	}
	atomic64_inc(&st_hashed);
	/* changed meanwhile (some filesystems count atime updates too): not worth keeping */
	if (!cacheable || inode_query_iversion(inode) != iversion)
		return 0;
	e = &hcache[hcache_next++ % AGENT_HCACHE];
	e->valid = true;
	e->ino = inode->i_ino;
	e->dev = inode->i_sb->s_dev;
	e->gen = inode->i_generation;
	e->size = size;
	e->iversion = iversion;
	memcpy(e->sha, out, HIL_SHA256_LEN);
	return 0;
}

static void process_event(struct agent_event *ev)
{
	u8 sha[HIL_SHA256_LEN];
	const u8 *sha_p = NULL;
	const char *path = "";
	loff_t size = 0;
	int n;

	if (ev->file) {
		struct inode *real = d_real_inode(ev->file->f_path.dentry);
		char *p = d_path(&ev->file->f_path, path_buf, PATH_MAX);

		if (!IS_ERR(p))
			path = p;
		size = i_size_read(file_inode(ev->file));
		if (fs_may_block(real->i_sb))
			atomic64_inc(&st_hash_remote);
		else if (!ev->write_denied)
			atomic64_inc(&st_hash_unstable);	/* a writer had it open: no stable bytes */
		else if (!image_sha256(ev->file, real, size, sha))
			sha_p = sha;
		put_event_file(ev);
	} else if (ev->fallback_path) {
		path = ev->fallback_path;
	}
	n = hil_encode_process_record(rec_buf, HIL_PROCESS_RECORD_MAX, ev->type, ev->pid,
				      size < 0 ? 0 : size, sha_p, (const u8 *)path,
				      min_t(size_t, strlen(path), HIL_MAX_PATH));
	kfree(ev->fallback_path);
	if (n < 0) {
		pr_warn_ratelimited("cannot encode record for pid %u: %s\n", ev->pid, hil_strerror_name(n));
		count_drop();
		return;
	}
	rbuf_append(ev->t_ns, rec_buf, n);
}

static void drain_fn(struct work_struct *w)
{
	for (;;) {
		struct agent_event *ev;
		unsigned long flags;

		spin_lock_irqsave(&pend_lock, flags);
		ev = list_first_entry_or_null(&pending, struct agent_event, node);
		if (ev)
			list_del(&ev->node);
		spin_unlock_irqrestore(&pend_lock, flags);
		if (!ev)
			return;
		atomic_dec(&n_pending);
		process_event(ev);
		kfree(ev);
		cond_resched();
	}
}

/* ---- collector connection ---------------------------------------------------------------- */

static struct task_struct *conn_task;
static struct socket *conn_sock;	/* published for unload's shutdown */
static DEFINE_MUTEX(sock_lock);
static __be32 collector_addr;
static u8 *frame_buf;			/* one RECORDS frame */
static u64 frame_ts[AGENT_MAX_FRAME_RECS];
static unsigned long stop_deadline;	/* unloading: a frame being sent must be out by then */
static DECLARE_COMPLETION(conn_idle);	/* the connection thread has left its last session */

/*
 * Write all of buf.  Each kernel_sendmsg() waits at most AGENT_SEND_SLICE (sk_sndtimeo), so
 * the loop looks at the clock at least that often: a collector that reads nothing for
 * AGENT_SEND_STALL is gone (-EAGAIN); once unloading, a frame still not out at stop_deadline is
 * abandoned (-ETIMEDOUT), however steadily a slow collector reads.
 */
static int send_all(struct socket *s, const void *buf, size_t len)
{
	unsigned long progress = jiffies;

	while (len) {
		struct kvec iov = { .iov_base = (void *)buf, .iov_len = len };
		struct msghdr msg = { .msg_flags = MSG_NOSIGNAL };
		int n;

		if (smp_load_acquire(&stopping) && time_after_eq(jiffies, READ_ONCE(stop_deadline)))
			return -ETIMEDOUT;
		n = kernel_sendmsg(s, &msg, &iov, 1, len);
		if (n == -EAGAIN && time_before(jiffies, progress + AGENT_SEND_STALL))
			continue;
		if (n <= 0)
			return n ? n : -EPIPE;
		progress = jiffies;
		buf += n;
		len -= n;
	}
	return 0;
}

static int recv_exact(struct socket *s, void *buf, size_t len)
{
	while (len) {
		struct kvec iov = { .iov_base = buf, .iov_len = len };
		struct msghdr msg = { };
		int n = kernel_recvmsg(s, &msg, &iov, 1, len, MSG_WAITALL);

		if (n <= 0)
			return n ? n : -ECONNRESET;
		buf += n;
		len -= n;
	}
	return 0;
}

/*
 * Build one RECORDS frame from the oldest buffered records, at most `limit` buffer bytes.
 * Nothing leaves the buffer here; commit_frame() does that once the frame is on the wire.
 */
static int build_frame(size_t limit, size_t *consumed, u32 *count)
{
	struct hil_records_builder b;
	size_t off;
	int err;

	*consumed = 0;
	*count = 0;
	err = hil_records_begin(&b, frame_buf, HIL_MAX_FRAME);
	if (err < 0)
		return err;
	mutex_lock(&rlock);
	off = rhead;
	while (off < rtail && off - rhead < limit) {
		u8 *rec = rbuf + off + AGENT_TS_LEN;
		size_t rlen = HIL_RECORD_HEADER_LEN + (rec[2] | (rec[3] << 8));

		err = hil_records_append(&b, rec, rlen);
		if (err == HIL_E_NO_SPACE)
			break;
		if (err < 0) {
			mutex_unlock(&rlock);
			return err;
		}
		memcpy(&frame_ts[*count], rbuf + off, AGENT_TS_LEN);
		(*count)++;
		off += AGENT_TS_LEN + rlen;
	}
	*consumed = off - rhead;
	mutex_unlock(&rlock);
	if (!*count)
		return 0;
	return hil_records_finish(&b);
}

static void commit_frame(size_t consumed, u32 count)
{
	mutex_lock(&rlock);
	rhead += consumed;
	if (rhead == rtail)
		rhead = rtail = 0;
	mutex_unlock(&rlock);
	atomic64_add(count, &st_sent);
	lat_add(frame_ts, count, ktime_get_ns());
}

static int answer_request(struct socket *s, u32 request_id)
{
	u8 end[HIL_END_FRAME_LEN];
	size_t remaining = rbuf_used();	/* records saved before this REQUEST: bounded batch */
	u32 total = 0, dropped;
	int n, err;

	while (remaining) {
		size_t consumed;
		u32 count;

		if (READ_ONCE(stopping))
			return -ESHUTDOWN;	/* unloading: stop between whole frames */
		n = build_frame(remaining, &consumed, &count);
		if (n < 0)
			return n;
		if (!count)
			break;
		err = send_all(s, frame_buf, n);
		if (err)
			return err;	/* the frame's records stay buffered */
		commit_frame(consumed, count);
		total += count;
		remaining -= min(remaining, consumed);
	}
	dropped = atomic_xchg(&dropped_unreported, 0);
	n = hil_encode_end(end, sizeof(end), request_id, total, dropped);
	if (n < 0)
		return n;
	err = send_all(s, end, n);
	if (err) {
		atomic_add(dropped, &dropped_unreported);
		return err;
	}
	if (dropped)
		pr_warn("buffer was full: %u record(s) dropped, reported to the collector\n", dropped);
	atomic64_inc(&st_batches);
	return 0;
}

static int say_hello(struct socket *s)
{
	static u8 hello[HIL_HELLO_FRAME_MAX];	/* off the stack; one connection kthread */
	char os[HIL_MAX_HELLO_STRING + 1];
	const char *host = init_utsname()->nodename;
	int n;

	n = scnprintf(os, sizeof(os), "linux-%s", init_utsname()->release);
	n = hil_encode_hello_token(hello, sizeof(hello), (const u8 *)AGENT_KIND, strlen(AGENT_KIND),
				   (const u8 *)os, n, (const u8 *)host,
				   min_t(size_t, strnlen(host, __NEW_UTS_LEN), HIL_MAX_HELLO_STRING),
				   (const u8 *)token, token ? strlen(token) : 0);
	if (n < 0)
		return n;
	return send_all(s, hello, n);
}

/* One connection's life: HELLO, then answer REQUESTs until the collector goes away. */
static int session(struct socket *s, bool *productive)
{
	u8 hdr[HIL_HEADER_LEN], payload[64];
	int err = say_hello(s);

	while (!err) {
		struct hil_frame_header h = { };
		u32 request_id, left;

		err = recv_exact(s, hdr, sizeof(hdr));
		if (err)
			break;
		err = hil_decode_header(hdr, sizeof(hdr), &h);
		if (err < 0 || h.type != HIL_FRAME_REQUEST) {
			pr_warn("protocol error from collector: %s (frame type %u)\n",
				err < 0 ? hil_strerror_name(err) : "UnexpectedFrame", h.type);
			err = -EPROTO;
			break;
		}
		/* REQUEST is 4 bytes; read, then skip any future fields in bounded chunks */
		left = h.length;
		err = recv_exact(s, payload, min_t(u32, left, sizeof(payload)));
		if (err)
			break;
		if (hil_decode_request(payload, min_t(u32, left, sizeof(payload)), &request_id) < 0) {
			pr_warn("malformed REQUEST from collector\n");
			err = -EPROTO;
			break;
		}
		left -= min_t(u32, left, sizeof(payload));
		while (!err && left) {
			u32 k = min_t(u32, left, sizeof(payload));

			err = recv_exact(s, payload, k);
			left -= k;
		}
		if (!err)
			err = answer_request(s, request_id);
		if (!err)
			*productive = true;
	}
	return err;
}

static int open_connection(struct socket **out)
{
	struct sockaddr_in addr = { };
	struct socket *s;
	int err;

	err = sock_create_kern(&init_net, AF_INET, SOCK_STREAM, IPPROTO_TCP, &s);
	if (err)
		return err;
	s->sk->sk_sndtimeo = 10 * HZ;	/* also bounds connect() */
	mutex_lock(&sock_lock);
	if (stopping) {
		mutex_unlock(&sock_lock);
		sock_release(s);
		return -ESHUTDOWN;
	}
	conn_sock = s;
	mutex_unlock(&sock_lock);

	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = collector_addr;
	addr.sin_port = htons(port);
	err = kernel_connect(s, (struct sockaddr *)&addr, sizeof(addr), 0);
	if (!err) {
		sock_set_keepalive(s->sk);
		s->sk->sk_sndtimeo = AGENT_SEND_SLICE;	/* send_all() keeps the clock */
		*out = s;
		return 0;
	}
	mutex_lock(&sock_lock);
	conn_sock = NULL;
	mutex_unlock(&sock_lock);
	sock_release(s);
	return err;
}

/*
 * torn: the session ended inside a frame.  Reset the connection then (no FIN that would make
 * a partial frame look like a finished stream, no orphaned socket trickling it out).
 */
static void close_connection(struct socket *s, bool torn)
{
	mutex_lock(&sock_lock);
	conn_sock = NULL;
	mutex_unlock(&sock_lock);
	if (torn)
		sock_no_linger(s->sk);
	else
		kernel_sock_shutdown(s, SHUT_RDWR);
	sock_release(s);
}

/* Wait up to ms, or until unloading. Not a synchronisation point: a back-off. */
static void backoff_wait(unsigned int ms)
{
	set_current_state(TASK_INTERRUPTIBLE);
	if (!kthread_should_stop() && !READ_ONCE(stopping))
		schedule_timeout(msecs_to_jiffies(ms));
	__set_current_state(TASK_RUNNING);
}

static int conn_fn(void *unused)
{
	unsigned int backoff = AGENT_BACKOFF_MIN_MS;
	int last_err = 0;

	while (!kthread_should_stop() && !READ_ONCE(stopping)) {
		struct socket *s;
		bool productive = false;
		int err = open_connection(&s);

		if (!err) {
			atomic64_inc(&st_connects);
			WRITE_ONCE(connected, 1);
			pr_info("connected to collector %pI4:%u\n", &collector_addr, port);
			err = session(s, &productive);
			WRITE_ONCE(connected, 0);
			/* send_all() gave up inside a frame: deadline, stalled collector, kthread_stop() */
			close_connection(s, err == -ETIMEDOUT || err == -EAGAIN || err == -EINTR ||
					 err == -ERESTARTSYS);
			if (!READ_ONCE(stopping))
				pr_info("collector connection ended (%d), reconnecting\n", err);
			if (productive)
				backoff = AGENT_BACKOFF_MIN_MS;
		} else if (err != last_err) {
			pr_info("cannot reach collector %pI4:%u (%d), retrying with back-off\n",
				&collector_addr, port, err);
		}
		last_err = err;
		if (kthread_should_stop() || READ_ONCE(stopping))
			break;
		backoff_wait(backoff);
		backoff = min_t(unsigned int, backoff * 2, max(backoff_max_ms, AGENT_BACKOFF_MIN_MS));
	}
	complete(&conn_idle);
	set_current_state(TASK_INTERRUPTIBLE);
	while (!kthread_should_stop()) {
		schedule();
		set_current_state(TASK_INTERRUPTIBLE);
	}
	__set_current_state(TASK_RUNNING);
	return 0;
}

/* ---- tracepoints ------------------------------------------------------------------------- */

static struct tracepoint *tp_exec, *tp_exit;

static void find_tp(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, "sched_process_exec"))
		tp_exec = tp;
	else if (!strcmp(tp->name, "sched_process_exit"))
		tp_exit = tp;
}

/* ---- load / unload ----------------------------------------------------------------------- */

static void free_all(void)
{
	if (lat_proc)
		proc_remove(lat_proc);
	if (event_wq)
		destroy_workqueue(event_wq);
	if (sha_tfm)
		crypto_free_shash(sha_tfm);
	kvfree(hash_buf);
	kfree(path_buf);
	kfree(rec_buf);
	kvfree(frame_buf);
	vfree(rbuf);
	vfree(lat);
}

static int __init agent_init(void)
{
	int err;

	if (!in4_pton(collector, -1, (u8 *)&collector_addr, -1, NULL)) {
		pr_err("collector '%s' is not an IPv4 address\n", collector);
		return -EINVAL;
	}
	if (buffer_kb < 16 || buffer_kb > 262144 || max_pending < 1 || hash_max_mb < 0) {
		pr_err("buffer_kb must be 16..262144, max_pending >= 1, hash_max_mb >= 0\n");
		return -EINVAL;
	}
	for_each_kernel_tracepoint(find_tp, NULL);
	if (!tp_exec || !tp_exit) {
		pr_err("tracepoints sched_process_exec/sched_process_exit not found\n");
		return -ENOENT;
	}

	rcap = (size_t)buffer_kb * 1024;
	rbuf = vmalloc(rcap);
	lat = vmalloc(sizeof(u32) * AGENT_LAT_MAX);
	frame_buf = kvmalloc(HIL_MAX_FRAME, GFP_KERNEL);
	hash_buf = kvmalloc(AGENT_HASH_CHUNK, GFP_KERNEL);
	path_buf = kmalloc(PATH_MAX, GFP_KERNEL);
	rec_buf = kmalloc(HIL_PROCESS_RECORD_MAX, GFP_KERNEL);
	event_wq = alloc_ordered_workqueue("hil_agent_events", 0);
	if (!rbuf || !lat || !frame_buf || !hash_buf || !path_buf || !rec_buf || !event_wq) {
		err = -ENOMEM;
		goto fail;
	}
	INIT_WORK(&drain_work, drain_fn);
	sha_tfm = crypto_alloc_shash("sha256", 0, 0);
	if (IS_ERR(sha_tfm)) {
		err = PTR_ERR(sha_tfm);
		sha_tfm = NULL;
		pr_err("no sha256 in the kernel crypto API (%d)\n", err);
		goto fail;
	}
	lat_proc = proc_create("hil_agent_latency_us", 0600, NULL, &lat_ops);

	conn_task = kthread_run(conn_fn, NULL, "hil_agent_conn");
	if (IS_ERR(conn_task)) {
		err = PTR_ERR(conn_task);
		goto fail;
	}
	err = tracepoint_probe_register(tp_exec, probe_exec, NULL);
	if (!err) {
		err = tracepoint_probe_register(tp_exit, probe_exit, NULL);
		if (err)
			tracepoint_probe_unregister(tp_exec, probe_exec, NULL);
	}
	if (err) {
		pr_err("cannot register tracepoint probes (%d)\n", err);
		goto fail_thread;
	}
	pr_info("recording exec/exit, collector %pI4:%u, buffer %d KiB\n", &collector_addr, port, buffer_kb);
	return 0;

fail_thread:
	mutex_lock(&sock_lock);
	WRITE_ONCE(stop_deadline, jiffies);
	smp_store_release(&stopping, true);
	if (conn_sock)
		kernel_sock_shutdown(conn_sock, SHUT_RDWR);
	mutex_unlock(&sock_lock);
	kthread_stop(conn_task);
fail:
	free_all();
	return err;
}

static void __exit agent_exit(void)
{
	struct agent_event *ev, *tmp;

	tracepoint_probe_unregister(tp_exec, probe_exec, NULL);
	tracepoint_probe_unregister(tp_exit, probe_exit, NULL);
	tracepoint_synchronize_unregister();	/* no probe runs after this */

	/*
	 * SHUT_RD wakes a connect() or a recv() waiting for the next REQUEST but lets a frame
	 * being sent finish, so the collector sees whole frames; the thread then stops between
	 * frames and closes with a FIN.  A collector too slow to take that frame within
	 * AGENT_STOP_GRACE does not hold rmmod: send_all() gives up at the deadline and the
	 * connection is reset.  kthread_stop() comes after that (it would interrupt the send
	 * at once on kernels where it flags the thread with TIF_NOTIFY_SIGNAL).
	 */
	mutex_lock(&sock_lock);
	WRITE_ONCE(stop_deadline, jiffies + AGENT_STOP_GRACE);
	smp_store_release(&stopping, true);
	if (conn_sock)
		kernel_sock_shutdown(conn_sock, SHUT_RD);
	mutex_unlock(&sock_lock);
	wake_up_process(conn_task);	/* out of a back-off wait */
	wait_for_completion_timeout(&conn_idle, AGENT_STOP_GRACE + 2 * AGENT_SEND_SLICE);
	kthread_stop(conn_task);

	destroy_workqueue(event_wq);	/* drains queued events */
	event_wq = NULL;
	list_for_each_entry_safe(ev, tmp, &pending, node) {
		list_del(&ev->node);
		put_event_file(ev);
		kfree(ev->fallback_path);
		kfree(ev);
	}
	pr_info("unloaded: exec=%lld exit=%lld recorded=%lld sent=%lld dropped=%lld still buffered=%zu bytes\n",
		atomic64_read(&st_exec), atomic64_read(&st_exit), atomic64_read(&st_recorded),
		atomic64_read(&st_sent), atomic64_read(&st_dropped), rtail - rhead);
	free_all();
}

module_init(agent_init);
module_exit(agent_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kernel-hil process agent: exec/exit records with SHA-256, sent to the collector");
