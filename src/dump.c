/* The task dump (uvp_ctx_dump_tasks): every fiber, every group member,
 * every other pending promise something waits on and every piece of work
 * started and not ended, with what each waits for.  The layers tell it
 * about their tasks (the `tasks` hook of their per-context state); a
 * promise uvp's work produces says what it waits for through its record's
 * class (work-door.h); the rest comes from a walk over the promise pool,
 * and from the door's set of records cut while their work winds down
 * (their promise settled, it leads to them no more).  A summary counts the
 * tasks by what they wait for and lists the oldest; a full dump streams
 * one line per task, as text or as JSON lines.  Nothing is kept per
 * promise for it: it reads what is there.  UVP_DUMP_PROMISES's listing of
 * every pending promise is here too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cause.h"
#include "deadline.h"
#include "diag.h"
#include "dump.h"
#include "json-put.h"
#include "registry.h"
#include "tasks.h"
#include "trace.h"
#include "work-cut.h"

/* ---- names of fibers and groups ------------------------------------------ */

/* ---- per context: the slots' formatters ---------------------------------- */

typedef struct dump_state_s {
  uvp__ext_t ext;
  uvp_slot_format_cb format[UVP_SCOPE_SLOTS];
} dump_state_t;

static void state_destroy(uvp__ext_t *ext) {
  uvp__free(UVP__CONTAINER_OF(ext, dump_state_t, ext));
}

static void state_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  (void)ext;
  (void)out;
}

int uvp_ctx_set_slot_format(uvp_ctx_t *ctx, unsigned int slot,
                            uvp_slot_format_cb format) {
  int rc = slot >= UVP_SCOPE_SLOTS ? UV_EINVAL : uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  static const uvp__ext_t hooks = {.destroy = state_destroy,
                                   .stats = state_stats};
  dump_state_t *st = UVP__EXT_OF(ctx, UVP__EXT_DUMP, dump_state_t);
  if (st == NULL &&
      (st = UVP__EXT_MAKE(ctx, UVP__EXT_DUMP, dump_state_t, &hooks)) == NULL)
    return UV_ENOMEM;
  st->format[slot] = format;
  return 0;
}

/* ---- the dump ------------------------------------------------------------ */

#define KINDS 64
#define LINE_MAX_BYTES 4096
#define SLOT_VALUE_MAX 128

typedef struct kind_count_s {
  char kind[32];
  size_t n;
} kind_count_t;

/* A task kept for the summary's list of the oldest. */
typedef struct kept_s {
  uvp__task_t t;
  uint64_t age;
} kept_t;

struct uvp__dump_s {
  uvp__task_sink_t tasks; /* first: the layers' hooks tell tasks to it */
  uvp_ctx_t *ctx;
  const uvp_dump_opts_t *o;
  uint64_t now;   /* uvp__now */
  uint64_t epoch; /* what promises' `born` counts from */
  bool json, summary;
  int count;
  kind_count_t kinds[KINDS];
  int nkinds;
  size_t other; /* tasks whose kind found no room in kinds[] */
  kept_t *oldest;
  size_t noldest, cap;
  char line[LINE_MAX_BYTES];
  size_t len;
  size_t good;      /* JSON: the line up to its last whole member */
  bool cut;         /* line too long: ends "..." (JSON: "cut":true) */
  uvp__diag_t sink; /* where the lines go, without waiting (diag.h) */
  FILE *file;       /* instead, if set: UVP_DUMP_PROMISES's listing */
};

static void out(uvp__dump_t *d, const char *s, size_t n) {
  if (d->file != NULL)
    (void)fwrite(s, 1, n, d->file);
  else
    uvp__diag_out(&d->sink, s, n);
}

/* Append to the line being made, cutting it short (not overflowing). */
static void add(uvp__dump_t *d, const char *s, size_t n) {
  /* Room kept for the end: "...\n", or ",\"cut\":true}\n" after d->good. */
  size_t room = sizeof(d->line) - 16 - d->len;
  if (n > room) {
    n = room;
    d->cut = true;
  }
  memcpy(d->line + d->len, s, n);
  d->len += n;
}

/* add for json-put.h's helpers. */
static void add_to(void *d, const char *s, size_t n) { add(d, s, n); }

#define addf(d, ...) uvp__putf(add_to, (d), __VA_ARGS__)

/* A string: JSON's rules in JSON (json-put.h: any bytes give valid JSON),
 * else printable bytes as they are and the rest as '?'. */
