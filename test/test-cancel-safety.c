/* Cancel-safety (uvp.h: the "Cancelled:" line of every wrapper): what a
 * cancellation in mid-flight leaves behind, shown for each line by each of
 * the three ways a program cancels: uvp_promise_cancel, a group's cancel
 * (the operation a member of a uvp_group_t) and a deadline (a group's,
 * passing when the test advances the virtual clock: uvp_ctx_set_clock).
 *  - file requests queued behind a full pool: none of them runs (no file
 *    made, changed, removed; a descriptor given to close stays open);
 *  - file requests running (pinned on a FIFO or a full pipe): they
 *    complete: an open's descriptor is closed by uvp, a read takes the
 *    bytes, a write puts them, read_file leaves nothing, write_file's open
 *    has run and nothing was written; a job runs to its end;
 *  - TCP, against a plain blocking socket as the peer: a connect, read,
 *    read_all or shutdown closes the connection (the peer reads its end;
 *    bytes not read are lost), a write is partly sent (the peer receives
 *    a prefix of the pattern, then the end), a watch stops alone (the
 *    bytes it read ahead come to the next read);
 *  - a child is killed by SIGTERM, or left running if it ignores it;
 *  - a delay's value is freed; a timeout cancels its input.
 * Every test ends with uv_loop_close() == 0 (the fixture); descriptors are
 * counted before and after. */
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include "fs-helpers.h"

/* ---- the three ways ------------------------------------------------------ */

typedef enum { BY_CANCEL, BY_GROUP, BY_DEADLINE, BY_COUNT } by_t;
static const char *const by_name[BY_COUNT] = {"uvp_promise_cancel",
                                              "uvp_group_cancel", "a deadline"};

typedef int (*start_fn)(void *arg, uvp_promise_t **out);

/* One operation in flight, started the way it will be cancelled. */
typedef struct flight_s {
  fixture_t *f;
  by_t by;
  uvp_group_t *g;
  start_fn start;
  void *arg;
  uvp_promise_t *p; /* the operation's promise, a reference of the test */
} flight_t;

static int launch(void *arg, uvp_promise_t **out) {
  flight_t *fl = arg;
  int rc = fl->start(fl->arg, out);
  if (rc == 0)
    fl->p = uvp_promise_retain(*out);
  return rc;
}

/* start(arg): alone (BY_CANCEL), or as the member of a group of its own,
 * with a deadline 1 s of virtual time away for BY_DEADLINE. */
static void begin(fixture_t *f, flight_t *fl, by_t by, start_fn start,
                  void *arg) {
  *fl = (flight_t){f, by, NULL, start, arg, NULL};
  if (by == BY_CANCEL) {
    assert_int_equal(start(arg, &fl->p), 0);
    return;
  }
  uvp_group_opts_t o = {.deadline_ms = by == BY_DEADLINE ? 1000 : 0};
  assert_int_equal(uvp_group_new(f->ctx, &o, &fl->g), 0);
  assert_int_equal(uvp_group_start(fl->g, launch, fl, NULL), 0);
  assert_non_null(fl->p);
  assert_int_equal(uvp_group_close(fl->g), 0);
}

/* Cancel it that way: its promise rejects at once. */
static void cancel(flight_t *fl) {
  /* One advance passes the deadlines of every flight begun together. */
  bool passed =
      fl->by == BY_DEADLINE && uvp_promise_reason(fl->p, NULL) == UV_ETIMEDOUT;
  if (!passed)
    assert_int_equal(uvp_promise_state(fl->p), UVP_PENDING);
  switch (passed ? BY_COUNT : fl->by) {
  case BY_COUNT:
    break;
  case BY_CANCEL:
    assert_int_equal(uvp_promise_cancel(fl->p), 0);
    break;
  case BY_GROUP:
    assert_int_equal(uvp_group_cancel(fl->g), 0);
    break;
  case BY_DEADLINE:
    assert_int_equal(uvp_clock_advance(fl->f->ctx, 1000), 0);
    break;
  }
  int want = fl->by == BY_DEADLINE ? UV_ETIMEDOUT : UV_ECANCELED;
  if (uvp_promise_reason(fl->p, NULL) != want)
    fail_msg("cancelled by %s: %s", by_name[fl->by],
             uvp_err_name(uvp_promise_reason(fl->p, NULL)));
}

