// weft-launcher: runs one function instance in a sandbox and supervises it.
// See launcher.h for the process tree and `weft-launcher --help` for the interface.
#define _GNU_SOURCE
#include "launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define FORWARDED_WARNINGS 8

// I → L records (both ends in one binary; each record is written atomically: < PIPE_BUF).
struct init_message {
    int kind;            // 1: setup done (or failed), 2: the function ended
    int ok;              // setup: 1 when the function is about to start
    int wstatus;         // final: wait status of the function
    int have_status;     // final: 0 when the function never started
    int seccomp_rules;
    int nwarnings;
    char mounts[256];
    char text[1024];     // setup: the error; final: why the function could not start
    char warnings[FORWARDED_WARNINGS][160];
};
_Static_assert(sizeof(struct init_message) <= PIPE_BUF, "init_message must fit one atomic pipe write");

static struct options opts;
static int report_fd = -1;
static pid_t init_pid = -1;
static struct timespec started;

static double elapsed_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - started.tv_sec) * 1e3 + (double)(now.tv_nsec - started.tv_nsec) / 1e6;
}

static void report_line(const char *line) {
    if (report_fd >= 0) write_all(report_fd, line, strlen(line));
}

// A setup failure: one {"error":...} line, stderr, everything torn down, exit 125.
static void __attribute__((noreturn)) fail_setup(const char *fmt, ...) {
    char msg[1200], quoted[2500], line[2600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (init_pid > 0) {
        kill(init_pid, SIGKILL);
        while (waitpid(init_pid, NULL, 0) < 0 && errno == EINTR) {}
    }
    cgroup_kill_all();
    cgroup_destroy();
    json_string(quoted, sizeof quoted, msg);
    snprintf(line, sizeof line, "{\"error\":%s}\n", quoted);
    report_line(line);
    dprintf(2, "weft-launcher: %s\n", msg);
    _exit(125);
}

// Moves fd to a number >= 10 (keeping close-on-exec), so that dup2 onto 0..3 in the
// function never clobbers it.
static int high_fd(int fd) {
    if (fd >= 10) return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    if (moved < 0) fail_setup("fcntl: %s", strerror(errno));
    close(fd);
    return moved;
}

static void close_fds_except(const int *keep, int n) {
    // keep[] is sorted ascending, every entry > 2.
    unsigned int from = 3;
    for (int i = 0; i <= n; i++) {
        unsigned int to = i < n ? (unsigned int)keep[i] - 1 : ~0U;
        if (i < n && keep[i] < 0) continue;
        if (from <= to && close_range(from, to, 0) != 0) {
            int limit = (int)sysconf(_SC_OPEN_MAX);
            if (limit < 0 || limit > 65536) limit = 65536;
            for (unsigned int fd = from; fd <= to && fd < (unsigned int)limit; fd++) close((int)fd);
        }
        if (i < n) from = (unsigned int)keep[i] + 1;
    }
}

static void reset_signals(void) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);   // KILL/STOP simply fail
}

// ---------------------------------------------------------------------------------------
// F: the function process. Never returns.

static void __attribute__((noreturn)) function_fail(int errfd, const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(errno));
    write_all(errfd, msg, strlen(msg));
    _exit(127);
}

// Makes `fd` the function's fd `target`, open across execve.
static void place_fd(int fd, int target, int errfd, const char *what) {
    if (fd != target) {
        if (dup2(fd, target) < 0) function_fail(errfd, what);
    } else if (fcntl(target, F_SETFD, 0) != 0) {
        function_fail(errfd, what);
    }
}

