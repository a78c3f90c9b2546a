/* A "NATS server" that holds its clients, for the binding's tests of what
 * a real nats-server never does (as ../shared's slow_server.py): on a
 * free port of 127.0.0.1, one thread accepting, each client served by
 * that thread in turn (the tests connect one or two clients):
 *  - PEER_SILENT   accepts, never sends INFO
 *  - PEER_NOPONG   sends INFO, reads CONNECT and PING, never answers
 *  - PEER_TLSSTALL sends INFO with tls_required, then never speaks TLS
 * nats_peer_stop closes every socket (which lets go a client blocked in
 * nats.c: its read ends) and joins the thread. */
#ifndef NATS_PEER_H
#define NATS_PEER_H

#include <poll.h>
#include <pthread.h>
#include <string.h>

#include "nats-env.h"

typedef enum { PEER_SILENT, PEER_NOPONG, PEER_TLSSTALL } peer_mode_t;

typedef struct nats_peer_s {
  peer_mode_t mode;
  int port, lfd, stop[2]; /* stop: a pipe, written to stop */
  int clients[8];
  int nclients;
  pthread_t thread;
  char url[64];
} nats_peer_t;

static void peer_serve(nats_peer_t *p, int c) {
  char info[256];
  int n = snprintf(info, sizeof(info),
                   "INFO {\"server_id\":\"PEER\",\"version\":\"2.9.10\","
                   "\"proto\":1,\"headers\":true,\"max_payload\":1048576,"
                   "\"host\":\"127.0.0.1\",\"port\":%d%s}\r\n",
                   p->port,
                   p->mode == PEER_TLSSTALL ? ",\"tls_required\":true" : "");
  if (p->mode != PEER_SILENT && write(c, info, (size_t)n) != n)
    return;
  /* PEER_NOPONG: what comes (CONNECT, PING) is read by the loop below and
   * never answered */
}

static void *peer_main(void *arg) {
  nats_peer_t *p = arg;
  for (;;) {
    struct pollfd fds[10] = {{p->stop[0], POLLIN, 0}, {p->lfd, POLLIN, 0}};
    int n = 2;
    for (int i = 0; i < p->nclients; i++)
      fds[n++] = (struct pollfd){p->clients[i], POLLIN, 0};
    if (poll(fds, (nfds_t)n, -1) < 0)
      continue;
    if (fds[0].revents != 0)
      return NULL;
    if ((fds[1].revents & POLLIN) &&
        p->nclients < (int)(sizeof(p->clients) / sizeof(p->clients[0]))) {
      int c = accept(p->lfd, NULL, NULL);
      if (c >= 0) {
        p->clients[p->nclients++] = c;
        peer_serve(p, c);
      }
    }
    for (int i = 2; i < n; i++) { /* read and drop what clients send */
      char buf[4096];
      if (fds[i].revents != 0 && read(fds[i].fd, buf, sizeof(buf)) <= 0)
        fds[i].fd = -1; /* closed by the client: stays until the stop */
    }
  }
}

static inline void nats_peer_start(nats_peer_t *p, peer_mode_t mode) {
  memset(p, 0, sizeof(*p));
  p->mode = mode;
  p->lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(p->lfd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(p->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t len = sizeof(a);
  assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&a, &len), 0);
  assert_int_equal(listen(p->lfd, 8), 0);
  p->port = ntohs(a.sin_port);
  snprintf(p->url, sizeof(p->url), "nats://127.0.0.1:%d", p->port);
  assert_int_equal(pipe(p->stop), 0);
  assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
}

static inline void nats_peer_stop(nats_peer_t *p) {
  assert_int_equal(write(p->stop[1], "x", 1), 1);
  assert_int_equal(pthread_join(p->thread, NULL), 0);
  for (int i = 0; i < p->nclients; i++)
    assert_int_equal(close(p->clients[i]), 0);
  assert_int_equal(close(p->lfd), 0);
  assert_int_equal(close(p->stop[0]), 0);
  assert_int_equal(close(p->stop[1]), 0);
}

#endif
