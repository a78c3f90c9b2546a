/* Where an address is mapped, read from /proc/self/maps: mincore cannot
 * tell a PROT_NONE page (a stack's guard) from no mapping under qemu-user.
 * Shared by test-fiber.c and test-fiber-switch.c. */
#ifndef UVP_TEST_PROC_MAPS_H
#define UVP_TEST_PROC_MAPS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* The mapping holding addr: [*lo, *hi) and its permissions ("rw-p"); 1 if
 * one does, 0 if none does, -1 if the file cannot be read.  It asserts
 * nothing, so code running on a fiber's stack may call it. */
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

#endif
