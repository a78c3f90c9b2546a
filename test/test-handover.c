/* uvp.h's "Handing over": a call given something with the function that
 * frees it owns it whatever the call returns.  For each call of that shape
 * that test-ownership.c (handlers, hooks, maps, loops, retries, the
 * unhandled hook, the context's data), test-tcp.c and test-work.c do not
 * already cover for want of memory, refused for bad arguments, on a closed
 * context, and for want of memory (each allocation failing in turn,
 * alloc-helpers.h): the free function runs once, before the call returns,
 * and the callback never; accepted, it runs once, later.  Every value is
 * malloc'd and freed only by val_free, so valgrind and ASan see a leak or a
 * second free.  Last, the case that showed the old rule's hole: a fiber
 * that uvp_ctx_close resumes writes with
 * uvp_await_take(uvp_tcp_write_full(...)), which is refused: the buffer is
 * freed, not leaked. */
#include "alloc-helpers.h"

static int g_freed; /* values val_free has freed */
static int g_calls; /* callbacks that ran: none may for a refused call */

static void *val(void) {
  void *v = malloc(8);
  assert_non_null(v);
  return v;
}

static void val_free(void *v) {
  g_freed++;
  free(v);
}

static void hook(uvp_promise_t *p, void *arg) {
  (void)p, (void)arg;
  g_calls++;
}

static uvp_ret_t body(void *arg) {
  (void)arg;
  g_calls++;
  return uvp_ret_value(NULL, NULL);
}

static int start(void *arg, uvp_promise_t **out) {
  (void)arg, (void)out;
  g_calls++;
  return UV_EIO;
}

static int job(void *arg, void **result) {
  (void)arg, (void)result;
  return 0; /* runs on the pool: counts nothing */
}

static void job_done(void *arg, uvp_work_end_t end) {
  (void)end;
  val_free(arg);
}

static uvp_ret_t call_fn(uvp_ctx_t *target, void *arg) {
  (void)target, (void)arg;
  g_calls++;
  return uvp_ret_value(NULL, NULL);
}

static void call_done(void *done_arg, int code, void *value,
                      uvp_free_cb free_cb) {
  (void)done_arg, (void)code;
  if (free_cb != NULL)
    free_cb(value);
}

/* What a form needs besides the context: a pending promise of it, a
 * group, a TCP handle, a target context (NULL where a test wants the
 * argument bad). */
typedef struct objs_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *p;
  uvp_group_t *g;
  uvp_tcp_t *t;
  uvp_ctx_t *target;
} objs_t;

enum {
  F_RESOLVED,
  F_REJECTED,
  F_RESOLVE,
  F_REJECT,
  F_CANCEL_WITH,
  F_SET_CANCEL_DESCRIBED,
  F_DELAY,
  F_SCOPE_SET,
  F_FIBER_SPAWN,
  F_GROUP_START,
  F_GROUP_SPAWN,
  F_TCP_WRITE_FULL,
  F_WORK_FULL,
  F_CALL_START,
  F_CALL_POST,
  F_COUNT
};

static const char *const form_names[F_COUNT] = {
    "uvp_promise_resolved",
    "uvp_promise_rejected",
    "uvp_promise_resolve",
    "uvp_promise_reject",
    "uvp_promise_cancel_with",
    "uvp_promise_set_cancel_described",
    "uvp_delay",
    "uvp_scope_set",
    "uvp_fiber_spawn",
    "uvp_group_start",
    "uvp_group_spawn",
    "uvp_tcp_write_full",
    "uvp_work_full",
    "uvp_call_start",
    "uvp_call_post"};

/* Form `k` handed a fresh value; *out gets the promise it makes, if any
 * (NULL out where `bad_out`). */
static int form(int k, const objs_t *o, bool bad_out, uvp_promise_t **out) {
  uvp_promise_t **po = bad_out ? NULL : out;
  uvp_fiber_opts_t fo = {.arg_free = val_free};
  switch (k) {
  case F_RESOLVED:
    return uvp_promise_resolved(o->ctx, val(), val_free, po);
  case F_REJECTED:
    return uvp_promise_rejected(o->ctx, UV_EIO, val(), val_free, po);
  case F_RESOLVE:
    return uvp_promise_resolve(o->p, val(), val_free);
  case F_REJECT:
    return uvp_promise_reject(o->p, UV_EIO, val(), val_free);
  case F_CANCEL_WITH:
    return uvp_promise_cancel_with(o->p, UV_ECANCELED, val(), val_free);
  case F_SET_CANCEL_DESCRIBED:
    return uvp_promise_set_cancel_described(o->p, hook, val(), val_free, "X",
                                            NULL);
  case F_DELAY:
    return uvp_delay(o->ctx, 1, val(), val_free, 0, po);
  case F_SCOPE_SET:
    return uvp_scope_set(o->ctx, bad_out ? UVP_SCOPE_SLOTS : 0, val(),
                         val_free);
  case F_FIBER_SPAWN:
    return uvp_fiber_spawn(o->ctx, bad_out ? NULL : body, val(), &fo, out);
  case F_GROUP_START:
    return uvp_group_start(o->g, bad_out ? NULL : start, val(), val_free);
  case F_GROUP_SPAWN:
    return uvp_group_spawn(o->g, bad_out ? NULL : body, val(), &fo);
  case F_TCP_WRITE_FULL:
    return uvp_tcp_write_full(o->t, val(), 8, val_free, po);
  case F_WORK_FULL:
    return uvp_work_full(o->ctx, job, val(), job_done, NULL, po);
  case F_CALL_START:
    return uvp_call_start(o->ctx, o->target, call_fn, val(), val_free, po);
  default:
    return uvp_call_post(o->target, call_fn, val(), val_free, call_done, NULL);
  }
}

