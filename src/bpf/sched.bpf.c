// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sched.bpf.c - run-queue latency: how long a runnable thread waits for a
 * CPU, from the time it is put on a run queue (sched_wakeup,
 * sched_wakeup_new, or sched_switch switching it out still runnable: a
 * preemption) to the sched_switch that puts it on a CPU.
 *
 * Minimum kernel: 5.18 (sched_switch passes prev_state); task storage in
 * tracing programs 5.11. tp_btf only: the per-task state is keyed by the
 * woken task itself, and filters read the woken task's process and cgroup,
 * which the classic tracepoints do not pass (only a pid).
 *
 * Invariants:
 * - The enqueue time lives in the task's own storage: no hashing, nothing
 *   left behind by dead tasks. A wakeup always overwrites it (a task woken
 *   while still on its CPU keeps running; its next enqueue overwrites it
 *   again before it can be switched in).
 * - "Still runnable" is `preempt || prev_state == TASK_RUNNING`: the task
 *   stays on the run queue. This is what the kernel's own run_delay
 *   (/proc/PID/task/TID/schedstat, field 2) counts.
 * - Filters run where a wait opens (wakeup, preemption); a switch-in only
 *   looks up the task's storage, so untraced tasks cost one lookup.
 * - Aggregation is keyed by (thread, CPU): userspace merges CPUs for a
 *   per-thread view and threads for a per-CPU view. A key is updated only
 *   on its CPU, so the counters need no atomic operations.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lockscope.h"
#include "target.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile bool emit_events = false; /* stream mode */

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ls_rq_task);
} rq_task SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* resized by userspace before load */
	__type(key, struct ls_rq_key);
	__type(value, struct ls_rq_val);
} agg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ls_rq_val);
} agg_zero SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by userspace before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LS_RQ_LOST__COUNT);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

struct ls_rq_event ls_rq_event_type = {};

static __always_inline void count_lost(__u32 what)
{
	__u64 *v = bpf_map_lookup_elem(&lost, &what);

	if (v)
		*v += 1;
}

static __always_inline void enqueue(struct task_struct *p, __u64 now, __u32 woken)
{
	struct ls_rq_task *s;

	s = bpf_task_storage_get(&rq_task, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		count_lost(LS_RQ_LOST_STORAGE);
		return;
	}
	s->enqueued_ns = now;
	s->woken = woken;
}

static __always_inline void record(struct task_struct *next, __u64 begin, __u64 now,
				   __u32 woken)
{
	struct ls_rq_key key = {};
	struct ls_rq_val *v;
	__u64 delta = now - begin;
	__u32 zero = 0, slot;
	int err;

	key.tid = next->pid;
	key.pid = next->tgid;
	key.cpu = bpf_get_smp_processor_id();
	v = bpf_map_lookup_elem(&agg, &key);
	if (!v) {
		struct ls_rq_val *init = bpf_map_lookup_elem(&agg_zero, &zero);

		if (!init)
			return;
		init->cgroup_id = BPF_CORE_READ(next, cgroups, dfl_cgrp, kn, id);
		BPF_CORE_READ_STR_INTO(&init->comm, next, comm);
		BPF_CORE_READ_STR_INTO(&init->pcomm, next, group_leader, comm);
		init->min_ns = ~0ULL;
		err = bpf_map_update_elem(&agg, &key, init, BPF_NOEXIST);
		if (err && err != -17 /* EEXIST */) {
			count_lost(LS_RQ_LOST_MAP_FULL);
			goto emit;
		}
		v = bpf_map_lookup_elem(&agg, &key);
		if (!v)
			goto emit;
	}
	v->count += 1;
	v->total_ns += delta;
	v->woken += woken;
	if (delta < v->min_ns)
		v->min_ns = delta;
	if (delta > v->max_ns)
		v->max_ns = delta;
	slot = log2_slot(delta);
	barrier_var(slot);
	if (slot < LS_HIST_SLOTS)
		v->hist[slot] += 1;
emit:
	if (emit_events) {
		struct ls_rq_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

		if (!e) {
			count_lost(LS_RQ_LOST_RINGBUF);
			return;
		}
		e->begin_ns = begin;
		e->end_ns = now;
		e->cgroup_id = BPF_CORE_READ(next, cgroups, dfl_cgrp, kn, id);
		e->pid = key.pid;
		e->tid = key.tid;
		e->cpu = key.cpu;
		e->woken = woken;
		BPF_CORE_READ_STR_INTO(&e->comm, next, comm);
		bpf_ringbuf_submit(e, 0);
	}
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(rq_wakeup_btf, struct task_struct *p)
{
	if (task_is_target(p))
		enqueue(p, bpf_ktime_get_ns(), 1);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(rq_wakeup_new_btf, struct task_struct *p)
{
	if (task_is_target(p))
		enqueue(p, bpf_ktime_get_ns(), 1);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(rq_switch_btf, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	struct ls_rq_task *s;
	__u64 now = 0, begin;

	/* prev goes back on the run queue: a wait for a CPU begins */
	if ((preempt || prev_state == 0 /* TASK_RUNNING */) && prev->pid &&
	    task_is_target(prev)) {
		now = bpf_ktime_get_ns();
		enqueue(prev, now, 0);
	}
	if (!next->pid)
		return 0; /* the idle task */
	s = bpf_task_storage_get(&rq_task, next, 0, 0);
	if (!s || !s->enqueued_ns) {
		if (task_is_target(next))
			count_lost(LS_RQ_LOST_UNSEEN);
		return 0;
	}
	begin = s->enqueued_ns;
	s->enqueued_ns = 0;
	if (!now)
		now = bpf_ktime_get_ns();
	record(next, begin, now, s->woken);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(rq_follow_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	return follow_fork(parent->tgid, child->tgid);
}
