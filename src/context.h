/* Private to the core (sched.c, promise.c, reaction.c): the whole context,
 * its run queue (whose operations are runq.h's) and its mailbox for other
 * threads.  The layers above see its head (head.h) and call functions for
 * the rest. */
#ifndef UVP_CONTEXT_H
#define UVP_CONTEXT_H

#include <stdatomic.h>

#include "mail.h"
#include "wake.h"

/* The run queue.  Reactions wait in a ring of pointers in run order, so
 * queueing one writes neither the reaction nor its predecessor and the
 * drain knows the next ones early enough to prefetch them; if the ring is
 * full and cannot grow, they wait on `spill` through their `next` until
 * the ring has drained (everything on it is newer).  Completions (a
 * finished libuv operation's settle) wait apart, in arrival order, and
 * run only when no reaction is queued: each one's handlers then run
 * before the next one settles (see drain in sched.c). */
typedef struct uvp__runq_s {
  uvp__reaction_t **ring;
  size_t ring_cap; /* a power of two */
  size_t rhead;    /* free-running indices */
  size_t rtail;
  uvp__reaction_t *spill;
  uvp__reaction_t *spill_tail;
  uvp__reaction_t *chead; /* completions, linked through `next` */
  uvp__reaction_t *ctail;
  size_t queued;      /* reactions and completions */
  size_t completions; /* how many of `queued` are completions */
  size_t overdue;     /* completions a drain had no moment to run */
  /* The running drain may run reactions until rhead reaches budget_end
   * (== rhead when no drain runs).  A completion or a spilled reaction,
   * which leave rhead where it is, brings it one nearer.  The drain keeps
   * no count of its own in memory: a counter stored and reloaded around
   * every reaction made the drain up to 1.5x slower, depending on where
   * the linker put the code (docs/internals/core.md). */
  size_t budget_end;
} uvp__runq_t;

struct uvp_ctx_s {
  uvp__ctx_head_t h; /* first: see uvp__head */
  uint16_t id;       /* in the registry */
  bool freeing;      /* draining free_stack */
  bool idle_active;
  /* The loop thread is applying messages.  Atomic (relaxed: a plain load
   * and store) because a closed context's releases from other threads
   * test it (uvp__mail_waiting) while its loop thread reads its mail;
   * either answer is right there, as no message then names a promise
   * without a reference (promise.c's mail_names_refless). */
  atomic_bool reading_mail;
  /* mhead != NULL, readable without mu: the check phase looks at it every
   * loop iteration (see check_cb in sched.c), and so does every promise's
   * last release (uvp__mail_waiting), on the line it touches anyway. */
  atomic_bool mail;
  unsigned int budget;
  uvp__runq_t q;
  uvp_promise_t *free_stack;

  uvp__pool_t promises;
  uvp__pool_t reactions;
  uvp__blocks_t blocks; /* combinators' and maps' large blocks */
  size_t pending;
  size_t holds; /* objects outside promises keeping the memory (uvp__hold) */
  /* Posters between the lock and their wake-up's write (mail_append),
   * keeping the memory as holds do.  Under mu. */
  size_t waking;
  uint64_t epoch;
  uvp__sites_t sites;
  uvp_unhandled_cb unhandled_cb;
  void *unhandled_arg;
  uvp_free_cb unhandled_free;
  /* Calls of the hook running, innermost first, and its installation's
   * number: an argument is let go of only once its hook has returned. */
  struct uvp__report_s *reports;
  unsigned int unhandled_gen;
  void *data; /* uvp_ctx_set_data */
  uvp_free_cb data_free;

  uv_idle_t idle;   /* ref'd and active only while the queue is not empty */
  uv_check_t check; /* unref'd: drains right after I/O callbacks */
  uvp__wake_t wake; /* for messages from other threads (wake.h): unref'd
                       but while uvp__mail_keep says so */
  /* uvp's work in the loop: the three handles above and every libuv
   * request or handle a layer started (uvp__loop_work_begin, sched.h), until
   * libuv is done with it.  The loop thread's; after uvp_ctx_close it
   * changes under mu.  (In the slot of an int and its padding: the fields
   * after it keep their places.) */
  size_t loop_work;
  /* Of loop_work, what is work (uvp_ctx_inflight): not the handles of
   * uvp's own (uvp__loop_handle_begin).  Changed as loop_work is. */
  size_t inflight;

