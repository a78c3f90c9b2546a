/* httpc: GET over uvp's TCP wrappers, one step per promise.
 *
 *   connect_host ──► write(request) ──► read ──► read ──► ... ──► response
 *   (or an idle connection from the pool)
 *
 * Each step is a uvp_tcp_* promise with one handler that starts the next
 * step, so exactly one operation is in flight at any time and the request
 * is finished (connection closed or returned to the pool, memory freed) by
 * whichever handler sees that nothing more is to be done.  The promise
 * handed to the caller is our own `p`, settled by those handlers;
 * cancelling it (directly, through uvp_timeout, or as a loser of a
 * combinator) closes the connection, which makes the operation in flight
 * reject, and its handler cleans up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>
#include <uriparser/Uri.h>

#include "httpc.h"

struct httpc_target_s {
  size_t refs; /* the creator's and one per request using it */
  httpc_url_t url;
  /* The request, with "Connection: keep-alive" (pooled) or "close". */
  char *keep_alive, *close;
  size_t keep_alive_len, close_len;
};

typedef struct req_s {
  uvp_ctx_t *ctx;
  uvp_promise_t *p;  /* the request's promise; one reference is ours */
  uvp_promise_t *op; /* the TCP operation in flight; our reference */
  uvp_tcp_t *tcp;
  httpc_pool_t *pool; /* NULL: the connection is closed after the response */
  httpc_target_t *target; /* what to connect to and send; a reference */
  llhttp_t parser;
  httpc_response_t *res;
  size_t keep;
  uint64_t start_ns;
  size_t received; /* response bytes read on this connection */
  int reused;      /* the connection came from the pool */
  int complete;    /* llhttp saw the end of the message */
  int keep_alive;  /* ... and the server lets the connection be reused */
  int extra;       /* bytes arrived after the message */
  /* What holds the request: the handler registered for the step in flight
   * and the cancel hook on p, each through its destroy notifier (req_unref),
   * so the memory goes when neither can run any more, whether they ran or
   * the context was torn down first. */
  int refs;
  int finished; /* req_free has released what the request used */
} req_t;

/* ---- the pool ------------------------------------------------------------ */

/* The idle connections to one host:port, a stack: the most recently used
 * is on top and taken first, so that under light load the same few stay
 * warm and the others are left alone. */
typedef struct pool_host_s {
  struct pool_host_s *next;
  char *host;
  int port;
  uvp_tcp_t **idle;
  size_t nidle, cap;
} pool_host_t;

struct httpc_pool_s {
  uvp_ctx_t *ctx;
  size_t max_idle; /* per host:port */
  size_t users;    /* requests not finished yet */
  int closed;
  pool_host_t *hosts;
};

int httpc_pool_new(uvp_ctx_t *ctx, size_t max_idle_per_host,
                   httpc_pool_t **out) {
  if (ctx == NULL || out == NULL || max_idle_per_host == 0)
    return UV_EINVAL;
  httpc_pool_t *pool = calloc(1, sizeof(*pool));
  if (pool == NULL)
    return UV_ENOMEM;
  pool->ctx = ctx;
  pool->max_idle = max_idle_per_host;
  *out = pool;
  return 0;
}

static pool_host_t *pool_find(httpc_pool_t *pool, const char *host,
                              int port) {
  for (pool_host_t *h = pool->hosts; h != NULL; h = h->next)
    if (h->port == port && strcmp(h->host, host) == 0)
      return h;
  return NULL;
}

/* An idle connection to host:port, or NULL. */
static uvp_tcp_t *pool_take(httpc_pool_t *pool, const char *host, int port) {
  pool_host_t *h = pool_find(pool, host, port);
  if (h == NULL || h->nidle == 0)
    return NULL;
  return h->idle[--h->nidle];
}

/* Keep `tcp` as an idle connection to host:port.  Returns 0 if the pool
 * took it, else non-zero: the caller still owns it (and closes it).  With
 * no operation pending, uvp's connection neither reads nor keeps the loop
 * alive: an idle one costs a socket and nothing else. */
