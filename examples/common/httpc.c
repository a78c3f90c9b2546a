/* httpc: GET over uvp's TCP wrappers, one step per promise.
 *
 *   connect_host ──► [TLS handshake] ──► write(request) ──► read ──► ...
 *   (or an idle connection from the pool, its read already pending)
 *
 * A request (req_t) owns a connection (conn_t) while it uses it.  Every
 * read of a connection has the same handler, conn_on_read, which hands
 * the bytes to the request using it, or, while the connection is idle in
 * a pool, looks at what the server sent (an EOF, a TLS close_notify) and
 * drops the connection.  So a pooled connection always has its read
 * pending, and the first read of a reused connection's response is that
 * one.  Writes are not waited for: a failed write shows as the read's
 * error (the server closed or reset the connection).
 *
 * TLS is OpenSSL over two memory BIOs: bytes read from the socket go into
 * the read BIO, SSL_do_handshake / SSL_read / SSL_write run without any
 * I/O of their own, and what they leave in the write BIO is written with
 * uvp_tcp_write_full.  SSL_ERROR_WANT_READ means: wait for the next read.
 * OpenSSL (Debian's libssl-dev, 3.0) rather than GnuTLS, which could be
 * driven the same way through its push/pull callbacks: memory BIOs make
 * the session a pure byte transformer with no callback into our state,
 * the verifier's result is one code per failure (expired, unknown issuer,
 * host-name or IP mismatch) that maps straight onto the messages ETLS
 * carries, SSL_set1_host / X509_VERIFY_PARAM_set1_ip_asc do the name
 * checks, and it is the library curl and nginx use on Debian, the two
 * programs uvp-fanout is tested and measured against.
 *
 * Lifetimes: requests and connections are counted.  A request holds one
 * reference on itself until it is finished (req_finish: settled, its
 * connection given back or closed) and one per callback that may still
 * run with it as argument (connect, connect timeout, the cancel hook:
 * their destroy notifiers drop it, req_unref), so its memory goes when
 * none can run any more, whether they ran or the context was torn down
 * first; a connection holds one for its owner (a request or
 * the pool) and one per handler of its pending read (two for a read that
 * changed hands: see conn_take).  Cancelling the
 * caller's promise (directly, through uvp_timeout, or as a loser of a
 * combinator) finishes the request in the cancel hook: its connection is
 * closed, which makes the operation in flight reject, and that handler
 * finds the request finished. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uriparser/Uri.h>

#include "httpc.h"

#define DEFAULT_MAX_HEADER (64 * 1024)
#define DEFAULT_MAX_IDLE_PER_HOST 16
#define DEFAULT_MAX_IDLE 1024
#define DEFAULT_IDLE_TIMEOUT_MS 30000
/* A Location longer than this is no URL a GET can follow. */
#define MAX_LOCATION (16 * 1024)

/* The formatted request, written from the target's memory: a write holds
 * a reference on the target until libuv is done with the bytes. */
typedef struct reqtext_s {
  httpc_target_t *target;
  size_t len;
  char bytes[];
} reqtext_t;

struct httpc_target_s {
  size_t refs; /* the creator's, one per request and one per write */
  httpc_url_t url;
  char *href; /* the URL as given: the base of a relative Location */
  /* The request, with "Connection: keep-alive" (pooled) or "close". */
  reqtext_t *keep_alive, *close;
  char *span_name; /* "GET host:port/path", made by the first traced one */
};

struct httpc_tls_s {
  size_t refs;
  SSL_CTX *ctx;
  int insecure;
};

typedef struct req_s req_t;
typedef struct pool_host_s pool_host_t;

typedef struct conn_s conn_t;
struct conn_s {
  size_t refs;
  uvp_tcp_t *tcp; /* NULL once closed */
  SSL *ssl;       /* https: the session (it owns the two BIOs) */
  BIO *rbio, *wbio;
  httpc_tls_t *tls; /* https: a reference, and part of the pool's key */
  int handshaken;
  uvp_promise_t *read; /* the read in flight; our reference */
  int stale;           /* handlers of that read that stand aside (see
                          conn_take) */
  req_t *req;          /* the request using it; NULL while idle */
  /* While idle in a pool: */
  httpc_pool_t *pool;
  pool_host_t *host;
  conn_t *hprev, *hnext; /* the host's idle ones, least recently used first */
  conn_t *lprev, *lnext; /* the pool's, likewise */
  uint64_t idle_since;   /* on the loop's clock, ms */
};

struct req_s {
  size_t refs;
  int done;
  uvp_ctx_t *ctx;
  uvp_promise_t *p;     /* the request's promise; our reference */
  uvp_promise_t *op;    /* the connect in flight; our reference */
  uvp_promise_t *timer; /* the connect timeout, while connecting */
  conn_t *conn;
  httpc_pool_t *pool;     /* NULL: the connection is closed after use */
  httpc_target_t *target; /* this hop's; a reference */
  httpc_tls_t *tls;       /* for https hops; a reference, or NULL */
  httpc_opts_t o;
  llhttp_t parser;
  httpc_response_t *res;
  uint64_t start_ns;
  size_t received;     /* response bytes (decrypted) on this connection */
  size_t header_bytes; /* status line and fields so far */
  int fail;            /* why a parser callback stopped it */
  int reused;          /* the connection came from the pool */
  int complete;        /* llhttp saw the end of the message */
  int keep_alive;      /* ... and the server lets the connection be reused */
  int extra;           /* bytes arrived after the message */
  unsigned redirects;
  /* The Location header, when following redirects. */
  char field[9];
  size_t field_len; /* of the header name, up to sizeof(field) */
  int in_location;
  char *location;
  size_t location_len;
  /* Made under a trace context: its CLIENT span (ended by req_finish),
   * and the lines every hop's request carries ("traceparent: ...\r\n",
   * maybe "tracestate: ...\r\n"); NULL: none. */
  char *trace;
  uvp_span_t span;
};

/* ---- small things -------------------------------------------------------- */

static uvp_ret_t ignore_rejection(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_value(NULL, NULL);
}

