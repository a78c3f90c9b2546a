/* Calls between loops: the registry of links, the calls posted from
 * threads with no context, and the teardown (call-int.h; the design is
 * call.c's opening comment). */
#include <stdio.h>
#include <stdlib.h>

#include "call-int.h"
#include "door.h"
#include "registry.h"

/* ---- the registry of links ---------------------------------------------- */

static uv_once_t g_once = UV_ONCE_INIT;
static uv_mutex_t g_mu; /* the registry (call-int.h: its order) */
static link_t *g_links;

static void g_init(void) {
  if (uv_mutex_init(&g_mu) != 0)
    abort();
  uvp__calls_door_open(); /* before the first link is made under g_mu */
}

void uvp__calls_lock(void) {
  uv_once(&g_once, g_init);
  uv_mutex_lock(&g_mu);
}

void uvp__calls_unlock(void) { uv_mutex_unlock(&g_mu); }
void uvp__link_free(link_t *l) {
  uv_cond_destroy(&l->cv);
  uv_mutex_destroy(&l->mu);
  uvp__free(l);
}

static void g_unlink(link_t *l) {
  for (link_t **pp = &g_links; *pp != NULL; pp = &(*pp)->gnext)
    if (*pp == l) {
      *pp = l->gnext;
      return;
    }
}

/* Under l->mu: nothing names l any more, nor will: its caller is gone,
 * it is out of the registry, no message naming it is in a mailbox, no
 * post to its target is under way.  Whoever makes it so frees it. */
bool uvp__link_unused_locked(const link_t *l) {
  return l->src_gone && !l->registered && !l->rq_posted && !l->an_posted &&
         l->posting == 0 && l->serving == 0;
}

/* The caller lets go of l (g_mu held). */
void uvp__link_drop_src(link_t *l) {
  if (l->registered)
    g_unlink(l);
  uv_mutex_lock(&l->mu);
  l->registered = false;
  l->src_gone = true;
  bool dead = uvp__link_unused_locked(l);
  uv_mutex_unlock(&l->mu);
  if (dead)
    uvp__link_free(l);
}

static link_t *link_alloc(uvp_ctx_t *src, uvp_ctx_t *dst, int *rc) {
  link_t *l = uvp__calloc(1, sizeof(*l));
  *rc = UV_ENOMEM;
  if (l == NULL)
    return NULL;
  if (uv_mutex_init(&l->mu) != 0) {
    uvp__free(l);
    return NULL;
  }
  if (uv_cond_init(&l->cv) != 0) {
    uv_mutex_destroy(&l->mu);
    uvp__free(l);
    return NULL;
  }
  l->src = src;
  l->dst = dst;
  l->src_gone = src == NULL; /* posted calls: no caller's state */
  if (src != NULL)
    snprintf(l->from, sizeof(l->from), "from context " UVP__PTR,
             UVP__PTRV(src));
  else
    snprintf(l->from, sizeof(l->from), "posted from a thread");
  *rc = 0;
  return l;
}

/* A link to dst, made and registered (g_mu held); NULL with *rc
 * (UVP_ECLOSED: dst is torn down, or not a context; UV_ENOMEM).  dst's
 * lock is not taken: g_mu is taken under a context's lock (a context
 * freed in a release made under another's), so no context's lock is
 * taken under g_mu. */
link_t *uvp__link_make_locked(uvp_ctx_t *src, uvp_ctx_t *dst, int *rc) {
  /* Not read unless it is a context: a freed one (or any other address)
   * would be freed memory.  It stays one while g_mu is held
   * (calls_freed).  A context whose teardown has begun but has not shut
   * its doors yet takes the link: calls_closing, after the shut, finds it
   * in the registry and answers its calls. */
  if (!uvp__registry_has(dst) || uvp__shut(dst)) {
    *rc = UVP_ECLOSED;
    return NULL;
  }
  link_t *l = link_alloc(src, dst, rc);
  if (l == NULL)
    return NULL;
  l->gnext = g_links;
  g_links = l;
  l->registered = true;
  return l;
}

/* ---- calls from threads with no context ------------------------------ */

int uvp_call_post(uvp_ctx_t *target, uvp_call_fn fn, void *arg,
                  uvp_free_cb arg_free, uvp_call_done_cb done, void *done_arg) {
  if (target == NULL || fn == NULL || done == NULL)
    return uvp__refuse(UV_EINVAL, arg, arg_free);
  call_t *c = uvp__calloc(1, sizeof(*c));
  if (c == NULL)
    return uvp__refuse(UV_ENOMEM, arg, arg_free);
  c->fn = fn;
  c->arg = arg;
  c->arg_free = arg_free;
  c->left = UVP_NO_DEADLINE;
  c->done = done;
  c->done_arg = done_arg;
  int rc = 0;
  /* The registry's lock until the call is queued: the target's teardown
   * frees this link (nothing else names it) under it. */
  uvp__calls_lock();
  link_t *l = g_links;
  while (l != NULL && !(l->src == NULL && l->dst == target))
    l = l->gnext;
  if (l == NULL)
    l = uvp__link_make_locked(NULL, target, &rc);
  bool wake = false;
  if (l != NULL) {
    c->link = l;
    c->state = C_QUEUED;
    uv_mutex_lock(&l->mu);
    if (l->dst_gone) {
      rc = UVP_ECLOSED;
    } else {
      if (l->rq_tail != NULL)
        l->rq_tail->next = c;
      else
        l->rq = c;
      l->rq_tail = c;
      wake = uvp__call_rq_wake_locked(l);
    }
    uv_mutex_unlock(&l->mu);
  }
  uvp__calls_unlock();
  if (rc != 0) {
    uvp__free(c);
    return uvp__refuse(rc, arg, arg_free);
  }
  if (wake)
    uvp__call_rq_post(l);
  return 0;
}

