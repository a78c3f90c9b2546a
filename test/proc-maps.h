/* Where an address is mapped, read from /proc/self/maps: mincore cannot
 * tell a PROT_NONE page (a stack's guard) from no mapping under qemu-user.
 * Whether a page can be read at all (a guard marker does not show in the
 * maps).  Shared by test-fiber.c and test-fiber-switch.c. */
#ifndef UVP_TEST_PROC_MAPS_H
#define UVP_TEST_PROC_MAPS_H

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>

/* The mapping holding addr: [*lo, *hi) and its permissions ("rw-p"); 1 if
 * one does, 0 if none does, -1 if the file cannot be read.  It asserts
 * nothing, so code running on a fiber's stack may call it. */
#if defined(_WIN32)
/* Windows (test/win): the region VirtualQuery says holds addr, with the
 * same four letters ("rw-p"; a PAGE_GUARD or PAGE_NOACCESS page, or one
 * reserved and not committed, as "---p"). */
static inline int proc_mapping_of(const void *addr, uintptr_t *lo,
                                  uintptr_t *hi, char perms[5]) {
  MEMORY_BASIC_INFORMATION mi;
  if (VirtualQuery(addr, &mi, sizeof(mi)) != sizeof(mi))
    return -1;
  if (mi.State == MEM_FREE)
    return 0;
  *lo = (uintptr_t)mi.BaseAddress;
  *hi = *lo + mi.RegionSize;
  bool none = mi.State != MEM_COMMIT || (mi.Protect & PAGE_GUARD) != 0 ||
              (mi.Protect & PAGE_NOACCESS) != 0;
  memcpy(perms, none ? "---p" : "rw-p", 5);
  return 1;
}
#else
static inline int proc_mapping_of(const void *addr, uintptr_t *lo,
                                  uintptr_t *hi, char perms[5]) {
  FILE *f = fopen("/proc/self/maps", "r");
  unsigned long a, b;
  char p[5];
  int found = 0;
  if (f == NULL)
    return -1;
  while (!found && fscanf(f, "%lx-%lx %4s%*[^\n]", &a, &b, p) == 3)
    if ((uintptr_t)addr >= a && (uintptr_t)addr < b) {
      *lo = a;
      *hi = b;
      memcpy(perms, p, 5);
      found = 1;
    }
  fclose(f);
  return found;
}
#endif

/* Whether addr is mapped, with its permissions in perms; fails the test if
 * the file cannot be read (so "not mapped" is never the default). */
static inline bool proc_mapped_as(const void *addr, char perms[5]) {
  uintptr_t lo, hi;
  int rc = proc_mapping_of(addr, &lo, &hi, perms);
  if (rc < 0)
    fail_msg("cannot read /proc/self/maps");
  return rc == 1;
}

static inline bool proc_mapped(const void *addr) {
  char perms[5];
  return proc_mapped_as(addr, perms);
}

/* The lines of /proc/self/maps: the mappings the process holds. */
#if defined(_WIN32)
static inline size_t proc_map_count(void) {
  MEMORY_BASIC_INFORMATION mi;
  size_t n = 0;
  for (const char *a = NULL;
       VirtualQuery(a, &mi, sizeof(mi)) == sizeof(mi) && a + mi.RegionSize > a;
       a = (const char *)mi.BaseAddress + mi.RegionSize)
    n += mi.State != MEM_FREE;
  return n;
}
#else
static inline size_t proc_map_count(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  size_t n = 0;
  int c;
  if (f == NULL)
    fail_msg("cannot read /proc/self/maps");
  while ((c = fgetc(f)) != EOF)
    n += c == '\n';
  fclose(f);
  return n;
}
#endif

/* Whether the byte at addr can be read (the kernel reading it for us, as a
 * debugger would): 1, 0 (it faults: unmapped, PROT_NONE or a guard marker),
 * or -1 when process_vm_readv is refused or missing (qemu-user). */
static inline int proc_readable(const void *addr) {
#if defined(UVP_HAVE_PROCESS_VM_READV) /* meson.build: Linux's */
  char byte;
  struct iovec local = {&byte, 1}, remote = {(void *)(uintptr_t)addr, 1};
  ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
  if (n == 1)
    return 1;
  return n < 0 && errno == EFAULT ? 0 : -1;
#else
  (void)addr;
  return -1;
#endif
}

/* Whether the page holding addr faults on access: by the kernel's read,
 * else by its permissions in the maps (enough where only PROT_NONE pages
 * guard, as under qemu-user). */
static inline bool proc_guarded(const void *addr) {
  char perms[5];
  int r = proc_readable(addr);
  if (r >= 0)
    return r == 0;
  return !proc_mapped_as(addr, perms) || perms[0] != 'r';
}

#endif
