/* uvp-gateway — an HTTP/1.1 server that answers every GET with the outcome
 * of a fan-out to a fixed set of backends, as a JSON summary.
 *
 *   uvp-gateway [-p PORT] [-t MS] [-b URL]... [-f FILE]
 *
 *   -p PORT  port on 127.0.0.1 (default 8080; 0 picks a free one).  Once
 *            listening, prints "listening on 127.0.0.1:PORT" on stdout.
 *   -t MS    per-backend timeout in milliseconds (default 2000; 0: none)
 *   -b URL   a backend (http://host[:port]/path), repeatable, in order
 *   -f FILE  more backends, one URL per line ('#' starts a comment)
 *
 * For each request it GETs every backend at once (httpc_get_target with
 * the timeout; each backend's URL is parsed once, at startup), waits for all of them with uvp_promise_all_settled and
 * answers 200 with
 *
 *   {"backends":[{"url":"...","status":"fulfilled","code":200,"bytes":5,
 *                 "ms":1.2},
 *                {"url":"...","status":"rejected","error":"ETIMEDOUT"}],
 *    "ok":1,"failed":1}
 *
 * in backend order.  As in Promise.allSettled, "fulfilled" means an HTTP
 * response arrived, whatever its status code (a 404 is a response; its
 * code is in "code"); "ok" and "failed" count fulfilled and rejected
 * backends.  "bytes" is the backend's body length, "ms" the time from the
 * start of its request to the end of its body.
 *
 * Backend connections are kept alive and reused through one httpc pool,
 * as nginx's upstream `keepalive` or Node's keep-alive agent do: a backend
 * request takes an idle connection to its host:port if there is one, and
 * gives it back after the response.  Up to POOL_MAX_IDLE connections per
 * backend host:port stay idle (256, Node's default maxFreeSockets): as
 * many as the backend requests in flight to one host:port at the peak
 * (64 clients x 3 backends on one demo server in bench/run-gateway), so
 * steady load opens no new connection; beyond that, connections are
 * closed after their response.  A connection the backend closed while
 * idle costs one retry (see httpc.h).
 *
 * HTTP is httpd's (examples/common/httpd.h: llhttp, keep-alive, pipelined
 * requests answered in order):
 *  - GET and HEAD, on any path, start a fan-out; other methods get 405.
 *  - A client that closes its connection (or half-closes it: like nginx's
 *    default proxy_ignore_client_abort off, end of input with a request in
 *    flight is taken as an abort) has its fan-out cancelled: the backend
 *    requests are closed and the result, which still arrives as a
 *    rejection, is dropped.
 *  - Malformed requests get 400, oversized headers 431, then the
 *    connection is closed.
 *
 * SIGINT/SIGTERM: stop accepting, close idle connections, let requests in
 * flight finish (bounded by -t) and answer them with "Connection: close";
 * a second signal cancels what is left.  Then the pool's idle backend
 * connections are closed, uvp_ctx_close, and the loop closes with nothing
 * left on it; exit status 0. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "httpc.h"
#include "httpd.h"
#include "uvp.h"

#define POOL_MAX_IDLE 256 /* idle backend connections per host:port */
/* Compact JSON; "ms" has one decimal, which 15 significant digits print
 * without the binary fraction's noise. */
#define JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))
#define JSON_HEADERS "Server: uvp-gateway\r\nContent-Type: application/json\r\n"
#define OOM_BODY "{\"error\":\"Internal Server Error\"}\n"

/* A backend: its URL, prepared for httpc once, or the reason it cannot be
 * asked (a bad URL is each request's rejection, not a startup error). */
typedef struct backend_s {
  char *url;
  httpc_target_t *target; /* NULL: error and why */
  int error;
  const char *why;
} backend_t;

/* ---- the JSON summary -------------------------------------------------- */

/* The summary's document is built once, with both possible entries of
 * every backend; a response sets the figures, puts each backend's entry
 * in place and dumps it.  (Callgrind, 3 backends: 128 k instructions per
 * gateway response with the objects built for each response and dumped
 * through open_memstream, 83 k like this, 55 k with the former printf.) */
typedef struct entry_s {
  json_t *fulfilled, *code, *bytes, *ms; /* {"url",...,"code","bytes","ms"} */
  json_t *rejected, *error;              /* {"url",...,"error"} */
} entry_t;

typedef struct summary_s {
  json_t *doc; /* {"backends":[...],"ok":N,"failed":N} */
  json_t *backends, *ok, *failed;
  entry_t *entries;
  size_t n;
} summary_t;

