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
 *   sampled), taken at sys_exit, aggregated per (uaddr, tid, op, stack).
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
#define FUTEX_LOCK_PI 6
#define FUTEX_WAIT_BITSET 9
#define FUTEX_WAIT_REQUEUE_PI 11
#define FUTEX_LOCK_PI2 13
#define FUTEX_CMD_MASK 0x7f /* without PRIVATE (128) and CLOCK_REALTIME (256) */
#define LS_FOP_WAITV 0x100

#define ETIMEDOUT 110
#define EAGAIN 11
#define EINTR 4

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ls_fwait);
} fwait SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* resized by userspace before load */
	__type(key, struct ls_fagg_key);
	__type(value, struct ls_fagg_val);
} agg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ls_fagg_val);
} agg_zero SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by userspace before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LS_FSTAT__END);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

struct ls_fevent ls_fevent_type = {};

static __always_inline void count(__u32 what)
{
	__u64 *v = bpf_map_lookup_elem(&lost, &what);

	if (v)
		*v += 1;
}

#define count_lost count
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

/* Whether the current thread is inside a traced pthread lock call. */
static __always_inline bool covered(struct task_struct *task)
{
	struct ls_ucall *c = bpf_task_storage_get(&ulock_call, task, 0, 0);

	return c && c->lock && c->covers;
}

static __always_inline int on_enter(__u64 uaddr, __u32 op)
{
	struct task_struct *task;
	struct ls_fwait *w;

	if (!is_target())
		return 0;
	task = bpf_get_current_task_btf();
	if (covered(task)) {
		count(LS_FSTAT_COVERED);
		return 0;
	}
	w = bpf_task_storage_get(&fwait, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!w) {
		count(LS_FLOST_STORAGE);
		return 0;
	}
	if (w->uaddr)
		count(LS_FLOST_STALE);
	w->uaddr = uaddr;
	w->op = op;
	w->nvcsw = task->nvcsw;
	ls_sched_mark(&w->sched, task);
	w->begin_ns = bpf_ktime_get_ns();
	return 0;
}

static __always_inline struct ls_fagg_val *agg_entry(struct ls_fagg_key *key,
						     struct task_struct *task)
{
	struct ls_fagg_val *val, *init;
	__u32 zero = 0;
	int err;

	val = bpf_map_lookup_elem(&agg, key);
	if (val)
		return val;
	init = bpf_map_lookup_elem(&agg_zero, &zero);
	if (!init)
		return NULL;
	init->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(init->comm, sizeof(init->comm));
	BPF_CORE_READ_STR_INTO(&init->pcomm, task, group_leader, comm);
	init->min_ns = ~0ULL;
	err = bpf_map_update_elem(&agg, key, init, BPF_NOEXIST);
	if (err && err != -17 /* EEXIST */) {
		count(LS_FLOST_MAP_FULL);
		return NULL;
	}
	return bpf_map_lookup_elem(&agg, key);
}

static __always_inline void emit(__u64 begin, __u64 end, __u64 uaddr, __u32 op,
				 __s32 ret, __u32 flags, __u64 offcpu, __u64 runq)
{
	struct ls_fevent *e;
	__u64 id;

	if (!emit_events)
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(LS_FLOST_RINGBUF);
		return;
	}
	id = bpf_get_current_pid_tgid();
	e->begin_ns = begin;
	e->end_ns = end;
	e->uaddr = uaddr;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->op = op;
	e->ret = ret;
	e->flags = flags;
	e->pad = 0;
	e->offcpu_ns = offcpu;
	e->runq_ns = runq;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
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

static __always_inline int on_exit(void *ctx, long ret, bool waitv)
{
	struct task_struct *task;
	struct ls_fagg_key key = {};
	struct ls_fagg_val *val;
	struct ls_fwait *w, open;
	__u64 now, delta, id, uaddr, offcpu, runq;
	__u32 slot, op = 0;
	bool slept;

	task = bpf_get_current_task_btf();
	w = bpf_task_storage_get(&fwait, task, 0, 0);
	if (!w || !w->uaddr) {
		/* not opened: not a target, a non-waiting op, covered by a
		 * pthread call, or begun before attaching (partial) */
		if (!is_target() || covered(task))
			return 0;
		uaddr = saved_wait_uaddr(task, waitv, &op);
		if (!uaddr)
			return 0;
		id = bpf_get_current_pid_tgid();
		key.uaddr = uaddr;
		key.tid = (__u32)id;
		key.pid = id >> 32;
		val = agg_entry(&key, task);
		if (val)
			val->partial += 1;
		emit(0, bpf_ktime_get_ns(), uaddr, op, ret, LS_UEV_FUTEX_PARTIAL, 0, 0);
		return 0;
	}
	now = bpf_ktime_get_ns();
	open = *w;
	w->uaddr = 0;
	delta = now - open.begin_ns;
	slept = task->nvcsw != open.nvcsw;
	id = bpf_get_current_pid_tgid();
	key.uaddr = open.uaddr;
	key.tid = (__u32)id;
	key.pid = id >> 32;

	if (ret == -EAGAIN) {
		count(LS_FSTAT_VALUE_CHANGED);
		val = agg_entry(&key, task);
		if (val)
			val->value_changed += 1;
		return 0;
	}
	if (ret >= 0)
		count(LS_FSTAT_WOKEN);
	else if (ret == -ETIMEDOUT)
		count(LS_FSTAT_TIMED_OUT);
	else
		count(LS_FSTAT_INTERRUPTED);
	ls_sched_split(&open.sched, task, delta, &offcpu, &runq);

	val = agg_entry(&key, task);
	if (val) {
		val->count += 1;
		val->total_ns += delta;
		val->offcpu_ns += offcpu;
		val->runq_ns += runq;
		if (delta < val->min_ns)
			val->min_ns = delta;
		if (delta > val->max_ns)
			val->max_ns = delta;
		if (ret == -ETIMEDOUT)
			val->timed_out += 1;
		else if (ret < 0)
			val->interrupted += 1;
		if (slept)
			val->slept += 1;
		slot = log2_slot(delta);
		barrier_var(slot);
		if (slot < LS_HIST_SLOTS)
			val->hist[slot] += 1;
	}
	/* the user stack of the waiting syscall (its kernel stack is the
	 * syscall exit path: not taken) */
	if (stacks_on && stack_wanted(delta))
		add_stack(open.uaddr, open.op, -1, take_ustack(ctx), delta, false);
	emit(open.begin_ns, now, open.uaddr, open.op, ret, slept ? LS_UEV_SLEPT : 0,
	     offcpu, runq);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_futex")
int futex_enter(struct trace_event_raw_sys_enter *ctx)
{
	LS_CHECK_STOPPED();
	__u32 op = (__u32)ctx->args[1];

	if (!is_wait_op(op))
		return 0;
	return on_enter(ctx->args[0], op);
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
	return on_enter(uaddr, LS_FOP_WAITV);
}

SEC("tracepoint/syscalls/sys_exit_futex_waitv")
int futex_waitv_exit(struct trace_event_raw_sys_exit *ctx)
{
	LS_CHECK_STOPPED();
	return on_exit(ctx, ctx->ret, true);
}

SEC("tracepoint/sched/sched_process_fork")
int futex_follow_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	LS_CHECK_STOPPED();
	__u32 parent = bpf_get_current_pid_tgid() >> 32, child = ctx->child_pid;
	__u8 one = 1;

	if (!follow_forks || !bpf_map_lookup_elem(&target_pids, &parent))
		return 0;
	bpf_map_update_elem(&target_pids, &child, &one, BPF_ANY);
	return 0;
}
