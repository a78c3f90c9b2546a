/* The flight recorder (uvp_ctx_set_recorder, uvp_ctx_recorder_write): the
 * JSON of a recorded run parses (jansson, a real parser) and is well
 * formed (every begin has its end, on its track or by its id; flows pair
 * up; times never go back on a track), a known run's events are there in
 * order, the ring overwrites without growing (1e6 events, no allocation
 * while recording), a write to a pipe nobody reads returns soon and one
 * to a slow reader's waits for it and arrives whole, strings go out as
 * UTF-8 (invalid bytes as U+FFFD), the stall detector writes what came
 * before a stall and the stall names its culprit, settles from other
 * threads are recorded as the loop applies them (suite threads: TSan), and
 * bad calls get their documented errors. */
#include <fcntl.h>
#include <stdatomic.h>
#include <unistd.h>

#include <jansson.h>

#include "helpers.h"

#define RING (256 * 1024)

/* ---- what a write produced ------------------------------------------------
 */

typedef struct {
  char *buf;
  size_t len, cap;
  int calls;
} sink_t;

static int sink_write(void *arg, const char *text, size_t len) {
  sink_t *s = arg;
  if (s->len + len + 1 > s->cap) {
    size_t cap = (s->len + len + 1) * 2;
    char *b = realloc(s->buf, cap);
    assert_non_null(b);
    s->buf = b;
    s->cap = cap;
  }
  memcpy(s->buf + s->len, text, len);
  s->len += len;
  s->buf[s->len] = '\0';
  s->calls++;
  return 0;
}

static void sink_free(sink_t *s) {
  free(s->buf);
  memset(s, 0, sizeof(*s));
}

/* Write ctx's recorder in `format` into s; returns the write's result. */
static int write_to(uvp_ctx_t *ctx, int format, uint64_t last_ms, sink_t *s) {
  uvp_record_opts_t o = {format, last_ms, NULL, sink_write, s};
  return uvp_ctx_recorder_write(ctx, &o);
}

/* ---- well formed -----------------------------------------------------------
 */

/* A track's open B slices (a stack), and its last time. */
typedef struct {
  long tid;
  double last;
  int depth;
  char names[64][48];
} track_t;

typedef struct {
  track_t tracks[512];
  int ntracks;
  json_t *async_open; /* id -> name */
  json_t *flows;      /* id -> "s" or "f" seen */
  int events;
} check_t;

static track_t *track(check_t *c, long tid) {
  for (int i = 0; i < c->ntracks; i++)
    if (c->tracks[i].tid == tid)
      return &c->tracks[i];
  assert_true(c->ntracks < 512);
  track_t *t = &c->tracks[c->ntracks++];
  memset(t, 0, sizeof(*t));
  t->tid = tid;
  t->last = -1;
  return t;
}

static const char *str(json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s != NULL ? s : "";
}

/* Parses the whole document, checks every event, and returns it (the
 * caller's reference). */
