/* Calls between loops (uvp_call_start, uvp_call_post: include/uvp/calls.h).
 * The fixture's context calls a target context whose loop runs on a
 * thread of its own: values (moved, freed on the caller's thread),
 * rejections, promises followed on the target (their value freed on the
 * target's thread), cancellation both ways with causes, the caller's
 * deadline carried to the target, teardown of the target and of the
 * caller mid-call (each call ends once, with a cause naming the closed
 * context, both loops close), a fiber awaiting a call, a call to the
 * context itself, and calls posted from a thread with no context. */
#include <stdatomic.h>

#include "call-helpers.h"

/* ---- what the target runs ----------------------------------------------- */

static uv_thread_t main_id;
static atomic_int ran_on_target;  /* fn ran on the target's thread */
static atomic_int freed_on_main;  /* a value's free ran on the caller's */
static atomic_int freed_on_other; /* ... or elsewhere */
static atomic_int arg_freed;
static target_t *cur; /* the target of the test running */

static void reset(void) {
  main_id = uv_thread_self();
  ran_on_target = freed_on_main = freed_on_other = arg_freed = 0;
}

static void track_free(void *v) {
  uv_thread_t self = uv_thread_self();
  if (uv_thread_equal(&self, &main_id))
    freed_on_main++;
  else
    freed_on_other++;
  free(v);
}

static void count_arg_free(void *arg) {
  (void)arg;
  arg_freed++;
}

static void note_thread(uvp_ctx_t *target) {
  uv_thread_t self = uv_thread_self();
  if (target == cur->ctx && uv_thread_equal(&self, &cur->id))
    ran_on_target++;
}

static uvp_ret_t fn_value(uvp_ctx_t *target, void *arg) {
  note_thread(target);
  char *s = malloc(16);
  snprintf(s, 16, "v%d", (int)(intptr_t)arg);
  return uvp_ret_value(s, track_free);
}

static uvp_ret_t fn_reject(uvp_ctx_t *target, void *arg) {
  (void)arg;
  note_thread(target);
  return uvp_ret_reject(UV_ENOENT, NULL, NULL);
}

/* A delay of the target's, of arg ms, fulfilling with a string. */
static uvp_ret_t fn_follow(uvp_ctx_t *target, void *arg) {
  note_thread(target);
  uvp_promise_t *q;
  if (uvp_delay(target, (uint64_t)(uintptr_t)arg, strdup("later"), track_free,
                0, &q) != 0)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  return uvp_ret_adopt(q);
}

/* The cause the target's work was cut with, as uvp_cause_format says. */
static char cut_why[1024];
static atomic_int cut_code;
static uvp_ret_t record_cut(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  uvp_cause_format(uvp_promise_cause(in->promise), cut_why, sizeof(cut_why));
  cut_code = in->status;
  return uvp_ret_pass();
}

/* A delay of 10 s whose cut is recorded. */
static uvp_ret_t fn_long(uvp_ctx_t *target, void *arg) {
  (void)arg;
  note_thread(target);
  uvp_promise_t *q;
  if (uvp_delay(target, 10000, NULL, NULL, 0, &q) != 0 ||
      uvp_promise_catch(q, record_cut, NULL, NULL) != 0)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  return uvp_ret_adopt(q);
}

/* The target cuts its own work: a deadline of its own, 20 ms. */
static uvp_ret_t fn_self_deadline(uvp_ctx_t *target, void *arg) {
  (void)arg;
  uvp_deadline_set(target, 20);
  return fn_long(target, NULL);
}

static void setup_target(void) {
  reset();
  cut_why[0] = '\0';
  cut_code = 0;
}

/* Until fn has run on the target: the caller's loop turns meanwhile (a
 * call leaves once the caller's run queue has run). */
static void wait_ran(fixture_t *f) {
  uint64_t t0 = uv_hrtime();
  while (ran_on_target == 0 && uv_hrtime() - t0 < 10000000000ull) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
  }
  assert_int_not_equal(ran_on_target, 0);
}

/* ---- tests ------------------------------------------------------------- */

