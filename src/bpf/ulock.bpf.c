// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * ulock.bpf.c - pthread mutex, rwlock and spinlock waits and holds from
 * uprobes on the target's libc.
 *
 * Minimum kernel: 5.15 (attach cookies), task storage in tracing programs
 * (5.11). Userspace attaches, per function, `ulock_enter` (uprobe) and
 * `ulock_return` (uretprobe) to every lock call and `ulock_unlock` (uprobe)
 * to every unlock call; the attach cookie (LS_UOP_*) says what the function
 * is, so one program serves them all. A probe goes, where userspace can
 * tell it is safe (ulock.rs cheap_point), on the first instruction the
 * kernel emulates (a branch or push) past the loads that open the function
 * rather than on its first instruction: same arguments, the return address
 * still at the stack pointer, the lock not yet touched, and one trap per
 * probe instead of a trap and a single-step (ten times dearer on a
 * virtualised CPU).
 *
 * Invariants:
 * - A thread is in at most one lock call at a time: the call in progress
 *   (entry -> return) lives in task storage `ulock_call`. The uretprobe has
 *   no arguments, so the lock address comes from there. A return whose
 *   entry was not seen (the call began before attaching) finds nothing and
 *   does nothing: its release will be counted as partial.
 * - An acquired lock is keyed by (lock, tid) in `holds`, so nested locks and
 *   recursive acquisitions (depth) work. Entry -> return is the wait,
 *   return -> unlock entry the hold. A release whose acquisition was not
 *   seen (tracing began while the thread held or waited for the lock) is
 *   counted `partial` and never timed.
 * - A call returning non-zero (EBUSY, ETIMEDOUT, EDEADLK, EAGAIN...) is a
 *   failure: counted in `failed`, never an acquisition.
 * - Contended or not (struct ls_uagg_val: `acquired` counts every
 *   acquisition, `count` and the wait statistics only the contended ones;
 *   holds are timed for all). An uncontended call's entry -> return is the
 *   probes' own cost (microseconds), never a
 *   wait. A call is contended when it blocked (the thread switched out
 *   voluntarily during the call: glibc blocks only in futex waits) or when
 *   the lock was taken by another thread as the call began (LS_UCALL_BUSY,
 *   see look_at_lock()):
 *   - pthread_spin_lock (glibc x86_64, probed after its `lock decl`): exact.
 *     ZF of that decl is in the trap's registers: set, the decl took the
 *     lock; clear, the lock was taken and the call spins.
 *   - glibc mutexes of the lll kinds (normal, recursive, error-checking,
 *     timed calls): the lock word (__lock) non-zero and the owner not this
 *     thread at entry, confirmed at the return by the word being 2: glibc's
 *     slow path (__lll_lock_wait, not exported, so not probed) always
 *     leaves 2, its fast path 1. Races: a lock released between the entry's
 *     read and glibc's CAS (the entry probe's own microseconds) is caught
 *     by the confirmation, unless another waiter arrived in the same window
 *     (then a wait of microseconds counts as contended); a lock taken in
 *     that window makes the call contended without the busy mark, caught
 *     when it blocks, missed when it got the lock without blocking (its
 *     wait is then a few microseconds of spinning in glibc).
 *   - adaptive, robust, priority-inheritance/protect mutexes: busy at entry
 *     or blocked (adaptive spinning leaves the word 1: no confirmation).
 *   - rwlocks: for reading, a writer (__cur_writer) other than this thread
 *     at entry; for writing, a writer or readers (__readers >> 3); or the
 *     call blocked. Same races as a mutex, without the confirmation.
 *   - a trylock never waits: never contended. Other libcs (no glibc
 *     layout): contended only when the call blocked.
 * - The holder when a wait began: glibc's mutex owner tid (__data.__owner)
 *   or rwlock writer tid (__data.__cur_writer) read from the lock; for spin
 *   locks the last acquirer this program saw. Kept for contended waits.
 * - `ulock_call.covers` tells futex.bpf.c (same map, shared by fd) that a
 *   futex wait belongs to a traced lock call, so it is not counted twice.
 *   pthread_cond_*wait releases its mutex (a hold ends at entry) and takes
 *   it again before returning (a hold begins at return); its futex waits
 *   are condition waits, counted by the futex source.
 * - Where a wait went (on CPU, runnable, asleep) comes from the scheduler's
 *   accounting of the waiter at entry and return (user.bpf.h
 *   ls_sched_split): no sched_switch program.
 * - Aggregation keys hold the tid: one writer per key, no atomics, except
 *   the holder map (several waiters): atomic adds.
 * - Stacks (stacks.bpf.h) are user stacks only (the kernel stack of a
 *   uprobe is the uprobe machinery), taken at the lock call's return: the
 *   first frame is the return address, the caller of the aggregation key.
 *   With --hold-stacks the acquisition's stack is kept in its hold.
 * - Per-process probes (`-p`, `run`) fire only in the process they were
 *   attached for. New processes of targets are followed by userspace:
 *   `ulock_fork` makes a target's forked child a target and tells
 *   userspace (`spawns`), which attaches the child's probes (it maps the
 *   same libc); `ulock_exec` tells it a target exec'd (its new program may
 *   map another libc); `ulock_exit` drops an exited process from
 *   `target_pids` and tells userspace to release its probes. Lock calls of
 *   a child between its fork and the attachment of its probes are not
 *   seen (a release whose acquisition was not seen is `partial`).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lockscope.h"
