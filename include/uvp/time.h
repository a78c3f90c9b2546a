/** @file
 * Time: delays, timeouts and the context's clock (real or virtual).
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 */
#ifndef UVP_H_TIME
#define UVP_H_TIME

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup time Time */
/** @{ */

/** A timer of uvp keeps the loop alive while it runs, as JavaScript's
 * setTimeout does: a program that awaits a delay or a timeout waits for
 * work in progress, and uv_run does not return before the timer fires or
 * is stopped (its promise cancelled, or a timeout's input settled).  With
 * UVP_UNREF it does not keep the loop alive on its own (Node's
 * timer.unref()): for a timer that only bounds other work.  uvp's internal
 * handles never keep the loop alive; its timers are the program's work.
 * UVP_KEEP_ALIVE, the opt-in of earlier versions, is the default now and
 * still accepted (it changes nothing).
 *
 * Every time uvp takes counts from the call that takes it: uvp_delay,
 * uvp_timeout, uvp_retry's waits and every deadline (see "Deadlines") read
 * the clock afresh (uv_hrtime: the vDSO's, no system call on the usual
 * clock sources), not uv_now, libuv's cached time of the loop's turn,
 * which misses what ran since (start-up work before the first uv_run, a
 * long callback).  libuv's own timers (uv_timer_start) count from uv_now,
 * as its documentation says: call uv_update_time first.  What reads
 * uvp's time reads the cached one: uvp_clock_now on the real clock, the
 * task dumps' ages.  On the virtual clock all of them count from its
 * time. */
enum {
  UVP_KEEP_ALIVE = 2, /**< the default now; accepted, changes nothing */
  UVP_UNREF = 16      /**< the timer alone does not keep the loop alive */
};

/** @name uvp_delay, uvp_delay_at
 * @{ */
/** delay: fulfils with `value` (owned by uvp from the call on, on error too:
 * uvp.h, "Handing over"; free_cb may be NULL) `ms` milliseconds after this
 * call, on the loop's clock.  Cancelling it stops the timer.  flags: 0 or
 * UVP_UNREF (UVP_KEEP_ALIVE: 0).  Errors: UV_EINVAL (NULL ctx or out,
 * unknown flags, both flags), UV_ENOMEM, UVP_ECLOSED.
 * Cancelled: nothing is left: the timer stops, value goes to free_cb. */
#define uvp_delay(...) uvp_delay_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_delay_at(uvp_ctx_t *ctx, uint64_t ms, void *value,
                            uvp_free_cb free_cb, int flags, uvp_promise_t **out,
                            const char *file, int line);
/** @} */

/** @name uvp_timeout, uvp_timeout_at
 * @{ */
/** timeout: settles like `p` if p settles within `ms` of this call; otherwise
 * rejects with UV_ETIMEDOUT: Promise.race([p, timeout(ms)]).  Then p is
 * cancelled (uvp_promise_cancel: its producer's hook runs, and a timed-out
 * request really stops) if the timeout is all that waits for it; a p other
 * consumers wait for is left alone, and they go on waiting, as with
 * Promise.race, and the timeout stops being one of them (cancelling the
 * last of them later cancels p).  UVP_CANCEL_INPUT in flags cancels p in
 * either case; UVP_UNREF keeps uv_run from waiting for the timer alone.
 * Cancelling the result cancels p by the same rule.  The result keeps
 * itself alive while pending (its timer holds it).  Borrows p, or takes
 * your reference to it with UVP_TAKE_INPUTS in flags (the combinators'
 * flag: the call's whatever it returns, released at once on an error).
 * A taken p stays alive until the timeout is done with it (p settled,
 * or given up on, and the timer stopped), then its reference goes.
 * Cancelled: the timer stops, and p is cancelled by the rule above.
 * Errors: UV_EINVAL (NULL p or out, unknown flags, UVP_UNREF with
 * UVP_KEEP_ALIVE), UV_ENOMEM, UVP_ECLOSED. */
enum {
  UVP_CANCEL_INPUT = 8 /**< on timeout, cancel p even if others wait for it */
};
#define uvp_timeout(...) uvp_timeout_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_timeout_at(uvp_promise_t *p, uint64_t ms, int flags,
                              uvp_promise_t **out, const char *file, int line);
/** @} */

/** @name uvp_ctx_set_clock
 * @{ */
