// SPDX-License-Identifier: GPL-2.0
// A kfunc of a module, as libbpf users call conntrack from XDP (vmlinux.h, `__ksym`):
// bpf_xdp_ct_lookup and bpf_ct_release are nf_conntrack's (Linux 5.18). Built into vmlinux on
// some kernels, in the nf_conntrack module on others (Debian's), where the call names the
// module's BTF through the fd array of BPF_PROG_LOAD.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define NF_BPF_CT_OPTS_SZ 12

// nf_conntrack's own type, declared as libbpf's selftests declare it (a vmlinux.h dumped from a
// kernel that builds conntrack as a module lacks it) and read by CO-RE: where conntrack is a
// module, the type is in the module's BTF, where the loader must look for it as libbpf does.
struct bpf_ct_opts___local {
	s32 netns_id;
	s32 error;
	u8 l4proto;
	u8 dir;
	u8 reserved[2];
} __attribute__((preserve_access_index));

extern struct nf_conn *bpf_xdp_ct_lookup(struct xdp_md *xdp_ctx, struct bpf_sock_tuple *bpf_tuple,
					 u32 tuple__sz, struct bpf_ct_opts___local *opts,
					 u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

enum { RAN, FOUND, OPTS_ERROR, OPTS_ERROR_OFFSET, SLOTS };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __s64);
} ct_seen SEC(".maps");

static __always_inline void put(__u32 slot, __s64 v)
{
	__s64 *p = bpf_map_lookup_elem(&ct_seen, &slot);
	if (p)
		*p = v;
}

// Looks up a TCP connection 127.0.0.1:1 -> 127.0.0.1:2 that does not exist (network byte
// order: x86 is little-endian).
SEC("xdp")
int ct_lookup(struct xdp_md *ctx)
{
	struct bpf_sock_tuple tuple = {};
	struct bpf_ct_opts___local opts = { .netns_id = -1, .l4proto = 6 };

	tuple.ipv4.saddr = __builtin_bswap32(0x7f000001);
	tuple.ipv4.daddr = __builtin_bswap32(0x7f000001);
	tuple.ipv4.sport = __builtin_bswap16(1);
	tuple.ipv4.dport = __builtin_bswap16(2);
	struct nf_conn *ct = bpf_xdp_ct_lookup(ctx, &tuple, sizeof(tuple.ipv4), &opts, NF_BPF_CT_OPTS_SZ);
	put(RAN, 1);
	put(OPTS_ERROR, opts.error);
	if (ct) {
		put(FOUND, 1);
		bpf_ct_release(ct);
	}
	return XDP_PASS;
}

// The same module type by CO-RE, without a kfunc: the loader must find it in the module's BTF
// for a program it loads as any other (0: BPF_FIELD_BYTE_OFFSET).
SEC("xdp")
int ct_opts_layout(struct xdp_md *ctx)
{
	put(OPTS_ERROR_OFFSET,
	    __builtin_preserve_field_info(((struct bpf_ct_opts___local *)0)->error, 0));
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
