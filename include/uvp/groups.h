/** @file
 * Structured concurrency: request scopes, deadlines and task groups.
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 */
#ifndef UVP_H_GROUPS
#define UVP_H_GROUPS

#include "common.h"
#include "fibers.h"

#ifdef __cplusplus
extern "C" {
#endif

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
 * range), UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM; then free_cb has run
 * (uvp.h, "Handing over"). */
UVP_EXTERN int uvp_scope_set(uvp_ctx_t *ctx, unsigned int slot, void *value,
                             uvp_free_cb free_cb);
/** The value of `slot` in the current scope (NULL: unset, NULL ctx, slot
 * out of range). */
UVP_EXTERN void *uvp_scope_get(const uvp_ctx_t *ctx, unsigned int slot);
/** Make every slot of the current scope empty, and drop its trace context
 * (see "Trace context"), e.g. at the top of a libuv callback that serves
 * another request.  Inside a group's work the group
 * stays: what the code starts afterwards is still the group's (see "Task
 * groups").  Errors: UV_EINVAL, UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM (inside
 * a group's work, where the emptied scope is a new one). */
UVP_EXTERN int uvp_scope_clear(uvp_ctx_t *ctx);
/** @} */

/** @defgroup deadlines Deadlines
 *
 * A deadline is a point in the loop's time, `ms` from the call that sets
 * it (uvp_deadline_set, uvp_deadline_shield, uvp_fiber_spawn's,
 * uvp_group_new's and uvp_group_spawn's deadline_ms): the clock is read
 * afresh there, not taken from uv_now, libuv's cached time of the loop's
 * turn (see "Time").  A scope carries it
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

/** @name uvp_deadline_set, uvp_deadline_set_at
 * @{ */
/** Give the current scope a deadline `ms` milliseconds from this call (for the
 * rest of the running handler or callback, or of the fiber across its
 * awaits, and for everything started from there; see above), unless it
 * carries a nearer one.  Errors: UV_EINVAL (NULL ctx), UVP_ECLOSED,
 * UVP_ETHREAD, UV_ENOMEM.  What it cuts says so (uvp_promise_cause: a
 * UVP_CAUSE_DEADLINE naming the call's `file`:`line` and `ms`); the _at form
 * takes the site, the plain one is a macro giving the caller's. */
#define uvp_deadline_set(ctx, ms)                                              \
  uvp_deadline_set_at((ctx), (ms), __FILE__, __LINE__)
UVP_EXTERN int uvp_deadline_set_at(uvp_ctx_t *ctx, uint64_t ms,
                                   const char *file, int line);
/** @} */

/** @name uvp_deadline_shield, uvp_deadline_shield_at
 * @{ */
/** Give the current scope a deadline `ms` milliseconds from this call in place
 * of the one it carries, nearer, farther or passed (UVP_NO_DEADLINE: none
 * at all): for cleanup after a cut (see "Cleanup past a deadline").  It
 * holds as uvp_deadline_set's does, for the rest of the running handler or
 * fiber and for everything started from there; work started before stays
 * watched by the deadline it was started under.  Give cleanup a bound: a
 * shield without one can outlive its caller's caller.  Errors: UV_EINVAL
 * (NULL ctx), UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM.  Its cause names the
 * call's site, as uvp_deadline_set's. */
#define uvp_deadline_shield(ctx, ms)                                           \
  uvp_deadline_shield_at((ctx), (ms), __FILE__, __LINE__)
UVP_EXTERN int uvp_deadline_shield_at(uvp_ctx_t *ctx, uint64_t ms,
                                      const char *file, int line);
/** @} */

/** Milliseconds until the current scope's deadline (0: passed), or
 * UVP_NO_DEADLINE; UVP_NO_DEADLINE for NULL. */
UVP_EXTERN uint64_t uvp_deadline_left(const uvp_ctx_t *ctx);

/** Deprecated (0.3.0; goes at the next soname): uvp_inflight_start does
 * this and the rest.  For a library that produces promises of its own (a
 * binding): p, pending, with a cancel hook that stops its work, is watched
 * by the current
 * scope's deadline, as uvp's own operations are: when it passes, p rejects
 * with UV_ETIMEDOUT and its hook runs.  Nothing happens without a
 * deadline.  Errors: UV_EINVAL, UVP_ECLOSED, UVP_ETHREAD, UVP_EXCTX,
 * UVP_ESETTLED, UV_ENOMEM (not watched: p's work runs to its end unless
 * the caller stops it). */
