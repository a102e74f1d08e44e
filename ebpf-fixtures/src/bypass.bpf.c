// SPDX-License-Identifier: GPL-2.0
// Bypass, the way the Go ebpf-manager's users opt in: a `program_bypassed` array and programs
// opening with an `ld_imm64` of the undefined symbol `bypass_program`, which the manager
// replaces with a lookup of the program's index in `program_bypassed` (return 0 when set).
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "go_compat.h"


struct bpf_map_def SEC("maps/program_bypassed") program_bypassed = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1,
};

struct bpf_map_def SEC("maps/counts") counts = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 2,
};

#define CHECK_BPF_PROGRAM_BYPASSED()                                                       \
	unsigned long bypass_program;                                                      \
	asm("%0 = bypass_program ll" : "=r"(bypass_program)::"memory");


static __always_inline int count(__u32 slot)
{
	__u64 tid;
	LOAD_CONSTANT("filter_tid", tid);
	if (tid && (__u32)bpf_get_current_pid_tgid() != (__u32)tid)
		return 0;
	__u64 *v = bpf_map_lookup_elem(&counts, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mkdir")
int bypassable_mkdir(void *ctx)
{
	CHECK_BPF_PROGRAM_BYPASSED();
	return count(0);
}

SEC("tracepoint/syscalls/sys_enter_rmdir")
int bypassable_rmdir(void *ctx)
{
	CHECK_BPF_PROGRAM_BYPASSED();
	return count(1);
}

char _license[] SEC("license") = "GPL";
