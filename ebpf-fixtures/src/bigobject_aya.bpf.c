// SPDX-License-Identifier: GPL-2.0
// bigobject.bpf.c as raw aya can load it: `volatile const` constants, no telemetry placeholders.
#define LIBBPF_CONSTANTS
#define NO_PLACEHOLDERS
#include "bigobject.bpf.c"
