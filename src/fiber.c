/* Fibers: functions that await promises on stacks of their own, inside the
 * loop the user runs (the contract is in uvp.h).
 *
 * A fiber lives at the top of its own stack (fiber-stack.h): spawning one
 * takes a pooled stack and a promise, nothing else.  It is switched to
 * from the loop thread's own stack (the run queue's drain, or
 * uvp_ctx_close), or by a fiber that suspends and hands off to it
 * (handoff), and it suspends into the next fiber it hands off to or back
 * to the loop's stack, saved in the context's fiber state: no fiber waits
 * for another to switch back to it, so there is no chain of suspended
 * switches to unwind.
 *
 * Each fiber has one embedded reaction, `wake`, in one of four uses at a
 * time: queued to start the fiber; on the promise it awaits; queued to
 * resume it after an await of a promise already settled (a yield); queued
 * to resume it with UV_ECANCELED.  What the fiber is told on waking is
 * decided by its state when the reaction runs, not by who queued it. */
#include <string.h>

#include <stdio.h>
#include <stdlib.h>

#include "alloc.h"
#include "deadline.h"
#include "fiber-compact.h"
#include "recorder.h"
#include "site.h"
#include "stall.h"
#include "tasks.h"
#include "trace.h"

#define MIN_STACK (16u * 1024u)

/* The record and the state are in fiber-compact.h, which the compact mode
 * (fiber-compact.c) reads too; fiber.c calls that mode the same way in
 * every build. */
typedef uvp__fiber_t fiber_t;
typedef uvp__fiber_state_t fiber_state_t;

enum { F_QUEUED, F_RUNNING, F_SUSPENDED, F_DONE };

static fiber_state_t *state_of(uvp_ctx_t *ctx);
static void fiber_tasks(uvp__ext_t *ext, uvp__task_sink_t *sink);
static void on_cancel(uvp__work_t *w, uvp_promise_t *p, int code);
static void fiber_describe(const uvp__work_t *w, uvp__what_t *out);
static const uvp__work_class_t fiber_class = {
    on_cancel, fiber_describe, "fiber",
    UVP__WORK_IDLE | UVP__WORK_UNOWNED | UVP__WORK_TASK |
        UVP__WORK_NOT_IN_LOOP};

/* What a cancelled fiber's awaits say. */
static int cancel_code(const fiber_t *f);

/* The fiber running on this thread, NULL on the loop's own stack. */
static UVP__TLS fiber_t *uvp__fiber_current;

static void unlink_fiber(fiber_t *f) {
  fiber_state_t *st = f->st;
  if (f->prev != NULL)
    f->prev->next = f->next;
  else
    st->all = f->next;
  if (f->next != NULL)
    f->next->prev = f->prev;
  st->count--;
}

static void entry(void *arg, void *msg);

/* f has returned, or will never start: nothing switches to or from its
 * stack again.  Its scope goes, then the stack (f's record with it). */
static void free_stack(fiber_t *f) {
  fiber_state_t *st = f->st;
  uvp__stack_t *stack = uvp__fiber_stack(f);
  if (UVP__UNLIKELY(f->name != NULL)) { /* unnamed ones: no call */
    uvp__free(f->name);
    f->name = NULL;
  }
  uvp__scope_unref(f->scope);
  uvp__fiber_destroy(&f->fctx);
  if (UVP__UNLIKELY(f->compact)) {
    uvp__compact_free(f);
    return;
  }
  uvp__stack_put(&st->stacks, stack);
}

/* f is about to be switched to: it is the running fiber, in its scope. */
static void enter(fiber_t *f) {
  uvp__fiber_current = f;
  uvp__close_refused = UVP_EINFIBER; /* it would free the stack it runs on */
  f->state = F_RUNNING;
  uvp__head(f->st->ctx)->scope = f->scope;
  uvp__head(f->st->ctx)->trace = f->trace;
}

/* With the stall detector on, f's slice begins (stall.h): clock false
 * when the drain has just begun timing the wake that runs it.  Inline:
 * most marks store f's words and nothing else. */
