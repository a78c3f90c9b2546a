/* uvp-gateway --health-down: each backend's health, owned by one worker
 * and shared with the others by calls between their loops (health.h).
 *
 * Verdicts carry a generation, bumped by the owner on each change: a push
 * and an answer travel on different links and may arrive in either
 * order, and a worker keeps the newest.  Reports leave from a timer's
 * callback, not from the handler that saw the outcome: that handler runs
 * in the request's group, under its deadline, and a call started there
 * would be the request's work (cut with it, or stopped at once past the
 * deadline). */
#include "health.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct verdict_s {
  uint64_t until; /* down until (uv_now, ms); 0: up */
  uint64_t gen;   /* the owner's change count */
} verdict_t;

struct health_net_s {
  uv_mutex_t mu;
  health_t **workers; /* joined and not left (mu) */
  unsigned nworkers;
  unsigned *owner; /* per backend */
  char *const *urls;
  size_t n;
  uint64_t down_ms;
  health_log_cb log;
};

/* An outcome waiting for the flush, or a handler's way back to its
 * backend. */
typedef struct ref_s {
  health_t *h;
  size_t i;
} ref_t;

struct health_s {
  health_net_t *net;
  unsigned id;
  uvp_ctx_t *ctx;
  uv_loop_t *loop;
  verdict_t *seen;      /* this worker's copy of every verdict */
  verdict_t *own;       /* the owner's, for the backends it owns */
  ref_t *refs;          /* on_verdict's arguments */
  signed char *pending; /* per backend: -1 a failure, 1 an answer, 0 none */
  size_t *queue, nqueue;
  uv_timer_t flush;
  bool left; /* health_leave has run */
};

enum { M_FAILED, M_ANSWERED, M_PUSH };

typedef struct msg_s {
  health_t *to; /* the target worker's (valid there while it is joined) */
  size_t i;
  int kind;
  unsigned from;
  verdict_t v; /* M_PUSH's */
} msg_t;

static unsigned owner_of(const char *url, unsigned workers) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)url; *p; p++)
    h = (h ^ *p) * 16777619u;
  return h % workers;
}

health_net_t *health_net_new(unsigned workers, char *const *urls, size_t n,
                             uint64_t down_ms, health_log_cb log) {
  health_net_t *net = calloc(1, sizeof(*net));
  if (net == NULL)
    return NULL;
  net->workers = calloc(workers, sizeof(*net->workers));
  net->owner = calloc(n ? n : 1, sizeof(*net->owner));
  if (net->workers == NULL || net->owner == NULL ||
      uv_mutex_init(&net->mu) != 0) {
    free(net->workers);
    free(net->owner);
    free(net);
    return NULL;
  }
  net->nworkers = workers;
  net->urls = urls;
  net->n = n;
  net->down_ms = down_ms;
  net->log = log;
  for (size_t i = 0; i < n; i++)
    net->owner[i] = owner_of(urls[i], workers);
  return net;
}

void health_net_free(health_net_t *net) {
  if (net == NULL)
    return;
  uv_mutex_destroy(&net->mu);
  free(net->workers);
  free(net->owner);
  free(net);
}

/* A newer verdict (or the owner's same one) replaces this worker's. */
static void take(health_t *h, size_t i, verdict_t v) {
  if (v.gen >= h->seen[i].gen)
    h->seen[i] = v;
}

static uvp_ret_t on_settled(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in; /* a push to a worker that closed meanwhile: nothing to do */
  return uvp_ret_pass();
}

/* On a worker: the owner's verdict. */
static uvp_ret_t on_push(uvp_ctx_t *target, void *arg) {
  msg_t *m = arg;
  (void)target;
  take(m->to, m->i, m->v);
  return uvp_ret_pass();
}

/* Start fn(to, m) on `to`'s loop from h's; m is the call's (freed by it,
 * or here).  Under net->mu: `to` has not left, so its context is open or
 * closing, never freed under the call. */
static void call_locked(health_t *h, health_t *to, msg_t *m, uvp_call_fn fn,
                        uvp_then_cb then, void *then_arg) {
  uvp_promise_t *p;
  m->to = to;
  if (uvp_call_start(h->ctx, to->ctx, fn, m, free, &p) != 0)
    return; /* m is freed (uvp.h, "Handing over") */
  if (uvp_promise_on(p, UVP_ON_BOTH | UVP_ON_TAKE, then, then_arg, NULL) != 0)
    uvp_promise_release(p);
}

/* The owner tells every worker (itself directly) its new verdict on i. */
static void push_all(health_t *o, size_t i) {
  health_net_t *net = o->net;
  take(o, i, o->own[i]);
  uv_mutex_lock(&net->mu);
  for (unsigned k = 0; k < net->nworkers; k++) {
    health_t *to = net->workers[k];
    msg_t *m;
    if (to == NULL || to == o || (m = calloc(1, sizeof(*m))) == NULL)
      continue;
    m->i = i;
    m->kind = M_PUSH;
    m->v = o->own[i];
    call_locked(o, to, m, on_push, on_settled, NULL);
  }
  uv_mutex_unlock(&net->mu);
}

