/* httpc — a small HTTP/1.1 GET client on uvp's TCP wrappers.
 *
 * Responses are parsed by llhttp: Content-Length, chunked and
 * close-delimited bodies.  https:// goes through OpenSSL, driven over the
 * same TCP promises with memory BIOs (never a blocking call): the server's
 * certificate is verified against the system's CA store (or a CA file)
 * with SNI and a host-name check.  By default each request has a
 * connection of its own (`Connection: close`); with a pool
 * (httpc_pool_new), connections are kept alive and reused, as Node's
 * http.Agent({keepAlive: true}) or nginx's upstream `keepalive` do.  Every
 * call gives a promise, so requests compose with uvp's combinators (map,
 * race, timeout, retry...) like any other libuv operation. */
#ifndef HTTPC_H
#define HTTPC_H

#include <stddef.h>
#include <stdint.h>

#include "uvp.h"

/* A TLS failure: the handshake failed or the server's certificate was not
 * accepted.  The rejection's payload says which (see httpc_get).  Below
 * uvp's own codes (-30001...), so it is neither a libuv nor a uvp code. */
#define HTTPC_ETLS (-31001)

typedef struct httpc_response_s {
  int status;          /* HTTP status code */
  size_t bytes;        /* body bytes received */
  uint64_t latency_us; /* from start to the end of the body */
  char *body;          /* first `keep` bytes of the body, NUL-terminated;
                          owned by the response (never NULL) */
  size_t body_len;
  unsigned redirects; /* redirects followed before this response */
  char *url;          /* after redirects, the URL that gave this response
                         (owned); NULL if none was followed */
  int reused;         /* its connection had served an earlier request */
} httpc_response_t;

/* ---- TLS ----------------------------------------------------------------- */

/* How https:// servers are checked: an OpenSSL SSL_CTX, shared by the
 * requests (and pooled connections) made with it.  Counted references:
 * each request and connection holds one. */
typedef struct httpc_tls_s httpc_tls_t;

typedef struct httpc_tls_opts_s {
  const char *cafile; /* PEM file of the CAs to trust instead of the
                         system's store (curl's --cacert); NULL: the
                         system's (Debian's ca-certificates) */
  int insecure;       /* non-zero: accept any certificate, for any host
                         (curl's -k/--insecure) */
} httpc_tls_opts_t;

/* A new TLS configuration; `o` may be NULL (system store, verified).
 * Errors: UV_ENOMEM, HTTPC_ETLS (the CA file could not be loaded), with
 * *why a static message; *why is NULL on success.  `why` may be NULL. */
int httpc_tls_new(const httpc_tls_opts_t *o, httpc_tls_t **out,
                  const char **why);

/* Drop the caller's reference.  NULL is ignored. */
void httpc_tls_free(httpc_tls_t *t);

/* ---- the pool ------------------------------------------------------------ */

/* Idle keep-alive connections, per scheme, host and port (and TLS
 * configuration), for the requests of one context.
 *
 * A request given the pool sends `Connection: keep-alive` and first takes
 * an idle connection to its host:port (the most recently used one), else
 * connects.  After a complete response that allows it (the server did not
 * say `Connection: close`, nothing arrived after the message, the request
 * was neither cancelled nor timed out), its connection goes back to the
 * pool; any other is closed.
 *
 * Bounded in time and in number: a connection idle for idle_timeout_ms is
 * closed; each host:port keeps at most max_idle_per_host idle ones and the
 * pool at most max_idle in all: one more closes the least recently used.
 * While idle a connection waits for the server with a read pending, so
 * one the server closes (keep-alive timeout, restart: EOF, a reset, a TLS
 * close_notify) is dropped at once, not found out at reuse; that pending
 * read keeps uv_run() going as long as idle connections are kept (at most
 * idle_timeout_ms after the last request, or until httpc_pool_close).  A
 * reused connection that fails before the first byte of the response
 * (closed meanwhile, in the moment before its EOF was read) is retried
 * once on a new connection.
 *
 * Task groups (uvp_group_*): a request made in a group's work (a member's
 * start callback) runs in its scope, and the connection it uses is the
 * group's while it does (uvp_tcp_attach): a group cancelled with requests
 * in flight joins once their connections are closed.  Back in the pool a
 * connection is the pool's (uvp_tcp_detach), so a group whose requests
 * ended joins at once. */
