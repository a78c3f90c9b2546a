/* The flight recorder's JSON form (uvp_ctx_recorder_write's
 * UVP_RECORD_JSON, Chrome's trace event format: the contract is in
 * uvp/debug.h): the writer's third pass.  Per record the events it means,
 * with everything known at each begin (recorder-passes.c's second pass
 * found it), each end, and an end at the write for what is still open;
 * times clamped so that none goes back on a track (a flow's start at its
 * cause's time, written when the cut comes). */
#include <stdio.h>

#include "recorder-passes.h"

/* ---- strings ------------------------------------------------------------- */

/* The length of the valid UTF-8 sequence at s (a byte 0x80 and up), or 0:
 * no overlong form, no surrogate, nothing past U+10FFFF (RFC 3629). */
static size_t utf8_len(const unsigned char *s) {
  unsigned c = s[0];
  size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
  if (n == 0 || c > 0xf4)
    return 0;
  /* The second byte's range narrows after E0, ED, F0, F4. */
  unsigned lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80;
  unsigned hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
  if (s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < n; i++)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  return n;
}

/* A JSON string's bytes, unquoted: valid UTF-8 as it is, and escaped only
 * what JSON requires (controls as \u00XX, quote, backslash); a byte that
 * is no part of valid UTF-8 as \ufffd (U+FFFD, the replacement
 * character), so that any bytes make valid JSON. */
static void out_jbytes(writer_t *wr, const char *s) {
  static const char digits[] = "0123456789abcdef";
  const char *run = s;
  while (*s != '\0') {
    unsigned char c = (unsigned char)*s;
    if (UVP__LIKELY(c >= 0x20 && c < 0x80 && c != '"' && c != '\\')) {
      s++;
      continue;
    }
    size_t n = c >= 0x80 ? utf8_len((const unsigned char *)s) : 0;
    if (n > 0) {
      s += n;
      continue;
    }
    out(wr, run, (size_t)(s - run));
    if (c == '"' || c == '\\')
      out(wr, (const char[]){'\\', (char)c}, 2);
    else if (c >= 0x80)
      OUTL(wr, "\\ufffd");
    else
      out(wr,
          (const char[]){'\\', 'u', '0', '0', digits[c >> 4], digits[c & 15]},
          6);
    run = ++s;
  }
  out(wr, run, (size_t)(s - run));
}
static void out_jstr(writer_t *wr, const char *s) {
  out(wr, "\"", 1);
  out_jbytes(wr, s);
  out(wr, "\"", 1);
}

/* Microseconds with three decimals. */
static void out_us(writer_t *wr, uint64_t ns) {
  uvp__rw_u64(wr, ns / 1000);
  char b[4] = {'.', (char)('0' + ns / 100 % 10), (char)('0' + ns / 10 % 10),
               (char)('0' + ns % 10)};
  out(wr, b, 4);
}

/* "FILE:LINE": a site's file escaped once (a cache by its literal's
 * address: a program has few). */
static void out_site(writer_t *wr, const char *file, uint32_t line) {
  if (file == NULL)
    file = "?";
  site_t *c = &wr->sites[((uintptr_t)file >> 3) % SITE_CACHE];
  if (c->file != file) {
    size_t save = wr->len;
    out_jbytes(wr, file);
    size_t n = wr->len - save;
    c->file = n < sizeof(c->text) ? file : NULL;
    c->len = n < sizeof(c->text) ? n : 0;
    memcpy(c->text, wr->buf + save, c->len);
    wr->len = save;
  }
  out(wr, "\"", 1);
  if (c->file == file)
    out(wr, c->text, c->len);
  else
    out_jbytes(wr, file);
  out(wr, ":", 1);
  uvp__rw_u64(wr, line);
  out(wr, "\"", 1);
}

/* ---- events -------------------------------------------------------------- */

/* `,{"ph":PH,"pid":1,"tid":N,"ts":T` for a track's event, its time
 * clamped to the track's last (never back on a track); returns it. */
