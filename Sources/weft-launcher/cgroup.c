// weft-launcher: the instance's cgroup (memory, pids and cpu limits).
//
// cgroup v2 is used when a unified hierarchy offers the memory and pids controllers;
// otherwise the v1 hierarchies of memory, pids and cpu (as on hosts still on v1). The
// instance cgroup is <own cgroup>/<--cgroup-parent>/i-<launcher pid> in each hierarchy
// (or <hierarchy root>/<parent>/i-<pid> when the parent is absolute), so it nests under
// the limits of whatever runs the worker.
#define _GNU_SOURCE
#include "launcher.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_DIRS 4

static int version;                    // 0 none, 1 or 2
static char dirs[MAX_DIRS][PATH_MAX];  // created instance directories
static int ndirs;
static char memory_dir[PATH_MAX], pids_dir[PATH_MAX], cpu_dir[PATH_MAX];
static char display_path[PATH_MAX];

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

// Whether a space-separated list (cgroup.controllers) holds word.
static int has_word(const char *list, const char *word) {
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n) {
        int starts = p == list || p[-1] == ' ';
        int ends = p[n] == '\0' || p[n] == ' ' || p[n] == '\n';
        if (starts && ends) return 1;
    }
    return 0;
}

static int has_token(const char *list, const char *token) {
    size_t n = strlen(token);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, token, n) == 0) return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

// Finds the mount of a v1 controller (ctrl != NULL) or of the v2 hierarchy (ctrl == NULL).
static int find_mount(const char *ctrl, char *mountpoint, char *root) {
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL) return -1;
    char line[4096];
    int found = -1;
    while (found != 0 && fgets(line, sizeof line, f) != NULL) {
        char r[PATH_MAX], mp[PATH_MAX];
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", r, mp) != 2) continue;
        char *sep = strstr(line, " - ");
        if (sep == NULL) continue;
        char fstype[64], source[256], opts[1024];
        if (sscanf(sep + 3, "%63s %255s %1023s", fstype, source, opts) != 3) continue;
        if (ctrl == NULL ? strcmp(fstype, "cgroup2") == 0
                         : (strcmp(fstype, "cgroup") == 0 && has_token(opts, ctrl))) {
            strcpy(mountpoint, mp);
            strcpy(root, r);
            found = 0;
        }
    }
    fclose(f);
    return found;
}

// This process's cgroup path in the hierarchy of ctrl (NULL: v2).
static int own_cgroup(const char *ctrl, char *out) {
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f == NULL) return -1;
    char line[4096];
    int found = -1;
    while (found != 0 && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        if (c1 == NULL) continue;
        char *c2 = strchr(c1 + 1, ':');
        if (c2 == NULL) continue;
        *c2 = '\0';
        if (ctrl == NULL ? (strcmp(line, "0") == 0 && c1[1] == '\0') : has_token(c1 + 1, ctrl)) {
            strcpy(out, c2 + 1);
            found = 0;
        }
    }
    fclose(f);
    return found;
}

// <mount>/<own path relative to the mount root>/<parent>, or <mount>/<parent> if absolute.
static int parent_dir(const char *ctrl, const char *parent, char *out, char *base) {
    char mp[PATH_MAX], root[PATH_MAX], own[PATH_MAX];
    if (find_mount(ctrl, mp, root) != 0) return -1;
    const char *rel = "";
    if (parent[0] != '/' && own_cgroup(ctrl, own) == 0) {
        rel = own;
        size_t rl = strlen(root);
        if (strcmp(root, "/") != 0 && strncmp(own, root, rl) == 0) rel = own + rl;
        if (strcmp(rel, "/") == 0) rel = "";
    }
    if (base) snprintf(base, PATH_MAX, "%s%s", mp, rel);
    if (snprintf(out, PATH_MAX, "%s%s/%s", mp, rel, parent[0] == '/' ? parent + 1 : parent) >= PATH_MAX) return -1;
    return 0;
}

