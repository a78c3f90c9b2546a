/* Bounded fan-out (uvp_promise_map): the in-flight bound, allSettled-shaped
 * results in input order, streaming, fail-fast, start errors, 100 000
 * items, cancellation, and allocation failure half-way through building a
 * combinator or a map (the "nothing changed" guarantee and item-level
 * ENOMEM, which test-alloc-fail.c's bulk sweep does not look at).
 *
 * In-flight is counted by the test itself: +1 in the start callback, -1 in
 * on_settle, which the map calls before it starts the next item, so the
 * count is exactly the map's own. */
#include "helpers.h"

#define IDX(i) ((void *)(uintptr_t)((i) + 1)) /* never NULL */

/* ---- a configurable fan-out ---------------------------------------------- */

typedef enum {
  ITEM_RESOLVED, /* an already settled promise (some rejected) */
  ITEM_DELAY,    /* uvp_delay of a few ms */
  ITEM_MANUAL    /* a producer promise the test settles, with a hook */
} item_kind_t;

typedef struct fan_s {
  uvp_ctx_t *ctx;
  item_kind_t kind;
  size_t n;
  size_t limit; /* what the test expects the map to use */
  size_t starts;
  size_t inflight;
  size_t max_inflight;
  size_t settles;
  size_t settles_at_summary;
  size_t starts_at_summary;
  int reject_every; /* ITEM_RESOLVED: index % reject_every == 1 rejects */
  long error_at;    /* start returns start_error for this index (-1) */
  int start_error;
  int *seen;             /* on_settle calls per index */
  int *status;           /* on_settle status per index */
  size_t *order;         /* indices in on_settle order */
  uvp_promise_t **items; /* ITEM_MANUAL: the test's reference */
  hook_t *hooks;
  bool stack_probe;
  uintptr_t stack_lo, stack_hi;
} fan_t;

static void fan_init(fan_t *fa, uvp_ctx_t *ctx, item_kind_t kind, size_t n,
                     size_t limit) {
  memset(fa, 0, sizeof(*fa));
  fa->ctx = ctx;
  fa->kind = kind;
  fa->n = n;
  fa->limit = limit;
  fa->error_at = -1;
  fa->seen = calloc(n + 1, sizeof(int));
  fa->status = calloc(n + 1, sizeof(int));
  fa->order = calloc(n + 1, sizeof(size_t));
  fa->items = calloc(n + 1, sizeof(uvp_promise_t *));
  fa->hooks = calloc(n + 1, sizeof(hook_t));
  assert_true(fa->seen && fa->status && fa->order && fa->items && fa->hooks);
}

static void fan_free(fan_t *fa) {
  for (size_t i = 0; i < fa->n; i++)
    uvp_promise_release(fa->items[i]);
  free(fa->seen);
  free(fa->status);
  free(fa->order);
  free(fa->items);
  free(fa->hooks);
}

static void note_stack(fan_t *fa) {
  char here;
  uintptr_t a = (uintptr_t)&here;
  if (fa->stack_lo == 0 || a < fa->stack_lo)
    fa->stack_lo = a;
  if (a > fa->stack_hi)
    fa->stack_hi = a;
}

static int fan_start(void *arg, size_t i, uvp_promise_t **out) {
  fan_t *fa = arg;
  /* Items start in index order, each once. */
  assert_int_equal(i, fa->starts);
  fa->starts++;
  fa->inflight++;
  if (fa->inflight > fa->max_inflight)
    fa->max_inflight = fa->inflight;
  assert_true(fa->inflight <= fa->limit);
  if (fa->stack_probe)
    note_stack(fa);
  if (fa->error_at >= 0 && i == (size_t)fa->error_at)
    return fa->start_error;
  switch (fa->kind) {
  case ITEM_RESOLVED:
    if (fa->reject_every > 0 && i % (size_t)fa->reject_every == 1)
      return uvp_promise_rejected(fa->ctx, UV_EIO, IDX(i), NULL, out);
    return uvp_promise_resolved(fa->ctx, IDX(i), NULL, out);
  case ITEM_DELAY:
    return uvp_delay(fa->ctx, (i * 7) % 4, IDX(i), NULL, UVP_KEEP_ALIVE, out);
  default: {
    int rc = uvp_promise_new(fa->ctx, out);
    if (rc != 0)
      return rc;
    assert_int_equal(uvp_promise_set_cancel(*out, count_hook, &fa->hooks[i]),
                     0);
    fa->items[i] = uvp_promise_retain(*out);
    return 0;
  }
  }
}

