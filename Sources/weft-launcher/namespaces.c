// weft-launcher: namespaces, uid/gid maps and the mount layout of an instance.
//
// Mount layout (when the mount namespace applies):
//   /            the host root, recursively read-only and nosuid (a private copy of the tree)
//   /tmp         a private tmpfs of --tmp-mb (mode 1777, nosuid, nodev)
//   /dev/shm     a private tmpfs of --tmp-mb (POSIX shared memory / semaphores)
//   /proc        a new procfs for the instance's pid namespace
//   --code DIR   read-only at its own path (re-bound inside the private /tmp when it lies
//                under /tmp, so that the new tmpfs does not hide it)
//   --hide DIR   covered by an empty read-only tmpfs with mode 000
#define _GNU_SOURCE
#include "launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

const struct ns_kind ns_kinds[] = {
    {"user", CLONE_NEWUSER},
    {"pid", CLONE_NEWPID},
    {"net", CLONE_NEWNET},
    {"mount", CLONE_NEWNS},
    {"ipc", CLONE_NEWIPC},
    {"uts", CLONE_NEWUTS},
};
const int ns_kind_count = (int)(sizeof ns_kinds / sizeof ns_kinds[0]);

static pid_t trial_clone(int flags) {
    pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)(flags | SIGCHLD), NULL, NULL, NULL, NULL);
    if (pid == 0) _exit(0);
    if (pid > 0) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    }
    return pid;
}

// Returns the clone flags to try first, and marks the namespaces that are not wanted.
int choose_namespaces(const struct options *o, char status[][160]) {
    int wanted = 0;
    for (int i = 0; i < ns_kind_count; i++) {
        status[i][0] = '\0';
        int flag = ns_kinds[i].flag;
        if (flag == CLONE_NEWNET && o->network) {
            snprintf(status[i], 160, "skipped: network allowed (host network)");
        } else if (flag == CLONE_NEWUSER && o->no_userns) {
            snprintf(status[i], 160, "skipped: disabled (--no-userns)");
        } else {
            wanted |= flag;
        }
    }
    return wanted;
}

// Called when clone(wanted) was refused: finds, one namespace at a time, the subset the
// kernel allows (user first, since the others may need it), and records why others failed.
int probe_namespaces(int wanted, char status[][160]) {
    int accepted = 0;
    for (int i = 0; i < ns_kind_count; i++) {
        int flag = ns_kinds[i].flag;
        if (!(wanted & flag)) continue;
        if (trial_clone(accepted | flag) >= 0) {
            accepted |= flag;
        } else {
            int e = errno;
            snprintf(status[i], 160, "skipped: %s%s", strerror(e),
                     (e == EPERM && geteuid() != 0 && !(accepted & CLONE_NEWUSER))
                         ? " (needs root or a user namespace)" : "");
            warnf("%s namespace refused: %s", ns_kinds[i].name, strerror(e));
        }
    }
    return accepted;
}

int write_id_maps(pid_t child, const struct options *o, char *err, size_t errlen) {
    char path[64], map[64];
    uid_t outside_uid = geteuid() == 0 ? (uid_t)o->uid : geteuid();
    gid_t outside_gid = geteuid() == 0 ? (gid_t)o->gid : getegid();
    int rc;
    if (geteuid() != 0) {
        // An unprivileged writer may only map its own ids, and only with setgroups denied.
        snprintf(path, sizeof path, "/proc/%d/setgroups", (int)child);
        if ((rc = write_file(path, "deny")) != 0 && rc != -ENOENT) {
            snprintf(err, errlen, "write %s: %s", path, strerror(-rc));
            return -1;
        }
    }
    // Only the function's own ids are mapped: host root stays unmapped (overflow id) inside.
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)child);
    snprintf(map, sizeof map, "%ld %u 1\n", o->uid, (unsigned)outside_uid);
    if ((rc = write_file(path, map)) != 0) {
        snprintf(err, errlen, "write %s: %s", path, strerror(-rc));
        return -1;
    }
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)child);
    snprintf(map, sizeof map, "%ld %u 1\n", o->gid, (unsigned)outside_gid);
    if ((rc = write_file(path, map)) != 0) {
        snprintf(err, errlen, "write %s: %s", path, strerror(-rc));
        return -1;
    }
    return 0;
}

// ---- mounts ----

