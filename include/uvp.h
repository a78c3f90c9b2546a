/** @file
 * uvp — promises for libuv.
 *
 * uvp brings ECMAScript promise semantics (Promises/A+ for `then`, the
 * ECMAScript specification for all / allSettled / race / any) to C programs
 * that already run a uv_loop_t.  This header is the whole public API.
 *
 * ---------------------------------------------------------------------------
 * The model in one page
 * ---------------------------------------------------------------------------
 *
 *  - A context (uvp_ctx_t) is created over an existing loop.  uvp never
 *    creates, runs or stops the loop.  Every promise belongs to exactly one
 *    context; contexts on different loops are fully independent.
 *
 *  - A promise is pending, then settles once: fulfilled with a value, or
 *    rejected with a reason.
 *      value  = an opaque `void *` plus an optional destructor (uvp_free_cb)
 *               that runs when the last reference to the promise that owns
 *               the value goes away.
 *      reason = a negative status code (libuv's UV_E* or uvp's UVP_E*, see
 *               uvp_strerror) plus an optional payload pointer with its own
 *               destructor, owned like a value.
 *
 *  - Ownership is reference counting.  Every function that hands you a
 *    promise (`uvp_promise_t **out`) gives you one reference; you drop it
 *    with uvp_promise_release().  Functions that take a promise argument
 *    borrow it unless their comment says "takes".
 *
 *  - Handlers (reactions) never run inside the call that registers or
 *    settles: they are queued FIFO per context and run from libuv handles on
 *    the loop thread, a bounded number per loop iteration, so a long chain
 *    never starves timers or I/O.
 *
 *  - The loop stays alive for work a program waits for, never for uvp's own
 *    handles: uv_run(UV_RUN_DEFAULT) returns once nothing is left but
 *    unsettled promises, just as Node exits with pending promises.  Work in
 *    progress keeps it alive as in JavaScript: libuv requests and handles
 *    the wrappers start, queued handlers, and uvp's timers (delays,
 *    timeouts, retry backoff) unless started with UVP_UNREF.
 *
 *  - Callback data: a call that stores a callback with an `arg` (handlers,
 *    cancel hooks, the unhandled hook, maps, loops, reduces, retries, work
 *    jobs) has a form that also takes a destroy notifier for arg (the
 *    `_full` functions, or an `arg_free` option): uvp calls it exactly
 *    once, on the loop thread, after the callback's last call or as soon
 *    as it knows the callback will never be called, never while it may
 *    still run.  So a closure needs no bookkeeping of the caller's.
 *
 *  - Threads: every function must be called on the loop thread, except
 *    uvp_promise_resolve(), uvp_promise_reject() and uvp_promise_release(),
 *    which any thread may call on a promise it holds a reference to (the
 *    reference must have been taken on the loop thread).  Off the loop thread
 *    they post through one uv_async_t; the work happens on the loop thread.  A
 *    settle posted (it returned 0) holds the promise until it is applied: the
 *    reference the thread used may be one the loop thread holds, and the loop
 *    thread may let it go at once, before the loop has read the message (its
 *    last release of the promise applies the messages waiting first).  That
 *    handle is unreferenced like uvp's others: while you expect other threads
 *    to settle promises, keep the loop alive with a handle of your own (as for
 *    any cross-thread work on libuv), or uv_run() may return, and UV_RUN_ONCE
 *    stop polling, before their messages are read.  What a thread posted before
 *    it tells the loop so through other means (its uv_async_send on a handle of
 *    yours, a write to a pipe the loop watches) is read in the loop iteration
 *    that runs that callback, and keeps the loop alive until its handlers have
 *    run: that callback may close your handle.  (A thread that has only been
 *    joined has told the loop nothing: uv_run() may still return without
 *    reading what it posted.)
 *
 *  - fork(): the child may go on using a context it inherited once it has
 *    called uv_loop_fork() on the loop (as libuv requires), including
 *    settles from threads it starts, or just close it; as for any library
 *    with locks, fork while no other thread is inside a uvp call.
 *
 *  - Errors: every `int` return is 0 or a negative code.  On error nothing
 *    happened: in particular, ownership of values, payloads and callback
 *    arguments you passed stays with you.  A NULL where an object is
 *    required is UV_EINVAL; a context already closed is UVP_ECLOSED; a
 *    loop-thread-only call from another thread, when the check is on, is
 *    UVP_ETHREAD (uvp_ctx_set_checks).  So a chain half built when a call
 *    fails (UV_ENOMEM) is torn down as usual: release the promises you got
 *    so far (their handlers' notifiers run as they go), or close the
 *    context, which tears down everything.
 *
 * Mapping to JavaScript:
 * @verbatim
 *   new Promise(...)        uvp_promise_new + uvp_promise_resolve/reject
 *   Promise.resolve(v)      uvp_promise_resolved
 *   Promise.reject(e)       uvp_promise_rejected
 *   p.then(f)               uvp_promise_then
 *   p.catch(r)              uvp_promise_catch
 *   p.then(f, r)            uvp_promise_on(p, UVP_ON_BOTH, cb, ...) where cb
 *                           looks at in->status
 *   p.finally(f)            uvp_promise_finally
 *   resolve(otherPromise)   uvp_promise_resolve_with / return uvp_ret_adopt()
 *   return x / throw e      return uvp_ret_value(x, dtor) / uvp_ret_reject()
 *   thenables (A+ 2.3.3)    no C analogue: only uvp promises are adopted.
 * @endverbatim
 */
#ifndef UVP_H
#define UVP_H

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
#define UVP_VERSION_MINOR 2
#define UVP_VERSION_PATCH 0
#define UVP_VERSION_HEX                                                        \
  ((UVP_VERSION_MAJOR << 16) | (UVP_VERSION_MINOR << 8) | UVP_VERSION_PATCH)
#define UVP_VERSION_STRING "0.2.0"
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

/* ------------------------------------------------------------------------ */
/* Error codes                                                               */
/* ------------------------------------------------------------------------ */

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

/* ------------------------------------------------------------------------ */
/* Allocation                                                                */
/* ------------------------------------------------------------------------ */

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

/* ------------------------------------------------------------------------ */
/* Types                                                                     */
/* ------------------------------------------------------------------------ */

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

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

/** @defgroup context Context */
/** @{ */

/** Create a context over `loop` (which you keep owning and running); `*out`
 * is yours until uvp_ctx_close.  Must be called on the loop's thread,
 * which becomes the context's loop thread.  Initialises three unreferenced
 * handles on the loop (idle, check, async).  A process can have 65 535
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
 * uv_loop_close() returns 0 as far as uvp is concerned.
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
 * then closing and the walk leaves them alone.  A walk made before closes
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
 * once the last handle uvp opened in the loop has run its close callback
 * and the last request it started there has completed, whether its
 * promise is still pending or was already rejected (a file read running
 * in libuv's thread pool, which nothing can stop, rejected with
 * UVP_ECLOSED by the teardown, still counts until the pool hands it
 * back; so do a child process's handles, a timer's and, if you have not
 * closed it yet, your uvp_tcp_t's: uvp_tcp_close works after the
 * teardown).  From then on uv_loop_close() returns 0 as far as uvp is
 * concerned, with no need to run the loop again.
 *
 * Everything else is as uvp_ctx_close, including its errors and the
 * context's memory.  The callback:
 *  - is called exactly once if this returns 0, and never otherwise;
 *  - runs on the loop thread, from a libuv callback inside uv_run (a
 *    close callback or a request's callback), never inside this call,
 *    even when nothing is left in flight: the loop must be run (in any
 *    mode) for it to be called;
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
 * of uvp_replace_allocator) and may wake the loop (uv_async_send).
 * The pools keep what a burst made them grow to, so the next burst costs
 * nothing either: they give memory back only when the program asks
 * (uvp_ctx_trim, below) and when the context is freed after
 * uvp_ctx_close.  uvp_ctx_stats says what they hold (slab_bytes) and how
 * much of it no live object uses (slab_idle_bytes).  Docs/internals.md
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
 * and arg_free are not kept.  On error it does not run. */
UVP_EXTERN int uvp_ctx_set_unhandled_cb_full(uvp_ctx_t *ctx,
                                             uvp_unhandled_cb cb, void *arg,
                                             uvp_free_cb arg_free);

/** Data of your own on the context (a binding's per-context state): stored
 * as given; free_cb (may be NULL) runs once, on the loop thread, when it is
 * replaced or at uvp_ctx_close, after the teardown of every promise (a
 * value's destructor that runs later, from a promise released after the
 * close, must not use it).  Errors: UV_EINVAL, UVP_ECLOSED (free_cb then
 * does not run). */
UVP_EXTERN int uvp_ctx_set_data(uvp_ctx_t *ctx, void *data,
                                uvp_free_cb free_cb);
/** What uvp_ctx_set_data stored (NULL: nothing, a NULL ctx, or after
 * uvp_ctx_close).  Any thread, as long as nothing sets it meanwhile. */
UVP_EXTERN void *uvp_ctx_data(const uvp_ctx_t *ctx);

/** Print every pending promise with its creation site and age, one per line
 * (then its async trace, indented, if it has one: see uvp_ctx_set_traces),
 * and every fiber (`[fiber] ADDRESS "NAME" spawned at FILE:LINE ...`, the
 * name if it has one: uvp_fiber_set_name), in the spirit of
 * uv_print_active_handles().  It never waits for its reader, as
 * uvp_ctx_dump_tasks: to a pipe, a socket or a terminal, the dump is made
 * in memory first, then written as far as it goes without waiting, the
 * rest dropped and counted in a last line.  Returns how many promises and
 * fibers it listed, or a negative code: UV_EAGAIN (the output was cut
 * short), UV_EINVAL (NULL ctx or stream), UVP_ECLOSED, UVP_ETHREAD,
 * UV_ENOMEM, write(2)'s error on such a descriptor (UV_EPIPE: its reader
 * is gone). */
UVP_EXTERN int uvp_ctx_dump_pending(uvp_ctx_t *ctx, FILE *stream);

/** The version of the task dump's JSON lines (their `"v"` member). */
#define UVP_DUMP_VERSION 1
/** @name uvp_dump_write_cb, uvp_dump_opts_t, uvp_ctx_dump_tasks
 * @{ */
/** The task dump: what a stuck program's tasks wait for, and since when
 * (Go's goroutine dump).  A task is a fiber, a group's member, or any other
 * pending promise something waits on (a handler, a combinator, a fiber, a
 * promise that follows it).  For each, one line says: the kind of task,
 * its name (a fiber named by uvp_fiber_set_name) and its promise's
 * address; where it was spawned (a fiber) or created; its age; what it
 * waits for now: for a fiber, the await's site and the awaited promise's
 * description, for a promise its own: a uvp operation's kind and target
 * ("fs.read_file /etc/hosts", "tcp.read 127.0.0.1:80", "dns example.com",
 * "timer" with the time left, "work", "process 1234 /bin/sleep"), a
 * library's own (uvp_promise_set_cancel_described), the promise it
 * follows, or "program" (a promise the program settles); how long it has
 * waited (a fiber: since its await; a promise: since it was made); its
 * group and the group's parents (named by uvp_group_set_name, if they
 * were); its deadline's time left; its scope's slots, each through the
 * formatter set for it (uvp_ctx_set_slot_format), else as a pointer.
 *
 * flags: UVP_DUMP_JSON (one JSON object a line, described below),
 * UVP_DUMP_SUMMARY (one line of counts by what the tasks wait for, then
 * only the `oldest` oldest tasks, 10 if 0).  Lines go to `stream`, or to
 * write(write_arg, text, len) if set (a negative return stops the output
 * and is returned; UV_EAGAIN cuts the dump short, see below).  A line
 * longer than 4 KiB is cut short (text: "..." at its end; JSON: see
 * `cut`).  The summary walks every task, as the
 * full dump does, without writing them: 1 000 000 tasks take tens of
 * milliseconds (docs/internals.md).  Nothing is kept per promise for the
 * dump.  Loop thread.
 *
 * A dump never waits for its reader: one that cannot be written now is
 * cut short, not waited for (a stalled log collector on a pipe must not
 * stop the loop).  A stream on a regular file, a block device or memory
 * (open_memstream) is written with fwrite as the lines come.  A stream
 * on a pipe, a socket or a terminal is written by uvp on its descriptor,
 * whole lines at a time, never waiting: a pipe only when poll() says it
 * has room, at most PIPE_BUF bytes a write (which it then takes whole and
 * unmixed with other writers' lines), a socket with MSG_DONTWAIT; the
 * flags of its open file description (O_NONBLOCK, shared with other
 * processes) are not changed, and a pipe whose reader is gone gives
 * UV_EPIPE, not SIGPIPE.  What the stream itself still buffers goes
 * first if it can without waiting, else the whole dump is dropped.  A
 * write callback that returns UV_EAGAIN cuts the dump the same way.  Once
 * cut, every later line is dropped too (the output has no hole in its
 * middle), and one more line says how much, if it fits: "(uvp: dump cut
 * short: N bytes, M lines not written: the output would block)", as JSON
 * `{"v":1,"dropped_bytes":N,"dropped_lines":M}` with UVP_DUMP_JSON (a
 * pipe keeps room for it: it stops taking lines while two pages are still
 * free).
 * The walk still visits every task.
 *
 * Returns how many tasks there are; UV_EAGAIN if the output was cut short
 * (some lines dropped); or UV_EINVAL (NULL ctx or opts, neither stream nor
 * write, unknown flags), UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM, the sink's
 * error (UV_EIO from fwrite, write(2)'s on a pipe, socket or terminal:
 * UV_EPIPE..., or the callback's negative return; the output stops
 * there).  uvp_ctx_dump_pending stays as the older dump of every pending
 * promise; this one says more.
 *
 * <b>The text form</b>, a line per task (brackets: present only when so;
 * NAME, KIND and TARGET as in the JSON form below):
 * @verbatim
   TASK ["NAME"] ID at SITE, AGE ms old
     (, waiting MS ms [at AWAIT] for KIND [TARGET] [(LEFT ms left)]
      | , STATE)
     [; in GROUP [< GROUP]...]
     [; deadline in MS ms]
     [; slots N=VALUE[, N=VALUE]...]
     [...]
   @endverbatim
 * on one line, e.g. `fiber "fetch 3" 0x55c0add7b7e0 at app.c:44, 100 ms
 * old, waiting 100 ms at app.c:22 for timer (29900 ms left); in group
 * "fetchers" at app.c:40`; the summary's first line is `N tasks; by what
 * they wait for: KIND COUNT[, KIND COUNT]...`.  The text form is for
 * people: parse the JSON form.
 *
 * <b>The JSON form</b>: every line is one JSON object, standing alone (no
 * header, no array around them: `jq`, `grep` and a line reader each take a
 * line at a time).  Every string is escaped by JSON's rules (bytes 0x7f
 * and up as `\u00XX`, a NUL byte as '?'), so any bytes make valid JSON.
 * Each object's first member is `"v"`, the version of this schema, so
 * that a line read alone (a summary's, one picked out by `grep`, one of
 * several dumps concatenated) still says how to read it; it is
 * UVP_DUMP_VERSION.  A version adds members without changing it (a reader
 * ignores members it does not know); one that changes or removes a
 * member's meaning or type, or when it is present, is a new version.  A
 * task's object (version 1), its members in this order:
 * - `v` (number): 1.
 * - `task` (string): "fiber" (uvp_fiber_spawn, a group's fiber member),
 *   "member" (a promise a group holds, not a fiber), "promise" (any other
 *   pending promise something waits on).
 * - `name` (string): only for a fiber named by uvp_fiber_set_name: its
 *   name (1 to 63 printable ASCII bytes, no double quote nor backslash).
 * - `id` (string): the address of the task's promise, `"0x55c0add7b7e0"`,
 *   as uvp_ctx_dump_pending and the text form print it: the same task in
 *   two dumps has the same id (an address may be reused once the task is
 *   gone).
 * - `site` (string): `"FILE:LINE"`, where the fiber was spawned or the
 *   promise created (`"?:0"` when the site table was full).
 * - `age_ms` (number, integer): milliseconds since the task's promise was
 *   made, on the context's clock (uvp_ctx_set_clock).
 * - `waiting_ms` (number, integer) and `waits_for` (object): present when
 *   the task waits for something; `state` is present instead otherwise.
 *   `waiting_ms`: since the fiber's await, or since the promise was made
 *   (its `age_ms`).  `waits_for` has `kind` (string: "fs.stat" and every
 *   `fs.<op>`, "tcp.connect", "tcp.read", "tcp.write", "dns", "timer",
 *   "timeout", "work", "process", "group" (a group's join), "fiber" (a
 *   fiber's promise), "promise" (the promise this one follows),
 *   "program" (a promise only the program settles), "uvp" (one of uvp's
 *   own), "operation", a library's kind (uvp_promise_set_cancel_described:
 *   "HTTP"), or "fulfilled"/"rejected" (a fiber whose awaited promise has
 *   settled, not yet resumed)), `target` (string, maybe empty: the path,
 *   `fd N`, the peer `127.0.0.1:80`, the host, `1234 /bin/sleep` (the pid
 *   and the program's path, its last 197 bytes after "..." when longer),
 *   `"NAME" spawned at FILE:LINE` or `spawned at FILE:LINE` (a fiber),
 *   `created at FILE:LINE` (a promise followed), a library's
 *   description), and `left_ms` (number, integer, only for what has a time
 *   limit: a timer's or a timeout's milliseconds left).
 * - `await` (string): only for a fiber that waits: `"FILE:LINE"` of its
 *   uvp_await.
 * - `state` (string): present when the task waits for nothing: "not
 *   started", "running", "cancelled, running", "ending" (a fiber).
 * - `groups` (array of strings): present when the task is in a group, or
 *   is an operation working for one: that group first, then each parent
 *   (up to 8), each `"group at FILE:LINE"`, or `"group \"NAME\" at
 *   FILE:LINE"` for a group named by uvp_group_set_name.
 * - `deadline_left_ms` (number, integer, 0 or more): present when the
 *   task's scope has a deadline: milliseconds left.
 * - `slots` (object): present when a slot of the task's scope is set:
 *   the slot's index as key (`"0"`), and as value (string) what its
 *   formatter wrote (cut to 128 bytes, ending "..."), the pointer
 *   (`"0x..."`) without one, or "(its format failed)".
 * - `cut` (true): only when the line would have been longer than 4 KiB:
 *   the object ends at its last whole member before that point, members
 *   after it missing; it is still one valid object.
 *
 * With UVP_DUMP_SUMMARY the first line is `{"v":1,"tasks":N,"by_what":
 * {KIND:COUNT,...}}`: `tasks` (number) counts every task, `by_what`
 * (object) counts them by `waits_for.kind` (by `state` for those that
 * wait for nothing), 64 keys at most, the rest under `"(other)"`; then
 * the oldest tasks' objects, oldest first.  A dump cut short (see above)
 * ends, if it fits, with `{"v":1,"dropped_bytes":N,"dropped_lines":M}`:
 * the bytes and lines not written. */
