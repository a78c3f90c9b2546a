/* The causes of cancellations (uvp.h, uvp_promise_cause; src/cause.c):
 * every kind (the program's, uvp_promise_cancel_with's, a binding's, a
 * deadline's, a timeout's, a group's cancel, a FAIL_FAST sibling in a
 * group and in a map, a race's losers, uvp_ctx_close), each read from
 * what it cut and through the ways a rejection travels (a chain's
 * pass-through, an allSettled record, a group's join, a fiber's await, the
 * unhandled-rejection hook), one record shared by everything a
 * cancellation cut, freed with the last of them (the program's cause_free
 * counted), and uvp_cause_format's lines.  Deadlines run on the virtual
 * clock (UVP_CLOCK_AUTO): no test waits.
 * Every test ends with uv_loop_close() == 0 (the fixture). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

static void auto_clock(fixture_t *f) {
  assert_int_equal(uvp_ctx_set_clock(f->ctx, UVP_CLOCK_AUTO), 0);
}

/* c's line, as uvp_cause_format writes it. */
static const char *said(const uvp_cause_t *c) {
  static char buf[512];
  int n = uvp_cause_format(c, buf, sizeof(buf));
  assert_true(n >= 0 && (size_t)n < sizeof(buf));
  assert_int_equal((size_t)n, strlen(buf));
  return buf;
}

static uvp_ret_t pass(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_pass();
}

/* ---- the program's ------------------------------------------------------- */

/* A plain cancel: the static "cancelled by the program", shared by the
 * chain it reaches; nothing else has a cause. */
static void test_program_plain(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p, *d, *ok, *bad;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, pass, NULL, &d), 0);
  assert_null(uvp_promise_cause(p)); /* pending */
  assert_null(uvp_promise_cause(NULL));
  assert_int_equal(uvp_promise_cancel(d), 0);
  const uvp_cause_t *c = uvp_promise_cause(d);
  assert_non_null(c);
  assert_int_equal(c->kind, UVP_CAUSE_PROGRAM);
  assert_null(c->data);
  assert_null(c->file);
  assert_string_equal(said(c), "cancelled by the program");
  /* p, d's only consumer, was cancelled by the same cancellation. */
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  assert_ptr_equal(uvp_promise_cause(p), c);
  /* A cancellation's payload stays NULL. */
  void *payload = &payload;
  assert_int_equal(uvp_promise_reason(d, &payload), UV_ECANCELED);
  assert_null(payload);
  /* Fulfilled, and rejected by a program: no cause. */
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &ok), 0);
  assert_int_equal(uvp_promise_rejected(f->ctx, UV_EIO, NULL, NULL, &bad), 0);
  assert_null(uvp_promise_cause(ok));
  assert_null(uvp_promise_cause(bad));
  assert_int_equal(uvp_promise_mark_handled(bad), 0);
  uvp_promise_release(bad);
  uvp_promise_release(ok);
  uvp_promise_release(d);
  uvp_promise_release(p);
  run_loop(f);
}

static int freed;
static void count_free(void *ptr) {
  assert_ptr_equal(ptr, &freed);
  freed++;
}

static uvp_ret_t see_cause(void *arg, const uvp_outcome_t *in) {
  const uvp_cause_t **seen = arg;
  *seen = uvp_promise_cause(in->promise);
  return uvp_ret_value(NULL, NULL); /* caught */
}

/* uvp_promise_cancel_with: its code for p, UV_ECANCELED up the chain, one
 * record for both, passed on through a then() and seen by a catch
 * handler; cause_free runs once, when the last promise holding it goes. */
