/* The flight recorder's ring and its hooks (recorder.h; the contract is in
 * uvp/debug.h, how it works in docs/internals/diagnostics.md).  The writer is
 * recorder-write.c. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "cause.h"
#include "mono.h"
#include "recorder.h"
#include "work-door.h"

/* Hand-offs from fiber to fiber read the clock at one in EVERY. */
#define EVERY 64
/* The longest string kept (a stall report, a work's description). */
#define STR_MAX 1024
#define MIN_BYTES 4096

const unsigned char uvp__rec_kind[UVP__R_COUNT] = {
    [UVP__R_WORK_START] = UVP_RECORD_WORK,
    [UVP__R_WORK_DESC] = UVP_RECORD_WORK,
    [UVP__R_WORK_END] = UVP_RECORD_WORK,
    [UVP__R_SETTLE] = UVP_RECORD_WORK,
    [UVP__R_PARK] = UVP_RECORD_FIBERS,
    [UVP__R_RESUME] = UVP_RECORD_FIBERS,
    [UVP__R_FIBER_END] = UVP_RECORD_FIBERS,
    [UVP__R_NAME] = UVP_RECORD_FIBERS | UVP_RECORD_GROUPS,
    [UVP__R_CAUSE] = UVP_RECORD_CUTS,
    [UVP__R_CUT] = UVP_RECORD_CUTS,
    [UVP__R_GROUP] = UVP_RECORD_GROUPS,
    [UVP__R_MEMBER] = UVP_RECORD_GROUPS,
    [UVP__R_GROUP_END] = UVP_RECORD_GROUPS,
    [UVP__R_PREPARE] = UVP_RECORD_LOOP,
    [UVP__R_CHECK] = UVP_RECORD_LOOP,
    [UVP__R_IDLE] = UVP_RECORD_LOOP,
    [UVP__R_UVP_END] = UVP_RECORD_LOOP,
    [UVP__R_MAIL] = UVP_RECORD_LOOP,
    [UVP__R_STALL] = UVP_RECORD_STALLS,
    [UVP__R_SPAN_BEGIN] = UVP_RECORD_SPANS,
    [UVP__R_SPAN_END] = UVP_RECORD_SPANS,
    [UVP__R_CALL_OUT] = UVP_RECORD_WORK,
    [UVP__R_CALL_IN] = UVP_RECORD_WORK};

typedef uvp__rec_state_t rec_state_t;

static rec_state_t *state_of(const uvp_ctx_t *ctx) {
  return uvp__rec_state(ctx);
}

/* The clock uv_hrtime reads (mono.h). */
static uint64_t now_ns(void) { return uvp__mono_ns(); }

uint64_t uvp__rec_clock(uvp__rec_hot_t *h) {
  h->countdown = h->every;
  return h->now = now_ns();
}

/* ---- strings ------------------------------------------------------------- */

/* n bytes at offset `at` of the string ring, wrapping round its end:
 * the offset after them. */
static size_t copy_in(rec_state_t *st, size_t at, const char *s, size_t n) {
  size_t first = n < st->str_cap - at ? n : st->str_cap - at;
  memcpy(st->str + at, s, first);
  memcpy(st->str, s + first, n - first);
  at += n;
  return at >= st->str_cap ? at - st->str_cap : at;
}

/* Copy n bytes of s into the string ring: its position, or
 * UVP__REC_NOSTR.  A string is its length (2 bytes) and its bytes, which
 * may wrap round the ring's end. */
static uintptr_t str_put(rec_state_t *st, const char *s, size_t n) {
  if (n > STR_MAX)
    n = STR_MAX;
  if (s == NULL || n + 2 > st->str_cap)
    return UVP__REC_NOSTR;
  uint64_t pos = st->str_n;
  char len[2] = {(char)(n & 0xff), (char)(n >> 8)};
  size_t at = (size_t)(pos % st->str_cap);
  at = copy_in(st, at, len, 2);
  (void)copy_in(st, at, s, n);
  st->str_n += n + 2;
  return (uintptr_t)pos;
}

