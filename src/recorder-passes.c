/* The flight recorder's writer, beneath its forms (recorder-json.c,
 * recorder-text.c): what it reads of the rings, the output every form
 * writes through, and the passes before the forms write.
 *
 * Three passes over the records written, oldest first.  The first gives
 * each its time: a fiber's park or resume that did not read the clock is
 * placed between the reads around it, in proportion.  The second follows
 * the ids (a fiber's promise, a piece of work's record, a group, a
 * cause) to entities, which an id names from its beginning (a spawn, a
 * start) to its end; an entity whose beginning was overwritten begins at
 * the first record written, and one still open ends at the write.  So
 * the third (the JSON form's) can say, at each begin, everything later
 * records know (a work's description and status, a fiber's name) and pair
 * every begin with its end, in order on each track.  Nothing here reads
 * what the records name but string literals (sites, kinds): their strings
 * are in the recorder's string ring. */
#include "recorder-passes.h"
#include "alloc.h"

/* ---- output -------------------------------------------------------------- */

static void flush_lines(writer_t *wr, size_t n) {
  if (n == 0)
    return;
  uvp__diag_out(wr->w, wr->buf, n);
  memmove(wr->buf, wr->buf + n, wr->len - n);
  wr->len -= n;
  wr->whole -= n;
}

void uvp__rw_flush(writer_t *wr) { flush_lines(wr, wr->whole); }

void uvp__rw_line_end(writer_t *wr) {
  wr->buf[wr->len++] = '\n';
  if (wr->len > wr->chunk) {
    flush_lines(wr, wr->whole); /* those before this one */
    if (wr->len > wr->chunk)
      flush_lines(wr, wr->len); /* a line longer than a chunk */
  }
  wr->whole = wr->len;
}

