// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * futex.bpf.c - futex waits from the syscall tracepoints (futex,
 * futex_waitv), for runtimes that wait on futexes without pthread (Rust
 * std, Go, Java) and for condition variables.
 *
 * Minimum kernel: 5.15 (bpf_task_pt_regs); futex_waitv: 5.16 (optional).
 *
 * Invariants:
 * - A waiting op (WAIT, WAIT_BITSET, LOCK_PI, LOCK_PI2, WAIT_REQUEUE_PI,
 *   futex_waitv) opens a wait in task storage at sys_enter; sys_exit closes
 *   it. A thread is in one syscall at a time, so one slot per task.
 * - An exit whose enter was not seen (the wait began before attaching) is
 *   recognised from the syscall's saved registers (uaddr, op) and counted
 *   `partial` for that futex, never timed.
 * - A wait inside a traced pthread lock call (`ulock_call.covers`, the map
 *   of ulock.bpf.c shared by fd) is that call's wait: it is counted as
 *   `covered`, not added to futex totals, so nothing is counted twice.
 * - Outcomes: 0 (>= 0 for futex_waitv) woken; -ETIMEDOUT timed out;
 *   -EINTR/-ERESTART* interrupted; -EAGAIN: the value had changed, the
 *   thread never slept: counted, not a wait.
 * - Where a wait went (on CPU, runnable, asleep): the scheduler's accounting
 *   of the waiter at sys_enter and sys_exit (user.bpf.h ls_sched_split).
 * - Aggregation keyed by (uaddr, tid): one writer per key, no atomics.
 * - --stacks: the user stack of a wait at least the threshold long (or
 *   sampled), taken at sys_exit, aggregated per (uaddr, tid, kind, stack).
 * - Callers (caller_mode LS_CALLER_FIRST, the default): at the first wait of
 *   each lock key (mutex, rwlock), its ip, sp and LS_FSCAN_WORDS words of
 *   user stack go to `fscan`; userspace finds the lock call's caller in
 *   them (struct ls_fscan) and names a heap lock after it.
 * - Kinds (classify(), at sys_enter, glibc 2.36 x86_64 layouts checked
 *   against the real library): glibc's lll lock slow path (pthread mutex,
 *   libc-internal locks) waits with FUTEX_WAIT val 2 on the lock word
 *   (mutex __lock at +0; __owner tid +8, __nusers +12, __kind +16); PI
 *   mutexes use LOCK_PI(2) with the owner tid in the word. pthread_rwlock
 *   waits with WAIT_BITSET: a reader on __wrphase_futex (+8) for 3 while a
 *   writer holds, a writer on __wrphase_futex for 2 while readers hold, a
 *   writer on __writers_futex (+12) for 3 while a writer holds; __readers
 *   (+0) has WRPHASE (1) / WRLOCKED (2) set accordingly, __pad3/__pad4
 *   (+16/+20) are 0, __cur_writer is at +24. pthread_cond waits with
 *   WAIT_BITSET on __g_signals[g] (+40/+44) while __wrefs (+36) counts its
 *   waiters (>= 8). Anything else is `other`. Spinning before the futex
 *   call (glibc's adaptive mutexes) is not seen: only the sleep is.
 * - Holder: a waking op (WAKE, WAKE_BITSET, WAKE_OP, (CMP_)REQUEUE,
 *   UNLOCK_PI) of a target records (pid, uaddr) -> (tid, time) in an LRU
 *   map; a woken wait whose waker called after the wait began names that
 *   thread (the releaser); else the owner read at sys_enter. Wakes are
 *   issued only when the lock word says someone waits, so this costs
 *   nothing on an uncontended lock.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lockscope.h"
#include "window.bpf.h"
#include "user.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#define FUTEX_REQUEUE 3
#define FUTEX_CMP_REQUEUE 4
#define FUTEX_WAKE_OP 5
#define FUTEX_LOCK_PI 6
#define FUTEX_UNLOCK_PI 7
#define FUTEX_WAKE_BITSET 10
#define FUTEX_WAIT_BITSET 9
#define FUTEX_WAIT_REQUEUE_PI 11
#define FUTEX_LOCK_PI2 13
#define FUTEX_CMD_MASK 0x7f /* without PRIVATE (128) and CLOCK_REALTIME (256) */
#define LS_FOP_WAITV 0x100

#define ETIMEDOUT 110
#define EAGAIN 11
#define EINTR 4

LS_TASK_STORAGE(fwait, struct ls_fwait);

LS_HASH(agg, struct ls_fagg_key, struct ls_fagg_val, 16384); /* resized by userspace before load */

LS_PERCPU_ARRAY(agg_zero, struct ls_fagg_val, 1);

const volatile __u32 caller_mode = LS_CALLER_FIRST; /* enum ls_caller_mode */

/* The user stack at the first wait of each lock key (LS_CALLER_FIRST). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* 528 bytes a key: as used */
	__uint(max_entries, 16384); /* resized by userspace before load */
	__type(key, struct ls_fagg_key);
	__type(value, struct ls_fscan);
} fscan SEC(".maps");