static int set_readonly_tree(const char *path) {
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID;
    if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr) == 0) return 0;
    if (errno != ENOSYS) return -1;

    // Kernels before 5.12: bind-remount every mount under path read-only, keeping the
    // flags that may be locked in a user namespace.
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL) return -1;
    char line[4096];
    size_t plen = strlen(path);
    int rc = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        char mp[4096];
        if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1) continue;
        if (strcmp(path, "/") != 0 && (strncmp(mp, path, plen) != 0 || (mp[plen] != '/' && mp[plen] != '\0')))
            continue;
        struct statvfs sv;
        if (statvfs(mp, &sv) != 0) continue;
        unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID;
        if (sv.f_flag & ST_NODEV) flags |= MS_NODEV;
        if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
        if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
        if (sv.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
        if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
        if (mount(NULL, mp, NULL, flags, NULL) != 0 && strcmp(mp, "/") == 0) rc = -1;
    }
    fclose(f);
    return rc;
}

static int is_under(const char *path, const char *dir) {
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

int setup_mounts(const struct options *o, int pid_ns, char *summary, size_t len, char *err, size_t errlen) {
    // Nothing we do here may propagate back to the host.
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        snprintf(err, errlen, "make / private: %s", strerror(errno));
        return -1;
    }
    if (set_readonly_tree("/") != 0) {
        snprintf(err, errlen, "read-only root: %s", strerror(errno));
        return -1;
    }

    // The code dir is read-only with the rest of the root; when the private /tmp would hide
    // it, keep a detached copy of its mount to re-attach at the same path afterwards.
    int code_tree = -1;
    int code_hidden = is_under(o->code_dir, "/tmp") || is_under(o->code_dir, "/dev/shm");
    for (int i = 0; i < o->nhide; i++)
        if (is_under(o->code_dir, o->hide[i])) {
            snprintf(err, errlen, "--code %s lies under --hide %s", o->code_dir, o->hide[i]);
            return -1;
        }
    if (code_hidden) {
        code_tree = (int)syscall(SYS_open_tree, AT_FDCWD, o->code_dir,
                                 OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
        if (code_tree < 0) {
            snprintf(err, errlen, "clone code dir %s: %s", o->code_dir, strerror(errno));
            return -1;
        }
    }

    for (int i = 0; i < o->nhide; i++) {
        if (mount("tmpfs", o->hide[i], "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "size=4k,mode=000") != 0)
            warnf("hide %s: %s", o->hide[i], strerror(errno));
    }

    char data[128];
    snprintf(data, sizeof data, "size=%ldm,mode=1777,uid=%ld,gid=%ld", o->tmp_mb, o->uid, o->gid);
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, data) != 0) {
        snprintf(err, errlen, "mount tmpfs on /tmp: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode)) {
        if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, data) != 0)
            warnf("mount tmpfs on /dev/shm: %s", strerror(errno));
    }

    if (code_tree >= 0) {
        // Create the mount point inside the new tmpfs as the function's user (host root may
        // be unmapped in the user namespace, and the tmpfs refuses unmapped owners).
        setfsgid((gid_t)o->gid);
        setfsuid((uid_t)o->uid);
        int rc = mkdirs(o->code_dir, 0755);
        if (rc != 0) {
            snprintf(err, errlen, "mount point %s: %s", o->code_dir, strerror(-rc));
            return -1;
        }
        if (syscall(SYS_move_mount, code_tree, "", AT_FDCWD, o->code_dir, MOVE_MOUNT_F_EMPTY_PATH) != 0) {
            snprintf(err, errlen, "attach code dir: %s", strerror(errno));
            return -1;
        }
        close(code_tree);
        if (set_readonly_tree(o->code_dir) != 0) {
            snprintf(err, errlen, "read-only code dir: %s", strerror(errno));
            return -1;
        }
    }

    const char *proc = "host /proc (no pid namespace)";
    if (pid_ns) {
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0) {
            proc = "new /proc";
        } else {
            proc = "host /proc";
            warnf("mount /proc for the pid namespace: %s (the host /proc stays visible)", strerror(errno));
        }
    }
    snprintf(summary, len, "read-only root, private /tmp (%ld MiB), %s, code read-only at %s%s", o->tmp_mb,
             proc, o->code_dir, code_hidden ? " (re-bound)" : "");
    return 0;
}
