/* uvp-curl: libcurl's multi-socket interface on a uvp context's loop.
 *
 * One binding (uvp_curl_t) per context holds a CURLM, a uv_timer_t for
 * CURLMOPT_TIMERFUNCTION, a uv_poll_t per socket CURLMOPT_SOCKETFUNCTION
 * asks to watch, and a uv_async_t that is never sent: it is what keeps
 * uv_run() going, referenced while a transfer is in flight (the polls and
 * the timer stay unreferenced, so an idle connection libcurl still asks
 * to watch, or a timer it leaves armed, keeps nothing alive).
 *
 * A transfer (xfer_t) is an easy handle in the multi plus the promise the
 * program got.  Every call into libcurl is made between enter() and
 * leave(): libcurl calls the program's callbacks from inside them, and
 * there curl_multi_add_handle / curl_multi_remove_handle return
 * CURLM_RECURSIVE_API_CALL (7.88).  So a cancel hook or a perform that
 * runs while `depth` > 0 queues its work (`deferred`), and the outermost
 * leave() does it once libcurl has returned, still inside the binding's
 * callback, before the loop goes on.  After each action the finished
 * transfers are collected (curl_multi_info_read), removed and settled.
 *
 * Sockets.  libcurl tells the binding about a socket before it closes it
 * (CURL_POLL_REMOVE from Curl_multi_closed), and may open a new one that
 * gets the same descriptor number at once, or go back to watching an
 * idle connection whose poll handle is still closing.  libuv allows one
 * poll handle per descriptor (uv_poll_init: UV_EEXIST; the closing one's
 * epoll registration would be the new one's): each descriptor has a slot
 * with the socket libcurl uses now and the poll handle still closing, and
 * a socket whose descriptor has a closing handle waits, unstarted, for
 * that handle's close callback, which starts it.
 *
 * Lifetimes.  A transfer is freed when it leaves the multi (settled, or
 * cancelled); the binding when uvp_curl_close has closed everything and
 * the last close callback has run (`handles` counts the open ones).
 *
 * Work in flight.  start() is the one place every transfer goes through
 * before libcurl sees it, and xfer_free() the one it leaves by: there the
 * transfer's record (uvp_inflight_t, class xfer_class) starts and ends.
 * Between the two the transfer is its scope's work (a group's join waits
 * for it), the scope's deadline watches its promise (when it passes the
 * promise rejects with UV_ETIMEDOUT and on_cancel takes the transfer out
 * of the multi, as any cancellation does; not CURLOPT_TIMEOUT_MS: a
 * deadline is the scope's, shared with everything else the request
 * started), the virtual clock keeps the loop's pace, and the task dump
 * names it through transfer_target() ("GET url", kind "HTTP"), the one
 * place that does, which uvp_curl_dump prints too.
 *
 * The busy limit.  A deadline, libcurl's timeouts and every
 * other handle of the loop wait while the loop thread is inside libcurl,
 * and libcurl 7.88 can stay there as long as a server wants: its HTTP/2
 * read loop (cf_h2_recv) reads until the socket is empty or the stream
 * it serves has data, and a server sending only control frames
 * (WINDOW_UPDATE, PING) faster than the client parses them keeps it from
 * either; no option of libcurl's or nghttp2's bounds it, and no callback
 * of the program's runs inside it.  So a watchdog thread (one per
 * binding, started with the first transfer, asleep while none runs)
 * watches the calls into libcurl: each curl_multi_socket_action notes its
 * start (busy_gen odd, busy_since).  One that has run `busy_limit` ms
 * has its connection found by what it reads, looked at every 20 ms: of
 * the sockets libcurl asked the binding to watch (wd_fds, kept under
 * wd_lock), the one whose bytes it goes on consuming (TCP_INFO's bytes
 * received less the growth of FIONREAD's queue: nothing else reads while
 * the loop thread is inside libcurl), 4 MiB since the limit passed and
 * 64 KiB in the last 20 ms: more than a call that is not flooded reads in
 * all (WD_ENOUGH says why).  The watchdog shuts that socket down (shutdown,
 * never close: the descriptor stays libcurl's, and libcurl tells the binding
 * before it closes one, CURL_POLL_REMOVE, which waits for wd_lock, so a
 * descriptor number is never shut down after libcurl has reused it);
 * libcurl's next recv on it then fails (the reset) or ends (EOF) once the
 * bytes already queued are read, and the call returns.  The transfers of
 * that connection fail, and finish() turns their libcurl error into
 * UV_ETIMEDOUT (it knows them by the connection's ports and peer, kept in
 * wd_kills).  Linux only (TCP_INFO, FIONREAD); elsewhere no watchdog. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "uvp-curl.h"

#ifdef __linux__
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <sys/ioctl.h>
#define UVP_CURL_WATCHDOG 1
#endif

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
  uvp_inflight_t w;    /* the transfer as work in flight (see the top) */
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
  /* The busy limit's watchdog (see the top).  busy_gen and busy_since are
   * written by the loop thread only; the rest after wd_started is shared,
   * under wd_lock. */
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

/* ---- errors -------------------------------------------------------------- */

const char *uvp_curl_strerror(int code) {
  switch (code) {
#define XX(name, val, msg)                                                     \
  case val:                                                                    \
    return msg;
    UVP_CURL_ERRNO_MAP(XX)
#undef XX
  default:
    return uvp_strerror(code);
  }
}

const char *uvp_curl_err_name(int code) {
  switch (code) {
#define XX(name, val, msg)                                                     \
  case val:                                                                    \
    return #name;
    UVP_CURL_ERRNO_MAP(XX)
#undef XX
  default:
    return uvp_err_name(code);
  }
}

/* The system's error libcurl saw, if it kept one; for a send or receive
 * error only if its message names it (libcurl leaves CURLINFO_OS_ERRNO as
 * it was when a TLS or proxy error is not a system call's). */
static int os_error(CURL *easy, const char *msg, int fallback) {
  long e = 0;
  if (easy == NULL || curl_easy_getinfo(easy, CURLINFO_OS_ERRNO, &e) != 0 ||
      e <= 0)
    return fallback;
  if (msg != NULL && strstr(msg, strerror((int)e)) == NULL)
    return fallback;
  return uv_translate_sys_error((int)e);
}

static int connected(CURL *easy) {
  char *ip = NULL;
  return easy != NULL &&
         curl_easy_getinfo(easy, CURLINFO_PRIMARY_IP, &ip) == CURLE_OK &&
         ip != NULL && *ip != '\0';
}

