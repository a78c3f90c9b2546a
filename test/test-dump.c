/* The task dump (uvp_ctx_dump_tasks): 100 000 tasks of four kinds (2 000
 * under valgrind) dumped as JSON lines, parsed (jansson) and checked line
 * by line against what each one awaits, then as text and as a summary;
 * what uvp's operations say they wait for (a file, a connection's peer,
 * the thread pool, a process, a timeout, a group, a library's own
 * description); slot formatters that fail or write garbage and too much;
 * a sink that fails; the listing of every pending promise
 * (UVP_DUMP_PROMISES); bad arguments. */
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#if defined(UVP_TEST_JANSSON)
#include <jansson.h>
#endif

#include "fs-helpers.h"
#include "sleeper.h"

/* ---- a sink into memory -------------------------------------------------- */

typedef struct sink_s {
  char *buf;
  size_t len, cap;
  int fail; /* returned from the write if not 0 */
} sink_t;

static int sink_write(void *arg, const char *text, size_t len) {
  sink_t *s = arg;
  if (s->fail != 0)
    return s->fail;
  if (s->len + len + 1 > s->cap) {
    size_t cap = s->cap == 0 ? 1 << 16 : s->cap;
    while (s->len + len + 1 > cap)
      cap *= 2;
    s->buf = realloc(s->buf, cap);
    assert_non_null(s->buf);
    s->cap = cap;
  }
  memcpy(s->buf + s->len, text, len);
  s->len += len;
  s->buf[s->len] = '\0';
  return 0;
}

static int dump_into(fixture_t *f, sink_t *s, int flags, size_t oldest) {
  s->len = 0;
  if (s->buf != NULL)
    s->buf[0] = '\0';
  uvp_dump_opts_t o = {flags, NULL, sink_write, s, oldest};
  return uvp_ctx_dump_tasks(f->ctx, &o);
}

static int count_lines(const char *s) {
  int n = 0;
  for (; *s != '\0'; s++)
    n += *s == '\n';
  return n;
}

/* ---- many tasks, each checked -------------------------------------------- */

enum { KINDS = 4 };

typedef struct many_s {
  uvp_ctx_t *ctx;
  int n;
  uvp_promise_t **p;      /* per task: the task's promise */
  uvp_promise_t **waited; /* what it waits on (fibers: their delay) */
} many_t;

static many_t m;

static uvp_ret_t parked(void *arg) {
  int i = (int)(intptr_t)arg;
  int rc = uvp_await(m.waited[i], NULL); /* a line of its own: checked */
  return uvp_ret_reject(rc != 0 ? rc : UV_EINVAL, NULL, NULL);
}

static uvp_ret_t ignore(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_pass();
}

#if defined(UVP_TEST_JANSSON)
/* What line `o` says, against task i (kind i % 4). */
static void check_task(json_t *o, int i, int line_no) {
  const char *task = json_string_value(json_object_get(o, "task"));
  const char *site = json_string_value(json_object_get(o, "site"));
  json_t *w = json_object_get(o, "waits_for");
  const char *kind = json_string_value(json_object_get(w, "kind"));
  const char *target = json_string_value(json_object_get(w, "target"));
  if (task == NULL || site == NULL || kind == NULL || target == NULL)
    fail_msg("line %d: a field missing", line_no);
  if (strstr(site, "test-dump.c:") == NULL)
    fail_msg("line %d: site %s", line_no, site);
  switch (i % KINDS) {
  /* A fiber awaiting its own delay of 600 s + i ms: setting 100 000 tasks
   * up takes seconds under valgrind, and none may fire before the dump. */
  case 0:
    if (strcmp(task, "fiber") != 0 || strcmp(kind, "timer") != 0 ||
        json_object_get(w, "left_ms") == NULL ||
        json_object_get(o, "await") == NULL)
      fail_msg("line %d: fiber %d says %s for %s", line_no, i, task, kind);
    json_int_t left = json_integer_value(json_object_get(w, "left_ms"));
    if (left > 600000 + i || left < 600000 + i - 60000)
      fail_msg("line %d: fiber %d's timer has %lld ms left", line_no, i,
               (long long)left);
    break;
  case 1: /* a promise the program settles, a handler waiting */
    if (strcmp(task, "promise") != 0 || strcmp(kind, "program") != 0)
      fail_msg("line %d: task %d says %s for %s", line_no, i, task, kind);
    break;
  case 2: /* a promise following task i - 1's */
    if (strcmp(task, "promise") != 0 || strcmp(kind, "promise") != 0 ||
        strstr(target, "created at") == NULL)
      fail_msg("line %d: task %d says %s for %s %s", line_no, i, task, kind,
               target);
    break;
  default: /* a group's member, a promise the program settles */
    if (strcmp(task, "member") != 0 || strcmp(kind, "program") != 0 ||
        json_array_size(json_object_get(o, "groups")) != 1)
      fail_msg("line %d: member %d says %s for %s", line_no, i, task, kind);
    break;
  }
}
#endif

