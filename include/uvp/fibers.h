/** @file
 * Fibers: async functions and await.
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 */
#ifndef UVP_H_FIBERS
#define UVP_H_FIBERS

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup fibers Fibers: async functions and await
 *
 * A fiber is a function running on a stack of its own, inside the loop you
 * run, that can wait for a promise without blocking the loop: the C form of
 * a JavaScript async function.  Every fiber is a promise.
 *
 * @code
 *   static uvp_ret_t load_all(void *arg) {
 *     uvp_promise_t *all;
 *     uvp_outcome_t o;
 *     uvp_await_take(uvp_promise_all_settled(ctx, loaders, n, &all), &all,
 *                    &o);                 // the loop runs meanwhile
 *     const uvp_settled_list_t *l = o.value;   // until the next await
 *     ...
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
 * value is p's, valid while you hold your reference.  uvp_await_take takes
 * the reference instead, and the outcome stays valid until the fiber's next
 * await returns: an await of a fresh call is one expression (see
 * uvp_await_take for which form to use when).  What a fiber may
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
 * Stacks.  Each fiber gets a stack (256 KiB by default; 128 KiB on 32-bit
 * platforms, whose 4 GiB of address space then holds about 30 000 fibers'
 * stacks instead of 15 000), carved from a few
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
 * between.  A parked compact fiber so costs its frames, its record (216
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
 *    takes about twice the default's time per await; docs/internals/fibers.md
 * 13 has the cost by bytes), and a compact fiber never hands off directly to
 * another fiber;
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
 * stacks, or that are few.  The compact mode works so with every switch
 * uvp has; only where uvp falls back to a ucontext whose layout it does
 * not know (no Debian architecture) does each compact fiber get a stack
 * of its own, with nothing copied and no UV_ENOMEM from an await.
 *
 * Floating-point modes.  The floating-point control modes (the rounding
 * direction of fesetround, and flags such as flush-to-zero: on x86-64 the
 * MXCSR and the x87 control word) are the thread's, shared by the loop's
 * code and every fiber on it, as they are by callbacks: a fiber that
 * changes them puts them back before it awaits, as a callback does before
 * it returns, or calls uvp_fiber_keep_fp_modes first, and then what it
 * sets stays its own across awaits, and the loop's code and other fibers
 * never see it.  Why: reading the modes is half the cost of a switch on
 * x86-64 (docs/internals/fibers-2.md), and hardly any code changes them.
 * On the other machines (i386, aarch64, ARM, ppc64el, s390x, Windows, and
 * where the switch is glibc's swapcontext) every fiber keeps its own
 * modes whether it asked or not, starting with those in effect where
 * uvp_fiber_spawn was called; portable code that changes them asks.  The
 * exception flags (fetestexcept) are never kept per fiber: test them
 * before an await.
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
 * uvp_promise_cancel cancels the fiber (see above).  `out` may be NULL: a
 * fiber nobody waits for (an async function called without await), whose
 * promise goes once the fiber has returned; a rejection it returns is
 * reported as unhandled, as any unobserved one.  `opts` may be NULL
 * (defaults).  Also from inside a fiber.
 * Errors: UV_EINVAL (NULL ctx or fn), UVP_ECLOSED, UVP_ETHREAD,
 * UV_ENOMEM (no memory for the fiber's record or promise, or no stack
 * could be mapped: the address space or RLIMIT_AS is exhausted); then
 * fn never runs and opts->arg_free has run (uvp.h, "Handing over"), or
 * without one arg is still yours. */
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

/** @name uvp_await_take, uvp_await_shielded_take (and their _at forms)
 * @{ */
/** Inside a fiber: uvp_await (and uvp_await_shielded) that takes the
 * caller's reference to the promise in *p, so that starting an operation,
 * waiting for it and letting it go is one expression:
 *
 * @code
 *   uvp_promise_t *st;
 *   uvp_outcome_t o;
 *   int rc = uvp_await_take(uvp_fs_stat(ctx, path, &st), &st, &o);
 *   if (rc == 0)
 *     size = ((const uv_stat_t *)o.value)->st_size;   // until the next await
 * @endcode
 *
 * `started` is what the call that made *p returned: C leaves the order in
 * which a call's arguments are evaluated open, so the promise travels
 * through its slot, read once the start call has returned.  A promise
 * already held is taken with `uvp_await_take(0, &p, &o)`.
 *
 * Ownership.  The reference in *p is the take's whatever it returns, and
 * *p is set to NULL.  When started is not 0, *p is not read (a start call
 * that fails hands nothing out) and nothing waits: the take returns
 * started, as the await would report a promise rejected with it.  What
 * the start call was handed with its free function (a buffer given to
 * uvp_tcp_write_full) it freed when it failed (uvp.h, "Handing over"), so
 * whichever way it ends, the one expression leaves the caller nothing to
 * free.
 * out->value and out->promise (borrowed) stay valid until the fiber's next
 * await (of any form) returns, or the fiber returns: the fiber holds the
 * promise till then, one at a time, so a loop of takes holds one promise
 * and allocates nothing.  To keep the value longer, take a reference of
 * your own, uvp_promise_retain(out->promise), before then (and release it
 * later), or copy the value; a fiber returning the value retains it first
 * (`uvp_ret_adopt` of the retained promise hands it on).  The value may be
 * passed to the start call of the next take (a buffer to write): it is released
 * after that await returns.
 *
 * Which form.  uvp_await_take for a fresh call, or for a promise you will
 * not use again once you have its outcome; uvp_await for a promise you
 * keep: one awaited twice, shared with other fibers or handlers, or whose
 * value must outlive the fiber's next await.  Both behave alike in
 * everything else: scheduling, cancellation, the shield, the compact mode
 * and teardown are uvp_await's and uvp_await_shielded's.
 *
 * Returns 0 if the promise fulfilled or its (negative) rejection code;
 * *out (may be NULL) gets the outcome.  Without waiting: started when it
 * is not 0 (out->status started, out->value and out->promise NULL); then
 * UV_EINVAL (NULL p or *p); UVP_ENOTFIBER, UVP_EXCTX, UV_ECANCELED (not for
 * the shielded take), UVP_ECLOSED, UV_ENOMEM as uvp_await, out->promise
 * NULL: the reference is released then (from any thread).  Refused in a
 * cancelled fiber (UV_ECANCELED, UV_ETIMEDOUT past its deadline) or for
 * want of memory, the promise is left to its work, and its rejection is
 * not reported as unhandled: the take was its handler.  The site of the
 * call is recorded for uvp_ctx_dump_pending. */
#define uvp_await_take(...) uvp_await_take_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_await_take_at(int started, uvp_promise_t **p,
                                 uvp_outcome_t *out, const char *file,
                                 int line);
#define uvp_await_shielded_take(...)                                           \
  uvp_await_shielded_take_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_await_shielded_take_at(int started, uvp_promise_t **p,
                                          uvp_outcome_t *out, const char *file,
                                          int line);
/** @} */

/** Whether the caller runs on a fiber (of any context). */
UVP_EXTERN int uvp_in_fiber(void);

/** Inside a fiber: from now on its floating-point control modes are its
 * own (see "Floating-point modes" above).  Whatever it sets after this
 * call stays its own across its awaits; whenever it suspends, the loop's
 * code and the other fibers get the thread's modes back as they were at
 * this call or at its last resume.  Call it before the fiber changes them:
 * the modes in effect at the call are the thread's as well as, from then
 * on, the fiber's.  For the rest of the fiber's life; calling it again
 * changes nothing.  Each switch away from and back to the fiber then costs
 * a read and a write of the modes (about 10 ns on x86-64).  Errors:
 * UVP_ENOTFIBER (not called from a fiber). */
UVP_EXTERN int uvp_fiber_keep_fp_modes(void);

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
 * to whole pages; less than 16 KiB gives 16 KiB; 256 KiB until set, 128 KiB
 * on 32-bit platforms).  The
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

#ifdef __cplusplus
}
#endif
#endif /* UVP_H_FIBERS */
