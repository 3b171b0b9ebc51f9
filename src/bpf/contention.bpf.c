// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * contention.bpf.c - kernel lock contention from lock:contention_begin/end.
 *
 * Minimum kernel: 5.19 (the lock tracepoints); task storage in tracing
 * programs: 5.11. Two program sets with the same logic: tp_btf (preferred,
 * direct arguments) and classic tracepoints (fallback); userspace loads one.
 *
 * Invariants:
 * - An open wait lives on a small per-CPU stack while the waiter spins
 *   (spinlock, rwlock, a mutex's optimistic spin: preemption is disabled, so
 *   it cannot sleep or migrate; an interrupt, or an rwlock's own wait_lock,
 *   can nest another spin wait on top), else in task storage (a mutex that
 *   went to sleep, rwsem, rt-mutex, percpu-rwsem: the waiter may migrate; a
 *   task waits for one such lock at a time, so an open entry for another
 *   lock is stale and is replaced). contention_end has no flags, so it
 *   searches the per-CPU stack first. Most mutex waits only spin and never
 *   touch task storage, which is the dearest part of the path; while no
 *   task has a wait in task storage (`stored_waits`), nothing looks there.
 * - The kernel skips a tp_btf program that is already running on a CPU. An
 *   interrupt arriving while contention_end runs would then have its begin
 *   recorded but its end skipped, leaving a wait open that a later end of
 *   the same lock would close with a bogus duration. So both programs mark
 *   the CPU busy and a begin seen while busy is not opened (counted).
 * - begin, begin, end on one lock (a mutex spins then sleeps) is one wait:
 *   the first begin's time is kept, later begins only add mode bits.
 * - Whether the waiter slept is measured, not inferred from flags: the
 *   task's voluntary context switch count (nvcsw) changed during the wait.
 * - Where the wait went is measured from the scheduler's own accounting of
 *   the (running) task at begin and end: its run time (offcpu.bpf.h
 *   ls_run_clock) gives the time on CPU, sched_info.run_delay the time
 *   runnable (CONFIG_SCHED_INFO; without it runnable time reads 0). So
 *   off-CPU, runnable and asleep shares cost a few loads, no sched_switch
 *   program.
 * - Aggregation is keyed by (lock, tid, kind), plus the caller stack with
 *   LS_CALLER_EVERY. The aggregates live in an array; each CPU keeps a
 *   small direct-mapped cache of (key -> slot) so that an end, which runs
 *   while the waiter already holds the lock, usually needs no hash lookup
 *   (`agg_index` is looked up on a cache miss only). With LS_CALLER_FIRST (default) the stack is taken only
 *   when a key is created: a stack costs more than everything else here.
 *   cgroup, comm and lock class are also read only when a key is created.
 *   One thread updates a key at a time (the key holds its tid), so the
 *   counters need no atomic operations.
 * - Filtering happens at begin; at end only on the miss path, so that
 *   "end without begin" counts only targeted tasks.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lockscope.h"
#include "window.bpf.h"
#include "target.bpf.h"
#include "offcpu.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Settings, written by userspace between open and load (the target filter
 * and follow_forks: target.bpf.h). */
const volatile bool emit_events = false;   /* stream mode: ring buffer records */
const volatile __u32 caller_mode = LS_CALLER_FIRST; /* enum ls_caller_mode */
const volatile bool stacks_on = false;      /* --stacks: full kernel + user stacks */
const volatile __u64 stack_threshold_ns = 0; /* ... for waits at least this long */
const volatile __u32 stack_sample = 0;      /* ... and for 1 in N of the others */
/* Locks another source measures with function probes (kmutex.bpf.c): their
 * waits are not counted here too. contention_end carries no flags, so an
 * end without a begin is not counted as a loss while either is set. */
const volatile bool skip_mutex = false;  /* LCB_F_MUTEX */
const volatile bool skip_rwsem = false;  /* LCB_F_READ/WRITE alone */
const volatile bool skip_mmap = false;   /* the waiter's own mmap_lock */

LS_TASK_STORAGE(task_wait, struct ls_wait);
LS_PERCPU_ARRAY(cpu_state, struct ls_cpu_state, 1);

