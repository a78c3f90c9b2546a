/* The busy limit (uvp-curl.c's opening comment says why and how): the
 * watchdog thread, the sockets it may look at, the connections it ended,
 * the one call into libcurl it times (uvp_curl__socket_action), and
 * uvp_curl_set_busy_limit.  It calls no other file of the binding:
 * transfers.c wakes it, sockets.c tells it of sockets, transfers.c asks it
 * whether it ended a finished transfer's connection. */
#include "curl-internal.h"

#ifdef __linux__
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <sys/ioctl.h>
#define UVP_CURL_WATCHDOG 1
#endif

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
void uvp_curl__wd_set_active(uvp_curl_t *c, bool active) {
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
void uvp_curl__wd_end(uvp_curl_t *c) {
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
int uvp_curl__wd_fd_add(uvp_curl_t *c, curl_socket_t fd) {
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

void uvp_curl__wd_fd_remove(uvp_curl_t *c, curl_socket_t fd) {
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
bool uvp_curl__wd_ended(uvp_curl_t *c, CURL *easy) {
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

/* curl_multi_socket_action, its time watched by the busy limit. */
void uvp_curl__socket_action(uvp_curl_t *c, curl_socket_t fd, int flags) {
  int running;
  atomic_store_explicit(&c->busy_since, uv_hrtime(), memory_order_relaxed);
  atomic_fetch_add_explicit(&c->busy_gen, 1, memory_order_release);
  curl_multi_socket_action(c->multi, fd, flags, &running);
  atomic_fetch_add_explicit(&c->busy_gen, 1, memory_order_release);
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
    uvp_curl__wd_set_active(c, true);
  return 0;
}
