/* The live console's socket (uvp_console_listen): its file and errors,
 * the snapshot document (parsed, its tasks the dump's), the warnings
 * (each from a program that triggers it, none on a quiet one), another
 * user refused, and hostile clients (garbage, a flood that never reads,
 * too many clients) that neither hold the loop past 50 ms of its CPU nor
 * grow the program's memory.  The clients are plain blocking sockets on a
 * thread of the test's, while the loop runs on the test's own. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "console-tasks.h"
#include "emulator.h"
#include "helpers.h"

#ifndef POLLRDHUP /* Linux's; elsewhere (macOS) a peer's close is POLLHUP */
#define POLLRDHUP 0
#endif

static char dir[32], sock[64];

static int console_setup(void **state) {
  snprintf(dir, sizeof(dir), "/tmp/uvp-console-XXXXXX");
  assert_non_null(mkdtemp(dir));
  snprintf(sock, sizeof(sock), "%s/console.sock", dir);
  return fixture_setup_quiet(state);
}

static int console_teardown(void **state) {
  int rc = fixture_teardown(state);
  (void)unlink(sock); /* the test may have left a file of its own */
  assert_int_equal(rmdir(dir), 0);
  return rc;
}

#define CONSOLE_TEST(fn) FIXTURE_TEST_WITH(fn, console_setup, console_teardown)

/* ---- a client on a thread ------------------------------------------------ */

static int cl_connect(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0)
    return -errno;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  struct timeval tv = {10, 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

/* One answer line (malloc'd, no newline), or NULL at EOF or an error.
 * The server sends nothing past an answer's newline before the next
 * request, so a read never takes part of the next one. */
static char *cl_line(int fd) {
  size_t cap = 65536, len = 0;
  char *s = malloc(cap);
  for (;;) {
    if (len + 1 == cap)
      s = realloc(s, cap *= 2);
    ssize_t n = read(fd, s + len, cap - len - 1);
    if (n <= 0) {
      free(s);
      return NULL;
    }
    char *nl = memchr(s + len, '\n', (size_t)n);
    len += (size_t)n;
    if (nl != NULL) {
      *nl = '\0';
      return s;
    }
  }
}

static char *cl_ask(int fd, const char *req) {
  size_t n = strlen(req);
  if (write(fd, req, n) != (ssize_t)n)
    return NULL;
  return cl_line(fd);
}

typedef struct job_s {
  void (*fn)(struct job_s *j);
  atomic_int done;
  atomic_int asked; /* the job got its first answer */
  char *answer[4];
  int eof[4]; /* per check: 1 if the server closed as it should */
  int note;   /* a figure the job reports */
} job_t;

static void job_main(void *arg) {
  job_t *j = arg;
  j->fn(j);
  atomic_store(&j->done, 1);
}

/* The loop's own measure of what it did: the CPU time of the loop thread
 * between two ticks of a 1 ms timer (the machine's load does not count
 * in it, the console's work does), and the wall time. */
typedef struct lag_s {
  uv_timer_t t;
  uint64_t cpu, wall, max_cpu, max_wall;
} lag_t;

static uint64_t cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void lag_tick(uv_timer_t *t) {
  lag_t *l = t->data;
  uint64_t c = cpu_ns(), w = uv_hrtime();
  if (c - l->cpu > l->max_cpu)
    l->max_cpu = c - l->cpu;
  if (w - l->wall > l->max_wall)
    l->max_wall = w - l->wall;
  l->cpu = c;
  l->wall = w;
}

/* Run the loop while job runs on a thread; the loop's lags in *lag. */
static void run_with(fixture_t *f, job_t *j, lag_t *lag) {
  lag_t own;
  if (lag == NULL)
    lag = &own;
  memset(lag, 0, sizeof(*lag));
  uv_thread_t th;
  assert_int_equal(uv_timer_init(&f->loop, &lag->t), 0);
  lag->t.data = lag;
  lag->cpu = cpu_ns();
  lag->wall = uv_hrtime();
  assert_int_equal(uv_timer_start(&lag->t, lag_tick, 1, 1), 0);
  assert_int_equal(uv_thread_create(&th, job_main, j), 0);
  while (!atomic_load(&j->done))
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&lag->t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uv_thread_join(&th), 0);
}

static void job_free(job_t *j) {
  for (int i = 0; i < 4; i++)
    free(j->answer[i]);
}

static void tick(uv_timer_t *t);
static int closed_by_server(int fd);

/* ---- the socket's file and errors ---------------------------------------- */

