// weft-launcher: the seccomp filter of a function instance.
//
// Default action: allow (a deny-list). Native architecture only: calls through another
// ABI (i386 int 0x80, x32) hit libseccomp's bad-arch action and kill the process, so the
// deny-list cannot be side-stepped with a compat syscall number. The filter is loaded
// last, after no_new_privs, right before execve (which stays allowed).
#include "launcher.h"

#include <errno.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

// One row per denied syscall: the errno it fails with, and why it is denied.
struct syscall_rule {
    const char *name;
    int error;
    const char *why;
};

static const struct syscall_rule denied_syscalls[] = {
    // name                    errno    why
    {"ptrace",                 EPERM,  "inspect or control other processes"},
    {"process_vm_readv",       EPERM,  "read another process's memory"},
    {"process_vm_writev",      EPERM,  "write another process's memory"},
    {"kcmp",                   EPERM,  "probe other processes' kernel objects"},
    {"mount",                  EPERM,  "change the filesystem view"},
    {"umount",                 EPERM,  "change the filesystem view (arch without umount2)"},
    {"umount2",                EPERM,  "uncover hidden mounts (e.g. the host /tmp)"},
    {"pivot_root",             EPERM,  "change the root filesystem"},
    {"chroot",                 EPERM,  "change the root directory"},
    {"fsopen",                 EPERM,  "new mount API: create a filesystem context"},
    {"fsconfig",               EPERM,  "new mount API: configure a filesystem"},
    {"fsmount",                EPERM,  "new mount API: create a mount"},
    {"fspick",                 EPERM,  "new mount API: reconfigure a mount"},
    {"move_mount",             EPERM,  "new mount API: attach a mount"},
    {"open_tree",              EPERM,  "new mount API: clone a mount tree"},
    {"mount_setattr",          EPERM,  "new mount API: clear read-only flags"},
    {"setns",                  EPERM,  "join another namespace"},
    {"unshare",                EPERM,  "create namespaces (user namespaces widen kernel attack surface)"},
    {"bpf",                    EPERM,  "load eBPF programs"},
    {"perf_event_open",        EPERM,  "performance counters: side channels, kernel attack surface"},
    {"userfaultfd",            EPERM,  "stall kernel threads on page faults (exploit primitive)"},
    {"io_uring_setup",         EPERM,  "io_uring bypasses this filter (e.g. IORING_OP_SOCKET)"},
    {"io_uring_enter",         EPERM,  "io_uring, see above"},
    {"io_uring_register",      EPERM,  "io_uring, see above"},
    {"keyctl",                 EPERM,  "kernel keyrings are not namespaced"},
    {"add_key",                EPERM,  "kernel keyrings are not namespaced"},
    {"request_key",            EPERM,  "kernel keyrings are not namespaced"},
    {"kexec_load",             EPERM,  "load a new kernel"},
    {"kexec_file_load",        EPERM,  "load a new kernel"},
    {"init_module",            EPERM,  "load kernel modules"},
    {"finit_module",           EPERM,  "load kernel modules"},
    {"delete_module",          EPERM,  "unload kernel modules"},
    {"reboot",                 EPERM,  "reboot the host"},
    {"swapon",                 EPERM,  "change host swap"},
    {"swapoff",                EPERM,  "change host swap"},
    {"acct",                   EPERM,  "host process accounting"},
    {"quotactl",               EPERM,  "host disk quotas"},
    {"syslog",                 EPERM,  "read or clear the kernel log"},
    {"settimeofday",           EPERM,  "set the host clock"},
    {"clock_settime",          EPERM,  "set the host clock"},
    {"clock_adjtime",          EPERM,  "adjust the host clock"},
    {"adjtimex",               EPERM,  "adjust the host clock"},
    {"open_by_handle_at",      EPERM,  "open files by handle, bypassing mounts (container escape)"},
    {"name_to_handle_at",      EPERM,  "file handles, see open_by_handle_at"},
    {"lookup_dcookie",         EPERM,  "kernel profiling interface"},
    {"iopl",                   EPERM,  "raw I/O port access"},
    {"ioperm",                 EPERM,  "raw I/O port access"},
    {"uselib",                 EPERM,  "obsolete library loader"},
    {"personality",            EPERM,  "change the execution domain (e.g. disable ASLR)"},
    {"vhangup",                EPERM,  "hang up the terminal"},
    {"clone3",                 ENOSYS, "flags live in memory the filter cannot inspect; libc falls back to clone"},
};

