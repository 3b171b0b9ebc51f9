/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * holds.bpf.h - the wait/hold/holder bookkeeping of the sources that time a
 * lock call (entry -> return: the wait) and the hold after it (return ->
 * unlock): kmutex.bpf.c (kernel mutexes and rwsems) and ulock.bpf.c
 * (pthread locks). Their types differ (struct ls_k* and ls_u*) but share
 * the fields used here: aggregates (cgroup_id, comm, pcomm, count,
 * total_ns, min_ns, max_ns, hist and the hold_ ones), open holds (depth)
 * and holder entries (struct ls_kholder_key/val = ls_uholder_key/val).
 * Include after target.bpf.h, with the object's `lost` map declared.
 */
#ifndef __LOCKSCOPE_HOLDS_BPF_H
#define __LOCKSCOPE_HOLDS_BPF_H

#include "bits.bpf.h"
#include "maps.bpf.h"

/* What a new aggregate of the current task starts with: who it is, and
 * minimums that any span lowers. `init` is the object's `agg_zero`
 * scratch value (every field set here is set at every use). */
#define LS_INIT_AGG(init, task)                                                \
	do {                                                                   \
		(init)->cgroup_id = bpf_get_current_cgroup_id();               \
		bpf_get_current_comm((init)->comm, sizeof((init)->comm));      \
		BPF_CORE_READ_STR_INTO(&(init)->pcomm, task, group_leader,     \
				       comm);                                  \
		(init)->min_ns = ~0ULL;                                        \
		(init)->hold_min_ns = ~0ULL;                                   \
	} while (0)

/* Takes the current task's open lock call out of task storage `storage`
 * into the local `call` and marks the entry closed. The enclosing program
 * returns 0 when none is open: the call began before attaching, and its
 * release will be partial. */
#define LS_TAKE_CALL(storage, task, call)                                      \
	do {                                                                   \
		typeof(&(call)) __c = bpf_task_storage_get(storage, task, 0, 0); \
                                                                               \
		if (!__c || !__c->lock)                                        \
			return 0;                                              \
		call = *__c;                                                   \
		__c->lock = 0;                                                 \
	} while (0)

/* Opens the current thread's hold `nh` under `hkey` in the `holds` map;
 * a hold already open there (a recursive or read lock taken again) runs
 * to its last release instead. A full map counts `lost_what`. */
#define LS_OPEN_HOLD(holds, hkey, nh, lost_what)                               \
	do {                                                                   \
		typeof(&(nh)) __h = bpf_map_lookup_elem(holds, hkey);          \
                                                                               \
		if (__h)                                                       \
			__h->depth += 1;                                       \
		else if (bpf_map_update_elem(holds, hkey, &(nh), BPF_ANY))     \
			ls_count_lost(&lost, lost_what);                       \
	} while (0)

/* The fields both objects' events (struct ls_kevent, ls_uevent) share:
 * the wait and hold's times, the lock, and who (`id`: pid_tgid). */
#define LS_FILL_LOCK_EVENT(e, id, begin, acquired, released, lk, knd, flgs,   \
			   holder, rv)                                         \
	do {                                                                   \
		(e)->begin_ns = begin;                                         \
		(e)->acquired_ns = acquired;                                   \
		(e)->released_ns = released;                                   \
		(e)->lock = lk;                                                \
		(e)->cgroup_id = bpf_get_current_cgroup_id();                  \
		(e)->pid = (id) >> 32;                                         \
		(e)->tid = (__u32)(id);                                        \
		(e)->kind = knd;                                               \
		(e)->flags = flgs;                                             \
		(e)->holder_tid = holder;                                      \
		(e)->ret = rv;                                                 \
	} while (0)

/* The key and value of both objects' `holders` maps. */
struct ls_holder_key {
	__u64 lock;
	__u32 holder_tid;
	__u32 pid;
	__u32 kind;
	__u32 pad;
};

struct ls_holder_val {
	__u64 waits;
	__u64 wait_ns;
};

_Static_assert(sizeof(struct ls_holder_key) == sizeof(struct ls_kholder_key) &&
	       sizeof(struct ls_holder_key) == sizeof(struct ls_uholder_key) &&
	       sizeof(struct ls_holder_val) == sizeof(struct ls_kholder_val) &&
	       sizeof(struct ls_holder_val) == sizeof(struct ls_uholder_val),
	       "holders maps: one layout");

/* A wait of `wait` ns by a thread of process `pid` for `lock` of `kind`,
 * held by `holder_tid` when it began, counted to that holder. Waiters on
 * several CPUs update one entry: atomic adds. A full map loses nothing
 * else (the wait itself is counted in its aggregate). */
static __always_inline void ls_count_holder(void *holders, __u64 lock, __u32 holder_tid,
					    __u32 pid, __u32 kind, __u64 wait)
{
	struct ls_holder_key hk = {};
	struct ls_holder_val *hv, hv0 = {};

	hk.lock = lock;
	hk.holder_tid = holder_tid;
	hk.pid = pid;
	hk.kind = kind;
	hv = ls_lookup_or_try_init(holders, &hk, &hv0);
	if (hv) {
		__sync_fetch_and_add(&hv->waits, 1);
		__sync_fetch_and_add(&hv->wait_ns, wait);
	}
}

#endif /* __LOCKSCOPE_HOLDS_BPF_H */