static void test_value_moves(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p[8];
  for (int i = 0; i < 8; i++)
    assert_int_equal(uvp_call_start(f->ctx, t.ctx, fn_value,
                                    (void *)(intptr_t)i, count_arg_free, &p[i]),
                     0);
  for (int i = 0; i < 8; i++) {
    run_until_settled(f, p[i]);
    assert_int_equal(uvp_promise_state(p[i]), UVP_FULFILLED);
    char want[16];
    snprintf(want, sizeof(want), "v%d", i);
    assert_string_equal(uvp_promise_value(p[i]), want);
  }
  assert_int_equal(ran_on_target, 8);
  assert_int_equal(arg_freed, 8);
  for (int i = 0; i < 8; i++)
    uvp_promise_release(p[i]);
  /* The values moved: freed here, on the caller's thread. */
  assert_int_equal(freed_on_main, 8);
  assert_int_equal(freed_on_other, 0);
  caller_join(f, &t);
}

/* The target's loop iteration each call ran in. */
static long ran_turn[64];
static uvp_ret_t fn_turn(uvp_ctx_t *target, void *arg) {
  note_thread(target);
  ran_turn[(intptr_t)arg] = cur->turns;
  return uvp_ret_pass();
}

static void test_batch_shares_wakeup(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p[64];
  for (int i = 0; i < 64; i++)
    assert_int_equal(uvp_call_start(f->ctx, t.ctx, fn_turn, (void *)(intptr_t)i,
                                    NULL, &p[i]),
                     0);
  assert_int_equal(ran_on_target, 0); /* they leave together, later */
  for (int i = 0; i < 64; i++) {
    run_until_settled(f, p[i]);
    assert_int_equal(uvp_promise_state(p[i]), UVP_FULFILLED);
    uvp_promise_release(p[i]);
  }
  /* Started in one turn of the caller: one message, one drain, in one
   * iteration of the target's loop. */
  assert_int_equal(ran_on_target, 64);
  for (int i = 1; i < 64; i++)
    assert_int_equal(ran_turn[i], ran_turn[0]);
  caller_join(f, &t);
}

