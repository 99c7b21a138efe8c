#include "hostile.h"

#include <errno.h>
#include <sys/ptrace.h>
#include <unistd.h>

int hostile_ptrace(void) {
    return ptrace(PTRACE_TRACEME, 0, 0, 0) == 0 ? 0 : -errno;
}

int hostile_fork_bomb(void) {
    int forks = 0;
    pid_t first = fork();
    if (first < 0) return -errno;
    if (first == 0) {
        // The bomb runs in a child so that the function process itself answers.
        alarm(3);
        for (;;) {
            pid_t p = fork();
            if (p < 0) pause();   // refused: wait for the alarm
        }
    }
    forks = 1;
    sleep(1);
    return forks;
}