static void test_program_with(void **state) {
  fixture_t *f = *state;
  freed = 0;
  uvp_promise_t *p, *d, *pass_on, *caught;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, pass, NULL, &d), 0);
  assert_int_equal(uvp_promise_cancel_with(NULL, UV_ECANCELED, NULL, NULL),
                   UV_EINVAL);
  assert_int_equal(uvp_promise_cancel_with(d, 0, &freed, count_free),
                   UV_EINVAL);
  assert_int_equal(freed, 1); /* refused: cause_free ran, once */
  freed = 0;
  /* Observed further on before the cut: the cause travels to them. */
  const uvp_cause_t *seen = NULL;
  assert_int_equal(uvp_promise_then(d, pass, NULL, &pass_on), 0);
  assert_int_equal(uvp_promise_catch(pass_on, see_cause, &seen, &caught), 0);
  assert_int_equal(uvp_promise_cancel_with(d, UV_ETIMEDOUT, &freed, count_free),
                   0);
  assert_int_equal(uvp_promise_cancel_with(d, UV_ECANCELED, NULL, NULL),
                   UVP_ESETTLED);
  const uvp_cause_t *c = uvp_promise_cause(d);
  assert_non_null(c);
  assert_int_equal(c->kind, UVP_CAUSE_PROGRAM);
  assert_ptr_equal(c->data, &freed);
  assert_int_equal(uvp_promise_reason(d, NULL), UV_ETIMEDOUT);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  assert_ptr_equal(uvp_promise_cause(p), c);
  run_until_settled(f, caught);
  assert_ptr_equal(seen, c);
  assert_int_equal(uvp_promise_reason(pass_on, NULL), UV_ETIMEDOUT);
  assert_ptr_equal(uvp_promise_cause(pass_on), c); /* passed on */
  assert_null(uvp_promise_cause(caught));          /* the catch fulfilled */
  uvp_promise_release(caught);
  uvp_promise_release(p);
  uvp_promise_release(d);
  assert_int_equal(freed, 0);
  uvp_promise_release(pass_on); /* the last holder */
  run_loop(f);
  assert_int_equal(freed, 1);
}

/* A binding's reason is copied; a NULL one is refused. */
static void test_binding(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_cancel_binding(p, UV_ECANCELED, NULL),
                   UV_EINVAL);
  char why[64];
  snprintf(why, sizeof(why), "the client was closed");
  assert_int_equal(uvp_promise_cancel_binding(p, UV_ECANCELED, why), 0);
  memset(why, 'x', sizeof(why) - 1);
  const uvp_cause_t *c = uvp_promise_cause(p);
  assert_int_equal(c->kind, UVP_CAUSE_BINDING);
  assert_string_equal(c->message, "the client was closed");
  assert_string_equal(said(c), "the client was closed");
  uvp_promise_release(p);
}

/* ---- deadlines ----------------------------------------------------------- */

/* What a deadline cuts names where it was set and its length, one record
 * for all; allSettled's records read it through their promise. */
static void test_deadline(void **state) {
  fixture_t *f = *state;
  auto_clock(f);
  uvp_promise_t *a, *b, *ok, *all;
  assert_int_equal(uvp_delay(f->ctx, 5, NULL, NULL, 0, &ok), 0);
  int line = __LINE__ + 1;
  assert_int_equal(uvp_deadline_set(f->ctx, 40), 0);
  assert_int_equal(uvp_delay(f->ctx, 5000, NULL, NULL, 0, &a), 0);
  assert_int_equal(uvp_delay(f->ctx, 6000, NULL, NULL, 0, &b), 0);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  uvp_promise_t *in[] = {a, ok, b};
  assert_int_equal(uvp_promise_all_settled(f->ctx, in, 3, &all), 0);
  run_until_settled(f, all);
  const uvp_cause_t *c = uvp_promise_cause(a);
  assert_non_null(c);
  assert_int_equal(c->kind, UVP_CAUSE_DEADLINE);
  assert_string_equal(c->file, __FILE__);
  assert_int_equal(c->line, line);
  assert_int_equal(c->ms, 40);
  assert_ptr_equal(uvp_promise_cause(b), c);
  char want[256];
  snprintf(want, sizeof(want), "deadline 40 ms set at %s:%d", __FILE__, line);
  assert_string_equal(said(c), want);
  const uvp_settled_list_t *l = uvp_promise_value(all);
  assert_int_equal(l->items[0].status, UV_ETIMEDOUT);
  assert_ptr_equal(uvp_promise_cause(l->items[0].promise), c);
  assert_null(uvp_promise_cause(l->items[1].promise)); /* fulfilled */
  assert_ptr_equal(uvp_promise_cause(l->items[2].promise), c);
  uvp_promise_release(all);
  uvp_promise_release(a);
  uvp_promise_release(b);
  uvp_promise_release(ok);
}