static void add_str(uvp__dump_t *d, const char *s, size_t n) {
  if (d->json) {
    uvp__put_json_str(add_to, d, s, n);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    char ch = c >= 0x20 && c < 0x7f ? (char)c : '?';
    add(d, &ch, 1);
  }
}

static void add_cstr(uvp__dump_t *d, const char *s) {
  add_str(d, s != NULL ? s : "?", strlen(s != NULL ? s : "?"));
}

static void add_site(uvp__dump_t *d, const char *file, int line) {
  char buf[320];
  int n = snprintf(buf, sizeof(buf), "%s:%d", file != NULL ? file : "?", line);
  add_str(d, buf, n > 0 && (size_t)n < sizeof(buf) ? (size_t)n : 0);
}

static void add_promise_site(uvp__dump_t *d, const uvp_promise_t *p) {
  const char *file;
  int line;
  uvp__site_get(p->site, &file, &line);
  add_site(d, file, line);
}

/* What the work of record `work` is (started, not ended). */
static void what_of_work(const uvp__work_t *work, uvp__what_t *w) {
  w->kind[0] = w->target[0] = '\0';
  w->left_ms = -1;
  w->owner = uvp__work_owner(work); /* its class may name another */
  w->cut = NULL;
  snprintf(w->kind, sizeof(w->kind), "%s", work->cls->kind);
  work->cls->describe(work, w);
}

/* What pending p waits for. */
static void what_of(uvp__dump_t *d, const uvp_promise_t *p, uvp__what_t *w) {
  w->kind[0] = w->target[0] = '\0';
  w->left_ms = -1;
  w->owner = NULL;
  w->cut = NULL;
  (void)d;
  if (p->state != UVP__S_PENDING) {
    snprintf(w->kind, sizeof(w->kind), "%s",
             p->state == UVP__S_FULFILLED ? "fulfilled" : "rejected");
    return;
  }
  if (p->flags & UVP__F_WAITING) {
    snprintf(w->kind, sizeof(w->kind), "promise");
    const char *file;
    int line;
    uvp__site_get(p->link->site, &file, &line);
    snprintf(w->target, sizeof(w->target), "created at %s:%d",
             file != NULL ? file : "?", line);
    return;
  }
  const uvp__work_t *work = uvp__work_of(p);
  if (work != NULL) {
    what_of_work(work, w);
    return;
  }
  const char *kind = uvp__hook_describe(p, w->target, sizeof(w->target));
  if (kind != NULL) {
    snprintf(w->kind, sizeof(w->kind), "%s", kind);
    return;
  }
  snprintf(w->kind, sizeof(w->kind), "%s",
           (p->flags & UVP__F_OWNED) ? "uvp" : "program");
  if (!(p->flags & UVP__F_OWNED))
    snprintf(w->target, sizeof(w->target), "uvp_promise_resolve/reject");
}

/* The first combinator (a fan-in) p is an input of, undecided: its
 * result, or NULL. */
static const uvp_promise_t *fan_in_of(const uvp_promise_t *p) {
  if (p->state != UVP__S_PENDING)
    return NULL;
  for (const uvp__reaction_t *r = p->reactions; r != NULL; r = r->next) {
    if (uvp__rkind(r) != UVP__RK_CELL)
      continue;
    const uvp__cell_owner_t *o = uvp__rtarget(r);
    const uvp_promise_t *q =
        o->ops->settles != NULL ? o->ops->settles(o) : NULL;
    if (q != NULL)
      return q;
  }
  return NULL;
}

/* The group a promise is a member of, if any. */
static const uvp__owner_t *group_of(const uvp_promise_t *p) {
  for (const uvp__reaction_t *r = p->reactions; r != NULL; r = r->next) {
    if (uvp__rkind(r) != UVP__RK_CELL)
      continue;
    const uvp__cell_owner_t *o = uvp__rtarget(r);
    if (o->ops->answers_to != NULL)
      return o->ops->answers_to(o);
  }
  return NULL;
}

static void count_kind(uvp__dump_t *d, const char *kind) {
  for (int i = 0; i < d->nkinds; i++)
    if (strcmp(d->kinds[i].kind, kind) == 0) {
      d->kinds[i].n++;
      return;
    }
  if (d->nkinds == KINDS) {
    d->other++;
    return;
  }
  snprintf(d->kinds[d->nkinds].kind, sizeof(d->kinds[0].kind), "%s", kind);
  d->kinds[d->nkinds++].n = 1;
}

