/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * lockscope.h - the one definition of everything that crosses the
 * kernel/user boundary. BPF programs include it; Rust uses the types that
 * libbpf-cargo generates from the compiled objects' BTF (never a hand copy).
 *
 * Every struct here is padded by hand to a multiple of 8 bytes with explicit
 * fields so that the C and generated Rust layouts are identical.
 */
#ifndef __LOCKSCOPE_H
#define __LOCKSCOPE_H

#define LS_COMM_LEN 16
#define LS_SLAB_LEN 32

/* log2 histogram of nanoseconds: slot 0 counts 0 ns, slot k (k >= 1) counts
 * [2^(k-1), 2^k) ns, the last slot also everything above. 2^39 ns ~ 550 s. */
#define LS_HIST_SLOTS 40

/* Depth of the kernel stack taken at contention_end to find the caller.
 * Userspace skips BPF/tracing and lock-internal frames by symbol. */
#define LS_CALLER_DEPTH 8

/* When the caller stack is taken (ORC unwinding costs ~130 ns a frame). */
enum ls_caller_mode {
	LS_CALLER_NONE = 0,  /* never: callers unknown, cheapest */
	LS_CALLER_FIRST = 1, /* at the first wait of each (lock, thread, kind) */
	LS_CALLER_EVERY = 2, /* at every wait: exact, part of the key */
};

/* Depth of full stacks (--stacks): kernel and user, each. */
#define LS_STACK_DEPTH 48

/* Full stacks of waits (--stacks) and of the acquisitions of holds
 * (--hold-stacks), aggregated in the kernel. `flags` is the source's kind:
 * contention_begin flags, enum ls_ukind, ls_mm_flags & LS_MM_WRITE, or the
 * futex op. */
struct ls_stack_key {
	__u64 lock;
	__u32 pid;
	__u32 tid;
	__u32 flags;
	__s32 kstack_id; /* in `full_stacks`, < 0 when not taken */
	__s32 ustack_id; /* in `full_stacks`, < 0 when not taken */
	__u32 pad;
};

struct ls_stack_val {
	__u64 count;    /* waits that ended here (over the threshold or sampled) */
	__u64 total_ns;
	__u64 max_ns;
	__u64 hold_count; /* holds acquired here (over the threshold or sampled) */
	__u64 hold_total_ns;
	__u64 hold_max_ns;
};

/* Flags of lock:contention_begin, include/trace/events/lock.h (v5.19+). */
#define LS_LCB_F_SPIN (1U << 0)
#define LS_LCB_F_READ (1U << 1)
#define LS_LCB_F_WRITE (1U << 2)
#define LS_LCB_F_RT (1U << 3)
#define LS_LCB_F_PERCPU (1U << 4)
#define LS_LCB_F_MUTEX (1U << 5)

/* How a wait was spent (bit set). */
enum ls_wait_mode {
	LS_MODE_SPUN = 1,  /* a begin carried LCB_F_SPIN (optimistic or spinlock) */
	LS_MODE_SLEPT = 2, /* the task switched out voluntarily during the wait */
	LS_MODE_MAY_SLEEP = 4, /* scheduler readings taken (internal) */
};

/* What the lock is, where the kernel side can tell. */
enum ls_lock_class {
	LS_CLASS_NONE = 0,
	LS_CLASS_MMAP_LOCK = 1, /* the current task's mm->mmap_lock */
};

/* Counters of what the kernel side lost or could not see, indexed into the
 * per-CPU array `lost`. Userspace sums CPUs and prints every one. */
enum ls_lost {
	LS_LOST_MAP_FULL = 0,      /* aggregation map had no room for a new key */
	LS_LOST_END_NO_BEGIN = 1,  /* contention_end for a wait whose begin we missed */
	LS_LOST_STACK = 2,         /* caller stack could not be taken */
	LS_LOST_RINGBUF = 3,       /* event stream record dropped: ring buffer full */
	LS_LOST_NESTED = 4,        /* spin waits nested deeper than LS_CPU_NEST */
	LS_LOST_STORAGE = 5,       /* per-task storage could not be created */
	LS_LOST_REENTERED = 6,     /* a wait began in an interrupt that arrived while
				    * our own program ran on that CPU: its end would
				    * be skipped by the kernel, so it is not opened */
	LS_LOST_STALE = 7,         /* an open wait whose end never came (replaced) */
	LS_LOST_STACK_MAP_FULL = 8, /* --stacks (or first callers): no room for another stack key */
	LS_LOST__COUNT = 9,
};

/* In-kernel aggregation: one entry per (lock, caller stack, task, kind):
 * `agg_index` maps the key to its slot in the `agg` array. */
struct ls_agg_key {
	__u64 lock;     /* lock address (kernel pointer) */
	__s32 stack_id; /* caller stack in `stacks`, < 0 when not taken */
	__u32 tid;
	__u32 pid;      /* thread group id */
	__u32 flags;    /* contention_begin flags of the first begin, spin bit of
			 * a mutex removed (spinning is a mode, not a kind) */
};

struct ls_agg_val {
	__u64 count;     /* completed waits (including aborted) */
	__u64 total_ns;
	__u64 min_ns;
	__u64 max_ns;
	__u64 aborted;   /* contention_end ret != 0 (signal, timeout) */
	__u64 spun;      /* waits with LS_MODE_SPUN */
	__u64 slept;     /* waits with LS_MODE_SLEPT */
	__u64 cgroup_id; /* cgroup v2 id of the task when the key was created */
	__u64 offcpu_ns; /* of total_ns: time off CPU (asleep + runnable) */
	__u64 runq_ns;   /* of offcpu_ns: runnable but not running */
	__u32 lock_class;
	__s32 stack_id;  /* LS_CALLER_FIRST: caller stack of the key's first wait */
	char comm[LS_COMM_LEN];  /* thread name */
	char pcomm[LS_COMM_LEN]; /* process name (thread group leader's) */
	char slab[LS_SLAB_LEN];  /* slab cache of the lock's memory, if any */
	__u64 hist[LS_HIST_SLOTS];
};

