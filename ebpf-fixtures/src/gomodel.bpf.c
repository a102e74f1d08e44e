// SPDX-License-Identifier: GPL-2.0
// build: go-style (clang -emit-llvm | llc -march=bpf, no -g: no BTF, as the Go ebpf-manager
// examples' Makefile builds)
//
// An object shaped like a large Go ebpf-manager user's, for the collection-model tests
// (tests/tests/gomodel.rs) and the startup benchmark: 60 programs of mixed types, chosen per
// kernel with ActivatedProbes and ExcludedFunctions; socket-filter and XDP tail-call targets
// that no probe attaches; a template socket filter hooked later per socket; programs fetched
// by name only (test runs); kretprobes declared with a max active; the Go example fentry's
// `fexit/do_mkdirat`, declared with SyscallFuncName. Every program counts its runs in its
// slot of `hits` (legacy `struct bpf_map_def`, `maps/` section).
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "go_compat.h"

struct bpf_map_def SEC("maps/hits") hits = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 64,
};

struct bpf_map_def SEC("maps/xdp_jumps") xdp_jumps = {
	.type = BPF_MAP_TYPE_PROG_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 8,
};

struct bpf_map_def SEC("maps/socket_jumps") socket_jumps = {
	.type = BPF_MAP_TYPE_PROG_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 8,
};

static __always_inline void bump(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

#define COUNT(sec, name, slot) \
	SEC(sec) int name(void *ctx) { bump(slot); return 0; }

// Slots 0-9: tracepoints, selected on every kernel.
COUNT("tracepoint/syscalls/sys_enter_mkdir", tp_mkdir, 0)
COUNT("tracepoint/syscalls/sys_enter_rmdir", tp_rmdir, 1)
COUNT("tracepoint/syscalls/sys_enter_getpid", tp_getpid, 2)
COUNT("tracepoint/syscalls/sys_enter_getppid", tp_getppid, 3)
COUNT("tracepoint/syscalls/sys_enter_gettid", tp_gettid, 4)
COUNT("tracepoint/syscalls/sys_enter_openat", tp_openat, 5)
COUNT("tracepoint/syscalls/sys_enter_close", tp_close, 6)
COUNT("tracepoint/syscalls/sys_enter_read", tp_read, 7)
COUNT("tracepoint/syscalls/sys_enter_write", tp_write, 8)
COUNT("tracepoint/syscalls/sys_enter_unlinkat", tp_unlinkat, 9)

// Slots 10-19: kprobes; 20-29: kretprobes (declared with a max active).
COUNT("kprobe/vfs_mkdir", kprobe_vfs_mkdir, 10)
COUNT("kprobe/vfs_rmdir", kprobe_vfs_rmdir, 11)
COUNT("kprobe/vfs_unlink", kprobe_vfs_unlink, 12)
COUNT("kprobe/vfs_open", kprobe_vfs_open, 13)
COUNT("kprobe/vfs_read", kprobe_vfs_read, 14)
COUNT("kprobe/vfs_write", kprobe_vfs_write, 15)
COUNT("kprobe/vfs_getattr", kprobe_vfs_getattr, 16)
COUNT("kprobe/vfs_rename", kprobe_vfs_rename, 17)
COUNT("kprobe/vfs_symlink", kprobe_vfs_symlink, 18)
COUNT("kprobe/vfs_link", kprobe_vfs_link, 19)
COUNT("kretprobe/vfs_mkdir", kretprobe_vfs_mkdir, 20)
COUNT("kretprobe/vfs_rmdir", kretprobe_vfs_rmdir, 21)
COUNT("kretprobe/vfs_unlink", kretprobe_vfs_unlink, 22)
COUNT("kretprobe/vfs_open", kretprobe_vfs_open, 23)
COUNT("kretprobe/vfs_read", kretprobe_vfs_read, 24)
COUNT("kretprobe/vfs_write", kretprobe_vfs_write, 25)
COUNT("kretprobe/vfs_getattr", kretprobe_vfs_getattr, 26)
COUNT("kretprobe/vfs_rename", kretprobe_vfs_rename, 27)
COUNT("kretprobe/vfs_symlink", kretprobe_vfs_symlink, 28)
COUNT("kretprobe/vfs_link", kretprobe_vfs_link, 29)

// Slots 30-39: syscall kprobes declared with SyscallFuncName, and their kretprobes.
COUNT("kprobe/sys_mkdir", kprobe_sys_mkdir, 30)
COUNT("kprobe/sys_rmdir", kprobe_sys_rmdir, 31)
COUNT("kprobe/sys_getpid", kprobe_sys_getpid, 32)
COUNT("kprobe/sys_openat", kprobe_sys_openat, 33)
COUNT("kprobe/sys_close", kprobe_sys_close, 34)
COUNT("kretprobe/sys_mkdir", kretprobe_sys_mkdir, 35)
COUNT("kretprobe/sys_rmdir", kretprobe_sys_rmdir, 36)
COUNT("kretprobe/sys_getpid", kretprobe_sys_getpid, 37)
COUNT("kretprobe/sys_openat", kretprobe_sys_openat, 38)
COUNT("kretprobe/sys_close", kretprobe_sys_close, 39)

// Slots 40-44: raw tracepoints, selected on every kernel.
COUNT("raw_tracepoint/sys_enter", raw_sys_enter_0, 40)
COUNT("raw_tracepoint/sys_enter", raw_sys_enter_1, 41)
COUNT("raw_tracepoint/sys_exit", raw_sys_exit_0, 42)
COUNT("raw_tracepoint/sys_exit", raw_sys_exit_1, 43)
COUNT("raw_tracepoint/sched_process_exec", raw_sched_process_exec, 44)

// Slots 45-47: software perf events, declared and never selected.
COUNT("perf_event/cpu_clock_0", perf_cpu_clock_0, 45)
COUNT("perf_event/cpu_clock_1", perf_cpu_clock_1, 46)
COUNT("perf_event/cpu_clock_2", perf_cpu_clock_2, 47)

// Socket filters: a dispatcher that tail-calls socket_jumps[0], and tail-call targets that
// Go users declare as probes and never attach (slots 48-51); a template hooked per socket.
SEC("socket/dispatch")
int socket_dispatch(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &socket_jumps, 0);
	return 0;
}

