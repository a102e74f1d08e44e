// SPDX-License-Identifier: GPL-2.0
// The classic hello world: a kprobe on vfs_mkdir, and its tracepoint twin for
// kernels without kprobes. Both print the same line to trace_pipe.
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

SEC("kprobe/vfs_mkdir")
int kprobe_vfs_mkdir(void *ctx)
{
	bpf_printk("mkdir (vfs hook point)\n");
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mkdir")
int tracepoint_sys_enter_mkdir(void *ctx)
{
	bpf_printk("mkdir (vfs hook point)\n");
	return 0;
}

char _license[] SEC("license") = "GPL";
