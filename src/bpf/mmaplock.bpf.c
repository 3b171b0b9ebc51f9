// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * mmaplock.bpf.c - mmap_lock waits and holds from the kernel's mmap_lock
 * tracepoints: mmap_lock_start_locking (wait begins), _acquire_returned
 * (wait ends; `success` false for a failed trylock or an interrupted
 * killable wait) and _released (hold ends).
 *
 * Minimum kernel: 5.12 (the tracepoints); task storage in tracing programs
 * 5.11. Two program sets with the same logic: tp_btf (preferred) and the
 * classic tracepoints (fallback); userspace loads one.
 *
 * Invariants:
 * - Everything happens in the task that locks: an operation opens at
 *   start_locking in a slot of that task's storage, becomes a hold at
 *   acquire_returned and closes at released. A task may have a few
 *   operations open at once (it holds its own mm and takes another one's
 *   in fork or remote access; a read trylock may nest in a read hold), so
 *   slots are matched by mm and mode, the latest acquisition first.
 * - A task never waits for an mm it already waits for, nor asks for the
 *   write lock of an mm it holds (that deadlocks): such an open slot is
 *   stale (an end we missed) and is replaced, counted.
 * - mmap_write_downgrade() reports acquire_returned(read) with no
 *   start_locking while the write lock is held: the write hold ends there
 *   and a read hold begins, counted as a read acquisition that waited 0.
 * - An operation whose start or acquisition was not seen (tracing began
 *   mid-wait or mid-hold) is counted as partial and never timed wrongly:
 *   its hold is timed only if its acquisition was seen.
 * - An operation is aggregated once, when its hold ends (release or
 *   downgrade): wait and hold together, one map update. A failed one when
 *   it fails. One still waiting or held when tracing stops is not counted.
 * - Contended or not: every acquisition whose start was seen counts in
 *   `acquired` and has its hold timed; only the contended ones
 *   (LS_MM_CONTENDED: blocked or spun) count in `count` and the wait
 *   statistics. An uncontended start_locking -> acquire_returned is the
 *   fast path's and these programs' own cost, never a wait. Told by:
 *   - blocked (exact): lock:contention_begin for the rwsem of an operation
 *     this task has open and not yet acquired. Between start_locking and
 *     acquire_returned the task does nothing but down_read/down_write of
 *     that rwsem, and the rwsem slow paths trace contention_begin only
 *     when they queue to sleep (a reader's lock stealing in the slow path
 *     does not wait and is not traced).
 *   - spun (a writer's optimistic spinning on a running owner acquires
 *     without contention_begin): a writer whose start_locking finds
 *     mmap_lock.count non-zero (held or queued for). Races, both within
 *     the few hundred ns from this program's read to down_write's trylock:
 *     a lock freed in between makes a fast acquisition count as contended
 *     (its wait is those ns); a lock taken in between and then won by
 *     spinning is missed (a blocked one is caught by contention_begin).
 *   - without lock:contention_begin (kernels before 5.19, not loaded):
 *     readers are contended when count had the writer or waiter bits.
 *   Failed attempts stay `failed` (never acquisitions).
 * - Aggregation is keyed by (lock, tid, mode), plus the caller stack with
 *   LS_CALLER_EVERY; one thread updates a key at a time (no atomics).
 *   cgroup, memory cgroup, owner and names are read when a key is created.
 *   The caller is taken at the acquisition (once per task, mm and mode
 *   with LS_CALLER_FIRST), at the release only when no acquisition was
 *   seen.
 * - Stacks (stacks.bpf.h): kernel and user, at the acquisition; a wait's
 *   when it is long enough or sampled, and with --hold-stacks kept in the
 *   slot so that the hold that follows is added to them at its end (a
 *   downgrade's read hold keeps the write acquisition's stacks).
 * - The lock is named by its mm's owner (mm->owner, CONFIG_MEMCG), not by
 *   the task that locks it: khugepaged or a debugger lock others' mms.
 * - The memory cgroup is the one the tracepoints themselves report (a path
 *   before Linux 6.14, an id since "mm: mmap_lock: optimize mmap_lock
 *   tracepoints"): the memcg of mm->owner. It is read here from the owner's
 *   css_set, the same on every kernel, so both backends give the same id.
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

const volatile bool emit_events = false;            /* stream mode */
const volatile __u32 caller_mode = LS_CALLER_FIRST; /* enum ls_caller_mode */
/* mm_contention_* is loaded: blocked waits are told by contention_begin */
const volatile bool have_contention_tp = false;

LS_TASK_STORAGE(task_ops, struct ls_mm_task);

LS_HASH(agg, struct ls_mm_key, struct ls_mm_val, 16384); /* resized by userspace before load */

/* A zeroed value to create `agg` entries from (too big for the stack). */
LS_PERCPU_ARRAY(agg_zero, struct ls_mm_val, 1);

LS_STACK_TRACE(stacks, 16384, LS_CALLER_DEPTH);
LS_STACK_TRACE(stacks_spill, 1024, LS_CALLER_DEPTH); /* `stacks`' collisions */

LS_RINGBUF(events, 8 << 20); /* resized by userspace before load */

LS_LOST_MAP(LS_MM_LOST__COUNT);

/* Makes the event type part of the object's BTF so the skeleton has it. */
struct ls_mm_event ls_mm_event_type = {};

/* Linux 5.12 to 6.13 pass the memcg path as the second tracepoint argument
 * ("mm: mmap_lock: optimize mmap_lock tracepoints" removed it); their
 * classic event has this field instead of memcg_id. */
struct trace_event_raw_mmap_lock___path {
	__u32 __data_loc_memcg_path;
} __attribute__((preserve_access_index));

static __always_inline bool args_have_memcg_path(void)
{
	return bpf_core_field_exists(struct trace_event_raw_mmap_lock___path,
				     __data_loc_memcg_path);
}

#define LS_STACK_LOST_FAILED LS_MM_LOST_STACK
#define LS_STACK_LOST_MAP_FULL LS_MM_LOST_STACK_MAP_FULL
#include "stacks.bpf.h"


static __always_inline __u64 lock_of(struct mm_struct *mm)
{
	return (__u64)mm + bpf_core_field_offset(struct mm_struct, mmap_lock);
}

/* cgroup id of the memory cgroup of the mm's owner, 0 if unknown. */
static __always_inline __u64 memcg_of(struct mm_struct *mm)
{
	struct cgroup_subsys_state *css = NULL;
	struct task_struct *owner;
	struct css_set *cset;
	int id;

	if (!bpf_core_field_exists(mm->owner) ||
	    !bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return 0;
	id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	owner = BPF_CORE_READ(mm, owner);
	if (!owner)
		return 0;
	cset = BPF_CORE_READ(owner, cgroups);
	if (!cset || id < 0 || id >= 16)
		return 0;
	if (bpf_core_read(&css, sizeof(css), &cset->subsys[id]) || !css)
		return 0;
	return BPF_CORE_READ(css, cgroup, kn, id);
}

#define LS_PF_KTHREAD 0x00200000 /* include/linux/sched.h */

/* --stacks / --hold-stacks at a successful acquisition that waited `wait`:
 * the wait's stacks when wanted; with --hold-stacks, kept in the slot for
 * the hold. A kernel thread (khugepaged) has no user stack to take. */
static __always_inline void acquisition_stacks(void *ctx, struct mm_struct *mm,
					       struct ls_mm_op *op, __u64 wait)
{
	struct task_struct *task = bpf_get_current_task_btf();
	bool user = !(task->flags & LS_PF_KTHREAD);
	__s32 k = -1, u = -1;

	if (hold_stacks_on) {
		k = take_kstack(ctx);
		if (user)
			u = take_ustack(ctx);
	}
	/* wait stacks weigh waits: contended acquisitions only */
	if (stacks_on && (op->flags & LS_MM_CONTENDED) && stack_wanted(wait)) {
		if (!hold_stacks_on) {
			k = take_kstack(ctx);
			if (user)
				u = take_ustack(ctx);
		}
		add_stack(lock_of(mm), op->flags & LS_MM_WRITE, k, u, wait, false);
	}
	op->kstack_id = k;
	op->ustack_id = u;
}

/* --hold-stacks: a hold of `hold` ends; its acquisition's stacks get it. */
static __always_inline void hold_stacks(struct mm_struct *mm, struct ls_mm_op *op,
					__u64 hold)
{
	if (hold_stacks_on && (op->kstack_id >= 0 || op->ustack_id >= 0) &&
	    stack_wanted(hold))
		add_stack(lock_of(mm), op->flags & LS_MM_WRITE, op->kstack_id,
			  op->ustack_id, hold, true);
}

static __always_inline __s32 take_stack(void *ctx)
{
	__s32 id = ls_stackid(ctx, &stacks, &stacks_spill, 0);

	if (id < 0)
		ls_count_lost(&lost, LS_MM_LOST_STACK);
	return id;
}

/* The aggregation entry of (mm, this thread, mode, stack), created with
 * everything that is read once per key. NULL when the map is full. */
static __always_inline struct ls_mm_val *entry(void *ctx, struct mm_struct *mm,
					       __u32 flags, __s32 stack_id)
{
	struct ls_mm_key key = {};
	struct ls_mm_val *val, *init;
	struct task_struct *owner;
	__u64 id = bpf_get_current_pid_tgid();

	key.lock = lock_of(mm);
	key.stack_id = caller_mode == LS_CALLER_EVERY ? stack_id : -1;
	key.tid = (__u32)id;
	key.pid = id >> 32;
	key.write = (flags & LS_MM_WRITE) ? 1 : 0;
	val = bpf_map_lookup_elem(&agg, &key);
	if (val) {
		/* two loads: a thread that renamed itself (new threads do, after
		 * their first mmap_lock operations) gets its new name */
		struct task_struct *task = bpf_get_current_task_btf();

		if (*(__u64 *)&task->comm[0] != *(__u64 *)&val->comm[0] ||
		    *(__u64 *)&task->comm[8] != *(__u64 *)&val->comm[8])
			bpf_get_current_comm(val->comm, sizeof(val->comm));
		return val;
	}
	init = ls_scratch(&agg_zero);
	if (!init)
		return NULL;
	init->cgroup_id = bpf_get_current_cgroup_id();
	init->memcg_id = memcg_of(mm);
	init->wait_min = ~0ULL;
	init->hold_min = ~0ULL;
	bpf_get_current_comm(init->comm, sizeof(init->comm));
	owner = bpf_core_field_exists(mm->owner) ? BPF_CORE_READ(mm, owner) : NULL;
	if (owner) {
		init->owner_pid = BPF_CORE_READ(owner, tgid);
		BPF_CORE_READ_STR_INTO(&init->ocomm, owner, group_leader, comm);
	} else {
		init->owner_pid = 0;
		init->ocomm[0] = 0;
	}
	init->stack_id = stack_id;
	return ls_insert(&agg, &key, init, &lost, LS_MM_LOST_MAP_FULL);
}

static __always_inline void emit(struct mm_struct *mm, struct ls_mm_op *op,
				 __u64 released_ns, __u32 flags, __s32 stack_id)
{
	struct task_struct *owner;
	struct ls_mm_event *e;
	__u64 id;

	LS_RESERVE_EVENT(e, LS_MM_LOST_RINGBUF);
	id = bpf_get_current_pid_tgid();
	e->begin_ns = op->begin_ns;
	e->acquired_ns = op->acquired_ns;
	e->released_ns = released_ns;
	e->lock = lock_of(mm);
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->memcg_id = memcg_of(mm);
	e->offcpu_ns = op->offcpu_ns;
	e->runq_ns = op->runq_ns;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	owner = bpf_core_field_exists(mm->owner) ? BPF_CORE_READ(mm, owner) : NULL;
	e->owner_pid = owner ? BPF_CORE_READ(owner, tgid) : 0;
	e->flags = flags;
	e->stack_id = stack_id;
	e->pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (owner)
		BPF_CORE_READ_STR_INTO(&e->ocomm, owner, group_leader, comm);
	else
		e->ocomm[0] = 0;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void record_wait(struct ls_mm_val *v, struct ls_mm_op *op)
{
	__u64 ns = op->acquired_ns - op->begin_ns;

	ls_add_span(&v->count, &v->wait_total, &v->wait_min, &v->wait_max, v->wait_hist, ns);
	v->offcpu_ns += op->offcpu_ns;
	v->runq_ns += op->runq_ns;
}

/* An acquisition ends its hold: counted in `acquired`, and a wait when it
 * was contended; never timed when its start was not seen. */
static __always_inline void record_acquisition(struct ls_mm_val *v, struct ls_mm_op *op)
{
	if (op->flags & LS_MM_PARTIAL) {
		v->partial += 1;
		return;
	}
	v->acquired += 1;
	if (op->flags & LS_MM_CONTENDED)
		record_wait(v, op);
}

static __always_inline void record_hold(struct ls_mm_val *v, __u64 ns)
{
	ls_add_span(&v->holds, &v->hold_total, &v->hold_min, &v->hold_max, v->hold_hist, ns);
}

static __always_inline struct ls_mm_task *ops_of_current(void)
{
	struct ls_mm_task *t;

	if (!current_is_target())
		return NULL;
	t = bpf_task_storage_get(&task_ops, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!t)
		ls_count_lost(&lost, LS_MM_LOST_STORAGE);
	return t;
}

/* kernel/locking/rwsem.c: RWSEM_WRITER_LOCKED | RWSEM_FLAG_WAITERS |
 * RWSEM_FLAG_HANDOFF: a reader's fast path fails */
#define LS_RWSEM_BUSY_FOR_READ 0x7

/* Whether start_locking's mmap_lock.count is needed (a writer's, or a
 * reader's without contention_begin): the callers read it only then. */
static __always_inline bool count_wanted(bool write)
{
	return write || !have_contention_tp;
}

/* `count`: mm->mmap_lock.count when count_wanted(), else 0. */
static __always_inline int on_start(struct mm_struct *mm, bool write, long count)
{
	struct ls_mm_task *t;
	struct ls_mm_op *op;
	int free = -1;

	t = ops_of_current();
	if (!t)
		return 0;
#pragma unroll
	for (int i = 0; i < LS_MM_SLOTS; i++) {
		op = &t->op[i];
		if (op->mm == (__u64)mm && (!op->acquired_ns || write)) {
			ls_count_lost(&lost, LS_MM_LOST_STALE);
			op->mm = 0;
		}
		if (!op->mm && free < 0)
			free = i;
	}
	if (free < 0) {
		ls_count_lost(&lost, LS_MM_LOST_SLOTS);
		return 0;
	}
	op = &t->op[free & (LS_MM_SLOTS - 1)];
	op->mm = (__u64)mm;
	op->begin_ns = bpf_ktime_get_ns();
	op->acquired_ns = 0;
	op->flags = write ? LS_MM_WRITE : 0;
	/* a writer that finds the lock held or queued for spins or blocks */
	if (write ? count != 0 : (!have_contention_tp && (count & LS_RWSEM_BUSY_FOR_READ)))
		op->flags |= LS_MM_CONTENDED;
	op->stack_id = -1;
	op->kstack_id = -1;
	op->ustack_id = -1;
	op->offcpu_ns = 0;
	op->runq_ns = 0;
	ls_sched_mark(&op->sched, bpf_get_current_task_btf());
	return 0;
}

/* The open slot of (mm, mode): waiting ones when `holding` is false, else
 * the latest-acquired holding one. -1 when there is none. */
static __always_inline int find(struct ls_mm_task *t, struct mm_struct *mm,
				bool write, bool holding)
{
	__u64 best = 0;
	int found = -1;

#pragma unroll
	for (int i = 0; i < LS_MM_SLOTS; i++) {
		struct ls_mm_op *op = &t->op[i];

		if (op->mm != (__u64)mm || !!(op->flags & LS_MM_WRITE) != write)
			continue;
		if (!holding && !op->acquired_ns)
			return i;
		if (holding && op->acquired_ns && op->acquired_ns >= best) {
			best = op->acquired_ns;
			found = i;
		}
	}
	return found;
}

/* The caller stack of an acquisition: with LS_CALLER_EVERY always; with
 * LS_CALLER_FIRST once per (task, mm, mode), remembered in task storage
 * (the key is created only at the release, whose caller may differ). */
static __always_inline __s32 caller_of(void *ctx, struct ls_mm_task *t,
				       struct mm_struct *mm, bool write)
{
	__u32 w = write;
	__s32 id;

	/* a bool from a classic tracepoint is a byte to the verifier: keep
	 * the mask, which the compiler would drop for a bool (5.x/6.1) */
	barrier_var(w);
	w &= 1;
	if (caller_mode == LS_CALLER_EVERY)
		return take_stack(ctx);
	if (caller_mode != LS_CALLER_FIRST)
		return -1;
	if (t->stack_mm[w] == (__u64)mm)
		return t->stack_id[w];
	id = take_stack(ctx);
	t->stack_mm[w] = (__u64)mm;
	t->stack_id[w] = id;
	return id;
}

/* A hold of `op` that ends at `now`: its acquisition and hold counted in
 * its entry `v` (partial: acquired before its start was seen), its stacks,
 * its event with `ev_flags`. */
#define LS_MM_END_HOLD(v, ctx, mm, op, now, ev_flags)                         \
	do {                                                                   \
		v = entry(ctx, mm, (op)->flags, (op)->stack_id);               \
		if (v) {                                                       \
			record_acquisition(v, op);                             \
			record_hold(v, (now) - (op)->acquired_ns);             \
		}                                                              \
		hold_stacks(mm, op, (now) - (op)->acquired_ns);                \
		emit(mm, op, now, ev_flags, (op)->stack_id);                   \
	} while (0)

static __always_inline int on_acquire(void *ctx, struct mm_struct *mm, bool write,
				      bool success)
{
	struct ls_mm_task *t;
	struct ls_mm_val *v;
	struct ls_mm_op *op;
	__u64 now;
	int i;

	t = ops_of_current();
	if (!t)
		return 0;
	now = bpf_ktime_get_ns();

	i = find(t, mm, write, false);
	if (i >= 0) {
		op = &t->op[i & (LS_MM_SLOTS - 1)];
		op->acquired_ns = now;
		/* where the wait went: the waiter runs again here */
		ls_sched_split(&op->sched, bpf_get_current_task_btf(),
			       now - op->begin_ns, &op->offcpu_ns, &op->runq_ns);
		op->stack_id = caller_of(ctx, t, mm, write);
		if (success) {
			if (stacks_on || hold_stacks_on)
				acquisition_stacks(ctx, mm, op, now - op->begin_ns);
			return 0; /* counted when the hold ends */
		}
		v = entry(ctx, mm, op->flags, op->stack_id);
		if (v)
			v->failed += 1;
		emit(mm, op, 0, op->flags | LS_MM_FAILED, op->stack_id);
		op->mm = 0;
		return 0;
	}

	if (!write && success) {
		i = find(t, mm, true, true);
		if (i >= 0) {
			/* mmap_write_downgrade(): the write hold ends here, a read
			 * hold begins without a wait */
			op = &t->op[i & (LS_MM_SLOTS - 1)];
			LS_MM_END_HOLD(v, ctx, mm, op, now, op->flags | LS_MM_DOWNGRADE);
			op->begin_ns = now;
			op->acquired_ns = now;
			op->offcpu_ns = 0;
			op->runq_ns = 0;
			op->flags = LS_MM_DOWNGRADE;
			op->stack_id = caller_of(ctx, t, mm, false);
			return 0;
		}
	}

	/* acquired (or failed) without a start seen: began before tracing */
	if (!success) {
		struct ls_mm_op none = { .acquired_ns = now };
		__u32 flags = (write ? LS_MM_WRITE : 0) | LS_MM_FAILED | LS_MM_PARTIAL;
		__s32 stack_id = caller_of(ctx, t, mm, write);

		v = entry(ctx, mm, flags, stack_id);
		if (v)
			v->failed += 1;
		emit(mm, &none, 0, flags, stack_id);
		return 0;
	}
#pragma unroll
	for (int j = 0; j < LS_MM_SLOTS; j++) {
		op = &t->op[j];
		if (!op->mm) {
			op->mm = (__u64)mm;
			op->begin_ns = 0;
			op->acquired_ns = now;
			op->flags = (write ? LS_MM_WRITE : 0) | LS_MM_PARTIAL;
			op->stack_id = caller_of(ctx, t, mm, write);
			op->kstack_id = -1;
			op->ustack_id = -1;
			op->offcpu_ns = 0;
			op->runq_ns = 0;
			return 0;
		}
	}
	ls_count_lost(&lost, LS_MM_LOST_SLOTS);
	return 0;
}

static __always_inline int on_release(void *ctx, struct mm_struct *mm, bool write)
{
	struct ls_mm_task *t;
	struct ls_mm_val *v;
	struct ls_mm_op *op;
	__u64 now;
	int i;

	t = ops_of_current();
	if (!t)
		return 0;
	now = bpf_ktime_get_ns();
	i = find(t, mm, write, true);
	if (i >= 0) {
		op = &t->op[i & (LS_MM_SLOTS - 1)];
		LS_MM_END_HOLD(v, ctx, mm, op, now, op->flags);
		op->mm = 0;
		return 0;
	}
	/* released, acquisition not seen: began before tracing (or the
	 * acquisition program was not attached yet) */
	i = find(t, mm, write, false);
	if (i >= 0)
		t->op[i & (LS_MM_SLOTS - 1)].mm = 0;
	{
		struct ls_mm_op none = {};
		__u32 flags = (write ? LS_MM_WRITE : 0) | LS_MM_PARTIAL;
		__s32 stack_id = caller_mode == LS_CALLER_NONE ? -1 : take_stack(ctx);

		v = entry(ctx, mm, flags, stack_id);
		if (v)
			v->partial += 1;
		emit(mm, &none, now, flags, stack_id);
	}
	return 0;
}

/* lock:contention_begin of any task: an rwsem wait of an operation the
 * current task has open (started, not acquired) makes it contended. */
static __always_inline int on_contention(__u64 lock, __u32 flags)
{
	struct ls_mm_task *t;

	/* rwsems only: READ or WRITE alone (mutex, spin, rt, percpu not) */
	if (flags != LS_LCB_F_READ && flags != LS_LCB_F_WRITE)
		return 0;
	/* storage exists only for tasks that started an operation */
	t = bpf_task_storage_get(&task_ops, bpf_get_current_task_btf(), 0, 0);
	if (!t)
		return 0;
#pragma unroll
	for (int i = 0; i < LS_MM_SLOTS; i++) {
		struct ls_mm_op *op = &t->op[i];

		if (op->mm && !op->acquired_ns &&
		    lock == op->mm + bpf_core_field_offset(struct mm_struct, mmap_lock))
			op->flags |= LS_MM_CONTENDED;
	}
	return 0;
}

/* ---- tp_btf: preferred ---------------------------------------------- */

/* `mm` is a trusted pointer: its count is a plain load, no helper call */
static __always_inline int start_btf(struct mm_struct *mm, bool write)
{
	return on_start(mm, write, count_wanted(write) ? mm->mmap_lock.count.counter : 0);
}

SEC("tp_btf/mmap_lock_start_locking")
int BPF_PROG(mm_start_btf)
{
	LS_CHECK_STOPPED();
	struct mm_struct *mm = (void *)ctx[0];

	/* each branch with its constant ctx offset (the verifier refuses a
	 * computed one) */
	if (args_have_memcg_path())
		return start_btf(mm, (bool)ctx[2]);
	return start_btf(mm, (bool)ctx[1]);
}

SEC("tp_btf/mmap_lock_acquire_returned")
int BPF_PROG(mm_acquire_btf)
{
	LS_CHECK_STOPPED();
	struct mm_struct *mm = (void *)ctx[0];

	if (args_have_memcg_path())
		return on_acquire(ctx, mm, (bool)ctx[2], (bool)ctx[3]);
	return on_acquire(ctx, mm, (bool)ctx[1], (bool)ctx[2]);
}

SEC("tp_btf/mmap_lock_released")
int BPF_PROG(mm_release_btf)
{
	LS_CHECK_STOPPED();
	struct mm_struct *mm = (void *)ctx[0];

	if (args_have_memcg_path())
		return on_release(ctx, mm, (bool)ctx[2]);
	return on_release(ctx, mm, (bool)ctx[1]);
}

SEC("tp_btf/contention_begin")
int BPF_PROG(mm_contention_btf, void *lock, unsigned int flags)
{
	LS_CHECK_STOPPED();
	return on_contention((__u64)lock, flags);
}

LS_FOLLOW_FORK_BTF(mm_follow_fork_btf)

/* ---- classic tracepoints: fallback ----------------------------------- */

SEC("tracepoint/mmap_lock/mmap_lock_start_locking")
int mm_start_tp(struct trace_event_raw_mmap_lock *ctx)
{
	LS_CHECK_STOPPED();
	bool write = ctx->write;

	return on_start(ctx->mm, write,
			count_wanted(write) ? BPF_CORE_READ(ctx->mm, mmap_lock.count.counter) : 0);
}

SEC("tracepoint/mmap_lock/mmap_lock_acquire_returned")
int mm_acquire_tp(struct trace_event_raw_mmap_lock_acquire_returned *ctx)
{
	LS_CHECK_STOPPED();
	return on_acquire(ctx, ctx->mm, ctx->write, ctx->success);
}

SEC("tracepoint/mmap_lock/mmap_lock_released")
int mm_release_tp(struct trace_event_raw_mmap_lock *ctx)
{
	LS_CHECK_STOPPED();
	return on_release(ctx, ctx->mm, ctx->write);
}

SEC("tracepoint/lock/contention_begin")
int mm_contention_tp(struct trace_event_raw_contention_begin *ctx)
{
	LS_CHECK_STOPPED();
	return on_contention((__u64)ctx->lock_addr, ctx->flags);
}

LS_FOLLOW_FORK_TP(mm_follow_fork_tp)