static UVP__NOINLINE void stall_slice_slow(fiber_t *f, bool counted) {
  uvp__site_at_t at = uvp__site_known(f->p->site);
  uvp__site_at_t aw = uvp__site_known(f->await_site);
  uvp__slice_t s = {UVP_STALL_FIBER, 0,       f->trace, at.file,  at.line,
                    aw.file,         aw.line, f->name,  f->scope, NULL};
  if (counted)
    uvp__stall_mark_counted(f->st->ctx, &s);
  else
    uvp__stall_mark(f->st->ctx, &s, false);
  /* After the mark, which may report the slice before. */
  uvp__stall_hot(f->st->ctx)->culprit = f->p;
}
static UVP__ALWAYS_INLINE void stall_slice(fiber_t *f, bool clock) {
  uvp__stall_hot_t *h = uvp__stall_hot(f->st->ctx);
  if (!clock || UVP__UNLIKELY(!uvp__stall_quick(h, (uintptr_t)f->scope |
                                                       (uintptr_t)f->name))) {
    stall_slice_slow(f, clock);
    return;
  }
  uvp__site_at_t at = uvp__site_known(f->p->site);
  uvp__site_at_t aw = uvp__site_known(f->await_site);
  unsigned s = uvp__stall_open(h);
  uvp__stall_fiber_words(h, f->trace, at.file, at.line, aw.file, aw.line);
  uvp__stall_close(h, s);
  h->culprit = f->p;
}

/* With the live console's times on (UVP__WATCH_TIME): f parks, its slice
 * ends, and the next one's (a fiber's, or the loop's) begins.  One clock
 * read (uv_hrtime: the vDSO's, no system call), nothing allocated. */
static UVP__NOINLINE void time_park(fiber_t *f) {
  /* busy_ns is the word a compact fiber keeps its start's fp state in
   * until its first run (fiber-compact.h): a fiber that parks has run. */
  UVP__CHECK(!f->compact || f->started);
  fiber_state_t *st = f->st;
  uint64_t now = uv_hrtime();
  if (st->slice_at != 0 && now > st->slice_at)
    f->busy_ns += now - st->slice_at;
  st->slice_at = now;
}

/* Switch from the loop's stack to f.  Returns when a fiber switches back
 * to the loop: f, or one that f (or a fiber after it) handed off to. */
static void run(fiber_t *f) {
  fiber_state_t *st = f->st;
  uvp_ctx_t *ctx = st->ctx;
  uvp__scope_t *was = uvp__head(ctx)->scope;
  uint16_t was_trace = uvp__head(ctx)->trace;
  bool starts = f->state == F_QUEUED;
  enter(f);
  if (UVP__UNLIKELY(uvp__head(ctx)->watch)) {
    if (uvp__head(ctx)->watch & UVP__WATCH_STALL)
      stall_slice(f, false);
    if (uvp__head(ctx)->watch & UVP__WATCH_TIME)
      st->slice_at = uv_hrtime();
    if (uvp__head(ctx)->watch & UVP__WATCH_REC)
      uvp__rec_resume(ctx, f->p, starts ? 0 : f->woken_status, starts);
  }
  if (UVP__UNLIKELY(f->compact))
    uvp__compact_unpark(f, entry);
  fiber_t *last = uvp__fiber_switch(&st->loop, &f->fctx, NULL);
  /* It saved its scope (a reference) in last->scope as it left. */
  uvp__fiber_current = NULL;
  uvp__close_refused = 0;
  uvp__head(ctx)->scope = was;
  uvp__head(ctx)->trace = was_trace;
  if (last->state == F_DONE)
    free_stack(last); /* its last switch is behind it */
  else if (UVP__UNLIKELY(st->park_at_once) && last->compact)
    uvp__compact_park(last); /* under ASan: poisoned while it waits */
}

static void let_go_of_arg(fiber_t *f) {
  uvp_free_cb arg_free = f->arg_free;
  f->arg_free = NULL;
  if (arg_free != NULL)
    arg_free(f->arg);
}

/* The fiber is going while its promise may still be pending (teardown):
 * the sweep rejects it later, and its hook must not reach the fiber's
 * record, gone with its stack. */
static void forget_fiber(uvp_promise_t *p) {
  if (uvp__is_pending(p))
    uvp__produced_forget(p);
}

/* Drop a reference the fiber held, on the loop thread. */
static UVP__ALWAYS_INLINE void drop_ref(const fiber_t *f, uvp_promise_t *q) {
  if (UVP__LIKELY(!uvp__closed(f->st->ctx)))
    uvp__unref_open(q);
  else
    uvp__unref(q);
}

