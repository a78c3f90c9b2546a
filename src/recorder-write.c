/* The flight recorder's writer (uvp_ctx_recorder_write, recorder.h): what
 * the ring holds, as Chrome's trace event JSON or as text lines, through
 * the dumps' writer that never waits (diag.h).
 *
 * Three passes over the records written, oldest first.  The first gives
 * each its time: a fiber's park or resume that did not read the clock is
 * placed between the reads around it, in proportion.  The second follows
 * the ids (a fiber's promise, a piece of work's record, a group, a
 * cause) to entities, which an id names from its beginning (a spawn, a
 * start) to its end; an entity whose beginning was overwritten begins at
 * the first record written, and one still open ends at the write.  So
 * the third can say, at each begin, everything later records know (a
 * work's description and status, a fiber's name) and pair every begin
 * with its end, in order on each track.  Nothing here reads what the
 * records name but string literals (sites, kinds): their strings are in
 * the recorder's string ring. */
#include <string.h>

#include "diag.h"
#include "recorder.h"

#define NONE UINT32_MAX
#define LINE_CAP 16384
/* Lines go out in chunks of whole lines, a call of the sink's per chunk
 * rather than per line (a full ring is a million lines): at most PIPE_BUF
 * bytes to a descriptor written directly (diag.h: a pipe takes each
 * whole), CHUNK to a stream or a callback (a file's stream writes a
 * chunk that size at once, rather than a system call per 4 KiB). */
#define CHUNK 65536
#define STR_CAP 1100 /* a string read back from the ring */
/* `ts` counts from 1 s before the first record: its first at a round
 * time, and otherData's ts_origin_ns says where it is. */
#define TS_FROM 1000000000u /* ns */

/* Tracks (thread ids); a fiber's track is FIBER_TID0 + its number. */
enum { TID_LOOP = 1, TID_STALLS = 2, FIBER_TID0 = 3 };

/* What an id names. */
enum { E_FIBER, E_WORK, E_JOIN, E_GROUP, E_CAUSE };
/* How a fiber stands, or stood at the first record written. */
enum { F_NONE, F_RUN, F_AWAIT };

typedef struct ent_s {
  uint8_t kind;     /* E_* */
  bool begun;       /* its beginning is among the records written */
  bool ended;       /* its end is */
  uint8_t at_first; /* a fiber begun before the records: F_RUN, F_AWAIT */
  /* The third pass's: its slice is open (written, not yet ended); a
   * fiber's inner slice F_*. */
  bool open;
  uint8_t now;
  bool settled, cut;
  bool ends_at_settle; /* a promise with a described hook: no end of its own */
  uint32_t num;        /* a fiber's number, or a work's or group's id */
  uint32_t cause;      /* the cause that cut it (an entity), or NONE */
  uint32_t first_resume; /* a fiber's first resume (a record), or NONE; a
                            cause's own record */
  uint32_t spawn;        /* a fiber's spawn (a record), or NONE */
  uint32_t cuts, flows;  /* a cause: what it cut, and the flows written */
  uint32_t stall;        /* a fiber's stall (a record), or NONE ... */
  bool stall_flow;       /* ... whose flow's end is written */
  const void *awaiting;  /* the third pass's: what a fiber awaits */
  const void *id, *p;    /* its id; a work's promise */
  const void *owner;     /* the group it answers to */
  const char *kind_lit;  /* a class's kind */
  const char *file;      /* its site */
  uint32_t line;
  int status; /* its promise's, once settled */
  int code;   /* the cut's */
  uintptr_t desc_kind, desc_target, name;
} ent_t;

/* An open-addressing map from (namespace, id) to an entity. */
enum { NS_FIBER, NS_WORK, NS_PROMISE, NS_GROUP, NS_CAUSE, NS_AWAITED };
typedef struct map_s {
  uintptr_t *keys; /* 0: free */
  uint32_t *vals;
  uint8_t *ns;
  size_t cap, n; /* cap a power of two, at most half full */
} map_t;

/* A site's file, escaped (out_site). */
#define SITE_CACHE 64
typedef struct site_s {
  const char *file;
  size_t len;
  char text[192];
} site_t;

typedef struct writer_s {
  uvp_ctx_t *ctx;
  const uvp__rec_t *ring;
  size_t cap, first, count; /* the window: count records from first */
  uint64_t *t;              /* each record's time */
  uint32_t *ent, *ent2, *ent3, *tid;
  ent_t *ents;
  size_t nents, ents_cap;
  map_t map;
  uint32_t fibers, flows;
  uint64_t t0, t_end;
  uint64_t overwritten; /* records the ring no longer holds */
  uint64_t *last;       /* the last time written on each track (by tid) */
  size_t last_cap;
  bool loop_at_first_poll, loop_at_first_uvp;
  uint64_t stall_end;
  uvp__diag_t *w;
  size_t len, whole; /* buf's bytes, and those of whole lines */
  size_t chunk;      /* PIPE_BUF or CHUNK */
  char buf[LINE_CAP + CHUNK];
  char str[STR_CAP];
  site_t sites[SITE_CACHE];
} writer_t;