void uvp__rw_u64(writer_t *wr, uint64_t v) {
  char b[24];
  size_t i = sizeof(b);
  do {
    b[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  out(wr, b + i, sizeof(b) - i);
}

void uvp__rw_hex(writer_t *wr, const void *p) {
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

/* ---- the rings ----------------------------------------------------------- */

int uvp__rw_read(const writer_t *wr, uintptr_t pos, char *buf, size_t cap) {
  const uvp__rec_state_t *st = uvp__rec_state(wr->ctx);
  buf[0] = '\0';
  if (pos == UVP__REC_NOSTR || st->str_cap == 0)
    return -1;
  uint64_t back = st->str_n - (uint64_t)pos;
  if (back < 2 || back > st->str_cap)
    return -1; /* overwritten */
  size_t n = (unsigned char)st->str[pos % st->str_cap] |
             (size_t)(unsigned char)st->str[(pos + 1) % st->str_cap] << 8;
  if (n + 2 > back)
    return -1;
  size_t m = n < cap - 1 ? n : cap - 1;
  size_t at = (size_t)((pos + 2) % st->str_cap);
  size_t first = m < st->str_cap - at ? m : st->str_cap - at;
  memcpy(buf, st->str + at, first);
  memcpy(buf + first, st->str, m - first);
  buf[m] = '\0';
  return (int)m;
}

const char *uvp__rw_str(writer_t *wr, uintptr_t pos, const char *instead) {
  return uvp__rw_read(wr, pos, wr->str, sizeof(wr->str)) >= 0 ? wr->str
                                                              : instead;
}

/* The records held, oldest first: *first is the oldest's index in the
 * ring, *count how many. */
static void ring_held(const uvp__rec_hot_t *h, size_t *first, size_t *count) {
  *first = 0;
  *count = (size_t)(h->next - h->ring);
  if (h->laps != 0) {
    *first = *count;
    *count = (size_t)(h->end - h->ring);
  }
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

uint32_t uvp__rw_get(const map_t *m, uint8_t ns, const void *id) {
  if (id == NULL || m->cap == 0)
    return NONE;
  size_t i = slot_of(m, (uintptr_t)id, ns);
  return m->keys[i] != 0 ? m->vals[i] : NONE;
}

int uvp__rw_put(map_t *m, uint8_t ns, const void *id, uint32_t e) {
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

uint64_t uvp__rw_wall(uint64_t mono) {
  uv_timeval64_t tv;
  uint64_t now = uv_hrtime();
  if (uv_gettimeofday(&tv) != 0 || tv.tv_sec < 0)
    return 0;
  uint64_t wall =
      (uint64_t)tv.tv_sec * 1000000000u + (uint64_t)tv.tv_usec * 1000u;
  return now >= mono ? wall - (now - mono) : wall + (mono - now);
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
  uint32_t e = uvp__rw_get(&wr->map, NS_FIBER, id);
  if (e != NONE)
    return e;
  e = ent_new(wr, E_FIBER, id, false);
  if (e == NONE || uvp__rw_put(&wr->map, NS_FIBER, id, e) != 0 ||
      uvp__rw_put(&wr->map, NS_PROMISE, id, e) != 0)
    return NONE;
  wr->ents[e].at_first = at_first;
  return e;
}

static uint32_t group_of(writer_t *wr, const void *id) {
  uint32_t e = uvp__rw_get(&wr->map, NS_GROUP, id);
  if (e != NONE || id == NULL)
    return e;
  e = ent_new(wr, E_GROUP, id, false);
  if (e == NONE || uvp__rw_put(&wr->map, NS_GROUP, id, e) != 0)
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
    return uvp__rw_put(&wr->map, NS_FIBER, id, e) != 0 ||
                   uvp__rw_put(&wr->map, NS_PROMISE, r->b, e) != 0
               ? UV_ENOMEM
               : 0;
  return uvp__rw_put(&wr->map, NS_WORK, r->a, e) != 0 ||
                 uvp__rw_put(&wr->map, NS_PROMISE, r->b, e) != 0
             ? UV_ENOMEM
             : 0;
}

/* A piece of work's record i (r): its entity in wr->ent[i]. */
static int ent_work(writer_t *wr, const uvp__rec_t *r, size_t i) {
  uint32_t e = NONE;
  switch (r->type) {
  case UVP__R_WORK_DESC:
    e = uvp__rw_get(&wr->map, NS_WORK, r->a);
    if (e == NONE) { /* its start was overwritten */
      if ((e = ent_new(wr, E_WORK, r->a, false)) == NONE ||
          uvp__rw_put(&wr->map, NS_WORK, r->a, e) != 0)
        return UV_ENOMEM;
    }
    if (wr->ents[e].ended) {
      e = NONE;
    } else {
      wr->ents[e].desc_kind = (uintptr_t)r->b;
      wr->ents[e].desc_target = (uintptr_t)r->c;
    }
    break;
  case UVP__R_WORK_END:
    e = uvp__rw_get(&wr->map, NS_WORK, r->a);
    if (e != NONE && !wr->ents[e].ended)
      wr->ents[e].ended = true;
    else
      e = NONE; /* a second end, or one of work never recorded */
    break;
  default: /* UVP__R_SETTLE */
    e = uvp__rw_get(&wr->map, NS_PROMISE, r->a);
    if (e == NONE || wr->ents[e].settled)
      return 0;
    wr->ents[e].settled = true;
    wr->ents[e].status = (int)(intptr_t)r->b;
    if (wr->ents[e].ends_at_settle)
      wr->ents[e].ended = true;
    break;
  }
  wr->ent[i] = e;
  return 0;
}

/* Fiber e begun among the records runs first at record i. */
static void first_run(writer_t *wr, uint32_t e, size_t i) {
  if (wr->ents[e].begun && wr->ents[e].first_resume == NONE)
    wr->ents[e].first_resume = (uint32_t)i;
}

/* A fiber's record i (r). */
static int ent_fiber(writer_t *wr, const uvp__rec_t *r, size_t i) {
  uint32_t e;
  switch (r->type) {
  case UVP__R_PARK:
    e = fiber_of(wr, r->a, F_RUN);
    wr->ent2[i] = uvp__rw_get(&wr->map, NS_PROMISE, r->b);
    if (r->c != NULL) { /* and the fiber it hands off to runs */
      if ((wr->ent3[i] = fiber_of(wr, r->c, F_AWAIT)) == NONE)
        return UV_ENOMEM;
      first_run(wr, wr->ent3[i], i);
    }
    break;
  case UVP__R_RESUME:
    if ((e = fiber_of(wr, r->a, F_AWAIT)) == NONE)
      return UV_ENOMEM;
    first_run(wr, e, i);
    break;
  case UVP__R_FIBER_END:
    if ((e = fiber_of(wr, r->a, F_RUN)) != NONE)
      wr->ents[e].ended = true;
    break;
  default: /* UVP__R_NAME */
    e = r->x ? group_of(wr, r->a) : fiber_of(wr, r->a, F_AWAIT);
    if (e != NONE)
      wr->ents[e].name = (uintptr_t)r->b;
    break;
  }
  wr->ent[i] = e;
  return 0;
}

/* A cancellation's record i (r): a cause, or what it cut. */
static int ent_cut(writer_t *wr, const uvp__rec_t *r, size_t i) {
  uint32_t e;
  if (r->type == UVP__R_CAUSE) {
    if ((e = ent_new(wr, E_CAUSE, r->a, true)) == NONE ||
        uvp__rw_put(&wr->map, NS_CAUSE, r->a, e) != 0)
      return UV_ENOMEM;
    wr->ents[e].desc_target = (uintptr_t)r->b;
    wr->ents[e].first_resume = (uint32_t)i; /* where it was */
    wr->ent[i] = e;
    return 0;
  }
  e = wr->ent[i] = uvp__rw_get(&wr->map, NS_PROMISE, r->a);
  uint32_t e2 = wr->ent2[i] = uvp__rw_get(&wr->map, NS_CAUSE, r->b);
  if (e2 != NONE)
    wr->ents[e2].cuts++;
  if (e != NONE && !wr->ents[e].cut) {
    wr->ents[e].cut = true;
    wr->ents[e].cause = e2;
    wr->ents[e].code = (int)(intptr_t)r->c;
    if (wr->ents[e].ends_at_settle)
      wr->ents[e].ended = true;
  }
  return 0;
}

/* A group's record i (r). */
static int ent_group(writer_t *wr, const uvp__rec_t *r, size_t i) {
  uint32_t e;
  switch (r->type) {
  case UVP__R_GROUP:
    if ((e = ent_new(wr, E_GROUP, r->a, true)) == NONE ||
        uvp__rw_put(&wr->map, NS_GROUP, r->a, e) != 0)
      return UV_ENOMEM;
    wr->ents[e].owner = r->c;
    wr->ents[e].file = r->file;
    wr->ents[e].line = r->line;
    break;
  case UVP__R_MEMBER:
    e = group_of(wr, r->a);
    wr->ent2[i] = uvp__rw_get(&wr->map, NS_PROMISE, r->b);
    break;
  default: /* UVP__R_GROUP_END */
    e = group_of(wr, r->a);
    if (e == NONE || wr->ents[e].ended)
      return 0;
    wr->ents[e].ended = true;
    break;
  }
  wr->ent[i] = e;
  return 0;
}

/* A stall's record i (r): a fiber's names the fiber, running then. */
static int ent_stall(writer_t *wr, const uvp__rec_t *r, size_t i) {
  if (r->x != UVP_STALL_FIBER || r->a == NULL)
    return 0;
  uint32_t e = wr->ent[i] = fiber_of(wr, r->a, F_RUN);
  if (e == NONE)
    return UV_ENOMEM;
  wr->ents[e].stall = (uint32_t)i;
  return 0;
}

/* The loop's record r, the first of them if *seen is false. */
static void ent_loop(writer_t *wr, const uvp__rec_t *r, size_t i, bool *seen) {
  if (!*seen) {
    *seen = true;
    wr->loop_at_first_poll = r->type == UVP__R_CHECK;
    wr->loop_at_first_uvp = r->type == UVP__R_UVP_END;
  }
  wr->tid[i] = TID_LOOP;
}

/* A span's beginning or end (record i, r). */
static int ent_span(writer_t *wr, const uvp__rec_t *r, size_t i) {
  uint32_t e;
  if (r->type == UVP__R_SPAN_BEGIN) {
    e = ent_new(wr, E_SPAN, r->a, true);
    if (e == NONE || uvp__rw_put(&wr->map, NS_SPAN, r->a, e) != 0)
      return UV_ENOMEM;
    wr->ents[e].name = (uintptr_t)r->b;
    wr->ents[e].code = r->x;
  } else {
    /* One whose beginning was overwritten has no ids to say: not
     * written. */
    e = uvp__rw_get(&wr->map, NS_SPAN, r->a);
    if (e != NONE && !wr->ents[e].ended) {
      wr->ents[e].ended = true;
      wr->ents[e].status = (int)(intptr_t)r->b;
    } else {
      e = NONE;
    }
  }
  wr->ent[i] = e;
  return 0;
}

/* Record i's entities (ent, ent2, ent3: NONE where it names none). */
static int ent_rec(writer_t *wr, size_t i, bool *loop_seen) {
  const uvp__rec_t *r = rec_at(wr, i);
  switch (r->type) {
  case UVP__R_WORK_START:
    return start(wr, r, i);
  case UVP__R_WORK_DESC:
  case UVP__R_WORK_END:
  case UVP__R_SETTLE:
    return ent_work(wr, r, i);
  case UVP__R_PARK:
  case UVP__R_RESUME:
  case UVP__R_FIBER_END:
  case UVP__R_NAME:
    return ent_fiber(wr, r, i);
  case UVP__R_CAUSE:
  case UVP__R_CUT:
    return ent_cut(wr, r, i);
  case UVP__R_GROUP:
  case UVP__R_MEMBER:
  case UVP__R_GROUP_END:
    return ent_group(wr, r, i);
  case UVP__R_STALL:
    return ent_stall(wr, r, i);
  case UVP__R_SPAN_BEGIN:
  case UVP__R_SPAN_END:
    return ent_span(wr, r, i);
  case UVP__R_PREPARE:
  case UVP__R_CHECK:
  case UVP__R_IDLE:
  case UVP__R_UVP_END:
    ent_loop(wr, r, i, loop_seen);
    return 0;
  default:
    return 0;
  }
}

static int entities(writer_t *wr) {
  bool loop_seen = false;
  for (size_t i = 0; i < wr->count; i++) {
    const uvp__rec_t *r = rec_at(wr, i);
    wr->ent[i] = wr->ent2[i] = wr->ent3[i] = NONE;
    /* The track first: a fiber running since before the records began
     * (its first record one of what it did) was running then (a spawn
     * too runs on the spawner's track). */
    uint32_t tr = r->track != NULL ? fiber_of(wr, r->track, F_RUN) : NONE;
    if (r->track != NULL && tr == NONE)
      return UV_ENOMEM;
    wr->tid[i] = tr != NONE ? FIBER_TID0 + wr->ents[tr].num : TID_LOOP;
    if (ent_rec(wr, i, &loop_seen) != 0)
      return UV_ENOMEM;
  }
  return 0;
}

/* ---- the writer ---------------------------------------------------------- */

void uvp__rw_free(writer_t *wr) {
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

writer_t *uvp__rw_new(uvp_ctx_t *ctx, uint64_t last_ms) {
  const uvp__rec_hot_t *h = uvp__rec_hot(ctx);
  size_t first;
  size_t held;
  ring_held(h, &first, &held);
  writer_t *wr = uvp__calloc(1, sizeof(*wr));
  uint64_t *t = uvp__malloc((held != 0 ? held : 1) * sizeof(*t));
  if (wr == NULL || t == NULL) {
    uvp__free(wr);
    uvp__free(t);
    return NULL;
  }
  wr->ctx = ctx;
  wr->ring = h->ring;
  wr->cap = (size_t)(h->end - h->ring);
  wr->t = t;
  times(wr, first, held, t);
  wr->t_end = uv_hrtime();
  if (held != 0 && t[held - 1] > wr->t_end)
    wr->t_end = t[held - 1];
  size_t skip = 0;
  if (last_ms != 0 && last_ms < wr->t_end / 1000000u) {
    uint64_t from = wr->t_end - last_ms * 1000000u;
    while (skip < held && t[skip] < from)
      skip++;
  }
  wr->first = (first + skip) % (wr->cap != 0 ? wr->cap : 1);
  wr->count = held - skip;
  if (skip != 0)
    memmove(t, t + skip, wr->count * sizeof(*t));
  wr->t0 = wr->count != 0 ? t[0] : wr->t_end;
  wr->overwritten = h->laps * wr->cap + (size_t)(h->next - h->ring) - held;
  return wr;
}

int uvp__rw_entities(writer_t *wr) {
  size_t n = wr->count != 0 ? wr->count : 1;
  wr->ent = uvp__malloc(n * sizeof(*wr->ent));
  wr->ent2 = uvp__malloc(n * sizeof(*wr->ent2));
  wr->ent3 = uvp__malloc(n * sizeof(*wr->ent3));
  wr->tid = uvp__malloc(n * sizeof(*wr->tid));
  if (wr->ent == NULL || wr->ent2 == NULL || wr->ent3 == NULL ||
      wr->tid == NULL || entities(wr) != 0)
    return UV_ENOMEM;
  wr->last_cap = FIBER_TID0 + wr->fibers;
  wr->last = uvp__calloc(wr->last_cap, sizeof(*wr->last));
  return wr->last != NULL ? 0 : UV_ENOMEM;
}