/* One completed wait, sent through the ring buffer by the stream mode. */
struct ls_event {
	__u64 begin_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 end_ns;
	__u64 lock;
	__u64 cgroup_id;
	__u64 offcpu_ns; /* of the wait: off CPU (asleep + runnable) */
	__u64 runq_ns;   /* of the wait: runnable but not running */
	__u32 pid;
	__u32 tid;
	__u32 flags;
	__u32 mode;
	__s32 ret;
	__s32 stack_id;
	__u32 lock_class;
	__u32 pad;
	char comm[LS_COMM_LEN];
	char pcomm[LS_COMM_LEN];
};

/* Per-task (sleeping locks) or per-CPU (spin-only locks) open wait. */
struct ls_wait {
	__u64 lock;
	__u64 begin_ns;
	__u64 nvcsw; /* task->nvcsw at begin: a change means the task slept */
	__u32 flags;
	__u32 mode;
	__u32 tid;   /* who opened it: only the same thread may close it */
	__u32 pad;
	__s64 run_clock; /* run time + a constant, at begin (offcpu.bpf.h) */
	__u64 run_delay; /* sched_info.run_delay: grows while runnable, not running */
};

/* Spin-only waits open on one CPU: task context, then softirq, hardirq and
 * NMI may each nest one more (and an rwlock nests its wait_lock). */
#define LS_CPU_NEST 4

/* A CPU's memo of where a key's aggregate lives in the `agg` array, so
 * that a wait's end finds it without a hash lookup. Slots never move, so
 * an entry never goes stale; a collision only costs a lookup. */
#define LS_AGG_CACHE 32

struct ls_agg_slot {
	__u64 lock;
	__u64 id;       /* pid_tgid of the waiter */
	__u32 flags;
	__s32 stack_id;
	__u32 idx;      /* slot in `agg` + 1; 0: empty */
	__u32 pad;
};

struct ls_cpu_state {
	struct ls_wait slot[LS_CPU_NEST];
	__u32 depth; /* open slots */
	__u32 busy;  /* one of our programs is running on this CPU */
	__u64 sample_ctr; /* --stack-sample: waits seen on this CPU */
	struct ls_agg_slot cache[LS_AGG_CACHE];
};

/* The scheduler's accounting of a running task when a wait begins
 * (kernel side only; user-space locks, futex, mmap-lock): where the wait went is read from it at the
 * end, as contention.bpf.c does with struct ls_wait's same fields. */
struct ls_sched_mark {
	__s64 run_clock; /* run time + a constant (offcpu.bpf.h ls_run_clock) */
	__u64 run_delay; /* sched_info.run_delay */
};

/* ---- mmap-lock source (mmaplock.bpf.c) ------------------------------ */

/* Open mmap_lock operations of one task at a time: a task holds its own
 * mm's lock and may take another mm's (fork's dup_mmap, remote access). */
#define LS_MM_SLOTS 4

/* Flags of struct ls_mm_event. */
enum ls_mm_flags {
	LS_MM_WRITE = 1,     /* exclusive (mmap_write_lock*) */
	LS_MM_FAILED = 2,    /* acquire_returned with success == false */
	LS_MM_PARTIAL = 4,   /* its start or its acquisition was not seen */
	LS_MM_DOWNGRADE = 8, /* write hold ended by mmap_write_downgrade; or a
			      * read hold that began with one (wait 0) */
	LS_MM_CONTENDED = 16, /* the acquisition blocked or spun (mmaplock.bpf.c
			       * says how that is told): only these are waits */
};

/* Loss counters of the mmap-lock source (per-CPU array `lost`). */
enum ls_mm_lost {
	LS_MM_LOST_MAP_FULL = 0,  /* aggregation map had no room for a new key */
	LS_MM_LOST_STACK = 1,     /* caller stack could not be taken */
	LS_MM_LOST_RINGBUF = 2,   /* event stream record dropped */
	LS_MM_LOST_STORAGE = 3,   /* per-task storage could not be created */
	LS_MM_LOST_SLOTS = 4,     /* more than LS_MM_SLOTS operations open */
	LS_MM_LOST_STALE = 5,     /* an open operation whose end never came */
	LS_MM_LOST_STACK_MAP_FULL = 6, /* --stacks (or first callers): no room for another stack key */
	LS_MM_LOST__COUNT = 7,
};

/* One operation in progress: waiting (acquired_ns == 0) or holding. */
struct ls_mm_op {
	__u64 mm;          /* 0: slot free */
	__u64 begin_ns;    /* start_locking; 0 when not seen */
	__u64 acquired_ns; /* acquire_returned (success); 0 while waiting */
	__u32 flags;       /* enum ls_mm_flags */
	__s32 stack_id;    /* caller of the acquisition, LS_CALLER_EVERY */
	__s32 kstack_id;   /* --hold-stacks: full stacks at the acquisition */
	__s32 ustack_id;   /* (in `full_stacks`), < 0 when not taken */
	struct ls_sched_mark sched; /* at start_locking */
	__u64 offcpu_ns;   /* of the wait, set at acquire_returned: off CPU */
	__u64 runq_ns;     /* of the wait: runnable but not running */
};

struct ls_mm_task {
	struct ls_mm_op op[LS_MM_SLOTS];
	/* LS_CALLER_FIRST: the caller stack already taken for [read, write]
	 * acquisitions of this mm by this task */
	__u64 stack_mm[2];
	__s32 stack_id[2];
};

