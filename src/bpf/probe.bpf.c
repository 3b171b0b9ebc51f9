// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * probe.bpf.c - tiny programs `lockscope doctor` loads one at a time to find
 * out by trying what this kernel allows.
 *
 * Userspace opens this object once per feature, turns autoload off for every
 * program but the one being tried and autocreate off for every map that
 * program does not use, so that one missing feature cannot hide another.
 * Each program only counts that it ran (and what its helper returned) in
 * .bss, which userspace reads back to confirm the hook really fired.
 *
 * Nothing here reads the context: the generic programs can be attached to
 * any tracepoint (classic or raw) whatever its arguments.
 *
 * Minimum kernels of what is tried: tp_btf and fentry/fexit 5.5, ring buffer
 * 5.8, task storage from tracing programs 5.11; the rest is older. A program
 * the kernel cannot take fails only its own check.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by userspace before load: the doctor's own process. */
const volatile __u32 self_tgid = 0;

/* Results, read back by userspace. */
__u64 tp_btf_hits;
__u64 raw_tp_hits;
__u64 tracepoint_hits;
__u64 fentry_hits;
__u64 fexit_hits;
__u64 kprobe_hits;
__u64 kretprobe_hits;
__u64 uprobe_hits;
__u64 uretprobe_hits;
__u64 ringbuf_submitted;
__u64 ringbuf_full;
__u64 stack_ok;
__s64 stack_err; /* last negative return of bpf_get_stackid, 0 if none */
__u64 task_storage_ok;
__u64 task_storage_fail;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 16 * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} tstore SEC(".maps");

static __always_inline bool is_self(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == self_tgid;
}

/* A program whose only work is counting its runs in `counter`: `head` is
 * its declaration (name and context). */
#define COUNT_RUNS(sec, head, counter)                                         \
	SEC(sec)                                                               \
	int head                                                               \
	{                                                                      \
		__sync_fetch_and_add(&counter, 1);                             \
		return 0;                                                      \
	}

COUNT_RUNS("tp_btf/sched_switch", BPF_PROG(probe_tp_btf), tp_btf_hits)

/* Also attached by name to every tracepoint lockscope uses, to prove it
 * exists without tracefs. */
COUNT_RUNS("raw_tp/sched_switch", probe_raw_tp(void *ctx), raw_tp_hits)

/* Also attached to every classic tracepoint lockscope uses. */
COUNT_RUNS("tracepoint/sched/sched_switch", probe_tracepoint(void *ctx), tracepoint_hits)

COUNT_RUNS("fentry/mutex_unlock", BPF_PROG(probe_fentry), fentry_hits)

COUNT_RUNS("fexit/mutex_unlock", BPF_PROG(probe_fexit), fexit_hits)

COUNT_RUNS("kprobe/mutex_unlock", BPF_KPROBE(probe_kprobe), kprobe_hits)

COUNT_RUNS("kretprobe/mutex_unlock", BPF_KRETPROBE(probe_kretprobe), kretprobe_hits)

/* Attached by userspace to lockscope_doctor_uprobe_target in its own binary,
 * for its own pid only. */
COUNT_RUNS("uprobe", BPF_UPROBE(probe_uprobe), uprobe_hits)

COUNT_RUNS("uretprobe", BPF_URETPROBE(probe_uretprobe), uretprobe_hits)

/* Ring buffer: one record per context switch away from the doctor. Uses a
 * raw tracepoint so that the check does not depend on BTF. */
SEC("raw_tp/sched_switch")
int probe_ringbuf(void *ctx)
{
	__u32 *rec;

	if (!is_self())
		return 0;
	rec = bpf_ringbuf_reserve(&rb, sizeof(*rec), 0);
	if (!rec) {
		__sync_fetch_and_add(&ringbuf_full, 1);
		return 0;
	}
	*rec = self_tgid;
	bpf_ringbuf_submit(rec, 0);
	__sync_fetch_and_add(&ringbuf_submitted, 1);
	return 0;
}

/* Stack trace map: the kernel stack of the doctor switching out. */
SEC("raw_tp/sched_switch")
int probe_stack(void *ctx)
{
	long id;

	if (!is_self())
		return 0;
	id = bpf_get_stackid(ctx, &stacks, 0);
	if (id >= 0)
		__sync_fetch_and_add(&stack_ok, 1);
	else
		stack_err = id;
	return 0;
}

/* Task-local storage from a tp_btf program, as kernel-contention uses it. */
SEC("tp_btf/sched_switch")
int BPF_PROG(probe_task_storage)
{
	struct task_struct *task;
	__u64 *v;

	if (!is_self())
		return 0;
	task = bpf_get_current_task_btf();
	v = bpf_task_storage_get(&tstore, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!v) {
		__sync_fetch_and_add(&task_storage_fail, 1);
		return 0;
	}
	*v += 1;
	__sync_fetch_and_add(&task_storage_ok, 1);
	return 0;
}
