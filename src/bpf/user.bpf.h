/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * user.bpf.h - kernel-only helpers shared by ulock.bpf.c (pthread uprobes)
 * and futex.bpf.c (futex syscall tracepoints): target filtering, the log2
 * slot, and the one map both objects use (`ulock_call`, shared by fd:
 * userspace loads the second object with the first one's map).
 */
#ifndef __USER_BPF_H
#define __USER_BPF_H

#include "offcpu.bpf.h"

/* Settings, written by userspace between open and load. */
const volatile __u32 self_tgid = 0;     /* never trace lockscope itself */
const volatile bool filter_pid = false; /* only tgids in `target_pids` */
const volatile bool filter_tid = false; /* only tids in `target_tids` */
const volatile bool filter_comm = false;
const volatile char target_comm[LS_COMM_LEN] = {};
const volatile bool filter_cgroup = false; /* `target_cgroup[0]` and below */
const volatile bool follow_forks = false;  /* children of targets become targets */
const volatile bool emit_events = false;   /* stream mode: ring buffer records */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} target_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} target_tids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target_cgroup SEC(".maps");

/* The pthread lock call in progress per task (see struct ls_ucall). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ls_ucall);
} ulock_call SEC(".maps");

static __always_inline bool comm_matches(void)
{
	char comm[LS_COMM_LEN];

	bpf_get_current_comm(comm, sizeof(comm));
	for (int i = 0; i < LS_COMM_LEN; i++) {
		if (comm[i] != target_comm[i])
			return false;
		if (comm[i] == 0)
			break;
	}
	return true;
}

static __always_inline bool is_target(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;

	if (tgid == self_tgid)
		return false;
	if (filter_pid && !bpf_map_lookup_elem(&target_pids, &tgid))
		return false;
	if (filter_tid && !bpf_map_lookup_elem(&target_tids, &tid))
		return false;
	if (filter_comm && !comm_matches())
		return false;
	if (filter_cgroup && bpf_current_task_under_cgroup(&target_cgroup, 0) != 1)
		return false;
	return true;
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

static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 r = 0, shift;

	if (v == 0)
		return 0;
	shift = (v > 0xFFFFFFFF) << 5; v >>= shift; r = shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	r += 1; /* v in [2^(r-1), 2^r) */
	return r < LS_HIST_SLOTS ? r : LS_HIST_SLOTS - 1;
}

#endif /* __USER_BPF_H */
