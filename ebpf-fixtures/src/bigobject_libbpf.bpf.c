// SPDX-License-Identifier: GPL-2.0
// bigobject.bpf.c with its constants as `volatile const` globals, as libbpf loads them.
#define LIBBPF_CONSTANTS
#include "bigobject.bpf.c"