typedef struct httpc_pool_s httpc_pool_t;

typedef struct httpc_pool_opts_s {
  size_t max_idle_per_host; /* 0: 16 */
  size_t max_idle;          /* all hosts together; 0: 1024 */
  uint64_t idle_timeout_ms; /* 0: 30 000 */
} httpc_pool_opts_t;

/* A new pool on `ctx` (the context of every request that uses it); `o`
 * may be NULL (the defaults).  Errors: UV_EINVAL (NULL ctx/out),
 * UV_ENOMEM, or uv_timer_init's. */
int httpc_pool_new_with(uvp_ctx_t *ctx, const httpc_pool_opts_t *o,
                        httpc_pool_t **out);

/* httpc_pool_new_with with max_idle_per_host and the other defaults (an
 * overall cap at least as large).  Errors: also UV_EINVAL for
 * max_idle_per_host 0. */
int httpc_pool_new(uvp_ctx_t *ctx, size_t max_idle_per_host,
                   httpc_pool_t **out);

typedef struct httpc_pool_stats_s {
  size_t idle;          /* idle connections now */
  uint64_t opened;      /* connections made for the pool's requests */
  uint64_t reused;      /* requests sent on an idle connection */
  uint64_t expired;     /* closed after idle_timeout_ms */
  uint64_t peer_closed; /* closed by the server while idle */
  uint64_t evicted;     /* closed for a cap, per host or overall */
  uint64_t retried;     /* reused connections found closed at reuse */
} httpc_pool_stats_t;

/* What the pool has done so far. */
void httpc_pool_stats(const httpc_pool_t *pool, httpc_pool_stats_t *out);

/* Close the idle connections and give the pool up: requests still in
 * flight finish, then close their connection instead of returning it; the
 * pool is freed when the last of them is done and its timer closed.  Pass
 * it to no httpc_get after this.  Any time, also after uvp_ctx_close();
 * call it before uv_loop_close(), and run the loop after it, as for
 * uvp_tcp_close(). */
void httpc_pool_close(httpc_pool_t *pool);

/* ---- requests ------------------------------------------------------------ */

typedef struct httpc_opts_s {
  uint64_t timeout_ms; /* 0: none; else the whole request (redirects
                          included) rejects with UV_ETIMEDOUT and is
                          cancelled */
  size_t keep;         /* how many body bytes to keep in `body` (0: none) */
  httpc_pool_t *pool;  /* NULL: a connection of its own, closed after the
                          response; else keep-alive through this pool */
  /* Zero leaves each of these at its default. */
  uint64_t connect_timeout_ms; /* TCP connect and TLS handshake of a new
                                  connection: UV_ETIMEDOUT after that long
                                  (0: only timeout_ms bounds them) */
  size_t max_header;           /* response header bytes (status line and fields)
                                  before UV_EMSGSIZE; 0: 64 KiB */
  uint64_t max_body;           /* body bytes before UV_EFBIG; 0: no limit */
  int follow;                  /* non-zero: follow 301/302/303/307/308 with a
                                  Location, as a GET */
  unsigned max_redirects;      /* with follow: more than this many rejects
                                  with UV_ELOOP (curl's --max-redirs) */
  httpc_tls_t *tls; /* for https://; NULL: a shared default (system CA
                       store, verified) */
} httpc_opts_t;