// Removes instance cgroups left by launchers that were killed before cleaning up.
static void sweep_stale(const char *parent) {
    DIR *d = opendir(parent);
    if (d == NULL) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "i-", 2) != 0) continue;
        long pid = strtol(e->d_name + 2, NULL, 10);
        if (pid <= 0 || pid == getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", parent, e->d_name) < (int)sizeof path) rmdir(path);
    }
    closedir(d);
}

static int make_instance(const char *parent, char *out) {
    int rc = mkdirs(parent, 0755);
    if (rc != 0) return rc;
    sweep_stale(parent);
    snprintf(out, PATH_MAX, "%s/i-%d", parent, (int)getpid());
    if (mkdir(out, 0755) == 0) return 0;
    if (errno == EEXIST && rmdir(out) == 0 && mkdir(out, 0755) == 0) return 0;
    return -errno;
}

static void set_value(const char *dir, const char *file, const char *value, int required) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int rc = write_file(path, value);
    if (rc != 0 && (required || rc != -ENOENT)) warnf("cgroup %s=%s: %s", file, value, strerror(-rc));
}

// The instance's limits, into the controllers' directories: at creation, and again when a
// stem learns its function's (the same controllers, other values).
static void write_limits(const struct options *o) {
    char v[64];
    if (memory_dir[0] && o->memory_mb > 0) {
        snprintf(v, sizeof v, "%ld", o->memory_mb * 1024 * 1024);
        if (version == 2) {
            set_value(memory_dir, "memory.max", v, 1);
        } else {
            // memsw (no swap beyond the limit) must stay >= the memory limit: lowering sets
            // memory first, raising memsw first; memory, memsw, memory covers both (a refused
            // first write is retried by the third).
            char path[PATH_MAX + 64];
            snprintf(path, sizeof path, "%s/memory.limit_in_bytes", memory_dir);
            write_file(path, v);
            set_value(memory_dir, "memory.memsw.limit_in_bytes", v, 0);
            set_value(memory_dir, "memory.limit_in_bytes", v, 1);
        }
    }
    if (pids_dir[0] && o->pids > 0) {
        snprintf(v, sizeof v, "%ld", o->pids);
        set_value(pids_dir, "pids.max", v, 1);
    }
    if (cpu_dir[0] && o->cpu_percent > 0) {
        if (version == 2) {
            snprintf(v, sizeof v, "%ld 100000", o->cpu_percent * 1000);
            set_value(cpu_dir, "cpu.max", v, 1);
        } else {
            snprintf(v, sizeof v, "%ld", o->cpu_percent * 1000);
            set_value(cpu_dir, "cpu.cfs_quota_us", v, 1);
        }
    }
}

static int create_v2(const struct options *o, char *summary, size_t len) {
    char parent[PATH_MAX], base[PATH_MAX], path[PATH_MAX + 64], buf[512];
    if (parent_dir(NULL, o->cgroup_parent, parent, base) != 0) return 0;
    snprintf(path, sizeof path, "%s/cgroup.controllers", base);
    if (read_file(path, buf, sizeof buf) < 0) return 0;
    if (!has_word(buf, "memory") || !has_word(buf, "pids")) return 0;   // not usable: try v1

    // Delegate the controllers down to the instance (fails harmlessly where already enabled).
    const char *ctrls[] = {"+memory", "+pids", "+cpu"};
    int rc = mkdirs(parent, 0755);
    if (rc != 0) {
        snprintf(summary, len, "skipped: cgroup v2 %s: %s", parent, strerror(-rc));
        return -1;
    }
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/cgroup.subtree_control", base);
        write_file(path, ctrls[k]);
        snprintf(path, sizeof path, "%s/cgroup.subtree_control", parent);
        write_file(path, ctrls[k]);
    }
    rc = make_instance(parent, dirs[0]);
    if (rc != 0) {
        snprintf(summary, len, "skipped: cgroup v2 mkdir in %s: %s", parent, strerror(-rc));
        return -1;
    }
    ndirs = 1;
    version = 2;
    snprintf(path, sizeof path, "%s/cgroup.controllers", dirs[0]);
    if (read_file(path, buf, sizeof buf) < 0) buf[0] = '\0';
    if (has_word(buf, "memory") && o->memory_mb > 0) {
        strcpy(memory_dir, dirs[0]);
        set_value(dirs[0], "memory.swap.max", "0", 0);
    } else if (o->memory_mb > 0) {
        warnf("cgroup v2: memory controller not delegated to %s", dirs[0]);
    }
    if (has_word(buf, "pids") && o->pids > 0) {
        strcpy(pids_dir, dirs[0]);
    } else if (o->pids > 0) {
        warnf("cgroup v2: pids controller not delegated to %s", dirs[0]);
    }
    if (o->cpu_percent > 0) {
        if (has_word(buf, "cpu")) {
            strcpy(cpu_dir, dirs[0]);
        } else {
            warnf("cgroup v2: cpu controller not delegated to %s", dirs[0]);
        }
    }
    write_limits(o);
    snprintf(display_path, sizeof display_path, "%s", dirs[0]);
    snprintf(summary, len, "v2 %s", dirs[0]);
    return 1;
}