static void test_listen_errors(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_console_listen(NULL, sock), UV_EINVAL);
  assert_int_equal(uvp_console_listen(f->ctx, NULL), UV_EINVAL);
  assert_int_equal(uvp_console_listen(f->ctx, ""), UV_EINVAL);
  assert_int_equal(uvp_console_close(f->ctx), UV_ENOENT);
  char longp[200];
  memset(longp, 'a', sizeof(longp) - 1);
  longp[sizeof(longp) - 1] = '\0';
  assert_int_equal(uvp_console_listen(f->ctx, longp), UV_ENAMETOOLONG);
  /* A file that is not a socket is not replaced. */
  FILE *fp = fopen(sock, "w");
  assert_non_null(fp);
  assert_int_equal(fclose(fp), 0);
  assert_int_equal(uvp_console_listen(f->ctx, sock), UV_EADDRINUSE);
  assert_int_equal(unlink(sock), 0);
  /* A stale socket (its program died) is. */
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(close(fd), 0);
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  struct stat st;
  assert_int_equal(lstat(sock, &st), 0);
  assert_true(S_ISSOCK(st.st_mode));
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(uvp_console_listen(f->ctx, sock), UV_EBUSY);
  /* A second context cannot take a path that is served. */
  uvp_ctx_t *other;
  assert_int_equal(uvp_ctx_new(&f->loop, &other), 0);
  assert_int_equal(uvp_console_listen(other, sock), UV_EADDRINUSE);
  assert_int_equal(uvp_ctx_close(other), 0);
  assert_int_equal(uvp_console_close(f->ctx), 0);
  assert_int_equal(lstat(sock, &st), -1); /* removed */
  assert_int_equal(uvp_console_close(f->ctx), UV_ENOENT);
  /* Listening again, then closed with the context. */
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_console_close(ctx), UVP_ECLOSED);
  assert_int_equal(lstat(sock, &st), -1);
}

/* ---- the snapshot ----------------------------------------------------------
 */

static uvp_ret_t sleeper(void *arg) {
  uvp_ctx_t *ctx = arg;
  uvp_fiber_set_name("sleeper");
  uvp_promise_t *d;
  if (uvp_delay(ctx, 600000, NULL, NULL, 0, &d) == 0) {
    (void)uvp_await(d, NULL);
    uvp_promise_release(d);
  }
  return uvp_ret_pass();
}

static void ask_three(job_t *j) {
  int fd = cl_connect(sock);
  if (fd < 0)
    return;
  j->answer[0] = cl_ask(fd, "snapshot json\n");
  j->answer[1] = cl_ask(fd, "ping\r\n");
  j->answer[2] = cl_ask(fd, "what\n");
  close(fd);
}

/* The dump's JSON lines, as objects, appended to the array arg. */
static int dump_objects(void *arg, const char *text, size_t len) {
  for (size_t at = 0; at < len;) {
    const char *nl = memchr(text + at, '\n', len - at);
    size_t end = nl != NULL ? (size_t)(nl - text) : len;
    json_t *o = json_loadb(text + at, end - at, 0, NULL);
    if (o != NULL && json_is_string(json_object_get(o, "id")))
      json_array_append_new(arg, o);
    else
      json_decref(o);
    at = end + 1;
  }
  return 0;
}

