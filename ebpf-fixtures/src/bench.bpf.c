// SPDX-License-Identifier: GPL-2.0
// Producers for `cargo xtask bench readers`. One BPF_PROG_TEST_RUN of bench_ring
// (bench_perf) emits `records_per_run` 56-byte records with bpf_loop to the ring
// buffer bench_ring_events (the perf event array bench_perf_events): one syscall
// yields many records, so the producer outruns any reader. The programs are never
// attached. They are tc classifiers rather than XDP programs: an XDP test run swaps the
// program in and out of the kernel's XDP dispatcher, which costs milliseconds per syscall
// (text patching and an RCU grace period), while a tc test run costs microseconds. bench_counts counts what was produced and what a full buffer refused,
// so a reader can check that received + refused == produced.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 records_per_run = 1;

struct record {
	__u64 seq;
	__u32 cpu;
	__u32 pad;
	__u8 payload[40];
}; // 56 bytes, like readers.bpf.c: perf readers get 60 (size word + padding)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} bench_ring_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} bench_perf_events SEC(".maps");

enum slot {
	RING_PRODUCED = 0,
	RING_FAILED = 1,
	PERF_PRODUCED = 2,
	PERF_FAILED = 3,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} bench_counts SEC(".maps");

// bpf_loop's callback gets one pointer: the program's ctx (which perf output
// needs) travels in this struct on the program's stack.
struct loop_ctx {
	void *ctx;
	__u64 seq;
	__u64 failed;
};

static __always_inline void fill(struct record *r, struct loop_ctx *c, __u32 i)
{
	r->seq = c->seq + i;
	r->cpu = bpf_get_smp_processor_id();
}

static long ring_one(__u32 i, void *data)
{
	struct loop_ctx *c = data;
	struct record r = {};
	fill(&r, c, i);
	if (bpf_ringbuf_output(&bench_ring_events, &r, sizeof(r), 0) < 0)
		c->failed++;
	return 0;
}

static long perf_one(__u32 i, void *data)
{
	struct loop_ctx *c = data;
	struct record r = {};
	fill(&r, c, i);
	if (bpf_perf_event_output(c->ctx, &bench_perf_events, BPF_F_CURRENT_CPU, &r, sizeof(r)) < 0)
		c->failed++;
	return 0;
}

// Counted once per run rather than per record: the counters stay off the hot path.
static __always_inline void count(__u32 produced_slot, __u64 failed)
{
	__u32 key = produced_slot;
	__u64 *produced = bpf_map_lookup_elem(&bench_counts, &key);
	key = produced_slot + 1;
	__u64 *refused = bpf_map_lookup_elem(&bench_counts, &key);
	if (!produced || !refused)
		return;
	__sync_fetch_and_add(produced, records_per_run);
	__sync_fetch_and_add(refused, failed);
}

static __always_inline __u64 next_seq(__u32 produced_slot)
{
	__u32 key = produced_slot;
	__u64 *produced = bpf_map_lookup_elem(&bench_counts, &key);
	return produced ? *produced : 0;
}

SEC("classifier")
int bench_ring(struct __sk_buff *ctx)
{
	struct loop_ctx c = { .ctx = ctx, .seq = next_seq(RING_PRODUCED) };
	bpf_loop(records_per_run, ring_one, &c, 0);
	count(RING_PRODUCED, c.failed);
	return 0;
}

SEC("classifier")
int bench_perf(struct __sk_buff *ctx)
{
	struct loop_ctx c = { .ctx = ctx, .seq = next_seq(PERF_PRODUCED) };
	bpf_loop(records_per_run, perf_one, &c, 0);
	count(PERF_PRODUCED, c.failed);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
