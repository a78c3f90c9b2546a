/* A real nats-server for the NATS binding's tests: started by the test on
 * a port of its own on 127.0.0.1 (never 4222: Debian's unit for it does
 * not run here and must not be relied on), waited for until the port
 * accepts (2.9.10 listens within 0.1 s: a poll every 10 ms, up to 10 s,
 * never a fixed sleep), stopped, frozen (SIGSTOP) and thawed by the
 * test.  The server's path comes from meson (UVP_NATS_SERVER).  A server
 * may be given a config file (nats_server_config: max_payload...). */
#ifndef NATS_ENV_H
#define NATS_ENV_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

typedef struct nats_server_s {
  int port;
  pid_t pid;
  char url[64];
  char conf[64];  /* its config file (nats-server -c), "" if none */
  char store[64]; /* with JetStream (nats_server_jetstream): its store
                     directory (-js -sd), "" if none */
} nats_server_t;

/* The next nats_server_start of s runs with JetStream, on a fresh store
 * directory of its own that its later starts (a restart) keep, removed
 * by nats_server_remove_store. */
static inline void nats_server_jetstream(nats_server_t *s) {
  snprintf(s->store, sizeof(s->store), "/tmp/uvp-nats-js-XXXXXX");
  assert_non_null(mkdtemp(s->store));
}

static inline void nats_rm_rf(const char *dir) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static inline void nats_server_remove_store(nats_server_t *s) {
  if (s->store[0] != '\0')
    nats_rm_rf(s->store);
  s->store[0] = '\0';
}

/* The next nats_server_start of s runs with a config file of `text`
 * (nats-server's format, "max_payload: 1024\n"), in a temporary file that
 * is removed once the server has read it (when it listens): a start after
 * that (a restart) runs without it. */
static inline void nats_server_config(nats_server_t *s, const char *text) {
  snprintf(s->conf, sizeof(s->conf), "/tmp/uvp-nats-XXXXXX");
  int fd = mkstemp(s->conf);
  assert_true(fd >= 0);
  size_t len = strlen(text);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  close(fd);
}

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
    const char *argv[16] = {bin};
    int n = 1;
    if (s->conf[0] != '\0') {
      argv[n++] = "-c";
      argv[n++] = s->conf;
    }
    if (s->store[0] != '\0') {
      argv[n++] = "-js";
      argv[n++] = "-sd";
      argv[n++] = s->store;
    }
    argv[n++] = "-a";
    argv[n++] = "127.0.0.1";
    argv[n++] = "-p";
    argv[n++] = port;
    execvp(bin, (char *const *)argv);
    _exit(127);
  }
  s->pid = pid;
  for (int i = 0; i < 1000; i++) { /* 10 s */
    if (nats_port_open(s->port)) {
      if (s->conf[0] != '\0')
        unlink(s->conf);
      s->conf[0] = '\0';
      return;
    }
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

/* Freeze the server (SIGSTOP) and wait until every thread of it has
 * stopped (its state in /proc is T): a request sent right after a bare
 * kill() may still be answered. */
static inline void nats_server_freeze(nats_server_t *s) {
  char path[64], stat[256];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)s->pid);
  kill(s->pid, SIGSTOP);
  for (int i = 0; i < 1000; i++) { /* 10 s */
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = fread(stat, 1, sizeof(stat) - 1, fp);
    fclose(fp);
    stat[n] = '\0';
    const char *c = strrchr(stat, ')');
    if (c != NULL && c[1] == ' ' && c[2] == 'T')
      return;
    nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
  }
  fail_msg("nats-server %d did not stop within 10 s", (int)s->pid);
}

/* Three servers on 127.0.0.1 forming a JetStream cluster: each a
 * `cluster {}` block with routes to all three on free ports, and a
 * `jetstream {}` store of its own under one temporary directory.  Its
 * JetStream answers once the nodes have met and elected a meta leader
 * (the case waits for it, bounded); nodes are named n1, n2, n3 (a
 * stream's leader is named so). */
typedef struct nats_cluster_s {
  nats_server_t node[3];
  char dir[64];
  char urls[256]; /* every node's URL, comma-separated */
} nats_cluster_t;

static inline void nats_cluster_start(nats_cluster_t *c) {
  int cport[3];
  snprintf(c->dir, sizeof(c->dir), "/tmp/uvp-nats-cluster-XXXXXX");
  assert_non_null(mkdtemp(c->dir));
  for (int i = 0; i < 3; i++) {
    c->node[i].port = nats_free_port();
    cport[i] = nats_free_port();
  }
  c->urls[0] = '\0';
  for (int i = 0; i < 3; i++) {
    char text[1024];
    snprintf(text, sizeof(text),
             "server_name: n%d\n"
             "jetstream { store_dir: \"%s/n%d\" }\n"
             "cluster {\n"
             "  name: uvp\n"
             "  listen: 127.0.0.1:%d\n"
             "  routes: [nats-route://127.0.0.1:%d, "
             "nats-route://127.0.0.1:%d, nats-route://127.0.0.1:%d]\n"
             "}\n",
             i + 1, c->dir, i + 1, cport[i], cport[0], cport[1], cport[2]);
    nats_server_config(&c->node[i], text);
    nats_server_start(&c->node[i]);
    size_t n = strlen(c->urls);
    snprintf(c->urls + n, sizeof(c->urls) - n, "%s%s", n > 0 ? "," : "",
             c->node[i].url);
  }
}

/* The node named `name` ("n2"), or NULL. */
static inline nats_server_t *nats_cluster_node(nats_cluster_t *c,
                                               const char *name) {
  if (name == NULL || name[0] != 'n' || name[1] < '1' || name[1] > '3' ||
      name[2] != '\0')
    return NULL;
  return &c->node[name[1] - '1'];
}

static inline void nats_cluster_stop(nats_cluster_t *c) {
  for (int i = 0; i < 3; i++)
    nats_server_kill(&c->node[i]);
  if (c->dir[0] != '\0')
    nats_rm_rf(c->dir);
  c->dir[0] = '\0';
}

/* The server was started only if nats-server is installed: otherwise the
 * test says why and is skipped. */
static inline bool nats_server_available(void) {
  const char *bin = getenv("UVP_NATS_SERVER");
  return bin != NULL && access(bin, X_OK) == 0;
}

#endif
