/* What the live console answers: one JSON document of a context's tasks
 * (the task dump's own JSON objects: the same walk, the same ids), a
 * panel (the dump's summary, the stall detector's and the recorder's
 * figures) and the warnings, computed here where the data is: each names
 * the task and the site that made it, and says why it fired. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cause.h"
#include "console-int.h"
#include "json-put.h"
#include "promise.h"
#include "site.h"
#include "stall.h"
#include "tasks.h"

#define CANCEL_GRACE_MS 1000  /* a cancelled fiber still running after */
#define STALL_RECENT_MS 60000 /* a stall report stays a warning for */
#define REC_LINES 16          /* recorder events shown */
#define REC_LINE_MAX 200      /* bytes of each */
#define SUMMARY_MAX 4096      /* the dump's summary line */
#define FOLLOW_MAX 64         /* promises followed from what a task waits for */

typedef struct doc_s {
  char *p;
  size_t len, cap;
  size_t line_start; /* tasks: where the line being copied began */
  bool sep;          /* tasks: a line ended, a comma before the next */
  bool oom, cut;
} doc_t;

static void put(doc_t *d, const char *s, size_t n) {
  if (d->oom)
    return;
  if (d->len + n + 1 > d->cap) {
    size_t cap = d->cap != 0 ? d->cap : 16384;
    while (cap < d->len + n + 1)
      cap *= 2;
    char *p = uvp__realloc(d->p, cap);
    if (p == NULL) {
      d->oom = true;
      return;
    }
    d->p = p;
    d->cap = cap;
  }
  memcpy(d->p + d->len, s, n);
  d->len += n;
}

static void puts_(doc_t *d, const char *s) { put(d, s, strlen(s)); }

/* put for json-put.h's helpers. */
static void put_to(void *d, const char *s, size_t n) { put(d, s, n); }

#define putf(d, ...) uvp__putf(put_to, (d), __VA_ARGS__)

