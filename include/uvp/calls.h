/** @file
 * Calls between loops: run a function on another context's loop thread
 * and get a promise of what it returned (Seastar's smp::submit_to).
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 */
#ifndef UVP_H_CALLS
#define UVP_H_CALLS

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup calls Calls between loops
 *
 * A program that runs one loop per core keeps what one loop owns (a cache
 * shard, a rate limit, a pool) on that loop, and the others ask for it
 * with a call: `fn` runs on the target context's loop thread, and the
 * caller's promise, on the caller's context, settles with what it
 * returned.  fn returns as a handler does (uvp_ret_t):
 * @verbatim
 *   uvp_ret_value(v, free)   the caller's promise fulfils with v: its
 *                            ownership moves across, free(v) runs on the
 *                            caller's loop thread when the caller's
 *                            promise lets it go
 *   uvp_ret_reject(code, payload, free)
 *                            it rejects with code; the payload moves too
 *   uvp_ret_adopt(q)         q, a promise of the target (the call takes
 *                            the reference), is followed on the target: the
 *                            caller's promise settles as q does.  On
 *                            fulfilment it takes q's value, still q's: the
 *                            call holds q until the caller's promise lets
 *                            the value go, then releases it (q's value is
 *                            freed on the target's loop thread while that
 *                            context is open).  A rejection crosses with
 *                            its code and its cause, not its payload.
 *   uvp_ret_pass()           fulfils with NULL
 * @endverbatim
 *
 * Cancellation crosses both ways, with causes.  Cancelling the caller's
 * promise (uvp_promise_cancel, a deadline, a group, a race, the caller's
 * uvp_ctx_close) cancels q on the target with a cause (a
 * UVP_CAUSE_BINDING whose message names the calling context and the
 * caller's cause), or, if the cut reaches the target before fn ran, fn
 * never runs.  q cancelled on the target (its deadline, its group, a
 * program there) rejects the caller's promise with q's code and a
 * UVP_CAUSE_BINDING naming the target context and q's cause.  A deadline
 * the caller runs under (uvp_deadline_left) is the target's: fn runs
 * under a deadline of the time left, set at the call's site, which
 * watches what fn starts.
 *
 * Teardown.  Closing the target ends each call to it once: a call not yet
 * run never runs, a followed q is torn down with the context, and the
 * caller's promise rejects with UVP_ECLOSED and a cause naming the target
 * context ("the call's target context 0x... was closed").  Closing the
 * caller rejects its calls' promises with UVP_ECLOSED (the caller's own
 * close cause) and cancels their work on the target with a cause naming
 * the caller's context.  A closed caller's context waits, as for any
 * libuv request in flight, for the target to answer (run its loop until
 * uv_run returns): each call holds uv_run() of the caller going until its
 * answer has come, and holds the caller's context (its memory) until
 * then.
 *
 * A target whose loop does not run (not yet started, its uv_run returned,
 * or blocked) leaves a call waiting: it runs once that loop runs, or ends
 * with UVP_ECLOSED at the target's close, and until then nothing bounds
 * the caller's wait but a deadline: a call started under one
 * (uvp_deadline_set(ctx, 200) before uvp_call_start, or a fiber's or a
 * group's deadline_ms) rejects with UV_ETIMEDOUT when it passes.  The
 * caller's task dump names a call its target has left in its mailbox for
 * a second or more: "call into context 0x... whose loop has not run for
 * 3.0 s (not running, or blocked)".
 *
 * The task dump shows the call on both sides: the caller's promise waits
 * for "call into context 0x..." (the target), and the target lists, while
 * it follows fn's promise, a task "call" named "from context 0x..." (the
 * caller) waiting for that promise.  With the recorder on in both
 * contexts, each file has one end of a flow "call" (debug.h).
 *
 * Threads and lifetime.  The target may be any context, on any thread, the
 * caller's own included (fn then runs from the mailbox, never inside the
 * call).  What keeps a context's memory: it is freed during the uv_run()
 * that follows its uvp_ctx_close, once its own work has ended and its loop
 * has closed its handles (before that uv_run returns), and never while a
 * call into it is being made.  A call made into it (uvp_call_start,
 * uvp_call_post, from any thread) once it is closed, or freed, is refused
 * with UVP_ECLOSED, or, if it was already queued, answered with
 * UVP_ECLOSED, once: a thread racing the target's close never reads its
 * memory.  The one rule: uvp tells a freed context by its address, so a
 * program that may make a new context (whose address may be the freed
 * one's) must have stopped calling the old one first (stop at the first
 * UVP_ECLOSED, or join the threads that call it, before the new
 * uvp_ctx_new); a call given an address that was never a context's is
 * refused with UVP_ECLOSED too.  fn runs on the target's loop thread, under
 * no scope of the caller's (slots do not cross).  arg_free(arg) (may be
 * NULL) runs exactly once on the target's loop thread, after fn returned or
 * once it is known fn never runs.
 *
 * Batching.  A call leaves once the caller's run queue has run what is
 * queued when it is started (never inside uvp_call_start): the calls one
 * turn of handlers starts to the same target are queued on the pair's
 * link in one take of its lock, and one message into the target's
 * mailbox (uvp's thread-safe path) runs them all there; the answers
 * their fn give come back the same way, one message for a drain's worth.
 * A call takes a slot of the caller's operation pool: nothing is
 * allocated per call once warm (a link per pair of contexts, on the
 * first call).  docs/internals/calls.md, "Calls between loops", has the
 * figures.
 *
 * The bound.  A pair's queue holds the calls in flight from the caller
 * to the target; by default nothing but memory bounds them (each takes
 * a pool slot, about 600 bytes, until its answer is applied), as for any
 * other operation a program starts.  uvp_call_set_limit bounds them per
 * pair: past the limit, uvp_call_start fails at once with UV_ENOBUFS and
 * starts nothing, the back-pressure a program applies (it waits for an
 * answer, sheds the request, or asks another target).  An error rather
 * than a wait: the caller's loop cannot block, and a queue that grew
 * past the limit instead would be no bound. */
/** @{ */

/** At most `max` calls from ctx in flight to any one target (started, not
 * yet answered on ctx); 0 (the default): no bound but memory.  A
 * uvp_call_start past it fails with UV_ENOBUFS.  Calls already in flight
 * are left alone.  Loop thread of ctx.  Errors: UV_EINVAL (NULL ctx),
 * UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM. */
UVP_EXTERN int uvp_call_set_limit(uvp_ctx_t *ctx, size_t max);

/** The function a call runs on the target (see above).  `target` is the
 * target context, `arg` the call's. */
typedef uvp_ret_t (*uvp_call_fn)(uvp_ctx_t *target, void *arg);

/** @name uvp_call_start, uvp_call_start_at
 * @{ */
/** Run fn(target, arg) on target's loop thread; *out receives one
 * reference to the caller's promise, on ctx.  Loop thread of ctx.  A fiber
 * awaits it as any promise.  Errors (nothing started; arg_free(arg) has
 * run, as uvp.h's "Handing over" says):
 * UV_EINVAL (NULL ctx, target, fn or out), UVP_ECLOSED (ctx closed, or
 * target closed or freed: see "Threads and lifetime"), UVP_ETHREAD, UV_ENOBUFS
 * (uvp_call_set_limit's bound on the calls in flight to target reached),
 * UV_ENOMEM. */
#define uvp_call_start(...) uvp_call_start_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_call_start_at(uvp_ctx_t *ctx, uvp_ctx_t *target,
                                 uvp_call_fn fn, void *arg,
                                 uvp_free_cb arg_free, uvp_promise_t **out,
                                 const char *file, int line);