static void test_many_tasks(void **state) {
  fixture_t *f = *state;
  int n = RUNNING_ON_VALGRIND ? 2000 : 100000;
  /* Fibers in the compact mode: a quarter of 100 000 in ~25 MB. */
  assert_int_equal(uvp_ctx_set_fiber_mode(f->ctx, UVP_FIBER_COMPACT), 0);
  m = (many_t){f->ctx, n, calloc((size_t)n, sizeof(uvp_promise_t *)),
               calloc((size_t)n, sizeof(uvp_promise_t *))};
  assert_non_null(m.p);
  assert_non_null(m.waited);
  uvp_group_t *g;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  for (int i = 0; i < n; i++) {
    switch (i % KINDS) {
    case 0:
      assert_int_equal(uvp_delay(f->ctx, 600000 + (uint64_t)i, NULL, NULL,
                                 UVP_UNREF, &m.waited[i]),
                       0);
      assert_int_equal(
          uvp_fiber_spawn(f->ctx, parked, (void *)(intptr_t)i, NULL, &m.p[i]),
          0);
      break;
    case 1:
      assert_int_equal(uvp_promise_new(f->ctx, &m.p[i]), 0);
      assert_int_equal(uvp_promise_on(m.p[i], UVP_ON_BOTH, ignore, NULL, NULL),
                       0);
      break;
    case 2:
      assert_int_equal(uvp_promise_then(m.p[i - 1], NULL, NULL, &m.p[i]), 0);
      assert_int_equal(uvp_promise_on(m.p[i], UVP_ON_BOTH, ignore, NULL, NULL),
                       0);
      break;
    default:
      assert_int_equal(uvp_promise_new(f->ctx, &m.p[i]), 0);
      assert_int_equal(uvp_group_add(g, m.p[i]), 0);
      break;
    }
  }
  run_loop(f); /* the fibers start and park */
  static sink_t s;
  s = (sink_t){0};
  uint64_t t0 = uv_hrtime();
  int tasks = dump_into(f, &s, UVP_DUMP_JSON, 0);
  uint64_t full_ms = (uv_hrtime() - t0) / 1000000;
  /* The group's join waits on nothing but its members: not a task. */
  assert_int_equal(tasks, n);
  assert_int_equal(count_lines(s.buf), n);
#if defined(UVP_TEST_JANSSON)
  /* Each line one object, naming one of our tasks, each task once. */
  char *seen = calloc((size_t)n, 1);
  assert_non_null(seen);
  int line_no = 0;
  for (char *line = s.buf, *end; *line != '\0'; line = end + 1) {
    end = strchr(line, '\n');
    assert_non_null(end);
    *end = '\0';
    line_no++;
    json_error_t err;
    json_t *o = json_loads(line, 0, &err);
    if (o == NULL)
      fail_msg("line %d is not JSON (%s): %.200s", line_no, err.text, line);
    void *id = NULL;
    assert_int_equal(
        sscanf(json_string_value(json_object_get(o, "id")), "%p", &id), 1);
    int i = 0;
    while (i < n && (void *)m.p[i] != id) /* a linear search: n is small */
      i += 1;
    if (i == n)
      fail_msg("line %d names no task of ours: %p", line_no, id);
    assert_int_equal(seen[i], 0);
    seen[i] = 1;
    check_task(o, i, line_no);
    json_decref(o);
  }
  free(seen);
#else
  printf("JSON lines not parsed: jansson was not found at build time\n");
#endif
  /* The same as text, and as a summary. */
  assert_int_equal(dump_into(f, &s, 0, 0), n);
  assert_int_equal(count_lines(s.buf), n);
  t0 = uv_hrtime();
  assert_int_equal(dump_into(f, &s, UVP_DUMP_SUMMARY, 5), n);
  uint64_t summary_ms = (uv_hrtime() - t0) / 1000000;
  assert_int_equal(count_lines(s.buf), 1 + 5);
  char want[128];
  snprintf(want, sizeof(want), "%d tasks; by what they wait for:", n);
  assert_non_null(strstr(s.buf, want));
  snprintf(want, sizeof(want), "timer %d", (n + 3) / 4);
  assert_non_null(strstr(s.buf, want));
  snprintf(want, sizeof(want), "program %d", n / 4 + (n + 2) / 4);
  assert_non_null(strstr(s.buf, want));
  printf("%d tasks: full dump (JSON) %llu ms, summary %llu ms\n", n,
         (unsigned long long)full_ms, (unsigned long long)summary_ms);
  free(s.buf);
  /* Teardown (fixture) ends the fibers; let go of the rest first. */
  for (int i = 0; i < n; i++) {
    uvp_promise_release(m.p[i]);
    if (m.waited[i] != NULL)
      uvp_promise_release(m.waited[i]);
  }
  uvp_group_release(g);
  free(m.p);
  free(m.waited);
}