static void __attribute__((noreturn)) run_function(void *filter, int errfd, int userns, pid_t init_self) {
    setsid();   // own session and process group (killed as a group without a pid namespace)

    // fds: 0-2 as given, the kept fd as 3, the arena as 4, the error pipe until execve,
    // nothing else. The error pipe and an arena at 3 move out of the way first.
    if (errfd <= 4) {
        int moved = fcntl(errfd, F_DUPFD_CLOEXEC, 10);
        if (moved < 0) function_fail(errfd, "move the error pipe");
        errfd = moved;
    }
    int arena = opts.arena_fd;
    if (arena == 3) {
        arena = fcntl(3, F_DUPFD_CLOEXEC, 10);
        if (arena < 0) function_fail(errfd, "move the arena fd");
    }
    if (opts.keep_fd >= 0) place_fd(opts.keep_fd, 3, errfd, "kept fd");
    if (arena >= 0) place_fd(arena, 4, errfd, "arena fd");
    int keep[3] = {opts.keep_fd >= 0 ? 3 : -1, arena >= 0 ? 4 : -1, errfd};
    close_fds_except(keep, 3);

    write_file("/proc/self/oom_score_adj", "1000");   // the OOM killer's first choice, not init
    if (chdir(opts.code_dir) != 0) function_fail(errfd, "chdir to the code dir");

    char err[256];
    if (apply_rlimits(&opts, userns, err, sizeof err) != 0) {
        errno = 0;
        write_all(errfd, err, strlen(err));
        _exit(127);
    }

    if (userns || geteuid() == 0) {
        if (setgroups(0, NULL) != 0 && !(userns && geteuid() != 0 && errno == EPERM))
            function_fail(errfd, "setgroups");
        if (setresgid((gid_t)opts.gid, (gid_t)opts.gid, (gid_t)opts.gid) != 0) function_fail(errfd, "setgid");
        if (setresuid((uid_t)opts.uid, (uid_t)opts.uid, (uid_t)opts.uid) != 0) function_fail(errfd, "setuid");
        if (getuid() != (uid_t)opts.uid || geteuid() != (uid_t)opts.uid) {
            errno = EPERM;
            function_fail(errfd, "uid check");
        }
    }
    // The uid change cleared any parent-death signal: set it now, then make sure the
    // parent did not die in between.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) function_fail(errfd, "PR_SET_PDEATHSIG");
    if (getppid() != init_self) _exit(127);

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) function_fail(errfd, "PR_SET_NO_NEW_PRIVS");
    int rc = seccomp_install(filter);   // last step before execve
    if (rc != 0) {
        errno = -rc;
        function_fail(errfd, "seccomp_load");
    }
    // ETXTBSY: another thread of the worker was forking (to start another instance) while it
    // wrote this function's code, so that child held the file open for writing until its own
    // execve closed it (O_CLOEXEC acts only at exec). The window is short: retry for ~100 ms.
    for (int attempt = 0; attempt < 100; attempt++) {
        execve(opts.argv[0], opts.argv, environ);
        if (errno != ETXTBSY) break;
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    char what[300];
    snprintf(what, sizeof what, "execve %s", opts.argv[0]);
    function_fail(errfd, what);
}

// ---------------------------------------------------------------------------------------
// I: the init of the new namespaces. Never returns.

static void send_message(int fd, struct init_message *m, int warn_base) {
    m->nwarnings = 0;
    for (int i = warn_base; i < warning_count() && m->nwarnings < FORWARDED_WARNINGS; i++)
        snprintf(m->warnings[m->nwarnings++], sizeof m->warnings[0], "%s", warning_at(i));
    write_all(fd, m, sizeof *m);
}

static int parent_alive(int go_fd) {
    struct pollfd p = {go_fd, POLLIN, 0};
    return !(poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)));
}