enum {
  UVP_DUMP_JSON = 1,   /**< one JSON object a line */
  UVP_DUMP_SUMMARY = 2 /**< counts, then the `oldest` oldest tasks */
};
typedef int (*uvp_dump_write_cb)(void *arg, const char *text, size_t len);
/** Options of uvp_ctx_dump_tasks. */
typedef struct uvp_dump_opts_s {
  int flags;               /**< 0, or UVP_DUMP_JSON, UVP_DUMP_SUMMARY ORed */
  FILE *stream;            /**< where the lines go */
  uvp_dump_write_cb write; /**< instead of stream, if not NULL */
  void *write_arg;         /**< write's first argument */
  size_t oldest; /**< with UVP_DUMP_SUMMARY: how many to list; 0: 10 */
} uvp_dump_opts_t;
UVP_EXTERN int uvp_ctx_dump_tasks(uvp_ctx_t *ctx, const uvp_dump_opts_t *opts);
/** @} */

/** Renders slot `value` for the task dump into buf (cap bytes) and returns
 * the length written: negative says it failed ("(its format failed)" is
 * shown), cap or more that it was cut short (the first cap bytes are shown,
 * ending "...").  Whatever bytes it writes, the dump stays well formed. */
typedef int (*uvp_slot_format_cb)(void *value, char *buf, size_t cap);
/** How the task dump shows scope slot `slot` (NULL: as a pointer).
 * Errors: UV_EINVAL (NULL ctx, slot out of range), UVP_ECLOSED,
 * UVP_ETHREAD, UV_ENOMEM. */
UVP_EXTERN int uvp_ctx_set_slot_format(uvp_ctx_t *ctx, unsigned int slot,
                                       uvp_slot_format_cb format);

/** Counters for tests and monitoring. */
typedef struct uvp_ctx_stats_s {
  size_t live;            /**< promises allocated and not yet freed */
  size_t pending;         /**< of which pending */
  size_t queued;          /**< handlers waiting to run, and finished file
                               operations waiting to settle their promises */
  size_t slab_bytes;      /**< bytes held in promise/reaction/operation/group
                               member slabs, the run queue and the spare
                               combinator block (see uvp_promise_all) */
  size_t slab_idle_bytes; /**< of slab_bytes, what no live object uses (what
                               uvp_ctx_trim may give back, in whole slabs) */
  size_t slab_allocs;     /**< times a slab was obtained from the allocator */
  size_t site_misses;  /**< creation sites looked up in the process-wide table
                            (under a lock) because the context's cache did not
                            hold them; the cache holds the sites of one
                            function, so this stops growing once a program's
                            hot paths have run */
  size_t fibers;       /**< fibers spawned and not yet finished */
  size_t fiber_stacks; /**< idle stacks kept warm for the next fibers (see
                            "Fibers", Stacks) ... */
  size_t fiber_stack_bytes; /**< ... and the address space they take, guard
                                 pages included (only pages a fiber touched
                                 are resident) */
} uvp_ctx_stats_t;
/** Fill *out.  Loop thread; also after uvp_ctx_close, while the context's
 * memory lives (promises still held: see uvp_ctx_close), to count what is
 * left.  Errors: UV_EINVAL (NULL ctx or out), UVP_ETHREAD. */
UVP_EXTERN int uvp_ctx_stats(const uvp_ctx_t *ctx, uvp_ctx_stats_t *out);
/** @} */

/* ------------------------------------------------------------------------ */
/* Promises: creation and settlement                                         */
/* ------------------------------------------------------------------------ */

/** @defgroup settlement Promises: creation and settlement
 *
 * Creation sites.  Every call that creates a promise records where it was
 * called from, for uvp_ctx_dump_pending, the unhandled-rejection report
 * and uvp_promise_site.  Each such call is a macro named like the call
 * (uvp_promise_new, uvp_fs_stat, ...) over a function of the same name
 * with an `_at` suffix that takes the site explicitly: code calls the
 * macro and gets its own __FILE__ and __LINE__ for free; a binding, or a
 * helper that wants its caller's site reported, calls the `_at` function
 * (file must be a string that outlives the process, as __FILE__ is).
 * The macro takes the `_at` function's arguments without the last two, and
 * is variadic so that any argument may be a compound literal with commas:
 * uvp_promise_all(ctx, (uvp_promise_t *[]){a, b}, 2, 0, &all) or
 * uvp_fiber_spawn(ctx, fn, arg,
 * &(uvp_fiber_opts_t){.stack_size = 65536, .arg_free = free}, &f).
 * (libdex does it the other way round, with plain functions and an
 * optional name; uvp records sites by default because a stuck promise with
 * no site is what its users debug most.)  Four macros share two
 * functions: uvp_promise_then(p, cb, arg, out) and uvp_promise_catch(p,
 * cb, arg, out) are uvp_promise_on_at with a mask, their _full forms (p,
 * cb, arg, arg_free, out) uvp_promise_on_full_at.  A site costs nothing
 * per promise beyond two bytes: sites are interned once per process. */
/** @{ */

/** @name uvp_promise_new, uvp_promise_new_at
 * @{ */
/** A new pending promise; *out gets one reference.
 * Errors: UV_EINVAL, UV_ENOMEM, UVP_ECLOSED. */
#define uvp_promise_new(...) uvp_promise_new_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_new_at(uvp_ctx_t *ctx, uvp_promise_t **out,
                                  const char *file, int line);
/** @} */

/** @name uvp_promise_resolved, uvp_promise_rejected
 * @{ */
/** Already fulfilled (Promise.resolve(v)) / already rejected
 * (Promise.reject(e)).  On success uvp owns value/payload; on error you
 * still do.  Errors: UV_EINVAL (NULL ctx or out; for rejected, a code not
 * < 0), UV_ENOMEM, UVP_ECLOSED. */
#define uvp_promise_resolved(...)                                              \
  uvp_promise_resolved_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_resolved_at(uvp_ctx_t *ctx, void *value,
                                       uvp_free_cb free_cb, uvp_promise_t **out,
                                       const char *file, int line);
#define uvp_promise_rejected(...)                                              \
  uvp_promise_rejected_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_rejected_at(uvp_ctx_t *ctx, int code, void *payload,
                                       uvp_free_cb free_cb, uvp_promise_t **out,
                                       const char *file, int line);
/** @} */

/** Fulfil `p` with `value`.  On success uvp owns value (free_cb runs when the
 * last reference to the promise holding it goes; free_cb may be NULL).
 * Queues p's handlers; never runs them inside this call.
 * Errors (nothing changes, you keep value):
 * @verbatim
 *   UV_EINVAL     p is NULL
 *   UVP_ESETTLED  p is already settled or is already following another
 *   UVP_ECLOSED   p's context is closed (checked first: teardown settled
 *                 every promise, yet the call says UVP_ECLOSED)
 * @endverbatim
 * Any thread (see "Threads"): off the loop thread the call only queues a
 * message, returns 0 (or UV_ENOMEM / UVP_ECLOSED) and hands value over; if
 * p turns out to be settled already when the loop thread applies it, the
 * value's free_cb runs there. */
UVP_EXTERN int uvp_promise_resolve(uvp_promise_t *p, void *value,
                                   uvp_free_cb free_cb);

/** Reject `p` with `code` (must be < 0, else UV_EINVAL) and an optional
 * payload that uvp owns on success.  Same errors and threading as
 * uvp_promise_resolve. */
UVP_EXTERN int uvp_promise_reject(uvp_promise_t *p, int code, void *payload,
                                  uvp_free_cb free_cb);

/** Resolve `p` with another promise: p follows `src` (Promises/A+ 2.3.2).
 * Borrows src.  As in JavaScript, following does not keep src alive: src's
 * producer does.  If src is freed unsettled, p stays pending (and resolved:
 * resolve/reject keep returning UVP_ESETTLED) until cancelled or torn down.
 * Loop thread only.
 * Errors: UV_EINVAL (NULL p or src), UVP_ESETTLED, UVP_ECLOSED, UVP_ETHREAD,
 * UVP_EXCTX (src belongs to another context).
 * Cycles.  Resolving p with itself, or with a promise that waits for p
 * through adoptions (resolve_with, uvp_ret_adopt) and handlers' derived
 * promises, is not an error of the call: p is rejected with UVP_ECYCLE, as
 * Promises/A+ 2.3.1 requires.  The check costs at most twice the smaller
 * of what waits for p and the chain src waits through, so building a
 * chain costs the same for every link, from its root (each new promise
 * resolved with the last) or from its end, whether or not its links are
 * observed.  A
 * cycle through a combinator, a timeout, a map or a sequence (p resolved
 * with race([q]) where q follows p) is not detected: its promises stay
 * pending, as every cycle but the direct one does in JavaScript, until
 * they are cancelled or torn down. */
UVP_EXTERN int uvp_promise_resolve_with(uvp_promise_t *p, uvp_promise_t *src);

/** Attach a cancel hook to a pending promise you produce (one hook; a second
 * call replaces it, NULL removes it).  The hook runs inside the call that
 * cancels p (see uvp_cancel_cb).  Errors: UV_EINVAL, UVP_ECLOSED,
 * UVP_ESETTLED (p is settled, follows another, or is one only uvp settles:
 * the promise of a wrapper, a combinator, a timer, a handler's derived
 * promise, a fiber's; uvp_promise_resolve answers the same); then arg is
 * still yours. */
UVP_EXTERN int uvp_promise_set_cancel(uvp_promise_t *p, uvp_cancel_cb cb,
                                      void *arg);
/** The same with a destroy notifier for `arg`: arg_free(arg) runs exactly
 * once, on the loop thread, right after the hook has run, or when it never
 * will: p settles otherwise, the hook is replaced or removed, or p is freed
 * while pending.  With a NULL cb, arg_free is not kept.  Errors also
 * UV_ENOMEM (the hook and its notifier are kept in a small allocation);
 * on error arg_free does not run and a hook already set stays. */
UVP_EXTERN int uvp_promise_set_cancel_full(uvp_promise_t *p, uvp_cancel_cb cb,
                                           void *arg, uvp_free_cb arg_free);

/** Writes into buf (cap bytes, cap > 0) what a promise waits for, for the
 * task dump ("GET https://example.com/"), and returns its length; a
 * negative return says it failed, a length of cap or more that it was cut
 * short.  The first min(length, cap - 1) bytes are shown, whether or not
 * it wrote a NUL after them; whatever bytes they are, the dump stays well
 * formed.  Called on the loop thread, inside uvp_ctx_dump_tasks. */
typedef int (*uvp_describe_cb)(void *arg, char *buf, size_t cap);

/** uvp_promise_set_cancel_full for a promise a library produces (a binding:
 * an HTTP transfer), which also says what p waits for while pending: in
 * the task dump it shows as `kind` (a string that lives as long as p:
 * "HTTP") and what describe(arg, ...) writes (may be NULL: nothing).  For
 * deadlines, see uvp_deadline_watch.  Errors as uvp_promise_set_cancel_full,
 * and UV_EINVAL for a NULL cb or kind. */
UVP_EXTERN int uvp_promise_set_cancel_described(uvp_promise_t *p,
                                                uvp_cancel_cb cb, void *arg,
                                                uvp_free_cb arg_free,
                                                const char *kind,
                                                uvp_describe_cb describe);

/** Cancel a pending promise: reject it with UV_ECANCELED, then run its
 * cancel hook once.  If p follows another pending promise (from then or
 * adoption) and p is that promise's only consumer (no other reaction is
 * registered on it), that one is cancelled too, and so on up the chain
 * (Bluebird's rule): a timeout on then(connect, send_and_read) reaches the
 * read in flight.  A promise with other consumers is left alone and p just
 * stops waiting for it: p's reaction leaves its list at once (its
 * handler's destroy notifier runs), so p no longer counts as a consumer,
 * and cancelling the last of several consumers, one after another,
 * cancels the source.  A combinator whose result is decided or cancelled
 * likewise stops consuming the inputs still pending.  A handler registered
 * on p's source with p as its derived promise does not run once p is
 * cancelled: it would start work nobody can observe or cancel any more
 * (the next step of a chain a timeout gave up on).
 * Errors: UV_EINVAL, UVP_ESETTLED (already settled: nothing happens),
 * UVP_ECLOSED. */
UVP_EXTERN int uvp_promise_cancel(uvp_promise_t *p);
/** @} */

/* ------------------------------------------------------------------------ */
/* Promises: reactions                                                       */
/* ------------------------------------------------------------------------ */

/** @defgroup reactions Promises: reactions */
/** @{ */

/** The outcomes a handler is registered for (uvp_promise_on's mask). */
enum {
  UVP_ON_FULFILLED = 1, /**< as then() */
  UVP_ON_REJECTED = 2,  /**< as catch() */
  UVP_ON_BOTH = 3       /**< as then(f, r), or finally */
};

/** @name uvp_promise_on, uvp_promise_on_at
 * @{ */
/** Register `cb` for the outcomes in `mask` (UVP_ON_*).  For an outcome not
 * in the mask, or a NULL cb, the derived promise settles like `p` (value
 * shared).  The handler runs once, later, on the loop thread, after every
 * handler registered on p before it (registration order).
 *
 * `out` (may be NULL): receives one reference to the derived promise, which
 * settles as the handler's uvp_ret_t says.  With out == NULL no derived
 * promise exists; a value the handler returns is destroyed at once, and a
 * new rejection it returns is reported as unhandled (passing on a
 * rejection the handler saw is not: it was handled).
 *
 * The derived promise keeps itself alive while it waits: its handler holds
 * a reference until it has run, so releasing the one you got does not stop
 * the chain (as in JavaScript, where a then() result nobody keeps still
 * settles).  p itself is not kept alive by its handlers: if p's last
 * reference goes while it is pending, its handlers never run.
 *
 * Registering any handler marks p as handled for the unhandled-rejection
 * hook.  Errors: UV_EINVAL (NULL p, mask not 1..3), UV_ENOMEM, UVP_ECLOSED;
 * then nothing was registered and `arg` is still yours. */
#define uvp_promise_on(...) uvp_promise_on_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_on_at(uvp_promise_t *p, int mask, uvp_then_cb cb,
                                 void *arg, uvp_promise_t **out,
                                 const char *file, int line);
/** @} */

/** @name uvp_promise_on_full, uvp_promise_on_full_at
 * @{ */
/** The same with a destroy notifier for `arg` (the _full forms, as GLib
 * names them): arg_free(arg) runs exactly once, on the loop thread, after
 * the handler's last call, or as soon as uvp knows it will never be called:
 * p settles with an outcome outside the mask, the derived promise is
 * cancelled, p is freed while pending, or the context is torn down.  It
 * never runs while the handler may still run.  arg_free may be NULL (the
 * plain forms).  On error it does not run: arg is still yours. */
#define uvp_promise_on_full(...)                                               \
  uvp_promise_on_full_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_on_full_at(uvp_promise_t *p, int mask,
                                      uvp_then_cb cb, void *arg,
                                      uvp_free_cb arg_free, uvp_promise_t **out,
                                      const char *file, int line);
/** @} */

/** p.then(cb): cb on fulfilment; a rejection passes through. */
#define uvp_promise_then(p, ...)                                               \
  uvp_promise_on_at((p), UVP_ON_FULFILLED, __VA_ARGS__, __FILE__, __LINE__)
/** p.catch(cb): cb on rejection; a fulfilment passes through. */
#define uvp_promise_catch(p, ...)                                              \
  uvp_promise_on_at((p), UVP_ON_REJECTED, __VA_ARGS__, __FILE__, __LINE__)