static const uvp__rec_t *rec_at(const writer_t *wr, size_t i) {
  return &wr->ring[(wr->first + i) % wr->cap];
}

/* ---- output -------------------------------------------------------------- */

static void flush_lines(writer_t *wr, size_t n) {
  if (n == 0)
    return;
  uvp__diag_out(wr->w, wr->buf, n);
  memmove(wr->buf, wr->buf + n, wr->len - n);
  wr->len -= n;
  wr->whole -= n;
}

static UVP__ALWAYS_INLINE void out(writer_t *wr, const char *s, size_t n) {
  /* A line is cut at LINE_CAP (room kept for its last "}}\n"). */
  if (UVP__UNLIKELY(n > LINE_CAP - 3 - (wr->len - wr->whole)))
    n = LINE_CAP - 3 - (wr->len - wr->whole);
  memcpy(wr->buf + wr->len, s, n);
  wr->len += n;
}
/* A literal. */
#define OUTL(wr, lit) out((wr), "" lit, sizeof(lit) - 1)
static void outs(writer_t *wr, const char *s) { out(wr, s, strlen(s)); }

static void line_end(writer_t *wr) {
  wr->buf[wr->len++] = '\n';
  if (wr->len > wr->chunk) {
    flush_lines(wr, wr->whole); /* those before this one */
    if (wr->len > wr->chunk)
      flush_lines(wr, wr->len); /* a line longer than a chunk */
  }
  wr->whole = wr->len;
}

