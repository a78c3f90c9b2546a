/* uvp_main_run (uvp/main.h): the frame of a program whose life is one job.
 *
 * It sits above the core and calls only down into it: the public API,
 * plus cause.h to cut the job with a cause of its own kind (a signal),
 * which no public call makes.  Everything it owns (the loop, the context,
 * two signal handles, the record below) lives on its caller's stack for
 * the call's length: there is nothing to free, and a second signal that
 * ends the process at once leaves nothing half-freed either. */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "cause.h"

/* The signals that cut the job.  Windows has no SIGTERM one process sends
 * another (libuv's uv_kill ends the process with TerminateProcess): there
 * the console's Ctrl-Break, SIGBREAK, stands beside Ctrl-C. */
#if defined(_WIN32)
static const int watched[] = {SIGINT, SIGBREAK};
#else
static const int watched[] = {SIGINT, SIGTERM};
#endif
#define N_WATCHED (sizeof(watched) / sizeof(watched[0]))

#define KNOWN_FLAGS                                                            \
  (UVP_MAIN_NO_SIGNALS | UVP_MAIN_IGNORE_SECOND | UVP_MAIN_QUIET)

typedef struct main_s {
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  uv_signal_t sig[N_WATCHED];
  unsigned int nsig; /* handles initialised, to close */
  uvp_main_fn fn;    /* one of fn and start */
  uvp_main_start_fn start;
  void *arg;
  const uvp_main_opts_t *opts; /* never NULL: the zeroes below stand in */
  const char *file;            /* the caller's site */
  int line;
  uvp_promise_t *job; /* ours; NULL: a start that handed out none */
  int heard;          /* the first signal heard, 0: none */
  int cut_signo;      /* the signal whose cut rejected the job, 0: none */
  bool fiber_done;    /* fn has returned, or will never run */
  bool settled;       /* the job's handler has run */
  int status;         /* the exit status, once settled */
  bool closed;        /* uvp_ctx_close_full's callback came */
  bool tearing;       /* in the teardown: a uv_stop now would cut its runs */
} main_t;

static const uvp_main_opts_t no_opts;

/* A line on stderr for what went wrong in uvp_main_run itself. */
static int say(int rc, const char *what) {
  fprintf(stderr, "uvp_main_run: %s: %s (%s)\n", what, uvp_err_name(rc),
          uvp_strerror(rc));
  return rc;
}

static const char *signal_name(int signo) {
  switch (signo) {
  case SIGINT:
    return "SIGINT";
#if defined(_WIN32)
  case SIGBREAK:
    return "SIGBREAK";
#else
  case SIGTERM:
    return "SIGTERM";
#endif
  default:
    return "a signal";
  }
}

static bool done(const main_t *m) { return m->settled && m->fiber_done; }

/* The job is over: uv_run returns (not during the teardown, whose own
 * runs a stray stop would end before their work is done). */
static void stop_if_done(main_t *m) {
  if (done(m) && !m->tearing)
    uv_stop(&m->loop);
}

/* ---- the job ----------------------------------------------------------- */

static uvp_ret_t main_fiber(void *arg) {
  main_t *m = arg;
  return m->fn(m->ctx, m->arg);
}

/* The fiber's arg_free: after fn returned, or when it never will run (cut
 * before it started).  Its promise may have settled long before (a cut
 * settles it at once, and the fiber cleans up after). */
static void fiber_gone(void *arg) {
  main_t *m = arg;
  m->fiber_done = true;
  stop_if_done(m);
}

static void say_rejected(const uvp_outcome_t *in) {
  char why[256];
  const uvp_cause_t *c = uvp_promise_cause(in->promise);
  if (uvp_cause_format(c, why, sizeof(why)) > 0)
    fprintf(stderr, "uvp_main_run: the job rejected: %s (%s); cut: %s\n",
            uvp_err_name(in->status), uvp_strerror(in->status), why);
  else
    fprintf(stderr, "uvp_main_run: the job rejected: %s (%s)\n",
            uvp_err_name(in->status), uvp_strerror(in->status));
}

static int reject_status(const main_t *m) {
  return m->opts->reject_status != 0 ? m->opts->reject_status : 1;
}

static uvp_ret_t on_settled(void *arg, const uvp_outcome_t *in) {
  main_t *m = arg;
  m->settled = true;
  if (m->cut_signo != 0) {
    m->status = 128 + m->cut_signo;
  } else if (in->status == 0) {
    m->status = 0;
  } else {
    if (!(m->opts->flags & UVP_MAIN_QUIET))
      say_rejected(in);
    m->status = reject_status(m);
  }
  stop_if_done(m);
  return uvp_ret_pass();
}

/* Spawns the fiber or calls start; a negative return is uvp's failure
 * (the job did not run), a start's own failure is the job's. */
