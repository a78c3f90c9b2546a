/** @file
 * Debugging: the task dumps, async traces and the context's counters.
 *
 * Part of uvp's public API: a program includes uvp.h, which includes
 * every area header in order (this one alone also compiles).  The
 * model that holds across the areas is at the top of uvp.h.
 */
#ifndef UVP_H_DEBUG
#define UVP_H_DEBUG

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** @defgroup debug Debugging: task dumps, async traces, counters
 *
 * What a program can ask uvp about itself while it runs: the pending
 * promises and the tasks waiting (uvp_ctx_dump_tasks, with scope slots shown
 * through uvp_ctx_set_slot_format), how each
 * promise came to be created (uvp_ctx_set_traces, uvp_promise_trace) and
 * the context's counters (uvp_ctx_stats).  docs/guide-troubleshooting.md
 * shows them at work. */
/** @{ */

/** The version of the task dump's JSON lines (their `"v"` member). */
#define UVP_DUMP_VERSION 1
/** @name uvp_dump_write_cb, uvp_dump_opts_t, uvp_ctx_dump_tasks
 * @{ */
/** The task dump: what a stuck program's tasks wait for, and since when
 * (Go's goroutine dump).  A task is a fiber, a group's member, any other
 * pending promise something waits on (a handler, a combinator, a fiber, a
 * promise that follows it), and every piece of work started and not
 * ended: a uvp operation, timer or timeout, or a binding's record
 * (uvp_inflight_start to uvp_inflight_end), awaited or not (a member may
 * settle and leave it running for the group's join), listed as its
 * promise; when only a fiber's await waits on that promise, the fiber's
 * line names the work instead.  Work whose promise a cut has settled
 * (uvp_promise_cancel, a deadline: the promise rejected at once) but
 * which still winds down (a binding not yet at uvp_inflight_end, a
 * request libuv still runs) stays a task until it has ended, with what
 * cut it; a record uvp could not keep then, for want of memory, is left
 * out.  A call between loops (calls.h) shows on both sides: the caller's
 * promise waits for "call into context 0x..." (the target), and on the
 * target, while fn's promise is followed, a task "call" named "from
 * context 0x..." (the caller) waits for that promise, since fn ran, at
 * the uvp_call_start's site.  For each, one line says: the kind of task,
 * its name (a fiber named by uvp_fiber_set_name) and its promise's
 * address; where it was spawned (a fiber) or created; its age; what it
 * waits for now: for a fiber, the await's site and the awaited promise's
 * description, for a promise its own: a uvp operation's kind and target
 * ("fs.read_file /etc/hosts", "tcp.read 127.0.0.1:80", "dns example.com",
 * "timer" with the time left, "work", "process 1234 /bin/sleep"), a
 * library's own (uvp_inflight_start's class's kind and what its describe
 * writes), the promise it follows, or "program" (a promise the program
 * settles); how long it has waited (a fiber: since its await; a promise:
 * since it was made); its
 * group and the group's parents (named by uvp_group_set_name, if they
 * were); its deadline's time left; its scope's slots, each through the
 * formatter set for it (uvp_ctx_set_slot_format), else as a pointer.
 *
 * flags: UVP_DUMP_JSON (one JSON object a line, described below),
 * UVP_DUMP_SUMMARY (one line of counts by what the tasks wait for, then
 * only the `oldest` oldest tasks, 10 if 0), or, alone, UVP_DUMP_PROMISES:
 * instead of the tasks, every pending promise with its creation site and
 * age, one per line (then its async trace, indented, if it has one: see
 * uvp_ctx_set_traces; a promise of uvp's work or of a binding's record
 * is followed first by `    work: KIND [TARGET] [(LEFT ms left)][; in
 * GROUP [< GROUP]...][; deadline in MS ms]`, as the task dump says the
 * work, and a promise cut but still winding down, a group's join, by
 * `    cut: CAUSE`, as uvp_cause_format writes it); then every record cut
 * whose work still winds down (`[cut] ADDRESS created at FILE:LINE age
 * MS ms refs N, its work winding down`, then its `work:` and `cut:`
 * lines and its trace); then every fiber (`[fiber] ADDRESS "NAME" spawned
 * at FILE:LINE` and `awaiting ADDRESS at FILE:LINE`, or what it does, as
 * the task dump's `state` says it: "not started", "running",
 * "cancelled, running", "ending"), in the spirit of
 * uv_print_active_handles(): the listing of the promises nothing waits on
 * too, which the task dump leaves out (a leak's suspects).  It returns how many
 promises, cut
 * records and fibers it listed.  Lines go to `stream`, or to
 * write(write_arg, text, len) if set (a negative return stops the output
 * and is returned; UV_EAGAIN cuts the dump short, see below).  A line
 * longer than 4 KiB is cut short (text: "..." at its end; JSON: see
 * `cut`).  The summary walks every task, as the
 * full dump does, without writing them: 1 000 000 tasks take tens of
 * milliseconds (docs/internals/groups.md).  Nothing is kept per promise for the
 * dump; only a record of work cut while its work winds down is, from the
 * cut to its end (16 bytes in a per-context hash set, at most half full,
 * which keeps its memory until uvp_ctx_trim).  Loop thread.
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
 * write, unknown flags, UVP_DUMP_PROMISES with another flag),
 * UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM, the sink's error (UV_EIO from
 * fwrite, write(2)'s on a pipe, socket or terminal: UV_EPIPE..., or the
 * callback's negative return; the output stops there).
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
 * on one line, e.g.
 * `fiber "fetch 3" 0x55c0add7b7e0 at app.c:44, 100 ms old, waiting 100 ms
 * at app.c:22 for timer (29900 ms left); in group "fetchers" at app.c:40`;
 * the summary's first line is
 * `N tasks; by what they wait for: KIND COUNT[, KIND COUNT]...`.  The text
 * form is for people: parse the JSON form.
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
 *   pending promise something waits on, or the promise of work started and
 *   not ended, pending or cut while the work winds down), "call" (on a
 *   call's target, a call whose fn gave a promise to follow: calls.h).
 * - `name` (string): only for a fiber named by uvp_fiber_set_name: its
 *   name (1 to 63 printable ASCII bytes, no double quote nor backslash);
 *   for a "call", "from context 0x..." (the calling context).
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
 *   (its `age_ms`); work cut and winding down still has its `waits_for`
 *   (what the work is), and `cause`.  `waits_for` has `kind` (string:
 *   "fs.stat" and every `fs.<op>`, "tcp.connect", "tcp.read", "tcp.write",
 "dns", "timer",
 *   "timeout", "work", "process", "group" (a group's join), "fiber" (a
 *   fiber's promise), "promise" (the promise this one follows),
 *   "program" (a promise only the program settles), "uvp" (one of uvp's
 *   own), "operation", a library's kind (uvp_inflight_start's class:
 *   "HTTP"), or "fulfilled"/"rejected" (a fiber whose awaited promise has
 *   settled, not yet resumed)), `target` (string, maybe empty: the path,
 *   `fd N`, the peer `127.0.0.1:80`, the host, `1234 /bin/sleep` (the pid
 *   and the program's path, its last 197 bytes after "..." when longer),
 *   `"NAME" spawned at FILE:LINE` or `spawned at FILE:LINE` (a fiber),
 *   `created at FILE:LINE` (a promise followed), a library's
 *   description), and `left_ms` (number, integer, only for what has a time
 *   limit: a timer's or a timeout's milliseconds left).
 * - `waits_id` (string): present when the task waits for another
 *   promise (a fiber's await, a handler's): the id (`"0x..."`) of the
 *   promise whose settling it waits for, following a promise that
 *   follows another (up to 8): when that promise is a task itself (a
 *   fiber awaited), its `id`.  Following `waits_id` back gives a task's
 *   async stack: what awaits it, what awaits that, up to the root.
 * - `await` (string): only for a fiber that waits: `"FILE:LINE"` of its
 *   uvp_await.
 * - `busy_us` and `idle_us` (numbers, integers): only for a fiber, while
 *   its context's live console listens (uvp_console_listen): the time it
 *   has run on the CPU, in microseconds, from its resumptions to its
 *   awaits (counted from when the console began listening), and the rest
 *   of its age (parked, or queued to run).  In the text form: `, busy N
 *   us, idle N ms` after its age.
 * - `input_of` (string): present when the task's promise is an input of a
 *   combinator (uvp_promise_all and the others, uvp_map's) still
 *   undecided: the id of the combinator's result, the `waits_id` of a
 *   task that awaits the combinator.  Where no task awaits a task itself,
 *   the async stack goes on through it (its place in the object:
 *   after `idle_us`).
 * - `state` (string): present when the task waits for nothing: "not
 *   started", "running", "cancelled, running", "ending" (a fiber).
 * - `cause` (string): present when the task's promise was cancelled while
 *   the task still runs (a fiber cleaning up, work winding down): who cut
 *   it, as uvp_cause_format writes it ("deadline 2000 ms set at
 *   main.c:88").  In the text form: `; cancelled: ...` after what it waits
 *   for.
 * - `groups` (array of strings): present when the task is in a group, or
 *   is work started for one (an operation, a timer, a binding's record
 *   started in a member): that group first, then each parent
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
  UVP_DUMP_JSON = 1,    /**< one JSON object a line */
  UVP_DUMP_SUMMARY = 2, /**< counts, then the `oldest` oldest tasks */
  UVP_DUMP_PROMISES = 4 /**< alone: every pending promise and fiber */
};
typedef int (*uvp_dump_write_cb)(void *arg, const char *text, size_t len);
/** Options of uvp_ctx_dump_tasks. */
typedef struct uvp_dump_opts_s {
  int flags;               /**< 0, UVP_DUMP_JSON, UVP_DUMP_SUMMARY ORed, or
                                UVP_DUMP_PROMISES */
  FILE *stream;            /**< where the lines go */
  uvp_dump_write_cb write; /**< instead of stream, if not NULL */
  void *write_arg;         /**< write's first argument */
  size_t oldest; /**< with UVP_DUMP_SUMMARY: how many to list; 0: 10 */
} uvp_dump_opts_t;
UVP_EXTERN int uvp_ctx_dump_tasks(uvp_ctx_t *ctx, const uvp_dump_opts_t *opts);
/** @} */

