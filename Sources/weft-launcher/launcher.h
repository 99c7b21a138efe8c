// weft-launcher: shared declarations.
//
// Process tree (all single-threaded C; nothing runs between fork and exec in a
// multi-threaded process):
//
//   launcher (L, host namespaces)      supervises, owns the cgroup, writes the report
//     └─ init  (I, pid 1 of the new pid namespace)  mounts, builds the seccomp filter,
//          │                                        reaps, reports the function's status
//          └─ function (F)  rlimits, setuid, no_new_privs, seccomp, execve
//
// L → I: "go" pipe (uid/gid maps written, cgroup joined).
// I → L: "info" pipe carrying struct init_message records (setup result, final status).
// F → I: close-on-exec error pipe (empty on a successful execve).
#ifndef WEFT_LAUNCHER_H
#define WEFT_LAUNCHER_H

#include <stddef.h>
#include <sys/types.h>

#define MAX_HIDE 16
#define MSG_TEXT 1536

struct options {
    long memory_mb;      // cgroup memory limit (0: none)
    long as_mb;          // RLIMIT_AS (-1: derived from memory_mb, 0: unlimited)
    long cpu_percent;    // cgroup cpu quota in % of one CPU (0: none)
    long pids;           // cgroup pids.max and RLIMIT_NPROC (0: none)
    long nofile;         // RLIMIT_NOFILE
    long fsize_mb;       // RLIMIT_FSIZE (0: unlimited)
    long tmp_mb;         // size of the private /tmp tmpfs
    long uid, gid;       // identity of the function
    int network;         // allow AF_INET/AF_INET6/AF_NETLINK and keep the host network
    int no_userns;       // do not try a user namespace
    int no_cgroup;       // do not try a cgroup
    const char *code_dir;
    const char *hostname;
    const char *cgroup_parent;
    const char *hide[MAX_HIDE];
    int nhide;
    int keep_fd;         // passed to the function as fd 3 (-1: none)
    int report_fd;       // JSON report lines (-1: none)
    int arena_fd;        // passed to the function as fd 4: shared memory with the worker (-1: none)
    int stem;            // set up ahead, then wait on the report fd for the function (see stem.c)
    char **argv;         // the function: argv[0] is the executable
};

int parse_options(int argc, char **argv, struct options *o, char *err, size_t errlen);
void print_usage(int fd);

// ---- stems: sandboxes set up before their function is known (stem.c) ----
// The activation message, on the report socket (worker → launcher) and the go socket
// (launcher → init): a u32 byte count, then NUL-terminated strings: the launcher options and
// "--" and the function's argv, an empty string, the environment. SCM_RIGHTS carries the
// channel fd (fd 3 of the function) and optionally the arena fd (fd 4).
struct activation {
    char *argv[256];
    int argc;
    char *env[256];
    int envc;
    int fds[2];
    int nfds;
};
int receive_activation(int fd, struct activation *a, char *err, size_t errlen);
int forward_activation(int fd, const struct activation *a);
int apply_activation(struct options *o, const struct activation *a, char *err, size_t errlen);

// ---- small utilities (util.c) ----
void warnf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));   // collects a report warning
const char *warning_at(int i);
int warning_count(void);
int write_file(const char *path, const char *text);          // 0 or -errno
int read_file(const char *path, char *buf, size_t len);      // bytes read or -errno
int write_all(int fd, const void *buf, size_t len);
int read_full(int fd, void *buf, size_t len);                // bytes read (short at EOF) or -1
int mkdirs(const char *path, mode_t mode);
void json_string(char *out, size_t outlen, const char *s);   // quoted, escaped

// ---- namespaces and mounts (namespaces.c) ----
struct ns_kind {
    const char *name;
    int flag;
};
extern const struct ns_kind ns_kinds[];
extern const int ns_kind_count;

// Decides which namespaces to create (trying them when the full set is refused) and
// fills status[i] for each of ns_kinds ("applied" is set later by the caller).
int choose_namespaces(const struct options *o, char status[][160]);
int probe_namespaces(int wanted, char status[][160]);
int write_id_maps(pid_t child, const struct options *o, char *err, size_t errlen);
// In I: mount setup. Returns 0 or -1 (err filled); summary receives a short description.
int setup_mounts(const struct options *o, int pid_ns, char *summary, size_t len, char *err, size_t errlen);

// ---- cgroups (cgroup.c) ----
int cgroup_create(const struct options *o, char *summary, size_t len);   // 1 created, 0 skipped
int cgroup_attach(pid_t pid, char *err, size_t errlen);
void cgroup_kill_all(void);
long cgroup_oom_kills(void);          // -1 unknown
long long cgroup_memory_peak(void);   // -1 unknown
long cgroup_pids_limit_hits(void);
int cgroup_has_pids(void);           // a pids.max applies to the instance    // times a fork was refused by pids.max, -1 unknown
int cgroup_memory_limit_hit(void);    // 1 if the limit was reached (v1 failcnt / v2 max events)
void cgroup_destroy(void);
void cgroup_update_limits(const struct options *o);   // a stem's limits, once its function is known
void cgroup_json_paths(char *out, size_t len);

// ---- rlimits (limits.c) ----
long effective_nproc(const struct options *o, int userns);
int apply_rlimits(const struct options *o, int userns, char *err, size_t errlen);
void describe_rlimits(const struct options *o, int userns, char *out, size_t len);

// ---- seccomp (seccomp_filter.c) ----
void *seccomp_build(const struct options *o, int *rules, char *err, size_t errlen);
int seccomp_install(void *ctx);   // 0 or -errno

#endif
