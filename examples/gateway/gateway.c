/* uvp-gateway — an HTTP/1.1 server that answers every GET with the outcome
 * of a fan-out to a fixed set of backends, as a JSON summary.
 *
 *   uvp-gateway [options] -b URL [-b URL]... (see usage() or --help)
 *
 * For each request it GETs every backend at once (httpc_get_target with
 * the timeout; each backend's URL is parsed once, at startup), waits for
 * all of them with uvp_promise_all_settled and answers 200 with
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
 * Workers: -w N threads (default: one per CPU), each with its own
 * uv_loop_t, uvp context, backend pool and listening socket on the same
 * port (SO_REUSEPORT: the kernel spreads new connections over them).  They
 * share nothing but the read-only configuration, so no lock is taken on a
 * request's path.  The main thread only waits for signals.
 *
 * Backend connections are kept alive and reused through each worker's
 * httpc pool, as nginx's upstream `keepalive` or Node's keep-alive agent
 * do: a backend request takes an idle connection to its host:port if
 * there is one, and gives it back after the response.  Up to
 * POOL_MAX_IDLE connections per backend host:port stay idle per worker
 * (256, Node's default maxFreeSockets): as many as the backend requests in
 * flight to one host:port at the peak (64 clients x 3 backends on one demo
 * server in bench/run-gateway), so steady load opens no new connection;
 * beyond that, connections are closed after their response.  A connection
 * the backend closed while idle costs one retry (see httpc.h).
 *
 * HTTP is httpd's (examples/common/httpd.h: llhttp with strict checks of
 * its own, keep-alive, pipelined requests answered in order, the three
 * client timeouts, accept paused while descriptors run out):
 *  - GET and HEAD, on any path, start a fan-out; other methods get 405.
 *  - A client that resets its connection has its fan-out cancelled: the
 *    backend requests are closed and the result, which still arrives as a
 *    rejection, is dropped.  End of input is not an abort: a client that
 *    sends its request and shuts its write side (nc -N, HTTP/1.0 tools,
 *    health checkers) gets its answer, then the connection closes.  (A
 *    client that closed entirely looks the same until the answer is
 *    written; its fan-out runs its course, bounded by -t.)
 *  - Malformed requests get 400 (HTTP/0.9, "Name :", obs-fold, no Host in
 *    HTTP/1.1...), oversized headers 431, HTTP/2+ in text 505, a request
 *    slower than --client-header-timeout 408; then the connection closes.
 *
 * SIGINT/SIGTERM: each worker stops accepting, closes idle connections,
 * lets requests in flight finish (bounded by -t) and answers them with
 * "Connection: close"; a second signal cancels what is left.  Then its
 * pool's idle backend connections are closed, uvp_ctx_close, and its loop
 * closes with nothing left on it; once every worker's has, exit status
 * 0. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "httpc.h"
#include "httpd.h"
#include "uvp.h"

#define POOL_MAX_IDLE 256 /* idle backend connections per host:port */
#define MAX_WORKERS 1024
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