/** The virtual clock: uvp's own time under the program's control, for tests
 * of timeouts, retries, delays and deadlines that must not wait (tokio's
 * time::pause, sinon's fake timers).  On it run, for one context: every
 * uvp_delay and uvp_timeout, uvp_retry's backoff, every deadline
 * (uvp_deadline_set, a group's or a fiber's deadline_ms, and
 * uvp_deadline_left), and the ages and times left of the task dumps
 * (uvp_ctx_dump_tasks, uvp_ctx_dump_pending).  Not on it: the program's
 * own uv_timer_t handles, uv_now() and uv_hrtime() (libuv's, which go on
 * in real time), and a library's own timers; nor the time uvp's wrappers
 * take (a connect, a child, a file request run at the kernel's pace).
 *
 * @verbatim
 *   UVP_CLOCK_REAL     the loop's clock (the default).
 *   UVP_CLOCK_VIRTUAL  time stands still but for uvp_clock_advance.  A
 *                      timer of 0 ms (or one whose time has come) still
 *                      fires from the loop's next timer phase.  uv_run
 *                      waits for referenced virtual timers like any
 *                      other, so a loop with nothing else to do waits
 *                      until the program advances the clock: advance it
 *                      from a handler, a fiber or a uv_timer_t of yours,
 *                      or run the loop with UV_RUN_NOWAIT between calls.
 *   UVP_CLOCK_AUTO     virtual, and the loop moves it too: when it is
 *                      about to wait (nothing queued, no handle closing,
 *                      no real timer due) while none of uvp's real work is
 *                      in flight, the clock jumps to the next virtual
 *                      timer, which fires then.  uvp's real work is every
 *                      wrapper's request or handle from its start until
 *                      libuv is done with it (file, DNS, thread-pool work,
 *                      TCP connect/read/write/shutdown, a child process
 *                      until it has exited and its pipes are closed),
 *                      except a uvp_tcp_closed watch.  While any is in
 *                      flight the clock does not jump: it runs at the
 *                      loop's pace, so a reply on its way beats a virtual
 *                      timeout it would beat in real time (a clock that
 *                      jumped would time it out spuriously), and work
 *                      that never completes still times out after the
 *                      timeout's length of real time.  At that pace the
 *                      time read or counted from just after a wait (in
 *                      the callback of what ended it, or in the
 *                      handlers and fibers that run next) includes the
 *                      wait: a timeout started there counts from the
 *                      present, not from before the wait, and the
 *                      present is read then, not at the loop turn's
 *                      start, so a call that took long before it (a slow
 *                      callback, a call into libcurl) does not count
 *                      against it.  The pace begins when the clock first
 *                      sees real work in flight (a timer's start,
 *                      uvp_clock_now, uvp_clock_hold, the loop's next
 *                      prepare phase): over work in flight virtual time
 *                      never runs ahead of real time.  A retry schedule
 *                      of 60 s against a server that refuses at once
 *                      takes milliseconds.  Work the program runs itself
 *                      (its own sockets, threads settling promises) is
 *                      not seen, and the clock may jump while it is under
 *                      way, unless the program holds the clock for it
 *                      (uvp_clock_hold; a binding's work does through
 *                      uvp_inflight_start, uvp-curl's transfers too).
 * @endverbatim
 * Timers fire in order of due time, those due together in the order they
 * were started, the same order every run; what their promises' handlers
 * do runs from the loop afterwards, as on the real clock.  The clock
 * starts at uv_now() of the moment it is turned on.
 * Switching between real and virtual is refused with UV_EBUSY while the
 * context has any promise (uvp_ctx_stats' `live`) or the current scope a
 * deadline: call it right after uvp_ctx_new.  Switching between
 * UVP_CLOCK_VIRTUAL and UVP_CLOCK_AUTO is allowed at any time.  With the
 * clock real nothing of this costs anything measurable
 * (docs/internals/time.md). UVP_CLOCK_AUTO adds two unreferenced handles,
 * closed by uvp_ctx_close. Loop thread.  Errors: UV_EINVAL (NULL ctx, unknown
 * mode), UVP_ECLOSED, UVP_ETHREAD, UV_EBUSY (see above), UV_ENOMEM. */
enum {
  UVP_CLOCK_REAL = 0,    /**< the loop's clock (the default) */
  UVP_CLOCK_VIRTUAL = 1, /**< moves only by uvp_clock_advance */
  UVP_CLOCK_AUTO = 2     /**< virtual, jumping to the next timer when idle */
};
UVP_EXTERN int uvp_ctx_set_clock(uvp_ctx_t *ctx, int mode);
/** @} */

/** Move the virtual clock `ms` milliseconds forward, inside this call:
 * every timer due by then fires, in order, each with the clock at its own
 * due time (so a deadline set by a callback counts from there), including
 * timers started by those callbacks if they fall due by then.  What fires
 * settles or cancels promises now (cancel hooks run inside this call);
 * their handlers run later, from the loop, and what those start counts
 * from the new time: to play a schedule of several steps (a retry's
 * backoffs), advance step by step with the loop run in between, or use
 * UVP_CLOCK_AUTO.  Loop thread (a handler, a fiber, a callback of yours).
 * Errors: UV_EINVAL (NULL ctx, or the clock is not virtual), UVP_ECLOSED,
 * UVP_ETHREAD. */
UVP_EXTERN int uvp_clock_advance(uvp_ctx_t *ctx, uint64_t ms);

/** @name uvp_clock_hold, uvp_clock_unhold
 * @{ */
/** Real work that uvp does not start itself is in flight: a request of
 * the program's own over its own sockets (a binding's work holds the
 * clock through uvp_inflight_start, which replaces these two for it).  While
 * any hold is taken, UVP_CLOCK_AUTO does not jump but runs at the loop's pace,
 * as it does while a wrapper's request is in flight, so that the reply beats a
 * virtual timeout it would beat in real time.  Each uvp_clock_hold is
 * undone by one uvp_clock_unhold when the work ends (completed, failed or
 * cancelled).  On the real clock both count nothing and return 0: take
 * a hold after choosing the clock, as uvp_ctx_set_clock must be called
 * before any promise exists.  Loop thread.  Errors: UV_EINVAL (NULL ctx;
 * for uvp_clock_unhold, no hold taken), UVP_ECLOSED, UVP_ETHREAD. */
UVP_EXTERN int uvp_clock_hold(uvp_ctx_t *ctx);
UVP_EXTERN int uvp_clock_unhold(uvp_ctx_t *ctx);
/** @} */

/** uvp's time for ctx in milliseconds: the virtual clock's, or uv_now()
 * on the real one, the loop's cached time, which a timer started now may
 * count from later (see "Time"; 0 for NULL).  Loop thread; also after
 * uvp_ctx_close while the context's memory lives. */
UVP_EXTERN uint64_t uvp_clock_now(const uvp_ctx_t *ctx);
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* UVP_H_TIME */
