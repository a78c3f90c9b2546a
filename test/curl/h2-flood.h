/* A hostile HTTP/2 server on a thread of its own, for test-curl and
 * test-e2e-fanout-faults (issue 51): it answers a request with nothing but
 * HTTP/2 control frames, as fast as the socket takes them, so that
 * libcurl 7.88 stays inside one curl_multi_socket_action (its HTTP/2 read
 * loop, cf_h2_recv, reads until the socket is empty or the stream has
 * data: it never is, and never has).  Written with raw frames, no HTTP/2
 * library: it only needs to be hostile.
 *
 * It accepts one connection on 127.0.0.1 and reads the client's first
 * bytes: the HTTP/2 connection preface (prior knowledge) or an HTTP/1.1
 * request asking for an Upgrade to h2c, which it grants (101).  Then it
 * sends an empty SETTINGS and the ACK of the client's, and then only
 * WINDOW_UPDATE frames on the connection (increment 1), or PING frames
 * each followed by a frame of an unknown type (64 bytes, which HTTP/2
 * says to ignore: so that fewer than 1000 PINGs come in libcurl's 32 KiB
 * reads, nghttp2's limit on the ACKs it queues, NGHTTP2_ERR_FLOODED),
 * reading and dropping what the client sends meanwhile (its PING ACKs),
 * until the client is gone, a second passes with nothing sent or read (a
 * client that gave up but kept the connection), or `secs` seconds have
 * passed since the listener was made.  Nothing of it touches the test's loop.
 */
#ifndef UVP_TEST_CURL_H2_FLOOD_H
#define UVP_TEST_CURL_H2_FLOOD_H

#if defined(_WIN32)
#include <string.h>
/* Not on Windows (.ci/mingw): the busy limit it tests reads Linux's
 * TCP_INFO, and libcurl is built there without HTTP/2; its tests skip
 * (H2_FLOOD_SKIP). */
#include <uv.h>
enum { FLOOD_WINDOW_UPDATE = 0, FLOOD_PING = 1 };
typedef struct h2_flood_s {
  int port, connected;
  uint64_t flooded;
  double flood_ms;
} h2_flood_t;
static inline int h2_flood_start(h2_flood_t *s, int kind, unsigned secs) {
  (void)kind, (void)secs;
  memset(s, 0, sizeof(*s));
  return UV_ENOTSUP;
}
static inline void h2_flood_join(h2_flood_t *s) { (void)s; }
#define H2_FLOOD_SKIP()                                                        \
  SKIP_ON_WINDOWS("the busy limit reads Linux's TCP_INFO, and libcurl is "     \
                  "built there without HTTP/2")
#else
#define H2_FLOOD_SKIP() ((void)0)

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

enum { FLOOD_WINDOW_UPDATE = 0, FLOOD_PING = 1 };

typedef struct h2_flood_s {
  int fd, port;
  int kind;         /* FLOOD_WINDOW_UPDATE or FLOOD_PING */
  unsigned secs;    /* the most it floods (from the listener's making) */
  uint64_t start;   /* uv_hrtime() at h2_flood_start */
  int connected;    /* a client came */
  uint64_t flooded; /* bytes of frames sent after the handshake */
  double flood_ms;  /* how long the flood went on */
  uv_thread_t tid;
} h2_flood_t;

static size_t h2_frame(unsigned char *p, int type, int flags, uint32_t sid,
                       const void *payload, size_t len) {
  p[0] = (unsigned char)(len >> 16);
  p[1] = (unsigned char)(len >> 8);
  p[2] = (unsigned char)len;
  p[3] = (unsigned char)type;
  p[4] = (unsigned char)flags;
  p[5] = (unsigned char)(sid >> 24);
  p[6] = (unsigned char)(sid >> 16);
  p[7] = (unsigned char)(sid >> 8);
  p[8] = (unsigned char)sid;
  if (len > 0)
    memcpy(p + 9, payload, len);
  return 9 + len;
}

/* Milliseconds left before the end, at least 0. */
static int h2_flood_left_ms(const h2_flood_t *s) {
  uint64_t end = s->start + (uint64_t)s->secs * 1000000000u;
  uint64_t now = uv_hrtime();
  return now >= end ? 0 : (int)((end - now) / 1000000u);
}