static json_t *check_json(const char *text, int *nevents) {
  json_error_t err;
  json_t *doc = json_loads(text, 0, &err);
  if (doc == NULL)
    fail_msg("not JSON: %s at line %d", err.text, err.line);
  assert_true(json_is_object(doc));
  json_t *events = json_object_get(doc, "traceEvents");
  assert_true(json_is_array(events));
  assert_true(json_is_object(json_object_get(doc, "otherData")));
  check_t *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  c->async_open = json_object();
  c->flows = json_object();
  size_t i;
  json_t *e;
  json_array_foreach(events, i, e) {
    assert_true(json_is_object(e));
    const char *ph = str(e, "ph");
    assert_true(json_is_integer(json_object_get(e, "pid")));
    assert_true(json_is_integer(json_object_get(e, "tid")));
    long tid = (long)json_integer_value(json_object_get(e, "tid"));
    if (strcmp(ph, "M") == 0)
      continue;
    c->events++;
    json_t *ts = json_object_get(e, "ts");
    assert_true(json_is_number(ts));
    double t = json_number_value(ts);
    assert_true(t >= 0);
    if (strchr("BEXisf", ph[0]) != NULL && ph[1] == '\0') {
      track_t *k = track(c, tid);
      if (t < k->last)
        fail_msg("event %zu (%s) on track %ld goes back: %f < %f", i, ph, tid,
                 t, k->last);
      k->last = t;
      if (strcmp(ph, "B") == 0) {
        assert_true(k->depth < 64);
        snprintf(k->names[k->depth++], 48, "%s", str(e, "name"));
      } else if (strcmp(ph, "E") == 0) {
        if (k->depth == 0)
          fail_msg("event %zu: an end without a begin on track %ld", i, tid);
        k->depth--;
      } else if (strcmp(ph, "X") == 0) {
        assert_true(json_is_number(json_object_get(e, "dur")));
      } else if (ph[0] == 's' || ph[0] == 'f') {
        const char *id = str(e, "id");
        assert_true(*id != '\0');
        json_t *seen = json_object_get(c->flows, id);
        if (ph[0] == 's') {
          if (seen != NULL)
            fail_msg("flow %s begins twice", id);
          json_object_set_new(c->flows, id, json_string("s"));
        } else {
          if (seen == NULL || strcmp(json_string_value(seen), "s") != 0)
            fail_msg("flow %s ends without its beginning before", id);
          json_object_set_new(c->flows, id, json_string("f"));
        }
      }
    } else if (strcmp(ph, "b") == 0 || strcmp(ph, "e") == 0) {
      const char *id = str(e, "id");
      assert_true(*id != '\0');
      json_t *open = json_object_get(c->async_open, id);
      if (ph[0] == 'b') {
        if (open != NULL)
          fail_msg("async %s begins twice", id);
        json_object_set_new(c->async_open, id, json_string(str(e, "name")));
      } else {
        if (open == NULL)
          fail_msg("async %s ends without a begin", id);
        json_object_del(c->async_open, id);
      }
    } else {
      fail_msg("unknown phase %s", ph);
    }
  }
  for (int k = 0; k < c->ntracks; k++)
    if (c->tracks[k].depth != 0)
      fail_msg("track %ld: %d slices not ended (%s)", c->tracks[k].tid,
               c->tracks[k].depth, c->tracks[k].names[c->tracks[k].depth - 1]);
  if (json_object_size(c->async_open) != 0)
    fail_msg("%zu async slices not ended", json_object_size(c->async_open));
  const char *key;
  json_t *v;
  json_object_foreach(c->flows, key, v) {
    if (strcmp(json_string_value(v), "f") != 0)
      fail_msg("flow %s has no end", key);
  }
  if (nevents != NULL)
    *nevents = c->events;
  json_decref(c->async_open);
  json_decref(c->flows);
  free(c);
  return doc;
}

/* The names of the events of phase `ph` on the track named `track`, in
 * order, joined by spaces, into buf. */
static void track_names(json_t *doc, const char *thread, const char *ph,
                        char *buf, size_t cap) {
  json_t *events = json_object_get(doc, "traceEvents");
  long tid = -1;
  size_t i;
  json_t *e;
  json_array_foreach(events, i, e) {
    if (strcmp(str(e, "ph"), "M") == 0 &&
        strcmp(str(e, "name"), "thread_name") == 0 &&
        strstr(str(json_object_get(e, "args"), "name"), thread) != NULL)
      tid = (long)json_integer_value(json_object_get(e, "tid"));
  }
  buf[0] = '\0';
  assert_true(tid >= 0);
  size_t n = 0;
  json_array_foreach(events, i, e) {
    if (json_integer_value(json_object_get(e, "tid")) != tid ||
        strcmp(str(e, "ph"), ph) != 0)
      continue;
    int k = snprintf(buf + n, cap - n, "%s%s", n ? "|" : "", str(e, "name"));
    assert_true(k > 0 && (size_t)k < cap - n);
    n += (size_t)k;
  }
}

/* How many events have phase ph and name `name` (NULL: any). */
static int count_events(json_t *doc, const char *ph, const char *name) {
  int n = 0;
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(doc, "traceEvents"), i, e) {
    if (strcmp(str(e, "ph"), ph) == 0 &&
        (name == NULL || strcmp(str(e, "name"), name) == 0))
      n++;
  }
  return n;
}

/* ---- a known run --------------------------------------------------------- */

static uvp_ctx_t *g_ctx;

