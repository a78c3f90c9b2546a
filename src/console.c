/* The live console's socket (uvp_console_listen): a Unix socket served by
 * the context's own loop, a line protocol, and the rules that keep a
 * client from holding the loop or growing the program's memory: a
 * request is read into a fixed buffer, a client is read only while no
 * answer of its waits to be sent (so a flood stays in its own socket),
 * answered at most once every GAP_MS, dropped when it does not take an
 * answer within WRITE_TIMEOUT_MS, and there are at most MAX_CLIENTS.
 * What an answer says is console-snap.c's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "console-int.h"
#include "fiber-compact.h"
#include "stall.h"

#if !defined(_WIN32)
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#endif

#if defined(UVP_HAVE_SO_PEERCRED) || defined(UVP_HAVE_GETPEEREID)
#define CONSOLE_PEER_CHECK 1
#endif

#define LINE_CAP 256
#define MAX_CLIENTS 8
#define GAP_MS 10
#define WRITE_TIMEOUT_MS 5000
#define MAX_ERRORS 16

struct uvp__listener_s {
  uv_pipe_t pipe;
  uvp__console_t *con;
  uvp_ctx_t *ctx;
  struct client_s *clients;
  size_t nclients;
  char *path;
#if defined(CONSOLE_PEER_CHECK)
  dev_t dev; /* the socket file made, removed only if still that one */
  ino_t ino;
#endif
};

typedef struct client_s {
  uv_pipe_t pipe;
  uv_timer_t timer; /* the next answer's time, or the answer's timeout */
  uv_write_t wr;
  uvp__listener_t *l; /* NULL once the listener has let it go */
  uvp_ctx_t *ctx;
  struct client_s *next;
  char in[LINE_CAP];
  size_t inlen;
  char *out;
  uint64_t last_ms; /* loop time of the last answer */
  int errors;
  int open; /* handles not closed yet */
  bool writing, closing, close_after, reading;
} client_t;

#if defined(CONSOLE_PEER_CHECK) /* else uvp_console_listen: UV_ENOTSUP */
static void console_close_hook(uvp__ext_t *ext);

static void console_destroy(uvp__ext_t *ext) {
  uvp__free(UVP__CONTAINER_OF(ext, uvp__console_t, ext));
}

static void console_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  (void)ext;
  (void)out;
}

/* ---- clients ------------------------------------------------------------- */

static void client_handle_closed(uv_handle_t *h) {
  client_t *c = h->data;
  uvp_ctx_t *ctx = c->ctx;
  if (--c->open == 0) {
    uvp__free(c->out);
    uvp__free(c);
  }
  uvp__loop_handle_end(ctx); /* last: may free the context */
}

static void client_close(client_t *c) {
  if (c->closing)
    return;
  c->closing = true;
  uvp__listener_t *l = c->l;
  if (l != NULL) {
    for (client_t **pp = &l->clients; *pp != NULL; pp = &(*pp)->next)
      if (*pp == c) {
        *pp = c->next;
        l->nclients--;
        break;
      }
    c->l = NULL;
  }
  uv_close((uv_handle_t *)&c->pipe, client_handle_closed);
  uv_close((uv_handle_t *)&c->timer, client_handle_closed);
}

static void client_process(client_t *c);

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  client_t *c = h->data;
  (void)hint;
  /* Only what the line buffer has room for: a request cannot make the
   * program hold more than LINE_CAP bytes of it. */
  *buf = uv_buf_init(c->in + c->inlen, (unsigned)(LINE_CAP - c->inlen));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  client_t *c = s->data;
  (void)buf;
  if (n < 0) {
    client_close(c); /* the client went away, or an error */
    return;
  }
  c->inlen += (size_t)n;
  client_process(c);
}

static void set_reading(client_t *c, bool on) {
  if (on == c->reading || c->closing)
    return;
  if (on && uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) != 0) {
    client_close(c);
    return;
  }
  if (!on)
    (void)uv_read_stop((uv_stream_t *)&c->pipe); /* returns 0 always */
  c->reading = on;
}

static void on_timer(uv_timer_t *t) {
  client_t *c = t->data;
  if (c->writing)
    client_close(c); /* it has not taken its answer: it does not read */
  else
    client_process(c);
}

static void on_written(uv_write_t *wr, int status) {
  client_t *c = wr->data;
  uvp__free(c->out);
  c->out = NULL;
  c->writing = false;
  if (c->closing)
    return;
  (void)uv_timer_stop(&c->timer); /* returns 0 always */
  if (status != 0 || c->close_after)
    client_close(c);
  else
    client_process(c);
}