/* In-kernel aggregation: one entry per (mmap_lock, caller, thread, mode). */
struct ls_mm_key {
	__u64 lock;     /* &mm->mmap_lock, as the contention source sees it */
	__s32 stack_id; /* caller stack with LS_CALLER_EVERY, else -1 */
	__u32 tid;
	__u32 pid;
	__u32 write;    /* 1: write (exclusive), 0: read (shared) */
};

struct ls_mm_val {
	__u64 count;      /* contended acquisitions (LS_MM_CONTENDED) whose start
			   * was seen: the waits, counted when their hold ends */
	__u64 wait_total;
	__u64 wait_min;
	__u64 wait_max;
	__u64 holds;      /* holds whose acquisition and end were seen */
	__u64 hold_total;
	__u64 hold_min;
	__u64 hold_max;
	__u64 failed;     /* acquire_returned success == false */
	__u64 partial;    /* start or acquisition not seen: never timed */
	__u64 cgroup_id;  /* cgroup v2 id of the task when the key was created */
	__u64 memcg_id;   /* cgroup id of the mm's memory cgroup (0: none) */
	__u64 offcpu_ns;  /* of wait_total: off CPU (asleep + runnable) */
	__u64 runq_ns;    /* of offcpu_ns: runnable but not running */
	__u64 acquired;   /* every acquisition whose start was seen, contended
			   * or not (count is of these), when its hold ends */
	__u32 owner_pid;  /* tgid of mm->owner, the process the mm belongs to */
	__s32 stack_id;   /* LS_CALLER_FIRST: caller of the key's first wait */
	char comm[LS_COMM_LEN];  /* thread name */
	char ocomm[LS_COMM_LEN]; /* mm owner's process name */
	__u64 wait_hist[LS_HIST_SLOTS];
	__u64 hold_hist[LS_HIST_SLOTS];
};

/* One operation, sent through the ring buffer by the stream mode: when the
 * hold ends (release or downgrade), when an acquisition fails, or when a
 * release is seen whose acquisition was not. */
struct ls_mm_event {
	__u64 begin_ns;    /* start_locking; 0 when not seen */
	__u64 acquired_ns; /* acquire_returned (success or failure); 0: not seen */
	__u64 released_ns; /* release or downgrade; 0 for a failed one */
	__u64 lock;
	__u64 cgroup_id;
	__u64 memcg_id;
	__u64 offcpu_ns; /* of the wait (begin -> acquired): off CPU */
	__u64 runq_ns;   /* of the wait: runnable but not running */
	__u32 pid;
	__u32 tid;
	__u32 owner_pid;
	__u32 flags;     /* enum ls_mm_flags */
	__s32 stack_id;
	__u32 pad;
	char comm[LS_COMM_LEN];
	char ocomm[LS_COMM_LEN];
};

/* ---- sched source (sched.bpf.c) ------------------------------------- */

/* Loss counters of the sched source (per-CPU array `lost`). */
enum ls_rq_lost {
	LS_RQ_LOST_MAP_FULL = 0, /* aggregation map had no room for a new key */
	LS_RQ_LOST_RINGBUF = 1,  /* event stream record dropped */
	LS_RQ_LOST_STORAGE = 2,  /* per-task storage could not be created */
	LS_RQ_LOST__COUNT = 3,
	/* statistics after the losses, in the same map: */
	/* arrivals on a CPU whose switch-in the program did not see (the
	 * kernel skipped it: sched.bpf.c); each merged its wait with the next
	 * seen one's */
	LS_RQ_STAT_UNSEEN = 3,
	LS_RQ_STAT__END = 4,
};

/* Per task: the scheduler's own counters as of its last switch-in. */
struct ls_rq_task {
	__u64 run_delay; /* sched_info.run_delay including that arrival */
	__u64 nivcsw;    /* involuntary switches (preemptions, yields) */
	__u64 pcount;    /* sched_info.pcount (arrivals) before that arrival */
	__u32 seen;      /* 0: not switched in since tracing began */
	__u32 slot_cpu;  /* the CPU of `slot` */
	__u32 slot;      /* 1 + index in `agg` of (this thread, slot_cpu); 0: none */
	__u32 pad;
};

/* In-kernel aggregation: one entry per (thread, CPU it got), in an array
 * (`agg`, slots handed out by each CPU in turn, `agg_used` per CPU) found
 * through a hash (`agg_index`) only when a thread arrives on another CPU
 * than last time: most switch-ins index the array directly. */
struct ls_rq_key {
	__u32 tid;
	__u32 pid;
	__u32 cpu;
	__u32 pad;
};

struct ls_rq_val {
	struct ls_rq_key key; /* whose slot this is */
	__u64 count;   /* run-queue waits (enqueue -> on CPU), one per switch-in */
	__u64 total_ns;
	__u64 min_ns;
	__u64 max_ns;
	__u64 woken;   /* of count: not after an involuntary switch-out (so after
			* a wakeup), the first one seen of each thread included */
	__u64 cgroup_id;
	char comm[LS_COMM_LEN];  /* kept current: a new thread names itself
				  * after its first switch-ins */
	char pcomm[LS_COMM_LEN];
	__u64 hist[LS_HIST_SLOTS];
};

/* One run-queue wait, sent through the ring buffer by the stream mode. */
struct ls_rq_event {
	__u64 begin_ns; /* end_ns minus the wait (enqueued by wakeup or preemption) */
	__u64 end_ns;   /* switched in (CLOCK_MONOTONIC) */
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 cpu;
	__u32 woken;
	char comm[LS_COMM_LEN];
};