/* Names itself, sleeps on a timer (uvp's work), then waits for a promise
 * nothing settles: its group's cancel cuts it. */
static uvp_ret_t sleeper(void *arg) {
  uvp_promise_t **never = arg;
  assert_int_equal(uvp_fiber_set_name("sleeper"), 0);
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(g_ctx, 2, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_await(d, NULL), 0);
  uvp_promise_release(d);
  uvp_outcome_t out;
  assert_int_equal(uvp_await(*never, &out), UV_ECANCELED);
  return uvp_ret_pass();
}

static uvp_ret_t canceller(void *arg) {
  uvp_group_t *g = arg;
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(g_ctx, 5, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_await(d, NULL), 0);
  uvp_promise_release(d);
  assert_int_equal(uvp_group_cancel(g), 0);
  return uvp_ret_pass();
}

static void known_run(fixture_t *f) {
  g_ctx = f->ctx;
  uvp_group_t *g;
  uvp_promise_t *never, *c, *join;
  assert_int_equal(uvp_promise_new(f->ctx, &never), 0);
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  assert_int_equal(uvp_group_set_name(g, "workers"), 0);
  assert_int_equal(uvp_group_spawn(g, sleeper, &never, NULL), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, canceller, g, NULL, &c), 0);
  assert_int_equal(uvp_group_close(g), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  run_loop(f);
  assert_int_not_equal(uvp_promise_state(join), UVP_PENDING);
  uvp_promise_release(join);
  uvp_promise_release(c);
  uvp_promise_release(never);
  uvp_group_release(g);
}

static void json_of_a_known_run(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, RING, 0), 0);
  known_run(f);
  sink_t s = {0};
  int n = write_to(f->ctx, UVP_RECORD_JSON, 0, &s);
  assert_true(n > 0);
  int nevents;
  json_t *doc = check_json(s.buf, &nevents);
  if (getenv("T_DUMP") != NULL)
    fputs(s.buf, stderr);
  char names[2048];
  /* The sleeper's track: its life, and in it each run and await. */
  track_names(doc, "fiber \"sleeper\"", "B", names, sizeof(names));
  assert_string_equal(names, "fiber|run|await timer|run|await promise|run");
  /* Cut while it waited: the cut lands on its track, linked to the
   * cancel on the canceller's. */
  track_names(doc, "fiber \"sleeper\"", "i", names, sizeof(names));
  assert_string_equal(names, "cut|cut");
  /* The timers are work on the "timer" track, two of them; the group's
   * slice; the cancel, its cut of the sleeper, linked by a flow. */
  assert_int_equal(count_events(doc, "b", "timer"), 2);
  assert_int_equal(count_events(doc, "e", "timer"), 2);
  assert_int_equal(count_events(doc, "b", "group"), 1);
  assert_true(count_events(doc, "i", "cancel") >= 1);
  assert_true(count_events(doc, "i", "cut") >= 1);
  assert_true(count_events(doc, "s", "cause") >= 1);
  assert_int_equal(count_events(doc, "s", "spawn"), 2);
  assert_true(count_events(doc, "B", "poll") >= 1);
  assert_true(count_events(doc, "B", "uvp") >= 1);
  json_decref(doc);
  sink_free(&s);

  /* The text form: the same events, a line each, in the order they
   * happened. */
  n = write_to(f->ctx, UVP_RECORD_TEXT, 0, &s);
  assert_true(n > 0);
  const char *want[] = {"group ",
                        " named \"workers\"",
                        "spawned fiber",
                        "spawned fiber",
                        "named \"sleeper\"",
                        "started timer",
                        "parked at",
                        "started timer",
                        "promise ",
                        "resumed (fulfilled)",
                        "cancellation ",
                        "cut ",
                        "resumed (ECANCELED)",
                        "ended"};
  const char *at = s.buf;
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    const char *p = strstr(at, want[i]);
    if (p == NULL)
      fail_msg("no \"%s\" after %.200s", want[i], at);
    at = p + 1;
  }
  sink_free(&s);
}

/* ---- the ring: fixed, overwritten ---------------------------------------- */