static void test_rejection_crosses(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p;
  assert_int_equal(uvp_call_start(f->ctx, t.ctx, fn_reject, NULL, NULL, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ENOENT);
  assert_null(uvp_promise_cause(p));
  assert_int_equal(ran_on_target, 1);
  uvp_promise_release(p);
  caller_join(f, &t);
}

static void test_followed_promise(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p;
  assert_int_equal(
      uvp_call_start(f->ctx, t.ctx, fn_follow, (void *)(uintptr_t)20, NULL, &p),
      0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_string_equal(uvp_promise_value(p), "later");
  uvp_promise_release(p);
  /* The value was the target's promise's: freed on the target's thread,
   * whose release is posted there. */
  target_join(&t);
  run_loop(f);
  assert_int_equal(freed_on_other, 1);
  assert_int_equal(freed_on_main, 0);
}

static void test_cancel_reaches_target(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p;
  assert_int_equal(uvp_call_start(f->ctx, t.ctx, fn_long, NULL, NULL, &p), 0);
  /* Cancelled once the target runs it: fn ran, q is followed. */
  wait_ran(f);
  assert_int_equal(uvp_promise_cancel(p), 0);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ECANCELED);
  uint64_t t0 = uv_hrtime();
  run_loop(f); /* until the target's answer ends the call */
  assert_true(uv_hrtime() - t0 < 5000000000ull); /* not the 10 s delay */
  assert_int_equal(cut_code, UV_ECANCELED);
  assert_non_null(strstr(cut_why, "the caller's context"));
  assert_non_null(strstr(cut_why, "cancelled by the program"));
  uvp_promise_release(p);
  caller_join(f, &t);
}

static void test_cancel_before_run(void **state) {
  fixture_t *f = *state;
  setup_target();
  target_t t;
  target_start(&t);
  cur = &t;
  /* Cancelled at once, in the same turn: the call may or may not have
   * run on the target; either way it ends once and arg_free runs once. */
  uvp_promise_t *p;
  assert_int_equal(
      uvp_call_start(f->ctx, t.ctx, fn_long, NULL, count_arg_free, &p), 0);
  assert_int_equal(uvp_promise_cancel(p), 0);
  run_loop(f);
  assert_int_equal(arg_freed, 1);
  uvp_promise_release(p);
  caller_join(f, &t);
}

static int into_buf(void *arg, const char *text, size_t len) {
  size_t have = strlen(arg);
  if (have + len < 8192) {
    memcpy((char *)arg + have, text, len);
    ((char *)arg)[have + len] = '\0';
  }
  return 0;
}

/* The target's task dump, made on its thread by a posted call. */
static char target_dump[8192];
static uvp_ret_t fn_dump(uvp_ctx_t *target, void *arg) {
  (void)arg;
  target_dump[0] = '\0';
  uvp_dump_opts_t o = {0, NULL, into_buf, target_dump, 0};
  (void)uvp_ctx_dump_tasks(target, &o);
  return uvp_ret_pass();
}

static void test_dump_both_sides(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p;
  assert_int_equal(uvp_call_start(f->ctx, t.ctx, fn_long, NULL, NULL, &p), 0);
  wait_ran(f);
  static char text[8192];
  text[0] = '\0';
  uvp_dump_opts_t o = {0, NULL, into_buf, text, 0};
  assert_true(uvp_ctx_dump_tasks(f->ctx, &o) >= 1);
  /* The caller waits for a call into the target context. */
  char want[64];
  snprintf(want, sizeof(want), "for call into context %p", (void *)t.ctx);
  if (strstr(text, want) == NULL)
    fail_msg("no '%s' in the caller's dump:\n%s", want, text);
  uv_sem_t sem;
  assert_int_equal(uv_sem_init(&sem, 0), 0);
  assert_int_equal(uvp_call_post(t.ctx, fn_dump, NULL, NULL, sem_posted, &sem),
                   0);
  uv_sem_wait(&sem);
  uv_sem_destroy(&sem);
  /* The target's side: the call, named after the calling context, waits
   * for the timer fn started. */
  snprintf(want, sizeof(want), "call \"from context %p\"", (void *)f->ctx);
  const char *at = strstr(target_dump, want);
  char line[512] = "";
  if (at != NULL)
    snprintf(line, sizeof(line), "%.*s", (int)strcspn(at, "\n"), at);
  if (strstr(line, "waiting") == NULL || strstr(line, "for timer") == NULL)
    fail_msg("no '%s ... for timer' in the target's dump:\n%s", want,
             target_dump);
  assert_int_equal(uvp_promise_cancel(p), 0);
  uvp_promise_release(p);
  caller_join(f, &t);
}

/* ---- the recorder: a flow from the call to its work --------------------- */

typedef struct grow_s {
  char *text;
  size_t len, cap;
} grow_t;
static int into_grow(void *arg, const char *text, size_t len) {
  grow_t *g = arg;
  if (g->len + len + 1 > g->cap) {
    size_t cap = (g->len + len + 1) * 2;
    char *n = realloc(g->text, cap);
    if (n == NULL)
      return UV_ENOMEM;
    g->text = n;
    g->cap = cap;
  }
  memcpy(g->text + g->len, text, len);
  g->len += len;
  g->text[g->len] = '\0';
  return 0;
}

static uvp_ret_t fn_record_on(uvp_ctx_t *target, void *arg) {
  (void)arg;
  return uvp_ctx_set_recorder(target, 1 << 20, UVP_RECORD_ALL) == 0
             ? uvp_ret_pass()
             : uvp_ret_reject(UV_ENOMEM, NULL, NULL);
}
static grow_t target_json;
static uvp_ret_t fn_record_write(uvp_ctx_t *target, void *arg) {
  (void)arg;
  uvp_record_opts_t o = {UVP_RECORD_JSON, 0, NULL, into_grow, &target_json};
  return uvp_ctx_recorder_write(target, &o) >= 0
             ? uvp_ret_pass()
             : uvp_ret_reject(UV_ENOMEM, NULL, NULL);
}
static void post_done_sem(void *arg, int code, void *value,
                          uvp_free_cb free_cb) {
  (void)value;
  (void)free_cb;
  assert_int_equal(code, 0);
  uv_sem_post(arg);
}
/* fn(target) on its thread, waited for. */
static void on_target(target_t *t, uvp_call_fn fn) {
  uv_sem_t sem;
  assert_int_equal(uv_sem_init(&sem, 0), 0);
  assert_int_equal(uvp_call_post(t->ctx, fn, NULL, NULL, post_done_sem, &sem),
                   0);
  uv_sem_wait(&sem);
  uv_sem_destroy(&sem);
}

/* The line of `json` with a flow event `ph` of cat "call" naming `id`
 * (any id, if id is ""); its id in *found (48 bytes). */
static const char *call_flow(const char *json, const char *ph, const char *id,
                             char *found) {
  char want[32];
  snprintf(want, sizeof(want), "{\"ph\":\"%s\"", ph);
  for (const char *l = strstr(json, want); l != NULL; l = strstr(l + 1, want)) {
    const char *end = strchr(l, '\n');
    size_t n = end != NULL ? (size_t)(end - l) : strlen(l);
    char line[512];
    snprintf(line, sizeof(line), "%.*s", (int)(n < 511 ? n : 511), l);
    const char *a = strstr(line, "\"args\":{\"call\":\"");
    if (strstr(line, "\"cat\":\"call\"") == NULL || a == NULL)
      continue;
    a += strlen("\"args\":{\"call\":\"");
    const char *q = strchr(a, '"');
    if (q == NULL || q - a >= 48)
      continue;
    char got[48];
    snprintf(got, sizeof(got), "%.*s", (int)(q - a), a);
    char idf[80];
    snprintf(idf, sizeof(idf), "\"id\":\"%s\"", got);
    if (strstr(line, idf) == NULL || (id[0] != '\0' && strcmp(got, id) != 0))
      continue;
    strcpy(found, got);
    return l;
  }
  return NULL;
}

static void test_recorder_flow(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 1 << 20, UVP_RECORD_ALL), 0);
  on_target(&t, fn_record_on);
  uvp_promise_t *p;
  assert_int_equal(uvp_call_start(f->ctx, t.ctx, fn_value, NULL, NULL, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  uvp_promise_release(p);
  grow_t mine = {NULL, 0, 0};
  uvp_record_opts_t o = {UVP_RECORD_JSON, 0, NULL, into_grow, &mine};
  assert_true(uvp_ctx_recorder_write(f->ctx, &o) >= 0);
  target_json.len = 0;
  on_target(&t, fn_record_write);
  assert_non_null(mine.text);
  assert_non_null(target_json.text);
  /* The caller's file starts a flow "call" with an id ... */
  char id[48], id2[48];
  const char *s = call_flow(mine.text, "s", "", id);
  if (s == NULL)
    fail_msg("no call flow's start in the caller's JSON:\n%s", mine.text);
  char into[64];
  snprintf(into, sizeof(into), "\"into\":\"%p\"", (void *)t.ctx);
  assert_non_null(strstr(s, into));
  /* ... which the target's ends, with the same id, from the caller. */
  const char *e = call_flow(target_json.text, "f", id, id2);
  if (e == NULL)
    fail_msg("no call flow's end '%s' in the target's JSON:\n%s", id,
             target_json.text);
  char from[64];
  snprintf(from, sizeof(from), "\"from\":\"%p\"", (void *)f->ctx);
  assert_non_null(strstr(e, from));
  free(mine.text);
  free(target_json.text);
  target_json.text = NULL;
  target_json.cap = 0;
  caller_join(f, &t);
}

static void test_target_cut_rejects_caller(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p;
  assert_int_equal(
      uvp_call_start(f->ctx, t.ctx, fn_self_deadline, NULL, NULL, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_reason(p, NULL), UV_ETIMEDOUT);
  const uvp_cause_t *c = uvp_promise_cause(p);
  assert_non_null(c);
  char why[256];
  uvp_cause_format(c, why, sizeof(why));
  assert_non_null(strstr(why, "call into context"));
  assert_non_null(strstr(why, "deadline 20 ms set at"));
  uvp_promise_release(p);
  caller_join(f, &t);
}

/* A cause that crossed from the caller ends with `want`, or with as much
 * of it as the call's buffer for it held (191 bytes, the caller's context
 * named first: a path of a build directory far from the sources is
 * cut). */
static bool crossed_cause_is(const char *got, const char *want) {
  const char *at = strstr(got, "cut the call: ");
  if (at == NULL)
    return false;
  size_t n = strlen(at);
  return strcmp(at, want) == 0 ||
         (strlen(want) > 100 && n > 20 && strncmp(at, want, n) == 0);
}

static void test_deadline_carried(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p;
  /* 50 ms, longer where a loaded machine (valgrind) let the deadline pass
   * before the target ran fn (the cut then reaches it first: fn never
   * runs, and nothing carried is left to see). */
  uint64_t ms = 50;
  int set_line = 0, line = 0;
  for (;; ms *= 10) {
    ran_on_target = 0;
    set_line = __LINE__ + 1;
    assert_int_equal(uvp_deadline_set(f->ctx, ms), 0);
    line = __LINE__ + 1;
    assert_int_equal(uvp_call_start(f->ctx, t.ctx, fn_long, NULL, NULL, &p), 0);
    assert_int_equal(uvp_scope_clear(f->ctx), 0);
    run_until_settled(f, p);
    assert_int_equal(uvp_promise_reason(p, NULL), UV_ETIMEDOUT);
    run_loop(f);
    if (ran_on_target != 0 || ms >= 5000)
      break;
    uvp_promise_release(p);
  }
  /* The target's work was cut by the carried deadline, set there at the
   * call's site, or, whichever timer fired first, by the caller's own
   * deadline, whose cut crossed. */
  assert_int_equal(cut_code, UV_ETIMEDOUT);
  /* The sites are this file as the compiler was given it, wherever the
   * build directory is. */
  char there[1024], here[1024];
  snprintf(there, sizeof(there), " ms set at %s:%d", __FILE__, line);
  snprintf(here, sizeof(here), "cut the call: deadline %d ms set at %s:%d",
           (int)ms, __FILE__, set_line);
  /* What is carried is the time left at the call's site: ms, or less
   * where a millisecond passed between the set and the call. */
  unsigned long long left = 0;
  int end = 0;
  bool carried = sscanf(cut_why, "deadline %llu%n", &left, &end) == 1 &&
                 left >= 1 && left <= ms && strcmp(cut_why + end, there) == 0;
  if (!carried && !crossed_cause_is(cut_why, here))
    fail_msg("cut: %s (want deadline <= %d%s, or %s)", cut_why, (int)ms, there,
             here);
  uvp_promise_release(p);
  caller_join(f, &t);
}

static void test_target_closes_mid_call(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(
        uvp_call_start(f->ctx, t.ctx, fn_long, NULL, count_arg_free, &p[i]), 0);
  wait_ran(f);
  uvp_ctx_t *gone = t.ctx;
  target_join(&t);
  char want[96];
  snprintf(want, sizeof(want), "the call's target context %p was closed",
           (void *)gone);
  for (int i = 0; i < 4; i++) {
    run_until_settled(f, p[i]);
    assert_int_equal(uvp_promise_reason(p[i], NULL), UVP_ECLOSED);
    char why[256];
    uvp_cause_format(uvp_promise_cause(p[i]), why, sizeof(why));
    assert_string_equal(why, want);
    uvp_promise_release(p[i]);
  }
  assert_int_equal(arg_freed, 4);
  run_loop(f);
}

static void test_caller_closes_mid_call(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p;
  assert_int_equal(
      uvp_call_start(f->ctx, t.ctx, fn_long, NULL, count_arg_free, &p), 0);
  wait_ran(f);
  uvp_ctx_t *caller = close_ctx(f);
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECLOSED);
  uvp_promise_release(p);
  run_loop(f); /* the closed caller waits for the answer */
  assert_int_equal(cut_code, UV_ECANCELED);
  char want[64];
  snprintf(want, sizeof(want), "the caller's context %p cut the call",
           (void *)caller);
  assert_non_null(strstr(cut_why, want));
  assert_non_null(strstr(cut_why, "context closed"));
  assert_int_equal(arg_freed, 1);
  target_join(&t);
}

static uvp_ctx_t *fiber_ctx;
static uvp_ret_t fiber_calls(void *arg) {
  target_t *t = arg;
  uvp_promise_t *p;
  if (uvp_call_start(fiber_ctx, t->ctx, fn_value, (void *)(intptr_t)7, NULL,
                     &p) != 0)
    return uvp_ret_reject(UV_EINVAL, NULL, NULL);
  uvp_outcome_t o;
  int rc = uvp_await(p, &o);
  char *s = rc == 0 ? strdup(o.value) : NULL;
  uvp_promise_release(p);
  return rc == 0 ? uvp_ret_value(s, free) : uvp_ret_reject(rc, NULL, NULL);
}

static void test_fiber_awaits(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  uvp_promise_t *p;
  fiber_ctx = f->ctx;
  assert_int_equal(uvp_fiber_spawn(f->ctx, fiber_calls, &t, NULL, &p), 0);
  run_until_settled(f, p);
  assert_int_equal(uvp_promise_state(p), UVP_FULFILLED);
  assert_string_equal(uvp_promise_value(p), "v7");
  uvp_promise_release(p);
  caller_join(f, &t);
}

static uvp_ret_t fn_here(uvp_ctx_t *target, void *arg) {
  *(uvp_ctx_t **)arg = target;
  return uvp_ret_value((void *)(uintptr_t)42, NULL);
}

static void test_call_to_itself(void **state) {
  fixture_t *f = *state;
  uvp_ctx_t *seen = NULL;
  uvp_promise_t *p;
  assert_int_equal(uvp_call_start(f->ctx, f->ctx, fn_here, &seen, NULL, &p), 0);
  assert_null(seen); /* never inside the call */
  run_until_settled(f, p);
  assert_ptr_equal(seen, f->ctx);
  assert_ptr_equal(uvp_promise_value(p), (void *)(uintptr_t)42);
  uvp_promise_release(p);
  /* And torn down with a call queued to itself: ends once. */
  assert_int_equal(uvp_call_start(f->ctx, f->ctx, fn_here, &seen, NULL, &p), 0);
  close_ctx(f);
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECLOSED);
  uvp_promise_release(p);
}