/* A write nobody waits for: its failure shows as the read's. */
static void write_unwatched(uvp_promise_t *wp) {
  uvp_promise_on(wp, UVP_ON_REJECTED | UVP_ON_TAKE, ignore_rejection, NULL,
                 NULL);
}

static char *fmt_reason(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0)
    s = NULL;
  va_end(ap);
  return s;
}

static int is_ip_literal(const char *host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host, buf) == 1 ||
         inet_pton(AF_INET6, host, buf) == 1;
}

/* ---- TLS configurations -------------------------------------------------- */

int httpc_tls_new(const httpc_tls_opts_t *o, httpc_tls_t **out,
                  const char **why) {
  const char *ignored;
  if (why == NULL)
    why = &ignored;
  *why = NULL;
  if (out == NULL)
    return UV_EINVAL;
  httpc_tls_opts_t d = {NULL, 0};
  if (o != NULL)
    d = *o;
  httpc_tls_t *t = calloc(1, sizeof(*t));
  if (t == NULL || (t->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
    free(t);
    *why = "out of memory";
    return UV_ENOMEM;
  }
  t->refs = 1;
  t->insecure = d.insecure;
  SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(t->ctx, d.insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
                     NULL);
  /* As curl does, a CA file replaces the system's store. */
  int ok = d.cafile != NULL
               ? SSL_CTX_load_verify_locations(t->ctx, d.cafile, NULL)
               : SSL_CTX_set_default_verify_paths(t->ctx);
  ERR_clear_error();
  if (ok != 1) {
    httpc_tls_free(t);
    *why = d.cafile != NULL ? "no CA certificate could be read from the file"
                            : "the system's CA store could not be loaded";
    return HTTPC_ETLS;
  }
  *out = t;
  return 0;
}

void httpc_tls_free(httpc_tls_t *t) {
  if (t == NULL || --t->refs > 0)
    return;
  SSL_CTX_free(t->ctx);
  free(t);
}

/* The configuration of https:// requests given none: made at first use,
 * freed at exit. */
static httpc_tls_t *default_tls;

static void default_tls_free(void) {
  httpc_tls_free(default_tls);
  default_tls = NULL;
}

static int tls_default(httpc_tls_t **out) {
  if (default_tls == NULL) {
    int rc = httpc_tls_new(NULL, &default_tls, NULL);
    if (rc != 0)
      return rc;
    atexit(default_tls_free);
  }
  default_tls->refs++;
  *out = default_tls;
  return 0;
}

/* Why the handshake failed, in words: the certificate check's verdict if
 * it failed, else OpenSSL's reason. */
static char *tls_reason(const conn_t *c, const char *host) {
  long v = SSL_get_verify_result(c->ssl);
  switch (v) {
  case X509_V_OK:
    break;
  case X509_V_ERR_CERT_HAS_EXPIRED:
    return fmt_reason("certificate has expired");
  case X509_V_ERR_CERT_NOT_YET_VALID:
    return fmt_reason("certificate is not yet valid");
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
  case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
  case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
  case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    return fmt_reason("certificate signed by an unknown CA (%s)",
                      X509_verify_cert_error_string(v));
  case X509_V_ERR_HOSTNAME_MISMATCH:
  case X509_V_ERR_IP_ADDRESS_MISMATCH:
    return fmt_reason("certificate is not valid for host %s (host-name "
                      "mismatch)",
                      host);
  default:
    return fmt_reason("certificate rejected: %s",
                      X509_verify_cert_error_string(v));
  }
  unsigned long e = ERR_peek_last_error();
  const char *what = e != 0 ? ERR_reason_error_string(e) : NULL;
  return what != NULL ? fmt_reason("handshake failed: %s", what)
                      : fmt_reason("handshake failed");
}

/* ---- connections --------------------------------------------------------- */

static void conn_unref(void *arg) {
  conn_t *c = arg;
  if (--c->refs > 0)
    return;
  uvp_promise_release(c->read);
  SSL_free(c->ssl);
  httpc_tls_free(c->tls);
  free(c);
}

static void pool_unlink(conn_t *c);

/* Close and drop the owner's reference: the pending read, if any, rejects
 * and its handler drops the other. */
static void conn_close(conn_t *c) {
  if (c->pool != NULL)
    pool_unlink(c);
  c->req = NULL;
  if (c->tcp != NULL)
    uvp_tcp_close(c->tcp);
  c->tcp = NULL;
  conn_unref(c);
}

/* A new connection for `r` (not connected yet). */
static int conn_new(req_t *r, conn_t **out) {
  conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return UV_ENOMEM;
  c->refs = 1;
  int rc = uvp_tcp_new(r->ctx, &c->tcp);
  if (rc != 0) {
    free(c);
    return rc;
  }
  if (r->target->url.tls) {
    const char *host = r->target->url.host;
    c->tls = r->tls;
    c->tls->refs++;
    c->ssl = SSL_new(r->tls->ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
      BIO_free(c->rbio);
      BIO_free(c->wbio);
      conn_close(c);
      return UV_ENOMEM;
    }
    /* An empty read BIO means "more to come", not end of stream. */
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    /* SNI names a host, never an address (RFC 6066); the certificate
     * must be valid for whichever the URL has. */
    int ok = 1;
    if (!is_ip_literal(host))
      ok = SSL_set_tlsext_host_name(c->ssl, host) == 1 &&
           (c->tls->insecure || SSL_set1_host(c->ssl, host) == 1);
    else if (!c->tls->insecure)
      ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) == 1;
    if (!ok) {
      conn_close(c);
      return UV_ENOMEM;
    }
  }
  c->req = r;
  *out = c;
  return 0;
}

static uvp_ret_t conn_on_read(void *arg, const uvp_outcome_t *in);

/* Have a read pending (one at most). */
static int conn_read(conn_t *c) {
  if (c->read != NULL)
    return 0;
  if (c->tcp == NULL)
    return UV_EBADF;
  uvp_promise_t *p;
  int rc = uvp_tcp_read(c->tcp, &p);
  if (rc != 0)
    return rc;
  c->refs++; /* conn_unref's, which a refusal runs at once */
  rc = uvp_promise_on_full(p, UVP_ON_BOTH, conn_on_read, c, conn_unref, NULL);
  if (rc != 0) {
    uvp_promise_release(p);
    return rc;
  }
  c->read = p;
  return 0;
}