/** uvp_promise_then with arg_free, as uvp_promise_on_full. */
#define uvp_promise_then_full(p, ...)                                          \
  uvp_promise_on_full_at((p), UVP_ON_FULFILLED, __VA_ARGS__, __FILE__, __LINE__)
/** uvp_promise_catch with arg_free, as uvp_promise_on_full. */
#define uvp_promise_catch_full(p, ...)                                         \
  uvp_promise_on_full_at((p), UVP_ON_REJECTED, __VA_ARGS__, __FILE__, __LINE__)

/** @name uvp_promise_finally, uvp_promise_finally_full
 * @{ */
/** p.finally(cb): cb runs on either outcome (and sees it).  The derived
 * promise settles like p, unless cb returns a rejection (derived rejects with
 * it) or adopts a promise that rejects (derived rejects with that reason);
 * an adopted promise is waited for first, and one that waits for the
 * derived promise itself rejects it with UVP_ECYCLE (as uvp_ret_adopt
 * does).  A value cb returns is destroyed.
 * When cb runs, `out`, the errors and, for the _full form, arg_free are as
 * for uvp_promise_on and uvp_promise_on_full. */
#define uvp_promise_finally(...)                                               \
  uvp_promise_finally_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_finally_at(uvp_promise_t *p, uvp_then_cb cb,
                                      void *arg, uvp_promise_t **out,
                                      const char *file, int line);
#define uvp_promise_finally_full(...)                                          \
  uvp_promise_finally_full_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_finally_full_at(uvp_promise_t *p, uvp_then_cb cb,
                                           void *arg, uvp_free_cb arg_free,
                                           uvp_promise_t **out,
                                           const char *file, int line);
/** @} */

/** Mark p handled, as registering a handler does, without one: a rejection
 * of p, now or later, is not reported to the unhandled-rejection hook.
 * This is JavaScript's p.catch(() => {}), written for a rejection a
 * program expects and only inspects, with no handler to write and no
 * derived promise.  Nothing else changes: p's handlers, consumers and
 * cancellation are as before, and what they derive is reported on its
 * own.  Loop thread.  Errors: UV_EINVAL (NULL), UVP_ECLOSED, UVP_ETHREAD. */
UVP_EXTERN int uvp_promise_mark_handled(uvp_promise_t *p);
/** @} */

/* ------------------------------------------------------------------------ */
/* Promises: references and inspection                                      */
/* ------------------------------------------------------------------------ */

/** @defgroup inspection Promises: references and inspection */
/** @{ */

/** Take one more reference.  Loop thread only.  Returns p (NULL for NULL).
 * Also after uvp_ctx_close: the reference is dropped like the others. */
UVP_EXTERN uvp_promise_t *uvp_promise_retain(uvp_promise_t *p);

/** Drop one reference; the last one frees the promise and runs its value's or
 * payload's destructor.  Any thread.  NULL is a no-op.  Off the loop thread
 * it posts a message (see "Threads"); if that allocation fails, the
 * reference stays: a leak, as a void call cannot report it. */
UVP_EXTERN void uvp_promise_release(uvp_promise_t *p);

/** The state; for a NULL promise UVP_PENDING. */
UVP_EXTERN uvp_state_t uvp_promise_state(const uvp_promise_t *p);

/** The value of a fulfilled promise (borrowed), else NULL. */
UVP_EXTERN void *uvp_promise_value(const uvp_promise_t *p);

/** The code of a rejected promise (< 0) or 0; *payload (if not NULL) gets the
 * borrowed payload (NULL unless p is rejected).  Looking does not count as
 * handling: a rejection only read this way is still reported (see
 * uvp_ctx_set_unhandled_cb). */
UVP_EXTERN int uvp_promise_reason(const uvp_promise_t *p, void **payload);

/** @name uvp_promise_site, uvp_promise_ctx
 * @{ */
/** Where the promise was created (static strings) and the context it belongs
 * to.  Sites are interned per process (16 383 distinct (file, line) pairs;
 * past that, new sites report a NULL file and line 0, as a NULL p does). */
UVP_EXTERN void uvp_promise_site(const uvp_promise_t *p, const char **file,
                                 int *line);
UVP_EXTERN uvp_ctx_t *uvp_promise_ctx(const uvp_promise_t *p);
/** @} */

/** Async stack traces.  With traces on, a promise also names how the
 * program got to creating it, as a chain of frames, newest first:
 * @verbatim
 *   promise at app.c:40   created here, while the frame below ran
 *   then at app.c:31      a then()/catch()/finally() of the promise below
 *   await at app.c:22     a fiber that resumed from an await here
 *   fiber at app.c:12     a fiber spawned here (its promise's frame)
 *   group at app.c:8      a task group created here, starting a member
 * @endverbatim
 * A then()'s promise follows the promise it was called on; anything else
 * created inside a handler follows that handler's then() (or the promise
 * it observes), inside a fiber the fiber's last await (or its spawn),
 * inside a group's member start the group; in your own libuv callbacks,
 * the chain starts there.  The unhandled-rejection report and
 * uvp_ctx_dump_pending print the chain under each promise.
 * Cost: none per promise (the trace takes two bytes the promise had
 * spare); with traces on, a lookup in a per-context cache per promise
 * created (docs/internals.md has the figure).  Frames are interned once
 * per process (16 383 of them; past that, chains stop growing); a frame
 * that repeats one of the four below it is not added again and a chain
 * stops at 48 frames, so a loop or a recursion shows once.
 * Off by default; on for every context when the environment has
 * UVP_TRACES=1 at uvp_ctx_new.  Turning traces on affects promises created
 * from then on.  Errors: UV_EINVAL, UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM. */
UVP_EXTERN int uvp_ctx_set_traces(uvp_ctx_t *ctx, int on);

/** One frame of a promise's trace (uvp_promise_trace). */
typedef struct uvp_trace_frame_s {
  const char *what; /**< "promise", "then", "await", "fiber", "group", or
                         "name": the name of the fiber or group of the
                         frame after it (see uvp_promise_trace) */
  const char *file; /**< NULL if the site table was full; for a "name"
                         frame the name (static: it lives as long as the
                         process) */
  int line;         /**< the site's line; 0 for a "name" frame */
} uvp_trace_frame_t;

/** p's trace: fills frames[0 .. min(count, max) - 1], newest first, and
 * returns count, the number of frames (0: no trace: traces were off when
 * p was created, or p is NULL, or frames is NULL with max > 0; frames
 * may be NULL with max 0, to count).  A fiber named by
 * uvp_fiber_set_name, or a group by uvp_group_set_name, adds a frame
 * {"name", NAME, 0} right before (newer than) its "fiber" or "group"
 * frame in the traces of what is created after the name was set: {"await",
 * "app.c", 22}, {"name", "fetch 3", 0}, {"fiber", "app.c", 12}.  Any
 * thread, while you hold p. */
UVP_EXTERN size_t uvp_promise_trace(const uvp_promise_t *p,
                                    uvp_trace_frame_t *frames, size_t max);
/** Print p's trace to stream, a frame per line (`await at app.c:22`); a
 * "name" frame is printed with the frame it names (`fiber "fetch 3" at
 * app.c:12`), as the unhandled-rejection report and uvp_ctx_dump_pending
 * do.  Errors: UV_EINVAL, UV_ENOENT (p has no trace). */
UVP_EXTERN int uvp_promise_print_trace(const uvp_promise_t *p, FILE *stream);
/** @} */

/* ------------------------------------------------------------------------ */
/* Combinators: all, allSettled, race, any                                   */
/* ------------------------------------------------------------------------ */

/** @defgroup combinators Combinators: all, allSettled, race, any */
/** @{ */

/** Common rules (ECMAScript's Promise.all / allSettled / race / any):
 *  - `inputs` is an array of n promises of `ctx` (n may be 0); it is read
 *    during the call only, so you may free it right after.  The same
 *    promise may appear several times; inputs may be pending or settled.
 *  - The result (*out, one reference to you) settles later, from the
 *    scheduler, with one exception taken from ECMAScript: with no inputs
 *    (n == 0), all and allSettled return a result already fulfilled with
 *    zero values/records, and any one already rejected with an empty
 *    aggregate; race's never settles.  Either way no handler ever runs
 *    inside the call.  Inputs already settled when the call is made are
 *    looked at in input order.
 *  - allSettled's records (and any's aggregate) are in input order.
 *  - The result keeps its inputs referenced until the result itself is
 *    freed, so values and payloads it exposes stay valid while you hold it.
 *    A pending result keeps itself alive until it settles, is cancelled or
 *    the context closes.
 *  - A call allocates its state (about 24 bytes per input, 32 for all)
 *    and the result's promise before anything is attached, so an
 *    allocation failure returns UV_ENOMEM and changes nothing.  The
 *    context keeps its largest freed state block of 256 KiB or more for
 *    the next combinator or map (counted in uvp_ctx_stats' slab_bytes,
 *    freed with the context).
 *  - Only uvp settles the result: uvp_promise_resolve/reject on it return
 *    UVP_ESETTLED.  Cancelling it (uvp_promise_cancel) cancels the inputs
 *    still pending that nothing else observes (uvp_promise_cancel's rule:
 *    every reaction on the input is this combinator's; references held are
 *    not consumers), so cancelling one combinator never rejects an input
 *    another combinator or handler is waiting on.  Once decided or
 *    cancelled, a combinator no longer observes its inputs still pending:
 *    cancelling their other consumers later reaches them.
 *  - flags: 0, or UVP_CANCEL_LOSERS for all/race/any: once the outcome is
 *    decided, cancel the inputs still pending.  Off by default because an
 *    input may be shared with other consumers, and JavaScript never
 *    cancels; turn it on for inputs you own (e.g. a race of mirrors).
 * Errors: UV_EINVAL (NULL ctx/out, NULL inputs with n > 0, a NULL input,
 * unknown flags), UVP_EXCTX (an input of another context), UVP_ECLOSED,
 * UV_ENOMEM. */
enum {
  UVP_CANCEL_LOSERS = 1 /**< once decided, cancel the inputs still pending */
};

/** @name uvp_values_t, uvp_promise_all, uvp_promise_all_at
 * @{ */
/** all: fulfils, once every input has fulfilled, with a uvp_values_t whose
 * values[i] is input i's value (borrowed from the input, valid while the
 * result is referenced).  Rejects as soon as the first input rejects (first
 * in time), with that input's reason (same code, same payload). */
typedef struct uvp_values_s {
  size_t count;  /**< how many inputs */
  void **values; /**< values[i]: input i's value */
} uvp_values_t;
#define uvp_promise_all(...) uvp_promise_all_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_all_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                                  size_t n, int flags, uvp_promise_t **out,
                                  const char *file, int line);
/** @} */

/** One input's outcome: status 0 and its value, or status < 0 (the code) and
 * its payload.  `value` and `promise` are borrowed from the input. */
typedef struct uvp_settled_s {
  int status;             /**< 0, or the code (< 0) */
  void *value;            /**< the value, or the payload */
  uvp_promise_t *promise; /**< the input */
} uvp_settled_t;

/** allSettled's value, and any's rejection payload: one record per input in
 * input order, with the counts of each kind. */
typedef struct uvp_settled_list_s {
  size_t count;         /**< how many inputs (records) */
  size_t fulfilled;     /**< how many fulfilled */
  size_t rejected;      /**< how many rejected */
  uvp_settled_t *items; /**< one record per input, in input order */
} uvp_settled_list_t;

/** @name uvp_promise_all_settled, uvp_promise_all_settled_at
 * @{ */
/** allSettled: never rejects (except UVP_ECLOSED at teardown, UV_ECANCELED
 * if cancelled).  Fulfils once every input has settled with a
 * uvp_settled_list_t. */
#define uvp_promise_all_settled(...)                                           \
  uvp_promise_all_settled_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_all_settled_at(uvp_ctx_t *ctx,
                                          uvp_promise_t *const *inputs,
                                          size_t n, uvp_promise_t **out,
                                          const char *file, int line);
/** @} */

/** @name uvp_promise_race, uvp_promise_race_at
 * @{ */
/** race: settles like the first input to settle (same value or reason,
 * shared).  With n == 0 it never settles; teardown still frees it. */
#define uvp_promise_race(...)                                                  \
  uvp_promise_race_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_race_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                                   size_t n, int flags, uvp_promise_t **out,
                                   const char *file, int line);
/** @} */

/** @name uvp_promise_any, uvp_promise_any_at
 * @{ */
/** any: fulfils like the first input to fulfil.  If every input rejects it
 * rejects with UVP_EAGGREGATE and a uvp_settled_list_t payload holding every
 * input's reason in input order; n == 0 rejects that way (empty) at once. */
#define uvp_promise_any(...) uvp_promise_any_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_any_at(uvp_ctx_t *ctx, uvp_promise_t *const *inputs,
                                  size_t n, int flags, uvp_promise_t **out,
                                  const char *file, int line);
/** @} */
/** @} */

/* ------------------------------------------------------------------------ */
/* Time                                                                      */
/* ------------------------------------------------------------------------ */

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
 * still accepted (it changes nothing). */
enum {
  UVP_KEEP_ALIVE = 2, /**< the default now; accepted, changes nothing */
  UVP_UNREF = 16      /**< the timer alone does not keep the loop alive */
};

/** @name uvp_delay, uvp_delay_at
 * @{ */
/** delay: fulfils with `value` (owned by uvp on success; free_cb may be NULL)
 * after `ms` milliseconds on the loop's clock.  Cancelling it stops the
 * timer.  flags: 0 or UVP_UNREF (UVP_KEEP_ALIVE: 0).  Errors: UV_EINVAL
 * (NULL ctx or out, unknown flags, both flags), UV_ENOMEM, UVP_ECLOSED.
 * Cancelled: nothing is left: the timer stops, value goes to free_cb. */
#define uvp_delay(...) uvp_delay_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_delay_at(uvp_ctx_t *ctx, uint64_t ms, void *value,
                            uvp_free_cb free_cb, int flags, uvp_promise_t **out,
                            const char *file, int line);
/** @} */

/** @name uvp_timeout, uvp_timeout_at
 * @{ */
/** timeout: settles like `p` if p settles within `ms`; otherwise rejects with
 * UV_ETIMEDOUT: Promise.race([p, timeout(ms)]).  Then p is cancelled
 * (uvp_promise_cancel: its producer's hook runs, and a timed-out request
 * really stops) if the timeout is all that waits for it; a p other
 * consumers wait for is left alone, and they go on waiting, as with
 * Promise.race, and the timeout stops being one of them (cancelling the
 * last of them later cancels p).  UVP_CANCEL_INPUT in flags cancels p in
 * either case; UVP_UNREF keeps uv_run from waiting for the timer alone.
 * Cancelling the result cancels p by the same rule.  The result keeps
 * itself alive while pending (its timer holds it).  Borrows p.
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
 *                      present, not from before the wait.  A retry schedule
 *                      of 60 s against a server that refuses at once
 *                      takes milliseconds.  Work the program runs itself
 *                      (its own sockets, threads settling promises) is
 *                      not seen, and the clock may jump while it is under
 *                      way, unless the program holds the clock for it
 *                      (uvp_clock_hold; uvp-curl's transfers do).
 * @endverbatim
 * Timers fire in order of due time, those due together in the order they
 * were started, the same order every run; what their promises' handlers
 * do runs from the loop afterwards, as on the real clock.  The clock
 * starts at uv_now() of the moment it is turned on.
 * Switching between real and virtual is refused with UV_EBUSY while the
 * context has any promise (uvp_ctx_stats' `live`) or the current scope a
 * deadline: call it right after uvp_ctx_new.  Switching between
 * UVP_CLOCK_VIRTUAL and UVP_CLOCK_AUTO is allowed at any time.  With the
 * clock real nothing of this costs anything measurable (docs/internals.md).
 * UVP_CLOCK_AUTO adds two unreferenced handles, closed by uvp_ctx_close.
 * Loop thread.  Errors: UV_EINVAL (NULL ctx, unknown mode), UVP_ECLOSED,
 * UVP_ETHREAD, UV_EBUSY (see above), UV_ENOMEM. */
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
 * the program's own over its own sockets, or a binding's (uvp-curl holds
 * the clock for each transfer it runs).  While any hold is taken,
 * UVP_CLOCK_AUTO does not jump but runs at the loop's pace, as it does
 * while a wrapper's request is in flight, so that the reply beats a
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
 * on the real one (0 for NULL).  Loop thread; also after uvp_ctx_close
 * while the context's memory lives. */
UVP_EXTERN uint64_t uvp_clock_now(const uvp_ctx_t *ctx);
/** @} */

/* ------------------------------------------------------------------------ */
/* Bounded fan-out                                                           */
/* ------------------------------------------------------------------------ */

/** @defgroup fanout Bounded fan-out */
/** @{ */

/** Starts item `index`: store a promise in *out (one reference, which uvp
 * takes) and return 0, or return a negative code, which counts as that
 * item's rejection (returning 0 without a promise, or a positive code,
 * counts as UV_EINVAL; a promise of another context as UVP_EXCTX).
 * Runs on the loop thread: the first `limit` calls run inside
 * uvp_promise_map(), the rest from the scheduler as earlier items
 * settle. */
typedef int (*uvp_map_start_cb)(void *arg, size_t index, uvp_promise_t **out);

