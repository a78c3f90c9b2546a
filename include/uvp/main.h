/** @file
 * A main for programs that own nothing yet: the loop, the context, Ctrl-C
 * and the teardown in one call.
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 */
#ifndef UVP_H_MAIN
#define UVP_H_MAIN

#include "common.h"
#include "fibers.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup main A main for programs that own nothing yet
 *
 * A program whose whole life is one job (a tool, a client, a test of a
 * server) writes the same frame around it: a loop, a context, a signal
 * handle for Ctrl-C, uv_run, uvp_ctx_close, uv_run again, uv_loop_close
 * and its check.  uvp_main_run is that frame, as Python's asyncio.run or
 * Rust's #[tokio::main] are:
 *
 * @code
 *   static uvp_ret_t run(uvp_ctx_t *ctx, void *arg) {
 *     uvp_promise_t *st;
 *     uvp_outcome_t o;
 *     int rc = uvp_await_take(uvp_fs_stat(ctx, arg, &st), &st, &o);
 *     ...
 *     return rc == 0 ? uvp_ret_pass() : uvp_ret_reject(rc, NULL, NULL);
 *   }
 *   int main(int argc, char **argv) {
 *     return argc == 2 ? uvp_main_run(run, argv[1], NULL) : 2;
 *   }
 * @endcode
 *
 * What it does, in order:
 *  1. makes a loop (uv_loop_init) and a context over it (uvp_ctx_new),
 *     with the options' fiber stack and mode;
 *  2. watches SIGINT and SIGTERM (unless UVP_MAIN_NO_SIGNALS), with
 *     unreferenced handles: they never keep the loop alive;
 *  3. spawns fn(ctx, arg) on a fiber (uvp_main_run) or calls start(ctx,
 *     arg, &p) on the loop thread (uvp_main_run_promise), and runs the
 *     loop until that fiber has returned and its promise has settled (p
 *     has settled);
 *  4. tears down: uvp_ctx_close (what is still pending, a fiber spawned
 *     and not awaited, a request in flight, is cut with UVP_ECLOSED, and
 *     every fiber runs to its end), the loop run until uvp is done with it
 *     (uvp_ctx_close_full), the handles the program left open closed (one
 *     line on stderr names them: they are a leak the program should fix),
 *     the loop run once more, and uv_loop_close, which must return 0;
 *  5. returns the exit status (below).
 * The job's end is the program's end, as with asyncio.run: work the job
 * started and did not wait for is cut, not waited for.  A program that
 * owns its loop (a server embedding uvp, a loop shared with other
 * libraries) keeps making its own: see uvp_ctx_new.
 *
 * Signals.  The first SIGINT or SIGTERM cuts the job: the fiber's promise
 * (p) is cancelled as uvp_promise_cancel cancels it, with a cause of kind
 * UVP_CAUSE_SIGNAL (uvp_promise_cause: "SIGINT received (uvp_main_run at
 * tool.c:12)"), which what the cancellation reaches carries too: the
 * fiber's await returns UV_ECANCELED and the awaited promise says why
 * (uvp_promise_cause(o.promise)).  The fiber goes on running to clean up
 * (uvp_await_shielded), as after any cancellation; the program ends once
 * it has returned.  A second SIGINT or SIGTERM while it cleans up ends the
 * process at once, as many command-line tools do: stdio's buffers are
 * flushed and the process exits (_exit) with 128 + the signal's number
 * (130 for SIGINT), nothing torn down (UVP_MAIN_IGNORE_SECOND: a second
 * signal does nothing, and cleanup runs to its end).  Signals are heard
 * while the loop turns (libuv's signal handles): a handler that holds the
 * loop holds them too.  After the job's end the handles are closed and
 * the signals' dispositions are the process's defaults again.  Windows:
 * Ctrl-C is SIGINT and Ctrl-Break SIGBREAK (libuv reads the console's
 * events), and both cut the job as above; SIGTERM does not exist there
 * as a signal one process sends another (uv_kill with SIGTERM, like
 * TerminateProcess, ends the process without running anything in it), so
 * it is not watched.
 *
 * Exit status, what uvp_main_run returns when the job ran:
 *  - 0: the job's promise fulfilled (its value is released);
 *  - 128 + the signal's number when a signal cut it (130 for SIGINT, 143
 *    for SIGTERM, 149 for Windows' SIGBREAK), whatever the fiber returns
 *    then;
 *  - opts->reject_status (1 unless set) when it rejected otherwise, with
 *    one line on stderr saying with what and, for a cut, why
 *    ("uvp_main_run: the job rejected: ETIMEDOUT (connection timed out);
 *    cut: deadline 2000 ms set at tool.c:30"; UVP_MAIN_QUIET: no line), or
 *    when the loop ran out of work while the job still waited (a promise
 *    nothing will settle: the line says so, followed by the task dump's
 *    summary, uvp_ctx_dump_tasks, of what waits).
 * A negative UV_E* or UVP_E* code says uvp_main_run itself failed (with a
 * line on stderr, but for UV_EINVAL and UVP_EINFIBER): never an exit
 * status, which is 0 to 255.  A main returning it as it is exits non-zero
 * (POSIX keeps its low 8 bits: 234 for UV_EINVAL).
 *
 * Threads.  uvp_main_run runs on the calling thread, which becomes the
 * loop thread; one per thread at a time (several threads may each run
 * one, each with its own loop, every one of them hearing a signal).  Not
 * on a fiber (UVP_EINFIBER): a fiber must not run a loop.
 *
 * UVP_CONSOLE (a console for the running program, by an environment
 * variable) is not read yet: its place is the context's setup in
 * uvp_main_run, so that a program using it gets it without a line of its
 * own. */
/** @{ */

/** The job of uvp_main_run: a fiber's body, given the context uvp_main_run
 * made (valid until the fiber returns, and the loop, uvp_ctx_loop(ctx)),
 * and uvp_main_run's `arg`.  Returns as a fiber does (uvp_ret_value,
 * uvp_ret_reject, uvp_ret_adopt, uvp_ret_pass). */
typedef uvp_ret_t (*uvp_main_fn)(uvp_ctx_t *ctx, void *arg);

/** The job of uvp_main_run_promise: starts the work on the loop thread (not
 * on a fiber) and hands out, in *out, one reference to the promise whose
 * settling ends it (uvp_main_run_promise takes it).  Returns 0, or a
 * negative code: the job failed to start (its status is then
 * opts->reject_status, and a *out it set is released).  0 with *out left
 * NULL: nothing to wait for but the loop's own work; the program ends when
 * uv_run would return (Node's rule), with status 0, or a signal's. */
typedef int (*uvp_main_start_fn)(uvp_ctx_t *ctx, void *arg,
                                 uvp_promise_t **out);

/** Flags of uvp_main_opts_t. */
enum {
  /** Watch no signal: SIGINT and SIGTERM keep their dispositions (the
   * default ends the process at once), for a program that handles them
   * itself or runs where they mean something else. */
  UVP_MAIN_NO_SIGNALS = 1,
  /** A second SIGINT or SIGTERM while the job cleans up does nothing: the
   * job runs its cleanup to its end (default: the second ends the process
   * at once with 128 + its number). */
  UVP_MAIN_IGNORE_SECOND = 2,
  /** No line on stderr for a rejection (the program reports its own
   * errors); uvp's own failures and leftover handles are still said. */
  UVP_MAIN_QUIET = 4
};

/** Options of uvp_main_run and uvp_main_run_promise (NULL: all zero).
 * Zero what you do not set (`uvp_main_opts_t o = {.flags = ...}`): the
 * reserved words are for options of later versions, and a version that
 * does not know one refuses it (UV_EINVAL) rather than ignore it. */
typedef struct uvp_main_opts_s {
  unsigned int flags;    /**< 0, or UVP_MAIN_* flags ORed */
  int reject_status;     /**< the exit status of a rejection, 1 to 255;
                              0: 1 */
  size_t fiber_stack;    /**< the context's default fiber stack, as
                              uvp_ctx_set_fiber_stack; 0: uvp's default */
  int fiber_mode;        /**< UVP_FIBER_DEFAULT (0) or UVP_FIBER_COMPACT, as
                              uvp_ctx_set_fiber_mode */
  uintptr_t reserved[4]; /**< zero */
} uvp_main_opts_t;

/** @name uvp_main_run, uvp_main_run_at
 * @{ */
/** Run fn(ctx, arg) on a fiber of a loop and context made for it, then
 * tear both down, and return the exit status (see "A main for programs
 * that own nothing yet"): 0 when the fiber's promise fulfilled, 128 +
 * signo when a signal cut it, opts->reject_status (1) when it rejected.
 * Blocks until then.  `arg` is the caller's, lent for the call: free it
 * after uvp_main_run returns.  `opts` may be NULL.  The fiber is spawned
 * at the caller's site (the task dump, traces and the signal's cause
 * name it), with the context's stack and mode.
 * Errors (nothing ran unless said): UV_EINVAL (NULL fn, an unknown flag, a
 * reserved word not zero, reject_status out of 0 to 255, a fiber_mode
 * uvp_ctx_set_fiber_mode refuses), UVP_EINFIBER (called on a fiber),
 * UV_ENOMEM, an error of uv_loop_init, uvp_ctx_new or uv_signal_start;
 * and, after the job ran, UV_EBUSY when uv_loop_close still found
 * something in the loop after the last run (the line on stderr says so).
 * A libuv request of the program's own that never completes (nothing can
 * cut one: a read of a terminal through uv_fs_read, say) keeps that last
 * run waiting, as it keeps any uv_run. */
#define uvp_main_run(...) uvp_main_run_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_main_run_at(uvp_main_fn fn, void *arg,
                               const uvp_main_opts_t *opts, const char *file,
                               int line);
/** @} */

/** @name uvp_main_run_promise, uvp_main_run_promise_at
 * @{ */
/** uvp_main_run for a job written with handlers rather than a fiber:
 * start(ctx, arg, &p) is called once the loop and context are made, on
 * the loop thread before the loop runs, and the program ends once p has
 * settled (see uvp_main_start_fn for a start that fails or hands out no
 * promise).  A signal cancels p with its cause, as it cuts a fiber (with
 * no p, it closes the context: what is pending is cut with UVP_ECLOSED).
 * Returns the exit status as uvp_main_run; errors as uvp_main_run's, UV_EINVAL
 * for a NULL start. */
#define uvp_main_run_promise(...)                                              \
  uvp_main_run_promise_at(__VA_ARGS__, __FILE__, __LINE__)
UVP_EXTERN int uvp_main_run_promise_at(uvp_main_start_fn start, void *arg,
                                       const uvp_main_opts_t *opts,
                                       const char *file, int line);
/** @} */
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* UVP_H_MAIN */
