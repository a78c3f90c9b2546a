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
 * For each request it GETs every backend at once (httpc_get with the
 * timeout), waits for all of them with uvp_promise_all_settled and
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
 * HTTP handling, all parsing by llhttp:
 *  - GET and HEAD, on any path, start a fan-out; other methods get 405.
 *  - Keep-alive: a connection serves its requests one after another.
 *    Pipelined requests are answered correctly and in order: the parser
 *    pauses at the end of each request, and bytes that arrive meanwhile
 *    are kept (up to 64 KiB, then reading stops until they are consumed).
 *  - A client that closes its connection (or half-closes it: like nginx's
 *    default proxy_ignore_client_abort off, end of input with a request in
 *    flight is taken as an abort) has its fan-out cancelled: the backend
 *    requests are closed and the result, which still arrives as a
 *    rejection, is dropped.  Nothing is written to the closed handle.
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
#include <llhttp.h>

#include "httpc.h"
#include "uvp.h"

#define MAX_PENDING (64 * 1024) /* unparsed input kept per connection */
#define MAX_HEADER (16 * 1024)  /* request line + headers */
#define POOL_MAX_IDLE 256       /* idle backend connections per host:port */
/* Compact JSON; "ms" has one decimal, which 15 significant digits print
 * without the binary fraction's noise. */
#define JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))
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
 * in place and dumps it.  Making a dozen objects per request and freeing
 * them again cost as much as the rest of the request. */
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

typedef struct conn_s conn_t;
typedef struct req_s req_t;

typedef struct server_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uv_tcp_t listener;
  uv_signal_t sigint;
  uv_signal_t sigterm;
  backend_t *backends;
  summary_t summary;
  size_t nbackends;
  httpc_opts_t opts; /* opts.pool: the backend connections */
  conn_t *conns; /* every open connection, to close them at shutdown */
  size_t nconns;
  size_t nreqs; /* fan-outs whose handler has not run yet */
  int signals;  /* how many stop signals have arrived */
  int ctx_closed;
  unsigned long long served;
  unsigned long long accepted;
} server_t;

struct conn_s {
  uv_tcp_t handle;
  server_t *srv;
  conn_t *prev, *next;
  llhttp_t parser;
  req_t *req;       /* the fan-out answering this connection, or NULL */
  int writing;      /* a response is being written */
  int reading;      /* uv_read_start is in effect */
  int closing;
  int close_after;  /* close once the response is written */
  int message_done; /* the parser paused at the end of a request */
  int too_large;
  size_t header_bytes;
  char *pending; /* input read but not parsed yet (pipelined requests) */
  size_t pending_len, pending_cap;
};

/* One fan-out.  Separate from the connection because it can outlive it: a
 * cancelled all_settled still calls its handler later, which then finds
 * conn == NULL and only frees. */
struct req_s {
  server_t *srv;
  conn_t *conn;
  uvp_promise_t *all;
  int head; /* HEAD: answer without the body */
};

typedef struct wreq_s {
  uv_write_t req;
  conn_t *conn;
  char data[];
} wreq_t;

static void conn_close(conn_t *c);
static void conn_continue(conn_t *c);
static void maybe_finish(server_t *srv);

/* ---- writing responses -------------------------------------------------- */

static void after_write(uv_write_t *w, int status) {
  wreq_t *wr = (wreq_t *)w;
  conn_t *c = wr->conn;
  free(wr);
  c->writing = 0;
  if (c->closing)
    return; /* status is UV_ECANCELED: the close callback does the rest */
  if (status < 0 || c->close_after) {
    conn_close(c);
    return;
  }
  conn_continue(c);
}

/* Write one whole response.  Usually the socket takes it at once
 * (uv_try_write): then no write request is needed, the connection is free
 * for its next request as soon as this returns (the caller goes on with
 * conn_continue), and libuv 1.44 has no epoll_ctl to make afterwards (it
 * re-arms the watcher of a reading stream after every completed
 * uv_write).  Otherwise the rest is copied into a write request and the
 * connection stays busy until it is written. */
