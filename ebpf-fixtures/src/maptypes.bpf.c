// SPDX-License-Identifier: GPL-2.0
// One map of each type a libbpf user declares today (vmlinux.h, BTF-defined maps), with the
// kernel that added the type, and programs that use the newer ones on the mkdir syscalls of the
// process named by `filter_tgid`.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

volatile const __u32 filter_tgid = 0;

struct lpm_v4_key {
	__u32 prefixlen;
	__u32 addr;
};

#define MAP(kind, name, k, v, entries, flags)        \
	struct {                                     \
		__uint(type, kind);                  \
		__uint(max_entries, entries);        \
		__uint(map_flags, flags);            \
		__type(key, k);                      \
		__type(value, v);                    \
	} name SEC(".maps")

#define SIZED(kind, name, k, v, entries)             \
	struct {                                     \
		__uint(type, kind);                  \
		__uint(max_entries, entries);        \
		__uint(key_size, k);                 \
		__uint(value_size, v);               \
	} name SEC(".maps")

#define KEYLESS(kind, name, v, entries)              \
	struct {                                     \
		__uint(type, kind);                  \
		__uint(max_entries, entries);        \
		__type(value, v);                    \
	} name SEC(".maps")

MAP(BPF_MAP_TYPE_LPM_TRIE, prefixes, struct lpm_v4_key, __u32, 16, BPF_F_NO_PREALLOC); // 4.11
SIZED(BPF_MAP_TYPE_CGROUP_ARRAY, cgroups, 4, 4, 1);                                   // 4.8
SIZED(BPF_MAP_TYPE_DEVMAP, devices, 4, 4, 4);                                          // 4.14
SIZED(BPF_MAP_TYPE_SOCKMAP, sockets, 4, 4, 4);                                         // 4.14
SIZED(BPF_MAP_TYPE_CPUMAP, cpus, 4, 4, 4);                                             // 4.15
SIZED(BPF_MAP_TYPE_XSKMAP, xsks, 4, 4, 4);                                             // 4.18
SIZED(BPF_MAP_TYPE_SOCKHASH, socket_hash, 4, 4, 4);                                    // 4.18
KEYLESS(BPF_MAP_TYPE_QUEUE, tid_queue, __u32, 16);                                     // 4.20
KEYLESS(BPF_MAP_TYPE_STACK, tid_stack, __u32, 16);                                     // 4.20
MAP(BPF_MAP_TYPE_SK_STORAGE, sk_marks, int, __u64, 0, BPF_F_NO_PREALLOC);              // 5.2
SIZED(BPF_MAP_TYPE_DEVMAP_HASH, device_hash, 4, 4, 4);                                 // 5.4
MAP(BPF_MAP_TYPE_INODE_STORAGE, inode_marks, int, __u64, 0, BPF_F_NO_PREALLOC);        // 5.10
MAP(BPF_MAP_TYPE_TASK_STORAGE, task_counts, int, __u64, 0, BPF_F_NO_PREALLOC);         // 5.11
KEYLESS(BPF_MAP_TYPE_BLOOM_FILTER, seen_tids, __u32, 64);                              // 5.16
MAP(BPF_MAP_TYPE_CGRP_STORAGE, cgroup_marks, int, __u64, 0, BPF_F_NO_PREALLOC);        // 6.2

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);                                     // 6.1
	__uint(max_entries, 4096 * 4);
} requests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARENA);                                            // 6.9
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 2);
} arena SEC(".maps");

// Results: [0] drained records, [1] their sum, [2] the task storage count of the last task.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} drained SEC(".maps");

// sys_enter(struct pt_regs *regs, long id): mkdir (83) or mkdirat (258) of filter_tgid.
static __always_inline int mine(unsigned long long *ctx)
{
	if (ctx[1] != 83 && ctx[1] != 258)
		return 0;
	return (bpf_get_current_pid_tgid() >> 32) == filter_tgid;
}

SEC("tp_btf/sys_enter")
int count_in_task_storage(unsigned long long *ctx)
{
	if (!mine(ctx))
		return 0;
	__u64 *n = bpf_task_storage_get(&task_counts, bpf_get_current_task_btf(), 0,
					 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!n)
		return 0;
	__sync_fetch_and_add(n, 1);
	__u32 slot = 2;
	__u64 *out = bpf_map_lookup_elem(&drained, &slot);
	if (out)
		*out = *n;
	return 0;
}

SEC("tp_btf/sys_enter")
int push_tid(unsigned long long *ctx)
{
	if (!mine(ctx))
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_push_elem(&tid_queue, &tid, 0);
	bpf_map_push_elem(&tid_stack, &tid, 0);
	return 0;
}

SEC("tp_btf/sys_enter")
int add_to_bloom(unsigned long long *ctx)
{
	if (!mine(ctx))
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_push_elem(&seen_tids, &tid, 0);
	return 0;
}

static long drain_one(struct bpf_dynptr *record, void *ctx)
{
	__u64 value = 0;
	if (bpf_dynptr_read(&value, sizeof(value), record, 0, 0))
		return 1;
	__u32 count = 0, sum = 1;
	__u64 *c = bpf_map_lookup_elem(&drained, &count);
	__u64 *s = bpf_map_lookup_elem(&drained, &sum);
	if (c && s) {
		*c += 1;
		*s += value;
	}
	return 0;
}

SEC("tp_btf/sys_enter")
int drain_requests(unsigned long long *ctx)
{
	if (!mine(ctx))
		return 0;
	bpf_user_ringbuf_drain(&requests, drain_one, 0, 0);
	return 0;
}

char _license[] SEC("license") = "GPL";
