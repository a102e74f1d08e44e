// SPDX-License-Identifier: GPL-2.0
// kfuncs and kernel variables as libbpf users write them today: vmlinux.h, CO-RE, `__ksym`
// externs, weak ones tested with bpf_ksym_exists(). Each program counts the mkdir syscalls of
// the process named by `filter_tgid` and records what it saw in `kfunc_seen`.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

// libbpf 1.2's; the vendored 1.1 headers lack it.
#ifndef bpf_ksym_exists
#define bpf_ksym_exists(sym) ({                                                   \
	_Static_assert(!__builtin_constant_p(!!sym), #sym " should be marked __weak"); \
	!!sym;                                                                        \
})
#endif

// Linux 6.2.
extern void bpf_rcu_read_lock(void) __ksym __weak;
extern void bpf_rcu_read_unlock(void) __ksym __weak;
// No kernel has it.
extern void bpf_ebpf_manager_no_such_kfunc(void) __ksym __weak;
// Linux 6.2, not weak: kfunc_strong needs them.
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
// A typed per-CPU variable (Linux 5.10) and an untyped one, whose address only is read; the
// kernel finds both in kallsyms, which lists variables with CONFIG_KALLSYMS_ALL only.
extern const int bpf_prog_active __ksym;
extern const void init_task __ksym;

volatile const __u32 filter_tgid = 0;

enum { RCU_LOCKED, NO_SUCH_KFUNC, PROG_ACTIVE, INIT_TASK, TASK_PID, SLOTS };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} kfunc_seen SEC(".maps");

static __always_inline void put(__u32 slot, __u64 v)
{
	__u64 *p = bpf_map_lookup_elem(&kfunc_seen, &slot);
	if (p)
		*p = v;
}

// sys_enter(struct pt_regs *regs, long id): mkdir (83) or mkdirat (258) of filter_tgid.
static __always_inline int mine(unsigned long long *ctx)
{
	if (ctx[1] != 83 && ctx[1] != 258)
		return 0;
	return (bpf_get_current_pid_tgid() >> 32) == filter_tgid;
}

SEC("tp_btf/sys_enter")
int kfunc_weak(unsigned long long *ctx)
{
	if (!mine(ctx))
		return 0;
	if (bpf_ksym_exists(bpf_rcu_read_lock)) {
		bpf_rcu_read_lock();
		put(RCU_LOCKED, 1);
		bpf_rcu_read_unlock();
	}
	if (bpf_ksym_exists(bpf_ebpf_manager_no_such_kfunc)) {
		bpf_ebpf_manager_no_such_kfunc();
		put(NO_SUCH_KFUNC, 1);
	}
	return 0;
}

SEC("tp_btf/sys_enter")
int ksym_vars(unsigned long long *ctx)
{
	if (!mine(ctx))
		return 0;
	const int *active = bpf_this_cpu_ptr(&bpf_prog_active);
	put(PROG_ACTIVE, (__u64)*active + 100);
	put(INIT_TASK, (__u64)&init_task);
	return 0;
}

SEC("tp_btf/sys_enter")
int kfunc_strong(unsigned long long *ctx)
{
	if (!mine(ctx))
		return 0;
	struct task_struct *t = bpf_task_from_pid(filter_tgid);
	if (!t)
		return 0;
	put(TASK_PID, t->pid);
	bpf_task_release(t);
	return 0;
}

char _license[] SEC("license") = "GPL";