/** Deprecated (0.3.0; goes at the next soname): uvp_ctx_dump_tasks with
 * the flag UVP_DUMP_PROMISES to `stream`, which it calls, with its returns
 * and errors. */
UVP_EXTERN int uvp_ctx_dump_pending(uvp_ctx_t *ctx, FILE *stream);

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
                               member slabs, the run queue, the spare
                               combinator block (see uvp_promise_all) and
                               the blocks of bindings' records
                               (uvp_inflight_start) */
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
 * created (docs/internals/groups.md has the figure).  Frames are interned once
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

/** @defgroup stall Stall detector: what holds the loop
 * @ingroup debug
 * @{
 *
 * Opt-in per context: uvp watches every slice of work it runs on the loop
 * thread and reports each one that holds the loop longer than a
 * threshold.  A slice is one reaction handler (then/catch/finally/on, a
 * combinator's input, a completion of uvp's own operations), one fiber
 * slice (from its resumption to its next park or its end), or one of
 * uvp's own libuv callbacks (the mail from other threads).  Time the loop
 * thread spends outside uvp's work (the program's own callbacks, code
 * between loop turns) is timed too, between uvp's own handles, and
 * reported as "outside uvp" with the loop phase it was in.
 *
 * Each stall is reported twice at most:
 *  - while it still runs, by the context's watchdog thread, once it has
 *    seen it run past the threshold (it looks every threshold/4, at least
 *    every millisecond): `running = 1`, `ms` so far, on the watchdog
 *    thread.
 *    It knows only what uvp keeps current for it (kind, sites, trace):
 *    no slots, no fiber name; nothing is read from the loop thread's
 *    stack and no signal is sent;
 *  - when it ends, by the loop thread: `running = 0`, its length, its
 *    async trace and its scope's slots; whether the watchdog reported it
 *    or not (one it missed has this report only).
 * uvp does not read the clock at every slice's start (only at about one
 * slice in 64, and in its check, idle and prepare callbacks, once a
 * loop turn; the time outside uvp is always timed): the watchdog times
 * the others from its looks.  So a slice whose start was not read is
 * reported once the watchdog has seen it run the threshold, and one
 * that ran past the threshold by less than a look's period
 * (threshold/4) may not be; its length when it ends is counted from the
 * watchdog's last look before it began: at most a period more than it
 * ran.  A watchdog that cannot look (a callback of the program's that
 * blocks it, a thread starved of the CPU) would miss stalls: when the
 * loop thread, at a clock read of its own, finds the watchdog's last
 * look older than the threshold and a period, it reads the clock at every
 * slice's start and end itself from then on (for 16 thresholds, at
 * least 1 s, after the last time it found it behind), and reports each
 * stall when it ends, exactly; the stall during which it first found
 * the watchdog behind goes unreported if its start was not read.
 *
 * Under valgrind the loop thread always times every slice itself (when
 * uvp was built with valgrind's headers, as meson does where it finds
 * them).  valgrind runs one thread at a time: with its default
 * scheduler a busy loop on the loop thread may keep the watchdog from
 * running until the loop ends, so the live report comes late or never;
 * with `--fair-sched=yes` the watchdog looks while the loop runs, as
 * natively.
 * Default report (cb NULL): one line each on stderr, written as the dumps
 * are (never waiting: a full pipe drops it), for example
 *
 *     uvp: stall: handler of the promise made at app.c:31 ran 212 ms;
 *     trace: then at app.c:31 <- fiber at app.c:12; slots 0=req-7
 *
 * (one line; the watchdog's says `has been running for 60 ms (still
 * running)` instead of `ran 212 ms`, and has no slots).  The time from
 * turning the detector on to the loop's first pass through uvp is not
 * timed.  What it can tell of time outside uvp: the time between
 * uvp's check callback (after poll) and its prepare callback (before the
 * next poll) is "timers, idle, pending or closing callbacks" (the
 * program's timers run there) or code outside uv_run; the time between
 * the poll's return (the loop's time) and uvp's check callback is "I/O
 * callbacks after poll" (the program's, or a binding's), reported only
 * when it ends (the watchdog cannot tell it from waiting in poll, which is
 * never a stall).  Between two uv_run calls the loop is not running: that
 * counts as outside uvp too, and a program that leaves the loop for
 * longer than the threshold with the detector on gets a report of it.
 * Which of the program's callbacks it was, uvp cannot know. */