LS_PERCPU_ARRAY(fscan_buf, struct ls_fscan, 1);

/* The last waker of each (pid, futex) of the targets. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct ls_fwake_key);
	__type(value, struct ls_fwake);
} wakers SEC(".maps");

LS_HASH(holders, struct ls_fholder_key, struct ls_fholder_val, 16384); /* resized by userspace before load */

LS_RINGBUF(events, 8 << 20); /* resized by userspace before load */

/* Loss counters and outcome statistics (LS_FLOST_*, LS_FSTAT_*). */
LS_LOST_MAP(LS_FSTAT__END);

/* Makes the event type part of the object's BTF so the skeleton has it. */
struct ls_fevent ls_fevent_type = {};

#define LS_STACK_LOST_FAILED LS_FLOST_STACK
#define LS_STACK_LOST_MAP_FULL LS_FLOST_STACK_MAP_FULL
#include "stacks.bpf.h"

static __always_inline bool is_wait_op(__u32 op)
{
	switch (op & FUTEX_CMD_MASK) {
	case FUTEX_WAIT:
	case FUTEX_WAIT_BITSET:
	case FUTEX_LOCK_PI:
	case FUTEX_LOCK_PI2:
	case FUTEX_WAIT_REQUEUE_PI:
		return true;
	}
	return false;
}

static __always_inline bool is_wake_op(__u32 op)
{
	switch (op & FUTEX_CMD_MASK) {
	case FUTEX_WAKE:
	case FUTEX_REQUEUE:
	case FUTEX_CMP_REQUEUE:
	case FUTEX_WAKE_OP:
	case FUTEX_UNLOCK_PI:
	case FUTEX_WAKE_BITSET:
		return true;
	}
	return false;
}

#define RW_WRPHASE 1U
#define RW_WRLOCKED 2U
#define FUTEX_TID_MASK 0x3fffffffU

/* Whether w[i] (u32 words of a pthread_rwlock_t read from base - 8) look
 * like a rwlock's __readers at `r`, pads at `r+4`, `r+5` and __shared at
 * `r+7`. */
static __always_inline bool rw_pads_ok(const __u32 *w, int r)
{
	return w[r + 4] == 0 && w[r + 5] == 0 && w[r + 7] <= 1;
}

#define FUTEX_PRIVATE_FLAG 128

static __always_inline bool cond_wrefs_ok(__u32 wrefs, __u32 op)
{
	return (wrefs >> 3) > 0 && wrefs < (1U << 20) &&
	       !(wrefs & 1) == !!(op & FUTEX_PRIVATE_FLAG);
}

/* The kind of a futex wait at sys_enter (design note at the top) and the
 * lock's owner tid when the layout has one. */
