/** @file
 * Version, export macro, error codes, allocation, the types shared by every
 * area, and the context.
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 * Everything else in uvp builds on this: the other area headers include it.
 */
#ifndef UVP_H_COMMON
#define UVP_H_COMMON

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/** @name UVP_VERSION_*
 * @{ */
/** Version of this header (uvp_version: of the library linked). */
#define UVP_VERSION_MAJOR 0
#define UVP_VERSION_MINOR 3
#define UVP_VERSION_PATCH 0
#define UVP_VERSION_HEX                                                        \
  ((UVP_VERSION_MAJOR << 16) | (UVP_VERSION_MINOR << 8) | UVP_VERSION_PATCH)
#define UVP_VERSION_STRING "0.3.0"
/** @} */

#if defined(_WIN32)
#define UVP_EXTERN __declspec(dllexport)
#elif defined(__GNUC__)
#define UVP_EXTERN __attribute__((visibility("default")))
#else
#define UVP_EXTERN
#endif

/** @name uvp_version, uvp_version_string
 * @{ */
/** Version of the library actually linked, as UVP_VERSION_HEX / _STRING. */
UVP_EXTERN unsigned int uvp_version(void);
UVP_EXTERN const char *uvp_version_string(void);
/** @} */

/** @defgroup errors Error codes */
/** @{ */

/** uvp's own codes live far below libuv's (which are -errno, the UV_EAI_*
 * range near -3000, and UV_EOF = -4095), so a reason code is always one or
 * the other and uvp_strerror() understands both. */
#define UVP_ERRNO_MAP(XX)                                                      \
  XX(ESETTLED, -30001, "promise already settled")                              \
  XX(ECYCLE, -30002, "promise resolved with itself or through a cycle")        \
  XX(ECLOSED, -30003, "promise context closed")                                \
  XX(EXCTX, -30004, "promises belong to different contexts")                   \
  XX(EAGGREGATE, -30005, "all promises were rejected")                         \
  XX(EUNHANDLED, -30006, "unhandled rejection")                                \
  XX(ETHREAD, -30007, "called off the context's loop thread")                  \
  XX(ENOTFIBER, -30008, "only a fiber can await")                              \
  XX(EINFIBER, -30009, "not allowed inside a fiber")

/** The codes of UVP_ERRNO_MAP as constants: UVP_ESETTLED, UVP_ECYCLE... */
typedef enum {
#define XX(name, val, msg) UVP_##name = (val),
  UVP_ERRNO_MAP(XX)
#undef XX
      UVP_ERRNO_MAX_ = -30000
} uvp_errno_t;

/** @name uvp_strerror, uvp_err_name
 * @{ */
/** Message / symbolic name for a uvp code or any libuv code ("ECYCLE",
 * "ECONNREFUSED"); 0, a fulfilment's status in an allSettled record,
 * gives "success" / "OK" (libuv says "Unknown system error 0").  Never
 * NULL.  Known codes give static strings; an unknown code is formatted
 * into a per-thread buffer valid until the next call on the same thread
 * (unlike uv_strerror(), nothing leaks). */
UVP_EXTERN const char *uvp_strerror(int code);
UVP_EXTERN const char *uvp_err_name(int code);
/** @} */
/** @} */

/** @defgroup allocation Allocation */
/** @{ */

/** @name uvp_replace_allocator and its function types
 * @{ */
/** Replace the allocator uvp uses for everything it allocates (contexts,
 * promise and reaction slabs, combinator state, cross-thread messages).
 * Like uv_replace_allocator(): call it before any context exists.  Returns
 * UV_EINVAL if any function is NULL, UV_EBUSY while a context is alive.
 * The functions must be thread-safe (other threads post messages). */
typedef void *(*uvp_malloc_func)(size_t size);
typedef void *(*uvp_realloc_func)(void *ptr, size_t size);
typedef void *(*uvp_calloc_func)(size_t count, size_t size);
typedef void (*uvp_free_func)(void *ptr);
UVP_EXTERN int uvp_replace_allocator(uvp_malloc_func malloc_func,
                                     uvp_realloc_func realloc_func,
                                     uvp_calloc_func calloc_func,
                                     uvp_free_func free_func);
/** @} */
/** @} */

/** @defgroup types Types */
/** @{ */