/* Form k refused with `code`: its value freed once inside the call, no
 * callback, no promise. */
static void expect_refused(int k, const objs_t *o, bool bad_out, int code) {
  int freed = g_freed, called = g_calls;
  uvp_promise_t *out = NULL;
  int rc = form(k, o, bad_out, &out);
  if (rc != code || g_freed != freed + 1 || g_calls != called || out != NULL)
    fail_msg("%s: returned %s (not %s), freed %d times (not once), %d "
             "callbacks, a promise %p",
             form_names[k], uvp_err_name(rc), uvp_err_name(code),
             g_freed - freed, g_calls - called, (void *)out);
}

/* Bad arguments: each form with the object it needs NULL (or a NULL out, a
 * NULL callback, a slot out of range, a code not < 0). */
static void test_refused_bad_arguments(void **state) {
  fixture_t *f = *state;
  g_freed = g_calls = 0;
  objs_t none = {0}, some = {.ctx = f->ctx};
  for (int k = 0; k < F_COUNT; k++)
    expect_refused(k, &none, false, UV_EINVAL);
  /* What NULL there is not the object: out, a callback, a slot. */
  assert_int_equal(uvp_group_new(f->ctx, NULL, &some.g), 0);
  assert_int_equal(uvp_tcp_new(f->ctx, &some.t), 0);
  some.target = f->ctx;
  static const int with_objs[] = {
      F_RESOLVED,       F_DELAY,       F_SCOPE_SET,
      F_FIBER_SPAWN,    F_GROUP_START, F_GROUP_SPAWN,
      F_TCP_WRITE_FULL, F_WORK_FULL,   F_CALL_START};
  for (size_t i = 0; i < sizeof(with_objs) / sizeof(with_objs[0]); i++)
    expect_refused(with_objs[i], &some, true, UV_EINVAL);
  assert_int_equal(uvp_promise_rejected(f->ctx, 0, val(), val_free, &some.p),
                   UV_EINVAL);
  assert_null(some.p);
  assert_int_equal(uvp_promise_new(f->ctx, &some.p), 0);
  assert_int_equal(uvp_promise_reject(some.p, 1, val(), val_free), UV_EINVAL);
  assert_int_equal(uvp_promise_cancel_with(some.p, 0, val(), val_free),
                   UV_EINVAL);
  assert_int_equal(uvp_promise_set_cancel_described(some.p, hook, val(),
                                                    val_free, NULL, NULL),
                   UV_EINVAL);
  /* A settled promise: resolve and reject are refused with UVP_ESETTLED. */
  assert_int_equal(uvp_promise_resolve(some.p, NULL, NULL), 0);
  expect_refused(F_RESOLVE, &some, false, UVP_ESETTLED);
  expect_refused(F_REJECT, &some, false, UVP_ESETTLED);
  expect_refused(F_SET_CANCEL_DESCRIBED, &some, false, UVP_ESETTLED);
  assert_int_equal(g_calls, 0);
  assert_int_equal(uvp_tcp_close(some.t), 0);
  uvp_group_release(some.g);
  uvp_promise_release(some.p);
  run_loop(f);
  assert_int_equal(g_calls, 0);
}

/* A closed context: every form says UVP_ECLOSED, and frees its value. */
static void test_refused_closed(void **state) {
  fixture_t *f = *state;
  g_freed = g_calls = 0;
  objs_t o = {.ctx = f->ctx, .target = f->ctx};
  assert_int_equal(uvp_promise_new(f->ctx, &o.p), 0);
  assert_int_equal(uvp_group_new(f->ctx, NULL, &o.g), 0);
  assert_int_equal(uvp_tcp_new(f->ctx, &o.t), 0);
  close_ctx(f);
  for (int k = 0; k < F_COUNT; k++)
    expect_refused(k, &o, false, UVP_ECLOSED);
  assert_int_equal(uvp_tcp_close(o.t), 0);
  run_loop(f);
  assert_int_equal(g_calls, 0);
  assert_int_equal(g_freed, F_COUNT);
  uvp_group_release(o.g);
  uvp_promise_release(o.p);
}