static __always_inline __u32 classify(__u64 uaddr, __u32 op, __u32 val, __u32 *holder,
				      __u32 *off)
{
	__u32 cmd = op & FUTEX_CMD_MASK;
	/* words from uaddr - 12 to uaddr + 20: w[3] is the futex word */
	__u32 w[9];

	*holder = 0;
	*off = 0;
	if (cmd == FUTEX_LOCK_PI || cmd == FUTEX_LOCK_PI2) {
		if (!bpf_probe_read_user(&w[0], 4, (void *)uaddr))
			*holder = w[0] & FUTEX_TID_MASK;
		return LS_FKIND_MUTEX;
	}
	if (cmd == FUTEX_WAIT && val == 2) {
		/* __lock, __count, __owner, __nusers, __kind */
		if (!bpf_probe_read_user(&w[0], 20, (void *)uaddr) && w[3] >= 1 &&
		    w[3] < (1U << 16) && w[4] < 0x400)
			*holder = w[2];
		return LS_FKIND_MUTEX;
	}
	if (cmd != FUTEX_WAIT_BITSET)
		return LS_FKIND_OTHER;
	if (val == 2 || val == 3) {
		if (bpf_probe_read_user(w, sizeof(w), (void *)(uaddr - 12)))
			return LS_FKIND_OTHER;
		/* a writer on __writers_futex (+12): rwlock at uaddr - 12,
		 * w[0] its __readers, w[7] __cur_writer */
		if (val == 3 && (w[0] & (RW_WRPHASE | RW_WRLOCKED)) ==
				(RW_WRPHASE | RW_WRLOCKED) && rw_pads_ok(w, 0)) {
			*holder = w[6];
			*off = 12;
			return LS_FKIND_RWLOCK_WRITE;
		}
		/* on __wrphase_futex (+8): rwlock at uaddr - 8, w[1] its
		 * __readers; a reader waits for the write phase to end (3), a
		 * writer for the readers (2) */
		if (!rw_pads_ok(w, 1))
			return LS_FKIND_OTHER;
		*off = 8;
		if (val == 3 && (w[1] & RW_WRPHASE)) {
			*holder = w[7];
			return LS_FKIND_RWLOCK_READ;
		}
		if (val == 2 && (w[1] & (RW_WRPHASE | RW_WRLOCKED)) == RW_WRLOCKED &&
		    (w[1] >> 3) > 0)
			return LS_FKIND_RWLOCK_WRITE;
		*off = 0;
		return LS_FKIND_OTHER;
	}
	/* pthread_cond_t (glibc 2.36 waits for __g_signals[g] == 0):
	 * __wrefs (+36) just before __g_signals[0] (+40), or two words before
	 * __g_signals[1] (+44); its waiter count (>> 3) is at least 1 and its
	 * bit 0 (process-shared) agrees with the op's PRIVATE flag */
	if (val != 0 || bpf_probe_read_user(&w[0], 8, (void *)(uaddr - 8)))
		return LS_FKIND_OTHER;
	if (cond_wrefs_ok(w[1], op)) {
		*off = 40;
		return LS_FKIND_COND;
	}
	if (cond_wrefs_ok(w[0], op)) {
		*off = 44;
		return LS_FKIND_COND;
	}
	return LS_FKIND_OTHER;
}

/* A waking op of a target: remember who called it, on which futex. */
static __always_inline void on_wake(__u64 uaddr)
{
	struct ls_fwake_key k = {};
	struct ls_fwake v = {};
	__u64 id;

	if (!is_target())
		return;
	id = bpf_get_current_pid_tgid();
	k.uaddr = uaddr;
	k.pid = id >> 32;
	v.tid = (__u32)id;
	v.ts_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&wakers, &k, &v, BPF_ANY);
}

/* The waker of a woken wait that began at `begin`, else `owner`. */
static __always_inline __u32 holder_of(__u64 uaddr, __u32 pid, __u64 begin, __u32 owner)
{
	struct ls_fwake_key k = {};
	struct ls_fwake *v;

	k.uaddr = uaddr;
	k.pid = pid;
	v = bpf_map_lookup_elem(&wakers, &k);
	if (v && v->ts_ns >= begin)
		return v->tid;
	return owner;
}

/* Whether the current thread is inside a traced pthread lock call. */
static __always_inline bool covered(struct task_struct *task)
{
	struct ls_ucall *c = bpf_task_storage_get(&ulock_call, task, 0, 0);

	return c && c->lock && c->covers;
}

/* A wait's slot, opened on `uaddr` (its kind and owner from the lock word). */
static __always_inline void fill_wait(struct ls_fwait *w, __u64 uaddr, __u32 op, __u32 val)
{
	w->uaddr = uaddr;
	w->op = op;
	w->holder = 0;
	w->off = 0;
	w->kind = op == LS_FOP_WAITV ? LS_FKIND_OTHER
				     : classify(uaddr, op, val, &w->holder, &w->off);
}

static __always_inline int on_enter(__u64 uaddr, __u32 op, __u32 val)
{
	struct task_struct *task;
	struct ls_fwait *w;

	if (!is_target())
		return 0;
	task = bpf_get_current_task_btf();
	if (covered(task)) {
		ls_count_lost(&lost, LS_FSTAT_COVERED);
		return 0;
	}
	LS_TASK_SLOT(w, &fwait, task, LS_FLOST_STORAGE, 0);
	if (w->uaddr)
		ls_count_lost(&lost, LS_FLOST_STALE);
	fill_wait(w, uaddr, op, val);
	w->nvcsw = task->nvcsw;
	ls_sched_mark(&w->sched, task);
	w->begin_ns = bpf_ktime_get_ns();
	return 0;
}

