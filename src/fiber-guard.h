/* The guards below fiber stacks, as fiber-stack.c uses them: what the
 * process can have (markers, a budget of PROT_NONE pages, or canaries),
 * the system calls both files make, and the fault handler.  Private to
 * fiber-stack.c and fiber-guard.c. */
#ifndef UVP_FIBER_GUARD_H
#define UVP_FIBER_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#include "fiber-stack.h"

#if defined(_WIN32)
#include "stack-win.h"
#else
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
#endif

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define UVP__STACK_VALGRIND 1
#endif
#endif

#if !defined(MAP_STACK)
#define MAP_STACK 0
#endif
#if !defined(MAP_NORESERVE)
#define MAP_NORESERVE 0
#endif
/* Linux 6.13; Debian 12's headers do not have them yet. */
#if !defined(MADV_GUARD_INSTALL)
#define MADV_GUARD_INSTALL 102
#endif

/* The system's page size (4096 if it will not say). */
size_t uvp__stack_page_size(void);

/* The same advice for n ranges, in as few system calls as the kernel
 * allows (process_madvise, else a madvise each).  0 if every range was
 * advised. */
int uvp__stack_advise(const struct iovec *iov, size_t n, int advice);

/* The guards a pool of mode UVP__GUARDS_AUTO uses now: AUTO (markers),
 * FALLBACK or CANARY (uvp__stack_default_guards, UVP_FIBER_GUARD, the
 * probe). */
int uvp__stack_guards_auto(void);

/* A PROT_NONE guard page from the process's budget (a quarter of
 * vm.max_map_count): true if one was left, and it is the caller's until
 * it gives it back (with its chunk, or at once if its mprotect failed). */
bool uvp__stack_page_guard_take(void);
void uvp__stack_page_guards_give(size_t n);

/* Installs the SIGSEGV and SIGBUS handler unless it is in place, and an
 * alternate signal stack for this thread unless it has one: called as a
 * chunk's first stack with a marker or page guard is carved. */
void uvp__stack_fault_handler_ensure(void);

#endif