static void summary_free(summary_t *s) {
  for (size_t i = 0; i < s->n; i++) {
    entry_t *e = &s->entries[i];
    json_t *all[] = {e->fulfilled, e->code, e->bytes, e->ms, e->rejected,
                     e->error};
    for (size_t k = 0; k < sizeof(all) / sizeof(*all); k++)
      json_decref(all[k]);
  }
  free(s->entries);
  json_t *doc[] = {s->doc, s->backends, s->ok, s->failed};
  for (size_t k = 0; k < sizeof(doc) / sizeof(*doc); k++)
    json_decref(doc[k]);
  memset(s, 0, sizeof(*s));
}

/* Returns 0, or -1 (out of memory, or a URL that is not UTF-8). */
static int summary_init(summary_t *s, const backend_t *backends, size_t n) {
  memset(s, 0, sizeof(*s));
  s->backends = json_array();
  s->ok = json_integer(0);
  s->failed = json_integer(0);
  s->doc = json_pack("{s:O,s:O,s:O}", "backends", s->backends, "ok", s->ok,
                     "failed", s->failed);
  s->entries = calloc(n, sizeof(*s->entries));
  if (s->doc == NULL || s->entries == NULL) {
    summary_free(s);
    return -1;
  }
  for (; s->n < n; s->n++) {
    entry_t *e = &s->entries[s->n];
    json_t *url = json_string(backends[s->n].url);
    e->code = json_integer(0);
    e->bytes = json_integer(0);
    e->ms = json_real(0);
    e->error = json_string("");
    e->fulfilled = json_pack("{s:O,s:s,s:O,s:O,s:O}", "url", url, "status",
                             "fulfilled", "code", e->code, "bytes", e->bytes,
                             "ms", e->ms);
    e->rejected = json_pack("{s:O,s:s,s:O}", "url", url, "status", "rejected",
                            "error", e->error);
    json_decref(url);
    if (e->fulfilled == NULL || e->rejected == NULL ||
        json_array_append(s->backends, e->rejected) != 0) {
      s->n++;
      summary_free(s);
      return -1;
    }
  }
  return 0;
}

/* The document for one fan-out's outcomes, in backend order; "ms" to
 * 0.1 ms.  Valid until the next call. */
static const json_t *summary_of(summary_t *s, const uvp_settled_list_t *l) {
  for (size_t i = 0; i < l->count; i++) {
    const uvp_settled_t *it = &l->items[i];
    entry_t *e = &s->entries[i];
    if (it->status == 0) {
      const httpc_response_t *r = it->value;
      json_integer_set(e->code, r->status);
      json_integer_set(e->bytes, (json_int_t)r->bytes);
      json_real_set(e->ms, (double)((r->latency_us + 50) / 100) / 10.0);
    }
    json_t *entry = it->status == 0 ? e->fulfilled : e->rejected;
    if ((it->status < 0 &&
         json_string_set(e->error, uvp_err_name(it->status)) != 0) ||
        json_array_set(s->backends, i, entry) != 0)
      return NULL;
  }
  json_integer_set(s->ok, (json_int_t)l->fulfilled);
  json_integer_set(s->failed, (json_int_t)l->rejected);
  return s->doc;
}

typedef struct server_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  httpd_t *httpd; /* NULL once drained */
  uv_signal_t sigint;
  uv_signal_t sigterm;
  int signals; /* how many stop signals have arrived */
  httpd_stats_t stats; /* httpd's, kept when it goes */
  backend_t *backends;
  size_t nbackends;
  summary_t summary;
  httpc_opts_t opts; /* opts.pool: the backend connections */
} server_t;

/* One fan-out, answering `req`. */
typedef struct fanout_s {
  server_t *srv;
  httpd_req_t *req;
  uvp_promise_t *all;
} fanout_t;

/* ---- responses ----------------------------------------------------------- */

/* Answer with `doc` (borrowed) as one compact line of JSON, dumped into a
 * buffer that serves every response: the socket usually takes the whole
 * response at once, and httpd copies what it does not. */
static void respond_json(httpd_req_t *req, int code, const json_t *doc) {
  static char buf[64 * 1024];
  char *body = buf;
  size_t n = doc != NULL ? json_dumpb(doc, buf, sizeof(buf) - 1, JSON_FLAGS)
                         : 0;
  if (n >= sizeof(buf) &&
      ((body = malloc(n + 1)) == NULL ||
       json_dumpb(doc, body, n, JSON_FLAGS) != n))
    n = 0;
  if (n == 0) {
    httpd_respond(req, 500, JSON_HEADERS, OOM_BODY, sizeof(OOM_BODY) - 1);
  } else {
    body[n] = '\n';
    httpd_respond(req, code, JSON_HEADERS, body, n + 1);
  }
  if (body != buf)
    free(body);
}

