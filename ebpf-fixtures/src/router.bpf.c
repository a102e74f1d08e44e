// SPDX-License-Identifier: GPL-2.0
// Routers: `router_entry` counts in the inner map that `outer[0]` routes to (map router), then
// tail-calls `jump_table[1]` (tail-call router), which counts in `tail_hits`.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 filter_tid = 0;

struct inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} inner_a SEC(".maps"), inner_b SEC(".maps"), tail_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner_map);
} outer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} jump_table SEC(".maps");

static __always_inline int mine(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	return !filter_tid || tid == filter_tid;
}

SEC("tracepoint/syscalls/sys_enter_mkdir")
int router_entry(void *ctx)
{
	if (!mine())
		return 0;
	__u32 key = 0;
	void *inner = bpf_map_lookup_elem(&outer, &key);
	if (inner) {
		__u64 *v = bpf_map_lookup_elem(inner, &key);
		if (v)
			__sync_fetch_and_add(v, 1);
	}
	bpf_tail_call(ctx, &jump_table, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mkdir")
int tail_target(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&tail_hits, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

char _license[] SEC("license") = "GPL";