/* ---- user-space locks (ulock.bpf.c) and futex waits (futex.bpf.c) ---- */

/* The uprobe attach cookie of every pthread function: what it does. */
#define LS_UOP_KIND_MASK 0xfU
enum ls_ukind {
	LS_UKIND_MUTEX = 1,
	LS_UKIND_RWLOCK_READ = 2,
	LS_UKIND_RWLOCK_WRITE = 3,
	LS_UKIND_SPIN = 4,
	LS_UKIND_RWLOCK = 5, /* rwlock unlock: read or write, from the hold */
	LS_UKIND_FUTEX = 6,  /* futex.bpf.c rows and events */
};
#define LS_UOP_TRY (1U << 8)    /* trylock: EBUSY is a failure, not a wait */
#define LS_UOP_TIMED (1U << 9)  /* timed/clock lock: ETIMEDOUT is a failure */
#define LS_UOP_GLIBC (1U << 10) /* glibc layout: owner tid readable in the lock */
#define LS_UOP_COND (1U << 11)  /* pthread_cond_*wait: releases and retakes a mutex */
#define LS_UOP_RETRY (1U << 12) /* probed after a first `lock`-prefixed
				 * instruction (uprobes cannot step those), at
				 * a point a spinning call passes again: a
				 * second entry of the same call is a retry */

/* glibc x86_64 layouts (nptl/pthread_mutex_t __data, pthread_rwlock_t
 * __data): where the owner / writer tid lives. */
#define LS_GLIBC_MUTEX_OWNER_OFF 8
#define LS_GLIBC_RWLOCK_WRITER_OFF 24

/* Event flags (ls_uevent.flags, ls_fevent.flags). */
#define LS_UEV_FAILED (1U << 0)  /* the call returned an error: not acquired */
#define LS_UEV_PARTIAL (1U << 1) /* released, acquire not seen (began earlier) */
#define LS_UEV_SLEPT (1U << 2)   /* the thread switched out during the wait */
#define LS_UEV_FUTEX_PARTIAL (1U << 3) /* futex wait whose start was not seen */
#define LS_UEV_CONTENDED (1U << 4) /* the acquisition blocked or spun: a wait
				    * (else begin -> acquired is the call's
				    * own cost, not a wait) */

/* ls_ucall.flags: what the lock call's entry saw (ulock.bpf.c). */
#define LS_UCALL_BUSY (1U << 0)    /* the lock was taken by another thread */
#define LS_UCALL_CONFIRM (1U << 1) /* a glibc lll mutex: contended only if
				    * its word is 2 at the return */

/* Loss counters of ulock.bpf.c (`lost`, per CPU). */
enum ls_ulost {
	LS_ULOST_MAP_FULL = 0,  /* aggregation map had no room for a new key */
	LS_ULOST_HOLDS_FULL = 1, /* open-holds map full: that hold is not timed */
	LS_ULOST_RINGBUF = 2,
	LS_ULOST_STORAGE = 3,   /* per-task storage could not be created */
	LS_ULOST_STALE_CALL = 4, /* a lock call whose return never came */
	LS_ULOST_STACK = 5,     /* --stacks (or a lock's first caller): a user stack could not be taken */
	LS_ULOST_STACK_MAP_FULL = 6, /* --stacks (or first callers): no room for another stack key */
	LS_ULOST_FOLLOW = 7,    /* a new process of a target could not be
				 * followed (`target_pids` or `spawns` full) */
	LS_ULOST__COUNT = 8,
};

/* What happened to a traced process (ls_uspawn.what). */
enum ls_uspawn_what {
	LS_USPAWN_FORK = 1, /* `pid` was forked by `parent`, a target: now one */
	LS_USPAWN_EXEC = 2, /* `pid`, a target, exec'd: its libc may differ */
	LS_USPAWN_EXIT = 3, /* the last thread of `pid`, a target, exited */
};

/* A target's fork, exec or exit, told to user-locks' userspace (ring
 * buffer `spawns`), which attaches its per-process uprobes to new
 * processes and releases those of exited ones. */
struct ls_uspawn {
	__u64 ts_ns;   /* bpf_ktime_get_ns() at the event (CLOCK_MONOTONIC) */
	__u32 pid;
	__u32 parent;  /* FORK: the forking process; EXEC: the pid of the
			* thread that exec'd (not `pid`: not the leader) */
	__u32 what;    /* enum ls_uspawn_what */
	__u32 _pad;
};

/* Loss counters of futex.bpf.c (`lost`, per CPU), then its outcomes. */
enum ls_flost {
	LS_FLOST_MAP_FULL = 0,
	LS_FLOST_RINGBUF = 1,
	LS_FLOST_STORAGE = 2,
	LS_FLOST_STALE = 3,       /* an open wait whose exit never came */
	LS_FLOST__COUNT = 4,
	/* not losses: outcome totals, after the losses in the same array */
	LS_FSTAT_WOKEN = 4,       /* returned 0 (or >= 0 for futex_waitv) */
	LS_FSTAT_TIMED_OUT = 5,   /* -ETIMEDOUT */
	LS_FSTAT_INTERRUPTED = 6, /* -EINTR, -ERESTARTSYS and friends */
	LS_FSTAT_VALUE_CHANGED = 7, /* -EAGAIN/-EWOULDBLOCK: never slept */
	LS_FSTAT_COVERED = 8,     /* inside a traced pthread lock call: counted there */
	/* losses again, added later (after the outcomes, which keep their
	 * places) */
	LS_FLOST_STACK = 9,       /* --stacks (or a lock's first caller): a user stack could not be taken */
	LS_FLOST_STACK_MAP_FULL = 10, /* --stacks (or first callers): no room for another stack key */
	/* an outcome again: the sched backend did not see the switch-in that
	 * ended a woken wait (ended from the scheduler's own accounting) */
	LS_FSTAT_UNSEEN_SWITCH_IN = 11,
	LS_FSTAT__END = 12,
};