static int pool_put(httpc_pool_t *pool, const char *host, int port,
                    uvp_tcp_t *tcp) {
  if (pool->closed)
    return -1;
  pool_host_t *h = pool_find(pool, host, port);
  if (h == NULL) {
    h = calloc(1, sizeof(*h));
    if (h == NULL || (h->host = strdup(host)) == NULL) {
      free(h);
      return -1;
    }
    h->port = port;
    h->next = pool->hosts;
    pool->hosts = h;
  }
  if (h->nidle == pool->max_idle)
    return -1;
  if (h->nidle == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 8;
    if (cap > pool->max_idle)
      cap = pool->max_idle;
    uvp_tcp_t **idle = realloc(h->idle, cap * sizeof(*idle));
    if (idle == NULL)
      return -1;
    h->idle = idle;
    h->cap = cap;
  }
  h->idle[h->nidle++] = tcp;
  return 0;
}

static void pool_free_if_done(httpc_pool_t *pool) {
  if (pool->closed && pool->users == 0)
    free(pool);
}

void httpc_pool_close(httpc_pool_t *pool) {
  if (pool == NULL || pool->closed)
    return;
  pool->closed = 1;
  for (pool_host_t *h = pool->hosts, *next; h != NULL; h = next) {
    next = h->next;
    for (size_t i = 0; i < h->nidle; i++)
      uvp_tcp_close(h->idle[i]);
    free(h->idle);
    free(h->host);
    free(h);
  }
  pool->hosts = NULL;
  pool_free_if_done(pool);
}

/* ---- the response -------------------------------------------------------- */

static void response_free(void *ptr) {
  httpc_response_t *res = ptr;
  if (res == NULL)
    return;
  free(res->body);
  free(res);
}

static int on_body(llhttp_t *parser, const char *at, size_t len) {
  req_t *r = parser->data;
  httpc_response_t *res = r->res;
  res->bytes += len;
  if (res->body_len < r->keep) {
    size_t n = r->keep - res->body_len;
    if (n > len)
      n = len;
    memcpy(res->body + res->body_len, at, n);
    res->body_len += n;
    res->body[res->body_len] = '\0';
  }
  return 0;
}