/** A context: see "The model in one page" and uvp_ctx_new. */
typedef struct uvp_ctx_s uvp_ctx_t;
/** A promise: see "The model in one page" and uvp_promise_new. */
typedef struct uvp_promise_s uvp_promise_t;

/** Destructor for a value or a reason's payload. `free` fits. */
typedef void (*uvp_free_cb)(void *ptr);

/** A promise's state (uvp_promise_state). */
typedef enum {
  UVP_PENDING = 0,   /**< not settled yet */
  UVP_FULFILLED = 1, /**< settled with a value */
  UVP_REJECTED = 2   /**< settled with a reason */
} uvp_state_t;

/** What a handler is given: a borrowed view of the settled promise. */
typedef struct uvp_outcome_s {
  /** 0 if fulfilled, else the (negative) rejection code. */
  int status;
  /** The value if fulfilled, the reason's payload (or NULL) if rejected.
   * Owned by the promise: valid while you hold a reference to `promise`,
   * which the handler call itself does. */
  void *value;
  /** The settled promise (borrowed; uvp_promise_retain to keep it). */
  uvp_promise_t *promise;
} uvp_outcome_t;

/** What a handler returns: how the derived promise settles.  Build it with
 * the uvp_ret_*() helpers below; a zeroed uvp_ret_t fulfils with NULL (as a
 * JavaScript handler returning undefined). */
typedef struct uvp_ret_s {
  int kind_; /**< private */
  int code_;
  void *ptr_;
  uvp_free_cb free_;
  uvp_promise_t *promise_;
} uvp_ret_t;

enum { UVP_RET_VALUE_ = 0, UVP_RET_REJECT_, UVP_RET_ADOPT_, UVP_RET_PASS_ };

/** Fulfil the derived promise with `value`; ownership of value (and the duty
 * to run free_cb) passes to uvp. */
static inline uvp_ret_t uvp_ret_value(void *value, uvp_free_cb free_cb) {
  uvp_ret_t r = {UVP_RET_VALUE_, 0, value, free_cb, NULL};
  return r;
}
/** Reject the derived promise with `code` (< 0; anything else becomes
 * UV_EINVAL) and an optional payload that uvp now owns. */
static inline uvp_ret_t uvp_ret_reject(int code, void *payload,
                                       uvp_free_cb free_cb) {
  uvp_ret_t r = {UVP_RET_REJECT_, code, payload, free_cb, NULL};
  return r;
}
/** Make the derived promise follow `p` (Promises/A+ 2.3.2).  Takes one
 * reference to p: `return uvp_ret_adopt(new_promise);` hands the reference
 * you got from uvp_promise_new over.  Adopting the derived promise itself,
 * or a promise that waits for it (see uvp_promise_resolve_with: cycles),
 * rejects it with UVP_ECYCLE; a promise of another context rejects it with
 * UVP_EXCTX; a NULL p (a failed call's output) rejects it with UV_EINVAL.
 * Returning a file, DNS, thread-pool or TCP request you have just started,
 * and keep no reference to, costs nothing extra: instead of adopting its
 * promise, the derived promise takes the request over (the request settles
 * it directly; cancelling it cancels the request, and for TCP closes the
 * connection, except for a watch: see uvp_tcp_closed).  Nothing
 * observable differs from adoption, except that uvp_ctx_stats counts one
 * promise fewer.  A request you keep a reference to is adopted as usual. */
static inline uvp_ret_t uvp_ret_adopt(uvp_promise_t *p) {
  uvp_ret_t r = {UVP_RET_ADOPT_, 0, NULL, NULL, p};
  return r;
}
/** Settle the derived promise exactly like the input (same value, shared,
 * not copied): what JavaScript does for a missing handler. */
static inline uvp_ret_t uvp_ret_pass(void) {
  uvp_ret_t r = {UVP_RET_PASS_, 0, NULL, NULL, NULL};
  return r;
}

/** A handler.  Runs on the loop thread from uvp's scheduler, never inside the
 * uvp call that registered it or settled its promise; at most once.  `arg`
 * is the pointer given at registration.  It may call any uvp function,
 * including releasing `in->promise`'s other references, settling or creating
 * other promises and tearing the context down (what it then returns is
 * discarded as on a cancellation: a value's destructor runs, an adopted
 * promise is released; the derived promise was rejected with UVP_ECLOSED). */