/* The fiber's own stack: run the body, settle, switch away for good. */
static void entry(void *arg, void *msg) {
  fiber_t *f = arg;
  (void)msg;
  uvp_ret_t ret = f->fn(f->arg);
  uvp_promise_t *p = f->p;
  uvp__settle_ret(p, &ret); /* or let go of ret: p cancelled, or teardown */
  if (uvp__recording(f->st->ctx))
    uvp__rec_fiber_end(f->st->ctx, p);
  if (f->waiting != NULL) { /* its last take's */
    drop_ref(f, f->waiting);
    f->waiting = NULL;
  }
  forget_fiber(p);
  let_go_of_arg(f);
  unlink_fiber(f);
  f->state = F_DONE;
  f->p = NULL;
  uvp__unref(p); /* the fiber's reference */
  f->scope = uvp__head(f->st->ctx)->scope;
  uvp__fiber_exit(&f->fctx, &f->st->loop, f);
}

/* Suspended f, woken, is told of its cancellation instead, if it was
 * cancelled and is not shielded. */
static UVP__ALWAYS_INLINE void woken_cut(fiber_t *f) {
  if (f->cancelled && !f->shielded) {
    f->woken_status = cancel_code(f);
    f->woken_value = NULL;
  }
}

/* What f's wake reaction does before f runs (in == NULL: the reaction was
 * dropped by teardown).  Returns whether f is to run now. */
static UVP__ALWAYS_INLINE bool wake(fiber_t *f, const uvp_outcome_t *in) {
  if (f->state == F_QUEUED) {
    if (in == NULL || uvp__closed(f->st->ctx) ||
        f->cancelled) { /* never runs */
      uvp_promise_t *p = f->p;
      forget_fiber(p);
      let_go_of_arg(f);
      unlink_fiber(f);
      f->state = F_DONE;
      free_stack(f);
      uvp__unref(p);
      return false;
    }
    return true;
  }
  if (in == NULL)
    return false; /* teardown: uvp_ctx_close resumes it (fiber_close) */
  /* The awaited promise's, settled or pending-no-more, unless cut. */
  UVP__CHECK(in->promise == f->waiting || f->cancelled);
  f->woken_status = in->status;
  f->woken_value = in->value;
  woken_cut(f);
  return true;
}

static void on_wake(void *arg, const uvp_outcome_t *in) {
  fiber_t *f = arg;
  if (wake(f, in))
    run(f);
}

/* The hand-off: when the next reaction the drain would run is another
 * fiber's wake that will run it, the suspending fiber takes it and
 * switches there directly.  The drain would have done the same one switch
 * later (the same reaction, in the same order, counted against its
 * budget); going through the loop's stack costs a second switch and, worse,
 * unbalances the return predictor twice (bench/fiber-pingpong: 54 ns per
 * await through the drain, see docs/internals/fibers.md).  Only fibers that
 * will run are taken, so nothing but a fiber's start or resumption ever runs on
 * another fiber's stack. */
static UVP__ALWAYS_INLINE fiber_t *handoff(fiber_state_t *st,
                                           const fiber_t *self) {
  fiber_t *g = uvp__next_embedded(st->ctx, on_wake);
  if (g == NULL || (g->state == F_QUEUED && g->cancelled) ||
      (UVP__UNLIKELY(g->compact | self->compact) && g != self))
    return NULL;
  /* As wake(g) would (the await open: no teardown), with the outcome
   * stored straight into g: an outcome on this stack would be part of
   * every parked fiber's frames. */
  UVP__CHECK(!uvp__closed(st->ctx));
  if (g->state == F_QUEUED) {
    uvp__take_embedded(st->ctx, NULL, NULL);
  } else {
    uvp__take_embedded(st->ctx, &g->woken_status, &g->woken_value);
    woken_cut(g);
  }
  return g;
}

/* The fiber's promise was cancelled, or torn down (then fiber_close
 * resumes it).  Runs inside uvp_promise_cancel: the fiber is resumed from
 * the run queue, never here. */
static int cancel_code(const fiber_t *f) {
  return f->timed_out ? UV_ETIMEDOUT : UV_ECANCELED;
}

static void on_cancel(uvp__work_t *w, uvp_promise_t *p, int code) {
  fiber_t *f = UVP__CONTAINER_OF(w, fiber_t, work);
  (void)p;
  if (code == UVP_ECLOSED)
    return; /* torn down: fiber_close resumes it.  Any other code is a
               cancellation (uvp_promise_cancel_with may give any) */
  f->cancelled = true;
  f->timed_out = code == UV_ETIMEDOUT;
  if (f->shielded)
    return; /* it waits on: see uvp_await_shielded */
  if (f->state != F_SUSPENDED || f->waiting == NULL ||
      !uvp__is_pending(f->waiting))
    return; /* a queued wake will say UV_ECANCELED */
  uvp_promise_t *q = f->waiting;
  if (uvp__only_observer(q, f)) {
    /* uvp_promise_cancel's rule: nobody else waits for q.  Its rejection
     * wakes the fiber. */
    (void)uvp_promise_cancel(q);
    return;
  }
  (void)uvp__unobserve(q, &f->wake.r);
  uvp__enqueue_embedded(f->p, &f->wake, on_wake, f);
}

