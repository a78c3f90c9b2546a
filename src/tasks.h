/* Private to the task dump (dump.c) and the layers that tell it of tasks
 * of their own (fiber.c), through their state's `tasks` hook (head.h's
 * uvp__ext_t). */
#ifndef UVP_TASKS_H
#define UVP_TASKS_H

#include "work-door.h"

/* One task, as its layer tells the task dump (a fiber; the dump finds
 * groups' members itself). */
typedef struct uvp__task_s {
  const char *kind;             /* "fiber", "member" */
  const uvp_promise_t *promise; /* its promise: its id and creation site */
  const char *file;             /* where it was spawned (NULL: the
                                   promise's site) ... */
  int line;                     /* ... */
  uint64_t since;               /* loop time it began to wait */
  const char *await_file;       /* a fiber's await, or NULL */
  int await_line;
  const uvp_promise_t *waits;       /* what it waits for, or NULL: */
  const char *state;                /* then what it does ("not started") */
  const struct uvp__scope_s *scope; /* its group, deadline, slots (or NULL) */
  const char *name;                 /* a fiber's name, or NULL */
  /* A record cut and winding down (uvp__work_cut): the task is its work,
   * `promise` its settled promise, `since` when that was made. */
  const uvp__work_t *work;
  /* A fiber's, while the live console times fibers (UVP__WATCH_TIME):
   * `timed`, and the time it has run on the CPU, in us. */
  bool timed;
  uint64_t busy_us;
} uvp__task_t;
/* Where a layer's `tasks` hook (head.h's uvp__ext_t) tells its tasks. */
struct uvp__task_sink_s {
  void (*task)(uvp__task_sink_t *sink, const uvp__task_t *t);
};

/* Every task of ctx, as the task dump lists them, told to sink (the
 * layers' hooks, then the pending promises something waits on, then the
 * records cut and winding down): the dump's walk, and the console's
 * (console.c).  A promise's task has `since` in loop time (uvp__now's).
 * Loop thread; allocates nothing. */
void uvp__tasks_walk(uvp_ctx_t *ctx, uvp__task_sink_t *sink);

/* The promise whose settling settles waits: itself, or, while it follows
 * another (a then's result, one resolved with a promise), the last it
 * follows, `depth` links at most: the dump's waits_id, and where the
 * console looks for a lost source. */
static inline const uvp_promise_t *uvp__waits_on(const uvp_promise_t *waits,
                                                 int depth) {
  for (int i = 0; i < depth && waits->state == UVP__S_PENDING &&
                  (waits->flags & UVP__F_WAITING) && waits->link != NULL;
       i++)
    waits = waits->link;
  return waits;
}

/* The live console's warning of a group left open (group.c): if `work` is
 * a group's join record and the group had members, all of them ended
 * (none running or waiting to start, none of their requests or handles
 * open), yet it is neither closed, released nor cut, and nothing waits
 * for its join, the group (for its describe); else NULL.  Loop thread. */
const uvp__owner_t *uvp__group_idle_open(const uvp__work_t *work);

/* The live console's warning of a call into a context whose loop is not
 * running (call.c): if p is a pending call's promise that its target has
 * left in its mailbox for a second or more (the dump's "whose loop has not
 * run"), how long in ms, with the target (*dst, an id, never read through)
 * and the call's site; else 0.  The caller's loop thread. */
uint64_t uvp__call_stuck(const uvp_promise_t *p, const void **dst,
                         const char **file, int *line);

#endif
