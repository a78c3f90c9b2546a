/* A real nats-server for the NATS binding's tests: started by the test on
 * a port of its own on 127.0.0.1 (never 4222: Debian's unit for it does
 * not run here and must not be relied on), waited for until the port
 * accepts (2.9.10 listens within 0.1 s: a poll every 10 ms, up to 10 s,
 * never a fixed sleep), stopped, frozen (SIGSTOP) and thawed by the
 * test.  The server's path comes from meson (UVP_NATS_SERVER). */
#ifndef NATS_ENV_H
#define NATS_ENV_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

typedef struct nats_server_s {
  int port;
  pid_t pid;
  char url[64];
} nats_server_t;

/* A port on 127.0.0.1 nothing listens on right now (the kernel's pick). */
static inline int nats_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  socklen_t len = sizeof(a);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

static inline bool nats_port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
  close(fd);
  return ok;
}

/* Start the server on s->port (a new one if 0) and wait for its port. */
static inline void nats_server_start(nats_server_t *s) {
  const char *bin = getenv("UVP_NATS_SERVER");
  if (bin == NULL)
    bin = "nats-server";
  if (s->port == 0)
    s->port = nats_free_port();
  snprintf(s->url, sizeof(s->url), "nats://127.0.0.1:%d", s->port);
  char port[16];
  snprintf(port, sizeof(port), "%d", s->port);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 1);
    dup2(null, 2);
    execlp(bin, bin, "-a", "127.0.0.1", "-p", port, (char *)NULL);
    _exit(127);
  }
  s->pid = pid;
  for (int i = 0; i < 1000; i++) { /* 10 s */
    if (nats_port_open(s->port))
      return;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)
      fail_msg("nats-server exited (status %d) before listening", st);
    nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
  }
  fail_msg("nats-server did not listen on %d within 10 s", s->port);
}

/* Stop it (SIGKILL: a server that goes away at once) and reap it. */
static inline void nats_server_kill(nats_server_t *s) {
  if (s->pid <= 0)
    return;
  kill(s->pid, SIGCONT);
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  s->pid = 0;
}

/* The server was started only if nats-server is installed: otherwise the
 * test says why and is skipped. */
static inline bool nats_server_available(void) {
  const char *bin = getenv("UVP_NATS_SERVER");
  return bin != NULL && access(bin, X_OK) == 0;
}

#endif
