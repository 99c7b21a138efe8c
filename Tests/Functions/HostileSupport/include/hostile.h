// Misbehaviours a Swift test function cannot express directly (variadic or fork-time C calls).
#ifndef WEFT_HOSTILE_H
#define WEFT_HOSTILE_H

/// ptrace(PTRACE_TRACEME): 0, or -errno.
int hostile_ptrace(void);
/// Forks until refused, every process giving up after 3 s; returns how many forks succeeded
/// in this process before the first refusal (or -errno of it).
int hostile_fork_bomb(void);

#endif