static void respond_error(httpd_req_t *req, int code) {
  json_t *doc = json_pack("{s:s}", "error", httpd_reason(code));
  respond_json(req, code, doc);
  json_decref(doc);
}

/* ---- the fan-out --------------------------------------------------------- */

static uvp_ret_t on_fanout_settled(void *arg, const uvp_outcome_t *in) {
  fanout_t *f = arg;
  server_t *srv = f->srv;
  httpd_req_t *req = f->req;
  /* The handler call holds its own reference: in->value stays valid. */
  uvp_promise_release(f->all);
  free(f);
  if (in->status == 0)
    respond_json(req, 200, summary_of(&srv->summary, in->value));
  else /* cancelled: the client is gone, and the answer is dropped */
    respond_error(req, 500);
  return uvp_ret_value(NULL, NULL);
}

/* The client went away: stop the backend requests.  on_fanout_settled
 * still runs (with UV_ECANCELED) and finishes the request. */
static void fanout_abort(httpd_req_t *req) {
  fanout_t *f = req->data;
  uvp_promise_cancel(f->all);
}

static void start_fanout(server_t *srv, httpd_req_t *req) {
  size_t n = srv->nbackends;
  uvp_promise_t **ps = calloc(n, sizeof(*ps));
  fanout_t *f = calloc(1, sizeof(*f));
  int err = (ps == NULL || f == NULL) ? UV_ENOMEM : 0;
  size_t made = 0;
  for (; err == 0 && made < n; made++) {
    const backend_t *b = &srv->backends[made];
    err = b->target != NULL
              ? httpc_get_target(srv->ctx, b->target, &srv->opts, &ps[made])
              : uvp_promise_rejected(srv->ctx, b->error, (void *)b->why, NULL,
                                     &ps[made]);
    /* A backend request that cannot even start (no memory) is that
     * backend's rejection, not the whole request's failure. */
    if (err < 0 && err != UVP_ECLOSED)
      err = uvp_promise_rejected(srv->ctx, err, NULL, NULL, &ps[made]);
  }
  if (err == 0)
    err = uvp_promise_all_settled(srv->ctx, ps, n, &f->all);
  /* allSettled holds its own references to the inputs; without it, the
   * requests already started must not run on unobserved. */
  for (size_t i = 0; i < made; i++) {
    if (ps[i] == NULL)
      continue;
    if (err < 0)
      uvp_promise_cancel(ps[i]);
    uvp_promise_release(ps[i]);
  }
  free(ps);
  if (err == 0) {
    f->srv = srv;
    f->req = req;
    err = uvp_promise_on(f->all, UVP_ON_BOTH, on_fanout_settled, f, NULL);
    if (err < 0) {
      uvp_promise_cancel(f->all);
      uvp_promise_release(f->all);
    }
  }
  if (err < 0) {
    free(f);
    respond_error(req, 503);
    return;
  }
  req->data = f;
  req->on_abort = fanout_abort;
}

static void on_request(httpd_req_t *req, void *arg) {
  server_t *srv = arg;
  if (req->error != 0)
    respond_error(req, req->error);
  else if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
    start_fanout(srv, req);
  else
    respond_error(req, 405);
}

/* ---- start and stop ------------------------------------------------------ */

/* Every connection is closed and every fan-out has settled: uvp can go,
 * and with it the idle backend connections. */
static void on_drained(void *arg) {
  server_t *srv = arg;
  srv->stats = *httpd_stats(srv->httpd);
  srv->httpd = NULL;
  httpc_pool_close(srv->opts.pool);
  uvp_ctx_close(srv->ctx);
  uv_close((uv_handle_t *)&srv->sigint, NULL);
  uv_close((uv_handle_t *)&srv->sigterm, NULL);
}

/* The first signal drains, a second does not wait for backends any
 * longer. */
static void on_signal(uv_signal_t *s, int signum) {
  server_t *srv = s->data;
  (void)signum;
  if (srv->httpd != NULL)
    httpd_stop(srv->httpd, srv->signals++ == 0, on_drained, srv);
}

static int add_backend(server_t *srv, const char *url) {
  size_t n = srv->nbackends + 1;
  backend_t *bs = realloc(srv->backends, n * sizeof(*bs));
  if (bs == NULL)
    return -1;
  srv->backends = bs;
  backend_t *b = &bs[n - 1];
  memset(b, 0, sizeof(*b));
  b->error = httpc_target_new(url, &b->target, &b->why);
  if ((b->url = strdup(url)) == NULL || b->error == UV_ENOMEM) {
    free(b->url);
    httpc_target_free(b->target);
    return -1;
  }
  srv->nbackends = n;
  return 0;
}

