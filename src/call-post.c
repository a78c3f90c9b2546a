/* Calls between loops: the calls posted from threads with no context
 * (call-int.h; the design is call.c's opening comment). */
#include "call-int.h"

/* The calls' door opens before a posted call's link is made (door.h). */
static uv_once_t door_once = UV_ONCE_INIT;

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
  uv_once(&door_once, uvp__calls_door_open); /* before its link is made */
  /* The registry's lock until the call is queued: the target's teardown
   * frees this link (nothing else names it) under it. */
  uvp__calls_lock();
  link_t *l = uvp__link_posted_locked(target, &rc);
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
