/* Shared by the core and combinator benchmarks: memory figures, the
 * fixed-seed shuffle that bench/combo.js reproduces bit for bit, the rounds
 * loop and medians.  libuv only: the hand-written baselines include it too,
 * so nothing here may need uvp.h. */
#ifndef UVP_BENCH_CORE_COMMON_H
#define UVP_BENCH_CORE_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

/* Peak resident set of the process in KiB (ru_maxrss is KiB on Linux). */
static inline long bench_peak_rss_kb(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return -1;
  return ru.ru_maxrss;
}

/* Current resident set in bytes.  ru_maxrss only grows, so a delta over one
 * phase needs the current figure from statm. */
static inline long long bench_rss_bytes(void) {
  long long size = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return -1;
  if (fscanf(f, "%lld %lld", &size, &resident) != 2)
    resident = -1;
  fclose(f);
  return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

/* mincore's vector: unsigned char on Linux, char on macOS and the BSDs
 * (meson.build checks). */
#if defined(UVP_MINCORE_CHAR)
typedef char bench_mincore_vec_t;
#else
typedef unsigned char bench_mincore_vec_t;
#endif

/* Pages of [addr, addr + len) that are resident (mincore); addr on a page
 * boundary.  -1 on error. */
static inline long bench_resident_pages(const void *addr, size_t len) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (len + page - 1) / page;
  bench_mincore_vec_t *vec =
      (bench_mincore_vec_t *)malloc(n > 0 ? n : 1); /* C++ too */
  long r = 0;
  if (vec == NULL || mincore((void *)addr, len, vec) != 0) {
    free(vec);
    return -1;
  }
  for (size_t i = 0; i < n; i++)
    r += vec[i] & 1;
  free(vec);
  return r;
}

/* xorshift32: trivial to mirror in JavaScript with 32-bit integer ops. */
static inline uint32_t bench_rand(uint32_t *state) {
  uint32_t x = *state;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  *state = x;
  return x;
}

/* perm[k] is the input settled k-th: a Fisher-Yates shuffle of 0..n-1 with
 * seed 12345.  Returns a checksum the runner compares across C and Node, so
 * every implementation provably settles in the same order. */
static inline uint32_t bench_shuffle(uint32_t *perm, uint32_t n) {
  uint32_t state = 12345, sum = 0;
  for (uint32_t i = 0; i < n; i++)
    perm[i] = i;
  for (uint32_t i = n; i > 1; i--) {
    uint32_t j = bench_rand(&state) % i;
    uint32_t t = perm[i - 1];
    perm[i - 1] = perm[j];
    perm[j] = t;
  }
  /* Order-sensitive: sum of perm[k] * (k + 1) modulo 2^32. */
  for (uint32_t k = 0; k < n; k++)
    sum += perm[k] * (k + 1);
  return sum;
}

static inline uint32_t bench_arg_n(int argc, char **argv, int i,
                                   uint32_t dflt) {
  if (argc <= i)
    return dflt;
  unsigned long n = strtoul(argv[i], NULL, 10);
  if (n == 0 || n > 100000000ul) {
    fprintf(stderr, "bad N: %s\n", argv[i]);
    exit(2);
  }
  return (uint32_t)n;
}

/* --rounds=R: run the workload R times in one process (same loop, same uvp
 * context).  Round 1 is the cold start, where first-touch page faults
 * dominate; the median of rounds 2..R is what a long-running program sees,
 * its memory already faulted in and reused.  Returns 0 if ARG is not the
 * option, 1 if it is (and sets *rounds), exits on a bad value. */
#define BENCH_MAX_ROUNDS 100
static inline int bench_arg_rounds(const char *arg, int *rounds) {
  if (strncmp(arg, "--rounds=", 9) != 0)
    return 0;
  char *end;
  long r = strtol(arg + 9, &end, 10);
  if (*end != '\0' || r < 1 || r > BENCH_MAX_ROUNDS) {
    fprintf(stderr, "bad rounds (1..%d): %s\n", BENCH_MAX_ROUNDS, arg);
    exit(2);
  }
  *rounds = (int)r;
  return 1;
}

static inline int bench_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Median of ns[1..rounds-1] (the warm rounds), in ns; sorts them in place.
 * Only meaningful for rounds >= 2. */
static inline double bench_warm_ns(uint64_t *ns, int rounds) {
  size_t m = (size_t)rounds - 1;
  uint64_t *w = ns + 1;
  qsort(w, m, sizeof(*w), bench_cmp_u64);
  return m % 2 ? (double)w[m / 2] : (w[m / 2 - 1] + w[m / 2]) / 2.0;
}

/* Runs round(arg, &ns[r]) for r = 0..rounds-1, each round timing itself,
 * and records the peak RSS after round 1 in *cold_rss_kb.  round returns 1
 * if its round was right, 0 if not, -1 on an error.  Returns 1 if every
 * round was right, 0 if not, -1 at the first error. */
static inline int bench_rounds(int rounds, int (*round)(void *, uint64_t *),
                               void *arg, uint64_t *ns, long *cold_rss_kb) {
  int all_ok = 1;
  for (int r = 0; r < rounds; r++) {
    int rc = round(arg, &ns[r]);
    if (rc < 0)
      return -1;
    all_ok = all_ok && rc;
    if (r == 0)
      *cold_rss_kb = bench_peak_rss_kb();
  }
  return all_ok;
}

/* Closes idle (if not NULL), runs the loop until every close callback ran
 * and closes it; a uvp program closes its context first.  Returns
 * uv_loop_close's result: 0 unless something was left on the loop. */
static inline int bench_loop_close(uv_loop_t *loop, uv_idle_t *idle) {
  if (idle != NULL)
    uv_close((uv_handle_t *)idle, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop);
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of v[0..n-1]; sorts them in place. */
static inline double bench_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The fields every core/combinator program prints after its own: cold
 * (round 1) and, with more than one round, warm figures; the peak RSS after
 * round 1 (what a one-round process peaks at) and over the whole process. */
static inline void bench_print_rounds(uint64_t *ns, int rounds, uint32_t n,
                                      long cold_rss_kb) {
  printf(" rounds=%d ns_per_promise=%.1f wall_ms=%.1f", rounds,
         (double)ns[0] / n, ns[0] / 1e6);
  if (rounds > 1) {
    double warm = bench_warm_ns(ns, rounds);
    printf(" warm_ns_per_promise=%.1f warm_ms=%.1f", warm / n, warm / 1e6);
  }
  printf(" cold_peak_rss_kb=%ld peak_rss_kb=%ld\n", cold_rss_kb,
         bench_peak_rss_kb());
}

#endif
