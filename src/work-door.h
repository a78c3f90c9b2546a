/* Private to src/: the door every piece of uvp's work passes when it starts
 * and when it ends (not src/work.c, the thread pool's jobs).  One record,
 * uvp__work_t, embedded where the work lives (an operation's header, a
 * delay, a timeout, a fiber, a group's join, a binding's uvp_inflight_t),
 * and one const class per kind of producer.  uvp__work_start makes the
 * promise and tells, in one place, what the work's start means to the
 * rest: the scope's owner waits for it (a group), the scope's deadline
 * watches the promise, the virtual clock counts it as real work, the
 * context counts it as work in the loop.  uvp__work_done unwinds exactly
 * what start did.
 *
 * The promise's cancel hook is one dispatcher, uvp__work_hook, with the
 * record as its argument: so a pending promise reaches its class through
 * its record (uvp__work_of), which is how the task dump describes it and
 * how a cancellation knows a producer that winds down. */
#ifndef UVP_WORK_DOOR_H
#define UVP_WORK_DOOR_H

#include "sched.h"
#include "scope.h"
#include "watch.h"

/* What a pending promise waits for: a kind ("fs.read_file", "timer") and a
 * target ("/etc/hosts"), for a timer the time left (else -1), who waits
 * for the work to end (an operation's group: its chain, deadline and slots
 * are shown; NULL: none known), and, for a producer that winds down, the
 * cause of the cut it is winding down from (or NULL). */
typedef struct uvp__what_s {
  char kind[32];
  char target[256];
  int64_t left_ms;
  const struct uvp__owner_s *owner;
  const struct uvp__cause_s *cut;
} uvp__what_t;

typedef struct uvp__work_s uvp__work_t;

enum {
  /* Nothing is on its way for it (a watch, a timer, a fiber): the virtual
   * clock does not count it as real work in flight (clock.c). */
  UVP__WORK_IDLE = 1u,
  /* No scope owner is told: the work acts on an object that tells an owner
   * of its own (a TCP connection's operations), or is no one's request (a
   * fiber: its group knows it as a member). */
  UVP__WORK_UNOWNED = 2u,
  /* Listed as a task by its layer in the dump (a fiber), not again as a
   * promise. */
  UVP__WORK_TASK = 4u,
  /* Cut by a cancellation or a deadline, the promise stays pending and
   * cancel runs with the code (UV_ECANCELED or UV_ETIMEDOUT), again at
   * every later cut; the producer settles it once its work has wound down
   * (a group's join: trio's rule that a scope ends only when everything
   * it started has ended).  Torn down, it rejects with UVP_ECLOSED at once
   * and cancel runs with that code. */
  UVP__WORK_WINDDOWN = 8u,
  /* The promise can be handed to a handler's derived promise (see
   * uvp__movable_new): the producer reads w->p afresh. */
  UVP__WORK_MOVABLE = 16u,
  /* No libuv request or handle of its own is open for it (a fiber, a
   * join; a timer counts its handle itself): not counted as work in the
   * loop (uvp_ctx_inflight). */
  UVP__WORK_NOT_IN_LOOP = 32u,
  /* Not a task of the dump by itself, only when something waits on its
   * promise, as any promise: its work is other tasks, which are listed
   * (a group's join: the members and what they started). */
  UVP__WORK_UNLISTED = 64u,
  /* Its cancel lets go of its promise (w->p) at once, its end a turn away
   * (a timer closing its handle): after a cut the dump has nothing of it
   * to show, so it is not kept (work-door.c's cut_begin). */
  UVP__WORK_GONE_AT_CUT = 128u
};

/* One per kind of producer, const, living as long as the process. */
typedef struct uvp__work_class_s {
  /* p, w's promise, was cut while pending: it has rejected with `code`
   * (UV_ECANCELED, UV_ETIMEDOUT, UVP_ECLOSED, any code of
   * uvp_promise_cancel_with), or, winding down, stays pending.  Stop the
   * work; uvp__work_done once it has stopped, now or later. */
  void (*cancel)(uvp__work_t *w, uvp_promise_t *p, int code);
  /* The task dump: what the work is and what it acts on.  `out` comes
   * with kind set to the class's kind and the rest empty. */
  void (*describe)(const uvp__work_t *w, uvp__what_t *out);
  const char *kind;
  unsigned flags; /* UVP__WORK_* */
} uvp__work_class_t;

/* The record: the producer's memory, as long as the work.  24 bytes: an
 * operation's header is no bigger than with the three words the door
 * replaced there. */
struct uvp__work_s {
  /* First: &w->p is the movable promise's slot (uvp__movable_new), the
   * same address as w.  Set by start; a producer may clear it (a movable
   * one must once the promise may no longer move). */
  uvp_promise_t *p;
  const uvp__work_class_t *cls;
  /* What start told, until done: the owner (NULL: none), with
   * UVP__TOLD_REAL (counted by the virtual clock), UVP__TOLD_LOOP
   * (counted as work in the loop) and UVP__TOLD_CUT (kept among the
   * records cut and winding down, work-cut.h) in its low bits. */
  uintptr_t told;
};
enum { UVP__TOLD_REAL = 1u, UVP__TOLD_LOOP = 2u, UVP__TOLD_CUT = 4u };
#define UVP__TOLD_BITS ((uintptr_t)7)

/* The owner w's work answers to (NULL: none), for the task dump. */
static inline const uvp__owner_t *uvp__work_owner(const uvp__work_t *w) {
  return (const uvp__owner_t *)(w->told & ~UVP__TOLD_BITS);
}

/* The cancel hook of every promise started through the door. */
void uvp__work_hook(uvp_promise_t *p, void *w);
/* The core's door for the cuts of such promises (door.h), opened on each
 * thread before its first such promise: one test of a thread-local byte
 * per start. */
