// weft-launcher: small helpers (files, warnings, JSON strings).
#include "launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_WARNINGS 24
static char warnings[MAX_WARNINGS][200];
static int nwarnings;

void warnf(const char *fmt, ...) {
    if (nwarnings >= MAX_WARNINGS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(warnings[nwarnings], sizeof warnings[0], fmt, ap);
    va_end(ap);
    nwarnings++;
}

const char *warning_at(int i) { return (i >= 0 && i < nwarnings) ? warnings[i] : ""; }
int warning_count(void) { return nwarnings; }

int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int read_full(int fd, void *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) break;
        got += (size_t)n;
    }
    return (int)got;
}

int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = 0;
    ssize_t n = write(fd, text, strlen(text));
    if (n < 0) rc = -errno;
    else if ((size_t)n != strlen(text)) rc = -EIO;
    close(fd);
    return rc;
}

int read_file(const char *path, char *buf, size_t len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int n = read_full(fd, buf, len - 1);
    int saved = errno;
    close(fd);
    if (n < 0) return -saved;
    buf[n] = '\0';
    return n;
}

int mkdirs(const char *path, mode_t mode) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return -ENAMETOOLONG;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, mode) != 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(tmp, mode) != 0 && errno != EEXIST) return -errno;
    return 0;
}

void json_string(char *out, size_t outlen, const char *s) {
    size_t o = 0;
    if (outlen < 3) { if (outlen) out[0] = '\0'; return; }
    out[o++] = '"';
    for (; *s && o + 8 < outlen; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; }
        else if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
        else if (c == '\t') { out[o++] = '\\'; out[o++] = 't'; }
        else if (c < 0x20) o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", c);
        else out[o++] = (char)c;
    }
    out[o++] = '"';
    out[o] = '\0';
}