static uint64_t ev(writer_t *wr, const char *ph, uint32_t tid, uint64_t t) {
  if (tid < wr->last_cap) {
    if (t < wr->last[tid])
      t = wr->last[tid];
    wr->last[tid] = t;
  }
  OUTL(wr, ",{\"ph\":\"");
  outs(wr, ph);
  OUTL(wr, "\",\"pid\":1,\"tid\":");
  uvp__rw_u64(wr, tid);
  OUTL(wr, ",\"ts\":");
  out_us(wr, t - wr->t0 + TS_FROM);
  return t;
}
static void ev_name(writer_t *wr, const char *cat, const char *name) {
  OUTL(wr, ",\"cat\":\"");
  outs(wr, cat);
  OUTL(wr, "\",\"name\":");
  out_jstr(wr, name);
}
static void arg_raw(writer_t *wr, bool *first, const char *key) {
  outs(wr, *first ? ",\"args\":{\"" : ",\"");
  *first = false;
  outs(wr, key);
  OUTL(wr, "\":");
}
static void arg_str(writer_t *wr, bool *first, const char *key,
                    const char *val) {
  arg_raw(wr, first, key);
  out_jstr(wr, val);
}
static void arg_true(writer_t *wr, bool *first, const char *key) {
  arg_raw(wr, first, key);
  OUTL(wr, "true");
}
static void arg_ptr(writer_t *wr, bool *first, const char *key, const void *p) {
  arg_raw(wr, first, key);
  out(wr, "\"", 1);
  uvp__rw_hex(wr, p);
  out(wr, "\"", 1);
}
static void arg_site(writer_t *wr, bool *first, const char *file,
                     uint32_t line) {
  if (file == NULL)
    return;
  arg_raw(wr, first, "site");
  out_site(wr, file, line);
}
/* A status: "fulfilled", uvp's or libuv's name for the code, or, for a
 * code of a binding's own, "error -32001". */
static void arg_code(writer_t *wr, bool *first, const char *key, int code) {
  char buf[32];
  const char *name = code == 0 ? "fulfilled" : uvp_err_name(code);
  if (strncmp(name, "Unknown", 7) == 0) {
    snprintf(buf, sizeof(buf), "error %d", code);
    name = buf;
  }
  arg_str(wr, first, key, name);
}
static void ev_close(writer_t *wr, bool first) {
  if (!first)
    out(wr, "}", 1);
  out(wr, "}", 1);
  uvp__rw_line_end(wr);
}

/* What a work is: its description's kind, else its class's. */
static const char *work_kind(writer_t *wr, const ent_t *x, char *buf,
                             size_t cap) {
  if (uvp__rw_read(wr, x->desc_kind, buf, cap) > 0)
    return buf;
  if (x->kind == E_JOIN)
    return "group";
  return x->kind_lit != NULL ? x->kind_lit : "work";
}

static void thread_name(writer_t *wr, uint32_t tid, const char *name) {
  OUTL(wr, ",{\"ph\":\"M\",\"pid\":1,\"tid\":");
  uvp__rw_u64(wr, tid);
  OUTL(wr, ",\"name\":\"thread_name\",\"args\":{\"name\":");
  out_jstr(wr, name);
  OUTL(wr, "}}");
  uvp__rw_line_end(wr);
}

static void fiber_title(writer_t *wr, const ent_t *x, char *buf, size_t cap) {
  const char *name = uvp__rw_str(wr, x->name, NULL);
  int n = name != NULL && *name != '\0'
              ? snprintf(buf, cap, "fiber \"%s\"", name)
              : snprintf(buf, cap, "fiber " UVP__PTR, UVP__PTRV(x->id));
  if (x->file != NULL && n > 0 && (size_t)n < cap)
    snprintf(buf + n, cap - (size_t)n, " spawned at %s:%u", x->file, x->line);
}

static void group_title(writer_t *wr, const ent_t *x, char *buf, size_t cap) {
  const char *name = uvp__rw_str(wr, x->name, NULL);
  int n = name != NULL && *name != '\0'
              ? snprintf(buf, cap, "group \"%s\"", name)
              : snprintf(buf, cap, "group " UVP__PTR, UVP__PTRV(x->id));
  if (x->file != NULL && n > 0 && (size_t)n < cap)
    snprintf(buf + n, cap - (size_t)n, " at %s:%u", x->file, x->line);
}

static void slice_end(writer_t *wr, uint32_t tid, uint64_t t, bool open) {
  bool first = true;
  ev(wr, "E", tid, t);
  if (open)
    arg_true(wr, &first, "open");
  ev_close(wr, first);
}

/* A fiber's slices: its life ("fiber"), and in it "run" or "await ...". */
static void fiber_begin(writer_t *wr, ent_t *x, uint64_t t) {
  bool first = true;
  ev(wr, "B", fiber_tid(x), t);
  ev_name(wr, "fiber", "fiber");
  arg_ptr(wr, &first, "id", x->id);
  arg_site(wr, &first, x->file, x->line);
  const char *name = uvp__rw_str(wr, x->name, NULL);
  if (name != NULL && *name != '\0')
    arg_str(wr, &first, "name", name);
  if (x->owner != NULL)
    arg_ptr(wr, &first, "group", x->owner);
  if (!x->begun)
    arg_true(wr, &first, "cut_off");
  ev_close(wr, first);
  x->open = true;
  x->now = F_NONE;
}

