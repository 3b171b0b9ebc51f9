// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * kwait.bpf.c - the kernel-side edges of the live deadlock detector's
 * wait-for graph (src/deadlock.rs), for the threads of the targets:
 * "thread T waits for lock L, which thread H holds", where L is a kernel
 * lock or a page fault's userfaultfd.
 *
 * - lock:contention_begin/end (tp_btf): a target thread blocked on a
 *   kernel mutex, or on a rwsem held for writing, is an edge to the lock's
 *   owner, read from the lock itself (mutex.owner, rw_semaphore.owner: the
 *   owning task_struct with flag bits below bit 3; a reader-owned rwsem
 *   names no owner and makes no edge). contention_begin may fire twice in
 *   one wait (a mutex's optimistic spin, then its sleep): the edge is
 *   rewritten, its start kept.
 * - fentry/fexit handle_userfault: a target thread asleep in a userfaultfd
 *   fault waits for the thread that will answer it. The kernel does not
 *   know that thread; the one that read the fault's message does, and it
 *   is taken to be the one that last read a message from that
 *   userfaultfd (fexit on its read: userfaultfd_read_iter, or
 *   userfaultfd_read before Linux 6.8). Userspace joins the two. These
 *   programs need fentry (function probes); without them only the lock
 *   edges are kept.
 *
 * Costs: the lock programs run on contention only (an uncontended lock
 * never fires them) and write only for targets; the userfaultfd ones only
 * on userfaultfd faults and reads. Most contentions are spinlocks' (the
 * scheduler's runqueue and wake-up locks under a busy server), whose end
 * runs while the lock is held: while no edge is recorded (`kwaits_open`),
 * contention_end returns without a lookup.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "lockscope.h"
#include "window.bpf.h"
#include "target.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define LCB_F_SPIN (1U << 0)
#define LCB_F_READ (1U << 1)
#define LCB_F_WRITE (1U << 2)
#define LCB_F_RT (1U << 3)
#define LCB_F_PERCPU (1U << 4)
#define LCB_F_MUTEX (1U << 5)
#define RWSEM_READER_OWNED (1UL << 0)
#define OWNER_FLAGS 0x07UL

/* tid -> the lock (or fault) it waits for */
LS_HASH(kwaits, __u32, struct ls_kwait, 16384);
/* userfaultfd_ctx -> the thread that last read a message from it */
LS_HASH(uffd_readers, __u64, __u32, 4096);
/* Entries in `kwaits` now (a lost delete leaves it high: ends look up, as
 * without it). */
volatile __s64 kwaits_open = 0;

/* The tid of the task an owner word names (0: none). */
static __always_inline __u32 owner_tid(long owner)
{
	struct task_struct *t = (struct task_struct *)(owner & ~OWNER_FLAGS);

	return t ? BPF_CORE_READ(t, pid) : 0;
}

static __always_inline void wait_on(__u64 id, __u64 lock, __u32 owner, __u32 kind)
{
	__u32 tid = (__u32)id;
	struct ls_kwait *old = bpf_map_lookup_elem(&kwaits, &tid);
	struct ls_kwait w = {};

	if (old && old->lock == lock && old->kind == kind) {
		old->owner = owner;
		return;
	}
	w.lock = lock;
	w.owner = owner;
	w.kind = kind;
	w.pid = id >> 32;
	w.since_ns = bpf_ktime_get_ns();
	if (!bpf_map_update_elem(&kwaits, &tid, &w, BPF_ANY) && !old)
		__sync_fetch_and_add(&kwaits_open, 1);
}

/* The thread's edge ends. */
static __always_inline void wait_ends(__u32 tid)
{
	if (!bpf_map_delete_elem(&kwaits, &tid))
		__sync_fetch_and_add(&kwaits_open, -1);
}

SEC("tp_btf/contention_begin")
int BPF_PROG(kwait_begin, void *lock, unsigned int flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	long owner;

	LS_CHECK_STOPPED();
	if (flags & (LCB_F_RT | LCB_F_PERCPU))
		return 0;
	if (!(flags & (LCB_F_MUTEX | LCB_F_READ | LCB_F_WRITE)) || !id_is_target(id))
		return 0;
	if (flags & LCB_F_MUTEX) {
		owner = BPF_CORE_READ((struct mutex *)lock, owner.counter);
		if (owner_tid(owner))
			wait_on(id, (__u64)lock, owner_tid(owner), LS_KWAIT_MUTEX);
		return 0;
	}
	owner = BPF_CORE_READ((struct rw_semaphore *)lock, owner.counter);
	if (!(owner & RWSEM_READER_OWNED) && owner_tid(owner))
		wait_on(id, (__u64)lock, owner_tid(owner), LS_KWAIT_RWSEM);
	return 0;
}

SEC("tp_btf/contention_end")
int BPF_PROG(kwait_end, void *lock, int ret)
{
	__u32 tid;
	struct ls_kwait *w;

	if (!kwaits_open)
		return 0;
	tid = (__u32)bpf_get_current_pid_tgid();
	w = bpf_map_lookup_elem(&kwaits, &tid);
	if (w && w->kind != LS_KWAIT_UFFD)
		wait_ends(tid);
	return 0;
}

SEC("fentry/handle_userfault")
int BPF_PROG(kwait_fault, struct vm_fault *vmf, unsigned long reason)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 uctx;

	LS_CHECK_STOPPED();
	if (!id_is_target(id))
		return 0;
	uctx = (__u64)BPF_CORE_READ(vmf, vma, vm_userfaultfd_ctx.ctx);
	if (uctx)
		wait_on(id, uctx, 0, LS_KWAIT_UFFD);
	return 0;
}

SEC("fexit/handle_userfault")
int BPF_PROG(kwait_fault_done, struct vm_fault *vmf, unsigned long reason, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct ls_kwait *w = bpf_map_lookup_elem(&kwaits, &tid);

	if (w && w->kind == LS_KWAIT_UFFD)
		wait_ends(tid);
	return 0;
}

static __always_inline void read_from(void *uctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 c = (__u64)uctx;

	if (c && !ls_stopped)
		bpf_map_update_elem(&uffd_readers, &c, &tid, BPF_ANY);
}

SEC("fexit/userfaultfd_read_iter")
int BPF_PROG(kwait_read_iter, struct kiocb *iocb, struct iov_iter *to, long ret)
{
	if (ret > 0)
		read_from(BPF_CORE_READ(iocb, ki_filp, private_data));
	return 0;
}

SEC("fexit/userfaultfd_read")
int BPF_PROG(kwait_read, struct file *file, char *buf, unsigned long count, long long *ppos,
	     long ret)
{
	if (ret > 0)
		read_from(BPF_CORE_READ(file, private_data));
	return 0;
}

LS_FOLLOW_FORK_BTF(kwait_follow_fork)