typedef uvp_ret_t (*uvp_then_cb)(void *arg, const uvp_outcome_t *in);

/** Cancel hook of a producer (see uvp_promise_set_cancel). Runs at most once,
 * on the loop thread, when a pending promise is cancelled or its context is
 * closed while it is pending: inside the call that cancels it
 * (uvp_promise_cancel, or the timer, combinator or teardown acting for the
 * program); `p` is borrowed and already rejected with UV_ECANCELED (or
 * UVP_ECLOSED at teardown). */
typedef void (*uvp_cancel_cb)(uvp_promise_t *p, void *arg);

/** Called for a rejected promise that never had a rejection handler, when
 * its last reference goes or when its context is closed with it still
 * alive: on the loop thread, inside whatever drops that reference (your
 * uvp_promise_release; the scheduler, for a promise only uvp held; the
 * loop applying a release made on another thread) or inside
 * uvp_ctx_close.  `p` is borrowed and valid only during the call.  The
 * hook (like a value's destructor) may use the library, dump the pending
 * promises or close the context: promises whose last reference is going
 * are not listed by the dump nor torn down twice. */
typedef void (*uvp_unhandled_cb)(uvp_promise_t *p, void *arg);
/** @} */

/** @defgroup context Context */
/** @{ */

/** Create a context over `loop` (which you keep owning and running); `*out`
 * is yours until uvp_ctx_close.  Must be called on the loop's thread,
 * which becomes the context's loop thread.  Initialises three unreferenced
 * handles on the loop: an idle, a check and the wake-up other threads post
 * through (on Linux a uv_poll_t on an eventfd of the context's own, which
 * it holds until its memory goes after uvp_ctx_close; elsewhere, or when
 * the process has no descriptor left, a uv_async_t).  A process can have 65 535
 * contexts at once, counting closed ones not yet freed (see
 * uvp_ctx_close).  Errors: UV_EINVAL (NULL argument), UV_ENOMEM (no
 * memory, or no context left), or a `uv_*_init` error. */
UVP_EXTERN int uvp_ctx_new(uv_loop_t *loop, uvp_ctx_t **out);

/** Tear down.  Every promise still pending is rejected with UVP_ECLOSED
 * (running its cancel hook), without running any handler; queued handlers
 * are dropped (their destroy notifiers run).  Rejected promises still
 * alive and unhandled are reported to the unhandled hook; then the hook's
 * and the context's data notifiers run.  uvp's handles are closed: run the
 * loop once more (uv_run) for their close callbacks, after which
 * uv_loop_close() returns 0 as far as uvp is concerned (a binding's record
 * still in flight keeps uvp's wake-up handle open, and uv_run() going,
 * until its uvp_inflight_end, whatever its class's flags: a
 * UVP_INFLIGHT_UNREF record too, once the context is closing, as a
 * closing handle keeps the loop alive; see "Work in flight").
 * Promises you still hold stay valid memory: every call on them returns
 * UVP_ECLOSED, except that uvp_promise_retain and the inspection calls
 * (state, value, reason, site, trace) still answer, and release still
 * works, from any thread; the context's
 * memory is freed once the loop has run the close callbacks and the last
 * of them is released.  Threads resolving after this get UVP_ECLOSED.
 * Call it once, on the loop thread, and not from inside a handler that is
 * about to use the context again.  Like closing a libuv handle twice, a
 * second call is a bug, answered with UVP_ECLOSED and no change, before
 * and after the context's memory is freed: uvp looks the pointer up among
 * the process's contexts before reading it (unless a new context has
 * since been made at the same address: that one it closes).  Any other
 * call on a freed context reads freed memory (see "Misuse").
 * A program that closes every handle at exit (uv_walk, skipping those
 * uv_is_closing reports, as it must) calls this first: uvp's handles are
 * then closing and the walk leaves them alone, but for one: while a
 * binding's record (uvp_inflight_start) is still open, uvp keeps its
 * wake-up handle (see uvp_ctx_new) open for the record's end, and the walk
 * closes it.  Ends
 * made on the loop thread still complete the teardown then (after the
 * last one, uvp_ctx_close_full's callback comes from the loop's next
 * turn, never inside uvp_inflight_end); an end from another thread is
 * never delivered: walk after uvp_ctx_close_full's callback where a
 * binding ends work on its own threads.  A walk made before closes
 * the context's three handles too (nothing tells them apart): from then
 * on no handler runs, and this call, once the loop has run their close
 * callbacks, tears down as above; until then it returns UV_EBUSY and
 * changes nothing.  (The handles of uvp's timers, connections and
 * processes must not be closed that way: close the context, and your
 * uvp_tcp_t, first.)
 * "Run the loop once more" holds for a host that runs UV_RUN_DEFAULT: a
 * request uvp started that is still running in libuv's thread pool keeps
 * the loop going until it completes.  A host with a teardown protocol of
 * its own (Node's worker threads) uses uvp_ctx_close_full to learn when
 * uvp is done with the loop.
 * Errors: UV_EINVAL (NULL), UVP_ETHREAD, UVP_ECLOSED (see above),
 * UVP_EINFIBER (called on a fiber: see "Fibers"), UV_EBUSY (see above). */
