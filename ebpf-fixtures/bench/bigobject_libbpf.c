// SPDX-License-Identifier: GPL-2.0
// The libbpf baseline of `cargo xtask bench bigobject`: loads bigobject_libbpf.bpf.o as an
// agent written with libbpf would, one round at a time, and prints each round's phases in
// microseconds: `init start stop`.
//
// init:  the telemetry placeholders (`call -1`) patched in the bytes (into `r0 = 0`, as the
//        manager's benchmark patcher does), bpf_object__open_mem, the 30 `const_*` globals set
//        in .rodata, bpf_object__load (maps, CO-RE, all 60 programs verified).
// start: the 10 tail-call targets written into `tail_calls` (the manager routes them at start),
//        the 35 selected programs attached (tracepoints).
// stop:  the links destroyed and the object closed.
//
// usage: bigobject_libbpf <object> <rounds>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int quiet(enum libbpf_print_level level, const char *fmt, va_list args)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, args) : 0;
}

// The programs attached: the first 35 tracepoints (the development host has no kprobes; the
// kprobes load, as the rest of the object, and stay unattached).
static const char *SELECTED[] = {
	"tp_read", "tp_write", "tp_openat", "tp_close", "tp_mkdir", "tp_rmdir", "tp_unlinkat",
	"tp_getpid", "tp_getppid", "tp_dup", "tp_pipe2", "tp_socket", "tp_connect", "tp_accept4",
	"tp_bind", "tp_listen", "tp_sendto", "tp_recvfrom", "tp_mmap", "tp_munmap", "tp_mprotect",
	"tp_brk", "tp_lseek", "tp_ioctl", "tp_fcntl", "tp_chdir", "tp_fchdir", "tp_nanosleep",
	"tp_getuid", "tp_kill", "tp_getgid", "tp_geteuid", "tp_getegid", "tp_gettid",
	"tp_sched_yield",
};
#define N_SELECTED (sizeof(SELECTED) / sizeof(SELECTED[0]))

static int patch_placeholders(unsigned char *buf, size_t len)
{
	static const unsigned char call[8] = { 0x85, 0, 0, 0, 0xff, 0xff, 0xff, 0xff };
	static const unsigned char zero[8] = { 0xb7, 0, 0, 0, 0, 0, 0, 0 };
	int n = 0;
	for (size_t i = 0; i + 8 <= len; i += 8) {
		if (!memcmp(buf + i, call, 8)) {
			memcpy(buf + i, zero, 8);
			n++;
		}
	}
	return n;
}

static int set_constants(struct bpf_object *obj)
{
	struct bpf_map *map, *rodata = NULL;
	bpf_object__for_each_map(map, obj) {
		const char *name = bpf_map__name(map);
		size_t l = strlen(name);
		if (l >= 7 && !strcmp(name + l - 7, ".rodata"))
			rodata = map;
	}
	if (!rodata)
		return -1;
	size_t size;
	const char *initial = bpf_map__initial_value(rodata, &size);
	char data[4096];
	if (!initial || size > sizeof(data))
		return -1;
	memcpy(data, initial, size);
	struct btf *btf = bpf_object__btf(obj);
	int id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (id < 0)
		return -1;
	const struct btf_type *sec = btf__type_by_id(btf, id);
	const struct btf_var_secinfo *v = btf_var_secinfos(sec);
	int set = 0;
	for (int i = 0; i < btf_vlen(sec); i++, v++) {
		const char *name = btf__name_by_offset(btf, btf__type_by_id(btf, v->type)->name_off);
		if (strncmp(name, "const_", 6) || v->offset + 8 > size)
			continue;
		__u64 value = 0;
		memcpy(data + v->offset, &value, sizeof(value));
		set++;
	}
	return bpf_map__set_initial_value(rodata, data, size) ? -1 : set;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s <object> <rounds>\n", argv[0]);
		return 2;
	}
	libbpf_set_print(quiet);
	FILE *f = fopen(argv[1], "rb");
	if (!f) {
		perror(argv[1]);
		return 1;
	}
	fseek(f, 0, SEEK_END);
	size_t len = ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *original = malloc(len), *buf = malloc(len);
	if (fread(original, 1, len, f) != len) {
		perror("read");
		return 1;
	}
	fclose(f);
	int rounds = atoi(argv[2]);
	for (int r = 0; r < rounds; r++) {
		double t0 = now_us();
		memcpy(buf, original, len);
		int patched = patch_placeholders(buf, len);
		struct bpf_object *obj = bpf_object__open_mem(buf, len, NULL);
		if (!obj) {
			fprintf(stderr, "open: %s\n", strerror(errno));
			return 1;
		}
		int constants = set_constants(obj);
		if (patched != 140 || constants != 30) {
			fprintf(stderr, "%d placeholders, %d constants\n", patched, constants);
			return 1;
		}
		if (bpf_object__load(obj)) {
			fprintf(stderr, "load: %s\n", strerror(errno));
			return 1;
		}
		double t1 = now_us();
		int tail_calls = bpf_map__fd(bpf_object__find_map_by_name(obj, "tail_calls"));
		for (__u32 k = 0; k < 10; k++) {
			char name[16];
			snprintf(name, sizeof(name), "tail_%u", k);
			int fd = bpf_program__fd(bpf_object__find_program_by_name(obj, name));
			if (bpf_map_update_elem(tail_calls, &k, &fd, BPF_ANY)) {
				fprintf(stderr, "tail call %u: %s\n", k, strerror(errno));
				return 1;
			}
		}
		struct bpf_link *links[N_SELECTED];
		for (size_t i = 0; i < N_SELECTED; i++) {
			struct bpf_program *p = bpf_object__find_program_by_name(obj, SELECTED[i]);
			links[i] = p ? bpf_program__attach(p) : NULL;
			if (!links[i]) {
				fprintf(stderr, "attach %s: %s\n", SELECTED[i], strerror(errno));
				return 1;
			}
		}
		double t2 = now_us();
		for (size_t i = 0; i < N_SELECTED; i++)
			bpf_link__destroy(links[i]);
		bpf_object__close(obj);
		double t3 = now_us();
		printf("%.0f %.0f %.0f\n", t1 - t0, t2 - t1, t3 - t2);
		fflush(stdout);
	}
	free(original);
	free(buf);
	return 0;
}
