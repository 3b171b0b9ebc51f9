/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * window.bpf.h - the end of the measuring window, shared by every source.
 *
 * Userspace ends a report, trace or interval by writing 1 into `ls_stopped`
 * of every loaded object (one map update each, microseconds in all), before
 * it reads any map and before anything is detached: detaching is slow
 * (a uprobe or perf-event link costs an RCU grace period), so without the
 * flag sources detached late would keep counting after the window. Every
 * program returns at once when the flag is set.
 *
 * The flag lives alone in its own data section, so libbpf gives it its own
 * one-entry array map (name ending in ".stop") that userspace finds by name
 * in any object without knowing the object's layout.
 */
#ifndef __LOCKSCOPE_WINDOW_BPF_H
#define __LOCKSCOPE_WINDOW_BPF_H

volatile __u32 ls_stopped SEC(".data.stop") = 0;

/* First statement of every program. */
#define LS_CHECK_STOPPED()                                                     \
	do {                                                                   \
		if (ls_stopped)                                                \
			return 0;                                              \
	} while (0)

#endif /* __LOCKSCOPE_WINDOW_BPF_H */