static size_t cap_of(const rec_state_t *st) {
  return (size_t)(st->h.end - st->h.ring);
}

/* Records written since it was turned on. */
static uint64_t written(const rec_state_t *st) {
  return st->h.laps * cap_of(st) + (size_t)(st->h.next - st->h.ring);
}

/* ---- the hooks ----------------------------------------------------------- */

static uvp__rec_t *put(rec_state_t *st, int type) {
  uvp__rec_t *r = uvp__rec_put(&st->h, type);
  r->a = r->b = r->c = r->d = NULL;
  r->file = NULL;
  r->line = 0;
  r->x = 0;
  r->y = 0;
  return r;
}

void uvp__rec_event(uvp_ctx_t *ctx, int type, const void *a, const void *b,
                    const void *c) {
  rec_state_t *st = state_of(ctx);
  if (!uvp__rec_wants(&st->h, type))
    return;
  uvp__rec_t *r = put(st, type);
  r->a = a;
  r->b = b;
  r->c = c;
}

/* Which kind a piece of work's start counts as: a fiber's spawn, a
 * group's join, work, or a promise with a described cancel hook. */
enum { START_WORK, START_FIBER, START_GROUP, START_DESCRIBED };
static int start_kind(const uvp__work_class_t *cls) {
  return (cls->flags & UVP__WORK_TASK)       ? START_FIBER
         : (cls->flags & UVP__WORK_UNLISTED) ? START_GROUP
                                             : START_WORK;
}

/* Work w has started through the door (its promise w->p), watched by
 * scope `watch`, at file:line. */
static void work_start(uvp_ctx_t *ctx, const uvp__work_t *w,
                       const uvp__scope_t *watch, const char *file, int line) {
  rec_state_t *st = state_of(ctx);
  int k = start_kind(w->cls);
  unsigned want = k == START_FIBER   ? UVP_RECORD_FIBERS
                  : k == START_GROUP ? UVP_RECORD_GROUPS
                                     : UVP_RECORD_WORK;
  if (!(st->h.kinds & want))
    return;
  /* A fiber's owner is its scope's (it tells none: it is a member). */
  const uvp__owner_t *o = uvp__work_owner(w);
  if (o == NULL && watch != NULL && k == START_FIBER)
    o = watch->owner;
  uvp__rec_t *r = put(st, UVP__R_WORK_START);
  r->a = w;
  r->b = w->p;
  r->c = o;
  r->d = w->cls->kind;
  r->file = file;
  r->line = line > 0 ? (uint32_t)line : 0;
  r->x = (uint8_t)k;
}

/* What pending p's described cancel hook says it waits for, if it has one
 * (its description is often complete only after the hook was set): work
 * of a program's or a binding's, ending with p's settle or cut, which
 * `start` begins. */
static UVP__NOINLINE void described_slow(uvp_ctx_t *ctx, const uvp_promise_t *p,
                                         bool start) {
  rec_state_t *st = state_of(ctx);
  const char *kind;
  uvp_describe_cb describe;
  void *arg;
  if (!(st->h.kinds & UVP_RECORD_WORK) ||
      !uvp__promise_described(p, &kind, &describe, &arg))
    return;
  uvp__rec_t *r;
  if (start) {
    const char *file;
    int line;
    uvp__site_get(p->site, &file, &line);
    r = put(st, UVP__R_WORK_START);
    r->a = r->b = p;
    r->c = uvp__scope_owner(ctx);
    r->file = file;
    r->line = line > 0 ? (uint32_t)line : 0;
    r->x = START_DESCRIBED;
  }
  char target[256] = "";
  int n = describe != NULL ? describe(arg, target, sizeof(target)) : 0;
  size_t len = n > 0 ? (size_t)n : 0;
  if (len >= sizeof(target))
    len = sizeof(target) - 1;
  uintptr_t k = str_put(st, kind, strnlen(kind, 31));
  uintptr_t t = str_put(st, target, strnlen(target, len));
  r = put(st, UVP__R_WORK_DESC);
  r->a = p;
  r->b = (const void *)k;
  r->c = (const void *)t;
}
/* Most promises have no hook (a group's members: a million of them). */
static inline void described(uvp_ctx_t *ctx, const uvp_promise_t *p,
                             bool start) {
  if (p->flags & UVP__F_CANCEL)
    described_slow(ctx, p, start);
}