// clone(2) itself stays allowed (threads, fork) but not with namespace flags: one rule per
// flag, tested with a masked comparison on the flags argument.
static const struct {
    unsigned long flag;
    const char *name;
} clone_namespace_flags[] = {
    {CLONE_NEWUSER, "CLONE_NEWUSER"}, {CLONE_NEWPID, "CLONE_NEWPID"}, {CLONE_NEWNET, "CLONE_NEWNET"},
    {CLONE_NEWNS, "CLONE_NEWNS"},     {CLONE_NEWIPC, "CLONE_NEWIPC"}, {CLONE_NEWUTS, "CLONE_NEWUTS"},
    {CLONE_NEWCGROUP, "CLONE_NEWCGROUP"},
    // (CLONE_NEWTIME only exists for clone3/unshare, both denied above.)
};

// socket(2) domains that fail with EPERM: "network" rows only when the manifest does not
// allow network, "always" rows in every case. AF_UNIX stays allowed.
struct socket_rule {
    int domain;
    const char *name;
    int always;
    const char *why;
};

static const struct socket_rule denied_socket_domains[] = {
    // domain       name            always  why
    {AF_INET,       "AF_INET",      0,      "IPv4 network"},
    {AF_INET6,      "AF_INET6",     0,      "IPv6 network"},
    {AF_NETLINK,    "AF_NETLINK",   0,      "kernel network configuration and events"},
    {AF_PACKET,     "AF_PACKET",    1,      "raw link-layer frames"},
    {AF_KEY,        "AF_KEY",       1,      "IPsec key management"},
    {AF_VSOCK,      "AF_VSOCK",     1,      "host/guest sockets"},
    {AF_BLUETOOTH,  "AF_BLUETOOTH", 1,      "bluetooth"},
    {AF_ALG,        "AF_ALG",       1,      "kernel crypto API attack surface"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

void *seccomp_build(const struct options *o, int *rules, char *err, size_t errlen) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (ctx == NULL) {
        snprintf(err, errlen, "seccomp_init failed");
        return NULL;
    }
    int n = 0, rc;

    for (size_t i = 0; i < COUNT(denied_syscalls); i++) {
        const struct syscall_rule *r = &denied_syscalls[i];
        int nr = seccomp_syscall_resolve_name(r->name);
        if (nr == __NR_SCMP_ERROR) {
            warnf("seccomp: unknown syscall %s", r->name);
            continue;
        }
        if (nr < 0) continue;   // a pseudo-number: the syscall does not exist on this arch
        rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO((unsigned)r->error), nr, 0, NULL);
        if (rc != 0) {
            snprintf(err, errlen, "seccomp rule %s: %s", r->name, strerror(-rc));
            seccomp_release(ctx);
            return NULL;
        }
        n++;
    }

    int clone_nr = seccomp_syscall_resolve_name("clone");
    for (size_t i = 0; i < COUNT(clone_namespace_flags); i++) {
        struct scmp_arg_cmp cmp = {.arg = 0, .op = SCMP_CMP_MASKED_EQ,
                                   .datum_a = clone_namespace_flags[i].flag,
                                   .datum_b = clone_namespace_flags[i].flag};
        rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), clone_nr, 1, &cmp);
        if (rc != 0) {
            snprintf(err, errlen, "seccomp rule clone(%s): %s", clone_namespace_flags[i].name, strerror(-rc));
            seccomp_release(ctx);
            return NULL;
        }
        n++;
    }

    int socket_nr = seccomp_syscall_resolve_name("socket");
    for (size_t i = 0; i < COUNT(denied_socket_domains); i++) {
        const struct socket_rule *r = &denied_socket_domains[i];
        if (!r->always && o->network) continue;
        struct scmp_arg_cmp cmp = {.arg = 0, .op = SCMP_CMP_EQ, .datum_a = (scmp_datum_t)r->domain};
        rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), socket_nr, 1, &cmp);
        if (rc != 0) {
            snprintf(err, errlen, "seccomp rule socket(%s): %s", r->name, strerror(-rc));
            seccomp_release(ctx);
            return NULL;
        }
        n++;
    }
    *rules = n;
    return ctx;
}

int seccomp_install(void *ctx) {
    return seccomp_load((scmp_filter_ctx)ctx);
}
