// SPDX-License-Identifier: GPL-2.0
// A bypass placeholder the manager cannot patch: it comes after other work, so the registers
// to save are unknown (the Go library refuses it too).
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} program_bypassed SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_mkdir")
int late_bypass(void *ctx)
{
	__u64 pid = bpf_get_current_pid_tgid();
	unsigned long bypass_program;
	asm("%0 = bypass_program ll" : "=r"(bypass_program)::"memory");
	return pid == 1;
}

char _license[] SEC("license") = "GPL";