/** What ran. */
enum {
  UVP_STALL_HANDLER = 1, /**< a reaction handler or combinator input */
  UVP_STALL_FIBER,       /**< a fiber's slice */
  UVP_STALL_UVP,         /**< one of uvp's own libuv callbacks */
  UVP_STALL_OUTSIDE      /**< none of uvp's: see `phase` */
};

/** One stall, as the callback of uvp_ctx_set_stall receives it.  Valid
 * during the call only (copy what you keep); every string is NULL when
 * unknown. */
typedef struct uvp_stall_s {
  int kind;               /**< UVP_STALL_* */
  int running;            /**< 1: found by the watchdog while it still runs
                               (`ms` so far); 0: ended (`ms` its length) */
  uint64_t ms;            /**< how long, in milliseconds */
  const char *file;       /**< handler: the creation site of its derived
                               promise (or of its source for uvp_promise_on
                               with no derived promise); fiber: its spawn site */
  int line;               /**< file's line */
  const char *await_file; /**< fiber: the await it resumed from (NULL at
                               its first slice) */
  int await_line;         /**< await_file's line */
  const char *name;       /**< fiber: its name (uvp_fiber_set_name); NULL when
                               running = 1 */
  const char *phase;      /**< UVP_STALL_UVP: which callback ("async"...);
                               UVP_STALL_OUTSIDE: the loop phase */
  const char *text;       /**< the whole report as the default line says it
                               (no newline): trace and slots included */
} uvp_stall_t;