/* Write what OpenSSL has produced. */
static int conn_flush(conn_t *c) {
  size_t n = BIO_ctrl_pending(c->wbio);
  if (n == 0 || c->tcp == NULL)
    return 0;
  char *buf = malloc(n);
  if (buf == NULL)
    return UV_ENOMEM;
  int got = BIO_read(c->wbio, buf, (int)n);
  uvp_promise_t *wp;
  int rc = got > 0 ? uvp_tcp_write_full(c->tcp, buf, (size_t)got, free, &wp)
                   : UV_EIO;
  if (rc != 0) {
    free(buf);
    return rc;
  }
  write_unwatched(wp);
  return 0;
}

/* An idle TLS connection may have records waiting in its read BIO (a
 * session ticket, a close_notify): non-zero if none of them ends it. */
static int tls_idle_ok(conn_t *c) {
  if (SSL_pending(c->ssl) > 0)
    return 0;
  char b;
  ERR_clear_error();
  int n = SSL_read(c->ssl, &b, 1);
  int ok = n <= 0 && SSL_get_error(c->ssl, n) == SSL_ERROR_WANT_READ;
  ERR_clear_error();
  return ok && conn_flush(c) == 0;
}

/* ---- the pool ------------------------------------------------------------ */

struct pool_host_s {
  pool_host_t *next;
  char *host;
  int port;
  const httpc_tls_t *tls; /* NULL for http:// */
  conn_t *head, *tail;    /* idle, least recently used first */
  size_t nidle;
};

struct httpc_pool_s {
  uvp_ctx_t *ctx;
  httpc_pool_opts_t o;
  size_t users; /* requests not finished, and the timer until closed */
  int closed;
  pool_host_t *hosts;
  conn_t *lru_head, *lru_tail; /* every idle one, least recently used first */
  size_t nidle;
  uv_timer_t timer; /* the next idle expiry */
  httpc_pool_stats_t stats;
};

static void pool_free_if_done(httpc_pool_t *pool) {
  if (pool->closed && pool->users == 0)
    free(pool);
}

static void on_timer_closed(uv_handle_t *h) {
  httpc_pool_t *pool = h->data;
  pool->users--;
  pool_free_if_done(pool);
}

int httpc_pool_new_with(uvp_ctx_t *ctx, const httpc_pool_opts_t *o,
                        httpc_pool_t **out) {
  if (ctx == NULL || out == NULL)
    return UV_EINVAL;
  httpc_pool_t *pool = calloc(1, sizeof(*pool));
  if (pool == NULL)
    return UV_ENOMEM;
  if (o != NULL)
    pool->o = *o;
  if (pool->o.max_idle_per_host == 0)
    pool->o.max_idle_per_host = DEFAULT_MAX_IDLE_PER_HOST;
  if (pool->o.max_idle == 0)
    pool->o.max_idle = DEFAULT_MAX_IDLE;
  if (pool->o.idle_timeout_ms == 0)
    pool->o.idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
  int rc = uv_timer_init(uvp_ctx_loop(ctx), &pool->timer);
  if (rc != 0) {
    free(pool);
    return rc;
  }
  /* The connections' pending reads keep the loop going; the timer, which
   * only ends them, need not. */
  uv_unref((uv_handle_t *)&pool->timer);
  pool->timer.data = pool;
  pool->users = 1;
  pool->ctx = ctx;
  *out = pool;
  return 0;
}

int httpc_pool_new(uvp_ctx_t *ctx, size_t max_idle_per_host,
                   httpc_pool_t **out) {
  if (max_idle_per_host == 0)
    return UV_EINVAL;
  httpc_pool_opts_t o = {
      .max_idle_per_host = max_idle_per_host,
      .max_idle = max_idle_per_host > DEFAULT_MAX_IDLE ? max_idle_per_host
                                                       : DEFAULT_MAX_IDLE,
  };
  return httpc_pool_new_with(ctx, &o, out);
}

void httpc_pool_stats(const httpc_pool_t *pool, httpc_pool_stats_t *out) {
  *out = pool->stats;
  out->idle = pool->nidle;
}

static pool_host_t *pool_find(httpc_pool_t *pool, const httpc_tls_t *tls,
                              const char *host, int port) {
  for (pool_host_t *h = pool->hosts; h != NULL; h = h->next)
    if (h->port == port && h->tls == tls && strcmp(h->host, host) == 0)
      return h;
  return NULL;
}

static void pool_unlink(conn_t *c) {
  httpc_pool_t *pool = c->pool;
  pool_host_t *h = c->host;
  *(c->hprev != NULL ? &c->hprev->hnext : &h->head) = c->hnext;
  *(c->hnext != NULL ? &c->hnext->hprev : &h->tail) = c->hprev;
  *(c->lprev != NULL ? &c->lprev->lnext : &pool->lru_head) = c->lnext;
  *(c->lnext != NULL ? &c->lnext->lprev : &pool->lru_tail) = c->lprev;
  h->nidle--;
  pool->nidle--;
  c->hprev = c->hnext = c->lprev = c->lnext = NULL;
  c->pool = NULL;
  c->host = NULL;
}

/* A pooled connection goes to the request that takes it, in that
 * request's scope (its task group, its context slots): the group's join
 * waits for it from now on (uvp_tcp_attach), and the response is handled
 * in that scope, so that what its handling starts (a retry's connection)
 * is that group's too.  The read pending since the connection went idle
 * has a handler registered in the scope of the request that gave it back:
 * a second one, registered here, takes over, and the first stands aside
 * (handlers run in the order they were registered).  That read was
 * started while the connection was the pool's, under no deadline (see
 * pool_put): from now on the taking request's deadline watches it. */
static void conn_take(conn_t *c) {
  (void)uvp_tcp_attach(c->tcp); /* fails only on a closed connection */
  if (c->read != NULL) {
    c->refs++; /* conn_unref's, which a refusal runs at once */
    if (uvp_promise_on_full(c->read, UVP_ON_BOTH, conn_on_read, c, conn_unref,
                            NULL) == 0)
      c->stale++;
  }
  if (c->read != NULL) /* no memory: the request's group still stops it */
    (void)uvp_deadline_watch(uvp_promise_ctx(c->read), c->read);
}

