/* The libcurl binding's own declarations, shared by its files (not
 * installed): the binding's objects and the functions one file of it calls
 * in another, all named uvp_curl__*: never exported (the library is built
 * with hidden visibility), and out of a program's way when it links the
 * static library.  uvp-curl.c's opening comment is the design, and names
 * the files in their order: a file calls only those before it. */
#ifndef UVP_CURL_INTERNAL_H
#define UVP_CURL_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uvp-curl.h"

typedef struct xfer_s xfer_t;
typedef struct sock_s sock_t;

/* One descriptor's sockets: the one libcurl uses (maybe waiting to start)
 * and the poll handle of an earlier one, still closing. */
typedef struct slot_s {
  sock_t *cur;
  sock_t *closing;
} slot_t;

struct sock_s {
  uv_poll_t poll;
  uvp_curl_t *c;
  curl_socket_t fd;
  int events;   /* UV_READABLE | UV_WRITABLE libcurl wants */
  bool started; /* poll initialised (and started if events) */
};

/* What the convenience reads into. */
typedef struct fetch_s {
  size_t max_body, max_header;
  int flags;
  char *body;
  size_t body_len, body_cap, bytes;
  char *hdr; /* the current response's headers: name NUL value NUL ... */
  size_t hdr_len, hdr_cap, nheaders;
  size_t header_bytes; /* of every response of the transfer (the cap's) */
  bool in_head;        /* a response's head began and has not ended */
  struct curl_slist *req_headers;
} fetch_t;

enum { X_ADDED = 0, X_ADD_PENDING, X_REMOVE_PENDING };

/* A socket the watchdog may look at (one libcurl asked the binding to
 * watch), and what it saw of it at its last look. */
typedef struct wd_fd_s {
  curl_socket_t fd;
  bool sampled;
  bool ended;        /* shut down by the watchdog */
  uint64_t received; /* TCP_INFO tcpi_bytes_received */
  int queued;        /* FIONREAD */
  uint64_t read;     /* by the overdue call, since the limit passed */
} wd_fd_t;

/* A connection the watchdog ended: its ends, to know its transfers by. */
typedef struct wd_kill_s {
  long local_port, peer_port;
  char peer[64];
} wd_kill_t;

#define WD_KILLS 16

struct xfer_s {
  uvp_curl_t *c;
  CURL *easy;
  uvp_promise_t *p;    /* ours */
  uvp_inflight_t w;    /* the transfer as work in flight (uvp-curl.c) */
  xfer_t *hnext;       /* hash chain */
  xfer_t *prev, *next; /* every transfer, oldest first */
  xfer_t *dnext;       /* the deferred queue */
  int state;
  bool queued;
  bool cancelled; /* its promise was cancelled (or torn down) */
  int fail;       /* a code the binding chose (a cap, a socket it could not
                     watch), instead of libcurl's */
  char *fail_msg;
  uint64_t start_ms;
  const char *file;
  int line;
  fetch_t *fetch; /* uvp_curl_fetch's, or NULL */
  bool traced;    /* span begun (fetch.c), ended by uvp_curl__xfer_free */
  uvp_span_t span;
  char errbuf[CURL_ERROR_SIZE];
};

struct uvp_curl_s {
  uvp_ctx_t *ctx;
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  uv_async_t keep; /* referenced while running > 0 */
  unsigned depth;  /* calls into libcurl in progress */
  bool draining;
  bool closing;
  size_t handles; /* uv handles not yet closed */
  xfer_t *dhead, *dtail;
  xfer_t *first, *last;
  xfer_t **buckets;
  size_t nbuckets;
  slot_t *slots;
  size_t nslots;
  uvp_curl_stats_t stats;
  /* The busy limit's watchdog (uvp-curl.c, watchdog.c).  busy_gen and
   * busy_since are written by the loop thread only; the rest after
   * wd_started is shared, under wd_lock. */
  _Atomic uint64_t busy_gen;   /* odd while inside curl_multi_socket_action */
  _Atomic uint64_t busy_since; /* uv_hrtime() as that call began */
  _Atomic uint64_t wd_kills_total;
  uint64_t busy_limit_ms; /* 0: no watchdog */
  bool wd_started, wd_stop, wd_active, wd_sleeping;
  uv_thread_t wd_thread;
  uv_mutex_t wd_lock;
  uv_cond_t wd_cond;
  wd_fd_t *wd_fds;
  size_t wd_nfds, wd_cap;
  wd_kill_t wd_kills[WD_KILLS];
};

/* A call into libcurl begins: until the outermost one has returned, what
 * libcurl's callbacks ask of the multi waits in the deferred queue
 * (uvp-curl.c's opening comment).  transfers.c's leave() ends it and
 * drains the queue; a caller that drains afterwards ends it with depth--. */
static inline void uvp_curl__enter(uvp_curl_t *c) { c->depth++; }

/* errors.c: libcurl's codes as the binding's. */
int uvp_curl__map_code(CURLcode code, CURL *easy, const char *msg);
uvp_curl_error_t *uvp_curl__error_new(CURLcode code, const char *msg);

/* watchdog.c: the busy limit.  The one curl_multi_socket_action, timed
 * by the watchdog; the watchdog woken or let sleep (transfers in flight
 * or not), ended (uvp_curl_close); the sockets it may look at; and
 * whether it ended a finished transfer's connection. */
void uvp_curl__socket_action(uvp_curl_t *c, curl_socket_t fd, int flags);
void uvp_curl__wd_set_active(uvp_curl_t *c, bool active);
void uvp_curl__wd_end(uvp_curl_t *c);
int uvp_curl__wd_fd_add(uvp_curl_t *c, curl_socket_t fd);
void uvp_curl__wd_fd_remove(uvp_curl_t *c, curl_socket_t fd);
bool uvp_curl__wd_ended(uvp_curl_t *c, CURL *easy);

/* response.c: what a fetch read, freed; and a finished fetch's promise
 * resolved with its response. */
void uvp_curl__fetch_free(fetch_t *f);
void uvp_curl__fetch_resolve(xfer_t *x);

/* transfers.c: a transfer's life.  One call into libcurl for a socket or
 * the timeout (and what it left to do); a transfer failed by the binding
 * (a socket it could not watch); the start every transfer goes through,
 * and the free it ends with; and every transfer let go at uvp_curl_close. */
void uvp_curl__action(uvp_curl_t *c, curl_socket_t fd, int flags);
void uvp_curl__xfer_fail(uvp_curl_t *c, CURL *easy, int rc);
int uvp_curl__start(uvp_curl_t *c, xfer_t *x, uvp_promise_t **out);
void uvp_curl__xfer_free(xfer_t *x);
void uvp_curl__xfers_abandon(uvp_curl_t *c);

/* sockets.c: the loop's side, for uvp_curl_new and uvp_curl_close.
 * libcurl's socket and timer callbacks; the close callback of the
 * binding's own handles (the last one frees it); and every socket let go
 * before libcurl closes them. */
int uvp_curl__on_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                        void *socketp);
int uvp_curl__on_timer(CURLM *multi, long timeout_ms, void *userp);
void uvp_curl__on_handle_closed(uv_handle_t *h);
void uvp_curl__socks_drop(uvp_curl_t *c);

#endif