/* ---- what operations say ------------------------------------------------- */

static int describe_http(void *arg, char *buf, size_t cap) {
  return snprintf(buf, cap, "GET %s", (const char *)arg);
}

static void no_cancel(uvp_promise_t *p, void *arg) {
  (void)p;
  (void)arg;
}

static uvp_ret_t await_it(void *arg) {
  uvp_promise_t *p = arg;
  (void)uvp_await(p, NULL);
  return uvp_ret_pass();
}

static void test_operations_described(void **state) {
  fixture_t *f = *state;
  put("data", "x", 1);
  size_t n = uvp_pool_size();
  uvp_promise_t **w = block_pool(f, n);
  uvp_promise_t *stat, *job, *tmo, *http, *never, *child, *fibers[6];
  assert_int_equal(uvp_fs_stat(f->ctx, at("data"), &stat), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &never), 0);
  assert_int_equal(uvp_timeout(never, 60000, UVP_UNREF, &tmo), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &http), 0);
  assert_int_equal(
      uvp_promise_set_cancel_described(http, no_cancel, "https://example.com/",
                                       NULL, "HTTP", describe_http),
      0);
  static char *args[] = SLEEPER_ARGS;
  uvp_spawn_opts_t so = {SLEEPER_PATH, args, NULL, NULL, NULL, 0, 0, 0};
  assert_int_equal(uvp_spawn(f->ctx, &so, &child), 0);
  /* A connection whose read waits: the peer is a socket of ours. */
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof(a);
  assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
  assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
  assert_int_equal(listen(lfd, 4), 0);
  uvp_tcp_t *t;
  uvp_promise_t *conn, *rd;
  assert_int_equal(uvp_tcp_new(f->ctx, &t), 0);
  assert_int_equal(uvp_tcp_connect(t, (struct sockaddr *)&a, &conn), 0);
  int afd = -1;
  while (uvp_promise_state(conn) == UVP_PENDING)
    uv_run(&f->loop, UV_RUN_ONCE);
  afd = accept(lfd, NULL, NULL);
  assert_true(afd >= 0);
  assert_int_equal(uvp_tcp_read(t, &rd), 0);
  assert_int_equal(uvp_work(f->ctx, block_job, NULL, NULL, &job), 0);
  blocker.held++;
  uvp_promise_t *awaited[6] = {stat, tmo, http, child, rd, job};
  for (int i = 0; i < 6; i++)
    assert_int_equal(
        uvp_fiber_spawn(f->ctx, await_it, awaited[i], NULL, &fibers[i]), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  static sink_t s;
  s = (sink_t){0};
  assert_true(dump_into(f, &s, 0, 0) >= 6);
  char want[256];
  snprintf(want, sizeof(want), "for fs.stat %s", at("data"));
  assert_non_null(strstr(s.buf, want));
  assert_non_null(strstr(s.buf, "for timeout on a promise created at"));
  assert_non_null(strstr(s.buf, "for HTTP GET https://example.com/"));
  assert_non_null(strstr(s.buf, "for process "));
  snprintf(want, sizeof(want), "for tcp.read 127.0.0.1:%d", ntohs(a.sin_port));
  assert_non_null(strstr(s.buf, want));
  assert_non_null(strstr(s.buf, "for work the thread pool"));
  free(s.buf);
  for (int i = 0; i < 6; i++)
    uvp_promise_cancel(fibers[i]);
  uvp_promise_cancel(child);
  uvp_promise_cancel(rd);
  unblock_pool();
  run_loop(f);
  blockers_done(w, n, 0);
  for (int i = 0; i < 6; i++)
    uvp_promise_release(fibers[i]);
  uvp_promise_release(stat);
  uvp_promise_release(job);
  uvp_promise_release(tmo);
  uvp_promise_release(never);
  uvp_promise_release(http);
  uvp_promise_release(child);
  uvp_promise_release(conn);
  uvp_promise_release(rd);
  assert_int_equal(uvp_tcp_close(t), 0);
  run_loop(f);
  close(afd);
  close(lfd);
}