/* uvp_timeout's own deadline: its result, and the input it gives up on. */
static void test_timeout(void **state) {
  fixture_t *f = *state;
  auto_clock(f);
  uvp_promise_t *p, *t;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  int line = __LINE__ + 1;
  assert_int_equal(uvp_timeout(p, 25, 0, &t), 0);
  uvp_promise_t *guard;
  assert_int_equal(uvp_delay(f->ctx, 100, NULL, NULL, 0, &guard), 0);
  run_until_settled(f, t);
  assert_int_equal(uvp_promise_reason(t, NULL), UV_ETIMEDOUT);
  const uvp_cause_t *c = uvp_promise_cause(t);
  assert_non_null(c);
  assert_int_equal(c->kind, UVP_CAUSE_DEADLINE);
  assert_int_equal(c->line, line);
  assert_int_equal(c->ms, 25);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  assert_ptr_equal(uvp_promise_cause(p), c);
  uvp_promise_release(t);
  uvp_promise_release(p);
  uvp_promise_release(guard);
  run_loop(f);
}

/* ---- groups -------------------------------------------------------------- */

static void test_group_cancel(void **state) {
  fixture_t *f = *state;
  uvp_group_t *g;
  uvp_promise_t *a, *b, *join;
  int line = __LINE__ + 1;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  assert_int_equal(uvp_group_set_name(g, "fetchers"), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &a), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &b), 0);
  assert_int_equal(uvp_group_add(g, a), 0);
  assert_int_equal(uvp_group_add(g, b), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  assert_int_equal(uvp_group_cancel(g), 0);
  const uvp_cause_t *c = uvp_promise_cause(a);
  assert_non_null(c);
  assert_int_equal(c->kind, UVP_CAUSE_GROUP);
  assert_string_equal(c->file, __FILE__);
  assert_int_equal(c->line, line);
  assert_string_equal(c->message, "fetchers");
  assert_ptr_equal(uvp_promise_cause(b), c);
  char want[256];
  snprintf(want, sizeof(want), "group \"fetchers\" made at %s:%d cancelled",
           __FILE__, line);
  assert_string_equal(said(c), want);
  run_until_settled(f, join);
  assert_int_equal(uvp_promise_state(join), UVP_FULFILLED); /* as before */
  uvp_promise_release(join);
  uvp_promise_release(a);
  uvp_promise_release(b);
  uvp_group_release(g);
  run_loop(f);
}

/* FAIL_FAST: the others are cut by the first failure, which the cause
 * names; the join fails with that member's own rejection (no cause). */
static void test_group_sibling(void **state) {
  fixture_t *f = *state;
  uvp_group_t *g;
  uvp_promise_t *a, *b, *join;
  uvp_group_opts_t o = {0, UVP_GROUP_FAIL_FAST, 0};
  int gline = __LINE__ + 1;
  assert_int_equal(uvp_group_new(f->ctx, &o, &g), 0);
  int aline = __LINE__ + 1;
  assert_int_equal(uvp_promise_new(f->ctx, &a), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &b), 0);
  assert_int_equal(uvp_group_add(g, a), 0);
  assert_int_equal(uvp_group_add(g, b), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  assert_int_equal(uvp_promise_reject(a, UV_ECONNREFUSED, NULL, NULL), 0);
  run_until_settled(f, b);
  const uvp_cause_t *c = uvp_promise_cause(b);
  assert_non_null(c);
  assert_int_equal(c->kind, UVP_CAUSE_SIBLING);
  assert_int_equal(c->peer_code, UV_ECONNREFUSED);
  assert_int_equal(c->line, gline);
  assert_string_equal(c->peer_file, __FILE__);
  assert_int_equal(c->peer_line, aline);
  char want[256];
  snprintf(want, sizeof(want),
           "sibling created at %s:%d failed: ECONNREFUSED (group made at "
           "%s:%d)",
           __FILE__, aline, __FILE__, gline);
  assert_string_equal(said(c), want);
  assert_int_equal(uvp_group_close(g), 0);
  run_until_settled(f, join);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ECONNREFUSED);
  assert_null(uvp_promise_cause(join));
  assert_null(uvp_promise_cause(a));
  uvp_promise_release(join);
  uvp_promise_release(a);
  uvp_promise_release(b);
  uvp_group_release(g);
  run_loop(f);
}

/* A group's own deadline cuts its join: the join, once every member has
 * ended, and the members say it. */