static void __attribute__((noreturn)) run_init(int flags, int go_fd, int info_fd) {
    reset_signals();
    int warn_base = warning_count();   // warnings before this point belong to the launcher
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) _exit(1);
    char go;
    if (read_full(go_fd, &go, 1) != 1) _exit(1);   // the launcher died or gave up

    static struct init_message m;
    memset(&m, 0, sizeof m);
    m.kind = 1;
    char err[512] = "";

    if (opts.stem) {
        // A stem's function: the launcher forwards what the worker sent it.
        static struct activation a;
        if (receive_activation(go_fd, &a, err, sizeof err) != 0 || apply_activation(&opts, &a, err, sizeof err) != 0) {
            snprintf(m.text, sizeof m.text, "%s", err);
            send_message(info_fd, &m, warn_base);
            _exit(1);
        }
    }

    if (flags & CLONE_NEWNS) {
        if (setup_mounts(&opts, (flags & CLONE_NEWPID) != 0, m.mounts, sizeof m.mounts, err, sizeof err) != 0) {
            snprintf(m.text, sizeof m.text, "mounts: %s", err);
            send_message(info_fd, &m, warn_base);
            _exit(1);
        }
    } else {
        snprintf(m.mounts, sizeof m.mounts, "skipped: no mount namespace");
        warnf("no mount namespace: the host root is writable where permissions allow, /tmp is the host's");
    }
    if ((flags & CLONE_NEWUTS) && sethostname(opts.hostname, strlen(opts.hostname)) != 0)
        warnf("sethostname: %s", strerror(errno));

    // Mount setup may have changed the fs uid, which clears the parent-death signal.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || !parent_alive(go_fd)) _exit(1);

    void *filter = seccomp_build(&opts, &m.seccomp_rules, err, sizeof err);
    if (filter == NULL) {
        snprintf(m.text, sizeof m.text, "seccomp: %s", err);
        send_message(info_fd, &m, warn_base);
        _exit(1);
    }
    if (!(flags & CLONE_NEWPID)) prctl(PR_SET_CHILD_SUBREAPER, 1);

    int errp[2];
    if (pipe2(errp, O_CLOEXEC) != 0) {
        snprintf(m.text, sizeof m.text, "pipe: %s", strerror(errno));
        send_message(info_fd, &m, warn_base);
        _exit(1);
    }
    int err_rd = fcntl(errp[0], F_DUPFD_CLOEXEC, 10), err_wr = fcntl(errp[1], F_DUPFD_CLOEXEC, 10);
    close(errp[0]);
    close(errp[1]);

    m.ok = 1;
    send_message(info_fd, &m, warn_base);

    pid_t self = getpid();
    pid_t fn = fork();
    if (fn == 0) run_function(filter, err_wr, (flags & CLONE_NEWUSER) != 0, self);

    struct init_message fin;
    memset(&fin, 0, sizeof fin);
    fin.kind = 2;
    close(err_wr);
    if (fn < 0) {
        snprintf(fin.text, sizeof fin.text, "fork: %s", strerror(errno));
        write_all(info_fd, &fin, sizeof fin);
        _exit(1);
    }
    int n = read_full(err_rd, fin.text, sizeof fin.text - 1);   // empty: execve succeeded
    fin.text[n > 0 ? n : 0] = '\0';
    close(err_rd);

    // Reap everything (as init, or as subreaper) until the function itself ends.
    for (;;) {
        int st;
        pid_t w = waitpid(-1, &st, 0);
        if (w == fn) {
            fin.wstatus = st;
            fin.have_status = 1;
            break;
        }
        if (w < 0 && errno != EINTR) break;
    }
    if (!(flags & CLONE_NEWPID)) {
        // No pid namespace to tear down: kill what is left of the function's process group.
        kill(-fn, SIGKILL);
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
    }
    write_all(info_fd, &fin, sizeof fin);
    _exit(0);   // as pid 1, this kills whatever is still running in the namespace
}

// ---------------------------------------------------------------------------------------
// L: the launcher.

