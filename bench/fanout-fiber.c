/* fanout-fiber: uvp-fanout's per-URL flow written as a fiber (issue 27,
 * point 8), measured against uvp-fanout by bench/run-fanout-fiber.
 *
 * One fiber per URL, at most -c of them running (a task group with a
 * limit).  Each takes an idle keep-alive connection to its host:port or
 * makes one: resolves the host (uvp_getaddrinfo; not for an IP literal, as
 * uvp_tcp_connect_host does) and connects to each address in turn
 * (uvp_tcp_connect); writes the GET, reads and parses the response with
 * llhttp, and puts the connection back if the response allows; tries again
 * after a transport error or a 5xx with uvp-fanout's backoff (200 ms
 * doubling to 5 s, jitter 0.5).  Every step is an uvp_await in
 * straight-line code.  Timeouts as uvp-fanout's: 10 s for resolving and
 * connecting, -t (30 s) for the whole attempt, each await bounded by what
 * is left of them; caps as httpc's: 64 KiB of header, 100 MiB of body.  A
 * pooled connection that fails before the first byte of the response is
 * tried again once on a new one, as httpc does.  Prints uvp-fanout's table
 * and summary, so the two can be compared row by row.
 *
 * Left out (uvp-fanout has them): https://, redirects (-L); of the pool,
 * the idle timeout, the per-host cap and noticing at once that the server
 * closed an idle connection (httpc keeps a read pending on each; here a
 * closed one is found out at reuse, and the request sent again); -d,
 * --json, the progress line, and the messages saying why a request
 * failed (the table gives the code's strerror).  URLs are parsed by
 * httpc's parser.
 *
 * Usage: fanout-fiber [-c N] [-t MS] [--retry N] [-f FILE] [URL...] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "../examples/fanout/retry.h"
#include "httpc.h"
#include "uvp.h"

#define CONNECT_TIMEOUT_MS 10000
#define MAX_HEADER (64 * 1024)
#define MAX_BODY (100ull * 1024 * 1024)

typedef struct run_s run_t;

typedef struct row_s {
  run_t *run;
  const char *url;
  uint64_t start_ns, end_ns;
  unsigned attempts;
  int error; /* the last attempt's code; 0: a response */
  int status;
  size_t bytes;
  uint64_t latency_us; /* the last attempt's, to the end of the body */
} row_t;

typedef struct idle_s {
  uvp_tcp_t *t;
  char key[272]; /* host:port */
} idle_t;

struct run_s {
  uv_loop_t *loop;
  idle_t *idle;
  size_t nidle, max_idle;
  uvp_ctx_t *ctx;
  row_t *rows;
  size_t n;
  uint64_t timeout_ms;
  unsigned retries;
  uint64_t rng;
};

/* ---- the per-URL flow ---------------------------------------------------- */

typedef struct parse_s {
  llhttp_t p;
  size_t received, header, bytes;
  int fail; /* a cap passed */
  int done, keep;
} parse_t;

static int on_header_bytes(llhttp_t *p, const char *at, size_t len) {
  parse_t *ps = p->data;
  (void)at;
  ps->header += len;
  return ps->header > MAX_HEADER ? (ps->fail = UV_EMSGSIZE, -1) : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  parse_t *ps = p->data;
  (void)at;
  ps->bytes += len;
  return ps->bytes > MAX_BODY ? (ps->fail = UV_EFBIG, -1) : 0;
}

static int on_complete(llhttp_t *p) {
  parse_t *ps = p->data;
  ps->done = 1;
  ps->keep = llhttp_should_keep_alive(p);
  return HPE_PAUSED; /* one message per request */
}