static atomic_size_t allocs;
static void *count_malloc(size_t n) {
  atomic_fetch_add(&allocs, 1);
  return malloc(n);
}
static void *count_realloc(void *p, size_t n) {
  atomic_fetch_add(&allocs, 1);
  return realloc(p, n);
}
static void *count_calloc(size_t k, size_t n) {
  atomic_fetch_add(&allocs, 1);
  return calloc(k, n);
}

static uvp_promise_t *pa, *pb;
static size_t steps;

static uvp_ret_t ping(void *arg) {
  uvp_promise_t **mine = arg, **other = mine == &pa ? &pb : &pa;
  for (size_t i = 0; i < steps; i++) {
    assert_int_equal(uvp_promise_new(g_ctx, mine), 0);
    if (*other != NULL)
      assert_int_equal(uvp_promise_resolve(*other, NULL, NULL), 0);
    assert_int_equal(uvp_await(*mine, NULL), 0);
    uvp_promise_release(*mine);
    *mine = NULL;
  }
  if (*other != NULL)
    assert_int_equal(uvp_promise_resolve(*other, NULL, NULL), 0);
  return uvp_ret_pass();
}

static void pingpong(uv_loop_t *loop, size_t n) {
  uvp_promise_t *a, *b;
  steps = n;
  pa = pb = NULL;
  assert_int_equal(uvp_fiber_spawn(g_ctx, ping, &pa, NULL, &a), 0);
  assert_int_equal(uvp_fiber_spawn(g_ctx, ping, &pb, NULL, &b), 0);
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  uvp_promise_release(a);
  uvp_promise_release(b);
}

static void overwrites_without_growing(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(
      uvp_replace_allocator(count_malloc, count_realloc, count_calloc, free),
      0);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uvp_ctx_new(&loop, &g_ctx), 0);
  assert_int_equal(uvp_ctx_set_recorder(g_ctx, 64 * 1024, 0), 0);
  uvp_recorder_stats_t st;
  assert_int_equal(uvp_ctx_recorder_stats(g_ctx, &st), 0);
  assert_int_equal(st.bytes, 64 * 1024);
  size_t cap = st.capacity;
  assert_true(cap >= 800 && cap < 1024);
  pingpong(&loop, 1000); /* warm: stacks, slabs */
  size_t before = atomic_load(&allocs);
  /* An event an await (a park that hands off), two awaits a step. */
  pingpong(&loop, 500000);
  assert_int_equal(atomic_load(&allocs), before);
  assert_int_equal(uvp_ctx_recorder_stats(g_ctx, &st), 0);
  assert_true(st.events >= 1000000);
  assert_int_equal(st.kept, cap);
  assert_int_equal(st.capacity, cap);
  assert_int_equal(st.bytes, 64 * 1024);
  /* What is left is the last of it: the fibers begun before the ring's
   * first event begin there. */
  sink_t s = {0};
  assert_int_equal(write_to(g_ctx, UVP_RECORD_JSON, 0, &s), (int)cap);
  int nevents;
  json_t *doc = check_json(s.buf, &nevents);
  assert_true(count_events(doc, "B", "fiber") == 2);
  assert_true(count_events(doc, "B", "run") > 100);
  json_decref(doc);
  sink_free(&s);
  assert_int_equal(uvp_ctx_close(g_ctx), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(uvp_replace_allocator(malloc, realloc, calloc, free), 0);
}

/* ---- strings: their own ring, overwritten too ---------------------------- */

static uvp_ret_t renamer(void *arg) {
  (void)arg;
  char name[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(name, sizeof(name), "name-%d-%s", i, i % 2 ? "odd" : "even");
    assert_int_equal(uvp_fiber_set_name(name), 0);
  }
  return uvp_ret_pass();
}

