// weft-launcher: command line.
#include "launcher.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: weft-launcher [options] -- EXECUTABLE [ARGS...]\n"
    "\n"
    "Runs EXECUTABLE as a sandboxed function instance and supervises it.\n"
    "\n"
    "  --memory-mb N      memory limit (cgroup; default 128, 0 = none)\n"
    "  --as-mb N          RLIMIT_AS (default 2 * memory + 256, 0 = unlimited)\n"
    "  --cpu-percent N    CPU quota in percent of one CPU (cgroup; default 100, 0 = none)\n"
    "  --pids N           process limit (cgroup pids.max and RLIMIT_NPROC; default 64)\n"
    "  --nofile N         RLIMIT_NOFILE (default 64)\n"
    "  --fsize-mb N       RLIMIT_FSIZE (default 64, 0 = unlimited)\n"
    "  --tmp-mb N         size of the private writable /tmp (default 64)\n"
    "  --uid N --gid N    identity of the function (default 65534/65534)\n"
    "  --network          allow network sockets and keep the host network namespace\n"
    "  --code DIR         the function's code: visible read-only at its own path, and the\n"
    "                     working directory; a relative EXECUTABLE is resolved in it\n"
    "  --hide DIR         cover DIR with an empty inaccessible tmpfs (repeatable)\n"
    "  --hostname NAME    hostname inside the UTS namespace (default weft-fn)\n"
    "  --keep-fd N        pass fd N to the function as fd 3 (all other fds > 2 are closed)\n"
    "  --arena-fd N       pass fd N to the function as fd 4 (the worker's shared-memory arena)\n"
    "  --stem             set up the sandbox (cgroup, namespaces) now and wait on the report fd\n"
    "                     for the function: the other options, -- and its argv, an empty string\n"
    "                     and its environment (NUL-separated, after a u32 byte count), with the\n"
    "                     channel and arena fds attached (SCM_RIGHTS)\n"
    "  --report-fd N      write the JSON report lines to fd N\n"
    "  --cgroup-parent P  cgroup parent, relative to the launcher's own cgroup, or absolute\n"
    "                     from the hierarchy root when it starts with '/' (default weft)\n"
    "  --no-userns        do not create a user namespace\n"
    "  --no-cgroup        do not create a cgroup\n"
    "  -h, --help         this text\n"
    "\n"
    "Report (one line each on --report-fd):\n"
    "  before the function runs: {\"namespaces\":{\"user\":\"applied\"|\"skipped: why\",...},\n"
    "    \"cgroup\":\"v1 ...\"|\"skipped: why\",\"seccomp\":\"applied\",\"warnings\":[...],...}\n"
    "  when it ends: {\"exit\":{\"code\":N}} or {\"exit\":{\"signal\":N,\"oomKilled\":BOOL}}\n"
    "  a setup failure: {\"error\":\"...\"} and exit status 125.\n"
    "Exit status: the function's, 128+N when killed by signal N, 125 on a setup failure.\n"
    "SIGTERM/SIGINT/SIGHUP to the launcher kill the instance; so do the launcher's death and\n"
    "the reader of a pipe --report-fd going away (the worker died).\n";

void print_usage(int fd) {
    write_all(fd, usage_text, strlen(usage_text));
}

