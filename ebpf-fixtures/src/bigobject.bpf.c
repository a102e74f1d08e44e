// SPDX-License-Identifier: GPL-2.0
// An object shaped like a production agent's, for `cargo xtask bench bigobject`: 60 programs
// (40 tracepoints, 10 kprobes, 10 tail-call targets), 30 maps, 140 `call -1` telemetry
// placeholders an instruction patcher replaces, 30 asm constants (LOAD_CONSTANT) used at 120
// sites, CO-RE reads of task_struct, tail calls through a program array.
//
// Variants: bigobject_libbpf.bpf.c has the constants as `volatile const` globals (what libbpf
// loads: it refuses asm constants, externs without BTF); bigobject_aya.bpf.c also has no
// placeholders (raw aya cannot patch instructions before loading).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "go_compat.h"

#ifdef LIBBPF_CONSTANTS
#define C(i) volatile const __u64 const_##i = 0;
C(0) C(1) C(2) C(3) C(4) C(5) C(6) C(7) C(8) C(9) C(10) C(11) C(12) C(13) C(14)
C(15) C(16) C(17) C(18) C(19) C(20) C(21) C(22) C(23) C(24) C(25) C(26) C(27) C(28) C(29)
#undef C
#define CONSTANT(i, var) var = const_##i
#else
#define CONSTANT(i, var) LOAD_CONSTANT("const_" #i, var)
#endif

#ifdef NO_PLACEHOLDERS
#define TELEMETRY(n) ((void)(n))
#else
// DataDog's telemetry placeholder: a call of helper -1 that the agent's patcher turns into a
// real call or a no-op before loading.
static long (*telemetry_patch)(unsigned long) = (void *)-1;
#define TELEMETRY(n) telemetry_patch(n)
#endif

struct stats {
	__u64 count;
	__u64 last_ns;
	__u32 pid;
	__u32 tgid;
};

#define HASH(name, kind, entries)                     \
	struct {                                      \
		__uint(type, kind);                   \
		__uint(max_entries, entries);         \
		__type(key, __u32);                   \
		__type(value, struct stats);          \
	} name SEC(".maps")

HASH(hash_0, BPF_MAP_TYPE_HASH, 1024);
HASH(hash_1, BPF_MAP_TYPE_HASH, 1024);
HASH(hash_2, BPF_MAP_TYPE_HASH, 1024);
HASH(hash_3, BPF_MAP_TYPE_HASH, 1024);
HASH(hash_4, BPF_MAP_TYPE_HASH, 1024);
HASH(hash_5, BPF_MAP_TYPE_HASH, 1024);
HASH(hash_6, BPF_MAP_TYPE_HASH, 1024);
HASH(hash_7, BPF_MAP_TYPE_HASH, 1024);
HASH(array_0, BPF_MAP_TYPE_ARRAY, 64);
HASH(array_1, BPF_MAP_TYPE_ARRAY, 64);
HASH(array_2, BPF_MAP_TYPE_ARRAY, 64);
HASH(array_3, BPF_MAP_TYPE_ARRAY, 64);
HASH(array_4, BPF_MAP_TYPE_ARRAY, 64);
HASH(array_5, BPF_MAP_TYPE_ARRAY, 64);
HASH(percpu_0, BPF_MAP_TYPE_PERCPU_ARRAY, 64);
HASH(percpu_1, BPF_MAP_TYPE_PERCPU_ARRAY, 64);
HASH(percpu_2, BPF_MAP_TYPE_PERCPU_ARRAY, 64);
HASH(percpu_3, BPF_MAP_TYPE_PERCPU_ARRAY, 64);
HASH(lru_0, BPF_MAP_TYPE_LRU_HASH, 1024);
HASH(lru_1, BPF_MAP_TYPE_LRU_HASH, 1024);
HASH(lru_2, BPF_MAP_TYPE_LRU_HASH, 1024);
HASH(lru_3, BPF_MAP_TYPE_LRU_HASH, 1024);
HASH(percpu_hash_0, BPF_MAP_TYPE_PERCPU_HASH, 1024);
HASH(percpu_hash_1, BPF_MAP_TYPE_PERCPU_HASH, 1024);
HASH(telemetry, BPF_MAP_TYPE_ARRAY, 256);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 128);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 10);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} tail_calls SEC(".maps");

// The map of program `n` (a compile-time constant once inlined: one map per program).
static __always_inline void *map_of(__u32 n)
{
	switch (n % 25) {
	case 0: return &hash_0;
	case 1: return &hash_1;
	case 2: return &hash_2;
	case 3: return &hash_3;
	case 4: return &hash_4;
	case 5: return &hash_5;
	case 6: return &hash_6;
	case 7: return &hash_7;
	case 8: return &array_0;
	case 9: return &array_1;
	case 10: return &array_2;
	case 11: return &array_3;
	case 12: return &array_4;
	case 13: return &array_5;
	case 14: return &percpu_0;
	case 15: return &percpu_1;
	case 16: return &percpu_2;
	case 17: return &percpu_3;
	case 18: return &lru_0;
	case 19: return &lru_1;
	case 20: return &lru_2;
	case 21: return &lru_3;
	case 22: return &percpu_hash_0;
	case 23: return &percpu_hash_1;
	default: return &telemetry;
	}
}