static int map_code(CURLcode code, CURL *easy, const char *msg) {
  switch (code) {
  case CURLE_OK:
    return 0;
  case CURLE_COULDNT_CONNECT:
    return os_error(easy, NULL, UV_ECONNREFUSED);
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
    return os_error(easy, msg, UV_EPROTO);
  case CURLE_OPERATION_TIMEDOUT:
    return UV_ETIMEDOUT;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return UV_EAI_NONAME;
  case CURLE_PARTIAL_FILE:
  case CURLE_GOT_NOTHING:
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_HTTP3:
  case CURLE_BAD_CONTENT_ENCODING:
  case CURLE_PROXY:
    return UV_EPROTO;
  case CURLE_UNSUPPORTED_PROTOCOL:
    return connected(easy) ? UV_EPROTO : UV_EINVAL;
  case CURLE_URL_MALFORMAT:
  case CURLE_BAD_FUNCTION_ARGUMENT:
  case CURLE_UNKNOWN_OPTION:
  case CURLE_SETOPT_OPTION_SYNTAX:
    return UV_EINVAL;
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_USE_SSL_FAILED:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CLIENTCERT:
    return UVP_CURL_ETLS;
  case CURLE_TOO_MANY_REDIRECTS:
    return UV_ELOOP;
  case CURLE_FILESIZE_EXCEEDED:
    return UV_EFBIG;
  case CURLE_LOGIN_DENIED:
  case CURLE_REMOTE_ACCESS_DENIED:
  case CURLE_AUTH_ERROR:
    return UV_EACCES;
  case CURLE_ABORTED_BY_CALLBACK:
    return UV_ECANCELED;
  case CURLE_WRITE_ERROR:
  case CURLE_READ_ERROR:
  case CURLE_SEND_FAIL_REWIND:
    return UV_EIO;
  case CURLE_OUT_OF_MEMORY:
    return UV_ENOMEM;
  case CURLE_NOT_BUILT_IN:
    return UV_ENOTSUP;
  case CURLE_INTERFACE_FAILED:
    return UV_EADDRNOTAVAIL;
  case CURLE_HTTP_RETURNED_ERROR:
    return UVP_CURL_EHTTP;
  default:
    return UVP_CURL_ECURL;
  }
}

int uvp_curl_code(CURLcode code, CURL *easy) {
  const char *msg = curl_easy_strerror(code);
  return map_code(code, easy, msg);
}

static uvp_curl_error_t *error_new(CURLcode code, const char *msg) {
  uvp_curl_error_t *e = malloc(sizeof(*e));
  if (e == NULL)
    return NULL;
  e->code = code;
  snprintf(e->message, sizeof(e->message), "%s",
           msg != NULL && *msg != '\0' ? msg : curl_easy_strerror(code));
  return e;
}

/* ---- the binding's handles ----------------------------------------------- */

static void binding_free(uvp_curl_t *c) {
  free(c->wd_fds);
  free(c->buckets);
  free(c->slots);
  free(c);
}

/* A close callback of one of the binding's handles: the last one frees it
 * (uvp_curl_close has let go of everything else). */
static void handle_gone(uvp_curl_t *c) {
  if (--c->handles == 0 && c->closing)
    binding_free(c);
}

static void on_handle_closed(uv_handle_t *h) { handle_gone(h->data); }

/* Transfers in the multi keep the loop alive (each holds a virtual clock
 * to the loop's pace through its record).  Called as running goes from 0
 * to 1 and back. */
static void wd_set_active(uvp_curl_t *c, bool active);

static void keep_set(uvp_curl_t *c) {
  if (c->stats.running > 0)
    uv_ref((uv_handle_t *)&c->keep);
  else
    uv_unref((uv_handle_t *)&c->keep);
  wd_set_active(c, c->stats.running > 0);
}

/* ---- the busy limit's watchdog (see the top) ---------------------------- */

/* An overdue call is looked at every WD_SAMPLE_MS; a socket it has read
 * WD_ENOUGH bytes of since it became overdue, and WD_STILL in the last
 * look's time, is ended.  A call of libcurl 7.88 that is not flooded reads
 * at most 100 times its buffer per transfer it serves (16 KiB for HTTP/1,
 * 32 KiB for HTTP/2: 3.2 MB), so a slow callback of the program's
 * followed by a burst of reading does not reach WD_ENOUGH; a flood does
 * in a few looks (tens of ms; 0.4 to 1.3 s under valgrind).  What it
 * cannot tell from a flood: one call that reads past the limit, and over
 * WD_ENOUGH, for many HTTP/2 streams of one connection at once, or with a
 * CURLOPT_BUFFERSIZE of megabytes (uvp-curl.h says so). */
#define WD_SAMPLE_MS 20
#define WD_ENOUGH (4u * 1024 * 1024)
#define WD_STILL (64 * 1024)

#ifdef UVP_CURL_WATCHDOG
/* What the kernel says of a TCP socket: bytes received so far, and how
 * many of them nobody has read yet.  False for any other socket. */
/* glibc's struct tcp_info stops before the fields Linux added in 4.1
 * (<linux/tcp.h> has them, but clashes with <netinet/tcp.h>, which libuv
 * includes): they follow it, the first at offset 104. */
_Static_assert(sizeof(struct tcp_info) == 104, "glibc's tcp_info changed");
typedef struct wd_tcp_info_s {
  struct tcp_info glibc;
  uint64_t pacing_rate, max_pacing_rate, bytes_acked;
  uint64_t bytes_received; /* tcpi_bytes_received */
} wd_tcp_info_t;

static bool wd_read(curl_socket_t fd, uint64_t *received, int *queued) {
  wd_tcp_info_t ti;
  socklen_t len = sizeof(ti);
  memset(&ti, 0, sizeof(ti));
  if (ioctl(fd, FIONREAD, queued) != 0 ||
      getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
      len < offsetof(wd_tcp_info_t, bytes_received) + sizeof(uint64_t))
    return false;
  *received = ti.bytes_received;
  return true;
}

static long port_of(const struct sockaddr_storage *a) {
  if (a->ss_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)(const void *)a)->sin_port);
  if (a->ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)(const void *)a)->sin6_port);
  return -1;
}

/* End the connection of w (under wd_lock), noting its ends first. */
static void wd_kill(uvp_curl_t *c, wd_fd_t *w) {
  uint64_t n = atomic_load(&c->wd_kills_total);
  wd_kill_t *k = &c->wd_kills[n % WD_KILLS];
  struct sockaddr_storage a;
  socklen_t alen = sizeof(a);
  memset(k, 0, sizeof(*k));
  k->local_port = k->peer_port = -1;
  /* Cleared before each call: a family the kernel leaves unset reads as
   * AF_UNSPEC, not as garbage (scan-build's finding). */
  memset(&a, 0, sizeof(a));
  if (getsockname(w->fd, (struct sockaddr *)&a, &alen) == 0)
    k->local_port = port_of(&a);
  alen = sizeof(a);
  memset(&a, 0, sizeof(a));
  if (getpeername(w->fd, (struct sockaddr *)&a, &alen) == 0) {
    k->peer_port = port_of(&a);
    const void *ip =
        a.ss_family == AF_INET6
            ? (const void *)&((struct sockaddr_in6 *)(void *)&a)->sin6_addr
            : (const void *)&((struct sockaddr_in *)(void *)&a)->sin_addr;
    if (inet_ntop(a.ss_family, ip, k->peer, sizeof(k->peer)) == NULL)
      k->peer[0] = '\0';
  }
  (void)shutdown(w->fd, SHUT_RDWR);
  atomic_store(&c->wd_kills_total, n + 1);
}