void uvp__rec_work_desc(uvp_ctx_t *ctx, const uvp__work_t *w) {
  rec_state_t *st = state_of(ctx);
  if (!uvp__rec_wants(&st->h, UVP__R_WORK_DESC) || w->cls->describe == NULL)
    return;
  uvp__what_t what;
  memset(&what, 0, sizeof(what));
  snprintf(what.kind, sizeof(what.kind), "%s", w->cls->kind);
  what.left_ms = -1;
  w->cls->describe(w, &what);
  what.kind[sizeof(what.kind) - 1] = '\0';
  what.target[sizeof(what.target) - 1] = '\0';
  uintptr_t kind = str_put(st, what.kind, strlen(what.kind));
  uintptr_t target = str_put(st, what.target, strlen(what.target));
  uvp__rec_t *r = put(st, UVP__R_WORK_DESC);
  r->a = w;
  r->b = (const void *)kind;
  r->c = (const void *)target;
}

void uvp__rec_member(uvp_ctx_t *ctx, const void *g, const uvp_promise_t *p) {
  uvp__rec_hot_t *h = uvp__rec_hot(ctx);
  if (h->kinds & UVP_RECORD_GROUPS) {
    uvp__rec_t *r = uvp__rec_slot(h);
    r->track = h->track;
    r->a = g;
    r->b = p;
    r->type = UVP__R_MEMBER;
    /* A group may take a million members in a loop: its adds read the
     * clock as a fiber's hand-offs do, at one in `every`. */
    if (UVP__LIKELY(--h->countdown != 0))
      r->t = h->now | UVP__REC_GUESS;
    else
      r->t = uvp__rec_clock(h);
  }
}

void uvp__rec_redescribe(uvp_ctx_t *ctx, const uvp_promise_t *p) {
  described(ctx, p, false);
}

void uvp__rec_resume(uvp_ctx_t *ctx, const uvp_promise_t *fiber, int status,
                     bool starts) {
  rec_state_t *st = state_of(ctx);
  st->h.track = fiber;
  if (st->h.kinds & UVP_RECORD_FIBERS) {
    uvp__rec_t *r = uvp__rec_put(&st->h, UVP__R_RESUME);
    r->a = fiber;
    r->b = (const void *)(intptr_t)status;
    r->x = starts;
  }
}

void uvp__rec_fiber_end(uvp_ctx_t *ctx, const uvp_promise_t *fiber) {
  rec_state_t *st = state_of(ctx);
  if (st->h.kinds & UVP_RECORD_FIBERS) {
    uvp__rec_t *r = put(st, UVP__R_FIBER_END);
    r->a = fiber;
  }
  st->h.track = NULL; /* it switches to the loop's stack */
}

void uvp__rec_name(uvp_ctx_t *ctx, const void *id, bool group,
                   const char *name) {
  rec_state_t *st = state_of(ctx);
  if (!(st->h.kinds & (group ? UVP_RECORD_GROUPS : UVP_RECORD_FIBERS)))
    return;
  uintptr_t s =
      name != NULL ? str_put(st, name, strlen(name)) : str_put(st, "", 0);
  uvp__rec_t *r = put(st, UVP__R_NAME);
  r->a = id;
  r->b = (const void *)s;
  r->x = group;
}

