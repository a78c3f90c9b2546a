/* The loop's side of the multi (uvp-curl.c's opening comment: sockets):
 * libcurl's socket callback (CURLMOPT_SOCKETFUNCTION), with a poll handle
 * per socket and a slot per descriptor; its timer callback
 * (CURLMOPT_TIMERFUNCTION) on the binding's uv_timer_t; and the close
 * callbacks of the binding's handles, the last of which frees it.  A
 * socket or the timer ready is one call into libcurl (transfers.c's
 * uvp_curl__action); the sockets are told to the watchdog.  uvp-curl.c
 * sets the callbacks and closes the handles. */
#include "curl-internal.h"

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

void uvp_curl__on_handle_closed(uv_handle_t *h) { handle_gone(h->data); }

/* ---- libcurl's sockets and timer ----------------------------------------- */

static void on_timeout(uv_timer_t *t) {
  uvp_curl__action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

int uvp_curl__on_timer(CURLM *multi, long timeout_ms, void *userp) {
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
  uvp_curl__action(c, s->fd, flags);
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
      uvp_curl__action(c, w->fd, CURL_CSELECT_ERR);
    }
  }
  handle_gone(c);
}

/* libcurl is done with s: stop watching it; its handle closes. */
static void sock_drop(uvp_curl_t *c, sock_t *s) {
  uvp_curl__wd_fd_remove(c, s->fd);
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

/* Every socket libcurl still uses, let go at uvp_curl_close before libcurl
 * closes them. */
void uvp_curl__socks_drop(uvp_curl_t *c) {
  for (size_t i = 0; i < c->nslots; i++) {
    sock_t *s = c->slots[i].cur;
    if (s != NULL) {
      curl_multi_assign(c->multi, s->fd, NULL); /* no REMOVE for it now */
      sock_drop(c, s);
    }
  }
}

int uvp_curl__on_socket(CURL *easy, curl_socket_t fd, int what, void *userp,
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
      uvp_curl__xfer_fail(c, easy, UV_ENOMEM);
      return 0;
    }
    s->c = c;
    s->fd = fd;
    curl_multi_assign(c->multi, fd, s);
    if (slot->cur != NULL) /* closed behind our back: never watched twice */
      sock_drop(c, slot->cur);
    slot->cur = s;
    (void)uvp_curl__wd_fd_add(
        c, fd); /* without it, only the busy limit misses it */
  }
  s->events = events;
  if (s->started || slot->closing == NULL) {
    int rc = sock_watch(c, s);
    if (rc != 0)
      uvp_curl__xfer_fail(c, easy, rc);
  }
  /* else: started by the closing handle's close callback. */
  return 0;
}
