/** @file
 * Promises: creation and settlement, reactions, references and inspection,
 * combinators, bounded fan-out, sequential steps and retry.
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 */
#ifndef UVP_H_PROMISES
#define UVP_H_PROMISES

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

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
 * (Promise.reject(e)).  uvp owns value/payload from the call on: on error
 * free_cb has run (uvp.h, "Handing over").  Errors: UV_EINVAL (NULL ctx or out;
 * for rejected, a code not < 0), UV_ENOMEM, UVP_ECLOSED. */
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
 * Errors (nothing changes; value is freed by free_cb before the call
 * returns, as uvp.h's "Handing over" says):
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
 * promise, a fiber's; uvp_promise_resolve answers the same); arg, which
 * has no destroy notifier here, is still yours then. */
UVP_EXTERN int uvp_promise_set_cancel(uvp_promise_t *p, uvp_cancel_cb cb,
                                      void *arg);
/** The same with a destroy notifier for `arg`: arg_free(arg) runs exactly
 * once, on the loop thread, right after the hook has run, or when it never
 * will: p settles otherwise, the hook is replaced or removed, or p is freed
 * while pending.  With a NULL cb, arg_free is not kept.  Errors also
 * UV_ENOMEM (the hook and its notifier are kept in a small allocation);
 * on error arg_free has run (uvp.h, "Handing over") and a hook already
 * set stays. */
UVP_EXTERN int uvp_promise_set_cancel_full(uvp_promise_t *p, uvp_cancel_cb cb,
                                           void *arg, uvp_free_cb arg_free);

/** Writes into buf (cap bytes, cap > 0) what a promise waits for, for the
 * task dump ("GET https://example.com/"), and returns its length; a
 * negative return says it failed, a length of cap or more that it was cut
 * short.  The first min(length, cap - 1) bytes are shown, whether or not
 * it wrote a NUL after them; whatever bytes they are, the dump stays well
 * formed.  Called on the loop thread, inside uvp_ctx_dump_tasks. */
typedef int (*uvp_describe_cb)(void *arg, char *buf, size_t cap);

/** Deprecated (0.3.0; goes at the next soname): uvp_inflight_start does
 * this and the rest.  uvp_promise_set_cancel_full for a promise a library
 * produces (a binding: an HTTP transfer), which also says what p waits for
 * while pending: in
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

/* ---- causes (why was this cancelled) ----------------------------------- */

/** Who cut a promise: uvp_cause_t's kind. */
typedef enum uvp_cause_kind_e {
  /** uvp_promise_cancel ("cancelled by the program") or
   * uvp_promise_cancel_with (`data` is the program's cause). */
  UVP_CAUSE_PROGRAM = 0,
  /** A deadline passed: `file`:`line` where it was set (uvp_deadline_set,
   * uvp_deadline_shield, a group's or a fiber's deadline_ms: where the
   * group or fiber was made; uvp_timeout: where it was called, for its
   * result and the input it gives up on), `ms` its length. */
  UVP_CAUSE_DEADLINE = 1,
  /** uvp_group_cancel: `file`:`line` where the group was made, `message` its
   * name (uvp_group_set_name) or NULL. */
  UVP_CAUSE_GROUP = 2,
  /** A member of a UVP_GROUP_FAIL_FAST group (or an item of a
   * UVP_MAP_FAIL_FAST map) failed: `file`:`line` where the group or map was
   * made, `peer_file`:`peer_line` where the failed member's promise was
   * created, peer_code its rejection code; `message` is "map" for a map's
   * item, else NULL. */
  UVP_CAUSE_SIBLING = 3,
  /** A combinator given UVP_CANCEL_LOSERS was decided by another input:
   * `file`:`line` where the combinator was called, `peer_file`:`peer_line`
   * where the input that decided it was created, peer_code its code (0: it
   * fulfilled), `message` what settled that input when uvp knows it, else
   * NULL: a watch (uvp_tcp_closed) says "peer 127.0.0.1:54321 closed the
   * connection" (or "reset the connection", or "the connection with peer
   * ... failed: ETIMEDOUT"), a child (uvp_spawn) "process 4242 (/bin/sh)
   * exited with status 3" (or "was killed by signal 9"). */
  UVP_CAUSE_LOSER = 4,
  /** uvp_ctx_close tore the context down (the code is UVP_ECLOSED). */
  UVP_CAUSE_CLOSE = 5,
  /** A binding's own reason (uvp_promise_cancel_binding): `message`. */
  UVP_CAUSE_BINDING = 6,
  /** A signal cut the job of uvp_main_run (Ctrl-C): `message` the
   * signal's name ("SIGINT", "SIGTERM", "SIGBREAK"), `peer_code` its
   * number, `file`:`line` where uvp_main_run was called. */
  UVP_CAUSE_SIGNAL = 7
} uvp_cause_kind_t;

/** Why a promise was rejected by a cancellation (Go's context.Cause).
 * Read-only, owned by uvp: valid while you hold a reference to a promise
 * it was read from (uvp_promise_cause), and shared by every promise the
 * one cancellation cut (the members of a group, the chain above a
 * cancelled promise, what a deadline watched).  Strings live as long as
 * the record; the fields a kind does not use are NULL or 0. */
typedef struct uvp_cause_s {
  uvp_cause_kind_t kind; /**< who cut it (the kinds above) */
  int peer_code;         /**< SIBLING, LOSER: the deciding input's code;
                              SIGNAL: the signal's number */
  const char *file;      /**< where it began (see the kinds), or NULL */
  int line;              /**< its line, or 0 */
  uint64_t ms;           /**< DEADLINE: its length in milliseconds */
  const char *peer_file; /**< SIBLING, LOSER: where the deciding input's
                              promise was created, or NULL */
  int peer_line;         /**< its line, or 0 */
  const char *message;   /**< GROUP: its name; BINDING: its reason;
                              SIBLING: "map" or NULL; LOSER: what settled
                              the deciding input, or NULL; SIGNAL: the
                              signal's name */
  void *data; /**< PROGRAM: uvp_promise_cancel_with's `cause`, or NULL */
} uvp_cause_t;

/** Cancel p as uvp_promise_cancel does, rejecting it with `code` (< 0;
 * UV_ECANCELED is the usual one: any other, UV_ETIMEDOUT say, is reported
 * as unhandled if nothing observes it, as a rejection is) and a cause of
 * kind UVP_CAUSE_PROGRAM whose `data` is `cause` (may be NULL).  What the
 * cancellation reaches (the chain p follows, by uvp_promise_cancel's rule,
 * and whatever its cancel hooks cancel) is rejected with UV_ECANCELED and
 * the same cause.  Promises uvp produces read any code as a cancellation
 * (a fiber's awaits then say UV_ECANCELED, or UV_ETIMEDOUT for that code);
 * a group's join, which settles only once its members have ended, then
 * settles with UV_ECANCELED (UV_ETIMEDOUT for that code) and the cause.
 * On success uvp owns `cause`: cause_free(cause) (may be
 * NULL) runs once, when the last promise holding the cause is freed, on
 * the thread that frees it (the loop thread while the context is open).
 * Errors (nothing happens; cause_free(cause) has run, as uvp.h's "Handing
 * over" says): UV_EINVAL (NULL p, code
 * >= 0), UVP_ESETTLED, UVP_ECLOSED, UVP_ETHREAD.  The cause takes one
 * small allocation; without memory p is still cancelled, with the cause
 * uvp_promise_cancel gives, and cause_free runs at once. */
UVP_EXTERN int uvp_promise_cancel_with(uvp_promise_t *p, int code, void *cause,
                                       uvp_free_cb cause_free);

/** For a binding (a library over uvp): cancel p with its own reason, a
 * cause of kind UVP_CAUSE_BINDING whose `message` is a copy of `message`
 * ("uvp_curl_close: the client was closed").  Otherwise as
 * uvp_promise_cancel_with; UV_EINVAL also for a NULL message. */
UVP_EXTERN int uvp_promise_cancel_binding(uvp_promise_t *p, int code,
                                          const char *message);

/** The cause of p's rejection if a cancellation rejected it, NULL if p is
 * pending, fulfilled, or rejected by anything else (a handler's
 * uvp_ret_reject, uvp_promise_reject, an operation's error, a FAIL_FAST
 * group's join, which forwards the member's own failure).  The cause
 * travels as the rejection does: a promise that follows p or passes its
 * rejection on (then, catch, finally, adoption, race, all) answers p's.
 * An allSettled or map record's cause is its input's:
 * uvp_promise_cause(list->items[i].promise) (a map's item never started
 * has no promise: its record says UV_ECANCELED and no cause); a handler's is
 * uvp_promise_cause(in->promise); a fiber's await of q, q's.  Asking costs
 * a few loads and allocates nothing.  Thread: as uvp_promise_reason (the
 * loop thread, or any thread once p is settled and you hold it). */
UVP_EXTERN const uvp_cause_t *uvp_promise_cause(const uvp_promise_t *p);

/** One line of text saying what c says, as the unhandled-rejection report,
 * the dumps and uvp-fanout show it: "deadline 2000 ms set at main.c:88",
 * "sibling created at main.c:50 failed: ECONNREFUSED (group made at
 * main.c:40)", "group made at main.c:40 cancelled", "lost a race decided
 * at main.c:60 (by the input created at main.c:55)" (followed by ": peer
 * 127.0.0.1:54321 closed the connection" when the cause has a message),
 * "context closed (uvp_ctx_close)", "SIGINT received (uvp_main_run at
 * tool.c:12)", "cancelled by the program", or a binding's message
 * (docs/guide-cancellation.md lists them all). snprintf's contract: writes at
 * most cap bytes with a NUL (buf may be NULL if cap is 0) and returns the
 * length the whole line needs; a NULL c writes "" and returns 0.  Any thread.
 */
UVP_EXTERN int uvp_cause_format(const uvp_cause_t *c, char *buf, size_t cap);
/** @} */

/** @defgroup reactions Promises: reactions */
/** @{ */

/** The outcomes a handler is registered for (uvp_promise_on's mask), and
 * whether the registration takes your reference to p. */
enum {
  UVP_ON_FULFILLED = 1, /**< as then() */
  UVP_ON_REJECTED = 2,  /**< as catch() */
  UVP_ON_BOTH = 3,      /**< as then(f, r) */
  UVP_ON_FINALLY = 4,   /**< as finally (uvp_promise_finally) */
  UVP_ON_TAKE = 8       /**< with one of the above: takes p (see below) */
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
 * reference goes while it is pending, its handlers never run (unless the
 * registration took that reference: UVP_ON_TAKE, below).
 *
 * Taking p.  With UVP_ON_TAKE in the mask (a positive one: a negative mask
 * is only UV_EINVAL) the registration takes your reference to p, as
 * uvp_await_take does: it is the call's whatever the call returns (on an
 * error it is released at once, from any thread), and
 * you must not use p afterwards unless you hold another reference.  The
 * handler then holds p: p stays alive, pending or not, until the handler
 * has run or been dropped (its derived promise cancelled, the context
 * torn down), and the reference goes then.  That is the form for a
 * promise you make only to hand to a handler (`p = p.then(f)` in
 * JavaScript, which keeps nothing else): uvp_promise_then_take,
 * uvp_promise_catch_take and uvp_promise_finally_take write it.
 * @code
 *   uvp_promise_t *p;
 *   if (uvp_fs_stat(ctx, path, &p) == 0 &&
 *       uvp_promise_then_take(p, on_stat, arg, &p) == 0)
 *     ...  // p is now the derived promise
 * @endcode
 * A taken handler costs a second slot of the reaction pool while it
 * waits, as a destroy notifier does (nothing is allocated per call).
 *
 * UVP_ON_FINALLY registers finally's handler (uvp_promise_finally): with
 * UVP_ON_TAKE it is the taking finally; the plain value is there for that.
 *
 * Registering any handler marks p as handled for the unhandled-rejection
 * hook.  Errors: UV_EINVAL (NULL p, a mask that is not one of 1..4 with or
 * without UVP_ON_TAKE), UV_ENOMEM, UVP_ECLOSED; then nothing was
 * registered and `arg` is still yours (p too, without UVP_ON_TAKE); the
 * _full form's arg_free has run (uvp.h, "Handing over"). */
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
 * plain forms).  On error it has run once, before the call returned
 * (uvp.h, "Handing over"). */
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
/** uvp_promise_then that takes p (UVP_ON_TAKE): no release of p follows. */
#define uvp_promise_then_take(p, ...)                                          \
  uvp_promise_on_at((p), UVP_ON_FULFILLED | UVP_ON_TAKE, __VA_ARGS__,          \
                    __FILE__, __LINE__)
