/* uvp-fanout's retry policy: which failures are worth another attempt and
 * the backoff between attempts.  bench/fanout-fiber includes it too: its
 * table is compared with uvp-fanout's row by row, so both must retry the
 * same failures with the same waits. */
#ifndef FANOUT_RETRY_H
#define FANOUT_RETRY_H

#include "uvp.h"

#define RETRY_BASE_MS 200
#define RETRY_MAX_MS 5000

/* An attempt answered with a 5xx: a rejection of our own so that the
 * retry loop sees it; the row keeps the response. */
#define E_HTTP_5XX (-31101)

/* What may go differently next time.  A refused URL, a certificate, a cap
 * or too many redirects would fail again. */
static inline int fanout_worth_retrying(int code) {
  switch (code) {
  case E_HTTP_5XX:
  case UV_ECONNREFUSED:
  case UV_ECONNRESET:
  case UV_ECONNABORTED:
  case UV_ETIMEDOUT:
  case UV_EPIPE:
  case UV_EOF:
  case UV_EPROTO:
  case UV_ENETUNREACH:
  case UV_EHOSTUNREACH:
  case UV_EAI_AGAIN:
    return 1;
  default:
    return 0;
  }
}

#endif