/* The scope a fiber spawned now runs in: the current one, or one with its
 * own deadline (NULL: no memory). */
static bool fiber_scope(uvp_ctx_t *ctx, const uvp_fiber_opts_t *opts,
                        uvp__scope_t **out, const char *file, int line) {
  *out = uvp__scope_capture(ctx);
  if (opts == NULL || opts->deadline_ms == 0)
    return true;
  uvp__scope_t *s = uvp__scope_within(ctx, *out, opts->deadline_ms, file, line);
  uvp__scope_unref(*out);
  *out = s;
  return s != NULL;
}

/* A fiber's record and stack: compact (the context's way, and no stack
 * size asked for), else a stack of its own with the record at its top.
 * *top is that record's address (0: compact). */
static int fiber_alloc(fiber_state_t *st, size_t size, const char *file,
                       int line, fiber_t **out, uintptr_t *top) {
  *top = 0;
  if (UVP__UNLIKELY(st->mode == UVP_FIBER_COMPACT) && size == 0)
    return uvp__compact_new(st, out);
  uvp__stack_t *stack;
  int rc = uvp__stack_get(&st->stacks, size, &stack);
  if (rc != 0)
    return rc;
  /* The fiber's record at the top of its stack, 16-byte aligned below. */
  *top =
      ((uintptr_t)stack->base + stack->size - sizeof(fiber_t)) & ~(uintptr_t)15;
  fiber_t *f = (fiber_t *)*top;
  memset(f, 0, sizeof(*f));
  f->fctx.stack = stack;
  stack->file = file; /* the overflow reports name the fiber so */
  stack->line = line;
  *out = f;
  return 0;
}

/* The stack size asked for, with room for the fiber's record, saturating:
 * a size near SIZE_MAX must fail to map (UV_ENOMEM), not wrap round to a
 * tiny stack.  0: the default. */
static size_t fiber_stack_size(const uvp_fiber_opts_t *opts) {
  size_t size = opts != NULL ? opts->stack_size : 0;
  if (size == 0)
    return 0;
  if (size < MIN_STACK)
    size = MIN_STACK;
  return size > SIZE_MAX - sizeof(fiber_t) ? SIZE_MAX : size + sizeof(fiber_t);
}

/* Its context of execution: on its stack, below its record; a compact
 * one's as the compact mode decides (at its spawn or its first run). */
static void fiber_context(fiber_t *f, uintptr_t top) {
  uvp__stack_t *stack = uvp__fiber_stack(f);
  if (UVP__UNLIKELY(f->compact)) {
    uvp__compact_spawned(f, entry);
    return;
  }
  uvp__fiber_init(&f->fctx, stack->base, top - (uintptr_t)stack->base, entry,
                  f);
  uvp__fiber_watch(&f->fctx, stack);
}

int uvp_fiber_spawn_at(uvp_ctx_t *ctx, uvp_fiber_fn fn, void *arg,
                       const uvp_fiber_opts_t *opts, uvp_promise_t **out,
                       const char *file, int line) {
  return uvp__refuse(uvp__fiber_spawn(ctx, fn, arg, opts, out, file, line), arg,
                     opts != NULL ? opts->arg_free : NULL);
}