/** uvp_promise_catch that takes p (UVP_ON_TAKE). */
#define uvp_promise_catch_take(p, ...)                                         \
  uvp_promise_on_at((p), UVP_ON_REJECTED | UVP_ON_TAKE, __VA_ARGS__, __FILE__, \
                    __LINE__)
/** uvp_promise_finally that takes p (UVP_ON_TAKE). */
#define uvp_promise_finally_take(p, ...)                                       \
  uvp_promise_on_at((p), UVP_ON_FINALLY | UVP_ON_TAKE, __VA_ARGS__, __FILE__,  \
                    __LINE__)

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

/** @} */

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
 *  - flags may also hold UVP_TAKE_INPUTS (all/race/any, and allSettled
 *    through uvp_promise_all_settled_ex): the call takes your reference
 *    to each input instead of borrowing it, one per element of `inputs`
 *    (an input given twice, two), whatever the call returns: on an error
 *    the non-NULL inputs are released at once (from any thread).  The
 *    result holds them as it holds borrowed ones (above), then lets them
 *    go: no release of the inputs follows the call.  uvp_timeout takes
 *    the flag too, for its one input.
 * Errors: UV_EINVAL (NULL ctx/out, NULL inputs with n > 0, a NULL input,
 * unknown flags), UVP_EXCTX (an input of another context), UVP_ECLOSED,
 * UV_ENOMEM. */