static void test_group_join_deadline(void **state) {
  fixture_t *f = *state;
  auto_clock(f);
  uvp_group_t *g;
  uvp_promise_t *a, *join;
  uvp_group_opts_t o = {0, 0, 30};
  int line = __LINE__ + 1;
  assert_int_equal(uvp_group_new(f->ctx, &o, &g), 0);
  assert_int_equal(uvp_delay(f->ctx, 5000, NULL, NULL, 0, &a), 0);
  assert_int_equal(uvp_group_add(g, a), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  uvp_promise_t *guard;
  assert_int_equal(uvp_delay(f->ctx, 100, NULL, NULL, 0, &guard), 0);
  run_until_settled(f, join);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ETIMEDOUT);
  const uvp_cause_t *c = uvp_promise_cause(join);
  assert_non_null(c);
  assert_int_equal(c->kind, UVP_CAUSE_DEADLINE);
  assert_int_equal(c->line, line);
  assert_int_equal(c->ms, 30);
  /* The member was cut by the same cut (a delay watched by no deadline of
   * its own: the group's cancels it). */
  assert_ptr_equal(uvp_promise_cause(a), c);
  uvp_promise_release(join);
  uvp_promise_release(a);
  uvp_promise_release(guard);
  uvp_group_release(g);
  run_loop(f);
}

/* ---- fibers -------------------------------------------------------------- */

typedef struct {
  uvp_ctx_t *ctx;
  int code;
  const uvp_cause_t *cause;
  int line;
} awaiter_t;

static uvp_ret_t await_delay(void *arg) {
  awaiter_t *w = arg;
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(w->ctx, 5000, NULL, NULL, 0, &d), 0);
  uvp_outcome_t o;
  w->code = uvp_await(d, &o);
  w->cause = uvp_promise_cause(d); /* valid while d is held: copied below */
  if (w->cause != NULL)
    w->line = w->cause->line;
  uvp_promise_release(d);
  return uvp_ret_pass();
}

/* A fiber's deadline cuts what it awaits: the await returns the cut, and
 * the promise awaited, and the fiber's own, say which. */
static void test_fiber_await(void **state) {
  fixture_t *f = *state;
  auto_clock(f);
  static awaiter_t w;
  w = (awaiter_t){f->ctx, 0, NULL, 0};
  uvp_fiber_opts_t o = {0};
  o.deadline_ms = 20;
  uvp_promise_t *fp;
  int line = __LINE__ + 1;
  assert_int_equal(uvp_fiber_spawn(f->ctx, await_delay, &w, &o, &fp), 0);
  run_until_settled(f, fp);
  assert_int_equal(w.code, UV_ETIMEDOUT);
  assert_non_null(w.cause);
  assert_int_equal(w.line, line);
  const uvp_cause_t *c = uvp_promise_cause(fp);
  assert_non_null(c);
  assert_int_equal(c->kind, UVP_CAUSE_DEADLINE);
  assert_int_equal(c->line, line);
  assert_int_equal(c->ms, 20);
  uvp_promise_release(fp);
  run_loop(f);
}

/* A member cut by its group's deadline, still running: the task dump
 * names the cut (text and JSON), and uvp_ctx_dump_pending says the join
 * waiting for it was cut and by what. */
typedef struct {
  uvp_ctx_t *ctx;
  char *tasks, *json, *pending;
} dumper_t;

static char *dump_to_string(uvp_ctx_t *ctx, int flags) {
  char *text = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&text, &len);
  assert_non_null(m);
  if (flags < 0) {
    assert_true(uvp_ctx_dump_pending(ctx, m) > 0);
  } else {
    uvp_dump_opts_t o = {flags, m, NULL, NULL, 0};
    assert_true(uvp_ctx_dump_tasks(ctx, &o) > 0);
  }
  assert_int_equal(fclose(m), 0);
  return text;
}

static uvp_ret_t cut_member(void *arg) {
  dumper_t *d = arg;
  uvp_promise_t *p;
  assert_int_equal(uvp_delay(d->ctx, 5000, NULL, NULL, 0, &p), 0);
  assert_int_equal(uvp_await(p, NULL), UV_ETIMEDOUT);
  uvp_promise_release(p);
  d->tasks = dump_to_string(d->ctx, 0);
  d->json = dump_to_string(d->ctx, UVP_DUMP_JSON);
  d->pending = dump_to_string(d->ctx, -1);
  return uvp_ret_pass();
}

