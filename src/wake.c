/* The mailbox's wake-up (wake.h). */
#include "wake.h"

#include <stddef.h>

_Static_assert(offsetof(uvp__wake_t, h) == 0,
               "a handle's callback finds the wake-up at its address");

static void async_cb(uv_async_t *h) {
  uvp__wake_t *w = (uvp__wake_t *)h;
  w->cb(w);
}

#if defined(UVP__WAKE_EVENTFD)
#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void poll_cb(uv_poll_t *h, int status, int events) {
  uvp__wake_t *w = (uvp__wake_t *)h;
  uint64_t n;
  (void)status; /* an eventfd has no errors to poll: the mail is read anyway */
  (void)events;
  /* EAGAIN: an earlier read took this send's count with its own. */
  ssize_t got = read(w->fd, &n, sizeof(n));
  (void)got;
  w->cb(w);
}

int uvp__wake_init(uv_loop_t *loop, uvp__wake_t *w, uvp__wake_cb cb) {
  w->cb = cb;
  w->by_async = false;
  w->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->fd >= 0 && uv_poll_init(loop, &w->h.poll, w->fd) == 0) {
    /* Fails only for a descriptor another watcher of the loop has, which
     * a fresh eventfd is not. */
    (void)uv_poll_start(&w->h.poll, UV_READABLE, poll_cb);
    return 0;
  }
  /* No descriptor (uv_poll_init opens nothing when it fails): libuv's
   * async, which needs none of its own. */
  if (w->fd >= 0)
    close(w->fd);
  w->fd = -1;
  w->by_async = true;
  return uv_async_init(loop, &w->h.async, async_cb);
}

void uvp__wake_send(uvp__wake_t *w) {
  if (w->by_async) {
    (void)uv_async_send(&w->h.async);
    return;
  }
  uint64_t one = 1;
  /* EAGAIN: the count is at its maximum, and the loop is woken all the
   * same. */
  ssize_t n = write(w->fd, &one, sizeof(one));
  (void)n;
}

void uvp__wake_free(uvp__wake_t *w) {
  if (w->fd >= 0)
    close(w->fd);
  w->fd = -1;
}

#else

int uvp__wake_init(uv_loop_t *loop, uvp__wake_t *w, uvp__wake_cb cb) {
  w->cb = cb;
  w->fd = -1;
  w->by_async = true;
  return uv_async_init(loop, &w->h.async, async_cb);
}

void uvp__wake_send(uvp__wake_t *w) { (void)uv_async_send(&w->h.async); }

void uvp__wake_free(uvp__wake_t *w) { (void)w; }

#endif