/** Called for each stall report, instead of the line on stderr: on the
 * loop thread when the stall has ended (running = 0), on the context's
 * watchdog thread while it runs (running = 1).  It must not call uvp on
 * the watchdog thread, and should return quickly: uvp_ctx_set_stall(ctx,
 * 0, ...) and uvp_ctx_close wait for a call running there. */
typedef void (*uvp_stall_cb)(void *arg, const uvp_stall_t *stall);

/** Turn the stall detector on for ctx with `threshold_ms` (0: off), or
 * change its threshold or callback (NULL: the line on stderr).  On, ctx
 * has a watchdog thread of its own (one per context: a context is one
 * loop; it sleeps on a condition variable between looks, every
 * threshold/4 ms, at least 1, at most 250), and an unref'd uv_prepare_t
 * of its own in the loop from then on (it keeps nothing alive and is
 * closed by uvp_ctx_close).  Off, no thread exists and every slice
 * costs one predictable branch.  Turning it off joins the thread.  The
 * time from turning it on until the loop first reaches one of uvp's
 * callbacks (at the latest uvp's prepare callback in the loop's next
 * turn) is the program's setup: a stall there is neither reported nor
 * counted in uvp_stall_stats_t, by the loop thread or the watchdog; nor
 * is the time the loop waits in poll.  Loop thread.  Errors: UV_EINVAL (NULL
 * ctx), UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM, or uv_thread_create's error (then
 * it stays off). */