/* After the loop ran: the promise stayed rejected, with no value. */
static void end(flight_t *fl) {
  assert_int_equal(uvp_promise_state(fl->p), UVP_REJECTED);
  assert_null(uvp_promise_value(fl->p));
  uvp_promise_release(fl->p);
  uvp_group_release(fl->g);
}

/* The quiet fs fixture, on a virtual clock the deadlines pass on. */
static int cs_setup(void **state) {
  fs_setup(state);
  fixture_t *f = *state;
  return uvp_ctx_set_clock(f->ctx, UVP_CLOCK_VIRTUAL);
}

#define CS_TEST(fn) FIXTURE_TEST_WITH(fn, cs_setup, fs_teardown)

/* Run what is ready, and what completes in the pool meanwhile, for up to
 * `ms` of real time (the clock is manual: the loop may wait for nothing). */
static void turn(fixture_t *f, int ms) {
  for (int i = 0; i < ms; i++) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
  }
}

/* ---- files: queued, never run -------------------------------------------- */

static struct {
  uvp_ctx_t *ctx;
  int fd;       /* "exists", read-write */
  int close_fd; /* given to uvp_fs_close */
  char buf[8];
  int ran; /* the job's */
  uvp_work_end_t ended;
} q;

static int s_open(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_open(q.ctx, at("created"), O_WRONLY | O_CREAT, 0644, o);
}
static int s_close(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_close(q.ctx, q.close_fd, o);
}
static int s_read(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_read(q.ctx, q.fd, q.buf, sizeof(q.buf), -1, o);
}
static int s_write(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_write(q.ctx, q.fd, "WXYZ", 4, 0, o);
}
static int s_stat(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_stat(q.ctx, at("exists"), o);
}
static int s_lstat(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_lstat(q.ctx, at("link"), o);
}
static int s_fstat(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_fstat(q.ctx, q.fd, o);
}
static int s_unlink(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_unlink(q.ctx, at("exists"), o);
}
static int s_mkdir(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_mkdir(q.ctx, at("never"), 0755, o);
}
static int s_rmdir(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_rmdir(q.ctx, at("emptydir"), o);
}
static int s_rename(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_rename(q.ctx, at("exists"), at("renamed"), o);
}
static int s_scandir(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_scandir(q.ctx, tmp, o);
}
static int s_realpath(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_realpath(q.ctx, at("link"), o);
}
static int s_readlink(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_readlink(q.ctx, at("link"), o);
}
static int s_fsync(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_fsync(q.ctx, q.fd, o);
}
static int s_fdatasync(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_fdatasync(q.ctx, q.fd, o);
}
static int s_ftruncate(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_ftruncate(q.ctx, q.fd, 1, o);
}
static int s_chmod(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_chmod(q.ctx, at("exists"), 0600, o);
}
static int s_fchmod(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_fchmod(q.ctx, q.fd, 0604, o);
}
static int s_copyfile(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_copyfile(q.ctx, at("exists"), at("copied"), 0, o);
}
static int s_read_file(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_read_file(q.ctx, at("exists"), 0, o);
}
static int s_write_file(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_write_file(q.ctx, at("never.txt"), "x", 1, o);
}
static int s_dns(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_getaddrinfo(q.ctx, "localhost", NULL, NULL, o);
}
static int q_job(void *arg, void **result) {
  (void)arg;
  (void)result;
  q.ran++;
  return 0;
}
static void q_done(void *arg, uvp_work_end_t e) {
  (void)arg;
  q.ended = e;
}
static int s_work(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_work_full(q.ctx, q_job, NULL, q_done, NULL, o);
}

static const start_fn queued_kinds[] = {
    s_open,     s_close,    s_read,      s_write,      s_stat,      s_lstat,
    s_fstat,    s_unlink,   s_mkdir,     s_rmdir,      s_rename,    s_scandir,
    s_realpath, s_readlink, s_fsync,     s_fdatasync,  s_ftruncate, s_chmod,
    s_fchmod,   s_copyfile, s_read_file, s_write_file, s_dns,       s_work};
enum { NQUEUED = sizeof(queued_kinds) / sizeof(queued_kinds[0]) };