static void fan_each(void *arg, size_t i, const uvp_outcome_t *o) {
  fan_t *fa = arg;
  assert_true(i < fa->n);
  assert_true(fa->inflight > 0);
  fa->inflight--;
  fa->order[fa->settles++] = i;
  fa->seen[i]++;
  fa->status[i] = o->status;
  if (o->status == 0)
    assert_ptr_equal(o->value, IDX(i));
}

/* The final summary: the result's handler runs after every on_settle. */
static uvp_ret_t fan_summary(void *arg, const uvp_outcome_t *in) {
  fan_t *fa = arg;
  (void)in;
  fa->settles_at_summary = fa->settles;
  fa->starts_at_summary = fa->starts;
  return uvp_ret_value(NULL, NULL);
}

static void fan_map(fan_t *fa, const uvp_map_opts_t *opts, uvp_promise_t **r,
                    uvp_promise_t **summary) {
  assert_int_equal(uvp_promise_map(fa->ctx, fa->n, fan_start, fa, opts, r), 0);
  assert_int_equal(uvp_promise_on(*r, UVP_ON_BOTH, fan_summary, fa, summary),
                   0);
}

/* The list is allSettled-shaped, in input order, and agrees with what
 * on_settle reported. */
static const uvp_settled_list_t *check_list(fan_t *fa, uvp_promise_t *r) {
  assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
  const uvp_settled_list_t *l = uvp_promise_value(r);
  assert_non_null(l);
  assert_int_equal(l->count, fa->n);
  size_t ok = 0, err = 0;
  for (size_t i = 0; i < fa->n; i++) {
    assert_int_equal(fa->seen[i], 1);
    assert_int_equal(l->items[i].status, fa->status[i]);
    if (l->items[i].status == 0) {
      ok++;
      assert_ptr_equal(l->items[i].value, IDX(i));
    } else {
      err++;
    }
  }
  assert_int_equal(l->fulfilled, ok);
  assert_int_equal(l->rejected, err);
  assert_int_equal(fa->settles_at_summary, fa->n);
  return l;
}

/* ---- the bound ----------------------------------------------------------- */

static void test_map_limit_with_timers(void **state) {
  fixture_t *f = *state;
  fan_t fa;
  fan_init(&fa, f->ctx, ITEM_DELAY, 50, 7);
  uvp_map_opts_t o = {.limit = 7, .flags = 0, .on_settle = fan_each};
  uvp_promise_t *r, *s;
  fan_map(&fa, &o, &r, &s);
  /* The first `limit` start inside the call. */
  assert_int_equal(fa.starts, 7);
  run_loop(f);
  assert_int_equal(fa.starts, 50);
  assert_int_equal(fa.max_inflight, 7);
  const uvp_settled_list_t *l = check_list(&fa, r);
  assert_int_equal(l->fulfilled, 50);
  uvp_promise_release(s);
  uvp_promise_release(r);
  fan_free(&fa);
}

static void test_map_limit_settled_items_with_rejections(void **state) {
  fixture_t *f = *state;
  fan_t fa;
  fan_init(&fa, f->ctx, ITEM_RESOLVED, 60, 5);
  fa.reject_every = 4;
  uvp_map_opts_t o = {.limit = 5, .flags = 0, .on_settle = fan_each};
  uvp_promise_t *r, *s;
  fan_map(&fa, &o, &r, &s);
  /* Already settled items still occupy their slot until seen. */
  assert_int_equal(fa.starts, 5);
  assert_int_equal(fa.settles, 0);
  run_loop(f);
  assert_int_equal(fa.max_inflight, 5);
  const uvp_settled_list_t *l = check_list(&fa, r);
  assert_int_equal(l->rejected, 15);
  for (size_t i = 0; i < 60; i++) {
    if (i % 4 == 1) {
      assert_int_equal(l->items[i].status, UV_EIO);
      assert_ptr_equal(l->items[i].value, IDX(i)); /* the payload */
    }
  }
  uvp_promise_release(s);
  uvp_promise_release(r);
  fan_free(&fa);
}

static void test_map_default_limit_is_pool_size(void **state) {
  fixture_t *f = *state;
  size_t pool = uvp_pool_size();
  assert_true(pool >= 1);
  for (int variant = 0; variant < 2; variant++) {
    fan_t fa;
    fan_init(&fa, f->ctx, ITEM_RESOLVED, 3 * pool + 1, pool);
    uvp_map_opts_t o = {.limit = 0, .flags = 0, .on_settle = fan_each};
    uvp_promise_t *r;
    if (variant == 0) {
      /* opts NULL (no on_settle to count settlements): the first `limit`
       * items start inside the call, the rest later. */
      fa.limit = SIZE_MAX;
      assert_int_equal(uvp_promise_map(f->ctx, fa.n, fan_start, &fa, NULL, &r),
                       0);
      assert_int_equal(fa.starts, pool);
      uvp_promise_release(r);
      run_loop(f);
    } else {
      uvp_promise_t *s;
      fan_map(&fa, &o, &r, &s);
      run_loop(f);
      assert_int_equal(fa.max_inflight, pool);
      check_list(&fa, r);
      uvp_promise_release(s);
      uvp_promise_release(r);
    }
    assert_int_equal(fa.starts, fa.n);
    fan_free(&fa);
  }
}