/* For want of memory: each form once per run, with every allocation
 * failing in turn.  Refused, the value is freed inside the call; accepted,
 * once by the end of the run.  (uvp_tcp_write_full's and uvp_work_full's
 * own runs are in test-tcp.c and test-work.c; the calls between loops
 * need a second loop's allocations, which are not counted here.) */
static long g_refused;

static void scenario_each_form(run_t *r) {
  static const int forms[] = {
      F_RESOLVED,    F_REJECTED,    F_RESOLVE,
      F_REJECT,      F_CANCEL_WITH, F_SET_CANCEL_DESCRIBED,
      F_DELAY,       F_SCOPE_SET,   F_FIBER_SPAWN,
      F_GROUP_START, F_GROUP_SPAWN};
  int handed = 0, freed = g_freed;
  for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
    int k = forms[i];
    objs_t o = {.ctx = r->ctx};
    uvp_promise_t *out = NULL;
    int rc = uvp_promise_new(r->ctx, &o.p);
    OK_OR_ENOMEM(rc);
    if (rc == 0 && (k == F_GROUP_START || k == F_GROUP_SPAWN)) {
      rc = uvp_group_new(r->ctx, NULL, &o.g);
      OK_OR_ENOMEM(rc);
    }
    if (rc != 0) {
      uvp_promise_release(o.p);
      continue;
    }
    int before = g_freed;
    rc = form(k, &o, false, &out);
    handed++;
    OK_OR_ENOMEM(rc);
    if (rc != 0) {
      g_refused++;
      if (g_freed != before + 1 || out != NULL)
        fail_msg("%s: UV_ENOMEM, freed %d times (not once)", form_names[k],
                 g_freed - before);
    }
    /* p settled by the form itself (resolve, reject, cancel_with), or
     * now: its hook (set_cancel_described) runs. */
    rc = k == F_SET_CANCEL_DESCRIBED ? uvp_promise_cancel(o.p)
                                     : uvp_promise_resolve(o.p, NULL, NULL);
    assert_true(rc == 0 || rc == UVP_ESETTLED);
    uvp_promise_release(o.p);
    uvp_promise_release(out);
    if (o.g != NULL) {
      assert_int_equal(uvp_group_close(o.g), 0);
      uvp_group_release(o.g);
    }
  }
  assert_int_equal(uvp_ctx_close(r->ctx), 0);
  r->ctx = NULL;
  assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
  if (g_freed - freed != handed)
    fail_msg("%d values handed over, %d freed", handed, g_freed - freed);
}

static void test_refused_for_memory(void **state) {
  (void)state;
  g_freed = g_calls = 0;
  g_refused = 0;
  exhaust(scenario_each_form);
  assert_true(g_refused > 0);
}

/* The idiom of a per-core server's fiber: write with uvp_await_take of
 * uvp_tcp_write_full.  uvp_ctx_close resumes the fiber, whose next write
 * is refused (UVP_ECLOSED): the buffer is freed by the refusal, once. */
typedef struct writer_s {
  uvp_tcp_t *t;
  uvp_promise_t *never;
  int first_rc, write_rc, freed_after;
} writer_t;

static uvp_ret_t writer(void *arg) {
  writer_t *w = arg;
  w->first_rc = uvp_await(w->never, NULL);
  uvp_promise_t *wp;
  w->write_rc = uvp_await_take(
      uvp_tcp_write_full(w->t, val(), 8, val_free, &wp), &wp, NULL);
  w->freed_after = g_freed;
  return uvp_ret_value(NULL, NULL);
}

static void test_await_take_write_at_close(void **state) {
  fixture_t *f = *state;
  g_freed = g_calls = 0;
  writer_t w = {0};
  uvp_promise_t *fp;
  assert_int_equal(uvp_tcp_new(f->ctx, &w.t), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &w.never), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, writer, &w, NULL, &fp), 0);
  run_loop(f); /* the fiber waits for `never` */
  close_ctx(f);
  assert_int_equal(uvp_tcp_close(w.t), 0);
  run_loop(f);
  assert_int_equal(w.first_rc, UVP_ECLOSED);
  assert_int_equal(w.write_rc, UVP_ECLOSED);
  assert_int_equal(w.freed_after, 1);
  assert_int_equal(g_freed, 1);
  uvp_promise_release(w.never);
  uvp_promise_release(fp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      QUIET_TEST(test_refused_bad_arguments),
      QUIET_TEST(test_refused_closed),
      cmocka_unit_test(test_refused_for_memory),
      QUIET_TEST(test_await_take_write_at_close),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