static void fiber_inner_end(writer_t *wr, ent_t *x, uint64_t t, bool open) {
  if (x->now != F_NONE)
    slice_end(wr, fiber_tid(x), t, open);
  x->now = F_NONE;
}

/* status: the await's, or 1 (the fiber starts). */
static void run_begin(writer_t *wr, ent_t *x, uint64_t t, int status,
                      bool cut_off) {
  bool first = true;
  fiber_inner_end(wr, x, t, false);
  ev(wr, "B", fiber_tid(x), t);
  ev_name(wr, "fiber", "run");
  if (cut_off)
    arg_true(wr, &first, "cut_off");
  else if (status == 1)
    arg_true(wr, &first, "start");
  else if (status != 0) /* (fulfilled, the usual: said by its absence) */
    arg_code(wr, &first, "status", status);
  ev_close(wr, first);
  x->now = F_RUN;
}

/* r: the park (NULL: parked before the first record). */
static void await_begin(writer_t *wr, ent_t *x, uint64_t t, const uvp__rec_t *r,
                        uint32_t awaited) {
  char kind[64];
  const char *k = "?";
  const ent_t *a = awaited != NONE ? &wr->ents[awaited] : NULL;
  if (r != NULL)
    k = a != NULL && a->kind == E_FIBER ? "fiber"
        : a != NULL                     ? work_kind(wr, a, kind, sizeof(kind))
                                        : "promise";
  bool first = true;
  fiber_inner_end(wr, x, t, false);
  ev(wr, "B", fiber_tid(x), t);
  OUTL(wr, ",\"cat\":\"fiber\",\"name\":\"await ");
  out_jbytes(wr, k);
  OUTL(wr, "\"");
  if (r != NULL) {
    arg_site(wr, &first, r->file, r->line);
    arg_ptr(wr, &first, "promise", r->b);
    if (a != NULL && a->kind == E_WORK) {
      const char *target = uvp__rw_str(wr, a->desc_target, NULL);
      if (target != NULL && *target != '\0')
        arg_str(wr, &first, "target", target);
    }
  } else {
    arg_true(wr, &first, "cut_off");
  }
  ev_close(wr, first);
  x->now = F_AWAIT;
}

static void fiber_end(writer_t *wr, ent_t *x, uint64_t t, bool open) {
  fiber_inner_end(wr, x, t, open);
  slice_end(wr, fiber_tid(x), t, open);
  x->open = false;
}

/* A work's or a group's async slice ("b", "e"): on a track per name. */
static void async_ev(writer_t *wr, const char *ph, const ent_t *x, uint64_t t) {
  OUTL(wr, ",{\"ph\":\"");
  outs(wr, ph);
  OUTL(wr, "\",\"pid\":1,\"tid\":1,\"ts\":");
  out_us(wr, t - wr->t0 + TS_FROM);
  OUTL(wr, ",\"id\":\"");
  uvp__rw_u64(wr, x->num);
  OUTL(wr, "\"");
}

static void work_begin(writer_t *wr, ent_t *x, uint64_t t) {
  char kind[64], title[160];
  bool first = true;
  async_ev(wr, "b", x, t);
  if (x->kind == E_GROUP) {
    group_title(wr, x, title, sizeof(title));
    ev_name(wr, "group", "group");
    arg_str(wr, &first, "group", title);
    arg_ptr(wr, &first, "id", x->id);
  } else {
    ev_name(wr, "work", work_kind(wr, x, kind, sizeof(kind)));
    const char *target = uvp__rw_str(wr, x->desc_target, NULL);
    if (target != NULL && *target != '\0')
      arg_str(wr, &first, "target", target);
    arg_ptr(wr, &first, "promise", x->p);
  }
  arg_site(wr, &first, x->file, x->line);
  if (x->owner != NULL)
    arg_ptr(wr, &first, "in_group", x->owner);
  if (!x->begun)
    arg_true(wr, &first, "cut_off");
  ev_close(wr, first);
  x->open = true;
}

static void work_end(writer_t *wr, ent_t *x, uint64_t t, bool open) {
  char kind[64];
  bool first = true;
  async_ev(wr, "e", x, t);
  if (x->kind == E_GROUP)
    ev_name(wr, "group", "group");
  else
    ev_name(wr, "work", work_kind(wr, x, kind, sizeof(kind)));
  if (x->settled)
    arg_code(wr, &first, "status", x->status);
  if (x->cut) {
    arg_code(wr, &first, "cut", x->code);
    if (x->cause != NONE)
      arg_str(wr, &first, "cause",
              uvp__rw_str(wr, wr->ents[x->cause].desc_target, "?"));
  }
  if (open)
    arg_true(wr, &first, "open");
  ev_close(wr, first);
  x->open = false;
}