/* Send text (c->out, taken); the client is not read until it is sent. */
static void client_send(client_t *c, char *text, size_t len) {
  c->out = text;
  c->writing = true;
  set_reading(c, false);
  uv_buf_t b = uv_buf_init(text, (unsigned)len);
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->pipe, &b, 1, on_written) != 0) {
    c->writing = false;
    client_close(c);
    return;
  }
  if (!c->closing)
    (void)uv_timer_start(&c->timer, on_timer, WRITE_TIMEOUT_MS, 0);
}

static void client_say(client_t *c, const char *text) {
  size_t n = strlen(text);
  char *t = uvp__malloc(n);
  if (t == NULL) {
    client_close(c);
    return;
  }
  memcpy(t, text, n);
  client_send(c, t, n);
}

/* Answer one request line (no newline, NUL-terminated). */
static void client_answer(client_t *c, const char *line) {
  if (strcmp(line, "snapshot json") == 0 || strcmp(line, "snapshot") == 0 ||
      strcmp(line, "snapshot json recorder") == 0) {
    char *doc;
    size_t len;
    c->last_ms = uv_now(c->pipe.loop);
    if (uvp__console_snapshot(c->l->con, strstr(line, "recorder") != NULL, &doc,
                              &len) != 0)
      client_say(c, "error out of memory\n");
    else
      client_send(c, doc, len);
  } else if (strcmp(line, "ping") == 0) {
    client_say(c, "pong\n");
  } else {
    c->close_after = ++c->errors >= MAX_ERRORS;
    client_say(c, "error unknown command\n");
  }
}

/* Take the next whole request from the buffer and answer it, or read on. */
static void client_process(client_t *c) {
  while (!c->closing && !c->writing && c->l != NULL) {
    char *nl = memchr(c->in, '\n', c->inlen);
    if (nl == NULL) {
      if (c->inlen == LINE_CAP) {
        c->close_after = true;
        client_say(c, "error line too long\n");
      } else {
        set_reading(c, true);
      }
      return;
    }
    uint64_t now = uv_now(c->pipe.loop);
    if (c->last_ms != 0 && now - c->last_ms < GAP_MS && nl != c->in) {
      set_reading(c, false);
      (void)uv_timer_start(&c->timer, on_timer, GAP_MS - (now - c->last_ms), 0);
      return;
    }
    char line[LINE_CAP];
    size_t n = (size_t)(nl - c->in);
    memcpy(line, c->in, n);
    if (n > 0 && line[n - 1] == '\r')
      n--;
    line[n] = '\0';
    c->inlen -= (size_t)(nl - c->in) + 1;
    memmove(c->in, nl + 1, c->inlen);
    if (n > 0)
      client_answer(c, line);
  }
}

/* Whether the peer runs as our effective user. */
static bool peer_is_us(client_t *c) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0)
    return false;
#if defined(UVP_HAVE_SO_PEERCRED)
  struct ucred cr;
  socklen_t len = sizeof(cr);
  return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 &&
         cr.uid == geteuid();
#else
  uid_t uid;
  gid_t gid;
  return getpeereid(fd, &uid, &gid) == 0 && uid == geteuid();
#endif
}

static void on_connection(uv_stream_t *server, int status) {
  uvp__listener_t *l = server->data;
  if (status != 0)
    return;
  client_t *c = uvp__calloc(1, sizeof(*c));
  if (c == NULL)
    return; /* without memory: the connection waits in the backlog */
  c->ctx = l->ctx;
  c->l = l;
  uv_pipe_init(server->loop, &c->pipe, 0);
  uv_timer_init(server->loop, &c->timer);
  c->pipe.data = c->timer.data = c;
  uv_unref((uv_handle_t *)&c->pipe);
  uv_unref((uv_handle_t *)&c->timer);
  c->open = 2;
  uvp__loop_handle_begin(l->ctx);
  uvp__loop_handle_begin(l->ctx);
  c->next = l->clients;
  l->clients = c;
  l->nclients++;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0 ||
      l->nclients > MAX_CLIENTS || !peer_is_us(c)) {
    client_close(c);
    return;
  }
  set_reading(c, true);
}

/* ---- the listener -------------------------------------------------------- */

static void listener_closed(uv_handle_t *h) {
  uvp__listener_t *l = h->data;
  uvp_ctx_t *ctx = l->ctx;
  uvp__free(l->path);
  uvp__free(l);
  uvp__loop_handle_end(ctx); /* last: may free the context */
}