/* ---- a thread with no context ----------------------------------------- */

typedef struct post_s {
  target_t *t;
  uv_sem_t done;
  atomic_int code;
  char got[16];
  atomic_int n;
} post_t;

static void post_done(void *arg, int code, void *value, uvp_free_cb free_cb) {
  post_t *ps = arg;
  ps->code = code;
  if (code == 0)
    snprintf(ps->got, sizeof(ps->got), "%s", (char *)value);
  if (free_cb != NULL)
    free_cb(value);
  ps->n++;
  uv_sem_post(&ps->done);
}

static void poster(void *arg) {
  post_t *ps = arg;
  int rc = uvp_call_post(ps->t->ctx, fn_value, (void *)(intptr_t)5,
                         count_arg_free, post_done, ps);
  if (rc != 0) {
    fprintf(stderr, "uvp_call_post: %d\n", rc);
    abort();
  }
  uv_sem_wait(&ps->done);
}

static void test_thread_without_context(void **state) {
  (void)state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  post_t ps = {.t = &t};
  assert_int_equal(uv_sem_init(&ps.done, 0), 0);
  uv_thread_t th;
  assert_int_equal(uv_thread_create(&th, poster, &ps), 0);
  assert_int_equal(uv_thread_join(&th), 0);
  assert_int_equal(ps.code, 0);
  assert_string_equal(ps.got, "v5");
  assert_int_equal(ps.n, 1);
  assert_int_equal(arg_freed, 1);
  /* Freed by done, on the target's thread. */
  assert_int_equal(freed_on_other, 1);
  assert_int_equal(uvp_call_post(NULL, fn_value, NULL, NULL, post_done, &ps),
                   UV_EINVAL);
  target_join(&t);
  uv_sem_destroy(&ps.done);
}