static void test_dumps(void **state) {
  fixture_t *f = *state;
  auto_clock(f);
  static dumper_t d;
  d = (dumper_t){f->ctx, NULL, NULL, NULL};
  uvp_group_t *g;
  uvp_group_opts_t o = {0, 0, 20};
  int line = __LINE__ + 1;
  assert_int_equal(uvp_group_new(f->ctx, &o, &g), 0);
  assert_int_equal(uvp_group_spawn(g, cut_member, &d, NULL), 0);
  uvp_promise_t *join;
  assert_int_equal(uvp_group_join(g, &join), 0);
  run_until_settled(f, join);
  char want[256];
  snprintf(want, sizeof(want), "; cancelled: deadline 20 ms set at %s:%d",
           __FILE__, line);
  assert_non_null(d.tasks);
  if (strstr(d.tasks, want) == NULL)
    fail_msg("no \"%s\" in the task dump:\n%s", want, d.tasks);
  snprintf(want, sizeof(want), "\"cause\":\"deadline 20 ms set at %s:%d\"",
           __FILE__, line);
  if (strstr(d.json, want) == NULL)
    fail_msg("no %s in the JSON dump:\n%s", want, d.json);
  snprintf(want, sizeof(want), "    cut: deadline 20 ms set at %s:%d\n",
           __FILE__, line);
  if (strstr(d.pending, want) == NULL)
    fail_msg("no \"%s\" in the pending dump:\n%s", want, d.pending);
  free(d.tasks);
  free(d.json);
  free(d.pending);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ETIMEDOUT);
  uvp_promise_release(join);
  uvp_group_release(g);
  run_loop(f);
}

/* Any code given to uvp_promise_cancel_with is a cancellation to what uvp
 * produces: a fiber's await says UV_ECANCELED; a group's join, cut, waits
 * for its members and settles with UV_ECANCELED and the cause. */
static uvp_ret_t await_forever(void *arg) {
  awaiter_t *w = arg;
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(w->ctx, &p), 0);
  w->code = uvp_await(p, NULL);
  w->cause = uvp_promise_cause(p); /* p was its await's sole consumer */
  uvp_promise_release(p);
  return uvp_ret_pass();
}

static void test_other_codes(void **state) {
  fixture_t *f = *state;
  static awaiter_t w;
  w = (awaiter_t){f->ctx, 0, NULL, 0};
  static int data;
  uvp_promise_t *fp;
  assert_int_equal(uvp_fiber_spawn(f->ctx, await_forever, &w, NULL, &fp), 0);
  run_loop(f); /* the fiber waits */
  assert_int_equal(uvp_promise_cancel_with(fp, UV_EIO, &data, NULL), 0);
  assert_int_equal(uvp_promise_reason(fp, NULL), UV_EIO);
  run_loop(f);
  assert_int_equal(w.code, UV_ECANCELED);
  assert_non_null(w.cause);
  assert_ptr_equal(w.cause, uvp_promise_cause(fp));
  uvp_promise_release(fp);

  uvp_group_t *g;
  uvp_promise_t *m, *join;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &m), 0);
  assert_int_equal(uvp_group_add(g, m), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  assert_int_equal(uvp_promise_cancel_with(join, UV_EIO, &data, NULL), 0);
  run_until_settled(f, join);
  assert_int_equal(uvp_promise_reason(join, NULL), UV_ECANCELED);
  const uvp_cause_t *c = uvp_promise_cause(join);
  assert_non_null(c);
  assert_ptr_equal(c->data, &data);
  assert_ptr_equal(uvp_promise_cause(m), c); /* the member, cut with it */
  uvp_promise_release(join);
  uvp_promise_release(m);
  uvp_group_release(g);
  run_loop(f);
}

/* ---- combinators and maps ------------------------------------------------ */