static int read_backend_file(server_t *srv, const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    fprintf(stderr, "uvp-gateway: %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[4096];
  int rc = 0;
  while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
    char *hash = strchr(line, '#');
    if (hash)
      *hash = '\0';
    char *s = line + strspn(line, " \t\r\n");
    size_t n = strcspn(s, " \t\r\n");
    s[n] = '\0';
    if (n > 0)
      rc = add_backend(srv, s);
  }
  fclose(f);
  return rc;
}

static void usage(void) {
  fprintf(stderr,
          "usage: uvp-gateway [-p PORT] [-t MS] [-b URL]... [-f FILE]\n");
}

static int parse_uint(const char *s, unsigned long long max,
                      unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || v > max || *s == '-')
    return -1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  static server_t srv; /* static: its address is in every handle */
  unsigned long long port = 8080, timeout = 2000;
  int rc = 0;

  /* Every option takes a value: walk them in pairs. */
  for (int i = 1; i < argc && rc == 0; i += 2) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage();
      return 0;
    } else if (v == NULL) {
      rc = -1;
    } else if (strcmp(a, "-p") == 0) {
      rc = parse_uint(v, 65535, &port);
    } else if (strcmp(a, "-t") == 0) {
      rc = parse_uint(v, 24ULL * 3600 * 1000, &timeout);
    } else if (strcmp(a, "-b") == 0) {
      rc = add_backend(&srv, v);
    } else if (strcmp(a, "-f") == 0) {
      rc = read_backend_file(&srv, v);
    } else {
      rc = -1;
    }
  }
  if (rc != 0 || srv.nbackends == 0) {
    usage();
    return 2;
  }
  if (summary_init(&srv.summary, srv.backends, srv.nbackends) != 0) {
    fprintf(stderr, "uvp-gateway: out of memory, or a backend URL that is "
                    "not UTF-8 (JSON cannot carry it)\n");
    return 1;
  }
  srv.opts.timeout_ms = timeout;
  srv.opts.keep = 0; /* only the body's size goes into the summary */

  /* A client that goes away while we write must be an EPIPE, not a
   * signal that kills the gateway. */
  signal(SIGPIPE, SIG_IGN);

  int err = uv_loop_init(&srv.loop);
  if (err == 0)
    err = uvp_ctx_new(&srv.loop, &srv.ctx);
  if (err == 0)
    err = httpc_pool_new(srv.ctx, POOL_MAX_IDLE, &srv.opts.pool);
  if (err < 0) {
    fprintf(stderr, "uvp-gateway: init: %s\n", uv_strerror(err));
    return 1;
  }
  /* Room for a few hundred fan-outs in flight without touching malloc:
   * per request, one promise per backend, the allSettled and the
   * client's internals. */
  uvp_ctx_reserve(srv.ctx, 256 * (4 * srv.nbackends + 2),
                  256 * (4 * srv.nbackends + 2));

  err = httpd_start(&srv.loop, "127.0.0.1", (int)port, on_request, &srv,
                    &srv.httpd);
  if (err < 0) {
    fprintf(stderr, "uvp-gateway: listen on 127.0.0.1:%llu: %s\n", port,
            uv_strerror(err));
    httpc_pool_close(srv.opts.pool);
    uvp_ctx_close(srv.ctx);
    uv_run(&srv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&srv.loop);
    return 1;
  }
  printf("listening on 127.0.0.1:%d\n", httpd_port(srv.httpd));
  fflush(stdout);

  uv_signal_init(&srv.loop, &srv.sigint);
  uv_signal_init(&srv.loop, &srv.sigterm);
  srv.sigint.data = srv.sigterm.data = &srv;
  uv_signal_start(&srv.sigint, on_signal, SIGINT);
  uv_signal_start(&srv.sigterm, on_signal, SIGTERM);

  uv_run(&srv.loop, UV_RUN_DEFAULT);

  err = uv_loop_close(&srv.loop);
  if (err < 0) {
    fprintf(stderr, "uvp-gateway: uv_loop_close: %s\n", uv_strerror(err));
    uv_print_all_handles(&srv.loop, stderr);
  }
  fprintf(stderr, "uvp-gateway: %llu connections, %llu requests\n",
          srv.stats.connections, srv.stats.requests);
  for (size_t i = 0; i < srv.nbackends; i++) {
    free(srv.backends[i].url);
    httpc_target_free(srv.backends[i].target);
  }
  free(srv.backends);
  summary_free(&srv.summary);
  return err < 0 ? 1 : 0;
}