/* ---- streaming ----------------------------------------------------------- */

static void test_map_streaming_completion_order(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  enum { N = 30, K = 4 };
  fan_t fa;
  fan_init(&fa, f->ctx, ITEM_MANUAL, N, K);
  uvp_map_opts_t o = {.limit = K, .flags = 0, .on_settle = fan_each};
  uvp_promise_t *r, *s;
  fan_map(&fa, &o, &r, &s);
  /* Settle the newest started item first (the opposite of input order),
   * alternating fulfilment and rejection, one per loop run. */
  size_t settled_order[N];
  size_t done = 0;
  while (done < N) {
    assert_true(fa.starts > 0);
    size_t pick = SIZE_MAX;
    for (size_t i = fa.starts; i-- > 0;)
      if (uvp_promise_state(fa.items[i]) == UVP_PENDING) {
        pick = i;
        break;
      }
    assert_true(pick != SIZE_MAX);
    if (done % 2 == 0)
      assert_int_equal(uvp_promise_resolve(fa.items[pick], IDX(pick), NULL), 0);
    else
      assert_int_equal(uvp_promise_reject(fa.items[pick], UV_EPIPE, NULL, NULL),
                       0);
    settled_order[done++] = pick;
    /* Nothing is reported inside the settling call. */
    assert_int_equal(fa.settles, done - 1);
    run_loop(f);
    assert_int_equal(fa.settles, done);
    if (done < N)
      assert_int_equal(uvp_promise_state(r), UVP_PENDING);
  }
  /* on_settle saw every index once, in completion order, with its
   * outcome; then came the summary. */
  for (size_t i = 0; i < N; i++) {
    assert_int_equal(fa.order[i], settled_order[i]);
    assert_int_equal(fa.status[settled_order[i]], i % 2 == 0 ? 0 : UV_EPIPE);
  }
  assert_int_equal(fa.max_inflight, K);
  const uvp_settled_list_t *l = check_list(&fa, r);
  assert_int_equal(l->fulfilled, N / 2);
  assert_int_equal(l->rejected, N / 2);
  for (size_t i = 0; i < N; i++)
    assert_ptr_equal(l->items[i].promise, fa.items[i]);
  /* Nothing was cancelled. */
  for (size_t i = 0; i < N; i++)
    assert_int_equal(fa.hooks[i].calls, 0);
  uvp_promise_release(s);
  uvp_promise_release(r);
  fan_free(&fa);
}

/* ---- start errors -------------------------------------------------------- */

static void test_map_start_error_is_item_rejection(void **state) {
  fixture_t *f = *state;
  fan_t fa;
  fan_init(&fa, f->ctx, ITEM_RESOLVED, 10, 3);
  fa.error_at = 4;
  fa.start_error = UV_ENOENT;
  uvp_map_opts_t o = {.limit = 3, .flags = 0, .on_settle = fan_each};
  uvp_promise_t *r, *s;
  fan_map(&fa, &o, &r, &s);
  run_loop(f);
  assert_int_equal(fa.starts, 10);
  assert_int_equal(fa.max_inflight, 3);
  const uvp_settled_list_t *l = check_list(&fa, r);
  assert_int_equal(l->rejected, 1);
  assert_int_equal(l->items[4].status, UV_ENOENT);
  assert_int_equal(fa.status[4], UV_ENOENT);
  uvp_promise_release(s);
  uvp_promise_release(r);
  fan_free(&fa);
}

static void test_map_start_error_fail_fast(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  fan_t fa;
  fan_init(&fa, f->ctx, ITEM_MANUAL, 10, 3);
  fa.error_at = 1;
  fa.start_error = UV_EACCES;
  uvp_map_opts_t o = {
      .limit = 3, .flags = UVP_MAP_FAIL_FAST, .on_settle = fan_each};
  uvp_promise_t *r, *s;
  fan_map(&fa, &o, &r, &s);
  assert_int_equal(fa.starts, 3);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_EACCES);
  /* No further start; the two items in flight were cancelled. */
  assert_int_equal(fa.starts, 3);
  assert_int_equal(fa.starts_at_summary, 3);
  assert_int_equal(fa.hooks[0].calls, 1);
  assert_int_equal(fa.hooks[2].calls, 1);
  assert_int_equal(fa.hooks[0].code, UV_ECANCELED);
  uvp_promise_release(s);
  uvp_promise_release(r);
  fan_free(&fa);
}

