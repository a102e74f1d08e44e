// SPDX-License-Identifier: GPL-2.0
// The user-space program whose functions the uprobe tests and example probe.
// tests/build.rs builds it twice with gcc:
//  - a static executable, `uprobe_target`:
//      uprobe_target N        for i = 1..N calls uprobe_target_add(i, 100) then
//                             uprobe_target_twice(1000 * i), prints the sum of the results
//      uprobe_target wait N   prints "ready", waits for a line on stdin, then does the same
//  - with -DUPROBE_TARGET_LIBRARY, a shared library, `libuprobe_target.so`, holding the
//    functions only (no libc, no relocations), so that a static process may map it and call
//    them where no dynamic loader exists.
//
// The functions are not inlined (-fno-inline and noinline), and the empty asm keeps gcc from
// folding calls away, so every call runs the probed instruction.

#define NOINLINE __attribute__((noinline, used))

NOINLINE long uprobe_target_add(long a, long b)
{
	__asm__ volatile("" ::: "memory");
	return a + b;
}

NOINLINE long uprobe_target_twice(long a)
{
	__asm__ volatile("" ::: "memory");
	return 2 * a;
}

#ifndef UPROBE_TARGET_LIBRARY
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	int wait = argc > 1 && strcmp(argv[1], "wait") == 0;
	if (argc != 2 + wait) {
		fprintf(stderr, "usage: uprobe_target [wait] N\n");
		return 2;
	}
	long n = strtol(argv[1 + wait], NULL, 10);
	if (wait) {
		char line[64];
		printf("ready\n");
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			return 3;
	}
	long sum = 0;
	for (long i = 1; i <= n; i++)
		sum += uprobe_target_add(i, 100) + uprobe_target_twice(1000 * i);
	printf("%ld\n", sum);
	return 0;
}
#endif