/* A cancellation with cause c begins (cause.h's uvp__cause_enter). */
static void cause_begins(uvp_ctx_t *ctx, const uvp__cause_t *c) {
  rec_state_t *st = state_of(ctx);
  if (!uvp__rec_wants(&st->h, UVP__R_CAUSE))
    return;
  char text[256];
  int n = uvp_cause_format(&c->pub, text, sizeof(text));
  uintptr_t s = n >= 0 ? str_put(st, text, strlen(text)) : UVP__REC_NOSTR;
  uvp__rec_t *r = put(st, UVP__R_CAUSE);
  r->a = c;
  r->b = (const void *)s;
  r->x = (uint8_t)c->pub.kind;
}

void uvp__rec_group(uvp_ctx_t *ctx, const void *g, const void *w,
                    const void *parent, const char *file, int line) {
  rec_state_t *st = state_of(ctx);
  if (!uvp__rec_wants(&st->h, UVP__R_GROUP))
    return;
  uvp__rec_t *r = put(st, UVP__R_GROUP);
  r->a = g;
  r->b = w;
  r->c = parent;
  r->file = file;
  r->line = line > 0 ? (uint32_t)line : 0;
}

/* A stall waits to be written: out of the mark it was reported in. */
static void write_pending(rec_state_t *st) {
  if (!st->stall_pending || uvp__closed(st->ctx))
    return;
  st->stall_pending = false;
  (void)st->stall_write(st->ctx, &st->stall_opts);
}

/* The loop's turn: UVP__R_PREPARE, _CHECK, _IDLE, _UVP_END. */
static void loop_turn(uvp_ctx_t *ctx, int type) {
  rec_state_t *st = state_of(ctx);
  st->h.track = NULL;
  if (uvp__rec_wants(&st->h, type)) {
    uvp__rec_t *r = put(st, type);
    if (type == UVP__R_PREPARE)
      r->b = (const void *)(uintptr_t)uvp_ctx_inflight(ctx);
    else if (type == UVP__R_CHECK)
      r->b = (const void *)(uintptr_t)uv_now(uvp__loop(ctx));
  }
  if (type == UVP__R_PREPARE || type == UVP__R_UVP_END)
    write_pending(st);
}

void uvp__rec_stall(uvp_ctx_t *ctx, const uvp_stall_t *s, uint64_t ns,
                    const void *culprit) {
  rec_state_t *st = state_of(ctx);
  if (uvp__rec_wants(&st->h, UVP__R_STALL)) {
    uintptr_t pos = str_put(st, s->text, s->text != NULL ? strlen(s->text) : 0);
    uvp__rec_t *r = put(st, UVP__R_STALL);
    r->a = culprit;
    r->b = (const void *)(uintptr_t)ns;
    r->c = (const void *)pos;
    r->file = s->file;
    r->line = (uint32_t)s->line;
    r->x = (uint8_t)s->kind;
  }
  if (st->on_stall)
    st->stall_pending = true;
}

/* Span sp begins (its name `name`) or ends (with `status`): told by
 * tracectx.c.  A beginning gives sp its key (sp->rec). */
static void rec_span(uvp_ctx_t *ctx, uvp_span_t *sp, const char *name,
                     bool begins, int status) {
  rec_state_t *st = state_of(ctx);
  if (!uvp__rec_wants(&st->h, UVP__R_SPAN_BEGIN))
    return;
  if (!begins) {
    uvp__rec_t *r = put(st, UVP__R_SPAN_END);
    r->a = (const void *)sp->rec;
    r->b = (const void *)(intptr_t)status;
    return;
  }
  /* Its ids as text, the writer's to copy out as they are. */
  char text[UVP_TRACEPARENT_LEN + 16 + 256];
  static const char digits[] = "0123456789abcdef";
  (void)uvp_tracectx_format(&sp->tc, text);
  for (int i = 0; i < 8; i++) {
    text[UVP_TRACEPARENT_LEN + 2 * i] = digits[sp->parent_id[i] >> 4];
    text[UVP_TRACEPARENT_LEN + 2 * i + 1] = digits[sp->parent_id[i] & 15];
  }
  size_t n = strnlen(name, 255);
  memcpy(text + UVP_TRACEPARENT_LEN + 16, name, n);
  if (++st->spans == 0)
    st->spans = 1;
  sp->rec = st->spans;
  uintptr_t pos = str_put(st, text, UVP_TRACEPARENT_LEN + 16 + n);
  uvp__rec_t *r = put(st, UVP__R_SPAN_BEGIN);
  r->a = (const void *)sp->rec;
  r->b = (const void *)pos;
  r->x = (uint8_t)sp->kind;
}

