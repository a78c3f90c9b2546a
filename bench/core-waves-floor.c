/* The floor under bench/core-waves: the same waves on a minimal C promise,
 * no loop.  A promise is a struct with its state, value, one callback and
 * a reference count; then registers the callback and creates the derived
 * promise; resolve queues a promise that has a callback on a FIFO, which
 * the program drains after each wave (where core-waves runs the loop): the
 * callback's return value resolves the derived promise.  Promises come
 * from a free list (default) or from malloc (--malloc).
 * Built twice: core-waves-floor, where the compiler inlines the promise's
 * five functions into the program's loops, and core-waves-floor-api
 * (FLOOR_API defined), where each is a call, as a library's functions are
 * to the program that calls them: the floor for a promise behind an API.
 * Usage: core-waves-floor[-api] [N] [--wave=W] [--rounds=R] [--malloc]
 *   as core-waves; prints the same fields (impl=floor or floor-malloc, or
 *   api-floor and api-floor-malloc). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core-common.h"

#ifdef FLOOR_API
#define FLOOR_FN __attribute__((noinline)) static
#define FLOOR_IMPL "api-floor"
#else
#define FLOOR_FN static
#define FLOOR_IMPL "floor"
#endif

typedef uintptr_t (*fp_cb)(void *arg, uintptr_t value);
typedef struct fp_s fp_t;
struct fp_s {
  fp_t *next; /* the FIFO, or the free list */
  fp_cb cb;
  void *arg;
  fp_t *derived; /* held by this promise until its callback ran */
  uintptr_t value;
  uint32_t refs;
  uint32_t state; /* FP_PENDING or FP_FULFILLED */
};
enum { FP_PENDING, FP_FULFILLED };

static int use_malloc;
static fp_t *free_list;
static fp_t *head, *tail; /* resolved promises whose callback is due */

FLOOR_FN fp_t *fp_alloc(void) {
  fp_t *p;
  if (!use_malloc && free_list != NULL) {
    p = free_list;
    free_list = p->next;
  } else if ((p = malloc(sizeof(*p))) == NULL) {
    return NULL;
  }
  p->next = NULL;
  p->cb = NULL;
  p->derived = NULL;
  p->refs = 1;
  p->state = FP_PENDING;
  return p;
}

FLOOR_FN void fp_unref(fp_t *p) {
  while (p != NULL && --p->refs == 0) {
    fp_t *d = p->derived;
    if (use_malloc) {
      free(p);
    } else {
      p->next = free_list;
      free_list = p;
    }
    p = d;
  }
}

/* One callback per promise; returns the derived promise (the caller's
 * reference), or NULL. */
FLOOR_FN fp_t *fp_then(fp_t *p, fp_cb cb, void *arg) {
  fp_t *d;
  if (p->cb != NULL || (d = fp_alloc()) == NULL)
    return NULL;
  d->refs = 2; /* the caller's and p's */
  p->cb = cb;
  p->arg = arg;
  p->derived = d;
  return d;
}

FLOOR_FN void fp_resolve(fp_t *p, uintptr_t value) {
  if (p->state != FP_PENDING)
    return;
  p->state = FP_FULFILLED;
  p->value = value;
  if (p->cb == NULL)
    return;
  p->refs++; /* the FIFO's */
  p->next = NULL;
  if (tail != NULL)
    tail->next = p;
  else
    head = p;
  tail = p;
}

FLOOR_FN void fp_drain(void) {
  while (head != NULL) {
    fp_t *p = head, *d = p->derived;
    head = p->next;
    if (head == NULL)
      tail = NULL;
    uintptr_t v = p->cb(p->arg, p->value);
    p->derived = NULL;
    fp_resolve(d, v);
    fp_unref(d);
    fp_unref(p);
  }
}

static uint64_t ran;
static uint64_t sum;

static uintptr_t on_value(void *arg, uintptr_t value) {
  (void)arg;
  ran++;
  sum += value;
  return 0;
}

typedef struct {
  uint32_t n, wave;
  fp_t **ps, **ds;
} waves_t;

/* One round, as core-waves's; *ns gets its wall time.  Returns 1 if every
 * callback ran once with its value, 0 if not, -1 on an error. */
static int one_round(void *arg, uint64_t *ns) {
  waves_t *w = arg;
  int ok = 1;
  ran = 0;
  sum = 0;
  uint64_t t0 = uv_hrtime();
  for (uint32_t base = 0; base < w->n; base += w->wave) {
    uint32_t m = w->n - base < w->wave ? w->n - base : w->wave;
    for (uint32_t i = 0; i < m; i++)
      if ((w->ps[i] = fp_alloc()) == NULL ||
          (w->ds[i] = fp_then(w->ps[i], on_value, NULL)) == NULL)
        return -1;
    for (uint32_t i = 0; i < m; i++)
      fp_resolve(w->ps[i], base + i);
    fp_drain();
    ok = ok && ran == (uint64_t)base + m;
    for (uint32_t i = 0; i < m; i++) {
      fp_unref(w->ps[i]);
      fp_unref(w->ds[i]);
    }
  }
  *ns = uv_hrtime() - t0;
  return ok && ran == w->n && sum == (uint64_t)w->n * (w->n - 1) / 2 &&
         head == NULL;
}

int main(int argc, char **argv) {
  /* Static: what is left at exit stays reachable (see the end). */
  static waves_t w;
  w.n = bench_arg_n(argc, argv, 1, 10000000);
  w.wave = 1000;
  int rounds = 1;
  for (int i = 2; i < argc; i++) {
    if (strncmp(argv[i], "--wave=", 7) == 0) {
      unsigned long v = strtoul(argv[i] + 7, NULL, 10);
      if (v == 0 || v > 10000000ul)
        return fprintf(stderr, "bad wave: %s\n", argv[i]), 2;
      w.wave = (uint32_t)v;
    } else if (strcmp(argv[i], "--malloc") == 0) {
      use_malloc = 1;
    } else if (!bench_arg_rounds(argv[i], &rounds)) {
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
    }
  }
  w.ps = malloc(w.wave * sizeof(*w.ps));
  w.ds = malloc(w.wave * sizeof(*w.ds));
  if (w.ps == NULL || w.ds == NULL)
    return 1;

  uint64_t ns[BENCH_MAX_ROUNDS];
  long cold_rss_kb = 0;
  int ok = bench_rounds(rounds, one_round, &w, ns, &cold_rss_kb);
  if (ok < 0)
    return 1;
  /* The free list and the arrays are left to exit, reachable from static
   * variables (no leak for LeakSanitizer or memcheck): freeing them has
   * glibc consolidate its fast bins, a count of instructions that moves by
   * tens of thousands from run to run (bench/ab-instr). */
  printf("name=waves impl=%s n=%u wave=%u ok=%d",
         use_malloc ? FLOOR_IMPL "-malloc" : FLOOR_IMPL, w.n, w.wave, ok);
  bench_print_rounds(ns, rounds, w.n, cold_rss_kb);
  return ok ? 0 : 1;
}
