// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * picknext.bpf.c - time spent in the CFS scheduler's pick_next_task_fair
 * (seed 001), per CPU and per task that called into the scheduler.
 *
 * fentry/fexit, or kprobe/kretprobe where fentry is unavailable; userspace
 * loads one pair. pick_next_task_fair runs with the run-queue lock held and
 * interrupts off, so one entry time per CPU suffices: no nesting, no
 * migration between entry and return.
 *
 * Invariants:
 * - The key is (CPU, current task): the task that entered schedule() (the
 *   previous task, or the idle task). Filters apply to that task.
 * - A return without an entry on the same CPU (attached mid-call) is
 *   counted in `lost`, never timed.
 * - Keys are updated only on their own CPU: no atomics.
 * - With `follow_forks` (`run`, `-p`), a process forked by a target is a
 *   target from its fork on (the fork program, attached first).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lockscope.h"
#include "window.bpf.h"
#include "target.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pick_start SEC(".maps");

LS_HASH(agg, struct ls_pick_key, struct ls_pick_val, 16384); /* resized by userspace before load */

LS_PERCPU_ARRAY(agg_zero, struct ls_pick_val, 1);

LS_LOST_MAP(LS_PLOST__COUNT);

static __always_inline int on_enter(void)
{
	__u32 zero = 0;
	__u64 *t;

	if (!current_is_target())
		return 0;
	t = bpf_map_lookup_elem(&pick_start, &zero);
	if (t)
		*t = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int on_return(void *picked)
{
	struct ls_pick_key key = {};
	struct ls_pick_val *val, *init;
	__u64 now = bpf_ktime_get_ns(), d, id;
	__u32 zero = 0;
	__u64 *t;

	t = bpf_map_lookup_elem(&pick_start, &zero);
	if (!t)
		return 0;
	if (!*t) {
		/* not traced, or entered before attaching */
		if (current_is_target())
			ls_count_lost(&lost, LS_PLOST_NO_ENTRY);
		return 0;
	}
	d = now - *t;
	*t = 0;
	id = bpf_get_current_pid_tgid();
	key.cpu = bpf_get_smp_processor_id();
	key.tid = (__u32)id;
	key.pid = id >> 32;
	val = bpf_map_lookup_elem(&agg, &key);
	if (!val) {
		init = ls_scratch(&agg_zero);
		if (!init)
			return 0;
		init->min_ns = ~0ULL;
		init->cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(init->comm, sizeof(init->comm));
		val = ls_insert(&agg, &key, init, &lost, LS_PLOST_MAP_FULL);
		if (!val)
			return 0;
	}
	LS_ADD_WAIT(val, d);
	/* NULL: nothing fair to run; older kernels return RETRY_TASK (-1) */
	if (!picked || (long)picked == -1)
		val->picked_none += 1;
	return 0;
}

SEC("fentry/pick_next_task_fair")
int BPF_PROG(pick_fentry)
{
	LS_CHECK_STOPPED();
	return on_enter();
}

SEC("fexit/pick_next_task_fair")
int BPF_PROG(pick_fexit, struct rq *rq, struct task_struct *prev, struct rq_flags *rf,
	     struct task_struct *ret)
{
	LS_CHECK_STOPPED();
	return on_return(ret);
}

SEC("kprobe/pick_next_task_fair")
int BPF_KPROBE(pick_kprobe)
{
	LS_CHECK_STOPPED();
	return on_enter();
}

SEC("kretprobe/pick_next_task_fair")
int BPF_KRETPROBE(pick_kretprobe, void *ret)
{
	LS_CHECK_STOPPED();
	return on_return(ret);
}

/* ---- following forks (`run`, `-p`): loaded only when asked ----------- */

/* Attached before the pick probes; tp_btf where the kernel has BTF, else
 * the classic tracepoint (userspace loads one). */
LS_FOLLOW_FORK_BTF(pick_follow_fork_btf)

LS_FOLLOW_FORK_TP(pick_follow_fork_tp)
