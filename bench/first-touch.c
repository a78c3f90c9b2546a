/* What this machine charges for the first write to fresh memory, per 4 KiB
 * page: the cost that separates bench/run's cold rounds from its warm ones,
 * where a fan-out over a million promises writes ~80 MiB it has never
 * touched.  Three ways, each timed from the mapping to the last page written
 * (one byte per page), then unmapped, alternating REPS times:
 *   faulted     a plain anonymous mapping: a page fault per page;
 *   prefaulted  madvise(MADV_POPULATE_WRITE) over it first, as uvp does for
 *               its slabs and combinator blocks: one system call for all of
 *               them, the faults done in the kernel;
 *   huge        2 MiB-aligned and madvise(MADV_HUGEPAGE), what
 *               GLIBC_TUNABLES=glibc.malloc.hugetlb=1 gives malloc's memory;
 *               huge_share is the fraction of it that got huge pages.
 * On a VM whose hypervisor shadows the guest's page tables (no nested
 * paging), prefaulting saves the guest's fault but not the hypervisor's:
 * the first user access to each page still exits to fill its shadow entry.
 * Usage: first-touch [MIB] [REPS]   (defaults 64 and 5)
 * Prints medians in microseconds per 4 KiB page. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "core-common.h"
#include <uv.h>

#if !defined(MADV_HUGEPAGE)
#define MADV_HUGEPAGE 14 /* Linux's; elsewhere madvise refuses it */
#endif
#if !defined(MADV_POPULATE_WRITE)
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define PAGE 4096
#define HUGE (2u << 20)
#define MAX_REPS 101

enum { FAULTED, PREFAULTED, HUGEPAGES, WAYS };

/* Bytes of anonymous huge pages in the whole process: read while the huge
 * way's mapping is its only large one. */
static size_t huge_bytes(void) {
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  char line[256];
  size_t kb = 0;
  if (f == NULL)
    return 0;
  while (fgets(line, sizeof(line), f) != NULL)
    if (sscanf(line, "AnonHugePages: %zu", &kb) == 1)
      break;
  fclose(f);
  return kb * 1024;
}

/* One timed first touch of len bytes; *share gets the huge-page fraction.
 * Returns ns, or 0 if the memory could not be had. */
static uint64_t one(int way, size_t len, double *share) {
  size_t map_len = way == HUGEPAGES ? len + HUGE : len;
  uint64_t t0 = uv_hrtime();
  char *m = mmap(NULL, map_len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    return 0;
  char *p = m;
  if (way == HUGEPAGES) {
    p = (char *)(((uintptr_t)m + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
    (void)madvise(p, len, MADV_HUGEPAGE);
  } else if (way == PREFAULTED) {
    (void)madvise(p, len, MADV_POPULATE_WRITE);
  }
  for (size_t off = 0; off < len; off += PAGE)
    p[off] = 1;
  uint64_t ns = uv_hrtime() - t0;
  *share = way == HUGEPAGES ? (double)huge_bytes() / (double)len : 0;
  munmap(m, map_len);
  return ns;
}

int main(int argc, char **argv) {
  long mib = argc > 1 ? strtol(argv[1], NULL, 10) : 64;
  int reps = argc > 2 ? atoi(argv[2]) : 5;
  if (mib < 1 || mib > 4096 || reps < 1 || reps > MAX_REPS) {
    fprintf(stderr, "usage: %s [MIB 1..4096] [REPS 1..%d]\n", argv[0],
            MAX_REPS);
    return 2;
  }
  size_t len = (size_t)mib << 20;
  static double us[WAYS][MAX_REPS], share[MAX_REPS];
  for (int r = 0; r < reps; r++) {
    for (int w = 0; w < WAYS; w++) {
      double s = 0;
      uint64_t ns = one(w, len, &s);
      if (ns == 0) {
        fprintf(stderr, "mmap of %ld MiB failed\n", mib);
        return 1;
      }
      us[w][r] = (double)ns / 1e3 / (double)(len / PAGE);
      if (w == HUGEPAGES)
        share[r] = s;
    }
  }
  printf("name=first-touch mib=%ld reps=%d faulted_us_per_page=%.3f "
         "prefaulted_us_per_page=%.3f huge_us_per_page=%.3f "
         "huge_share=%.2f\n",
         mib, reps, bench_median(us[FAULTED], reps),
         bench_median(us[PREFAULTED], reps), bench_median(us[HUGEPAGES], reps),
         bench_median(share, reps));
  return 0;
}
