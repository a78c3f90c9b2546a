/* Private to src/: the mailbox's wake-up (sched.c), how a thread that
 * posted mail tells the loop's thread.
 *
 * libuv's uv_async_send marks its handle busy, writes the loop's eventfd
 * and marks it done, and the loop's thread, woken by the write, spins
 * until the sender is done (libuv 1.44: 997 pauses, then sched_yield, and
 * again).  When the sender's thread and the loop's share a core, the
 * sender is still in its write when the loop wakes, and the loop spins
 * out its time slice: a round trip between two loops on one CPU took 65
 * us, where two threads waking each other through eventfds take 6
 * (docs/internals/calls.md).  On Linux the wake-up is an eventfd of the
 * context's own, watched by a uv_poll_t: a sender writes it, the loop
 * reads it, and neither waits for the other.  Elsewhere, and where no
 * descriptor can be had (the process at its RLIMIT_NOFILE), it is a
 * uv_async_t.  Sends coalesce in both: the mailbox sends only when it was
 * empty. */
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
  int fd;        /* the eventfd, -1 once ended */
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

/* Any thread, until uvp__wake_end: the caller orders the two (sched.c
 * sends and ends under the context's lock). */
void uvp__wake_send(uvp__wake_t *w);

/* The handle is closing, by uvp's uv_close or by its host's: no send comes
 * after this, and what the wake-up holds besides the handle goes (the
 * eventfd, which libuv stopped polling in uv_close).  Idempotent; the
 * handle's close callback stays whoever closed it. */
void uvp__wake_end(uvp__wake_t *w);

#endif