/* ---- both sides closing at once ----------------------------------------- */

static atomic_int started_calls;
static target_t *peer_of[2];

static uvp_ret_t fn_quick(uvp_ctx_t *target, void *arg) {
  (void)target;
  (void)arg;
  return uvp_ret_value(NULL, NULL);
}

/* On a peer's thread: 200 calls to the other peer, some to be cut. */
static uvp_ret_t start_calls(uvp_ctx_t *ctx, void *arg) {
  int me = (int)(intptr_t)arg;
  for (int i = 0; i < 200; i++) {
    uvp_promise_t *p;
    if (uvp_call_start(ctx, peer_of[!me]->ctx, i % 2 ? fn_quick : fn_long, NULL,
                       count_arg_free, &p) != 0)
      break; /* the other is closed: refused, nothing started */
    started_calls++;
    if (i % 3 == 0)
      (void)uvp_promise_cancel(p);
    uvp_promise_release(p);
  }
  return uvp_ret_pass();
}

static void started(void *arg, int code, void *value, uvp_free_cb free_cb) {
  (void)code;
  (void)value;
  (void)free_cb;
  uv_sem_post(arg);
}

/* Two targets, a and b, each running `start` on its own loop thread (with
 * 0 and 1: which of peer_of it is), back once both have. */