/* A JSON string of a C string (NULL: empty), as the task dump writes one. */
static void put_str(doc_t *d, const char *s) {
  uvp__put_json_str(put_to, d, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

/* ---- the dump's lines ---------------------------------------------------- */

/* The full dump's JSON lines, made elements of an array: each newline
 * becomes a comma before the next line.  Past the cap the dump is cut
 * (UV_EAGAIN), back to the last whole line. */
static int tasks_write(void *arg, const char *text, size_t len) {
  doc_t *d = arg;
  if (d->cut)
    return UV_EAGAIN;
  if (d->len + len > UVP__CONSOLE_OUT_CAP) {
    d->cut = true;
    d->len = d->line_start;
    if (d->len > 0 && d->p[d->len - 1] == ',')
      d->len--; /* the comma before the line dropped */
    return UV_EAGAIN;
  }
  for (size_t i = 0; i < len;) {
    if (d->sep) {
      put(d, ",", 1);
      d->sep = false;
      d->line_start = d->len;
    }
    const char *nl = memchr(text + i, '\n', len - i);
    size_t end = nl != NULL ? (size_t)(nl - text) : len;
    put(d, text + i, end - i);
    if (nl != NULL) {
      d->sep = true;
      d->line_start = d->len;
    }
    i = end + (nl != NULL);
  }
  return d->oom ? UV_ENOMEM : 0;
}

typedef struct summary_s {
  char line[SUMMARY_MAX];
  size_t len;
  bool done;
} summary_t;

/* The summary's first line only (the oldest tasks after it are in the
 * full list anyway). */
static int summary_write(void *arg, const char *text, size_t len) {
  summary_t *s = arg;
  const char *nl = s->done ? NULL : memchr(text, '\n', len);
  size_t n = nl != NULL ? (size_t)(nl - text) : len;
  if (!s->done && s->len + n < sizeof(s->line)) {
    memcpy(s->line + s->len, text, n);
    s->len += n;
  }
  if (nl != NULL)
    s->done = true;
  return 0;
}

typedef struct rec_lines_s {
  char line[REC_LINES][REC_LINE_MAX];
  size_t next, n;
} rec_lines_t;

static int rec_write(void *arg, const char *text, size_t len) {
  rec_lines_t *r = arg;
  for (size_t i = 0; i < len;) {
    const char *nl = memchr(text + i, '\n', len - i);
    size_t end = nl != NULL ? (size_t)(nl - text) : len;
    size_t n = end - i < REC_LINE_MAX - 1 ? end - i : REC_LINE_MAX - 1;
    memcpy(r->line[r->next], text + i, n);
    r->line[r->next][n] = '\0';
    r->next = (r->next + 1) % REC_LINES;
    if (r->n < REC_LINES)
      r->n++;
    i = end + 1;
  }
  return 0;
}

/* ---- the panel ----------------------------------------------------------- */

static void put_panel(doc_t *d, uvp_ctx_t *ctx, bool recorder) {
  summary_t sum = {.len = 0};
  uvp_dump_opts_t so = {.flags = UVP_DUMP_JSON | UVP_DUMP_SUMMARY,
                        .write = summary_write,
                        .write_arg = &sum,
                        .oldest = 1};
  int rc = uvp_ctx_dump_tasks(ctx, &so);
  puts_(d, ",\"panel\":{\"summary\":");
  if (rc >= 0 && sum.done)
    put(d, sum.line, sum.len);
  else
    puts_(d, "null");
  uvp_stall_stats_t ss;
  if (uvp_ctx_stall_stats(ctx, &ss) != 0)
    memset(&ss, 0, sizeof(ss));
  putf(d, ",\"stall\":{\"threshold_ms\":%llu,\"stalls\":%llu,\"max_us\":%llu}",
       (unsigned long long)uvp__stall_threshold_ms(ctx),
       (unsigned long long)ss.stalls, (unsigned long long)ss.max_us);
  uvp_recorder_stats_t rs;
  if (uvp_ctx_recorder_stats(ctx, &rs) != 0)
    memset(&rs, 0, sizeof(rs));
  putf(d, ",\"recorder\":{\"bytes\":%zu,\"events\":%llu,\"kept\":%llu",
       rs.bytes, (unsigned long long)rs.events, (unsigned long long)rs.kept);
  if (recorder && rs.bytes != 0) {
    rec_lines_t *r = uvp__calloc(1, sizeof(*r));
    uvp_record_opts_t ro = {.format = UVP_RECORD_TEXT,
                            .last_ms = 250,
                            .write = rec_write,
                            .write_arg = r};
    if (r != NULL && uvp_ctx_recorder_write(ctx, &ro) >= 0) {
      puts_(d, ",\"last\":[");
      for (size_t i = 0; i < r->n; i++) {
        if (i > 0)
          put(d, ",", 1);
        put_str(d, r->line[(r->next + REC_LINES - r->n + i) % REC_LINES]);
      }
      put(d, "]", 1);
    }
    uvp__free(r);
  }
  puts_(d, "}}");
}

/* ---- the warnings -------------------------------------------------------- */

typedef struct lint_s {
  uvp__task_sink_t sink; /* first: uvp__tasks_walk tells tasks to it */
  uvp__console_t *con;
  doc_t *d;
  uint64_t now;
  bool any;
} lint_t;

static void warn_begin(lint_t *k, const char *kind) {
  puts_(k->d, k->any ? ",{\"kind\":" : "{\"kind\":");
  put_str(k->d, kind);
  k->any = true;
}

/* The entry following id (a task a warning may name), made now if new;
 * NULL when the table is full (the first ones are warned of). */
static uvp__console_seen_t *seen(lint_t *k, const void *id) {
  uvp__console_t *con = k->con;
  uvp__console_seen_t *s = NULL;
  for (size_t i = 0; i < con->nseen && s == NULL; i++)
    if (con->seen[i].id == id)
      s = &con->seen[i];
  if (s == NULL && con->nseen < UVP__CONSOLE_SEEN) {
    s = &con->seen[con->nseen++];
    *s = (uvp__console_seen_t){id, k->now, 0};
  }
  if (s != NULL)
    s->gen = con->gen;
  return s;
}

/* How a warning names task t. */
static void task_name(const uvp__task_t *t, char *buf, size_t cap) {
  if (strcmp(t->kind, "fiber") == 0 && t->name != NULL)
    snprintf(buf, cap, "fiber \"%s\"", t->name);
  else
    snprintf(buf, cap, "%s", t->kind);
}

/* A task that waits, through promises that follow one another (then's
 * results, promises resolved with promises), on one whose source was let
 * go unsettled (uvp__lost_its_source): nothing but a cancel or the
 * context's close will ever end its wait.  No grace: the mark is made and
 * undone only inside one call of the loop thread's, never seen half-way. */
static void lint_lost(lint_t *k, const uvp__task_t *t) {
  const uvp_promise_t *q =
      t->waits != NULL ? uvp__waits_on(t->waits, FOLLOW_MAX) : NULL;
  if (q == NULL || !uvp__lost_its_source(q))
    return;
  const char *file;
  int line;
  uvp__site_get(q->site, &file, &line);
  char task[160], site[300], why[700];
  task_name(t, task, sizeof(task));
  snprintf(site, sizeof(site), "%s:%d", file != NULL ? file : "?", line);
  warn_begin(k, "never-settles");
  puts_(k->d, ",\"task\":");
  put_str(k->d, task);
  putf(k->d, ",\"id\":\"" UVP__PTR "\",\"promise\":\"" UVP__PTR "\",\"site\":",
       UVP__PTRV(t->promise), UVP__PTRV(q));
  put_str(k->d, site);
  if (t->await_file != NULL) {
    char at[300];
    snprintf(at, sizeof(at), "%s:%d", t->await_file, t->await_line);
    puts_(k->d, ",\"await\":");
    put_str(k->d, at);
  }
  snprintf(why, sizeof(why),
           "it waits for the promise made at %s, which nothing can settle any "
           "more: what that promise followed was let go (its last reference "
           "released) while still pending, so no operation, timer, fiber or "
           "thread is left to settle it; only a cancel or the context's close "
           "ends this wait",
           site);
  puts_(k->d, ",\"why\":");
  put_str(k->d, why);
  put(k->d, "}", 1);
}

/* A task that waits for a call its target's loop has not taken for a
 * second (the dump's "whose loop has not run"): the call's site and why. */
static void lint_call(lint_t *k, const uvp__task_t *t) {
  const uvp_promise_t *q = t->waits != NULL  ? t->waits
                           : t->work != NULL ? t->work->p
                                             : NULL;
  const void *dst = NULL;
  const char *file = NULL;
  int line = 0;
  uint64_t ms = uvp__call_stuck(q, &dst, &file, &line);
  if (ms == 0)
    return;
  char task[160], why[600];
  task_name(t, task, sizeof(task));
  warn_begin(k, "call-stuck");
  puts_(k->d, ",\"task\":");
  put_str(k->d, task);
  putf(k->d, ",\"id\":\"" UVP__PTR "\",\"call\":\"" UVP__PTR "\",\"site\":",
       UVP__PTRV(t->promise), UVP__PTRV(q));
  snprintf(why, sizeof(why), "%s:%d", file != NULL ? file : "?", line);
  put_str(k->d, why);
  snprintf(why, sizeof(why),
           "the call made at %s:%d into context " UVP__PTR
           " has waited %llu ms for that context's loop to take it: its loop "
           "is not running (never run, or its uv_run returned) or is "
           "blocked, and the call waits without bound unless a deadline "
           "cuts it",
           file != NULL ? file : "?", line, UVP__PTRV(dst),
           (unsigned long long)ms);
  putf(k->d,
       ",\"target\":\"" UVP__PTR "\",\"ms\":%llu,\"why\":", UVP__PTRV(dst),
       (unsigned long long)ms);
  put_str(k->d, why);
  put(k->d, "}", 1);
}

/* A cancelled fiber: follow it; past the grace, a warning.  Any task: a
 * call it waits for, stuck, or a promise nothing can settle. */
static void lint_task(uvp__task_sink_t *sink, const uvp__task_t *t) {
  lint_t *k = (lint_t *)sink;
  lint_call(k, t);
  lint_lost(k, t);
  const uvp__cause_t *cause;
  if (strcmp(t->kind, "fiber") != 0 ||
      (cause = uvp__cause_of(t->promise)) == NULL)
    return;
  uvp__console_seen_t *s = seen(k, t->promise);
  if (s == NULL || k->now - s->first_ms < CANCEL_GRACE_MS)
    return;
  char buf[256], why[400];
  (void)uvp_cause_format(&cause->pub, buf, sizeof(buf));
  warn_begin(k, "cancelled-running");
  char task[160];
  task_name(t, task, sizeof(task));
  puts_(k->d, ",\"task\":");
  put_str(k->d, task);
  putf(k->d, ",\"id\":\"" UVP__PTR "\",\"site\":", UVP__PTRV(t->promise));
  const char *file = t->file;
  int line = t->line;
  if (file == NULL)
    uvp__site_get(t->promise->site, &file, &line);
  snprintf(why, sizeof(why), "%s:%d", file != NULL ? file : "?", line);
  put_str(k->d, why);
  puts_(k->d, ",\"cause\":");
  put_str(k->d, buf);
  snprintf(why, sizeof(why),
           "cancelled (%s) and still running %llu ms after the console "
           "first saw it so: its cleanup does not end, or it ignores the "
           "cancellation",
           buf, (unsigned long long)(k->now - s->first_ms));
  putf(k->d,
       ",\"for_ms\":%llu,\"why\":", (unsigned long long)(k->now - s->first_ms));
  put_str(k->d, why);
  put(k->d, "}", 1);
}

/* A group whose members all ended but which nobody closed, released or
 * joins: followed from the first snapshot that saw it so; past the
 * grace, a warning. */
static bool lint_group(void *slot, void *arg) {
  uvp_promise_t *p = slot;
  lint_t *k = arg;
  if (p->state == UVP__S_FREE)
    return false;
  if (p->refs == 0 || p->state != UVP__S_PENDING)
    return true;
  const uvp__work_t *w = uvp__work_of(p);
  const uvp__owner_t *g = w != NULL ? uvp__group_idle_open(w) : NULL;
  uvp__console_seen_t *s = g != NULL ? seen(k, p) : NULL;
  if (s == NULL || k->now - s->first_ms < CANCEL_GRACE_MS)
    return true;
  char desc[320], why[600];
  (void)g->ops->describe(g, desc, sizeof(desc), NULL);
  const char *at = strstr(desc, " at ");
  while (at != NULL && strstr(at + 4, " at ") != NULL)
    at = strstr(at + 4, " at ");
  warn_begin(k, "group-idle");
  puts_(k->d, ",\"task\":");
  put_str(k->d, desc);
  puts_(k->d, ",\"site\":");
  put_str(k->d, at != NULL ? at + 4 : "?");
  snprintf(why, sizeof(why),
           "every member of it has ended (for %llu ms at least), yet it was "
           "never closed (uvp_group_close), released, nor joined: its join "
           "never settles and nothing awaits it",
           (unsigned long long)(k->now - s->first_ms));
  putf(k->d,
       ",\"for_ms\":%llu,\"why\":", (unsigned long long)(k->now - s->first_ms));
  put_str(k->d, why);
  put(k->d, "}", 1);
  return true;
}

/* Forget the tasks this walk did not see (they ended). */
static void seen_sweep(uvp__console_t *con) {
  size_t j = 0;
  for (size_t i = 0; i < con->nseen; i++)
    if (con->seen[i].gen == con->gen)
      con->seen[j++] = con->seen[i];
  con->nseen = j;
}

static void stall_warnings(lint_t *k) {
  uvp__console_t *con = k->con;
  uint64_t thr = uvp__stall_threshold_ms(con->ctx);
  for (size_t i = 0; i < con->nstalls; i++) {
    const uvp__console_stall_t *s =
        &con->stalls[(con->stall_next + UVP__CONSOLE_STALLS - con->nstalls +
                      i) %
                     UVP__CONSOLE_STALLS];
    if (k->now - s->at_ms > STALL_RECENT_MS)
      continue;
    char why[640];
    snprintf(why, sizeof(why),
             "%s ran %llu ms without awaiting (stall threshold %llu ms): "
             "it holds the loop, every other task waits; %s",
             s->task, (unsigned long long)s->ms, (unsigned long long)thr,
             s->text);
    warn_begin(k, "busy");
    puts_(k->d, ",\"task\":");
    put_str(k->d, s->task);
    puts_(k->d, ",\"site\":");
    put_str(k->d, s->site);
    if (s->await[0] != '\0') {
      puts_(k->d, ",\"await\":");
      put_str(k->d, s->await);
    }
    putf(k->d,
         ",\"ms\":%llu,\"ago_ms\":%llu,\"why\":", (unsigned long long)s->ms,
         (unsigned long long)(k->now - s->at_ms));
    put_str(k->d, why);
    put(k->d, "}", 1);
  }
}

void uvp__console_stall(void *arg, const uvp_stall_t *st) {
  uvp__console_t *con = arg;
  if (st->kind != UVP_STALL_FIBER && st->kind != UVP_STALL_HANDLER)
    return; /* the program's own callbacks: no task of uvp's to name */
  uvp__console_stall_t *s = &con->stalls[con->stall_next];
  con->stall_next = (con->stall_next + 1) % UVP__CONSOLE_STALLS;
  if (con->nstalls < UVP__CONSOLE_STALLS)
    con->nstalls++;
  memset(s, 0, sizeof(*s));
  s->at_ms = uvp__now(con->ctx);
  s->ms = st->ms;
  s->kind = st->kind;
  if (st->kind == UVP_STALL_FIBER && st->name != NULL)
    snprintf(s->task, sizeof(s->task), "fiber \"%s\"", st->name);
  else
    snprintf(s->task, sizeof(s->task), "%s",
             st->kind == UVP_STALL_FIBER ? "fiber" : "handler");
  snprintf(s->site, sizeof(s->site), "%s:%d", st->file != NULL ? st->file : "?",
           st->line);
  if (st->await_file != NULL)
    snprintf(s->await, sizeof(s->await), "%s:%d", st->await_file,
             st->await_line);
  snprintf(s->text, sizeof(s->text), "%s", st->text != NULL ? st->text : "");
}

/* ---- the document -------------------------------------------------------- */

static const char *program_name(char *buf, size_t cap) {
  size_t n = cap;
  if (uv_exepath(buf, &n) != 0)
    return "?";
  const char *slash = strrchr(buf, '/');
  return slash != NULL ? slash + 1 : buf;
}

int uvp__console_snapshot(uvp__console_t *con, bool recorder, char **out,
                          size_t *len) {
  uvp_ctx_t *ctx = con->ctx;
  doc_t d = {.p = NULL};
  char exe[512];
  putf(&d, "{\"console\":1,\"pid\":%d,\"program\":", (int)uv_os_getpid());
  put_str(&d, program_name(exe, sizeof(exe)));
  putf(&d, ",\"ctx\":\"" UVP__PTR "\",\"now_ms\":%llu", UVP__PTRV(ctx),
       (unsigned long long)uvp__now(ctx));
  put_panel(&d, ctx, recorder);
  puts_(&d, ",\"tasks\":[");
  d.line_start = d.len;
  uvp_dump_opts_t o = {
      .flags = UVP_DUMP_JSON, .write = tasks_write, .write_arg = &d};
  int rc = uvp_ctx_dump_tasks(ctx, &o);
  if (rc < 0 && rc != UV_EAGAIN)
    d.oom = true;
  puts_(&d, "],\"warnings\":[");
  lint_t k = {{lint_task}, con, &d, uvp__now(ctx), false};
  con->gen++;
  uvp__tasks_walk(ctx, &k.sink);
  uvp__promises_each(ctx, lint_group, &k);
  seen_sweep(con);
  stall_warnings(&k);
  putf(&d, "],\"cut\":%s}\n", d.cut ? "true" : "false");
  if (d.oom) {
    uvp__free(d.p);
    return UV_ENOMEM;
  }
  *out = d.p;
  *len = d.len;
  return 0;
}