/* One end of a flow: "s" at its source, "f" at its end (bound to the
 * slice around it).  Its id is a hex number, as Perfetto's JSON importer
 * reads a flow's id (another string there drops the flow): the kind in
 * the top 4 bits, the entity n in the next 32, its k-th flow in the last
 * 28 (a cause cutting more than 2^28 tasks in one window would reuse
 * ids). */
static void flow_end(writer_t *wr, const char *ph, const char *cat, uint32_t n,
                     uint32_t k, uint32_t tid, uint64_t t) {
  static const char digits[] = "0123456789abcdef";
  uint64_t kind = strcmp(cat, "cause") == 0   ? 1
                  : strcmp(cat, "spawn") == 0 ? 2
                                              : 3; /* stall */
  uint64_t id = kind << 60 | (uint64_t)n << 28 | (k & 0xfffffffu);
  char hex[19] = "0x";
  for (int i = 0; i < 16; i++)
    hex[2 + i] = digits[(id >> (60 - 4 * i)) & 15];
  hex[18] = '\0';
  ev(wr, ph, tid, t);
  ev_name(wr, cat, cat);
  OUTL(wr, ",\"id\":\"");
  outs(wr, hex);
  OUTL(wr, "\",\"bp\":\"e\"");
  ev_close(wr, true);
}

static void instant(writer_t *wr, uint32_t tid, uint64_t t, const char *cat,
                    const char *name) {
  ev(wr, "i", tid, t);
  ev_name(wr, cat, name);
  OUTL(wr, ",\"s\":\"t\"");
}

/* The loop's track: "poll" (from the prepare to the loop's time after it,
 * then "I/O callbacks" to the check), "uvp" (a check or idle callback). */
typedef struct loop_s {
  int open; /* 0, 1 poll, 2 uvp */
  uint64_t poll_begin;
} loop_t;

static void loop_close(writer_t *wr, loop_t *lp, uint64_t t, bool open) {
  if (lp->open != 0)
    slice_end(wr, TID_LOOP, t, open);
  lp->open = 0;
}

static void loop_begin(writer_t *wr, loop_t *lp, uint64_t t, int open,
                       const char *name) {
  ev(wr, "B", TID_LOOP, t);
  ev_name(wr, "loop", name);
  lp->open = open;
  lp->poll_begin = t;
}

static void loop_rec(writer_t *wr, loop_t *lp, const uvp__rec_t *r,
                     uint64_t t) {
  bool first = true;
  switch (r->type) {
  case UVP__R_PREPARE:
    loop_close(wr, lp, t, false);
    loop_begin(wr, lp, t, 1, "poll");
    arg_raw(wr, &first, "in_flight");
    uvp__rw_u64(wr, (uint64_t)(uintptr_t)r->b);
    ev_close(wr, first);
    break;
  case UVP__R_CHECK: {
    if (lp->open == 1) {
      /* The loop's time says when the poll returned, to the ms. */
      uint64_t back = (uint64_t)(uintptr_t)r->b * 1000000u;
      if (back > lp->poll_begin && back < t) {
        back = ev(wr, "E", TID_LOOP, back);
        ev_close(wr, true);
        loop_begin(wr, lp, back, 1, "I/O callbacks");
        ev_close(wr, true);
      }
    }
    loop_close(wr, lp, t, false);
    loop_begin(wr, lp, t, 2, "uvp");
    arg_str(wr, &first, "callback", "check");
    ev_close(wr, first);
    break;
  }
  case UVP__R_IDLE:
    loop_close(wr, lp, t, false);
    loop_begin(wr, lp, t, 2, "uvp");
    arg_str(wr, &first, "callback", "idle");
    ev_close(wr, first);
    break;
  default: /* UVP__R_UVP_END */
    if (lp->open == 2)
      loop_close(wr, lp, t, false);
    break;
  }
}

/* Everything begun before the first record, at its time. */
static void begin_cut_off(writer_t *wr, loop_t *lp) {
  for (size_t e = 0; e < wr->nents; e++) {
    ent_t *x = &wr->ents[e];
    if (x->begun || x->kind == E_CAUSE || x->kind == E_JOIN)
      continue;
    if (x->kind == E_FIBER) {
      fiber_begin(wr, x, wr->t0);
      if (x->at_first == F_AWAIT)
        await_begin(wr, x, wr->t0, NULL, NONE);
      else
        run_begin(wr, x, wr->t0, 0, true);
    } else {
      work_begin(wr, x, wr->t0);
    }
  }
  if (wr->loop_at_first_poll || wr->loop_at_first_uvp) {
    bool first = true;
    loop_begin(wr, lp, wr->t0, wr->loop_at_first_poll ? 1 : 2,
               wr->loop_at_first_poll ? "poll" : "uvp");
    arg_true(wr, &first, "cut_off");
    ev_close(wr, first);
  }
}