static int start_job(main_t *m) {
  int rc;
  if (m->fn != NULL) {
    uvp_fiber_opts_t fo = {.arg_free = fiber_gone};
    rc = uvp_fiber_spawn_at(m->ctx, main_fiber, m, &fo, &m->job, m->file,
                            m->line);
    if (rc != 0)
      return say(rc, "the job's fiber could not be spawned");
  } else {
    m->fiber_done = true;
    rc = m->start(m->ctx, m->arg, &m->job);
    if (rc != 0) {
      if (!(m->opts->flags & UVP_MAIN_QUIET))
        fprintf(stderr, "uvp_main_run: the job did not start: %s (%s)\n",
                uvp_err_name(rc), uvp_strerror(rc));
      if (m->job != NULL)
        uvp_promise_release(m->job);
      m->job = NULL;
      m->settled = true;
      m->status = reject_status(m);
      return 0;
    }
    if (m->job == NULL) /* the loop's own work is the job */
      return 0;
  }
  rc = uvp_promise_on(m->job, UVP_ON_BOTH, on_settled, m, NULL);
  return rc != 0 ? say(rc, "the job's promise could not be watched") : 0;
}

/* ---- signals ----------------------------------------------------------- */

/* The first signal: the job's promise cancelled with a cause saying so
 * (cause.h: what the cancellation reaches takes the context's current
 * cause); no job: the loop stops, and the teardown cuts what is pending. */
static void cut(main_t *m, int signo) {
  if (m->job == NULL) {
    m->cut_signo = signo;
    uv_stop(&m->loop);
    return;
  }
  uvp_cause_t proto = {.kind = UVP_CAUSE_SIGNAL,
                       .peer_code = signo,
                       .message = signal_name(signo),
                       .file = m->file,
                       .line = m->line};
  uvp__cause_t *c = uvp__cause_new(&proto, NULL);
  uvp__cause_t *outer = uvp__cause_enter(m->ctx, c);
  m->cut_signo = signo; /* before: the cut may end the fiber at once */
  if (uvp_promise_cancel(m->job) != 0)
    m->cut_signo = 0; /* settled already: its outcome decides */
  uvp__cause_leave(m->ctx, outer);
  uvp__cause_unref(c);
}

static void on_signal(uv_signal_t *h, int signo) {
  main_t *m = h->data;
  if (m->heard == 0) {
    m->heard = signo;
    cut(m, signo);
  } else if (!(m->opts->flags & UVP_MAIN_IGNORE_SECOND)) {
    /* The user asked twice: out now, as many tools do, with what the
     * program printed so far. */
    fflush(NULL);
    _Exit(128 + signo);
  }
}

static int watch_signals(main_t *m) {
  if (m->opts->flags & UVP_MAIN_NO_SIGNALS)
    return 0;
  for (size_t i = 0; i < N_WATCHED; i++) {
    int rc = uv_signal_init(&m->loop, &m->sig[i]);
    if (rc != 0)
      return say(rc, "uv_signal_init");
    m->nsig++;
    m->sig[i].data = m;
    rc = uv_signal_start(&m->sig[i], on_signal, watched[i]);
    if (rc != 0)
      return say(rc, "uv_signal_start");
    uv_unref((uv_handle_t *)&m->sig[i]); /* the job keeps the loop alive */
  }
  return 0;
}

/* ---- teardown ---------------------------------------------------------- */

static void on_closed(uvp_ctx_t *ctx, void *arg) {
  main_t *m = arg;
  (void)ctx;
  m->closed = true;
}

typedef struct leftover_s {
  unsigned int n;
  char names[160];
  size_t len;
} leftover_t;

static void close_leftover(uv_handle_t *h, void *arg) {
  leftover_t *l = arg;
  if (uv_is_closing(h))
    return;
  int w = snprintf(l->names + l->len, sizeof(l->names) - l->len, "%s%s",
                   l->n > 0 ? ", " : "", uv_handle_type_name(h->type));
  if (w > 0 && (size_t)w < sizeof(l->names) - l->len)
    l->len += (size_t)w;
  l->n++;
  uv_close(h, NULL);
}

/* The job has ended (or the loop has nothing left): the context closed
 * and the loop run until uvp is done with it, then the handles the
 * program left open closed (uvp's own are closed by then), the loop run
 * for their close, and closed.  0, or uv_loop_close's error. */
