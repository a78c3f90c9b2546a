/* The allocator and the slabs (src/alloc.c): once warmed up (or reserved),
 * the hot path of create, settle and react never reaches the allocator —
 * counted through uvp_replace_allocator, not assumed — and reserved slots
 * are invisible to the pending dump and to teardown. */
#include <stdio.h>

#include "helpers.h"

static long allocs;

static void *c_malloc(size_t n) { allocs++; return malloc(n); }
static void *c_calloc(size_t c, size_t n) { allocs++; return calloc(c, n); }
static void *c_realloc(void *p, size_t n) { allocs++; return realloc(p, n); }

static uvp_ret_t add(void *arg, const uvp_outcome_t *in) {
  *(long *)arg += (long)(intptr_t)in->value;
  return uvp_ret_value(NULL, NULL);
}

/* n promises: create, then (with a derived promise), resolve, release. */
static void burst(fixture_t *f, int n, long *sum) {
  for (int i = 0; i < n; i++) {
    uvp_promise_t *p, *d;
    assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
    assert_int_equal(uvp_promise_then(p, add, sum, &d), 0);
    assert_int_equal(uvp_promise_resolve(p, (void *)(intptr_t)1, NULL), 0);
    uvp_promise_release(p);
    uvp_promise_release(d);
  }
  run_loop(f);
}

static void test_hot_path_never_allocates_once_warm(void **state) {
  (void)state;
  assert_int_equal(uvp_replace_allocator(c_malloc, c_realloc, c_calloc, free),
                   0);
  fixture_t *f;
  fixture_setup((void **)&f);
  long sum = 0;
  burst(f, 50000, &sum); /* warm-up: slabs grow to the peak */
  allocs = 0;
  for (int round = 0; round < 5; round++)
    burst(f, 50000, &sum);
  assert_int_equal(sum, 6 * 50000);
  assert_int_equal(allocs, 0);
  fixture_teardown((void **)&f);
  assert_int_equal(uvp_replace_allocator(malloc, realloc, calloc, free), 0);
}

static void test_reserve_means_no_allocation_later(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_reserve(f->ctx, 200000, 100000), 0);
  uvp_ctx_stats_t before, after;
  assert_int_equal(uvp_ctx_stats(f->ctx, &before), 0);
  assert_true(before.slab_bytes >= 200000 * 64 + 100000 * 32);
  assert_int_equal(before.live, 0);
  long sum = 0;
  burst(f, 100000, &sum);
  assert_int_equal(uvp_ctx_stats(f->ctx, &after), 0);
  assert_int_equal(after.slab_allocs, before.slab_allocs);
  assert_int_equal(sum, 100000);
}

static void test_reserved_slots_are_not_pending(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_reserve(f->ctx, 5000, 5000), 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  FILE *out = tmpfile();
  assert_non_null(out);
  /* Exactly the one real pending promise, not thousands of free slots. */
  assert_int_equal(uvp_ctx_dump_pending(f->ctx, out), 1);
  fclose(out);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 1);
  assert_int_equal(st.pending, 1);
  /* Teardown sweeps only live promises. */
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECLOSED);
  uvp_promise_release(p);
}

static void test_reserve_bad_input(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_reserve(NULL, 1, 1), UV_EINVAL);
  assert_int_equal(uvp_ctx_reserve(f->ctx, 0, 0), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hot_path_never_allocates_once_warm),
      FIXTURE_TEST(test_reserve_means_no_allocation_later),
      FIXTURE_TEST(test_reserved_slots_are_not_pending),
      FIXTURE_TEST(test_reserve_bad_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