static void render(uvp__dump_t *d, const uvp__task_t *t, uint64_t age);

/* Keep t if it is among the oldest `cap` seen (a sorted array: the cap is
 * small). */
static void keep_oldest(uvp__dump_t *d, const uvp__task_t *t, uint64_t age) {
  size_t i = d->noldest;
  if (i == d->cap) {
    if (d->cap == 0 || d->oldest[i - 1].age >= age)
      return;
    i--;
  } else {
    d->noldest++;
  }
  for (; i > 0 && d->oldest[i - 1].age < age; i--)
    d->oldest[i] = d->oldest[i - 1];
  d->oldest[i] = (kept_t){*t, age};
}

static void dump_task(uvp__dump_t *d, const uvp__task_t *t) {
  /* A cut record's promise has settled: its `born` is gone. */
  uint64_t born = t->work != NULL ? t->since : d->epoch + t->promise->born;
  uint64_t age = d->now > born ? d->now - born : 0;
  d->count++;
  if (!d->summary) {
    render(d, t, age);
    return;
  }
  uvp__what_t w;
  if (t->waits != NULL)
    what_of(d, t->waits, &w);
  else if (t->work != NULL)
    what_of_work(t->work, &w);
  count_kind(d, t->waits != NULL || t->work != NULL ? w.kind : t->state);
  keep_oldest(d, t, age);
}

static void sink_task(uvp__task_sink_t *sink, const uvp__task_t *t) {
  dump_task(UVP__CONTAINER_OF(sink, uvp__dump_t, tasks), t);
}

/* JSON: the line so far is whole members; a line cut short is cut back to
 * here (so it stays one valid object, the members after it missing). */
static void whole(uvp__dump_t *d) {
  if (!d->cut)
    d->good = d->len;
}

/* The end of a line: "...", or JSON's "cut":true after the last whole
 * member (closing first `close`: the object that member is in, if not the
 * line's), then the newline; out.  add() left the room for it. */
static void end_line(uvp__dump_t *d, const char *close) {
  if (d->cut && d->json) {
    size_t n = strlen(close); /* 0 or 1 */
    d->len = d->good;
    memcpy(d->line + d->len, close, n);
    d->len += n;
    memcpy(d->line + d->len, ",\"cut\":true}", 12);
    d->len += 12;
  } else if (d->cut) {
    memcpy(d->line + d->len, "...", 3);
    d->len += 3;
  }
  d->line[d->len++] = '\n';
  out(d, d->line, d->len);
}

static void add_key(uvp__dump_t *d, const char *key, const char *text) {
  if (d->json)
    addf(d, ",\"%s\":", key);
  else
    addf(d, "%s", text);
}

/* The slots of scope s, each through its formatter. */
static void add_slots(uvp__dump_t *d, const uvp__scope_t *s) {
  const dump_state_t *st = UVP__EXT_OF(d->ctx, UVP__EXT_DUMP, dump_state_t);
  bool any = false;
  for (unsigned i = 0; i < UVP_SCOPE_SLOTS; i++) {
    void *v = uvp__scope_slot(s, i);
    if (v == NULL)
      continue;
    if (!any)
      add_key(d, "slots", "; slots ");
    if (d->json)
      addf(d, "%s\"%u\":", any ? "," : "{", i);
    else
      addf(d, "%s%u=", any ? ", " : "", i);
    any = true;
    char buf[SLOT_VALUE_MAX + 1];
    int n = -1;
    if (st != NULL && st->format[i] != NULL) {
      memset(buf, 0, sizeof(buf));
      n = st->format[i](v, buf, SLOT_VALUE_MAX);
      if (n < 0) {
        add_cstr(d, "(its format failed)");
        continue;
      }
      if ((size_t)n >= SLOT_VALUE_MAX) { /* cut short, marked so */
        buf[SLOT_VALUE_MAX - 3] = buf[SLOT_VALUE_MAX - 2] =
            buf[SLOT_VALUE_MAX - 1] = '.';
        n = SLOT_VALUE_MAX;
      }
    } else {
      n = snprintf(buf, sizeof(buf), UVP__PTR, UVP__PTRV(v));
    }
    add_str(d, buf, (size_t)n);
  }
  if (any && d->json)
    add(d, "}", 1);
  whole(d);
}

