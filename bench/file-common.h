/* Shared by the file fan-outs (file-fanout and the hand-written
 * file-fanout-baseline): arguments, the names, and the result line
 * bench/run-io and bench/ab parse.  libuv only: the baseline includes it,
 * so nothing here may need uvp.h. */
#ifndef UVP_BENCH_FILE_COMMON_H
#define UVP_BENCH_FILE_COMMON_H

#include <stdio.h>
#include <stdlib.h>

#include "core-common.h"

#define FILE_MAX_ROUNDS 100

/* DIR NFILES NMISSING [ROUNDS]; ROUNDS outside 1..FILE_MAX_ROUNDS is 1.
 * Returns the number of names, NFILES + NMISSING; exits 2 with the usage
 * when an argument is missing. */
static inline size_t file_args(int argc, char **argv, size_t *nf, size_t *nm,
                               int *rounds) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s DIR NFILES NMISSING [ROUNDS]\n", argv[0]);
    exit(2);
  }
  *nf = strtoul(argv[2], NULL, 10);
  *nm = strtoul(argv[3], NULL, 10);
  *rounds = argc > 4 ? atoi(argv[4]) : 1;
  if (*rounds < 1 || *rounds > FILE_MAX_ROUNDS)
    *rounds = 1;
  return *nf + *nm;
}

/* Name i of nf files in dir: f<i> for the files, missing<i> after them. */
static inline void file_path(char *buf, size_t size, const char *dir, size_t i,
                             size_t nf) {
  snprintf(buf, size, "%s/%s%zu", dir, i < nf ? "f" : "missing", i);
}

/* The result line of ROUNDS fan-outs of N names taking ms[r] each: round 1
 * cold, the median of the others warm (the upper one of an even count).
 * wrong: some round's outcomes were wrong, said on stderr instead.  Returns
 * the exit status. */
static inline int file_report(const char *impl, size_t n, double *ms,
                              int rounds, int wrong) {
  if (wrong) {
    fprintf(stderr, "%s file-fanout: wrong outcomes\n", impl);
    return 1;
  }
  double cold = ms[0], warm = cold;
  if (rounds > 1) {
    qsort(ms + 1, (size_t)rounds - 1, sizeof(double), bench_cmp_double);
    warm = ms[1 + (rounds - 1) / 2];
  }
  printf("%s file-fanout n=%zu rounds=%d wall_ms=%.1f warm_ms=%.1f\n", impl, n,
         rounds, cold, warm);
  return 0;
}

#endif
