// SPDX-License-Identifier: GPL-2.0
// A TCP congestion control in eBPF, written as libbpf users write struct_ops (vmlinux.h, CO-RE,
// `SEC(".struct_ops")`, Linux 5.6): the kernel calls these programs through the
// `tcp_congestion_ops` the map `ebpfm_cc` holds once it is registered. Built again with
// EBPFM_CC_LINK as struct_ops_link.bpf.o, whose map is in `.struct_ops.link` (Linux 6.4): a
// link registers it, and the kernel unregisters it when the link goes.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum { INITS, SSTHRESH, CONG_AVOID, UNDO, MKDIRS, SLOTS };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} cc_calls SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&cc_calls, &slot);
	if (n)
		__sync_fetch_and_add(n, 1);
}

// The kernel passes the member's arguments as an array of u64 (BPF_PROG's ctx).
SEC("struct_ops/ebpfm_cc_init")
int ebpfm_cc_init(unsigned long long *ctx)
{
	count(INITS);
	return 0;
}

SEC("struct_ops/ebpfm_cc_ssthresh")
__u32 ebpfm_cc_ssthresh(unsigned long long *ctx)
{
	struct tcp_sock *tp = (struct tcp_sock *)ctx[0];
	__u32 half = tp->snd_cwnd >> 1;

	count(SSTHRESH);
	return half > 2 ? half : 2;
}

SEC("struct_ops/ebpfm_cc_cong_avoid")
int ebpfm_cc_cong_avoid(unsigned long long *ctx)
{
	count(CONG_AVOID);
	return 0;
}

SEC("struct_ops/ebpfm_cc_undo_cwnd")
__u32 ebpfm_cc_undo_cwnd(unsigned long long *ctx)
{
	struct tcp_sock *tp = (struct tcp_sock *)ctx[0];

	count(UNDO);
	return tp->snd_cwnd;
}

// A probe beside the map: a start whose attach fails must leave the map registrable again.
SEC("tracepoint/syscalls/sys_enter_mkdir")
int ebpfm_cc_mkdir(void *ctx)
{
	count(MKDIRS);
	return 0;
}

#ifdef EBPFM_CC_LINK
#define CC_SECTION ".struct_ops.link"
#define CC_NAME "ebpfm_cc_link"
#else
#define CC_SECTION ".struct_ops"
#define CC_NAME "ebpfm_cc"
#endif

SEC(CC_SECTION)
struct tcp_congestion_ops ebpfm_cc = {
	.init = (void *)ebpfm_cc_init,
	.ssthresh = (void *)ebpfm_cc_ssthresh,
	.cong_avoid = (void *)ebpfm_cc_cong_avoid,
	.undo_cwnd = (void *)ebpfm_cc_undo_cwnd,
	.name = CC_NAME,
};

char LICENSE[] SEC("license") = "GPL";