UVP_EXTERN int uvp_ctx_set_stall(uvp_ctx_t *ctx, uint64_t threshold_ms,
                                 uvp_stall_cb cb, void *arg);

/** How many buckets uvp_stall_stats_t's histogram has. */
#define UVP_STALL_BUCKETS 24
/** Slice lengths since the detector was first turned on for the context:
 * a sample of them, and every stall. */
typedef struct uvp_stall_stats_s {
  uint64_t slices; /**< slices of uvp's timed (handlers, fibers, uvp's
                        callbacks): the histogram is a sample, about one
                        slice in 64 and each of uvp's check callbacks,
                        plus each slice reported as a stall */
  uint64_t stalls; /**< of uvp's slices and of the time outside uvp, how
                        many were found past the threshold (each counted
                        once, when it ends) */
  uint64_t max_us; /**< the longest slice of uvp's timed, microseconds
                        (every stall is timed) */
  /** buckets[0]: slices under 1 us; buckets[i] (0 < i < last): from
   * 2^(i-1) us to under 2^i us; the last: 2^(UVP_STALL_BUCKETS - 2) us
   * (about 4.2 s) and longer. */
  uint64_t buckets[UVP_STALL_BUCKETS];
} uvp_stall_stats_t;

/** Fill *out (zeros if the detector was never on; what it counted stays
 * when it is turned off).  Any thread, at any time while ctx is open,
 * once the loop thread's first uvp_ctx_set_stall has returned (ordered
 * by the program): each figure is read atomically, though not all of
 * them at one instant.  Errors: UV_EINVAL (NULL ctx or out). */
UVP_EXTERN int uvp_ctx_stall_stats(const uvp_ctx_t *ctx,
                                   uvp_stall_stats_t *out);
/** @} */