static void test_snapshot(void **state) {
  fixture_t *f = *state;
  uvp_group_t *g;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  assert_int_equal(uvp_group_set_name(g, "workers"), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(uvp_group_spawn(g, sleeper, f->ctx, NULL), 0);
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  job_t j = {.fn = ask_three};
  run_with(f, &j, NULL);
  assert_non_null(j.answer[0]);
  json_error_t err;
  json_t *doc = json_loads(j.answer[0], 0, &err);
  if (doc == NULL)
    fail_msg("not JSON: %s: %.200s", err.text, j.answer[0]);
  assert_int_equal(json_integer_value(json_object_get(doc, "console")), 1);
  assert_int_equal(json_integer_value(json_object_get(doc, "pid")), getpid());
  json_t *tasks = json_object_get(doc, "tasks");
  assert_true(json_is_array(tasks));
  size_t named = 0, i;
  json_t *t;
  json_array_foreach(tasks, i, t) {
    const char *name = json_string_value(json_object_get(t, "name"));
    if (name != NULL && strcmp(name, "sleeper") == 0) {
      named++;
      json_t *groups = json_object_get(t, "groups");
      assert_non_null(
          strstr(json_string_value(json_array_get(groups, 0)), "workers"));
    }
  }
  assert_int_equal(named, 3);
  json_t *sum = json_object_get(json_object_get(doc, "panel"), "summary");
  assert_int_equal(json_integer_value(json_object_get(sum, "tasks")),
                   json_array_size(tasks));
  assert_int_equal(json_array_size(json_object_get(doc, "warnings")), 0);
  assert_false(json_is_true(json_object_get(doc, "cut")));
  /* The same tasks as the program's own dump, now (nothing ran since). */
  json_t *ids = json_array();
  uvp_dump_opts_t o = {
      .flags = UVP_DUMP_JSON, .write = dump_objects, .write_arg = ids};
  int n = uvp_ctx_dump_tasks(f->ctx, &o);
  assert_int_equal(n, (int)json_array_size(ids));
  assert_int_equal(json_array_size(ids), json_array_size(tasks));
  json_array_foreach(tasks, i, t) {
    assert_string_equal(
        json_string_value(json_object_get(t, "id")),
        json_string_value(json_object_get(json_array_get(ids, i), "id")));
  }
  json_decref(ids);
  json_decref(doc);
  assert_string_equal(j.answer[1], "pong");
  assert_string_equal(j.answer[2], "error unknown command");
  job_free(&j);
  assert_int_equal(uvp_group_cancel(g), 0);
  uvp_group_release(g);
  run_loop(f);
}

static void ask_then_wait_close(job_t *j) {
  int fd = cl_connect(sock);
  if (fd < 0) {
    atomic_store(&j->asked, 1);
    return;
  }
  j->answer[0] = cl_ask(fd, "snapshot json\n");
  atomic_store(&j->asked, 1);
  j->eof[0] = closed_by_server(fd);
  close(fd);
}

/* uvp_ctx_close with a client attached: the client is closed, the socket
 * file removed, and the loop closes (the teardown checks it). */
static void test_close_with_client(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  job_t j = {.fn = ask_then_wait_close};
  uv_timer_t t;
  assert_int_equal(uv_timer_init(&f->loop, &t), 0);
  assert_int_equal(uv_timer_start(&t, tick, 1, 1), 0);
  uv_thread_t th;
  assert_int_equal(uv_thread_create(&th, job_main, &j), 0);
  while (!atomic_load(&j.asked))
    uv_run(&f->loop, UV_RUN_ONCE);
  close_ctx(f);
  while (!atomic_load(&j.done))
    uv_run(&f->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  assert_int_equal(uv_thread_join(&th), 0);
  assert_non_null(j.answer[0]);
  assert_int_equal(j.eof[0], 1);
  struct stat st;
  assert_int_equal(lstat(sock, &st), -1);
  job_free(&j);
}

/* ---- the warnings -------------------------------------------------------- */

static void on_stall(void *arg, const uvp_stall_t *s) {
  (void)s;
  atomic_fetch_add((atomic_int *)arg, 1);
}

static uvp_ret_t spinner(void *arg) {
  uvp_ctx_t *ctx = arg;
  uvp_fiber_set_name("spinner");
  uvp_promise_t *d;
  if (uvp_delay(ctx, 1, NULL, NULL, 0, &d) == 0) {
    (void)uvp_await(d, NULL);
    uvp_promise_release(d);
  }
  uint64_t end = uv_hrtime() + 80 * 1000000u; /* busy, no await */
  while (uv_hrtime() < end)
    ;
  return uvp_ret_pass();
}

static void ask_after_stall(job_t *j) {
  int fd = cl_connect(sock);
  if (fd < 0)
    return;
  usleep(300 * 1000); /* the spinner has run */
  j->answer[0] = cl_ask(fd, "snapshot json\n");
  close(fd);
}

/* The warning of kind `kind` in the document, or NULL. */
static json_t *warning(json_t *doc, const char *kind) {
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(doc, "warnings"), i, w) {
    if (strcmp(json_string_value(json_object_get(w, "kind")), kind) == 0)
      return w;
  }
  return NULL;
}

static void test_warn_busy(void **state) {
  fixture_t *f = *state;
  atomic_int stalls = 0;
  assert_int_equal(uvp_ctx_set_stall(f->ctx, 20, on_stall, &stalls), 0);
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_fiber_spawn(f->ctx, spinner, f->ctx, NULL, &p), 0);
  job_t j = {.fn = ask_after_stall};
  run_with(f, &j, NULL);
  assert_true(atomic_load(&stalls) >= 1);
  json_t *doc = json_loads(j.answer[0], 0, NULL);
  assert_non_null(doc);
  json_t *w = warning(doc, "busy");
  assert_non_null(w);
  /* Under valgrind the loop thread times every slice itself, and its
   * report of a fiber's later slice has no name (uvp/debug.h). */
  const char *task = json_string_value(json_object_get(w, "task"));
  if (RUNNING_ON_VALGRIND)
    assert_int_equal(strncmp(task, "fiber", 5), 0);
  else
    assert_string_equal(task, "fiber \"spinner\"");
  assert_non_null(
      strstr(json_string_value(json_object_get(w, "site")), "test-console.c"));
  assert_non_null(
      strstr(json_string_value(json_object_get(w, "why")), "without awaiting"));
  assert_true(json_integer_value(json_object_get(w, "ms")) >= 20);
  printf("the warning: %s at %s: %s\n",
         json_string_value(json_object_get(w, "task")),
         json_string_value(json_object_get(w, "site")),
         json_string_value(json_object_get(w, "why")));
  json_decref(doc);
  job_free(&j);
  uvp_promise_release(p);
  assert_int_equal(uvp_ctx_set_stall(f->ctx, 0, NULL, NULL), 0);
}

static uvp_ret_t stubborn(void *arg) {
  uvp_ctx_t *ctx = arg;
  uvp_fiber_set_name("stubborn");
  uvp_promise_t *d;
  if (uvp_delay(ctx, 600000, NULL, NULL, 0, &d) == 0) {
    (void)uvp_await(d, NULL); /* cancelled here */
    uvp_promise_release(d);
  }
  /* Its cleanup takes long, shielded. */
  if (uvp_delay(ctx, 2500, NULL, NULL, 0, &d) == 0) {
    (void)uvp_await_shielded(d, NULL);
    uvp_promise_release(d);
  }
  return uvp_ret_pass();
}