size_t uvp__slots_text(uvp_ctx_t *ctx, const uvp__scope_t *s, char *buf,
                       size_t cap) {
  const uvp__ext_t *ext = uvp__head(ctx)->ext[UVP__EXT_DUMP];
  const dump_state_t *st =
      ext != NULL ? UVP__CONTAINER_OF(ext, dump_state_t, ext) : NULL;
  size_t len = 0;
  for (unsigned i = 0; s != NULL && i < UVP_SCOPE_SLOTS && len + 1 < cap; i++) {
    void *v = uvp__scope_slot(s, i);
    if (v == NULL)
      continue;
    char val[SLOT_VALUE_MAX + 1];
    memset(val, 0, sizeof(val));
    int n = -1;
    if (st != NULL && st->format[i] != NULL)
      n = st->format[i](v, val, SLOT_VALUE_MAX);
    bool formatted = st != NULL && st->format[i] != NULL;
    if (!formatted)
      snprintf(val, sizeof(val), UVP__PTR, UVP__PTRV(v));
    else if (n < 0)
      snprintf(val, sizeof(val), "(its format failed)");
    val[SLOT_VALUE_MAX] = '\0';
    int k = snprintf(buf + len, cap - len, "%s%u=%s",
                     len == 0 ? "; slots " : ", ", i, val);
    if (k < 0)
      break;
    len = (size_t)k < cap - len ? len + (size_t)k : cap - 1;
  }
  return len;
}

/* The line's head: the task, its name, id, site and age. */
static void render_head(uvp__dump_t *d, const uvp__task_t *t, uint64_t age) {
  if (d->json) {
    addf(d, "{\"v\":%d", UVP_DUMP_VERSION);
    whole(d);
    add(d, ",\"task\":", 8);
    add_cstr(d, t->kind);
    if (t->name != NULL) {
      add(d, ",\"name\":", 8);
      add_cstr(d, t->name);
    }
    addf(d, ",\"id\":\"" UVP__PTR "\",\"site\":", UVP__PTRV(t->promise));
  } else if (t->name != NULL) {
    addf(d, "%s \"%s\" " UVP__PTR " at ", t->kind, t->name,
         UVP__PTRV(t->promise));
  } else {
    addf(d, "%s " UVP__PTR " at ", t->kind, UVP__PTRV(t->promise));
  }
  if (t->file != NULL)
    add_site(d, t->file, t->line);
  else
    add_promise_site(d, t->promise);
  if (d->json)
    addf(d, ",\"age_ms\":%llu", (unsigned long long)age);
  else
    addf(d, ", %llu ms old", (unsigned long long)age);
  whole(d);
  if (t->timed) {
    /* Idle: the rest of its age, parked or queued to run. */
    uint64_t idle = age * 1000 > t->busy_us ? age * 1000 - t->busy_us : 0;
    if (d->json)
      addf(d, ",\"busy_us\":%llu,\"idle_us\":%llu",
           (unsigned long long)t->busy_us, (unsigned long long)idle);
    else
      addf(d, ", busy %llu us, idle %llu ms", (unsigned long long)t->busy_us,
           (unsigned long long)(idle / 1000));
    whole(d);
  }
}

/* JSON: the combinator t's promise is an input of (`input_of`), the async
 * stack's next link where no task awaits t itself (a task awaits the
 * combinator: its waits_id). */
static void render_input_of(uvp__dump_t *d, const uvp__task_t *t) {
  const uvp_promise_t *fan = d->json ? fan_in_of(t->promise) : NULL;
  if (fan != NULL) {
    addf(d, ",\"input_of\":\"" UVP__PTR "\"", UVP__PTRV(fan));
    whole(d);
  }
}

/* What t waits for and since when (or its state); returns the group an
 * operation works for, when t is that operation. */
