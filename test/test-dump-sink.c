/* Where the dumps write, when it cannot take them now (issue 51): a pipe
 * nobody reads (a stalled log collector on stderr), a socket nobody reads
 * or whose peer is gone, a pipe already non-blocking, a pipe whose reader
 * is gone, a write callback that says UV_EAGAIN.  Each dump returns at
 * once (well under a second; a blocking write would hang the test until
 * meson's timeout), cut at a line's end, with a last line saying how much
 * was dropped when that fits, and returns UV_EAGAIN; the lines written
 * plus those dropped are every task.  A pipe with room gets the whole
 * dump, and the count. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

#define TASKS 2000 /* about 250 KB of text: four times a pipe's 64 KiB */

/* TASKS pending promises, each with a handler: a task each. */
typedef struct tasks_s {
  uvp_promise_t *p[TASKS], *q[TASKS];
} tasks_t;

static void make_tasks(fixture_t *f, tasks_t *t, int n) {
  for (int i = 0; i < n; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &t->p[i]), 0);
    assert_int_equal(uvp_promise_then(t->p[i], NULL, NULL, &t->q[i]), 0);
  }
}

static void free_tasks(tasks_t *t, int n) {
  for (int i = 0; i < n; i++) {
    uvp_promise_reject(t->p[i], UV_ECANCELED, NULL, NULL);
    uvp_promise_release(t->p[i]);
    uvp_promise_release(t->q[i]);
  }
}

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

/* Everything the pipe holds (its write end left open), NUL-terminated. */
static char *drain(int rfd, size_t *len) {
  int fl = fcntl(rfd, F_GETFL);
  assert_int_equal(fcntl(rfd, F_SETFL, fl | O_NONBLOCK), 0);
  size_t cap = 1 << 20, n = 0;
  char *buf = malloc(cap);
  assert_non_null(buf);
  ssize_t r;
  while ((r = read(rfd, buf + n, cap - 1 - n)) > 0)
    n += (size_t)r;
  buf[n] = '\0';
  *len = n;
  return buf;
}

/* The dump of TASKS tasks, `flags`, to `stream`: returned promptly. */
static int dump_timed(fixture_t *f, FILE *stream, int flags) {
  uvp_dump_opts_t o = {flags, stream, NULL, NULL, 0};
  double t0 = now_s();
  int rc = uvp_ctx_dump_tasks(f->ctx, &o);
  double took = now_s() - t0;
  printf("    dump returned %d in %.1f ms\n", rc, took * 1000);
  assert_true(took < 1.0);
  return rc;
}

/* The text the pipe got: whole task lines, then the note, which says how
 * many lines were dropped: together, every task. */
static void check_cut_text(const char *text, size_t len, int tasks) {
  assert_true(len > 0 && text[len - 1] == '\n');
  const char *last = text + len - 1;
  while (last > text && last[-1] != '\n')
    last--;
  unsigned long long bytes = 0, lines = 0;
  assert_int_equal(sscanf(last,
                          "(uvp: dump cut short: %llu bytes, %llu lines not "
                          "written: the output would block)",
                          &bytes, &lines),
                   2);
  int written = 0;
  for (const char *s = text; s < last; s = strchr(s, '\n') + 1) {
    assert_true(strncmp(s, "promise ", 8) == 0);
    written++;
  }
  printf("    %d lines written, %llu lines (%llu bytes) dropped\n", written,
         lines, bytes);
  assert_true(written > 0 && lines > 0 && bytes > 0);
  assert_int_equal(written + (int)lines, tasks);
}