enum {
  UVP_CANCEL_LOSERS = 1, /**< once decided, cancel the inputs still pending */
  UVP_TAKE_INPUTS = 32   /**< take the caller's reference to each input */
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

/** @name uvp_promise_all_settled_ex, uvp_promise_all_settled_ex_at
 * @{ */
/** allSettled with flags (libuv's _ex: uv_tcp_init_ex): 0, or
 * UVP_TAKE_INPUTS to take the inputs' references.  UVP_CANCEL_LOSERS is
 * UV_EINVAL: allSettled has no losers. */
#define uvp_promise_all_settled_ex(...)                                        \
  uvp_promise_all_settled_ex_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_promise_all_settled_ex_at(uvp_ctx_t *ctx,
                                             uvp_promise_t *const *inputs,
                                             size_t n, int flags,
                                             uvp_promise_t **out,
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
 * then opts->arg_free has run (uvp.h, "Handing over"), or without one
 * arg is still yours. */
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
 * Errors: UV_EINVAL, UV_ENOMEM, UVP_ECLOSED; then arg is still yours (the
 * _full form's arg_free has run: uvp.h, "Handing over"). */
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
 * Errors: UV_EINVAL, UV_ENOMEM, UVP_ECLOSED; then opts->arg_free has run
 * (uvp.h, "Handing over"), or without one arg is still yours. */
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

#ifdef __cplusplus
}
#endif
#endif /* UVP_H_PROMISES */
