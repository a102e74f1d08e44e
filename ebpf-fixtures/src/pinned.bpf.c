// SPDX-License-Identifier: GPL-2.0
// A map pinned by name, as libbpf and cilium/ebpf users declare it: `pinning` set to
// LIBBPF_PIN_BY_NAME in the map's BTF definition. `count_mkdir` counts mkdir calls of
// `filter_tid` in slot 0 of `shared_counts`, which every object pinning the same directory shares.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 filter_tid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shared_counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_mkdir")
int count_mkdir(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (filter_tid && tid != filter_tid)
		return 0;
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&shared_counts, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

char _license[] SEC("license") = "GPL";
