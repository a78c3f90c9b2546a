/* httpc — a small HTTP/1.1 GET client on uvp's TCP wrappers.
 *
 * One request per connection (`Connection: close`), responses parsed by
 * llhttp: Content-Length, chunked and close-delimited bodies.  Every call
 * gives a promise, so requests compose with uvp's combinators (map, race,
 * timeout...) like any other libuv operation. */
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

typedef struct httpc_opts_s {
  uint64_t timeout_ms; /* 0: none; else the whole request rejects with
                          UV_ETIMEDOUT and is cancelled */
  size_t keep;         /* how many body bytes to keep in `body` (0: none) */
} httpc_opts_t;

/* GET `url` (http://host[:port][/path], host a name, an IPv4 address or a
 * [bracketed] IPv6 address; the string is copied).  `opts` may be NULL.
 *
 * Fulfils with an httpc_response_t * whose destructor is attached (freed
 * with the promise), whatever the status code: a 404 is a response.
 * Rejects with libuv's code (UV_ECONNREFUSED, UV_ECONNRESET, UV_ETIMEDOUT,
 * UV_EAI_*...), UV_EPROTO for a malformed response or a connection closed
 * before a complete message, UV_EPROTONOSUPPORT for https:// and
 * UV_EINVAL for a URL that cannot be parsed.  Cancelling the promise closes
 * the connection.
 *
 * Returns 0, or UV_EINVAL (NULL ctx/url/out), UV_ENOMEM, UVP_ECLOSED with
 * nothing started. */
int httpc_get(uvp_ctx_t *ctx, const char *url, const httpc_opts_t *opts,
              uvp_promise_t **out);

/* A message for a rejection code of httpc_get, more helpful than
 * uv_strerror() for the codes httpc gives its own meaning (UV_EPROTO,
 * UV_EPROTONOSUPPORT, UV_EINVAL).  Never NULL; static or uvp_strerror's. */
const char *httpc_strerror(int code);

#endif
