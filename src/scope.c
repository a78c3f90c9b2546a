/* Scopes: context slots and the owner work belongs to (see scope.h). */
#include <string.h>

#include "scope.h"

#include "alloc.h"

/* A slot's value, shared by the scopes made from one another. */
struct uvp__slotval_s {
  uint32_t refs;
  void *value;
  uvp_free_cb free_cb;
};

static void slotval_unref(uvp__slotval_t *v) {
  if (v != NULL && --v->refs == 0) {
    if (v->free_cb != NULL)
      v->free_cb(v->value);
    uvp__free(v);
  }
}

/* Here, not in tracectx.c, which makes them: the scope lets its trace
 * context go, and the scopes sit below the trace context's API. */
void uvp__tracev_unref(uvp__tracev_t *t) {
  if (t != NULL && --t->refs == 0)
    uvp__free(t);
}

void *uvp__scope_slot(const uvp__scope_t *s, unsigned i) {
  return s != NULL && i < UVP_SCOPE_SLOTS && s->slots[i] != NULL
             ? s->slots[i]->value
             : NULL;
}

uvp__scope_t *uvp__scope_ref(uvp__scope_t *s) {
  s->refs++;
  return s;
}

void uvp__scope_unref(uvp__scope_t *s) {
  if (s == NULL || --s->refs != 0)
    return;
  for (int i = 0; i < UVP_SCOPE_SLOTS; i++)
    slotval_unref(s->slots[i]);
  uvp__tracev_unref(s->trace);
  uvp__owner_t *o = s->owner, *d = s->deadline, *held = s->held;
  uvp__free(s);
  if (d != NULL)
    d->ops->scope_gone(d);
  if (held != NULL)
    held->ops->scope_gone(held);
  if (o != NULL)
    o->ops->scope_gone(o); /* last: it may free the owner */
}

/* A scope with base's slots and trace context, `owner`, `deadline` and
 * `held`, each held. */
static uvp__scope_t *scope_new(const uvp__scope_t *base, uvp__owner_t *owner,
                               uvp__owner_t *deadline, uvp__owner_t *held) {
  uvp__scope_t *s = uvp__calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  s->refs = 1;
  if (base != NULL) {
    for (int i = 0; i < UVP_SCOPE_SLOTS; i++)
      if ((s->slots[i] = base->slots[i]) != NULL)
        s->slots[i]->refs++;
    if ((s->trace = base->trace) != NULL)
      s->trace->refs++;
  }
  s->owner = owner;
  if (owner != NULL)
    owner->ops->scope_made(owner);
  s->deadline = deadline;
  if (deadline != NULL)
    deadline->ops->scope_made(deadline);
  s->held = held;
  if (held != NULL)
    held->ops->scope_made(held);
  return s;
}

/* What base holds (see scope.h), which a scope keeping its deadline keeps. */
static uvp__owner_t *held_of(const uvp__scope_t *base) {
  return base != NULL ? base->held : NULL;
}

uvp__scope_t *uvp__scope_with_owner(uvp__scope_t *base, uvp__owner_t *owner) {
  return scope_new(base, owner, base != NULL ? base->deadline : NULL,
                   held_of(base));
}

uvp__scope_t *uvp__scope_with_deadline(uvp__scope_t *base,
                                       uvp__owner_t *deadline,
                                       uvp__owner_t *held) {
  return scope_new(base, base != NULL ? base->owner : NULL, deadline, held);
}

uvp__scope_t *uvp__scope_with_trace(uvp__scope_t *base, uvp__tracev_t *t) {
  uvp__scope_t *s =
      scope_new(base, base != NULL ? base->owner : NULL,
                base != NULL ? base->deadline : NULL, held_of(base));
  if (s == NULL)
    return NULL;
  uvp__tracev_unref(s->trace);
  if ((s->trace = t) != NULL)
    t->refs++;
  return s;
}

int uvp_scope_set(uvp_ctx_t *ctx, unsigned int slot, void *value,
                  uvp_free_cb free_cb) {
  int rc = slot >= UVP_SCOPE_SLOTS ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return uvp__refuse(rc, value, free_cb);
  uvp__slotval_t *v = NULL;
  if (value != NULL || free_cb != NULL) {
    v = uvp__malloc(sizeof(*v));
    if (v == NULL)
      return uvp__refuse(UV_ENOMEM, value, free_cb);
    *v = (uvp__slotval_t){1, value, free_cb};
  }
  uvp__scope_t *s = scope_new(
      uvp__head(ctx)->scope, uvp__scope_owner(ctx),
      uvp__head(ctx)->scope != NULL ? uvp__head(ctx)->scope->deadline : NULL,
      held_of(uvp__head(ctx)->scope));
  if (s == NULL) {
    uvp__free(v);
    return uvp__refuse(UV_ENOMEM, value, free_cb);
  }
  slotval_unref(s->slots[slot]);
  s->slots[slot] = v;
  uvp__scope_unref(uvp__head(ctx)->scope);
  uvp__head(ctx)->scope = s;
  return 0;
}

void *uvp_scope_get(const uvp_ctx_t *ctx, unsigned int slot) {
  if (ctx == NULL || slot >= UVP_SCOPE_SLOTS || uvp__head(ctx)->scope == NULL ||
      uvp__head(ctx)->scope->slots[slot] == NULL)
    return NULL;
  return uvp__head(ctx)->scope->slots[slot]->value;
}

int uvp_scope_clear(uvp_ctx_t *ctx) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  /* The slots and the trace context go (the callback serves another
   * request), not the owner nor the deadline: a group member's work
   * stays its group's, or the join would settle with that work still on
   * the loop, and under the deadline it was given. */
  uvp__owner_t *o = uvp__scope_owner(ctx);
  uvp__scope_t *cur = uvp__head(ctx)->scope, *s = NULL;
  uvp__owner_t *d = cur != NULL ? cur->deadline : NULL, *held = held_of(cur);
  if ((o != NULL || d != NULL || held != NULL) &&
      (s = scope_new(NULL, o, d, held)) == NULL)
    return UV_ENOMEM;
  uvp__scope_unref(uvp__head(ctx)->scope);
  uvp__head(ctx)->scope = s;
  return 0;
}