/* A look at every socket (under wd_lock) while the call `gen` is
 * overdue: what the kernel says now, and (`again`: the last look was at
 * the same call) what the call has read since the last look: the bytes
 * received less the growth of the queue.  A socket added since the last
 * look is only noted. */
static void wd_look(uvp_curl_t *c, bool again, uint64_t gen) {
  for (size_t i = 0; i < c->wd_nfds; i++) {
    wd_fd_t *w = &c->wd_fds[i];
    uint64_t received = 0;
    int queued = 0;
    bool ok = wd_read(w->fd, &received, &queued);
    if (!again) {
      w->read = 0;
    } else if (w->sampled && ok && !w->ended && received >= w->received) {
      int64_t read = (int64_t)(received - w->received) -
                     ((int64_t)queued - (int64_t)w->queued);
      if (read > 0)
        w->read += (uint64_t)read;
      if (read >= WD_STILL && w->read >= WD_ENOUGH &&
          atomic_load(&c->busy_gen) == gen) {
        wd_kill(c, w);
        w->ended = true;
      }
    }
    w->sampled = ok;
    w->received = received;
    w->queued = queued;
  }
}

static void wd_main(void *arg) {
  uvp_curl_t *c = arg;
  uint64_t sampled = 0; /* the call whose sockets were looked at once */
  uv_mutex_lock(&c->wd_lock);
  while (!c->wd_stop) {
    /* (over 11 days is as good as none, and keeps the arithmetic whole) */
    uint64_t limit =
        c->busy_limit_ms > 1000000000u ? 1000000000u : c->busy_limit_ms;
    if (!c->wd_active || limit == 0) {
      sampled = 0;
      c->wd_sleeping = true;
      uv_cond_wait(&c->wd_cond, &c->wd_lock);
      c->wd_sleeping = false;
      continue;
    }
    uint64_t gen = atomic_load(&c->busy_gen);
    uint64_t since = atomic_load(&c->busy_since);
    if (atomic_load(&c->busy_gen) != gen)
      continue; /* a call began or ended meanwhile: look again */
    uint64_t now = uv_hrtime(), limit_ns = limit * 1000000u, wait_ms;
    if ((gen & 1) && now - since >= limit_ns) {
      wd_look(c, sampled == gen, gen);
      sampled = gen;
      wait_ms = WD_SAMPLE_MS;
    } else if (gen & 1) {
      sampled = 0;
      wait_ms = (since + limit_ns - now) / 1000000u + 1;
    } else {
      sampled = 0;
      wait_ms = limit / 4 + 1;
    }
    (void)uv_cond_timedwait(&c->wd_cond, &c->wd_lock, wait_ms * 1000000u);
  }
  uv_mutex_unlock(&c->wd_lock);
}
#endif

/* Transfers are in flight (or no longer): wake the watchdog, started with
 * the first transfer, or let it sleep. */
static void wd_set_active(uvp_curl_t *c, bool active) {
#ifdef UVP_CURL_WATCHDOG
  if (!c->wd_started) {
    if (!active || c->busy_limit_ms == 0 || c->closing)
      return;
    if (uv_mutex_init(&c->wd_lock) != 0)
      return;
    if (uv_cond_init(&c->wd_cond) != 0) {
      uv_mutex_destroy(&c->wd_lock);
      return;
    }
    c->wd_stop = false;
    c->wd_active = true;
    if (uv_thread_create(&c->wd_thread, wd_main, c) != 0) {
      uv_cond_destroy(&c->wd_cond);
      uv_mutex_destroy(&c->wd_lock);
      return; /* no watchdog: the busy limit does not hold */
    }
    c->wd_started = true;
    return;
  }
  uv_mutex_lock(&c->wd_lock);
  c->wd_active = active;
  if (active && c->wd_sleeping)
    uv_cond_signal(&c->wd_cond);
  uv_mutex_unlock(&c->wd_lock);
#else
  (void)c;
  (void)active;
#endif
}

/* Stop the watchdog for good (uvp_curl_close). */
static void wd_end(uvp_curl_t *c) {
#ifdef UVP_CURL_WATCHDOG
  if (!c->wd_started) {
    c->busy_limit_ms = 0; /* and no new one */
    return;
  }
  uv_mutex_lock(&c->wd_lock);
  c->wd_stop = true;
  uv_cond_signal(&c->wd_cond);
  uv_mutex_unlock(&c->wd_lock);
  uv_thread_join(&c->wd_thread);
  uv_cond_destroy(&c->wd_cond);
  uv_mutex_destroy(&c->wd_lock);
  c->wd_started = false;
#endif
  c->busy_limit_ms = 0; /* and no new one */
}

/* libcurl watches fd now, or no longer (before it closes it). */
static int wd_fd_add(uvp_curl_t *c, curl_socket_t fd) {
  int rc = 0;
  if (c->wd_started)
    uv_mutex_lock(&c->wd_lock);
  if (c->wd_nfds == c->wd_cap) {
    size_t n = c->wd_cap ? c->wd_cap * 2 : 16;
    wd_fd_t *a = realloc(c->wd_fds, n * sizeof(*a));
    if (a == NULL) {
      rc = UV_ENOMEM;
      goto out;
    }
    c->wd_fds = a;
    c->wd_cap = n;
  }
  c->wd_fds[c->wd_nfds++] = (wd_fd_t){fd, false, false, 0, 0, 0};
out:
  if (c->wd_started)
    uv_mutex_unlock(&c->wd_lock);
  return rc;
}

static void wd_fd_remove(uvp_curl_t *c, curl_socket_t fd) {
  if (c->wd_started)
    uv_mutex_lock(&c->wd_lock);
  for (size_t i = 0; i < c->wd_nfds; i++)
    if (c->wd_fds[i].fd == fd) {
      c->wd_fds[i] = c->wd_fds[--c->wd_nfds];
      break;
    }
  if (c->wd_started)
    uv_mutex_unlock(&c->wd_lock);
}