/** Streaming: called once per item as it settles (in completion order),
 * on the loop thread from the scheduler (an item whose start ran out of
 * memory before it had a promise: at once), with its index and outcome
 * (borrowed: valid during the call; the value stays valid while the map's
 * result is referenced), before the result's own handlers run.  Not
 * called any more once the result is decided early (a FAIL_FAST failure,
 * a cancellation): the items cancelled then, or never started, are not
 * reported (the FAIL_FAST failure itself is). */
typedef void (*uvp_map_each_cb)(void *arg, size_t index,
                                const uvp_outcome_t *outcome);

enum {
  /** Stop starting items at the first failure, cancel the ones in flight,
   * and reject with the failure's reason. */
  UVP_MAP_FAIL_FAST = 4
};

/** Options of uvp_promise_map. */
typedef struct uvp_map_opts_s {
  size_t limit;              /**< most items in flight; 0: uvp_pool_size() */
  int flags;                 /**< 0 or UVP_MAP_FAIL_FAST */
  uvp_map_each_cb on_settle; /**< optional */
  uvp_free_cb arg_free;      /**< optional: destroy notifier for `arg` (see
                                  uvp_promise_map) */
} uvp_map_opts_t;

/** @name uvp_promise_map, uvp_promise_map_at
 * @{ */
/** Run `start` for items 0..n-1 with never more than opts->limit in flight.
 * The result fulfils with a uvp_settled_list_t in input order (like
 * allSettled; items never started because of FAIL_FAST are rejected with
 * UV_ECANCELED).  With UVP_MAP_FAIL_FAST it instead rejects with the first
 * failure's reason.  Cancelling the result stops starting items and
 * cancels those in flight by uvp_promise_cancel's rule: an item something
 * else also waits for is left to it, and the map stops waiting for it (so
 * cancelling its last other consumer cancels it); UVP_MAP_FAIL_FAST's
 * failure does the same.  `opts` may be NULL (defaults).
 * opts->arg_free, if set, runs once on the loop thread with `arg` when
 * neither callback will be called again: once the result is decided (all
 * items in, a FAIL_FAST failure, a cancellation, teardown) and no callback
 * is running; with n == 0, inside this call, which then returns the
 * result already fulfilled with an empty list (as allSettled's).
 * Errors: UV_EINVAL (also unknown opts->flags), UV_ENOMEM, UVP_ECLOSED;
 * then arg is still yours. */
#define uvp_promise_map(...) uvp_promise_map_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_map_at(uvp_ctx_t *ctx, size_t n,
                                  uvp_map_start_cb start, void *arg,
                                  const uvp_map_opts_t *opts,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */

/** The size of libuv's thread pool, shared by fs, getaddrinfo and work
 * requests of every loop: UV_THREADPOOL_SIZE if set (1..1024), else 4.
 * The default concurrency for pool-bound fan-out. */
UVP_EXTERN size_t uvp_pool_size(void);
/** @} */

/* ------------------------------------------------------------------------ */
/* After allSettled: sequential steps, retry, splitting outcomes             */
/* ------------------------------------------------------------------------ */

/** @defgroup seq After allSettled: sequential steps, retry, splitting outcomes
 *
 * Three everyday patterns, as JavaScript developers write them after
 * Promise.allSettled, in C:
 *
 * Dashboard cards: N independent loaders, render each success or failure.
 *
 * @code
 *   uvp_promise_all_settled(ctx, loaders, n, &cards);
 *   ... in the handler on `cards`:
 *   const uvp_settled_list_t *l = in->value;
 *   for (size_t i = 0; i < l->count; i++)
 *     if (l->items[i].status == 0) render_card(i, l->items[i].value);
 *     else render_error(i, uvp_strerror(l->items[i].status));
 * @endcode
 *
 * Batch save: report per-item success or failure in two lines.
 *
 * @code
 *   uvp_split_t s;
 *   uvp_settled_split(list, &s);
 *   printf("saved %zu of %zu; failed:", s.nfulfilled, list->count);
 *   for (size_t i = 0; i < s.nrejected; i++)
 *     printf(" #%zu (%s)", s.rejected[i].index,
 *            uvp_err_name(s.rejected[i].status));
 *   uvp_split_free(&s);
 * @endcode
 *
 * Mirrors: the first of several servers to answer, each tried with retry;
 * the losers are cancelled once one succeeds.
 *
 * @code
 *   int codes[] = {UV_ECONNREFUSED, UV_ETIMEDOUT, UV_ECONNRESET};
 *   uvp_retry_opts_t o = {.attempts = 4, .base_ms = 100, .jitter = 0.5,
 *                         .retry_on = codes, .retry_on_count = 3};
 *   for (int i = 0; i < nmirrors; i++)
 *     uvp_retry(ctx, fetch_from_mirror, &mirrors[i], &o, &tries[i]);
 *   uvp_promise_any(ctx, tries, nmirrors, UVP_CANCEL_LOSERS, &first);
 * @endcode
 *
 * A fan-out with retry per item: have uvp_promise_map's start callback
 * return uvp_retry(...)'s promise. */
/** @{ */

/** A step of a sequence: `prev` is the previous step's outcome (borrowed;
 * fulfilled, since a rejection ends the sequence).  Store the next step's
 * promise in *next (uvp takes that reference) and return 0; or leave *next
 * NULL and return 0 to stop; or return a negative code to fail with it (a
 * positive one fails with UV_EINVAL, as for uvp_map_start_cb).
 * Runs on the loop thread from the scheduler, never inside the call that
 * started the sequence, with constant stack however many steps run. */
typedef int (*uvp_step_cb)(void *arg, size_t index, const uvp_outcome_t *prev,
                           uvp_promise_t **next);

/** @name uvp_promise_loop, uvp_promise_loop_at
 * @{ */
/** The C form of `let v; while (...) v = await step(v);`: calls `step` for
 * index 0, 1, ... each with the previous step's outcome (index 0 gets a
 * fulfilled outcome with value NULL) until it stops.  The result settles
 * like the last step's promise (it fulfils with the last value when the
 * step function stops, and rejects with the first rejection).  Memory is
 * constant: only the current step's promise is held.  Cancelling the result
 * cancels the step in flight (unless something else also waits for it:
 * then the loop only stops waiting, by uvp_promise_cancel's rule) and calls
 * no further step.  (A hand-written recursion, a handler that returns
 * uvp_ret_adopt of the next step's chain, grows memory with the number of
 * steps until the last settles, as `return step().then(again)` does in
 * JavaScript: this is the constant-memory form.)
 * Errors: UV_EINVAL, UV_ENOMEM, UVP_ECLOSED; then arg is still yours. */
#define uvp_promise_loop(...)                                                  \
  uvp_promise_loop_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_loop_at(uvp_ctx_t *ctx, uvp_step_cb step, void *arg,
                                   uvp_promise_t **out, const char *file,
                                   int line);
/** @} */
/** @name uvp_promise_loop_full, uvp_promise_loop_full_at
 * @{ */
/** The same with a destroy notifier: arg_free(arg) runs once, on the loop
 * thread, when no step will be called again (the result decided,
 * cancelled or torn down, and no step running). */
#define uvp_promise_loop_full(...)                                             \
  uvp_promise_loop_full_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_loop_full_at(uvp_ctx_t *ctx, uvp_step_cb step,
                                        void *arg, uvp_free_cb arg_free,
                                        uvp_promise_t **out, const char *file,
                                        int line);
/** @} */

/** @name uvp_promise_reduce, uvp_promise_reduce_full
 * @{ */
/** The C form of a reduce with await: calls step for index 0..n-1, one at a
 * time, each with the previous outcome (index 0 gets `initial`'s outcome,
 * once initial has fulfilled; initial is borrowed and may be NULL for a
 * NULL value).  With n == 0 the result settles like initial; an initial
 * that rejects rejects the result without any step.  Stopping early
 * (*next NULL) ends it with the previous value.  Same rules as
 * uvp_promise_loop; an initial of another context is UVP_EXCTX. */
#define uvp_promise_reduce(...)                                                \
  uvp_promise_reduce_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_reduce_at(uvp_ctx_t *ctx, size_t n, uvp_step_cb step,
                                     void *arg, uvp_promise_t *initial,
                                     uvp_promise_t **out, const char *file,
                                     int line);
#define uvp_promise_reduce_full(...)                                           \
  uvp_promise_reduce_full_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_reduce_full_at(
    uvp_ctx_t *ctx, size_t n, uvp_step_cb step, void *arg, uvp_free_cb arg_free,
    uvp_promise_t *initial, uvp_promise_t **out, const char *file, int line);
/** @} */

/** Starts attempt number `attempt` (0-based): like uvp_map_start_cb.  On
 * the loop thread: attempt 0 inside uvp_retry(), the others from the
 * scheduler once their backoff has passed. */
typedef int (*uvp_attempt_cb)(void *arg, unsigned int attempt,
                              uvp_promise_t **out);

/** Whether to retry after a failure with `code` (attempt is the one that
 * failed): non-zero to retry.  On the loop thread, from the scheduler. */
typedef int (*uvp_retry_pred)(void *arg, int code, unsigned int attempt);

/** Options of uvp_retry. */
typedef struct uvp_retry_opts_s {
  unsigned int attempts;       /**< most attempts in all; 0: 3 */
  uint64_t base_ms;            /**< wait before the second attempt; 0: 100 */
  uint64_t max_ms;             /**< cap on one wait; 0: 30 000 */
  double factor;               /**< growth per attempt; <= 1: 2.0 */
  double jitter;               /**< 0..1: each wait is drawn uniformly from
                                    [w * (1 - jitter), w]; outside: 0 */
  const int *retry_on;         /**< codes worth retrying; NULL: any code (a
                                    non-NULL list of count 0: none) */
  size_t retry_on_count;       /**< how many codes retry_on holds */
  uvp_retry_pred should_retry; /**< if set, decides instead of retry_on */
  uvp_free_cb arg_free;        /**< optional: destroy notifier for `arg` (see
                                    uvp_retry) */
} uvp_retry_opts_t;

/** @name uvp_retry, uvp_retry_at
 * @{ */
/** Run `attempt`, and when its promise rejects with a retryable code start
 * it again after a backoff (base_ms * factor^k, capped, with jitter), up to
 * `attempts` times.  The result settles like the first attempt that
 * fulfils, or like the last failure.  The backoff timer keeps the loop
 * alive: a retry in progress is work in progress, as the attempt's own
 * requests are.  Cancelling the result stops the wait and cancels the
 * attempt in flight (by uvp_promise_cancel's rule, as a loop's step).
 * `opts` may be NULL (defaults); it is copied, but retry_on is borrowed
 * until the result settles.  opts->arg_free, if set, runs once on the loop
 * thread with `arg` when neither `attempt` nor should_retry will be called
 * again (the result decided, cancelled or torn down, and no callback
 * running).
 * Errors: UV_EINVAL, UV_ENOMEM, UVP_ECLOSED; then arg is still yours. */
#define uvp_retry(...) uvp_retry_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_retry_at(uvp_ctx_t *ctx, uvp_attempt_cb attempt, void *arg,
                            const uvp_retry_opts_t *opts, uvp_promise_t **out,
                            const char *file, int line);
/** @} */

/** One outcome with its input index; value/payload borrowed from the list. */
typedef struct uvp_indexed_s {
  size_t index; /**< the input's index */
  int status;   /**< 0, or the code (< 0) */
  void *value;  /**< the value, or the payload */
} uvp_indexed_t;

/** The fulfilled and the rejected outcomes of an allSettled (or map) result,
 * each in input order.  Nothing is copied but pointers: the values stay
 * owned by the result promise, which must outlive this split. */
typedef struct uvp_split_s {
  size_t nfulfilled;        /**< how many fulfilled */
  size_t nrejected;         /**< how many rejected */
  uvp_indexed_t *fulfilled; /**< the fulfilled outcomes (nfulfilled) */
  uvp_indexed_t *rejected;  /**< the rejected outcomes (nrejected) */
} uvp_split_t;

/** Fill *out (one allocation); free it with uvp_split_free().
 * @code
 *   uvp_split_t s;
 *   uvp_settled_split(list, &s);
 *   printf("loaded %zu of %zu, %zu failed\n", s.nfulfilled, list->count,
 *          s.nrejected);
 * @endcode
 * Errors: UV_EINVAL (NULL list or out, NULL items with a count),
 * UV_ENOMEM (*out is then empty). */
UVP_EXTERN int uvp_settled_split(const uvp_settled_list_t *list,
                                 uvp_split_t *out);
/** Free what uvp_settled_split allocated and empty *split (a second call, or
 * one on the empty split a failed uvp_settled_split leaves, frees nothing).
 * NULL is a no-op. */
UVP_EXTERN void uvp_split_free(uvp_split_t *split);
/** @} */

/* ------------------------------------------------------------------------ */
/* Fibers: async functions and await                                         */
/* ------------------------------------------------------------------------ */