static void strings_wrap(void **state) {
  fixture_t *f = *state;
  /* 4 KiB: 512 bytes of strings, each name 14 to 18 of them. */
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 4096, UVP_RECORD_FIBERS), 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_fiber_spawn(f->ctx, renamer, NULL, NULL, &p), 0);
  run_until_settled(f, p);
  uvp_promise_release(p);
  uvp_recorder_stats_t st;
  assert_int_equal(uvp_ctx_recorder_stats(f->ctx, &st), 0);
  assert_true(st.str_bytes > 10 * 512);
  sink_t s = {0};
  assert_true(write_to(f->ctx, UVP_RECORD_TEXT, 0, &s) > 0);
  /* The last names whole, in order; those of events still held whose
   * string went round are said to be so. */
  const char *a = strstr(s.buf, "named \"name-998-even\"");
  const char *b = strstr(s.buf, "named \"name-999-odd\"");
  assert_non_null(a);
  assert_non_null(b);
  assert_true(a < b);
  assert_non_null(strstr(s.buf, "named \"(overwritten)\""));
  sink_free(&s);
  assert_true(write_to(f->ctx, UVP_RECORD_JSON, 0, &s) > 0);
  json_decref(check_json(s.buf, NULL));
  /* Its track is named by its last name (its spawn went round). */
  assert_non_null(strstr(s.buf, "\"name\":\"fiber \\\"name-999-odd\\\"\"}"));
  sink_free(&s);
}

/* ---- a reader that does not read ------------------------------------------
 */

static void pipe_nobody_reads(void **state) {
  fixture_t *f = *state;
  g_ctx = f->ctx;
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 4 * 1024 * 1024, 0), 0);
  pingpong(&f->loop, 20000); /* a ring's worth: far more than a pipe holds */
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  FILE *w = fdopen(fds[1], "w");
  assert_non_null(w);
  uint64_t t0 = uv_hrtime();
  uvp_record_opts_t o = {UVP_RECORD_JSON, 0, w, NULL, NULL};
  assert_int_equal(uvp_ctx_recorder_write(f->ctx, &o), UV_EAGAIN);
  uint64_t ms = (uv_hrtime() - t0) / 1000000;
  /* It gave up on a reader that takes nothing after a second of it: the
   * rest of the time is the writer's. */
  assert_true(ms < (RUNNING_ON_VALGRIND ? 60000u : 5000u));
  /* The loop goes on: a timer still fires. */
  uvp_promise_t *d;
  assert_int_equal(uvp_delay(f->ctx, 1, NULL, NULL, 0, &d), 0);
  run_until_settled(f, d);
  assert_int_equal(uvp_promise_state(d), UVP_FULFILLED);
  uvp_promise_release(d);
  fclose(w);
  close(fds[0]);
}

/* A reader slower than the writer, that never stops reading: the write
 * waits for it and the whole trace arrives (issue 69: `--trace >(wc -c)`
 * was cut at 56-105 KB of 167 KB, UV_EAGAIN). */
typedef struct {
  int fd;
  sink_t got;
} slow_reader_t;

static void slow_read(void *arg) {
  slow_reader_t *r = arg;
  char b[1024];
  ssize_t n;
  while ((n = read(r->fd, b, sizeof(b))) != 0) {
    if (n < 0 && errno == EINTR)
      continue;
    assert_true(n > 0);
    sink_write(&r->got, b, (size_t)n);
    uv_sleep(1); /* at most 1 KiB a millisecond */
  }
}

static void pipe_slow_reader(void **state) {
  fixture_t *f = *state;
  g_ctx = f->ctx;
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 4 * 1024 * 1024, 0), 0);
  pingpong(&f->loop, 2000); /* far more than a pipe holds */
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  slow_reader_t r = {fds[0], {0}};
  uv_thread_t th;
  assert_int_equal(uv_thread_create(&th, slow_read, &r), 0);
  FILE *w = fdopen(fds[1], "w");
  assert_non_null(w);
  uvp_record_opts_t o = {UVP_RECORD_JSON, 0, w, NULL, NULL};
  int n = uvp_ctx_recorder_write(f->ctx, &o);
  assert_int_equal(fclose(w), 0);
  assert_int_equal(uv_thread_join(&th), 0);
  close(fds[0]);
  assert_true(n > 4000); /* two fibers' parks, each pong's */
  /* Many times what the pipe holds, and whole: it parses. */
  assert_true(r.got.len > 4 * 65536);
  int nevents = 0;
  json_t *doc = check_json(r.got.buf, &nevents);
  json_decref(doc);
  assert_true(nevents > 0);
  sink_free(&r.got);
}

/* ---- strings ----------------------------------------------------------------
 */

/* Valid UTF-8, a control, and bytes that are no UTF-8: a stray
 * continuation, a lead without its tail, a surrogate (ED A0 80), an
 * overlong '/' (C0 AF). */
