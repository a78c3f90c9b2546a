/* What the live console costs a program (bench/run-console): core-waves'
 * work (N promises in waves of 1 000: each created, a then on it,
 * resolved, run, released) beside TASKS fibers parked on a long delay
 * (what a snapshot walks), in three modes:
 *   0  not listening (a program that never opts in);
 *   1  listening, no console attached;
 *   2  attached: a client asks for a snapshot every EVERY waves and reads
 *      it (bench/run-console sets EVERY to 4 a second of mode 0's pace).
 * The client is this thread, between waves (the request is sent, the
 * next wave's loop turns answer it, the answer is read after it): the
 * figures count the snapshots' work and nothing that depends on timing,
 * so callgrind's instruction counts are the same from run to run.
 * Usage: console MODE [N] [--every=EVERY] [--tasks=TASKS]
 * Prints name=console mode= n= snapshots= bytes= ns= ok=. */
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "uvp.h"

#define WAVE 1000

static uint64_t ran;

static uvp_ret_t on_value(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  ran++;
  return uvp_ret_value(NULL, NULL);
}

static uvp_ret_t parked(void *arg) {
  uvp_promise_t *d;
  if (uvp_delay(arg, 3600000, NULL, NULL, UVP_UNREF, &d) == 0) {
    (void)uvp_await(d, NULL);
    uvp_promise_release(d);
  }
  return uvp_ret_pass();
}

static int dial(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static void idle_cb(uv_idle_t *h) { (void)h; }

/* The answer to the request sent before the last wave: read whole,
 * running the loop while it is not all there (an idle handle keeps it
 * turning: the console's handles keep nothing alive).  Its length, or
 * -1. */
static long take_answer(int fd, uv_loop_t *loop, uv_idle_t *idle) {
  static char buf[1 << 16];
  long total = 0;
  (void)uv_idle_start(idle, idle_cb);
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 0) == 0) {
      uv_run(loop, UV_RUN_NOWAIT);
      continue;
    }
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0 || buf[n - 1] == '\n')
      (void)uv_idle_stop(idle);
    if (n <= 0)
      return -1;
    total += n;
    if (buf[n - 1] == '\n')
      return total;
  }
}

static int waves(uvp_ctx_t *ctx, uint32_t n, uint32_t every, int fd,
                 long *snapshots, long *bytes) {
  static uvp_promise_t *ps[WAVE], *ds[WAVE];
  uv_loop_t *loop = uvp_ctx_loop(ctx);
  uv_idle_t idle;
  if (uv_idle_init(loop, &idle) != 0)
    return -1;
  int rc = 0;
  bool asked = false;
  for (uint32_t base = 0, k = 0; base < n; base += WAVE, k++) {
    if (fd >= 0 && every != 0 && k % every == 0) {
      if (write(fd, "snapshot json\n", 14) != 14)
        return -1;
      asked = true;
    }
    uint32_t m = n - base < WAVE ? n - base : WAVE;
    for (uint32_t i = 0; i < m; i++)
      if (uvp_promise_new(ctx, &ps[i]) != 0 ||
          uvp_promise_then(ps[i], on_value, NULL, &ds[i]) != 0)
        return -1;
    for (uint32_t i = 0; i < m; i++)
      if (uvp_promise_resolve(ps[i], NULL, NULL) != 0)
        return -1;
    uv_run(loop, UV_RUN_DEFAULT);
    for (uint32_t i = 0; i < m; i++) {
      uvp_promise_release(ps[i]);
      uvp_promise_release(ds[i]);
    }
    if (asked) {
      long got = take_answer(fd, loop, &idle);
      if (got < 0) {
        rc = -1;
        break;
      }
      *bytes += got;
      (*snapshots)++;
      asked = false;
    }
  }
  uv_close((uv_handle_t *)&idle, NULL);
  uv_run(loop, UV_RUN_NOWAIT); /* its close: it is on this stack */
  return rc;
}

int main(int argc, char **argv) {
  int mode = argc > 1 ? atoi(argv[1]) : 0;
  uint32_t n = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 10000000;
  uint32_t every = 25, tasks = 200;
  for (int i = 3; i < argc; i++) {
    if (strncmp(argv[i], "--every=", 8) == 0)
      every = (uint32_t)strtoul(argv[i] + 8, NULL, 10);
    else if (strncmp(argv[i], "--tasks=", 8) == 0)
      tasks = (uint32_t)strtoul(argv[i] + 8, NULL, 10);
    else
      return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
  }
  if (mode < 0 || mode > 2 || n == 0)
    return fprintf(stderr, "usage: console 0|1|2 [N] [--every=W]\n"), 2;
  char path[64];
  snprintf(path, sizeof(path), "/tmp/uvp-bench-console-%d.sock", (int)getpid());
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (uv_loop_init(&loop) != 0 || uvp_ctx_new(&loop, &ctx) != 0)
    return 1;
  uvp_promise_t **fibers = calloc(tasks, sizeof(*fibers));
  for (uint32_t i = 0; fibers != NULL && i < tasks; i++)
    if (uvp_fiber_spawn(ctx, parked, ctx, NULL, &fibers[i]) != 0)
      return 1;
  uv_run(&loop, UV_RUN_NOWAIT); /* each parks */
  int fd = -1;
  if (mode >= 1 && uvp_console_listen(ctx, path) != 0)
    return fprintf(stderr, "cannot listen at %s\n", path), 1;
  if (mode == 2 && (fd = dial(path)) < 0)
    return fprintf(stderr, "cannot attach: %s\n", strerror(errno)), 1;
  long snapshots = 0, bytes = 0;
  uint64_t t0 = uv_hrtime();
  int rc = waves(ctx, n, mode == 2 ? every : 0, fd, &snapshots, &bytes);
  uint64_t ns = uv_hrtime() - t0;
  if (fd >= 0)
    close(fd);
  for (uint32_t i = 0; fibers != NULL && i < tasks; i++) {
    (void)uvp_promise_cancel(fibers[i]);
    uvp_promise_release(fibers[i]);
  }
  free(fibers);
  if (uvp_ctx_close(ctx) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  int ok = rc == 0 && ran == n && uv_loop_close(&loop) == 0;
  printf("name=console mode=%d n=%u tasks=%u every=%u snapshots=%ld "
         "bytes=%ld ns=%llu ok=%d\n",
         mode, n, tasks, every, snapshots, bytes, (unsigned long long)ns, ok);
  return ok ? 0 : 1;
}