UVP_EXTERN int uvp_ctx_close(uvp_ctx_t *ctx);

/** What uvp_ctx_close_full calls once uvp has nothing left in the loop.
 * `ctx` is the closed context, borrowed: valid memory during the call,
 * where it answers as after uvp_ctx_close (uvp_ctx_loop, uvp_ctx_stats;
 * other calls UVP_ECLOSED); once the callback returns it may be freed
 * at any time (as after uvp_ctx_close, if no promise of it is held). */
typedef void (*uvp_ctx_closed_cb)(uvp_ctx_t *ctx, void *arg);

/** uvp_ctx_close, and a notification when it is over in the loop: as
 * uv_close's close callback for a handle, `closed_cb(ctx, arg)` is called
 * once the last handle uvp opened in the loop has run its close callback,
 * the last request it started there has completed, and every binding's
 * record (uvp_inflight_start) has ended with uvp_inflight_end: everything
 * uvp_ctx_inflight counts, and uvp's own handles.  Each counts whether its
 * promise is still pending or was already rejected: a file read running
 * in libuv's thread pool, which nothing can stop, rejected with
 * UVP_ECLOSED by the teardown, still counts until the pool hands it
 * back; so do a child process's handles, a timer's and, if you have not
 * closed it yet, your uvp_tcp_t's (uvp_tcp_close works after the
 * teardown); and so does a record whose class's cancel, run by the
 * teardown with UVP_ECLOSED, stops the work later (a timer's callback, a
 * thread's message or a close callback calling uvp_inflight_end, or the
 * library's own thread calling it), however long after.  From then on
 * uv_loop_close() returns 0 as far as uvp is concerned, with no need to run the
 * loop again (a binding's own handles are the binding's: see "Work in flight").
 *
 * Everything else is as uvp_ctx_close, including its errors and the
 * context's memory.  The callback:
 *  - is called exactly once if this returns 0, and never otherwise;
 *  - runs on the loop thread, from a libuv callback inside uv_run (a
 *    close callback or a request's callback; when a binding's record is
 *    the last, the close callback of the context's wake-up handle, which
 *    that record's uvp_inflight_end closes, or, where a host's uv_walk
 *    closed that handle, of one uvp opens and closes for it: the loop's
 *    next turn), never inside this call nor inside uvp_inflight_end, even
 *    when nothing is left in flight: the loop must be run (in any mode)
 *    for it to be called;
 *  - may call anything but uv_loop_close() on that loop (libuv forbids it
 *    inside uv_run): stop the loop, close handles of its own, free
 *    `arg`, tell the host it is done (Node-API's
 *    napi_remove_async_cleanup_hook; see docs/guide-embedding.md).
 * `arg` is yours: uvp only passes it on.  A program that never runs the
 * loop again after this call never gets the callback (nor frees the
 * context's memory).
 * Errors: UV_EINVAL (NULL ctx or closed_cb), and those of uvp_ctx_close:
 * UVP_ETHREAD, UVP_ECLOSED (a second close, with either call: the
 * callback of the first stays the only one), UVP_EINFIBER, UV_EBUSY (the
 * program closed uvp's handles with uv_walk and has not run their close
 * callbacks yet: nothing changed, run the loop and call again). */
UVP_EXTERN int uvp_ctx_close_full(uvp_ctx_t *ctx, uvp_ctx_closed_cb closed_cb,
                                  void *arg);

