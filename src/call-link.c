/* Calls between loops: the registry of links, under the process-wide
 * lock, the links' making and freeing, and the tests' seam (call-int.h;
 * the design is call.c's opening comment).  Below call.c and
 * call-post.c: it names neither. */
#include <stdio.h>
#include <stdlib.h>

#include "call-int.h"
#include "registry.h"

/* ---- the registry of links ---------------------------------------------- */

static uv_once_t g_once = UV_ONCE_INIT;
static uv_mutex_t g_mu; /* the registry (call-int.h: its order) */
static link_t *g_links;

/* The calls' door is not opened here: it names the teardown, above this
 * file.  Whoever makes a link has opened it before (call.c's cstate, on
 * the caller's loop thread; uvp_call_post, call-post.c). */
static void g_init(void) {
  if (uv_mutex_init(&g_mu) != 0)
    abort();
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

/* The link of the calls posted to dst from threads with no context,
 * found or made (g_mu held); NULL with *rc as uvp__link_make_locked. */
link_t *uvp__link_posted_locked(uvp_ctx_t *dst, int *rc) {
  link_t *l = g_links;
  while (l != NULL && !(l->src == NULL && l->dst == dst))
    l = l->gnext;
  if (l == NULL)
    l = uvp__link_make_locked(NULL, dst, rc);
  return l;
}

/* The target's teardown (call.c's calls_closing): every link into ctx
 * leaves the registry, marked gone once the posts begun have ended; the
 * calls queued on them join *orphans.  Whether there was any. */
bool uvp__links_gone(uvp_ctx_t *ctx, call_t **orphans) {
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

/* ---- the tests' seam (call.h) ------------------------------------------ */

void (*uvp__call_gap)(bool with_calls);