/* ---- fail-fast ----------------------------------------------------------- */

static void test_map_fail_fast_cancels_in_flight(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  enum { N = 20, K = 4 };
  int freed = 0;
  fan_t fa;
  fan_init(&fa, f->ctx, ITEM_MANUAL, N, K);
  uvp_map_opts_t o = {
      .limit = K, .flags = UVP_MAP_FAIL_FAST, .on_settle = fan_each};
  uvp_promise_t *r, *s;
  fan_map(&fa, &o, &r, &s);
  assert_int_equal(fa.starts, K);
  assert_int_equal(uvp_promise_resolve(fa.items[0], IDX(0), NULL), 0);
  run_loop(f);
  assert_int_equal(fa.starts, K + 1); /* item 4 took item 0's slot */
  boxed_t *payload = boxed_new(2, &freed);
  assert_int_equal(
      uvp_promise_reject(fa.items[2], UV_EPIPE, payload, boxed_free), 0);
  run_loop(f);

  void *got = NULL;
  assert_int_equal(uvp_promise_reason(r, &got), UV_EPIPE);
  assert_ptr_equal(got, payload);
  /* Stopped starting, cancelled what was in flight (1, 3, 4), left the
   * settled ones alone. */
  assert_int_equal(fa.starts, K + 1);
  assert_int_equal(fa.starts_at_summary, K + 1);
  size_t in_flight[] = {1, 3, 4};
  for (size_t j = 0; j < 3; j++) {
    assert_int_equal(fa.hooks[in_flight[j]].calls, 1);
    assert_int_equal(fa.hooks[in_flight[j]].code, UV_ECANCELED);
    assert_int_equal(uvp_promise_reason(fa.items[in_flight[j]], NULL),
                     UV_ECANCELED);
  }
  assert_int_equal(fa.hooks[0].calls + fa.hooks[2].calls, 0);
  /* The streaming callback reported the two real outcomes, each once. */
  assert_int_equal(fa.seen[0], 1);
  assert_int_equal(fa.seen[2], 1);
  assert_int_equal(fa.status[2], UV_EPIPE);
  for (size_t i = 0; i < N; i++)
    assert_true(fa.seen[i] <= 1);
  for (size_t i = K + 1; i < N; i++)
    assert_null(fa.items[i]);
  uvp_promise_release(s);
  uvp_promise_release(r);
  fan_free(&fa);
  assert_int_equal(freed, 1);
}

/* ---- scale --------------------------------------------------------------- */

/* Start callbacks returning settled promises never recurse: the stack used
 * by start calls stays the same for 100 000 of them, whatever the limit. */
static void test_map_100k_settled_items_constant_stack(void **state) {
  fixture_t *f = *state;
  enum { N = 100000 };
  size_t limits[] = {1, 1000, N};
  for (size_t v = 0; v < 3; v++) {
    fan_t fa;
    fan_init(&fa, f->ctx, ITEM_RESOLVED, N, limits[v]);
    fa.stack_probe = true;
    uvp_map_opts_t o = {.limit = limits[v], .flags = 0, .on_settle = fan_each};
    uvp_promise_t *r, *s;
    fan_map(&fa, &o, &r, &s);
    run_loop(f);
    assert_int_equal(fa.starts, N);
    assert_int_equal(fa.max_inflight, limits[v]);
    check_list(&fa, r);
    /* Two call paths (inside the call, and from the scheduler), each at a
     * fixed depth: far less than one stack frame per item. */
    assert_true(fa.stack_hi - fa.stack_lo < 64 * 1024);
    uvp_promise_release(s);
    uvp_promise_release(r);
    fan_free(&fa);
    uvp_ctx_stats_t st;
    assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
    assert_int_equal(st.live, 0);
  }
}

static void test_map_100k_timer_items_limit_1000(void **state) {
  fixture_t *f = *state;
  enum { N = 100000, K = 1000 };
  fan_t fa;
  fan_init(&fa, f->ctx, ITEM_DELAY, N, K);
  uvp_map_opts_t o = {.limit = K, .flags = 0, .on_settle = fan_each};
  uvp_promise_t *r, *s;
  fan_map(&fa, &o, &r, &s);
  run_loop(f);
  assert_int_equal(fa.starts, N);
  assert_int_equal(fa.max_inflight, K);
  const uvp_settled_list_t *l = check_list(&fa, r);
  assert_int_equal(l->fulfilled, N);
  uvp_promise_release(s);
  uvp_promise_release(r);
  fan_free(&fa);
}