UVP_EXTERN int uvp_deadline_watch(uvp_ctx_t *ctx, uvp_promise_t *p);
/** @} */

/** @defgroup inflight Work in flight: the door for bindings
 *
 * A library that produces promises of its own (a binding: an HTTP
 * transfer, a broker's request) tells uvp when a piece of its work starts
 * and when it ends, through one record, uvp_inflight_t, embedded where the
 * work lives.  Between uvp_inflight_start and uvp_inflight_end the work is
 * treated as uvp's own operations are:
 *  - its scope's owner waits for it: started in a group's member, it is
 *    that group's work, and the group's join settles only after it has
 *    ended (see "Task groups");
 *  - the scope's deadline watches its promise: when it passes, the promise
 *    rejects with UV_ETIMEDOUT and the class's cancel runs;
 *  - a cancellation (uvp_promise_cancel, a group's cancel, UVP_CANCEL_LOSERS)
 *    rejects the promise and runs cancel; so does uvp_ctx_close, with
 *    UVP_ECLOSED;
 *  - the virtual clock (UVP_CLOCK_AUTO) keeps the loop's pace while it is
 *    in flight, as for a wrapper's request, unless the class says it is
 *    idle (UVP_INFLIGHT_IDLE: a wait that may never end, such as a
 *    subscription's next message);
 *  - the task dump shows the promise as the class's kind, with what its
 *    describe writes, its age, group and deadline;
 *  - it counts as uvp's work in the loop until uvp_inflight_end, however
 *    long after its cut that comes: uvp_ctx_inflight counts it, and
 *    uvp_ctx_close_full's callback waits for every started record, one
 *    whose cancel (UVP_ECLOSED, from the teardown) stops the work later
 *    (a timer's callback, a thread's message, a close callback) included,
 *    until its uvp_inflight_end;
 *  - it keeps uv_run() going, as a libuv request in flight does
 *    (uv_loop_alive is 1), unless its class says UVP_INFLIGHT_UNREF, as
 *    uv_unref says of a handle (until the context is closing: then every
 *    open record does, see the flag).
 *
 * One call at the start and one at the end replace what a binding
 * otherwise does in four (a described cancel hook, a deadline watch, a
 * clock hold, and nothing for its group: that one had no public call),
 * and, for a library that calls back on threads of its own (most C
 * clients: database drivers, brokers' clients, RPC), the async handle and
 * locked queue it would need to bring the end back to the loop.
 *
 * Threads.  uvp_inflight_start and the class's functions are the loop
 * thread's: cancel and describe run there, from the call that cuts the
 * promise or dumps the tasks (never inside uvp_inflight_start).
 * uvp_inflight_end may be called on any thread, typically the library's
 * callback thread right after it settled the promise (uvp_promise_resolve,
 * uvp_promise_reject and uvp_promise_release may be called there too):
 * once it returns, uvp
 * never calls the class for that record again nor touches the record, so
 * the binding may free it at once.  On another thread it waits for a
 * cancel or describe of that record running on the loop thread to return
 * (so a class's cancel must not wait for the library's callback thread, or
 * for a lock that thread holds while it ends a record: ask the library to
 * stop, and return), and the rest of the end (its group, the clock, the
 * counts, uvp's reference to p) is posted to the loop thread, where it
 * applies after what that thread posted before: a group's join sees the
 * value of a promise settled there before its end.  A cut that comes in
 * between finds the record ended and calls nothing.  Ending on another
 * thread allocates nothing. */
/** @{ */

/** A piece of a binding's work in flight: the record below. */
typedef struct uvp_inflight_s uvp_inflight_t;