// Program `n`'s work: two constants, two or three telemetry placeholders, a CO-RE read of the
// current task, a map update; the first ten tracepoints tail-call a target.
static __always_inline int body(void *ctx, __u32 n, __u64 a, __u64 b, int tail)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	int tgid = 0, pid = 0;
	bpf_probe_read_kernel(&tgid, sizeof(tgid), __builtin_preserve_access_index(&task->tgid));
	bpf_probe_read_kernel(&pid, sizeof(pid), __builtin_preserve_access_index(&task->pid));
	if (a && (__u32)tgid != (__u32)a)
		return 0;
	TELEMETRY(n);
	__u32 key = n % 64;
	struct stats *s = bpf_map_lookup_elem(map_of(n), &key);
	if (s) {
		s->count += 1 + b;
		s->last_ns = bpf_ktime_get_ns();
		s->pid = pid;
		s->tgid = tgid;
	} else {
		struct stats fresh = { .count = 1, .pid = pid, .tgid = tgid };
		if (bpf_map_update_elem(map_of(n), &key, &fresh, BPF_ANY))
			TELEMETRY(n + 1000);
	}
	if (n % 3 == 0)
		TELEMETRY(n + 2000);
	if (tail)
		bpf_tail_call(ctx, &tail_calls, n % 10);
	return 0;
}

#define TP(n, sc, i, j, tail)                                                        \
	SEC("tracepoint/syscalls/sys_enter_" #sc)                                   \
	int tp_##sc(void *ctx)                                                       \
	{                                                                            \
		__u64 a, b;                                                          \
		CONSTANT(i, a);                                                      \
		CONSTANT(j, b);                                                      \
		return body(ctx, n, a, b, tail);                                     \
	}

#define KP(n, fn, i, j)                                                              \
	SEC("kprobe/" #fn)                                                           \
	int kp_##fn(struct pt_regs *ctx)                                             \
	{                                                                            \
		__u64 a, b;                                                          \
		CONSTANT(i, a);                                                      \
		CONSTANT(j, b);                                                      \
		return body(ctx, n, a, b, 0);                                        \
	}

#define TAIL(n, i, j)                                                                \
	SEC("tracepoint/big/tail_" #n)                                              \
	int tail_##n(void *ctx)                                                      \
	{                                                                            \
		__u64 a, b;                                                          \
		CONSTANT(i, a);                                                      \
		CONSTANT(j, b);                                                      \
		return body(ctx, 50 + n, a, b, 0);                                   \
	}

TP(0, read, 0, 1, 1)
TP(1, write, 2, 3, 1)
TP(2, openat, 4, 5, 1)
TP(3, close, 6, 7, 1)
TP(4, mkdir, 8, 9, 1)
TP(5, rmdir, 10, 11, 1)
TP(6, unlinkat, 12, 13, 1)
TP(7, getpid, 14, 15, 1)
TP(8, getppid, 16, 17, 1)
TP(9, dup, 18, 19, 1)
TP(10, pipe2, 20, 21, 0)
TP(11, socket, 22, 23, 0)
TP(12, connect, 24, 25, 0)
TP(13, accept4, 26, 27, 0)
TP(14, bind, 28, 29, 0)
TP(15, listen, 0, 2, 0)
TP(16, sendto, 1, 3, 0)
TP(17, recvfrom, 4, 6, 0)
TP(18, mmap, 5, 7, 0)
TP(19, munmap, 8, 10, 0)
TP(20, mprotect, 9, 11, 0)
TP(21, brk, 12, 14, 0)
TP(22, lseek, 13, 15, 0)
TP(23, ioctl, 16, 18, 0)
TP(24, fcntl, 17, 19, 0)
TP(25, chdir, 20, 22, 0)
TP(26, fchdir, 21, 23, 0)
TP(27, nanosleep, 24, 26, 0)
TP(28, getuid, 25, 27, 0)
TP(29, kill, 28, 0, 0)
TP(30, getgid, 29, 1, 0)
TP(31, geteuid, 0, 3, 0)
TP(32, getegid, 2, 5, 0)
TP(33, gettid, 4, 7, 0)
TP(34, sched_yield, 6, 9, 0)
TP(35, umask, 8, 11, 0)
TP(36, sync, 10, 13, 0)
TP(37, newuname, 12, 15, 0)
TP(38, getcwd, 14, 17, 0)
TP(39, fsync, 16, 19, 0)

KP(40, vfs_read, 18, 21)
KP(41, vfs_write, 20, 23)
KP(42, vfs_open, 22, 25)
KP(43, vfs_mkdir, 24, 27)
KP(44, vfs_rmdir, 26, 29)
KP(45, vfs_unlink, 28, 1)
KP(46, security_file_open, 3, 5)
KP(47, tcp_v4_connect, 7, 9)
KP(48, tcp_close, 11, 13)
KP(49, udp_sendmsg, 15, 17)

TAIL(0, 19, 21)
TAIL(1, 23, 25)
TAIL(2, 27, 29)
TAIL(3, 0, 4)
TAIL(4, 8, 12)
TAIL(5, 16, 20)
TAIL(6, 24, 28)
TAIL(7, 1, 5)
TAIL(8, 9, 13)
TAIL(9, 17, 21)

char _license[] SEC("license") = "GPL";