static void test_losers(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *a, *b, *r;
  int aline = __LINE__ + 1;
  assert_int_equal(uvp_promise_new(f->ctx, &a), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &b), 0);
  uvp_promise_t *in[] = {a, b};
  int rline = __LINE__ + 1;
  assert_int_equal(uvp_promise_race(f->ctx, in, 2, UVP_CANCEL_LOSERS, &r), 0);
  assert_int_equal(uvp_promise_resolve(a, NULL, NULL), 0);
  run_until_settled(f, r);
  run_until_settled(f, b);
  const uvp_cause_t *c = uvp_promise_cause(b);
  assert_non_null(c);
  assert_int_equal(c->kind, UVP_CAUSE_LOSER);
  assert_int_equal(c->line, rline);
  assert_int_equal(c->peer_line, aline);
  assert_int_equal(c->peer_code, 0);
  char want[256];
  snprintf(want, sizeof(want),
           "lost a race decided at %s:%d (by the input created at %s:%d)",
           __FILE__, rline, __FILE__, aline);
  assert_string_equal(said(c), want);
  assert_null(uvp_promise_cause(r)); /* it fulfilled */
  uvp_promise_release(r);
  uvp_promise_release(a);
  uvp_promise_release(b);
}

/* Cancelling a combinator's result reaches its inputs with the same
 * cause (its hook cancels them inside the cancellation). */
static void test_combinator_cancelled(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *a, *b, *all;
  assert_int_equal(uvp_promise_new(f->ctx, &a), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &b), 0);
  uvp_promise_t *in[] = {a, b};
  assert_int_equal(uvp_promise_all(f->ctx, in, 2, 0, &all), 0);
  static int data;
  assert_int_equal(uvp_promise_cancel_with(all, UV_ECANCELED, &data, NULL), 0);
  const uvp_cause_t *c = uvp_promise_cause(all);
  assert_ptr_equal(c->data, &data);
  assert_ptr_equal(uvp_promise_cause(a), c);
  assert_ptr_equal(uvp_promise_cause(b), c);
  uvp_promise_release(all);
  uvp_promise_release(a);
  uvp_promise_release(b);
  run_loop(f);
}

typedef struct {
  uvp_ctx_t *ctx;
  uvp_promise_t *items[3];
  int lines[3];
} map_items_t;

static int start_item(void *arg, size_t i, uvp_promise_t **out) {
  map_items_t *m = arg;
  m->lines[i] = __LINE__ + 1;
  int rc = uvp_promise_new(m->ctx, out);
  if (rc == 0)
    m->items[i] = uvp_promise_retain(*out);
  return rc;
}

/* UVP_MAP_FAIL_FAST: the items in flight are cut by the first failure. */
static void test_map_sibling(void **state) {
  fixture_t *f = *state;
  static map_items_t m;
  memset(&m, 0, sizeof(m));
  m.ctx = f->ctx;
  uvp_promise_t *r;
  uvp_map_opts_t o = {0};
  o.limit = 3;
  o.flags = UVP_MAP_FAIL_FAST;
  int line = __LINE__ + 1;
  assert_int_equal(uvp_promise_map(f->ctx, 3, start_item, &m, &o, &r), 0);
  assert_int_equal(uvp_promise_reject(m.items[1], UV_EPIPE, NULL, NULL), 0);
  run_until_settled(f, r);
  assert_int_equal(uvp_promise_reason(r, NULL), UV_EPIPE);
  for (int i = 0; i < 3; i += 2) {
    const uvp_cause_t *c = uvp_promise_cause(m.items[i]);
    assert_non_null(c);
    assert_int_equal(c->kind, UVP_CAUSE_SIBLING);
    assert_int_equal(c->peer_code, UV_EPIPE);
    assert_int_equal(c->line, line);
    assert_int_equal(c->peer_line, m.lines[1]);
    assert_string_equal(c->message, "map");
  }
  for (int i = 0; i < 3; i++)
    uvp_promise_release(m.items[i]);
  uvp_promise_release(r);
  run_loop(f);
}

/* ---- teardown and reports ------------------------------------------------ */

static void test_ctx_close(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  (void)close_ctx(f);
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECLOSED);
  const uvp_cause_t *c = uvp_promise_cause(p);
  assert_non_null(c);
  assert_int_equal(c->kind, UVP_CAUSE_CLOSE);
  assert_string_equal(said(c), "context closed (uvp_ctx_close)");
  uvp_promise_release(p);
}

static const uvp_cause_t *reported;
static int reports;
static void on_unhandled(uvp_promise_t *p, void *arg) {
  (void)arg;
  reports++;
  reported = uvp_promise_cause(p);
  if (reported != NULL)
    assert_int_equal(reported->kind, UVP_CAUSE_PROGRAM);
}