static void start_pair(target_t *a, target_t *b, uvp_call_fn start) {
  target_start(a);
  target_start(b);
  cur = a;
  peer_of[0] = a;
  peer_of[1] = b;
  uv_sem_t sem;
  assert_int_equal(uv_sem_init(&sem, 0), 0);
  assert_int_equal(uvp_call_post(a->ctx, start, (void *)0, NULL, started, &sem),
                   0);
  assert_int_equal(uvp_call_post(b->ctx, start, (void *)1, NULL, started, &sem),
                   0);
  uv_sem_wait(&sem);
  uv_sem_wait(&sem);
  uv_sem_destroy(&sem);
}

static void test_both_close_at_once(void **state) {
  (void)state;
  for (int round = 0; round < 20; round++) {
    setup_target();
    started_calls = 0;
    target_t a, b;
    start_pair(&a, &b, start_calls);
    /* Both close now, their calls to each other in flight both ways. */
    uv_async_send(&a.stop);
    uv_async_send(&b.stop);
    assert_int_equal(uv_thread_join(&a.th), 0);
    assert_int_equal(uv_thread_join(&b.th), 0);
    assert_int_equal(a.close_rc, 0);
    assert_int_equal(b.close_rc, 0);
    assert_int_equal(a.loop_rc, 0);
    assert_int_equal(b.loop_rc, 0);
    /* Each call ended once on its target: its arg_free ran once. */
    assert_int_equal(arg_freed, started_calls);
  }
}

