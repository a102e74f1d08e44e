// SPDX-License-Identifier: GPL-2.0
// The libbpf baseline of `cargo xtask bench readers` (tests/benches/readers.rs runs it as a
// child, once per measured run). It does what the Rust variants do, with libbpf 1.1:
// open bench.bpf.o, set `records_per_run`, load, read bench_ring_events with
// ring_buffer__poll or bench_perf_events with perf_buffer__poll on a thread of its own,
// and produce on the main thread with BPF_PROG_TEST_RUN until CALLS runs are done.
//
//   readers_libbpf OBJECT ring|perf RECORDS_PER_RUN REPEAT CALLS PERF_PAGES
//
// prints one line: `result produced=P refused=F received=R lost=L wall_ns=W producer_ns=T`,
// where T is the time the program ran, as the kernel measured it for each test run: the
// benchmark pins itself to one CPU before it starts this program, which inherits the pin, so
// wall - T is what the consumer cost (see tests/benches/readers.rs for why not a CPU clock).
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

enum { RING_PRODUCED, RING_FAILED, PERF_PRODUCED, PERF_FAILED };

// Written by the consumer thread only, read by the main thread: relaxed loads and stores,
// the same work as the Rust handlers.
static unsigned long long received, seq_sum, lost;
static volatile int stopping;