static void out_u64(writer_t *wr, uint64_t v) {
  char b[24];
  size_t i = sizeof(b);
  do {
    b[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  out(wr, b + i, sizeof(b) - i);
}

static void out_hex(writer_t *wr, const void *p) {
  static const char digits[] = "0123456789abcdef";
  char b[20];
  size_t i = sizeof(b);
  uintptr_t v = (uintptr_t)p;
  do {
    b[--i] = digits[v & 15];
    v >>= 4;
  } while (v != 0);
  b[--i] = 'x';
  b[--i] = '0';
  out(wr, b + i, sizeof(b) - i);
}

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
  out_u64(wr, ns / 1000);
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
  out_u64(wr, line);
  out(wr, "\"", 1);
}

/* The string at pos, or `instead` when it is overwritten. */
static const char *str_of(writer_t *wr, uintptr_t pos, const char *instead) {
  return uvp__rec_str(wr->ctx, pos, wr->str, sizeof(wr->str)) >= 0 ? wr->str
                                                                   : instead;
}

/* ---- the map ------------------------------------------------------------- */

static size_t slot_of(const map_t *m, uintptr_t key, uint8_t ns) {
  uint64_t h = ((uint64_t)key ^ ((uint64_t)ns << 59)) * 0x9e3779b97f4a7c15ull;
  size_t i = (size_t)(h >> 32) & (m->cap - 1);
  while (m->keys[i] != 0 && (m->keys[i] != key || m->ns[i] != ns))
    i = (i + 1) & (m->cap - 1);
  return i;
}

static int map_grow(map_t *m) {
  map_t g = {NULL, NULL, NULL, m->cap != 0 ? m->cap * 2 : 1024, m->n};
  g.keys = uvp__calloc(g.cap, sizeof(*g.keys));
  g.vals = uvp__malloc(g.cap * sizeof(*g.vals));
  g.ns = uvp__malloc(g.cap);
  if (g.keys == NULL || g.vals == NULL || g.ns == NULL) {
    uvp__free(g.keys);
    uvp__free(g.vals);
    uvp__free(g.ns);
    return UV_ENOMEM;
  }
  for (size_t i = 0; i < m->cap; i++)
    if (m->keys[i] != 0) {
      size_t j = slot_of(&g, m->keys[i], m->ns[i]);
      g.keys[j] = m->keys[i];
      g.vals[j] = m->vals[i];
      g.ns[j] = m->ns[i];
    }
  uvp__free(m->keys);
  uvp__free(m->vals);
  uvp__free(m->ns);
  *m = g;
  return 0;
}

static uint32_t map_get(const map_t *m, uint8_t ns, const void *id) {
  if (id == NULL || m->cap == 0)
    return NONE;
  size_t i = slot_of(m, (uintptr_t)id, ns);
  return m->keys[i] != 0 ? m->vals[i] : NONE;
}

static int map_put(map_t *m, uint8_t ns, const void *id, uint32_t e) {
  if (id == NULL)
    return 0;
  if ((m->n + 1) * 2 > m->cap && map_grow(m) != 0)
    return UV_ENOMEM;
  size_t i = slot_of(m, (uintptr_t)id, ns);
  if (m->keys[i] == 0)
    m->n++;
  m->keys[i] = (uintptr_t)id;
  m->ns[i] = ns;
  m->vals[i] = e;
  return 0;
}

/* ---- pass 1: times --------------------------------------------------------
 */

/* Each record's time: a guess (a park or resume that did not read the
 * clock) is placed between the reads around it, in proportion to the
 * records between them; one before a stall (which read the clock as it
 * was reported) is placed before the stall began.  Guesses after the
 * last read keep its time. */
static void place(uint64_t *t, size_t from, size_t to, uint64_t t_from,
                  uint64_t t_to) {
  /* Records from+1 .. to-1 are guesses; t[from] is t_from. */
  size_t n = to - from;
  for (size_t i = from + 1; i < to; i++)
    t[i] = t_from +
           (uint64_t)((double)(t_to - t_from) * (double)(i - from) / (double)n);
}

static void times(writer_t *wr, size_t first, size_t count, uint64_t *t) {
  size_t read = SIZE_MAX; /* the last record that read the clock */
  uint64_t prev = 0;
  for (size_t i = 0; i < count; i++) {
    const uvp__rec_t *r = &wr->ring[(first + i) % wr->cap];
    uint64_t ti = r->t & ~UVP__REC_GUESS;
    if (ti < prev)
      ti = prev; /* a record of an older read than one already seen */
    t[i] = ti;
    if (r->t & UVP__REC_GUESS)
      continue;
    if (read != SIZE_MAX && i - read > 1) {
      uint64_t to = ti;
      if (r->type == UVP__R_STALL) {
        uint64_t len = (uint64_t)(uintptr_t)r->b;
        to = ti - t[read] > len ? ti - len : t[read];
      }
      place(t, read, i, t[read], to);
    }
    read = i;
    prev = ti;
  }
}

/* ---- pass 2: entities ---------------------------------------------------- */

static uint32_t ent_new(writer_t *wr, uint8_t kind, const void *id,
                        bool begun) {
  if (wr->nents == wr->ents_cap) {
    size_t cap = wr->ents_cap != 0 ? wr->ents_cap * 2 : 256;
    ent_t *e = uvp__realloc(wr->ents, cap * sizeof(*e));
    if (e == NULL)
      return NONE;
    wr->ents = e;
    wr->ents_cap = cap;
  }
  ent_t *e = &wr->ents[wr->nents];
  memset(e, 0, sizeof(*e));
  e->kind = kind;
  e->id = id;
  e->begun = begun;
  e->cause = e->first_resume = e->spawn = e->stall = NONE;
  e->desc_kind = e->desc_target = e->name = UVP__REC_NOSTR;
  if (kind == E_FIBER)
    e->num = wr->fibers++;
  else
    e->num = (uint32_t)wr->nents;
  return (uint32_t)wr->nents++;
}

/* The fiber `id`, made begun before the records if unknown (standing as
 * `at_first` then). */
static uint32_t fiber_of(writer_t *wr, const void *id, uint8_t at_first) {
  uint32_t e = map_get(&wr->map, NS_FIBER, id);
  if (e != NONE)
    return e;
  e = ent_new(wr, E_FIBER, id, false);
  if (e == NONE || map_put(&wr->map, NS_FIBER, id, e) != 0 ||
      map_put(&wr->map, NS_PROMISE, id, e) != 0)
    return NONE;
  wr->ents[e].at_first = at_first;
  return e;
}

static uint32_t group_of(writer_t *wr, const void *id) {
  uint32_t e = map_get(&wr->map, NS_GROUP, id);
  if (e != NONE || id == NULL)
    return e;
  e = ent_new(wr, E_GROUP, id, false);
  if (e == NONE || map_put(&wr->map, NS_GROUP, id, e) != 0)
    return NONE;
  return e;
}

static int start(writer_t *wr, const uvp__rec_t *r, size_t i) {
  uint8_t kind = r->x == 1 ? E_FIBER : r->x == 2 ? E_JOIN : E_WORK;
  bool at_settle = r->x == 3;
  const void *id = kind == E_FIBER ? r->b : r->a;
  uint32_t e = ent_new(wr, kind, id, true);
  if (e == NONE)
    return UV_ENOMEM;
  ent_t *x = &wr->ents[e];
  x->p = r->b;
  x->owner = r->c;
  x->kind_lit = r->d;
  x->file = r->file;
  x->line = r->line;
  x->spawn = (uint32_t)i;
  x->ends_at_settle = at_settle;
  wr->ent[i] = e;
  if (kind == E_FIBER)
    return map_put(&wr->map, NS_FIBER, id, e) != 0 ||
                   map_put(&wr->map, NS_PROMISE, r->b, e) != 0
               ? UV_ENOMEM
               : 0;
  return map_put(&wr->map, NS_WORK, r->a, e) != 0 ||
                 map_put(&wr->map, NS_PROMISE, r->b, e) != 0
             ? UV_ENOMEM
             : 0;
}

static int entities(writer_t *wr) {
  bool loop_seen = false;
  for (size_t i = 0; i < wr->count; i++) {
    const uvp__rec_t *r = rec_at(wr, i);
    uint32_t e = NONE, e2 = NONE;
    wr->ent[i] = wr->ent2[i] = wr->ent3[i] = NONE;
    /* The track first: a fiber running since before the records began
     * (its first record one of what it did) was running then. */
    uint32_t tr = r->track != NULL ? fiber_of(wr, r->track, F_RUN) : NONE;
    if (r->track != NULL && tr == NONE)
      return UV_ENOMEM;
    wr->tid[i] = tr != NONE ? FIBER_TID0 + wr->ents[tr].num : TID_LOOP;
    switch (r->type) {
    case UVP__R_WORK_START:
      if (start(wr, r, i) != 0)
        return UV_ENOMEM;
      if (r->x == 1) /* a spawn runs on the spawner's track */
        wr->tid[i] = tr != NONE ? FIBER_TID0 + wr->ents[tr].num : TID_LOOP;
      continue;
    case UVP__R_WORK_DESC:
      e = map_get(&wr->map, NS_WORK, r->a);
      if (e == NONE) { /* its start was overwritten */
        if ((e = ent_new(wr, E_WORK, r->a, false)) == NONE ||
            map_put(&wr->map, NS_WORK, r->a, e) != 0)
          return UV_ENOMEM;
      }
      if (wr->ents[e].ended)
        e = NONE;
      else {
        wr->ents[e].desc_kind = (uintptr_t)r->b;
        wr->ents[e].desc_target = (uintptr_t)r->c;
      }
      break;
    case UVP__R_WORK_END:
      e = map_get(&wr->map, NS_WORK, r->a);
      if (e != NONE && !wr->ents[e].ended)
        wr->ents[e].ended = true;
      else
        e = NONE; /* a second end, or one of work never recorded */
      break;
    case UVP__R_SETTLE:
      e = map_get(&wr->map, NS_PROMISE, r->a);
      if (e != NONE && !wr->ents[e].settled) {
        wr->ents[e].settled = true;
        wr->ents[e].status = (int)(intptr_t)r->b;
        if (wr->ents[e].ends_at_settle)
          wr->ents[e].ended = true;
      } else {
        e = NONE;
      }
      break;
    case UVP__R_PARK:
      e = fiber_of(wr, r->a, F_RUN);
      e2 = map_get(&wr->map, NS_PROMISE, r->b);
      if (r->c != NULL) { /* and the fiber it hands off to runs */
        uint32_t e3 = fiber_of(wr, r->c, F_AWAIT);
        if (e3 == NONE)
          return UV_ENOMEM;
        if (wr->ents[e3].begun && wr->ents[e3].first_resume == NONE)
          wr->ents[e3].first_resume = (uint32_t)i;
        wr->ent3[i] = e3;
      }
      break;
    case UVP__R_RESUME:
      e = fiber_of(wr, r->a, F_AWAIT);
      if (e == NONE)
        return UV_ENOMEM;
      if (e != NONE && wr->ents[e].begun && wr->ents[e].first_resume == NONE)
        wr->ents[e].first_resume = (uint32_t)i;
      break;
    case UVP__R_FIBER_END:
      e = fiber_of(wr, r->a, F_RUN);
      if (e != NONE)
        wr->ents[e].ended = true;
      break;
    case UVP__R_NAME:
      e = r->x ? group_of(wr, r->a) : fiber_of(wr, r->a, F_AWAIT);
      if (e != NONE)
        wr->ents[e].name = (uintptr_t)r->b;
      break;
    case UVP__R_CAUSE:
      if ((e = ent_new(wr, E_CAUSE, r->a, true)) == NONE ||
          map_put(&wr->map, NS_CAUSE, r->a, e) != 0)
        return UV_ENOMEM;
      wr->ents[e].desc_target = (uintptr_t)r->b;
      wr->ents[e].first_resume = (uint32_t)i; /* where it was */
      break;
    case UVP__R_CUT:
      e = map_get(&wr->map, NS_PROMISE, r->a);
      e2 = map_get(&wr->map, NS_CAUSE, r->b);
      if (e2 != NONE)
        wr->ents[e2].cuts++;
      if (e != NONE && !wr->ents[e].cut) {
        wr->ents[e].cut = true;
        wr->ents[e].cause = e2;
        wr->ents[e].code = (int)(intptr_t)r->c;
        if (wr->ents[e].ends_at_settle)
          wr->ents[e].ended = true;
      }
      break;
    case UVP__R_GROUP:
      if ((e = ent_new(wr, E_GROUP, r->a, true)) == NONE ||
          map_put(&wr->map, NS_GROUP, r->a, e) != 0)
        return UV_ENOMEM;
      wr->ents[e].owner = r->c;
      wr->ents[e].file = r->file;
      wr->ents[e].line = r->line;
      break;
    case UVP__R_MEMBER:
      e = group_of(wr, r->a);
      e2 = map_get(&wr->map, NS_PROMISE, r->b);
      break;
    case UVP__R_GROUP_END:
      e = group_of(wr, r->a);
      if (e != NONE && !wr->ents[e].ended)
        wr->ents[e].ended = true;
      else
        e = NONE;
      break;
    case UVP__R_STALL: /* a fiber's: the fiber, running then */
      if (r->x == UVP_STALL_FIBER && r->a != NULL) {
        if ((e = fiber_of(wr, r->a, F_RUN)) == NONE)
          return UV_ENOMEM;
        wr->ents[e].stall = (uint32_t)i;
      }
      break;
    case UVP__R_PREPARE:
    case UVP__R_CHECK:
    case UVP__R_IDLE:
    case UVP__R_UVP_END:
      if (!loop_seen) {
        loop_seen = true;
        wr->loop_at_first_poll = r->type == UVP__R_CHECK;
        wr->loop_at_first_uvp = r->type == UVP__R_UVP_END;
      }
      wr->tid[i] = TID_LOOP;
      break;
    default:
      break;
    }
    wr->ent[i] = e;
    wr->ent2[i] = e2;
  }
  return 0;
}

/* ---- pass 3: JSON ---------------------------------------------------------
 */

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
  out_u64(wr, tid);
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
  out_hex(wr, p);
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
  line_end(wr);
}