/** @defgroup fibers Fibers: async functions and await
 *
 * A fiber is a function running on a stack of its own, inside the loop you
 * run, that can wait for a promise without blocking the loop: the C form of
 * a JavaScript async function.  Every fiber is a promise.
 *
 * @code
 *   static uvp_ret_t load_all(void *arg) {
 *     uvp_promise_t *all;
 *     uvp_promise_all_settled(ctx, loaders, n, &all);
 *     uvp_outcome_t o;
 *     uvp_await(all, &o);                 // the loop runs meanwhile
 *     const uvp_settled_list_t *l = o.value;
 *     ...
 *     uvp_promise_release(all);
 *     return uvp_ret_value(NULL, NULL);
 *   }
 *   uvp_fiber_spawn(ctx, load_all, NULL, NULL, &done);
 * @endcode
 *
 * Scheduling.  A fiber starts from the run queue, like a handler, never
 * inside uvp_fiber_spawn (a loop spawning a thousand fibers spawns them,
 * then they start in order).  It runs until it awaits or returns, then
 * the loop goes on: timers, I/O, handlers and other fibers run while it
 * waits.  Awaiting a promise that is already settled still yields once,
 * through the run queue, as JavaScript's await does: a fiber looping over
 * settled promises lets everything queued run between its steps, and the
 * scheduler's budget keeps timers and I/O from being starved.  A fiber
 * always runs on the loop thread; a promise settled from another thread
 * wakes it there.
 *
 * Ownership across an await.  uvp_await borrows p: hold a reference to it
 * across the call (uvp keeps its own while the fiber waits).  The outcome's
 * value is p's, valid while you hold your reference.  What a fiber may
 * leave pointed to on its stack while it waits depends on its mode (see
 * Modes below): in the default mode everything on the fiber's stack stays
 * where it is while the fiber is suspended, so locals may be lent to other
 * code (handlers, other fibers, buffers given to I/O) until the fiber
 * returns, and a fiber must not return while something still uses them;
 * in the compact mode nothing may point into a parked fiber's stack.  No
 * uvp operation keeps a pointer into a fiber's stack across an await, in
 * either mode: uvp_await writes *out once the fiber has resumed, and uvp
 * copies what a call is given (paths, addresses, options) during the call,
 * except what the call says it borrows (the buffers of uvp_fs_read and
 * uvp_fs_write, of uvp_tcp_write): where those live is yours to choose.
 *
 * Cancellation and teardown.  Cancelling a fiber's promise rejects it with
 * UV_ECANCELED at once, as any cancellation does; the fiber itself goes on
 * running so it can clean up: the await it is suspended in returns
 * UV_ECANCELED (after cancelling the awaited promise, when the fiber was
 * all that waited for it: uvp_promise_cancel's rule), and so does every
 * later await but uvp_await_shielded, which lets it wait for its cleanup.  Its
 * return value is then discarded.  (When the cancelled await was on a
 * group's join that only this fiber consumed, the join is cut and the
 * await returns once the group's members have ended: see "Task groups".)
 * A fiber's promise is settled before the fiber has returned, so awaiting
 * it does not tell that a cancelled child fiber has ended: children that
 * share the parent's state belong in a group (uvp_group_spawn), whose join
 * settles only once every member has returned, whatever cut it.  uvp_ctx_close
 * resumes every suspended fiber in turn with UVP_ECLOSED (every await then
 * returns UVP_ECLOSED at once), lets each run to its end, then frees the
 * stacks: a fiber must return once it sees UVP_ECLOSED (one that keeps looping
 * keeps uvp_ctx_close from returning, as any endless loop would).  Fibers
 * spawned but not started never start. uvp_ctx_close inside a fiber fails with
 * UVP_EINFIBER: a fiber cannot free the stack it runs on.
 *
 * Stacks.  Each fiber gets a stack (256 KiB by default), carved from a few
 * large mappings that uvp maps as it needs them (each twice the last, up to 64
 * MiB), not a mapping of its own: fibers take no entries of the kernel's table
 * of mappings (vm.max_map_count), and a process holds as many as its memory
 * allows.  A million fibers each awaiting its own uvp_delay take 4.3 GB in the
 * default mode (a 4 KiB page of stack each, and 512 bytes of page tables beside
 * the resident set) and 0.86 GB in the compact mode (896 bytes each); see
 * docs/guide-fibers.md.  uvp_fiber_spawn fails with UV_ENOMEM when no stack can
 * be mapped (the address space, RLIMIT_AS) or a record allocated.  Pages are
 * the kernel's to give as a fiber touches them: a process that runs out of
 * resident memory is ended by the kernel's OOM killer, not told UV_ENOMEM, as
 * with any memory touched on demand.  Stacks are pooled per context and reused:
 * up to 1024 returned stacks (and 256 MiB of them) keep the pages their last
 * fiber touched, for the next fibers (uvp_ctx_stats counts them), so spawning,
 * awaiting and returning make no system call and allocate nothing once warm; a
 * stack returned beyond those gives its pages back (one madvise call).  Only
 * the pages a fiber touches are resident (a fiber suspended a few calls deep
 * holds one 4 KiB page).  Do not run the loop (uv_run) from a fiber.
 *
 * Overflow.  Below every stack lies a guard, and a fiber that runs off its
 * stack is stopped with a report on stderr naming where it was spawned
 * ("uvp: the fiber spawned at app.c:12 ran off its stack of ... bytes"),
 * on every kernel.  Which guard depends on the kernel, found out once per
 * process by its effect (not by what the kernel answers):
 *  - Linux 6.13 and later: a guard page under every stack (a guard marker,
 *    MADV_GUARD_INSTALL), in the same mapping.  Any access to it faults at
 *    once.  uvp's SIGSEGV handler reports a fault in the guard page of the
 *    fiber running on the thread, then hands the fault on to the handler
 *    installed before it (ASan's, which reports the faulting access too;
 *    or the default action: the process dies of SIGSEGV).  It runs on an
 *    alternate signal stack, which uvp gives each thread running fibers
 *    that has none.  A program that installs a SIGSEGV handler after uvp
 *    has its handler called for every fault uvp's does not report, once a
 *    context of the process next maps stacks (uvp installs its own again
 *    then, on top).
 *  - Older kernels, and qemu-user: a PROT_NONE guard page, which splits a
 *    mapping (two entries of the table each), for as many stacks at once
 *    as a quarter of vm.max_map_count allows in the process (16 382 by
 *    default), reported as above; beyond those, a canary: 16 bytes just
 *    under the stack's guard page (which is then ordinary memory), checked
 *    with the stack pointer each time the fiber switches away (every await
 *    and its return).  An overrun deeper than that page overwrites the
 *    canary before anything of another fiber's stack, and the process
 *    aborts at the fiber's next switch with the report.  What the check
 *    cannot promise: code the overrunning fiber runs before that switch
 *    may have written past the canary (into the top of the stack below:
 *    another fiber's first frames), and an overrun that stays within the
 *    guard page, or whose frames skip the canary's 16 bytes and return
 *    before the switch, is not reported.
 * With either guard page, a single frame larger than a page (a local array
 * over 4 KiB) may step over it: build with -fstack-clash-protection to
 * have such frames touch every page on the way down.  The environment
 * variable UVP_FIBER_GUARD=fallback, read once, makes a process use the
 * older kernels' guards wherever it runs (UVP_FIBER_GUARD=canary: canaries
 * only), to test or compare them.
 *
 * Modes (uvp_ctx_set_fiber_mode, per context).  In the default mode a
 * suspended fiber's stack stays where it is, with anything lent from it
 * (see Ownership above); a suspended fiber costs at least the page at its
 * stack's top (4 KiB) and its share of the page tables (512 bytes with 256
 * KiB stacks).  In the compact mode (UVP_FIBER_COMPACT) a fiber's record is
 * on the heap and it runs on a stack that the context's compact fibers
 * share; while it is parked in an await, its live frames (from its body
 * down to the await: about 270 bytes for an await in the body itself) are
 * copied out into a buffer of their size, and back to the same addresses
 * before it resumes, once another compact fiber has run on the stack in
 * between.  A parked compact fiber so costs its frames, its record (248
 * bytes) and its promise.  The price:
 *  - nothing may point into a compact fiber's stack while it is parked: no
 *    buffer on its stack given to uvp_fs_read, uvp_fs_write or uvp_tcp_write
 *    (allocate it, or hand it over with uvp_tcp_write_full), no local lent
 *    to a handler, another fiber or a group's member, no address of a
 *    local kept where code reads it before the fiber resumes.  Pointers
 *    between the fiber's own frames stay valid (they go back to the same
 *    addresses), and so does anything written into its locals after the
 *    await returns (uvp_await's *out).  Under ASan (your program's or
 *    uvp's, see Tools below) each compact fiber has a stack of its own, and
 *    its frames are poisoned while it is parked: a use of a pointer into
 *    them is reported where it happens;
 *  - each await copies: resuming a compact fiber costs a copy of its live
 *    bytes and of the last parked one's (a ping-pong of two compact fibers
 *    takes about twice the default's time per await; docs/internals.md 13
 *    has the cost by bytes), and a compact fiber never hands off directly
 *    to another fiber;
 *  - an await in a compact fiber may fail with UV_ENOMEM (no memory for
 *    its frames: nothing parked, nothing awaited).
 * A fiber spawned with a stack size of its own (uvp_fiber_opts_t) gets a
 * stack of its own and the default mode; compact fibers use the stack size
 * of the context when the first of those alive was spawned.  Which to pick:
 * a server holding a fiber per connection, most of them waiting a long
 * time in a read (tens of thousands to millions of connections), should
 * run them compact: 1.7 KB per idle connection in bench/run-hold against
 * 5.2 KB (the page of stack each default fiber holds), no page tables to
 * speak of, and an await's copy of a few hundred bytes is small beside the
 * read's system call; its fibers keep their buffers on the heap, and state
 * shared with child fibers in the parent's record or the heap.  Keep the
 * default for fibers that lend their locals, that await often with deep
 * stacks, or that are few.
 *
 * Floating-point modes.  Each fiber has its own floating-point control
 * modes: the rounding direction (fesetround) and flags such as
 * flush-to-zero (on x86-64 the MXCSR and the x87 control word, on aarch64
 * the FPCR).  A fiber starts with those in effect where uvp_fiber_spawn
 * was called, and what it sets stays its own across awaits: the loop's
 * code and other fibers never see it.  The exception flags
 * (fetestexcept) are not kept per fiber: test them before an await.
 *
 * Tools.  A program built with AddressSanitizer (-fsanitize=address, gcc or
 * clang) may link a release uvp, built without it (the shared library or
 * the static one), in both modes; so may an ASan build of uvp.  uvp finds
 * ASan's runtime in the process as it is loaded, and then:
 *  - tells ASan of every switch between stacks, so that its reports, its
 *    fake stacks (detect_stack_use_after_return) and what it clears at a
 *    longjmp or a C++ throw out of frames know the stack a fiber runs on;
 *  - gives each compact fiber a stack of its own (a parked one then holds
 *    its stack's touched pages, as in the default mode, besides its copied
 *    frames), copies its frames out as soon as it parks, with the redzones
 *    ASan keeps around their locals (an overflow of a local after an await
 *    is reported as one before it), and poisons those frames while it is
 *    parked, so that a use of a pointer into them is reported
 *    (use-after-poison);
 *  - poisons a fiber's stack while it waits in the pool for the next
 *    fiber, so that a use of a local of a fiber that has returned is
 *    reported too.
 * Without ASan in the process this costs a test of a pointer per switch.
 * Limits: with detect_stack_use_after_return (off by default with gcc 12
 * and clang 14, on with some newer runtimes) a fiber's address-taken
 * locals live in ASan's fake stack, which uvp does not poison: a pointer
 * to them is not reported while the fiber is parked.  LeakSanitizer does
 * not read fiber stacks: a program that exits while default-mode fibers
 * are suspended, without uvp_ctx_close (which runs every fiber to its
 * end), gets memory that only their locals point to reported as leaked.
 * A program built with ThreadSanitizer needs uvp built with it too
 * (-Db_sanitize=thread): a release uvp does not tell TSan of fibers.
 * Under valgrind, a uvp built where valgrind's headers are installed
 * (Debian: the valgrind package) registers fiber stacks with it. */
/** @{ */

/** A fiber's body: returns how its promise settles, as a handler does
 * (uvp_ret_value, uvp_ret_reject, uvp_ret_adopt; uvp_ret_pass fulfils with
 * NULL). */
typedef uvp_ret_t (*uvp_fiber_fn)(void *arg);

/** Options of uvp_fiber_spawn. */
typedef struct uvp_fiber_opts_s {
  size_t stack_size;    /**< usable bytes (less than 16 KiB gives 16 KiB,
                             rounded up to whole pages); 0: the context's
                             default (uvp_ctx_set_fiber_stack).  Not 0: a
                             stack of the fiber's own, and the default mode
                             whatever the context's */
  uvp_free_cb arg_free; /**< destroy notifier for `arg`: runs once, on the
                             loop thread, after fn returned, or when it will
                             never run (cancelled or torn down before it
                             started).  After fn it runs on the fiber, as
                             its last act (its promise already settled):
                             uvp_in_fiber() is true there, uvp_ctx_close
                             fails with UVP_EINFIBER, and it must not
                             await */
  uint64_t deadline_ms; /**< the fiber and what it starts must end within
                             this, from the spawn (see "Deadlines"); 0: none
                             of its own */
} uvp_fiber_opts_t;

/** @name uvp_fiber_spawn, uvp_fiber_spawn_at
 * @{ */
/** Run fn(arg) on a new fiber of ctx; *out gets one reference to the
 * fiber's promise, which settles as fn's result says.  Only the fiber
 * settles it: uvp_promise_resolve/reject on it return UVP_ESETTLED, and
 * uvp_promise_cancel cancels the fiber (see above).  `opts` may be NULL
 * (defaults).  Also from inside a fiber.
 * Errors: UV_EINVAL (NULL ctx, fn or out), UVP_ECLOSED, UVP_ETHREAD,
 * UV_ENOMEM (no memory for the fiber's record or promise, or no stack
 * could be mapped: the address space or RLIMIT_AS is exhausted); then
 * nothing runs and arg is still yours. */
#define uvp_fiber_spawn(...) uvp_fiber_spawn_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fiber_spawn_at(uvp_ctx_t *ctx, uvp_fiber_fn fn, void *arg,
                                  const uvp_fiber_opts_t *opts,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */

/** @name uvp_await, uvp_await_at
 * @{ */
/** Inside a fiber: suspend until p settles, then return 0 if it fulfilled
 * or its (negative) rejection code; *out (may be NULL) gets the outcome.
 * Returns at once, without suspending: UV_EINVAL (NULL p),
 * UVP_ENOTFIBER (not called from a fiber: nothing can be waited for on
 * the loop's own stack), UVP_EXCTX (p belongs to another context),
 * UV_ECANCELED (the fiber's promise was cancelled), UVP_ECLOSED (the
 * context is closed), UV_ENOMEM (a compact fiber: no memory to park its
 * frames in); out->status then says the same.  The site of the call is
 * recorded for uvp_ctx_dump_pending. */
#define uvp_await(...) uvp_await_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_await_at(uvp_promise_t *p, uvp_outcome_t *out,
                            const char *file, int line);
/** @} */

/** @name uvp_await_shielded, uvp_await_shielded_at
 * @{ */
/** Inside a fiber: uvp_await, except that the fiber's cancellation neither
 * ends the wait nor cancels p: a cancelled fiber waits here for its own
 * cleanup (the join of a group it started, the close of a connection),
 * as under trio's shielded cancel scope, and so may keep the state its
 * children use on its stack.  Returns p's outcome (0 or its rejection
 * code), also when the fiber was cancelled before the call or while it
 * waits; later plain awaits return UV_ECANCELED again.  The shield is
 * not a way to ignore a shutdown: uvp_ctx_close still resumes it with
 * UVP_ECLOSED.  A group's join, however it was cut, settles only once its
 * members have ended (see "Task groups"): waiting for it is always safe.
 * To bound a wait for anything else, shield a timeout instead:
 *
 * @code
 *   uvp_timeout(p, 5000, 0, &bounded);
 *   rc = uvp_await_shielded(bounded, NULL);   // UV_ETIMEDOUT after 5 s
 * @endcode
 *
 * (the timeout then cancels p if nothing else waits for it).  Work started
 * in a fiber past its deadline is stopped at once: give cleanup a deadline
 * of its own with uvp_deadline_shield.  Errors as uvp_await's, but never
 * UV_ECANCELED. */
#define uvp_await_shielded(...)                                                \
  uvp_await_shielded_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_await_shielded_at(uvp_promise_t *p, uvp_outcome_t *out,
                                     const char *file, int line);
/** @} */

/** Whether the caller runs on a fiber (of any context). */
UVP_EXTERN int uvp_in_fiber(void);

/** Names the calling fiber, for people reading about it: the task dump
 * shows the name (uvp_ctx_dump_tasks: `"name"` in JSON, `fiber "NAME"` in
 * text, and `"NAME" spawned at FILE:LINE` where another task waits for
 * the fiber), so does uvp_ctx_dump_pending, and, with traces on, the
 * async traces of what the fiber creates from then on (a `name` frame,
 * see uvp_promise_trace).  Five fibers spawned by one line, awaiting
 * through one helper, tell themselves apart so:
 * @code
 *   static uvp_ret_t fetch(void *arg) {
 *     const char *url = arg;
 *     char name[64];
 *     snprintf(name, sizeof(name), "fetch %s", url);  // cut to 63 bytes
 *     uvp_fiber_set_name(name);                        // copied
 *     ...
 * @endcode
 * A name is 1 to 63 bytes of printable ASCII (0x20 to 0x7e) other than
 * the double quote and the backslash (so that it shows as it is, quoted,
 * in every form); NULL
 * removes the fiber's name.  It is copied (an allocation of its length,
 * made only when a name is set; an unnamed fiber costs nothing), replaces
 * the previous one and is freed with the fiber.  For traces the name is
 * also interned once per process, as sites are (a static table: 4095
 * names, 64 KiB; past that, traces show no name, the dumps still do).
 * Errors, checked in this order: UV_EINVAL (a name that is not one: empty,
 * longer than 63 bytes, a byte outside that set), UVP_ENOTFIBER (not
 * called from a fiber), UVP_ECLOSED (its context is closing: the fiber
 * runs to its end in uvp_ctx_close), UV_ENOMEM; on error the fiber keeps
 * the name it had. */
UVP_EXTERN int uvp_fiber_set_name(const char *name);

/** The default stack size of the context's fibers (usable bytes, rounded up
 * to whole pages; less than 16 KiB gives 16 KiB; 256 KiB until set).  The
 * idle stacks the pool kept go back to the kernel.  Compact fibers get the
 * new size once none alive uses the old one's stack.  Errors: UV_EINVAL,
 * UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM (the context's first use of fibers
 * makes their state). */
UVP_EXTERN int uvp_ctx_set_fiber_stack(uvp_ctx_t *ctx, size_t bytes);

/** @name uvp_ctx_set_fiber_mode
 * @{ */
/** The mode of the fibers the context spawns from now on (see "Fibers",
 * Modes): UVP_FIBER_DEFAULT (each fiber's stack stays where it is; until
 * set) or UVP_FIBER_COMPACT (a parked fiber's frames are copied out of
 * the stack it runs on).  Fibers already spawned keep theirs.  Errors:
 * UV_EINVAL (NULL ctx, another mode), UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM
 * (the context's first use of fibers makes their state). */
enum {
  UVP_FIBER_DEFAULT = 0, /**< each fiber's stack stays where it is */
  UVP_FIBER_COMPACT = 1  /**< a parked fiber's frames are copied out */
};
UVP_EXTERN int uvp_ctx_set_fiber_mode(uvp_ctx_t *ctx, int mode);
/** @} */
/** @} */

/* ------------------------------------------------------------------------ */
/* Scopes: request-scoped context slots                                      */
/* ------------------------------------------------------------------------ */

/** @defgroup scopes Scopes: request-scoped context slots */
/** @{ */

/** A scope is what the code of a handler, a fiber or a group member sees of
 * where its work came from: UVP_SCOPE_SLOTS slots the program sets (a
 * request id, a logger) and the task group the work belongs to.  The
 * scope current when a handler is registered, a fiber spawned or a group
 * member added is captured, and restored around that handler, each run of
 * that fiber and that member's start: code three then()s down sees the
 * request it works for, whichever thread settled the promise it waited
 * for (Node's AsyncLocalStorage, folly's RequestContext).  Outside them
 * (in your libuv callbacks) the current scope is the last one set there.
 * With no slot ever set, this costs a pointer per handler and nothing
 * else. */
#define UVP_SCOPE_SLOTS 4

/** Make slot `slot` of the current scope `value` (for the rest of the
 * running handler or callback, or of the fiber, across its awaits, and
 * for everything registered from there): a new scope, so what captured
 * the old one keeps seeing it.
 * free_cb (may be NULL) runs once, on the loop thread, when the last scope
 * holding the value is gone.  Errors: UV_EINVAL (NULL ctx, slot out of
 * range), UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM; then free_cb does not run. */
UVP_EXTERN int uvp_scope_set(uvp_ctx_t *ctx, unsigned int slot, void *value,
                             uvp_free_cb free_cb);
/** The value of `slot` in the current scope (NULL: unset, NULL ctx, slot
 * out of range). */
UVP_EXTERN void *uvp_scope_get(const uvp_ctx_t *ctx, unsigned int slot);
/** Make every slot of the current scope empty (e.g. at the top of a libuv
 * callback that serves another request).  Inside a group's work the group
 * stays: what the code starts afterwards is still the group's (see "Task
 * groups").  Errors: UV_EINVAL, UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM (inside
 * a group's work, where the emptied scope is a new one). */