/* ---- cancellation -------------------------------------------------------- */

static void test_map_cancel_result(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  enum { N = 10, K = 3 };
  fan_t fa;
  fan_init(&fa, f->ctx, ITEM_MANUAL, N, K);
  uvp_map_opts_t o = {.limit = K, .flags = 0, .on_settle = fan_each};
  uvp_promise_t *r, *s;
  fan_map(&fa, &o, &r, &s);
  assert_int_equal(uvp_promise_resolve(fa.items[0], IDX(0), NULL), 0);
  run_loop(f);
  assert_int_equal(fa.starts, K + 1);
  assert_int_equal(uvp_promise_cancel(r), 0);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_ECANCELED);
  /* In flight: 1, 2, 3, each cancelled once; 0 had settled. */
  for (size_t i = 1; i <= 3; i++) {
    assert_int_equal(fa.hooks[i].calls, 1);
    assert_int_equal(uvp_promise_resolve(fa.items[i], NULL, NULL),
                     UVP_ESETTLED);
  }
  assert_int_equal(fa.hooks[0].calls, 0);
  run_loop(f);
  /* Nothing more started, and the result stays cancelled. */
  assert_int_equal(fa.starts, K + 1);
  assert_int_equal(fa.starts_at_summary, K + 1);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_ECANCELED);
  assert_int_equal(uvp_promise_cancel(r), UVP_ESETTLED);
  for (size_t i = 0; i < N; i++)
    assert_true(fa.seen[i] <= 1);
  uvp_promise_release(s);
  uvp_promise_release(r);
  fan_free(&fa);
}

/* An item in flight that something else also waits for is left to it
 * when the map is cancelled (uvp_promise_cancel's rule, as for a
 * combinator's input), and the map stops waiting for it: cancelling the
 * other consumer, the last, cancels it. */
static void test_map_cancel_leaves_shared_item(void **state) {
  fixture_t *f = *state;
  count_unhandled(f);
  enum { N = 4, K = 2 };
  fan_t fa;
  fan_init(&fa, f->ctx, ITEM_MANUAL, N, K);
  uvp_map_opts_t o = {.limit = K, .flags = 0, .on_settle = fan_each};
  uvp_promise_t *r, *s, *other;
  fan_map(&fa, &o, &r, &s);
  run_loop(f);
  assert_int_equal(fa.starts, K);
  assert_int_equal(uvp_promise_then(fa.items[1], NULL, NULL, &other), 0);
  assert_int_equal(uvp_promise_cancel(r), 0);
  assert_int_equal(fa.hooks[0].calls, 1);
  assert_int_equal(fa.hooks[1].calls, 0);
  assert_int_equal(uvp_promise_state(fa.items[1]), UVP_PENDING);
  assert_int_equal(uvp_promise_cancel(other), 0);
  assert_int_equal(fa.hooks[1].calls, 1);
  assert_int_equal(uvp_promise_reason(fa.items[1], NULL), UV_ECANCELED);
  run_loop(f);
  assert_int_equal(fa.starts, K);
  uvp_promise_release(other);
  uvp_promise_release(s);
  uvp_promise_release(r);
  fan_free(&fa);
}

/* A start that cancels its own map, then returns a promise anyway: the map
 * will never observe it, so it must let go of it (as loop and retry do). */
typedef struct {
  uvp_ctx_t *ctx;
  uvp_promise_t *result, *item;
  int freed;
} self_cancel_t;

static int self_cancelling_start(void *arg, size_t i, uvp_promise_t **out) {
  self_cancel_t *sc = arg;
  assert_int_equal(i, 0);
  assert_int_equal(uvp_promise_cancel(sc->result), 0);
  assert_int_equal(sc->freed, 0); /* not while the start runs */
  assert_int_equal(uvp_promise_new(sc->ctx, out), 0);
  sc->item = uvp_promise_retain(*out);
  return 0;
}

static void self_cancel_free(void *arg) { ((self_cancel_t *)arg)->freed++; }

static void test_map_start_cancels_its_map(void **state) {
  fixture_t *f = *state;
  self_cancel_t sc = {f->ctx, NULL, NULL, 0};
  uvp_map_opts_t o = {.limit = 2, .arg_free = self_cancel_free};
  assert_int_equal(
      uvp_promise_map(f->ctx, 3, self_cancelling_start, &sc, &o, &sc.result),
      0);
  assert_int_equal(uvp_promise_reason(sc.result, NULL), UV_ECANCELED);
  assert_int_equal(sc.freed, 1);
  run_loop(f);
  uvp_promise_release(sc.result);
  uvp_promise_release(sc.item); /* the last reference */
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 0);
}