/* A member that stats a file and waits on it through a then: the stat's
 * own line names the group it works for. */
static int stat_then(void *arg, uvp_promise_t **out) {
  uvp_ctx_t *ctx = arg;
  uvp_promise_t *st;
  int rc = uvp_fs_stat(ctx, at("data"), &st);
  if (rc == 0) {
    rc = uvp_promise_then(st, NULL, NULL, out);
    uvp_promise_release(st);
  }
  return rc;
}

static int request_id(void *value, char *buf, size_t cap);

/* An operation started in a group's member shows the group it works for,
 * the group's deadline and its scope's slots; so does the group's join. */
static void test_work_shows_its_group(void **state) {
  fixture_t *f = *state;
  static int id = 7;
  put("data", "x", 1);
  size_t n = uvp_pool_size();
  uvp_promise_t **w = block_pool(f, n);
  assert_int_equal(uvp_ctx_set_slot_format(f->ctx, 0, request_id), 0);
  assert_int_equal(uvp_scope_set(f->ctx, 0, &id, NULL), 0);
  uvp_group_opts_t go = {0, 0, 60000};
  uvp_group_t *g;
  uvp_promise_t *join;
  assert_int_equal(uvp_group_new(f->ctx, &go, &g), 0);
  assert_int_equal(uvp_scope_clear(f->ctx), 0);
  assert_int_equal(uvp_group_start(g, stat_then, f->ctx, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  assert_int_equal(uvp_group_join(g, &join), 0);
  assert_int_equal(uvp_promise_on(join, UVP_ON_BOTH, ignore, NULL, NULL), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  static sink_t s;
  s = (sink_t){0};
  /* The join, the member, the stat, and the jobs filling the pool: every
   * started operation is a task, whether or not something awaits it. */
  assert_int_equal(dump_into(f, &s, 0, 0), 3 + (int)n);
  char want[512];
  snprintf(want, sizeof(want), "for fs.stat %s; in group at %s:", at("data"),
           __FILE__);
  const char *line = strstr(s.buf, want);
  assert_non_null(line);
  const char *eol = strchr(line, '\n');
  const char *dl = strstr(line, "; deadline in ");
  const char *slot = strstr(line, "; slots 0=req-7");
  assert_true(dl != NULL && dl < eol && slot != NULL && slot < eol);
  assert_non_null(strstr(s.buf, "for group 1 running"));
  free(s.buf);
  unblock_pool();
  run_loop(f);
  blockers_done(w, n, 0);
  assert_int_equal(uvp_promise_state(join), UVP_FULFILLED);
  uvp_promise_release(join);
  uvp_group_release(g);
}

/* ---- work left running for the join ------------------------------------ */

/* A toy binding's record: its cut is noted, and it winds down until the
 * test ends it (uvp_inflight_end). */
typedef struct lookup_s {
  uvp_inflight_t w;
  uvp_promise_t *p; /* its own reference, until it has ended */
  int cut;
} lookup_t;

static void lookup_cancel(uvp_inflight_t *w, int code) {
  ((lookup_t *)w->data)->cut = code;
}

static int lookup_describe(uvp_inflight_t *w, char *buf, size_t cap) {
  (void)w;
  return snprintf(buf, cap, "lookup beta");
}

static const uvp_inflight_class_t lookup_class = {"legacy", lookup_cancel,
                                                  lookup_describe, 0};

static void lookup_end(lookup_t *l) {
  uvp_inflight_end(&l->w);
  uvp_promise_release(l->p);
  l->p = NULL;
}

typedef struct left_s {
  uvp_ctx_t *ctx;
  lookup_t lookup;
  uvp_promise_t *tick; /* a delay of its own, nobody awaits it */
  uvp_promise_t *join;
  sink_t text, listing; /* what the dumping fiber saw */
  int tasks, listed;
} left_t;

static left_t left;

/* The member starts a binding's work and a delay, and settles at once: the
 * join waits for the two. */
static int start_and_settle(void *arg, uvp_promise_t **out) {
  left_t *l = arg;
  l->lookup.w.data = &l->lookup;
  int rc = uvp_promise_new(l->ctx, &l->lookup.p);
  if (rc == 0)
    rc = uvp_inflight_start(l->ctx, &l->lookup.w, l->lookup.p, &lookup_class);
  if (rc == 0)
    rc = uvp_delay(l->ctx, 600000, NULL, NULL, UVP_UNREF, &l->tick);
  return rc != 0 ? rc : uvp_promise_resolved(l->ctx, NULL, NULL, out);
}

static uvp_ret_t await_join(void *arg) {
  (void)arg;
  (void)uvp_fiber_set_name("main");
  (void)uvp_await(left.join, NULL);
  return uvp_ret_pass();
}

/* The fiber that asks for the dumps: it is running meanwhile. */
static uvp_ret_t dumper(void *arg) {
  fixture_t *f = arg;
  (void)uvp_fiber_set_name("dumper");
  left.tasks = dump_into(f, &left.text, 0, 0);
  left.listed = dump_into(f, &left.listing, UVP_DUMP_PROMISES, 0);
  return uvp_ret_pass();
}

/* A member starts a binding's record and a delay, settles, and leaves them
 * running for the join, which a fiber awaits; another fiber dumps: every
 * started record is a task, with its kind, description, group and
 * deadline, awaited or not, and stays one once its promise is cut, until
 * it has wound down; the dumping fiber is running in both dumps. */
static void test_work_left_for_the_join(void **state) {
  fixture_t *f = *state;
  memset(&left, 0, sizeof(left));
  left.ctx = f->ctx;
  uvp_group_opts_t go = {0, 0, 60000};
  uvp_group_t *g;
  assert_int_equal(uvp_group_new(f->ctx, &go, &g), 0);
  assert_int_equal(uvp_group_set_name(g, "jobs"), 0);
  assert_int_equal(uvp_group_start(g, start_and_settle, &left, NULL), 0);
  assert_int_equal(uvp_group_close(g), 0);
  assert_int_equal(uvp_group_join(g, &left.join), 0);
  uvp_promise_t *main_p, *dumper_p;
  assert_int_equal(uvp_fiber_spawn(f->ctx, await_join, NULL, NULL, &main_p), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, dumper, f, NULL, &dumper_p), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uvp_promise_state(dumper_p), UVP_FULFILLED);
  const char *text = left.text.buf, *listing = left.listing.buf;
  char in_jobs[256];
  snprintf(in_jobs, sizeof(in_jobs), "; in group \"jobs\" at %s:", __FILE__);
  if (left.tasks != 4) /* the two fibers, the record, the delay */
    fail_msg("%d tasks:\n%s", left.tasks, text);
  /* The binding's record: its kind and description, its group, its
   * deadline. */
  const char *l = text_line(text, " for legacy lookup beta");
  if (l == NULL)
    fail_msg("no record:\n%s", text);
  assert_true(strncmp(l, "promise 0x", 10) == 0);
  assert_non_null(strstr(l, in_jobs));
  assert_non_null(strstr(l, "; deadline in "));
  l = text_line(text, " for timer (");
  if (l == NULL)
    fail_msg("no delay:\n%s", text);
  assert_non_null(strstr(l, in_jobs));
  assert_non_null(strstr(l, "; deadline in "));
  l = text_line(text, "fiber \"dumper\"");
  assert_non_null(l);
  assert_non_null(strstr(l, ", running"));
  l = text_line(text, "fiber \"main\"");
  assert_non_null(l);
  assert_non_null(strstr(l, " for group "));
  /* UVP_DUMP_PROMISES: the record's promise with what it is and its
   * group; the dumping fiber running. */
  char want[512];
  snprintf(want, sizeof(want), "[pending] " PTR_FMT " created at ",
           PTR_ARG(left.lookup.p));
  l = text_line(listing, want);
  if (l == NULL)
    fail_msg("no line for the record's promise:\n%s", listing);
  const char *next = strstr(listing, want);
  next = strchr(next, '\n');
  assert_non_null(next);
  snprintf(want, sizeof(want), "    work: legacy lookup beta%s", in_jobs);
  if (strncmp(next + 1, want, strlen(want)) != 0)
    fail_msg("the record's promise says no work:\n%s", listing);
  l = text_line(listing, "\"dumper\"");
  assert_non_null(l);
  assert_true(strncmp(l, "[fiber] ", 8) == 0);
  if (strstr(l, " running") == NULL || strstr(l, "not started") != NULL)
    fail_msg("the dumping fiber: %s", l);
  assert_true(left.listed >= 6); /* 5 promises pending, 2 fibers */
  /* Cut, the record winds down: still a task, with what cut it, until it
   * has ended. */
  assert_int_equal(uvp_promise_cancel(left.lookup.p), 0);
  assert_int_equal(left.lookup.cut, UV_ECANCELED);
  static sink_t s;
  s = (sink_t){0};
  assert_int_equal(dump_into(f, &s, 0, 0), 3); /* main, record, delay */
  l = text_line(s.buf, " for legacy lookup beta");
  if (l == NULL)
    fail_msg("the record winding down is not a task:\n%s", s.buf);
  assert_non_null(strstr(l, "; cancelled: "));
  assert_non_null(strstr(l, in_jobs));
  assert_int_equal(dump_into(f, &s, UVP_DUMP_SUMMARY, 0), 3);
  assert_non_null(strstr(s.buf, "legacy 1"));
  lookup_end(&left.lookup);
  assert_int_equal(dump_into(f, &s, 0, 0), 2); /* main, delay */
  assert_null(strstr(s.buf, "legacy"));
  assert_int_equal(uvp_promise_cancel(left.tick), 0);
  run_until_settled(f, left.join);
  assert_int_equal(uvp_promise_state(left.join), UVP_FULFILLED);
  run_loop(f);
  assert_int_equal(dump_into(f, &s, 0, 0), 0);
  free(s.buf);
  free(left.text.buf);
  free(left.listing.buf);
  uvp_promise_release(left.tick);
  uvp_promise_release(left.join);
  uvp_promise_release(main_p);
  uvp_promise_release(dumper_p);
  uvp_group_release(g);
}

/* ---- slots and their formatters ------------------------------------------ */

static int fails(void *value, char *buf, size_t cap) {
  (void)value;
  (void)buf;
  (void)cap;
  return -1;
}

/* Every byte value, more than it may, and a length beyond cap. */
static int garbage(void *value, char *buf, size_t cap) {
  (void)value;
  for (size_t i = 0; i < cap; i++)
    buf[i] = (char)(i * 37 + 1);
  buf[cap / 2] = '\n';
  buf[cap / 3] = '"';
  buf[cap / 4] = '\\';
  return (int)cap + 1000;
}

static int request_id(void *value, char *buf, size_t cap) {
  return snprintf(buf, cap, "req-%d", *(int *)value);
}

static uvp_ret_t waits_forever(void *arg) {
  uvp_promise_t *p;
  if (uvp_promise_new((uvp_ctx_t *)arg, &p) == 0) {
    (void)uvp_await(p, NULL);
    uvp_promise_release(p);
  }
  return uvp_ret_pass();
}

static void test_slot_formatters(void **state) {
  fixture_t *f = *state;
  static int id = 42;
  assert_int_equal(uvp_ctx_set_slot_format(f->ctx, 0, request_id), 0);
  assert_int_equal(uvp_ctx_set_slot_format(f->ctx, 1, fails), 0);
  assert_int_equal(uvp_ctx_set_slot_format(f->ctx, 2, garbage), 0);
  assert_int_equal(uvp_ctx_set_slot_format(f->ctx, UVP_SCOPE_SLOTS, fails),
                   UV_EINVAL);
  assert_int_equal(uvp_ctx_set_slot_format(NULL, 0, fails), UV_EINVAL);
  assert_int_equal(uvp_scope_set(f->ctx, 0, &id, NULL), 0);
  assert_int_equal(uvp_scope_set(f->ctx, 1, &id, NULL), 0);
  assert_int_equal(uvp_scope_set(f->ctx, 2, &id, NULL), 0);
  assert_int_equal(uvp_scope_set(f->ctx, 3, &id, NULL), 0); /* no format */
  uvp_promise_t *fp;
  assert_int_equal(uvp_fiber_spawn(f->ctx, waits_forever, f->ctx, NULL, &fp),
                   0);
  run_loop(f);
  static sink_t s;
  s = (sink_t){0};
  assert_int_equal(dump_into(f, &s, 0, 0), 1);
  assert_int_equal(count_lines(s.buf), 1); /* no newline of the garbage */
  assert_non_null(strstr(s.buf, "0=req-42"));
  assert_non_null(strstr(s.buf, "1=(its format failed)"));
  assert_non_null(strstr(s.buf, "...")); /* slot 2 cut short */
  char ptr[64];
  snprintf(ptr, sizeof(ptr), "3=" PTR_FMT, PTR_ARG(&id));
  assert_non_null(strstr(s.buf, ptr));
  assert_int_equal(dump_into(f, &s, UVP_DUMP_JSON, 0), 1);
  assert_int_equal(count_lines(s.buf), 1);
#if defined(UVP_TEST_JANSSON)
  json_error_t err;
  json_t *o = json_loads(s.buf, 0, &err);
  if (o == NULL)
    fail_msg("not JSON (%s): %s", err.text, s.buf);
  json_t *slots = json_object_get(o, "slots");
  assert_string_equal(json_string_value(json_object_get(slots, "0")), "req-42");
  assert_string_equal(json_string_value(json_object_get(slots, "1")),
                      "(its format failed)");
  /* 128 characters, each byte one (JSON carries bytes past 0x7f as
   * U+0080..U+00FF, two bytes of UTF-8 once parsed), ending "...". */
  const char *g = json_string_value(json_object_get(slots, "2"));
  assert_non_null(g);
  size_t chars = 0;
  for (const char *c = g; *c != '\0'; c++)
    chars += ((unsigned char)*c & 0xc0) != 0x80;
  assert_int_equal(chars, 128);
  assert_string_equal(g + strlen(g) - 3, "...");
  json_decref(o);
#endif
  /* A sink that fails: its code comes back, and the next dump works. */
  s.fail = UV_ENOSPC;
  assert_int_equal(dump_into(f, &s, 0, 0), UV_ENOSPC);
  s.fail = 0;
  assert_int_equal(dump_into(f, &s, 0, 0), 1);
  free(s.buf);
  uvp_promise_release(fp);
}

/* UVP_DUMP_PROMISES: every pending promise, the ones nothing waits on too
 * (which the task dump leaves out), through the same sinks; the deprecated
 * uvp_ctx_dump_pending prints the same text. */
static void test_promises_listing(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *lone, *held, *derived;
  assert_int_equal(uvp_promise_new(f->ctx, &lone), 0);
  int lone_line = __LINE__ - 1;
  assert_int_equal(uvp_promise_new(f->ctx, &held), 0);
  assert_int_equal(uvp_promise_then(held, ignore, NULL, &derived), 0);
  sink_t s = {0};
  /* Tasks: only what something waits on (held, by its then). */
  int tasks = dump_into(f, &s, 0, 0);
  char site[64];
  snprintf(site, sizeof(site), "test-dump.c:%d", lone_line);
  assert_null(strstr(s.buf, site));
  /* Promises: all three pending ones. */
  assert_int_equal(dump_into(f, &s, UVP_DUMP_PROMISES, 0), 3);
  assert_true(tasks < 3);
  assert_non_null(strstr(s.buf, site));
  assert_int_equal(count_lines(s.buf), 3);
  char *text = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&text, &len);
  assert_non_null(mem);
  assert_int_equal(uvp_ctx_dump_pending(f->ctx, mem), 3);
  assert_int_equal(fclose(mem), 0);
  assert_string_equal(text, s.buf);
  free(text);
  /* Alone, or not at all; a failing sink's error comes back. */
  assert_int_equal(dump_into(f, &s, UVP_DUMP_PROMISES | UVP_DUMP_JSON, 0),
                   UV_EINVAL);
  assert_int_equal(dump_into(f, &s, UVP_DUMP_PROMISES | UVP_DUMP_SUMMARY, 0),
                   UV_EINVAL);
  s.fail = UV_ENOSPC;
  assert_int_equal(dump_into(f, &s, UVP_DUMP_PROMISES, 0), UV_ENOSPC);
  free(s.buf);
  uvp_promise_release(derived);
  uvp_promise_release(held);
  uvp_promise_release(lone);
}

static void test_bad_arguments(void **state) {
  fixture_t *f = *state;
  uvp_dump_opts_t none = {0, NULL, NULL, NULL, 0};
  uvp_dump_opts_t bad_flags = {8, stdout, NULL, NULL, 0};
  uvp_dump_opts_t ok = {0, stdout, NULL, NULL, 0};
  assert_int_equal(uvp_ctx_dump_tasks(f->ctx, NULL), UV_EINVAL);
  assert_int_equal(uvp_ctx_dump_tasks(f->ctx, &none), UV_EINVAL);
  assert_int_equal(uvp_ctx_dump_tasks(f->ctx, &bad_flags), UV_EINVAL);
  assert_int_equal(uvp_ctx_dump_tasks(NULL, &ok), UV_EINVAL);
  assert_int_equal(uvp_ctx_dump_tasks(f->ctx, &ok), 0); /* nothing to say */
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_ctx_dump_tasks(ctx, &ok), UVP_ECLOSED);
}

int main(int argc, char **argv) {
  sleeper_main(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      QUIET_TEST(test_many_tasks),
      FS_TEST(test_operations_described),
      FS_TEST(test_work_shows_its_group),
      QUIET_TEST(test_slot_formatters),
      QUIET_TEST(test_promises_listing),
      FIXTURE_TEST(test_bad_arguments),
      QUIET_TEST(test_work_left_for_the_join),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