/* Any time after a memset to 0, summary_init's or the caller's. */
static void summary_free(summary_t *s) {
  for (size_t i = 0; s->entries != NULL && i < s->n; i++) {
    entry_t *e = &s->entries[i];
    json_t *all[] = {e->fulfilled, e->code,     e->bytes,
                     e->ms,        e->rejected, e->error};
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
    e->fulfilled =
        json_pack("{s:O,s:s,s:O,s:O,s:O}", "url", url, "status", "fulfilled",
                  "code", e->code, "bytes", e->bytes, "ms", e->ms);
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

/* ---- configuration and workers ------------------------------------------- */

/* What every worker reads; written before the first starts. */
typedef struct config_s {
  char **urls;
  size_t nurls;
  uint64_t timeout_ms;
  httpd_opts_t httpd; /* log and log_arg are each worker's */
  unsigned workers;
} config_t;

typedef struct main_s main_t;

typedef struct worker_s {
  unsigned id;
  main_t *main;
  uv_thread_t thread;
  uv_sem_t ready; /* posted once listening, or failed to */
  int port;       /* in: where to listen (0: any); out: where it does */
  int error;      /* startup's */
  /* The worker thread's own, from here on. */
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  httpd_t *httpd; /* NULL once drained */
  int stopping;   /* the stop level applied: 1 drain, 2 close */
  backend_t *backends;
  size_t nbackends;
  summary_t summary;
  httpc_opts_t opts;   /* opts.pool: the backend connections */
  httpd_stats_t stats; /* httpd's, kept when it goes */
  /* The main thread's way in: uv_async_send on `wake` while wake_open,
   * under `lock` (the worker closes it once drained). */
  uv_async_t wake;
  uv_mutex_t lock;
  int wake_open;
  char body[64 * 1024]; /* respond_json's */
} worker_t;

struct main_s {
  config_t cfg;
  uv_loop_t loop;
  uv_signal_t sigint, sigterm;
  uv_async_t finished; /* a worker's loop is closed */
  atomic_uint nfinished;
  atomic_int stop; /* 0, 1 drain, 2 close */
  int signals;
  worker_t *workers;
  unsigned started; /* threads to join */
  int failed;       /* a worker's loop did not close */
};

/* One fan-out, answering `req`. */
typedef struct fanout_s {
  worker_t *w;
  httpd_req_t *req;
  uvp_promise_t *all;
} fanout_t;

/* ---- responses ----------------------------------------------------------- */

/* Answer with `doc` (borrowed) as one compact line of JSON, dumped into a
 * buffer that serves every response of the worker: the socket usually
 * takes the whole response at once, and httpd copies what it does not. */
static void respond_json(worker_t *w, httpd_req_t *req, int code,
                         const json_t *doc) {
  char *body = w->body;
  size_t cap = sizeof(w->body);
  size_t n = doc != NULL ? json_dumpb(doc, body, cap - 1, JSON_FLAGS) : 0;
  if (n >= cap && ((body = malloc(n + 1)) == NULL ||
                   json_dumpb(doc, body, n, JSON_FLAGS) != n))
    n = 0;
  if (n == 0) {
    httpd_respond(req, 500, JSON_HEADERS, OOM_BODY, sizeof(OOM_BODY) - 1);
  } else {
    body[n] = '\n';
    httpd_respond(req, code, JSON_HEADERS, body, n + 1);
  }
  if (body != w->body)
    free(body);
}

static void respond_error(worker_t *w, httpd_req_t *req, int code) {
  json_t *doc = json_pack("{s:s}", "error", httpd_reason(code));
  respond_json(w, req, code, doc);
  json_decref(doc);
}

/* ---- the fan-out --------------------------------------------------------- */

static uvp_ret_t on_fanout_settled(void *arg, const uvp_outcome_t *in) {
  fanout_t *f = arg;
  worker_t *w = f->w;
  httpd_req_t *req = f->req;
  /* The handler call holds its own reference: in->value stays valid. */
  uvp_promise_release(f->all);
  free(f);
  if (in->status == 0)
    respond_json(w, req, 200, summary_of(&w->summary, in->value));
  else /* cancelled: the client is gone, and the answer is dropped */
    respond_error(w, req, 500);
  return uvp_ret_value(NULL, NULL);
}

/* The client went away: stop the backend requests.  on_fanout_settled
 * still runs (with UV_ECANCELED) and finishes the request. */
static void fanout_abort(httpd_req_t *req) {
  fanout_t *f = req->data;
  uvp_promise_cancel(f->all);
}

static void start_fanout(worker_t *w, httpd_req_t *req) {
  size_t n = w->nbackends;
  uvp_promise_t **ps = calloc(n, sizeof(*ps));
  fanout_t *f = calloc(1, sizeof(*f));
  int err = (ps == NULL || f == NULL) ? UV_ENOMEM : 0;
  size_t made = 0;
  for (; err == 0 && made < n; made++) {
    const backend_t *b = &w->backends[made];
    err = b->target != NULL
              ? httpc_get_target(w->ctx, b->target, &w->opts, &ps[made])
              : uvp_promise_rejected(w->ctx, b->error, (void *)b->why, NULL,
                                     &ps[made]);
    /* A backend request that cannot even start (no memory) is that
     * backend's rejection, not the whole request's failure. */
    if (err < 0 && err != UVP_ECLOSED)
      err = uvp_promise_rejected(w->ctx, err, NULL, NULL, &ps[made]);
  }
  if (err == 0)
    err = uvp_promise_all_settled(w->ctx, ps, n, &f->all);
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
    f->w = w;
    f->req = req;
    err = uvp_promise_on(f->all, UVP_ON_BOTH, on_fanout_settled, f, NULL);
    if (err < 0) {
      uvp_promise_cancel(f->all);
      uvp_promise_release(f->all);
    }
  }
  if (err < 0) {
    free(f);
    respond_error(w, req, 503);
    return;
  }
  req->data = f;
  req->on_abort = fanout_abort;
}

static void on_request(httpd_req_t *req, void *arg) {
  worker_t *w = arg;
  if (req->error != 0)
    respond_error(w, req, req->error);
  else if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
    start_fanout(w, req);
  else
    respond_error(w, req, 405);
}

/* ---- a worker ------------------------------------------------------------ */

static int add_backend(worker_t *w, const char *url) {
  backend_t *b = &w->backends[w->nbackends];
  memset(b, 0, sizeof(*b));
  b->error = httpc_target_new(url, &b->target, &b->why);
  if ((b->url = strdup(url)) == NULL || b->error == UV_ENOMEM) {
    free(b->url);
    httpc_target_free(b->target);
    return UV_ENOMEM;
  }
  w->nbackends++;
  return 0;
}

static void free_backends(worker_t *w) {
  for (size_t i = 0; i < w->nbackends; i++) {
    free(w->backends[i].url);
    httpc_target_free(w->backends[i].target);
  }
  free(w->backends);
  summary_free(&w->summary);
}

static void log_line(const char *line, void *arg) {
  worker_t *w = arg;
  fprintf(stderr, "uvp-gateway: worker %u: %s\n", w->id, line);
}

/* Every connection is closed and every fan-out has settled: uvp can go,
 * and with it the idle backend connections; then the wake-up handle, the
 * last thing keeping the loop alive. */
static void on_drained(void *arg) {
  worker_t *w = arg;
  w->stats = *httpd_stats(w->httpd);
  w->httpd = NULL;
  httpc_pool_close(w->opts.pool);
  uvp_ctx_close(w->ctx);
  uv_mutex_lock(&w->lock);
  w->wake_open = 0;
  uv_mutex_unlock(&w->lock);
  uv_close((uv_handle_t *)&w->wake, NULL);
}

/* The main thread raised the stop level: drain, or stop waiting. */
static void on_wake(uv_async_t *a) {
  worker_t *w = a->data;
  int level = atomic_load(&w->main->stop);
  if (w->httpd != NULL && level > w->stopping) {
    w->stopping = level;
    httpd_stop(w->httpd, level == 1, on_drained, w);
  }
}

/* Everything a worker owns, made on its own thread (a uvp context belongs
 * to the thread that creates it).  Returns 0, or an error to report. */
static int worker_init(worker_t *w) {
  const config_t *cfg = &w->main->cfg;
  w->backends = calloc(cfg->nurls, sizeof(*w->backends));
  if (w->backends == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < cfg->nurls; i++)
    if (add_backend(w, cfg->urls[i]) != 0)
      return UV_ENOMEM;
  if (summary_init(&w->summary, w->backends, w->nbackends) != 0)
    return UV_ENOMEM;
  w->opts.timeout_ms = cfg->timeout_ms;
  w->opts.keep = 0; /* only the body's size goes into the summary */
  int err = uvp_ctx_new(&w->loop, &w->ctx);
  if (err == 0)
    err = httpc_pool_new(w->ctx, POOL_MAX_IDLE, &w->opts.pool);
  if (err < 0)
    return err;
  /* Room for a few hundred fan-outs in flight without touching malloc:
   * per request, one promise per backend, the allSettled and the
   * client's internals. */
  uvp_ctx_reserve(w->ctx, 256 * (4 * w->nbackends + 2),
                  256 * (4 * w->nbackends + 2));
  httpd_opts_t o = cfg->httpd;
  o.reuse_port = cfg->workers > 1;
  o.log = log_line;
  o.log_arg = w;
  err =
      httpd_start(&w->loop, "127.0.0.1", w->port, &o, on_request, w, &w->httpd);
  if (err < 0)
    return err;
  w->port = httpd_port(w->httpd);
  uv_async_init(&w->loop, &w->wake, on_wake);
  w->wake.data = w;
  w->wake_open = 1;
  return 0;
}

static void worker_main(void *arg) {
  worker_t *w = arg;
  main_t *m = w->main;
  w->error = worker_init(w);
  if (w->error != 0) {
    /* Close what was made: no handle of httpd's exists (it failed, or was
     * not reached). */
    if (w->opts.pool != NULL)
      httpc_pool_close(w->opts.pool);
    if (w->ctx != NULL)
      uvp_ctx_close(w->ctx);
  }
  uv_sem_post(&w->ready);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  int err = uv_loop_close(&w->loop);
  if (err < 0) {
    fprintf(stderr, "uvp-gateway: worker %u: uv_loop_close: %s\n", w->id,
            uv_strerror(err));
    uv_print_all_handles(&w->loop, stderr);
    m->failed = 1;
  }
  free_backends(w);
  /* The last thing this thread does: the main thread joins it before it
   * closes `finished`. */
  atomic_fetch_add(&m->nfinished, 1);
  uv_async_send(&m->finished);
}

/* Raise the stop level and tell every worker still listening. */
static void stop_workers(main_t *m, int level) {
  atomic_store(&m->stop, level);
  for (unsigned i = 0; i < m->started; i++) {
    worker_t *w = &m->workers[i];
    uv_mutex_lock(&w->lock);
    if (w->wake_open)
      uv_async_send(&w->wake);
    uv_mutex_unlock(&w->lock);
  }
}

/* The first signal drains, a second does not wait for backends any
 * longer. */
static void on_signal(uv_signal_t *s, int signum) {
  main_t *m = s->data;
  (void)signum;
  stop_workers(m, ++m->signals == 1 ? 1 : 2);
}

static void join_workers(main_t *m) {
  for (unsigned i = 0; i < m->started; i++) {
    uv_thread_join(&m->workers[i].thread);
    uv_sem_destroy(&m->workers[i].ready);
    uv_mutex_destroy(&m->workers[i].lock);
  }
  m->started = 0;
}

static void on_finished(uv_async_t *a) {
  main_t *m = a->data;
  if (atomic_load(&m->nfinished) < m->started)
    return;
  join_workers(m);
  uv_close((uv_handle_t *)&m->sigint, NULL);
  uv_close((uv_handle_t *)&m->sigterm, NULL);
  uv_close((uv_handle_t *)&m->finished, NULL);
}

/* Start the workers one after the other: the first finds the port when
 * it is 0, the others listen on the same.  Returns 0, or -1 with the
 * started ones stopped and joined. */
static int start_workers(main_t *m, int port) {
  for (unsigned i = 0; i < m->cfg.workers; i++) {
    worker_t *w = &m->workers[i];
    w->id = i;
    w->main = m;
    w->port = port;
    int err = uv_loop_init(&w->loop);
    if (err != 0) {
      fprintf(stderr, "uvp-gateway: worker %u: %s\n", i, uv_strerror(err));
      stop_workers(m, 2);
      join_workers(m);
      return -1;
    }
    uv_sem_init(&w->ready, 0);
    uv_mutex_init(&w->lock);
    err = uv_thread_create(&w->thread, worker_main, w);
    if (err != 0) {
      fprintf(stderr, "uvp-gateway: worker %u: %s\n", i, uv_strerror(err));
      uv_sem_destroy(&w->ready);
      uv_mutex_destroy(&w->lock);
      uv_loop_close(&w->loop);
      stop_workers(m, 2);
      join_workers(m);
      return -1;
    }
    m->started++;
    uv_sem_wait(&w->ready);
    if (w->error != 0) {
      fprintf(stderr, "uvp-gateway: worker %u: listen on 127.0.0.1:%d: %s\n", i,
              port, uv_strerror(w->error));
      stop_workers(m, 2);
      join_workers(m);
      return -1;
    }
    port = w->port;
  }
  return 0;
}

/* ---- the command line ---------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: uvp-gateway [options] -b URL [-b URL]...\n"
      "\n"
      "Answers every GET or HEAD with a JSON summary of one GET to each\n"
      "backend, made at once; other methods get 405.\n"
      "\n"
      "  -p, --port PORT     listen on 127.0.0.1:PORT (default 8080; 0: any\n"
      "                      free port); prints \"listening on "
      "127.0.0.1:PORT\"\n"
      "  -t, --timeout MS    per-backend timeout (default 2000; 0: none)\n"
      "  -b, --backend URL   a backend (http://host[:port]/path); "
      "repeatable\n"
      "  -f, --file FILE     more backends, one URL per line ('#' comments)\n"
      "  -w, --workers N     threads, each with its own loop, sharing the "
      "port\n"
      "                      (SO_REUSEPORT); default: one per CPU (%u here)\n"
      "  --client-header-timeout MS\n"
      "                      a request must arrive within MS of its first "
      "byte\n"
      "                      (of the accept, for a connection's first): "
      "else 408\n"
      "                      and close, or close if nothing came (default "
      "%d)\n"
      "  --keepalive-timeout MS\n"
      "                      close a connection idle between requests "
      "(default %d)\n"
      "  --send-timeout MS   drop a client that reads nothing of its answer "
      "for\n"
      "                      MS (default %d)\n"
      "  -h, --help          this text\n"
      "\n"
      "Timeouts of 0 are off.  SIGINT/SIGTERM drain (requests in flight are\n"
      "answered), a second one closes what is left; exit status 0.\n",
      uv_available_parallelism(), HTTPD_HEADER_TIMEOUT_MS,
      HTTPD_KEEPALIVE_TIMEOUT_MS, HTTPD_SEND_TIMEOUT_MS);
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

static int add_url(config_t *cfg, const char *url) {
  char **urls = realloc(cfg->urls, (cfg->nurls + 1) * sizeof(*urls));
  if (urls == NULL)
    return -1;
  cfg->urls = urls;
  if ((urls[cfg->nurls] = strdup(url)) == NULL)
    return -1;
  cfg->nurls++;
  return 0;
}

static int read_backend_file(config_t *cfg, const char *path) {
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
      rc = add_url(cfg, s);
  }
  fclose(f);
  return rc;
}

static void config_free(config_t *cfg) {
  for (size_t i = 0; i < cfg->nurls; i++)
    free(cfg->urls[i]);
  free(cfg->urls);
}

enum { OPT_HEADER = 256, OPT_KEEPALIVE, OPT_SEND };

/* Returns 0, -1 usage error, 1 --help. */
static int parse_args(int argc, char **argv, config_t *cfg,
                      unsigned long long *port) {
  static const struct option longs[] = {
      {"port", required_argument, NULL, 'p'},
      {"timeout", required_argument, NULL, 't'},
      {"backend", required_argument, NULL, 'b'},
      {"file", required_argument, NULL, 'f'},
      {"workers", required_argument, NULL, 'w'},
      {"client-header-timeout", required_argument, NULL, OPT_HEADER},
      {"keepalive-timeout", required_argument, NULL, OPT_KEEPALIVE},
      {"send-timeout", required_argument, NULL, OPT_SEND},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const unsigned long long day = 24ULL * 3600 * 1000;
  unsigned long long v = 0;
  int opt, rc = 0;
  *port = 8080;
  cfg->timeout_ms = 2000;
  cfg->workers = uv_available_parallelism();
  httpd_opts_init(&cfg->httpd);
  while (rc == 0 &&
         (opt = getopt_long(argc, argv, "p:t:b:f:w:h", longs, NULL)) != -1) {
    switch (opt) {
    case 'p':
      rc = parse_uint(optarg, 65535, port);
      break;
    case 't':
      rc = parse_uint(optarg, day, &v);
      cfg->timeout_ms = v;
      break;
    case 'b':
      rc = add_url(cfg, optarg);
      break;
    case 'f':
      rc = read_backend_file(cfg, optarg);
      break;
    case 'w':
      rc = parse_uint(optarg, MAX_WORKERS, &v) != 0 || v == 0 ? -1 : 0;
      cfg->workers = (unsigned)v;
      break;
    case OPT_HEADER:
      rc = parse_uint(optarg, day, &v);
      cfg->httpd.header_timeout_ms = v;
      break;
    case OPT_KEEPALIVE:
      rc = parse_uint(optarg, day, &v);
      cfg->httpd.keepalive_timeout_ms = v;
      break;
    case OPT_SEND:
      rc = parse_uint(optarg, day, &v);
      cfg->httpd.send_timeout_ms = v;
      break;
    case 'h':
      return 1;
    default:
      return -1;
    }
  }
  return rc == 0 && optind == argc && cfg->nurls > 0 ? 0 : -1;
}

/* ---- start and stop ------------------------------------------------------ */

static void print_stats(const main_t *m) {
  httpd_stats_t t = {0};
  for (unsigned i = 0; i < m->cfg.workers; i++) {
    const httpd_stats_t *s = &m->workers[i].stats;
    if (m->cfg.workers > 1)
      fprintf(stderr,
              "uvp-gateway: worker %u: %llu connections, %llu "
              "requests\n",
              i, s->connections, s->requests);
    t.connections += s->connections;
    t.requests += s->requests;
    t.header_timeouts += s->header_timeouts;
    t.keepalive_timeouts += s->keepalive_timeouts;
    t.send_timeouts += s->send_timeouts;
    t.accept_pauses += s->accept_pauses;
  }
  fprintf(stderr,
          "uvp-gateway: %llu connections, %llu requests; timeouts: header "
          "%llu, keep-alive %llu, send %llu; accept paused %llu times\n",
          t.connections, t.requests, t.header_timeouts, t.keepalive_timeouts,
          t.send_timeouts, t.accept_pauses);
}

int main(int argc, char **argv) {
  static main_t m; /* static: its address is in every handle */
  unsigned long long port;
  int rc = parse_args(argc, argv, &m.cfg, &port);
  if (rc != 0) {
    usage(rc > 0 ? stdout : stderr);
    config_free(&m.cfg);
    return rc > 0 ? 0 : 2;
  }
  /* Jansson seeds its hash function on first use; seed it here, before
   * the workers' threads race to do it. */
  json_object_seed(0);
  /* A client that goes away while we write must be an EPIPE, not a
   * signal that kills the gateway. */
  signal(SIGPIPE, SIG_IGN);

  m.workers = calloc(m.cfg.workers, sizeof(*m.workers));
  int err = m.workers == NULL ? UV_ENOMEM : uv_loop_init(&m.loop);
  if (err < 0) {
    fprintf(stderr, "uvp-gateway: init: %s\n", uv_strerror(err));
    free(m.workers);
    config_free(&m.cfg);
    return 1;
  }
  uv_signal_init(&m.loop, &m.sigint);
  uv_signal_init(&m.loop, &m.sigterm);
  uv_async_init(&m.loop, &m.finished, on_finished);
  m.sigint.data = m.sigterm.data = m.finished.data = &m;
  uv_signal_start(&m.sigint, on_signal, SIGINT);
  uv_signal_start(&m.sigterm, on_signal, SIGTERM);

  int started = start_workers(&m, (int)port) == 0;
  if (started) {
    printf("listening on 127.0.0.1:%d\n", m.workers[0].port);
    fflush(stdout);
    const httpd_opts_t *o = &m.cfg.httpd;
    fprintf(stderr,
            "uvp-gateway: %u worker%s; timeouts (ms): backend %llu, header "
            "%llu, keep-alive %llu, send %llu\n",
            m.cfg.workers, m.cfg.workers > 1 ? "s" : "",
            (unsigned long long)m.cfg.timeout_ms,
            (unsigned long long)o->header_timeout_ms,
            (unsigned long long)o->keepalive_timeout_ms,
            (unsigned long long)o->send_timeout_ms);
  } else {
    uv_close((uv_handle_t *)&m.sigint, NULL);
    uv_close((uv_handle_t *)&m.sigterm, NULL);
    uv_close((uv_handle_t *)&m.finished, NULL);
  }

  uv_run(&m.loop, UV_RUN_DEFAULT);

  err = uv_loop_close(&m.loop);
  if (err < 0) {
    fprintf(stderr, "uvp-gateway: uv_loop_close: %s\n", uv_strerror(err));
    uv_print_all_handles(&m.loop, stderr);
  }
  if (started)
    print_stats(&m);
  free(m.workers);
  config_free(&m.cfg);
  return !started || err < 0 || m.failed ? 1 : 0;
}