static void queued_once(fixture_t *f, by_t by) {
  q.ctx = f->ctx;
  q.ran = 0;
  q.ended = UVP_WORK_SETTLED;
  put("exists", "data", 4);
  assert_int_equal(chmod(at("exists"), 0644), 0);
  assert_int_equal(mkdir(at("emptydir"), 0755), 0);
  assert_int_equal(symlink("exists", at("link")), 0);
  q.fd = open(at("exists"), O_RDWR);
  q.close_fd = open(at("exists"), O_RDONLY);
  assert_true(q.fd >= 0 && q.close_fd >= 0);
  memset(q.buf, 'x', sizeof(q.buf));
  int fds = count_fds();

  size_t n = uvp_pool_size();
  uvp_promise_t **w = block_pool(f, n);
  flight_t fl[NQUEUED];
  for (size_t i = 0; i < NQUEUED; i++)
    begin(f, &fl[i], by, queued_kinds[i], NULL);
  for (size_t i = 0; i < NQUEUED; i++)
    cancel(&fl[i]);
  unblock_pool();
  run_loop(f);
  blockers_done(w, n, 0);
  for (size_t i = 0; i < NQUEUED; i++)
    end(&fl[i]);

  /* None of them ran. */
  assert_false(exists("created"));
  assert_int_not_equal(fcntl(q.close_fd, F_GETFD), -1); /* still open */
  for (size_t i = 0; i < sizeof(q.buf); i++)
    assert_int_equal(q.buf[i], 'x');
  assert_int_equal(lseek(q.fd, 0, SEEK_CUR), 0);
  size_t len;
  char *data = get(at("exists"), &len);
  assert_int_equal(len, 4); /* neither written nor truncated */
  assert_memory_equal(data, "data", 4);
  free(data);
  struct stat st;
  assert_int_equal(stat(at("exists"), &st), 0);
  assert_int_equal(st.st_mode & 0777, 0644); /* chmod, fchmod */
  assert_false(exists("never"));
  assert_true(exists("emptydir"));
  assert_false(exists("renamed"));
  assert_false(exists("copied"));
  assert_false(exists("never.txt"));
  assert_int_equal(q.ran, 0);
  assert_int_equal(q.ended, UVP_WORK_CANCELLED);
  assert_int_equal(count_fds(), fds); /* no late result left a descriptor */

  assert_int_equal(close(q.close_fd), 0);
  assert_int_equal(close(q.fd), 0);
  assert_int_equal(unlink(at("link")), 0);
  assert_int_equal(rmdir(at("emptydir")), 0);
  assert_int_equal(unlink(at("exists")), 0);
}

static void test_queued_file_requests_never_run(void **state) {
  for (by_t by = 0; by < BY_COUNT; by++)
    queued_once(*state, by);
}

/* ---- files: running, completed ------------------------------------------- */

static struct {
  uvp_ctx_t *ctx;
  char path[PATH_MAX];
  int fd;
  char buf[8];
} r;

static int s_open_fifo(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_open(r.ctx, r.path, O_RDONLY, 0, o);
}
static int s_read_fifo(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_read(r.ctx, r.fd, r.buf, sizeof(r.buf), -1, o);
}
static int s_write_fifo(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_write(r.ctx, r.fd, "WXYZ", 4, -1, o);
}
static int s_read_file_fifo(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_read_file(r.ctx, r.path, 0, o);
}
static int s_write_file_fifo(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_fs_write_file(r.ctx, r.path, "hello", 5, o);
}

static void wait_in_syscall(long nr, int fd) {
  for (int i = 0; i < 10000 && !thread_in_syscall(nr, fd); i++)
    uv_sleep(1);
  assert_true(thread_in_syscall(nr, fd));
}

/* A pool thread in open(2): glibc's open() makes it openat(AT_FDCWD, ...),
 * musl's is open itself where the machine has one (x86-64). */
static bool thread_in_open(void) {
  if (thread_in_syscall(SYS_openat, AT_FDCWD))
    return true;
#if defined(SYS_open)
  char want[32];
  snprintf(want, sizeof(want), "%ld 0x", (long)SYS_open);
  return thread_in_syscall_line(want);
#else
  return false;
#endif
}

