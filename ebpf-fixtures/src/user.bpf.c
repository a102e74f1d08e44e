// SPDX-License-Identifier: GPL-2.0
// User-space probes and perf_event programs for the integration tests and examples.
//
// The uprobes count their hits in `user_hits` and record a register in `user_values`:
// the first argument at entry, the return value at return, so a test can tell which function
// fired and that a uretprobe ran after the function computed its result. They count the
// process `filter_tgid` and the thread `filter_tid` only, when set (0: everyone).
//
// The perf_event program counts its samples per CPU in `cpu_samples`.
#include <linux/types.h>
#include <linux/bpf.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 filter_tgid = 0;
volatile const __u32 filter_tid = 0;

#define MAX_CPUS 256

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} user_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} user_values SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);
	__type(value, __u64);
} cpu_samples SEC(".maps");

enum slot {
	SLOT_UPROBE = 0,
	SLOT_URETPROBE = 1,
	SLOT_UPROBE_GENERIC = 2,
	SLOT_URETPROBE_GENERIC = 3,
	SLOT_UPROBE_MULTI_SECTION = 4,
	SLOT_UPROBE_PATH_SECTION = 5,
	SLOT_URETPROBE_MULTI_SECTION = 6,
};

static __always_inline int record(__u32 slot, __u64 value)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (filter_tgid && (__u32)(id >> 32) != filter_tgid)
		return 0;
	if (filter_tid && (__u32)id != filter_tid)
		return 0;
	__u64 *v = bpf_map_lookup_elem(&user_hits, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
	bpf_map_update_elem(&user_values, &slot, &value, BPF_ANY);
	return 0;
}

// The function of uprobe_target.c, named by the section: only binary_path is needed.
SEC("uprobe/uprobe_target_add")
int uprobe_add(struct pt_regs *ctx) { return record(SLOT_UPROBE, ctx->rdi); }

SEC("uretprobe/uprobe_target_add")
int uretprobe_add(struct pt_regs *ctx) { return record(SLOT_URETPROBE, ctx->rax); }

// No function in the section: the probe declares it (hook_func_name, attach_to_func_name
// or uprobe_offset).
SEC("uprobe")
int uprobe_generic(struct pt_regs *ctx) { return record(SLOT_UPROBE_GENERIC, ctx->rdi); }

SEC("uretprobe")
int uretprobe_generic(struct pt_regs *ctx) { return record(SLOT_URETPROBE_GENERIC, ctx->rax); }

// libbpf's sections with the binary in them (the running program, as libbpf's selftests name
// it): every function of the glob (one uprobe.multi link where the kernel has them), and one
// function.
SEC("uprobe.multi//proc/self/exe:uprobe_section_target_*")
int uprobe_multi_section(struct pt_regs *ctx) { return record(SLOT_UPROBE_MULTI_SECTION, ctx->rdi); }

// Every function of the glob, on return (one uretprobe.multi link where the kernel has them).
SEC("uretprobe.multi//proc/self/exe:uprobe_section_target_*")
int uretprobe_multi_section(struct pt_regs *ctx) { return record(SLOT_URETPROBE_MULTI_SECTION, ctx->rax); }

SEC("uprobe//proc/self/exe:uprobe_section_single")
int uprobe_path_section(struct pt_regs *ctx) { return record(SLOT_UPROBE_PATH_SECTION, ctx->rdi); }

SEC("perf_event")
int perf_event_cpu_clock(void *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id();
	if (cpu >= MAX_CPUS)
		return 0;
	__u64 *v = bpf_map_lookup_elem(&cpu_samples, &cpu);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

char _license[] SEC("license") = "GPL";
