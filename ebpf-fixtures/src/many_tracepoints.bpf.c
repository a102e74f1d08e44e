// SPDX-License-Identifier: GPL-2.0
// 100 tracepoint programs on one hook, for the startup benchmark.
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define TP(n)                                          \
	SEC("tracepoint/syscalls/sys_enter_getppid")       \
	int tp_##n(void *ctx) { return 0; }
#define TP10(n) TP(n##0) TP(n##1) TP(n##2) TP(n##3) TP(n##4) \
	TP(n##5) TP(n##6) TP(n##7) TP(n##8) TP(n##9)

TP10(0) TP10(1) TP10(2) TP10(3) TP10(4) TP10(5) TP10(6) TP10(7) TP10(8) TP10(9)

char _license[] SEC("license") = "GPL";
