/* What the libFuzzer harnesses (test/fuzz-*.c) share. */
#ifndef UVP_TEST_FUZZ_HELPERS_H
#define UVP_TEST_FUZZ_HELPERS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
 * freed stays reachable from uvp's table of contexts.
 *
 * It also fails allocations when the input asks: an input that starts with
 * FUZZ_FAIL_MAGIC, m, k (bytes) fails the (m+1)-th allocation made after the
 * harness calls fuzz_alloc_arm() (its context and fixed setup are made),
 * and, if k > 0, every k-th one after that (k = 1: memory runs out for
 * good).  The harness reads the rest of the input as usual; an input
 * without the header runs as it always did (no seed written before the
 * header existed starts with that byte).  A public call that meets a
 * failure and returns UV_ENOMEM changed nothing (uvp.h), so the harness
 * drops the operation from its model and goes on comparing; a failure
 * anywhere else (inside a call that succeeds all the same, or in a loop
 * turn, where it surfaces as a UV_ENOMEM rejection the model cannot place)
 * makes the model lost: comparing stops for the rest of the input, and only
 * what holds in any case is checked (each call's code is one uvp.h
 * documents for it, every notifier runs once, nothing is reported wrongly
 * as unhandled, teardown frees everything). */
#define FUZZ_FAIL_MAGIC 0xFE

static long fuzz_live_allocs;
static struct {
  bool armed;      /* counting toward a failure (after fuzz_alloc_arm) */
  long first;      /* the allocation to fail first, 1-based; 0: none */
  long every;      /* then every this many; 0: no more */
  long calls;      /* allocations counted since arming */
  long injected;   /* failures injected in this input */
  long mark;       /* `injected` when fuzz_alloc_mark was last called */
  bool model_lost; /* the model cannot follow uvp any more */
} fuzz_alloc;

static bool fuzz_alloc_should_fail(void) {
  if (!fuzz_alloc.armed || fuzz_alloc.first == 0)
    return false;
  long n = ++fuzz_alloc.calls;
  bool hit =
      n == fuzz_alloc.first || (fuzz_alloc.every > 0 && n > fuzz_alloc.first &&
                                (n - fuzz_alloc.first) % fuzz_alloc.every == 0);
  fuzz_alloc.injected += hit;
  return hit;
}

static void *fuzz_count_malloc(size_t n) {
  void *p = fuzz_alloc_should_fail() ? NULL : malloc(n);
  fuzz_live_allocs += p != NULL;
  return p;
}
static void *fuzz_count_calloc(size_t c, size_t n) {
  void *p = fuzz_alloc_should_fail() ? NULL : calloc(c, n);
  fuzz_live_allocs += p != NULL;
  return p;
}
static void *fuzz_count_realloc(void *old, size_t n) {
  void *p = fuzz_alloc_should_fail() ? NULL : realloc(old, n);
  fuzz_live_allocs += p != NULL && old == NULL;
  return p;
}
static void fuzz_count_free(void *p) {
  fuzz_live_allocs -= p != NULL;
  free(p);
}

/* Before an input's first context: reads (and skips) the input's failure
 * header, if any; nothing fails until fuzz_alloc_arm(). */
static inline void fuzz_count_allocations(const uint8_t **data, size_t *size) {
  static int installed;
  if (!installed &&
      uvp_replace_allocator(fuzz_count_malloc, fuzz_count_realloc,
                            fuzz_count_calloc, fuzz_count_free) != 0)
    abort();
  installed = 1;
  memset(&fuzz_alloc, 0, sizeof(fuzz_alloc));
  if (*size >= 3 && (*data)[0] == FUZZ_FAIL_MAGIC) {
    fuzz_alloc.first = (*data)[1] + 1;
    fuzz_alloc.every = (*data)[2];
    *data += 3;
    *size -= 3;
  }
}

/* The input's fixed setup is made: allocations count from here on. */
static inline void fuzz_alloc_arm(void) { fuzz_alloc.armed = true; }

/* Whether the model no longer follows uvp (see above), or may not: a
 * failure met since the last mark, which the call under way (or a callback
 * it runs) may still report or swallow. */
static inline bool fuzz_model_lost(void) {
  return fuzz_alloc.model_lost || fuzz_alloc.injected != fuzz_alloc.mark;
}

/* Before a public call whose outcome the model predicts. */
static inline void fuzz_alloc_mark(void) {
  fuzz_alloc.mark = fuzz_alloc.injected;
}

/* After that call returned rc: true if it met an injected failure and said
 * so with UV_ENOMEM, so that it changed nothing and the model must skip
 * it.  A failure it met but did not report (rc is 0 or another code: a
 * handler or callback it ran met it, or uvp recovered) loses the model. */
static inline bool fuzz_alloc_refused(int rc) {
  if (fuzz_alloc.injected == fuzz_alloc.mark)
    return false;
  fuzz_alloc.mark = fuzz_alloc.injected;
  if (rc == UV_ENOMEM)
    return true;
  fuzz_alloc.model_lost = true;
  return false;
}

/* After a loop turn (or anything else the model cannot follow a failure
 * through): any failure injected since the last mark loses the model. */
static inline void fuzz_alloc_settle(void) {
  if (fuzz_alloc.injected != fuzz_alloc.mark)
    fuzz_alloc.model_lost = true;
  fuzz_alloc.mark = fuzz_alloc.injected;
}

/* A loop turn (fuzz_drain) whose failures lose the model; returns whether
 * the model still follows uvp, i.e. whether to compare after it. */
static inline bool fuzz_turn(uv_loop_t *loop, uvp_ctx_t *ctx) {
  fuzz_alloc_mark();
  fuzz_drain(loop, ctx);
  fuzz_alloc_settle();
  return !fuzz_model_lost();
}

/* A code `rc` that uvp.h documents for the call `what`: `ok` lists them
 * (0 included), ended by 1. */
static inline void check_documented(const char *what, int rc, const int *ok) {
  for (; *ok != 1; ok++)
    if (rc == *ok)
      return;
  fail(what, rc, 0);
}

/* What settling (resolve, reject, resolve_with) or cancelling a promise on
 * the loop thread may return before the context is closed (uvp.h). */
#define FUZZ_SETTLE_CODES ((const int[]){0, UVP_ESETTLED, 1})

/* rc is what the model says (`want`), or while the model is lost, one of
 * the codes uvp.h documents for the call (`ok`, as above). */
static inline void check_rc_or(const char *what, int rc, int want,
                               const int *ok) {
  if (fuzz_model_lost())
    check_documented(what, rc, ok);
  else
    check_rc(what, rc, want);
}

/* After uv_loop_close: nothing of uvp's is left. */
static inline void fuzz_check_all_freed(void) {
  if (fuzz_live_allocs != 0)
    fail("allocations left after uv_loop_close", (int)fuzz_live_allocs, 0);
}

#endif
