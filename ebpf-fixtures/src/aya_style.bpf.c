// SPDX-License-Identifier: GPL-2.0
// Written the way aya-ebpf 0.2 lays out a Rust program (`#[kprobe]`, `#[tracepoint]`,
// `#[map]`): bare `kprobe` and `tracepoint` sections that name no target (the loader gives it),
// and maps in the `maps` section as aya's 7-field `bpf_map_def` (type, key_size, value_size,
// max_entries, map_flags, id, pinning), named like Rust statics. `HITS[0]` counts the kprobe,
// `HITS[1]` the tracepoint, for the thread `FILTER_TID`.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct aya_map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
	__u32 id;
	__u32 pinning;
};

struct aya_map_def HITS SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 2,
};

volatile const __u32 FILTER_TID = 0;

static __always_inline void count(__u32 slot)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (FILTER_TID && tid != FILTER_TID)
		return;
	__u64 *v = bpf_map_lookup_elem(&HITS, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("kprobe")
int aya_kprobe(void *ctx)
{
	count(0);
	return 0;
}

SEC("tracepoint")
int aya_tracepoint(void *ctx)
{
	count(1);
	return 0;
}

char _license[] SEC("license") = "GPL";