#define ODD_NAME                                                               \
  "caf\xc3\xa9 \xe2\x98\x95 \x01 \x80 \xe2\x98 \xed\xa0\x80 \xc0\xaf"

static int odd_describe(void *arg, char *buf, size_t cap) {
  (void)arg;
  return snprintf(buf, cap, "%s", ODD_NAME);
}
static void odd_cancel(uvp_promise_t *p, void *arg) {
  (void)p;
  (void)arg;
}

static void utf8_as_it_is(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, RING, 0), 0);
  /* What a binding's work says it waits for (a URL, a subject): UTF-8. */
  uvp_promise_t *a;
  assert_int_equal(uvp_promise_new(f->ctx, &a), 0);
  assert_int_equal(uvp_promise_set_cancel_described(a, odd_cancel, NULL, NULL,
                                                    "odd", odd_describe),
                   0);
  assert_int_equal(uvp_promise_resolve(a, NULL, NULL), 0);
  run_loop(f);
  uvp_promise_release(a);
  sink_t s = {0};
  assert_true(write_to(f->ctx, UVP_RECORD_JSON, 0, &s) > 0);
  /* Valid UTF-8 goes out as it is (no \u00c3\u00a9), and jansson, which
   * refuses invalid UTF-8, parses the whole. */
  assert_non_null(strstr(s.buf, "caf\xc3\xa9 \xe2\x98\x95 \\u0001 "));
  json_t *doc = check_json(s.buf, NULL);
  const char *want = "caf\xc3\xa9 \xe2\x98\x95 \x01 \xef\xbf\xbd "
                     "\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd"
                     "\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd";
  int found = 0;
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(doc, "traceEvents"), i, e) {
    if (strcmp(str(e, "name"), "odd") == 0 && strcmp(str(e, "ph"), "b") == 0 &&
        strcmp(str(json_object_get(e, "args"), "target"), want) == 0)
      found++;
  }
  assert_int_equal(found, 1);
  json_decref(doc);
  sink_free(&s);
}

/* ---- the stall detector's trigger -----------------------------------------
 */

static uvp_ret_t spin(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  uint64_t t0 = uv_hrtime();
  while (uv_hrtime() - t0 < 120 * 1000000u)
    ;
  return uvp_ret_pass();
}

/* The stall's culprit: its event names it (promise or fiber, and its
 * site), and a flow goes from the stall to the culprit's track (the
 * loop's for a handler, the fiber's own): the stall is found without
 * matching times. */
static void stall_names_its_culprit(json_t *doc, const char *key,
                                    const void *id, const char *track) {
  char want[32];
  snprintf(want, sizeof(want), "%p", id);
  json_t *evs = json_object_get(doc, "traceEvents");
  long to = -1; /* the culprit's track */
  size_t i;
  json_t *e;
  json_array_foreach(evs, i, e) {
    json_t *args = json_object_get(e, "args");
    if (strcmp(str(e, "name"), "thread_name") == 0 &&
        strncmp(str(args, "name"), track, strlen(track)) == 0)
      to = (long)json_integer_value(json_object_get(e, "tid"));
  }
  assert_true(to > 0);
  bool named = false;
  json_array_foreach(evs, i, e) {
    json_t *args = json_object_get(e, "args");
    if (strcmp(str(e, "ph"), "X") == 0 &&
        strcmp(str(e, "name"), "stall") == 0 &&
        strcmp(str(args, key), want) == 0 &&
        strstr(str(args, "site"), "test-recorder.c:") != NULL)
      named = true;
  }
  assert_true(named); /* the stall names it */
  /* One flow lands on the culprit's track, from the stalls' (tid 2). */
  const char *flow_id = NULL;
  int f = 0, s = 0;
  json_array_foreach(evs, i, e) {
    if (strcmp(str(e, "cat"), "stall") == 0 && strcmp(str(e, "ph"), "f") == 0 &&
        json_integer_value(json_object_get(e, "tid")) == to) {
      flow_id = str(e, "id");
      f++;
    }
  }
  assert_int_equal(f, 1);
  json_array_foreach(evs, i, e) {
    if (strcmp(str(e, "cat"), "stall") == 0 && strcmp(str(e, "ph"), "s") == 0 &&
        strcmp(str(e, "id"), flow_id) == 0 &&
        json_integer_value(json_object_get(e, "tid")) == 2)
      s++;
  }
  assert_int_equal(s, 1);
}