/* The user stack of a lock key's first wait, for its caller (design note
 * at the top). */
static __always_inline void take_scan(struct ls_fagg_key *key, struct task_struct *task)
{
	struct pt_regs *regs;
	struct ls_fscan *s;

	if (caller_mode == LS_CALLER_NONE ||
	    (key->kind != LS_FKIND_MUTEX && key->kind != LS_FKIND_RWLOCK_READ &&
	     key->kind != LS_FKIND_RWLOCK_WRITE))
		return;
	s = ls_scratch(&fscan_buf);
	if (!s)
		return;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	s->ip = BPF_CORE_READ(regs, ip);
	s->sp = BPF_CORE_READ(regs, sp);
	/* a failed read zeroes the buffer: then the first words only (a
	 * stack that ends within the whole read) */
	if (bpf_probe_read_user(s->words, sizeof(s->words), (void *)s->sp) &&
	    bpf_probe_read_user(s->words, 16 * sizeof(__u64), (void *)s->sp)) {
		ls_count_lost(&lost, LS_FLOST_STACK);
		return;
	}
	ls_insert(&fscan, key, s, &lost, LS_FLOST_STACK_MAP_FULL);
}

/* The cgroup v2 id of `task` (bpf_get_current_cgroup_id() of the current
 * one). */
static __always_inline __u64 task_cgroup(struct task_struct *task)
{
	return BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
}

/* The aggregation entry of `key`, a wait of `task`. `scan`: `task` is the
 * current task (its stack can be read for a new key's caller). */
static __always_inline struct ls_fagg_val *agg_entry(struct ls_fagg_key *key,
						     struct task_struct *task, bool scan)
{
	struct ls_fagg_val *val, *init;

	LS_LOOKUP_OR_SCRATCH(&agg, key, init, &agg_zero);
	init->cgroup_id = task_cgroup(task);
	BPF_CORE_READ_STR_INTO(&init->comm, task, comm);
	BPF_CORE_READ_STR_INTO(&init->pcomm, task, group_leader, comm);
	init->min_ns = ~0ULL;
	val = ls_insert(&agg, key, init, &lost, LS_FLOST_MAP_FULL);
	/* the key holds the tid, its only writer: a miss above and an entry
	 * now means this call created it (the key's first wait) */
	if (val && scan)
		take_scan(key, task);
	return val;
}

/* Streams a wait of `task`. */
static __always_inline void emit(struct task_struct *task, __u64 begin, __u64 end,
				 __u64 uaddr, __u32 op, __s32 ret, __u32 flags, __u64 offcpu,
				 __u64 runq, __u32 kind, __u32 holder)
{
	struct ls_fevent *e;

	LS_RESERVE_EVENT(e, LS_FLOST_RINGBUF);
	e->begin_ns = begin;
	e->end_ns = end;
	e->uaddr = uaddr;
	e->cgroup_id = task_cgroup(task);
	e->pid = BPF_CORE_READ(task, tgid);
	e->tid = BPF_CORE_READ(task, pid);
	e->op = op;
	e->ret = ret;
	e->flags = flags;
	e->kind = kind;
	e->holder_tid = holder;
	e->pad = 0;
	e->offcpu_ns = offcpu;
	e->runq_ns = runq;
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	bpf_ringbuf_submit(e, 0);
}

/* The futex a syscall waited on, from its saved user registers, for exits
 * whose enter was not seen. 0 when it was not a waiting op. */
static __always_inline __u64 saved_wait_uaddr(struct task_struct *task, bool waitv,
					      __u32 *op)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	__u64 di = BPF_CORE_READ(regs, di), uaddr = 0;

	if (waitv) {
		/* struct futex_waitv { u64 val; u64 uaddr; u32 flags, __reserved; } */
		bpf_probe_read_user(&uaddr, sizeof(uaddr), (void *)(di + 8));
		*op = LS_FOP_WAITV;
		return uaddr;
	}
	*op = (__u32)BPF_CORE_READ(regs, si);
	return is_wait_op(*op) ? di : 0;
}

/* Ends the wait `open` of `task` at `now`, with result `ret` (the
 * syscall's, or as the sched backend tells it): its row, its holder, its
 * stack and its event. `holder`: the releaser, else the owner at its start.
 * `ustack`: its user stack (-1: none; -2: take the current one now). */
