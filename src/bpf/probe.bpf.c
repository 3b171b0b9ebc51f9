// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* probe.bpf.c - tiny programs `lockscope doctor` loads one at a time to find
 * out by trying what this kernel allows. (Filled in by the doctor work.) */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/sched_switch")
int BPF_PROG(probe_tp_btf)
{
	return 0;
}
