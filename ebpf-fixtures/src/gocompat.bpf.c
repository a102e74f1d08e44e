// SPDX-License-Identifier: GPL-2.0
// An object written the way users of the Go ebpf-manager write their C, unchanged for aya:
// iovisor/gobpf `struct bpf_map_def` in `maps/<name>` sections (with `pinning` and a
// `namespace`), a perf event array declared with zero sizes, asm constants loaded by
// instruction (LOAD_CONSTANT), cilium section names (`xdp/...`, `tc/...`, `ksyscall/...`,
// `kprobe.multi/...`), a `call -1` placeholder for an instruction patcher, and a program of a
// type aya cannot load (`fmod_ret/...`). Every program records what it saw in `results`.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define LOAD_CONSTANT(param, var) asm("%0 = " param " ll" : "=r"(var))

#define BUF_SIZE_MAP_NS 256
#define PIN_GLOBAL_NS 2

// The iovisor/gobpf layout (github.com/iovisor/gobpf/elf/include/bpf_map.h).
struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
	unsigned int pinning;
	char namespace[BUF_SIZE_MAP_NS];
};

// Slots of `results`.
enum {
	R_XDP_INGRESS = 0,
	R_XDP_EGRESS = 1,
	R_CLASSIFIER = 2,
	R_TC = 3,
	R_KSYSCALL = 4,
	R_PATCHED = 5,
	R_MULTI = 6,
	R_PLAIN = 7,
};

struct bpf_map_def SEC("maps/results") results = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 8,
	.pinning = PIN_GLOBAL_NS,
	.namespace = "gocompat",
};

// cilium sets the sizes of a perf event array to 4 when they are 0.
struct bpf_map_def SEC("maps/events") events = {
	.type = BPF_MAP_TYPE_PERF_EVENT_ARRAY,
};

// A hash that MapSpecEditor turns into something else.
struct bpf_map_def SEC("maps/edited") edited = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 16,
};

// Hits of kprobe_multi_cookie, by BPF cookie.
struct bpf_map_def SEC("maps/cookie_hits") cookie_hits = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 4,
};

// Only `xdp_unused` uses it: with both excluded, it is never created.
struct bpf_map_def SEC("maps/unused") unused = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 1,
};

static __always_inline void record(__u32 slot, __u64 value)
{
	__u64 *v = bpf_map_lookup_elem(&results, &slot);
	if (v)
		*v = value;
}

// Only the calling thread's syscalls count (0: every thread).
static __always_inline int mine(void)
{
	__u64 tid;
	LOAD_CONSTANT("filter_tid", tid);
	return !tid || (__u32)bpf_get_current_pid_tgid() == (__u32)tid;
}

SEC("xdp/ingress")
int xdp_ingress(struct xdp_md *ctx)
{
	__u64 verdict;
	LOAD_CONSTANT("ingress_marker", verdict);
	record(R_XDP_INGRESS, verdict);
	return XDP_PASS;
}

// A BPF-to-BPF call, from a second `xdp/` section that the pipeline merges with the first.
__attribute__((noinline)) static __u64 egress_value(void)
{
	__u64 marker;
	LOAD_CONSTANT("egress_marker", marker);
	return marker;
}

SEC("xdp/egress")
int xdp_egress(struct xdp_md *ctx)
{
	record(R_XDP_EGRESS, egress_value() + 1);
	return XDP_PASS;
}

// A plain `xdp` section: the `xdp/` sections above are merged into it for aya, and its BTF
// func and line info must stay one block.
SEC("xdp")
int xdp_plain(struct xdp_md *ctx)
{
	record(R_PLAIN, egress_value() + 100);
	return XDP_PASS;
}

SEC("xdp/unused")
int xdp_unused(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&unused, &key);
	if (v)
		*v = 1;
	return XDP_PASS;
}

SEC("classifier/egress")
int classifier_egress(struct __sk_buff *skb)
{
	record(R_CLASSIFIER, skb->len);
	return 0;
}

SEC("tc/ingress")
int tc_ingress(struct __sk_buff *skb)
{
	__u64 marker;
	LOAD_CONSTANT("tc_marker", marker);
	record(R_TC, marker);
	return 0;
}

// The placeholder a patcher replaces with a real helper (here bpf_ktime_get_ns, 5).
static long (*helper_placeholder)(void) = (void *)-1;

SEC("xdp/patched")
int xdp_patched(struct xdp_md *ctx)
{
	record(R_PATCHED, helper_placeholder());
	return XDP_PASS;
}

SEC("ksyscall/mkdir")
int ksyscall_mkdir(void *ctx)
{
	if (mine())
		record(R_KSYSCALL, 1);
	return 0;
}

SEC("kprobe.multi/vfs_mkdi?")
int kprobe_multi_vfs_mkdir(void *ctx)
{
	if (mine())
		record(R_MULTI, 1);
	return 0;
}

// On every function of its pattern; the cookie tells them apart (0 without kprobe.multi).
SEC("kprobe.multi/vfs_[mr][km]dir")
int kprobe_multi_cookie(void *ctx)
{
	if (!mine())
		return 0;
	__u32 cookie = (__u32)bpf_get_attach_cookie(ctx);
	__u64 *v = bpf_map_lookup_elem(&cookie_hits, &cookie);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

SEC("fmod_ret/security_inode_mkdir")
int fmod_ret_mkdir(void *ctx)
{
	return 0;
}

char _license[] SEC("license") = "GPL";
