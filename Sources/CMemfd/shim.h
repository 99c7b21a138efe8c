// memfd_create for Swift: Glibc's Swift module does not import it (it is a GNU extension of
// <sys/mman.h>), and `syscall` is variadic, which Swift cannot call. Used by WeftWire's
// SharedArena (memory a worker shares with a function instance).
#ifndef WEFT_CMEMFD_SHIM_H
#define WEFT_CMEMFD_SHIM_H

#include <sys/syscall.h>
#include <unistd.h>

/// A close-on-exec memfd that allows seals (MFD_CLOEXEC | MFD_ALLOW_SEALING); -1 and errno on failure.
static inline int weft_memfd_create_sealable(const char *name) {
    return (int)syscall(SYS_memfd_create, name, 0x0001U | 0x0002U);
}

#endif
