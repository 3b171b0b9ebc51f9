/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * window.bpf.h - the end of the measuring window, shared by every source.
 *
 * Every object loads with `ls_stopped` set: its programs return at once.
 * Userspace clears it in every source once all of them are attached (the
 * window opens for all at one instant, however long attaching the later
 * sources took) and sets it again in every source when a report, trace or
 * `run` ends (one map update each, microseconds in all), before it reads
 * any map and before anything is detached: detaching is slow (a uprobe or
 * perf-event link costs an RCU grace period), so without the flag sources
 * detached late would keep counting after the window.
 *
 * The flag lives alone in its own data section, so libbpf gives it its own
 * one-entry array map (name ending in ".stop") that userspace finds by name
 * in any object without knowing the object's layout.
 */
#ifndef __LOCKSCOPE_WINDOW_BPF_H
#define __LOCKSCOPE_WINDOW_BPF_H

volatile __u32 ls_stopped SEC(".data.stop") = 1;

/* First statement of every program. */
#define LS_CHECK_STOPPED()                                                     \
	do {                                                                   \
		if (ls_stopped)                                                \
			return 0;                                              \
	} while (0)

#endif /* __LOCKSCOPE_WINDOW_BPF_H */