static void running_once(fixture_t *f, by_t by) {
  r.ctx = f->ctx;
  snprintf(r.path, sizeof(r.path), "%s", at("fifo"));
  assert_int_equal(mkfifo(r.path, 0600), 0);
  int fds = count_fds();
  flight_t fl;

  /* open: completes, and uvp closes what it opened. */
  begin(f, &fl, by, s_open_fifo, NULL);
  int wfd = writer_for_blocked_reader(r.path);
  cancel(&fl);
  run_loop(f);
  end(&fl);
  assert_int_equal(close(wfd), 0);
  assert_int_equal(count_fds(), fds);

  /* read: completes, and the bytes are gone from the pipe into buf. */
  r.fd = open(r.path, O_RDWR);
  int peek = open(r.path, O_RDONLY | O_NONBLOCK);
  assert_true(r.fd >= 0 && peek >= 0);
  memset(r.buf, 0, sizeof(r.buf));
  begin(f, &fl, by, s_read_fifo, NULL);
  wait_in_syscall(SYS_read, r.fd);
  cancel(&fl);
  assert_int_equal(write(r.fd, "abc", 3), 3);
  run_loop(f);
  end(&fl);
  assert_memory_equal(r.buf, "abc", 3);
  char c;
  assert_int_equal(read(peek, &c, 1), -1); /* nothing left in the pipe */
  assert_int_equal(errno, EAGAIN);

  /* write: completes once the pipe has room: the bytes are written. */
  int filler = open(r.path, O_WRONLY | O_NONBLOCK);
  assert_true(filler >= 0);
  static char junk[4096];
  memset(junk, 'f', sizeof(junk));
  size_t filled = 0;
  for (;;) {
    ssize_t k = write(filler, junk, sizeof(junk));
    if (k < 0)
      break;
    filled += (size_t)k;
  }
  assert_int_equal(errno, EAGAIN);
  begin(f, &fl, by, s_write_fifo, NULL);
  wait_in_syscall(SYS_write, r.fd);
  cancel(&fl);
  size_t drained = 0;
  char tail[4] = {0};
  for (int i = 0; i < 10000 && drained < filled + 4; i++) {
    ssize_t k = read(peek, junk, sizeof(junk));
    if (k > 0) {
      for (ssize_t j = 0; j < k; j++) {
        memmove(tail, tail + 1, 3);
        tail[3] = junk[j];
      }
      drained += (size_t)k;
    } else {
      uv_sleep(1);
    }
  }
  assert_int_equal(drained, filled + 4);
  assert_memory_equal(tail, "WXYZ", 4);
  run_loop(f);
  end(&fl);
  assert_int_equal(close(filler), 0);
  assert_int_equal(close(peek), 0);
  assert_int_equal(close(r.fd), 0);
  assert_int_equal(count_fds(), fds);

  /* read_file: the open completes, nothing else runs or is left. */
  begin(f, &fl, by, s_read_file_fifo, NULL);
  wfd = writer_for_blocked_reader(r.path);
  assert_int_equal(write(wfd, "late", 4), 4);
  cancel(&fl);
  run_loop(f);
  end(&fl);
  assert_int_equal(close(wfd), 0);
  assert_int_equal(count_fds(), fds);

  /* write_file: its open (for writing: it waits for a reader) completes,
   * nothing is written after it, the descriptor is closed. */
  begin(f, &fl, by, s_write_file_fifo, NULL);
  for (int i = 0; i < 10000 && !thread_in_open(); i++)
    uv_sleep(1);
  assert_true(thread_in_open());
  cancel(&fl);
  int rfd = open(r.path, O_RDONLY | O_NONBLOCK);
  assert_true(rfd >= 0);
  run_loop(f);
  end(&fl);
  assert_int_equal(read(rfd, junk, sizeof(junk)), 0); /* the end, no bytes */
  assert_int_equal(close(rfd), 0);
  assert_int_equal(count_fds(), fds);
  assert_int_equal(unlink(r.path), 0);
}

static void test_running_file_requests_complete(void **state) {
  SKIP_WITHOUT_SYSCALL_VIEW();
  for (by_t by = 0; by < BY_COUNT; by++)
    running_once(*state, by);
}

/* ---- work: running, to its end ------------------------------------------- */

