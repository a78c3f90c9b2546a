/* Task groups' lives (group.c has their members): made, named, closed,
 * cancelled, joined and released; the join as the work of the scope the
 * group was made in, which a cut (a cancel, a deadline) or a teardown
 * reaches; and the group as its scopes' owner, as the task dump and the
 * console show it. */
#include <stdio.h>
#include <string.h>

#include "cause.h"
#include "deadline.h"
#include "group-int.h"
#include "recorder.h"
#include "trace.h"
#include "work-door.h"

/* ---- the scopes' owner --------------------------------------------------- */

/* The group as its scopes' owner (scope.h). */
static uvp_group_t *group_of(uvp__owner_t *o) {
  return UVP__CONTAINER_OF(o, uvp_group_t, owner);
}
static void owner_work_begin(uvp__owner_t *o) { uvp__group_hold(group_of(o)); }
static void owner_work_end(uvp__owner_t *o) { uvp__group_drop(group_of(o)); }
static void owner_scope_made(uvp__owner_t *o) { group_of(o)->scopes++; }
static void owner_scope_gone(uvp__owner_t *o) {
  uvp_group_t *g = group_of(o);
  g->scopes--;
  uvp__group_maybe_free(g);
}
static const uvp__owner_t *owner_describe(const uvp__owner_t *o, char *buf,
                                          size_t cap,
                                          const uvp__scope_t **scope);
static const uvp__owner_ops_t owner_ops = {
    owner_work_begin, owner_work_end,   NULL,
    owner_scope_made, owner_scope_gone, owner_describe};

/* The task dump: "group at file:line", then its parent group's. */
static const uvp__owner_t *owner_describe(const uvp__owner_t *o, char *buf,
                                          size_t cap,
                                          const uvp__scope_t **scope) {
  const uvp_group_t *g = UVP__CONTAINER_OF(o, uvp_group_t, owner);
  if (scope != NULL)
    *scope = g->scope;
  const char *file;
  int line;
  uvp__site_get(g->site, &file, &line);
  if (g->name != NULL)
    snprintf(buf, cap, "group \"%s\" at %s:%d", g->name,
             file != NULL ? file : "?", line);
  else
    snprintf(buf, cap, "group at %s:%d", file != NULL ? file : "?", line);
  const uvp__owner_t *parent = uvp__work_owner(&g->work);
  return parent != NULL && parent->ops == &owner_ops ? parent : NULL;
}

/* ---- the join ------------------------------------------------------------ */

/* The join was cut (cancelled, or its deadline passed): so is the group,
 * and the join, still pending, settles with the cut's code once every
 * member has ended (group.c's maybe_end), so that whoever awaits it, shielded,
 * can rely on nothing of the group's running any more.  Torn down, the join has
 * been rejected already. */
static void join_cancel(uvp__work_t *w, uvp_promise_t *join, int code) {
  uvp_group_t *g = UVP__CONTAINER_OF(w, uvp_group_t, work);
  (void)join;
  if (code == UV_ECANCELED || code == UV_ETIMEDOUT) {
    /* Run inside the cut's cancellation: its cause is current. */
    uvp__cause_t *c = uvp__head(g->ctx)->cause;
    if (c == NULL)
      c = &uvp__cause_program;
    if (g->cut == 0) {
      g->cut = code;
      g->cut_cause = uvp__cause_ref(c); /* the dump says it */
    }
    uvp__group_cancel_all(g, c); /* adding now says UV_ECANCELED, as after
                         group_cancel */
  } else {
    uvp__group_drop_lazy(
        g); /* teardown: members are torn down with the context */
    g->closed = true;
    uvp_promise_t *j = g->join;
    g->join = NULL;
    uvp__unref(j);
  }
  uvp__group_maybe_end(g);
  uvp__group_maybe_free(g);
}

/* The task dump: a group's join waits for its members; the line shows the
 * group (its parents, deadline and slots) as the one whose work it is. */
static void join_describe(const uvp__work_t *work, uvp__what_t *w) {
  const uvp_group_t *g = UVP__CONTAINER_OF(work, uvp_group_t, work);
  w->owner = &g->owner;
  w->cut = g->cut_cause;
  char why[160] = "";
  if (g->cut_cause != NULL) {
    why[0] = ' ';
    why[1] = '(';
    int n = uvp_cause_format(&g->cut_cause->pub, why + 2, sizeof(why) - 3);
    size_t at = n < 0 ? 2 : strlen(why);
    why[at] = ')';
    why[at + 1] = '\0';
  }
  snprintf(
      w->target, sizeof(w->target),
      "%zu running, %s waiting to start, %zu requests and handles open%s%s%s",
      g->nrunning, g->lazy_head != NULL ? "some" : "none", g->holds,
      g->closed ? "" : ", open to more",
      g->cut == UV_ETIMEDOUT   ? ", past its deadline"
      : g->cut == UV_ECANCELED ? ", cancelled"
                               : "",
      why);
}

static const uvp__work_class_t join_class = {
    join_cancel, join_describe, "group",
    UVP__WORK_IDLE | UVP__WORK_WINDDOWN | UVP__WORK_NOT_IN_LOOP |
        UVP__WORK_UNLISTED};

const uvp__owner_t *uvp__group_idle_open(const uvp__work_t *work) {
  if (work->cls != &join_class)
    return NULL;
  const uvp_group_t *g = UVP__CONTAINER_OF(work, uvp_group_t, work);
  if (!g->had_member || g->nrunning != 0 || g->lazy_head != NULL ||
      g->holds != 0 || g->closed || g->released || g->cancelled || g->cut != 0)
    return NULL;
  if (g->joined != NULL && g->joined->reactions != NULL)
    return NULL; /* something waits for its join: it is being joined */
  return &g->owner;
}