/* A cut with a code that is reported (UV_ETIMEDOUT) reaches the
 * unhandled-rejection hook with its cause, also when a then() passed it
 * on; a handler's new rejection carries none. */
static void test_unhandled(void **state) {
  fixture_t *f = *state;
  reports = 0;
  reported = NULL;
  assert_int_equal(uvp_ctx_set_unhandled_cb(f->ctx, on_unhandled, NULL), 0);
  uvp_promise_t *p, *d;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  assert_int_equal(uvp_promise_then(p, pass, NULL, &d), 0);
  uvp_promise_release(d);
  static int data;
  assert_int_equal(uvp_promise_cancel_with(p, UV_ETIMEDOUT, &data, NULL), 0);
  uvp_promise_release(p);
  run_loop(f);
  assert_int_equal(reports, 1); /* d: p itself was observed */
  assert_non_null(reported);
}

/* The default report, on stderr, says the cause on a line of its own. */
static void test_unhandled_stderr(void **state) {
  fixture_t *f = *state;
  FILE *tmp = tmpfile();
  assert_non_null(tmp);
  fflush(stderr);
  int saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  int line = __LINE__ + 1;
  assert_int_equal(uvp_deadline_set(f->ctx, 7), 0);
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(f->ctx, 5000, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  settle_ticking(f, d);
  uvp_promise_release(d); /* rejected UV_ETIMEDOUT, unobserved: reported */
  uvp_promise_release(p);
  fflush(stderr);
  assert_true(dup2(saved, STDERR_FILENO) >= 0);
  close(saved);
  char text[1024] = "";
  rewind(tmp);
  size_t n = fread(text, 1, sizeof(text) - 1, tmp);
  text[n] = '\0';
  fclose(tmp);
  char want[256];
  snprintf(want, sizeof(want),
           "uvp: unhandled rejection ETIMEDOUT (connection timed out) of "
           "promise created at %s:%d\n    cancelled: deadline 7 ms set at "
           "%s:%d\n",
           __FILE__, line + 2, __FILE__, line);
  if (strstr(text, want) == NULL)
    fail_msg("want:\n%s\ngot:\n%s", want, text);
}

/* ---- uvp_cause_format ---------------------------------------------------- */

static void test_format(void **state) {
  (void)state;
  assert_int_equal(uvp_cause_format(NULL, NULL, 0), 0);
  char buf[8] = "xxxxxxx";
  assert_int_equal(uvp_cause_format(NULL, buf, sizeof(buf)), 0);
  assert_string_equal(buf, "");
  uvp_cause_t c = {
      .kind = UVP_CAUSE_DEADLINE, .file = "main.c", .line = 88, .ms = 2000};
  int n = uvp_cause_format(&c, buf, sizeof(buf));
  assert_int_equal(n, (int)strlen("deadline 2000 ms set at main.c:88"));
  assert_string_equal(buf, "deadlin"); /* cut short, NUL-terminated */
  assert_int_equal(uvp_cause_format(&c, NULL, 0), n);
  assert_string_equal(said(&c), "deadline 2000 ms set at main.c:88");
  c = (uvp_cause_t){.kind = UVP_CAUSE_GROUP, .file = "g.c", .line = 3};
  assert_string_equal(said(&c), "group made at g.c:3 cancelled");
  c = (uvp_cause_t){.kind = UVP_CAUSE_CLOSE};
  assert_string_equal(said(&c), "context closed (uvp_ctx_close)");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_program_plain),
      FIXTURE_TEST(test_program_with),
      FIXTURE_TEST(test_binding),
      QUIET_TEST(test_deadline),
      QUIET_TEST(test_timeout),
      FIXTURE_TEST(test_group_cancel),
      QUIET_TEST(test_group_sibling),
      QUIET_TEST(test_group_join_deadline),
      QUIET_TEST(test_fiber_await),
      QUIET_TEST(test_dumps),
      QUIET_TEST(test_other_codes),
      FIXTURE_TEST(test_losers),
      FIXTURE_TEST(test_combinator_cancelled),
      QUIET_TEST(test_map_sibling),
      FIXTURE_TEST(test_ctx_close),
      FIXTURE_TEST(test_unhandled),
      FIXTURE_TEST(test_unhandled_stderr),
      cmocka_unit_test(test_format),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