/* Write all of buf (blocking, bounded by the end). */
static int h2_flood_send_all(h2_flood_t *s, int c, const void *buf,
                             size_t len) {
  const char *p = buf;
  while (len > 0) {
    struct pollfd pf = {c, POLLOUT, 0};
    if (poll(&pf, 1, h2_flood_left_ms(s)) <= 0)
      return -1;
    ssize_t n = send(c, p, len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static void h2_flood_run(void *arg) {
  h2_flood_t *s = arg;
  struct pollfd lp = {s->fd, POLLIN, 0};
  if (poll(&lp, 1, h2_flood_left_ms(s)) <= 0)
    return;
  int c = accept(s->fd, NULL, NULL);
  if (c < 0)
    return;
  s->connected = 1;
  fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
  static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  char in[65536];
  size_t len = 0;
  int upgrade = 0;
  for (;;) { /* the preface, or a whole HTTP/1.1 request head */
    struct pollfd pf = {c, POLLIN, 0};
    if (poll(&pf, 1, h2_flood_left_ms(s)) <= 0)
      goto out;
    ssize_t n = recv(c, in + len, sizeof(in) - 1 - len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (n <= 0)
      goto out;
    len += (size_t)n;
    in[len] = '\0';
    if (len >= sizeof(preface) - 1 &&
        memcmp(in, preface, sizeof(preface) - 1) == 0)
      break;
    if (strstr(in, "\r\n\r\n") != NULL) {
      upgrade = 1;
      break;
    }
    if (len == sizeof(in) - 1)
      goto out;
  }
  unsigned char hello[256];
  size_t hl = 0;
  if (upgrade) {
    static const char sw[] = "HTTP/1.1 101 Switching Protocols\r\n"
                             "Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    memcpy(hello, sw, sizeof(sw) - 1);
    hl = sizeof(sw) - 1;
  }
  hl += h2_frame(hello + hl, 4, 0, 0, NULL, 0); /* SETTINGS */
  hl += h2_frame(hello + hl, 4, 1, 0, NULL, 0); /* ACK of the client's */
  if (h2_flood_send_all(s, c, hello, hl) != 0)
    goto out;
  /* The flood: a block of whole frames, sent again and again from where
   * the last send stopped, so that the byte stream stays whole frames. */
  enum { FRAMES = 4096 };
  static unsigned char block[FRAMES * (17 + 73)];
  static const char pad[64];
  size_t flen = 0;
  for (int i = 0; i < FRAMES; i++) {
    if (s->kind == FLOOD_PING) {
      flen += h2_frame(block + flen, 6, 0, 0, "12345678", 8);
      flen += h2_frame(block + flen, 0xb0, 0, 0, pad, sizeof(pad));
    } else {
      flen += h2_frame(block + flen, 8, 0, 0, "\0\0\0\1", 4);
    }
  }
  uint64_t t0 = uv_hrtime(), moved = t0;
  size_t off = 0;
  while (h2_flood_left_ms(s) > 0) {
    if (uv_hrtime() - moved > 1000000000u)
      break; /* a second with nothing sent or read: the client is stuck */
    struct pollfd pf = {c, POLLIN | POLLOUT, 0};
    if (poll(&pf, 1, 100) < 0 && errno != EINTR)
      break;
    if (pf.revents & (POLLERR | POLLHUP))
      break;
    if (pf.revents & POLLIN) {
      ssize_t n = recv(c, in, sizeof(in), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        break;
      if (n > 0)
        moved = uv_hrtime();
    }
    if (pf.revents & POLLOUT) {
      ssize_t n = send(c, block + off, flen - off, MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN && errno != EINTR)
        break;
      if (n > 0) {
        moved = uv_hrtime();
        s->flooded += (uint64_t)n;
        off = (off + (size_t)n) % flen;
      }
    }
  }
  s->flood_ms = (double)(uv_hrtime() - t0) / 1e6;
out:
  close(c);
}

/* Listen on 127.0.0.1 (an ephemeral port) and serve one connection on a
 * thread, for `secs` seconds at most. */
static int h2_flood_start(h2_flood_t *s, int kind, unsigned secs) {
  memset(s, 0, sizeof(*s));
  s->kind = kind;
  s->secs = secs;
  s->start = uv_hrtime();
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  s->fd = socket(AF_INET, SOCK_STREAM, 0);
  socklen_t alen = sizeof(a);
  if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      listen(s->fd, 4) != 0 ||
      getsockname(s->fd, (struct sockaddr *)&a, &alen) != 0)
    return -1;
  s->port = ntohs(a.sin_port);
  return uv_thread_create(&s->tid, h2_flood_run, s);
}

/* Wait for the thread (at most `secs` from the start), close the
 * listener. */
static void h2_flood_join(h2_flood_t *s) {
  uv_thread_join(&s->tid);
  close(s->fd);
}

#endif
#endif