static void conn_respond(conn_t *c, int code, const char *reason,
                         const char *body, size_t body_len, int head_only) {
  server_t *srv = c->srv;
  /* Once stopping, every answer is the connection's last. */
  if (srv->signals > 0)
    c->close_after = 1;
  char head[256];
  int n = snprintf(head, sizeof(head),
                   "HTTP/1.1 %d %s\r\n"
                   "Server: uvp-gateway\r\n"
                   "Content-Type: application/json\r\n"
                   "Content-Length: %zu\r\n"
                   "%s\r\n",
                   code, reason, body_len,
                   c->close_after ? "Connection: close\r\n" : "");
  size_t hlen = (size_t)n;
  size_t blen = head_only ? 0 : body_len;
  uv_buf_t bufs[2] = {uv_buf_init(head, (unsigned int)hlen),
                      uv_buf_init((char *)body, (unsigned int)blen)};
  int w = uv_try_write((uv_stream_t *)&c->handle, bufs, blen ? 2 : 1);
  if (w == UV_EAGAIN || w == UV_ENOSYS)
    w = 0;
  if (w < 0) {
    conn_close(c);
    return;
  }
  srv->served++;
  size_t done = (size_t)w;
  if (done == hlen + blen) {
    if (c->close_after)
      conn_close(c);
    return;
  }
  /* What is left: the rest of the head, then the rest of the body. */
  size_t hdone = done < hlen ? done : hlen;
  size_t bdone = done - hdone;
  wreq_t *wr = malloc(sizeof(*wr) + (hlen - hdone) + (blen - bdone));
  if (wr == NULL) {
    conn_close(c);
    return;
  }
  memcpy(wr->data, head + hdone, hlen - hdone);
  if (blen > bdone)
    memcpy(wr->data + (hlen - hdone), body + bdone, blen - bdone);
  wr->conn = c;
  uv_buf_t buf =
      uv_buf_init(wr->data, (unsigned int)((hlen - hdone) + (blen - bdone)));
  if (uv_write(&wr->req, (uv_stream_t *)&c->handle, &buf, 1, after_write)) {
    free(wr);
    conn_close(c);
    return;
  }
  c->writing = 1;
}

/* Answer with `doc` (borrowed) as one compact line of JSON.  Dumped into
 * a buffer that is the same for every response (the socket usually takes
 * the whole response at once, and conn_respond copies what it does not),
 * so that a summary costs no allocation. */
static void conn_respond_json(conn_t *c, int code, const char *reason,
                              const json_t *doc, int head_only) {
  static char buf[64 * 1024];
  char *body = buf;
  size_t n = doc != NULL ? json_dumpb(doc, buf, sizeof(buf) - 1, JSON_FLAGS)
                         : 0;
  if (n >= sizeof(buf) &&
      ((body = malloc(n + 1)) == NULL ||
       json_dumpb(doc, body, n, JSON_FLAGS) != n))
    n = 0;
  if (n == 0) {
    conn_respond(c, 500, "Internal Server Error", OOM_BODY,
                 sizeof(OOM_BODY) - 1, 0);
  } else {
    body[n] = '\n';
    conn_respond(c, code, reason, body, n + 1, head_only);
  }
  if (body != buf)
    free(body);
}

static void conn_respond_error(conn_t *c, int code, const char *reason) {
  json_t *doc = json_pack("{s:s}", "error", reason);
  conn_respond_json(c, code, reason, doc, 0);
  json_decref(doc);
}

/* ---- the fan-out -------------------------------------------------------- */

static uvp_ret_t on_fanout_settled(void *arg, const uvp_outcome_t *in) {
  req_t *r = arg;
  server_t *srv = r->srv;
  conn_t *c = r->conn;
  if (c != NULL) {
    c->req = NULL;
    if (in->status == 0) {
      conn_respond_json(c, 200, "OK", summary_of(&srv->summary, in->value),
                        r->head);
    } else {
      /* Only a cancellation rejects allSettled, and we cancel only for
       * connections that are gone; answer anyway rather than hang. */
      conn_respond_error(c, 500, "Internal Server Error");
    }
    conn_continue(c); /* the next pipelined request, if answered at once */
  }
  uvp_promise_release(r->all);
  free(r);
  srv->nreqs--;
  maybe_finish(srv);
  return uvp_ret_value(NULL, NULL);
}

static void start_fanout(conn_t *c, int head) {
  server_t *srv = c->srv;
  size_t n = srv->nbackends;
  uvp_promise_t **ps = calloc(n ? n : 1, sizeof(*ps));
  req_t *r = calloc(1, sizeof(*r));
  int err = (ps == NULL || r == NULL) ? UV_ENOMEM : 0;
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
    err = uvp_promise_all_settled(srv->ctx, ps, n, &r->all);
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
    r->srv = srv;
    r->conn = c;
    r->head = head;
    err = uvp_promise_on(r->all, UVP_ON_BOTH, on_fanout_settled, r, NULL);
    if (err < 0) {
      uvp_promise_cancel(r->all);
      uvp_promise_release(r->all);
    }
  }
  if (err < 0) {
    free(r);
    conn_respond_error(c, 503, "Service Unavailable");
    return;
  }
  c->req = r;
  srv->nreqs++;
}