static uvp_ret_t spinning_fiber(void *arg) {
  uvp_promise_t *d = arg;
  assert_int_equal(uvp_await(d, NULL), 0);
  spin(NULL, NULL);
  return uvp_ret_pass();
}

static void stall_writes_what_came_before(void **state) {
  fixture_t *f = *state;
  sink_t s = {0};
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, RING, 0), 0);
  uvp_record_opts_t o = {UVP_RECORD_JSON, 2000, NULL, sink_write, &s};
  assert_int_equal(uvp_ctx_set_recorder_on_stall(f->ctx, &o), 0);
  assert_int_equal(uvp_ctx_set_stall(f->ctx, 50, NULL, NULL), 0);
  /* The default report on stderr is fine; the write goes to s. */
  uvp_promise_t *d, *t;
  assert_int_equal(uvp_delay(f->ctx, 1, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_promise_then(d, spin, NULL, &t), 0);
  run_loop(f);
  assert_non_null(s.buf);
  json_t *doc = check_json(s.buf, NULL);
  assert_int_equal(count_events(doc, "X", "stall"), 1);
  assert_int_equal(count_events(doc, "b", "timer"), 1);
  /* A handler's stall: the promise whose handler it was (then's). */
  stall_names_its_culprit(doc, "promise", t, "loop");
  json_decref(doc);
  uvp_promise_release(d);
  uvp_promise_release(t);
  sink_free(&s);

  /* A fiber's. */
  uvp_promise_t *fb;
  assert_int_equal(uvp_delay(f->ctx, 1, NULL, NULL, 0, &d), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, spinning_fiber, d, NULL, &fb), 0);
  run_loop(f);
  assert_int_equal(uvp_ctx_set_stall(f->ctx, 0, NULL, NULL), 0);
  assert_non_null(s.buf);
  doc = check_json(s.buf, NULL);
  char track[32];
  snprintf(track, sizeof(track), "fiber %p", (void *)fb);
  stall_names_its_culprit(doc, "fiber", fb, track);
  json_decref(doc);
  uvp_promise_release(d);
  uvp_promise_release(fb);
  sink_free(&s);
  assert_int_equal(uvp_ctx_set_recorder_on_stall(f->ctx, NULL), 0);
}

/* ---- settles from other threads -------------------------------------------
 */

#define POSTERS 4
#define EACH 200

static uvp_promise_t *posted[POSTERS * EACH];

static void poster(void *arg) {
  size_t k = (size_t)(uintptr_t)arg;
  for (size_t i = 0; i < EACH; i++)
    assert_int_equal(uvp_promise_resolve(posted[k * EACH + i], NULL, NULL), 0);
}

static uvp_ret_t awaiter(void *arg) {
  (void)arg;
  for (size_t i = 0; i < POSTERS * EACH; i++)
    assert_int_equal(uvp_await(posted[i], NULL), 0);
  return uvp_ret_pass();
}

static void settles_from_threads(void **state) {
  fixture_t *f = *state;
  g_ctx = f->ctx;
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, RING, 0), 0);
  for (size_t i = 0; i < POSTERS * EACH; i++)
    assert_int_equal(uvp_promise_new(f->ctx, &posted[i]), 0);
  uvp_promise_t *a;
  assert_int_equal(uvp_fiber_spawn(f->ctx, awaiter, NULL, NULL, &a), 0);
  uv_thread_t th[POSTERS];
  for (size_t k = 0; k < POSTERS; k++)
    assert_int_equal(uv_thread_create(&th[k], poster, (void *)(uintptr_t)k), 0);
  settle_ticking(f, a);
  for (size_t k = 0; k < POSTERS; k++)
    assert_int_equal(uv_thread_join(&th[k]), 0);
  assert_int_equal(uvp_promise_state(a), UVP_FULFILLED);
  uvp_promise_release(a);
  for (size_t i = 0; i < POSTERS * EACH; i++)
    uvp_promise_release(posted[i]);
  sink_t s = {0};
  assert_true(write_to(f->ctx, UVP_RECORD_JSON, 0, &s) > 0);
  json_t *doc = check_json(s.buf, NULL);
  assert_int_equal(count_events(doc, "i", "mail: resolve"), POSTERS * EACH);
  json_decref(doc);
  sink_free(&s);
}

