// SPDX-License-Identifier: GPL-2.0
// Cgroup programs for the tests and examples, one of each attach family. Each
// counts its runs in its own slot of `hits` and allows the operation. They see
// only the processes of the cgroup they are attached to.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

enum slot {
	SLOT_SKB_INGRESS = 0,
	SLOT_SKB_EGRESS = 1,
	SLOT_SOCK_CREATE = 2,
	SLOT_CONNECT4 = 3,
	SLOT_GETSOCKOPT = 4,
	SLOT_SYSCTL = 5,
	SLOT_DEVICE = 6,
	SLOT_SOCK_OPS = 7,
};

static __always_inline int count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 1; // allow
}

SEC("cgroup_skb/ingress")
int skb_ingress(struct __sk_buff *skb) { return count(SLOT_SKB_INGRESS); }

SEC("cgroup_skb/egress")
int skb_egress(struct __sk_buff *skb) { return count(SLOT_SKB_EGRESS); }

SEC("cgroup/sock_create")
int sock_create(struct bpf_sock *sk) { return count(SLOT_SOCK_CREATE); }

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx) { return count(SLOT_CONNECT4); }

SEC("cgroup/getsockopt")
int getsockopt(struct bpf_sockopt *ctx) { return count(SLOT_GETSOCKOPT); }

SEC("cgroup/sysctl")
int sysctl(struct bpf_sysctl *ctx) { return count(SLOT_SYSCTL); }

SEC("cgroup/dev")
int device(struct bpf_cgroup_dev_ctx *ctx) { return count(SLOT_DEVICE); }

SEC("sockops")
int sock_ops(struct bpf_sock_ops *skops) { return count(SLOT_SOCK_OPS); }

char LICENSE[] SEC("license") = "GPL";
