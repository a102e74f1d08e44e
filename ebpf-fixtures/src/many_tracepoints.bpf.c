// SPDX-License-Identifier: GPL-2.0
// 100 tracepoint programs for the startup benchmark, 50 on each of two hooks: a tracepoint
// takes at most 64 programs (BPF_TRACE_MAX_PROGS).
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define TP(n, hook)                                    \
	SEC("tracepoint/syscalls/" hook)                   \
	int tp_##n(void *ctx) { return 0; }
#define TP10(n, hook) TP(n##0, hook) TP(n##1, hook) TP(n##2, hook) \
	TP(n##3, hook) TP(n##4, hook) TP(n##5, hook) TP(n##6, hook)    \
	TP(n##7, hook) TP(n##8, hook) TP(n##9, hook)

TP10(0, "sys_enter_getppid") TP10(1, "sys_enter_getppid") TP10(2, "sys_enter_getppid")
TP10(3, "sys_enter_getppid") TP10(4, "sys_enter_getppid")
TP10(5, "sys_exit_getppid") TP10(6, "sys_exit_getppid") TP10(7, "sys_exit_getppid")
TP10(8, "sys_exit_getppid") TP10(9, "sys_exit_getppid")

char _license[] SEC("license") = "GPL";
