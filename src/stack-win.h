/* What fiber-stack.c asks of the system, on Windows: the few POSIX calls
 * it makes, over VirtualAlloc.  Private to fiber-stack.c; included there
 * in place of <sys/mman.h> and friends.
 *
 *   mmap      reserves and commits (commit charge, not memory: a page is
 *             resident once touched, as on Linux); only anonymous private
 *             read-write mappings, which is all the pool asks for
 *   munmap    releases a whole mapping, the only kind the pool unmaps
 *   mprotect  PROT_NONE only, and as a guard page (PAGE_GUARD): the
 *             system clears it at the first touch and raises the fault on
 *             the faulting stack, which a PAGE_NOACCESS page would leave
 *             no room to do (Windows has no alternate signal stack); the
 *             vectored handler in fiber-stack.c reports it
 *   madvise   MADV_DONTNEED as MEM_RESET (the contents may go, the pages
 *             stay committed); every other advice fails with EINVAL, so
 *             no guard markers (the probe says no) and no huge-page advice
 *   sysconf   _SC_PAGESIZE
 */
#ifndef UVP_STACK_WIN_H
#define UVP_STACK_WIN_H

/* winsock2.h before windows.h, as uv.h wants them. */
#include <winsock2.h>

#include <windows.h>

#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <stddef.h>

#define PROT_NONE 0
#define PROT_READ 1
#define PROT_WRITE 2
#define MAP_PRIVATE 0x02
#define MAP_ANONYMOUS 0x20
#define MAP_FAILED ((void *)-1)
#define MADV_DONTNEED 4
#define _SC_PAGESIZE 30
#if !defined(O_CLOEXEC)
#define O_CLOEXEC 0
#endif

struct iovec {
  void *iov_base;
  size_t iov_len;
};

static inline void *uvp__win_mmap(size_t len) {
  void *p = VirtualAlloc(NULL, len, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
  if (p == NULL) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  return p;
}
#define mmap(addr, len, prot, flags, fd, off) uvp__win_mmap(len)

static inline int munmap(void *addr, size_t len) {
  (void)len;
  return VirtualFree(addr, 0, MEM_RELEASE) ? 0 : -1;
}

static inline int mprotect(void *addr, size_t len, int prot) {
  DWORD old;
  if (prot != PROT_NONE) {
    errno = EINVAL;
    return -1;
  }
  return VirtualProtect(addr, len, PAGE_READWRITE | PAGE_GUARD, &old) ? 0 : -1;
}

static inline int madvise(void *addr, size_t len, int advice) {
  if (advice != MADV_DONTNEED) {
    errno = EINVAL;
    return -1;
  }
  return VirtualAlloc(addr, len, MEM_RESET, PAGE_READWRITE) != NULL ? 0 : -1;
}

static inline long sysconf(int name) {
  SYSTEM_INFO si;
  if (name != _SC_PAGESIZE)
    return -1;
  GetSystemInfo(&si);
  return (long)si.dwPageSize;
}

#endif
