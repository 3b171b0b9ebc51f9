/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * offcpu.bpf.h - kernel-only helpers of the sources that split a wait into
 * on CPU, runnable and asleep (user.bpf.h's, mmaplock.bpf.c) the way
 * contention.bpf.c does. Include after vmlinux.h, the libbpf headers and
 * lockscope.h (struct ls_sched_mark).
 */
#ifndef __LOCKSCOPE_OFFCPU_BPF_H
#define __LOCKSCOPE_OFFCPU_BPF_H

/* Where a wait went, from the scheduler's own accounting of the waiter,
 * read while it runs at the wait's begin and end (as contention.bpf.c
 * does; no sched_switch program): se.sum_exec_runtime - se.exec_start is
 * constant while a task runs and drops by exactly its time off CPU (both in
 * one CPU's rq clock); sched_info.run_delay grows by its time runnable
 * (CONFIG_SCHED_INFO; without it runnable reads 0). A waiter that ended on
 * another CPU uses the run time the scheduler accounted instead (off by the
 * unaccounted slices at the ends, each under a tick). */
static __always_inline __u64 ls_run_delay(struct task_struct *task)
{
	if (bpf_core_field_exists(task->sched_info.run_delay))
		return task->sched_info.run_delay;
	return 0;
}

static __always_inline void ls_sched_mark(struct ls_sched_mark *m,
					  struct task_struct *task)
{
	m->offcpu_base = (__s64)(task->se.sum_exec_runtime - task->se.exec_start);
	m->sum_exec = task->se.sum_exec_runtime;
	m->run_delay = ls_run_delay(task);
	m->cpu = bpf_get_smp_processor_id();
}

/* Of a wait of `delta` ns begun at mark `m`: time off CPU and, of that,
 * runnable. */
static __always_inline void ls_sched_split(const struct ls_sched_mark *m,
					   struct task_struct *task, __u64 delta,
					   __u64 *offcpu, __u64 *runq)
{
	__u64 off, rq;

	if (m->cpu == bpf_get_smp_processor_id()) {
		off = (__u64)(m->offcpu_base -
			      (__s64)(task->se.sum_exec_runtime - task->se.exec_start));
	} else {
		__u64 ran = task->se.sum_exec_runtime - m->sum_exec;

		off = ran < delta ? delta - ran : 0;
	}
	if ((__s64)off < 0)
		off = 0;
	if (off > delta)
		off = delta;
	rq = ls_run_delay(task) - m->run_delay;
	if ((__s64)rq < 0)
		rq = 0;
	if (rq > off)
		rq = off;
	*offcpu = off;
	*runq = rq;
}

#endif /* __LOCKSCOPE_OFFCPU_BPF_H */