/* ---- parsing requests --------------------------------------------------- */

static int on_message_begin(llhttp_t *p) {
  conn_t *c = p->data;
  c->header_bytes = 0;
  return 0;
}

static int count_header(llhttp_t *p, const char *at, size_t len) {
  conn_t *c = p->data;
  (void)at;
  c->header_bytes += len;
  if (c->header_bytes > MAX_HEADER) {
    c->too_large = 1;
    return -1;
  }
  return 0;
}

/* Stop at the end of each request: the bytes after it belong to the next
 * one, which must wait for this one's answer. */
static int on_message_complete(llhttp_t *p) {
  conn_t *c = p->data;
  c->message_done = 1;
  return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = count_header,
    .on_header_field = count_header,
    .on_header_value = count_header,
    .on_message_complete = on_message_complete,
};

/* A complete request has been parsed: answer it. */
static void dispatch(conn_t *c) {
  llhttp_t *p = &c->parser;
  int method = llhttp_get_method(p);
  int keep_alive = llhttp_should_keep_alive(p);
  c->message_done = 0;
  if (!keep_alive)
    c->close_after = 1;
  if (method == HTTP_GET || method == HTTP_HEAD)
    start_fanout(c, method == HTTP_HEAD);
  else
    conn_respond_error(c, 405, "Method Not Allowed");
}

static int keep_pending(conn_t *c, const char *data, size_t len) {
  if (c->pending_len + len > c->pending_cap) {
    size_t cap = c->pending_cap ? c->pending_cap : 1024;
    while (cap < c->pending_len + len)
      cap *= 2;
    char *p = realloc(c->pending, cap);
    if (p == NULL)
      return UV_ENOMEM;
    c->pending = p;
    c->pending_cap = cap;
  }
  memmove(c->pending + c->pending_len, data, len);
  c->pending_len += len;
  return 0;
}

/* Feed `data` to the parser.  Returns how many bytes it consumed: all of
 * them, or fewer when it paused at the end of a request (dispatched before
 * returning).  After a parse error the connection is answered and closed. */
static size_t conn_parse(conn_t *c, const char *data, size_t len) {
  enum llhttp_errno err = llhttp_execute(&c->parser, data, len);
  if (err == HPE_OK)
    return len;
  if (err == HPE_PAUSED && c->message_done) {
    size_t used = (size_t)(llhttp_get_error_pos(&c->parser) - data);
    llhttp_resume(&c->parser);
    dispatch(c);
    return used;
  }
  c->close_after = 1;
  if (c->too_large)
    conn_respond_error(c, 431, "Request Header Fields Too Large");
  else
    conn_respond_error(c, 400, "Bad Request");
  return len;
}

static int conn_busy(const conn_t *c) {
  return c->req != NULL || c->writing || c->closing || c->close_after;
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  /* One buffer for every connection: the read callback runs right after
   * this and keeps whatever it does not parse. */
  static char slab[64 * 1024];
  (void)h;
  (void)size;
  *buf = uv_buf_init(slab, sizeof(slab));
}

static void conn_read_start(conn_t *c);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (nread == 0)
    return;
  if (nread < 0) {
    /* EOF or an error.  A request in flight is abandoned: its fan-out is
     * cancelled in conn_close. */
    conn_close(c);
    return;
  }
  const char *data = buf->base;
  size_t len = (size_t)nread;
  /* While a request is being answered, input waits its turn. */
  if (conn_busy(c) || c->pending_len > 0) {
    if (c->close_after && !c->closing)
      return; /* nothing more will be read on this connection */
    if (keep_pending(c, data, len) < 0) {
      conn_close(c);
      return;
    }
    if (c->pending_len >= MAX_PENDING) {
      uv_read_stop(s);
      c->reading = 0;
    }
    if (!conn_busy(c))
      conn_continue(c);
    return;
  }
  size_t used = conn_parse(c, data, len);
  if (used < len && !c->closing && !c->close_after) {
    if (keep_pending(c, data + used, len - used) < 0)
      conn_close(c);
    else if (!conn_busy(c))
      conn_continue(c); /* answered at once (a 405): on to the next */
  }
}

static void conn_read_start(conn_t *c) {
  if (c->reading || c->closing)
    return;
  if (uv_read_start((uv_stream_t *)&c->handle, on_alloc, on_read) == 0)
    c->reading = 1;
  else
    conn_close(c);
}