static void cut_rec(writer_t *wr, const uvp__rec_t *r, size_t i, ent_t *x,
                    uint32_t e2) {
  char buf[64];
  bool first = true;
  uint64_t t = wr->t[i];
  /* Where the cut lands: the fiber cut, or the one waiting for the
   * promise cut; else the track that cut it. */
  uint32_t to = wr->tid[i];
  uint32_t by = uvp__rw_get(&wr->map, NS_AWAITED, r->a);
  if (x != NULL && x->kind == E_FIBER && x->open)
    to = fiber_tid(x);
  else if (by < wr->nents && wr->ents != NULL && wr->ents[by].open)
    to = fiber_tid(&wr->ents[by]);
  t = ev(wr, "i", to, t);
  ev_name(wr, "cause", "cut");
  OUTL(wr, ",\"s\":\"t\"");
  arg_ptr(wr, &first, "promise", r->a);
  arg_code(wr, &first, "code", (int)(intptr_t)r->c);
  if (e2 != NONE)
    arg_str(wr, &first, "cause",
            uvp__rw_str(wr, wr->ents[e2].desc_target, "?"));
  if (x != NULL && x->kind == E_WORK) {
    arg_str(wr, &first, "work", work_kind(wr, x, buf, sizeof(buf)));
    const char *target = uvp__rw_str(wr, x->desc_target, NULL);
    if (target != NULL && *target != '\0')
      arg_str(wr, &first, "target", target);
  }
  ev_close(wr, first);
  if (e2 != NONE && wr->ents[e2].flows < wr->ents[e2].cuts)
    flow_end(wr, "f", "cause", e2, wr->ents[e2].flows++, to, t);
}

/* Fiber e runs from record i, its await's status `status`. */
static void resume(writer_t *wr, uint32_t e, size_t i, int status) {
  ent_t *x = e != NONE ? &wr->ents[e] : NULL;
  if (x == NULL || !x->open)
    return;
  if (x->first_resume == i)
    flow_end(wr, "f", "spawn", e, 0, fiber_tid(x), wr->t[i]);
  if (x->awaiting != NULL)
    (void)uvp__rw_put(&wr->map, NS_AWAITED, x->awaiting, NONE);
  x->awaiting = NULL;
  run_begin(wr, x, wr->t[i], status, false);
}

/* The flow from fiber x's stall to its track, its end inside the run that
 * stalled: written with the stall (the end at its start), or, for a stall
 * reported once the fiber had returned, at the fiber's end. */
static void stall_flow(writer_t *wr, ent_t *x, uint64_t t) {
  if (x->stall_flow || !x->open)
    return;
  x->stall_flow = true;
  uint64_t len = (uint64_t)(uintptr_t)rec_at(wr, x->stall)->b;
  uint64_t from = wr->t[x->stall] - len;
  if (len > wr->t[x->stall] || from < wr->t0)
    from = wr->t0;
  flow_end(wr, "s", "stall", x->stall, 0, TID_STALLS, from);
  flow_end(wr, "f", "stall", x->stall, 0, fiber_tid(x), t);
}

/* The rest of stall record i's slice, begun at `from`: its culprit (the
 * promise whose handler stalled, or the fiber), its site, and a flow from
 * the stall to the culprit's track (the loop's for a handler). */
static void stall_culprit(writer_t *wr, const uvp__rec_t *r, size_t i,
                          uint64_t from, bool *first) {
  bool fiber = r->x == UVP_STALL_FIBER;
  if (r->a != NULL)
    arg_ptr(wr, first, fiber ? "fiber" : "promise", r->a);
  if (r->file != NULL)
    arg_site(wr, first, r->file, r->line);
  ev_close(wr, *first);
  ent_t *x = wr->ent[i] != NONE ? &wr->ents[wr->ent[i]] : NULL;
  if (x != NULL && x->stall == i) {
    stall_flow(wr, x, from);
  } else if (r->a != NULL && !fiber) {
    flow_end(wr, "s", "stall", (uint32_t)i, 0, TID_STALLS, from);
    flow_end(wr, "f", "stall", (uint32_t)i, 0, TID_LOOP, from);
  }
}

/* A slice's begin or end: work's, a fiber's life, a group's (record i,
 * r, its entity x). */
