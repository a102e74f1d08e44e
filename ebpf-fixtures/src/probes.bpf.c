// SPDX-License-Identifier: GPL-2.0
// Probes for the integration tests. Each program counts its hits, from the
// thread named by `filter_tid` only (0 counts everyone), in its own slot of
// `hits`, so a test can confirm in user space that the kernel ran it while
// other tests of the same process run in parallel.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 filter_tid = 0;
// Set per clone (Manager::clone_program) to tell clones apart in `tagged`.
volatile const __u32 clone_tag = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} tagged SEC(".maps");

enum slot {
	SLOT_KPROBE = 0,
	SLOT_KRETPROBE = 1,
	SLOT_TRACEPOINT = 2,
	SLOT_RAW_TRACEPOINT = 3,
	SLOT_KPROBE_GENERIC = 4,
};

static __always_inline int count_in(void *map, __u32 slot)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (filter_tid && tid != filter_tid)
		return 0;
	__u64 *v = bpf_map_lookup_elem(map, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

static __always_inline int count(__u32 slot) { return count_in(&hits, slot); }

SEC("kprobe/vfs_mkdir")
int kprobe_vfs_mkdir(void *ctx) { return count(SLOT_KPROBE); }

SEC("kretprobe/vfs_mkdir")
int kretprobe_vfs_mkdir(void *ctx) { return count(SLOT_KRETPROBE); }

// No target in the section: the hook comes from the Probe declaration
// (hook_func_name, syscall_func_name or attach_to_func_name).
SEC("kprobe/generic")
int kprobe_generic(void *ctx) { return count(SLOT_KPROBE_GENERIC); }

SEC("tracepoint/syscalls/sys_enter_mkdir")
int tracepoint_sys_enter_mkdir(void *ctx) { return count(SLOT_TRACEPOINT); }

SEC("raw_tracepoint/sys_enter")
int raw_tracepoint_sys_enter(void *ctx) { return count(SLOT_RAW_TRACEPOINT); }

SEC("tracepoint/syscalls/sys_enter_mkdir")
int tagged_sys_enter_mkdir(void *ctx) { return count_in(&tagged, clone_tag); }

char _license[] SEC("license") = "GPL";