static const uvp__owner_t *render_wait(uvp__dump_t *d, const uvp__task_t *t) {
  render_input_of(d, t);
  if (t->waits == NULL && t->work == NULL) {
    add_key(d, "state", ", ");
    add_cstr(d, t->state);
    whole(d);
    return NULL;
  }
  uvp__what_t w;
  if (t->waits != NULL)
    what_of(d, t->waits, &w);
  else
    what_of_work(t->work, &w);
  uint64_t since = d->now > t->since ? d->now - t->since : 0;
  if (d->json) {
    addf(d, ",\"waiting_ms\":%llu,\"waits_for\":{\"kind\":",
         (unsigned long long)since);
    add_cstr(d, w.kind);
    add(d, ",\"target\":", 10);
    add_cstr(d, w.target);
    if (w.left_ms >= 0)
      addf(d, ",\"left_ms\":%lld", (long long)w.left_ms);
    add(d, "}", 1);
    whole(d);
    /* The async stack's next link (a task whose id this is awaits it). */
    if (t->waits != NULL && t->waits != t->promise) {
      addf(d, ",\"waits_id\":\"" UVP__PTR "\"",
           UVP__PTRV(uvp__waits_on(t->waits, 8)));
      whole(d);
    }
    if (t->await_file != NULL) {
      add(d, ",\"await\":", 9);
      add_site(d, t->await_file, t->await_line);
      whole(d);
    }
  } else {
    addf(d, ", waiting %llu ms", (unsigned long long)since);
    if (t->await_file != NULL) {
      add(d, " at ", 4);
      add_site(d, t->await_file, t->await_line);
    }
    add(d, " for ", 5);
    add_cstr(d, w.kind);
    if (w.target[0] != '\0') {
      add(d, " ", 1);
      add_cstr(d, w.target);
    }
    if (w.left_ms >= 0)
      addf(d, " (%lld ms left)", (long long)w.left_ms);
  }
  return t->waits == t->promise || t->work != NULL ? w.owner : NULL;
}

/* Group g and its parents; returns the scope to show (t's, or, for a
 * member, the group's). */
static const uvp__scope_t *render_groups(uvp__dump_t *d, const uvp__owner_t *g,
                                         const uvp__scope_t *scope) {
  if (g == NULL || g->ops->describe == NULL)
    return scope;
  add_key(d, "groups", "; in ");
  if (d->json)
    add(d, "[", 1);
  for (int depth = 0; g != NULL && depth < 8; depth++) {
    char buf[320];
    const uvp__scope_t *gs = NULL;
    const uvp__owner_t *up = g->ops->describe(g, buf, sizeof(buf), &gs);
    if (scope == NULL)
      scope = gs; /* a member's: the group's */
    if (depth > 0)
      add(d, d->json ? "," : " < ", d->json ? 1 : 3);
    add_cstr(d, buf);
    g = up;
  }
  if (d->json)
    add(d, "]", 1);
  whole(d);
  return scope;
}

static void render(uvp__dump_t *d, const uvp__task_t *t, uint64_t age) {
  d->len = 0;
  d->cut = false;
  render_head(d, t, age);
  const uvp__owner_t *work_of = render_wait(d, t);
  /* Cancelled while it still runs (a fiber cleaning up): who cut it. */
  const uvp__cause_t *cause = uvp__cause_of(t->promise);
  if (cause != NULL) {
    char why[256];
    (void)uvp_cause_format(&cause->pub, why, sizeof(why));
    add_key(d, "cause", "; cancelled: ");
    add_cstr(d, why);
    whole(d);
  }
  /* A member: its group; else an operation: the group it works for. */
  const uvp__owner_t *g = t->scope != NULL  ? t->scope->owner
                          : t->work != NULL ? NULL
                                            : group_of(t->promise);
  const uvp__scope_t *scope =
      render_groups(d, g != NULL ? g : work_of, t->scope);
  int64_t left = uvp__deadline_left_in(scope);
  if (left >= 0) {
    if (d->json)
      addf(d, ",\"deadline_left_ms\":%lld", (long long)left);
    else
      addf(d, "; deadline in %lld ms", (long long)left);
    whole(d);
  }
  if (scope != NULL)
    add_slots(d, scope);
  if (d->json)
    add(d, "}", 1);
  end_line(d, "");
}

/* ---- the walk over pending promises -------------------------------------- */

/* Whether something other than uvp's own observers waits on p (a handler,
 * a derived or adopting promise, a combinator, a group): only those make p
 * a task of its own.  A fiber's await and a timeout's watch are observers:
 * the fiber or the timeout is listed, naming p. */
static bool waited_by_other(const uvp_promise_t *p) {
  for (const uvp__reaction_t *r = p->reactions; r != NULL; r = r->next)
    if (uvp__rkind(r) != UVP__RK_NOTIFY &&
        uvp__rkind(r) != UVP__RK_NOTIFY_EMBEDDED)
      return true;
  return false;
}

/* Whether a fiber awaits p: the only embedded observer a pending promise
 * holds (an operation's completion is queued, not held). */