/* ---- the API: made, named, closed, cancelled, joined, released ---------- */

int uvp_group_new_at(uvp_ctx_t *ctx, const uvp_group_opts_t *opts,
                     uvp_group_t **out, const char *file, int line) {
  int known = UVP_GROUP_FAIL_FAST | UVP_GROUP_DISCARD_SETTLED |
              UVP_GROUP_CLOSE_WHEN_DONE;
  int rc = out == NULL || (opts != NULL && (opts->flags & ~known))
               ? UV_EINVAL
               : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  /* next()'s waiters: a ring of 16 to begin with, none in a group that
   * keeps no results (next() is refused). */
  size_t wcap =
      opts != NULL && (opts->flags & UVP_GROUP_DISCARD_SETTLED) ? 0 : 16;
  uvp_group_t *g = uvp__calloc(1, sizeof(*g));
  uvp_promise_t **w = wcap != 0 ? uvp__malloc(wcap * sizeof(*w)) : NULL;
  if (g == NULL || (w == NULL && wcap != 0)) {
    uvp__free(g);
    uvp__free(w);
    return UV_ENOMEM;
  }
  g->ctx = ctx;
  g->waiters = w;
  g->wcap = wcap;
  g->limit = opts != NULL ? opts->limit : 0;
  g->flags = opts != NULL ? opts->flags : 0;
  g->owner.ops = &owner_ops;
  g->scope = uvp__scope_with_owner(uvp__head(ctx)->scope, &g->owner);
  if (g->scope != NULL && opts != NULL && opts->deadline_ms != 0) {
    uvp__scope_t *s =
        uvp__scope_within(ctx, g->scope, opts->deadline_ms, file, line);
    uvp__scope_unref(g->scope);
    g->scope = s;
  }
  /* Watched by the group's own deadline, which ends the group; made by
   * work of another group (a member, or what one started), it is that
   * group's work, as its requests are. */
  if (g->scope == NULL || uvp__work_start_in(ctx, g->scope, &g->work,
                                             &join_class, file, line) != 0) {
    /* Its hook finds g not released, so it cannot free g. */
    uvp__scope_unref(g->scope);
    uvp__free(w);
    uvp__free(g);
    return UV_ENOMEM;
  }
  g->join = g->joined = g->work.p; /* the two references */
  g->site = g->join->site;
  if (uvp__recording(ctx))
    uvp__rec_group(ctx, g, &g->work, uvp__scope_owner(ctx), file, line);
  if (uvp__head(ctx)->traces)
    g->trace = g->join->trace = uvp__trace_intern(
        ctx, g->join->site, UVP__TK_GROUP, uvp__head(ctx)->trace);
  *out = g;
  return 0;
}

int uvp_group_set_name(uvp_group_t *g, const char *name) {
  int rc =
      g == NULL || !uvp__name_ok(name) ? UV_EINVAL : uvp__ctx_check(g->ctx);
  if (rc == 0 && g->released)
    rc = UVP_ECLOSED;
  char *copy = NULL;
  if (rc == 0 && name != NULL && (copy = uvp__name_dup(name)) == NULL)
    rc = UV_ENOMEM;
  if (rc != 0)
    return rc;
  uvp__free(g->name);
  g->name = copy;
  if (uvp__recording(g->ctx))
    uvp__rec_name(g->ctx, g, true, name);
  if (uvp__head(g->ctx)->traces) { /* the members started from now on */
    g->trace = uvp__trace_named(g->trace, name);
    if (g->joined != NULL)
      g->joined->trace = g->trace;
  }
  return 0;
}

int uvp_group_close(uvp_group_t *g) {
  int rc = g == NULL ? UV_EINVAL : uvp__ctx_check(g->ctx);
  if (rc == 0) {
    g->closed = true;
    uvp__group_maybe_end(g);
  }
  return rc;
}

int uvp_group_cancel(uvp_group_t *g) {
  int rc = g == NULL ? UV_EINVAL : uvp__ctx_check(g->ctx);
  if (rc == 0) {
    const char *file;
    int line;
    uvp__site_get(g->site, &file, &line);
    uvp_cause_t proto = {.kind = UVP_CAUSE_GROUP,
                         .file = file,
                         .line = line,
                         .message = g->name};
    uvp__cause_t *c = uvp__cause_new(&proto, NULL);
    uvp__group_cancel_all(g, c);
    uvp__cause_unref(c);
    uvp__group_maybe_end(g);
    uvp__group_maybe_free(g); /* a hook of a cancel may have released it */
  }
  return rc;
}

int uvp_group_join(uvp_group_t *g, uvp_promise_t **out) {
  int rc = g == NULL || out == NULL ? UV_EINVAL : uvp__ctx_check(g->ctx);
  if (rc == 0 && g->released)
    rc = UVP_ECLOSED;
  if (rc == 0) {
    uvp__retain_local(g->joined);
    *out = g->joined;
  }
  return rc;
}

size_t uvp_group_size(const uvp_group_t *g) {
  return g != NULL ? g->nrunning + (g->lazy_head != NULL ? 1 : 0) : 0;
}

void uvp_group_release(uvp_group_t *g) {
  if (g == NULL || g->released)
    return;
  g->released = true;
  g->closed = true; /* nobody can add any more */
  uvp_promise_t *j = g->joined;
  g->joined = NULL;
  uvp__scope_t *s = g->scope;
  g->scope = NULL;
  uvp__group_maybe_end(g);
  uvp__unref(j);
  uvp__scope_unref(s); /* may free g */
}
