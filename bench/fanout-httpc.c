/* fanout-httpc: uvp-fanout's fan-out as it was before libcurl (issue 46),
 * for bench/run-curl to compare with: the same uvp_promise_map of
 * httpc_get (examples/common/httpc.c, the hand-written HTTP/1.1 client
 * over OpenSSL) through one keep-alive pool, at most -c in flight, TLS
 * verified with --cacert.  No retry, no report: it counts the answers
 * and prints one line, "N requests, K answered 200, C connections".
 *
 * Usage: fanout-httpc [-c N] [--cacert FILE] -f FILE
 * Exit status: 0 if every URL answered 200, 1 otherwise. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpc.h"
#include "uvp.h"

typedef struct run_s {
  uvp_ctx_t *ctx;
  char **urls;
  size_t n, ok;
  httpc_opts_t o;
} run_t;

static uvp_ret_t count(void *arg, const uvp_outcome_t *in) {
  run_t *r = arg;
  const httpc_response_t *res = in->value;
  if (in->status == 0 && res->status == 200)
    r->ok++;
  return uvp_ret_value(NULL, NULL); /* the response goes now */
}

static int start(void *arg, size_t i, uvp_promise_t **out) {
  run_t *r = arg;
  uvp_promise_t *p;
  int rc = httpc_get(r->ctx, r->urls[i], &r->o, &p);
  if (rc != 0)
    return rc;
  rc = uvp_promise_on(p, UVP_ON_BOTH, count, r, out);
  uvp_promise_release(p);
  return rc;
}

static uvp_ret_t done(void *arg, const uvp_outcome_t *in) {
  run_t *r = arg;
  (void)in;
  httpc_pool_stats_t st;
  httpc_pool_stats(r->o.pool, &st);
  printf("%zu requests, %zu answered 200, %llu connections\n", r->n, r->ok,
         (unsigned long long)st.opened);
  httpc_pool_close(r->o.pool);
  r->o.pool = NULL;
  return uvp_ret_value(NULL, NULL);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"cacert", required_argument, NULL, 'C'}, {NULL, 0, NULL, 0}};
  size_t limit = 64;
  const char *file = NULL, *cafile = NULL;
  int c;
  while ((c = getopt_long(argc, argv, "c:f:", longopts, NULL)) != -1) {
    if (c == 'c')
      limit = strtoul(optarg, NULL, 10);
    else if (c == 'f')
      file = optarg;
    else if (c == 'C')
      cafile = optarg;
    else
      return 2;
  }
  FILE *f = file != NULL ? fopen(file, "r") : NULL;
  if (f == NULL || limit == 0) {
    fprintf(stderr, "usage: %s [-c N] [--cacert FILE] -f FILE\n", argv[0]);
    return 2;
  }
  run_t r;
  memset(&r, 0, sizeof(r));
  char *line = NULL;
  size_t cap = 0, room = 0;
  ssize_t len;
  while ((len = getline(&line, &cap, f)) > 0) {
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      line[--len] = '\0';
    if (len == 0)
      continue;
    if (r.n == room) {
      room = room ? room * 2 : 1024;
      r.urls = realloc(r.urls, room * sizeof(*r.urls));
    }
    r.urls[r.n++] = strdup(line);
  }
  free(line);
  fclose(f);

  uv_loop_t loop;
  uv_loop_init(&loop);
  uvp_ctx_new(&loop, &r.ctx);
  httpc_tls_opts_t to = {cafile, 0};
  const char *why;
  if (httpc_tls_new(&to, &r.o.tls, &why) != 0) {
    fprintf(stderr, "%s: %s\n", cafile ? cafile : "CA store", why);
    return 1;
  }
  httpc_pool_opts_t po = {.max_idle_per_host = limit, .max_idle = limit};
  httpc_pool_new_with(r.ctx, &po, &r.o.pool);
  r.o.timeout_ms = 30000;
  r.o.connect_timeout_ms = 10000;
  uvp_promise_t *all = NULL;
  uvp_map_opts_t mo = {.limit = limit};
  if (uvp_promise_map(r.ctx, r.n, start, &r, &mo, &all) != 0 ||
      uvp_promise_then(all, done, &r, NULL) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  uvp_promise_release(all);
  uvp_ctx_close(r.ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  httpc_tls_free(r.o.tls);
  for (size_t i = 0; i < r.n; i++)
    free(r.urls[i]);
  free(r.urls);
  int closed = uv_loop_close(&loop);
  return closed == 0 && r.ok == r.n ? 0 : 1;
}