static __always_inline void finish_wait(void *ctx, struct task_struct *task,
					const struct ls_fwait *open, __u64 now, long ret,
					bool slept, __u64 offcpu, __u64 runq, __u32 holder,
					__s32 ustack)
{
	struct ls_fagg_key key = {};
	struct ls_fagg_val *val;
	__u64 delta = now - open->begin_ns;
	__u64 id = (__u64)BPF_CORE_READ(task, tgid) << 32 | (__u32)BPF_CORE_READ(task, pid);

	key.uaddr = open->uaddr - open->off;
	key.tid = (__u32)id;
	key.pid = id >> 32;
	key.kind = open->kind;
	if (ret >= 0)
		ls_count_lost(&lost, LS_FSTAT_WOKEN);
	else if (ret == -ETIMEDOUT)
		ls_count_lost(&lost, LS_FSTAT_TIMED_OUT);
	else
		ls_count_lost(&lost, LS_FSTAT_INTERRUPTED);

	val = agg_entry(&key, task, ustack == -2);
	if (val) {
		LS_ADD_WAIT(val, delta);
		val->offcpu_ns += offcpu;
		val->runq_ns += runq;
		if (ret == -ETIMEDOUT)
			val->timed_out += 1;
		else if (ret < 0)
			val->interrupted += 1;
		if (slept)
			val->slept += 1;
	}
	if (open->kind != LS_FKIND_OTHER && open->kind != LS_FKIND_COND) {
		struct ls_fholder_key hk = {};
		struct ls_fholder_val *hv, hinit = {};

		hk.uaddr = key.uaddr;
		hk.holder_tid = holder;
		hk.pid = key.pid;
		hk.kind = open->kind;
		hv = ls_lookup_or_init(&holders, &hk, &hinit, &lost, LS_FLOST_MAP_FULL);
		if (hv) {
			__sync_fetch_and_add(&hv->waits, 1);
			__sync_fetch_and_add(&hv->wait_ns, delta);
		}
	}
	/* the user stack of the waiting syscall (its kernel stack is the
	 * syscall exit path or the scheduler: not taken) */
	if (stacks_on && stack_wanted(delta))
		add_stack_of(id, key.uaddr, open->kind, -1,
			     ustack == -2 ? take_ustack(ctx) : ustack, delta, false);
	emit(task, open->begin_ns, now, key.uaddr, open->op, ret, slept ? LS_UEV_SLEPT : 0,
	     offcpu, runq, open->kind, holder);
}

/* A futex wait of `task` whose start was not seen (it began before
 * attaching): counted `partial` for its futex, never timed. */
static __always_inline void partial_wait(struct task_struct *task, __u64 uaddr, __u32 op,
					 long ret)
{
	struct ls_fagg_key key = {};
	struct ls_fagg_val *val;

	key.uaddr = uaddr;
	key.tid = BPF_CORE_READ(task, pid);
	key.pid = BPF_CORE_READ(task, tgid);
	val = agg_entry(&key, task, false);
	if (val)
		val->partial += 1;
	emit(task, 0, bpf_ktime_get_ns(), uaddr, op, ret, LS_UEV_FUTEX_PARTIAL, 0, 0,
	     LS_FKIND_OTHER, 0);
}