int uvp__fiber_spawn(uvp_ctx_t *ctx, uvp_fiber_fn fn, void *arg,
                     const uvp_fiber_opts_t *opts, uvp_promise_t **out,
                     const char *file, int line) {
  int rc = fn == NULL ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  fiber_state_t *st = state_of(ctx);
  if (st == NULL)
    return UV_ENOMEM;
  uvp__scope_t *scope;
  if (!fiber_scope(ctx, opts, &scope, file, line))
    return UV_ENOMEM;
  fiber_t *f;
  uintptr_t top;
  rc = fiber_alloc(st, fiber_stack_size(opts), file, line, &f, &top);
  if (rc != 0) {
    uvp__scope_unref(scope);
    return rc;
  }
  f->st = st;
  /* Watched by its own scope's deadline, which may be its own. */
  if (uvp__work_start_in(ctx, scope, &f->work, &fiber_class, file, line) != 0) {
    if (f->compact)
      uvp__compact_free(f);
    else
      uvp__stack_put(&st->stacks, uvp__fiber_stack(f));
    uvp__scope_unref(scope);
    return UV_ENOMEM;
  }
  f->fn = fn;
  f->arg = arg;
  f->arg_free = opts != NULL ? opts->arg_free : NULL;
  f->state = F_QUEUED;
  f->scope = scope;
  if (uvp__head(ctx)->traces) /* the fiber's promise names the fiber */
    f->p->trace = uvp__trace_intern(ctx, f->p->site, UVP__TK_FIBER,
                                    uvp__head(ctx)->trace);
  f->trace = f->p->trace;
  fiber_context(f, top);
  f->next = st->all;
  if (st->all != NULL)
    st->all->prev = f;
  st->all = f;
  st->count++;
  uvp__enqueue_embedded(f->p, &f->wake, on_wake, f);
  if (out != NULL)
    *out = f->p;
  else /* nobody waits for it: the fiber's own reference is all it has */
    uvp__unref(f->p);
  return 0;
}

/* The recorder's park of f and resumption of next (NULL: the loop's
 * stack). */
static UVP__NOINLINE void rec_switch(const fiber_t *f, const fiber_t *next) {
  uvp__site_at_t at = uvp__site_known(f->await_site);
  bool starts = next != NULL && next->state == F_QUEUED;
  uvp__rec_switch(uvp__rec_hot(f->st->ctx), f->p, f->waiting, at.file, at.line,
                  next != NULL ? next->p : NULL,
                  next != NULL && !starts ? next->woken_status : 0, starts);
}

/* Suspend the running fiber until its wake runs; returns what it said.
 * Inline in every await: a call here cost the ping-pong 4 % more
 * instructions.  A take's promise stays in f->waiting, for its outcome. */
static UVP__ALWAYS_INLINE int suspend(fiber_t *f, uvp_outcome_t *out,
                                      bool take) {
  fiber_state_t *st = f->st;
  f->state = F_SUSPENDED;
  f->scope = uvp__head(st->ctx)->scope;
  fiber_t *next = handoff(st, f);
  uint8_t watch = uvp__head(st->ctx)->watch;
  if (UVP__UNLIKELY(watch)) {
    /* The stall detector first: the recorder's park then follows a stall
     * the mark reports, which it ended. */
    if (next != NULL && (watch & UVP__WATCH_STALL))
      stall_slice(next, true);
    if (watch & UVP__WATCH_REC)
      rec_switch(f, next);
    if (watch & UVP__WATCH_TIME)
      time_park(f);
  }
  if (next == f) {
    enter(f); /* its own wake was next: the drain would resume it at once */
  } else if (next != NULL) {
    enter(next);
    (void)uvp__fiber_switch(&f->fctx, &next->fctx, NULL);
  } else {
    (void)uvp__fiber_switch(&f->fctx, &st->loop, f);
  }
  /* Resumed by its wake (through run or a hand-off, which set woken and
   * made it current) or by fiber_close. */
  int status = f->woken_status;
  if (out != NULL)
    *out = (uvp_outcome_t){status, f->woken_value, f->waiting};
  if (!take) {
    uvp_promise_t *q = f->waiting;
    f->waiting = NULL;
    if (q != NULL)
      drop_ref(f, q);
  }
  return status;
}

/* Why the running fiber f may not wait for p now (0: it may). */
static UVP__ALWAYS_INLINE int refused(const fiber_t *f, const uvp_promise_t *p,
                                      bool shield) {
  return p == NULL                 ? UV_EINVAL
         : f == NULL               ? UVP_ENOTFIBER
         : uvp__closed(f->st->ctx) ? UVP_ECLOSED
         : !uvp__same_ctx(p, f->p) ? UVP_EXCTX
         : f->cancelled && !shield ? cancel_code(f)
                                   : 0;
}

/* A take that does not wait still consumes p.  Refused on p's own loop
 * (cancelled, or no memory to park in), the take stands for p's handler:
 * p's rejection, which nobody can await now, is not reported. */
static UVP__NOINLINE void take_refused(const fiber_t *f, uvp_promise_t *p,
                                       int rc) {
  if (p == NULL)
    return;
  if (rc != UVP_ENOTFIBER && rc != UVP_ECLOSED && rc != UVP_EXCTX && f != NULL)
    p->flags |= UVP__F_HANDLED;
  uvp_promise_release(p); /* any thread: refused off a fiber */
}