static void write_setup_report(const struct init_message *m, int flags, char ns_status[][160],
                               const char *cgroup_summary, const char *cgroup_paths) {
    static char line[16384];
    char q[1200];
    size_t o = 0;
#define APPEND(...) o += (size_t)snprintf(line + o, o < sizeof line ? sizeof line - o : 0, __VA_ARGS__)
    APPEND("{\"namespaces\":{");
    for (int i = 0; i < ns_kind_count; i++) {
        json_string(q, sizeof q, ns_status[i]);
        APPEND("%s\"%s\":%s", i ? "," : "", ns_kinds[i].name, q);
    }
    json_string(q, sizeof q, m->mounts);
    APPEND("},\"mounts\":%s", q);
    json_string(q, sizeof q, cgroup_summary);
    APPEND(",\"cgroup\":%s,\"cgroupPaths\":%s", q, cgroup_paths);
    APPEND(",\"seccomp\":\"applied\",\"seccompRules\":%d,\"network\":%s", m->seccomp_rules,
           opts.network ? "true" : "false");
    APPEND(",\"uid\":%ld,\"gid\":%ld", opts.uid, opts.gid);
    char rl[256];
    describe_rlimits(&opts, (flags & CLONE_NEWUSER) != 0, rl, sizeof rl);
    APPEND(",\"rlimits\":%s,\"noNewPrivs\":true,\"pid\":%d,\"setupMs\":%.2f,\"warnings\":[", rl, (int)init_pid,
           elapsed_ms());
    for (int i = 0; i < warning_count(); i++) {
        json_string(q, sizeof q, warning_at(i));
        APPEND("%s%s", i ? "," : "", q);
    }
    APPEND("]}\n");
#undef APPEND
    if (o >= sizeof line) {   // absurdly long: keep the line valid JSON
        snprintf(line, sizeof line, "{\"error\":\"report too long\"}\n");
    }
    report_line(line);
}