/* Per-task: the pthread lock call in progress (entry -> return). Shared
 * with futex.bpf.c (the same map, by fd): a futex wait while `lock` is set
 * and `covers` is 1 belongs to that call and is not counted again. */
struct ls_ucall {
	__u64 lock;
	__u64 begin_ns;
	__u64 nvcsw;
	__u64 caller;  /* return address of the call */
	__u32 op;      /* attach cookie */
	__u32 holder_tid;
	__u32 covers;  /* 1: futex waits inside are this call's wait */
	__u32 flags;   /* LS_UCALL_* */
	struct ls_sched_mark sched; /* at entry */
};

/* An acquired lock, by (lock, thread): opened at the lock call's return,
 * closed at the unlock call's entry; depth counts recursive acquisitions. */
struct ls_uhold_key {
	__u64 lock;
	__u32 tid;
	__u32 pad;
};

struct ls_uhold {
	__u64 begin_ns;    /* lock call entered (0: re-taken by a cond wait) */
	__u64 acquired_ns; /* lock call returned 0 */
	__u64 caller;
	__u32 kind;        /* enum ls_ukind */
	__u32 depth;
	__u32 holder_tid;  /* who held it when the wait began (0: nobody seen) */
	__u32 flags;       /* LS_UEV_SLEPT, LS_UEV_CONTENDED */
	__u64 offcpu_ns;   /* of the wait: off CPU (asleep + runnable) */
	__u64 runq_ns;     /* of the wait: runnable but not running */
	__s32 ustack_id;   /* --hold-stacks: user stack at the acquisition
			    * (in `full_stacks`), < 0 when not taken */
	__u32 pad;
};

/* In-kernel aggregation of pthread locks: (lock, caller, thread, kind). */
struct ls_uagg_key {
	__u64 lock;
	__u64 caller; /* return address of the lock call (0: not known) */
	__u32 tid;
	__u32 pid;
	__u32 kind;   /* enum ls_ukind */
	__u32 pad;
};

struct ls_uagg_val {
	__u64 count;      /* contended acquisitions (LS_UEV_CONTENDED): the waits */
	__u64 total_ns;   /* their wait: lock call entry -> successful return */
	__u64 min_ns;
	__u64 max_ns;
	__u64 hold_count; /* completed holds (outermost unlock) */
	__u64 hold_total_ns;
	__u64 hold_min_ns;
	__u64 hold_max_ns;
	__u64 failed;     /* trylock EBUSY, timedlock ETIMEDOUT, EDEADLK, ... */
	__u64 partial;    /* released, acquire not seen: never timed */
	__u64 slept;      /* waits during which the thread switched out */
	__u64 acquired;   /* every acquisition, contended or not (failed calls
			   * are not): count is of these */
	__u64 cgroup_id;
	__u64 offcpu_ns;  /* of total_ns: off CPU (asleep + runnable) */
	__u64 runq_ns;    /* of offcpu_ns: runnable but not running */
	char comm[LS_COMM_LEN];
	char pcomm[LS_COMM_LEN];
	__u64 hist[LS_HIST_SLOTS];
	__u64 hold_hist[LS_HIST_SLOTS];
};

/* Who blocked whom: contended waits that began while `holder_tid` held
 * `lock`. */
struct ls_uholder_key {
	__u64 lock;
	__u32 holder_tid;
	__u32 pid;
	__u32 kind;
	__u32 pad;
};

struct ls_uholder_val {
	__u64 waits;
	__u64 wait_ns;
};

/* One pthread lock operation (stream mode): sent at release, at a failed
 * call's return, or at a release whose acquire was not seen (partial). */
struct ls_uevent {
	__u64 begin_ns;    /* 0 when partial */
	__u64 acquired_ns; /* 0 when partial; the return time when failed */
	__u64 released_ns; /* 0 when failed */
	__u64 lock;
	__u64 caller;
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 kind;
	__u32 flags;       /* LS_UEV_* */
	__u32 holder_tid;
	__s32 ret;         /* the lock call's return value */
	__u64 offcpu_ns;   /* of the wait (begin -> acquired): off CPU */
	__u64 runq_ns;     /* of the wait: runnable but not running */
	char comm[LS_COMM_LEN];
};

/* What a futex wait is for, told at sys_enter from the futex op, the
 * value waited for and the words around the futex (glibc 2.36 x86_64
 * layouts, futex.bpf.c classify()). */
enum ls_fkind {
	LS_FKIND_OTHER = 0,        /* not recognised: any futex wait */
	LS_FKIND_MUTEX = 1,        /* glibc lll lock (pthread mutex, libc's own
				    * locks) or a PI mutex (LOCK_PI) */
	LS_FKIND_RWLOCK_READ = 2,  /* pthread_rwlock_t: a reader waits */
	LS_FKIND_RWLOCK_WRITE = 3, /* pthread_rwlock_t: a writer waits */
	LS_FKIND_COND = 4,         /* pthread_cond_t: not a lock */
};