static struct {
  uvp_ctx_t *ctx;
  uv_sem_t started, go;
  int finished;
  int results_freed;
  uvp_work_end_t ended;
} wk;

static int long_job(void *arg, void **result) {
  (void)arg;
  uv_sem_post(&wk.started);
  uv_sem_wait(&wk.go);
  wk.finished++;
  *result = malloc(1);
  return 0;
}
static void count_free(void *p) {
  free(p);
  wk.results_freed++;
}
static void long_done(void *arg, uvp_work_end_t e) {
  (void)arg;
  wk.ended = e;
}
static int s_long_work(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_work_full(wk.ctx, long_job, NULL, long_done, count_free, o);
}

static void test_running_work_runs_to_its_end(void **state) {
  fixture_t *f = *state;
  wk.ctx = f->ctx;
  for (by_t by = 0; by < BY_COUNT; by++) {
    wk.finished = wk.results_freed = 0;
    assert_int_equal(uv_sem_init(&wk.started, 0), 0);
    assert_int_equal(uv_sem_init(&wk.go, 0), 0);
    flight_t fl;
    begin(f, &fl, by, s_long_work, NULL);
    uv_sem_wait(&wk.started);
    cancel(&fl);
    uv_sem_post(&wk.go);
    run_loop(f);
    end(&fl);
    assert_int_equal(wk.finished, 1);
    assert_int_equal(wk.results_freed, 1);
    assert_int_equal(wk.ended, UVP_WORK_ABANDONED);
    uv_sem_destroy(&wk.started);
    uv_sem_destroy(&wk.go);
  }
}

/* ---- TCP ----------------------------------------------------------------- */

/* The peer: plain blocking sockets of the test's own, which the loop does
 * not run (the kernel completes a loopback handshake by itself). */
static int listen_plain(struct sockaddr_in *addr) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(l >= 0);
  *addr = (struct sockaddr_in){.sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(*addr);
  assert_int_equal(bind(l, (struct sockaddr *)addr, sizeof(*addr)), 0);
  assert_int_equal(listen(l, 8), 0);
  assert_int_equal(getsockname(l, (struct sockaddr *)addr, &len), 0);
  return l;
}

/* Wait up to 10 s for fd to be readable. */
static void wait_readable(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 10000), 1);
}

static int accept_plain(int l) {
  wait_readable(l);
  int s = accept(l, NULL, NULL);
  assert_true(s >= 0);
  return s;
}

/* Read until the end (or a reset), 10 s at most: bytes received, checked
 * against `pattern` (NULL: not checked). */
static size_t read_to_end(int fd, const char *pattern) {
  static char buf[65536];
  size_t got = 0;
  for (;;) {
    wait_readable(fd);
    ssize_t k = read(fd, buf, sizeof(buf));
    if (k == 0 || (k < 0 && errno == ECONNRESET))
      return got;
    assert_true(k > 0);
    if (pattern != NULL)
      assert_memory_equal(buf, pattern + got, (size_t)k);
    got += (size_t)k;
  }
}

static struct {
  uvp_tcp_t *t;
  struct sockaddr_in addr;
  const char *data;
  size_t len;
} tc;

static int s_connect(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_tcp_connect(tc.t, (struct sockaddr *)&tc.addr, o);
}
static int s_tcp_write(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_tcp_write(tc.t, tc.data, tc.len, o);
}
static int s_tcp_read(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_tcp_read(tc.t, o);
}
static int s_tcp_read_all(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_tcp_read_all(tc.t, 0, o);
}
static int s_tcp_closed(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_tcp_closed(tc.t, o);
}
static int s_tcp_shutdown(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_tcp_shutdown(tc.t, o);
}

/* A uvp connection to l, and the peer's end. */
static int connect_pair(fixture_t *f, int l) {
  uvp_promise_t *c;
  assert_int_equal(uvp_tcp_new(f->ctx, &tc.t), 0);
  assert_int_equal(uvp_tcp_connect(tc.t, (struct sockaddr *)&tc.addr, &c), 0);
  int s = accept_plain(l);
  run_until_settled(f, c);
  assert_int_equal(uvp_promise_state(c), UVP_FULFILLED);
  uvp_promise_release(c);
  return s;
}