  /* cross-thread; recursive so destructors may release under it */
  uv_mutex_t mu;
  int mu_depth;
  uvp__msg_t *mhead;
  uvp__msg_t *mtail;
  /* uvp_ctx_close_full's callback, called once loop_work reaches 0 */
  uvp_ctx_closed_cb closed_cb;
  void *closed_arg;
  /* Work that may end on another thread is in flight (uvp__mail_hold):
   * the teardown leaves the wake-up open for its ends.  The loop thread's. */
  bool mail_held;
  /* The wake-up is closing (or the host closed it): nothing may send it.
   * Written under mu. */
  bool mail_closed;
};

/* uv_stop()'s flag.  libuv 1.44 has no getter for it: the field is in uv.h's
 * public struct but marked internal, so it is read here and nowhere else.
 * The drain stops on it before each handler, as uv_run() would between
 * callbacks. */
static inline bool uvp__loop_stopping(const uv_loop_t *loop) {
  return loop->stop_flag != 0;
}

/* The open context this thread used last (and its id; NULL and 0 when
 * there is none): set by uvp__local_ctx_slow, cleared by uvp_ctx_close. */
extern UVP__TLS uvp_ctx_t *uvp__current;
extern UVP__TLS uint16_t uvp__current_id;

/* Whether p's context is the one this thread used last: then
 * uvp__cached() is that context (else ask uvp__local_ctx_slow).  Ids, not
 * addresses, are compared, and uvp__cached() reads uvp__current afresh, so
 * that the context's address does not wait for p's cache line: see
 * docs/internals/core.md.  No id is 0, which names no context, so a match
 * means uvp__current is set. */
static inline bool uvp__ctx_cached(const uvp_promise_t *p) {
  return p->ctx_id == uvp__current_id;
}
static inline uvp_ctx_t *uvp__cached(void) {
  return *(uvp_ctx_t *volatile *)&uvp__current;
}
/* p's context if this is its loop thread and it is open (then it becomes
 * uvp__current), else NULL. */
uvp_ctx_t *uvp__local_ctx_slow(const uvp_promise_t *p);

/* ---- other threads, teardown --------------------------------------------- */

/* Off-loop-thread entry: queue a resolve/reject/release for the loop.  A
 * message holds its promise without a reference of its own (the poster may
 * settle a promise whose reference the loop thread holds, which the loop
 * thread may let go of before the loop reads the message): the last
 * release of any promise therefore reads the mail first while there is
 * any (uvp__mail_waiting), so a message naming that promise applies to
 * it, not to the slot another promise takes next. */
enum {
  UVP__MSG_RESOLVE,
  UVP__MSG_REJECT,
  UVP__MSG_RELEASE,
  UVP__MSG_CALL /* uvp__post_call's: free_cb(value), m the poster's */
};
int uvp__post(uvp_promise_t *p, int op, int code, void *value,
              uvp_free_cb free_cb);
/* Read relaxed: whatever ordered a post before the loop thread's release
 * (a join, a lock, the program's own signal) orders the flag's store before
 * this load too.  Not while the mail is being read: the messages after
 * the one being applied are read next, in order, by that reading. */
static inline bool uvp__mail_waiting(const uvp_ctx_t *ctx) {
  return UVP__UNLIKELY(
             atomic_load_explicit(&ctx->mail, memory_order_relaxed)) &&
         !atomic_load_explicit(&ctx->reading_mail, memory_order_relaxed);
}
void uvp__read_mail(uvp_ctx_t *ctx);
/* The promise core's settles that the mail applies, and its teardown. */
int uvp__resolve_local(uvp_promise_t *p, void *value, uvp_free_cb free_cb);
int uvp__reject_local(uvp_promise_t *p, int code, void *payload,
                      uvp_free_cb free_cb);
void uvp__sweep(uvp_ctx_t *ctx); /* teardown of every live promise */
/* A call of the unhandled hook (on the caller's stack): the installation
 * it called, and the argument to let go of when it returns, if that
 * installation was replaced (or the context closed) meanwhile. */
typedef struct uvp__report_s {
  struct uvp__report_s *outer;
  unsigned int gen;
  void *arg;
  uvp_free_cb arg_free;
} uvp__report_t;

_Static_assert(offsetof(struct uvp_ctx_s, h) == 0,
               "a context begins with its head (uvp__head)");

#endif
