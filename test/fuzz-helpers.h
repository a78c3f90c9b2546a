/* What the libFuzzer harnesses (test/fuzz-*.c) share. */
#ifndef UVP_TEST_FUZZ_HELPERS_H
#define UVP_TEST_FUZZ_HELPERS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "uvp.h"

/* uvp and the model disagree: abort, so that libFuzzer keeps the input. */
static inline void fail(const char *what, int a, int b) {
  fprintf(stderr, "divergence: %s (%d vs %d)\n", what, a, b);
  abort();
}

static inline void check_rc(const char *what, int rc, int want) {
  if (rc != want)
    fail(what, rc, want);
}

/* p is in state `st` (a uvp_state_t) with `value`: its value as an int if
 * fulfilled, its code if rejected. */
static inline void check_outcome(const char *what, uvp_promise_t *p, int st,
                                 int value) {
  int got = (int)uvp_promise_state(p);
  if (got != st)
    fail(what, got, st);
  if (got == UVP_REJECTED && uvp_promise_reason(p, NULL) != value)
    fail(what, uvp_promise_reason(p, NULL), value);
  if (got == UVP_FULFILLED && (int)(intptr_t)uvp_promise_value(p) != value)
    fail(what, (int)(intptr_t)uvp_promise_value(p), value);
}

/* Run the loop until uvp's run queue is drained, however many iterations
 * that takes. */
static inline void fuzz_drain(uv_loop_t *loop, uvp_ctx_t *ctx) {
  uvp_ctx_stats_t s = {0};
  int n = 0;
  do {
    uv_run(loop, UV_RUN_NOWAIT);
    if (uvp_ctx_stats(ctx, &s) != 0 || ++n > 1000)
      fail("run queue never drains", n, (int)s.queued);
  } while (s.queued != 0);
}

/* An unhandled-rejection hook (uvp_ctx_set_unhandled_cb) for what uvp.h
 * says is never reported: a cancellation and what passes it on, a
 * teardown's UVP_ECLOSED.  Other rejections nobody handled may be. */
static inline void unhandled_not_cancelled(uvp_promise_t *p, void *arg) {
  (void)arg;
  int code = uvp_promise_reason(p, NULL);
  if (code == UV_ECANCELED || code == UVP_ECLOSED)
    fail("reported as unhandled", code, 0);
}

/* A counting allocator for uvp (uvp_replace_allocator), installed by the
 * first input: once an input's loop is closed, everything uvp allocated
 * for it must be freed.  LeakSanitizer cannot tell: a context that is never
 * freed stays reachable from uvp's table of contexts. */
static long fuzz_live_allocs;

static void *fuzz_count_malloc(size_t n) {
  void *p = malloc(n);
  fuzz_live_allocs += p != NULL;
  return p;
}
static void *fuzz_count_calloc(size_t c, size_t n) {
  void *p = calloc(c, n);
  fuzz_live_allocs += p != NULL;
  return p;
}
static void *fuzz_count_realloc(void *old, size_t n) {
  void *p = realloc(old, n);
  fuzz_live_allocs += p != NULL && old == NULL;
  return p;
}
static void fuzz_count_free(void *p) {
  fuzz_live_allocs -= p != NULL;
  free(p);
}

/* Before an input's first context. */
static inline void fuzz_count_allocations(void) {
  static int installed;
  if (!installed &&
      uvp_replace_allocator(fuzz_count_malloc, fuzz_count_realloc,
                            fuzz_count_calloc, fuzz_count_free) != 0)
    abort();
  installed = 1;
}

/* After uv_loop_close: nothing of uvp's is left. */
static inline void fuzz_check_all_freed(void) {
  if (fuzz_live_allocs != 0)
    fail("allocations left after uv_loop_close", (int)fuzz_live_allocs, 0);
}

#endif
