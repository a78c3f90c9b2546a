/* Private to src/: the task dump (dump.c, uvp_ctx_dump_tasks).  What the
 * layers tell it: each task they keep (fibers, groups' members), and how
 * the promises they produce are described (what they wait for). */
#ifndef UVP_DUMP_H
#define UVP_DUMP_H

#include "scope.h"

/* What a pending promise waits for: a kind ("fs.read_file", "timer") and a
 * target ("/etc/hosts"), for a timer the time left (else -1), and who waits
 * for the work to end (an operation's group: its chain, deadline and slots
 * are shown; NULL: none known, as nothing is kept per promise). */
typedef struct uvp__what_s {
  char kind[32];
  char target[256];
  int64_t left_ms;
  const struct uvp__owner_s *owner;
} uvp__what_t;

/* How a producer describes its promise p, given the argument of the cancel
 * hook it gave uvp__produced_new (p->value while p is pending). */
typedef void (*uvp__describe_fn)(const uvp_promise_t *p, void *hook_arg,
                                 uvp__what_t *out);
/* Register fn for the promises whose cancel hook is `hook` (once per
 * producer, any time, any thread; idempotent).  `own`: such a promise is a
 * task listed by its layer (a fiber's), not again as a promise. */
void uvp__describer_add(uvp_cancel_cb hook, uvp__describe_fn fn, bool own);

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
