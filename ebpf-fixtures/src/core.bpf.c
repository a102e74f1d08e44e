// SPDX-License-Identifier: GPL-2.0
// A CO-RE program: it returns the byte offset of `task_struct.pid` in the kernel types it was
// relocated against (the running kernel's, or a BTF file given with Options::kernel_btf).
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct task_struct {
	int pid;
} __attribute__((preserve_access_index));

SEC("classifier")
int core_pid_offset(struct __sk_buff *skb)
{
	// BPF_FIELD_BYTE_OFFSET (0): the field's offset, relocated at load.
	return __builtin_preserve_field_info(((struct task_struct *)0)->pid, 0);
}

char _license[] SEC("license") = "GPL";