/* Per-task: the futex wait in progress (sys_enter -> sys_exit). */
struct ls_fwait {
	__u64 uaddr;
	__u64 begin_ns;
	__u64 nvcsw;
	__u32 op;
	__u32 kind;   /* enum ls_fkind */
	__u32 holder; /* the lock's owner / writer tid at sys_enter (0: none) */
	__u32 off;    /* offset of the futex word in its lock / condvar: the
		       * lock's address (rows, names) is uaddr - off */
	struct ls_sched_mark sched; /* at sys_enter */
	/* the sched backend (design note of futex.bpf.c) */
	__u64 wake_ns; /* when it was woken (0: not yet) */
	__u32 waker;   /* the thread whose futex call (or exit) woke it; 0:
			* woken otherwise (a timeout, a signal) */
	__s32 ustack;  /* its user stack, taken as it slept (-1: none) */
	__u32 timed;   /* the call had a timeout */
	__u32 pad;
	/* at the wake: the scheduler's count of the task's arrivals on a CPU
	 * and its run delay (sched_info.pcount, .run_delay), for a wait whose
	 * switch-in the program did not see (design note of futex.bpf.c) */
	__u64 wake_pcount;
	__u64 wake_run_delay;
};

/* A target thread asleep in a futex wait when the sched backend started
 * (read by userspace from /proc/PID/task/TID/syscall), by tid. */
struct ls_fasleep {
	__u64 uaddr;
	__u32 op;
	__u32 pad;
};

/* The last thread that called a waking futex op on (pid, uaddr): the
 * releaser of a contended lock. */
struct ls_fwake_key {
	__u64 uaddr;
	__u32 pid;
	__u32 pad;
};

struct ls_fwake {
	__u64 ts_ns;
	__u32 tid;
	__u32 pad;
};

struct ls_fagg_key {
	__u64 uaddr;  /* the lock's or condvar's address (uaddr - off) */
	__u32 tid;
	__u32 pid;
	__u32 kind; /* enum ls_fkind */
	__u32 pad;
};

/* Who blocked whom (lock kinds only): woken waits by their waker (else
 * the owner at the wait's start). */
struct ls_fholder_key {
	__u64 uaddr;
	__u32 holder_tid;
	__u32 pid;
	__u32 kind;
	__u32 pad;
};

struct ls_fholder_val {
	__u64 waits;
	__u64 wait_ns;
};

struct ls_fagg_val {
	__u64 count;       /* completed waits (every outcome but value-changed) */
	__u64 total_ns;
	__u64 min_ns;
	__u64 max_ns;
	__u64 timed_out;
	__u64 interrupted;
	__u64 value_changed; /* -EAGAIN: returned at once, not a wait */
	__u64 partial;     /* waits whose start was not seen: never timed */
	__u64 slept;
	__u64 cgroup_id;
	__u64 offcpu_ns;   /* of total_ns: off CPU (asleep + runnable) */
	__u64 runq_ns;     /* of offcpu_ns: runnable but not running */
	char comm[LS_COMM_LEN];
	char pcomm[LS_COMM_LEN];
	__u64 hist[LS_HIST_SLOTS];
};

/* The user stack at a lock key's first wait (LS_CALLER_FIRST): the futex
 * call's ip and sp and the words above sp. Userspace finds the lock's
 * caller there: the first return address (after a call instruction) into
 * a file other than the one of ip (libc). glibc has no frame pointers, so
 * a frame-pointer walk from inside it skips that caller. */
#define LS_FSCAN_WORDS 64
struct ls_fscan {
	__u64 ip;
	__u64 sp;
	__u64 words[LS_FSCAN_WORDS];
};

struct ls_fevent {
	__u64 begin_ns; /* 0 when partial */
	__u64 end_ns;
	__u64 uaddr;
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 op;       /* futex op & FUTEX_CMD_MASK; 0x100 for futex_waitv */
	__s32 ret;
	__u32 flags;    /* LS_UEV_SLEPT, LS_UEV_FUTEX_PARTIAL */
	__u32 kind;     /* enum ls_fkind */
	__u32 holder_tid; /* the waker, else the owner at the start (0: none) */
	__u32 pad;
	__u64 offcpu_ns; /* of the wait: off CPU (asleep + runnable) */
	__u64 runq_ns;   /* of the wait: runnable but not running */
	char comm[LS_COMM_LEN];
};

/* ---- kernel mutex and rwsem function probes (kmutex.bpf.c) ---------- */

/* What a probed function is: a compile-time constant of each program. */
enum ls_kkind {
	LS_KKIND_MUTEX = 1,       /* mutex_lock*, mutex_trylock, mutex_unlock */
	LS_KKIND_RWSEM_READ = 2,  /* down_read*, up_read */
	LS_KKIND_RWSEM_WRITE = 3, /* down_write*, up_write, downgrade_write */
};
#define LS_KOP_KIND_MASK 0xfU
#define LS_KOP_TRY (1U << 8)  /* trylock: returns 1 when acquired, 0 when not */
#define LS_KOP_INTR (1U << 9) /* interruptible/killable: returns 0 or -EINTR */

/* Event flags (ls_kevent.flags). */
#define LS_KEV_FAILED (1U << 0)    /* a trylock that found the lock taken */
#define LS_KEV_ABORTED (1U << 1)   /* interrupted or killed: not acquired */
#define LS_KEV_PARTIAL (1U << 2)   /* released, acquisition not seen */
#define LS_KEV_SLEPT (1U << 3)     /* the task switched out while waiting */
#define LS_KEV_DOWNGRADED (1U << 4) /* write hold ended by downgrade_write */

/* Loss counters of kmutex.bpf.c (`lost`, per CPU). */
enum ls_klost {
	LS_KLOST_MAP_FULL = 0,   /* aggregation map had no room for a new key */
	LS_KLOST_HOLDS_FULL = 1, /* open-holds map full: that hold is not timed */
	LS_KLOST_RINGBUF = 2,
	LS_KLOST_STORAGE = 3,    /* per-task storage could not be created */
	LS_KLOST_STALE_CALL = 4, /* a lock call whose return never came (e.g. a
				  * kretprobe out of instances) */
	LS_KLOST_STACK = 5,      /* a stack could not be taken */
	LS_KLOST_STACK_MAP_FULL = 6, /* --stacks (or first callers): no room for another stack key */
	LS_KLOST__COUNT = 7,
};