/* ---- per context --------------------------------------------------------- */

static void prepare_cb(uv_prepare_t *h) {
  uvp_ctx_t *ctx = h->data;
  if (uvp__recording(ctx))
    loop_turn(ctx, UVP__R_PREPARE);
}

/* ---- what the core tells (watch.h) --------------------------------------- */

static void heard(uvp_ctx_t *ctx, int what, const void *a, const void *b,
                  const char *file, int n) {
  const void *code = (const void *)(intptr_t)n;
  switch (what) {
  case UVP__HEARD_WORK_START:
    work_start(ctx, a, b, file, n);
    break;
  case UVP__HEARD_WORK_END:
    uvp__rec_event(ctx, UVP__R_WORK_END, a, NULL, NULL);
    break;
  case UVP__HEARD_DESCRIBED:
    described(ctx, a, true);
    break;
  case UVP__HEARD_SETTLE:
    described(ctx, a, false); /* while its hook can still say */
    uvp__rec_event(ctx, UVP__R_SETTLE, a, code, NULL);
    break;
  case UVP__HEARD_CUT:
    described(ctx, a, false);
    uvp__rec_event(ctx, UVP__R_CUT, a, b, code);
    break;
  case UVP__HEARD_CAUSE:
    cause_begins(ctx, a);
    break;
  case UVP__HEARD_MAIL:
    uvp__rec_event(ctx, UVP__R_MAIL, a, code, b);
    break;
  case UVP__HEARD_CHECK:
    loop_turn(ctx, UVP__R_CHECK);
    break;
  case UVP__HEARD_IDLE:
    loop_turn(ctx, UVP__R_IDLE);
    break;
  case UVP__HEARD_SPAN_BEGIN:
    rec_span(ctx, (uvp_span_t *)(uintptr_t)a, b, true, 0); /* the span's */
    break;
  case UVP__HEARD_SPAN_END:
    rec_span(ctx, (uvp_span_t *)(uintptr_t)a, NULL, false, n);
    break;
  default:
    loop_turn(ctx, UVP__R_UVP_END);
    break;
  }
}

static uv_handle_t *prepare_handle(uvp_ctx_t *ctx) {
  rec_state_t *st = state_of(ctx);
  return st != NULL && st->prepare_open ? (uv_handle_t *)&st->prepare : NULL;
}

static const uvp__watch_hook_t hook = {heard, prepare_handle};

static void turn_off(rec_state_t *st) {
  uvp__head(st->ctx)->watch &= (uint8_t)~UVP__WATCH_REC;
  if (st->prepare_open && !uv_is_closing((uv_handle_t *)&st->prepare))
    uv_prepare_stop(&st->prepare);
  uvp__free(st->mem);
  st->mem = NULL;
  st->h.ring = st->h.end = st->h.next = NULL;
  st->str = NULL;
  st->bytes = st->str_cap = 0;
  st->h.laps = st->str_n = 0;
  st->stall_pending = false;
}

static void rec_close(uvp__ext_t *ext) {
  turn_off(UVP__CONTAINER_OF(ext, rec_state_t, h.ext));
}

static void rec_destroy(uvp__ext_t *ext) {
  uvp__free(UVP__CONTAINER_OF(ext, rec_state_t, h.ext));
}

static void rec_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  (void)ext;
  (void)out;
}