#include "window.bpf.h"
#include "user.bpf.h"
#include "holds.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

LS_HASH(holds, struct ls_uhold_key, struct ls_uhold, 16384); /* resized by userspace before load */

LS_HASH(agg, struct ls_uagg_key, struct ls_uagg_val, 16384); /* resized by userspace before load */

LS_PERCPU_ARRAY(agg_zero, struct ls_uagg_val, 1);

LS_HASH(holders, struct ls_uholder_key, struct ls_uholder_val, 4096);

/* Spin locks have no owner field: the last acquirer seen, by lock. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} last_owner SEC(".maps");

LS_RINGBUF(events, 8 << 20); /* resized by userspace before load */

LS_LOST_MAP(LS_ULOST__COUNT);

/* New, exec'd and exited processes of targets, for userspace to follow. */
LS_RINGBUF(spawns, 256 << 10);

/* Makes the event types part of the object's BTF so the skeleton has them. */
struct ls_uevent ls_uevent_type = {};
struct ls_uspawn ls_uspawn_type = {};

#define LS_STACK_LOST_FAILED LS_ULOST_STACK
#define LS_STACK_LOST_MAP_FULL LS_ULOST_STACK_MAP_FULL
#include "stacks.bpf.h"

/* The aggregation entry of a key, created when missing (NULL: map full). */
static __always_inline struct ls_uagg_val *agg_entry(struct ls_uagg_key *key)
{
	struct ls_uagg_val *init;

	LS_LOOKUP_OR_SCRATCH(&agg, key, init, &agg_zero);
	LS_INIT_AGG(init, bpf_get_current_task_btf());
	return ls_insert(&agg, key, init, &lost, LS_ULOST_MAP_FULL);
}