static void json_span(writer_t *wr, const uvp__rec_t *r, size_t i, ent_t *x) {
  uint64_t t = wr->t[i];
  if (x == NULL) /* (every start is one: pass 2 made it) */
    return;
  switch (r->type) {
  case UVP__R_WORK_START:
    if (x->kind == E_FIBER) {
      fiber_begin(wr, x, t);
      if (x->first_resume != NONE) /* the flow lands at its first run */
        flow_end(wr, "s", "spawn", wr->ent[i], 0, wr->tid[i], t);
    } else if (x->kind == E_WORK) {
      work_begin(wr, x, t);
    }
    break;
  case UVP__R_GROUP:
    work_begin(wr, x, t);
    break;
  case UVP__R_WORK_END:
    if (x->kind == E_WORK && x->open)
      work_end(wr, x, t, false);
    break;
  case UVP__R_SETTLE:
    if (x->ends_at_settle && x->open)
      work_end(wr, x, t, false);
    break;
  case UVP__R_GROUP_END:
    if (x->open)
      work_end(wr, x, t, false);
    break;
  case UVP__R_FIBER_END:
    if (x->stall != NONE && x->stall > i)
      stall_flow(wr, x, t);
    if (x->open)
      fiber_end(wr, x, t, false);
    break;
  default:
    break;
  }
}

/* A fiber parks (and the next runs), or the drain runs it. */
static void json_switch(writer_t *wr, const uvp__rec_t *r, size_t i, ent_t *x) {
  if (r->type == UVP__R_RESUME) {
    resume(wr, wr->ent[i], i, r->x ? 1 : (int)(intptr_t)r->b);
    return;
  }
  if (x != NULL && x->open) {
    await_begin(wr, x, wr->t[i], r, wr->ent2[i]);
    /* (Without memory for it, a cut of what it awaits lands elsewhere.) */
    if (uvp__rw_put(&wr->map, NS_AWAITED, r->b, wr->ent[i]) == 0)
      x->awaiting = r->b;
  }
  if (r->c != NULL)
    resume(wr, wr->ent3[i], i, r->x ? 1 : (int)(intptr_t)r->d);
}

/* A cancellation's cause, with the starts of its flows to what it cut;
 * or a cut. */
static void json_cut(writer_t *wr, const uvp__rec_t *r, size_t i, ent_t *x) {
  uint64_t t = wr->t[i];
  if (r->type == UVP__R_CUT) {
    cut_rec(wr, r, i, x, wr->ent2[i]);
    if (x != NULL && x->ends_at_settle && x->open)
      work_end(wr, x, t, false);
    return;
  }
  bool first = true;
  instant(wr, wr->tid[i], t, "cause", "cancel");
  arg_str(wr, &first, "cause", uvp__rw_str(wr, (uintptr_t)r->b, "?"));
  ev_close(wr, first);
  for (uint32_t k = 0; x != NULL && k < x->cuts; k++)
    flow_end(wr, "s", "cause", wr->ent[i], k, wr->tid[i], t);
}

/* A group's new member, or another thread's message applied. */
static void json_instant(writer_t *wr, const uvp__rec_t *r, size_t i) {
  bool first = true;
  if (r->type == UVP__R_MEMBER) {
    instant(wr, wr->tid[i], wr->t[i], "group", "member");
    arg_ptr(wr, &first, "group", r->a);
    arg_ptr(wr, &first, "promise", r->b);
    ev_close(wr, first);
    return;
  }
  int op = (int)(intptr_t)r->b;
  instant(wr, TID_LOOP, wr->t[i], "loop",
          op == 0   ? "mail: resolve"
          : op == 1 ? "mail: reject"
                    : "mail: release");
  arg_ptr(wr, &first, "promise", r->a);
  if (op == 1)
    arg_code(wr, &first, "code", (int)(intptr_t)r->c);
  ev_close(wr, first);
}

/* ---- spans: async slices by their W3C ids, what uvp-trace merge joins
 * processes by ------------------------------------------------------------ */

static const char *const span_kinds[] = {"internal", "server", "client",
                                         "producer", "consumer"};

/* A span's string (recorder.h: traceparent, parent id, name) into buf,
 * or NULL if it was overwritten. */
static const char *span_text(writer_t *wr, const ent_t *x, char *buf,
                             size_t cap) {
  int n = uvp__rw_read(wr, x->name, buf, cap);
  return n >= UVP_TRACEPARENT_LEN + 16 ? buf : NULL;
}