static bool awaited_by_fiber(const uvp_promise_t *p) {
  for (const uvp__reaction_t *r = p->reactions; r != NULL; r = r->next)
    if (uvp__rkind(r) == UVP__RK_NOTIFY_EMBEDDED)
      return true;
  return false;
}

/* Whether pending p is a task of its own.  The promise of work that has
 * started and not ended (an operation, a timer, a binding's record: its
 * record still holds it) is, awaited or not (nothing but a group's join
 * may wait for the work), unless only a fiber's await waits on it: the
 * fiber is listed, naming it.  Any other promise is when something other
 * than an observer waits on it. */
static bool is_task(const uvp_promise_t *p) {
  if (waited_by_other(p))
    return true;
  const uvp__work_t *work = uvp__work_of(p);
  return work != NULL && work->p != NULL &&
         !(work->cls->flags & UVP__WORK_UNLISTED) && !awaited_by_fiber(p);
}

/* The walk over every task (uvp__tasks_walk): where its tasks go, and what
 * promises' `born` counts from. */
typedef struct walk_s {
  uvp__task_sink_t *sink;
  uint64_t epoch;
} walk_t;

static bool promise_task(void *slot, void *arg) {
  uvp_promise_t *p = slot;
  walk_t *k = arg;
  if (p->state == UVP__S_FREE)
    return false;
  if (p->refs == 0 || p->state != UVP__S_PENDING)
    return true; /* being freed, or settled */
  const uvp__work_t *work = uvp__work_of(p);
  if (work != NULL && (work->cls->flags & UVP__WORK_TASK))
    return true; /* a fiber's: its layer lists it */
  if (!is_task(p))
    return true; /* nothing waits on it, or a fiber says it */
  const uvp__owner_t *g = group_of(p);
  uvp__task_t t = {g != NULL ? "member" : "promise",
                   p,
                   NULL,
                   0,
                   k->epoch + p->born,
                   NULL,
                   0,
                   p,
                   NULL,
                   NULL,
                   NULL,
                   NULL,
                   false,
                   0};
  k->sink->task(k->sink, &t);
  return true;
}

/* A record cut while its work winds down: its promise has settled. */
static void cut_task(void *arg, const uvp__work_t *w, uint32_t born) {
  walk_t *k = arg;
  uvp__task_t t = {"promise", w->p, NULL, 0, k->epoch + born, NULL, 0, NULL,
                   NULL,      NULL, NULL, w, false,           0};
  k->sink->task(k->sink, &t);
}

void uvp__tasks_walk(uvp_ctx_t *ctx, uvp__task_sink_t *sink) {
  for (int i = 0; i < UVP__EXT_COUNT; i++) {
    uvp__ext_t *ext = uvp__head(ctx)->ext[i];
    if (ext != NULL && ext->tasks != NULL)
      ext->tasks(ext, sink);
  }
  walk_t k = {sink, uvp__ctx_epoch(ctx)};
  uvp__promises_each(ctx, promise_task, &k);
  uvp__work_cut_each(ctx, cut_task, &k);
}

/* ---- UVP_DUMP_PROMISES: every pending promise ---------------------------- */

typedef struct listing_s {
  FILE *stream;
  uvp_ctx_t *ctx;
  uint64_t now; /* since the context's epoch */
  int count;
  uvp__dump_t line; /* a text line, for the work's groups */
} listing_t;

/* "    work: KIND [TARGET][ (LEFT ms left)][; in GROUP < ...][; deadline in
 * N ms]" for the work of record w. */
static void print_work(listing_t *l, const uvp__work_t *w) {
  uvp__what_t what;
  what_of_work(w, &what);
  uvp__dump_t *d = &l->line;
  d->len = 0;
  d->cut = false;
  addf(d, "    work: ");
  add_cstr(d, what.kind);
  if (what.target[0] != '\0') {
    add(d, " ", 1);
    add_cstr(d, what.target);
  }
  if (what.left_ms >= 0)
    addf(d, " (%lld ms left)", (long long)what.left_ms);
  int64_t left = uvp__deadline_left_in(render_groups(d, what.owner, NULL));
  if (left >= 0)
    addf(d, "; deadline in %lld ms", (long long)left);
  end_line(d, "");
}

/* Cut, and waiting for its work to wind down (a group's join): why. */
static void print_cut(listing_t *l, const uvp__cause_t *cut) {
  char why[256];
  (void)uvp_cause_format(&cut->pub, why, sizeof(why));
  fprintf(l->stream, "    cut: %s\n", why);
}