/* Per task: the lock call in progress (entry -> return). A task sleeps in
 * at most one lock call at a time. */
struct ls_kcall {
	__u64 lock;
	__u64 begin_ns;
	__u64 nvcsw;
	__u32 op;         /* enum ls_kkind | LS_KOP_* */
	__u32 holder_tid; /* owner of the lock when the call began (0: none seen) */
};

/* An acquired lock by (lock, thread): opened at the lock call's return,
 * closed at the unlock; depth counts recursive read acquisitions. */
struct ls_khold_key {
	__u64 lock;
	__u32 tid;
	__u32 pad;
};

struct ls_khold {
	__u64 begin_ns;    /* lock call entered */
	__u64 acquired_ns; /* lock call returned with the lock */
	__u32 kind;        /* enum ls_kkind */
	__u32 depth;
	__u32 holder_tid;
	__u32 flags;       /* LS_KEV_SLEPT */
	__s32 stack_id;    /* caller stack (aggregation key), < 0: none */
	__s32 kstack_id;   /* --hold-stacks: the acquisition's kernel stack */
	__s32 ustack_id;   /* ... and user stack (`full_stacks`), < 0: none */
	__u32 pad;
};

/* In-kernel aggregation: (lock, caller, thread, kind). */
struct ls_kagg_key {
	__u64 lock;
	__s32 stack_id; /* caller stack with LS_CALLER_EVERY, else -1 */
	__u32 tid;
	__u32 pid;
	__u32 kind;     /* enum ls_kkind */
};

struct ls_kagg_val {
	__u64 count;      /* acquisitions (failed and aborted calls are not) */
	__u64 total_ns;   /* wait: lock call entry -> return with the lock */
	__u64 min_ns;
	__u64 max_ns;
	__u64 hold_count; /* completed holds */
	__u64 hold_total_ns;
	__u64 hold_min_ns;
	__u64 hold_max_ns;
	__u64 failed;     /* trylocks that found the lock taken */
	__u64 aborted;    /* interrupted or killed waits */
	__u64 partial;    /* released, acquisition not seen: never timed */
	__u64 slept;      /* waits during which the task switched out */
	__u64 contended;  /* waits that began while another task held it */
	__u64 cgroup_id;
	__u32 lock_class; /* enum ls_lock_class */
	__s32 stack_id;   /* LS_CALLER_FIRST: caller of the key's first wait */
	char comm[LS_COMM_LEN];
	char pcomm[LS_COMM_LEN];
	__u64 hist[LS_HIST_SLOTS];
	__u64 hold_hist[LS_HIST_SLOTS];
};

/* Who blocked whom: waits that began while `holder_tid` held `lock`. */
struct ls_kholder_key {
	__u64 lock;
	__u32 holder_tid;
	__u32 pid;
	__u32 kind;
	__u32 pad;
};

struct ls_kholder_val {
	__u64 waits;
	__u64 wait_ns;
};

/* One operation (stream mode): sent at release, at a failed or aborted
 * call's return, or at a release whose acquisition was not seen. */
struct ls_kevent {
	__u64 begin_ns;    /* 0 when partial */
	__u64 acquired_ns; /* 0 when partial; the return time when failed */
	__u64 released_ns; /* 0 when failed or aborted */
	__u64 lock;
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 kind;
	__u32 flags;       /* LS_KEV_* */
	__u32 holder_tid;
	__s32 ret;
	__s32 stack_id;
	__u32 lock_class;
	char comm[LS_COMM_LEN];
};

/* ---- scheduler pick-next function probes (picknext.bpf.c) ----------- */

enum ls_plost {
	LS_PLOST_MAP_FULL = 0,
	LS_PLOST_NO_ENTRY = 1, /* a return whose entry was not seen */
	LS_PLOST__COUNT = 2,
};

/* Time inside pick_next_task_fair, per (CPU, task that called schedule). */
struct ls_pick_key {
	__u32 cpu;
	__u32 tid;
	__u32 pid;
	__u32 pad;
};

struct ls_pick_val {
	__u64 count;
	__u64 total_ns;
	__u64 min_ns;
	__u64 max_ns;
	__u64 picked_none; /* returned no fair task (idle or another class) */
	__u64 cgroup_id;
	char comm[LS_COMM_LEN];
	__u64 hist[LS_HIST_SLOTS];
};

/* ---- names of file locks (files.bpf.c, a task_file iterator) --------- */

/* Longest path kept (bpf_d_path); longer paths are not named. */
#define LS_PATH_LEN 256

enum ls_file_kind {
	LS_FILE_REG = 1,
	LS_FILE_DIR = 2,
	LS_FILE_PIPE = 3, /* an inode with i_pipe: anonymous pipe or FIFO */
};

/* One open file of one process, written to the iterator's seq_file and
 * followed by `path_len` bytes of path (NUL included; 0: no path). The
 * addresses are those the lock sources report for the file's locks. */
struct ls_file_rec {
	__u64 i_rwsem;      /* &inode->i_rwsem */
	__u64 i_mmap_rwsem; /* &inode->i_mapping->i_mmap_rwsem, 0: no mapping */
	__u64 i_lock;       /* &inode->i_lock (spinlock) */
	__u64 pipe_mutex;   /* &inode->i_pipe->mutex, 0: not a pipe */
	__u64 ino;
	__u32 dev;          /* inode->i_sb->s_dev, the kernel's encoding */
	__u32 pid;          /* tgid of the process that has it open */
	__u32 fd;
	__u32 kind;         /* enum ls_file_kind */
	__u32 path_len;
	__u32 pad;
	char comm[LS_COMM_LEN];
};