/* entry: UVP__AWAIT_* (the shield; the take, which consumes the caller's
 * reference to p). */
static UVP__ALWAYS_INLINE int await(uvp_promise_t *p, uvp_outcome_t *out,
                                    const char *file, int line,
                                    unsigned entry) {
  bool shield = entry & UVP__AWAIT_SHIELD, take = entry & UVP__AWAIT_TAKE;
  fiber_t *f = uvp__fiber_current;
  int rc = refused(f, p, shield);
  if (rc == 0 && UVP__UNLIKELY(f->compact) &&
      uvp__compact_reserve(f, entry) != 0)
    rc = UV_ENOMEM;
  if (rc != 0) {
    if (take)
      take_refused(f, p, rc);
    if (out != NULL)
      *out = (uvp_outcome_t){rc, NULL, take ? NULL : p};
    return rc;
  }
  f->await_site = uvp__site(f->st->sites, file, line);
  f->await_at = (uint32_t)uvp__now(f->st->ctx);
  if (uvp__head(f->st->ctx)->traces)
    f->trace = uvp__trace_intern(f->st->ctx, f->await_site, UVP__TK_AWAIT,
                                 f->p->trace);
  /* The last take's promise: its outcome stays valid until this returns. */
  uvp_promise_t *held = f->waiting;
  if (!take)
    uvp__retain_local(p); /* checked above: the loop thread, ctx open */
  f->waiting = p;
  if (uvp__is_pending(p)) {
    uvp__observe_embedded(p, &f->wake, on_wake, f);
  } else {
    p->flags |= UVP__F_HANDLED; /* the fiber sees its rejection */
    uvp__enqueue_embedded(p, &f->wake, on_wake, f); /* yield once */
  }
  if (!UVP__UNLIKELY(shield)) {
    rc = suspend(f, out, take);
  } else {
    f->shielded = true;
    rc = suspend(f, out, take);
    f->shielded = false;
  }
  if (UVP__UNLIKELY(held != NULL))
    drop_ref(f, held);
  return rc;
}

/* The take's own part: what the start call said, and the promise's slot. */
static UVP__ALWAYS_INLINE int take(int started, uvp_promise_t **pp,
                                   uvp_outcome_t *out, const char *file,
                                   int line, unsigned entry) {
  uvp_promise_t *p = NULL;
  int rc = started != 0 ? started : pp == NULL ? UV_EINVAL : 0;
  if (pp != NULL) {
    if (started == 0) /* a failed start call handed nothing out */
      p = *pp;
    *pp = NULL;
  }
  if (rc != 0) {
    if (out != NULL)
      *out = (uvp_outcome_t){rc, NULL, NULL};
    return rc;
  }
  return await(p, out, file, line, entry | UVP__AWAIT_TAKE);
}

int uvp_await_at(uvp_promise_t *p, uvp_outcome_t *out, const char *file,
                 int line) {
  return await(p, out, file, line, 0);
}

int uvp_await_shielded_at(uvp_promise_t *p, uvp_outcome_t *out,
                          const char *file, int line) {
  return await(p, out, file, line, UVP__AWAIT_SHIELD);
}

int uvp_await_take_at(int started, uvp_promise_t **p, uvp_outcome_t *out,
                      const char *file, int line) {
  return take(started, p, out, file, line, 0);
}

int uvp_await_shielded_take_at(int started, uvp_promise_t **p,
                               uvp_outcome_t *out, const char *file, int line) {
  return take(started, p, out, file, line, UVP__AWAIT_SHIELD);
}

int uvp_in_fiber(void) { return uvp__fiber_current != NULL; }

int uvp_fiber_keep_fp_modes(void) {
  fiber_t *f = uvp__fiber_current;
  if (f == NULL)
    return UVP_ENOTFIBER;
  uvp__fiber_keep_fp(&f->fctx);
  return 0;
}

int uvp_fiber_set_name(const char *name) {
  fiber_t *f = uvp__fiber_current;
  int rc = !uvp__name_ok(name)       ? UV_EINVAL
           : f == NULL               ? UVP_ENOTFIBER
           : uvp__closed(f->st->ctx) ? UVP_ECLOSED
                                     : 0;
  char *copy = NULL;
  if (rc == 0 && name != NULL && (copy = uvp__name_dup(name)) == NULL)
    rc = UV_ENOMEM;
  if (rc != 0)
    return rc;
  uvp__free(f->name);
  f->name = copy;
  if (uvp__recording(f->st->ctx))
    uvp__rec_name(f->st->ctx, f->p, false, name);
  if (uvp__head(f->st->ctx)->traces) { /* what it creates from now on */
    f->p->trace = uvp__trace_named(f->p->trace, name);
    f->trace = uvp__head(f->st->ctx)->trace = f->p->trace;
  }
  return 0;
}