/** @defgroup recorder Flight recorder: what happened before
 * @ingroup debug
 * @{
 *
 * Opt-in per context: uvp keeps the most recent events of the context's
 * tasks in a ring of fixed size (Go's runtime/trace.FlightRecorder: old
 * events are overwritten, nothing grows), and writes what the ring holds
 * on demand, as a timeline a browser opens (Chrome's trace event JSON:
 * https://ui.perfetto.dev, chrome://tracing) or as text lines.  A program
 * writes it when it notices something wrong (uvp_ctx_recorder_write), the
 * stall detector when it reports a stall (uvp_ctx_set_recorder_on_stall).
 *
 * The events, each with its time and the task that ran (a fiber, or the
 * loop's own stack):
 *  - fibers (UVP_RECORD_FIBERS): spawned (site, group), named, parked
 *    (the await's site, the promise awaited and what it is: a uvp
 *    operation's or a binding's kind), resumed (with the await's status),
 *    ended;
 *  - work (UVP_RECORD_WORK): every piece of work through uvp's door
 *    (an operation, a timer, a timeout, a binding's record from
 *    uvp_inflight_start to uvp_inflight_end, a group's join): started
 *    (site, kind, group; an operation's or a binding's description, as
 *    the task dump shows it), its promise settled (status), ended;
 *  - cuts (UVP_RECORD_CUTS): each cause of a cancellation as it is made
 *    (uvp_cause_format's words), then each promise it cuts, linked to it;
 *  - groups (UVP_RECORD_GROUPS): made (site, parent group), named, a
 *    promise added (uvp_group_add); its join is work, above;
 *  - the loop (UVP_RECORD_LOOP): each turn's poll (from uvp's prepare to
 *    its check callback: the wait and the I/O callbacks), uvp's drains of
 *    its run queue, and the settles other threads posted, as the loop
 *    applies them; the time between is the program's own;
 *  - stalls (UVP_RECORD_STALLS): each stall the stall detector reports
 *    when it ends (what ran, how long, and whose it was: the promise
 *    whose handler stalled, or the fiber, with its site).
 *
 * Times.  uvp reads uv_hrtime's clock (CLOCK_MONOTONIC on Linux,
 * mach_absolute_time's on macOS) for every event
 * but two that come by the million: a fiber's hand-off to the next fiber
 * (a park and a resumption in one event, with no trip through the loop)
 * and a group's new member, for which it reads it at one in 64 (a clock
 * read costs about half of a fiber ping-pong's await).  A fiber resumed
 * by the loop, one that parks back to it, and each of the loop's turns
 * read it.  An event that did not is placed between the reads before and
 * after it in proportion to the events between them: its time is known
 * to within the events around it (64 hand-offs of a ping-pong: a few
 * microseconds), unless one of them was long.  A stall the detector
 * reports is a read of its own, and the events before it are placed
 * before it began; UVP_RECORD_EXACT reads the clock at every event.
 *
 * Cost: off, one test of a flag on the paths that record.  On, an event
 * is a 64-byte record written into the ring (no allocation, no system
 * call; a description's bytes copied into a part of the ring of their
 * own, under the same overwrite rule): about 6 % more instructions an
 * await of a fiber ping-pong, nothing for promises settled in waves
 * (docs/internals/diagnostics.md has the figures). */

/** What uvp_ctx_set_recorder records (flags, ORed; 0: all of them). */
enum {
  UVP_RECORD_FIBERS = 1,  /**< spawned, named, parked, resumed, ended */
  UVP_RECORD_WORK = 2,    /**< work started, its promise settled, ended */
  UVP_RECORD_CUTS = 4,    /**< causes of cancellations, and what they cut */
  UVP_RECORD_GROUPS = 8,  /**< groups made, named, promises added */
  UVP_RECORD_LOOP = 16,   /**< the loop's turns, mail from other threads */
  UVP_RECORD_STALLS = 32, /**< the stall detector's reports */
  UVP_RECORD_SPANS = 64,  /**< spans begun and ended (uvp/tracing.h) */
  UVP_RECORD_ALL = 127,   /**< every kind of event above */
  UVP_RECORD_EXACT = 256  /**< a clock read for every event */
};

/** Turn the flight recorder on for ctx with a ring of `bytes` (at least
 * 4096; 0: off, the ring freed), recording the kinds of events `flags`
 * names (UVP_RECORD_*, ORed; 0: UVP_RECORD_ALL).  Called again while on,
 * with the same size it changes only what is recorded (the ring keeps
 * its events); with another size the ring is replaced, empty.  The ring
 * is allocated and its pages touched here (its memory is resident from
 * now on, and recording never faults a page in): 1/8 of it holds the
 * events' strings (descriptions, names, causes, stall reports), the rest
 * 64-byte events (a 64 MiB ring: about 917 000).  Loop thread.  Errors:
 * UV_EINVAL (NULL ctx, bytes from 1 to 4095, unknown flags), UVP_ECLOSED,
 * UVP_ETHREAD, UV_ENOMEM (the recorder stays as it was). */
