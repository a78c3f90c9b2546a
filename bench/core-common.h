/* Shared by the core and combinator benchmarks: memory figures and the
 * fixed-seed shuffle that bench/combo.js reproduces bit for bit. */
#ifndef UVP_BENCH_CORE_COMMON_H
#define UVP_BENCH_CORE_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

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

#endif
