// SPDX-License-Identifier: GPL-2.0
// Programs typed against the kernel's BTF, for the integration tests and examples: fentry,
// fexit, tp_btf, LSM and a task iterator, with a plain tracepoint twin to fall back on.
//
// Built without vmlinux.h: the tracing programs take their arguments as `unsigned long long
// *ctx`, and the iterator declares the few kernel types it reads with preserve_access_index,
// so that aya relocates their fields against the running kernel's BTF (CO-RE).
//
// Each counting program counts the thread `filter_tid` only (0: every thread) in its slot of
// `btf_hits`.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile const __u32 filter_tid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} btf_hits SEC(".maps");

enum slot {
	SLOT_FENTRY = 0,
	SLOT_FEXIT = 1,
	SLOT_TP_BTF = 2,
	SLOT_LSM = 3,
	SLOT_TRACEPOINT = 4,
	SLOT_ITER = 5,
};

// x86_64 syscall number of mkdir(2), which glibc's mkdir and Rust's create_dir use.
#define NR_MKDIR 83

static __always_inline int count(__u32 slot)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (filter_tid && tid != filter_tid)
		return 0;
	__u64 *v = bpf_map_lookup_elem(&btf_hits, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

SEC("fentry/vfs_mkdir")
int fentry_vfs_mkdir(unsigned long long *ctx) { return count(SLOT_FENTRY); }

SEC("fexit/vfs_mkdir")
int fexit_vfs_mkdir(unsigned long long *ctx) { return count(SLOT_FEXIT); }

// sys_enter(struct pt_regs *regs, long id)
SEC("tp_btf/sys_enter")
int tp_btf_sys_enter(unsigned long long *ctx)
{
	if (ctx[1] != NR_MKDIR)
		return 0;
	return count(SLOT_TP_BTF);
}

// security_path_mkdir(const struct path *dir, struct dentry *dentry, umode_t mode): 0 allows.
SEC("lsm/path_mkdir")
int lsm_path_mkdir(unsigned long long *ctx)
{
	count(SLOT_LSM);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_mkdir")
int tracepoint_sys_enter_mkdir(void *ctx) { return count(SLOT_TRACEPOINT); }

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

// The context of iter/task: two pointers, whose layout every kernel shares.
struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
};

// One line per task: "<tgid> <pid>".
SEC("iter/task")
int iter_task(struct bpf_iter__task *ctx)
{
	static const char fmt[] = "%d %d\n";
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	if (!task)
		return 0;
	__u64 args[2] = { task->tgid, task->pid };
	bpf_seq_printf(seq, fmt, sizeof(fmt), args, sizeof(args));
	__u32 slot = SLOT_ITER;
	__u64 *v = bpf_map_lookup_elem(&btf_hits, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

char _license[] SEC("license") = "GPL";