/* The aggregates, in slots taken by bumping `agg_next` (any CPU may take any
 * slot, so every CPU can fill the whole array); a key's slot
 * is in `agg_index` and, for the keys a CPU saw last, in its cpu_state
 * cache: most ends need no hash lookup. */
LS_ARRAY(agg, struct ls_agg_val, 16384); /* resized by userspace before load */

LS_HASH(agg_index, struct ls_agg_key, __u32, 16384); /* resized by userspace before load */

/* Slots of `agg` handed out so far: a key takes the next one (an atomic
 * add, so keys created at once on two CPUs get two slots); slots are never
 * given back while the object lives. No free list to fill at start-up. */
volatile __u32 agg_next = 0;
const volatile __u32 agg_slots = 16384; /* = agg's max_entries, set by userspace */

LS_STACK_TRACE(stacks, 16384, LS_CALLER_DEPTH);
LS_STACK_TRACE(stacks_spill, 1024, LS_CALLER_DEPTH); /* `stacks`' collisions */
LS_STACK_TRACE(full_stacks, 1, LS_STACK_DEPTH); /* resized by userspace (--stacks) */
LS_STACK_TRACE(spill_stacks, 1, LS_STACK_DEPTH); /* resized: full_stacks' collisions */
LS_HASH(stack_agg, struct ls_stack_key, struct ls_stack_val, 1); /* resized (--stacks) */
LS_RINGBUF(events, 8 << 20); /* resized by userspace before load */
LS_LOST_MAP(LS_LOST__COUNT);

/* Waits open in task storage, of all tasks together: raised before a
 * task's storage holds an open wait, lowered once it is cleared (a wait
 * whose end was lost keeps it raised: slower, never wrong). While it is 0
 * no task has one, so a mutex's spin begin, and an end not found on this
 * CPU's stack, need no task storage lookup. */
volatile __s64 stored_waits = 0;

/* Slab cache of an address (v6.13, commit 04b069ff0181 "mm/bpf: Add
 * bpf_get_kmem_cache() kfunc"); weak, so older kernels load without it. */
extern struct kmem_cache *bpf_get_kmem_cache(__u64 addr) __ksym __weak;

/* Makes the event type part of the object's BTF so the skeleton has it. */
struct ls_event ls_event_type = {};

/* A waiter that spins cannot move: spinlocks and rwlocks disable
 * preemption, and a mutex's optimistic spin (LCB_F_MUTEX | LCB_F_SPIN) runs
 * between preempt_disable() and preempt_enable() in __mutex_lock_common(),
 * which also covers the sleep phase's second begin. So spinning waits live
 * on the per-CPU stack; a mutex that goes to sleep moves its open wait to
 * task storage at that second begin. */
static __always_inline bool spins(__u32 flags)
{
	return flags & LS_LCB_F_SPIN;
}

/* The scheduler's view of the task, taken when a wait may sleep (a spinning
 * waiter cannot be preempted, so its wait is all on CPU). */
static __always_inline void sched_base(struct ls_wait *w, struct task_struct *task)
{
	w->nvcsw = task->nvcsw; /* trusted BTF pointer: a direct load */
	w->run_clock = ls_run_clock(task);
	w->run_delay = ls_run_delay(task);
	w->mode |= LS_MODE_MAY_SLEEP;
}

static __always_inline void open_wait(struct ls_wait *w, struct task_struct *task,
				      void *lock, __u32 flags, __u32 tid, __u64 now)
{
	w->lock = (__u64)lock;
	w->begin_ns = now;
	w->flags = (flags & LS_LCB_F_MUTEX) ? (flags & ~LS_LCB_F_SPIN) : flags;
	w->mode = (flags & LS_LCB_F_SPIN) ? LS_MODE_SPUN : 0;
	w->tid = tid;
	if (!(flags & LS_LCB_F_SPIN))
		sched_base(w, task);
}