static void test_pipe_nobody_reads(void **state) {
  fixture_t *f = *state;
  static tasks_t t;
  make_tasks(f, &t, TASKS);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  FILE *w = fdopen(fds[1], "w");
  assert_non_null(w);
  /* Text: cut once the pipe is full, a note at the end. */
  assert_int_equal(dump_timed(f, w, 0), UV_EAGAIN);
  size_t len;
  char *text = drain(fds[0], &len);
  check_cut_text(text, len, TASKS);
  free(text);
  /* JSON: every line an object, the last one the counts. */
  assert_int_equal(dump_timed(f, w, UVP_DUMP_JSON), UV_EAGAIN);
  text = drain(fds[0], &len);
  char *last = text + len - 1;
  while (last > text && last[-1] != '\n')
    last--;
  unsigned long long bytes = 0, lines = 0;
  assert_int_equal(sscanf(last,
                          "{\"v\":1,\"dropped_bytes\":%llu,"
                          "\"dropped_lines\":%llu}\n",
                          &bytes, &lines),
                   2);
  int written = 0;
  for (char *s = text; s < last; s = strchr(s, '\n') + 1) {
    assert_true(strncmp(s, "{\"v\":1,\"task\":", 14) == 0);
    assert_true(strchr(s, '\n')[-1] == '}');
    written++;
  }
  assert_int_equal(written + (int)lines, TASKS);
  free(text);
  /* Four dumps with no reader between them: the first fills the pipe,
   * the others find it full: a task list writes nothing but its last
   * line (room is kept for it), dump_pending too; each at once.  The
   * summary, a few lines, may fit in the room kept: how much is left
   * depends on the length of the task lines, which hold the paths of
   * this file (so on where the build directory is).  It goes whole then,
   * else only its note. */
  assert_int_equal(dump_timed(f, w, 0), UV_EAGAIN);
  assert_int_equal(dump_timed(f, w, 0), UV_EAGAIN);
  int summary = dump_timed(f, w, UVP_DUMP_SUMMARY);
  assert_true(summary == UV_EAGAIN || summary == TASKS);
  double t0 = now_s();
  assert_int_equal(uvp_ctx_dump_pending(f->ctx, w), UV_EAGAIN);
  assert_true(now_s() - t0 < 1.0);
  text = drain(fds[0], &len);
  int notes = 0, after = 0;
  for (const char *s = text; s < text + len; s = strchr(s, '\n') + 1) {
    int note = strncmp(s, "(uvp: dump cut short: ", 22) == 0;
    after += notes > 0 && !note; /* a line after the first note */
    notes += note;
  }
  if (summary == UV_EAGAIN) {
    assert_int_equal(notes, 4);
    assert_int_equal(after, 0);
  } else { /* the summary's lines, whole, after the second note */
    assert_int_equal(notes, 3);
    assert_true(after > 0);
    assert_non_null(strstr(text, ")\n2000 tasks;"));
  }
  free(text);
  /* Room again: a summary fits whole, and says how many there are. */
  assert_int_equal(dump_timed(f, w, UVP_DUMP_SUMMARY), TASKS);
  text = drain(fds[0], &len);
  assert_true(strncmp(text, "2000 tasks;", 11) == 0);
  assert_null(strstr(text, "cut short"));
  free(text);
  fclose(w);
  close(fds[0]);
  free_tasks(&t, TASKS);
}

/* A stream with output of its own still buffered: it goes first when the
 * pipe has room, and the dump after it. */
static void test_buffered_stream_first(void **state) {
  fixture_t *f = *state;
  tasks_t *t = malloc(sizeof(*t));
  make_tasks(f, t, 3);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  FILE *w = fdopen(fds[1], "w");
  assert_non_null(w);
  fputs("before\n", w); /* buffered: a pipe's stream is fully buffered */
  assert_int_equal(dump_timed(f, w, 0), 3);
  size_t len;
  char *text = drain(fds[0], &len);
  assert_true(strncmp(text, "before\npromise ", 15) == 0);
  free(text);
  fclose(w);
  close(fds[0]);
  free_tasks(t, 3);
  free(t);
}

