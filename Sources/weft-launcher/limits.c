// weft-launcher: resource limits of the function process (applied just before execve).
#include "launcher.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

// RLIMIT_CORE 0 stops file core dumps; with a piped core_pattern ("|helper") the kernel
// ignores a limit of 0 but refuses to dump at a limit of exactly 1.
static rlim_t core_limit(void) {
    char pattern[256];
    if (read_file("/proc/sys/kernel/core_pattern", pattern, sizeof pattern) > 0 && pattern[0] == '|') return 1;
    return 0;
}

static int set_limit(int resource, rlim_t value, const char *name, char *err, size_t errlen) {
    struct rlimit rl = {value, value};
    struct rlimit cur;
    // Never try to raise a hard limit the launcher itself is under.
    if (getrlimit(resource, &cur) == 0 && cur.rlim_max != RLIM_INFINITY && (value == RLIM_INFINITY || value > cur.rlim_max))
        rl.rlim_cur = rl.rlim_max = cur.rlim_max;
    if (setrlimit(resource, &rl) != 0) {
        snprintf(err, errlen, "setrlimit %s: %s", name, strerror(errno));
        return -1;
    }
    return 0;
}

// RLIMIT_NPROC counts the processes of the real uid. In a user namespace that count is
// per namespace, i.e. per instance; without one it is host-wide, shared by every instance
// running as the same uid, so there the pids cgroup (when present) limits the instance.
long effective_nproc(const struct options *o, int userns) {
    if (o->pids <= 0) return 0;
    if (!userns && cgroup_has_pids()) return 0;
    return o->pids;
}

int apply_rlimits(const struct options *o, int userns, char *err, size_t errlen) {
    long nproc = effective_nproc(o, userns);
    const rlim_t mib = 1024 * 1024;
    if (set_limit(RLIMIT_AS, o->as_mb > 0 ? (rlim_t)o->as_mb * mib : RLIM_INFINITY, "AS", err, errlen)) return -1;
    if (set_limit(RLIMIT_NOFILE, (rlim_t)o->nofile, "NOFILE", err, errlen)) return -1;
    if (nproc > 0 && set_limit(RLIMIT_NPROC, (rlim_t)nproc, "NPROC", err, errlen)) return -1;
    if (set_limit(RLIMIT_FSIZE, o->fsize_mb > 0 ? (rlim_t)o->fsize_mb * mib : RLIM_INFINITY, "FSIZE", err, errlen))
        return -1;
    if (set_limit(RLIMIT_CORE, core_limit(), "CORE", err, errlen)) return -1;
    return 0;
}

// 0 in the report means unlimited.
void describe_rlimits(const struct options *o, int userns, char *out, size_t len) {
    snprintf(out, len, "{\"asBytes\":%ld,\"nofile\":%ld,\"nproc\":%ld,\"fsizeBytes\":%ld,\"core\":%d}",
             o->as_mb * 1024 * 1024, o->nofile, effective_nproc(o, userns), o->fsize_mb * 1024 * 1024,
             (int)core_limit());
}