/* ---- teardown ------------------------------------------------------------ */

void (*uvp__call_gap)(bool with_calls);

static void calls_freed(uvp_ctx_t *ctx) {
  (void)ctx;         /* any context: the registry's lock is the whole wait */
  uvp__calls_lock(); /* a call that found the context has let go */
  uvp__calls_unlock();
}

/* The calls the target's teardown must answer that are its own: those
 * left to it, and those following a promise here (the sweep dropped
 * their handlers). */
static call_t *take_orphans(cstate_t *st) {
  call_t *orphans = st->orphans;
  st->orphans = NULL;
  while (st->following != NULL) {
    call_t *c = st->following;
    uvp__call_follow_unlist(st, c);
    c->cut_done = true;
    c->next = orphans;
    orphans = c;
  }
  return orphans;
}

/* Every link into ctx leaves the registry, marked gone once the posts
 * begun have ended; the calls queued on them join *orphans.  Whether
 * there was any. */
static bool links_gone(uvp_ctx_t *ctx, call_t **orphans) {
  bool any = false;
  uvp__calls_lock(); /* ctx is shut: no link to it is made any more */
  for (link_t **pp = &g_links, *l; (l = *pp) != NULL;) {
    if (l->dst != ctx) {
      pp = &l->gnext;
      continue;
    }
    any = true;
    uv_mutex_lock(&l->mu);
    l->dst_gone = true;
    while (l->posting != 0)
      uv_cond_wait(&l->cv, &l->mu);
    call_t *c = l->rq;
    l->rq = l->rq_tail = NULL;
    /* Its message, if one is in the mailbox, still names it: the drain
     * it runs (read after) frees it if it is the last. */
    l->registered = false;
    bool dead = uvp__link_unused_locked(l);
    uv_mutex_unlock(&l->mu);
    while (c != NULL) {
      call_t *n = c->next;
      c->arg_free_due = true;
      c->next = *orphans;
      *orphans = c;
      c = n;
    }
    *pp = l->gnext;
    if (dead)
      uvp__link_free(l);
  }
  uvp__calls_unlock();
  return any;
}

/* ctx has just been torn down (uvp_ctx_close, after the sweep, on its
 * loop thread, no lock held) and shut: every call queued to it is
 * answered with UVP_ECLOSED.  Whether the core must read ctx's mailbox
 * once more (a call's message may have come in after the sweep read
 * it). */
static bool calls_closing(uvp_ctx_t *ctx) {
  cstate_t *st = UVP__EXT_OF(ctx, UVP__EXT_CALLS, cstate_t);
  call_t *orphans = NULL;
  kept_t *releases = NULL;
  if (st != NULL) {
    st->past_close = true;
    orphans = take_orphans(st);
    uvp__lock(ctx); /* other threads add to them under it */
    releases = st->releases;
    st->releases = NULL;
    uvp__unlock(ctx); /* never the last: its handles are closing */
  }
  bool any = links_gone(ctx, &orphans);
  /* Answered after the registry's lock: an answer takes the caller's. */
  while (orphans != NULL) {
    call_t *n = orphans->next;
    uvp_promise_t *q = orphans->arg_free_due ? NULL : orphans->q;
    if (orphans->arg_free_due && orphans->arg_free != NULL)
      orphans->arg_free(orphans->arg);
    uvp__call_answer_closed(orphans, ctx);
    if (q != NULL)
      uvp_promise_release(q);
    orphans = n;
  }
  uvp__call_release_all(releases);
  /* The calls staged when the sweep dropped the flush, and the cuts it
   * made of this context's calls, go out now. */
  if (st != NULL && st->flush != NULL)
    uvp__call_flush_all(st);
  if (st != NULL)
    for (link_t *l = st->out; l != NULL; l = l->snext) {
      uv_mutex_lock(&l->mu);
      bool wake = l->cuts && !l->dst_gone && uvp__call_rq_wake_locked(l);
      uv_mutex_unlock(&l->mu);
      if (wake)
        uvp__call_rq_post(l);
    }
  return any;
}

void uvp__calls_door_open(void) {
  static const uvp__door_t door = {.closing = calls_closing,
                                   .freed = calls_freed};
  uvp__door_open(UVP__DOOR_CALLS, &door);
}
