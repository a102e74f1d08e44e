// SPDX-License-Identifier: GPL-2.0
// build: go-style (clang -emit-llvm | llc -march=bpf, no -g: no BTF, as the Go ebpf-manager
// examples' Makefile builds)
//
// mapofmaps.bpf.c built the Go way: a legacy map of maps in an object without BTF, which Go's
// InnerOuterMapSpecs accept.
#include "mapofmaps.bpf.c"