static bool list_promise(void *slot, void *arg) {
  uvp_promise_t *p = slot;
  listing_t *l = arg;
  if (p->state != UVP__S_PENDING || p->refs == 0) /* refs 0: being freed */
    return p->state != UVP__S_FREE;
  const char *what = (p->flags & UVP__F_WAITING)  ? " waiting on another"
                     : (p->flags & UVP__F_CANCEL) ? " cancellable"
                                                  : "";
  const char *file;
  int line;
  uvp__site_get(p->site, &file, &line);
  fprintf(l->stream,
          "[pending] " UVP__PTR " created at %s:%d age %llu ms refs %u%s\n",
          UVP__PTRV(p), file != NULL ? file : "?", line,
          (unsigned long long)(l->now - p->born), (unsigned)p->refs, what);
  const uvp__work_t *w = uvp__work_of(p);
  if (w != NULL && !(w->cls->flags & UVP__WORK_TASK)) { /* a fiber: below */
    print_work(l, w);
    uvp__what_t cut = {.left_ms = -1};
    w->cls->describe(w, &cut);
    if (cut.cut != NULL)
      print_cut(l, cut.cut);
  }
  if (p->trace != 0)
    uvp__trace_print(l->stream, p->trace, "    ");
  l->count++;
  return true;
}

/* A record cut, its work winding down: its settled promise, then its
 * work and the cut. */
static void list_cut(void *arg, const uvp__work_t *w, uint32_t born) {
  listing_t *l = arg;
  const uvp_promise_t *p = w->p;
  const char *file;
  int line;
  uvp__site_get(p->site, &file, &line);
  fprintf(l->stream,
          "[cut] " UVP__PTR
          " created at %s:%d age %llu ms refs %u, its work winding "
          "down\n",
          UVP__PTRV(p), file != NULL ? file : "?", line,
          (unsigned long long)(l->now > born ? l->now - born : 0),
          (unsigned)p->refs);
  print_work(l, w);
  const uvp__cause_t *c = uvp__cause_of(p);
  if (c != NULL)
    print_cut(l, c);
  if (p->trace != 0)
    uvp__trace_print(l->stream, p->trace, "    ");
  l->count++;
}

/* A stream whose text is read back whole when it is closed. */
#if defined(UVP_HAVE_OPEN_MEMSTREAM)
static FILE *text_open(char **text, size_t *len) {
  return open_memstream(text, len);
}
static int text_close(FILE *f, char **text, size_t *len) {
  (void)text;
  (void)len;
  return fclose(f);
}
#else
/* No open_memstream (Windows): a temporary file, read back as it closes. */
static FILE *text_open(char **text, size_t *len) {
  *text = NULL;
  *len = 0;
  return tmpfile();
}
static int text_close(FILE *f, char **text, size_t *len) {
  int rc = -1;
  long n;
  if (fflush(f) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (*text = malloc((size_t)n + 1)) != NULL) {
    *len = fread(*text, 1, (size_t)n, f);
    rc = *len == (size_t)n ? 0 : -1;
  }
  return fclose(f) == 0 ? rc : -1;
}
#endif

static int dump_promises(uvp_ctx_t *ctx, FILE *stream, uvp_dump_write_cb write,
                         void *arg) {
  /* A stream that could make us wait (a pipe, a socket, a terminal), or a
   * write callback, gets the dump rendered in memory first, then written
   * without waiting (diag.h); a file, or memory, as it is made. */
  listing_t *l = uvp__calloc(1, sizeof(*l));
  uvp__diag_t *w = uvp__malloc(sizeof(*w));
  if (l == NULL || w == NULL) {
    uvp__free(l);
    uvp__free(w);
    return UV_ENOMEM;
  }
  uvp__diag_open(w, stream, write, arg, false);
  char *text = NULL;
  size_t len = 0;
  FILE *out = w->fd >= 0 || write != NULL ? text_open(&text, &len) : stream;
  if (out == NULL) {
    uvp__free(l);
    uvp__free(w);
    return UV_ENOMEM;
  }
  int rc = 0;
  l->stream = out;
  l->ctx = ctx;
  l->now = uvp__now(ctx) - uvp__ctx_epoch(ctx);
  l->line.ctx = ctx;
  l->line.file = out; /* print_work's lines, as the rest */
  uvp__promises_each(ctx, list_promise, l);
  uvp__work_cut_each(ctx, list_cut, l);
  for (int i = 0; i < UVP__EXT_COUNT; i++) {
    uvp__ext_t *ext = uvp__head(ctx)->ext[i];
    if (ext != NULL && ext->dump != NULL)
      ext->dump(ext, out, &l->count);
  }
  if (out != stream) {
    if (text_close(out, &text, &len) == 0) {
      for (size_t at = 0, end; at < len; at = end) { /* line by line */
        const char *nl = memchr(text + at, '\n', len - at);
        end = nl != NULL ? (size_t)(nl - text) + 1 : len;
        uvp__diag_out(w, text + at, end - at);
      }
    } else {
      rc = UV_ENOMEM;
    }
    free(text);
  }
  int sunk = uvp__diag_close(w); /* UV_EAGAIN: cut short */
  int count = l->count;
  uvp__free(l);
  uvp__free(w);
  return rc != 0 ? rc : sunk != 0 ? sunk : count;
}

