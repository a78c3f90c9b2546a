/* The guards below fiber stacks (fiber-guard.h): which the process can
 * have, and the handler that reports a fault in one.
 *
 * Below each stack, one of three guards, chosen per slot when it is first
 * carved:
 *
 *   marker  the guard page holds a guard marker (MADV_GUARD_INSTALL,
 *           Linux 6.13): any access faults, and the chunk stays one
 *           mapping.  Installed for every slot of a chunk as the chunk is
 *           mapped (process_madvise, 64 slots a call), when a probe shows
 *           that the kernel installs them (by their effect:
 *           process_vm_readv of a guard page fails with EFAULT; qemu-user
 *           answers 0 to the madvise and installs nothing, Linux before
 *           6.13 answers EINVAL).
 *   page    the guard page is mprotect(PROT_NONE): it faults too, but it
 *           splits the chunk's mapping, two more entries of the table per
 *           stack.  Without markers, while the process-wide budget of such
 *           pages (a quarter of vm.max_map_count) lasts.
 *   canary  nothing faults: the 16 bytes just below the guard page, at the
 *           top of the slot below, hold two words that the switch layer
 *           checks each time the fiber switches away (fiber-switch.h), with
 *           the stack pointer.  An overrun of less than a page lands in the
 *           unused guard page and harms nothing; a deeper one overwrites the
 *           canary before anything of the fiber below it, and is stopped at
 *           the fiber's next switch (uvp__stack_overrun).  The canary sits in
 *           a page that is resident anyway: the top page of the slot below,
 *           or the chunk's lead page for slot 0.
 *
 * A fault in a marker or page guard below the running fiber's stack is
 * reported by a handler of SIGSEGV and SIGBUS that names the fiber's spawn
 * site and then hands the fault on (see uvp__stack_set_running_hook).  Both
 * signals, on every platform: Linux raises SIGSEGV for an access to a
 * PROT_NONE page, macOS SIGBUS; a fault of either elsewhere is handed on */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* process_vm_readv */
#endif
#include "fiber-guard.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if !defined(_WIN32)
#include <fcntl.h>
#if defined(UVP_HAVE_SYS_SYSCALL_H) /* meson.build: not on macOS */
#include <sys/syscall.h>
#endif
#endif

/* process_madvise on the calling process without a pidfd (Linux 6.15;
 * 6.13 takes any advice for the process itself). */
#if !defined(PIDFD_SELF)
#define PIDFD_SELF (-10000)
#endif

/* ---- the process's guards ------------------------------------------------ */

size_t uvp__stack_page_size(void) {
  long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? (size_t)page : 4096;
}

static atomic_int markers = -1;              /* -1: not probed yet */
static atomic_int env_canary;                /* UVP_FIBER_GUARD=canary */
static atomic_int forced = UVP__GUARDS_AUTO; /* uvp__stack_default_guards */
/* Page guards in the process, and how many the budget allows (-1 until
 * read): each splits a chunk's mapping, two entries of the kernel's table. */
static atomic_size_t page_guards;
static atomic_size_t page_guards_max = (size_t)-1;

/* Whether a read of one byte at addr succeeds, through the kernel's own
 * access (as a debugger would read it): 1, 0 (EFAULT), or -1 (the call is
 * refused or missing, as under qemu-user or a strict seccomp profile). */
#if defined(UVP_HAVE_PROCESS_VM_READV)
static int readable(const void *addr) {
  char byte;
  struct iovec local = {&byte, 1}, remote = {(void *)(uintptr_t)addr, 1};
  ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
  if (n == 1)
    return 1;
  return n < 0 && errno == EFAULT ? 0 : -1;
}
#else
static int readable(const void *addr) {
  (void)addr;
  return -1; /* no way to tell: no markers */
}
#endif

/* A guard marker installed on the first of two pages: the first must then
 * be unreadable and the second readable.  qemu-user answers 0 to the
 * madvise and installs nothing (and has no process_vm_readv); Linux before
 * 6.13 answers EINVAL. */
static int probe_markers(void) {
  size_t page = uvp__stack_page_size();
  int ok = 0;
  char *map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED)
    return 0;
  if (madvise(map, page, MADV_GUARD_INSTALL) == 0)
    ok = readable(map) == 0 && readable(map + page) == 1;
  (void)munmap(map, 2 * page);
  return ok;
}