/* Did the watchdog end the connection of this finished transfer? */
static bool wd_ended(uvp_curl_t *c, CURL *easy) {
  uint64_t n = atomic_load(&c->wd_kills_total);
  long lport = -1, pport = -1;
  char *ip = NULL;
  if (n == 0 ||
      curl_easy_getinfo(easy, CURLINFO_LOCAL_PORT, &lport) != CURLE_OK ||
      curl_easy_getinfo(easy, CURLINFO_PRIMARY_PORT, &pport) != CURLE_OK ||
      curl_easy_getinfo(easy, CURLINFO_PRIMARY_IP, &ip) != CURLE_OK ||
      ip == NULL || lport <= 0)
    return false;
  bool found = false;
#ifdef UVP_CURL_WATCHDOG
  if (c->wd_started)
    uv_mutex_lock(&c->wd_lock);
  for (uint64_t i = 0; i < n && i < WD_KILLS && !found; i++) {
    const wd_kill_t *k = &c->wd_kills[(n - 1 - i) % WD_KILLS];
    found = k->local_port == lport && k->peer_port == pport &&
            strcmp(k->peer, ip) == 0;
  }
  if (c->wd_started)
    uv_mutex_unlock(&c->wd_lock);
#endif
  return found;
}

/* ---- transfers by easy handle -------------------------------------------- */

static size_t hash_of(const CURL *easy, size_t n) {
  uintptr_t v = (uintptr_t)easy;
  v ^= v >> 17;
  v *= (uintptr_t)0x9E3779B97F4A7C15ull;
  return (size_t)(v >> 7) & (n - 1);
}

static xfer_t *xfer_find(const uvp_curl_t *c, const CURL *easy) {
  if (c->nbuckets == 0)
    return NULL;
  for (xfer_t *x = c->buckets[hash_of(easy, c->nbuckets)]; x != NULL;
       x = x->hnext)
    if (x->easy == easy)
      return x;
  return NULL;
}

/* Room for one more (the table grows to twice the transfers). */
static int xfer_room(uvp_curl_t *c) {
  size_t want = c->stats.running + 1;
  if (want * 2 <= c->nbuckets)
    return 0;
  size_t n = c->nbuckets ? c->nbuckets * 2 : 64;
  while (n < want * 2)
    n *= 2;
  xfer_t **b = calloc(n, sizeof(*b));
  if (b == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < c->nbuckets; i++)
    for (xfer_t *x = c->buckets[i], *next; x != NULL; x = next) {
      next = x->hnext;
      size_t h = hash_of(x->easy, n);
      x->hnext = b[h];
      b[h] = x;
    }
  free(c->buckets);
  c->buckets = b;
  c->nbuckets = n;
  return 0;
}

static void xfer_link(uvp_curl_t *c, xfer_t *x) {
  size_t h = hash_of(x->easy, c->nbuckets);
  x->hnext = c->buckets[h];
  c->buckets[h] = x;
  x->prev = c->last;
  if (c->last != NULL)
    c->last->next = x;
  else
    c->first = x;
  c->last = x;
  if (++c->stats.running == 1)
    keep_set(c);
}

static void xfer_unlink(uvp_curl_t *c, xfer_t *x) {
  xfer_t **pp = &c->buckets[hash_of(x->easy, c->nbuckets)];
  while (*pp != x)
    pp = &(*pp)->hnext;
  *pp = x->hnext;
  if (x->prev != NULL)
    x->prev->next = x->next;
  else
    c->first = x->next;
  if (x->next != NULL)
    x->next->prev = x->prev;
  else
    c->last = x->prev;
  if (--c->stats.running == 0)
    keep_set(c);
}

/* ---- calls into libcurl -------------------------------------------------- */

static void drain(uvp_curl_t *c);

static void enter(uvp_curl_t *c) { c->depth++; }

/* Back from libcurl: the outermost return does what waited for it. */
static void leave(uvp_curl_t *c) {
  if (--c->depth == 0)
    drain(c);
}

static void defer(uvp_curl_t *c, xfer_t *x) {
  if (x->queued)
    return;
  x->queued = true;
  x->dnext = NULL;
  if (c->dtail != NULL)
    c->dtail->dnext = x;
  else
    c->dhead = x;
  c->dtail = x;
  c->stats.deferred++;
}

static void unqueue(uvp_curl_t *c, xfer_t *x) {
  xfer_t *prev = NULL;
  for (xfer_t *q = c->dhead; q != NULL; prev = q, q = q->dnext) {
    if (q != x)
      continue;
    if (prev != NULL)
      prev->dnext = x->dnext;
    else
      c->dhead = x->dnext;
    if (c->dtail == x)
      c->dtail = prev;
    break;
  }
  x->queued = false;
}

static void fetch_free(fetch_t *f) {
  if (f == NULL)
    return;
  free(f->body);
  free(f->hdr);
  curl_slist_free_all(f->req_headers);
  free(f);
}

/* Every transfer ends here, started or not: its record ends first (its
 * group may settle its join; the context's count drops). */
static void xfer_free(xfer_t *x) {
  uvp_inflight_end(&x->w);
  if (x->fetch != NULL) {
    curl_easy_cleanup(x->easy); /* the binding's own handle */
    fetch_free(x->fetch);
  }
  free(x->fail_msg);
  free(x);
}

/* Take x out of the multi (at depth 0) and out of the tables. */
static void xfer_remove(uvp_curl_t *c, xfer_t *x) {
  xfer_unlink(c, x);
  enter(c);
  curl_multi_remove_handle(c->multi, x->easy);
  c->depth--; /* the caller drains */
  curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, NULL);
}

/* The transfer was cancelled: its promise is rejected already. */
static void xfer_drop(uvp_curl_t *c, xfer_t *x) {
  if (x->state != X_ADD_PENDING)
    xfer_remove(c, x);
  c->stats.cancelled++;
  uvp_promise_t *p = x->p;
  xfer_free(x);
  uvp_promise_release(p); /* may run the program's code: x is gone */
}

/* A transfer out of the multi (or never in it) at uvp_curl_close: its
 * promise is cancelled, if still pending, without the hook, saying why
 * (uvp_promise_cause). */
static void xfer_abandon(uvp_curl_t *c, xfer_t *x) {
  uvp_promise_t *p = x->p;
  c->stats.cancelled++;
  xfer_free(x);
  uvp_promise_set_cancel(p, NULL, NULL);
  uvp_promise_cancel_binding(p, UV_ECANCELED,
                             "uvp_curl_close: the client was closed");
  uvp_promise_release(p);
}

static void on_cancel(uvp_inflight_t *w, int code);
static void socket_action(uvp_curl_t *c, curl_socket_t fd, int flags);
static int add_now(uvp_curl_t *c, xfer_t *x);
static void finish(uvp_curl_t *c, xfer_t *x, CURLcode result);