static void listener_close(uvp__console_t *con) {
  uvp__listener_t *l = con->listener;
  if (l == NULL)
    return;
  con->listener = NULL;
  while (l->clients != NULL)
    client_close(l->clients);
  struct stat st;
  if (l->path != NULL && lstat(l->path, &st) == 0 && st.st_dev == l->dev &&
      st.st_ino == l->ino)
    (void)unlink(l->path); /* not ours to fail on: another may have it */
  uv_close((uv_handle_t *)&l->pipe, listener_closed);
  (void)uvp__stall_observe(con->ctx, NULL, NULL); /* only drops a pointer */
  uvp__fiber_time(con->ctx, false);
}

static void console_close_hook(uvp__ext_t *ext) {
  listener_close(UVP__CONTAINER_OF(ext, uvp__console_t, ext));
}

/* A socket file at path that no process listens on (a program that
 * died): removed, so that a restarted program listens again. */
static int clear_stale(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return 0;
  if (!S_ISSOCK(st.st_mode))
    return UV_EADDRINUSE;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0)
    return uv_translate_sys_error(errno);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, strlen(path));
  int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
  int err = errno;
  (void)close(fd); /* nothing was sent on it */
  if (rc == 0)
    return UV_EADDRINUSE;
  if (err != ECONNREFUSED)
    return uv_translate_sys_error(err);
  return unlink(path) == 0 ? 0 : uv_translate_sys_error(errno);
}

/* Bind, make the file ours alone, then listen (nothing can connect before
 * the listen, so nothing connects before the mode is set). */
static int open_socket(uvp__listener_t *l) {
  int rc = clear_stale(l->path);
  if (rc == 0)
    rc = uv_pipe_bind(&l->pipe, l->path);
  if (rc != 0)
    return rc;
  struct stat st;
  if (chmod(l->path, 0600) != 0 || lstat(l->path, &st) != 0) {
    rc = uv_translate_sys_error(errno);
    (void)unlink(l->path); /* made here, not served: not left behind */
    return rc;
  }
  l->dev = st.st_dev;
  l->ino = st.st_ino;
  rc = uv_listen((uv_stream_t *)&l->pipe, 16, on_connection);
  if (rc != 0)
    (void)unlink(l->path); /* the same */
  return rc;
}

static uvp__console_t *console_of(uvp_ctx_t *ctx) {
  static const uvp__ext_t hooks = {.close = console_close_hook,
                                   .destroy = console_destroy,
                                   .stats = console_stats};
  uvp__console_t *con = UVP__EXT_OF(ctx, UVP__EXT_CONSOLE, uvp__console_t);
  if (con == NULL && (con = UVP__EXT_MAKE(ctx, UVP__EXT_CONSOLE, uvp__console_t,
                                          &hooks)) != NULL)
    con->ctx = ctx;
  return con;
}
#endif /* CONSOLE_PEER_CHECK */

int uvp_console_listen(uvp_ctx_t *ctx, const char *path) {
  int rc = path == NULL || path[0] == '\0' ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
#if !defined(CONSOLE_PEER_CHECK)
  return UV_ENOTSUP; /* never serve a peer whose user cannot be checked */
#else
  if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
    return UV_ENAMETOOLONG;
  uvp__console_t *con = console_of(ctx);
  if (con == NULL)
    return UV_ENOMEM;
  if (con->listener != NULL)
    return UV_EBUSY;
  uvp__listener_t *l = uvp__calloc(1, sizeof(*l));
  size_t n = strlen(path) + 1;
  char *copy = uvp__malloc(n);
  if (l == NULL || copy == NULL ||
      uvp__stall_observe(ctx, uvp__console_stall, con) != 0) {
    uvp__free(l);
    uvp__free(copy);
    return UV_ENOMEM;
  }
  memcpy(copy, path, n);
  l->path = copy;
  l->con = con;
  l->ctx = ctx;
  rc = uv_pipe_init(uvp__loop(ctx), &l->pipe, 0);
  if (rc != 0) {
    uvp__free(copy);
    uvp__free(l);
    return rc;
  }
  l->pipe.data = l;
  uv_unref((uv_handle_t *)&l->pipe);
  uvp__loop_handle_begin(ctx);
  con->listener = l;
  rc = open_socket(l);
  if (rc != 0) {
    uvp__free(l->path);
    l->path = NULL; /* not ours to remove: listener_close leaves it */
    listener_close(con);
  } else {
    uvp__fiber_time(ctx, true); /* the tasks' busy and idle times */
  }
  return rc;
#endif
}

int uvp_console_close(uvp_ctx_t *ctx) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
#if defined(CONSOLE_PEER_CHECK)
  uvp__console_t *con = UVP__EXT_OF(ctx, UVP__EXT_CONSOLE, uvp__console_t);
  if (con != NULL && con->listener != NULL) {
    listener_close(con);
    return 0;
  }
#endif
  return UV_ENOENT;
}