static const llhttp_settings_t settings = {
    .on_status = on_header_bytes,
    .on_header_field = on_header_bytes,
    .on_header_value = on_header_bytes,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

/* Await p until `end` on the loop's clock: past it, p is cancelled (which
 * closes the connection of a TCP operation) and this is UV_ETIMEDOUT.  The
 * outcome's value is p's: valid while the caller holds p. */
static int await_until(run_t *r, uvp_promise_t *p, uint64_t end,
                       uvp_outcome_t *o) {
  if (uvp_promise_state(p) != UVP_PENDING) /* a write that went out whole */
    return uvp_await(p, o);
  uint64_t now = uv_now(r->loop);
  uvp_promise_t *t;
  int rc = now < end ? uvp_timeout(p, end - now, UVP_CANCEL_INPUT, &t)
                     : UV_ETIMEDOUT;
  if (rc != 0) {
    uvp_promise_cancel(p);
    return rc;
  }
  rc = uvp_await(t, o);
  uvp_promise_release(t);
  return rc;
}

/* Resolve, then connect to each address in turn (a connection whose
 * connect failed cannot be used again: a new one each time) until one
 * answers; the last address's error otherwise. */
static int connect_to(run_t *r, const httpc_url_t *u, uint64_t end,
                      uvp_tcp_t **out) {
  struct sockaddr_storage lit;
  struct addrinfo one = {.ai_addr = (struct sockaddr *)&lit}, *ai = &one;
  uvp_promise_t *lookup = NULL;
  uvp_outcome_t o;
  int rc = 0;
  if (uv_ip4_addr(u->host, u->port, (struct sockaddr_in *)&lit) != 0 &&
      uv_ip6_addr(u->host, u->port, (struct sockaddr_in6 *)&lit) != 0) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    char port[8];
    snprintf(port, sizeof(port), "%d", u->port);
    if ((rc = uvp_getaddrinfo(r->ctx, u->host, port, &hints, &lookup)) == 0)
      rc = await_until(r, lookup, end, &o);
    ai = rc == 0 ? o.value : NULL;
  }
  for (; ai != NULL; ai = ai->ai_next) {
    uvp_promise_t *c;
    if ((rc = uvp_tcp_new(r->ctx, out)) != 0)
      break;
    if ((rc = uvp_tcp_connect(*out, ai->ai_addr, &c)) == 0) {
      rc = await_until(r, c, end, NULL);
      uvp_promise_release(c);
    }
    if (rc == 0)
      break;
    uvp_tcp_close(*out);
    *out = NULL;
    if (rc == UV_ETIMEDOUT || rc == UV_ECANCELED || rc == UVP_ECLOSED)
      break;
  }
  uvp_promise_release(lookup);
  return rc;
}

/* Send the GET (handed to the write: libuv may hold it until the
 * connection's close has completed). */
static int send_get(run_t *r, uvp_tcp_t *t, const httpc_url_t *u,
                    uint64_t end) {
  char *req;
  uvp_promise_t *w;
  int len = asprintf(&req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: "
                     "uvp-httpc/" UVP_VERSION_STRING "\r\nAccept: */*\r\n"
                     "Connection: keep-alive\r\n\r\n",
                     u->target, u->authority);
  if (len < 0)
    return UV_ENOMEM;
  int rc = uvp_tcp_write_full(t, req, (size_t)len, free, &w); /* or freed */
  if (rc != 0)
    return rc;
  rc = await_until(r, w, end, NULL);
  uvp_promise_release(w);
  return rc;
}

/* Read and parse until the end of the response. */
static int receive(run_t *r, uvp_tcp_t *t, uint64_t end, parse_t *ps) {
  llhttp_init(&ps->p, HTTP_RESPONSE, &settings);
  ps->p.data = ps;
  int rc = 0;
  while (rc == 0 && !ps->done) {
    uvp_promise_t *rd = NULL;
    uvp_outcome_t o;
    if ((rc = uvp_tcp_read(t, &rd)) == 0 &&
        (rc = await_until(r, rd, end, &o)) == 0) {
      const uvp_buf_t *b = o.value;
      ps->received += b->len;
      if (llhttp_execute(&ps->p, b->base, b->len) != HPE_OK && !ps->done)
        rc = ps->fail != 0 ? ps->fail : UV_EPROTO;
      /* Bytes after the message: the server's error, and the connection
       * no use for another request. */
      if (ps->done && llhttp_get_error_pos(&ps->p) != b->base + b->len)
        ps->keep = 0;
    } else if (rc == UV_EOF) {
      /* A close-delimited body ends here, any other message is cut short. */
      llhttp_finish(&ps->p);
      rc = ps->done ? 0 : UV_EPROTO;
      ps->keep = 0;
    }
    uvp_promise_release(rd);
  }
  return rc;
}