/* What callbacks asked for while libcurl ran, in order, then the
 * transfers libcurl has finished: once libcurl has returned (depth 0),
 * one at a time, until there is nothing left of either.  What the
 * program's code does meanwhile (a value's destructor starting or
 * cancelling a transfer) joins the same loop instead of nesting one. */
static void drain(uvp_curl_t *c) {
  if (c->draining || c->depth > 0)
    return;
  c->draining = true;
  for (;;) {
    xfer_t *x = c->dhead;
    if (x != NULL) {
      c->dhead = x->dnext;
      if (c->dhead == NULL)
        c->dtail = NULL;
      x->queued = false;
      if (x->cancelled) {
        xfer_drop(c, x);
      } else if (x->state == X_ADD_PENDING) {
        int rc = add_now(c, x);
        if (rc == 0) {
          enter(c);
          socket_action(c, CURL_SOCKET_TIMEOUT, 0);
          c->depth--;
        } else { /* not added after all: the promise says why */
          uvp_promise_t *p = x->p;
          uvp_promise_set_cancel(p, NULL, NULL);
          xfer_free(x);
          uvp_promise_reject(p, rc, NULL, NULL);
          uvp_promise_release(p);
        }
      } else { /* X_REMOVE_PENDING: the binding failed it */
        finish(c, x, CURLE_OK);
      }
      continue;
    }
    CURLMsg *m;
    int left;
    if (c->multi == NULL || (m = curl_multi_info_read(c->multi, &left)) == NULL)
      break;
    if (m->msg != CURLMSG_DONE)
      continue;
    CURLcode result = m->data.result; /* m dies with the removal */
    x = xfer_find(c, m->easy_handle);
    if (x != NULL && x->state == X_ADDED)
      finish(c, x, result);
  }
  c->draining = false;
}

/* ---- the multi-socket glue ----------------------------------------------- */

/* curl_multi_socket_action, its time watched by the busy limit. */
static void socket_action(uvp_curl_t *c, curl_socket_t fd, int flags) {
  int running;
  atomic_store_explicit(&c->busy_since, uv_hrtime(), memory_order_relaxed);
  atomic_fetch_add_explicit(&c->busy_gen, 1, memory_order_release);
  curl_multi_socket_action(c->multi, fd, flags, &running);
  atomic_fetch_add_explicit(&c->busy_gen, 1, memory_order_release);
}

static void action(uvp_curl_t *c, curl_socket_t fd, int flags) {
  enter(c);
  socket_action(c, fd, flags);
  leave(c);
}

static void on_timeout(uv_timer_t *t) {
  action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
  uvp_curl_t *c = userp;
  (void)multi;
  if (timeout_ms < 0)
    uv_timer_stop(&c->timer);
  else
    uv_timer_start(&c->timer, on_timeout, (uint64_t)timeout_ms, 0);
  return 0;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_t *s = h->data;
  uvp_curl_t *c = s->c;
  if (status < 0) {
    /* libuv says UV_EBADF for POLLERR (a reset, a refused connect) and
     * stops the handle.  libcurl finds the error itself once told the
     * socket is ready for what it waits for: its recv or send fails with
     * the system's code (ECONNRESET), which CURLINFO_OS_ERRNO keeps.
     * (CURL_CSELECT_ERR would end the transfer with "select/poll
     * returned error" and no code.) */
    events = s->events;
  }
  int flags = 0;
  if (events & UV_READABLE)
    flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE)
    flags |= CURL_CSELECT_OUT;
  action(c, s->fd, flags);
  /* Still libcurl's after that (not closing): watch it again. */
  if (status < 0 && !uv_is_closing((uv_handle_t *)h) && s->events != 0)
    uv_poll_start(h, s->events, on_poll);
}

static slot_t *slot_of(uvp_curl_t *c, curl_socket_t fd) {
  if ((size_t)fd < c->nslots)
    return &c->slots[fd];
  size_t n = c->nslots ? c->nslots : 64;
  while (n <= (size_t)fd)
    n *= 2;
  slot_t *s = realloc(c->slots, n * sizeof(*s));
  if (s == NULL)
    return NULL;
  memset(s + c->nslots, 0, (n - c->nslots) * sizeof(*s));
  c->slots = s;
  c->nslots = n;
  return &c->slots[fd];
}

/* Watch s for what libcurl wants; init its poll handle first if it has
 * none (only while no handle of the descriptor is closing). */
static int sock_watch(uvp_curl_t *c, sock_t *s) {
  if (!s->started) {
    int rc = uv_poll_init_socket(c->loop, &s->poll, s->fd);
    if (rc != 0)
      return rc;
    s->started = true;
    s->poll.data = s;
    uv_unref((uv_handle_t *)&s->poll);
    c->handles++;
    c->stats.sockets++;
  }
  if (s->events == 0)
    return uv_poll_stop(&s->poll);
  return uv_poll_start(&s->poll, s->events, on_poll);
}

static void on_sock_closed(uv_handle_t *h) {
  sock_t *s = h->data;
  uvp_curl_t *c = s->c;
  slot_t *slot = (size_t)s->fd < c->nslots ? &c->slots[s->fd] : NULL;
  if (slot != NULL && slot->closing == s)
    slot->closing = NULL;
  free(s);
  /* The socket libcurl uses now on this descriptor waited for us. */
  if (slot != NULL && slot->cur != NULL && !slot->cur->started && !c->closing) {
    sock_t *w = slot->cur;
    c->stats.reopened++;
    if (sock_watch(c, w) != 0 && w->events != 0) {
      /* No poll: its transfers would wait for their timeouts.  libcurl
       * is told the socket failed instead. */
      action(c, w->fd, CURL_CSELECT_ERR);
    }
  }
  handle_gone(c);
}

/* libcurl is done with s: stop watching it; its handle closes. */
static void sock_drop(uvp_curl_t *c, sock_t *s) {
  wd_fd_remove(c, s->fd);
  slot_t *slot = (size_t)s->fd < c->nslots ? &c->slots[s->fd] : NULL;
  if (slot != NULL && slot->cur == s)
    slot->cur = NULL;
  if (!s->started) {
    free(s);
    return;
  }
  c->stats.sockets--;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, on_sock_closed);
  if (slot != NULL)
    slot->closing = s;
}

/* A socket libcurl could not have watched: its transfer fails with `rc`
 * once libcurl has returned. */
