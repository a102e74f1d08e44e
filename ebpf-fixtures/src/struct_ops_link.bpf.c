// SPDX-License-Identifier: GPL-2.0
// struct_ops.bpf.c with its map in `.struct_ops.link` (Linux 6.4).
#define EBPFM_CC_LINK
#include "struct_ops.bpf.c"