static void test_socket_nobody_reads(void **state) {
  fixture_t *f = *state;
  static tasks_t t;
  make_tasks(f, &t, TASKS);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  int small = 4096;
  (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  FILE *w = fdopen(sv[0], "w");
  assert_non_null(w);
  assert_int_equal(dump_timed(f, w, 0), UV_EAGAIN);
  assert_int_equal(dump_timed(f, w, 0), UV_EAGAIN);
  fclose(w);
  close(sv[1]);
  free_tasks(&t, TASKS);
}

/* A socket whose peer is gone, non-blocking: EPIPE, not SIGPIPE. */
static void test_socket_peer_gone(void **state) {
  fixture_t *f = *state;
  tasks_t *t = malloc(sizeof(*t));
  make_tasks(f, t, 3);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
  close(sv[1]);
  void (*was)(int) = signal(SIGPIPE, SIG_DFL);
  FILE *w = fdopen(sv[0], "w");
  assert_int_equal(dump_timed(f, w, 0), UV_EPIPE);
  fclose(w);
  signal(SIGPIPE, was);
  free_tasks(t, 3);
  free(t);
}

/* A pipe already non-blocking (its flags are the program's: left so). */
static void test_nonblocking_pipe(void **state) {
  fixture_t *f = *state;
  static tasks_t t;
  make_tasks(f, &t, TASKS);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  assert_int_equal(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
  FILE *w = fdopen(fds[1], "w");
  assert_non_null(w);
  assert_int_equal(dump_timed(f, w, 0), UV_EAGAIN);
  assert_true(fcntl(fds[1], F_GETFL) & O_NONBLOCK);
  size_t len;
  char *text = drain(fds[0], &len);
  check_cut_text(text, len, TASKS);
  free(text);
  fclose(w);
  close(fds[0]);
  free_tasks(&t, TASKS);
}

/* Blocking again after the dump: the pipe's flags were not touched. */
static void test_flags_untouched(void **state) {
  fixture_t *f = *state;
  tasks_t *t = malloc(sizeof(*t));
  make_tasks(f, t, 3);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  FILE *w = fdopen(fds[1], "w");
  assert_int_equal(dump_timed(f, w, 0), 3);
  assert_false(fcntl(fds[1], F_GETFL) & O_NONBLOCK);
  fclose(w);
  close(fds[0]);
  free_tasks(t, 3);
  free(t);
}

/* The reader gone: the pipe's error, and no SIGPIPE. */
static void test_reader_gone(void **state) {
  fixture_t *f = *state;
  tasks_t *t = malloc(sizeof(*t));
  make_tasks(f, t, 3);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  close(fds[0]);
  void (*was)(int) = signal(SIGPIPE, SIG_DFL);
  FILE *w = fdopen(fds[1], "w");
  assert_int_equal(dump_timed(f, w, 0), UV_EPIPE);
  fclose(w);
  signal(SIGPIPE, was);
  free_tasks(t, 3);
  free(t);
}

/* A write callback that takes 5 lines, then says UV_EAGAIN: the rest is
 * dropped (not offered again), the note offered once. */
typedef struct cb_s {
  int calls, taken;
  char last[256];
} cb_t;

static int full_after_5(void *arg, const char *text, size_t len) {
  cb_t *c = arg;
  c->calls++;
  if (c->taken == 5) {
    snprintf(c->last, sizeof(c->last), "%.*s", (int)len, text);
    return UV_EAGAIN;
  }
  c->taken++;
  return 0;
}

static void test_callback_eagain(void **state) {
  fixture_t *f = *state;
  tasks_t *t = malloc(sizeof(*t));
  make_tasks(f, t, 20);
  cb_t c = {0};
  uvp_dump_opts_t o = {0, NULL, full_after_5, &c, 0};
  assert_int_equal(uvp_ctx_dump_tasks(f->ctx, &o), UV_EAGAIN);
  assert_int_equal(c.taken, 5);
  assert_int_equal(c.calls, 7); /* 5 taken, 1 refused, then the note */
  unsigned long long bytes, lines;
  assert_int_equal(sscanf(c.last,
                          "(uvp: dump cut short: %llu bytes, %llu lines not "
                          "written",
                          &bytes, &lines),
                   2);
  assert_int_equal(lines, 15);
  free_tasks(t, 20);
  free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      QUIET_TEST(test_pipe_nobody_reads),
      QUIET_TEST(test_buffered_stream_first),
      QUIET_TEST(test_socket_nobody_reads),
      QUIET_TEST(test_socket_peer_gone),
      QUIET_TEST(test_nonblocking_pipe),
      QUIET_TEST(test_flags_untouched),
      QUIET_TEST(test_reader_gone),
      QUIET_TEST(test_callback_eagain),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
