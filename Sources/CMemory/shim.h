// mremap is variadic in glibc's header, which Swift cannot call: this wrapper fixes its arguments.
#ifndef PERMAFROST_CMEMORY_SHIM_H
#define PERMAFROST_CMEMORY_SHIM_H
#ifdef __linux__
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <sys/mman.h>

/// Resizes a private anonymous mapping, keeping its resident pages (moving the mapping if it must
/// grow and cannot in place). Returns MAP_FAILED on failure.
static inline void *permafrost_resize_mapping(void *address, size_t oldSize, size_t newSize) {
    return mremap(address, oldSize, newSize, MREMAP_MAYMOVE);
}
#endif
#endif