/* Both close at once, each holding values it followed on the other: the
 * promises holding them are let go by the teardown's sweep (the handler
 * of a 10-minute timer's promise holds each), whose release of the
 * other's promise must not take the other's lock under its own (TSan's
 * lock-order check; with both at once, a deadlock). */
static atomic_int followed;
static uvp_ret_t count_followed(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  if (in->status == 0 && in->value != NULL && strcmp(in->value, "later") == 0)
    followed++;
  return uvp_ret_pass();
}
static uvp_ret_t never_cb(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_pass();
}
static void release_arg(void *p) { uvp_promise_release(p); }
static uvp_ret_t start_follows(uvp_ctx_t *ctx, void *arg) {
  int me = (int)(intptr_t)arg;
  uvp_promise_t *never; /* a timer's: its record holds it to the sweep */
  if (uvp_delay(ctx, 600000, NULL, NULL, 0, &never) != 0)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  for (int i = 0; i < 20; i++) {
    uvp_promise_t *p;
    if (uvp_call_start(ctx, peer_of[!me]->ctx, fn_follow, (void *)0,
                       count_arg_free, &p) != 0)
      break;
    started_calls++;
    (void)uvp_promise_on(p, UVP_ON_FULFILLED, count_followed, NULL, NULL);
    /* Held until the sweep drops never's handler. */
    if (uvp_promise_on_full(never, UVP_ON_BOTH, never_cb, uvp_promise_retain(p),
                            release_arg, NULL) != 0)
      uvp_promise_release(p);
    uvp_promise_release(p);
  }
  uvp_promise_release(never);
  return uvp_ret_pass();
}

static void test_both_close_following(void **state) {
  (void)state;
  for (int round = 0; round < 10; round++) {
    setup_target();
    started_calls = 0;
    followed = 0;
    target_t a, b;
    start_pair(&a, &b, start_follows);
    assert_int_equal(started_calls, 40);
    uint64_t t0 = uv_hrtime();
    while (followed < 40 && uv_hrtime() - t0 < 10000000000ull)
      uv_sleep(1);
    assert_int_equal(followed, 40);
    uv_async_send(&a.stop);
    uv_async_send(&b.stop);
    assert_int_equal(uv_thread_join(&a.th), 0);
    assert_int_equal(uv_thread_join(&b.th), 0);
    assert_int_equal(a.close_rc, 0);
    assert_int_equal(b.close_rc, 0);
    assert_int_equal(a.loop_rc, 0);
    assert_int_equal(b.loop_rc, 0);
    assert_int_equal(arg_freed, 40);
    /* Every followed value freed once, on its owner's thread. */
    assert_int_equal(freed_on_other, 40);
  }
}