/* ---- applications' own lock probes (applocks.bpf.c, USDT) ------------- */

/* Probes of the table at once (userspace's table of known probe pairs). */
#define LS_APP_PROBES 16
/* Number arguments that name a lock (a PostgreSQL lock tag has five). */
#define LS_APP_IDS 5
/* Bytes of a lock name read from the application (an LWLock tranche). */
#define LS_APP_NAME_LEN 32
/* Waits of one thread open at once (a lock wait may wait on an LWLock). */
#define LS_APP_SLOTS 2

enum ls_app_role {
	LS_APP_START = 1, /* a wait begins */
	LS_APP_DONE = 2,  /* the wait of the same slot ends */
	LS_APP_POINT = 3, /* an event without duration (deadlock found) */
};

/* How to read one probe, by the cookie it was attached with (its index in
 * `app_probes`); argument indices are -1 when unused. */
struct ls_app_probe {
	__u32 role;           /* enum ls_app_role */
	__u32 slot;           /* the start and done of a pair share it */
	__s8 name_arg;        /* a char * naming the lock */
	__s8 name_len_arg;    /* its length; -1: NUL-terminated */
	__s8 mode_arg;        /* the lock mode */
	__s8 id_args[LS_APP_IDS]; /* numbers naming the lock */
};

enum ls_app_lost {
	LS_APP_LOST_MAP_FULL = 0,
	LS_APP_LOST_RINGBUF = 1,
	LS_APP_LOST_WAITS_FULL = 2, /* no room to remember a wait's start */
	LS_APP_LOST__COUNT = 3,
};

/* What the probes delivered (`fired`, per CPU). */
enum ls_app_fired {
	LS_APP_FIRED_START = 0,
	LS_APP_FIRED_DONE = 1,
	LS_APP_FIRED_PAIRED = 2, /* dones whose start was seen */
	LS_APP_FIRED_POINT = 3,
	LS_APP_FIRED_ENDED = 4, /* open waits a point ended (no done came) */
	LS_APP_FIRED__COUNT = 5,
};

/* One open wait of a thread. */
struct ls_app_wait {
	__u64 begin_ns;       /* 0: slot free */
	__u64 id[LS_APP_IDS];
	__u64 name_ptr;       /* the name's address in the process, 0: none */
	__s32 mode;
	__u32 probe;          /* the start probe's index */
	__s32 name_len;       /* the name's length, -1: NUL-terminated */
	__u32 pad;
	struct ls_sched_mark sched; /* the waiter's, at the start */
	__u64 nvcsw;          /* its voluntary switches, at the start */
};

struct ls_app_task {
	struct ls_app_wait w[LS_APP_SLOTS];
};

/* The name is not part of the key: it is read (once) when the entry is
 * made, into the value; PostgreSQL's tranche names are constant strings,
 * one address per name in a process. */
struct ls_app_key {
	__u32 pid;
	__u32 tid;
	__u32 probe; /* the start (or point) probe's index */
	__s32 mode;
	__u64 id[LS_APP_IDS];
	__u64 name_ptr; /* the name's address in the process, 0: none */
};

struct ls_app_val {
	__u64 count;
	__u64 aborted; /* of `count`: ended by a point (PostgreSQL's deadlock
			* victim), no done probe */
	__u64 total_ns;
	__u64 min_ns;
	__u64 max_ns;
	__u64 cgroup_id;
	/* of `total_ns`: off CPU, and of that runnable (waiting for a CPU);
	 * the rest of the off-CPU time asleep (offcpu.bpf.h) */
	__u64 offcpu_ns;
	__u64 runq_ns;
	__u64 slept; /* of `count`: the waiter switched out voluntarily */
	char comm[LS_COMM_LEN];
	/* read at `name_ptr` when the entry was made; empty when BPF could
	 * not read it (a page the process has not touched since fork):
	 * userspace reads it */
	char name[LS_APP_NAME_LEN];
	__u64 hist[LS_HIST_SLOTS];
};

struct ls_app_event {
	__u64 begin_ns; /* == end_ns for a point */
	__u64 end_ns;
	__u64 cgroup_id;
	__u64 id[LS_APP_IDS];
	__u32 pid;
	__u32 tid;
	__u32 probe;
	__s32 mode;
	__u32 aborted; /* ended by a point, no done probe */
	__u32 slept;   /* the waiter switched out voluntarily meanwhile */
	__u64 name_ptr;
	__u64 offcpu_ns; /* of the wait: off CPU */
	__u64 runq_ns;   /* of that: runnable (waiting for a CPU) */
	char comm[LS_COMM_LEN];
	char name[LS_APP_NAME_LEN];
};

/*
 * kwait.bpf.c: the kernel-side edges of the deadlock detector's wait-for
 * graph, by waiting thread (tid).
 */
enum ls_kwait_kind {
	LS_KWAIT_MUTEX = 0,    /* a kernel mutex; `owner` from mutex.owner */
	LS_KWAIT_RWSEM = 1,    /* a kernel rwsem held for writing (rw_semaphore.owner) */
	LS_KWAIT_UFFD = 2,     /* a page fault waiting for its userfaultfd's resolver */
};

struct ls_kwait {
	__u64 lock;     /* the lock's address; for a fault, its userfaultfd_ctx */
	__u64 since_ns; /* when the wait began (CLOCK_MONOTONIC) */
	__u32 owner;    /* the holder's tid (for a fault: filled by userspace) */
	__u32 kind;     /* enum ls_kwait_kind */
	__u32 pid;      /* the waiting thread's process */
	__u32 pad;
};

#endif /* __LOCKSCOPE_H */