static void test_map_arguments_and_empty(void **state) {
  fixture_t *f = *state;
  fan_t fa;
  fan_init(&fa, f->ctx, ITEM_RESOLVED, 0, 1);
  uvp_promise_t *r = NULL, *s;
  uvp_map_opts_t bad = {.limit = 1, .flags = 0x100, .on_settle = NULL};
  assert_int_equal(uvp_promise_map(NULL, 1, fan_start, &fa, NULL, &r),
                   UV_EINVAL);
  assert_int_equal(uvp_promise_map(f->ctx, 1, NULL, &fa, NULL, &r), UV_EINVAL);
  assert_int_equal(uvp_promise_map(f->ctx, 1, fan_start, &fa, NULL, NULL),
                   UV_EINVAL);
  assert_int_equal(uvp_promise_map(f->ctx, 1, fan_start, &fa, &bad, &r),
                   UV_EINVAL);
  assert_null(r);
  assert_int_equal(fa.starts, 0);
  /* n == 0: an empty list, no start. */
  fan_map(&fa, NULL, &r, &s);
  run_loop(f);
  assert_int_equal(fa.starts, 0);
  const uvp_settled_list_t *l = uvp_promise_value(r);
  assert_non_null(l);
  assert_int_equal(l->count, 0);
  uvp_promise_release(s);
  uvp_promise_release(r);
  fan_free(&fa);
}

/* ---- allocation failure half-way through building ------------------------ */

static long a_calls, a_fail_at, a_failures, a_live;

static bool a_should_fail(void) {
  a_calls++;
  if (a_fail_at != 0 && a_calls == a_fail_at) {
    a_failures++;
    return true;
  }
  return false;
}
static void *a_malloc(size_t n) {
  if (a_should_fail())
    return NULL;
  void *p = malloc(n);
  if (p != NULL)
    a_live++;
  return p;
}
static void *a_calloc(size_t c, size_t n) {
  if (a_should_fail())
    return NULL;
  void *p = calloc(c, n);
  if (p != NULL)
    a_live++;
  return p;
}
static void *a_realloc(void *old, size_t n) {
  if (a_should_fail())
    return NULL;
  void *p = realloc(old, n);
  if (p != NULL && old == NULL)
    a_live++;
  return p;
}
static void a_free(void *p) {
  if (p != NULL)
    a_live--;
  free(p);
}

/* Fail the k-th allocation made by the code between arm() and disarm(). */
static void arm(long k) {
  a_failures = 0;
  a_fail_at = a_calls + k;
}
static void disarm(void) { a_fail_at = 0; }

enum { K_ALL, K_SETTLED, K_RACE, K_ANY };

static int combine(uvp_ctx_t *ctx, int kind, uvp_promise_t **in, size_t n,
                   uvp_promise_t **out) {
  switch (kind) {
  case K_ALL:
    return uvp_promise_all(ctx, in, n, 0, out);
  case K_SETTLED:
    return uvp_promise_all_settled(ctx, in, n, out);
  case K_RACE:
    return uvp_promise_race(ctx, in, n, 0, out);
  default:
    return uvp_promise_any(ctx, in, n, 0, out);
  }
}

/* How many promises fill a context's promise slabs exactly, so that the
 * next one needs a new slab: the count before the one that made
 * slab_allocs grow, above `at_least`. */
static size_t promises_filling_slabs(size_t at_least, uvp_promise_t **ps,
                                     size_t max) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uvp_ctx_new(&loop, &ctx), 0);
  uvp_ctx_stats_t st;
  size_t allocs = 0, n = 0;
  for (;; n++) {
    assert_true(n < max);
    assert_int_equal(uvp_promise_new(ctx, &ps[n]), 0);
    assert_int_equal(uvp_ctx_stats(ctx, &st), 0);
    if (st.slab_allocs != allocs) {
      allocs = st.slab_allocs;
      if (n >= at_least)
        break;
    }
  }
  for (size_t i = 0; i <= n; i++)
    uvp_promise_release(ps[i]);
  assert_int_equal(uvp_ctx_close(ctx), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  return n;
}

/* A combinator allocates twice: its block (which embeds one reaction per
 * input) and its result.  With N inputs filling the promise slabs exactly,
 * the result needs a slab of its own, so failing each allocation in turn
 * fails the combinator once with nothing taken and once half-way, with
 * the block already allocated.  Each failure must leave
 * the inputs exactly as they were: no reaction attached (settling them
 * queues nothing), the rejected ones still unhandled, the context's live
 * count back to the inputs alone, and nothing leaked once closed. */
