/* A loopback server holding N connections, one fiber per connection, each
 * suspended in uvp_await on a read (bench/run-hold).  When the N-th
 * connection is accepted and every fiber waits, it prints its figures
 * (time from the first accept to the last, the resident set and its
 * growth per connection, VmPTE); each fiber then answers the line it
 * reads ("ping N" -> "pong N") and closes; once all N have answered, it
 * prints how many did and exits.  bench/hold-client.c is the other end.
 * Usage: hold-server N [compact]   (prints its port first) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core-common.h"
#include "fiber-common.h"
#include "uvp.h"

static uvp_ctx_t *ctx;
static size_t n, accepted, waiting, answered, bad;
static uint64_t t_first, t_all;
static long rss0_kb;
static int reported;

static long status_kb(const char *name) {
  char line[256];
  size_t len = strlen(name);
  long kb = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL)
    if (strncmp(line, name, len) == 0 && line[len] == ':') {
      kb = strtol(line + len + 1, NULL, 10);
      break;
    }
  fclose(f);
  return kb;
}

static void report_if_all_wait(void) {
  if (reported || accepted < n || waiting < n)
    return;
  reported = 1;
  t_all = bench_now_ns();
  long rss = status_kb("VmRSS");
  printf("uvp hold-server n=%zu accepted=%zu accept_ms=%.0f rss0_kb=%ld "
         "rss_kb=%ld bytes_per_conn=%.0f pte_kb=%ld\n",
         n, accepted, (double)(t_all - t_first) / 1e6, rss0_kb, rss,
         (double)(rss - rss0_kb) * 1024.0 / (double)n, status_kb("VmPTE"));
  fflush(stdout);
}

/* The connection's fiber: read the client's line, answer it, close. */
static uvp_ret_t serve(void *arg) {
  uvp_tcp_t *t = arg;
  uvp_promise_t *r, *w;
  uvp_outcome_t o;
  int rc = uvp_tcp_read(t, &r);
  if (rc == 0) {
    waiting++;
    report_if_all_wait();
    rc = uvp_await(r, &o);
    waiting--;
    if (rc == 0) {
      const uvp_buf_t *b = o.value;
      unsigned long id;
      char *reply = malloc(32);
      if (reply != NULL && b->len > 5 && memcmp(b->base, "ping ", 5) == 0 &&
          sscanf(b->base + 5, "%lu", &id) == 1) {
        int len = snprintf(reply, 32, "pong %lu\n", id);
        uvp_promise_release(r);
        /* On the heap, not this stack: in the compact mode a parked
         * fiber's stack is elsewhere (see uvp.h). */
        rc = uvp_await_take(uvp_tcp_write_full(t, reply, (size_t)len, free, &w),
                            &w, NULL);
        answered += rc == 0;
      } else {
        free(reply);
        uvp_promise_release(r);
        rc = UV_EINVAL;
      }
    } else {
      uvp_promise_release(r);
    }
  }
  bad += rc != 0;
  uvp_tcp_close(t);
  if (answered + bad == n) {
    printf("uvp hold-server answered=%zu bad=%zu\n", answered, bad);
    fflush(stdout);
    uv_close((uv_handle_t *)uv_default_loop()->data, NULL);
  }
  return uvp_ret_pass();
}

static void on_conn(uv_stream_t *l, int status) {
  uvp_tcp_t *t;
  uvp_promise_t *f;
  if (status != 0 || uvp_tcp_accept(ctx, l, &t) != 0) {
    fprintf(stderr, "hold-server: accept: %s\n",
            uv_strerror(status != 0 ? status : UV_EINVAL));
    exit(1);
  }
  if (accepted++ == 0)
    t_first = bench_now_ns();
  if (uvp_fiber_spawn(ctx, serve, t, NULL, &f) != 0) {
    fprintf(stderr, "hold-server: spawn failed at %zu\n", accepted);
    exit(1);
  }
  uvp_promise_release(f);
}

int main(int argc, char **argv) {
  n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000;
  int compact = argc > 2 && strcmp(argv[2], "compact") == 0;
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t l;
  struct sockaddr_in a;
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &nofile);
  }
  if (uvp_ctx_new(loop, &ctx) != 0)
    return 1;
  if (compact && uvp_ctx_set_fiber_mode(ctx, UVP_FIBER_COMPACT) != 0)
    return 1;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(loop, &l);
  loop->data = &l;
  if (uv_tcp_bind(&l, (struct sockaddr *)&a, 0) != 0 ||
      uv_listen((uv_stream_t *)&l, 4096, on_conn) != 0) {
    fprintf(stderr, "hold-server: cannot listen\n");
    return 1;
  }
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  uv_tcp_getsockname(&l, (struct sockaddr *)&ss, &len);
  rss0_kb = status_kb("VmRSS");
  printf("%d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
  fflush(stdout);
  uv_run(loop, UV_RUN_DEFAULT);
  uvp_ctx_close(ctx);
  uv_run(loop, UV_RUN_DEFAULT);
  return bad == 0 && answered == n ? 0 : 1;
}