/* What a work is: its description's kind, else its class's. */
static const char *work_kind(writer_t *wr, const ent_t *x, char *buf,
                             size_t cap) {
  if (uvp__rec_str(wr->ctx, x->desc_kind, buf, cap) > 0)
    return buf;
  if (x->kind == E_JOIN)
    return "group";
  return x->kind_lit != NULL ? x->kind_lit : "work";
}

static void thread_name(writer_t *wr, uint32_t tid, const char *name) {
  OUTL(wr, ",{\"ph\":\"M\",\"pid\":1,\"tid\":");
  out_u64(wr, tid);
  OUTL(wr, ",\"name\":\"thread_name\",\"args\":{\"name\":");
  out_jstr(wr, name);
  OUTL(wr, "}}");
  line_end(wr);
}

static void fiber_title(writer_t *wr, const ent_t *x, char *buf, size_t cap) {
  const char *name = str_of(wr, x->name, NULL);
  int n = name != NULL && *name != '\0'
              ? snprintf(buf, cap, "fiber \"%s\"", name)
              : snprintf(buf, cap, "fiber %p", x->id);
  if (x->file != NULL && n > 0 && (size_t)n < cap)
    snprintf(buf + n, cap - (size_t)n, " spawned at %s:%u", x->file, x->line);
}