int uvp__stack_markers(void) {
  int m = atomic_load_explicit(&markers, memory_order_acquire);
  if (m >= 0)
    return m;
  const char *env = getenv("UVP_FIBER_GUARD");
  if (env != NULL && strcmp(env, "canary") == 0)
    atomic_store(&env_canary, 1);
  m = env != NULL &&
              (strcmp(env, "fallback") == 0 || strcmp(env, "canary") == 0)
          ? 0
          : probe_markers();
  atomic_store_explicit(&markers, m, memory_order_release);
  return m;
}

/* A quarter of vm.max_map_count (half the table, two entries a page). */
static size_t page_guard_budget(void) {
  size_t max = atomic_load(&page_guards_max);
  if (max != (size_t)-1)
    return max;
  char buf[32];
  long count = 65530;
  int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n > 0) {
      buf[n] = '\0';
      count = strtol(buf, NULL, 10);
    }
    close(fd);
  }
  max = count > 0 ? (size_t)count / 4 : 0;
  atomic_store(&page_guards_max, max);
  return max;
}

/* The same advice for n ranges, in as few system calls as the kernel
 * allows: process_madvise on the process itself (Linux 6.13 takes any
 * advice for it), else one madvise each, which is also what a kernel that
 * refuses the call gets from then on.  Returns 0 if every range was
 * advised. */
#if defined(SYS_process_madvise)
static atomic_int advise_vector = 1; /* process_madvise still worth a try */
#endif

static int advise_each(const struct iovec *iov, size_t n, int advice) {
  int rc = 0;
  for (size_t i = 0; i < n; i++)
    if (madvise(iov[i].iov_base, iov[i].iov_len, advice) != 0)
      rc = -1;
  return rc;
}

/* valgrind 3.19 does not know process_madvise (440): it answers ENOSYS,
 * but warns on stderr, which a program run under it may not want. */
#if defined(SYS_process_madvise)
static bool under_valgrind(void) {
#if defined(UVP__STACK_VALGRIND)
  return RUNNING_ON_VALGRIND != 0;
#else
  return false;
#endif
}
#endif

int uvp__stack_advise(const struct iovec *iov, size_t n, int advice) {
#if defined(SYS_process_madvise)
  if (n > 1 && atomic_load_explicit(&advise_vector, memory_order_relaxed) &&
      !under_valgrind()) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
      total += iov[i].iov_len;
    long done = syscall(SYS_process_madvise, PIDFD_SELF, iov, n, advice, 0);
    if (done >= 0 && (size_t)done == total)
      return 0;
    if (done < 0 && (errno == ENOSYS || errno == EBADF || errno == EINVAL ||
                     errno == EPERM || errno == ESRCH))
      atomic_store_explicit(&advise_vector, 0, memory_order_relaxed);
    /* Or advised in part: both pieces of advice used here may be given
     * twice. */
  }
#endif
  return advise_each(iov, n, advice);
}

void uvp__stack_default_guards(int mode) { atomic_store(&forced, mode); }

int uvp__stack_guards_auto(void) {
  if (atomic_load(&forced) != UVP__GUARDS_AUTO)
    return atomic_load(&forced);
  if (uvp__stack_markers())
    return UVP__GUARDS_AUTO;
  return atomic_load(&env_canary) ? UVP__GUARDS_CANARY : UVP__GUARDS_FALLBACK;
}

bool uvp__stack_page_guard_take(void) {
  size_t budget = page_guard_budget();
  if (atomic_fetch_add(&page_guards, 1) < budget)
    return true;
  atomic_fetch_sub(&page_guards, 1);
  return false;
}

void uvp__stack_page_guards_give(size_t n) {
  atomic_fetch_sub(&page_guards, n);
}

/* ---- the fault handler --------------------------------------------------- */

static const uvp__stack_t *(*_Atomic running_hook)(void);
#if !defined(_WIN32)
static struct sigaction prev_segv, prev_bus;
static size_t handler_page;
static pthread_mutex_t handler_lock = PTHREAD_MUTEX_INITIALIZER;
#if defined(__GNUC__)
__attribute__((tls_model("initial-exec")))
#endif
static _Thread_local int in_handler;
static pthread_once_t altstack_once = PTHREAD_ONCE_INIT;
static pthread_key_t altstack_key;
static _Thread_local int altstack_checked;
#endif

void uvp__stack_set_running_hook(const uvp__stack_t *(*running)(void)) {
  atomic_store(&running_hook, running);
}