static void ask_twice(job_t *j) {
  int fd = cl_connect(sock);
  if (fd < 0)
    return;
  usleep(100 * 1000);
  j->answer[0] = cl_ask(fd, "snapshot json\n");
  usleep(1300 * 1000);
  j->answer[1] = cl_ask(fd, "snapshot json\n");
  close(fd);
}

static void test_warn_cancelled(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_fiber_spawn(f->ctx, stubborn, f->ctx, NULL, &p), 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_NOWAIT), 1); /* it awaits */
  assert_int_equal(uvp_promise_cancel(p), 0);
  job_t j = {.fn = ask_twice};
  run_with(f, &j, NULL);
  json_t *first = json_loads(j.answer[0], 0, NULL);
  json_t *second = json_loads(j.answer[1], 0, NULL);
  assert_non_null(first);
  assert_non_null(second);
  assert_null(warning(first, "cancelled-running")); /* within its grace */
  json_t *w = warning(second, "cancelled-running");
  assert_non_null(w);
  assert_string_equal(json_string_value(json_object_get(w, "task")),
                      "fiber \"stubborn\"");
  assert_non_null(
      strstr(json_string_value(json_object_get(w, "site")), "test-console.c"));
  assert_true(json_integer_value(json_object_get(w, "for_ms")) >= 1000);
  assert_non_null(json_string_value(json_object_get(w, "cause")));
  json_decref(first);
  json_decref(second);
  job_free(&j);
  run_loop(f); /* the cleanup ends */
  assert_int_not_equal(uvp_promise_state(p), UVP_PENDING);
  uvp_promise_release(p);
}

static uvp_ret_t quick(void *arg) {
  (void)arg;
  return uvp_ret_pass();
}

static void test_warn_group_idle(void **state) {
  fixture_t *f = *state;
  uvp_group_t *left, *closed, *busy;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &left), 0);
  assert_int_equal(uvp_group_set_name(left, "left-open"), 0);
  assert_int_equal(uvp_group_spawn(left, quick, NULL, NULL), 0);
  assert_int_equal(uvp_group_new(f->ctx, NULL, &closed), 0);
  assert_int_equal(uvp_group_spawn(closed, quick, NULL, NULL), 0);
  assert_int_equal(uvp_group_close(closed), 0);
  assert_int_equal(uvp_group_new(f->ctx, NULL, &busy), 0);
  assert_int_equal(uvp_group_spawn(busy, sleeper, f->ctx, NULL), 0);
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  job_t j = {.fn = ask_twice};
  run_with(f, &j, NULL);
  json_t *first = json_loads(j.answer[0], 0, NULL);
  json_t *second = json_loads(j.answer[1], 0, NULL);
  assert_non_null(first);
  assert_non_null(second);
  assert_null(warning(first, "group-idle")); /* within its grace */
  json_t *w = warning(second, "group-idle");
  assert_non_null(w);
  assert_non_null(
      strstr(json_string_value(json_object_get(w, "task")), "left-open"));
  assert_non_null(
      strstr(json_string_value(json_object_get(w, "site")), "test-console.c"));
  assert_non_null(
      strstr(json_string_value(json_object_get(w, "why")), "never closed"));
  /* Only that one: the closed group and the busy one are not warned of. */
  assert_int_equal(json_array_size(json_object_get(second, "warnings")), 1);
  json_decref(first);
  json_decref(second);
  job_free(&j);
  uvp_group_release(left);
  uvp_group_release(closed);
  assert_int_equal(uvp_group_cancel(busy), 0);
  uvp_group_release(busy);
  run_loop(f);
}

/* ---- busy and idle, the async stack ------------------------------------ */

/* The tasks of the program's own JSON dump, now, by id. */
static json_t *own_dump(uvp_ctx_t *ctx) {
  json_t *lines = json_array();
  uvp_dump_opts_t o = {
      .flags = UVP_DUMP_JSON, .write = dump_objects, .write_arg = lines};
  assert_true(uvp_ctx_dump_tasks(ctx, &o) >= 0);
  json_t *by_id = json_object();
  size_t i;
  json_t *t;
  json_array_foreach(lines, i, t) {
    json_object_set(by_id, json_string_value(json_object_get(t, "id")), t);
  }
  json_decref(lines);
  return by_id;
}

/* The snapshot's task named `name`. */
static json_t *named(json_t *doc, const char *name) {
  size_t i;
  json_t *t;
  json_array_foreach(json_object_get(doc, "tasks"), i, t) {
    const char *n = json_string_value(json_object_get(t, "name"));
    if (n != NULL && strcmp(n, name) == 0)
      return t;
  }
  fail_msg("no task named %s in the snapshot", name);
  return NULL;
}

static void ask_one(job_t *j) {
  int fd = cl_connect(sock);
  if (fd < 0)
    return;
  usleep(50 * 1000); /* some idle time for the parked fibers */
  j->answer[0] = cl_ask(fd, "snapshot json\n");
  close(fd);
}

