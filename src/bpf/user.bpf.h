/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * user.bpf.h - kernel-only helpers shared by ulock.bpf.c (pthread uprobes)
 * and futex.bpf.c (futex syscall tracepoints): target filtering (from
 * target.bpf.h), the stream-mode setting, and the one map both objects use
 * (`ulock_call`, shared by fd: userspace loads the second object with the
 * first one's map).
 */
#ifndef __USER_BPF_H
#define __USER_BPF_H

#include "target.bpf.h"
#include "offcpu.bpf.h"

const volatile bool emit_events = false;   /* stream mode: ring buffer records */

/* The pthread lock call in progress per task (see struct ls_ucall). */
LS_TASK_STORAGE(ulock_call, struct ls_ucall);

/* Whether the current task is traced. */
static __always_inline bool is_target(void)
{
	return current_is_target();
}

#endif /* __USER_BPF_H */