#define SOCKET_TAIL(name, slot) \
	SEC("socket/" #name) int name(struct __sk_buff *skb) { bump(slot); return 0; }
SOCKET_TAIL(socket_tail_0, 48)
SOCKET_TAIL(socket_tail_1, 49)
SOCKET_TAIL(socket_tail_2, 50)
SOCKET_TAIL(socket_tail_3, 51)

// The template: keeps every packet, counts in slot 52.
SEC("socket/template")
int socket_template(struct __sk_buff *skb)
{
	bump(52);
	return -1;
}

// XDP programs no probe declares, reached by name (program_router, tests_and_benchmarks):
// the dispatcher tail-calls xdp_jumps[0] and drops when the slot is empty; the target passes.
SEC("xdp/dispatch")
int xdp_dispatch(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &xdp_jumps, 0);
	return XDP_DROP;
}

SEC("xdp/tail_pass")
int xdp_tail_pass(struct xdp_md *ctx)
{
	bump(53);
	return XDP_PASS;
}

// Returns the asm constant `marker` (tests_and_benchmarks-style test program).
SEC("xdp/marker")
int xdp_marker(struct xdp_md *ctx)
{
	__u64 marker = 0;
	LOAD_CONSTANT("marker", marker);
	return (int)marker;
}

// A TC classifier template (hooked per interface later) and an XDP probe.
COUNT("classifier/ingress", tc_ingress, 54)
COUNT("xdp/ingress", xdp_ingress, 55)

// The Go example programs/fentry: `fexit/do_mkdirat`, declared with SyscallFuncName
// "mkdirat"; a bare `fentry` section, whose target the probe names.
SEC("fexit/do_mkdirat")
int do_mkdirat_exit(unsigned long long *ctx)
{
	bump(56);
	return 0;
}

SEC("fentry")
int fentry_bare(unsigned long long *ctx)
{
	bump(57);
	return 0;
}

// Slots 58-59: more tracepoints, excluded on every kernel by the declarations.
COUNT("tracepoint/syscalls/sys_enter_chdir", tp_chdir, 58)
COUNT("tracepoint/syscalls/sys_enter_fchdir", tp_fchdir, 59)

char _license[] SEC("license") = "GPL";