static void test_busy_idle(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *w, *i;
  /* Not listening: nothing is timed, nothing said. */
  assert_int_equal(uvp_fiber_spawn(f->ctx, sleeper, f->ctx, NULL, &i), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  json_t *own = own_dump(f->ctx);
  assert_int_equal(json_object_size(own), 1);
  const char *k;
  json_t *t;
  json_object_foreach(own, k, t) { assert_null(json_object_get(t, "busy_us")); }
  json_decref(own);
  assert_int_equal(uvp_promise_cancel(i), 0);
  uvp_promise_release(i);
  run_loop(f);
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, tasks_worker, f->ctx, NULL, &w), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, sleeper, f->ctx, NULL, &i), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* both run, then park */
  job_t j = {.fn = ask_one};
  run_with(f, &j, NULL);
  json_t *doc = json_loads(j.answer[0], 0, NULL);
  assert_non_null(doc);
  json_t *wt = named(doc, "worker"), *it = named(doc, "sleeper");
  long long wbusy = json_integer_value(json_object_get(wt, "busy_us"));
  long long ibusy = json_integer_value(json_object_get(it, "busy_us"));
  printf(
      "worker busy %lld us idle %lld us; sleeper busy %lld us idle %lld us\n",
      wbusy, json_integer_value(json_object_get(wt, "idle_us")), ibusy,
      json_integer_value(json_object_get(it, "idle_us")));
  assert_true(wbusy >= 30000);
  assert_true(ibusy < wbusy);
  assert_true(json_integer_value(json_object_get(it, "idle_us")) >= 40000);
  /* Busy and idle add up to the age (idle is the rest of it). */
  long long age = json_integer_value(json_object_get(wt, "age_ms"));
  assert_true(json_integer_value(json_object_get(wt, "idle_us")) + wbusy >=
              age * 1000);
  /* The program's own dump says the same busy times: the fibers are
   * parked, their time on the CPU is what it was. */
  own = own_dump(f->ctx);
  json_t *o =
      json_object_get(own, json_string_value(json_object_get(wt, "id")));
  assert_int_equal(json_integer_value(json_object_get(o, "busy_us")), wbusy);
  o = json_object_get(own, json_string_value(json_object_get(it, "id")));
  assert_int_equal(json_integer_value(json_object_get(o, "busy_us")), ibusy);
  assert_non_null(json_object_get(o, "idle_us"));
  json_decref(own);
  json_decref(doc);
  job_free(&j);
  assert_int_equal(uvp_promise_cancel(w), 0);
  assert_int_equal(uvp_promise_cancel(i), 0);
  uvp_promise_release(w);
  uvp_promise_release(i);
  run_loop(f);
  tasks_nparked = 0; /* the worker's timer, gone with it */
}

static void test_async_stack(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  uvp_promise_t *r;
  assert_int_equal(uvp_fiber_spawn(f->ctx, tasks_root, f->ctx, NULL, &r), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  job_t j = {.fn = ask_one};
  run_with(f, &j, NULL);
  json_t *doc = json_loads(j.answer[0], 0, NULL);
  assert_non_null(doc);
  /* Each awaits the next one's promise: the stack leaf < mid < root. */
  json_t *l = named(doc, "leaf"), *m = named(doc, "mid"),
         *t = named(doc, "root");
  assert_non_null(json_object_get(m, "waits_id"));
  assert_non_null(json_object_get(t, "waits_id"));
  assert_string_equal(json_string_value(json_object_get(m, "waits_id")),
                      json_string_value(json_object_get(l, "id")));
  assert_string_equal(json_string_value(json_object_get(t, "waits_id")),
                      json_string_value(json_object_get(m, "id")));
  assert_non_null(
      strstr(json_string_value(json_object_get(m, "site")), "console-tasks.h"));
  /* The program's own dump links them the same way. */
  json_t *own = own_dump(f->ctx);
  const char *ids[3] = {json_string_value(json_object_get(l, "id")),
                        json_string_value(json_object_get(m, "id")),
                        json_string_value(json_object_get(t, "id"))};
  for (int i = 0; i < 2; i++)
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(own, ids[i + 1]), "waits_id")),
                        ids[i]);
  json_decref(own);
  json_decref(doc);
  job_free(&j);
  assert_int_equal(tasks_nparked, 1); /* the leaf's */
  assert_int_equal(uvp_promise_cancel(tasks_parked[0]), 0);
  tasks_nparked = 0;
  uvp_promise_release(r);
  run_loop(f);
}

/* ---- a promise nothing can settle --------------------------------------- */

/* A fiber that awaits the promise it is given (the test holds it). */
typedef struct awaiter_s {
  const char *name;
  uvp_promise_t *p;
} awaiter_t;

static uvp_ret_t awaiter(void *arg) {
  awaiter_t *a = arg;
  uvp_fiber_set_name(a->name);
  (void)uvp_await(a->p, NULL);
  return uvp_ret_pass();
}

static uvp_ret_t pass_on(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_pass();
}