static __always_inline void begin_spin(struct ls_cpu_state *cpu,
				       struct task_struct *task, void *lock,
				       __u32 flags, __u32 tid, __u64 now)
{
	__u32 d = cpu->depth;
	struct ls_wait *w;

	if ((flags & LS_LCB_F_MUTEX) && stored_waits) {
		/* a waiter woken in __mutex_lock_common()'s sleep loop spins
		 * again (begin MUTEX|SPIN) while its wait is open in task
		 * storage: that is still the same wait */
		w = bpf_task_storage_get(&task_wait, task, 0, 0);
		if (w && w->lock == (__u64)lock) {
			w->mode |= LS_MODE_SPUN;
			return;
		}
	}

	if (d >= LS_CPU_NEST) {
		/* deeper than any real nesting: ends were lost; start over */
		ls_count_lost(&lost, LS_LOST_NESTED);
		cpu->depth = 0;
		return;
	}
	if (d > 0) {
		w = &cpu->slot[(d - 1) & (LS_CPU_NEST - 1)];
		if (w->lock == (__u64)lock && w->tid == tid)
			return; /* begin, begin, end: keep the first */
	}
	w = &cpu->slot[d & (LS_CPU_NEST - 1)];
	open_wait(w, task, lock, flags, tid, now);
	cpu->depth = d + 1;
}

static __always_inline void begin_sleep(struct ls_cpu_state *cpu,
					struct task_struct *task, void *lock,
					__u32 flags, __u32 tid, __u64 now)
{
	struct ls_wait *w, *top = 0;
	__u32 d = cpu->depth;

	/* the spin phase of this mutex, open on top of this CPU's stack? */
	if (d > 0 && d <= LS_CPU_NEST) {
		top = &cpu->slot[(d - 1) & (LS_CPU_NEST - 1)];
		if (top->lock != (__u64)lock || top->tid != tid)
			top = 0;
	}
	LS_TASK_SLOT(w, &task_wait, task, LS_LOST_STORAGE);
	if (top) {
		/* begin (spin), begin (sleep), end: one wait from the first
		 * begin; it may now migrate, so it moves to task storage */
		if (w->lock)
			ls_count_lost(&lost, LS_LOST_STALE);
		else
			__sync_fetch_and_add(&stored_waits, 1);
		*w = *top;
		top->lock = 0;
		cpu->depth = d - 1;
		/* still on the CPU it spun on: the spin was all on CPU */
		sched_base(w, task);
		return;
	}
	if (w->lock == (__u64)lock)
		return; /* begin, begin: keep the first */
	if (w->lock)
		ls_count_lost(&lost, LS_LOST_STALE);
	else
		__sync_fetch_and_add(&stored_waits, 1);
	open_wait(w, task, lock, flags, tid, now);
}

/* The waiter's own mmap_lock: mmap-lock measures those waits (with their
 * holds) when it runs, so this source leaves them out (one wait, one row).
 * Another process's mmap_lock (a /proc or ptrace read) stays here. */
static __always_inline bool own_mmap_lock(void *lock)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct mm_struct *mm = task->mm;

	return mm && (__u64)lock == (__u64)&mm->mmap_lock;
}

/* Whether a filter may reject the current task (settings are constants:
 * the verifier drops the branch not taken). */
static __always_inline bool filtered(void)
{
	return filter_pid || filter_tid || filter_comm || filter_cgroup;
}

static __always_inline int on_begin(void *lock, __u32 flags)
{
	/* The clock first: bpf_ktime_get_ns() reads the TSC ordered (an lfence
	 * that waits for every earlier load), so read before this program's
	 * own loads it waits only for the kernel's; read after them it also
	 * waits for them (measured: ~30 ns more a run). Unfiltered, every
	 * begin that gets this far is timed anyway. */
	__u64 now = filtered() ? 0 : bpf_ktime_get_ns();
	__u64 id = bpf_get_current_pid_tgid();
	struct ls_cpu_state *cpu;
	__u32 zero = 0;

	cpu = bpf_map_lookup_elem(&cpu_state, &zero);
	if (!cpu)
		return 0;
	if (cpu->busy) {
		if (id_is_target(id))
			ls_count_lost(&lost, LS_LOST_REENTERED);
		return 0;
	}
	if (!id_is_target(id))
		return 0;
	if (skip_mutex && (flags & LS_LCB_F_MUTEX))
		return 0;
	if ((skip_rwsem || skip_mmap) && (flags & (LS_LCB_F_READ | LS_LCB_F_WRITE)) &&
	    !(flags & (LS_LCB_F_SPIN | LS_LCB_F_RT | LS_LCB_F_PERCPU | LS_LCB_F_MUTEX)) &&
	    (skip_rwsem || own_mmap_lock(lock)))
		return 0;
	cpu->busy = 1;
	if (filtered())
		now = bpf_ktime_get_ns();
	if (spins(flags))
		begin_spin(cpu, bpf_get_current_task_btf(), lock, flags, (__u32)id, now);
	else
		begin_sleep(cpu, bpf_get_current_task_btf(), lock, flags, (__u32)id, now);
	cpu->busy = 0;
	return 0;
}