/** Flags of uvp_inflight_class_t. */
enum {
  /** Not real work: it may wait forever for something outside (a message
   * nobody has sent yet).  The virtual clock may jump past it; everything
   * else holds, keeping uv_run() going too (a libuv read that may never
   * complete keeps the loop alive as well): add UVP_INFLIGHT_UNREF for a
   * wait that must not. */
  UVP_INFLIGHT_IDLE = 1,
  /** It does not keep uv_run() going, as uv_unref says of a handle: for a
   * binding whose own handles alone decide when the loop may end, or work
   * a program need not wait for.  Everything else holds,
   * uvp_ctx_close_full's callback waiting for its end included: once the
   * context is closing (uvp_ctx_close), an open record keeps uv_run()
   * going until its end has come, whatever its flags, as a closing
   * handle keeps the loop alive, so that an end from another thread is
   * heard (run the loop until the callback comes). */
  UVP_INFLIGHT_UNREF = 2
};

/** What a kind of work is: const, one per kind, living as long as any of
 * its records. */
typedef struct uvp_inflight_class_s {
  /** What the task dump calls it ("HTTP"): a string as long-lived. */
  const char *kind;
  /** The promise was cut while pending: it has rejected with `code`
   * already (UV_ECANCELED, UV_ETIMEDOUT, UVP_ECLOSED...).  Stop the work;
   * call uvp_inflight_end once it has stopped, now or later.  Required. */
  void (*cancel)(uvp_inflight_t *w, int code);
  /** Writes what the work waits for into buf, as uvp_describe_cb does
   * ("GET https://example.com/"), for the task dump; may be NULL. */
  int (*describe)(uvp_inflight_t *w, char *buf, size_t cap);
  /** 0, or UVP_INFLIGHT_IDLE and UVP_INFLIGHT_UNREF or'd. */
  int flags;
} uvp_inflight_class_t;

/** The record: the caller's memory (embedded in its own object), valid
 * from uvp_inflight_start until uvp_inflight_end returns.  Zero it before
 * its first use (uvp_inflight_end on a zeroed record that never started
 * does nothing); a record that has ended may start again.  Only `data` is
 * the caller's to use; the rest is uvp's. */
struct uvp_inflight_s {
  void *data; /**< the caller's: what cancel and describe need */
  const uvp_inflight_class_t *cls_;
  void *work_[3]; /* uvp's: its block of the work, and room */
  int state_;
};

/** The idle blocks of records uvp keeps per context for the next starts
 * (see uvp_inflight_start); a burst of more records in flight gives the
 * rest back to the allocator as they end, so that what the work leaves
 * behind (its replies, say) can use that memory. */
#define UVP_INFLIGHT_KEEP 1024

/** Work starts: p (pending, created by the caller with uvp_promise_new on
 * ctx, with no cancel hook) stands for it until uvp_inflight_end.  uvp
 * takes a reference to p for that time, sets p's cancel hook to the
 * class's cancel, and starts everything listed above.  The caller settles
 * p when the work has an outcome, as with any promise it made, then ends
 * the record.  Loop thread.  Allocates nothing once as many records have
 * been in flight at once before, up to UVP_INFLIGHT_KEEP (uvp keeps a
 * small block per record, recycled: UVP_INFLIGHT_KEEP idle ones at most;
 * uvp_ctx_trim gives those back too).  Errors, none of which
 * leaves anything started: UV_EINVAL (a NULL argument, a class without
 * kind or cancel, an unknown flag, a record already started), UVP_ECLOSED,
 * UVP_ETHREAD, UVP_EXCTX (p is another context's), UVP_ESETTLED (p has
 * settled), UV_EBUSY (p has a cancel hook already, or uvp settles it),
 * UV_ENOMEM. */
UVP_EXTERN int uvp_inflight_start(uvp_ctx_t *ctx, uvp_inflight_t *w,
                                  uvp_promise_t *p,
                                  const uvp_inflight_class_t *cls);

/** The work has ended (finished, failed, or stopped after cancel): its
 * group is told (its join may settle now), the clock, the counts and
 * uv_run() let go, and uvp's reference to p drops.  If p is still pending
 * it stays so, its cancel hook removed: settle it too.  Called once per
 * start; a record not started, or ended already, is left alone.  Any
 * thread (see "Threads" above): on the loop thread it all happens inside
 * the call; on another, the call only makes sure the class is not called
 * again, and the rest follows on the loop thread.  Either way the record
 * is yours again when the call returns.  Also after uvp_ctx_close, until
 * which the context stays for it: uvp_ctx_close_full's callback comes
 * after the last record's end, from the loop, never inside this call.  For
 * a host that closes the loop or frees your state on that callback, end
 * the record once the work's own handles have closed (from the last one's
 * close callback) and its threads no longer touch the loop but for this
 * call. */
