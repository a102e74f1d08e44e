// SPDX-License-Identifier: GPL-2.0
// Producers for the reader tests: each call of getppid(2) by the thread named
// by `filter_tid` emits one record to the perf event array `perf_events`
// (perf_emit) or to the ring buffer `ring_events` (ring_emit). `counts`
// counts what was produced and what the kernel refused, so a test can check
// that received + lost == produced.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 filter_tid = 0;

struct record {
	__u64 seq;
	__u32 cpu;
	__u32 tid;
	__u8 payload[40];
}; // 56 bytes: perf adds a 4-byte size and pads to 8, so readers get 60

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} ring_events SEC(".maps");

enum slot {
	PERF_PRODUCED = 0,
	PERF_FAILED = 1,
	RING_PRODUCED = 2,
	RING_FAILED = 3,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline __u64 *slot(__u32 s)
{
	return bpf_map_lookup_elem(&counts, &s);
}

static __always_inline int fill(struct record *r, __u32 produced_slot)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (!filter_tid || tid != filter_tid)
		return 0;
	__u64 *produced = slot(produced_slot);
	if (!produced)
		return 0;
	// One thread produces: no concurrent update of this slot.
	r->seq = *produced;
	*produced += 1;
	r->cpu = bpf_get_smp_processor_id();
	r->tid = tid;
	return 1;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int perf_emit(void *ctx)
{
	struct record r = {};
	if (!fill(&r, PERF_PRODUCED))
		return 0;
	if (bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &r, sizeof(r)) < 0) {
		__u64 *failed = slot(PERF_FAILED);
		if (failed)
			*failed += 1;
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int ring_emit(void *ctx)
{
	struct record r = {};
	if (!fill(&r, RING_PRODUCED))
		return 0;
	if (bpf_ringbuf_output(&ring_events, &r, sizeof(r), 0) < 0) {
		__u64 *failed = slot(RING_FAILED);
		if (failed)
			*failed += 1;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