/* Async-signal-safe output. */
static size_t put_str(char *buf, size_t at, size_t cap, const char *s) {
  while (*s != '\0' && at < cap)
    buf[at++] = *s++;
  return at;
}

static size_t put_num(char *buf, size_t at, size_t cap, uintptr_t v,
                      unsigned base) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v != 0);
  if (base == 16)
    at = put_str(buf, at, cap, "0x");
  while (n > 0 && at < cap)
    buf[at++] = tmp[--n];
  return at;
}

static size_t put_site(char *buf, size_t at, size_t cap,
                       const uvp__stack_t *s) {
  if (s->file == NULL)
    return put_str(buf, at, cap, "uvp: a fiber ");
  at = put_str(buf, at, cap, "uvp: the fiber spawned at ");
  at = put_str(buf, at, cap, s->file);
  at = put_str(buf, at, cap, ":");
  at = put_num(buf, at, cap, (uintptr_t)s->line, 10);
  return put_str(buf, at, cap, " ");
}

/* The overflow report both platforms' fault handlers write: async-signal
 * safe, into buf. */
static size_t put_overflow(char *buf, size_t cap, const uvp__stack_t *s,
                           const char *a) {
  size_t at = put_site(buf, 0, cap, s);
  at = put_str(buf, at, cap, "ran off its stack of ");
  at = put_num(buf, at, cap, s->size, 10);
  at = put_str(buf, at, cap, " bytes (a fault at ");
  at = put_num(buf, at, cap, (uintptr_t)a, 16);
  return put_str(buf, at, cap, ", in the guard page below it); stopping\n");
}

#if !defined(_WIN32)
static void on_segv(int sig, siginfo_t *info, void *uc) {
  int saved_errno = errno;
  const uvp__stack_t *(*hook)(void) = atomic_load(&running_hook);
  const uvp__stack_t *s = hook != NULL ? hook() : NULL;
  const char *a = info->si_addr;
  if (in_handler) {
    /* Handed back to us by a handler we handed it to (each installed over
     * the other): the default action ends the loop. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    (void)sigaction(sig, &dfl, NULL);
    if (info->si_code <= 0)
      (void)raise(sig);
    return;
  }
  in_handler = 1;
  if (s != NULL && s->guard != UVP__GUARD_CANARY &&
      a >= s->base - handler_page && a < s->base) {
    char buf[512];
    size_t at = put_overflow(buf, sizeof(buf), s, a);
    (void)!write(2, buf, at);
  }
  errno = saved_errno;
  /* Hand it on, as if we had not been there. */
  const struct sigaction *prev = sig == SIGBUS ? &prev_bus : &prev_segv;
  if ((prev->sa_flags & SA_SIGINFO) != 0 && prev->sa_sigaction != NULL) {
    prev->sa_sigaction(sig, info, uc);
  } else if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
    prev->sa_handler(sig);
  } else {
    /* The default action: the access faults again when we return, and a
     * signal sent by someone is sent again. */
    (void)sigaction(sig, prev, NULL);
    if (info->si_code <= 0)
      (void)raise(sig);
  }
  in_handler = 0;
}

/* Installs the handler unless it is the one in place (a program or a tool
 * may have installed its own since: ours then hands faults on to it). */
static void ensure_handler(void) {
  struct sigaction sa, cur;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  (void)pthread_mutex_lock(&handler_lock);
  handler_page = uvp__stack_page_size();
  for (int i = 0; i < 2; i++) {
    int sig = i == 0 ? SIGSEGV : SIGBUS;
    if (sigaction(sig, NULL, &cur) == 0 &&
        ((cur.sa_flags & SA_SIGINFO) == 0 || cur.sa_sigaction != on_segv)) {
      *(sig == SIGBUS ? &prev_bus : &prev_segv) = cur;
      (void)sigaction(sig, &sa, NULL);
    }
  }
  (void)pthread_mutex_unlock(&handler_lock);
}

enum { ALT_SIZE = 64 * 1024 };

static void free_altstack(void *mem) {
  stack_t ss, off;
  memset(&off, 0, sizeof(off));
  off.ss_flags = SS_DISABLE;
  if (sigaltstack(NULL, &ss) == 0 && ss.ss_sp == mem)
    (void)sigaltstack(&off, NULL);
  (void)munmap(mem, ALT_SIZE);
}

static void make_altstack_key(void) {
  if (pthread_key_create(&altstack_key, free_altstack) != 0)
    altstack_key = (pthread_key_t)-1;
}