int main(int argc, char **argv) {
    clock_gettime(CLOCK_MONOTONIC, &started);
    char err[512];
    if (parse_options(argc, argv, &opts, err, sizeof err) != 0) {
        if (strcmp(err, "help") == 0) {
            print_usage(1);
            return 0;
        }
        dprintf(2, "weft-launcher: %s\n(weft-launcher --help for usage)\n", err);
        return 125;
    }
    report_fd = opts.report_fd;
    if (report_fd >= 0 && fcntl(report_fd, F_GETFD) < 0) {
        report_fd = -1;
        fail_setup("--report-fd %d is not open", opts.report_fd);
    }
    if (opts.keep_fd >= 0 && fcntl(opts.keep_fd, F_GETFD) < 0) fail_setup("--keep-fd %d is not open", opts.keep_fd);
    if (opts.arena_fd >= 0 && fcntl(opts.arena_fd, F_GETFD) < 0) fail_setup("--arena-fd %d is not open", opts.arena_fd);
    if (report_fd >= 0) fcntl(report_fd, F_SETFD, FD_CLOEXEC);

    // 0-2 must exist so that no pipe lands there; everything else inherited is closed.
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0) fail_setup("open /dev/null: %s", strerror(errno));
    int keep[3] = {opts.keep_fd, opts.arena_fd, report_fd};
    for (int i = 0; i < 3; i++)   // sorted ascending for close_fds_except
        for (int j = i + 1; j < 3; j++)
            if (keep[j] < keep[i]) { int t = keep[i]; keep[i] = keep[j]; keep[j] = t; }
    close_fds_except(keep, 3);

    signal(SIGPIPE, SIG_IGN);   // a vanished report reader must not kill the supervisor
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGQUIT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sigfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sigfd < 0) fail_setup("signalfd: %s", strerror(errno));
    sigfd = high_fd(sigfd);

    char cgroup_summary[PATH_MAX + 128], cgroup_paths[4 * PATH_MAX + 32];
    int have_cgroup = cgroup_create(&opts, cgroup_summary, sizeof cgroup_summary);
    cgroup_json_paths(cgroup_paths, sizeof cgroup_paths);

    // go: a socket pair, which can carry a stem's activation (and its fds) on to init.
    int go[2], info[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go) != 0 || pipe2(info, O_CLOEXEC) != 0)
        fail_setup("pipe: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        go[i] = high_fd(go[i]);
        info[i] = high_fd(info[i]);
    }

    char ns_status[8][160];
    int flags = choose_namespaces(&opts, ns_status);
    pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)(flags | SIGCHLD), NULL, NULL, NULL, NULL);
    if (pid < 0) {
        flags = probe_namespaces(flags, ns_status);
        pid = (pid_t)syscall(SYS_clone, (unsigned long)(flags | SIGCHLD), NULL, NULL, NULL, NULL);
    }
    if (pid == 0) {
        close(go[1]);
        close(info[0]);
        close(sigfd);
        if (report_fd >= 0) close(report_fd);
        run_init(flags, go[0], info[1]);
    }
    if (pid < 0) fail_setup("clone: %s", strerror(errno));
    init_pid = pid;
    close(go[0]);
    close(info[1]);
    for (int i = 0; i < ns_kind_count; i++)
        if (flags & ns_kinds[i].flag) snprintf(ns_status[i], sizeof ns_status[i], "applied");

    if (flags & CLONE_NEWUSER) {
        if (write_id_maps(pid, &opts, err, sizeof err) != 0) fail_setup("user namespace: %s", err);
    } else if (geteuid() != 0) {
        warnf("uid unchanged (%d): not root and no user namespace", (int)geteuid());
    }
    if (!(flags & CLONE_NEWUSER) && opts.pids > 0 && !cgroup_has_pids())
        warnf("RLIMIT_NPROC without a user namespace counts every process of uid %ld on the host",
              geteuid() == 0 ? opts.uid : (long)geteuid());
    if (have_cgroup && cgroup_attach(pid, err, sizeof err) != 0) fail_setup("cgroup: %s", err);
    static struct activation activation;
    if (opts.stem) {
        // Ready: wait for the function (or a stop, or the worker's end).
        for (;;) {
            struct pollfd p[2] = {{report_fd, POLLIN, 0}, {sigfd, POLLIN, 0}};
            if (poll(p, 2, -1) < 0) {
                if (errno == EINTR) continue;
                fail_setup("poll: %s", strerror(errno));
            }
            if (p[1].revents & POLLIN) fail_setup("stem stopped before its function arrived");
            if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) break;
        }
        if (receive_activation(report_fd, &activation, err, sizeof err) != 0) fail_setup("%s", err);
        if (apply_activation(&opts, &activation, err, sizeof err) != 0) fail_setup("%s", err);
        if (have_cgroup) cgroup_update_limits(&opts);
        clock_gettime(CLOCK_MONOTONIC, &started);   // setupMs and durationMs count from here
    }
    if (write_all(go[1], "g", 1) != 0) fail_setup("start init: %s", strerror(errno));
    if (activation.argc > 0) {
        if (forward_activation(go[1], &activation) != 0) fail_setup("start init: %s", strerror(errno));
        for (int i = 0; i < activation.nfds; i++) close(activation.fds[i]);
    }
    // go[1] stays open: its closing tells init that the launcher is gone.

    struct init_message msg, fin;
    int have_fin = 0, setup_ok = 0, init_done = 0, init_status = 0, stop_signal = 0, info_open = 1;
    char setup_error[1100] = "";
    int watch_reader = report_fd >= 0;   // the report reader vanishing means the worker is gone
    while (!init_done || info_open) {
        struct pollfd p[3] = {{sigfd, POLLIN, 0}, {info_open ? info[0] : -1, POLLIN, 0},
                              {watch_reader ? report_fd : -1, 0, 0}};
        if (init_done) {   // only draining what init wrote before it exited
            if (poll(&p[1], 1, 0) <= 0) break;
        } else if (poll(p, 3, -1) < 0) {
            if (errno == EINTR) continue;
            fail_setup("poll: %s", strerror(errno));
        }
        if (!init_done && (p[2].revents & (POLLERR | POLLHUP)) && stop_signal == 0) {
            watch_reader = 0;
            stop_signal = SIGPIPE;
            kill(pid, SIGKILL);
            cgroup_kill_all();
        }
        if (!init_done && (p[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (si.ssi_signo == SIGCHLD) {
                    int st;
                    if (waitpid(pid, &st, WNOHANG) == pid) {
                        init_done = 1;
                        init_status = st;
                    }
                } else if (stop_signal == 0) {
                    // Stop the instance: killing init tears down the pid namespace; the
                    // cgroup catches anything outside it.
                    stop_signal = (int)si.ssi_signo;
                    kill(pid, SIGKILL);
                    cgroup_kill_all();
                }
            }
        }
        if (info_open && (p[1].revents & (POLLIN | POLLHUP))) {
            int n = read_full(info[0], &msg, sizeof msg);
            if (n != (int)sizeof msg) {
                info_open = 0;
                continue;
            }
            for (int i = 0; i < msg.nwarnings && i < FORWARDED_WARNINGS; i++) warnf("%s", msg.warnings[i]);
            if (msg.kind == 1 && msg.ok) {
                setup_ok = 1;
                write_setup_report(&msg, flags, ns_status, cgroup_summary, cgroup_paths);
            } else if (msg.kind == 1) {
                snprintf(setup_error, sizeof setup_error, "%s", msg.text);
            } else if (msg.kind == 2) {
                fin = msg;
                have_fin = 1;
            }
        }
    }
    if (!setup_ok) {
        init_pid = -1;
        if (setup_error[0] == '\0')
            snprintf(setup_error, sizeof setup_error, "init ended during setup (status 0x%x)", init_status);
        fail_setup("%s", setup_error);
    }

    cgroup_kill_all();   // leftovers outside a pid namespace
    long oom_kills = cgroup_oom_kills();
    int limit_hit = cgroup_memory_limit_hit();
    long long peak = cgroup_memory_peak();
    long pids_hits = cgroup_pids_limit_hits();
    cgroup_destroy();

    int st = have_fin && fin.have_status ? fin.wstatus : init_status;
    char line[2048], q[1200];
    size_t o = 0;
    int exit_code;
    if (WIFEXITED(st)) {
        exit_code = WEXITSTATUS(st);
        o += (size_t)snprintf(line + o, sizeof line - o, "{\"exit\":{\"code\":%d}", exit_code);
    } else {
        int sig = WIFSIGNALED(st) ? WTERMSIG(st) : SIGKILL;
        int oom = sig == SIGKILL && stop_signal == 0 && (oom_kills > 0 || (oom_kills < 0 && limit_hit));
        exit_code = 128 + sig;
        o += (size_t)snprintf(line + o, sizeof line - o, "{\"exit\":{\"signal\":%d,\"oomKilled\":%s}", sig,
                              oom ? "true" : "false");
    }
    if (oom_kills >= 0) o += (size_t)snprintf(line + o, sizeof line - o, ",\"oomKills\":%ld", oom_kills);
    if (peak >= 0) o += (size_t)snprintf(line + o, sizeof line - o, ",\"memoryPeakBytes\":%lld", peak);
    if (pids_hits >= 0) o += (size_t)snprintf(line + o, sizeof line - o, ",\"pidsLimitHits\":%ld", pids_hits);
    if (stop_signal) o += (size_t)snprintf(line + o, sizeof line - o, ",\"stopped\":%d", stop_signal);
    if (have_fin && fin.text[0]) {
        json_string(q, sizeof q, fin.text);
        o += (size_t)snprintf(line + o, sizeof line - o, ",\"error\":%s", q);
        dprintf(2, "weft-launcher: %s\n", fin.text);
    } else if (!have_fin && !stop_signal) {
        o += (size_t)snprintf(line + o, sizeof line - o, ",\"error\":\"init ended unexpectedly\"");
    }
    snprintf(line + o, sizeof line - o, ",\"durationMs\":%.1f}\n", elapsed_ms());
    report_line(line);
    return exit_code > 255 ? 255 : exit_code;
}