static int teardown(main_t *m) {
  m->tearing = true;
  for (unsigned int i = 0; i < m->nsig; i++)
    uv_close((uv_handle_t *)&m->sig[i], NULL);
  if (m->job != NULL)
    uvp_promise_release(m->job);
  m->job = NULL;
  int rc = uvp_ctx_close_full(m->ctx, on_closed, m);
  if (rc != 0) { /* closed by the program: misuse, said and survived */
    say(rc, "uvp_ctx_close");
    m->closed = true;
  }
  while (!m->closed && uv_run(&m->loop, UV_RUN_ONCE) != 0)
    ;
  leftover_t l = {0};
  uv_walk(&m->loop, close_leftover, &l);
  if (l.n > 0)
    fprintf(stderr,
            "uvp_main_run: the program left %u libuv handle%s open (%s): "
            "closed at exit\n",
            l.n, l.n > 1 ? "s" : "", l.names);
  uv_run(&m->loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(&m->loop);
  if (rc != 0)
    return say(rc, "uv_loop_close: something is left in the loop");
  return 0;
}

static void report_stuck(main_t *m) {
  fprintf(stderr,
          "uvp_main_run: the loop has no work left, and the job started at "
          "%s:%d still waits for a promise nothing will settle:\n",
          m->file, m->line);
  uvp_dump_opts_t d = {.flags = UVP_DUMP_SUMMARY, .stream = stderr};
  int rc = uvp_ctx_dump_tasks(m->ctx, &d); /* how many, or an error */
  if (rc < 0)
    say(rc, "uvp_ctx_dump_tasks");
}

/* ---- the whole --------------------------------------------------------- */

static int check_opts(const uvp_main_opts_t *o) {
  if ((o->flags & ~(unsigned int)KNOWN_FLAGS) != 0 || o->reject_status < 0 ||
      o->reject_status > 255 ||
      (o->fiber_mode != UVP_FIBER_DEFAULT &&
       o->fiber_mode != UVP_FIBER_COMPACT))
    return UV_EINVAL;
  for (size_t i = 0; i < sizeof(o->reserved) / sizeof(o->reserved[0]); i++)
    if (o->reserved[i] != 0)
      return UV_EINVAL;
  return uvp_in_fiber() ? UVP_EINFIBER : 0;
}

/* The context's settings, before anything runs on it.  UVP_CONSOLE (a
 * console for the running program, chosen by the environment) will be
 * read here, so that every program on uvp_main_run has it for free. */
static int setup_ctx(main_t *m) {
  int rc = 0;
  if (m->opts->fiber_stack != 0)
    rc = uvp_ctx_set_fiber_stack(m->ctx, m->opts->fiber_stack);
  if (rc == 0 && m->opts->fiber_mode != UVP_FIBER_DEFAULT)
    rc = uvp_ctx_set_fiber_mode(m->ctx, m->opts->fiber_mode);
  return rc != 0 ? say(rc, "the context's fiber settings") : 0;
}

static int run_main(main_t *m) {
  int rc = uv_loop_init(&m->loop);
  if (rc != 0)
    return say(rc, "uv_loop_init");
  rc = uvp_ctx_new(&m->loop, &m->ctx);
  if (rc != 0) {
    if (uv_loop_close(&m->loop) != 0)
      say(UV_EBUSY, "uv_loop_close");
    return say(rc, "uvp_ctx_new");
  }
  rc = setup_ctx(m);
  if (rc == 0)
    rc = watch_signals(m);
  if (rc == 0)
    rc = start_job(m);
  if (rc == 0 && !done(m)) {
    uv_run(&m->loop, UV_RUN_DEFAULT);
    if (m->job == NULL) /* the loop's own work was the job */
      m->status = m->cut_signo != 0 ? 128 + m->cut_signo : 0;
    else if (!done(m)) {
      report_stuck(m);
      if (!m->settled)
        m->status = m->cut_signo != 0 ? 128 + m->cut_signo : reject_status(m);
    }
  }
  int trc = teardown(m);
  return rc != 0 ? rc : trc != 0 ? trc : m->status;
}

static int main_entry(uvp_main_fn fn, uvp_main_start_fn start, void *arg,
                      const uvp_main_opts_t *opts, const char *file, int line) {
  if (opts == NULL)
    opts = &no_opts;
  int rc = check_opts(opts);
  if (rc != 0)
    return rc;
  main_t m = {.fn = fn,
              .start = start,
              .arg = arg,
              .opts = opts,
              .file = file != NULL ? file : "?",
              .line = line};
  return run_main(&m);
}

int uvp_main_run_at(uvp_main_fn fn, void *arg, const uvp_main_opts_t *opts,
                    const char *file, int line) {
  return fn == NULL ? UV_EINVAL : main_entry(fn, NULL, arg, opts, file, line);
}

int uvp_main_run_promise_at(uvp_main_start_fn start, void *arg,
                            const uvp_main_opts_t *opts, const char *file,
                            int line) {
  return start == NULL ? UV_EINVAL
                       : main_entry(NULL, start, arg, opts, file, line);
}