/* ---- per context -------------------------------------------------------- */

/* Teardown (the sweep has rejected every pending promise, the fibers' own
 * included): each suspended fiber runs to its end, every await returning
 * UVP_ECLOSED at once. */
static void fiber_close(uvp__ext_t *ext) {
  fiber_state_t *st = UVP__CONTAINER_OF(ext, fiber_state_t, ext);
  /* Fibers not started went when their queued wake was dropped. */
  fiber_t *f;
  while ((f = st->all) != NULL) {
    UVP__CHECK(f->state == F_SUSPENDED);
    f->woken_status = UVP_ECLOSED;
    f->woken_value = NULL;
    run(f);
  }
  uvp__compact_put_stack(st);
  uvp__stack_pool_close(&st->stacks);
}

/* What a fiber that waits for nothing does: both dumps say it alike. */
static const char *state_text(const fiber_t *f) {
  return f->state == F_QUEUED ? "not started"
         : f->state == F_DONE ? "ending"
         : f->cancelled       ? "cancelled, running"
                              : "running";
}

static void fiber_dump(uvp__ext_t *ext, FILE *stream, int *count) {
  fiber_state_t *st = UVP__CONTAINER_OF(ext, fiber_state_t, ext);
  for (fiber_t *f = st->all; f != NULL; f = f->next) {
    const char *q = f->name != NULL ? "\"" : "";
    const char *name = f->name != NULL ? f->name : "";
    uvp__site_at_t at = uvp__site_known(f->p->site);
    uvp__site_at_t aw = uvp__site_known(f->await_site);
    if (f->state == F_SUSPENDED && f->waiting != NULL)
      fprintf(stream,
              "[fiber] " UVP__PTR " %s%s%s%sspawned at %s:%d awaiting " UVP__PTR
              " at %s:%d%s\n",
              UVP__PTRV(f->p), q, name, q, *q ? " " : "",
              at.file != NULL ? at.file : "?", at.line, UVP__PTRV(f->waiting),
              aw.file != NULL ? aw.file : "?", aw.line,
              !f->cancelled ? ""
              : f->shielded ? " (cancelled, shielded)"
                            : " (cancelled)");
    else
      fprintf(stream, "[fiber] " UVP__PTR " %s%s%s%sspawned at %s:%d %s\n",
              UVP__PTRV(f->p), q, name, q, *q ? " " : "",
              at.file != NULL ? at.file : "?", at.line, state_text(f));
    (*count)++;
  }
}

/* ---- the task dump --------------------------------------------------------
 */

/* The time f has run, in ns: its slices so far, and the one it runs now
 * (a dump made by the fiber itself).  A compact fiber not started yet has
 * its floating-point state in that word. */
static uint64_t busy_of(const fiber_t *f) {
  if (f->compact && !f->started)
    return 0;
  uint64_t busy = f->busy_ns;
  if (f == uvp__fiber_current && f->st->slice_at != 0) {
    uint64_t now = uv_hrtime();
    busy += now > f->st->slice_at ? now - f->st->slice_at : 0;
  }
  return busy;
}

/* The loop time f began to wait, from the low 32 bits it keeps: its wait
 * is taken to be shorter than 2^32 ms (49 days). */
static uint64_t waited_since(const fiber_t *f) {
  uint64_t now = uvp__now(f->st->ctx);
  return now - (uint32_t)((uint32_t)now - f->await_at);
}

static void fiber_tasks(uvp__ext_t *ext, uvp__task_sink_t *sink) {
  fiber_state_t *st = UVP__CONTAINER_OF(ext, fiber_state_t, ext);
  bool timed = uvp__head(st->ctx)->watch & UVP__WATCH_TIME;
  for (fiber_t *f = st->all; f != NULL; f = f->next) {
    bool waits = f->state == F_SUSPENDED && f->waiting != NULL;
    uvp__site_at_t at = uvp__site_known(f->p->site);
    uvp__site_at_t aw = uvp__site_known(waits ? f->await_site : 0);
    uvp__task_t t = {"fiber",
                     f->p,
                     at.file,
                     at.line,
                     waits ? waited_since(f) : 0,
                     aw.file,
                     aw.line,
                     waits ? f->waiting : NULL,
                     state_text(f),
                     f->scope,
                     f->name,
                     NULL,
                     timed,
                     timed ? busy_of(f) / 1000 : 0};
    sink->task(sink, &t);
  }
}

