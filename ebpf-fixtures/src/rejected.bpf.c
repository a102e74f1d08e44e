// SPDX-License-Identifier: GPL-2.0
// A program the verifier must reject: it reads far outside its context.
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

SEC("tracepoint/syscalls/sys_enter_mkdir")
int tracepoint_rejected(void *ctx)
{
	return *(volatile int *)((char *)ctx + 100000);
}

char _license[] SEC("license") = "GPL";
