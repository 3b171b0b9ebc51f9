/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * stacks.bpf.h - full stacks (--stacks, --hold-stacks) for the sources that
 * are not kernel-contention (which has its own, per-CPU sampling state):
 * user-locks, futex, mmap-lock, kernel-mutex and kernel-rwsem.
 *
 * A wait's stacks are taken where the wait ends (the acquisition) when it
 * lasted at least `stack_threshold_ns`, or for 1 in `stack_sample` of the
 * shorter ones. A hold's length is known only at its release, so with
 * `hold_stacks_on` the stacks are taken at every acquisition, kept with the
 * open hold, and aggregated at the release under the same rule. Everything
 * is aggregated in the kernel per (lock, thread, kind, kernel stack, user
 * stack): nothing per event crosses to userspace.
 *
 * The includer declares its `lost` map (maps.bpf.h LS_LOST_MAP) and defines
 * LS_STACK_LOST_FAILED and LS_STACK_LOST_MAP_FULL (its indices there)
 * before including this file.
 */
#ifndef __STACKS_BPF_H
#define __STACKS_BPF_H

#include "maps.bpf.h"

const volatile bool stacks_on = false;        /* --stacks: wait stacks */
const volatile bool hold_stacks_on = false;   /* --hold-stacks */
const volatile __u64 stack_threshold_ns = 0;  /* at least this long */
const volatile __u32 stack_sample = 0;        /* and 1 in N of the others */

LS_STACK_TRACE(full_stacks, 1, LS_STACK_DEPTH); /* resized by userspace (--stacks) */
LS_STACK_TRACE(spill_stacks, 1, LS_STACK_DEPTH); /* resized: full_stacks' collisions */
LS_HASH(stack_agg, struct ls_stack_key, struct ls_stack_val, 1); /* resized (--stacks) */

/* Operations seen per CPU, for 1-in-N sampling (no atomics needed). */
LS_PERCPU_ARRAY(stack_ctr, __u64, 1);

/* Whether a wait or hold of `ns` gets its stacks recorded. */
static __always_inline bool stack_wanted(__u64 ns)
{
	__u64 *ctr;

	if (ns >= stack_threshold_ns)
		return true;
	if (!stack_sample)
		return false;
	ctr = ls_scratch(&stack_ctr);
	if (!ctr)
		return false;
	*ctr += 1;
	return *ctr % stack_sample == 0;
}

/* The current user stack's id, counting a failure. */
static __always_inline __s32 take_ustack(void *ctx)
{
	__s32 id = ls_stackid(ctx, &full_stacks, &spill_stacks, BPF_F_USER_STACK);

	if (id < 0)
		ls_count_lost(&lost, LS_STACK_LOST_FAILED);
	return id;
}

/* The current kernel stack's id, counting a failure. */
static __always_inline __s32 take_kstack(void *ctx)
{
	__s32 id = ls_stackid(ctx, &full_stacks, &spill_stacks, 0);

	if (id < 0)
		ls_count_lost(&lost, LS_STACK_LOST_FAILED);
	return id;
}

/* Adds a wait (`hold` false) or a hold of `ns` of thread `id` (pid << 32 |
 * tid) to the stacks' entry. */
static __always_inline void add_stack_of(__u64 id, __u64 lock, __u32 flags, __s32 kstack_id,
					 __s32 ustack_id, __u64 ns, bool hold)
{
	struct ls_stack_key sk = {};
	struct ls_stack_val *sv, init = {};

	if (kstack_id < 0 && ustack_id < 0)
		return; /* nothing taken (counted when it failed) */
	sk.lock = lock;
	sk.pid = id >> 32;
	sk.tid = (__u32)id;
	sk.flags = flags;
	sk.kstack_id = kstack_id;
	sk.ustack_id = ustack_id;
	sv = ls_lookup_or_init(&stack_agg, &sk, &init, &lost, LS_STACK_LOST_MAP_FULL);
	if (!sv)
		return;
	/* the key holds the tid: one writer at a time */
	if (hold) {
		sv->hold_count += 1;
		sv->hold_total_ns += ns;
		if (ns > sv->hold_max_ns)
			sv->hold_max_ns = ns;
	} else {
		sv->count += 1;
		sv->total_ns += ns;
		if (ns > sv->max_ns)
			sv->max_ns = ns;
	}
}

/* add_stack_of() for the current thread. */
static __always_inline void add_stack(__u64 lock, __u32 flags, __s32 kstack_id,
				      __s32 ustack_id, __u64 ns, bool hold)
{
	add_stack_of(bpf_get_current_pid_tgid(), lock, flags, kstack_id, ustack_id, ns, hold);
}

#endif /* __STACKS_BPF_H */
