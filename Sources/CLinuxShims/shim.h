// What Swift cannot call by itself on Linux: memfd_create (Glibc's Swift module does not import
// this GNU extension, and `syscall` is variadic), and sendmsg with SCM_RIGHTS (the CMSG_*
// macros). Used by WeftWire's SharedArena (memory a worker shares with a function instance)
// and WeftSandbox's stems (fds handed to a launcher that is already running).
#ifndef WEFT_CLINUXSHIMS_H
#define WEFT_CLINUXSHIMS_H

#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/// A close-on-exec memfd that allows seals (MFD_CLOEXEC | MFD_ALLOW_SEALING); -1 and errno on failure.
static inline int weft_memfd_create_sealable(const char *name) {
    return (int)syscall(SYS_memfd_create, name, 0x0001U | 0x0002U);
}

/// Sends `len` bytes with up to 4 fds attached (SCM_RIGHTS); the bytes sent, or -1 and errno.
static inline long weft_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    char control[CMSG_SPACE(4 * sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = {(void *)buf, len};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (nfds > 0) {
        if (nfds > 4) nfds = 4;
        m.msg_control = control;
        m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    return (long)sendmsg(sock, &m, MSG_NOSIGNAL);
}

#endif
