/* Private to call.c, call-post.c and call-link.c: calls between loops
 * (see call.c's opening comment for the design).  call.c is the calls'
 * way there and back, and the teardown; call-post.c the posted calls of
 * threads with no context; call-link.c, below both, the registry of
 * links. */
#ifndef UVP_CALL_INT_H
#define UVP_CALL_INT_H

#include <stdatomic.h>

#include "call.h"
#include "mail.h"
#include "op.h"

typedef struct link_s link_t;
typedef struct call_s call_t;

enum { C_QUEUED, C_RUNNING, C_DONE };

struct call_s {
  uvp__op_t op; /* first: the caller's side (unused by a posted call) */
  call_t *next; /* in the link's requests or answers (mu) */
  call_t *tprev, *tnext; /* among the target's following calls */
  link_t *link;
  uvp_call_fn fn;
  void *arg;
  uvp_free_cb arg_free;
  uint64_t left; /* the caller's deadline, ms (UVP_NO_DEADLINE) */
  uint64_t seq;  /* its number among the caller's calls (the recorder's) */
  const char *file;
  int line;
  int state;         /* C_* (mu) */
  int cut;           /* the caller's cut's code, or 0 (mu) */
  bool cut_done;     /* the target has cancelled q (target thread) */
  bool answered;     /* the caller applies the answer (caller thread) */
  bool follows;      /* the value is q's (answer) */
  bool arg_free_due; /* an orphan whose fn never ran */
  /* The answer, written by the target before it is queued. */
  int code;
  void *value;
  uvp_free_cb free_cb;
  uvp_promise_t *q;      /* followed on the target, or NULL */
  uvp_call_done_cb done; /* a posted call's, else NULL */
  void *done_arg;
  char cwhy[192]; /* the caller's cut, for the target (mu) */
  uint64_t since; /* following q on the target since (uvp__now) */
  char awhy[192]; /* the target's cause, for the caller ("": none) */
};

_Static_assert(sizeof(call_t) <= UVP__OP_SLOT, "a call takes a pool slot");

struct link_s {
  uv_mutex_t mu;
  uv_cond_t cv;   /* posting came back to 0 after dst_gone */
  uvp_ctx_t *src; /* NULL: posted calls, from threads with no context */
  uvp_ctx_t *dst;
  call_t *rq, *rq_tail; /* requests */
  call_t *an, *an_tail; /* answers */
  bool rq_posted, an_posted, cuts;
  /* The target was torn down: written under mu (and g_mu), read by the
   * caller without it for the refusal of a new call. */
  atomic_bool dst_gone;
  bool src_gone;    /* the caller's state is gone (mu) */
  bool registered;  /* in the registry (g_mu and mu) */
  unsigned posting; /* posts to dst under way (mu) */
  unsigned serving; /* drains of rq under way on dst (mu) */
  uint64_t rq_at;   /* when rq's message was posted (uv_hrtime; mu) */
  uvp__msg_t rq_msg, an_msg;
  link_t *gnext; /* the registry (g_mu) */
  link_t *snext; /* the caller's links (caller thread) */
  /* Calls started in this turn of the caller's run queue, queued in one
   * take of mu by its flush (caller thread). */
  call_t *stage, *stage_tail;
  link_t *fnext;   /* among the caller's links to flush */
  bool staged;     /* on that list */
  char from[40];   /* "from context SRC": its calls' name in dst's dump */
  size_t inflight; /* its calls awaiting an answer (caller thread) */
};

/* Followed values handed to callers: value -> the promise that owns it,
 * and the caller's context, whose thread lets the value go. */
typedef struct kept_s {
  void *value;
  uvp_promise_t *q;
  uvp_ctx_t *ctx;
  struct kept_s *next;
} kept_t;

/* Per context, on its loop thread. */
typedef struct cstate_s {
  uvp__ext_t ext;
  uvp_ctx_t *ctx;
  link_t *out;       /* links it calls through */
  size_t inflight;   /* its calls awaiting an answer */
  uint64_t seq;      /* calls started */
  size_t limit;      /* uvp_call_set_limit's; 0: none */
  call_t *following; /* calls to it following a promise */
  /* Torn down, calls_closing (call.c) has run.  Until then, a closed
   * context's drains and cuts run inside the sweep, under its lock, and
   * post nothing (a post takes another context's lock, whose own sweep
   * may post here): they leave it to calls_closing (call.c). */
  bool past_close;
  call_t *orphans;  /* answers left to it */
  link_t *flush;    /* links with calls staged */
  bool flush_armed; /* a reaction will flush them */
  kept_t *releases; /* followed promises to release */
} cstate_t;

/* ---- call-link.c: the registry of links, under its lock (g_mu), which
 * is taken before a link's, and under a context's (a context freed in a
 * release made under another's lock), never before one. */
void uvp__calls_lock(void);
void uvp__calls_unlock(void);
/* A link to dst, made and registered (registry locked); NULL with *rc
 * (UVP_ECLOSED: dst is torn down, or not a context any more; UV_ENOMEM). */
link_t *uvp__link_make_locked(uvp_ctx_t *src, uvp_ctx_t *dst, int *rc);
/* The caller lets go of l (registry locked); l may be freed. */
void uvp__link_drop_src(link_t *l);
/* Under l->mu: nothing names l any more, nor will (then whoever made it
 * so frees it: uvp__link_free). */
bool uvp__link_unused_locked(const link_t *l);
void uvp__link_free(link_t *l);
/* The link of the calls posted to dst from threads with no context,
 * found or made (registry locked); NULL with *rc as above. */
link_t *uvp__link_posted_locked(uvp_ctx_t *dst, int *rc);
/* ctx's teardown: every link into ctx leaves the registry, marked gone
 * once the posts begun have ended; their queued calls join *orphans
 * (takes the registry's lock).  Whether there was any. */
bool uvp__links_gone(uvp_ctx_t *ctx, call_t **orphans);

/* ---- call.c, for the posts and the teardown. */
/* Under l->mu: whether the requests' message must be posted (then
 * uvp__call_rq_post, with no lock held). */
bool uvp__call_rq_wake_locked(link_t *l);
void uvp__call_rq_post(link_t *l);
/* c ends with UVP_ECLOSED, its cause naming dst. */
void uvp__call_answer_closed(call_t *c, uvp_ctx_t *dst);
/* c leaves the target's calls following a promise. */
void uvp__call_follow_unlist(cstate_t *st, call_t *c);
/* The calls staged on st's links leave (or are refused). */
void uvp__call_flush_all(cstate_t *st);
/* The followed promises of k go (no lock held), and k's memory. */
void uvp__call_release_all(kept_t *k);

#endif
