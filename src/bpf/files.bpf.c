// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * files.bpf.c - the open files of processes and the kernel addresses of
 * the locks that protect them, so that userspace can name a contended
 * lock by its file: a pipe's pipe_inode_info.mutex, an inode's i_rwsem,
 * its mapping's i_mmap_rwsem and its i_lock spinlock.
 *
 * A task_file iterator (Linux 5.8+; bpf_d_path in iterators 5.10+): run
 * by reading the iterator's fd, never attached to an event, so it costs
 * nothing between the reads. The kernel skips threads that share their
 * leader's file table, so each open file comes once per process.
 *
 * Only regular files, directories and pipes are written: sockets, devices
 * and anonymous inodes (one inode shared by every eventfd, epoll, ...)
 * would give names that say nothing of the lock.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "lockscope.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define S_IFMT 00170000
#define S_IFDIR 0040000
#define S_IFREG 0100000
#define S_IFIFO 0010000

const volatile __u32 self_tgid = 0;     /* skip lockscope's own files */
/* only tgids in `target_pids`: set by userspace (mapped .bss) for the
 * listings of a few processes' files */
volatile bool filter_pid = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} target_pids SEC(".maps");

/* the record and its path, written with one bpf_seq_write; the path
 * area is twice what bpf_d_path may fill, so that a length masked with
 * LS_PATH_LEN * 2 - 1 stays inside it (see below) */
struct file_out {
	struct ls_file_rec rec;
	char path[LS_PATH_LEN * 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct file_out);
} scratch SEC(".maps");

struct ls_file_rec ls_file_rec_type = {};

SEC("iter/task_file")
int task_files(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	__u32 zero = 0;

	if (!task || !file)
		return 0;
	__u32 tgid = task->tgid;
	if (tgid == self_tgid)
		return 0;
	if (filter_pid && !bpf_map_lookup_elem(&target_pids, &tgid))
		return 0;

	struct inode *inode = BPF_CORE_READ(file, f_inode);
	if (!inode)
		return 0;
	umode_t mode = BPF_CORE_READ(inode, i_mode);
	struct pipe_inode_info *pipe = BPF_CORE_READ(inode, i_pipe);
	__u32 kind;
	if ((mode & S_IFMT) == S_IFIFO && pipe)
		kind = LS_FILE_PIPE;
	else if ((mode & S_IFMT) == S_IFREG)
		kind = LS_FILE_REG;
	else if ((mode & S_IFMT) == S_IFDIR)
		kind = LS_FILE_DIR;
	else
		return 0;

	struct file_out *out = bpf_map_lookup_elem(&scratch, &zero);
	if (!out)
		return 0;
	struct ls_file_rec *r = &out->rec;
	/* addresses of members: CO-RE relocates the offsets (vmlinux.h has
	 * preserve_access_index), nothing is read */
	r->i_rwsem = (__u64)&inode->i_rwsem;
	r->i_lock = (__u64)&inode->i_lock;
	struct address_space *mapping = BPF_CORE_READ(inode, i_mapping);
	r->i_mmap_rwsem = mapping ? (__u64)&mapping->i_mmap_rwsem : 0;
	r->pipe_mutex = kind == LS_FILE_PIPE ? (__u64)&pipe->mutex : 0;
	r->ino = BPF_CORE_READ(inode, i_ino);
	r->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	r->pid = tgid;
	r->fd = ctx->fd;
	r->kind = kind;
	r->pad = 0;
	bpf_probe_read_kernel_str(r->comm, sizeof(r->comm), task->comm);
	long n = bpf_d_path(&file->f_path, out->path, LS_PATH_LEN);
	__u32 len = n > 0 && n <= LS_PATH_LEN ? (__u32)n : 0;
	/* clang turns the check above into one on n - 1 and then writes n;
	 * verifiers before 6.x cannot bound that (6.1: "R3 min value is
	 * negative"), so bound it again where the compiler cannot see */
	asm volatile("" : "+r"(len));
	len &= LS_PATH_LEN * 2 - 1;
	r->path_len = len;
	bpf_seq_write(seq, out, sizeof(out->rec) + len);
	return 0;
}
