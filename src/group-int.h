/* A task group as its two files see it: group.c (its members, their cells
 * and completion order, the limit, cancelling them) and group-life.c (the
 * group made, named, closed, cancelled, joined and released, the join's
 * cut, and the group as its scopes' owner and in the task dump).  Private
 * to those two. */
#ifndef UVP_GROUP_INT_H
#define UVP_GROUP_INT_H

#include "tasks.h"

typedef struct block_s block_t; /* a block of member cells (group.c) */
typedef struct lazy_s lazy_t;   /* a member not started yet (group.c) */

struct uvp_group_s {
  uvp__owner_t owner; /* what its scopes name; first */
  uvp_ctx_t *ctx;
  /* The join's record of work (work-door.h): its owner is that of the
   * scope the group was made in (a group): this group is its work until
   * it has wound down.  Cut, the join waits for that (WINDDOWN). */
  uvp__work_t work;
  uvp__scope_t *scope;     /* names this group, with the slots it was made
                              in: what members added with those run in */
  uvp_promise_t *join;     /* produced; our reference while undecided */
  uvp_promise_t *joined;   /* the same, kept for uvp_group_join until the
                              group is released */
  uvp_promise_t *failure;  /* FAIL_FAST: the member that failed first */
  int cut;                 /* what cut the join first (UV_ECANCELED or
                              UV_ETIMEDOUT), or 0 */
  uvp__cause_t *cut_cause; /* and its cause (a reference), or NULL */
  uvp__cause_t *cause;     /* what cancelled the members first (a
                              reference), or NULL (cause.h) */
  size_t limit;            /* 0: none */
  int flags;
  uint16_t trace; /* the frame members start in (trace.h) */
  uint16_t site;  /* where it was made: a failed start's, see start_lazy */
  char *name;     /* uvp_group_set_name's copy, or NULL */
  bool closed, cancelled, released, pumping;
  bool walking;    /* cancel_all is walking the blocks */
  bool had_member; /* one was ever added: CLOSE_WHEN_DONE may close it */
  size_t holds;    /* libuv requests and handles of members, open */
  size_t scopes;   /* scopes naming the group */
  size_t nrunning;
  block_t *room; /* blocks with a free cell (doubly linked) ... */
  block_t *full; /* ... and those without */
  uvp__cell_t *done_head, *done_tail;
  lazy_t *lazy_head, *lazy_tail;
  uvp_promise_t **waiters; /* next() promises waiting: a FIFO ring */
  size_t wcap, whead, wtail;
};

/* group.c's, for group-life.c.  Each may run user code (a member's cancel
 * hook, a waiter's reaction), and all but uvp__group_hold may free the
 * group: the caller reads nothing of it after. */

/* A libuv request or handle of its members, or a fiber member, open (and
 * closed again): the join waits for it. */
void uvp__group_hold(uvp_group_t *g);
void uvp__group_drop(uvp_group_t *g);
/* Settles the join once the group has wound down (closed, every member
 * settled, everything they started done). */
void uvp__group_maybe_end(uvp_group_t *g);
/* Frees the group once nothing holds it any more. */
void uvp__group_maybe_free(uvp_group_t *g);
/* Cancels every member still pending, with cause c (borrowed), and drops
 * those never started; nothing can be added after. */
void uvp__group_cancel_all(uvp_group_t *g, uvp__cause_t *c);
/* Drops the members never started. */
void uvp__group_drop_lazy(uvp_group_t *g);

#endif
