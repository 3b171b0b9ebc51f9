// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sched.bpf.c - run-queue latency: how long a runnable thread waited for a
 * CPU, from the time it was put on a run queue (by sched_wakeup,
 * sched_wakeup_new, or a preemption that left it runnable) to the
 * sched_switch that puts it on a CPU.
 *
 * Minimum kernel: 5.11 (task storage in tracing programs); needs
 * CONFIG_SCHED_INFO (sched_info.run_delay, /proc/PID/schedstat) and
 * CONFIG_FAIR_GROUP_SCHED (se.cfs_rq->rq, to read the run queue's clock).
 *
 * One program, on sched_switch only, and only for the task switched in:
 * the scheduler already timestamps every enqueue (wakeup, new task, or
 * preemption) in sched_info.last_queued and adds each wait to
 * sched_info.run_delay when the task arrives on a CPU or migrates. At the
 * tracepoint the arrival is not accounted yet, so
 *     run delay after this arrival = run_delay + (rq->clock - last_queued)
 * (the very expression sched_info_arrive() adds next, with the same clock),
 * and this wait is that value minus the one at the task's previous
 * switch-in, kept in its task storage. So the waits are the kernel's own
 * run delay, split by arrival, migrations included, and the wakeup
 * tracepoints need no program: half the cost of timestamping wakeups.
 *
 * Invariants:
 * - A task's first switch-in after attaching has no previous value: its
 *   wait is the part spent on the run queue it arrives from.
 * - The kernel sometimes does not run a tp_btf program for a switch-in the
 *   tracepoint reports (seen while other programs were attached and
 *   detached: futex.bpf.c). The wait of such an arrival then merges with
 *   the next seen one's: the total stays exact, the count is short. The
 *   scheduler's count of arrivals (sched_info.pcount, not yet raised for
 *   this one at the tracepoint) tells: arrivals since the previous seen
 *   switch-in beyond that one are counted `unseen` (LS_RQ_STAT_UNSEEN) and
 *   shown in the status.
 * - A wait began with a preemption (or yield) when the task's involuntary
 *   switch count changed since its previous switch-in; else with a wakeup.
 * - Filters run at the switch-in; untraced tasks cost the filter only.
 * - Aggregation is keyed by (thread, CPU): userspace merges CPUs for a
 *   per-thread view and threads for a per-CPU view. A key is updated only
 *   on its CPU, so the counters need no atomic operations. The aggregates
 *   live in an array: the task storage already read for the run delay
 *   caches the slot of the CPU the task last arrived on, so most switch-ins
 *   need no hash lookup (a thread arriving on another CPU than last time
 *   looks its slot up in `agg_index`, or takes the next free one).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lockscope.h"
#include "window.bpf.h"
#include "target.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile bool emit_events = false; /* stream mode */
const volatile __u32 nr_cpus = 1;        /* possible CPUs (slots interleave) */

LS_TASK_STORAGE(rq_task, struct ls_rq_task);

/* The aggregates, one slot per (thread, CPU), handed out in order. */
LS_ARRAY(agg, struct ls_rq_val, 16384); /* resized by userspace before load */

/* (thread, CPU) -> its slot in `agg`, for arrivals on another CPU. */
LS_HASH(agg_index, struct ls_rq_key, __u32, 16384); /* resized by userspace before load */

/* Slots of `agg` each CPU handed out: CPU c's k-th is k * nr_cpus + c.
 * Only sched_switch on that CPU, which cannot nest, counts: no atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} agg_used SEC(".maps");

LS_RINGBUF(events, 8 << 20); /* resized by userspace before load */

LS_LOST_MAP(LS_RQ_STAT__END);

struct ls_rq_event ls_rq_event_type = {};

/* The slot of (next, this CPU) in `agg`, created when missing; NULL when
 * `agg` is full. The task caches the slot of the CPU it last arrived on. */
static __always_inline struct ls_rq_val *slot_of(struct task_struct *next,
						 struct ls_rq_task *s, __u32 cpu)
{
	struct ls_rq_key key = {};
	struct ls_rq_val *v;
	__u32 zero = 0, idx, *p;