/* The previous response is out: parse what came in meanwhile. */
static void conn_continue(conn_t *c) {
  while (!conn_busy(c) && c->pending_len > 0) {
    size_t used = conn_parse(c, c->pending, c->pending_len);
    if (c->closing)
      return;
    memmove(c->pending, c->pending + used, c->pending_len - used);
    c->pending_len -= used;
  }
  if (!conn_busy(c) && c->srv->signals > 0) {
    conn_close(c); /* idle at shutdown */
    return;
  }
  if (c->pending_len < MAX_PENDING)
    conn_read_start(c);
}

/* ---- connections -------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  server_t *srv = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  srv->nconns--;
  free(c->pending);
  free(c);
  maybe_finish(srv);
}

static void conn_close(conn_t *c) {
  if (c->closing)
    return;
  c->closing = 1;
  if (c->req != NULL) {
    /* The client is gone: stop the backend requests; the handler still
     * runs (with UV_ECANCELED) and frees the fan-out. */
    c->req->conn = NULL;
    uvp_promise_cancel(c->req->all);
    c->req = NULL;
  }
  uv_close((uv_handle_t *)&c->handle, on_conn_closed);
}

static void on_connection(uv_stream_t *server, int status) {
  server_t *srv = server->data;
  if (status < 0) {
    fprintf(stderr, "uvp-gateway: accept: %s\n", uv_strerror(status));
    return;
  }
  conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return; /* libuv retries on the next poll */
  uv_tcp_init(&srv->loop, &c->handle);
  c->handle.data = c;
  c->srv = srv;
  c->next = srv->conns;
  if (srv->conns)
    srv->conns->prev = c;
  srv->conns = c;
  srv->nconns++;
  if (uv_accept(server, (uv_stream_t *)&c->handle) < 0) {
    conn_close(c);
    return;
  }
  srv->accepted++;
  uv_tcp_nodelay(&c->handle, 1);
  llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
  c->parser.data = c;
  conn_read_start(c);
}

/* ---- start and stop ----------------------------------------------------- */

static void maybe_finish(server_t *srv) {
  if (srv->signals == 0 || srv->ctx_closed || srv->nconns || srv->nreqs)
    return;
  /* Nothing of ours is waiting for a handler: uvp can go, and with it
   * the idle backend connections. */
  srv->ctx_closed = 1;
  httpc_pool_close(srv->opts.pool);
  uvp_ctx_close(srv->ctx);
  uv_close((uv_handle_t *)&srv->sigint, NULL);
  uv_close((uv_handle_t *)&srv->sigterm, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  server_t *srv = s->data;
  (void)signum;
  if (srv->ctx_closed)
    return;
  if (srv->signals++ == 0) {
    uv_close((uv_handle_t *)&srv->listener, NULL);
    for (conn_t *c = srv->conns, *next; c != NULL; c = next) {
      next = c->next;
      if (!conn_busy(c))
        conn_close(c);
      else
        c->close_after = 1;
    }
  } else {
    /* Second signal: do not wait for backends any longer. */
    for (conn_t *c = srv->conns, *next; c != NULL; c = next) {
      next = c->next;
      conn_close(c);
    }
  }
  maybe_finish(srv);
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

  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", (int)port, &addr);
  uv_tcp_init(&srv.loop, &srv.listener);
  srv.listener.data = &srv;
  err = uv_tcp_bind(&srv.listener, (const struct sockaddr *)&addr, 0);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&srv.listener, SOMAXCONN, on_connection);
  if (err < 0) {
    fprintf(stderr, "uvp-gateway: listen on 127.0.0.1:%llu: %s\n", port,
            uv_strerror(err));
    uv_close((uv_handle_t *)&srv.listener, NULL);
    httpc_pool_close(srv.opts.pool);
    uvp_ctx_close(srv.ctx);
    uv_run(&srv.loop, UV_RUN_DEFAULT);
    uv_loop_close(&srv.loop);
    return 1;
  }
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&bound, &blen);
  printf("listening on 127.0.0.1:%d\n",
         ntohs(((struct sockaddr_in *)&bound)->sin_port));
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
  fprintf(stderr, "uvp-gateway: %llu connections, %llu responses\n",
          srv.accepted, srv.served);
  for (size_t i = 0; i < srv.nbackends; i++) {
    free(srv.backends[i].url);
    httpc_target_free(srv.backends[i].target);
  }
  free(srv.backends);
  summary_free(&srv.summary);
  return err < 0 ? 1 : 0;
}