static void test_warn_never_settles(void **state) {
  fixture_t *f = *state;
  uvp_promise_t *lost_src, *kept_src, *lost, *kept, *a_lost, *a_kept;
  assert_int_equal(uvp_promise_new(f->ctx, &lost_src), 0);
  assert_int_equal(uvp_promise_new(f->ctx, &kept_src), 0);
  int lost_line = __LINE__ + 1;
  assert_int_equal(uvp_promise_then(lost_src, pass_on, NULL, &lost), 0);
  assert_int_equal(uvp_promise_then(kept_src, pass_on, NULL, &kept), 0);
  awaiter_t s = {"stranded", lost}, w = {"waiting", kept};
  assert_int_equal(uvp_fiber_spawn(f->ctx, awaiter, &s, NULL, &a_lost), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, awaiter, &w, NULL, &a_kept), 0);
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* both await */
  /* The program lets go of one source while it is pending: nothing can
   * settle it, nor the then's result the stranded fiber awaits. */
  uvp_promise_release(lost_src);
  job_t j = {.fn = ask_one};
  run_with(f, &j, NULL);
  json_t *doc = json_loads(j.answer[0], 0, NULL);
  assert_non_null(doc);
  json_t *wn = warning(doc, "never-settles");
  assert_non_null(wn);
  assert_string_equal(json_string_value(json_object_get(wn, "task")),
                      "fiber \"stranded\"");
  char site[512], id[64];
  snprintf(site, sizeof(site), "%s:%d", __FILE__, lost_line);
  snprintf(id, sizeof(id), "0x%" PRIxPTR, PTR_ARG(lost));
  assert_string_equal(json_string_value(json_object_get(wn, "site")), site);
  assert_string_equal(json_string_value(json_object_get(wn, "promise")), id);
  assert_string_equal(
      json_string_value(json_object_get(wn, "id")),
      json_string_value(json_object_get(named(doc, "stranded"), "id")));
  assert_non_null(strstr(json_string_value(json_object_get(wn, "why")),
                         "nothing can settle"));
  printf("the warning: %s: %s\n",
         json_string_value(json_object_get(wn, "task")),
         json_string_value(json_object_get(wn, "why")));
  /* Only that one: the fiber whose source is held is not warned of. */
  assert_int_equal(json_array_size(json_object_get(doc, "warnings")), 1);
  json_decref(doc);
  job_free(&j);
  /* A cancel still ends the stranded wait; the other settles as usual. */
  assert_int_equal(uvp_promise_cancel(a_lost), 0);
  assert_int_equal(uvp_promise_resolve(kept_src, NULL, NULL), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(a_lost), UVP_REJECTED);
  assert_int_equal(uvp_promise_state(a_kept), UVP_FULFILLED);
  uvp_promise_release(lost);
  uvp_promise_release(kept);
  uvp_promise_release(kept_src);
  uvp_promise_release(a_lost);
  uvp_promise_release(a_kept);
}

/* The async stack through a combinator: each "input" is an input of the
 * all() that "fan" awaits. */
static void test_async_stack_all(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  uvp_promise_t *r;
  assert_int_equal(uvp_fiber_spawn(f->ctx, tasks_fan, f->ctx, NULL, &r), 0);
  uv_run(&f->loop, UV_RUN_NOWAIT);
  job_t j = {.fn = ask_one};
  run_with(f, &j, NULL);
  json_t *doc = json_loads(j.answer[0], 0, NULL);
  assert_non_null(doc);
  const char *all =
      json_string_value(json_object_get(named(doc, "fan"), "waits_id"));
  assert_non_null(all);
  int leaves = 0;
  json_t *own = own_dump(f->ctx);
  size_t i;
  json_t *t;
  json_array_foreach(json_object_get(doc, "tasks"), i, t) {
    const char *n = json_string_value(json_object_get(t, "name"));
    if (n == NULL || strcmp(n, "input") != 0)
      continue;
    leaves++;
    assert_non_null(json_object_get(t, "input_of"));
    assert_string_equal(json_string_value(json_object_get(t, "input_of")), all);
    /* Nothing awaits an input itself: the stack goes through the all(). */
    json_t *o =
        json_object_get(own, json_string_value(json_object_get(t, "id")));
    assert_string_equal(json_string_value(json_object_get(o, "input_of")), all);
  }
  assert_int_equal(leaves, 2);
  assert_null(json_object_get(named(doc, "fan"), "input_of"));
  json_decref(own);
  json_decref(doc);
  job_free(&j);
  assert_int_equal(tasks_nparked, 2);
  assert_int_equal(uvp_promise_cancel(tasks_parked[0]), 0);
  assert_int_equal(uvp_promise_cancel(tasks_parked[1]), 0);
  tasks_nparked = 0;
  run_loop(f);
  assert_int_equal(uvp_promise_state(r), UVP_FULFILLED);
  uvp_promise_release(r);
}

/* ---- a call into a context whose loop does not run ----------------------- */

