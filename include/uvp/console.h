/** @file
 * The live console: a running program's tasks, served on a Unix socket
 * for `uvp-console` (tokio-console's model for libuv programs).
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 */
#ifndef UVP_H_CONSOLE
#define UVP_H_CONSOLE

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup console Live console: watch a running program's tasks
 * @ingroup debug
 * @{
 *
 * A program opts in per context with uvp_console_listen(ctx, path): the
 * context's own loop then serves a Unix socket at `path` (file mode 0600;
 * a connection is accepted only from a process of the same effective user,
 * checked with SO_PEERCRED or getpeereid; there is no network listener).
 * `uvp-console PATH` attaches to it and shows the tasks live.  A program
 * that never calls it pays nothing: no handle, no thread, no branch on a
 * hot path.  Listening with no client attached costs one unreferenced
 * pipe handle in the loop, which never wakes it.
 *
 * The protocol is lines of text, a request a line (at most 255 bytes and
 * its newline), an answer a line:
 * @verbatim
 *   snapshot json            one JSON document, on one line (below)
 *   snapshot json recorder   the same, with the flight recorder's last
 *                            events (costs a pass over the ring's last
 *                            250 ms: asked for only when shown)
 *   ping                     pong
 *   anything else            error unknown command
 * @endverbatim
 * The document: `{"console":1,"pid":N,"program":"NAME","ctx":"0x...",
 * "now_ms":N,"panel":{...},"tasks":[...],"warnings":[...],"cut":false}`.
 * `tasks` holds the task dump's JSON objects (uvp_ctx_dump_tasks with
 * UVP_DUMP_JSON: the same walk, the same members, the same ids);
 * `panel` holds `summary` (the dump's UVP_DUMP_SUMMARY object: the
 * tasks counted by what they wait for), `stall` (`threshold_ms`, 0 while
 * the stall detector is off, `stalls`, `max_us`: uvp_ctx_stall_stats) and
 * `recorder` (`events`, `kept`; `last`, the last 16 events' text lines,
 * when asked for); `cut` is true when the document reached its cap (2 MiB)
 * and the task list was cut short.  `warnings` are computed here, where
 * the data is, each an object with `kind`, `task` (what it is, with its
 * name), `id` (the task dump's id, when the task is still there), `site`
 * (where it was made), `why` and kind-specific figures:
 *  - `busy`: a fiber (or a handler) ran longer than the stall detector's
 *    threshold between two awaits; one for each of the last 8 stall
 *    reports made in the last 60 s (`ms`, `ago_ms`, `await`: the await it
 *    resumed from).  Needs the stall detector on (uvp_ctx_set_stall).
 *  - `cancelled-running`: a fiber cancelled (it has a cause) still running
 *    1 s after a snapshot first saw it cancelled (`cause`, `for_ms`):
 *    counted from the first snapshot that saw it, so from the moment a
 *    console looked.
 *  - `group-idle`: a group whose members all ended (none running or
 *    waiting to start) that was never closed, released nor joined
 *    (nothing waits for its join), 1 s after a snapshot first saw it so
 *    (`for_ms`): its join never settles.  A group kept open on purpose
 *    for work to come (a server's connections, idle) is warned of too.
 *  - `call-stuck`: a task waits for a call (uvp_call_start) that its
 *    target context has left in its mailbox for 1 s or more, the dump's
 *    "whose loop has not run": the target's loop is not running (never
 *    run, its uv_run returned) or is blocked (`call`: the call's promise,
 *    `target`: the target context, `ms`: how long; `site`: where the call
 *    was made).  The call waits without bound unless a deadline cuts it.
 *  - `never-settles`: a task waits for a promise that nothing can settle
 *    any more: a then's result (or a promise resolved with another) whose
 *    source was let go, its last reference released, while still pending,
 *    directly or through the promises it follows (`promise`: the one that
 *    lost its source, `site`: where it was made, `await`: a fiber's
 *    await).  Only a cancel or the context's close ends that wait.  At
 *    once, no grace: the state does not come and go.
 *
 * Not warned of: a promise the program settles (uvp_promise_new's) that
 * nobody holds any more but the tasks that wait for it (whoever holds it
 * can settle it, and uvp cannot tell a waiter's reference from another);
 * a combinator one of whose inputs was let go pending (another input may
 * still settle it).
 *
 * While a context listens, its fibers' time is counted: each switch to or
 * from a fiber reads the clock once (uv_hrtime: no system call where the
 * vDSO serves it; nothing allocated), and the tasks' objects of the
 * document (and of uvp_ctx_dump_tasks) carry `busy_us` and `idle_us` for
 * each fiber (uvp/debug.h).  A fiber's slices before the context listened
 * are not counted: its idle time, the rest of its age, holds them.
 *
 * A client cannot hold the loop or grow the program's memory: at most 8
 * clients (a ninth is closed at once); a request line longer than 255
 * bytes is answered with an error and the connection closed; a client is
 * read only while no answer of its is waiting to be sent (a flood of
 * requests waits in the client's own socket, not in the program), and
 * answered at most once every 10 ms; an answer not taken within 5 s
 * closes the client; 16 bad requests close it.  Each answer is one walk
 * of the tasks (as a dump), at most 2 MiB.
 *
 * Several contexts (one loop per core): each listens on a path of its
 * own, and `uvp-console` attaches to several paths at once and shows
 * their tasks together, with a column for the context.  A path one
 * context listens on cannot be taken by another (UV_EADDRINUSE): each
 * context's socket is served on that context's loop thread, so no
 * thread ever reads another loop's tasks. */

/** Serve ctx's live console on a Unix socket at `path` (a file system
 * path; created with mode 0600, replacing a stale socket no process
 * listens on any more, and removed by uvp_console_close).  The socket
 * and its clients are handles of ctx's loop, unreferenced (they keep the
 * loop alive only while an answer is being written), closed by
 * uvp_console_close or uvp_ctx_close (run the loop once more after, as
 * for uvp's other handles).  path is copied.  Loop thread.
 * Errors: UV_EINVAL (NULL ctx or path, empty path), UVP_ETHREAD,
 * UVP_ECLOSED, UV_EBUSY (ctx already listens: close first),
 * UV_ENAMETOOLONG (longer than a socket address holds), UV_EADDRINUSE
 * (a live listener, or a file that is not a socket, is at path),
 * UV_ENOTSUP (a platform with no way to check a peer's user: Windows),
 * UV_ENOMEM, or libuv's error binding or listening (then nothing is left
 * open). */
UVP_EXTERN int uvp_console_listen(uvp_ctx_t *ctx, const char *path);

/** Stop serving ctx's console: the socket is closed and its file removed
 * (if it is still the one made), every client is closed.  Loop thread.
 * Errors: UV_EINVAL (NULL ctx), UVP_ETHREAD, UVP_ECLOSED (the context
 * closed it already), UV_ENOENT (not listening). */
UVP_EXTERN int uvp_console_close(uvp_ctx_t *ctx);
/** @} */

#ifdef __cplusplus
}
#endif

#endif