/* uvp_call_set_limit: the calls in flight to one target are bounded;
 * past the bound a call is refused (UV_ENOBUFS, nothing started, its arg
 * freed), and an answer makes room again.  Another target
 * (the context itself) has its own count. */
static void test_limit_per_pair(void **state) {
  fixture_t *f = *state;
  target_t t;
  setup_target();
  target_start(&t);
  cur = &t;
  assert_int_equal(uvp_call_set_limit(NULL, 2), UV_EINVAL);
  assert_int_equal(uvp_call_set_limit(f->ctx, 2), 0);
  uvp_promise_t *p[2], *q, *self;
  uvp_ctx_t *where = NULL;
  for (int i = 0; i < 2; i++)
    assert_int_equal(uvp_call_start(f->ctx, t.ctx, fn_long, NULL, NULL, &p[i]),
                     0);
  assert_int_equal(
      uvp_call_start(f->ctx, t.ctx, fn_value, NULL, count_arg_free, &q),
      UV_ENOBUFS);
  assert_int_equal(arg_freed, 1); /* by the refusal (uvp.h, "Handing over") */
  arg_freed = 0;
  assert_int_equal(uvp_call_start(f->ctx, f->ctx, fn_here, &where, NULL, &self),
                   0);
  run_until_settled(f, self);
  assert_int_equal(uvp_promise_state(self), UVP_FULFILLED);
  assert_ptr_equal(where, f->ctx);
  uvp_promise_release(self);
  /* One answer (a cut) makes room for one more. */
  assert_int_equal(uvp_promise_cancel(p[0]), 0);
  uvp_promise_release(p[0]);
  uint64_t t0 = uv_hrtime();
  int rc;
  while ((rc = uvp_call_start(f->ctx, t.ctx, fn_value, NULL, NULL, &q)) ==
             UV_ENOBUFS &&
         uv_hrtime() - t0 < 10000000000ull) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
  }
  assert_int_equal(rc, 0);
  run_until_settled(f, q);
  assert_int_equal(uvp_promise_state(q), UVP_FULFILLED);
  uvp_promise_release(q);
  /* 0: no bound. */
  assert_int_equal(uvp_call_set_limit(f->ctx, 0), 0);
  uvp_promise_t *more[4];
  for (int i = 0; i < 4; i++)
    assert_int_equal(
        uvp_call_start(f->ctx, t.ctx, fn_value, NULL, NULL, &more[i]), 0);
  for (int i = 0; i < 4; i++) {
    run_until_settled(f, more[i]);
    uvp_promise_release(more[i]);
  }
  assert_int_equal(uvp_promise_cancel(p[1]), 0);
  uvp_promise_release(p[1]);
  caller_join(f, &t);
}

static void test_errors(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *p;
  assert_int_equal(uvp_call_start(f->ctx, NULL, fn_value, NULL, NULL, &p),
                   UV_EINVAL);
  assert_int_equal(uvp_call_start(f->ctx, f->ctx, NULL, NULL, NULL, &p),
                   UV_EINVAL);
  assert_int_equal(uvp_call_start(f->ctx, f->ctx, fn_value, NULL, NULL, NULL),
                   UV_EINVAL);
  assert_int_equal(uvp_call_start(NULL, f->ctx, fn_value, NULL, NULL, &p),
                   UV_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(test_value_moves),
      FIXTURE_TEST(test_batch_shares_wakeup),
      FIXTURE_TEST(test_rejection_crosses),
      FIXTURE_TEST(test_followed_promise),
      FIXTURE_TEST(test_cancel_reaches_target),
      FIXTURE_TEST(test_cancel_before_run),
      FIXTURE_TEST(test_dump_both_sides),
      FIXTURE_TEST(test_recorder_flow),
      FIXTURE_TEST(test_target_cut_rejects_caller),
      FIXTURE_TEST(test_deadline_carried),
      FIXTURE_TEST(test_target_closes_mid_call),
      FIXTURE_TEST(test_caller_closes_mid_call),
      FIXTURE_TEST(test_fiber_awaits),
      FIXTURE_TEST(test_call_to_itself),
      FIXTURE_TEST(test_thread_without_context),
      FIXTURE_TEST(test_both_close_at_once),
      FIXTURE_TEST(test_both_close_following),
      FIXTURE_TEST(test_limit_per_pair),
      FIXTURE_TEST(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
