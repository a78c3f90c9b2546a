/* httpc — a small HTTP/1.1 GET client on uvp's TCP wrappers.
 *
 * Responses are parsed by llhttp: Content-Length, chunked and
 * close-delimited bodies.  By default each request has a connection of its
 * own (`Connection: close`); with a pool (httpc_pool_new), connections are
 * kept alive and reused, as Node's http.Agent({keepAlive: true}) or nginx's
 * upstream `keepalive` do.  Every call gives a promise, so requests compose
 * with uvp's combinators (map, race, timeout...) like any other libuv
 * operation. */
#ifndef HTTPC_H
#define HTTPC_H

#include <stddef.h>
#include <stdint.h>

#include "uvp.h"

typedef struct httpc_response_s {
  int status;          /* HTTP status code */
  size_t bytes;        /* body bytes received */
  uint64_t latency_us; /* from start to the end of the body */
  char *body;          /* first `keep` bytes of the body, NUL-terminated;
                          owned by the response (never NULL) */
  size_t body_len;
} httpc_response_t;

/* Idle keep-alive connections, per host:port, for the requests of one
 * context.
 *
 * A request given the pool sends `Connection: keep-alive` and first takes
 * an idle connection to its host:port (the most recently used one), else
 * connects.  After a complete response that allows it (the server did not
 * say `Connection: close`, nothing arrived after the message, the request
 * was neither cancelled nor timed out), its connection goes back to the
 * pool, up to `max_idle_per_host` idle ones per host:port; any other is
 * closed.  A reused connection that fails before the first byte of the
 * response (UV_EOF, UV_ECONNRESET, UV_EPIPE: the server closed it while it
 * was idle) is retried once on a new connection.  Idle connections do not
 * keep the loop alive and are kept until reused or until the pool is
 * closed; one the server closed meanwhile is found out by that retry. */
typedef struct httpc_pool_s httpc_pool_t;

/* A new pool on `ctx` (the context of every request that uses it).
 * Errors: UV_EINVAL (NULL ctx/out, max_idle_per_host 0), UV_ENOMEM. */
int httpc_pool_new(uvp_ctx_t *ctx, size_t max_idle_per_host,
                   httpc_pool_t **out);

/* Close the idle connections and give the pool up: requests still in
 * flight finish, then close their connection instead of returning it; the
 * pool is freed when the last of them is done (at once if none).  Pass it
 * to no httpc_get after this.  Any time, also after uvp_ctx_close(); call
 * it before uv_loop_close(), like uvp_tcp_close(). */
void httpc_pool_close(httpc_pool_t *pool);

typedef struct httpc_opts_s {
  uint64_t timeout_ms; /* 0: none; else the whole request rejects with
                          UV_ETIMEDOUT and is cancelled */
  size_t keep;         /* how many body bytes to keep in `body` (0: none) */
  httpc_pool_t *pool;  /* NULL: a connection of its own, closed after the
                          response; else keep-alive through this pool */
} httpc_opts_t;

/* GET `url` (see httpc_url_parse; the string is copied).  `opts` may be
 * NULL.
 *
 * Fulfils with an httpc_response_t * whose destructor is attached (freed
 * with the promise), whatever the status code: a 404 is a response.
 * Rejects with libuv's code (UV_ECONNREFUSED, UV_ECONNRESET, UV_ETIMEDOUT,
 * UV_EAI_*...), UV_EPROTO for a malformed response or a connection closed
 * before a complete message, UV_EPROTONOSUPPORT for https:// and
 * UV_EINVAL for a URL httpc cannot use; these last two carry as payload
 * the static message httpc_url_parse gave (no other rejection has a
 * payload).  Cancelling the promise closes the connection (a pooled one
 * too: it is never returned).
 *
 * Returns 0, or UV_EINVAL (NULL ctx/url/out, a pool of another context),
 * UV_ENOMEM, UVP_ECLOSED with nothing started. */
int httpc_get(uvp_ctx_t *ctx, const char *url, const httpc_opts_t *opts,
              uvp_promise_t **out);

/* A URL httpc can GET: http://host[:port][/path][?query][#fragment], host
 * a name, an IPv4 address or a [bracketed] IPv6 address, parsed by
 * uriparser (RFC 3986). */
typedef struct httpc_url_s {
  char *host;      /* to connect to; an IPv6 address without brackets */
  int port;        /* 80 unless the URL gives one */
  char *authority; /* the Host header: host[:port] as written */
  char *target;    /* the request target: path and query ("/" at least);
                      the fragment is left out */
} httpc_url_t;

/* Parse `url` into *out (three strings in one allocation: free them with
 * httpc_url_free).  Returns 0, UV_ENOMEM, UV_EPROTONOSUPPORT for https://
 * (not supported yet) or UV_EINVAL: not a URL, another scheme, no host,
 * user information (user@host), an IP literal of an unknown version, an
 * empty port or one out of 1..65535.  On error *why is a static message
 * saying which; *why is NULL on success.  No argument may be NULL. */
int httpc_url_parse(const char *url, httpc_url_t *out, const char **why);

void httpc_url_free(httpc_url_t *u);

/* A GET prepared once for many requests, as a program that asks the same
 * URLs again and again does: the URL parsed and the request formatted
 * once.  Counted references: each request holds one while it needs the
 * target. */
typedef struct httpc_target_s httpc_target_t;

/* Prepare a GET of `url`.  Errors as httpc_url_parse's, with *why. */
int httpc_target_new(const char *url, httpc_target_t **out,
                     const char **why);

/* Drop the caller's reference: the target is freed once the requests that
 * use it are done too.  NULL is ignored. */
void httpc_target_free(httpc_target_t *t);

/* httpc_get of a prepared target (its URL cannot be bad any more). */
int httpc_get_target(uvp_ctx_t *ctx, httpc_target_t *t,
                     const httpc_opts_t *opts, uvp_promise_t **out);

/* A message for a rejection code of httpc_get, more helpful than
 * uv_strerror() for the codes httpc gives its own meaning (UV_EPROTO,
 * UV_EPROTONOSUPPORT, UV_EINVAL).  Never NULL; static or uvp_strerror's. */
const char *httpc_strerror(int code);

#endif