static void test_alloc_fail_building_combinator(void **state) {
  (void)state;
  enum { MAX = 8192, REJECTED = 3 };
  static uvp_promise_t *in[MAX];
  const size_t N = promises_filling_slabs(3000, in, MAX);
  assert_true(N <= MAX);
  assert_int_equal(uvp_replace_allocator(a_malloc, a_realloc, a_calloc, a_free),
                   0);
  for (int kind = K_ALL; kind <= K_ANY; kind++) {
    long enomem = 0;
    for (long k = 1;; k++) {
      a_calls = a_live = 0;
      disarm();
      uv_loop_t loop;
      uvp_ctx_t *ctx;
      assert_int_equal(uv_loop_init(&loop), 0);
      assert_int_equal(uvp_ctx_new(&loop, &ctx), 0);
      count_unhandled_on(ctx);
      for (size_t i = 0; i < N; i++) {
        if (i < REJECTED)
          assert_int_equal(
              uvp_promise_rejected(ctx, UV_EIO, NULL, NULL, &in[i]), 0);
        else
          assert_int_equal(uvp_promise_new(ctx, &in[i]), 0);
      }
      uvp_promise_t *r = SENTINEL(5);
      arm(k);
      int rc = combine(ctx, kind, in, N, &r);
      disarm();
      bool failed = a_failures != 0;
      uvp_ctx_stats_t st;
      assert_int_equal(uvp_ctx_stats(ctx, &st), 0);
      if (failed) {
        assert_int_equal(rc, UV_ENOMEM);
        enomem++;
        assert_ptr_equal(r, SENTINEL(5)); /* *out untouched */
        assert_int_equal(st.live, N);
        assert_int_equal(st.queued, 0);
        for (size_t i = REJECTED; i < N; i++)
          assert_int_equal(uvp_promise_resolve(in[i], IDX(i), NULL), 0);
        assert_int_equal(uvp_ctx_stats(ctx, &st), 0);
        assert_int_equal(st.queued, 0); /* no reaction was left behind */
        assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
      } else {
        assert_int_equal(rc, 0);
        for (size_t i = REJECTED; i < N; i++)
          assert_int_equal(uvp_promise_resolve(in[i], IDX(i), NULL), 0);
        assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
        assert_int_not_equal(uvp_promise_state(r), UVP_PENDING);
        switch (kind) {
        case K_ALL:
        case K_RACE:
          assert_int_equal(uvp_promise_reason(r, NULL), UV_EIO);
          break;
        case K_SETTLED: {
          const uvp_settled_list_t *l = uvp_promise_value(r);
          assert_int_equal(l->rejected, REJECTED);
          assert_int_equal(l->fulfilled, N - REJECTED);
          break;
        }
        default:
          assert_ptr_equal(uvp_promise_value(r), IDX(REJECTED));
          break;
        }
        uvp_promise_release(r);
      }
      g_unhandled = 0;
      for (size_t i = 0; i < N; i++)
        uvp_promise_release(in[i]);
      /* A failed build marked nothing handled: every rejected input is
       * reported when it goes.  A successful one handled them all. */
      assert_int_equal(g_unhandled, failed ? REJECTED : 0);
      assert_int_equal(uvp_ctx_close(ctx), 0);
      assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
      assert_int_equal(uv_loop_close(&loop), 0);
      assert_int_equal(a_live, 0);
      if (!failed)
        break;
    }
    /* The block and the result's slab both failed in turn. */
    assert_int_equal(enomem, 2);
  }
  assert_int_equal(uvp_replace_allocator(malloc, realloc, calloc, free), 0);
}

/* A map of 5000 items with limit 5000 starts them all inside the call, so
 * each failure lands half-way through: in the map's own block or its
 * result (the call fails and no item starts), or in a start callback's
 * promise (the item rejects with UV_ENOMEM; the map observes items through
 * cells in its block, which allocate nothing).  Without fail-fast the other
 * items all complete; with it the map rejects with UV_ENOMEM and cancels
 * what it had started. */