static int on_message_complete(llhttp_t *parser) {
  req_t *r = parser->data;
  r->complete = 1;
  r->keep_alive = llhttp_should_keep_alive(parser);
  r->res->status = (int)parser->status_code;
  r->res->latency_us = (uv_hrtime() - r->start_ns) / 1000;
  /* One message per request: whatever follows is not ours to parse. */
  return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- lifetime ------------------------------------------------------------ */

static void req_free(req_t *r);

static void req_unref(void *arg) {
  req_t *r = arg;
  if (--r->refs != 0)
    return;
  if (!r->finished)
    req_free(r); /* dropped with the context before it could finish */
  free(r);
}

/* Let go of what the request uses: it is over (its memory goes with the
 * last reference). */
static void req_free(req_t *r) {
  if (r->finished)
    return;
  r->finished = 1;
  if (r->tcp != NULL)
    uvp_tcp_close(r->tcp);
  if (r->pool != NULL) {
    r->pool->users--;
    pool_free_if_done(r->pool);
  }
  uvp_promise_release(r->op);
  r->op = NULL;
  uvp_promise_release(r->p);
  response_free(r->res);
  r->res = NULL;
  httpc_target_free(r->target);
}

/* Settle the caller's promise unless it was settled already (cancelled,
 * timed out), then drop everything: nothing is in flight any more. */
static void req_finish(req_t *r, int status) {
  if (uvp_promise_state(r->p) == UVP_PENDING) {
    if (status < 0) {
      uvp_promise_reject(r->p, status, NULL, NULL);
    } else {
      uvp_promise_resolve(r->p, r->res, response_free);
      r->res = NULL; /* the promise owns it now */
    }
  }
  req_free(r);
}

static void req_cancelled(uvp_promise_t *p, void *arg) {
  req_t *r = arg;
  int why = uvp_promise_reason(p, NULL);
  /* Closing the connection makes the operation in flight reject with
   * UV_ECANCELED; its handler finishes the request.  A connection in an
   * unknown state is never returned to the pool. */
  uvp_tcp_close(r->tcp);
  r->tcp = NULL;
  /* At context teardown no handler runs any more: finish here. */
  if (why == UVP_ECLOSED)
    req_free(r); /* the memory goes with the notifiers */
}

/* ---- the steps ----------------------------------------------------------- */

static uvp_ret_t on_connected(void *arg, const uvp_outcome_t *in);
static uvp_ret_t on_read(void *arg, const uvp_outcome_t *in);

/* Chain the next step: `op` (a fresh TCP promise, or rc < 0 if it could not
 * start) gets `next` as its only handler. */
static void req_next(req_t *r, int rc, uvp_promise_t *op, uvp_then_cb next) {
  if (rc == 0) {
    r->op = op;
    rc = uvp_promise_on_full(op, UVP_ON_BOTH, next, r, req_unref, NULL);
    if (rc == 0) {
      r->refs++;
      return;
    }
    uvp_promise_release(op);
    r->op = NULL;
  }
  req_finish(r, rc);
}

static void req_connect(req_t *r) {
  uvp_promise_t *op = NULL;
  const httpc_url_t *u = &r->target->url;
  int rc = uvp_tcp_connect_host(r->tcp, u->host, u->port, &op);
  req_next(r, rc, op, on_connected);
}

/* A connection taken from the pool that fails before the first byte of
 * the response was, in all likelihood, closed by the server while it sat
 * idle (a keep-alive timeout, a restart) and the request never reached
 * it.  A GET is idempotent, so sending it again is safe: once, on a new
 * connection, which cannot have that problem. */
static int req_should_retry(const req_t *r, int status) {
  return r->reused && r->received == 0 &&
         (status == UV_EOF || status == UV_ECONNRESET || status == UV_EPIPE);
}

/* Common head of every step: the previous operation is over.  Returns
 * non-zero if the request goes on. */
static int req_step(req_t *r, const uvp_outcome_t *in) {
  /* The handler call holds its own reference: in->value stays valid. */
  uvp_promise_release(r->op);
  r->op = NULL;
  if (uvp_promise_state(r->p) != UVP_PENDING) {
    req_free(r); /* cancelled or timed out meanwhile */
    return 0;
  }
  if (req_should_retry(r, in->status)) {
    uvp_tcp_close(r->tcp);
    r->tcp = NULL;
    r->reused = 0;
    int rc = uvp_tcp_new(r->ctx, &r->tcp);
    if (rc == 0)
      req_connect(r);
    else
      req_finish(r, rc);
    return 0;
  }
  if (in->status < 0 && in->status != UV_EOF) {
    req_finish(r, in->status);
    return 0;
  }
  return 1;
}

/* The response is complete: settle, and give the connection back to the
 * pool if it is fit for another request. */
static void req_done(req_t *r) {
  if (r->pool != NULL && r->keep_alive && !r->extra &&
      pool_put(r->pool, r->target->url.host, r->target->url.port,
               r->tcp) == 0)
    r->tcp = NULL; /* the pool's now */
  req_finish(r, 0);
}

static void read_more(req_t *r) {
  uvp_promise_t *op = NULL;
  int rc = uvp_tcp_read(r->tcp, &op);
  req_next(r, rc, op, on_read);
}

static uvp_ret_t on_read(void *arg, const uvp_outcome_t *in) {
  req_t *r = arg;
  uvp_ret_t none = {0};
  if (!req_step(r, in))
    return none;
  if (in->status == UV_EOF) {
    /* The server closed: a close-delimited body ends here, any other
     * message is cut short. */
    llhttp_errno_t e = llhttp_finish(&r->parser);
    req_finish(r, e == HPE_OK && r->complete ? 0 : UV_EPROTO);
    return none;
  }
  const uvp_buf_t *b = in->value;
  r->received += b->len;
  llhttp_errno_t e = llhttp_execute(&r->parser, b->base, b->len);
  if (r->complete) {
    /* Paused at the end of the message: anything after it is a protocol
     * error of the server's, and the connection is no use for the next
     * request. */
    r->extra = llhttp_get_error_pos(&r->parser) != b->base + b->len;
    req_done(r);
  } else if (e != HPE_OK) {
    req_finish(r, UV_EPROTO);
  } else {
    read_more(r);
  }
  return none;
}

static uvp_ret_t on_written(void *arg, const uvp_outcome_t *in) {
  req_t *r = arg;
  uvp_ret_t none = {0};
  if (req_step(r, in))
    read_more(r);
  return none;
}

static void send_request(req_t *r) {
  uvp_promise_t *op = NULL;
  const httpc_target_t *t = r->target;
  int rc = r->pool != NULL
               ? uvp_tcp_write(r->tcp, t->keep_alive, t->keep_alive_len, &op)
               : uvp_tcp_write(r->tcp, t->close, t->close_len, &op);
  req_next(r, rc, op, on_written);
}

static uvp_ret_t on_connected(void *arg, const uvp_outcome_t *in) {
  req_t *r = arg;
  uvp_ret_t none = {0};
  if (req_step(r, in))
    send_request(r);
  return none;
}

/* ---- URLs ---------------------------------------------------------------- */

/* uriparser checks the syntax (RFC 3986), which also keeps out of the
 * request line what it cannot carry (blanks, control characters, non-ASCII
 * bytes); what is left here is what an http:// client accepts of it. */
int httpc_url_parse(const char *url, httpc_url_t *out, const char **why) {
  *why = NULL;
  UriUriA u;
  const char *error_pos;
  if (uriParseSingleUriA(&u, url, &error_pos) != URI_SUCCESS) {
    *why = "malformed URL";
    return UV_EINVAL;
  }
  const UriTextRangeA *sch = &u.scheme;
  size_t slen = sch->first != NULL ? (size_t)(sch->afterLast - sch->first) : 0;
  int bracketed = u.hostData.ip6 != NULL; /* hostText leaves out [ ] */
  int rc = UV_EINVAL;
  if (slen == 5 && strncasecmp(sch->first, "https", 5) == 0) {
    rc = UV_EPROTONOSUPPORT;
    *why = httpc_strerror(rc);
  } else if (slen != 4 || strncasecmp(sch->first, "http", 4) != 0) {
    *why = "not an http:// URL";
  } else if (u.hostText.first == NULL ||
             u.hostText.first == u.hostText.afterLast) {
    *why = "no host in the URL";
  } else if (u.userInfo.first != NULL) {
    *why = "user information (user@host) in URLs is not supported";
  } else if (u.hostData.ipFuture.first != NULL) {
    *why = "unknown kind of IP literal";
  } else {
    rc = 0;
  }
  int port = 80;
  if (rc == 0 && u.portText.first != NULL) {
    /* The grammar lets only digits through. */
    port = 0;
    for (const char *d = u.portText.first;
         d < u.portText.afterLast && port <= 65535; d++)
      port = port * 10 + (*d - '0');
    if (port < 1 || port > 65535) {
      rc = UV_EINVAL;
      *why = u.portText.first == u.portText.afterLast
                 ? "empty port"
                 : "port out of range (1 to 65535)";
    }
  }
  if (rc != 0) {
    uriFreeUriMembersA(&u);
    return rc;
  }

  /* The Host header is the authority as written; the request target is
   * what follows it up to the fragment, which is never sent. */
  const char *host = u.hostText.first;
  size_t host_len = (size_t)(u.hostText.afterLast - host);
  const char *auth = host - bracketed;
  const char *auth_end = u.portText.first != NULL ? u.portText.afterLast
                                                  : host + host_len + bracketed;
  size_t auth_len = (size_t)(auth_end - auth);
  size_t target_len = strcspn(auth_end, "#");
  int slash = *auth_end != '/'; /* "http://h?q" asks for "/?q" */
  uriFreeUriMembersA(&u);

  char *mem = malloc(host_len + 1 + auth_len + 1 + slash + target_len + 1);
  if (mem == NULL) {
    *why = "out of memory";
    return UV_ENOMEM;
  }
  out->host = mem;
  out->authority = mem + host_len + 1;
  out->target = out->authority + auth_len + 1;
  out->port = port;
  memcpy(out->host, host, host_len);
  out->host[host_len] = '\0';
  memcpy(out->authority, auth, auth_len);
  out->authority[auth_len] = '\0';
  out->target[0] = '/';
  memcpy(out->target + slash, auth_end, target_len);
  out->target[slash + target_len] = '\0';
  return 0;
}

void httpc_url_free(httpc_url_t *u) {
  if (u != NULL)
    free(u->host); /* one block for the three strings */
}

/* ---- targets ------------------------------------------------------------- */

int httpc_target_new(const char *url, httpc_target_t **out,
                     const char **why) {
  httpc_target_t *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    *why = "out of memory";
    return UV_ENOMEM;
  }
  int rc = httpc_url_parse(url, &t->url, why);
  if (rc != 0) {
    free(t);
    return rc;
  }
  static const char fmt[] = "GET %s HTTP/1.1\r\n"
                            "Host: %s\r\n"
                            "User-Agent: uvp-httpc/" UVP_VERSION_STRING "\r\n"
                            "Accept: */*\r\n"
                            "Connection: %s\r\n"
                            "\r\n";
  int klen = asprintf(&t->keep_alive, fmt, t->url.target, t->url.authority,
                      "keep-alive");
  int clen = asprintf(&t->close, fmt, t->url.target, t->url.authority,
                      "close");
  t->refs = 1;
  if (klen < 0 || clen < 0) {
    t->keep_alive = klen < 0 ? NULL : t->keep_alive;
    t->close = clen < 0 ? NULL : t->close;
    httpc_target_free(t);
    *why = "out of memory";
    return UV_ENOMEM;
  }
  t->keep_alive_len = (size_t)klen;
  t->close_len = (size_t)clen;
  *out = t;
  return 0;
}