UVP_EXTERN void uvp_inflight_end(uvp_inflight_t *w);

/** How much of uvp's work is in the loop now: operations whose libuv
 * request or handle is open, TCP connections, timers (delays, timeouts,
 * deadlines), bindings' records between uvp_inflight_start and
 * uvp_inflight_end (a record cut by a cancellation, a deadline or the
 * teardown counts until its end).  0 once everything has ended: after
 * uvp_ctx_close, that is when uvp_ctx_close_full's callback runs.  0 for NULL.
 * Loop thread, or any thread after uvp_ctx_close while the context lives. */
UVP_EXTERN size_t uvp_ctx_inflight(const uvp_ctx_t *ctx);
/** @} */

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
 * Closing: the join settles only once the group is closed, and adding to a
 * closed group fails (UVP_ECLOSED).  A program that knows its last member
 * calls uvp_group_close after adding it.  Work that grows while it runs (a
 * crawler adding a member per link found, a resolver per referral) cannot
 * know: with UVP_GROUP_CLOSE_WHEN_DONE the group closes itself, as
 * uvp_group_close does, at the moment nothing of it runs any more after a
 * first member was added: no member running or waiting to start, no fiber
 * member that has not returned, no request or handle they started still
 * open.  A member that adds more before it ends (from its start callback,
 * a handler its promise follows, its fiber before it returns) keeps the
 * group open, and the join settles at once, when the last of it ends:
 * main is "spawn the first; await the join" (trio's nursery, Go's
 * errgroup.Wait).  Code that adds once its member has ended (a handler of
 * a promise the member did not wait for, a timer or a connection of the
 * program's) may find the group closed (UVP_ECLOSED): add before the last
 * member ends (keep a member running until you are done adding), or close
 * the group yourself and do without the flag.  A
 * group with the flag that never had a member stays open (a join
 * requested before the first spawn must not end the group): close it if
 * you may add none.  The deadline, cancel and failure rules are the same
 * as for any group.
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
 * reported (a cancellation is no news), and neither is one a cut
 * rejected, whatever its code: such a group is the handler of its
 * members' cuts.  A cut is a rejection that carries a cause
 * (uvp_promise_cause is not NULL): the member's own deadline_ms passing,
 * the group's, one it was made under, uvp_timeout, the group's cancel, a
 * code given to uvp_promise_cancel_with, uvp_ctx_close, or a rejection
 * passed on from one of those (then, adoption).  The program chose the
 * cut, and nothing but the group could observe it: a fiber member's
 * promise rejects with UV_ETIMEDOUT as its deadline passes, before the
 * fiber returns and whatever it returns (see "Fibers"), so a server that
 * answers a request past its deadline and returns has handled it, as
 * trio's move_on_after absorbs its own deadline.  A member that rejects on its
 * own is reported, even with UV_ETIMEDOUT: a fiber returning uvp_ret_reject(rc)
 * after its own request timed out, a promise you reject.  With
 * UVP_GROUP_FAIL_FAST too, the first failure (a cut other than UV_ECANCELED
 * counts) is not reported either: it settles the join, which is reported in its
 * turn if nobody observes it; failures after it are, cuts after it are not (and
 * the first failure of its own is reported if the join was cut before:
 * nothing carries it then).  A member of a group that keeps its results
 * is never reported itself, cut or not: the group observes it for a
 * next(), and what next() hands out is yours.
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
  UVP_GROUP_FAIL_FAST = 1,       /**< the first failure cancels the rest */
  UVP_GROUP_DISCARD_SETTLED = 2, /**< let go of members as they settle */
  UVP_GROUP_CLOSE_WHEN_DONE = 4  /**< close once nothing of it runs any more */
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
 * rejected with why.  Also UV_ECANCELED, UV_ENOMEM; on error fn never
 * runs and arg_free has run (uvp.h, "Handing over"). */
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
 * start is never called and arg_free has run (uvp.h, "Handing over"). */
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

/** No more members (adding fails with UVP_ECLOSED); the join can settle.
 * A UVP_GROUP_CLOSE_WHEN_DONE group does this itself (see "Closing"). */
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

#ifdef __cplusplus
}
#endif
#endif /* UVP_H_GROUPS */