UVP_EXTERN int uvp_scope_clear(uvp_ctx_t *ctx);
/** @} */

/* ------------------------------------------------------------------------ */
/* Deadlines                                                                 */
/* ------------------------------------------------------------------------ */

/** @defgroup deadlines Deadlines
 *
 * A deadline is a point in the loop's time (uv_now) that a scope carries
 * to everything started under it, as slots are carried (see "Scopes"):
 * the handlers registered, fibers spawned and group members added there,
 * and what they start in turn, three levels down or thirty.  Work
 * started under a deadline is watched by it: every uvp operation (file,
 * TCP, DNS, thread-pool work, process), uvp_delay and uvp_timeout, every
 * fiber and every group's join.  When it passes, what is still pending
 * is cancelled with UV_ETIMEDOUT, newest first, the way uvp cancels
 * anything: uv_cancel for a request still queued in the thread pool, the
 * handle closed for TCP, the signal for a process, the timer stopped.  A
 * request the pool is already running cannot be stopped: it completes,
 * its promise has rejected with UV_ETIMEDOUT meanwhile, and what it
 * produced is released (a descriptor closed).  A fiber whose promise
 * passed its deadline goes on running to clean up: its awaits return
 * UV_ETIMEDOUT (uvp_await_shielded waits on, as after a cancellation).
 * A group's join cancels its members and rejects with UV_ETIMEDOUT once
 * every one of them has ended (see "Task groups", the structured rule).
 * Each piece of work takes the nearest of its own deadline and those it
 * was started under: a deadline set where one is already nearer changes
 * nothing.  Code that calls a server passes the budget on with
 * uvp_deadline_left.  Work already running when a deadline is set is not
 * watched by it; work started by a handler of a promise settled from
 * another thread is, if the handler was registered under it.  Watching
 * needs memory now and then (the deadline's list grows): work that starts
 * when there is none runs unwatched, to its end.  With no deadline set,
 * none of this costs anything measurable.
 *
 * Cleanup past a deadline.  Work started under a deadline that has passed
 * is stopped as it starts, and a nearer-wins uvp_deadline_set, a fiber's
 * own deadline_ms or uvp_scope_clear (which keeps the deadline) cannot
 * lift it.  Cleanup that must still run (writing "timed out" to a client,
 * closing a session with the server) takes a deadline of its own with
 * uvp_deadline_shield, as under trio's shielded CancelScope with a
 * timeout or Go's context.WithoutCancel plus WithTimeout, and, in a fiber
 * that was cut, awaits with uvp_await_shielded:
 *
 * @code
 *   if (uvp_await(read, &o) == UV_ETIMEDOUT) {
 *     uvp_deadline_shield(ctx, 500);        // cleanup gets 500 ms
 *     uvp_tcp_write(conn, msg, len, &w);    // watched by the new deadline
 *     uvp_await_shielded(w, NULL);          // 0, or UV_ETIMEDOUT at 500 ms
 *   }
 * @endcode */
/** @{ */

/** What uvp_deadline_left says when no deadline is set. */
#define UVP_NO_DEADLINE UINT64_MAX

/** Give the current scope a deadline `ms` milliseconds from now (for the
 * rest of the running handler or callback, or of the fiber across its
 * awaits, and for everything started from there; see above), unless it
 * carries a nearer one.  Errors: UV_EINVAL (NULL ctx), UVP_ECLOSED,
 * UVP_ETHREAD, UV_ENOMEM. */
UVP_EXTERN int uvp_deadline_set(uvp_ctx_t *ctx, uint64_t ms);

/** Give the current scope a deadline `ms` milliseconds from now in place
 * of the one it carries, nearer, farther or passed (UVP_NO_DEADLINE: none
 * at all): for cleanup after a cut (see "Cleanup past a deadline").  It
 * holds as uvp_deadline_set's does, for the rest of the running handler or
 * fiber and for everything started from there; work started before stays
 * watched by the deadline it was started under.  Give cleanup a bound: a
 * shield without one can outlive its caller's caller.  Errors: UV_EINVAL
 * (NULL ctx), UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM. */
UVP_EXTERN int uvp_deadline_shield(uvp_ctx_t *ctx, uint64_t ms);

/** Milliseconds until the current scope's deadline (0: passed), or
 * UVP_NO_DEADLINE; UVP_NO_DEADLINE for NULL. */
UVP_EXTERN uint64_t uvp_deadline_left(const uvp_ctx_t *ctx);

/** For a library that produces promises of its own (a binding): p, pending,
 * with a cancel hook that stops its work, is watched by the current
 * scope's deadline, as uvp's own operations are: when it passes, p rejects
 * with UV_ETIMEDOUT and its hook runs.  Nothing happens without a
 * deadline.  Errors: UV_EINVAL, UVP_ECLOSED, UVP_ETHREAD, UVP_EXCTX,
 * UVP_ESETTLED, UV_ENOMEM (not watched: p's work runs to its end unless
 * the caller stops it). */
UVP_EXTERN int uvp_deadline_watch(uvp_ctx_t *ctx, uvp_promise_t *p);
/** @} */

/* ------------------------------------------------------------------------ */
/* Task groups                                                               */
/* ------------------------------------------------------------------------ */

/** @defgroup groups Task groups */
/** @{ */

/** A task group is a growing set of members taken in completion order,
 * bounded, cancelled as a whole and joined: tokio's JoinSet, libdill's
 * bundles.  Members are promises (already running), fibers and start
 * callbacks (both started by the group, under its limit).  Members run in
 * the group's scope (with the slots current when they were added), and
 * every libuv request and handle they start (file, DNS, work, process
 * operations, TCP connections with the operations on them, uvp timers),
 * every group they make and every fiber member until it returns belongs
 * to the group until done with (a connection can change hands:
 * uvp_tcp_detach): the join settles only once the group is closed (or
 * cancelled), every member has settled and all of those are done: once
 * it has, nothing of the group is left on the loop.  A promise added
 * from outside is a member until it settles; what it started before it
 * was added is not the group's.
 *
 * Limit: at most `limit` members running at once (0: no limit).  A member
 * added as a promise is already running and always accepted; fibers and
 * start callbacks wait in order until a running member settles.  Changing
 * the limit takes effect at once (a larger one starts waiting members
 * now; a smaller one lets the running finish and starts no more until
 * they are under it).  For thread-pool work, uvp_pool_size() is the
 * usual limit.
 *
 * Failure policy: by default every member runs to its end and the join
 * fulfils (value NULL); with UVP_GROUP_FAIL_FAST the first member to
 * reject (not with UV_ECANCELED) cancels the others, waiting members
 * never start, and the join settles like that member.
 *
 * Results: by default a member that settles is kept until a next() takes
 * it or the group is released, so a group nobody drains holds every
 * member it ever had.  A group that only supervises (one member per
 * connection, for as long as the server runs) wants none: with
 * UVP_GROUP_DISCARD_SETTLED the group lets go of a member as soon as it
 * sees it settle (its reference, and with it the promise and its value,
 * whose destroy notifier runs, unless you hold another), so it holds
 * memory only for the members running or waiting to start; next() is
 * refused.  Failures still travel: such a group does not count as
 * observing its members, so one that rejects and that nothing else
 * observes is reported to the unhandled-rejection hook
 * (uvp_ctx_set_unhandled_cb) as any rejected promise nobody handled is,
 * with its creation site (a fiber's is its uvp_group_spawn, a failed
 * start callback's the group's uvp_group_new), when its last reference
 * goes: as it settles if the group held that (fibers, start callbacks,
 * promises you released after adding them), else when you release yours,
 * or at uvp_ctx_close.  A member rejecting with UV_ECANCELED is never
 * reported (a cancellation is no news).  With UVP_GROUP_FAIL_FAST too,
 * the first failure is not reported either: it settles the join, which
 * is reported in its turn if nobody observes it; failures after it are
 * (and so is the first if the join was cancelled before: nothing carries
 * it then).
 *
 * The structured rule (trio's: a scope ends only when everything it
 * started has ended): a group's join settles only once every member has
 * ended and everything they started is done, whatever cut it.  Cut, by
 * uvp_promise_cancel on the join (or on what awaits it alone: a
 * cancelled fiber's await, a race's loser, uvp_timeout), by its deadline
 * (uvp_group_opts_t.deadline_ms, or one it was made under) or by its
 * parent group's cancel, the join cancels the group, stays pending while
 * the members wind down, then rejects with the cut's code (UV_ECANCELED,
 * not reported; UV_ETIMEDOUT).  So a fiber can always wait for the
 * children it started, and keep their state on its stack:
 *
 * @code
 *   rc = uvp_await(join, NULL);          // cut: returns once they ended
 *   if (rc != 0) {
 *     uvp_group_cancel(g);                // (already so if the join was cut)
 *     uvp_await_shielded(join, NULL);     // settled, or settles once they end
 *   }
 * @endcode
 *
 * A member that ignores its cancellation (a request the thread pool is
 * already running, a fiber that goes on without awaiting) holds the join
 * until it ends, and a member that awaits its own group's join waits
 * until the context is closed (the join waits for it); a teardown
 * (uvp_ctx_close) alone rejects the join at once, with UVP_ECLOSED.
 *
 * Nesting: a group's join promise is a promise like any other: add it to
 * another group; cancelling it (or its parent group) cancels the group,
 * and the parent's member, that join, ends when the group has.
 * Errors common to every call: UV_EINVAL (NULL group or argument),
 * UVP_ECLOSED (the context, or for adding, the group is closed),
 * UVP_ETHREAD. */
typedef struct uvp_group_s uvp_group_t;

/** Flags of uvp_group_opts_t (see above). */
enum {
  UVP_GROUP_FAIL_FAST = 1,      /**< the first failure cancels the rest */
  UVP_GROUP_DISCARD_SETTLED = 2 /**< let go of members as they settle */
};

/** Options of uvp_group_new. */
typedef struct uvp_group_opts_s {
  size_t limit;         /**< members running at once; 0: no limit */
  int flags;            /**< 0, or UVP_GROUP_* flags ORed */
  uint64_t deadline_ms; /**< the group's work must end within this, from
                             uvp_group_new (see "Deadlines"); 0: none of its
                             own */
} uvp_group_opts_t;

/** @name uvp_group_new, uvp_group_new_at
 * @{ */
/** A group (opts may be NULL).  The group is yours until
 * uvp_group_release; its join promise is the group's (uvp_group_join
 * hands out references).  Errors also UV_EINVAL (an unknown flag),
 * UV_ENOMEM. */
#define uvp_group_new(...) uvp_group_new_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_group_new_at(uvp_ctx_t *ctx, const uvp_group_opts_t *opts,
                                uvp_group_t **out, const char *file, int line);
/** @} */

/** Add a running promise (borrowed; the group takes a reference, which a
 * UVP_GROUP_DISCARD_SETTLED group drops as soon as it sees p settle).
 * Also UVP_EXCTX, UV_ECANCELED (the group was cancelled), UV_ENOMEM. */
UVP_EXTERN int uvp_group_add(uvp_group_t *g, uvp_promise_t *p);

/** @name uvp_group_spawn, uvp_group_spawn_at
 * @{ */
/** A fiber member, spawned (in the group's scope) when there is room under
 * the limit; opts as for uvp_fiber_spawn (its arg_free also runs if the
 * fiber never starts; its deadline_ms runs from this call, while the
 * member waits for room too).  A fiber that cannot be spawned is a member that
 * rejected with why.  Also UV_ECANCELED, UV_ENOMEM; on error arg_free
 * does not run: arg is still yours. */
#define uvp_group_spawn(...) uvp_group_spawn_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_group_spawn_at(uvp_group_t *g, uvp_fiber_fn fn, void *arg,
                                  const uvp_fiber_opts_t *opts,
                                  const char *file, int line);
/** @} */

/** Starts a member: store its promise in *out (one reference, which the
 * group takes) and return 0, or return a negative code (the member then
 * counts as rejected with it). */
typedef int (*uvp_group_start_cb)(void *arg, uvp_promise_t **out);

/** A member started by calling start(arg), in the group's scope, when there
 * is room under the limit: inside this call if there is room now, else
 * when a member settles (from the run queue) or uvp_group_set_limit makes
 * room.  arg_free (may be NULL) runs right after that call, or if it never
 * comes (cancelled, torn down).  Also UV_ECANCELED, UV_ENOMEM; on error
 * neither runs: arg is still yours. */
UVP_EXTERN int uvp_group_start(uvp_group_t *g, uvp_group_start_cb start,
                               void *arg, uvp_free_cb arg_free);

/** @name uvp_group_next, uvp_group_next_at
 * @{ */
/** The next member to settle, in completion order: *out gets one reference
 * to a promise that settles like that member (value shared).  Members that
 * settled before anyone asked wait for a next() in order; next() calls
 * made before any member settles are served in the order they were made.
 * Once the group is closed (or cancelled) and every member has been
 * handed out, next() rejects with UV_EOF, the end of the iteration (as
 * JavaScript's {done: true}): never reported as unhandled, nor is what
 * passes it on.  Cancelling the promise it gave just stops that wait: the
 * member goes to the next next().  Also UV_ENOMEM, and UV_EINVAL for a
 * UVP_GROUP_DISCARD_SETTLED group, which keeps no member to hand out
 * (uvp_group_join waits for the end). */
#define uvp_group_next(...) uvp_group_next_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_group_next_at(uvp_group_t *g, uvp_promise_t **out,
                                 const char *file, int line);
/** @} */

/** Change the limit (0: none), see above. */
UVP_EXTERN int uvp_group_set_limit(uvp_group_t *g, size_t limit);

/** Names the group: the task dump shows it in the groups of every task in
 * or working for the group (`group "NAME" at FILE:LINE` instead of `group
 * at FILE:LINE`), and, with traces on, the async traces of its join and of
 * the members started from then on (a `name` frame, see
 * uvp_promise_trace).  The name's rules, copy, cost and interning are
 * uvp_fiber_set_name's (1 to 63 bytes of printable ASCII but the
 * double quote and the backslash; NULL removes it); it is freed with the group.
 * Errors, in this order: UV_EINVAL (NULL g, or a name that is not one),
 * UVP_ECLOSED (the context is closed, or g was released), UVP_ETHREAD,
 * UV_ENOMEM; on error the group keeps the name it had. */
UVP_EXTERN int uvp_group_set_name(uvp_group_t *g, const char *name);

/** No more members (adding fails with UVP_ECLOSED); the join can settle. */
UVP_EXTERN int uvp_group_close(uvp_group_t *g);

/** Cancel every running member (uvp_promise_cancel), in no set order, and
 * drop the waiting ones (their notifiers run); nothing more can be added
 * (UV_ECANCELED).  A member is cancelled for everyone: one that other
 * code also consumes rejects for it too.  To keep such a promise out of
 * the group's reach, add a promise derived from it (uvp_promise_then
 * with NULL handlers): cancelling that one leaves a source with other
 * consumers alone.  A start callback that cancels its own group has the
 * member it returns cancelled at once.  The group still joins once
 * everything has wound down: the join then fulfils, as after
 * uvp_group_close, unless a UVP_GROUP_FAIL_FAST failure came first (only
 * cutting the join itself rejects it: see the structured rule above). */
UVP_EXTERN int uvp_group_cancel(uvp_group_t *g);

/** One reference to the group's join promise (see above).  Cancelling it
 * cancels the group, and the join rejects with UV_ECANCELED once every
 * member has ended (uvp_promise_cancel returns 0 at once and the join is
 * pending until then).  Only the group settles it, and next()'s promises:
 * uvp_promise_resolve/reject/resolve_with on them return UVP_ESETTLED. */
UVP_EXTERN int uvp_group_join(uvp_group_t *g, uvp_promise_t **out);

/** Members running plus whether any wait to start (1 if so); 0 for NULL. */
UVP_EXTERN size_t uvp_group_size(const uvp_group_t *g);

/** Give the group up: it is closed (members waiting for room still start),
 * settled members no next() took are dropped (next() promises already made
 * are still served; a UVP_GROUP_DISCARD_SETTLED group kept none), and its
 * memory goes once its members, their requests and handles, and its join
 * are done.  Loop thread, also after uvp_ctx_close (the group's other
 * calls then return UVP_ECLOSED); NULL is a no-op. */
UVP_EXTERN void uvp_group_release(uvp_group_t *g);
/** @} */

/* ------------------------------------------------------------------------ */
/* libuv operations as promises: common rules                                */
/* ------------------------------------------------------------------------ */