/* Idle keep-alive connections, most recently used last, at most -c. */
static uvp_tcp_t *pool_take(run_t *r, const char *key) {
  for (size_t i = r->nidle; i-- > 0;) {
    if (strcmp(r->idle[i].key, key) != 0)
      continue;
    uvp_tcp_t *t = r->idle[i].t;
    memmove(&r->idle[i], &r->idle[i + 1], (--r->nidle - i) * sizeof(idle_t));
    return t;
  }
  return NULL;
}

static void pool_put(run_t *r, uvp_tcp_t *t, const char *key) {
  if (r->nidle == r->max_idle) { /* the least recently used goes */
    uvp_tcp_close(r->idle[0].t);
    memmove(&r->idle[0], &r->idle[1], --r->nidle * sizeof(idle_t));
  }
  r->idle[r->nidle].t = t;
  snprintf(r->idle[r->nidle++].key, sizeof(r->idle->key), "%s", key);
}

/* One attempt: a pooled connection or a new one, send, receive, within
 * the timeouts; the connection goes back to the pool if the response
 * leaves it fit for another request. */
static int get_once(run_t *r, row_t *row, const httpc_url_t *u) {
  uint64_t t0 = uv_hrtime();
  uv_update_time(r->loop);
  uint64_t now = uv_now(r->loop), end = now + r->timeout_ms;
  uint64_t connect_end = now + CONNECT_TIMEOUT_MS;
  char key[sizeof(r->idle->key)];
  snprintf(key, sizeof(key), "%s:%d", u->host, u->port);
  uvp_tcp_t *t = pool_take(r, key);
  parse_t ps;
  int rc;
  for (int fresh = t == NULL;; fresh = 1) {
    memset(&ps, 0, sizeof(ps));
    rc =
        fresh ? connect_to(r, u, connect_end < end ? connect_end : end, &t) : 0;
    if (rc == 0 && (rc = send_get(r, t, u, end)) == 0)
      rc = receive(r, t, end, &ps);
    /* A pooled connection that fails before the first byte of the
     * response was closed by the server while idle, before the GET
     * reached it: once more, on a new connection. */
    if (fresh || ps.received > 0 ||
        (rc != UV_EPROTO && rc != UV_ECONNRESET && rc != UV_EPIPE))
      break;
    uvp_tcp_close(t);
    t = NULL;
  }
  if (rc == 0 && ps.keep)
    pool_put(r, t, key);
  else if (t != NULL)
    uvp_tcp_close(t);
  row->status = rc == 0 ? (int)ps.p.status_code : 0;
  row->bytes = rc == 0 ? ps.bytes : 0;
  row->latency_us = (uv_hrtime() - t0) / 1000;
  return rc;
}

/* uvp_retry's wait: base * 2^k, capped, less up to half of it at random. */
static uint64_t backoff_ms(run_t *r, unsigned tries) {
  double w = (double)RETRY_BASE_MS * (double)(1u << (tries < 16 ? tries : 16));
  if (w > RETRY_MAX_MS)
    w = RETRY_MAX_MS;
  r->rng ^= r->rng >> 12;
  r->rng ^= r->rng << 25;
  r->rng ^= r->rng >> 27;
  double u = (double)((r->rng * 2685821657736338717ULL) >> 11) / 0x1p53;
  return (uint64_t)(w * (1.0 - 0.5 * u));
}