/* After a cancellation that closed the connection: nothing more reads. */
static void connection_closed(void) {
  uvp_promise_t *p;
  assert_int_equal(uvp_tcp_read(tc.t, &p), UV_EBADF);
}

static void tcp_once(fixture_t *f, by_t by, int l) {
  flight_t fl;
  enum { BIG = 32 << 20 };
  static char *pattern;
  if (pattern == NULL) {
    pattern = malloc(BIG);
    assert_non_null(pattern);
    fill_pattern(pattern, BIG, 45);
  }

  /* connect: closed; the peer that accepted reads its end. */
  assert_int_equal(uvp_tcp_new(f->ctx, &tc.t), 0);
  begin(f, &fl, by, s_connect, NULL);
  cancel(&fl);
  int s = accept_plain(l);
  assert_int_equal(read_to_end(s, NULL), 0);
  run_loop(f);
  end(&fl);
  connection_closed();
  assert_int_equal(uvp_tcp_close(tc.t), 0);
  close(s);

  /* write: partly sent, then the end. */
  s = connect_pair(f, l);
  tc.data = pattern;
  tc.len = BIG;
  begin(f, &fl, by, s_tcp_write, NULL);
  turn(f, 20); /* the kernel takes what fits */
  cancel(&fl);
  size_t got = read_to_end(s, pattern);
  print_message("%s: write of %d bytes cancelled, %zu sent\n", by_name[by], BIG,
                got);
  assert_true(got > 0 && got < BIG);
  run_loop(f);
  end(&fl);
  assert_int_equal(uvp_tcp_close(tc.t), 0);
  close(s);

  /* read: lost with the connection; the peer reads the end. */
  s = connect_pair(f, l);
  begin(f, &fl, by, s_tcp_read, NULL);
  cancel(&fl);
  assert_int_equal(read_to_end(s, NULL), 0);
  run_loop(f);
  end(&fl);
  connection_closed();
  assert_int_equal(uvp_tcp_close(tc.t), 0);
  close(s);

  /* read_all: what it gathered is freed, the connection closed. */
  s = connect_pair(f, l);
  assert_int_equal(write(s, "abc", 3), 3);
  begin(f, &fl, by, s_tcp_read_all, NULL);
  turn(f, 20);
  cancel(&fl);
  run_loop(f);
  end(&fl);
  connection_closed();
  assert_int_equal(uvp_tcp_close(tc.t), 0);
  close(s);

  /* watch: stops alone; the bytes it read ahead come to the next read. */
  s = connect_pair(f, l);
  assert_int_equal(write(s, "abc", 3), 3);
  begin(f, &fl, by, s_tcp_closed, NULL);
  turn(f, 20);
  cancel(&fl);
  run_loop(f);
  end(&fl);
  uvp_promise_t *rd;
  assert_int_equal(uvp_tcp_read(tc.t, &rd), 0);
  run_until_settled(f, rd);
  const uvp_buf_t *b = uvp_promise_value(rd);
  assert_non_null(b);
  assert_int_equal(b->len, 3);
  assert_memory_equal(b->base, "abc", 3);
  uvp_promise_release(rd);
  assert_int_equal(uvp_tcp_close(tc.t), 0);
  run_loop(f);
  close(s);

  /* shutdown: the connection closes; the write queued before it is partly
   * sent, and it rejects too. */
  s = connect_pair(f, l);
  uvp_promise_t *w;
  assert_int_equal(uvp_tcp_write(tc.t, pattern, BIG, &w), 0);
  begin(f, &fl, by, s_tcp_shutdown, NULL);
  turn(f, 20);
  cancel(&fl);
  got = read_to_end(s, pattern);
  assert_true(got > 0 && got < BIG);
  run_loop(f);
  end(&fl);
  assert_int_equal(uvp_promise_reason(w, NULL), UV_ECANCELED);
  uvp_promise_release(w);
  connection_closed();
  assert_int_equal(uvp_tcp_close(tc.t), 0);
  close(s);
}

static void test_tcp(void **state) {
  fixture_t *f = *state;
  int l = listen_plain(&tc.addr);
  /* The loop's first connection has libuv reserve a descriptor for the
   * loop's life (/dev/null, for running out of them): counted after. */
  close(connect_pair(f, l));
  assert_int_equal(uvp_tcp_close(tc.t), 0);
  run_loop(f);
  int fds = count_fds();
  for (by_t by = 0; by < BY_COUNT; by++)
    tcp_once(f, by, l);
  run_loop(f);
  assert_int_equal(count_fds(), fds);
  close(l);
}