/** @defgroup wrappers libuv operations as promises: common rules
 *
 * Every wrapper below:
 *  - runs on the loop thread and returns 0 with *out holding one reference
 *    to a promise that only uvp settles, or a negative code (UV_EINVAL,
 *    UV_ENOMEM, UVP_ECLOSED, or libuv's synchronous error) with nothing
 *    started;
 *  - rejects with libuv's error code (UV_ENOENT, UV_ECONNREFUSED, ...);
 *  - settles in the loop iteration in which libuv reports the result.  A
 *    file operation settles from uvp's run queue, like a handler, right
 *    after that iteration's I/O callbacks (in a later iteration if the
 *    handlers queued ahead of it use up the budget: see
 *    uvp_ctx_set_budget), not inside libuv's callback.  A cancel in
 *    between still wins, as below.  Such a settle
 *    waits until no handler is queued, and its handlers, with everything
 *    they queue in turn, run before the next of them settles: the order
 *    of completions reported one per iteration, and Node's, which runs the
 *    promise jobs of each I/O callback before the next callback.  Unlike
 *    Node, an endless chain of handlers does not hold them back for good:
 *    if a scheduler callback (see uvp_ctx_set_budget) ends without having
 *    found a moment for any of them, those it left waiting run first in
 *    the next one;
 *  - can be cancelled with uvp_promise_cancel() (or through timeouts, and
 *    the losers of race/any with UVP_CANCEL_LOSERS): the promise rejects
 *    with UV_ECANCELED at once.  Thread-pool requests (fs, getaddrinfo,
 *    work) are uv_cancel()ed if not yet started; one already running
 *    completes and its late result is released.  Handle-based operations
 *    (TCP, processes) close their handle (a process is sent a signal
 *    first).  libuv's cleanup (uv_fs_req_cleanup, uv_freeaddrinfo,
 *    uv_close) runs exactly once in every case;
 *  - keeps uv_run() going while its request or handle is in flight, as
 *    the bare libuv operation would (unlike uvp's own scheduler handles);
 *  - is torn down by uvp_ctx_close() like a cancellation (UVP_ECLOSED);
 *    run the loop afterwards so the requests' callbacks and handles'
 *    close callbacks can run before uv_loop_close().
 * Values are documented per function; "owned" means owned by the promise
 * (freed with it), "borrowed" means the caller's memory, which must stay
 * valid until libuv is done with it: until the promise settles — except
 * after a cancellation (uvp_promise_cancel, a timeout, UVP_CANCEL_LOSERS,
 * uvp_ctx_close) of a request already running, whose promise rejects at
 * once while a pool thread or the kernel may still read or fill the
 * buffer until the request completes.  Such a request keeps uv_run() going
 * until then, so memory freed after uv_run() has returned is always safe;
 * freeing it in the rejection handler is not.
 *
 * Cancel-safety.  Each wrapper says below, in a line that begins
 * "Cancelled:", what a cancellation in mid-flight leaves behind: bytes
 * still in the stream or lost, a write partly sent or not, a file request
 * run anyway in the pool or not, a child killed or left running.  It holds
 * for every way uvp cancels: uvp_promise_cancel, a group's cancel
 * (uvp_group_cancel, UVP_GROUP_FAIL_FAST, a cancelled join), a deadline
 * passing (the promise rejects with UV_ETIMEDOUT instead of UV_ECANCELED),
 * uvp_timeout, a race's or map's losers, and uvp_ctx_close
 * (test/test-cancel-safety.c shows each line by the first three).  "Queued"
 * means still waiting for a thread of the pool, "running" that a thread
 * has taken it. */
/** @{ */

/** Integer results (file descriptors, byte counts) travel in the value
 * pointer. */
#define UVP_INT(value) ((int64_t)(intptr_t)(value))

/** A byte buffer owned by its promise; base[len] is a NUL byte. */
typedef struct uvp_buf_s {
  char *base; /**< the bytes, NUL-terminated */
  size_t len; /**< how many, the NUL excluded */
} uvp_buf_t;
/** @} */

/* ------------------------------------------------------------------------ */
/* Files (uv_fs_*) — thread pool                                             */
/* ------------------------------------------------------------------------ */

/** @defgroup files Files (uv_fs_*) — thread pool
 *
 * Paths are copied by libuv during the call: they need not outlive it.
 * A NULL path is UV_EINVAL.  Every request below is one pool request but
 * read_file and write_file (one per step): cancelled queued, it never
 * runs; cancelled running, it runs to its end, as the lines say. */
/** @{ */

/** @name uvp_fs_open, uvp_fs_open_at
 * @{ */
/** open: value UVP_INT(v) is the uv_file; you close it (uvp_fs_close).
 * Cancelled: queued, nothing is opened or created; running, the open
 * completes (a file O_CREAT makes stays) and uvp closes the descriptor. */
#define uvp_fs_open(...) uvp_fs_open_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_open_at(uvp_ctx_t *ctx, const char *path, int flags,
                              int mode, uvp_promise_t **out, const char *file,
                              int line);
/** @} */
/** @name uvp_fs_close, uvp_fs_close_at
 * @{ */
/** close: value NULL.
 * Cancelled: queued, the descriptor stays open (yours: close it again);
 * running, it is closed. */
#define uvp_fs_close(...) uvp_fs_close_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_close_at(uvp_ctx_t *ctx, uv_file fd, uvp_promise_t **out,
                               const char *file, int line);
/** @} */
/** @name uvp_fs_read, uvp_fs_read_at, uvp_fs_write, uvp_fs_write_at
 * @{ */
/** read / write `len` bytes at `offset` (-1: the current position); `buf` is
 * borrowed (after a cancellation, until the request completes: see above).
 * Value UVP_INT(v): bytes transferred (0 at end of file).  A NULL buf with
 * len > 0, or len over UINT_MAX (what one libuv buffer holds), is
 * UV_EINVAL.
 * Cancelled: queued, nothing is read or written and the position stays;
 * running, the call completes: buf may be filled (the bytes are taken from
 * a pipe or socket), or the bytes written, and offset -1 moves on. */
#define uvp_fs_read(...) uvp_fs_read_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_read_at(uvp_ctx_t *ctx, uv_file fd, void *buf, size_t len,
                              int64_t offset, uvp_promise_t **out,
                              const char *file, int line);
#define uvp_fs_write(...) uvp_fs_write_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_write_at(uvp_ctx_t *ctx, uv_file fd, const void *buf,
                               size_t len, int64_t offset, uvp_promise_t **out,
                               const char *file, int line);
/** @} */
/** @name uvp_fs_stat, uvp_fs_lstat, uvp_fs_fstat
 * @{ */
/** stat / lstat / fstat: value is an owned uv_stat_t *.
 * Cancelled: nothing is left (a running one's result is freed). */
#define uvp_fs_stat(...) uvp_fs_stat_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_stat_at(uvp_ctx_t *ctx, const char *path,
                              uvp_promise_t **out, const char *file, int line);
#define uvp_fs_lstat(...) uvp_fs_lstat_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_lstat_at(uvp_ctx_t *ctx, const char *path,
                               uvp_promise_t **out, const char *file, int line);
#define uvp_fs_fstat(...) uvp_fs_fstat_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_fstat_at(uvp_ctx_t *ctx, uv_file fd, uvp_promise_t **out,
                               const char *file, int line);
/** @} */
/** @name uvp_fs_unlink, uvp_fs_mkdir, uvp_fs_rmdir, uvp_fs_rename
 * @{ */
/** unlink / mkdir / rmdir / rename: value NULL.
 * Cancelled: queued, the file system is unchanged; running, the change is
 * made (the promise has rejected all the same). */
#define uvp_fs_unlink(...) uvp_fs_unlink_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_unlink_at(uvp_ctx_t *ctx, const char *path,
                                uvp_promise_t **out, const char *file,
                                int line);
#define uvp_fs_mkdir(...) uvp_fs_mkdir_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_mkdir_at(uvp_ctx_t *ctx, const char *path, int mode,
                               uvp_promise_t **out, const char *file, int line);
#define uvp_fs_rmdir(...) uvp_fs_rmdir_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_rmdir_at(uvp_ctx_t *ctx, const char *path,
                               uvp_promise_t **out, const char *file, int line);
#define uvp_fs_rename(...) uvp_fs_rename_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_rename_at(uvp_ctx_t *ctx, const char *path,
                                const char *new_path, uvp_promise_t **out,
                                const char *file, int line);
/** @} */
/** @name uvp_dirents_t, uvp_fs_scandir, uvp_fs_scandir_at
 * @{ */
/** scandir: value is an owned uvp_dirents_t * (names owned too), in the
 * order libuv returns them.
 * Cancelled: nothing is left (a running one's list is freed). */
typedef struct uvp_dirents_s {
  size_t count;       /**< how many entries */
  uv_dirent_t *items; /**< the entries */
} uvp_dirents_t;
#define uvp_fs_scandir(...) uvp_fs_scandir_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_scandir_at(uvp_ctx_t *ctx, const char *path,
                                 uvp_promise_t **out, const char *file,
                                 int line);
/** @} */
/** @name uvp_fs_realpath, uvp_fs_realpath_at
 * @{ */
/** realpath: value is an owned char *.
 * Cancelled: nothing is left (a running one's string is freed). */
#define uvp_fs_realpath(...) uvp_fs_realpath_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_realpath_at(uvp_ctx_t *ctx, const char *path,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */
/** @name uvp_fs_readlink, uvp_fs_readlink_at
 * @{ */
/** readlink: value is an owned char *, the link's contents as stored
 * (not resolved: see realpath), NUL-terminated, the same type as
 * realpath's.  A path that is not a symbolic link rejects with UV_EINVAL
 * (readlink(2)'s answer).
 * Cancelled: nothing is left (a running one's string is freed). */
#define uvp_fs_readlink(...) uvp_fs_readlink_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_readlink_at(uvp_ctx_t *ctx, const char *path,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */
/** @name uvp_fs_fsync, uvp_fs_fsync_at, uvp_fs_fdatasync, uvp_fs_fdatasync_at
 * @{ */
/** fsync / fdatasync: flush the file's data (fsync: and its metadata) to
 * the device; value NULL.
 * Cancelled: queued, nothing is flushed; running, the flush completes. */
#define uvp_fs_fsync(...) uvp_fs_fsync_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_fsync_at(uvp_ctx_t *ctx, uv_file fd, uvp_promise_t **out,
                               const char *file, int line);
#define uvp_fs_fdatasync(...)                                                  \
  uvp_fs_fdatasync_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_fdatasync_at(uvp_ctx_t *ctx, uv_file fd,
                                   uvp_promise_t **out, const char *file,
                                   int line);
/** @} */
/** @name uvp_fs_ftruncate, uvp_fs_ftruncate_at
 * @{ */
/** ftruncate: cut or extend (with zeros) the file to `offset` bytes; value
 * NULL.  A negative offset is UV_EINVAL, returned at once with nothing
 * started (ftruncate(2) would reject it the same way).
 * Cancelled: queued, the size is unchanged; running, it is changed. */
#define uvp_fs_ftruncate(...)                                                  \
  uvp_fs_ftruncate_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_ftruncate_at(uvp_ctx_t *ctx, uv_file fd, int64_t offset,
                                   uvp_promise_t **out, const char *file,
                                   int line);
/** @} */
/** @name uvp_fs_chmod, uvp_fs_chmod_at, uvp_fs_fchmod, uvp_fs_fchmod_at
 * @{ */
/** chmod / fchmod: set the permission bits to `mode` (as chmod(2): 0644,
 * ...; not masked by the umask); value NULL.
 * Cancelled: queued, the mode is unchanged; running, it is changed. */
#define uvp_fs_chmod(...) uvp_fs_chmod_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_chmod_at(uvp_ctx_t *ctx, const char *path, int mode,
                               uvp_promise_t **out, const char *file, int line);
#define uvp_fs_fchmod(...) uvp_fs_fchmod_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_fchmod_at(uvp_ctx_t *ctx, uv_file fd, int mode,
                                uvp_promise_t **out, const char *file,
                                int line);
/** @} */
/** @name uvp_fs_copyfile, uvp_fs_copyfile_at
 * @{ */
/** copyfile: copy `path`'s contents and permission bits to `new_path`,
 * which is replaced if it exists; value NULL.  `flags` is libuv's, passed
 * through: UV_FS_COPYFILE_EXCL (an existing new_path rejects with
 * UV_EEXIST), UV_FS_COPYFILE_FICLONE (a copy-on-write clone where the
 * file system has them, else a copy), UV_FS_COPYFILE_FICLONE_FORCE (a
 * clone or a rejection, such as UV_ENOTSUP).  Any other bit is UV_EINVAL,
 * returned at once with nothing started.
 * Cancelled: queued, new_path is untouched; running, the copy completes. */
#define uvp_fs_copyfile(...) uvp_fs_copyfile_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_copyfile_at(uvp_ctx_t *ctx, const char *path,
                                  const char *new_path, int flags,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */
/** @name uvp_fs_read_file, uvp_fs_read_file_at
 * @{ */
/** read_file: open, read to the end, close; value is an owned uvp_buf_t *.
 * Files over `max` bytes (0: no limit) reject with UV_EFBIG; files whose
 * size stat does not know (/proc, pipes, devices) are read until end of
 * file or `max`.  A FIFO no one writes to holds a pool thread in open(2)
 * or read(2) until a writer comes: cancelling or timing out the promise
 * rejects it, but the request (and so uv_run) goes on until then, as for
 * any libuv file request.  Check with uvp_fs_stat first when a path may
 * name one.
 * Cancelled: nothing is left: the step running completes, no later step
 * starts, the descriptor is closed and what was read is freed. */
#define uvp_fs_read_file(...)                                                  \
  uvp_fs_read_file_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_read_file_at(uvp_ctx_t *ctx, const char *path, size_t max,
                                   uvp_promise_t **out, const char *file,
                                   int line);
/** @} */
/** @name uvp_fs_write_file, uvp_fs_write_file_at
 * @{ */
/** write_file: create or truncate (mode 0644), write all of `data`
 * (borrowed), close; value UVP_INT(v) is the byte count.
 * Cancelled: the step running completes, no later step starts, the
 * descriptor is closed: once the open has run, the file stays created and
 * truncated with a prefix of data (possibly none) in it. */
#define uvp_fs_write_file(...)                                                 \
  uvp_fs_write_file_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_fs_write_file_at(uvp_ctx_t *ctx, const char *path,
                                    const void *data, size_t len,
                                    uvp_promise_t **out, const char *file,
                                    int line);
/** @} */
/** @} */

/* ------------------------------------------------------------------------ */
/* TCP (uv_tcp_*)                                                            */
/* ------------------------------------------------------------------------ */

/** @defgroup tcp TCP (uv_tcp_*) */
/** @{ */

/** A connection: a uv_tcp_t that uvp owns, plus its pending operations.  You
 * own the uvp_tcp_t and must close it with uvp_tcp_close() — like a libuv
 * handle, before uv_loop_close().  At most one read is pending at a time;
 * writes queue in order.  Cancelling any operation of a connection (or its
 * timing out) closes the connection: libuv cannot cancel a connect, write
 * or read half-way, and a stream in an unknown state is no use.  Every
 * other pending operation then rejects with UV_ECANCELED.  (A watch,
 * uvp_tcp_closed, is the exception: cancelling it stops only the watch.)
 * Operations on a connection whose handle is closed return UV_EBADF. */
typedef struct uvp_tcp_s uvp_tcp_t;

/** A new, unconnected connection.  Errors: UV_EINVAL, UV_ENOMEM,
 * UVP_ECLOSED. */
UVP_EXTERN int uvp_tcp_new(uvp_ctx_t *ctx, uvp_tcp_t **out);

/** Accept a pending connection of a listening `server` (call it from your
 * uv_connection_cb).  Errors: UV_EINVAL (NULL argument: the connection
 * stays pending), those of uv_accept (UV_EAGAIN: none pending), UV_ENOMEM,
 * UVP_ECLOSED. */
UVP_EXTERN int uvp_tcp_accept(uvp_ctx_t *ctx, uv_stream_t *server,
                              uvp_tcp_t **out);

/** Close: pending operations reject with UV_ECANCELED (watches too), and
 * bytes a watch read ahead go; the memory is freed once libuv has closed
 * the handle and the last operation is done (run the loop), or inside
 * this call if nothing is left open (a cancelled operation had closed the
 * handle already).  Loop thread, at any time,
 * also after uvp_ctx_close().  Returns UV_EINVAL for NULL, UVP_ETHREAD
 * (see uvp_ctx_set_checks); like closing a libuv handle twice, a second
 * call is a bug: while `t` is still closing it returns UV_EINVAL and
 * changes nothing, but `t` may already be freed memory. */
UVP_EXTERN int uvp_tcp_close(uvp_tcp_t *t);

/** @name uvp_tcp_detach, uvp_tcp_attach
 * @{ */
/** Hand a connection over between task groups (see "Task groups").  A
 * connection belongs to the group whose work made or accepted it, and so
 * do the operations on it, whoever starts them: the group's join waits
 * until it is closed and its operations done.  One that outlives that
 * work, as a keep-alive pool's does, changes hands: uvp_tcp_detach makes
 * it no group's (the pool's own; the group's join no longer waits for it),
 * uvp_tcp_attach the current scope's group's (the work that takes it from
 * the pool: that group's join waits for it from then on; outside a group's
 * work, no group).  While it is detached, the operations started on it
 * are the pool's too: no deadline watches them, whichever scope starts
 * them (a pool's read of an idle connection, started as a request's
 * response ends, does not close it when that request's deadline passes);
 * once attached, those started on it are watched by the current scope's
 * deadline again, as any operation; one left pending from the detached
 * time (the pool's read, which brings the next response) is watched only
 * if asked (uvp_deadline_watch, in the attaching scope).  Operations
 * already pending when it is detached keep the deadline they were started
 * under.  A server that accepts in its libuv connection
 * callback, outside any group's work, and serves each connection in a
 * group's member has the member attach it first, or the join does not
 * wait for it.  Loop thread, before uvp_tcp_close().  Errors:
 * UV_EINVAL (NULL), UV_EBADF (closed), UVP_ECLOSED, UVP_ETHREAD. */