static void alloc_fail_building_map(int flags) {
  enum { N = 5000 };
  assert_int_equal(uvp_replace_allocator(a_malloc, a_realloc, a_calloc, a_free),
                   0);
  long enomem_call = 0, enomem_item = 0;
  for (long k = 1;; k++) {
    a_calls = a_live = 0;
    disarm();
    uv_loop_t loop;
    uvp_ctx_t *ctx;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uvp_ctx_new(&loop, &ctx), 0);
    count_unhandled_on(ctx);
    fan_t fa;
    fan_init(&fa, ctx, ITEM_MANUAL, N, N);
    uvp_map_opts_t o = {.limit = N, .flags = flags, .on_settle = fan_each};
    uvp_promise_t *r = SENTINEL(6);
    arm(k);
    int rc = uvp_promise_map(ctx, N, fan_start, &fa, &o, &r);
    disarm();
    bool failed = a_failures != 0;
    if (rc != 0) {
      assert_int_equal(rc, UV_ENOMEM);
      assert_true(failed);
      enomem_call++;
      assert_ptr_equal(r, SENTINEL(6));
      assert_int_equal(fa.starts, 0); /* nothing happened */
      uvp_ctx_stats_t st;
      assert_int_equal(uvp_ctx_stats(ctx, &st), 0);
      assert_int_equal(st.live, 0);
    } else {
      /* An item whose reaction could not be allocated is reported at once
       * (inside the call); everything else later. */
      size_t early = fa.settles;
      assert_true(early <= 1);
      if (early == 1 && (flags & UVP_MAP_FAIL_FAST)) {
        /* Failed fast inside the call: no further start, the result
         * already rejected, every other item started was cancelled. */
        size_t bad = fa.order[0];
        assert_int_equal(fa.status[bad], UV_ENOMEM);
        assert_int_equal(fa.starts, bad + 1);
        assert_int_equal(uvp_promise_reason(r, NULL), UV_ENOMEM);
        for (size_t i = 0; i < bad; i++)
          assert_int_equal(fa.hooks[i].calls, 1);
        assert_int_equal(fa.hooks[bad].calls, 0);
      } else {
        assert_int_equal(fa.starts, N);
      }
      for (size_t i = 0; i < N; i++)
        if (fa.items[i] != NULL &&
            uvp_promise_state(fa.items[i]) == UVP_PENDING)
          assert_int_equal(uvp_promise_resolve(fa.items[i], IDX(i), NULL), 0);
      assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
      assert_int_not_equal(uvp_promise_state(r), UVP_PENDING);
      size_t nomem = 0;
      for (size_t i = 0; i < N; i++) {
        assert_true(fa.seen[i] <= 1);
        if (fa.seen[i] == 1 && fa.status[i] == UV_ENOMEM)
          nomem++;
      }
      assert_int_equal(nomem, failed ? 1 : 0);
      if (failed)
        enomem_item++;
      if (!failed || !(flags & UVP_MAP_FAIL_FAST)) {
        const uvp_settled_list_t *l = uvp_promise_value(r);
        assert_non_null(l);
        assert_int_equal(l->count, N);
        assert_int_equal(l->rejected, nomem);
        for (size_t i = 0; i < N; i++)
          assert_int_equal(fa.seen[i], 1);
      } else {
        /* Fail-fast: the failure is the map's reason. */
        assert_int_equal(uvp_promise_reason(r, NULL), UV_ENOMEM);
      }
      uvp_promise_release(r);
    }
    fan_free(&fa);
    assert_int_equal(uvp_ctx_close(ctx), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(a_live, 0);
    if (!failed)
      break;
  }
  assert_true(enomem_call >= 1);
  /* The item promises' slabs grow twice after the result's first one. */
  assert_true(enomem_item >= 2);
  assert_int_equal(uvp_replace_allocator(malloc, realloc, calloc, free), 0);
}

static void test_alloc_fail_building_map(void **state) {
  (void)state;
  alloc_fail_building_map(0);
}

static void test_alloc_fail_building_map_fail_fast(void **state) {
  (void)state;
  alloc_fail_building_map(UVP_MAP_FAIL_FAST);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_map_limit_with_timers),
      FIXTURE_TEST(test_map_limit_settled_items_with_rejections),
      FIXTURE_TEST(test_map_default_limit_is_pool_size),
      FIXTURE_TEST(test_map_streaming_completion_order),
      FIXTURE_TEST(test_map_start_error_is_item_rejection),
      FIXTURE_TEST(test_map_start_error_fail_fast),
      FIXTURE_TEST(test_map_fail_fast_cancels_in_flight),
      FIXTURE_TEST(test_map_100k_settled_items_constant_stack),
      FIXTURE_TEST(test_map_100k_timer_items_limit_1000),
      FIXTURE_TEST(test_map_cancel_result),
      FIXTURE_TEST(test_map_start_cancels_its_map),
      FIXTURE_TEST(test_map_cancel_leaves_shared_item),
      FIXTURE_TEST(test_map_arguments_and_empty),
      cmocka_unit_test(test_alloc_fail_building_combinator),
      cmocka_unit_test(test_alloc_fail_building_map),
      cmocka_unit_test(test_alloc_fail_building_map_fail_fast),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
