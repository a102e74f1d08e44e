// SPDX-License-Identifier: GPL-2.0
// A legacy map of maps, as Go users declare it: `outer` says nothing of its inner maps; the
// Go `InnerOuterMapSpecs` (here Options::inner_outer_map_specs) names `inner_template` as the
// definition they follow. `mom_entry` counts in the map routed at `outer[0]`.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "go_compat.h"


struct bpf_map_def SEC("maps") inner_template = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 1,
};

struct bpf_map_def SEC("maps") inner_counts = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 1,
};

struct bpf_map_def SEC("maps/outer") outer = {
	.type = BPF_MAP_TYPE_ARRAY_OF_MAPS,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 2,
};


SEC("tracepoint/syscalls/sys_enter_mkdir")
int mom_entry(void *ctx)
{
	__u64 tid;
	LOAD_CONSTANT("filter_tid", tid);
	if (tid && (__u32)bpf_get_current_pid_tgid() != (__u32)tid)
		return 0;
	__u32 key = 0;
	void *inner = bpf_map_lookup_elem(&outer, &key);
	if (!inner)
		return 0;
	__u64 *v = bpf_map_lookup_elem(inner, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

char _license[] SEC("license") = "GPL";
