/* Private to the core (sched.c, promise.c, reaction.c): the run queue's
 * operations, on the context's queue (context.h), and what the scheduler
 * asks of the promise core to run or drop what it queued. */
#ifndef UVP_RUNQ_H
#define UVP_RUNQ_H

#include "context.h"

void uvp__queue_push_slow(uvp_ctx_t *ctx, uvp__reaction_t *r);
/* Append r to the run queue (the caller wakes the context). */
static inline void uvp__queue_push(uvp_ctx_t *ctx, uvp__reaction_t *r) {
  uvp__runq_t *q = &ctx->q;
  if (UVP__LIKELY(q->rtail - q->rhead < q->ring_cap && q->spill == NULL))
    q->ring[q->rtail++ & (q->ring_cap - 1)] = r;
  else
    uvp__queue_push_slow(ctx, r);
  q->queued++;
}
void uvp__wake_slow(uvp_ctx_t *ctx);
/* After queueing: make sure the queue will be drained. */
static inline void uvp__wake(uvp_ctx_t *ctx) {
  if (UVP__UNLIKELY(!ctx->idle_active))
    uvp__wake_slow(ctx);
}
/* Append r and wake: out of line ... */
void uvp__enqueue(uvp_ctx_t *ctx, uvp__reaction_t *r);
/* ... and inline, where the ring has room and the context is awake
 * already, every other case going to uvp__enqueue as the last thing
 * done: a settle then needs no stack frame of its own. */
static UVP__ALWAYS_INLINE void uvp__enqueue_in(uvp_ctx_t *ctx,
                                               uvp__reaction_t *r) {
  uvp__runq_t *q = &ctx->q;
  if (UVP__LIKELY(q->rtail - q->rhead < q->ring_cap && q->spill == NULL &&
                  ctx->idle_active)) {
    q->ring[q->rtail++ & (q->ring_cap - 1)] = r;
    q->queued++;
    return;
  }
  uvp__enqueue(ctx, r);
}
/* Append r to the list from *head to *tail, linked through `next`. */
static inline void uvp__rlist_append(uvp__reaction_t **head,
                                     uvp__reaction_t **tail,
                                     uvp__reaction_t *r) {
  r->next = NULL;
  if (*tail != NULL)
    (*tail)->next = r;
  else
    *head = r;
  *tail = r;
}

/* The next reaction to run; one is queued. */
static inline uvp__reaction_t *uvp__reaction_pop(uvp_ctx_t *ctx) {
  ctx->q.queued--;
  if (ctx->q.rhead != ctx->q.rtail)
    return ctx->q.ring[ctx->q.rhead++ & (ctx->q.ring_cap - 1)];
  uvp__reaction_t *r = ctx->q.spill;
  ctx->q.spill = r->next;
  if (ctx->q.spill == NULL)
    ctx->q.spill_tail = NULL;
  return r;
}

/* The reaction the running drain would run next, if it would run one now
 * (it has budget left, no completion is queued, the context is open and
 * the loop not stopped), else NULL.  For the fibers' hand-off: a fiber that
 * suspends runs the next fiber's wake itself instead of returning to the
 * drain only to be sent there. */
static inline uvp__reaction_t *uvp__runq_next(uvp_ctx_t *ctx) {
  uvp__runq_t *q = &ctx->q;
  if (q->rhead == q->budget_end || q->queued == 0 || q->completions != 0 ||
      ctx->h.closed || uvp__loop_stopping(ctx->h.loop))
    return NULL;
  return q->rhead != q->rtail ? q->ring[q->rhead & (q->ring_cap - 1)]
                              : q->spill;
}
/* Takes the next reaction off the queue, counting it against the drain's
 * budget (some must be left); running it is the caller's business. */
static inline uvp__reaction_t *uvp__runq_take(uvp_ctx_t *ctx) {
  UVP__CHECK(ctx->q.rhead != ctx->q.budget_end);
  if (UVP__UNLIKELY(ctx->q.rhead == ctx->q.rtail))
    ctx->q.budget_end--; /* from the spill list: rhead stays */
  return uvp__reaction_pop(ctx);
}

void uvp__run_reaction(uvp_ctx_t *ctx, uvp__reaction_t *r);
/* Run a queued completion (an embedded NOTIFY reaction): its callback gets
 * an outcome that says nothing, then the queue's reference goes. */
void uvp__run_completion(uvp_ctx_t *ctx, uvp__reaction_t *r);
void uvp__drop_reaction(uvp_ctx_t *ctx, uvp__reaction_t *r, bool queued);

#endif