static __always_inline void emit(__u64 begin, __u64 acquired, __u64 released,
				 __u64 lock, __u64 caller, __u32 kind, __u32 flags,
				 __u32 holder, __s32 ret, __u64 offcpu, __u64 runq)
{
	struct ls_uevent *e;
	__u64 id;

	LS_RESERVE_EVENT(e, LS_ULOST_RINGBUF);
	id = bpf_get_current_pid_tgid();
	LS_FILL_LOCK_EVENT(e, id, begin, acquired, released, lock, kind, flags, holder, ret);
	e->caller = caller;
	e->offcpu_ns = offcpu;
	e->runq_ns = runq;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

/* The head of glibc's x86_64 pthread_mutex_t (__lock, __count, __owner,
 * __nusers, __kind) and pthread_rwlock_t (__readers, __writers, ...,
 * __cur_writer at 24): one read for both (40 and 56 bytes long). */
struct glibc_head {
	int w[7];
};

#define GLIBC_X86_ZF 0x40 /* EFLAGS zero flag */
#define GLIBC_RWLOCK_READER_SHIFT 3
#define GLIBC_MUTEX_KIND_MASK 0x7f   /* PTHREAD_MUTEX_KIND_MASK_NP */
#define GLIBC_MUTEX_ADAPTIVE 3
#define GLIBC_MUTEX_SPECIAL 0x70     /* robust, prio-inherit, prio-protect */

/* Who holds `lock` now, as far as can be told without blocking, and
 * whether the call (`op`, by thread `tid`) finds it taken: LS_UCALL_* in
 * `*flags` (see the note at the top). */
static __always_inline __u32 look_at_lock(struct pt_regs *regs, __u64 lock, __u32 op,
					  __u32 tid, __u32 *flags)
{
	__u32 kind = op & LS_UOP_KIND_MASK, *last, holder = 0, mkind;
	struct glibc_head h = {};
	bool busy = false;
	int word = 0;

	*flags = 0;
	if (kind == LS_UKIND_SPIN) {
		last = bpf_map_lookup_elem(&last_owner, &lock);
		holder = last ? *last : 0;
		if (op & LS_UOP_TRY)
			return holder;
		if (op & LS_UOP_RETRY) {
			/* right after glibc's `lock decl (%rdi)`: exact */
			busy = !(regs->flags & GLIBC_X86_ZF);
		} else {
			bpf_probe_read_user(&word, sizeof(word), (void *)lock);
			busy = word != 0;
		}
		if (busy)
			*flags = LS_UCALL_BUSY;
		return holder;
	}
	if (!(op & LS_UOP_GLIBC))
		return 0;
	bpf_probe_read_user(&h, sizeof(h), (void *)lock);
	if (kind == LS_UKIND_MUTEX) {
		holder = h.w[LS_GLIBC_MUTEX_OWNER_OFF / 4] > 0 ?
			 h.w[LS_GLIBC_MUTEX_OWNER_OFF / 4] : 0;
		busy = h.w[0] != 0 && holder != tid;
		mkind = h.w[4] & GLIBC_MUTEX_KIND_MASK;
		if (busy && !(mkind & GLIBC_MUTEX_SPECIAL) &&
		    (mkind & 3) != GLIBC_MUTEX_ADAPTIVE)
			*flags |= LS_UCALL_CONFIRM;
	} else {
		holder = h.w[LS_GLIBC_RWLOCK_WRITER_OFF / 4] > 0 ?
			 h.w[LS_GLIBC_RWLOCK_WRITER_OFF / 4] : 0;
		busy = holder != 0 && holder != tid;
		if (kind == LS_UKIND_RWLOCK_WRITE &&
		    ((__u32)h.w[0] >> GLIBC_RWLOCK_READER_SHIFT) != 0)
			busy = true;
	}
	if (busy && !(op & LS_UOP_TRY))
		*flags |= LS_UCALL_BUSY;
	else
		*flags = 0;
	return holder;
}

/* Whether the lock call that just returned 0 blocked or spun. */
static __always_inline bool was_contended(struct ls_ucall *call, bool slept)
{
	int word = 0;

	if (call->op & LS_UOP_TRY)
		return false;
	if (slept)
		return true;
	if (!(call->flags & LS_UCALL_BUSY))
		return false;
	if (!(call->flags & LS_UCALL_CONFIRM))
		return true;
	/* glibc's lll slow path leaves 2 in the word it took; its fast path 1 */
	bpf_probe_read_user(&word, sizeof(word), (void *)call->lock);
	return word == 2;
}

SEC("uprobe")
int BPF_UPROBE(ulock_enter, void *lock)
{
	LS_CHECK_STOPPED();
	__u64 now = bpf_ktime_get_ns();
	struct task_struct *task;
	struct ls_ucall *call;
	__u32 op, holder, tid, flags;

	if (!is_target())
		return 0;
	task = bpf_get_current_task_btf();
	LS_TASK_SLOT(call, &ulock_call, task, LS_ULOST_STORAGE, 0);
	op = (__u32)bpf_get_attach_cookie(ctx);
	if ((op & LS_UOP_RETRY) && call->lock == (__u64)lock && call->op == op)
		return 0; /* the same call spinning: keep its first entry */
	if (call->lock)
		ls_count_lost(&lost, LS_ULOST_STALE_CALL);
	tid = (__u32)bpf_get_current_pid_tgid();
	holder = look_at_lock(ctx, (__u64)lock, op, tid, &flags);
	call->lock = (__u64)lock;
	call->begin_ns = now;
	call->nvcsw = task->nvcsw;
	ls_sched_mark(&call->sched, task);
	/* the return address (at a uretprobe the instruction pointer is the
	 * uprobes trampoline, not the caller) */
	call->caller = 0;
	bpf_probe_read_user(&call->caller, sizeof(call->caller), (void *)PT_REGS_SP(ctx));
	call->op = op;
	call->holder_tid = holder == tid ? 0 : holder;
	call->covers = 1;
	call->flags = flags;
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(ulock_return, int ret)
{
	LS_CHECK_STOPPED();
	__u64 now = bpf_ktime_get_ns(), wait, id, offcpu, runq;
	struct ls_uagg_key key = {};
	struct ls_uhold_key hkey = {};
	struct ls_uhold nh = {};
	struct task_struct *task;
	struct ls_uagg_val *val;
	struct ls_ucall call;
	__u32 kind, tid;
	__s32 ustack = -1;
	bool slept, contended;

	task = bpf_get_current_task_btf();
	LS_TAKE_CALL(&ulock_call, task, call);
	id = bpf_get_current_pid_tgid();
	tid = (__u32)id;
	kind = call.op & LS_UOP_KIND_MASK;
	wait = now - call.begin_ns;
	slept = task->nvcsw != call.nvcsw;
	ls_sched_split(&call.sched, task, wait, &offcpu, &runq);

	key.lock = call.lock;
	key.caller = call.caller;
	key.tid = tid;
	key.pid = id >> 32;
	key.kind = kind;
	val = agg_entry(&key);

	if (ret != 0) {
		if (val)
			val->failed += 1;
		emit(call.begin_ns, now, 0, call.lock, call.caller, kind,
		     LS_UEV_FAILED | (slept ? LS_UEV_SLEPT : 0), call.holder_tid, ret,
		     offcpu, runq);
		return 0;
	}

	contended = was_contended(&call, slept);
	if (!contended)
		call.holder_tid = 0; /* nobody made it wait */
	if (hold_stacks_on)
		ustack = take_ustack(ctx);
	/* wait stacks weigh waits: contended acquisitions only */
	if (stacks_on && contended && stack_wanted(wait)) {
		if (ustack < 0 && !hold_stacks_on)
			ustack = take_ustack(ctx);
		add_stack(call.lock, kind, -1, ustack, wait, false);
	}
	hkey.lock = call.lock;
	hkey.tid = tid;
	nh.ustack_id = ustack;
	nh.begin_ns = call.begin_ns;
	nh.acquired_ns = now;
	nh.caller = call.caller;
	nh.kind = kind;
	nh.depth = 1;
	nh.holder_tid = call.holder_tid;
	nh.flags = (slept ? LS_UEV_SLEPT : 0) | (contended ? LS_UEV_CONTENDED : 0);
	nh.offcpu_ns = offcpu;
	nh.runq_ns = runq;
	/* recursive: the hold runs to the last unlock */
	LS_OPEN_HOLD(&holds, &hkey, nh, LS_ULOST_HOLDS_FULL);
	if (kind == LS_UKIND_SPIN)
		bpf_map_update_elem(&last_owner, &call.lock, &tid, BPF_ANY);

	if (val)
		val->acquired += 1;
	if (val && contended) {
		LS_ADD_WAIT(val, wait);
		val->offcpu_ns += offcpu;
		val->runq_ns += runq;
		if (slept)
			val->slept += 1;
	}
	if (call.holder_tid)
		ls_count_holder(&holders, call.lock, call.holder_tid, id >> 32, kind, wait);
	return 0;
}

/* Closes the hold of `lock` by the current thread (unlock, cond wait). */
static __always_inline void release(__u64 lock, __u32 op)
{
	__u64 now = bpf_ktime_get_ns(), hold, id;
	struct ls_uagg_key key = {};
	struct ls_uhold_key hkey = {};
	struct ls_uagg_val *val;
	struct ls_uhold *h, open;
	__u32 kind = op & LS_UOP_KIND_MASK;
	int writer = 0;

	id = bpf_get_current_pid_tgid();
	hkey.lock = lock;
	hkey.tid = (__u32)id;
	h = bpf_map_lookup_elem(&holds, &hkey);
	if (!h) {
		/* acquired before tracing began (or by another thread) */
		if (kind == LS_UKIND_RWLOCK) {
			kind = LS_UKIND_RWLOCK_READ;
			if (op & LS_UOP_GLIBC) {
				bpf_probe_read_user(&writer, sizeof(writer),
						    (void *)(lock + LS_GLIBC_RWLOCK_WRITER_OFF));
				if (writer == (int)(__u32)id)
					kind = LS_UKIND_RWLOCK_WRITE;
			}
		}
		key.lock = lock;
		key.tid = (__u32)id;
		key.pid = id >> 32;
		key.kind = kind;
		val = agg_entry(&key);
		if (val)
			val->partial += 1;
		emit(0, 0, now, lock, 0, kind, LS_UEV_PARTIAL, 0, 0, 0, 0);
		return;
	}
	if (h->depth > 1) {
		h->depth -= 1;
		return;
	}
	open = *h;
	bpf_map_delete_elem(&holds, &hkey);
	hold = now - open.acquired_ns;
	key.lock = lock;
	key.caller = open.caller;
	key.tid = (__u32)id;
	key.pid = id >> 32;
	key.kind = open.kind;
	val = agg_entry(&key);
	if (val)
		LS_ADD_HOLD(val, hold);
	if (hold_stacks_on && open.ustack_id >= 0 && stack_wanted(hold))
		add_stack(lock, open.kind, -1, open.ustack_id, hold, true);
	emit(open.begin_ns, open.acquired_ns, now, lock, open.caller, open.kind,
	     open.flags, open.holder_tid, 0, open.offcpu_ns, open.runq_ns);
}

SEC("uprobe")
int BPF_UPROBE(ulock_unlock, void *lock)
{
	LS_CHECK_STOPPED();
	if (!is_target())
		return 0;
	release((__u64)lock, (__u32)bpf_get_attach_cookie(ctx));
	return 0;
}

/* pthread_cond_wait(cond, mutex) and its timed forms: the mutex is
 * released at entry and held again when the call returns (whatever it
 * returns: 0, ETIMEDOUT and EINTR all give the mutex back). */
SEC("uprobe")
int BPF_UPROBE(ucond_enter, void *cond, void *mutex)
{
	LS_CHECK_STOPPED();
	struct task_struct *task;
	struct ls_ucall *call;
	__u32 op;

	if (!is_target())
		return 0;
	op = (__u32)bpf_get_attach_cookie(ctx);
	release((__u64)mutex, op);
	task = bpf_get_current_task_btf();
	LS_TASK_SLOT(call, &ulock_call, task, LS_ULOST_STORAGE, 0);
	if (call->lock)
		ls_count_lost(&lost, LS_ULOST_STALE_CALL);
	call->lock = (__u64)mutex;
	call->begin_ns = 0;
	call->caller = 0;
	bpf_probe_read_user(&call->caller, sizeof(call->caller), (void *)PT_REGS_SP(ctx));
	call->op = op;
	call->holder_tid = 0;
	call->covers = 0; /* condition waits are futex waits of their own */
	call->flags = 0;
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(ucond_return, int ret)
{
	LS_CHECK_STOPPED();
	struct task_struct *task = bpf_get_current_task_btf();
	struct ls_uhold_key hkey = {};
	struct ls_uhold nh = {};
	struct ls_ucall *c;

	c = bpf_task_storage_get(&ulock_call, task, 0, 0);
	if (!c || !c->lock)
		return 0;
	hkey.lock = c->lock;
	hkey.tid = (__u32)bpf_get_current_pid_tgid();
	nh.acquired_ns = bpf_ktime_get_ns();
	nh.caller = c->caller;
	nh.kind = LS_UKIND_MUTEX;
	nh.depth = 1;
	nh.ustack_id = hold_stacks_on ? take_ustack(ctx) : -1;
	c->lock = 0;
	LS_OPEN_HOLD(&holds, &hkey, nh, LS_ULOST_HOLDS_FULL);
	return 0;
}

/* Benchmark floor: an empty program on the same attach points. */
SEC("uprobe")
int BPF_UPROBE(ulock_empty)
{
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(ulock_empty_ret)
{
	return 0;
}

/* ---- following the targets' new processes (per-process probes) ------ */

static __always_inline void tell_spawn(__u32 what, __u32 pid, __u32 parent)
{
	struct ls_uspawn *s = ls_reserve(&spawns, sizeof(*s), &lost, LS_ULOST_FOLLOW);

	if (!s)
		return;
	s->ts_ns = bpf_ktime_get_ns();
	s->pid = pid;
	s->parent = parent;
	s->what = what;
	s->_pad = 0;
	bpf_ringbuf_submit(s, 0);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(ulock_fork, struct task_struct *parent, struct task_struct *child)
{
	LS_CHECK_STOPPED();
	int followed = follow_fork_task(parent, child);

	if (followed < 0)
		ls_count_lost(&lost, LS_ULOST_FOLLOW);
	else if (followed > 0)
		tell_spawn(LS_USPAWN_FORK, child->tgid, parent->tgid);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(ulock_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	LS_CHECK_STOPPED();
	__u32 pid = p->tgid;

	/* old_pid differs when a thread other than the leader exec'd */
	if (bpf_map_lookup_elem(&target_pids, &pid))
		tell_spawn(LS_USPAWN_EXEC, pid, old_pid);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(ulock_exit, struct task_struct *p)
{
	LS_CHECK_STOPPED();
	__u32 pid = p->tgid;

	/* the group's live count is already down for this thread */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	if (!bpf_map_lookup_elem(&target_pids, &pid))
		return 0;
	bpf_map_delete_elem(&target_pids, &pid);
	tell_spawn(LS_USPAWN_EXIT, pid, 0);
	return 0;
}
