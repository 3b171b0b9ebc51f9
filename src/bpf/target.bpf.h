/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * target.bpf.h - kernel-only helpers shared by the sources that include it:
 * who is traced (settings and filter maps) and following forks for
 * `lockscope run` and `-p`. Include after vmlinux.h and the
 * libbpf headers; each object gets its own copy of the maps and settings.
 */
#ifndef __LOCKSCOPE_TARGET_BPF_H
#define __LOCKSCOPE_TARGET_BPF_H

#include "lockscope.h"
#include "bits.bpf.h"
#include "maps.bpf.h"

/* Settings, written by userspace between open and load. */
const volatile __u32 self_tgid = 0;     /* never trace lockscope itself */
const volatile bool filter_pid = false; /* only tgids in `target_pids` */
const volatile bool filter_tid = false; /* only tids in `target_tids` */
const volatile bool filter_comm = false;
const volatile char target_comm[LS_COMM_LEN] = {};
const volatile bool filter_cgroup = false; /* `target_cgroup[0]` and below */
/* The same cgroup by id and depth below the v2 root, for tasks other than
 * the current one (the cgroup array helper only tests `current`). */
const volatile __u64 target_cgroup_id = 0;
const volatile __u32 target_cgroup_level = 0;
const volatile bool follow_forks = false; /* children of targets become targets */

LS_HASH(target_pids, __u32, __u8, 1024);

LS_HASH(target_tids, __u32, __u8, 1024);

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target_cgroup SEC(".maps");

static __always_inline bool comm_is_target(const char *comm)
{
	for (int i = 0; i < LS_COMM_LEN; i++) {
		if (comm[i] != target_comm[i])
			return false;
		if (comm[i] == 0)
			break;
	}
	return true;
}

/* In a filter: returns false unless thread `tid` of process `tgid` (u32
 * variables: their addresses are the map keys) passes the pid and tid
 * filters and is not lockscope itself. */
#define LS_FILTER_IDS(tgid, tid)                                              \
	do {                                                                   \
		if ((tgid) == self_tgid)                                       \
			return false;                                          \
		if (filter_pid && !bpf_map_lookup_elem(&target_pids, &(tgid))) \
			return false;                                          \
		if (filter_tid && !bpf_map_lookup_elem(&target_tids, &(tid)))  \
			return false;                                          \
	} while (0)

/* Whether the current task, whose bpf_get_current_pid_tgid() is `id`, is
 * traced. The settings are constants: the verifier drops the filters that
 * are off, so an unfiltered run pays only the self_tgid compare. */
static __always_inline bool id_is_target(__u64 id)
{
	__u32 tgid = id >> 32, tid = (__u32)id;

	LS_FILTER_IDS(tgid, tid);
	if (filter_comm) {
		char comm[LS_COMM_LEN];

		bpf_get_current_comm(comm, sizeof(comm));
		if (!comm_is_target(comm))
			return false;
	}
	if (filter_cgroup && bpf_current_task_under_cgroup(&target_cgroup, 0) != 1)
		return false;
	return true;
}

/* Whether the current task is traced. */
static __always_inline bool current_is_target(void)
{
	return id_is_target(bpf_get_current_pid_tgid());
}

/* Whether `task` (any task, e.g. one being woken) is traced. `task` must be
 * a trusted BTF pointer (a tp_btf argument): its fields are loaded directly. */
static __always_inline bool task_is_target(struct task_struct *task)
{
	__u32 tgid = task->tgid, tid = task->pid;

	LS_FILTER_IDS(tgid, tid);
	if (filter_comm && !comm_is_target(task->comm))
		return false;
	if (filter_cgroup) {
		/* cgroup_is_descendant(): the ancestor at the target's depth */
		struct cgroup *cg = BPF_CORE_READ(task, cgroups, dfl_cgrp), *anc = NULL;
		__u32 level = target_cgroup_level;

		if (!cg || BPF_CORE_READ(cg, level) < (int)level)
			return false;
		if (bpf_core_read(&anc, sizeof(anc), &cg->ancestors[level]) || !anc)
			return false;
		if (BPF_CORE_READ(anc, kn, id) != target_cgroup_id)
			return false;
	}
	return true;
}

/* `lockscope run`: children forked by targets become targets. */
static __always_inline int follow_fork(__u32 parent_tgid, __u32 child_pid)
{
	__u8 one = 1;

	if (!follow_forks)
		return 0;
	if (!bpf_map_lookup_elem(&target_pids, &parent_tgid))
		return 0;
	bpf_map_update_elem(&target_pids, &child_pid, &one, BPF_ANY);
	return 0;
}

/* An object's fork follower `name` on tp_btf/sched_process_fork (where the
 * kernel has BTF) and on the classic tracepoint: userspace loads one of
 * them, when following forks, and attaches it before the other programs (a
 * child forked while they attach is a target already). The tracepoint's
 * program runs in the parent: a new thread's tid joins harmlessly. */
#define LS_FOLLOW_FORK_BTF(name)                                               \
	SEC("tp_btf/sched_process_fork")                                       \
	int BPF_PROG(name, struct task_struct *parent, struct task_struct *child) \
	{                                                                      \
		LS_CHECK_STOPPED();                                            \
		return follow_fork(BPF_CORE_READ(parent, tgid),                \
				   BPF_CORE_READ(child, tgid));                \
	}
#define LS_FOLLOW_FORK_TP(name)                                                \
	SEC("tracepoint/sched/sched_process_fork")                             \
	int name(struct trace_event_raw_sched_process_fork *ctx)               \
	{                                                                      \
		LS_CHECK_STOPPED();                                            \
		return follow_fork(bpf_get_current_pid_tgid() >> 32,           \
				   ctx->child_pid);                            \
	}

/* Children forked by targets become targets (`run`, `-p`), from
 * tp_btf/sched_process_fork (trusted task pointers): 1 when `child` is a
 * new process (not a thread) of a target and now a target itself, 0 when
 * it is not followed, -1 when `target_pids` had no room for it. */
static __always_inline int follow_fork_task(struct task_struct *parent,
					    struct task_struct *child)
{
	__u32 ptgid = parent->tgid, pid = child->tgid;
	__u8 one = 1;

	if (!follow_forks || child->pid != pid)
		return 0; /* not following, or a new thread of the same process */
	if (!bpf_map_lookup_elem(&target_pids, &ptgid))
		return 0;
	return bpf_map_update_elem(&target_pids, &pid, &one, BPF_ANY) ? -1 : 1;
}

#endif /* __LOCKSCOPE_TARGET_BPF_H */