int uvp_ctx_dump_pending(uvp_ctx_t *ctx, FILE *stream) {
  uvp_dump_opts_t o = {.flags = UVP_DUMP_PROMISES, .stream = stream};
  return uvp_ctx_dump_tasks(ctx, &o);
}

int uvp_ctx_dump_tasks(uvp_ctx_t *ctx, const uvp_dump_opts_t *opts) {
  const int known = UVP_DUMP_JSON | UVP_DUMP_SUMMARY | UVP_DUMP_PROMISES;
  if (opts == NULL || (opts->stream == NULL && opts->write == NULL) ||
      (opts->flags & ~known) != 0 ||
      ((opts->flags & UVP_DUMP_PROMISES) && opts->flags != UVP_DUMP_PROMISES))
    return UV_EINVAL;
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  if (opts->flags & UVP_DUMP_PROMISES)
    return dump_promises(ctx, opts->stream, opts->write, opts->write_arg);
  uvp__dump_t *d = uvp__calloc(1, sizeof(*d));
  if (d == NULL)
    return UV_ENOMEM;
  d->tasks.task = sink_task;
  d->ctx = ctx;
  d->o = opts;
  d->now = uvp__now(ctx);
  d->epoch = uvp__ctx_epoch(ctx);
  d->json = (opts->flags & UVP_DUMP_JSON) != 0;
  d->summary = (opts->flags & UVP_DUMP_SUMMARY) != 0;
  uvp__diag_open(&d->sink, opts->stream, opts->write, opts->write_arg, d->json);
  if (d->summary) {
    d->cap = opts->oldest != 0 ? opts->oldest : 10;
    d->oldest = uvp__malloc(d->cap * sizeof(*d->oldest));
    if (d->oldest == NULL) {
      uvp__free(d);
      return UV_ENOMEM;
    }
  }
  uvp__tasks_walk(ctx, &d->tasks);
  if (d->summary) {
    d->len = 0;
    d->cut = false;
    if (d->json) {
      addf(d, "{\"v\":%d,\"tasks\":%d,\"by_what\":{", UVP_DUMP_VERSION,
           d->count);
      whole(d);
      for (int i = 0; i < d->nkinds; i++) {
        if (i > 0)
          add(d, ",", 1);
        add_cstr(d, d->kinds[i].kind);
        addf(d, ":%zu", d->kinds[i].n);
        whole(d);
      }
      if (d->other != 0)
        addf(d, "%s\"(other)\":%zu", d->nkinds > 0 ? "," : "", d->other);
      add(d, "}}", 2);
    } else {
      addf(d, "%d tasks; by what they wait for:", d->count);
      for (int i = 0; i < d->nkinds; i++) {
        addf(d, "%s ", i > 0 ? "," : "");
        add_cstr(d, d->kinds[i].kind);
        addf(d, " %zu", d->kinds[i].n);
      }
      if (d->other != 0)
        addf(d, ", (other) %zu", d->other);
    }
    end_line(d, d->json ? "}" : "");
    for (size_t i = 0; i < d->noldest; i++)
      render(d, &d->oldest[i].t, d->oldest[i].age);
  }
  int sunk = uvp__diag_close(&d->sink); /* UV_EAGAIN: cut short */
  rc = sunk != 0 ? sunk : d->count;
  uvp__free(d->oldest);
  uvp__free(d);
  return rc;
}