/* An idle connection for the target, or NULL: the most recently used, so
 * that under light load the same few stay warm and the others expire. */
static conn_t *pool_take(httpc_pool_t *pool, const httpc_tls_t *tls,
                         const httpc_url_t *u) {
  pool_host_t *h = pool_find(pool, tls, u->host, u->port);
  if (h == NULL || h->tail == NULL)
    return NULL;
  conn_t *c = h->tail;
  pool_unlink(c);
  pool->stats.reused++;
  conn_take(c);
  return c;
}

/* Close an idle connection (conn_close takes it out of the pool), counted
 * under *why (if not NULL). */
static void pool_drop(conn_t *c, uint64_t *why) {
  if (why != NULL)
    (*why)++;
  conn_close(c);
}

static void pool_sweep(uv_timer_t *timer) {
  httpc_pool_t *pool = timer->data;
  uint64_t now = uv_now(timer->loop), ttl = pool->o.idle_timeout_ms;
  conn_t *c, *next;
  for (c = pool->lru_head; c != NULL && c->idle_since + ttl <= now; c = next) {
    next = c->lnext;
    pool_drop(c, &pool->stats.expired);
  }
  if (c != NULL)
    uv_timer_start(&pool->timer, pool_sweep, c->idle_since + ttl - now, 0);
}

/* Keep `c`, just finished with, as an idle connection to `u`'s host:port.
 * Returns 0 if the pool took it, else non-zero: the caller still owns it
 * (and closes it). */
static int pool_put(httpc_pool_t *pool, conn_t *c, const httpc_url_t *u) {
  if (pool->closed || c->tcp == NULL || (c->ssl != NULL && !tls_idle_ok(c)))
    return -1;
  pool_host_t *h = pool_find(pool, c->tls, u->host, u->port);
  if (h == NULL) {
    h = calloc(1, sizeof(*h));
    if (h == NULL || (h->host = strdup(u->host)) == NULL) {
      free(h);
      return -1;
    }
    h->port = u->port;
    h->tls = c->tls;
    h->next = pool->hosts;
    pool->hosts = h;
  }
  /* The pool's from now on, not the task group's of the request that made
   * it (see conn_take).  Then watch for the server closing it: the read
   * that will also bring the next response.  Started on a detached
   * connection, that read is the pool's: the deadline of the request
   * running now does not watch it (it would close the connection when
   * that deadline passes, long before idle_timeout_ms). */
  if (uvp_tcp_detach(c->tcp) != 0 || conn_read(c) != 0)
    return -1;
  /* Over a cap, the least recently used goes: closest to the server's own
   * keep-alive timeout. */
  if (h->head != NULL && h->nidle >= pool->o.max_idle_per_host)
    pool_drop(h->head, &pool->stats.evicted);
  if (pool->lru_head != NULL && pool->nidle >= pool->o.max_idle)
    pool_drop(pool->lru_head, &pool->stats.evicted);
  c->pool = pool;
  c->host = h;
  c->hprev = h->tail;
  *(h->tail != NULL ? &h->tail->hnext : &h->head) = c;
  h->tail = c;
  h->nidle++;
  pool->nidle++;
  c->lprev = pool->lru_tail;
  *(pool->lru_tail != NULL ? &pool->lru_tail->lnext : &pool->lru_head) = c;
  pool->lru_tail = c;
  c->idle_since = uv_now(uvp_ctx_loop(pool->ctx));
  if (!uv_is_active((uv_handle_t *)&pool->timer))
    uv_timer_start(&pool->timer, pool_sweep, pool->o.idle_timeout_ms, 0);
  return 0;
}

/* What an idle connection's read brought: anything but a TLS record that
 * leaves the session open (a ticket) ends it. */
static void idle_input(conn_t *c, const uvp_outcome_t *in) {
  httpc_pool_t *pool = c->pool;
  if (pool == NULL)
    return; /* closed meanwhile: this is its read's cancellation */
  if (in->status == 0 && c->ssl != NULL) {
    const uvp_buf_t *b = in->value;
    if (BIO_write(c->rbio, b->base, (int)b->len) == (int)b->len &&
        tls_idle_ok(c) && conn_read(c) == 0)
      return;
  }
  pool_drop(c, &pool->stats.peer_closed);
}

void httpc_pool_close(httpc_pool_t *pool) {
  if (pool == NULL || pool->closed)
    return;
  pool->closed = 1;
  for (conn_t *c = pool->lru_head, *next; c != NULL; c = next) {
    next = c->lnext;
    pool_drop(c, NULL);
  }
  for (pool_host_t *h = pool->hosts, *next; h != NULL; h = next) {
    next = h->next;
    free(h->host);
    free(h);
  }
  pool->hosts = NULL;
  uv_close((uv_handle_t *)&pool->timer, on_timer_closed);
}

/* ---- the response -------------------------------------------------------- */

static void response_free(void *ptr) {
  httpc_response_t *res = ptr;
  if (res == NULL)
    return;
  free(res->body);
  free(res->url);
  free(res);
}

static int count_header(req_t *r, size_t len) {
  r->header_bytes += len;
  if (r->header_bytes <= r->o.max_header)
    return 0;
  r->fail = UV_EMSGSIZE;
  return -1;
}

static int on_status(llhttp_t *parser, const char *at, size_t len) {
  (void)at;
  return count_header(parser->data, len);
}

static int on_header_field(llhttp_t *parser, const char *at, size_t len) {
  req_t *r = parser->data;
  if (r->o.follow) {
    size_t n = sizeof(r->field) - r->field_len;
    if (n > len)
      n = len;
    memcpy(r->field + r->field_len, at, n);
    r->field_len += n;
  }
  return count_header(r, len);
}

static int on_header_field_complete(llhttp_t *parser) {
  req_t *r = parser->data;
  r->in_location =
      r->field_len == 8 && strncasecmp(r->field, "location", 8) == 0;
  if (r->in_location)
    r->location_len = 0; /* the last one counts */
  r->field_len = 0;
  return 0;
}