/** The loop ctx was created over (NULL for NULL); also after
 * uvp_ctx_close, while the context's memory lives. */
UVP_EXTERN uv_loop_t *uvp_ctx_loop(const uvp_ctx_t *ctx);

/** @name uvp_ctx_set_checks
 * @{ */
/** Checks of how the library is used, off by default (each costs a test on
 * the calls it guards):
 * @verbatim
 *   UVP_CHECK_THREAD  a loop-thread-only call made from another thread
 *                     (the classic libuv embedding bug) fails with
 *                     UVP_ETHREAD instead of corrupting the context's
 *                     state; uvp_promise_retain returns NULL.
 * @endverbatim
 * The environment variable UVP_CHECKS=thread turns it on for every context
 * a process creates.  Errors: UV_EINVAL (NULL ctx, unknown bits),
 * UVP_ECLOSED.
 *
 * Misuse.  A promise's memory is a slot that the next new promise of its
 * context may take.  What is noticed, and by what:
 *  - In every build, a call on a promise after its last release, while its
 *    slot is still free: uvp says so on stderr (with the stack when a
 *    sanitizer's runtime is in the process, as in your own ASan build, or
 *    valgrind runs it) and ignores a release, or refuses the call
 *    (uvp_promise_then/on/finally, resolve, reject, resolve_with:
 *    UV_EINVAL; uvp_promise_retain: NULL).  The library goes on working.
 *  - Once another promise has taken the slot, the call acts on that
 *    promise: nothing can tell the two apart, as with a libuv handle's
 *    memory reused.  Only the tools catch the bug earlier: a uvp built
 *    with ASan (it poisons free slots), or a debug build of uvp run under
 *    valgrind (it marks them no-access), reports any access made while
 *    the slot was free, wherever it happens.
 *  - A second uvp_ctx_close: UVP_ECLOSED (see there).  Other calls on a
 *    freed context: reported only by a uvp built with ASan, or by valgrind
 *    (the context is malloc'd memory). */
enum {
  UVP_CHECK_THREAD = 1 /**< loop-thread-only calls check their thread */
};
UVP_EXTERN int uvp_ctx_set_checks(uvp_ctx_t *ctx, unsigned int checks);
/** @} */

/** Maximum number of handlers run per scheduler callback (two per loop
 * iteration: idle and check phases) before yielding to timers and I/O.
 * A handler that calls uv_stop() ends the pass too: uv_run() returns as
 * libuv says, and the handlers still queued run when it is run again.
 * Default 1024.  Errors: UV_EINVAL (NULL ctx, a budget of 0),
 * UVP_ECLOSED. */
UVP_EXTERN int uvp_ctx_set_budget(uvp_ctx_t *ctx, unsigned int budget);

/** Memory.  Promises, reactions and libuv operations come from per-context
 * pools that are recycled, so once warmed up, creating, settling and
 * reacting on the loop thread never call malloc nor make a system call;
 * settling there never fails for want of memory.  A settle or release
 * made from another thread allocates its message (through the allocator
 * of uvp_replace_allocator) and may wake the loop (a write to the
 * context's eventfd, or uv_async_send: see uvp_ctx_new).
 * The pools keep what a burst made them grow to, so the next burst costs
 * nothing either: they give memory back only when the program asks
 * (uvp_ctx_trim, below) and when the context is freed after
 * uvp_ctx_close.  uvp_ctx_stats says what they hold (slab_bytes) and how
 * much of it no live object uses (slab_idle_bytes).  Docs/internals/memory.md
 * says how the pools are laid out.
 *
 * Pre-allocate room for `promises` more promises and `reactions` more
 * reactions (and run-queue room for those reactions all queued at once),
 * and touch it, so that a burst of traffic later meets neither malloc nor
 * first-touch page faults.  A server calls it at startup with its expected
 * peak.  The memory stays with the context until uvp_ctx_close.  Errors:
 * UV_EINVAL, UVP_ECLOSED, UV_ENOMEM (what was reserved stays usable; a
 * count beyond the memory the process may have is refused at once: the
 * machine's, or less where its control group sets a limit, as a
 * container's does and as uv_get_constrained_memory reads it). */
UVP_EXTERN int uvp_ctx_reserve(uvp_ctx_t *ctx, size_t promises,
                               size_t reactions);