/* The fiber of one URL: attempts until one answers below 500, the error is
 * not worth retrying or --retry runs out, with a backoff in between. */
static uvp_ret_t fetch(void *arg) {
  row_t *row = arg;
  run_t *r = row->run;
  row->start_ns = uv_hrtime();
  httpc_url_t u;
  const char *why;
  int rc = row->error = httpc_url_parse(row->url, &u, &why);
  int parsed = rc == 0;
  if (rc == 0 && u.tls)
    rc = row->error = UV_EPROTONOSUPPORT; /* https:// is uvp-fanout's */
  while (rc == 0) {
    rc = row->error = get_once(r, row, &u);
    row->attempts++;
    if (rc == 0 && row->status >= 500)
      rc = E_HTTP_5XX;
    if (rc == 0 || row->attempts > r->retries || !fanout_worth_retrying(rc))
      break;
    uvp_promise_t *d;
    if ((rc = uvp_delay(r->ctx, backoff_ms(r, row->attempts - 1), NULL, NULL,
                        UVP_KEEP_ALIVE, &d)) == 0) {
      rc = uvp_await(d, NULL);
      uvp_promise_release(d);
    }
  }
  if (parsed)
    httpc_url_free(&u);
  row->end_ns = uv_hrtime();
  return uvp_ret_pass();
}

/* ---- the report: uvp-fanout's table and summary -------------------------- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *v, size_t n, unsigned p) {
  size_t rank = (p * n + 99) / 100;
  return (double)v[rank > 0 ? rank - 1 : 0] / 1000.0;
}

static void report(const run_t *r, uint64_t elapsed_ns) {
  uint64_t *lat = calloc(r->n + 1, sizeof(*lat));
  size_t nlat = 0, ok = 0, http_err = 0, transport_err = 0, retried = 0;
  int width = 3;
  for (size_t i = 0; i < r->n; i++) {
    int len = (int)strlen(r->rows[i].url);
    width = len > width && len <= 60 ? len : width;
  }
  printf("%4s  %-*s  %-15s %9s %11s\n", "#", width, "URL", "RESULT", "BYTES",
         "LATENCY");
  for (size_t i = 0; i < r->n; i++) {
    const row_t *row = &r->rows[i];
    printf("%4zu  %-*s  ", i + 1, width, row->url);
    if (row->error == 0) {
      printf("%-15d %9zu %8.1f ms", row->status, row->bytes,
             (double)row->latency_us / 1000.0);
      if (lat != NULL)
        lat[nlat++] = row->latency_us;
      if (row->status < 400)
        ok++;
      else
        http_err++;
    } else {
      printf("%-15s %9s %8.1f ms  %s", httpc_err_name(row->error), "-",
             (double)(row->end_ns - row->start_ns) / 1e6,
             httpc_strerror(row->error));
      transport_err++;
    }
    retried += row->attempts > 1;
    if (row->attempts > 1)
      printf("  (%u attempts)", row->attempts);
    putchar('\n');
  }
  printf("\n%zu URLs in %.2f s: %zu succeeded, %zu failed (%zu HTTP "
         "errors, %zu transport errors)\n",
         r->n, (double)elapsed_ns / 1e9, ok, http_err + transport_err, http_err,
         transport_err);
  if (nlat > 0) {
    qsort(lat, nlat, sizeof(*lat), cmp_u64);
    printf("latency over %zu response%s: p50 %.1f ms, p90 %.1f ms, p99 %.1f "
           "ms\n",
           nlat, nlat == 1 ? "" : "s", pct_ms(lat, nlat, 50),
           pct_ms(lat, nlat, 90), pct_ms(lat, nlat, 99));
  } else {
    printf("latency: no responses\n");
  }
  if (retried > 0)
    printf("%zu URL%s needed more than one attempt\n", retried,
           retried == 1 ? "" : "s");
  free(lat);
}

/* ---- main ---------------------------------------------------------------- */

/* URLs from a file, one per line (blank lines and # comments skipped), or
 * the arguments: kept in `mem` (freed by the caller). */
