// Stems: a launcher started with --stem sets up everything that does not depend on the
// function (its cgroup, joined by init; the namespaces; the uid map) and then waits on the
// report socket for the function: the launcher options and argv of a normal start, the
// environment, and the channel and arena fds. What takes the time of a start (the launcher's
// own start, creating the cgroup and moving init into it: one RCU grace period, 7-18 ms on a
// cgroup-v1 kernel) is then paid before the invocation that needs the instance arrives.
#include "launcher.h"
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

extern char **environ;

// The raw message (kept: init gets it forwarded byte for byte, and argv/env point into it).
static char raw[65536];
static uint32_t raw_len;

int receive_activation(int fd, struct activation *a, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    uint32_t len = 0;
    char control[CMSG_SPACE(2 * sizeof(int))];
    struct iovec iov = {&len, sizeof len};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    ssize_t n;
    do {
        n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
        snprintf(err, errlen, "the worker went away before activating the stem");
        return -1;
    }
    if (n < 0) {
        snprintf(err, errlen, "recvmsg: %s", strerror(errno));
        return -1;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < count && a->nfds < 2; i++) memcpy(&a->fds[a->nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    if (n < (ssize_t)sizeof len && read_full(fd, (char *)&len + n, sizeof len - (size_t)n) != (int)(sizeof len - (size_t)n)) {
        snprintf(err, errlen, "activation cut short");
        return -1;
    }
    if (len == 0 || len >= sizeof raw) {
        snprintf(err, errlen, "activation of %u bytes (at most %zu)", len, sizeof raw - 1);
        return -1;
    }
    if (read_full(fd, raw, len) != (int)len) {
        snprintf(err, errlen, "activation cut short");
        return -1;
    }
    raw[len] = '\0';
    raw_len = len;
    // argv strings up to an empty one, then the environment.
    char *p = raw, *end = raw + len;
    int in_env = 0;
    while (p < end) {
        size_t sl = strnlen(p, (size_t)(end - p));
        if (!in_env && sl == 0) {
            in_env = 1;
        } else if (!in_env) {
            if (a->argc >= 255) { snprintf(err, errlen, "too many arguments"); return -1; }
            a->argv[a->argc++] = p;
        } else if (sl > 0) {
            if (a->envc >= 255) { snprintf(err, errlen, "too many environment entries"); return -1; }
            a->env[a->envc++] = p;
        }
        p += sl + 1;
    }
    a->argv[a->argc] = NULL;
    a->env[a->envc] = NULL;
    if (a->argc < 2) {
        snprintf(err, errlen, "activation names no function");
        return -1;
    }
    return 0;
}

int forward_activation(int fd, const struct activation *a) {
    char control[CMSG_SPACE(2 * sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov[2] = {{&raw_len, sizeof raw_len}, {raw, raw_len}};
    struct msghdr m = {0};
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    if (a->nfds > 0) {
        m.msg_control = control;
        m.msg_controllen = CMSG_SPACE((size_t)a->nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)a->nfds * sizeof(int));
        memcpy(CMSG_DATA(c), a->fds, (size_t)a->nfds * sizeof(int));
    }
    ssize_t n;
    do {
        n = sendmsg(fd, &m, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)(sizeof raw_len + raw_len) ? 0 : -1;
}

int apply_activation(struct options *o, const struct activation *a, char *err, size_t errlen) {
    struct options late;
    if (parse_options(a->argc, (char **)a->argv, &late, err, errlen) != 0) return -1;
    // What the stem fixed before the function was known must be what the function asks for.
    if (late.stem || late.keep_fd >= 0 || late.arena_fd >= 0 || late.report_fd >= 0) {
        snprintf(err, errlen, "activation: --stem and fd options are not accepted here");
        return -1;
    }
    if (late.network != o->network || late.uid != o->uid || late.gid != o->gid || late.no_userns != o->no_userns
        || late.no_cgroup != o->no_cgroup || strcmp(late.cgroup_parent, o->cgroup_parent) != 0
        || (late.memory_mb > 0) != (o->memory_mb > 0) || (late.pids > 0) != (o->pids > 0)
        || (late.cpu_percent > 0) != (o->cpu_percent > 0)) {
        snprintf(err, errlen, "activation: the function's network, identity or cgroup settings differ from the stem's");
        return -1;
    }
    late.report_fd = o->report_fd;
    late.keep_fd = a->nfds > 0 ? a->fds[0] : -1;
    late.arena_fd = a->nfds > 1 ? a->fds[1] : -1;
    *o = late;
    environ = (char **)a->env;
    return 0;
}