/** The same for the wrappers' operations: pre-allocate and touch room for
 * `ops` more at once.  An operation is one libuv request uvp has in flight
 * (each uvp_fs_*, uvp_getaddrinfo and uvp_work call, a TCP connect,
 * write, read, shutdown or watch; uvp_spawn allocates its own), and a
 * stat result still referenced keeps its operation's room (the uv_stat_t
 * lives there).  A program about to start many operations calls it
 * before, as a hand-written client allocates its requests before it
 * starts them.
 * Errors: UV_EINVAL, UVP_ECLOSED, UV_ENOMEM (as for uvp_ctx_reserve). */
UVP_EXTERN int uvp_ctx_reserve_ops(uvp_ctx_t *ctx, size_t ops);

/** Give the allocator back what the context's pools hold and no live object
 * uses: every slab of promises, reactions, operations and group members in
 * which no slot is in use, the spare combinator block, the run queue's
 * room beyond its first 256 entries when nothing is queued, and the idle
 * fiber stacks.  Slabs in which one object still lives stay whole (a pool
 * does not move objects), so a trim gives back most after a burst has
 * wound down.  The next burst then allocates (and faults in) again, as
 * the first one did: a server calls this once traffic has been idle a
 * while, not per request.  Memory given back goes to the allocator
 * (uvp_replace_allocator's, or malloc, which may keep it for the process:
 * glibc's malloc_trim returns what it keeps to the system).  Loop thread.
 * Errors: UV_EINVAL, UVP_ECLOSED, UVP_ETHREAD. */
UVP_EXTERN int uvp_ctx_trim(uvp_ctx_t *ctx);

/** Install the unhandled-rejection hook (NULL restores the default: one line
 * on stderr naming the reason and the promise's creation site).  What is
 * reported: a rejected promise nobody registered a handler on, when its
 * last reference goes or at uvp_ctx_close; and a new rejection a handler
 * without a derived promise returns.  Never reported: a cancellation
 * (UV_ECANCELED from uvp_promise_cancel, a timeout, a combinator or map
 * cancelling its inputs, a derived promise cancelled, and whatever passes
 * such a rejection on: the program asked for it), a teardown's UVP_ECLOSED,
 * a group next()'s UV_EOF and whatever passes it on, and a rejection a
 * handler saw.  A rejection the program expects and only inspects
 * (uvp_promise_reason does not count as handling) is kept quiet with
 * uvp_promise_mark_handled, or as JavaScript's p.catch(() => {}) does: a
 * catch whose handler returns normally.  (A NULL handler passes the
 * rejection on, as p.catch() does, and it is reported.)
 * Errors: UV_EINVAL, UVP_ECLOSED. */
UVP_EXTERN int uvp_ctx_set_unhandled_cb(uvp_ctx_t *ctx, uvp_unhandled_cb cb,
                                        void *arg);
/** The same with a destroy notifier for `arg`: arg_free(arg) runs once, on
 * the loop thread, when the hook is replaced (inside the replacing call) or
 * at uvp_ctx_close (after the last report); if the hook itself replaces
 * it or closes the context, when the hook returns.  With a NULL cb, arg
 * and arg_free are not kept.  On error it has run (uvp.h, "Handing
 * over"). */
UVP_EXTERN int uvp_ctx_set_unhandled_cb_full(uvp_ctx_t *ctx,
                                             uvp_unhandled_cb cb, void *arg,
                                             uvp_free_cb arg_free);

/** Data of your own on the context (a binding's per-context state): stored
 * as given; free_cb (may be NULL) runs once, on the loop thread, when it is
 * replaced or at uvp_ctx_close, after the teardown of every promise (a
 * value's destructor that runs later, from a promise released after the
 * close, must not use it).  Errors: UV_EINVAL, UVP_ECLOSED (free_cb has
 * run then: uvp.h, "Handing over"). */
UVP_EXTERN int uvp_ctx_set_data(uvp_ctx_t *ctx, void *data,
                                uvp_free_cb free_cb);
/** What uvp_ctx_set_data stored (NULL: nothing, a NULL ctx, or after
 * uvp_ctx_close).  Any thread, as long as nothing sets it meanwhile. */
UVP_EXTERN void *uvp_ctx_data(const uvp_ctx_t *ctx);

/** @} */

#ifdef __cplusplus
}
#endif
#endif /* UVP_H_COMMON */
