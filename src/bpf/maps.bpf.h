/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * maps.bpf.h - map helpers and the standard map declarations shared by
 * every object (as libbpf-tools' maps.bpf.h).
 *
 * Every object counts what it could not record in a per-CPU array `lost`
 * (LS_LOST_MAP(its __COUNT)), indexed by its own LS_*LOST_* values;
 * ls_count_lost(&lost, what) adds one.
 */
#ifndef __LOCKSCOPE_MAPS_BPF_H
#define __LOCKSCOPE_MAPS_BPF_H

#ifndef EEXIST
#define EEXIST 17
#endif

/* ---- declarations: one line a map ------------------------------------ */

/* A map `name` of `map_type` with `entries` (key -> value). */
#define LS_KV_MAP(name, map_type, key_t, val_t, entries)                       \
	struct {                                                               \
		__uint(type, map_type);                                        \
		__uint(max_entries, entries);                                  \
		__type(key, key_t);                                            \
		__type(value, val_t);                                          \
	} name SEC(".maps")

/* A hash map `name` of `entries` (key -> value). */
#define LS_HASH(name, key_t, val_t, entries)                                   \
	LS_KV_MAP(name, BPF_MAP_TYPE_HASH, key_t, val_t, entries)

/* Per-task storage `name` of `val_t` (created on demand). */
#define LS_TASK_STORAGE(name, val_t)                                           \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_TASK_STORAGE);                       \
		__uint(map_flags, BPF_F_NO_PREALLOC);                          \
		__type(key, int);                                              \
		__type(value, val_t);                                          \
	} name SEC(".maps")

/* A per-CPU array `name` of `entries` values. */
#define LS_PERCPU_ARRAY(name, val_t, entries)                                  \
	LS_KV_MAP(name, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, val_t, entries)

/* An array `name` of `entries` values. */
#define LS_ARRAY(name, val_t, entries)                                         \
	LS_KV_MAP(name, BPF_MAP_TYPE_ARRAY, __u32, val_t, entries)

/* A ring buffer `name` of `bytes`. */
#define LS_RINGBUF(name, bytes)                                                \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                            \
		__uint(max_entries, bytes);                                    \
	} name SEC(".maps")

/* A stack trace map `name` of `entries` stacks of `depth` frames. */
#define LS_STACK_TRACE(name, entries, depth)                                   \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_STACK_TRACE);                        \
		__uint(max_entries, entries);                                  \
		__uint(key_size, sizeof(__u32));                               \
		__uint(value_size, (depth) * sizeof(__u64));                   \
	} name SEC(".maps")

/*
 * A stack id taken into `spill` instead of the main stack map: the main
 * map's bucket for the stack's hash held another stack (bpf_get_stackid's
 * -EEXIST, a hash collision; a stack map never replaces a bucket unless
 * told to, which would silently re-point the ids already aggregated).
 */
#define LS_SPILL_ID (1 << 30)

/* bpf_get_stackid into `map`, or, on a collision there, into `spill`. */
static __always_inline __s32 ls_stackid(void *ctx, void *map, void *spill,
					__u64 flags)
{
	__s32 id = bpf_get_stackid(ctx, map, flags);

	if (id == -EEXIST) {
		id = bpf_get_stackid(ctx, spill, flags);
		if (id >= 0)
			id |= LS_SPILL_ID;
	}
	return id;
}

/* The object's loss counters: `lost`, `count` per-CPU counters. */
#define LS_LOST_MAP(count) LS_PERCPU_ARRAY(lost, __u64, count)

/* ---- helpers --------------------------------------------------------- */

/* Adds `n` to counter `what` of a loss map (`&lost`). */
static __always_inline void ls_count_lost_n(void *lost_map, __u32 what, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(lost_map, &what);

	if (v)
		*v += n;
}

/* Adds one to counter `what` of a loss map (`&lost`). */
static __always_inline void ls_count_lost(void *lost_map, __u32 what)
{
	ls_count_lost_n(lost_map, what, 1);
}

/* `size` bytes of ring buffer `rb`; NULL when it is full, counted as
 * `what` in `lost_map`. */
static __always_inline void *ls_reserve(void *rb, __u64 size, void *lost_map, __u32 what)
{
	void *e = bpf_ringbuf_reserve(rb, size, 0);

	if (!e)
		ls_count_lost(lost_map, what);
	return e;
}

/* The start of an event writer: returns from it unless stream mode is on
 * (`emit_events`) and a record `*e` fits in `events` (a full ring counts
 * as `what` in `lost`). */
#define LS_RESERVE_EVENT(e, what)                                             \
	do {                                                                   \
		if (!emit_events)                                              \
			return;                                                \
		e = ls_reserve(&events, sizeof(*e), &lost, what);              \
		if (!e)                                                        \
			return;                                                \
	} while (0)

/* `slot` = `task`'s storage in `map`, created when missing; when none can
 * be had, counts `what` in `lost` and returns (`...`: the value) from the
 * caller. */
#define LS_TASK_SLOT(slot, map, task, what, ...)                              \
	do {                                                                   \
		slot = bpf_task_storage_get(map, task, 0,                      \
					    BPF_LOCAL_STORAGE_GET_F_CREATE);   \
		if (!slot) {                                                   \
			ls_count_lost(&lost, what);                            \
			return __VA_ARGS__;                                    \
		}                                                              \
	} while (0)

/* Entry 0 of a one-entry per-CPU array: a value too big for the stack. */
static __always_inline void *ls_scratch(void *map)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(map, &zero);
}

/* The start of a look-up-or-create: returns `key`'s value in `map` from
 * the caller when it is there, else points `init` at the zeroed scratch
 * value of `zero_map` (returns NULL without one) for the caller to fill and
 * ls_insert. */
#define LS_LOOKUP_OR_SCRATCH(map, key, init, zero_map)                        \
	do {                                                                   \
		void *found_ = bpf_map_lookup_elem(map, key);                  \
		if (found_)                                                    \
			return found_;                                         \
		init = ls_scratch(zero_map);                                   \
		if (!init)                                                     \
			return NULL;                                           \
	} while (0)

/* Inserts `init` under `key` unless the key is there already and returns
 * the map's value; NULL when the map is full, counted as `what` in
 * `lost_map`. */
static __always_inline void *ls_insert(void *map, const void *key, const void *init,
				       void *lost_map, __u32 what)
{
	long err = bpf_map_update_elem(map, key, init, BPF_NOEXIST);

	if (err && err != -EEXIST) {
		ls_count_lost(lost_map, what);
		return NULL;
	}
	return bpf_map_lookup_elem(map, key);
}

/* The value of `key`, inserted as `init` when missing; NULL when the map
 * is full (counted as `what` in `lost_map`). */
static __always_inline void *ls_lookup_or_init(void *map, const void *key,
					       const void *init, void *lost_map,
					       __u32 what)
{
	void *val = bpf_map_lookup_elem(map, key);

	if (val)
		return val;
	return ls_insert(map, key, init, lost_map, what);
}

/* The same without counting a full map (where that is not a loss). */
static __always_inline void *ls_lookup_or_try_init(void *map, const void *key,
						   const void *init)
{
	void *val = bpf_map_lookup_elem(map, key);

	if (val)
		return val;
	bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

#endif /* __LOCKSCOPE_MAPS_BPF_H */