static void sock_failed(uvp_curl_t *c, CURL *easy, int rc) {
  xfer_t *x = xfer_find(c, easy);
  if (x == NULL || x->state != X_ADDED || x->fail != 0)
    return;
  x->fail = rc;
  x->state = X_REMOVE_PENDING;
  defer(c, x);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  uvp_curl_t *c = userp;
  sock_t *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL)
      sock_drop(c, s);
    return 0;
  }
  if (c->closing)
    return 0;
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
    events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
    events |= UV_WRITABLE;
  slot_t *slot = slot_of(c, fd);
  if (s == NULL) {
    if (slot == NULL || (s = calloc(1, sizeof(*s))) == NULL) {
      sock_failed(c, easy, UV_ENOMEM);
      return 0;
    }
    s->c = c;
    s->fd = fd;
    curl_multi_assign(c->multi, fd, s);
    if (slot->cur != NULL) /* closed behind our back: never watched twice */
      sock_drop(c, slot->cur);
    slot->cur = s;
    (void)wd_fd_add(c, fd); /* without it, only the busy limit misses it */
  }
  s->events = events;
  if (s->started || slot->closing == NULL) {
    int rc = sock_watch(c, s);
    if (rc != 0)
      sock_failed(c, easy, rc);
  }
  /* else: started by the closing handle's close callback. */
  return 0;
}

/* ---- the binding --------------------------------------------------------- */

int uvp_curl_new(uvp_ctx_t *ctx, uvp_curl_t **out) {
  if (ctx == NULL || out == NULL)
    return UV_EINVAL;
  uv_loop_t *loop = uvp_ctx_loop(ctx);
  /* A closed context answers UVP_ECLOSED to any promise: ask it for one
   * (and let it go) rather than make handles for nothing. */
  uvp_promise_t *probe;
  int rc = uvp_promise_new(ctx, &probe);
  if (rc != 0)
    return rc;
  uvp_promise_release(probe);

  uvp_curl_t *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return UV_ENOMEM;
  c->ctx = ctx;
  c->loop = loop;
  c->busy_limit_ms = UVP_CURL_BUSY_LIMIT_DEFAULT;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    free(c);
    return UV_ENOMEM;
  }
  if ((c->multi = curl_multi_init()) == NULL) {
    curl_global_cleanup();
    free(c);
    return UV_ENOMEM;
  }
  if ((rc = uv_timer_init(loop, &c->timer)) != 0) {
    curl_multi_cleanup(c->multi);
    curl_global_cleanup();
    free(c);
    return rc;
  }
  c->timer.data = c;
  c->handles = 1;
  if ((rc = uv_async_init(loop, &c->keep, NULL)) != 0) {
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    curl_global_cleanup();
    c->closing = true; /* the timer's close callback frees c */
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    return rc;
  }
  c->keep.data = c;
  c->handles = 2;
  uv_unref((uv_handle_t *)&c->timer);
  uv_unref((uv_handle_t *)&c->keep);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
  *out = c;
  return 0;
}

CURLM *uvp_curl_multi(const uvp_curl_t *c) {
  return c != NULL && !c->closing ? c->multi : NULL;
}

int uvp_curl_close(uvp_curl_t *c) {
  if (c == NULL || c->closing)
    return UV_EINVAL;
  if (c->depth > 0)
    return UV_EBUSY;
  wd_end(c);
  /* Every transfer still in flight: out of the multi, then its promise
   * cancelled without our hook (its work is done here).  After
   * uvp_ctx_close none is left: the teardown ran the hooks. */
  while (c->first != NULL) {
    xfer_t *x = c->first;
    if (x->queued) /* (closed from code the drain ran) */
      unqueue(c, x);
    x->cancelled = true;
    xfer_remove(c, x);
    xfer_abandon(c, x);
  }
  while (c->dhead != NULL) { /* adds still waiting: never in the multi */
    xfer_t *x = c->dhead;
    unqueue(c, x);
    xfer_abandon(c, x);
  }
  c->closing = true;
  /* Stop watching before libcurl closes the sockets. */
  for (size_t i = 0; i < c->nslots; i++) {
    sock_t *s = c->slots[i].cur;
    if (s != NULL) {
      curl_multi_assign(c->multi, s->fd, NULL); /* no REMOVE for it now */
      sock_drop(c, s);
    }
  }
  enter(c);
  curl_multi_cleanup(c->multi);
  c->depth--;
  c->multi = NULL;
  curl_global_cleanup();
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  uv_close((uv_handle_t *)&c->keep, on_handle_closed);
  return 0;
}

int uvp_curl_set_busy_limit(uvp_curl_t *c, uint64_t ms) {
  if (c == NULL || c->closing)
    return UV_EINVAL;
#ifdef UVP_CURL_WATCHDOG
  if (c->wd_started) {
    uv_mutex_lock(&c->wd_lock);
    c->busy_limit_ms = ms;
    if (c->wd_sleeping)
      uv_cond_signal(&c->wd_cond);
    uv_mutex_unlock(&c->wd_lock);
    return 0;
  }
#endif
  c->busy_limit_ms = ms;
  if (c->stats.running > 0)
    wd_set_active(c, true);
  return 0;
}

int uvp_curl_stats(const uvp_curl_t *c, uvp_curl_stats_t *out) {
  if (c == NULL || out == NULL)
    return UV_EINVAL;
  *out = c->stats;
  return 0;
}

/* ---- transfers ----------------------------------------------------------- */

/* The one place a transfer is named, as "GET url" (its kind is "HTTP"):
 * for the task dump (uvp_ctx_dump_tasks) and uvp_curl_dump. */
static int transfer_target(const xfer_t *x, char *buf, size_t len) {
  char *method = NULL, *url = NULL;
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_METHOD, &method);
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &url);
  return snprintf(buf, len, "%s %s", method != NULL ? method : "GET",
                  url != NULL && *url != '\0' ? url : "(URL not read yet)");
}

static int describe(uvp_inflight_t *w, char *buf, size_t cap) {
  return transfer_target(w->data, buf, cap);
}

static const uvp_inflight_class_t xfer_class = {"HTTP", on_cancel, describe, 0};

int uvp_curl_dump(uvp_curl_t *c, FILE *stream) {
  if (c == NULL || stream == NULL)
    return UV_EINVAL;
  int n = 0;
  uint64_t now = uv_now(c->loop);
  for (xfer_t *x = c->first; x != NULL; x = x->next, n++) {
    char name[512];
    transfer_target(x, name, sizeof(name));
    fprintf(stream, "HTTP %s for %llu ms (promise at %s:%d)\n", name,
            (unsigned long long)(now - x->start_ms),
            x->file != NULL ? x->file : "?", x->line);
  }
  return n;
}

static void on_cancel(uvp_inflight_t *w, int code) {
  xfer_t *x = w->data;
  uvp_curl_t *c = x->c;
  (void)code;
  x->cancelled = true;
  if (x->queued)
    return; /* the queue drops it */
  if (c->depth > 0) {
    defer(c, x);
    return;
  }
  xfer_drop(c, x);
  drain(c);
}