void httpc_target_free(httpc_target_t *t) {
  if (t == NULL || --t->refs > 0)
    return;
  httpc_url_free(&t->url);
  free(t->keep_alive);
  free(t->close);
  free(t);
}

/* ---- entry points -------------------------------------------------------- */

int httpc_get(uvp_ctx_t *ctx, const char *url, const httpc_opts_t *opts,
              uvp_promise_t **out) {
  if (ctx == NULL || url == NULL || out == NULL)
    return UV_EINVAL;
  httpc_target_t *t;
  const char *why;
  int rc = httpc_target_new(url, &t, &why);
  if (rc == UV_ENOMEM)
    return rc;
  if (rc != 0) /* a bad URL is that request's outcome, like a refusal */
    return uvp_promise_rejected(ctx, rc, (void *)why, NULL, out);
  rc = httpc_get_target(ctx, t, opts, out);
  httpc_target_free(t); /* the request holds its own reference */
  return rc;
}

int httpc_get_target(uvp_ctx_t *ctx, httpc_target_t *t,
                     const httpc_opts_t *opts, uvp_promise_t **out) {
  if (ctx == NULL || t == NULL || out == NULL)
    return UV_EINVAL;
  httpc_opts_t o = {0, 0, NULL};
  if (opts != NULL)
    o = *opts;
  if (o.pool != NULL && o.pool->ctx != ctx)
    return UV_EINVAL;

  req_t *r = calloc(1, sizeof(*r));
  httpc_response_t *res = calloc(1, sizeof(*res));
  char *body = malloc(o.keep + 1);
  if (r == NULL || res == NULL || body == NULL) {
    free(r);
    free(res);
    free(body);
    return UV_ENOMEM;
  }
  body[0] = '\0';
  res->body = body;
  r->refs = 1; /* this call's, until it returns */
  r->ctx = ctx;
  r->res = res;
  r->target = t;
  t->refs++;
  r->keep = o.keep;
  r->start_ns = uv_hrtime();
  llhttp_init(&r->parser, HTTP_RESPONSE, &parser_settings);
  r->parser.data = r;

  if (o.pool != NULL) {
    r->pool = o.pool;
    r->pool->users++;
    r->tcp = pool_take(r->pool, t->url.host, t->url.port);
    r->reused = r->tcp != NULL;
  }

  int rc = uvp_promise_new(ctx, &r->p);
  if (rc == 0)
    rc = uvp_promise_set_cancel_full(r->p, req_cancelled, r, req_unref);
  if (rc == 0) {
    r->refs++;
    if (r->tcp == NULL)
      rc = uvp_tcp_new(ctx, &r->tcp);
  }
  if (rc != 0) {
    req_free(r);
    req_unref(r);
    return rc;
  }

  uvp_promise_t *result;
  if (o.timeout_ms != 0) {
    /* When it fires, the timeout cancels r->p, which is ours alone (a
     * cancellation is not reported as unhandled). */
    rc = uvp_timeout(r->p, o.timeout_ms, UVP_CANCEL_INPUT, &result);
    if (rc != 0) {
      req_free(r);
      req_unref(r);
      return rc;
    }
  } else {
    result = uvp_promise_retain(r->p);
  }

  if (r->reused)
    send_request(r);
  else
    req_connect(r);
  req_unref(r); /* the step in flight holds it now */
  *out = result;
  return 0;
}

const char *httpc_strerror(int code) {
  switch (code) {
  case UV_EPROTO:
    return "malformed or incomplete HTTP response";
  case UV_EPROTONOSUPPORT:
    return "https:// is not supported: only plain http:// URLs";
  case UV_EINVAL:
    return "not a valid http:// URL";
  default:
    return uvp_strerror(code);
  }
}