static int create_v1(const struct options *o, char *summary, size_t len) {
    static const char *ctrls[] = {"memory", "pids", "cpu"};
    char applied[64] = "", failures[512] = "";
    int mounted = 0;
    for (int k = 0; k < 3; k++) {
        const char *ctrl = ctrls[k];
        if (k == 0 && o->memory_mb <= 0) continue;
        if (k == 1 && o->pids <= 0) continue;
        if (k == 2 && o->cpu_percent <= 0) continue;
        char parent[PATH_MAX], dir[PATH_MAX];
        if (parent_dir(ctrl, o->cgroup_parent, parent, NULL) != 0) {
            warnf("cgroup v1: no %s hierarchy mounted", ctrl);
            continue;
        }
        mounted++;
        int rc = make_instance(parent, dir);
        if (rc != 0) {
            size_t fl = strlen(failures);
            snprintf(failures + fl, sizeof failures - fl, "%s%s: %s", fl ? "; " : "", parent, strerror(-rc));
            warnf("cgroup v1 %s: mkdir in %s: %s", ctrl, parent, strerror(-rc));
            continue;
        }
        strcpy(dirs[ndirs++], dir);
        if (k == 0) {
            strcpy(memory_dir, dir);
            set_value(dir, "memory.swappiness", "0", 0);
        } else if (k == 1) {
            strcpy(pids_dir, dir);
        } else {
            strcpy(cpu_dir, dir);
            set_value(dir, "cpu.cfs_period_us", "100000", 1);
        }
        size_t al = strlen(applied);
        snprintf(applied + al, sizeof applied - al, "%s%s", al ? "," : "", ctrl);
        if (display_path[0] == '\0') {
            // The path inside the hierarchy, without the mount point.
            char mp[PATH_MAX], root[PATH_MAX];
            const char *p = dir;
            if (find_mount(ctrl, mp, root) == 0 && strncmp(dir, mp, strlen(mp)) == 0) p = dir + strlen(mp);
            snprintf(display_path, sizeof display_path, "%s", p);
        }
    }
    if (ndirs == 0) {
        if (mounted == 0) return 0;
        snprintf(summary, len, "skipped: %s", failures);
        return -1;
    }
    version = 1;
    write_limits(o);
    snprintf(summary, len, "v1 %s (%s)", display_path, applied);
    return 1;
}

int cgroup_create(const struct options *o, char *summary, size_t len) {
    if (o->memory_mb <= 0 && o->pids <= 0 && o->cpu_percent <= 0) {
        snprintf(summary, len, "skipped: no limits requested");
        return 0;
    }
    int rc = 0;
    if (o->no_cgroup) {
        snprintf(summary, len, "skipped: disabled (--no-cgroup)");
    } else {
        rc = create_v2(o, summary, len);
        if (rc == 0) rc = create_v1(o, summary, len);
        if (rc == 0) snprintf(summary, len, "skipped: no cgroup hierarchy mounted");
    }
    if (rc <= 0) {
        warnf("no cgroup: memory is limited by RLIMIT_AS only, processes by RLIMIT_NPROC, no cpu quota");
        return 0;
    }
    return 1;
}