/** @} */

/** How a call posted from a thread with no context ended, on the target's
 * loop thread: code 0 and the value (with a fulfilment by value, `value`
 * and free_cb are the callback's to keep or free; with a followed
 * promise's fulfilment the value is borrowed for the callback's run and
 * free_cb is NULL), or a code < 0 (UVP_ECLOSED: the target was closed
 * before the call ended). */
typedef void (*uvp_call_done_cb)(void *done_arg, int code, void *value,
                                 uvp_free_cb free_cb);

/** The form for a thread with no context (a thread pool's, a library's
 * callback thread): fn(target, arg) runs on target's loop thread, then
 * done(done_arg, ...) there, once, with what fn's result settled as (see
 * uvp_call_done_cb); there is no promise, no cancellation and no deadline.
 * Any thread.  Errors (nothing posted; arg_free(arg) has run, on the
 * calling thread: uvp.h, "Handing over"): UV_EINVAL (NULL target, fn or
 * done), UVP_ECLOSED (target closed or freed: see "Threads and lifetime"),
 * UV_ENOMEM (each posted call takes one allocation). */
UVP_EXTERN int uvp_call_post(uvp_ctx_t *target, uvp_call_fn fn, void *arg,
                             uvp_free_cb arg_free, uvp_call_done_cb done,
                             void *done_arg);
/** @} */

#ifdef __cplusplus
}
#endif

#endif