UVP_EXTERN int uvp_tcp_detach(uvp_tcp_t *t);
UVP_EXTERN int uvp_tcp_attach(uvp_tcp_t *t);
/** @} */

/** The current handle, e.g. for uv_tcp_nodelay() or uv_tcp_getpeername();
 * NULL once closed.  Do not close it, read from it, or uv_ref/uv_unref it
 * yourself: uvp manages its reading and its reference (an idle connection
 * neither consumes bytes, unless watched: see uvp_tcp_closed, nor keeps
 * uv_run() going). */
UVP_EXTERN uv_tcp_t *uvp_tcp_handle(uvp_tcp_t *t);

/** @name uvp_tcp_connect, uvp_tcp_connect_at
 * @{ */
/** connect to `addr` (copied during the call); value NULL. */
#define uvp_tcp_connect(...) uvp_tcp_connect_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_connect_at(uvp_tcp_t *t, const struct sockaddr *addr,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */

/** @name uvp_tcp_connect_host, uvp_tcp_connect_host_at
 * @{ */
/** Resolve host:port with getaddrinfo (thread pool), then try each address
 * in turn until one connects; rejects with the last address's error (or
 * the UV_EAI_* code of the lookup).  A literal IPv4 or IPv6 address
 * ("127.0.0.1", "::1") is connected to directly, with no lookup and no
 * trip through the thread pool.  Strings are copied.  Value NULL.
 * Cancelled (either connect): the connection is closed; a peer that had
 * accepted it reads its end at once; a lookup running completes unused. */
#define uvp_tcp_connect_host(...)                                              \
  uvp_tcp_connect_host_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_connect_host_at(uvp_tcp_t *t, const char *host, int port,
                                       uvp_promise_t **out, const char *file,
                                       int line);
/** @} */

/** @name uvp_tcp_write, uvp_tcp_write_at
 * @{ */
/** Write `len` bytes of `buf` (borrowed until the promise settles, or after
 * a cancellation until the connection's close has completed: see "borrowed"
 * above); value NULL once libuv has handed all of them to the kernel.
 * When nothing is queued ahead, the bytes go to the kernel inside the call
 * (uv_try_write) and what did not fit is queued; a small write therefore
 * often returns a promise already fulfilled, whose handlers still run
 * later, from the loop.  Writes go out in the order they were made.  A
 * NULL buf with len > 0, or len over UINT_MAX, is UV_EINVAL.
 * Cancelled (either write): partly sent: the connection is closed, the
 * peer receives the prefix the kernel had taken, then the end (or a
 * reset); the rest is never sent. */
#define uvp_tcp_write(...) uvp_tcp_write_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_write_at(uvp_tcp_t *t, const void *buf, size_t len,
                                uvp_promise_t **out, const char *file,
                                int line);
/** @} */
/** @name uvp_tcp_write_full, uvp_tcp_write_full_at
 * @{ */
/** The same, handing `buf` over: buf_free(buf) runs once, on the loop
 * thread, when libuv is done with the bytes (all written, failed, or
 * dropped because the connection closed), whatever happens to the
 * promise; inside this call if the kernel took every byte at once.  On
 * error nothing was written and buf is still yours. */
#define uvp_tcp_write_full(...)                                                \
  uvp_tcp_write_full_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_write_full_at(uvp_tcp_t *t, const void *buf, size_t len,
                                     uvp_free_cb buf_free, uvp_promise_t **out,
                                     const char *file, int line);
/** @} */

/** @name uvp_tcp_read, uvp_tcp_read_at
 * @{ */
/** The next chunk the peer sends (up to 64 KiB): value an owned uvp_buf_t *
 * of exactly the bytes that arrived.  Rejects with UV_EOF at end of
 * stream, or the error (UV_ECONNRESET, ...).  A second read while one is
 * pending returns UV_EBUSY.  Bytes a watch read ahead (uvp_tcp_closed)
 * come first: all of them are the chunk, and the promise is fulfilled
 * when the call returns (its handlers still run later, from the loop);
 * then the end of stream or the error that watch saw, the same way.
 * Cancelled: lost: the connection is closed, and bytes the peer sent that
 * were not read yet go with it (the peer's later writes fail). */
#define uvp_tcp_read(...) uvp_tcp_read_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_read_at(uvp_tcp_t *t, uvp_promise_t **out,
                               const char *file, int line);
/** @} */

/** @name uvp_tcp_read_all, uvp_tcp_read_all_at
 * @{ */
/** Everything until end of stream, or the first `max` bytes (0: no limit)
 * if the stream is longer: value an owned uvp_buf_t *.  Rejects with the
 * stream's error (a reset, ...), not UV_EOF.  UV_EBUSY while a read is
 * pending, as for uvp_tcp_read.  Bytes a watch read ahead begin the body
 * (beyond `max`, the rest stays for the next read).
 * Cancelled: lost: the connection is closed; the bytes gathered so far are
 * freed, those not read yet go with the connection. */
#define uvp_tcp_read_all(...)                                                  \
  uvp_tcp_read_all_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_read_all_at(uvp_tcp_t *t, size_t max,
                                   uvp_promise_t **out, const char *file,
                                   int line);
/** @} */

/** @name uvp_tcp_closed, uvp_tcp_closed_at
 * @{ */
/** A promise that the peer has closed the connection, for a program that
 * is not reading: a server running a request races it against the work
 * (uvp_promise_race, uvp_promise_any) to stop once the client has gone.
 *
 * Fulfils (value NULL) at the end of the stream: the peer sends nothing
 * more.  It may have closed only its sending side (shutdown(SHUT_WR))
 * and still wait for a reply: the end of a request is not always a
 * client gone (one gone entirely shows when a write fails).  Rejects
 * with the stream's error (UV_ECONNRESET when the peer reset the
 * connection, ...); with UV_ENOMEM when uvp had no memory to read into
 * (what the peer sent stays in the kernel for the next read); with
 * UV_ECANCELED when the program closes the connection (uvp_tcp_close, or
 * a cancelled operation closing it; not reported as unhandled, as a
 * cancellation is not); with UVP_ECLOSED at uvp_ctx_close.
 *
 * To see the end while the program is not reading, uvp reads for it:
 * what arrives meanwhile is kept, in order, and the next uvp_tcp_read or
 * uvp_tcp_read_all returns it first, then the end of stream or the error
 * the watch saw, exactly as the program would have read them itself:
 * nothing is lost or reordered (pipelined requests included).  At most
 * 64 KiB is kept: then uvp stops reading, what the peer sends next waits
 * in the kernel (and the peer's writes, once the kernel's buffers are
 * full), and the watch cannot see a close or a reset until the program
 * reads; after that read it reads on.  While a read is pending, the read
 * sees the end, and the watch settles with it, after the read.
 *
 * Each call is a watch of its own; all settle alike.  Cancelling one
 * (uvp_promise_cancel, a timeout, the loser of a race with
 * UVP_CANCEL_LOSERS, a torn-down context) stops that watch only: unlike
 * cancelling another operation it does not close the connection, and
 * what was read ahead stays for the next read.  Releasing it does not
 * stop it: a watch nobody cancels reads ahead (up to 64 KiB) until it
 * settles.  A watch does not keep uv_run() going (the handle stays
 * unreferenced, as an idle connection's): it settles while something
 * else keeps the loop running, such as the work it watches over.  It is
 * an operation of the connection, in the connection's group (see
 * uvp_tcp_detach), whose join waits for the connection's close anyway.
 *
 * Settles on the loop thread: from libuv's read callback, inside
 * uvp_tcp_close, or inside this call when a watch before it saw the end
 * and no read has taken it yet (its handlers still run later, from the
 * loop).  Loop thread.  Errors: UV_EINVAL (NULL), UV_EBADF (closed),
 * uv_read_start's (UV_ENOTCONN before the connection is established),
 * UV_ENOMEM, UVP_ECLOSED, UVP_ETHREAD.
 * Cancelled: still in the stream: only the watch stops; the connection
 * stays open and the bytes it read ahead come first to the next read. */
#define uvp_tcp_closed(...) uvp_tcp_closed_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_closed_at(uvp_tcp_t *t, uvp_promise_t **out,
                                 const char *file, int line);
/** @} */

/** @name uvp_tcp_shutdown, uvp_tcp_shutdown_at
 * @{ */
/** Shut the write side down after queued writes; value NULL.
 * Cancelled: the connection is closed: the writes queued before it are
 * partly sent, as a cancelled write is, and no FIN follows them. */
#define uvp_tcp_shutdown(...)                                                  \
  uvp_tcp_shutdown_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_tcp_shutdown_at(uvp_tcp_t *t, uvp_promise_t **out,
                                   const char *file, int line);
/** @} */
/** @} */

/* ------------------------------------------------------------------------ */
/* DNS (uv_getaddrinfo) — thread pool                                        */
/* ------------------------------------------------------------------------ */

/** @defgroup dns DNS (uv_getaddrinfo) — thread pool */
/** @{ */

/** @name uvp_getaddrinfo, uvp_getaddrinfo_at
 * @{ */
/** Resolve `node` and/or `service` (one may be NULL, not both) as
 * getaddrinfo(3) does; `hints` may be NULL.  libuv copies all three during
 * the call.  Value: an owned struct addrinfo * list (uv_freeaddrinfo runs
 * when the promise goes).  Rejects with libuv's UV_EAI_* code
 * (UV_EAI_NONAME for a name that does not exist, UV_EAI_AGAIN when no
 * server answers, ...), which uvp_strerror() understands.  A cancelled
 * lookup rejects with UV_ECANCELED, never UV_EAI_CANCELED, like every other
 * wrapper; a lookup already running cannot be stopped, and its late result
 * is freed when it arrives.
 * Cancelled: queued, the lookup never runs; running, it completes and its
 * result is freed.
 * Errors: UV_EINVAL (NULL ctx/out, node and service both NULL), UV_ENOMEM,
 * UVP_ECLOSED. */
#define uvp_getaddrinfo(...) uvp_getaddrinfo_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_getaddrinfo_at(uvp_ctx_t *ctx, const char *node,
                                  const char *service,
                                  const struct addrinfo *hints,
                                  uvp_promise_t **out, const char *file,
                                  int line);
/** @} */
/** @} */

/* ------------------------------------------------------------------------ */
/* Work (uv_queue_work) — thread pool                                        */
/* ------------------------------------------------------------------------ */

/** @defgroup work Work (uv_queue_work) — thread pool */
/** @{ */

/** A job.  Runs once on one of libuv's pool threads, never on the loop
 * thread: it may not touch the loop or call uvp functions, except
 * uvp_promise_resolve(), uvp_promise_reject() and uvp_promise_release() on
 * promises it holds a reference to (see "Threads").  Return 0 with the value
 * in *result (which starts NULL), or a negative code to reject with.
 * Whatever is in *result when the promise does not take it (the job failed,
 * or it was cancelled while running) is freed with result_free on the loop
 * thread. */
typedef int (*uvp_work_cb)(void *arg, void **result);

/** @name uvp_work, uvp_work_at
 * @{ */
/** Run work_cb(arg, &result) on the thread pool.  Value: the result, owned
 * (result_free, which may be NULL, runs on the loop thread when the promise
 * goes).  Rejects with work_cb's code (a positive one becomes UV_EINVAL).
 * Cancelling a job that has not started yet means it never runs; a job
 * already running cannot be stopped: the promise rejects with UV_ECANCELED
 * at once, the job completes later and its result goes to result_free.
 * `arg` is borrowed until work_cb has returned, which after a cancellation
 * may be after the promise settled: the request keeps uv_run() running
 * until then, so memory that outlives the loop run is safe.
 * Cancelled: queued, the job never runs (UVP_WORK_CANCELLED); running, it
 * runs to its end and its result goes to result_free (UVP_WORK_ABANDONED).
 * Errors: UV_EINVAL (NULL ctx/work_cb/out), UV_ENOMEM, UVP_ECLOSED. */
#define uvp_work(...) uvp_work_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_work_at(uvp_ctx_t *ctx, uvp_work_cb work_cb, void *arg,
                           uvp_free_cb result_free, uvp_promise_t **out,
                           const char *file, int line);
/** @} */

/** How a job ended, told once to its done callback. */
typedef enum {
  UVP_WORK_SETTLED = 0,   /**< it ran, and its outcome settled the promise */
  UVP_WORK_CANCELLED = 1, /**< cancelled while queued: it never ran */
  UVP_WORK_CLOSED = 2,    /**< the context was closed while it was queued: it
                               never ran */
  UVP_WORK_ABANDONED = 3  /**< its promise was cancelled (or torn down) while
                               it ran; it finished, and its result went to
                               result_free */
} uvp_work_end_t;

/** Called once per job, on the loop thread, when the job's `arg` will never
 * be touched by uvp again (the job has returned or will never run): free
 * the job's data here.  After uvp_ctx_close it still runs, when the loop
 * runs the request's callback. */
typedef void (*uvp_work_done_cb)(void *arg, uvp_work_end_t end);

/** @name uvp_work_full, uvp_work_full_at
 * @{ */
/** uvp_work with a done callback (may be NULL).  The promise settles first;
 * its handlers run later, from the scheduler, so they may still see `arg`
 * only if done has not freed it: pass what the handlers need in the
 * job's result instead.  On error done does not run: arg is still yours. */
#define uvp_work_full(...) uvp_work_full_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_work_full_at(uvp_ctx_t *ctx, uvp_work_cb work_cb, void *arg,
                                uvp_work_done_cb done, uvp_free_cb result_free,
                                uvp_promise_t **out, const char *file,
                                int line);
/** @} */
/** @} */

/* ------------------------------------------------------------------------ */
/* Processes (uv_spawn)                                                      */
/* ------------------------------------------------------------------------ */

/** @defgroup processes Processes (uv_spawn) */
/** @{ */

/** What to run.  Everything is read during the call only (stdin_data is
 * copied), so it may live on your stack. */
typedef struct uvp_spawn_opts_s {
  const char *file;       /**< the program; looked up in PATH like execvp(3) */
  char **args;            /**< argv, NULL-terminated, args[0] the program's
                               name; NULL: { file, NULL } */
  char **env;             /**< "NAME=value" strings, NULL-terminated; NULL:
                               the parent's environment */
  const char *cwd;        /**< NULL: the parent's working directory */
  const void *stdin_data; /**< written to the child's stdin, which is then
                               closed (the child need not read it all);
                               NULL: stdin reads nothing, as from /dev/null */
  size_t stdin_len;       /**< bytes of stdin_data */
  size_t max_output;      /**< bytes kept per stream; 0: 16 MiB.  The rest is
                               read and dropped, and `truncated` set */
  int cancel_signal;      /**< sent on cancellation; 0: SIGTERM */
} uvp_spawn_opts_t;

/** The value of uvp_spawn: one owned object (a single destructor frees the
 * buffers too). */
typedef struct uvp_process_result_s {
  int64_t exit_status; /**< exit code; 0 if killed by a signal */
  int term_signal;     /**< the signal that killed it, else 0 */
  uvp_buf_t out;       /**< everything written to stdout (NUL-terminated) */
  uvp_buf_t err;       /**< everything written to stderr (NUL-terminated) */
  int truncated;       /**< non-zero if either stream exceeded max_output */
} uvp_process_result_t;

/** @name uvp_spawn, uvp_spawn_at
 * @{ */
/** Start a child with stdout and stderr collected through pipes.  Fulfils
 * with an owned uvp_process_result_t * once the child has exited, both of
 * its output streams have reached end of file (in whichever order; a
 * grandchild that keeps them open keeps the promise pending) and every
 * handle is closed.  A non-zero exit status or a signal is a value, not a
 * rejection; a read error on a pipe rejects with its code, and running out
 * of memory for the output with UV_ENOMEM.  While it runs, the child and
 * its pipes keep uv_run() running, as any libuv process would.
 * Cancelling (or uvp_ctx_close) sends opts->cancel_signal and closes the
 * pipes at once; the promise rejects with UV_ECANCELED (UVP_ECLOSED) at
 * once, and the process handle stays open until the child exits: one that
 * ignores the signal keeps uv_run() running until it does.
 * Cancelled: killed by cancel_signal (SIGTERM), or, if it ignores or
 * handles that, left running until it exits; processes it started are not
 * signalled; its output is not collected.
 * Writing to a child that exits without reading all of stdin_data raises
 * SIGPIPE, as any write to a pipe does: like every libuv program that
 * writes to pipes, ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)).
 * Errors: UV_EINVAL (NULL ctx/opts/out/opts->file, stdin_len without
 * stdin_data or over UINT_MAX, a cancel_signal that is no signal number),
 * UV_ENOMEM, UVP_ECLOSED, or uv_spawn's own
 * (UV_ENOENT for a missing program or cwd, UV_EACCES, ...): then no promise
 * exists and nothing runs, but the handles uvp opened for the attempt close
 * asynchronously: run the loop before uv_loop_close(). */
#define uvp_spawn(...) uvp_spawn_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_spawn_at(uvp_ctx_t *ctx, const uvp_spawn_opts_t *opts,
                            uvp_promise_t **out, const char *file, int line);
/** @} */
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* UVP_H */