static rec_state_t *state_new(uvp_ctx_t *ctx) {
  static const uvp__ext_t hooks = {
      .close = rec_close, .destroy = rec_destroy, .stats = rec_stats};
  rec_state_t *st = uvp__ext_make(ctx, UVP__EXT_REC, sizeof(rec_state_t),
                                  offsetof(rec_state_t, h.ext), &hooks);
  if (st != NULL)
    st->ctx = ctx;
  return st;
}

static void open_prepare(rec_state_t *st) {
  uvp__ext_prepare_open(st->ctx, &st->prepare, &st->prepare_open);
}

/* A ring of `bytes`: 64-byte records, and an eighth of it for strings.
 * Its pages are touched now, so that recording never faults one in. */
static int ring_new(rec_state_t *st, size_t bytes) {
  if (bytes > SIZE_MAX - 64)
    return UV_ENOMEM;
  void *mem = uvp__malloc(bytes + 64);
  if (mem == NULL)
    return UV_ENOMEM;
  memset(mem, 0, bytes + 64);
  uvp__free(st->mem);
  st->mem = mem;
  size_t str_cap = bytes / 8;
  uintptr_t at = ((uintptr_t)mem + 63) & ~(uintptr_t)63;
  st->h.ring = st->h.next = (uvp__rec_t *)at;
  st->h.end = st->h.ring + (bytes - str_cap) / sizeof(uvp__rec_t);
  st->h.laps = 0;
  st->str = (char *)st->h.end;
  st->str_cap = str_cap;
  st->str_n = 0;
  st->bytes = bytes;
  return 0;
}

int uvp_ctx_set_recorder(uvp_ctx_t *ctx, size_t bytes, unsigned int flags) {
  unsigned known = UVP_RECORD_ALL | UVP_RECORD_EXACT;
  int rc = (flags & ~known) || (bytes != 0 && bytes < MIN_BYTES)
               ? UV_EINVAL
               : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  rec_state_t *st = state_of(ctx);
  if (bytes == 0) {
    if (st != NULL)
      turn_off(st);
    return 0;
  }
  if (st == NULL && (st = state_new(ctx)) == NULL)
    return UV_ENOMEM;
  if (st->bytes != bytes && (rc = ring_new(st, bytes)) != 0)
    return rc;
  st->h.kinds =
      (flags & UVP_RECORD_ALL) != 0 ? flags & UVP_RECORD_ALL : UVP_RECORD_ALL;
  st->h.every = (flags & UVP_RECORD_EXACT) ? 1 : EVERY;
  (void)uvp__rec_clock(&st->h);
  open_prepare(st);
  if (!uv_is_closing((uv_handle_t *)&st->prepare))
    uv_prepare_start(&st->prepare, prepare_cb);
  uvp__head(ctx)->watch_hook = &hook;
  uvp__head(ctx)->watch |= UVP__WATCH_REC;
  return 0;
}

int uvp__rec_on_stall(uvp_ctx_t *ctx, const uvp_record_opts_t *opts,
                      uvp__rec_write_fn write) {
  rec_state_t *st = state_of(ctx);
  if (opts == NULL) {
    if (st != NULL)
      st->on_stall = st->stall_pending = false;
    return 0;
  }
  if (st == NULL && (st = state_new(ctx)) == NULL)
    return UV_ENOMEM;
  st->stall_opts = *opts;
  st->stall_write = write;
  st->on_stall = true;
  return 0;
}

int uvp_ctx_recorder_stats(const uvp_ctx_t *ctx, uvp_recorder_stats_t *stats) {
  if (ctx == NULL || stats == NULL)
    return UV_EINVAL;
  if (uvp__refused_thread(ctx))
    return UVP_ETHREAD;
  memset(stats, 0, sizeof(*stats));
  const rec_state_t *st = state_of(ctx);
  if (st == NULL || st->bytes == 0)
    return 0;
  stats->bytes = st->bytes;
  stats->capacity = cap_of(st);
  stats->events = written(st);
  stats->kept = st->h.laps == 0 ? stats->events : stats->capacity;
  stats->str_bytes = st->str_n;
  return 0;
}
