/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * bits.bpf.h - small pure helpers shared by every object (as libbpf-tools'
 * bits.bpf.h): no maps, no settings, no helper calls.
 */
#ifndef __LOCKSCOPE_BITS_BPF_H
#define __LOCKSCOPE_BITS_BPF_H

#include "lockscope.h"

/* Slot 0 counts 0 ns, slot k counts [2^(k-1), 2^k) ns (see lockscope.h). */
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

/* Adds `ns` to a log2 histogram of LS_HIST_SLOTS counters. */
static __always_inline void ls_hist_add(__u64 *hist, __u64 ns)
{
	__u32 slot = log2_slot(ns);

	barrier_var(slot); /* keep the bounds check on the register used below */
	if (slot < LS_HIST_SLOTS)
		hist[slot] += 1;
}

/* Adds a span (a wait or a hold) of `ns` to a count, total, minimum,
 * maximum and histogram (one writer at a time: no atomics). */
static __always_inline void ls_add_span(__u64 *count, __u64 *total, __u64 *min,
					__u64 *max, __u64 *hist, __u64 ns)
{
	*count += 1;
	*total += ns;
	if (ns < *min)
		*min = ns;
	if (ns > *max)
		*max = ns;
	ls_hist_add(hist, ns);
}

/* A wait of `ns` into an aggregate with count, total_ns, min_ns, max_ns
 * and hist; a hold into one with the same fields prefixed hold_. */
#define LS_ADD_WAIT(val, ns)                                                   \
	ls_add_span(&(val)->count, &(val)->total_ns, &(val)->min_ns,           \
		    &(val)->max_ns, (val)->hist, ns)
#define LS_ADD_HOLD(val, ns)                                                   \
	ls_add_span(&(val)->hold_count, &(val)->hold_total_ns,                 \
		    &(val)->hold_min_ns, &(val)->hold_max_ns, (val)->hold_hist, ns)

#endif /* __LOCKSCOPE_BITS_BPF_H */