UVP_EXTERN int uvp_ctx_set_recorder(uvp_ctx_t *ctx, size_t bytes,
                                    unsigned int flags);

/** The forms of uvp_ctx_recorder_write. */
enum {
  UVP_RECORD_JSON = 0, /**< Chrome's trace event format */
  UVP_RECORD_TEXT = 1  /**< a line per event */
};
/** Where and how uvp_ctx_recorder_write writes. */
typedef struct uvp_record_opts_s {
  int format;              /**< UVP_RECORD_JSON or UVP_RECORD_TEXT */
  uint64_t last_ms;        /**< only the events of the last last_ms
                                milliseconds; 0: all the ring holds */
  FILE *stream;            /**< where it goes ... */
  uvp_dump_write_cb write; /**< ... or this, if not NULL */
  void *write_arg;         /**< write's first argument */
} uvp_record_opts_t;

/** Write the events the ring holds (with opts->last_ms, those of the last
 * last_ms milliseconds), oldest first, to opts->stream or opts->write,
 * as uvp_ctx_dump_tasks writes (whole lines), but waiting for a reader
 * that reads: into a pipe, a socket or a terminal it goes as fast as the
 * reader takes it, and only a reader that takes nothing for a second (a
 * pipe nobody reads, a stopped terminal) has the output cut short, the
 * rest dropped and counted in a last line (the JSON is then not whole;
 * a write callback's UV_EAGAIN cuts it the same way).  The ring is left
 * as it was: it keeps recording.  Loop thread; the loop waits while it
 * writes, which allocates about 40 bytes an event held for the write's
 * time (a full 64 MiB ring: 917 504 events, about 290 MB of JSON in a
 * few tenths of a second: docs/internals/diagnostics.md).
 *
 * <b>UVP_RECORD_JSON</b>: one JSON object (Chrome's trace event format, as
 * https://ui.perfetto.dev and chrome://tracing open it), its events an array
 * member `traceEvents`, one event a line.  Strings (descriptions, URLs,
 * subjects, names, causes) are UTF-8 as they were given: valid UTF-8 goes
 * out as it is, JSON's escapes only where JSON requires them (a control byte
 * as `\u00XX`, the quote, the backslash), and a byte that is no part of
 * valid UTF-8 as `\ufffd` (U+FFFD), so that any bytes give valid JSON.  (The
 * task dump's JSON escapes every byte from 0x7f instead.)  Process 1 is the
 * context; its threads (tracks, by `tid`, named by `thread_name` metadata
 * events) are the loop (tid 1: slices "poll", "I/O callbacks" and "uvp",
 * instants for the mail of other threads, a cancellation's cause and what it
 * cut), the stall detector's reports (tid 2: a slice "stall" each, its
 * `args` the `report`, `ms`, the culprit's `site` and `promise` (a
 * handler's) or `fiber` (the fiber's id), as the stall detector's report
 * names it) and each fiber (tid 3 and up: a slice "fiber" spanning its life,
 * and inside it "run" and "await KIND"); work is async slices (`ph` "b" and
 * "e", `cat` "work", `name` its kind: a track per kind), a group an async
 * slice from its making to its join's end (`cat` "group").  Every event's
 * `args` say its `site` ("FILE:LINE") where it has one, and what else is
 * known (`target`, `group`, `status`, `cut`, `cause`, `promise`: addresses
 * as the task dump's ids).  Flow events (`ph` "s" and "f", `cat` "cause",
 * "spawn" or "stall"; `id` a hex number, "0x" and 16 digits, as Perfetto
 * reads a flow's) link a cause to each task it cut, a spawn to the fiber
 * spawned, and a stall to its culprit's track (the fiber's run that stalled,
 * or the loop's for a handler).  A span (uvp/tracing.h) is an async slice
 * of `cat` "span", `name` its name and `id` "0x" and its span id; its
 * beginning's `args` say `trace_id` (32 hex digits), `span_id` (16),
 * `parent_id` (16; absent for a root), `flags` (2) and `kind` ("client",
 * "server", "internal", "producer", "consumer"), its end's `status`; a
 * span whose beginning was overwritten is not written.  A call between
 * loops (calls.h) is a flow of `cat` "call" from the caller's context's
 * file (`ph` "s", where uvp_call_start ran; `args`: `into` the target
 * context, `promise` the call's) to the target's (`ph` "f", where its fn
 * runs; `args`: `from` the caller's context, `work` the call): each
 * context writes its own file, and the flow's `id`, also in both sides'
 * `args.call`, is made from the caller's context and the call's number
 * there (`args.number`), the same in both files.  A slice whose beginning
 * was overwritten (or
 * is older than last_ms) begins at the first event written (its `args` say
 * `"cut_off":true`); one still open at the write ends at the write
 * (`"open":true`); every begin has its end, and no event's time goes back on
 * its track.  `ts` are microseconds from `otherData`'s `ts_origin_ns`
 * (uv_hrtime's clock), one second before the first event;
 * `otherData` also says how many events were written (`events`) and how many
 * the ring had overwritten (`overwritten`), the wall clock's time at
 * `ts_origin_ns` (`wall_origin_ns`, ns since the epoch, to a microsecond)
 * and the process's id (`pid`).
 *
 * <b>UVP_RECORD_TEXT</b>: a line per event, `SECONDS.MICROS TRACK: WHAT`
 * (uv_hrtime's clock; a `~` after the time when it is the last clock read's,
 * the event came later), e.g. `12.004511 fiber 0x55c0add7b7e0: parked at
 * app.c:22 awaiting 0x55c0add7c1a0`.  For people: parse the JSON form.
 *
 * Returns the number of events written; UV_EAGAIN if the output was cut
 * short; UV_EINVAL (NULL ctx or opts, neither stream nor write, unknown
 * format), UVP_ECLOSED, UVP_ETHREAD, UV_ENOENT (the recorder is off),
 * UV_ENOMEM, or the sink's error, as uvp_ctx_dump_tasks'. */