static void test_warn_call_stuck(void **state) {
  fixture_t *f = *state;
  uv_loop_t idle_loop; /* never run */
  uvp_ctx_t *other;
  assert_int_equal(uv_loop_init(&idle_loop), 0);
  assert_int_equal(uvp_ctx_new(&idle_loop, &other), 0);
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  uvp_promise_t *c;
  int line = __LINE__ + 1;
  int rc = uvp_call_start(f->ctx, other, tasks_never_runs, NULL, NULL, &c);
  assert_int_equal(rc, 0);
  job_t j = {.fn = ask_twice}; /* at 0.1 s: too soon; at 1.4 s */
  run_with(f, &j, NULL);
  json_t *soon = json_loads(j.answer[0], 0, NULL);
  json_t *doc = json_loads(j.answer[1], 0, NULL);
  assert_non_null(soon);
  assert_non_null(doc);
  assert_null(warning(soon, "call-stuck"));
  json_t *w = warning(doc, "call-stuck");
  assert_non_null(w);
  char site[64];
  snprintf(site, sizeof(site), "test-console.c:%d", line);
  assert_non_null(strstr(json_string_value(json_object_get(w, "site")), site));
  const char *why = json_string_value(json_object_get(w, "why"));
  assert_non_null(strstr(why, "not running"));
  char target[40];
  snprintf(target, sizeof(target), "0x%" PRIxPTR, PTR_ARG(other));
  assert_non_null(strstr(why, target));
  assert_true(json_integer_value(json_object_get(w, "ms")) >= 1000);
  printf("the warning: %s at %s: %s\n",
         json_string_value(json_object_get(w, "task")),
         json_string_value(json_object_get(w, "site")), why);
  /* The program's own dump says it of the same task. */
  json_t *own = own_dump(f->ctx);
  json_t *t = json_object_get(own, json_string_value(json_object_get(w, "id")));
  assert_non_null(t);
  assert_non_null(strstr(json_string_value(json_object_get(
                             json_object_get(t, "waits_for"), "target")),
                         "whose loop has not run"));
  json_decref(own);
  json_decref(soon);
  json_decref(doc);
  job_free(&j);
  /* The target goes: the call is answered UVP_ECLOSED. */
  assert_int_equal(uvp_ctx_close(other), 0);
  assert_int_equal(uv_run(&idle_loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&idle_loop), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_reason(c, NULL), UVP_ECLOSED);
  uvp_promise_release(c);
}

/* ---- another user -------------------------------------------------------- */

/* In a child as `nobody`: connect and ask; 0 if refused as expected
 * (`mode` 0600: the file refuses; 0666: the peer check closes).  The child
 * ends by exec'ing `sh -c "exit CODE"`: under valgrind, an exit of the
 * forked copy would be checked for leaks (all of the test's memory). */
static int as_nobody(int open_mode) {
  if (setgid(65534) != 0 || setuid(65534) != 0)
    return 10;
  int fd = cl_connect(sock);
  if (open_mode == 0600)
    return fd == -EACCES ? 0 : 11;
  if (fd < 0)
    return 12;
  char *a = cl_ask(fd, "ping\n");
  int rc = a == NULL ? 0 : 13; /* closed, no answer */
  free(a);
  close(fd);
  return rc;
}

static void tick(uv_timer_t *t) { (void)t; }

/* Serve the console (a 1 ms timer keeps the loop turning: the console's
 * own handles keep nothing alive) until the child ends, 10 s at most. */
static void wait_child(fixture_t *f, pid_t pid, int *status) {
  uv_timer_t t;
  assert_int_equal(uv_timer_init(&f->loop, &t), 0);
  assert_int_equal(uv_timer_start(&t, tick, 1, 1), 0);
  bool ended = false;
  for (int i = 0; i < 10000 && !ended; i++) {
    uv_run(&f->loop, UV_RUN_ONCE);
    ended = waitpid(pid, status, WNOHANG) == pid;
  }
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&f->loop, UV_RUN_NOWAIT); /* its close: it is on this stack */
  if (!ended) {
    kill(pid, SIGKILL);
    fail_msg("the child as nobody did not end");
  }
}

static void test_other_user(void **state) {
  fixture_t *f = *state;
  if (geteuid() != 0)
    SKIP_BECAUSE("not root: cannot run a client as another user");
  assert_int_equal(chmod(dir, 0711), 0);
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  int modes[2] = {0600, 0666};
  for (int m = 0; m < 2; m++) {
    assert_int_equal(chmod(sock, (mode_t)modes[m]), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      char code[32];
      snprintf(code, sizeof(code), "exit %d", as_nobody(modes[m]));
      execl("/bin/sh", "sh", "-c", code, (char *)NULL);
      _exit(20);
    }
    int status;
    wait_child(f, pid, &status);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
  assert_int_equal(uvp_console_close(f->ctx), 0);
}

/* ---- hostile clients ----------------------------------------------------- */

static long rss_kb(void) {
  FILE *fp = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (fp != NULL && fgets(line, sizeof(line), fp) != NULL)
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
      break;
  if (fp != NULL)
    fclose(fp);
  return kb;
}

/* Read until EOF or an error: 1 if the server closed within 10 s. */
static int closed_by_server(int fd) {
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
      return 1;
    if (n < 0)
      return 0; /* the 10 s receive timeout */
  }
}