extern UVP__TLS bool uvp__work_door_here;
void uvp__work_door_open(void);

/* The record of pending p's producer, if it came through the door. */
static inline uvp__work_t *uvp__work_of(const uvp_promise_t *p) {
  /* Settled, the bit is UVP__F_CAUSE. */
  return p->state == UVP__S_PENDING && (p->flags & UVP__F_CANCEL) &&
                 p->fn.cancel_cb == uvp__work_hook
             ? (uvp__work_t *)p->value
             : NULL;
}

/* What start and attach tell (below). */
static UVP__ALWAYS_INLINE void uvp__work_begin_(uvp_ctx_t *ctx, uvp__work_t *w,
                                                unsigned flags) {
  uintptr_t told = 0;
  if (!(flags & UVP__WORK_NOT_IN_LOOP)) {
    uvp__loop_work_begin(ctx);
    told = UVP__TOLD_LOOP;
  }
  if (!(flags & UVP__WORK_UNOWNED))
    told |= (uintptr_t)uvp__work_begin(ctx);
  if (UVP__UNLIKELY(uvp__head(ctx)->vclock) && !(flags & UVP__WORK_IDLE)) {
    uvp__head(ctx)->real_work++;
    told |= UVP__TOLD_REAL;
  }
  w->told = told;
}

/* Work starts under the current scope: w->p is its new promise (two
 * references, the caller's and the producer's, as uvp__produced_new), and
 * everything above is told.  The deadline of scope `watch` watches it
 * (uvp__work_start: the current scope's; not watched if that fails, for
 * want of memory: the work runs to its end).  0, or UV_ENOMEM (no
 * promise: nothing started).  Inline: the class is a constant where most
 * producers call it, and its flags fold away (a fiber's spawn tells
 * nobody anything). */
static UVP__ALWAYS_INLINE int
uvp__work_start_in(uvp_ctx_t *ctx, const uvp__scope_t *watch, uvp__work_t *w,
                   const uvp__work_class_t *cls, const char *file, int line) {
  w->cls = cls;
  if (UVP__UNLIKELY(!uvp__work_door_here))
    uvp__work_door_open();
  uvp_promise_t *p;
  if (cls->flags & UVP__WORK_MOVABLE) {
    p = uvp__movable_new(ctx, file, line, uvp__work_hook, &w->p);
  } else {
    p = uvp__produced_new(ctx, file, line, uvp__work_hook, w);
    w->p = p;
  }
  if (UVP__UNLIKELY(p == NULL)) {
    w->p = NULL;
    w->told = 0; /* done before a start tells nothing */
    return UV_ENOMEM;
  }
  uvp__work_begin_(ctx, w, cls->flags);
  if (uvp__recording(ctx))
    uvp__tell_at(ctx, UVP__HEARD_WORK_START, w, watch, file, line);
  /* A deadline stops work from the loop, never inside this call: the
   * producer starts its work first. */
  (void)uvp__watch_in(watch, p);
  return 0;
}
static UVP__ALWAYS_INLINE int uvp__work_start(uvp_ctx_t *ctx, uvp__work_t *w,
                                              const uvp__work_class_t *cls,
                                              const char *file, int line) {
  return uvp__work_start_in(ctx, uvp__head(ctx)->scope, w, cls, file, line);
}
/* The same for p, pending, made by someone else (a binding's, through
 * uvp_inflight_start), which must have no cancel hook: 0, or the watch's
 * UV_ENOMEM with nothing started. */
int uvp__work_attach(uvp_ctx_t *ctx, uvp__work_t *w, uvp_promise_t *p,
                     const uvp__work_class_t *cls);

/* Done: w leaves its cut frame or the records kept (work-cut.h). */
void uvp__work_uncut(uvp_ctx_t *ctx, uvp__work_t *w);

/* The work has ended: what start told is untold (owner, clock), but for
 * the count of work in the loop, whose end may free a closed context:
 * returns whether w still holds it, for the caller to end with
 * uvp__loop_work_end(ctx) once it is done with its memory.  Idempotent:
 * a record done already, or never started, tells nothing (and reads
 * nothing but itself: it may be called on any thread then). */
static inline bool uvp__work_done_but_loop(uvp_ctx_t *ctx, uvp__work_t *w) {
  uintptr_t told = w->told;
  /* Told nothing, it may be a second end on another thread: the
   * recorder's only on the loop's (a first end of work that told
   * nothing, a timer's, is on it). */
  if ((told != 0 || uvp__on_loop_thread(ctx)) && uvp__recording(ctx))
    uvp__tell(ctx, UVP__HEARD_WORK_END, w, NULL, 0);
  w->told = 0;
  if (UVP__UNLIKELY(told & UVP__TOLD_REAL))
    uvp__head(ctx)->real_work--;
  if (UVP__UNLIKELY(told & UVP__TOLD_CUT))
    uvp__work_uncut(ctx, w);
  /* May settle a group's join. */
  uvp__work_end((uvp__owner_t *)(told & ~UVP__TOLD_BITS));
  return (told & UVP__TOLD_LOOP) != 0;
}
/* All of it; the count of work in the loop last (may free a closed
 * context). */
static inline void uvp__work_done(uvp_ctx_t *ctx, uvp__work_t *w) {
  if (uvp__work_done_but_loop(ctx, w))
    uvp__loop_work_end(ctx);
}

/* Names of fibers and groups (uvp_fiber_set_name, uvp_group_set_name):
 * whether `name` is one (NULL is: no name), and a copy of one (NULL: no
 * memory), for uvp__free. */
#define UVP__NAME_MAX 63
bool uvp__name_ok(const char *name);
char *uvp__name_dup(const char *name);

#endif