static __always_inline int on_exit(void *ctx, long ret, bool waitv)
{
	struct task_struct *task;
	struct ls_fagg_key key = {};
	struct ls_fagg_val *val;
	struct ls_fwait *w, open;
	__u64 now, delta, uaddr, offcpu, runq;
	__u32 op = 0, holder = 0;

	task = bpf_get_current_task_btf();
	w = bpf_task_storage_get(&fwait, task, 0, 0);
	if (!w || !w->uaddr) {
		/* not opened: not a target, a non-waiting op, covered by a
		 * pthread call, or begun before attaching (partial) */
		if (!is_target() || covered(task))
			return 0;
		uaddr = saved_wait_uaddr(task, waitv, &op);
		if (uaddr)
			partial_wait(task, uaddr, op, ret);
		return 0;
	}
	now = bpf_ktime_get_ns();
	open = *w;
	w->uaddr = 0;
	if (ret == -EAGAIN) {
		__u64 id = bpf_get_current_pid_tgid();

		key.uaddr = open.uaddr - open.off;
		key.tid = (__u32)id;
		key.pid = id >> 32;
		key.kind = open.kind;
		ls_count_lost(&lost, LS_FSTAT_VALUE_CHANGED);
		val = agg_entry(&key, task, true);
		if (val)
			val->value_changed += 1;
		return 0;
	}
	delta = now - open.begin_ns;
	ls_sched_split(&open.sched, task, delta, &offcpu, &runq);
	if (open.kind != LS_FKIND_OTHER && open.kind != LS_FKIND_COND)
		holder = ret >= 0 ? holder_of(open.uaddr, task->tgid, open.begin_ns, open.holder)
				  : open.holder;
	else if (ret >= 0)
		/* condvar / other: the waker, for the stream */
		holder = holder_of(open.uaddr, task->tgid, open.begin_ns, 0);
	finish_wait(ctx, task, &open, now, ret, task->nvcsw != open.nvcsw, offcpu, runq, holder,
		    -2);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_futex")
int futex_enter(struct trace_event_raw_sys_enter *ctx)
{
	LS_CHECK_STOPPED();
	__u32 op = (__u32)ctx->args[1];

	if (!is_wait_op(op)) {
		if (is_wake_op(op))
			on_wake(ctx->args[0]);
		return 0;
	}
	return on_enter(ctx->args[0], op, (__u32)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_futex")
int futex_exit(struct trace_event_raw_sys_exit *ctx)
{
	LS_CHECK_STOPPED();
	return on_exit(ctx, ctx->ret, false);
}

SEC("tracepoint/syscalls/sys_enter_futex_waitv")
int futex_waitv_enter(struct trace_event_raw_sys_enter *ctx)
{
	LS_CHECK_STOPPED();
	__u64 uaddr = 0;

	/* keyed by the first futex of the vector */
	bpf_probe_read_user(&uaddr, sizeof(uaddr), (void *)(ctx->args[0] + 8));
	return on_enter(uaddr, LS_FOP_WAITV, 0);
}

SEC("tracepoint/syscalls/sys_exit_futex_waitv")
int futex_waitv_exit(struct trace_event_raw_sys_exit *ctx)
{
	LS_CHECK_STOPPED();
	return on_exit(ctx, ctx->ret, true);
}

/*
 * The sched backend: the same waits, seen from the scheduler instead of the
 * syscall tracepoints, which put every syscall of every process on the
 * host on the kernel's syscall-tracing path while attached. These programs
 * run only when a task switches out, is switched in or is woken: never on
 * an uncontended lock, nor on a syscall that does not sleep.
 * - A wait begins when a target's task switches out asleep (not preempted,
 *   state not TASK_RUNNING) inside futex() with a waiting op, or inside
 *   futex_waitv(): the syscall and its arguments are the task's saved user
 *   registers (orig_ax, di, si, dx). The current task is the one switching
 *   out, so the lock word, the stack copy for the caller and (--stacks)
 *   the user stack are read then.
 * - sched_waking (in the waker's context) records when it was woken and by
 *   which thread: the current one when it is in a futex call (a wake op) or
 *   exiting (a joined thread's exit wakes its joiner). Any other wake (a
 *   timeout's timer, a signal) names no thread: the wait is counted timed
 *   out if the call had a timeout, else interrupted. A timer interrupt that
 *   happens to hit a thread inside a futex call is taken for that thread's
 *   wake (the preempt count that would tell is not reachable from BPF on
 *   every kernel).
 * - The wait ends when the task is switched in: wait = asleep + runnable,
 *   split at the wake.
 * - A switch-in the program does not see. Measured on 6.18 (two traced
 *   processes with SCHED_FIFO threads, one core busy): about 1 wait in
 *   2000 had no sched_switch run of this program for its task's switch-in
 *   (ftrace's sched_switch event saw it, recursion_misses stayed 0), nor
 *   for the next one; the wait then ended at a later switch-in, 10 ms and
 *   more too long. Other programs being attached and detached meanwhile
 *   seem to be what does it: one traced process with `lockscope doctor`
 *   in a loop beside it had 5 such waits in 6500, without the loop 0. So the wake also records the scheduler's count of the
 *   task's arrivals on a CPU and its run delay (sched_info.pcount,
 *   .run_delay, CONFIG_SCHED_INFO). At a switch-in, or a second wake,
 *   that finds arrivals since the wake, the switch-in that ended the wait
 *   was not seen: it ends at the wake plus the run delay of that arrival
 *   (exact when it was the only one; else at the wake), counted
 *   `unseen switch-ins`. Without CONFIG_SCHED_INFO this cannot be told. One sleep, one wait: a call that sleeps twice (a PI
 *   lock taken by another before the woken waiter ran; a spurious wakeup)
 *   counts two waits. A call that never sleeps (the value had changed, or
 *   the lock was free again) is not seen: `value changed` stays 0.
 * - A wait that began before attaching: userspace lists the targets'
 *   threads asleep in a futex wait then (`asleep`, from /proc); the first
 *   wake of such a thread that is still in that wait counts it partial, as
 *   at a syscall exit whose enter was not seen. A thread seen to sleep
 *   again after that is taken off the list.
 * - Cost when nothing is open: `open_waits` counts the waits open now and
 *   `asleep_left` the listed threads not yet woken; while both are 0 the
 *   switch-in and wake sides read no task storage, and the wake side reads
 *   nothing of the woken task (its registers are a cold cache line).
 */
#define NR_FUTEX 202       /* x86_64 */
#define NR_FUTEX_WAITV 449 /* x86_64 */
/* Waits open now (sched backend), and listed threads not yet woken. */
__s64 open_waits = 0;
volatile __u32 asleep_left = 0;
LS_HASH(asleep, __u32, struct ls_fasleep, 4096);

#define NR_EXIT 60
#define NR_EXIT_GROUP 231

/* The syscall `task` is in (its saved user registers). */
static __always_inline long syscall_of(struct task_struct *task)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);

	return regs->orig_ax;
}

/* The futex a task asleep in futex()/futex_waitv() waits on, from its saved
 * user registers: 0 when it is not in a waiting futex call. `val`: the
 * expected value of futex(); `timed`: the call has a timeout. */
static __always_inline __u64 sleeping_futex(struct task_struct *task, __u32 *op, __u32 *val,
					     __u32 *timed)
{
	/* `task` is trusted (a tp_btf argument or the current task), and so
	 * is its registers' pointer: plain loads, no helper calls */
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	long nr = regs->orig_ax;

	if (nr != NR_FUTEX && nr != NR_FUTEX_WAITV)
		return 0;
	/* the timeout argument of futex() and futex_waitv() */
	*timed = regs->r10 != 0;
	if (nr == NR_FUTEX_WAITV)
		return saved_wait_uaddr(task, true, op);
	*op = (__u32)regs->si;
	*val = (__u32)regs->dx;
	return is_wait_op(*op) ? regs->di : 0;
}

/* The current task, `prev`, switches out asleep: a futex wait begins if it
 * sleeps in one. */
static __always_inline void sleep_begins(void *ctx, struct task_struct *prev)
{
	struct ls_fagg_key key = {};
	struct ls_fwait *w;
	__u32 op = 0, val = 0, timed = 0;
	__u64 uaddr = sleeping_futex(prev, &op, &val, &timed), id;

	if (!uaddr || !is_target())
		return;
	if (covered(prev)) {
		ls_count_lost(&lost, LS_FSTAT_COVERED);
		return;
	}
	LS_TASK_SLOT(w, &fwait, prev, LS_FLOST_STORAGE);
	if (w->uaddr)
		ls_count_lost(&lost, LS_FLOST_STALE);
	else
		__sync_fetch_and_add(&open_waits, 1);
	if (asleep_left) {
		/* whatever it slept in when listed has ended */
		__u32 tid = (__u32)bpf_get_current_pid_tgid();

		if (!bpf_map_delete_elem(&asleep, &tid))
			__sync_fetch_and_add(&asleep_left, -1);
	}
	fill_wait(w, uaddr, op, val);
	w->wake_ns = 0;
	w->waker = 0;
	w->timed = timed;
	w->ustack = stacks_on ? take_ustack(ctx) : -1;
	/* a new lock key's caller, from the stack while it can be read */
	id = bpf_get_current_pid_tgid();
	key.uaddr = uaddr - w->off;
	key.tid = (__u32)id;
	key.pid = id >> 32;
	key.kind = w->kind;
	if (!bpf_map_lookup_elem(&agg, &key))
		take_scan(&key, prev);
	w->begin_ns = bpf_ktime_get_ns();
}

/* The scheduler's count of `p`'s arrivals on a CPU (0 without
 * CONFIG_SCHED_INFO). */
static __always_inline __u64 arrivals_of(struct task_struct *p)
{
	if (bpf_core_field_exists(p->sched_info.pcount))
		return p->sched_info.pcount;
	return 0;
}

/* Whether `p`, woken in its open wait `w`, has arrived on a CPU since:
 * the switch-in that ended the wait was not seen (design note above). */
static __always_inline bool arrived_unseen(struct task_struct *p, const struct ls_fwait *w)
{
	return w->wake_ns && arrivals_of(p) != w->wake_pcount;
}

/* The end of such a wait: the wake plus the run delay of the first
 * arrival after it, when it was the only one; else the wake. */
static __always_inline __u64 unseen_end(struct task_struct *p, const struct ls_fwait *w)
{
	ls_count_lost(&lost, LS_FSTAT_UNSEEN_SWITCH_IN);
	if (arrivals_of(p) - w->wake_pcount == 1)
		return w->wake_ns + (ls_run_delay(p) - w->wake_run_delay);
	return w->wake_ns;
}

/* Ends the open wait `w` of `task` (the sched backend) at `now` (its
 * switch-in, or the end unseen_end() gives). */
static __always_inline void sched_wait_ends(void *ctx, struct task_struct *task,
					    struct ls_fwait *w, __u64 now)
{
	struct ls_fwait open;
	__u64 runq = 0, delta;
	__u32 holder;
	long ret;

	open = *w;
	w->uaddr = 0;
	__sync_fetch_and_add(&open_waits, -1);
	if (now < open.begin_ns)
		now = open.begin_ns;
	delta = now - open.begin_ns;
	if (open.wake_ns >= open.begin_ns && open.wake_ns <= now)
		runq = now - open.wake_ns;
	/* woken by a thread's futex call (or exit): its releaser; otherwise
	 * its timeout, if it had one, or a signal */
	ret = !open.wake_ns || open.waker ? 0 : open.timed ? -ETIMEDOUT : -EINTR;
	holder = open.waker ? open.waker : open.holder;
	finish_wait(ctx, task, &open, now, ret, true, delta - runq, runq, holder, open.ustack);
}

/* `next` is switched in: its futex wait, if one is open, ends. */
static __always_inline void sleep_ends(void *ctx, struct task_struct *next)
{
	struct ls_fwait *w;

	if (!open_waits)
		return;
	w = bpf_task_storage_get(&fwait, next, 0, 0);
	if (!w || !w->uaddr)
		return;
	/* (the arrival now is counted after this tracepoint) */
	sched_wait_ends(ctx, next, w,
			arrived_unseen(next, w) ? unseen_end(next, w) : bpf_ktime_get_ns());
}

SEC("tp_btf/sched_switch")
int BPF_PROG(futex_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	LS_CHECK_STOPPED();
	if (!preempt && prev->__state != 0)
		sleep_begins(ctx, prev);
	sleep_ends(ctx, next);
	return 0;
}

SEC("tp_btf/sched_waking")
int BPF_PROG(futex_waking, struct task_struct *p)
{
	struct ls_fwait *w;
	struct ls_fasleep *a;
	__u32 op = 0, val = 0, timed = 0, tid;
	__u64 uaddr;

	LS_CHECK_STOPPED();
	if (open_waits) {
		w = bpf_task_storage_get(&fwait, p, 0, 0);
		if (w && w->uaddr) {
			if (!w->wake_ns) {
				long nr = syscall_of(bpf_get_current_task_btf());

				w->wake_pcount = arrivals_of(p);
				w->wake_run_delay = ls_run_delay(p);
				w->wake_ns = bpf_ktime_get_ns();
				w->waker = nr == NR_FUTEX || nr == NR_EXIT || nr == NR_EXIT_GROUP
						   ? (__u32)bpf_get_current_pid_tgid()
						   : 0;
			} else if (arrived_unseen(p, w)) {
				/* woken again after it ran: the switch-in that
				 * ended its wait was not seen */
				sched_wait_ends(ctx, p, w, unseen_end(p, w));
			}
			return 0;
		}
	}
	if (!asleep_left)
		return 0;
	/* a thread listed asleep when tracing began, still in that wait */
	tid = p->pid;
	a = bpf_map_lookup_elem(&asleep, &tid);
	if (!a)
		return 0;
	uaddr = sleeping_futex(p, &op, &val, &timed);
	if (uaddr && uaddr == a->uaddr)
		partial_wait(p, uaddr, op, 0);
	if (!bpf_map_delete_elem(&asleep, &tid))
		__sync_fetch_and_add(&asleep_left, -1);
	return 0;
}

LS_FOLLOW_FORK_TP(futex_follow_fork)