static void say(health_t *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void say(health_t *o, const char *fmt, ...) {
  if (o->net->log == NULL)
    return;
  char line[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  o->net->log(o->id, line);
}

/* On the owner: a worker saw backend i fail or answer; the answer is the
 * owner's verdict, which the caller keeps (on_verdict). */
static uvp_ret_t on_report(uvp_ctx_t *target, void *arg) {
  msg_t *m = arg;
  health_t *o = m->to;
  size_t i = m->i;
  uint64_t now = uv_now(o->loop);
  verdict_t *v = &o->own[i];
  if (m->kind == M_FAILED) {
    bool was_up = v->until <= now;
    v->until = now + o->net->down_ms;
    if (was_up) {
      v->gen++;
      say(o, "backend %.200s down for %llu ms: a request failed on worker %u",
          o->net->urls[i], (unsigned long long)o->net->down_ms, m->from);
      push_all(o, i);
    }
  } else if (v->until != 0) {
    v->until = 0;
    v->gen++;
    say(o, "backend %.200s up again: it answered worker %u", o->net->urls[i],
        m->from);
    push_all(o, i);
  }
  verdict_t *out = malloc(sizeof(*out));
  if (out == NULL)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  (void)target;
  *out = *v;
  return uvp_ret_value(out, free);
}

static uvp_ret_t on_verdict(void *arg, const uvp_outcome_t *in) {
  ref_t *r = arg;
  if (in->status == 0 && in->value != NULL)
    take(r->h, r->i, *(const verdict_t *)in->value);
  return uvp_ret_pass();
}

/* A libuv callback: the reports leave under no request's scope. */
static void on_flush(uv_timer_t *t) {
  health_t *h = t->data;
  health_net_t *net = h->net;
  uv_mutex_lock(&net->mu);
  for (size_t k = 0; k < h->nqueue; k++) {
    size_t i = h->queue[k];
    int kind = h->pending[i] < 0 ? M_FAILED : M_ANSWERED;
    h->pending[i] = 0;
    health_t *o = net->workers[net->owner[i]];
    msg_t *m;
    if (o == NULL || (m = calloc(1, sizeof(*m))) == NULL)
      continue; /* the owner is not serving (yet, or any more) */
    m->i = i;
    m->kind = kind;
    m->from = h->id;
    call_locked(h, o, m, on_report, on_verdict, &h->refs[i]);
  }
  uv_mutex_unlock(&net->mu);
  h->nqueue = 0;
}

int health_join(health_net_t *net, unsigned id, uvp_ctx_t *ctx,
                health_t **out) {
  size_t n = net->n ? net->n : 1;
  health_t *h = calloc(1, sizeof(*h));
  if (h == NULL)
    return UV_ENOMEM;
  h->seen = calloc(n, sizeof(*h->seen));
  h->own = calloc(n, sizeof(*h->own));
  h->refs = calloc(n, sizeof(*h->refs));
  h->pending = calloc(n, 1);
  h->queue = calloc(n, sizeof(*h->queue));
  if (h->seen == NULL || h->own == NULL || h->refs == NULL ||
      h->pending == NULL || h->queue == NULL) {
    health_free(h);
    return UV_ENOMEM;
  }
  h->net = net;
  h->id = id;
  h->ctx = ctx;
  h->loop = uvp_ctx_loop(ctx);
  for (size_t i = 0; i < net->n; i++)
    h->refs[i] = (ref_t){h, i};
  uv_timer_init(h->loop, &h->flush);
  h->flush.data = h;
  uv_mutex_lock(&net->mu);
  net->workers[id] = h;
  uv_mutex_unlock(&net->mu);
  *out = h;
  return 0;
}

void health_leave(health_t *h) {
  if (h == NULL)
    return;
  uv_mutex_lock(&h->net->mu);
  h->net->workers[h->id] = NULL;
  uv_mutex_unlock(&h->net->mu);
  h->left = true;
  uv_close((uv_handle_t *)&h->flush, NULL);
}

void health_free(health_t *h) {
  if (h == NULL)
    return;
  free(h->seen);
  free(h->own);
  free(h->refs);
  free(h->pending);
  free(h->queue);
  free(h);
}

bool health_down(const health_t *h, size_t i) {
  return h->seen[i].until > uv_now(h->loop);
}

void health_saw(health_t *h, size_t i, int status) {
  if (h->left || status == UV_ECANCELED || status == UV_EHOSTDOWN)
    return;
  if (status == 0 && h->seen[i].until == 0)
    return;       /* up, as everyone knows: nothing to tell */
  if (status < 0) /* avoided here at once, before the owner's word */
    h->seen[i].until = uv_now(h->loop) + h->net->down_ms;
  if (h->pending[i] == 0)
    h->queue[h->nqueue++] = i;
  if (h->pending[i] >= 0)
    h->pending[i] = status < 0 ? -1 : 1;
  if (!uv_is_active((uv_handle_t *)&h->flush))
    uv_timer_start(&h->flush, on_flush, 0, 0);
}
