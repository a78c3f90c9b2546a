/* The NATS benchmark's coordinator (bench/run-nats): against workers
 * serving "jobs" (examples/nats/worker.c, which answer at once).
 *   nats-coord URL rt N      N requests one at a time: the median round
 *                            trip, over the last N - N/10 (the first tenth
 *                            warms up)
 *   nats-coord URL burst N   N requests at once, awaited with allSettled
 * One line of key=value: rt_us= or wall_ms=, ok=, n=, cpu_ms= (user +
 * system of the whole process, its threads all, while the scenario ran;
 * usr_ms= and sys_ms= apart), csw= (context switches meanwhile), rss_kb=
 * (peak, whole run), held_b= (a burst's resident bytes a request once
 * every reply is in, before they are released: what the requests and
 * their replies hold; 0 for rt), threads= (after connecting).
 * UVP_BENCH_TRACE=1: the
 * requests are made under a trace context (a root span entered first),
 * each a CLIENT span with traceparent: what tracing costs a request.
 * UVP_BENCH_NO_CANCEL=1: the requests are sent with
 * UVP_NATS_REQUEST_NO_CANCEL (no cancel token): what the token costs.
 * UVP_BENCH_BUSY_US=N: during a burst every turn of the loop spends N us
 * of CPU besides (a check handle): a requester whose loop has other work
 * and falls behind its replies, which then wait for it. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uvp-nats.h>

#include "core-common.h"

static void settle(uv_loop_t *loop, uvp_promise_t *p) {
  while (uvp_promise_state(p) == UVP_PENDING)
    uv_run(loop, UV_RUN_ONCE);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double ms_between(struct timeval a, struct timeval b) {
  return (double)(b.tv_sec - a.tv_sec) * 1e3 +
         (double)(b.tv_usec - a.tv_usec) / 1e3;
}

static int threads(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
    n += e->d_name[0] != '.';
  if (d != NULL)
    closedir(d);
  return n;
}

static int request_flags(void) {
  const char *e = getenv("UVP_BENCH_NO_CANCEL");
  return e != NULL && strcmp(e, "1") == 0 ? UVP_NATS_REQUEST_NO_CANCEL : 0;
}

static size_t run_rt(uv_loop_t *loop, uvp_nats_t *nc, size_t n, double *out) {
  double *t = calloc(n, sizeof(*t));
  uvp_nats_request_opts_t ro = {.flags = request_flags()};
  size_t ok = 0;
  for (size_t i = 0; i < n; i++) {
    uvp_promise_t *p;
    uint64_t t0 = uv_hrtime();
    if (uvp_nats_request(nc, "jobs", "x", 2, &ro, &p) != 0)
      break;
    settle(loop, p);
    t[i] = (double)(uv_hrtime() - t0) / 1e3;
    ok += uvp_promise_state(p) == UVP_FULFILLED;
    uvp_promise_release(p);
  }
  size_t skip = n / 10;
  qsort(t + skip, n - skip, sizeof(*t), cmp);
  *out = t[skip + (n - skip) / 2];
  free(t);
  return ok;
}

static unsigned busy_us; /* UVP_BENCH_BUSY_US */
static void on_busy(uv_check_t *h) {
  (void)h;
  uint64_t until = uv_hrtime() + (uint64_t)busy_us * 1000;
  while (uv_hrtime() < until)
    ;
}

static long held_b; /* a burst's resident bytes a request, replies held */

static size_t run_burst(uvp_ctx_t *ctx, uv_loop_t *loop, uvp_nats_t *nc,
                        size_t n, double *out) {
  long long b0 = bench_rss_bytes();
  uvp_promise_t **ps = calloc(n, sizeof(*ps)), *all;
  uvp_nats_request_opts_t ro = {.timeout_ms = 60000, .flags = request_flags()};
  uint64_t t0 = uv_hrtime();
  for (size_t i = 0; i < n; i++)
    if (uvp_nats_request(nc, "jobs", "x", 2, &ro, &ps[i]) != 0)
      return 0;
  static uv_check_t busy; /* closed when main runs the loop out */
  uv_check_init(loop, &busy);
  if (busy_us != 0)
    uv_check_start(&busy, on_busy);
  uvp_promise_all_settled(ctx, ps, n, &all);
  settle(loop, all);
  *out = (double)(uv_hrtime() - t0) / 1e6;
  uv_close((uv_handle_t *)&busy, NULL);
  held_b = (long)((bench_rss_bytes() - b0) / (long long)n);
  size_t ok = 0;
  const uvp_settled_list_t *l = uvp_promise_value(all);
  for (size_t i = 0; i < n; i++) {
    ok += l->items[i].status == 0;
    uvp_promise_release(ps[i]);
  }
  uvp_promise_release(all);
  free(ps);
  return ok;
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uvp_promise_t *c;
  if (argc != 4 || uv_loop_init(&loop) || uvp_ctx_new(&loop, &ctx))
    return 2;
  size_t n = strtoul(argv[3], NULL, 10);
  uvp_nats_connect_opts_t o = {.url = argv[1]};
  if (uvp_nats_connect(ctx, &o, &c) != 0)
    return 1;
  settle(&loop, c);
  uvp_nats_t *nc = uvp_promise_value(c);
  if (nc == NULL) {
    fprintf(stderr, "connect: %s\n",
            uvp_nats_err_name(uvp_promise_reason(c, NULL)));
    return 1;
  }
  uvp_span_t root;
  const char *trace = getenv("UVP_BENCH_TRACE");
  if (trace != NULL && strcmp(trace, "1") == 0 &&
      (uvp_span_begin(ctx, &root, "bench", UVP_SPAN_INTERNAL, NULL,
                      UVP_SPAN_NEW_TRACE) != 0 ||
       uvp_span_enter(ctx, &root) != 0))
    return 1;
  const char *busy = getenv("UVP_BENCH_BUSY_US");
  busy_us = busy != NULL ? (unsigned)strtoul(busy, NULL, 10) : 0;
  int nthreads = threads();
  struct rusage ru0;
  getrusage(RUSAGE_SELF, &ru0);
  double v = 0;
  size_t ok = strcmp(argv[2], "rt") == 0 ? run_rt(&loop, nc, n, &v)
                                         : run_burst(ctx, &loop, nc, n, &v);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double usr = ms_between(ru0.ru_utime, ru.ru_utime);
  double sys = ms_between(ru0.ru_stime, ru.ru_stime);
  double cpu = usr + sys;
  printf("%s %s=%.1f ok=%zu n=%zu cpu_ms=%.1f usr_ms=%.1f sys_ms=%.1f csw=%ld "
         "rss_kb=%ld held_b=%ld threads=%d\n",
         argv[2], strcmp(argv[2], "rt") == 0 ? "rt_us" : "wall_ms", v, ok, n,
         cpu, usr, sys,
         ru.ru_nvcsw + ru.ru_nivcsw - ru0.ru_nvcsw - ru0.ru_nivcsw,
         ru.ru_maxrss, held_b, nthreads);
  uvp_promise_release(c);
  uvp_nats_close(nc);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  nats_CloseAndWait(0);
  return uv_loop_close(&loop) != 0 || ok != n;
}