/* Add x to the multi and let libcurl start it now: it reads the URL and
 * begins resolving or connecting, so the transfer is under way (and named
 * by its URL) when the call returns. */
static int add_now(uvp_curl_t *c, xfer_t *x) {
  int rc = xfer_room(c);
  if (rc != 0)
    return rc;
  x->errbuf[0] = '\0';
  curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->errbuf);
  enter(c);
  CURLMcode mc = curl_multi_add_handle(c->multi, x->easy);
  c->depth--;
  if (mc != CURLM_OK) {
    curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, NULL);
    return mc == CURLM_OUT_OF_MEMORY   ? UV_ENOMEM
           : mc == CURLM_ADDED_ALREADY ? UV_EBUSY
                                       : UV_EINVAL;
  }
  x->state = X_ADDED;
  xfer_link(c, x);
  c->stats.started++;
  x->start_ms = uv_now(c->loop);
  return 0;
}

/* Every transfer, perform's and fetch's, starts here: its record starts
 * (see the top).  On an error the caller frees x, which ends it. */
static int start(uvp_curl_t *c, xfer_t *x, uvp_promise_t **out) {
  int rc = uvp_promise_new_at(c->ctx, &x->p, x->file, x->line);
  if (rc != 0)
    return rc;
  x->w.data = x;
  if ((rc = uvp_inflight_start(c->ctx, &x->w, x->p, &xfer_class)) != 0) {
    uvp_promise_release(x->p); /* pending, no hook: nothing runs */
    x->p = NULL;
    return rc;
  }
  if (c->depth > 0) {
    x->state = X_ADD_PENDING;
    defer(c, x);
  } else if ((rc = add_now(c, x)) != 0) {
    uvp_inflight_end(&x->w); /* its hook goes with it */
    uvp_promise_release(x->p);
    x->p = NULL;
    return rc;
  }
  *out = uvp_promise_retain(x->p);
  if (x->state == X_ADDED)
    action(c, CURL_SOCKET_TIMEOUT, 0);
  return 0;
}

static bool easy_in_use(const uvp_curl_t *c, const CURL *easy) {
  if (xfer_find(c, easy) != NULL)
    return true;
  for (const xfer_t *x = c->dhead; x != NULL; x = x->dnext)
    if (x->easy == easy)
      return true;
  return false;
}

int uvp_curl_perform_at(uvp_curl_t *c, CURL *easy, uvp_promise_t **out,
                        const char *file, int line) {
  if (c == NULL || easy == NULL || out == NULL)
    return UV_EINVAL;
  if (c->closing)
    return UVP_ECLOSED;
  if (easy_in_use(c, easy))
    return UV_EBUSY;
  xfer_t *x = calloc(1, sizeof(*x));
  if (x == NULL)
    return UV_ENOMEM;
  x->c = c;
  x->easy = easy;
  x->file = file;
  x->line = line;
  int rc = start(c, x, out);
  if (rc != 0)
    free(x);
  return rc;
}

/* ---- the end of a transfer ----------------------------------------------- */

static void response_free(void *p) {
  uvp_curl_response_t *r = p;
  curl_easy_cleanup(r->easy);
  free(r->body.base);
  free((void *)r->headers); /* the array and the strings: one block */
  free(r);
}

/* The response of a finished fetch: it takes the easy handle and the body
 * over; the headers are copied into one block with their array. */
static uvp_curl_response_t *response_new(xfer_t *x) {
  fetch_t *f = x->fetch;
  size_t arr = f->nheaders * sizeof(uvp_curl_header_t);
  uvp_curl_response_t *r = calloc(1, sizeof(*r));
  char *block = malloc(arr + f->hdr_len + 1);
  char *body = f->body != NULL ? f->body : malloc(1);
  if (r == NULL || block == NULL || body == NULL) {
    free(r);
    free(block);
    if (body != f->body)
      free(body);
    return NULL;
  }
  uvp_curl_header_t *h = (uvp_curl_header_t *)(void *)block;
  char *s = block + arr;
  if (f->hdr_len > 0)
    memcpy(s, f->hdr, f->hdr_len);
  for (size_t i = 0; i < f->nheaders; i++) {
    h[i].name = s;
    s += strlen(s) + 1;
    h[i].value = s;
    s += strlen(s) + 1;
  }
  body[f->body_len] = '\0';
  f->body = NULL;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r->status);
  r->body.base = body;
  r->body.len = f->body_len;
  r->bytes = f->bytes;
  r->nheaders = f->nheaders;
  r->headers = h;
  r->easy = x->easy;
  /* Nothing of the binding's stays reachable from the easy. */
  curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, NULL);
  curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, NULL);
  curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, NULL);
  curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, NULL);
  curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, NULL);
  return r;
}

/* Out of the multi and settled: with libcurl's result, or the binding's
 * own failure (x->fail).  Then x goes. */
static void finish(uvp_curl_t *c, xfer_t *x, CURLcode result) {
  xfer_remove(c, x);
  long conns = 0;
  if (curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &conns) == CURLE_OK &&
      conns > 0)
    c->stats.connects += (uint64_t)conns;
  c->stats.finished++;
  if (result != CURLE_OK && x->fail == 0 && wd_ended(c, x->easy)) {
    uvp_curl_error_t *e = malloc(sizeof(*e));
    if (e != NULL) { /* (libcurl's words cut short: the whole fits) */
      e->code = result;
      snprintf(e->message, sizeof(e->message),
               "the binding ended the connection: one call into libcurl "
               "read it for %llu ms without returning (busy limit; libcurl "
               "said: %.96s)",
               (unsigned long long)c->busy_limit_ms,
               x->errbuf[0] != '\0' ? x->errbuf : curl_easy_strerror(result));
    }
    uvp_promise_reject(x->p, UV_ETIMEDOUT, e, free);
  } else if (x->fail != 0) {
    const char *msg = x->fail_msg != NULL ? x->fail_msg : uvp_strerror(x->fail);
    uvp_promise_reject(x->p, x->fail, error_new(CURLE_WRITE_ERROR, msg), free);
  } else if (result != CURLE_OK) {
    uvp_curl_error_t *e = error_new(result, x->errbuf);
    const char *msg = e != NULL ? e->message : x->errbuf;
    uvp_promise_reject(x->p, map_code(result, x->easy, msg), e, free);
  } else if (x->fetch != NULL) {
    uvp_curl_response_t *r = response_new(x);
    if (r != NULL) {
      x->easy = NULL; /* the response's now */
      fetch_free(x->fetch);
      x->fetch = NULL;
      uvp_promise_resolve(x->p, r, response_free);
    } else {
      uvp_promise_reject(x->p, UV_ENOMEM, NULL, NULL);
    }
  } else {
    uvp_promise_resolve(x->p, x->easy, NULL);
  }
  uvp_promise_t *p = x->p;
  xfer_free(x);
  uvp_promise_release(p); /* may run the program's code: x is gone */
}

