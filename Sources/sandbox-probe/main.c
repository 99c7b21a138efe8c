// sandbox-probe: a test program that misbehaves on command, to check the sandbox.
//
// Syscall checks print "NAME: ok" or "NAME: <ERRNO>" and exit 0 when the call
// succeeded, 1 when it failed with EPERM (denied), 2 on any other error.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *errno_name(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EROFS: return "EROFS";
    case ENOENT: return "ENOENT";
    case ENOSYS: return "ENOSYS";
    case EAGAIN: return "EAGAIN";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EFBIG: return "EFBIG";
    case EBADF: return "EBADF";
    case ESRCH: return "ESRCH";
    default: return strerror(e);
    }
}

static int outcome(const char *name, long rc) {
    if (rc >= 0) {
        printf("%s: ok\n", name);
        return 0;
    }
    int e = errno;
    printf("%s: %s\n", name, errno_name(e));
    return e == EPERM ? 1 : 2;
}

static void usage(void) {
    fprintf(stderr,
            "usage: sandbox-probe ok|spin|crash|fork-bomb|sleepers N|hog MB|flood MB|ptrace|mount|umount|unshare|setns|\n"
            "       bpf|keyctl|clone-newuser|io-uring|socket|socket6|socket-unix|write PATH|read PATH|\n"
            "       echo-fd3|fds|id|limits|pid|hostname|env NAME|exit N\n");
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) {
        usage();
        return 64;
    }
    const char *cmd = argv[1];
    const char *arg = argc > 2 ? argv[2] : NULL;

    if (!strcmp(cmd, "ok")) {
        printf("ok\n");
        return 0;
    }
    if (!strcmp(cmd, "exit")) return arg ? atoi(arg) : 0;
    if (!strcmp(cmd, "spin")) {
        printf("spinning\n");
        for (volatile unsigned long i = 0;; i++) {}
    }
    if (!strcmp(cmd, "crash")) {
        fprintf(stderr, "about to crash\n");
        volatile int *p = NULL;
        *p = 1;
        return 0;
    }
    if (!strcmp(cmd, "fork-bomb")) {
        // Every process forks until refused; all give up after 3 s (alarm), so even an
        // uncontained bomb ends by itself.
        alarm(3);
        long forks = 0;
        int first_errno = 0;
        pid_t top = getpid();
        for (int i = 0; i < 100000; i++) {
            pid_t p = fork();
            if (p == 0) { alarm(3); forks = 0; continue; }
            if (p < 0) { first_errno = errno; break; }
            forks++;
        }
        if (getpid() != top) { pause(); _exit(0); }
        printf("fork-bomb: %ld forks, then %s\n", forks, first_errno ? errno_name(first_errno) : "none");
        fflush(stdout);
        return first_errno ? 0 : 3;
    }
    if (!strcmp(cmd, "sleepers")) {
        // N children that wait forever, and the parent too: a long-lived process tree.
        int n = arg ? atoi(arg) : 4, started = 0;
        for (int i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) { for (;;) pause(); }
            if (p > 0) started++;
        }
        printf("sleepers: %d\n", started);
        for (;;) pause();
    }
    if (!strcmp(cmd, "hog")) {
        long mb = arg ? atol(arg) : 512, got = 0;
        for (; got < mb; got++) {
            char *p = malloc(1 << 20);
            if (p == NULL) {
                printf("hog: malloc failed after %ld MB\n", got);
                return 3;
            }
            memset(p, 0x5a, 1 << 20);
            if (got % 16 == 0) printf("hog: %ld MB\n", got);
        }
        printf("hog: allocated %ld MB\n", got);
        return 0;
    }
    if (!strcmp(cmd, "flood")) {
        long mb = arg ? atol(arg) : 16;
        static char buf[65536];
        memset(buf, 'x', sizeof buf);
        buf[sizeof buf - 1] = '\n';
        for (long i = 0; i < mb * 16; i++) {
            if (write(1, buf, sizeof buf) < 0 || write(2, buf, sizeof buf) < 0) return 2;
        }
        fprintf(stderr, "flood: done\n");
        return 0;
    }
    if (!strcmp(cmd, "ptrace")) return outcome("ptrace", ptrace(PTRACE_ATTACH, getppid(), 0, 0));
    if (!strcmp(cmd, "mount")) return outcome("mount", mount("tmpfs", "/tmp", "tmpfs", 0, NULL));
    if (!strcmp(cmd, "umount")) return outcome("umount", umount2("/tmp", MNT_DETACH));
    if (!strcmp(cmd, "unshare")) return outcome("unshare", unshare(CLONE_NEWUSER));
    if (!strcmp(cmd, "setns")) {
        int fd = open("/proc/self/ns/net", O_RDONLY);
        return outcome("setns", setns(fd, 0));
    }
    if (!strcmp(cmd, "bpf")) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        return outcome("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    }
    if (!strcmp(cmd, "keyctl")) return outcome("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    if (!strcmp(cmd, "clone-newuser")) {
        long rc = syscall(SYS_clone, (unsigned long)(CLONE_NEWUSER | SIGCHLD), NULL, NULL, NULL, NULL);
        if (rc == 0) _exit(0);
        if (rc > 0) waitpid((pid_t)rc, NULL, 0);
        return outcome("clone-newuser", rc);
    }
    if (!strcmp(cmd, "io-uring")) {
        char params[120];
        memset(params, 0, sizeof params);
        return outcome("io-uring", syscall(SYS_io_uring_setup, 4, params));
    }
    if (!strcmp(cmd, "socket")) return outcome("socket", socket(AF_INET, SOCK_STREAM, 0));
    if (!strcmp(cmd, "socket6")) return outcome("socket6", socket(AF_INET6, SOCK_DGRAM, 0));
    if (!strcmp(cmd, "socket-unix")) return outcome("socket-unix", socket(AF_UNIX, SOCK_STREAM, 0));
    if (!strcmp(cmd, "write") && arg) {
        int fd = open(arg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0 && write(fd, "probe\n", 6) != 6) fd = -1;
        return outcome("write", fd);
    }
    if (!strcmp(cmd, "read") && arg) {
        char buf[64];
        int fd = open(arg, O_RDONLY);
        return outcome("read", fd < 0 ? -1 : read(fd, buf, sizeof buf));
    }
    if (!strcmp(cmd, "echo-fd3")) {
        char buf[4096];
        ssize_t n = read(3, buf, sizeof buf);
        if (n < 0) return outcome("echo-fd3", -1);
        char out[4200];
        int len = snprintf(out, sizeof out, "echo:%.*s", (int)n, buf);
        return outcome("echo-fd3", write(3, out, (size_t)len));
    }
    if (!strcmp(cmd, "fds")) {
        // Open descriptors among 0..1023.
        printf("fds:");
        for (int fd = 0; fd < 1024; fd++)
            if (fcntl(fd, F_GETFD) >= 0) printf(" %d", fd);
        printf("\n");
        return 0;
    }
    if (!strcmp(cmd, "id")) {
        char line[256], caps[64] = "?", nnp[16] = "?", seccomp[16] = "?";
        FILE *f = fopen("/proc/self/status", "r");
        while (f && fgets(line, sizeof line, f)) {
            sscanf(line, "CapEff: %63s", caps);
            sscanf(line, "NoNewPrivs: %15s", nnp);
            sscanf(line, "Seccomp: %15s", seccomp);
        }
        if (f) fclose(f);
        gid_t groups[64];
        int ng = getgroups(64, groups);
        printf("uid=%d euid=%d gid=%d groups=%d capeff=%s nonewprivs=%s seccomp=%s\n", (int)getuid(), (int)geteuid(),
               (int)getgid(), ng, caps, nnp, seccomp);
        return getuid() == 0 ? 1 : 0;
    }
    if (!strcmp(cmd, "limits")) {
        static const struct { int r; const char *n; } rs[] = {
            {RLIMIT_AS, "as"}, {RLIMIT_NOFILE, "nofile"}, {RLIMIT_NPROC, "nproc"},
            {RLIMIT_FSIZE, "fsize"}, {RLIMIT_CORE, "core"}};
        for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
            struct rlimit rl;
            getrlimit(rs[i].r, &rl);
            if (rl.rlim_cur == RLIM_INFINITY) printf("%s=unlimited\n", rs[i].n);
            else printf("%s=%llu\n", rs[i].n, (unsigned long long)rl.rlim_cur);
        }
        return 0;
    }
    if (!strcmp(cmd, "pid")) {
        printf("pid=%d ppid=%d\n", (int)getpid(), (int)getppid());
        return 0;
    }
    if (!strcmp(cmd, "hostname")) {
        char h[256] = "";
        gethostname(h, sizeof h);
        printf("hostname=%s\n", h);
        return 0;
    }
    if (!strcmp(cmd, "env") && arg) {
        const char *v = getenv(arg);
        printf("%s=%s\n", arg, v ? v : "(unset)");
        return v ? 0 : 1;
    }
    usage();
    return 64;
}