/* Finds and closes the open wait for `lock`; false when none is open. */
static __always_inline bool close_wait(struct ls_cpu_state *cpu,
				       struct task_struct *task, __u64 lock,
				       __u32 tid, struct ls_wait *out)
{
	struct ls_wait *w;
	__u32 d = cpu->depth;

#pragma unroll
	for (int i = LS_CPU_NEST - 1; i >= 0; i--) {
		if (i >= d)
			continue;
		w = &cpu->slot[i];
		if (w->lock == lock && w->tid == tid) {
			*out = *w;
			w->lock = 0;
			if (d - 1 > i)
				/* waits opened above this one never ended */
				ls_count_lost(&lost, LS_LOST_STALE);
			cpu->depth = i;
			return true;
		}
	}
	if (!stored_waits)
		return false;
	w = bpf_task_storage_get(&task_wait, task, 0, 0);
	if (!w || w->lock != lock)
		return false;
	*out = *w;
	w->lock = 0;
	__sync_fetch_and_add(&stored_waits, -1);
	return true;
}

static __always_inline __u32 lock_class_of(struct task_struct *task, __u64 lock,
					    __u32 flags)
{
	struct mm_struct *mm;

	/* mmap_lock is an rwsem: no spin, no rt, no percpu flags */
	if (flags & (LS_LCB_F_SPIN | LS_LCB_F_RT | LS_LCB_F_PERCPU | LS_LCB_F_MUTEX))
		return LS_CLASS_NONE;
	mm = BPF_CORE_READ(task, mm);
	if (mm && lock == (__u64)&mm->mmap_lock)
		return LS_CLASS_MMAP_LOCK;
	return LS_CLASS_NONE;
}

/* --stacks: this wait's full kernel and user stacks, aggregated. Only for
 * waits over the threshold or sampled, so the always-on path stays cheap. */
static __always_inline void record_stacks(void *ctx, struct ls_cpu_state *cpu,
					  struct ls_wait *open, __u64 id,
					  __u64 delta)
{
	struct ls_stack_key sk = {};
	struct ls_stack_val *sv, init = {};

	if (delta < stack_threshold_ns) {
		if (!stack_sample)
			return;
		cpu->sample_ctr += 1;
		if (cpu->sample_ctr % stack_sample)
			return;
	}
	sk.lock = open->lock;
	sk.pid = id >> 32;
	sk.tid = (__u32)id;
	sk.flags = open->flags;
	sk.kstack_id = ls_stackid(ctx, &full_stacks, &spill_stacks, 0);
	sk.ustack_id = ls_stackid(ctx, &full_stacks, &spill_stacks, BPF_F_USER_STACK);
	if (sk.kstack_id < 0 && sk.ustack_id < 0) {
		ls_count_lost(&lost, LS_LOST_STACK);
		return;
	}
	sv = ls_lookup_or_init(&stack_agg, &sk, &init, &lost, LS_LOST_STACK_MAP_FULL);
	if (!sv)
		return;
	sv->count += 1;
	sv->total_ns += delta;
	if (delta > sv->max_ns)
		sv->max_ns = delta;
}

/* The aggregate of this wait's key, created (with what is read only then:
 * cgroup, names, lock class, the caller with LS_CALLER_FIRST) when
 * missing; NULL when `agg` is full. One thread creates its keys, and it
 * runs on one CPU at a time, so a key cannot be created twice at once. */