int cgroup_attach(pid_t pid, char *err, size_t errlen) {
    char path[PATH_MAX + 32], v[32];
    snprintf(v, sizeof v, "%d", (int)pid);
    for (int i = 0; i < ndirs; i++) {
        snprintf(path, sizeof path, "%s/cgroup.procs", dirs[i]);
        int rc = write_file(path, v);
        if (rc != 0) {
            snprintf(err, errlen, "join %s: %s", dirs[i], strerror(-rc));
            return -1;
        }
    }
    return 0;
}

static int kill_listed(const char *dir) {
    char path[PATH_MAX + 32], buf[8192];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    if (read_file(path, buf, sizeof buf) <= 0) return 0;
    int n = 0;
    for (char *p = buf; *p;) {
        long pid = strtol(p, &p, 10);
        if (pid > 0) { kill((pid_t)pid, SIGKILL); n++; }
        while (*p == '\n') p++;
        if (*p && (*p < '0' || *p > '9')) break;
    }
    return n;
}

void cgroup_kill_all(void) {
    if (ndirs == 0) return;
    if (version == 2) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/cgroup.kill", dirs[0]);
        write_file(path, "1");
    }
    for (int round = 0; round < 200; round++) {
        int n = 0;
        for (int i = 0; i < ndirs; i++) n += kill_listed(dirs[i]);
        if (n == 0) return;
        sleep_ms(5);
    }
}

static long read_key(const char *dir, const char *file, const char *key) {
    if (dir[0] == '\0') return -1;
    char path[PATH_MAX + 64], buf[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (read_file(path, buf, sizeof buf) < 0) return -1;
    if (key == NULL) return strtol(buf, NULL, 10);
    size_t kl = strlen(key);
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') return strtol(line + kl + 1, NULL, 10);
    }
    return -1;
}

long cgroup_oom_kills(void) {
    if (version == 2) return read_key(memory_dir, "memory.events", "oom_kill");
    if (version == 1) return read_key(memory_dir, "memory.oom_control", "oom_kill");
    return -1;
}

int cgroup_memory_limit_hit(void) {
    if (version == 2) return read_key(memory_dir, "memory.events", "max") > 0;
    if (version == 1) return read_key(memory_dir, "memory.failcnt", NULL) > 0;
    return 0;
}

long long cgroup_memory_peak(void) {
    if (version == 2) return read_key(memory_dir, "memory.peak", NULL);
    if (version == 1) return read_key(memory_dir, "memory.max_usage_in_bytes", NULL);
    return -1;
}

int cgroup_has_pids(void) {
    return pids_dir[0] != '\0';
}

long cgroup_pids_limit_hits(void) {
    return version ? read_key(pids_dir, "pids.events", "max") : -1;
}

void cgroup_destroy(void) {
    for (int i = 0; i < ndirs; i++) {
        for (int attempt = 0; attempt < 200; attempt++) {
            if (rmdir(dirs[i]) == 0 || errno == ENOENT) break;
            if (errno != EBUSY) {
                warnf("remove cgroup %s: %s", dirs[i], strerror(errno));
                break;
            }
            kill_listed(dirs[i]);
            sleep_ms(5);
        }
    }
    ndirs = 0;
}

void cgroup_json_paths(char *out, size_t len) {
    size_t o = 0;
    o += (size_t)snprintf(out, len, "[");
    for (int i = 0; i < ndirs && o < len; i++) {
        char q[PATH_MAX + 8];
        json_string(q, sizeof q, dirs[i]);
        o += (size_t)snprintf(out + o, len - o, "%s%s", i ? "," : "", q);
    }
    if (o < len) snprintf(out + o, len - o, "]");
}

// A stem's cgroup was made with the stem's limits; these are its function's (same controllers).
void cgroup_update_limits(const struct options *o) {
    if (version != 0) write_limits(o);
}