/* ---- the window, off, errors ----------------------------------------------
 */

static void last_ms_and_off(void **state) {
  fixture_t *f = *state;
  g_ctx = f->ctx;
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, RING, UVP_RECORD_FIBERS), 0);
  pingpong(&f->loop, 10);
  usleep(50 * 1000);
  sink_t s = {0};
  /* Only fibers were recorded, all more than 20 ms ago. */
  assert_int_equal(write_to(f->ctx, UVP_RECORD_TEXT, 20, &s), 0);
  assert_true(write_to(f->ctx, UVP_RECORD_TEXT, 0, &s) >= 20);
  assert_null(strstr(s.buf, "poll"));
  sink_free(&s);
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 0, 0), 0);
  uvp_recorder_stats_t st;
  assert_int_equal(uvp_ctx_recorder_stats(f->ctx, &st), 0);
  assert_int_equal(st.bytes, 0);
  assert_int_equal(st.events, 0);
  assert_int_equal(write_to(f->ctx, UVP_RECORD_JSON, 0, &s), UV_ENOENT);
}

static void errors(void **state) {
  fixture_t *f = *state;
  sink_t s = {0};
  uvp_record_opts_t o = {UVP_RECORD_JSON, 0, NULL, sink_write, &s};
  assert_int_equal(uvp_ctx_set_recorder(NULL, RING, 0), UV_EINVAL);
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, 100, 0), UV_EINVAL);
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, RING, 1u << 20), UV_EINVAL);
  assert_int_equal(uvp_ctx_recorder_write(f->ctx, &o), UV_ENOENT);
  assert_int_equal(uvp_ctx_recorder_write(NULL, &o), UV_EINVAL);
  assert_int_equal(uvp_ctx_recorder_write(f->ctx, NULL), UV_EINVAL);
  o.format = 7;
  assert_int_equal(uvp_ctx_recorder_write(f->ctx, &o), UV_EINVAL);
  assert_int_equal(uvp_ctx_set_recorder_on_stall(f->ctx, &o), UV_EINVAL);
  o.format = UVP_RECORD_TEXT;
  o.write = NULL;
  assert_int_equal(uvp_ctx_recorder_write(f->ctx, &o), UV_EINVAL);
  assert_int_equal(uvp_ctx_recorder_stats(f->ctx, NULL), UV_EINVAL);
  /* A callback's error stops the write and is returned. */
  assert_int_equal(uvp_ctx_set_recorder(f->ctx, RING, 0), 0);
  o.write = sink_write;
  assert_true(uvp_ctx_recorder_write(f->ctx, &o) >= 0);
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_ctx_set_recorder(ctx, RING, 0), UVP_ECLOSED);
  assert_int_equal(uvp_ctx_recorder_write(ctx, &o), UVP_ECLOSED);
  sink_free(&s);
}

static void refused_off_thread_check(void *arg) {
  uvp_ctx_t *ctx = arg;
  uvp_recorder_stats_t st;
  assert_int_equal(uvp_ctx_set_recorder(ctx, RING, 0), UVP_ETHREAD);
  assert_int_equal(uvp_ctx_recorder_stats(ctx, &st), UVP_ETHREAD);
}

static void other_thread(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_set_checks(f->ctx, UVP_CHECK_THREAD), 0);
  run_on_other_thread(refused_off_thread_check, f->ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      FIXTURE_TEST(json_of_a_known_run),
      cmocka_unit_test(overwrites_without_growing),
      FIXTURE_TEST(strings_wrap),
      FIXTURE_TEST(utf8_as_it_is),
      FIXTURE_TEST(pipe_nobody_reads),
      FIXTURE_TEST(pipe_slow_reader),
      FIXTURE_TEST(stall_writes_what_came_before),
      FIXTURE_TEST(settles_from_threads),
      FIXTURE_TEST(last_ms_and_off),
      FIXTURE_TEST(errors),
      FIXTURE_TEST(other_thread),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
