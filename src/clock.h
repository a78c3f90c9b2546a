/* Private to src/: uvp's timers, on the loop's clock or on a context's
 * virtual clock (clock.c, uvp_ctx_set_clock).
 *
 * Every timer of uvp (a delay, a timeout, a deadline) is a uvp__timer_t:
 * a real uv_timer_t, so that closing it, keeping the loop alive with it
 * (or not: UVP_UNREF, a deadline's) and freeing its owner in the close
 * callback are the same on either clock.  On the virtual clock its due
 * time lives in the clock's own heap instead: the handle is started far
 * in the future (it keeps the loop alive as the timer would, but never
 * fires in real time), or at 0 when its virtual time has come already,
 * and the clock calls the callback when virtual time reaches it.
 *
 * While real work is in flight (the context's head counts it: sched.h),
 * automatic advance does not jump (see clock.c). */
#ifndef UVP_CLOCK_H
#define UVP_CLOCK_H

#include "sched.h"

typedef struct uvp__timer_s uvp__timer_t;
typedef struct uvp__vtimer_s uvp__vtimer_t; /* the virtual clock's part */
struct uvp__timer_s {
  uv_timer_t handle; /* first; its data is the owner's */
  /* Until uvp__timer_close: the virtual clock's part, NULL on the loop's
   * clock.  From then on (uv_is_closing): the caller's close callback.
   * Nothing of the virtual clock is in the timer itself: a program that
   * never turns the clock on does not pay for it in every timer. */
  union {
    uvp__vtimer_t *v;
    uv_close_cb closed;
  } u;
  /* The context whose work in the loop the timer counts as until its
   * close has run. */
  uvp_ctx_t *ctx;
};

/* The bytes the owner of a timer made now on ctx's clock allocates for
 * the clock's part (0 while the clock is the loop's), to give to
 * uvp__timer_init; aligned as a pointer is, so `owner + 1` serves. */
size_t uvp__timer_extra(const uvp_ctx_t *ctx);
/* uv_timer_init on ctx's loop, on ctx's clock as it is now; data as given.
 * `unref`: the timer does not keep the loop alive.  `extra`:
 * uvp__timer_extra(ctx) bytes that live as long as the timer (NULL if
 * that is 0).  Cannot fail. */
void uvp__timer_init(uvp_ctx_t *ctx, uvp__timer_t *t, void *data, bool unref,
                     void *extra);
/* The present on ctx's clock: the virtual clock's, or the loop's read
 * afresh (uv_hrtime), never before uv_now.  What a call sets counts from
 * it (a deadline's point, what is left of it). */
uint64_t uvp__now_fresh(const uvp_ctx_t *ctx);
/* Start (or restart) it to call cb(&t->handle) `ms` from now: from the
 * present (uvp__now_fresh), not from the loop's cached time. */
void uvp__timer_start(uvp__timer_t *t, uv_timer_cb cb, uint64_t ms);
void uvp__timer_stop(uvp__timer_t *t);
/* Stop and uv_close it (close_cb as for uv_close, may free t).  The only
 * way to close one: it counts as uvp's work in the loop until closed. */
void uvp__timer_close(uvp__timer_t *t, uv_close_cb close_cb);
/* Milliseconds until it fires on its clock (0: due, or stopped). */
uint64_t uvp__timer_due_in(const uvp__timer_t *t);

#endif