static void die(const char *what, int err)
{
	fprintf(stderr, "readers_libbpf: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static unsigned long long ns(clockid_t clock)
{
	struct timespec t;
	clock_gettime(clock, &t);
	return (unsigned long long)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static void handle(const void *data)
{
	unsigned long long seq;
	memcpy(&seq, data, sizeof(seq));
	__atomic_store_n(&seq_sum, __atomic_load_n(&seq_sum, __ATOMIC_RELAXED) + seq, __ATOMIC_RELAXED);
	__atomic_store_n(&received, __atomic_load_n(&received, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

static int on_ring(void *ctx, void *data, size_t size)
{
	(void)ctx;
	(void)size;
	handle(data);
	return 0;
}

static void on_perf(void *ctx, int cpu, void *data, __u32 size)
{
	(void)ctx;
	(void)cpu;
	(void)size;
	handle(data);
}

static void on_lost(void *ctx, int cpu, __u64 count)
{
	(void)ctx;
	(void)cpu;
	__atomic_store_n(&lost, __atomic_load_n(&lost, __ATOMIC_RELAXED) + count, __ATOMIC_RELAXED);
}

struct consumer {
	struct ring_buffer *ring;
	struct perf_buffer *perf;
};

static void *consume(void *arg)
{
	struct consumer *c = arg;
	// The timeout only matters once idle: it is how the thread sees `stopping`.
	while (!stopping) {
		int n = c->ring ? ring_buffer__poll(c->ring, 10) : perf_buffer__poll(c->perf, 10);
		if (n < 0 && n != -EINTR)
			die("poll", n);
	}
	return NULL;
}

// Sets the `volatile const` global `name` in .rodata before load: a copy of the section's
// initial bytes with the variable (its offset from the BTF datasec) changed.
static void set_rodata_u32(struct bpf_object *obj, const char *name, __u32 value)
{
	struct bpf_map *rodata = bpf_object__find_map_by_name(obj, ".rodata");
	struct btf *btf = bpf_object__btf(obj);
	if (!rodata || !btf)
		die("the object has no .rodata or no BTF", EINVAL);
	int id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (id < 0)
		die("no .rodata datasec in the BTF", id);
	const struct btf_type *sec = btf__type_by_id(btf, id);
	const struct btf_var_secinfo *vars = btf_var_secinfos(sec);
	size_t size;
	const void *initial = bpf_map__initial_value(rodata, &size);
	for (int i = 0; i < btf_vlen(sec); i++) {
		const struct btf_type *var = btf__type_by_id(btf, vars[i].type);
		if (strcmp(btf__name_by_offset(btf, var->name_off), name) == 0 &&
		    vars[i].size == sizeof(value) && vars[i].offset + sizeof(value) <= size) {
			char data[size];
			memcpy(data, initial, size);
			memcpy(data + vars[i].offset, &value, sizeof(value));
			int err = bpf_map__set_initial_value(rodata, data, size);
			if (err)
				die("setting .rodata", err);
			return;
		}
	}
	die(name, ENOENT);
}

static int warnings_only(enum libbpf_print_level level, const char *format, va_list args)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, format, args) : 0;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s OBJECT ring|perf RECORDS_PER_RUN REPEAT CALLS PERF_PAGES\n",
			argv[0]);
		return 2;
	}
	int ring = strcmp(argv[2], "ring") == 0;
	__u32 per_run = strtoul(argv[3], NULL, 10);
	__u32 repeat = strtoul(argv[4], NULL, 10);
	unsigned long long calls = strtoull(argv[5], NULL, 10);
	size_t pages = strtoul(argv[6], NULL, 10);
	libbpf_set_print(warnings_only);

	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj)
		die(argv[1], errno);
	set_rodata_u32(obj, "records_per_run", per_run);
	// Load only the program this run uses, as the Rust variants do.
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, ring ? "bench_ring" : "bench_perf");
	struct bpf_program *other = bpf_object__find_program_by_name(obj, ring ? "bench_perf" : "bench_ring");
	if (!prog || !other)
		die("the object lacks bench_ring or bench_perf", ENOENT);
	bpf_program__set_autoload(other, false);
	int err = bpf_object__load(obj);
	if (err)
		die("load", err);
	int counts = bpf_object__find_map_fd_by_name(obj, "bench_counts");
	int events = bpf_object__find_map_fd_by_name(obj, ring ? "bench_ring_events" : "bench_perf_events");
	if (counts < 0 || events < 0)
		die("the object lacks its maps", ENOENT);

	struct consumer c = { 0 };
	if (ring) {
		c.ring = ring_buffer__new(events, on_ring, NULL, NULL);
		if (!c.ring)
			die("ring_buffer__new", errno);
	} else {
		c.perf = perf_buffer__new(events, pages, on_perf, on_lost, NULL, NULL);
		if (!c.perf)
			die("perf_buffer__new", errno);
	}
	pthread_t consumer;
	if ((err = pthread_create(&consumer, NULL, consume, &c)))
		die("pthread_create", err);

	unsigned char packet[64] = { 0 };
	LIBBPF_OPTS(bpf_test_run_opts, run, .data_in = packet, .data_size_in = sizeof(packet),
		    .repeat = repeat);
	unsigned long long wall0 = ns(CLOCK_MONOTONIC), producer_ns = 0;
	for (unsigned long long i = 0; i < calls; i++) {
		if ((err = bpf_prog_test_run_opts(bpf_program__fd(prog), &run)))
			die("BPF_PROG_TEST_RUN", errno);
		// The kernel reports the mean time of one run, preemptions left out.
		producer_ns += (unsigned long long)run.duration * repeat;
	}
	__u32 key = ring ? RING_PRODUCED : PERF_PRODUCED;
	__u64 produced = 0, refused = 0;
	bpf_map_lookup_elem(counts, &key, &produced);
	key++;
	bpf_map_lookup_elem(counts, &key, &refused);
	// Wait for the consumer to have handled every record the buffer took (at most 10 s).
	unsigned long long deadline = ns(CLOCK_MONOTONIC) + 10000000000ull;
	struct timespec nap = { 0, 50000 };
	while (__atomic_load_n(&received, __ATOMIC_RELAXED) < produced - refused &&
	       ns(CLOCK_MONOTONIC) < deadline)
		nanosleep(&nap, NULL);
	unsigned long long wall1 = ns(CLOCK_MONOTONIC);

	stopping = 1;
	pthread_join(consumer, NULL);
	printf("result produced=%llu refused=%llu received=%llu lost=%llu wall_ns=%llu producer_ns=%llu\n",
	       (unsigned long long)produced, (unsigned long long)refused,
	       __atomic_load_n(&received, __ATOMIC_RELAXED), __atomic_load_n(&lost, __ATOMIC_RELAXED),
	       wall1 - wall0, producer_ns);
	ring_buffer__free(c.ring);
	perf_buffer__free(c.perf);
	bpf_object__close(obj);
	return 0;
}