static void group_title(writer_t *wr, const ent_t *x, char *buf, size_t cap) {
  const char *name = str_of(wr, x->name, NULL);
  int n = name != NULL && *name != '\0'
              ? snprintf(buf, cap, "group \"%s\"", name)
              : snprintf(buf, cap, "group %p", x->id);
  if (x->file != NULL && n > 0 && (size_t)n < cap)
    snprintf(buf + n, cap - (size_t)n, " at %s:%u", x->file, x->line);
}

static uint32_t fiber_tid(const ent_t *x) { return FIBER_TID0 + x->num; }

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
  const char *name = str_of(wr, x->name, NULL);
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
      const char *target = str_of(wr, a->desc_target, NULL);
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
  out_u64(wr, x->num);
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
    const char *target = str_of(wr, x->desc_target, NULL);
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
              str_of(wr, wr->ents[x->cause].desc_target, "?"));
  }
  if (open)
    arg_true(wr, &first, "open");
  ev_close(wr, first);
  x->open = false;
}

/* One end of a flow: "s" at its source, "f" at its end (bound to the
 * slice around it), ids "KIND.N.K". */
static void flow_end(writer_t *wr, const char *ph, const char *cat, uint32_t n,
                     uint32_t k, uint32_t tid, uint64_t t) {
  ev(wr, ph, tid, t);
  ev_name(wr, cat, cat);
  OUTL(wr, ",\"id\":\"");
  outs(wr, cat);
  out(wr, ".", 1);
  out_u64(wr, n);
  out(wr, ".", 1);
  out_u64(wr, k);
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
    out_u64(wr, (uint64_t)(uintptr_t)r->b);
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
  uint32_t by = map_get(&wr->map, NS_AWAITED, r->a);
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
    arg_str(wr, &first, "cause", str_of(wr, wr->ents[e2].desc_target, "?"));
  if (x != NULL && x->kind == E_WORK) {
    arg_str(wr, &first, "work", work_kind(wr, x, buf, sizeof(buf)));
    const char *target = str_of(wr, x->desc_target, NULL);
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
    (void)map_put(&wr->map, NS_AWAITED, x->awaiting, NONE);
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

static void json_rec(writer_t *wr, loop_t *lp, size_t i) {
  const uvp__rec_t *r = rec_at(wr, i);
  uint64_t t = wr->t[i];
  uint32_t tid = wr->tid[i];
  uint32_t e = wr->ent[i], e2 = wr->ent2[i];
  ent_t *x = e != NONE ? &wr->ents[e] : NULL;
  bool first = true;
  switch (r->type) {
  case UVP__R_WORK_START:
    if (x == NULL) /* (every start is one: pass 2 made it) */
      break;
    if (x->kind == E_FIBER) {
      fiber_begin(wr, x, t);
      if (x->first_resume != NONE) /* the flow lands at its first run */
        flow_end(wr, "s", "spawn", e, 0, tid, t);
    } else if (x->kind == E_WORK) {
      work_begin(wr, x, t);
    }
    break;
  case UVP__R_WORK_END:
    if (x != NULL && x->kind == E_WORK && x->open)
      work_end(wr, x, t, false);
    break;
  case UVP__R_PARK:
    if (x != NULL && x->open) {
      await_begin(wr, x, t, r, e2);
      /* (Without memory for it, a cut of what it awaits lands elsewhere.) */
      if (map_put(&wr->map, NS_AWAITED, r->b, e) == 0)
        x->awaiting = r->b;
    }
    if (r->c != NULL)
      resume(wr, wr->ent3[i], i, r->x ? 1 : (int)(intptr_t)r->d);
    break;
  case UVP__R_RESUME:
    resume(wr, e, i, r->x ? 1 : (int)(intptr_t)r->b);
    break;
  case UVP__R_FIBER_END:
    if (x != NULL && x->stall != NONE && x->stall > i)
      stall_flow(wr, x, t);
    if (x != NULL && x->open)
      fiber_end(wr, x, t, false);
    break;
  case UVP__R_CAUSE:
    instant(wr, tid, t, "cause", "cancel");
    arg_str(wr, &first, "cause", str_of(wr, (uintptr_t)r->b, "?"));
    ev_close(wr, first);
    for (uint32_t k = 0; x != NULL && k < x->cuts; k++)
      flow_end(wr, "s", "cause", e, k, tid, t);
    break;
  case UVP__R_CUT:
    cut_rec(wr, r, i, x, e2);
    if (x != NULL && x->ends_at_settle && x->open)
      work_end(wr, x, t, false);
    break;
  case UVP__R_SETTLE:
    if (x != NULL && x->ends_at_settle && x->open)
      work_end(wr, x, t, false);
    break;
  case UVP__R_GROUP:
    if (x != NULL)
      work_begin(wr, x, t);
    break;
  case UVP__R_GROUP_END:
    if (x != NULL && x->open)
      work_end(wr, x, t, false);
    break;
  case UVP__R_MEMBER:
    instant(wr, tid, t, "group", "member");
    arg_ptr(wr, &first, "group", r->a);
    arg_ptr(wr, &first, "promise", r->b);
    ev_close(wr, first);
    break;
  case UVP__R_PREPARE:
  case UVP__R_CHECK:
  case UVP__R_IDLE:
  case UVP__R_UVP_END:
    loop_rec(wr, lp, r, t);
    break;
  case UVP__R_MAIL: {
    int op = (int)(intptr_t)r->b;
    instant(wr, TID_LOOP, t, "loop",
            op == 0   ? "mail: resolve"
            : op == 1 ? "mail: reject"
                      : "mail: release");
    arg_ptr(wr, &first, "promise", r->a);
    if (op == 1)
      arg_code(wr, &first, "code", (int)(intptr_t)r->c);
    ev_close(wr, first);
    break;
  }
  case UVP__R_STALL: {
    /* On a track of its own: a stall's start is the detector's bound on
     * it, which may reach back into the slices before it. */
    uint64_t len = (uint64_t)(uintptr_t)r->b;
    uint64_t from = t > len ? t - len : 0;
    bool cut_off = from < wr->t0;
    if (from < wr->stall_end || cut_off)
      from = cut_off && wr->t0 > wr->stall_end ? wr->t0 : wr->stall_end;
    if (from > t)
      from = t;
    wr->stall_end = t;
    ev(wr, "X", TID_STALLS, from);
    ev_name(wr, "stall", "stall");
    OUTL(wr, ",\"dur\":");
    out_us(wr, t - from);
    arg_str(wr, &first, "report", str_of(wr, (uintptr_t)r->c, "?"));
    arg_raw(wr, &first, "ms");
    out_u64(wr, len / 1000000u);
    if (cut_off)
      arg_true(wr, &first, "cut_off");
    stall_culprit(wr, r, i, from, &first);
    wr->last[TID_STALLS] = t;
    break;
  }
  default: /* a description, a settle, a name: said at a begin or an end */
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
    else
      work_end(wr, x, t, true);
  }
  loop_close(wr, lp, t, true);
}

static void json(writer_t *wr) {
  char title[256];
  OUTL(wr, "{\"traceEvents\":[");
  line_end(wr);
  OUTL(wr, "{\"ph\":\"M\",\"pid\":1,\"tid\":1,\"name\":\"process_name\","
           "\"args\":{\"name\":\"uvp context ");
  out_hex(wr, wr->ctx);
  OUTL(wr, "\"}}");
  line_end(wr);
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
  out_u64(wr, wr->count);
  OUTL(wr, ",\"overwritten\":");
  out_u64(wr, wr->overwritten);
  OUTL(wr, ",\"ts_origin_ns\":");
  out_u64(wr, wr->t0 - TS_FROM);
  OUTL(wr, "}}");
  line_end(wr);
}

/* ---- text ---------------------------------------------------------------- */

/* "started", or "resumed (STATUS)". */
static void resumed(writer_t *wr, bool starts, int code) {
  if (starts) {
    OUTL(wr, "started");
    return;
  }
  OUTL(wr, "resumed (");
  outs(wr, code == 0 ? "fulfilled" : uvp_err_name(code));
  OUTL(wr, ")");
}

static void text_rec(writer_t *wr, size_t i) {
  const uvp__rec_t *r = rec_at(wr, i);
  uint64_t t = wr->t[i];
  out_u64(wr, t / 1000000000u);
  char frac[8] = {'.'};
  uint64_t us = t / 1000 % 1000000;
  for (int k = 6; k >= 1; k--, us /= 10)
    frac[k] = (char)('0' + us % 10);
  out(wr, frac, 7);
  if (r->t & UVP__REC_GUESS)
    out(wr, "~", 1);
  if (r->track != NULL) {
    OUTL(wr, " fiber ");
    out_hex(wr, r->track);
    OUTL(wr, ": ");
  } else {
    OUTL(wr, " loop: ");
  }
  char buf[STR_CAP + 64];
  switch (r->type) {
  case UVP__R_WORK_START:
    snprintf(buf, sizeof(buf), "%s %s %p at %s:%u",
             r->x == 1 ? "spawned" : "started",
             r->x == 1 ? "fiber" : (r->d != NULL ? (const char *)r->d : "work"),
             r->x == 1 ? r->b : r->a, r->file != NULL ? r->file : "?", r->line);
    outs(wr, buf);
    if (r->c != NULL) {
      OUTL(wr, " in group ");
      out_hex(wr, r->c);
    }
    break;
  case UVP__R_WORK_DESC:
    OUTL(wr, "work ");
    out_hex(wr, r->a);
    OUTL(wr, " is ");
    outs(wr, str_of(wr, (uintptr_t)r->b, "(overwritten)"));
    OUTL(wr, " ");
    outs(wr, str_of(wr, (uintptr_t)r->c, ""));
    break;
  case UVP__R_WORK_END:
    OUTL(wr, "work ");
    out_hex(wr, r->a);
    OUTL(wr, " ended");
    break;
  case UVP__R_SETTLE: {
    int code = (int)(intptr_t)r->b;
    OUTL(wr, "promise ");
    out_hex(wr, r->a);
    outs(wr, code == 0 ? " fulfilled" : " rejected ");
    if (code != 0)
      outs(wr, uvp_err_name(code));
    break;
  }
  case UVP__R_PARK:
    OUTL(wr, "parked at ");
    outs(wr, r->file != NULL ? r->file : "?");
    OUTL(wr, ":");
    out_u64(wr, r->line);
    OUTL(wr, " awaiting ");
    out_hex(wr, r->b);
    if (r->c != NULL) {
      OUTL(wr, "; fiber ");
      out_hex(wr, r->c);
      OUTL(wr, " ");
      resumed(wr, r->x, (int)(intptr_t)r->d);
    }
    break;
  case UVP__R_RESUME:
    resumed(wr, r->x, (int)(intptr_t)r->b);
    break;
  case UVP__R_FIBER_END:
    OUTL(wr, "ended");
    break;
  case UVP__R_NAME:
    outs(wr, r->x ? "group " : "fiber ");
    out_hex(wr, r->a);
    OUTL(wr, " named \"");
    outs(wr, str_of(wr, (uintptr_t)r->b, "(overwritten)"));
    OUTL(wr, "\"");
    break;
  case UVP__R_CAUSE:
    OUTL(wr, "cancellation ");
    out_hex(wr, r->a);
    OUTL(wr, ": ");
    outs(wr, str_of(wr, (uintptr_t)r->b, "(overwritten)"));
    break;
  case UVP__R_CUT:
    OUTL(wr, "cut ");
    out_hex(wr, r->a);
    OUTL(wr, " (");
    outs(wr, uvp_err_name((int)(intptr_t)r->c));
    OUTL(wr, ") by cancellation ");
    out_hex(wr, r->b);
    break;
  case UVP__R_GROUP:
    snprintf(buf, sizeof(buf), "group %p made at %s:%u", r->a,
             r->file != NULL ? r->file : "?", r->line);
    outs(wr, buf);
    if (r->c != NULL) {
      OUTL(wr, " in group ");
      out_hex(wr, r->c);
    }
    break;
  case UVP__R_MEMBER:
    OUTL(wr, "group ");
    out_hex(wr, r->a);
    OUTL(wr, ": member ");
    out_hex(wr, r->b);
    break;
  case UVP__R_GROUP_END:
    OUTL(wr, "group ");
    out_hex(wr, r->a);
    OUTL(wr, " ended");
    break;
  case UVP__R_PREPARE:
    OUTL(wr, "poll (");
    out_u64(wr, (uint64_t)(uintptr_t)r->b);
    OUTL(wr, " in flight)");
    break;
  case UVP__R_CHECK:
    OUTL(wr, "check (the poll returned at loop time ");
    out_u64(wr, (uint64_t)(uintptr_t)r->b);
    OUTL(wr, " ms)");
    break;
  case UVP__R_IDLE:
    OUTL(wr, "idle (a drain)");
    break;
  case UVP__R_UVP_END:
    OUTL(wr, "uvp's callback done");
    break;
  case UVP__R_MAIL: {
    int op = (int)(intptr_t)r->b;
    outs(wr, op == 0   ? "mail: resolve "
             : op == 1 ? "mail: reject "
                       : "mail: release ");
    out_hex(wr, r->a);
    if (op == 1) {
      OUTL(wr, " ");
      outs(wr, uvp_err_name((int)(intptr_t)r->c));
    }
    break;
  }
  case UVP__R_STALL:
    outs(wr, str_of(wr, (uintptr_t)r->c, "stall (report overwritten)"));
    if (r->a != NULL) {
      outs(wr, r->x == UVP_STALL_FIBER ? " (fiber " : " (promise ");
      out_hex(wr, r->a);
      OUTL(wr, ")");
    }
    break;
  default:
    OUTL(wr, "?");
  }
  line_end(wr);
}

/* ---- the write ----------------------------------------------------------- */

int uvp__rec_opts_check(const uvp_record_opts_t *opts);

static void writer_free(writer_t *wr) {
  uvp__free(wr->t);
  uvp__free(wr->ent);
  uvp__free(wr->ent2);
  uvp__free(wr->ent3);
  uvp__free(wr->tid);
  uvp__free(wr->ents);
  uvp__free(wr->last);
  uvp__free(wr->map.keys);
  uvp__free(wr->map.vals);
  uvp__free(wr->map.ns);
  uvp__free(wr);
}

int uvp__rec_write(uvp_ctx_t *ctx, const uvp_record_opts_t *opts) {
  const uvp__rec_hot_t *h = uvp__rec_hot(ctx);
  if (h == NULL || h->ring == NULL)
    return UV_ENOENT;
  size_t first, held;
  uvp__rec_held(ctx, &first, &held);
  writer_t *wr = uvp__calloc(1, sizeof(*wr));
  uint64_t *t = uvp__malloc((held != 0 ? held : 1) * sizeof(*t));
  if (wr == NULL || t == NULL) {
    uvp__free(wr);
    uvp__free(t);
    return UV_ENOMEM;
  }
  wr->ctx = ctx;
  wr->ring = h->ring;
  wr->cap = (size_t)(h->end - h->ring);
  wr->t = t;
  times(wr, first, held, t);
  wr->t_end = uv_hrtime();
  if (held != 0 && t[held - 1] > wr->t_end)
    wr->t_end = t[held - 1];
  /* The window: the last last_ms milliseconds. */
  size_t skip = 0;
  if (opts->last_ms != 0 && opts->last_ms < wr->t_end / 1000000u) {
    uint64_t from = wr->t_end - opts->last_ms * 1000000u;
    while (skip < held && t[skip] < from)
      skip++;
  }
  wr->first = (first + skip) % (wr->cap != 0 ? wr->cap : 1);
  wr->count = held - skip;
  if (skip != 0)
    memmove(t, t + skip, wr->count * sizeof(*t));
  wr->t0 = wr->count != 0 ? t[0] : wr->t_end;
  wr->overwritten = h->laps * wr->cap + (size_t)(h->next - h->ring) - held;
  int rc = 0;
  size_t n = wr->count != 0 ? wr->count : 1;
  wr->ent = uvp__malloc(n * sizeof(*wr->ent));
  wr->ent2 = uvp__malloc(n * sizeof(*wr->ent2));
  wr->ent3 = uvp__malloc(n * sizeof(*wr->ent3));
  wr->tid = uvp__malloc(n * sizeof(*wr->tid));
  if (wr->ent == NULL || wr->ent2 == NULL || wr->ent3 == NULL ||
      wr->tid == NULL)
    rc = UV_ENOMEM;
  if (rc == 0 && opts->format == UVP_RECORD_JSON) {
    rc = entities(wr);
    wr->last_cap = FIBER_TID0 + wr->fibers;
    if (rc == 0 &&
        (wr->last = uvp__calloc(wr->last_cap, sizeof(*wr->last))) == NULL)
      rc = UV_ENOMEM;
  }
  if (rc != 0) {
    writer_free(wr);
    return rc;
  }
  uvp__diag_t *w = uvp__malloc(sizeof(*w));
  if (w == NULL) {
    writer_free(wr);
    return UV_ENOMEM;
  }
  uvp__diag_open_patient(w, opts->stream, opts->write, opts->write_arg,
                         opts->format == UVP_RECORD_JSON);
  wr->w = w;
  wr->chunk = w->fd >= 0 ? PIPE_BUF : CHUNK;
  if (opts->format == UVP_RECORD_JSON) {
    json(wr);
  } else {
    for (size_t i = 0; i < wr->count; i++)
      text_rec(wr, i);
  }
  flush_lines(wr, wr->whole);
  rc = uvp__diag_close(w);
  size_t count = wr->count;
  uvp__free(w);
  writer_free(wr);
  if (rc != 0)
    return rc;
  return count > INT32_MAX ? INT32_MAX : (int)count;
}

int uvp_ctx_recorder_write(uvp_ctx_t *ctx, const uvp_record_opts_t *opts) {
  int rc = ctx == NULL || opts == NULL ? UV_EINVAL : uvp__rec_opts_check(opts);
  if (rc == 0)
    rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  return uvp__rec_write(ctx, opts);
}
