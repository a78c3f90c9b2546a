/* What the libFuzzer harnesses (test/fuzz-*.c) share. */
#ifndef UVP_TEST_FUZZ_HELPERS_H
#define UVP_TEST_FUZZ_HELPERS_H

#include <stdio.h>
#include <stdlib.h>

#include "uvp.h"

/* uvp and the model disagree: abort, so that libFuzzer keeps the input. */
static inline void fail(const char *what, int a, int b) {
  fprintf(stderr, "divergence: %s (%d vs %d)\n", what, a, b);
  abort();
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

#endif