	if (s->slot && s->slot_cpu == cpu) {
		idx = s->slot - 1;
		return bpf_map_lookup_elem(&agg, &idx);
	}
	key.tid = next->pid;
	key.pid = next->tgid;
	key.cpu = cpu;
	p = bpf_map_lookup_elem(&agg_index, &key);
	if (p) {
		idx = *p;
		v = bpf_map_lookup_elem(&agg, &idx);
	} else {
		/* only this task, arriving on this CPU, creates this key */
		p = bpf_map_lookup_elem(&agg_used, &zero);
		if (!p)
			return NULL;
		idx = *p * nr_cpus + cpu;
		v = bpf_map_lookup_elem(&agg, &idx);
		if (!v) {
			ls_count_lost(&lost, LS_RQ_LOST_MAP_FULL);
			return NULL;
		}
		*p += 1;
		v->cgroup_id = BPF_CORE_READ(next, cgroups, dfl_cgrp, kn, id);
		/* all 16 bytes: the kernel pads comm with zeros, so the
		 * refresh in record() compares equal until a rename */
		BPF_CORE_READ_INTO(&v->comm, next, comm);
		BPF_CORE_READ_STR_INTO(&v->pcomm, next, group_leader, comm);
		v->min_ns = ~0ULL;
		v->key = key; /* last: userspace skips slots without a tid */
		/* when this fails (as big as `agg`, so nearly full) the slot is
		 * found through the task's cache only: an arrival back from
		 * another CPU takes a new slot of the same key (merged by
		 * userspace), nothing is lost */
		bpf_map_update_elem(&agg_index, &key, &idx, BPF_NOEXIST);
	}
	if (v) {
		s->slot = idx + 1;
		s->slot_cpu = cpu;
	}
	return v;
}

static __always_inline void record(struct task_struct *next, struct ls_rq_task *s,
				   __u64 wait, __u32 woken)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct ls_rq_val *v;

	v = slot_of(next, s, cpu);
	if (!v)
		goto emit;
	/* two loads: a thread that renamed itself (new threads do, after
	 * their first switch-ins) gets its new name */
	if (*(__u64 *)&next->comm[0] != *(__u64 *)&v->comm[0] ||
	    *(__u64 *)&next->comm[8] != *(__u64 *)&v->comm[8])
		BPF_CORE_READ_INTO(&v->comm, next, comm);
	v->woken += woken;
	LS_ADD_WAIT(v, wait);
emit:
	if (emit_events) {
		struct ls_rq_event *e = ls_reserve(&events, sizeof(*e), &lost, LS_RQ_LOST_RINGBUF);

		if (!e)
			return;
		e->end_ns = bpf_ktime_get_ns();
		e->begin_ns = e->end_ns - wait;
		e->cgroup_id = BPF_CORE_READ(next, cgroups, dfl_cgrp, kn, id);
		e->pid = next->tgid;
		e->tid = next->pid;
		e->cpu = cpu;
		e->woken = woken;
		BPF_CORE_READ_STR_INTO(&e->comm, next, comm);
		bpf_ringbuf_submit(e, 0);
	}
}

SEC("tp_btf/sched_switch")
int BPF_PROG(rq_switch_btf, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	LS_CHECK_STOPPED();
	struct ls_rq_task *s;
	__u64 queued, accounted, delay, clock, nivcsw, wait, pcount;
	__u32 woken;

	if (!next->pid || !task_is_target(next))
		return 0; /* the idle task, or not traced */
	accounted = next->sched_info.run_delay;
	delay = accounted;
	queued = next->sched_info.last_queued;
	if (queued) {
		clock = next->se.cfs_rq->rq->clock;
		if (clock > queued)
			delay += clock - queued;
	}
	nivcsw = next->nivcsw;
	pcount = next->sched_info.pcount;
	LS_TASK_SLOT(s, &rq_task, next, LS_RQ_LOST_STORAGE, 0);
	if (s->seen) {
		wait = delay - s->run_delay;
		woken = nivcsw == s->nivcsw;
		if (pcount > s->pcount + 1)
			ls_count_lost_n(&lost, LS_RQ_STAT_UNSEEN, pcount - s->pcount - 1);
	} else {
		wait = delay - accounted;
		woken = 1;
	}
	s->run_delay = delay;
	s->nivcsw = nivcsw;
	s->pcount = pcount;
	s->seen = 1;
	record(next, s, wait, woken);
	return 0;
}

/* Benchmark floor (backend tp_btf-floor): an empty program on the same
 * tracepoint, what any sched_switch tool pays before doing anything. */
SEC("tp_btf/sched_switch")
int BPF_PROG(rq_switch_empty)
{
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(rq_follow_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	LS_CHECK_STOPPED();
	return follow_fork(parent->tgid, child->tgid);
}
