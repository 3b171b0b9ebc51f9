// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * applocks.bpf.c - waits on an application's own locks, from the USDT
 * probes the application fires around them (PostgreSQL's
 * lwlock__wait__start/done, lock__wait__start/done, deadlock__found).
 *
 * One program, `app_probe`, is attached (by userspace, through libbpf's
 * USDT support) to every probe of userspace's table of known probe pairs,
 * with the probe's index in that table as the USDT cookie; `app_probes`
 * says how to read each: its role (a wait starts, the wait ends, a point
 * event), the slot its pair uses, and which arguments name the lock (a
 * string, numbers) and give the mode.
 *
 * Invariants:
 * - A start remembers (begin time, lock, mode, the name's address) in the
 *   thread's slot; the done of the same slot ends that wait: one row entry
 *   per (thread, start probe, mode, lock numbers, name address), a log2
 *   histogram of the waits, and an event in stream mode. A done without a
 *   start (begun before attaching) is counted as delivered but not paired.
 * - Cheap per probe (PostgreSQL fires the LWLock probes ~10^4 times a
 *   second under pgbench): the name string is read once, when its row
 *   entry is made (PostgreSQL's tranche names are constant strings, one
 *   address per name in a process), not at every start; the USDT spec is
 *   looked up once per run and register arguments are read from the
 *   context in place (libbpf's bpf_usdt_arg() looks the spec up and calls
 *   a helper per argument); only the arguments the probe's table entry
 *   names are read.
 * - Where a wait went (on CPU, runnable, asleep), and whether the waiter
 *   slept: the scheduler's accounting of the waiter (its run clock, run
 *   delay and voluntary switch count) at the start and at the end
 *   (offcpu.bpf.h), a few loads of the current task at each. So a
 *   backend's semaphore wait inside an LWLock wait, which futex.bpf.c
 *   skips, still shows as the LWLock wait's asleep and runnable parts.
 * - Points (deadlock found) count in the same aggregation with no
 *   duration, and are streamed. A point also ends the open wait of its
 *   slot, as an aborted wait: PostgreSQL fires deadlock__found in the
 *   victim, whose lock wait then ends in an error without
 *   lock__wait__done (without this its wait would go unreported and keep
 *   covering the backend's futex waits).
 * - The wait probes fire only when the application is about to sleep on a
 *   lock (PostgreSQL: contention only). `fired` counts what the probes
 *   delivered, for the report and tests to check nothing was lost.
 * - One wait, one row: while a thread is in an application lock wait (any
 *   slot open), its `ulock_call` entry (the map of ulock.bpf.c and
 *   futex.bpf.c, shared by fd) is marked covering (lock LS_APP_CALL_MARK,
 *   `op` the open slots' bits), so the futex or semaphore wait inside it
 *   is skipped by futex.bpf.c (counted `covered`) and reported once, here.
 *   A pthread call already in progress is left as it is (it covers).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/usdt.bpf.h>
#include "lockscope.h"
#include "window.bpf.h"
#include "target.bpf.h"
#include "offcpu.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile bool emit_events = false; /* stream mode */
const volatile struct ls_app_probe app_probes[LS_APP_PROBES] = {};

/* thread -> its open waits (freed with the task: no exit hook) */
LS_TASK_STORAGE(app_waits, struct ls_app_task);

LS_HASH(agg, struct ls_app_key, struct ls_app_val, 16384); /* resized by userspace */

LS_PERCPU_ARRAY(fired, __u64, LS_APP_FIRED__COUNT);

/* Zeroed values too big for the stack. */
/* A zeroed value too big for the stack. */
LS_PERCPU_ARRAY(zero_val, struct ls_app_val, 1);

LS_RINGBUF(events, 8 << 20); /* resized by userspace before load */

LS_LOST_MAP(LS_APP_LOST__COUNT);

/* The lock call in progress per task: shared by fd with ulock.bpf.c and
 * futex.bpf.c (user.bpf.h); an application wait marks it covering. */
LS_TASK_STORAGE(ulock_call, struct ls_ucall);

/* `ulock_call.lock` of an application wait: never a pthread lock address. */
#define LS_APP_CALL_MARK 1ULL

/* The thread's wait in `slot` began: futex waits until its done are its. */
static __always_inline void cover(struct task_struct *task, __u32 slot)
{
	struct ls_ucall *c = bpf_task_storage_get(&ulock_call, task, 0,
						  BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!c || (c->lock && c->lock != LS_APP_CALL_MARK))
		return; /* no storage (the futex wait is counted there), or a
			 * pthread call in progress */
	c->lock = LS_APP_CALL_MARK;
	c->op |= 1U << slot;
	c->covers = 1;
}

/* The thread's wait in `slot` ended (or was never seen to begin). */
static __always_inline void uncover(struct task_struct *task, __u32 slot)
{
	struct ls_ucall *c = bpf_task_storage_get(&ulock_call, task, 0, 0);

	if (!c || c->lock != LS_APP_CALL_MARK)
		return;
	c->op &= ~(1U << slot);
	if (!c->op) {
		c->lock = 0;
		c->covers = 0;
	}
}

struct ls_app_event ls_app_event_type = {};

/* The libbpf USDT spec of the probe that fired (found once per run: the
 * bpf_usdt_* helpers each look it up again), NULL when unknown. */
static __always_inline struct __bpf_usdt_spec *spec_of(struct pt_regs *ctx)
{
	int spec_id = __bpf_usdt_spec_id(ctx);

	if (spec_id < 0)
		return NULL;
	return bpf_map_lookup_elem(&__bpf_usdt_specs, &spec_id);
}

/* Register `f` of `ctx`, a load at a constant offset: the verifier takes
 * no context access at an offset computed at run time, and clang would
 * merge the plain loads of a switch into one such. */
#define LS_CTX_REG(ctx, f)                                                     \
	({                                                                     \
		unsigned long v_;                                              \
		asm volatile("%[v] = *(u64 *)(%[c] + %[o])"                    \
			     : [v] "=r"(v_)                                    \
			     : [c] "r"(ctx), [o] "i"(offsetof(struct pt_regs, f))); \
		v_;                                                            \
	})

/* A general-purpose register of `ctx` by its offset in struct pt_regs
 * (how libbpf's specs name it): read in place, no helper call. `ok` false
 * for an offset that is no register here. */
static __always_inline unsigned long reg_at(struct pt_regs *ctx, short off, bool *ok)
{
	*ok = true;
	switch (off) {
	case offsetof(struct pt_regs, ax): return LS_CTX_REG(ctx, ax);
	case offsetof(struct pt_regs, bx): return LS_CTX_REG(ctx, bx);
	case offsetof(struct pt_regs, cx): return LS_CTX_REG(ctx, cx);
	case offsetof(struct pt_regs, dx): return LS_CTX_REG(ctx, dx);
	case offsetof(struct pt_regs, si): return LS_CTX_REG(ctx, si);
	case offsetof(struct pt_regs, di): return LS_CTX_REG(ctx, di);
	case offsetof(struct pt_regs, bp): return LS_CTX_REG(ctx, bp);
	case offsetof(struct pt_regs, sp): return LS_CTX_REG(ctx, sp);
	case offsetof(struct pt_regs, r8): return LS_CTX_REG(ctx, r8);
	case offsetof(struct pt_regs, r9): return LS_CTX_REG(ctx, r9);
	case offsetof(struct pt_regs, r10): return LS_CTX_REG(ctx, r10);
	case offsetof(struct pt_regs, r11): return LS_CTX_REG(ctx, r11);
	case offsetof(struct pt_regs, r12): return LS_CTX_REG(ctx, r12);
	case offsetof(struct pt_regs, r13): return LS_CTX_REG(ctx, r13);
	case offsetof(struct pt_regs, r14): return LS_CTX_REG(ctx, r14);
	case offsetof(struct pt_regs, r15): return LS_CTX_REG(ctx, r15);
	}
	*ok = false;
	return 0;
}

/* Argument `i` (>= 0) of the probe (0 when it cannot be read): what
 * bpf_usdt_arg() does, from the spec found once. */
static __noinline long arg_read(struct pt_regs *ctx, struct __bpf_usdt_spec *spec, __s8 i)
{
	struct __bpf_usdt_arg_spec *a;
	unsigned long val, idx;
	bool ok;

	if (i < 0 || i >= BPF_USDT_MAX_ARG_CNT || i >= spec->arg_cnt)
		return 0;
	a = &spec->args[i];
	switch (a->arg_type) {
	case BPF_USDT_ARG_CONST:
		val = a->val_off;
		break;
	case BPF_USDT_ARG_REG:
		val = reg_at(ctx, a->reg_off, &ok);
		if (!ok)
			return 0;
		break;
	case BPF_USDT_ARG_REG_DEREF:
		val = reg_at(ctx, a->reg_off, &ok);
		if (!ok || bpf_probe_read_user(&val, sizeof(val), (void *)(val + a->val_off)))
			return 0;
		break;
	case BPF_USDT_ARG_SIB:
		val = reg_at(ctx, a->reg_off, &ok);
		if (!ok)
			return 0;
		idx = reg_at(ctx, a->idx_reg_off, &ok);
		if (!ok || bpf_probe_read_user(&val, sizeof(val),
					       (void *)(val + (idx << a->scale_bitshift) +
							a->val_off)))
			return 0;
		break;
	default:
		return 0;
	}
	/* 1, 2 or 4 bytes to 8, sign-extended when signed */
	val <<= a->arg_bitshift;
	if (a->arg_signed)
		return ((long)val) >> a->arg_bitshift;
	return val >> a->arg_bitshift;
}

/* Argument `i` of the probe, 0 when `i` < 0 (unused: no call). */
static __always_inline long arg_of(struct pt_regs *ctx, struct __bpf_usdt_spec *spec, __s8 i)
{
	return i < 0 ? 0 : arg_read(ctx, spec, i);
}

/* Reads the lock name at `ptr` (`len` bytes, -1: NUL-terminated) into
 * `name` (LS_APP_NAME_LEN bytes, zeroed); left empty when it cannot be
 * read here (a page not faulted in yet: BPF cannot fault), for userspace
 * to read at `ptr`. */
static __always_inline void read_name(char *name, __u64 ptr, __s32 len)
{
	if (!ptr)
		return;
	if (len < 0) {
		if (bpf_probe_read_user_str(name, LS_APP_NAME_LEN, (void *)ptr) <= 0)
			name[0] = 0;
		return;
	}
	/* an unsigned size masked right before the call: the 6.1 verifier
	 * loses the bounds of the signed `len` across its spill ("R2 min value
	 * is negative", which kept the source from loading there) */
	__u32 n = len > 0 ? (__u32)len : 0;

	if (n > LS_APP_NAME_LEN - 1)
		n = LS_APP_NAME_LEN - 1;
	barrier_var(n);
	n &= LS_APP_NAME_LEN - 1;
	if (n && bpf_probe_read_user(name, n, (void *)ptr))
		name[0] = 0;
}

static __always_inline void count_fired(__u32 what)
{
	ls_count_lost(&fired, what);
}

/* Adds one wait (or point) to the aggregation and streams it; `aborted`:
 * a wait a point ended; `name_len`: of the name at key->name_ptr, read
 * when the entry is made. */
static __always_inline void record(struct ls_app_key *key, __s32 name_len, __u64 begin,
				   __u64 end, bool aborted, __u64 offcpu, __u64 runq, bool slept)
{
	struct ls_app_val *v, *init;

	v = bpf_map_lookup_elem(&agg, key);
	if (!v) {
		init = ls_scratch(&zero_val);
		if (!init)
			return;
		init->min_ns = ~0ULL;
		init->cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(init->comm, sizeof(init->comm));
		__builtin_memset(init->name, 0, sizeof(init->name));
		read_name(init->name, key->name_ptr, name_len);
		v = ls_insert(&agg, key, init, &lost, LS_APP_LOST_MAP_FULL);
	}
	if (v) {
		LS_ADD_WAIT(v, end - begin);
		v->offcpu_ns += offcpu;
		v->runq_ns += runq;
		if (slept)
			v->slept += 1;
		if (aborted)
			v->aborted += 1;
	}
	if (emit_events) {
		struct ls_app_event *e = ls_reserve(&events, sizeof(*e), &lost, LS_APP_LOST_RINGBUF);

		if (!e)
			return;
		e->begin_ns = begin;
		e->end_ns = end;
		e->cgroup_id = bpf_get_current_cgroup_id();
		__builtin_memcpy(e->id, key->id, sizeof(e->id));
		e->pid = key->pid;
		e->tid = key->tid;
		e->probe = key->probe;
		e->mode = key->mode;
		e->aborted = aborted;
		e->slept = slept;
		e->offcpu_ns = offcpu;
		e->runq_ns = runq;
		e->name_ptr = key->name_ptr;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		if (v) {
			__builtin_memcpy(e->name, v->name, sizeof(e->name));
		} else {
			__builtin_memset(e->name, 0, sizeof(e->name));
			read_name(e->name, key->name_ptr, name_len);
		}
		bpf_ringbuf_submit(e, 0);
	}
}

/* Ends the open wait `w` of thread `id` at `now` (aborted: a point ended
 * it), into the aggregation. */
static __always_inline void end_wait(struct ls_app_wait *w, struct task_struct *task, __u64 id,
				     __u64 now, bool aborted)
{
	struct ls_app_key key;
	__u64 offcpu = 0, runq = 0;

	if (now > w->begin_ns)
		ls_sched_split(&w->sched, task, now - w->begin_ns, &offcpu, &runq);

	key.pid = id >> 32;
	key.tid = (__u32)id;
	key.probe = w->probe;
	key.mode = w->mode;
	__builtin_memcpy(key.id, w->id, sizeof(key.id));
	key.name_ptr = w->name_ptr;
	record(&key, w->name_len, w->begin_ns, now, aborted, offcpu, runq, task->nvcsw != w->nvcsw);
	w->begin_ns = 0;
}

/* The probe's name length argument (-1: NUL-terminated, or no name). */
static __always_inline __s32 name_len_of(struct pt_regs *ctx, struct __bpf_usdt_spec *spec,
					 const volatile struct ls_app_probe *p)
{
	long len;

	if (p->name_arg < 0 || p->name_len_arg < 0)
		return -1;
	len = arg_of(ctx, spec, p->name_len_arg);
	return len < 0 ? 0 : len > LS_APP_NAME_LEN ? LS_APP_NAME_LEN : len;
}

SEC("usdt")
int app_probe(struct pt_regs *ctx)
{
	LS_CHECK_STOPPED();
	__u64 id = bpf_get_current_pid_tgid(), now;
	__u32 tid = (__u32)id, idx, slot;
	struct task_struct *task = bpf_get_current_task_btf();
	const volatile struct ls_app_probe *p;
	struct __bpf_usdt_spec *spec;
	struct ls_app_task *t;
	struct ls_app_wait *w;

	spec = spec_of(ctx);
	if (!spec)
		return 0;
	idx = spec->usdt_cookie;
	if (idx >= LS_APP_PROBES)
		return 0;
	p = &app_probes[idx];
	slot = p->slot;
	if (slot >= LS_APP_SLOTS)
		return 0;
	switch (p->role) {
	case LS_APP_START:
		/* a task with waits passed the filter (targets stay targets) */
		t = bpf_task_storage_get(&app_waits, task, 0, 0);
		if (!t) {
			if (!id_is_target(id))
				return 0;
			t = bpf_task_storage_get(&app_waits, task, 0,
						 BPF_LOCAL_STORAGE_GET_F_CREATE);
		}
		count_fired(LS_APP_FIRED_START);
		if (!t) {
			ls_count_lost(&lost, LS_APP_LOST_WAITS_FULL);
			return 0;
		}
		w = &t->w[slot];
		w->probe = idx;
		w->mode = (__s32)arg_of(ctx, spec, p->mode_arg);
		for (int i = 0; i < LS_APP_IDS; i++)
			w->id[i] = (__u64)arg_of(ctx, spec, p->id_args[i]);
		w->name_ptr = (__u64)arg_of(ctx, spec, p->name_arg);
		w->name_len = name_len_of(ctx, spec, p);
		w->nvcsw = task->nvcsw;
		ls_sched_mark(&w->sched, task);
		w->begin_ns = bpf_ktime_get_ns(); /* after the reads: the wait's own */
		cover(task, slot);
		return 0;
	case LS_APP_DONE:
		now = bpf_ktime_get_ns();
		/* a task has waits only once it fired a start as a target (and
		 * targets stay targets): the filter is for those without (a
		 * comm or cgroup changed since counts as at the start) */
		t = bpf_task_storage_get(&app_waits, task, 0, 0);
		if (!t && !id_is_target(id))
			return 0;
		count_fired(LS_APP_FIRED_DONE);
		uncover(task, slot);
		if (!t)
			return 0;
		w = &t->w[slot];
		if (!w->begin_ns)
			return 0;
		count_fired(LS_APP_FIRED_PAIRED);
		end_wait(w, task, id, now, false);
		return 0;
	case LS_APP_POINT: {
		struct ls_app_key key;

		if (!id_is_target(id))
			return 0;
		now = bpf_ktime_get_ns();
		count_fired(LS_APP_FIRED_POINT);
		t = bpf_task_storage_get(&app_waits, task, 0, 0);
		if (t && t->w[slot].begin_ns) {
			count_fired(LS_APP_FIRED_ENDED);
			end_wait(&t->w[slot], task, id, now, true);
		}
		uncover(task, slot);
		key.pid = id >> 32;
		key.tid = tid;
		key.probe = idx;
		key.mode = (__s32)arg_of(ctx, spec, p->mode_arg);
		for (int i = 0; i < LS_APP_IDS; i++)
			key.id[i] = (__u64)arg_of(ctx, spec, p->id_args[i]);
		key.name_ptr = (__u64)arg_of(ctx, spec, p->name_arg);
		record(&key, name_len_of(ctx, spec, p), now, now, false, 0, 0, false);
		return 0;
	}
	}
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(app_follow_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	LS_CHECK_STOPPED();
	return follow_fork(parent->tgid, child->tgid);
}

/* Targets that exec'd since userspace last looked (`lockscope run -- CMD`:
 * the command, or a wrapper's child, may be an application with probes
 * that was not running when the source started). */
LS_HASH(execs, __u32, __u8, 256);

SEC("tp_btf/sched_process_exec")
int BPF_PROG(app_exec_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = p->tgid;
	__u8 one = 1;

	LS_CHECK_STOPPED();
	if (bpf_map_lookup_elem(&target_pids, &tgid))
		bpf_map_update_elem(&execs, &tgid, &one, BPF_ANY);
	return 0;
}