/* ---- the convenience ----------------------------------------------------- */

static char *fmt(const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  char *s = NULL;
  if (vasprintf(&s, f, ap) < 0)
    s = NULL;
  va_end(ap);
  return s;
}

/* Stop the transfer with the binding's own code: libcurl then ends it
 * with CURLE_WRITE_ERROR, and finish() rejects with `code`. */
static size_t refuse(xfer_t *x, int code, char *msg) {
  if (x->fail == 0) {
    x->fail = code;
    x->fail_msg = msg;
  } else {
    free(msg);
  }
  return 0;
}

static int grow(char **buf, size_t *cap, size_t need) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : 1024;
  while (n < need)
    n *= 2;
  char *b = realloc(*buf, n);
  if (b == NULL)
    return UV_ENOMEM;
  *buf = b;
  *cap = n;
  return 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg) {
  xfer_t *x = arg;
  fetch_t *f = x->fetch;
  size_t n = size * nmemb;
  if (n > f->max_body - f->bytes)
    return refuse(x, UV_EFBIG,
                  fmt("response body larger than %zu bytes", f->max_body));
  if (!(f->flags & UVP_CURL_DISCARD_BODY)) {
    if (grow(&f->body, &f->body_cap, f->body_len + n + 1) != 0)
      return refuse(x, UV_ENOMEM, NULL);
    memcpy(f->body + f->body_len, ptr, n);
    f->body_len += n;
  }
  f->bytes += n;
  return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *arg) {
  xfer_t *x = arg;
  fetch_t *f = x->fetch;
  size_t n = size * nitems;
  /* The cap counts every byte of every response's head the transfer
   * reads: those of redirects, 1xx answers and a proxy's CONNECT answer
   * too, so that no line resets it (a hostile server's lines beginning
   * with "HTTP/" did, until libcurl's own 300 KB limit). */
  f->header_bytes += n;
  if (f->header_bytes > f->max_header)
    return refuse(x, UV_EMSGSIZE,
                  fmt("response header larger than %zu bytes", f->max_header));
  size_t len = n;
  while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
    len--;
  bool status = n >= 5 && memcmp(buf, "HTTP/", 5) == 0;
  if (status && !f->in_head) {
    /* A response's status line (after a redirect, a 1xx, a proxy's
     * CONNECT answer): the headers kept are the final response's. */
    f->in_head = true;
    f->hdr_len = 0;
    f->nheaders = 0;
    return n;
  }
  if (len == 0)
    f->in_head = false; /* the blank line: that head is whole */
  const char *colon = memchr(buf, ':', len);
  if (len == 0 || colon == NULL || buf[0] == ' ' || buf[0] == '\t' || status)
    return n; /* the blank line, an obsolete fold, no header, a line
                 beginning with HTTP/ inside a head (no header name) */
  size_t nlen = (size_t)(colon - buf);
  const char *v = colon + 1, *end = buf + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  size_t vlen = (size_t)(end - v);
  if (grow(&f->hdr, &f->hdr_cap, f->hdr_len + nlen + vlen + 2) != 0)
    return refuse(x, UV_ENOMEM, NULL);
  memcpy(f->hdr + f->hdr_len, buf, nlen);
  f->hdr[f->hdr_len + nlen] = '\0';
  memcpy(f->hdr + f->hdr_len + nlen + 1, v, vlen);
  f->hdr[f->hdr_len + nlen + 1 + vlen] = '\0';
  f->hdr_len += nlen + vlen + 2;
  f->nheaders++;
  return n;
}

static int fetch_setup(xfer_t *x, const char *url,
                       const uvp_curl_fetch_opts_t *o) {
  CURL *e = x->easy;
  fetch_t *f = x->fetch;
  f->max_body = o->max_body ? o->max_body : UVP_CURL_MAX_BODY_DEFAULT;
  f->max_header = o->max_header ? o->max_header : UVP_CURL_MAX_HEADER_DEFAULT;
  f->flags = o->flags;
  if (curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK)
    return UV_ENOMEM;
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  if (o->body != NULL) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    if (curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, o->body) != CURLE_OK)
      return UV_ENOMEM;
  }
  if (o->method != NULL) {
    if (strcmp(o->method, "HEAD") == 0)
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(o->method, "GET") != 0 &&
             curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method) != CURLE_OK)
      return UV_ENOMEM;
  }
  for (const char *const *h = o->headers; h != NULL && *h != NULL; h++) {
    struct curl_slist *l = curl_slist_append(f->req_headers, *h);
    if (l == NULL)
      return UV_ENOMEM;
    f->req_headers = l;
  }
  if (f->req_headers != NULL)
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->req_headers);
  if (o->timeout_ms != 0)
    curl_easy_setopt(
        e, CURLOPT_TIMEOUT_MS,
        (long)(o->timeout_ms > (uint64_t)LONG_MAX ? LONG_MAX : o->timeout_ms));
  if (o->setup != NULL) {
    int rc = o->setup(o->setup_arg, e);
    if (rc != 0)
      return rc < 0 ? rc : UV_EINVAL;
  }
  return 0;
}

int uvp_curl_fetch_at(uvp_curl_t *c, const char *url,
                      const uvp_curl_fetch_opts_t *opts, uvp_promise_t **out,
                      const char *file, int line) {
  static const uvp_curl_fetch_opts_t defaults;
  if (c == NULL || url == NULL || out == NULL)
    return UV_EINVAL;
  if (c->closing)
    return UVP_ECLOSED;
  xfer_t *x = calloc(1, sizeof(*x));
  fetch_t *f = calloc(1, sizeof(*f));
  CURL *e = curl_easy_init();
  if (x == NULL || f == NULL || e == NULL) {
    free(x);
    free(f);
    curl_easy_cleanup(e);
    return UV_ENOMEM;
  }
  x->c = c;
  x->easy = e;
  x->fetch = f;
  x->file = file;
  x->line = line;
  int rc = fetch_setup(x, url, opts != NULL ? opts : &defaults);
  if (rc == 0)
    rc = start(c, x, out);
  if (rc != 0)
    xfer_free(x);
  return rc;
}

const char *uvp_curl_response_header(const uvp_curl_response_t *res,
                                     const char *name) {
  if (res == NULL || name == NULL)
    return NULL;
  for (size_t i = 0; i < res->nheaders; i++)
    if (strcasecmp(res->headers[i].name, name) == 0)
      return res->headers[i].value;
  return NULL;
}
