// SPDX-License-Identifier: GPL-2.0
// Network programs for the tests and examples: XDP, TC classifiers and a
// socket filter. Each counts, in its own slot of `hits`, the IPv4 UDP packets
// sent to `filter_port` (every packet it sees when 0; the socket filter counts
// everything its socket receives), and lets every packet through.
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

// The UDP destination port to count, in host order; 0 counts every packet.
volatile const __u16 filter_port = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

enum slot {
	SLOT_XDP = 0,
	SLOT_TC_INGRESS = 1,
	SLOT_TC_EGRESS = 2,
	SLOT_SOCKET = 3,
};

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

// Whether a frame's headers (EtherType, IPv4 header length in words and
// protocol, UDP destination port, in network order) are those of an IPv4 UDP
// datagram for filter_port.
static __always_inline int wanted(__u16 proto, __u8 ihl, __u8 l4, __u16 dest)
{
	if (!filter_port)
		return 1;
	return proto == __builtin_bswap16(ETH_P_IP) && ihl == 5 &&
	       l4 == IPPROTO_UDP && dest == __builtin_bswap16(filter_port);
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)ip + sizeof(*ip);

	if ((void *)(udp + 1) > data_end) {
		if (!filter_port)
			count(SLOT_XDP);
		return XDP_PASS;
	}
	if (wanted(eth->h_proto, ip->ihl, ip->protocol, udp->dest))
		count(SLOT_XDP);
	return XDP_PASS;
}

static __always_inline void tc_count(struct __sk_buff *skb, __u32 slot)
{
	struct {
		struct ethhdr eth;
		struct iphdr ip;
		struct udphdr udp;
	} __attribute__((packed)) h;

	if (bpf_skb_load_bytes(skb, 0, &h, sizeof(h)) < 0) {
		if (!filter_port)
			count(slot);
		return;
	}
	if (wanted(h.eth.h_proto, h.ip.ihl, h.ip.protocol, h.udp.dest))
		count(slot);
}

SEC("classifier")
int tc_ingress(struct __sk_buff *skb)
{
	tc_count(skb, SLOT_TC_INGRESS);
	return TC_ACT_OK;
}

SEC("classifier")
int tc_egress(struct __sk_buff *skb)
{
	tc_count(skb, SLOT_TC_EGRESS);
	return TC_ACT_OK;
}

// A socket filter sees only what reaches its socket: count it all, keep it all.
SEC("socket")
int socket_count(struct __sk_buff *skb)
{
	count(SLOT_SOCKET);
	return skb->len;
}

char LICENSE[] SEC("license") = "GPL";