/* GET `url` (see httpc_url_parse; the string is copied).  `opts` may be
 * NULL.
 *
 * Fulfils with an httpc_response_t * whose destructor is attached (freed
 * with the promise), whatever the status code: a 404 is a response.
 * Rejects with libuv's code (UV_ECONNREFUSED, UV_ECONNRESET, UV_ETIMEDOUT,
 * UV_EAI_*...), UV_EPROTO for a malformed response or a connection closed
 * before a complete message, UV_EMSGSIZE / UV_EFBIG past max_header /
 * max_body, UV_ELOOP past max_redirects, HTTPC_ETLS for a TLS failure and
 * UV_EINVAL for a URL httpc cannot use (a bad Location included).  The
 * rejection's payload, when there is one, is a NUL-terminated message
 * saying what went wrong (for HTTPC_ETLS: "certificate has expired",
 * "certificate signed by an unknown CA", "certificate is not valid for
 * host ...", "handshake failed: ..."), owned by the promise.  Cancelling
 * the promise closes the connection (a pooled one too: it is never
 * returned).
 *
 * Trace context (uvp/tracing.h): a request made where the current scope
 * carries one is a CLIENT span of it ("GET host:port/path"), ended when
 * the promise settles, and every request it sends (each redirect's too)
 * carries the span's context as `traceparent` and the scope's
 * `tracestate`, if any.  Without one it costs one uvp_tracectx_get.
 *
 * Returns 0, or UV_EINVAL (NULL ctx/url/out, a pool of another context),
 * UV_ENOMEM, UVP_ECLOSED with nothing started. */
int httpc_get(uvp_ctx_t *ctx, const char *url, const httpc_opts_t *opts,
              uvp_promise_t **out);

/* A URL httpc can GET: http:// or https://host[:port][/path][?query]
 * [#fragment], host a name, an IPv4 address or a [bracketed] IPv6
 * address, parsed by uriparser (RFC 3986). */
typedef struct httpc_url_s {
  char *host;      /* to connect to; an IPv6 address without brackets */
  int port;        /* 80 (443 for https) unless the URL gives one */
  char *authority; /* the Host header: host[:port] as written */
  char *target;    /* the request target: path and query ("/" at least);
                      the fragment is left out */
  int tls;         /* https:// */
} httpc_url_t;

/* Parse `url` into *out (three strings in one allocation: free them with
 * httpc_url_free).  Returns 0, UV_ENOMEM or UV_EINVAL: not a URL, another
 * scheme, no host, user information (user@host), an IP literal of an
 * unknown version, an empty port or one out of 1..65535.  On error *why
 * is a static message saying which; *why is NULL on success.  No argument
 * may be NULL. */
int httpc_url_parse(const char *url, httpc_url_t *out, const char **why);

void httpc_url_free(httpc_url_t *u);

/* A GET prepared once for many requests, as a program that asks the same
 * URLs again and again does: the URL parsed and the request formatted
 * once.  Counted references: each request holds one while it needs the
 * target. */
typedef struct httpc_target_s httpc_target_t;

/* Prepare a GET of `url`.  Errors as httpc_url_parse's, with *why. */
int httpc_target_new(const char *url, httpc_target_t **out, const char **why);

/* Drop the caller's reference: the target is freed once the requests that
 * use it are done too.  NULL is ignored. */
void httpc_target_free(httpc_target_t *t);

/* httpc_get of a prepared target (its URL cannot be bad any more). */
int httpc_get_target(uvp_ctx_t *ctx, httpc_target_t *t,
                     const httpc_opts_t *opts, uvp_promise_t **out);

/* A message for a rejection code of httpc_get, more helpful than
 * uv_strerror() for the codes httpc gives its own meaning (UV_EPROTO,
 * UV_EINVAL, HTTPC_ETLS...).  Never NULL; static or uvp_strerror's. */
const char *httpc_strerror(int code);

/* The code's name: "ETLS" for HTTPC_ETLS, else uvp_err_name's. */
const char *httpc_err_name(int code);

#endif