/* A fiber's promise, awaited by another task, is the fiber: "fiber spawned
 * at file:line".  Listed as a task of its own. */
static void fiber_describe(const uvp__work_t *work, uvp__what_t *w) {
  const fiber_t *f = UVP__CONTAINER_OF(work, fiber_t, work);
  uvp__site_at_t at = uvp__site_known(f->p->site);
  const char *file = at.file != NULL ? at.file : "?";
  if (f->name != NULL)
    snprintf(w->target, sizeof(w->target), "\"%s\" spawned at %s:%d", f->name,
             file, at.line);
  else
    snprintf(w->target, sizeof(w->target), "spawned at %s:%d", file, at.line);
}

static void fiber_destroy(uvp__ext_t *ext) {
  fiber_state_t *st = UVP__CONTAINER_OF(ext, fiber_state_t, ext);
  uvp__compact_put_stack(st);
  uvp__stack_pool_close(&st->stacks);
  uvp__fiber_destroy(&st->loop);
  uvp__free(st);
}

static void fiber_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  const fiber_state_t *st = UVP__CONTAINER_OF(ext, fiber_state_t, ext);
  out->fibers += st->count;
  out->fiber_stacks += st->stacks.warm_count;
  out->fiber_stack_bytes += st->stacks.warm_bytes;
}

/* For the fault handler (fiber-stack.h): the stack the thread runs on. */
static const uvp__stack_t *running_stack(void) {
  const fiber_t *f = uvp__fiber_current;
  return f != NULL ? uvp__fiber_stack(f) : NULL;
}

static void fiber_trim(uvp__ext_t *ext) {
  uvp__stack_pool_trim(&UVP__CONTAINER_OF(ext, fiber_state_t, ext)->stacks, 0);
}

static const uvp__ext_t state_hooks = {.close = fiber_close,
                                       .dump = fiber_dump,
                                       .destroy = fiber_destroy,
                                       .stats = fiber_stats,
                                       .trim = fiber_trim,
                                       .tasks = fiber_tasks};

static fiber_state_t *state_of(uvp_ctx_t *ctx) {
  fiber_state_t *st = UVP__EXT_OF(ctx, UVP__EXT_FIBERS, fiber_state_t);
  if (UVP__LIKELY(st != NULL) ||
      (st = UVP__EXT_MAKE(ctx, UVP__EXT_FIBERS, fiber_state_t, &state_hooks)) ==
          NULL)
    return st;
  st->ctx = ctx;
  st->sites = uvp__ctx_sites(ctx);
  uvp__stack_pool_init(&st->stacks, 0);
  uvp__stack_set_running_hook(running_stack);
  uvp__fiber_thread_init(&st->loop);
  return st;
}

int uvp_ctx_set_fiber_stack(uvp_ctx_t *ctx, size_t bytes) {
  int rc = bytes == 0 ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  fiber_state_t *st = state_of(ctx);
  if (st == NULL)
    return UV_ENOMEM;
  /* Compact fibers spawned from now on: a shared stack of the new size. */
  uvp__compact_put_stack(st);
  uvp__stack_pool_resize(&st->stacks, bytes < MIN_STACK ? MIN_STACK : bytes);
  return 0;
}

int uvp_ctx_set_fiber_mode(uvp_ctx_t *ctx, int mode) {
  int rc = mode != UVP_FIBER_DEFAULT && mode != UVP_FIBER_COMPACT
               ? UV_EINVAL
               : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  fiber_state_t *st = state_of(ctx);
  if (st == NULL)
    return UV_ENOMEM;
  st->mode = mode;
  return 0;
}

void uvp__fiber_time(uvp_ctx_t *ctx, bool on) {
  fiber_state_t *st = UVP__EXT_OF(ctx, UVP__EXT_FIBERS, fiber_state_t);
  if (on)
    uvp__head(ctx)->watch |= UVP__WATCH_TIME;
  else
    uvp__head(ctx)->watch &= (uint8_t)~UVP__WATCH_TIME;
  /* A fiber running now (the call is its) counts from now. */
  if (st != NULL)
    st->slice_at = on && uvp__fiber_current != NULL ? uv_hrtime() : 0;
}
