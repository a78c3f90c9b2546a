/** @file
 * uvp — promises for libuv.
 *
 * uvp brings ECMAScript promise semantics (Promises/A+ for `then`, the
 * ECMAScript specification for all / allSettled / race / any) to C programs
 * that already run a uv_loop_t.  This header is the whole public API: it
 * holds the model below and includes the area headers of include/uvp/,
 * each one module of the reference, in this order:
 * @verbatim
 *   uvp/common.h    version, error codes, allocation, shared types, context
 *   uvp/promises.h  settlement, reactions, inspection, combinators,
 *                   fan-out, sequential steps and retry
 *   uvp/time.h      delays, timeouts, the context's clock
 *   uvp/fibers.h    fibers: async functions and await
 *   uvp/groups.h    scopes, deadlines, task groups
 *   uvp/io.h        libuv operations: files, TCP, DNS, work, processes
 *   uvp/debug.h     task dumps, async traces, counters
 *   uvp/calls.h     calls between loops (one loop per core)
 *   uvp/tracing.h   W3C trace context and spans
 *   uvp/main.h      a main for programs that own nothing yet
 *   uvp/console.h   the live console's socket (uvp-console)
 * @endverbatim
 * Include uvp.h; an area header alone also compiles (each includes what
 * it needs), for a file that uses one area only.
 *
 * ---------------------------------------------------------------------------
 * The model in one page
 * ---------------------------------------------------------------------------
 *
 *  - A context (uvp_ctx_t) is created over an existing loop.  uvp never
 *    creates, runs or stops the loop, but for a program that hands it its
 *    whole life: uvp_main_run makes the loop, runs it and closes it.  Every
 * promise belongs to exactly one context; contexts on different loops are fully
 * independent.
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
 *  - A rejection a cancellation made (uvp_promise_cancel, a deadline, a
 *    group's cancel or fail-fast, a race's losers, uvp_ctx_close) also says
 *    who cut it: uvp_promise_cause(p), e.g. "deadline 2000 ms set at
 *    main.c:36" (uvp_cause_format; docs/guide-troubleshooting.md, "Why was
 *    this cancelled?", runs an example).  It travels with the rejection.
 *
 *  - A handler or fiber slice that holds the loop says so, with
 *    uvp_ctx_set_stall on: reported by a watchdog thread while it runs,
 *    and by the loop thread when it ends, e.g. (N: its length in ms)
 *    `uvp: stall: handler of the promise made at app.c:62 ran N ms;
 *    trace: then at app.c:62 <- promise at app.c:61; slots 0=req-7`
 *    (docs/guide-troubleshooting.md, "What is holding my loop?", runs
 *    it).  Off, it costs a test of a flag per slice.
 *
 *  - Ownership is reference counting.  Every function that hands you a
 *    promise (`uvp_promise_t **out`) gives you one reference; you drop it
 *    with uvp_promise_release(), or hand it to a call that takes it.
 *    Functions that take a promise argument borrow it unless their comment
 *    says "takes"; the take forms (UVP_ON_TAKE and uvp_promise_then_take,
 *    UVP_TAKE_INPUTS, uvp_await_take) consume it whatever they return.
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
 *  - Handing over: a call given something together with the function that
 *    frees it (a value or payload with its free_cb, uvp_tcp_write_full's
 *    buffer with buf_free, a callback's arg with arg_free or an `arg_free`
 *    option, uvp_work_full's job with its done callback: every `_full`
 *    call, and uvp_promise_resolve, uvp_promise_reject, uvp_delay,
 *    uvp_scope_set, uvp_ctx_set_data and the others of that shape) owns it
 *    from the call on, whatever the call returns.  On an error the free
 *    function runs once, before the call returns, on the calling thread
 *    (uvp_work_full's done with UVP_WORK_CLOSED when the context is
 *    closed, else UVP_WORK_CANCELLED), and never again; the callback is
 *    never called.  So a failed start leaves nothing to the caller, and a
 *    start call given straight to a take form cannot leak:
 *    `uvp_await_take(uvp_tcp_write_full(t, buf, n, free, &w), &w, &o)`
 *    frees buf once whether the write is refused (UVP_ECLOSED while the
 *    context closes, UV_ENOMEM), fails later, or succeeds.  A NULL free
 *    function: uvp never frees it, on success or error (it is borrowed).
 *    The take forms (UVP_ON_TAKE, UVP_TAKE_INPUTS, uvp_await_take) follow
 *    the same rule for the promise reference they take.
 *
 *  - Threads: every function must be called on the loop thread, except
 *    uvp_promise_resolve(), uvp_promise_reject() and uvp_promise_release(),
 *    which any thread may call on a promise it holds a reference to (the
 *    reference must have been taken on the loop thread), and
 *    uvp_inflight_end() (a binding's record: "Work in flight", where a
 *    started record also keeps uv_run() going).  Off the loop thread
 *    they post through the context's wake-up handle (uvp_ctx_new); the work
 *    happens on the loop thread.  A settle posted (it returned 0) holds the
 *    promise until it is applied: the reference the thread used may be one
 *    the loop thread holds, and the loop
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
 *    happened, except that what was handed over with its free function
 *    has been freed ("Handing over", above); a callback argument passed
 *    without one stays yours.  A NULL where an object is
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

/* The areas in order (clang-format would sort them). */
/* clang-format off */
#include "uvp/common.h"
#include "uvp/promises.h"
#include "uvp/time.h"
#include "uvp/fibers.h"
#include "uvp/groups.h"
#include "uvp/io.h"
#include "uvp/debug.h"
#include "uvp/calls.h"
#include "uvp/tracing.h"
#include "uvp/main.h"
#include "uvp/console.h"
/* clang-format on */

#endif /* UVP_H */