/* A fault on a fiber's guard page happens with the stack pointer at the
 * guard: the handler can only run on an alternate signal stack.  The
 * thread gets one unless it has one (ASan gives each thread its own); it
 * is unmapped as the thread exits (mapped, not allocated: memory a thread
 * keeps to its end is no leak to report). */
static void ensure_altstack(void) {
  stack_t ss;
  if (altstack_checked)
    return;
  altstack_checked = 1;
  (void)pthread_once(&altstack_once, make_altstack_key);
  if (altstack_key == (pthread_key_t)-1 || sigaltstack(NULL, &ss) != 0 ||
      (ss.ss_flags & SS_DISABLE) == 0)
    return;
  ss.ss_sp = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ss.ss_size = ALT_SIZE;
  ss.ss_flags = 0;
  if (ss.ss_sp == MAP_FAILED)
    return;
  if (pthread_setspecific(altstack_key, ss.ss_sp) != 0 ||
      sigaltstack(&ss, NULL) != 0) {
    (void)pthread_setspecific(altstack_key, NULL);
    (void)munmap(ss.ss_sp, ALT_SIZE);
  }
}

#else
/* Windows: a fault is raised on the faulting thread's stack, so a guard
 * page is a PAGE_GUARD page (stack-win.h), which the system makes
 * accessible as it raises the fault: the report runs below the fault, as
 * it would past a thread stack's guard.  A vectored handler sees the fault
 * first, whoever else handles exceptions, reports a fault in the running
 * fiber's guard page, and hands it on (EXCEPTION_CONTINUE_SEARCH): the
 * program's handlers, else the system ends the process with the fault's
 * code. */
static size_t handler_page;
static atomic_int handler_added;

static LONG WINAPI on_fault(EXCEPTION_POINTERS *ep) {
  const EXCEPTION_RECORD *r = ep->ExceptionRecord;
  if (r->ExceptionCode != STATUS_GUARD_PAGE_VIOLATION &&
      r->ExceptionCode != STATUS_STACK_OVERFLOW &&
      r->ExceptionCode != STATUS_ACCESS_VIOLATION)
    return EXCEPTION_CONTINUE_SEARCH;
  const uvp__stack_t *(*hook)(void) = atomic_load(&running_hook);
  const uvp__stack_t *s = hook != NULL ? hook() : NULL;
  const char *a = r->NumberParameters >= 2
                      ? (const char *)r->ExceptionInformation[1]
                      : (const char *)ep->ContextRecord->Rsp;
  if (s != NULL && s->guard != UVP__GUARD_CANARY &&
      a >= s->base - handler_page && a < s->base) {
    char buf[512];
    size_t at = put_overflow(buf, sizeof(buf), s, a);
    DWORD wrote;
    (void)WriteFile(GetStdHandle(STD_ERROR_HANDLE), buf, (DWORD)at, &wrote,
                    NULL);
  }
  return EXCEPTION_CONTINUE_SEARCH;
}

static void ensure_handler(void) {
  int no = 0;
  handler_page = uvp__stack_page_size();
  if (atomic_compare_exchange_strong(&handler_added, &no, 1))
    (void)AddVectoredExceptionHandler(1, on_fault);
}

static void ensure_altstack(void) {}
#endif

void uvp__stack_overrun(const uvp__stack_t *stack, const void *sp) {
  char buf[512];
  size_t at = put_site(buf, 0, sizeof(buf), stack);
  at = put_str(buf, at, sizeof(buf), "overran its stack of ");
  at = put_num(buf, at, sizeof(buf), stack->size, 10);
  if ((const char *)sp < stack->base) {
    at = put_str(buf, at, sizeof(buf), " bytes (its stack pointer ");
    at = put_num(buf, at, sizeof(buf), (uintptr_t)sp, 16);
    at = put_str(buf, at, sizeof(buf), " is below the stack's base ");
    at = put_num(buf, at, sizeof(buf), (uintptr_t)stack->base, 16);
  } else {
    at = put_str(buf, at, sizeof(buf), " bytes (the canary at ");
    at = put_num(buf, at, sizeof(buf), (uintptr_t)stack->canary, 16);
    at = put_str(buf, at, sizeof(buf), " below it was overwritten");
  }
  at =
      put_str(buf, at, sizeof(buf), ", found as it switched away); aborting\n");
  (void)!write(2, buf, at);
  abort();
}

void uvp__stack_fault_handler_ensure(void) {
  ensure_altstack();
  ensure_handler();
}