/* ---- processes ----------------------------------------------------------- */

static struct {
  uvp_ctx_t *ctx;
  char script[3 * PATH_MAX];
} pr;

static int s_spawn(void *a, uvp_promise_t **o) {
  (void)a;
  char *args[] = {"sh", "-c", pr.script, NULL};
  uvp_spawn_opts_t opts = {.file = "/bin/sh", .args = args};
  return uvp_spawn(pr.ctx, &opts, o);
}

/* The pid the script wrote to `file`, once it has. */
static pid_t pid_from(const char *file) {
  for (int i = 0; i < 10000; i++) {
    FILE *fp = fopen(file, "r");
    long pid = 0;
    if (fp != NULL) {
      int n = fscanf(fp, "%ld", &pid);
      fclose(fp);
      if (n == 1 && pid > 0)
        return (pid_t)pid;
    }
    uv_sleep(1);
  }
  fail_msg("no pid in %s", file);
  return -1;
}

static void test_process_killed_or_left_running(void **state) {
  fixture_t *f = *state;
  pr.ctx = f->ctx;
  for (by_t by = 0; by < BY_COUNT; by++) {
    /* Killed by SIGTERM: gone by the time the loop has run. */
    char pidfile[256];
    snprintf(pidfile, sizeof(pidfile), "%s", at("pid1"));
    snprintf(pr.script, sizeof(pr.script),
             "echo $$ > %s.tmp && mv %s.tmp %s && exec sleep 30", pidfile,
             pidfile, pidfile);
    flight_t fl;
    uint64_t t0 = uv_hrtime();
    begin(f, &fl, by, s_spawn, NULL);
    pid_t pid = pid_from(pidfile);
    cancel(&fl);
    run_loop(f);
    end(&fl);
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_true(uv_hrtime() - t0 < 10000000000ull); /* not the 30 s */
    assert_int_equal(unlink(pidfile), 0);

    /* Ignoring it: left running until it exits on its own. */
    snprintf(pr.script, sizeof(pr.script),
             "trap '' TERM; echo $$ > %s.tmp && mv %s.tmp %s; sleep 2", pidfile,
             pidfile, pidfile);
    begin(f, &fl, by, s_spawn, NULL);
    pid = pid_from(pidfile);
    cancel(&fl);
    turn(f, 50);
    assert_int_equal(kill(pid, 0), 0); /* still there */
    run_loop(f);                       /* waits for it */
    end(&fl);
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(unlink(pidfile), 0);
  }
}

/* ---- timers -------------------------------------------------------------- */

static struct {
  uvp_ctx_t *ctx;
  int freed;
  uvp_promise_t *input;
} tm;

static int s_delay(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_delay(tm.ctx, 50000, boxed_new(1, &tm.freed), boxed_free, 0, o);
}
static int s_timeout(void *a, uvp_promise_t **o) {
  (void)a;
  return uvp_timeout(tm.input, 50000, 0, o);
}

static void test_timers(void **state) {
  fixture_t *f = *state;
  tm.ctx = f->ctx;
  for (by_t by = 0; by < BY_COUNT; by++) {
    tm.freed = 0;
    flight_t fl;
    begin(f, &fl, by, s_delay, NULL);
    cancel(&fl);
    assert_int_equal(tm.freed, 1);
    run_loop(f); /* the timer stopped: nothing waits */
    end(&fl);

    hook_t h = {0};
    tm.input = producer(f, &h);
    begin(f, &fl, by, s_timeout, NULL);
    cancel(&fl);
    assert_int_equal(h.calls, 1); /* nothing else waited for it */
    run_loop(f);
    end(&fl);
    uvp_promise_release(tm.input);
  }
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      CS_TEST(test_queued_file_requests_never_run),
      CS_TEST(test_running_file_requests_complete),
      CS_TEST(test_running_work_runs_to_its_end),
      CS_TEST(test_tcp),
      CS_TEST(test_process_killed_or_left_running),
      CS_TEST(test_timers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