UVP_EXTERN int uvp_ctx_recorder_write(uvp_ctx_t *ctx,
                                      const uvp_record_opts_t *opts);

/** Have the recorder written, as uvp_ctx_recorder_write(ctx, opts) would,
 * each time the stall detector reports a stall that has ended (on the
 * loop thread, after its report; a stall the watchdog reports while it
 * runs is written when it ends): the events before the stall and the
 * stall itself.  Set opts->last_ms (2000, say) for the seconds before
 * it; each stall writes a whole JSON object (a stream gets one after the
 * other: a callback can open a file per stall).  opts is copied (NULL:
 * no more); its stream must stay open while it is set.  Does nothing
 * while the recorder or the detector is off.  Loop thread.  Errors:
 * UV_EINVAL (NULL ctx, neither stream nor write, unknown format),
 * UVP_ECLOSED, UVP_ETHREAD, UV_ENOMEM. */
UVP_EXTERN int uvp_ctx_set_recorder_on_stall(uvp_ctx_t *ctx,
                                             const uvp_record_opts_t *opts);

/** What the recorder holds (uvp_ctx_recorder_stats). */
typedef struct uvp_recorder_stats_s {
  size_t bytes;       /**< the ring's size, as asked for (0: off) */
  size_t capacity;    /**< how many events it holds at most */
  uint64_t events;    /**< events recorded since it was turned on */
  uint64_t kept;      /**< of those, how many it holds now */
  uint64_t str_bytes; /**< string bytes recorded since it was turned on */
} uvp_recorder_stats_t;
/** Fill *out (zeros while off).  Loop thread.  Errors: UV_EINVAL (NULL
 * ctx or out), UVP_ETHREAD. */
UVP_EXTERN int uvp_ctx_recorder_stats(const uvp_ctx_t *ctx,
                                      uvp_recorder_stats_t *out);
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* UVP_H_DEBUG */