static void hostile(job_t *j) {
  /* Garbage with no newline: an error, then closed. */
  int g = cl_connect(sock);
  char junk[4096];
  for (size_t i = 0; i < sizeof(junk); i++)
    junk[i] = (char)(i * 7 + 1) == '\n' ? 'x' : (char)(i * 7 + 1);
  if (g >= 0 && write(g, junk, sizeof(junk)) > 0) {
    char *a = cl_line(g);
    j->answer[0] = a;
    j->eof[0] = closed_by_server(g);
  }
  if (g >= 0)
    close(g);
  /* A flood of requests from a client that never reads. */
  int fl = cl_connect(sock);
  if (fl >= 0) {
    (void)fcntl(fl, F_SETFL, O_NONBLOCK);
    const char req[] = "snapshot json\n";
    for (int i = 0; i < 200000; i++)
      if (write(fl, req, sizeof(req) - 1) < 0)
        break; /* its own socket is full: the server stopped reading */
    (void)fcntl(fl, F_SETFL, 0);
  }
  /* Too many clients: the ninth and later are closed at once. */
  int many[12];
  for (int i = 0; i < 12; i++)
    many[i] = cl_connect(sock);
  usleep(200 * 1000);
  for (int i = 7; i < 12; i++)
    if (many[i] >= 0) {
      char c;
      j->eof[1] += read(many[i], &c, 1) == 0;
    }
  for (int i = 0; i < 12; i++)
    if (many[i] >= 0)
      close(many[i]);
  usleep(200 * 1000); /* the server has seen them go */
  /* A client that reads is still answered meanwhile (once the server has
   * seen the others go: until then it may be the ninth, refused). */
  int ok = -1;
  for (int i = 0; ok < 0 && i < 100; i++) {
    char *a = (ok = cl_connect(sock)) >= 0 ? cl_ask(ok, "ping\n") : NULL;
    if (a == NULL && ok >= 0) {
      close(ok);
      ok = -1;
      usleep(100 * 1000);
    }
    free(a);
  }
  for (int i = 0; ok >= 0 && i < 20; i++) {
    char *a = cl_ask(ok, "snapshot json\n");
    j->note += a != NULL && a[0] == '{';
    free(a);
  }
  if (ok >= 0)
    close(ok);
  /* The flood's client, which took no answer, is dropped after 5 s: seen
   * without reading (a read would take the answer waiting, and let the
   * server go on). */
  if (fl >= 0) {
    struct pollfd p = {fl, POLLRDHUP, 0};
    j->eof[2] = poll(&p, 1, 20000) == 1 && (p.revents & (POLLRDHUP | POLLHUP));
    close(fl);
  }
}

static void test_hostile(void **state) {
  fixture_t *f = *state;
  enum { N = 300 };
  uvp_promise_t *p[N], *q[N];
  for (int i = 0; i < N; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &p[i]), 0);
    assert_int_equal(uvp_promise_then(p[i], NULL, NULL, &q[i]), 0);
  }
  assert_int_equal(uvp_console_listen(f->ctx, sock), 0);
  long before = rss_kb();
  job_t j = {.fn = hostile};
  lag_t lag;
  run_with(f, &j, &lag);
  long after = rss_kb();
  assert_non_null(j.answer[0]);
  assert_string_equal(j.answer[0], "error line too long");
  assert_int_equal(j.eof[0], 1);
  assert_int_equal(j.eof[1], 5); /* the flood's and 7 more: the rest refused */
  assert_int_equal(j.note, 20);
  assert_int_equal(j.eof[2], 1);
  printf("loop: max %.2f ms of CPU between two 1 ms ticks (%.2f ms wall); "
         "RSS %ld -> %ld kB\n",
         (double)lag.max_cpu / 1e6, (double)lag.max_wall / 1e6, before, after);
  /* No turn of the loop may take the stall threshold the guides use,
   * 50 ms: a console that answered the flood as it came would spend
   * seconds in one.  Alone here the worst turn takes 0.7-2.2 ms of CPU;
   * a plain clang build among CI's parallel suites took 17 ms once (96 ms
   * wall), when the bound was 10.  (The bound is native CPU's: valgrind
   * and qemu-user run the loop tens of times slower, TSan and ASan
   * several times: 17 ms under TSan and 34 ms under ASan at load were
   * seen.) */
#if !defined(T_TSAN) && !defined(T_ASAN)
  if (!RUNNING_ON_VALGRIND && emulator() == NULL)
    assert_true(lag.max_cpu <= 50 * 1000000u);
#endif
  assert_true(after - before < 16 * 1024);
  job_free(&j);
  for (int i = 0; i < N; i++) {
    uvp_promise_reject(p[i], UV_ECANCELED, NULL, NULL);
    uvp_promise_release(p[i]);
    uvp_promise_release(q[i]);
  }
  run_loop(f);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      CONSOLE_TEST(test_listen_errors),   CONSOLE_TEST(test_snapshot),
      CONSOLE_TEST(test_warn_busy),       CONSOLE_TEST(test_warn_cancelled),
      CONSOLE_TEST(test_warn_group_idle), CONSOLE_TEST(test_other_user),
      CONSOLE_TEST(test_hostile),         CONSOLE_TEST(test_close_with_client),
      CONSOLE_TEST(test_busy_idle),       CONSOLE_TEST(test_async_stack),
      CONSOLE_TEST(test_warn_call_stuck), CONSOLE_TEST(test_warn_never_settles),
      CONSOLE_TEST(test_async_stack_all),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