/* `,{"ph":PH,...,"cat":"span","id":"0x<span id>","name":NAME`. */
static void span_ev(writer_t *wr, const char *ph, const char *text,
                    uint64_t t) {
  OUTL(wr, ",{\"ph\":\"");
  outs(wr, ph);
  OUTL(wr, "\",\"pid\":1,\"tid\":1,\"ts\":");
  out_us(wr, t - wr->t0 + TS_FROM);
  OUTL(wr, ",\"id\":\"0x");
  out(wr, text + 36, 16);
  OUTL(wr, "\"");
  ev_name(wr, "span", text + UVP_TRACEPARENT_LEN + 16);
}

static void span_begin(writer_t *wr, ent_t *x, uint64_t t) {
  char text[UVP_TRACEPARENT_LEN + 16 + 260];
  if (span_text(wr, x, text, sizeof(text)) == NULL)
    return; /* no ids to say: neither end is written */
  bool first = true;
  span_ev(wr, "b", text, t);
  arg_raw(wr, &first, "trace_id");
  out(wr, "\"", 1);
  out(wr, text + 3, 32);
  OUTL(wr, "\",\"span_id\":\"");
  out(wr, text + 36, 16);
  out(wr, "\"", 1);
  if (strspn(text + UVP_TRACEPARENT_LEN, "0") < 16) {
    OUTL(wr, ",\"parent_id\":\"");
    out(wr, text + UVP_TRACEPARENT_LEN, 16);
    out(wr, "\"", 1);
  }
  OUTL(wr, ",\"flags\":\"");
  out(wr, text + 53, 2);
  out(wr, "\"", 1);
  arg_str(wr, &first, "kind",
          (unsigned)x->code < 5 ? span_kinds[x->code] : "internal");
  ev_close(wr, first);
  x->open = true;
}

static void span_end(writer_t *wr, ent_t *x, uint64_t t, bool open) {
  char text[UVP_TRACEPARENT_LEN + 16 + 260];
  if (!x->open || span_text(wr, x, text, sizeof(text)) == NULL)
    return;
  bool first = true;
  span_ev(wr, "e", text, t);
  if (open)
    arg_true(wr, &first, "open");
  else
    arg_code(wr, &first, "status", x->status);
  ev_close(wr, first);
  x->open = false;
}

/* A stall, on a track of its own: its start is the detector's bound on
 * it, which may reach back into the slices before it. */
static void json_stall(writer_t *wr, const uvp__rec_t *r, size_t i) {
  uint64_t t = wr->t[i];
  uint64_t len = (uint64_t)(uintptr_t)r->b;
  uint64_t from = t > len ? t - len : 0;
  bool cut_off = from < wr->t0, first = true;
  if (from < wr->stall_end || cut_off)
    from = cut_off && wr->t0 > wr->stall_end ? wr->t0 : wr->stall_end;
  if (from > t)
    from = t;
  wr->stall_end = t;
  ev(wr, "X", TID_STALLS, from);
  ev_name(wr, "stall", "stall");
  OUTL(wr, ",\"dur\":");
  out_us(wr, t - from);
  arg_str(wr, &first, "report", uvp__rw_str(wr, (uintptr_t)r->c, "?"));
  arg_raw(wr, &first, "ms");
  uvp__rw_u64(wr, len / 1000000u);
  if (cut_off)
    arg_true(wr, &first, "cut_off");
  stall_culprit(wr, r, i, from, &first);
  wr->last[TID_STALLS] = t;
}

/* A call between loops: a flow from the caller's record ("s") to its
 * work's on the target ("f"), each in its own context's file; the id,
 * also in args.call on both sides, is the caller's context and the
 * call's number there, so that two files read together pair them. */
static void json_call(writer_t *wr, const uvp__rec_t *r, size_t i) {
  static const char digits[] = "0123456789abcdef";
  bool sent = r->type == UVP__R_CALL_OUT, first = true;
  const void *caller = sent ? wr->ctx : r->c;
  /* The same on both sides, from what both know: the caller's context and
   * the call's number there, mixed (splitmix64's finaliser) into the hex
   * number Perfetto reads a flow's id as. */
  uint64_t z = (uint64_t)(uintptr_t)caller * 0x9e3779b97f4a7c15u ^
               (uint64_t)(uintptr_t)r->b;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  z ^= z >> 31;
  char id[19] = "0x";
  for (int k = 0; k < 16; k++)
    id[2 + k] = digits[(z >> (60 - 4 * k)) & 15];
  id[18] = '\0';
  ev(wr, sent ? "s" : "f", wr->tid[i], wr->t[i]);
  ev_name(wr, "call", "call");
  OUTL(wr, ",\"id\":\"");
  outs(wr, id);
  out(wr, "\"", 1);
  if (!sent)
    OUTL(wr, ",\"bp\":\"e\"");
  arg_str(wr, &first, "call", id);
  arg_raw(wr, &first, "number");
  uvp__rw_u64(wr, (uint64_t)(uintptr_t)r->b);
  arg_ptr(wr, &first, sent ? "into" : "from", r->c);
  arg_ptr(wr, &first, sent ? "promise" : "work", r->a);
  ev_close(wr, first);
}

