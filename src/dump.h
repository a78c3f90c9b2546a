/* Private to src/: the task dump (dump.c, uvp_ctx_dump_tasks).  What the
 * layers tell it: each task they keep (fibers, groups' members).  How the
 * promises they produce are described is their work's class
 * (work-door.h). */
#ifndef UVP_DUMP_H
#define UVP_DUMP_H

#include "work-door.h"

/* One task, as its layer tells the dump. */
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
} uvp__task_t;

/* Names of fibers and groups (uvp_fiber_set_name, uvp_group_set_name):
 * whether `name` is one (NULL is: no name), and a copy of one (NULL: no
 * memory), for uvp__free. */
#define UVP__NAME_MAX 63
bool uvp__name_ok(const char *name);
char *uvp__name_dup(const char *name);

/* "; slots 0=VALUE, 1=VALUE" for scope s (each through its formatter, as
 * the task dump shows them) into buf, cap bytes; returns its length (0:
 * no slot set).  Loop thread (the stall detector's reports). */
size_t uvp__slots_text(uvp_ctx_t *ctx, const uvp__scope_t *s, char *buf,
                       size_t cap);

typedef struct uvp__dump_s uvp__dump_t;
void uvp__dump_task(uvp__dump_t *d, const uvp__task_t *t);

#endif