static __always_inline struct ls_agg_val *agg_slot(void *ctx, struct ls_cpu_state *cpu,
						   struct task_struct *task,
						   struct ls_wait *open, __u64 id,
						   __s32 stack_id)
{
	struct ls_agg_key key = {};
	struct ls_agg_slot *c;
	struct ls_agg_val *val;
	__u32 h, idx, *p;

	h = ((__u32)(open->lock >> 4) ^ (__u32)id ^ (open->flags << 2)) & (LS_AGG_CACHE - 1);
	c = &cpu->cache[h];
	if (c->idx && c->lock == open->lock && c->id == id && c->flags == open->flags &&
	    c->stack_id == stack_id) {
		idx = c->idx - 1;
		return bpf_map_lookup_elem(&agg, &idx);
	}
	key.lock = open->lock;
	key.stack_id = stack_id;
	key.tid = (__u32)id;
	key.pid = id >> 32;
	key.flags = open->flags;
	p = bpf_map_lookup_elem(&agg_index, &key);
	if (p) {
		idx = *p;
		val = bpf_map_lookup_elem(&agg, &idx);
	} else {
		idx = __sync_fetch_and_add(&agg_next, 1);
		if (idx >= agg_slots) {
			ls_count_lost(&lost, LS_LOST_MAP_FULL);
			return NULL;
		}
		val = bpf_map_lookup_elem(&agg, &idx);
		if (!val) {
			ls_count_lost(&lost, LS_LOST_MAP_FULL);
			return NULL;
		}
		val->cgroup_id = bpf_get_current_cgroup_id();
		val->lock_class = lock_class_of(task, open->lock, open->flags);
		bpf_get_current_comm(val->comm, sizeof(val->comm));
		BPF_CORE_READ_STR_INTO(&val->pcomm, task, group_leader, comm);
		val->slab[0] = 0;
		if (bpf_ksym_exists(bpf_get_kmem_cache)) {
			struct kmem_cache *s = bpf_get_kmem_cache(open->lock);

			if (s)
				bpf_probe_read_kernel_str(val->slab, sizeof(val->slab),
							  BPF_CORE_READ(s, name));
		}
		val->min_ns = ~0ULL;
		val->stack_id = stack_id;
		if (caller_mode == LS_CALLER_FIRST) {
			val->stack_id = ls_stackid(ctx, &stacks, &stacks_spill, 0);
			if (val->stack_id < 0)
				ls_count_lost(&lost, LS_LOST_STACK);
		}
		/* userspace reads the slots `agg_index` names: filled first */
		if (bpf_map_update_elem(&agg_index, &key, &idx, BPF_NOEXIST)) {
			ls_count_lost(&lost, LS_LOST_MAP_FULL);
			return NULL;
		}
	}
	if (val) {
		c->lock = open->lock;
		c->id = id;
		c->flags = open->flags;
		c->stack_id = stack_id;
		c->idx = idx + 1;
	}
	return val;
}

static __always_inline int on_end(void *ctx, void *lock, int ret)
{
	/* the clock first, as in on_begin; an end always needs it when its
	 * wait is open, and most ends have one */
	__u64 now = bpf_ktime_get_ns();
	struct task_struct *task = bpf_get_current_task_btf();
	struct ls_cpu_state *cpu;
	struct ls_agg_val *val;
	struct ls_wait open;
	__u64 delta, id, offcpu, runq;
	__s32 stack_id = -1;
	__u32 zero = 0;

	cpu = bpf_map_lookup_elem(&cpu_state, &zero);
	if (!cpu || cpu->busy)
		return 0; /* no wait can have been opened in this context */
	cpu->busy = 1;
	id = bpf_get_current_pid_tgid();
	if (!close_wait(cpu, task, (__u64)lock, (__u32)id, &open)) {
		if (!skip_mutex && !skip_rwsem && !skip_mmap && id_is_target(id))
			ls_count_lost(&lost, LS_LOST_END_NO_BEGIN);
		goto out;
	}

	delta = now - open.begin_ns;
	offcpu = 0;
	runq = 0;
	if (!(open.mode & LS_MODE_MAY_SLEEP))
		goto split_done; /* spun with preemption off: all on CPU */
	if (task->nvcsw != open.nvcsw)
		open.mode |= LS_MODE_SLEPT;
	ls_split(open.run_clock, open.run_delay, task, delta, &offcpu, &runq);
split_done:

	if (caller_mode == LS_CALLER_EVERY) {
		stack_id = ls_stackid(ctx, &stacks, &stacks_spill, 0);
		if (stack_id < 0)
			ls_count_lost(&lost, LS_LOST_STACK);
	}

	if (stacks_on)
		record_stacks(ctx, cpu, &open, id, delta);
	val = agg_slot(ctx, cpu, task, &open, id, stack_id);
	if (!val)
		goto emit;
	stack_id = val->stack_id;
	val->count += 1;
	val->total_ns += delta;
	val->offcpu_ns += offcpu;
	val->runq_ns += runq;
	if (delta < val->min_ns)
		val->min_ns = delta;
	if (delta > val->max_ns)
		val->max_ns = delta;
	if (ret)
		val->aborted += 1;
	if (open.mode & LS_MODE_SPUN)
		val->spun += 1;
	if (open.mode & LS_MODE_SLEPT)
		val->slept += 1;
	ls_hist_add(val->hist, delta);

emit:
	if (emit_events) {
		struct ls_event *e = ls_reserve(&events, sizeof(*e), &lost, LS_LOST_RINGBUF);

		if (!e)
			goto out;
		e->begin_ns = open.begin_ns;
		e->end_ns = now;
		e->lock = open.lock;
		e->cgroup_id = bpf_get_current_cgroup_id();
		e->offcpu_ns = offcpu;
		e->runq_ns = runq;
		e->pid = id >> 32;
		e->tid = (__u32)id;
		e->flags = open.flags;
		e->mode = open.mode;
		e->ret = ret;
		e->stack_id = stack_id;
		e->lock_class = lock_class_of(task, open.lock, open.flags);
		e->pad = 0;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		BPF_CORE_READ_STR_INTO(&e->pcomm, task, group_leader, comm);
		bpf_ringbuf_submit(e, 0);
	}
out:
	cpu->busy = 0;
	return 0;
}