static void json_rec(writer_t *wr, loop_t *lp, size_t i) {
  const uvp__rec_t *r = rec_at(wr, i);
  ent_t *x = wr->ent[i] != NONE ? &wr->ents[wr->ent[i]] : NULL;
  switch (r->type) {
  case UVP__R_WORK_START:
  case UVP__R_WORK_END:
  case UVP__R_SETTLE:
  case UVP__R_GROUP:
  case UVP__R_GROUP_END:
  case UVP__R_FIBER_END:
    json_span(wr, r, i, x);
    break;
  case UVP__R_PARK:
  case UVP__R_RESUME:
    json_switch(wr, r, i, x);
    break;
  case UVP__R_CAUSE:
  case UVP__R_CUT:
    json_cut(wr, r, i, x);
    break;
  case UVP__R_MEMBER:
  case UVP__R_MAIL:
    json_instant(wr, r, i);
    break;
  case UVP__R_PREPARE:
  case UVP__R_CHECK:
  case UVP__R_IDLE:
  case UVP__R_UVP_END:
    loop_rec(wr, lp, r, wr->t[i]);
    break;
  case UVP__R_STALL:
    json_stall(wr, r, i);
    break;
  case UVP__R_SPAN_BEGIN:
    if (x != NULL)
      span_begin(wr, x, wr->t[i]);
    break;
  case UVP__R_SPAN_END:
    if (x != NULL)
      span_end(wr, x, wr->t[i], false);
    break;
  case UVP__R_CALL_OUT:
  case UVP__R_CALL_IN:
    json_call(wr, r, i);
    break;
  default: /* a description, a name: said at a begin or an end */
    break;
  }
}

/* What is still open at the write ends there. */
static void end_open(writer_t *wr, loop_t *lp) {
  uint64_t t = wr->t_end;
  for (size_t e = 0; e < wr->nents; e++) {
    ent_t *x = &wr->ents[e];
    if (!x->open)
      continue;
    if (x->kind == E_FIBER)
      fiber_end(wr, x, t, true);
    else if (x->kind == E_SPAN)
      span_end(wr, x, t, true);
    else
      work_end(wr, x, t, true);
  }
  loop_close(wr, lp, t, true);
}

void uvp__rw_json(writer_t *wr) {
  char title[256];
  OUTL(wr, "{\"traceEvents\":[");
  uvp__rw_line_end(wr);
  OUTL(wr, "{\"ph\":\"M\",\"pid\":1,\"tid\":1,\"name\":\"process_name\","
           "\"args\":{\"name\":\"uvp context ");
  uvp__rw_hex(wr, wr->ctx);
  OUTL(wr, "\"}}");
  uvp__rw_line_end(wr);
  thread_name(wr, TID_LOOP, "loop");
  thread_name(wr, TID_STALLS, "stalls");
  for (size_t e = 0; e < wr->nents; e++)
    if (wr->ents[e].kind == E_FIBER) {
      fiber_title(wr, &wr->ents[e], title, sizeof(title));
      thread_name(wr, fiber_tid(&wr->ents[e]), title);
    }
  loop_t lp = {0, 0};
  begin_cut_off(wr, &lp);
  for (size_t i = 0; i < wr->count; i++)
    json_rec(wr, &lp, i);
  end_open(wr, &lp);
  OUTL(wr, "],\"displayTimeUnit\":\"ns\",\"otherData\":{\"uvp_recorder\":1,"
           "\"events\":");
  uvp__rw_u64(wr, wr->count);
  OUTL(wr, ",\"overwritten\":");
  uvp__rw_u64(wr, wr->overwritten);
  OUTL(wr, ",\"ts_origin_ns\":");
  uvp__rw_u64(wr, wr->t0 - TS_FROM);
  /* The same instant on the wall clock, to line processes up by before
   * uvp-trace merge refines it from their requests and replies. */
  OUTL(wr, ",\"wall_origin_ns\":");
  uvp__rw_u64(wr, uvp__rw_wall(wr->t0 - TS_FROM));
  OUTL(wr, ",\"pid\":");
  uvp__rw_u64(wr, (uint64_t)uv_os_getpid());
  OUTL(wr, "}}");
  uvp__rw_line_end(wr);
}