static int on_header_value(llhttp_t *parser, const char *at, size_t len) {
  req_t *r = parser->data;
  if (r->in_location) {
    if (r->location_len + len > MAX_LOCATION) {
      r->fail = UV_EMSGSIZE;
      return -1;
    }
    char *loc = realloc(r->location, r->location_len + len + 1);
    if (loc == NULL) {
      r->fail = UV_ENOMEM;
      return -1;
    }
    memcpy(loc + r->location_len, at, len);
    r->location = loc;
    r->location_len += len;
    loc[r->location_len] = '\0';
  }
  return count_header(r, len);
}

static int on_body(llhttp_t *parser, const char *at, size_t len) {
  req_t *r = parser->data;
  httpc_response_t *res = r->res;
  res->bytes += len;
  if (r->o.max_body != 0 && res->bytes > r->o.max_body) {
    r->fail = UV_EFBIG;
    return -1;
  }
  if (res->body_len < r->o.keep) {
    size_t n = r->o.keep - res->body_len;
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
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- lifetime ------------------------------------------------------------ */

static void req_unref(void *arg) {
  req_t *r = arg;
  if (--r->refs > 0)
    return;
  uvp_promise_release(r->p);
  response_free(r->res);
  free(r->location);
  free(r->trace);
  free(r);
}

/* Register `cb` on `p` with a reference on r for it. */
static int req_on(req_t *r, uvp_promise_t *p, int mask, uvp_then_cb cb) {
  int rc = uvp_promise_on_full(p, mask, cb, r, req_unref, NULL);
  if (rc == 0)
    r->refs++;
  return rc;
}

static void req_stop_timer(req_t *r) {
  if (r->timer != NULL) {
    uvp_promise_cancel(r->timer);
    uvp_promise_release(r->timer);
    r->timer = NULL;
  }
}

/* Let go of the connection: back to the pool if the response left it fit
 * for another request, else closed. */
static void req_release_conn(req_t *r, int reusable) {
  conn_t *c = r->conn;
  if (c == NULL)
    return;
  r->conn = NULL;
  c->req = NULL;
  if (!(reusable && r->pool != NULL && r->complete && r->keep_alive &&
        !r->extra && pool_put(r->pool, c, &r->target->url) == 0))
    conn_close(c);
}

/* Settle the caller's promise unless it was settled already (cancelled,
 * timed out), then drop everything of the request's but the memory that
 * handlers still to run hold.  `reason` (may be NULL) is a message that
 * becomes the rejection's payload, or is freed. */
static void req_finish(req_t *r, int status, char *reason) {
  if (r->done) {
    free(reason);
    return;
  }
  r->done = 1;
  if (r->trace != NULL)
    uvp_span_end(r->ctx, &r->span, status < 0 ? status : 0);
  req_stop_timer(r);
  req_release_conn(r, status == 0);
  if (uvp_promise_state(r->p) == UVP_PENDING) {
    if (status < 0) {
      uvp_promise_reject(r->p, status, reason, free);
      reason = NULL;
    } else {
      uvp_promise_resolve(r->p, r->res, response_free);
      r->res = NULL; /* the promise owns it now */
    }
  }
  free(reason);
  if (r->pool != NULL) {
    r->pool->users--;
    pool_free_if_done(r->pool);
    r->pool = NULL;
  }
  httpc_target_free(r->target);
  r->target = NULL;
  httpc_tls_free(r->tls);
  r->tls = NULL;
  req_unref(r);
}

static void req_cancelled(uvp_promise_t *p, void *arg) {
  (void)p;
  /* A connection in an unknown state is never returned to the pool; the
   * operation in flight rejects, and its handler finds r finished. */
  req_finish(arg, UV_ECANCELED, NULL);
}

/* ---- the steps ----------------------------------------------------------- */

static void req_start_hop(req_t *r);
static void text_free(void *bytes);

/* A traced request's text: the target's with its trace lines before the
 * blank line that ends it.  A copy of its own, freed by the write. */
static char *trace_text(const req_t *r, const reqtext_t *text, size_t *len) {
  size_t head = text->len - 2, n = strlen(r->trace);
  char *b = malloc(head + n + 2);
  if (b != NULL) {
    memcpy(b, text->bytes, head);
    memcpy(b + head, r->trace, n);
    memcpy(b + head + n, "\r\n", 2);
    *len = head + n + 2;
  }
  return b;
}

static void req_send(req_t *r) {
  conn_t *c = r->conn;
  const httpc_target_t *t = r->target;
  reqtext_t *text = r->pool != NULL ? t->keep_alive : t->close;
  int rc;
  if (r->trace != NULL) {
    size_t len = 0;
    char *b = trace_text(r, text, &len);
    uvp_promise_t *wp;
    if (b == NULL) {
      rc = UV_ENOMEM;
    } else if (c->ssl == NULL) {
      if ((rc = uvp_tcp_write_full(c->tcp, b, len, free, &wp)) == 0)
        write_unwatched(wp); /* (refused, b is freed) */
    } else {
      ERR_clear_error();
      rc = SSL_write(c->ssl, b, (int)len) == (int)len ? conn_flush(c)
                                                      : UV_ENOMEM;
      free(b);
    }
  } else if (c->ssl == NULL) {
    uvp_promise_t *wp;
    text->target->refs++; /* until text_free, maybe inside the call */
    rc = uvp_tcp_write_full(c->tcp, text->bytes, text->len, text_free, &wp);
    if (rc == 0)
      write_unwatched(wp);
  } else {
    ERR_clear_error();
    rc = SSL_write(c->ssl, text->bytes, (int)text->len) == (int)text->len
             ? conn_flush(c)
             : UV_ENOMEM; /* memory BIOs take everything but for that */
  }
  if (rc == 0)
    rc = conn_read(c);
  if (rc != 0)
    req_finish(r, rc, NULL);
}

/* Connected (and through the handshake): no more connect timeout. */
static void req_connected(req_t *r) {
  req_stop_timer(r);
  req_send(r);
}

static void tls_step(req_t *r, conn_t *c);

static uvp_ret_t on_connected(void *arg, const uvp_outcome_t *in) {
  req_t *r = arg;
  uvp_ret_t none = {0};
  uvp_promise_release(r->op);
  r->op = NULL;
  if (r->done)
    return none;
  if (in->status < 0)
    req_finish(r, in->status, NULL);
  else if (r->conn->ssl != NULL)
    tls_step(r, r->conn);
  else
    req_connected(r);
  return none;
}

static uvp_ret_t on_connect_timeout(void *arg, const uvp_outcome_t *in) {
  req_t *r = arg;
  (void)in;
  if (!r->done)
    req_finish(r, UV_ETIMEDOUT,
               fmt_reason("not connected within %llu ms (connect timeout)",
                          (unsigned long long)r->o.connect_timeout_ms));
  return uvp_ret_value(NULL, NULL);
}

static void req_connect(req_t *r) {
  int rc = conn_new(r, &r->conn);
  if (rc == 0 && r->pool != NULL)
    r->pool->stats.opened++;
  if (rc == 0 && r->o.connect_timeout_ms != 0) {
    rc = uvp_delay(r->ctx, r->o.connect_timeout_ms, NULL, NULL, 0, &r->timer);
    if (rc == 0)
      rc = req_on(r, r->timer, UVP_ON_FULFILLED, on_connect_timeout);
  }
  if (rc == 0) {
    const httpc_url_t *u = &r->target->url;
    rc = uvp_tcp_connect_host(r->conn->tcp, u->host, u->port, &r->op);
    if (rc == 0 && (rc = req_on(r, r->op, UVP_ON_BOTH, on_connected)) != 0) {
      uvp_promise_release(r->op);
      r->op = NULL;
    }
  }
  if (rc != 0)
    req_finish(r, rc, NULL);
}

/* A connection taken from the pool that fails before the first byte of
 * the response was, in all likelihood, closed by the server while it sat
 * idle, in the moment before its EOF reached us, and the request never
 * reached it.  A GET is idempotent, so sending it again is safe: once, on
 * a new connection, which cannot have that problem. */
static int req_should_retry(const req_t *r, int status) {
  return r->reused && r->received == 0 &&
         (status == UV_EOF || status == UV_ECONNRESET || status == UV_EPIPE);
}

static void req_reset_hop(req_t *r) {
  llhttp_init(&r->parser, HTTP_RESPONSE, &parser_settings);
  r->parser.data = r;
  r->received = r->header_bytes = 0;
  r->complete = r->keep_alive = r->extra = r->fail = 0;
  r->field_len = 0;
  r->in_location = 0;
  r->location_len = 0;
  r->res->status = 0;
  r->res->bytes = r->res->body_len = 0;
  r->res->body[0] = '\0';
}

/* Resolve `ref` (a Location) against `base`: a new absolute URL or NULL. */
static char *url_resolve(const char *base, const char *ref) {
  UriUriA b, rel, abs;
  const char *err;
  char *out = NULL;
  if (uriParseSingleUriA(&b, base, &err) != URI_SUCCESS)
    return NULL;
  if (uriParseSingleUriA(&rel, ref, &err) == URI_SUCCESS) {
    if (uriAddBaseUriA(&abs, &rel, &b) == URI_SUCCESS) {
      int chars = 0;
      if (uriToStringCharsRequiredA(&abs, &chars) == URI_SUCCESS &&
          (out = malloc((size_t)chars + 1)) != NULL &&
          uriToStringA(out, &abs, chars + 1, NULL) != URI_SUCCESS) {
        free(out);
        out = NULL;
      }
      uriFreeUriMembersA(&abs);
    }
    uriFreeUriMembersA(&rel);
  }
  uriFreeUriMembersA(&b);
  return out;
}

static int is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 ||
         status == 308;
}

/* Follow the response's Location: the next hop, on the pool's connection
 * to its host if there is one. */
static void req_redirect(req_t *r) {
  if (r->redirects >= r->o.max_redirects) {
    req_finish(r, UV_ELOOP,
               fmt_reason("more than %u redirects (--max-redirs)",
                          r->o.max_redirects));
    return;
  }
  char *next = url_resolve(r->target->href, r->location);
  httpc_target_t *t = NULL;
  const char *why = "malformed Location";
  int rc = next != NULL ? httpc_target_new(next, &t, &why) : UV_EINVAL;
  free(next);
  if (rc != 0) {
    req_finish(r, rc, fmt_reason("redirect to %.200s: %s", r->location, why));
    return;
  }
  req_release_conn(r, 1);
  httpc_target_free(r->target);
  r->target = t;
  r->redirects++;
  req_start_hop(r);
}

/* The response is complete. */
static void req_complete(req_t *r) {
  if (r->o.follow && is_redirect(r->res->status) && r->location != NULL &&
      r->location_len > 0) {
    req_redirect(r);
    return;
  }
  r->res->redirects = r->redirects;
  r->res->reused = r->reused;
  if (r->redirects > 0 && (r->res->url = strdup(r->target->href)) == NULL) {
    req_finish(r, UV_ENOMEM, NULL);
    return;
  }
  req_finish(r, 0, NULL);
}

/* Response bytes (decrypted).  Returns non-zero if more are wanted. */
static int req_feed(req_t *r, const char *data, size_t len) {
  r->received += len;
  llhttp_errno_t e = llhttp_execute(&r->parser, data, len);
  if (r->complete) {
    /* Paused at the end of the message: anything after it is a protocol
     * error of the server's, and the connection is no use for the next
     * request. */
    r->extra = llhttp_get_error_pos(&r->parser) != data + len;
    req_complete(r);
    return 0;
  }
  if (e != HPE_OK) {
    int code = r->fail != 0 ? r->fail : UV_EPROTO;
    char *why = NULL;
    if (code == UV_EMSGSIZE)
      why =
          fmt_reason("response header larger than %zu bytes", r->o.max_header);
    else if (code == UV_EFBIG)
      why = fmt_reason("response body larger than %llu bytes",
                       (unsigned long long)r->o.max_body);
    else if (code == UV_EPROTO)
      why = fmt_reason("malformed HTTP response: %s",
                       llhttp_get_error_reason(&r->parser));
    req_finish(r, code, why);
    return 0;
  }
  return 1;
}

static void req_retry(req_t *r) {
  r->pool->stats.retried++;
  req_release_conn(r, 0);
  r->reused = 0;
  req_reset_hop(r);
  req_connect(r);
}

/* The connection ended (UV_EOF, a TLS close_notify) or failed. */
static void req_input_end(req_t *r, int status) {
  if (req_should_retry(r, status)) {
    req_retry(r);
    return;
  }
  if (status != UV_EOF) {
    req_finish(r, status, NULL);
    return;
  }
  if (r->conn->ssl != NULL && !r->conn->handshaken) {
    req_finish(r, HTTPC_ETLS,
               fmt_reason("handshake failed: connection closed by the "
                          "server"));
    return;
  }
  /* A close-delimited body ends here, any other message is cut short.
   * (on_message_complete pauses the parser, so a body that ends here
   * finishes with HPE_PAUSED.) */
  llhttp_errno_t e = llhttp_finish(&r->parser);
  if ((e == HPE_OK || e == HPE_PAUSED) && r->complete) {
    r->keep_alive = 0;
    req_complete(r);
  } else {
    req_finish(r, UV_EPROTO,
               fmt_reason("connection closed before the end of the "
                          "response"));
  }
}

/* Run the handshake, or read what the session has for us. */
static void tls_step(req_t *r, conn_t *c) {
  if (!c->handshaken) {
    ERR_clear_error();
    int n = SSL_do_handshake(c->ssl);
    int e = n == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
    int rc = conn_flush(c);
    if (rc != 0) {
      req_finish(r, rc, NULL);
    } else if (n == 1) {
      c->handshaken = 1;
      req_connected(r);
    } else if (e == SSL_ERROR_WANT_READ) {
      if ((rc = conn_read(c)) != 0)
        req_finish(r, rc, NULL);
    } else {
      req_finish(r, HTTPC_ETLS, tls_reason(c, r->target->url.host));
    }
    ERR_clear_error();
    return;
  }
  char buf[16384];
  for (;;) {
    ERR_clear_error();
    int n = SSL_read(c->ssl, buf, sizeof(buf));
    if (n > 0) {
      if (!req_feed(r, buf, (size_t)n))
        return; /* finished, or on to a redirect or a retry */
      continue;
    }
    /* Each branch ends with r settled or waiting for the next read:
     * nothing may touch r after it. */
    int e = SSL_get_error(c->ssl, n);
    int rc = conn_flush(c);
    if (rc == 0 && e == SSL_ERROR_WANT_READ)
      rc = conn_read(c);
    if (rc != 0)
      req_finish(r, rc, NULL);
    else if (e == SSL_ERROR_ZERO_RETURN)
      req_input_end(r, UV_EOF); /* the server's close_notify */
    else if (e != SSL_ERROR_WANT_READ)
      req_finish(r, HTTPC_ETLS, tls_reason(c, r->target->url.host));
    ERR_clear_error();
    return;
  }
}

static uvp_ret_t conn_on_read(void *arg, const uvp_outcome_t *in) {
  conn_t *c = arg;
  uvp_ret_t none = {0};
  if (c->stale > 0) {
    c->stale--; /* the idle read's first handler: conn_take's runs next */
    return none;
  }
  /* The handler call holds its own reference: in->value stays valid. */
  uvp_promise_release(c->read);
  c->read = NULL;
  req_t *r = c->req;
  if (r == NULL) {
    idle_input(c, in);
    return none;
  }
  if (in->status < 0) {
    req_input_end(r, in->status);
    return none;
  }
  const uvp_buf_t *b = in->value;
  if (c->ssl == NULL) {
    if (req_feed(r, b->base, b->len)) {
      int rc = conn_read(c);
      if (rc != 0)
        req_finish(r, rc, NULL);
    }
  } else if (BIO_write(c->rbio, b->base, (int)b->len) != (int)b->len) {
    req_finish(r, UV_ENOMEM, NULL);
  } else {
    tls_step(r, c);
  }
  return none;
}

/* A hop: one GET of r->target, on a pooled connection or a new one. */
static void req_start_hop(req_t *r) {
  const httpc_url_t *u = &r->target->url;
  req_reset_hop(r);
  if (u->tls && r->tls == NULL) {
    int rc = r->o.tls != NULL ? (r->o.tls->refs++, r->tls = r->o.tls, 0)
                              : tls_default(&r->tls);
    if (rc != 0) {
      req_finish(r, rc, NULL);
      return;
    }
  }
  const httpc_tls_t *tls = u->tls ? r->tls : NULL;
  conn_t *c = r->pool != NULL ? pool_take(r->pool, tls, u) : NULL;
  r->reused = c != NULL;
  if (c == NULL) {
    req_connect(r);
    return;
  }
  c->req = r;
  r->conn = c;
  req_send(r);
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
  int tls = slen == 5 && strncasecmp(sch->first, "https", 5) == 0;
  int rc = UV_EINVAL;
  if (!tls && (slen != 4 || strncasecmp(sch->first, "http", 4) != 0)) {
    *why = "not an http:// or https:// URL";
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
  int port = tls ? 443 : 80;
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
  out->tls = tls;
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

static void text_free(void *bytes) {
  reqtext_t *text = (reqtext_t *)((char *)bytes - offsetof(reqtext_t, bytes));
  httpc_target_free(text->target);
}

static reqtext_t *text_new(httpc_target_t *t, const char *connection) {
  static const char fmt[] = "GET %s HTTP/1.1\r\n"
                            "Host: %s\r\n"
                            "User-Agent: uvp-httpc/" UVP_VERSION_STRING "\r\n"
                            "Accept: */*\r\n"
                            "Connection: %s\r\n"
                            "\r\n";
  int len = snprintf(NULL, 0, fmt, t->url.target, t->url.authority, connection);
  reqtext_t *text = len < 0 ? NULL : malloc(sizeof(*text) + (size_t)len + 1);
  if (text == NULL)
    return NULL;
  text->target = t;
  text->len = (size_t)len;
  snprintf(text->bytes, (size_t)len + 1, fmt, t->url.target, t->url.authority,
           connection);
  return text;
}

int httpc_target_new(const char *url, httpc_target_t **out, const char **why) {
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
  t->refs = 1;
  t->href = strdup(url);
  t->keep_alive = text_new(t, "keep-alive");
  t->close = text_new(t, "close");
  if (t->href == NULL || t->keep_alive == NULL || t->close == NULL) {
    httpc_target_free(t);
    *why = "out of memory";
    return UV_ENOMEM;
  }
  *out = t;
  return 0;
}

void httpc_target_free(httpc_target_t *t) {
  if (t == NULL || --t->refs > 0)
    return;
  httpc_url_free(&t->url);
  free(t->href);
  free(t->keep_alive);
  free(t->close);
  free(t->span_name);
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

/* What a request waits for, in the task dump: its hop's URL, and whether
 * it is still connecting. */
static int req_describe(void *arg, char *buf, size_t cap) {
  const req_t *r = arg;
  return snprintf(buf, cap, "GET %s%s",
                  r->target != NULL ? r->target->href : "?",
                  r->conn == NULL ? " (connecting)" : "");
}

static void req_trace(req_t *r, httpc_target_t *t);

int httpc_get_target(uvp_ctx_t *ctx, httpc_target_t *t,
                     const httpc_opts_t *opts, uvp_promise_t **out) {
  if (ctx == NULL || t == NULL || out == NULL)
    return UV_EINVAL;
  httpc_opts_t o;
  memset(&o, 0, sizeof(o));
  if (opts != NULL)
    o = *opts;
  if (o.pool != NULL && o.pool->ctx != ctx)
    return UV_EINVAL;
  if (o.max_header == 0)
    o.max_header = DEFAULT_MAX_HEADER;

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
  r->refs = 1;
  r->ctx = ctx;
  r->res = res;
  r->o = o;
  r->start_ns = uv_hrtime();

  /* The cancel hook holds a reference of its own (its destroy notifier
   * drops it, at once if the hook is refused): r stays valid for the hook
   * whatever else let go of it. */
  r->refs++;
  int rc = uvp_promise_new(ctx, &r->p);
  if (rc != 0)
    r->refs--; /* no hook to hold it */
  else if ((rc = uvp_promise_set_cancel_described(r->p, req_cancelled, r,
                                                  req_unref, "HTTP",
                                                  req_describe)) != 0) {
    uvp_promise_release(r->p); /* pending: its hook does not run */
    r->p = NULL;
  }
  if (rc != 0) {
    req_unref(r);
    return rc;
  }
  r->target = t; /* the request's own reference, from here on */
  t->refs++;
  req_trace(r, t);
  if (o.pool != NULL) {
    r->pool = o.pool;
    r->pool->users++;
  }
  /* The caller's deadline, if it has one, bounds the whole request, as
   * it bounds uvp's own operations. */
  rc = uvp_deadline_watch(ctx, r->p);
  uvp_promise_t *result = NULL;
  if (rc == 0 && o.timeout_ms != 0) {
    /* When it fires, the timeout cancels r->p, which is ours alone (a
     * cancellation is not reported as unhandled). */
    rc = uvp_timeout(r->p, o.timeout_ms, UVP_CANCEL_INPUT, &result);
  } else if (rc == 0) {
    result = uvp_promise_retain(r->p);
  }
  if (rc != 0) {
    uvp_promise_cancel(r->p); /* req_cancelled undoes the rest */
    uvp_promise_release(result);
    return rc;
  }
  req_start_hop(r);
  *out = result;
  return 0;
}

/* A request made under a trace context is a CLIENT span of it ("GET
 * host:port/path", no query), whose context its requests carry as
 * `traceparent`, with the scope's `tracestate`.  Without one, the one
 * uvp_tracectx_get (UV_ENOENT) is all it costs.  A span or lines that
 * cannot be made (no memory) leave the request untraced. */
static void req_trace(req_t *r, httpc_target_t *t) {
  uvp_tracectx_t tc;
  const char *ts;
  if (uvp_tracectx_get(r->ctx, &tc, &ts) != 0)
    return;
  if (t->span_name == NULL &&
      asprintf(&t->span_name, "GET %s%.*s", t->url.authority,
               (int)strcspn(t->url.target, "?"), t->url.target) < 0) {
    t->span_name = NULL;
    return;
  }
  static const char tp[] = "traceparent: ", st[] = "tracestate: ";
  size_t tlen = ts != NULL ? strlen(ts) : 0;
  size_t n = sizeof(tp) - 1 + UVP_TRACEPARENT_LEN + 2;
  char *b = malloc(n + (ts != NULL ? sizeof(st) - 1 + tlen + 2 : 0) + 1);
  if (b == NULL || uvp_span_begin(r->ctx, &r->span, t->span_name,
                                  UVP_SPAN_CLIENT, &tc, 0) != 0) {
    free(b);
    return;
  }
  memcpy(b, tp, sizeof(tp) - 1);
  uvp_tracectx_format(&r->span.tc, b + sizeof(tp) - 1);
  memcpy(b + n - 2, "\r\n", 3);
  if (ts != NULL) {
    memcpy(b + n, st, sizeof(st) - 1);
    memcpy(b + n + sizeof(st) - 1, ts, tlen);
    memcpy(b + n + sizeof(st) - 1 + tlen, "\r\n", 3);
  }
  r->trace = b;
}

const char *httpc_strerror(int code) {
  switch (code) {
  case UV_EPROTO:
    return "malformed or incomplete HTTP response";
  case UV_EINVAL:
    return "not a valid http:// or https:// URL";
  case HTTPC_ETLS:
    return "TLS handshake or certificate check failed";
  case UV_EMSGSIZE:
    return "response header too large";
  case UV_EFBIG:
    return "response body too large";
  case UV_ELOOP:
    return "too many redirects";
  default:
    return uvp_strerror(code);
  }
}

const char *httpc_err_name(int code) {
  return code == HTTPC_ETLS ? "ETLS" : uvp_err_name(code);
}