/* ---- tp_btf: preferred ---------------------------------------------- */

SEC("tp_btf/contention_begin")
int BPF_PROG(contention_begin_btf, void *lock, unsigned int flags)
{
	LS_CHECK_STOPPED();
	return on_begin(lock, flags);
}

SEC("tp_btf/contention_end")
int BPF_PROG(contention_end_btf, void *lock, int ret)
{
	LS_CHECK_STOPPED();
	return on_end(ctx, lock, ret);
}

LS_FOLLOW_FORK_BTF(follow_fork_btf)

/* Benchmark floor (backend tp_btf-floor): empty programs on the same
 * tracepoints, the cost of any tool that attaches there (dispatch plus the
 * kernel's stats bookkeeping); scripts/bench.py --floor runs them beside the
 * real ones and reports lockscope's cost above them. */
SEC("tp_btf/contention_begin")
int BPF_PROG(contention_begin_empty)
{
	return 0;
}

SEC("tp_btf/contention_end")
int BPF_PROG(contention_end_empty)
{
	return 0;
}

/* The timing floor (`--backend tp_btf-clock`, benchmarks only): what any
 * tool that times waits pays at least, a clock read at begin and at end
 * and one add, without keys, filters or nesting (a per-CPU slot: nested
 * waits overwrite it, so the sum is not a measurement of anything).
 * Measured against the empty pair it shows how much of lockscope's cost is
 * the two clock reads themselves. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} clock_floor SEC(".maps");

SEC("tp_btf/contention_begin")
int BPF_PROG(contention_begin_clock)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0;
	__u64 *t = bpf_map_lookup_elem(&clock_floor, &zero);

	if (t)
		*t = now;
	return 0;
}

SEC("tp_btf/contention_end")
int BPF_PROG(contention_end_clock)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0, one = 1;
	__u64 *t = bpf_map_lookup_elem(&clock_floor, &zero);
	__u64 *sum = bpf_map_lookup_elem(&clock_floor, &one);

	if (t && sum)
		*sum += now - *t;
	return 0;
}

/* ---- classic tracepoints: fallback ----------------------------------- */

SEC("tracepoint/lock/contention_begin")
int contention_begin_tp(struct trace_event_raw_contention_begin *ctx)
{
	LS_CHECK_STOPPED();
	return on_begin((void *)ctx->lock_addr, ctx->flags);
}

SEC("tracepoint/lock/contention_end")
int contention_end_tp(struct trace_event_raw_contention_end *ctx)
{
	LS_CHECK_STOPPED();
	return on_end(ctx, (void *)ctx->lock_addr, ctx->ret);
}

LS_FOLLOW_FORK_TP(follow_fork_tp)