static int parse_long(const char *s, long lo, long hi, long *out) {
    if (s == NULL || *s == '\0') return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

struct numeric_option {
    const char *name;
    size_t offset;
    long lo, hi;
};

#define NUM(name, field, lo, hi) {name, offsetof(struct options, field), lo, hi}
static const struct numeric_option numeric_options[] = {
    NUM("--memory-mb", memory_mb, 0, 1L << 30),
    NUM("--as-mb", as_mb, 0, 1L << 30),
    NUM("--cpu-percent", cpu_percent, 0, 100000),
    NUM("--pids", pids, 0, 1L << 22),
    NUM("--nofile", nofile, 4, 1L << 20),
    NUM("--fsize-mb", fsize_mb, 0, 1L << 30),
    NUM("--tmp-mb", tmp_mb, 1, 1L << 30),
    NUM("--uid", uid, 1, 0x7fffffffL),
    NUM("--gid", gid, 1, 0x7fffffffL),
};
#undef NUM

int parse_options(int argc, char **argv, struct options *o, char *err, size_t errlen) {
    memset(o, 0, sizeof *o);
    o->memory_mb = 128;
    o->as_mb = -1;
    o->cpu_percent = 100;
    o->pids = 64;
    o->nofile = 64;
    o->fsize_mb = 64;
    o->tmp_mb = 64;
    o->uid = 65534;
    o->gid = 65534;
    o->keep_fd = -1;
    o->report_fd = -1;
    o->arena_fd = -1;
    o->hostname = "weft-fn";
    o->cgroup_parent = "weft";

    int i = 1;
    for (; i < argc; i++) {
        char *arg = argv[i];
        if (strcmp(arg, "--") == 0) { i++; break; }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            snprintf(err, errlen, "help");
            return -1;
        }
        if (strncmp(arg, "--", 2) != 0) break;   // first non-option: the executable

        // --name=value or --name value
        char name[64];
        const char *value = NULL;
        const char *eq = strchr(arg, '=');
        if (eq != NULL) {
            size_t n = (size_t)(eq - arg);
            if (n >= sizeof name) n = sizeof name - 1;
            memcpy(name, arg, n);
            name[n] = '\0';
            value = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
        }

        if (strcmp(name, "--network") == 0) { o->network = 1; continue; }
        if (strcmp(name, "--no-userns") == 0) { o->no_userns = 1; continue; }
        if (strcmp(name, "--no-cgroup") == 0) { o->no_cgroup = 1; continue; }
        if (strcmp(name, "--stem") == 0) { o->stem = 1; continue; }

        if (value == NULL) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "%s needs a value", name);
                return -1;
            }
            value = argv[++i];
        }

        int handled = 0;
        for (size_t k = 0; k < sizeof numeric_options / sizeof numeric_options[0]; k++) {
            const struct numeric_option *no = &numeric_options[k];
            if (strcmp(name, no->name) != 0) continue;
            long v;
            if (parse_long(value, no->lo, no->hi, &v) != 0) {
                snprintf(err, errlen, "%s: invalid value '%s' (%ld..%ld)", name, value, no->lo, no->hi);
                return -1;
            }
            *(long *)((char *)o + no->offset) = v;
            handled = 1;
        }
        if (handled) continue;

        long fd;
        if (strcmp(name, "--keep-fd") == 0 || strcmp(name, "--report-fd") == 0 || strcmp(name, "--arena-fd") == 0) {
            if (parse_long(value, 0, INT_MAX, &fd) != 0 || fd <= 2) {
                snprintf(err, errlen, "%s: invalid fd '%s' (must be > 2)", name, value);
                return -1;
            }
            if (name[2] == 'k') o->keep_fd = (int)fd;
            else if (name[2] == 'a') o->arena_fd = (int)fd;
            else o->report_fd = (int)fd;
        } else if (strcmp(name, "--code") == 0) {
            o->code_dir = value;
        } else if (strcmp(name, "--hostname") == 0) {
            o->hostname = value;
        } else if (strcmp(name, "--cgroup-parent") == 0) {
            if (strstr(value, "..") != NULL || value[0] == '\0') {
                snprintf(err, errlen, "--cgroup-parent: invalid '%s'", value);
                return -1;
            }
            o->cgroup_parent = value;
        } else if (strcmp(name, "--hide") == 0) {
            if (o->nhide >= MAX_HIDE || value[0] != '/') {
                snprintf(err, errlen, "--hide: absolute paths, at most %d", MAX_HIDE);
                return -1;
            }
            o->hide[o->nhide++] = value;
        } else {
            snprintf(err, errlen, "unknown option %s", name);
            return -1;
        }
    }
    if (i >= argc && !o->stem) {
        snprintf(err, errlen, "missing the function executable (after --)");
        return -1;
    }
    if (o->stem && (i < argc || o->keep_fd >= 0 || o->arena_fd >= 0 || o->report_fd < 0)) {
        snprintf(err, errlen, "--stem takes --report-fd and no executable or other fds: they come with the activation");
        return -1;
    }
    if ((o->keep_fd >= 0 && (o->keep_fd == o->report_fd || o->keep_fd == o->arena_fd))
        || (o->arena_fd >= 0 && o->arena_fd == o->report_fd)) {
        snprintf(err, errlen, "--keep-fd, --arena-fd and --report-fd must differ");
        return -1;
    }
    if (o->code_dir == NULL) o->code_dir = "/";
    if (o->code_dir[0] != '/') {
        snprintf(err, errlen, "--code must be an absolute path");
        return -1;
    }
    if (o->as_mb < 0) o->as_mb = o->memory_mb > 0 ? o->memory_mb * 2 + 256 : 0;
    o->argv = &argv[i];
    return 0;
}
