/* Private to src/: the mailbox's wake-up (sched.c), how a thread that
 * posted mail tells the loop's thread.
 *
 * libuv's uv_async_send marks its handle busy, writes the loop's eventfd
 * and marks it done, and the loop's thread, woken by the write, spins
 * until the sender is done (libuv 1.44: 997 pauses, then sched_yield, and
 * again).  When the sender's thread and the loop's share a core, the
 * sender is still in its write when the loop wakes, and the loop spins
 * out its time slice: a round trip between two loops on one CPU took 66
 * us, where two threads waking each other through eventfds take 6, and
 * uvp's own takes 8 (docs/internals/calls.md 23.4).  On Linux the
 * wake-up is an eventfd of the context's own, watched by a uv_poll_t: a
 * sender writes it, the loop reads it, and neither waits for the other.
 * Elsewhere, and where no descriptor can be had (the process at its
 * RLIMIT_NOFILE), it is a uv_async_t.  Sends coalesce in both: the mailbox
 * sends only when it was empty. */
#ifndef UVP_WAKE_H
#define UVP_WAKE_H

#include <stdbool.h>
#include <uv.h>

#if defined(__linux__)
#define UVP__WAKE_EVENTFD 1
#endif

typedef struct uvp__wake_s uvp__wake_t;
typedef void (*uvp__wake_cb)(uvp__wake_t *w);

struct uvp__wake_s {
  union { /* first: a handle's callback finds w at its address */
    uv_async_t async;
#if defined(UVP__WAKE_EVENTFD)
    uv_poll_t poll;
#endif
  } h;
  int fd;        /* the eventfd (-1: none) */
  bool by_async; /* h.async: no eventfd */
  uvp__wake_cb cb;
};

/* An active wake-up on loop, referenced as a libuv handle is: cb(w) runs
 * on the loop's thread after one or more sends.  The handle's data is the
 * caller's.  Errors: libuv's init's; then nothing is open. */
int uvp__wake_init(uv_loop_t *loop, uvp__wake_t *w, uvp__wake_cb cb);

static inline uv_handle_t *uvp__wake_handle(uvp__wake_t *w) {
  return (uv_handle_t *)&w->h;
}

/* Any thread.  With libuv's async, only while its handle is open (the
 * caller orders its sends before the close: sched.c sends under the
 * context's lock).  With an eventfd (uvp__wake_unlocked), until
 * uvp__wake_free, the handle closed or not: a send writes the eventfd,
 * which the wake-up keeps to the end, and reads nothing of the loop's,
 * which the host may free once the handle is closed. */
void uvp__wake_send(uvp__wake_t *w);
static inline bool uvp__wake_unlocked(const uvp__wake_t *w) {
  return !w->by_async;
}

/* No send comes any more (the context's memory goes): the eventfd is
 * closed.  The handle was closed before, by uvp or by its host (libuv
 * stopped polling the descriptor in uv_close). */
void uvp__wake_free(uvp__wake_t *w);

#endif