static char *read_urls(const char *path, char ***urls, size_t *n) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
  if (f == NULL)
    return NULL;
  char *line = NULL, *all = NULL;
  size_t cap = 0, size = 0;
  ssize_t len;
  FILE *mem = open_memstream(&all, &size);
  while (mem != NULL && (len = getline(&line, &cap, f)) >= 0) {
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] != '\0' && line[0] != '#') {
      fputs(line, mem);
      fputc('\0', mem);
      (*n)++;
    }
  }
  free(line);
  if (f != stdin)
    fclose(f);
  if (mem == NULL || fclose(mem) != 0)
    return NULL;
  *urls = calloc(*n + 1, sizeof(**urls));
  for (size_t i = 0, off = 0; *urls != NULL && i < *n; i++) {
    (*urls)[i] = all + off;
    off += strlen(all + off) + 1;
  }
  return all;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"retry", required_argument, NULL, 'r'}, {NULL, 0, NULL, 0}};
  run_t r = {.timeout_ms = 30000, .rng = 0x9e3779b97f4a7c15ULL};
  size_t concurrency = 64;
  const char *file = NULL;
  int c;
  while ((c = getopt_long(argc, argv, "c:t:f:", longopts, NULL)) != -1) {
    switch (c) {
    case 'c':
      concurrency = strtoul(optarg, NULL, 10);
      break;
    case 't':
      r.timeout_ms = strtoull(optarg, NULL, 10);
      break;
    case 'r':
      r.retries = (unsigned)strtoul(optarg, NULL, 10);
      break;
    case 'f':
      file = optarg;
      break;
    default:
      fprintf(stderr,
              "usage: %s [-c N] [-t MS] [--retry N] [-f FILE] "
              "[URL...]\n",
              argv[0]);
      return 2;
    }
  }
  char **urls = argv + optind, *mem = NULL;
  size_t n = (size_t)(argc - optind);
  if (file != NULL && (mem = read_urls(file, &urls, &n)) == NULL) {
    fprintf(stderr, "fanout-fiber: cannot read %s\n", file);
    return 1;
  }
  if (n == 0 || concurrency == 0 || r.timeout_ms == 0) {
    fprintf(stderr, "fanout-fiber: no URLs, -c 0 or -t 0\n");
    return 2;
  }

  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    return 1;
  uvp_group_t *g = NULL;
  uvp_group_opts_t go = {.limit = concurrency};
  r.loop = &loop;
  r.n = n;
  r.rows = calloc(n, sizeof(*r.rows));
  r.idle = calloc(concurrency, sizeof(*r.idle));
  r.max_idle = concurrency;
  int rc =
      r.rows != NULL && r.idle != NULL ? uvp_ctx_new(&loop, &r.ctx) : UV_ENOMEM;
  if (rc == 0)
    rc = uvp_group_new(r.ctx, &go, &g);
  uint64_t t0 = uv_hrtime();
  for (size_t i = 0; rc == 0 && i < n; i++) {
    r.rows[i].run = &r;
    r.rows[i].url = urls[i];
    rc = uvp_group_spawn(g, fetch, &r.rows[i], NULL);
  }
  /* The group runs its members to their end without us: a row is all a
   * fiber leaves behind. */
  uvp_group_release(g);
  if (rc == 0)
    uv_run(&loop, UV_RUN_DEFAULT);
  while (r.nidle > 0) /* idle connections do not keep uv_run going */
    uvp_tcp_close(r.idle[--r.nidle].t);
  if (rc == 0)
    report(&r, uv_hrtime() - t0);
  else
    fprintf(stderr, "fanout-fiber: %s\n", uvp_strerror(rc));
  if (r.ctx != NULL)
    uvp_ctx_close(r.ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  int closed = uv_loop_close(&loop);
  free(r.rows);
  free(r.idle);
  free(mem);
  if (file != NULL)
    free(urls);
  return rc != 0 || closed != 0;
}
