// SPDX-License-Identifier: GPL-2.0
// What the C of Go ebpf-manager users includes: the legacy five-field `struct bpf_map_def`
// they declare maps with in `SEC("maps")`, and LOAD_CONSTANT, a constant loaded by instruction
// (an ld_imm64 of an undefined symbol) that the manager's ConstantEditor sets before load.
#ifndef GO_COMPAT_H
#define GO_COMPAT_H

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

#define LOAD_CONSTANT(param, var) asm("%0 = " param " ll" : "=r"(var))

#endif
