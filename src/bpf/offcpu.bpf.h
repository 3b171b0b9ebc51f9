/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * offcpu.bpf.h - kernel-only helpers of the sources that split a wait into
 * on CPU, runnable and asleep (user.bpf.h's, mmaplock.bpf.c,
 * contention.bpf.c). Include after vmlinux.h, the libbpf headers and
 * lockscope.h (struct ls_sched_mark).
 */
#ifndef __LOCKSCOPE_OFFCPU_BPF_H
#define __LOCKSCOPE_OFFCPU_BPF_H

/* Where a wait went, from the scheduler's own accounting of the waiter,
 * read while it runs at the wait's begin and end (no sched_switch program).
 *
 * On CPU is the run time the scheduler gave the task meanwhile, not the
 * wait minus a difference of clocks: the rq task clock leaves out steal
 * (and IRQ) time, so over a 40 ms sleep it advances a few % less than
 * bpf_ktime_get_ns(), and "wait - time off CPU in the task clock" read that
 * gap as time on CPU. The run time at an instant is se.sum_exec_runtime
 * plus the slice not yet accounted, rq_clock_task(now) - se.exec_start.
 * rq->clock_task is as of the rq's last clock update; the time since that
 * update is bpf_ktime_get_ns() - rq->clock, but for the constant offset of
 * sched_clock to ktime (the same on every CPU where sched_clock is stable,
 * which the kernel tells at boot). The running task's rq is its
 * se.cfs_rq->rq (CONFIG_FAIR_GROUP_SCHED, set for every class; the per-CPU
 * `runqueues` has no address for BPF without CONFIG_KALLSYMS_ALL). So
 *
 *   run_clock = sum_exec_runtime - exec_start + clock_task - clock + ktime
 *
 * is the task's run time plus a constant, and on CPU is its difference
 * over the wait, exact to the steal/IRQ time inside the (sub-tick) stretch
 * since each end's last rq clock update. sched_info.run_delay grows by the
 * time runnable (CONFIG_SCHED_INFO; without it runnable reads 0). Without
 * a readable rq the steal/IRQ correction is left out (on CPU then includes
 * the steal and IRQ time of the wait). */

static __always_inline __u64 ls_run_delay(struct task_struct *task)
{
	if (bpf_core_field_exists(task->sched_info.run_delay))
		return task->sched_info.run_delay;
	return 0;
}

static __always_inline __s64 ls_run_clock(struct task_struct *task)
{
	__s64 run = (__s64)(task->se.sum_exec_runtime - task->se.exec_start) +
		    (__s64)bpf_ktime_get_ns();

	if (bpf_core_field_exists(task->se.cfs_rq) &&
	    bpf_core_field_exists(task->se.cfs_rq->rq)) {
		struct rq *rq = task->se.cfs_rq->rq;

		if (rq)
			run += (__s64)(rq->clock_task - rq->clock);
	}
	return run;
}

/* Of a wait of `delta` ns that began when the task's run clock read `run0`
 * and its run delay `delay0`: time off CPU and, of that, runnable. */
static __always_inline void ls_split(__s64 run0, __u64 delay0,
				     struct task_struct *task, __u64 delta,
				     __u64 *offcpu, __u64 *runq)
{
	__s64 ran = ls_run_clock(task) - run0;
	__u64 off, rq;

	if (ran < 0)
		ran = 0;
	off = (__u64)ran < delta ? delta - (__u64)ran : 0;
	rq = ls_run_delay(task) - delay0;
	if ((__s64)rq < 0)
		rq = 0;
	if (rq > off)
		rq = off;
	*offcpu = off;
	*runq = rq;
}

static __always_inline void ls_sched_mark(struct ls_sched_mark *m,
					  struct task_struct *task)
{
	m->run_clock = ls_run_clock(task);
	m->run_delay = ls_run_delay(task);
}

static __always_inline void ls_sched_split(const struct ls_sched_mark *m,
					   struct task_struct *task, __u64 delta,
					   __u64 *offcpu, __u64 *runq)
{
	ls_split(m->run_clock, m->run_delay, task, delta, offcpu, runq);
}

#endif /* __LOCKSCOPE_OFFCPU_BPF_H */
