/* uvp-trace merge: several processes' recorder files as one timeline.
 *
 * Each file's ts are microseconds of its own clock, from its otherData's
 * ts_origin_ns; wall_origin_ns is the wall clock at that instant, which
 * places the files roughly (as well as the machines' clocks agree).  Files
 * of one process (the same pid, and origins that say the same monotonic
 * clock) share that clock exactly: they are placed as one.
 *
 * A request pins the clocks closer: a CLIENT span in process A (begun t1,
 * ended t4) and the SERVER or CONSUMER span in B whose parent is it (t2,
 * t3) say, as NTP's four timestamps do, that B's clock minus A's lies in
 * [t3 - t4, t2 - t1], whatever the two legs' delays were (the service lies
 * inside the request's round trip): its midpoint
 *
 *   offset = ((t2 - t1) + (t3 - t4)) / 2,  within  ((t4 - t1) - (t3 - t2)) / 2.
 *
 * A message (a PRODUCER span in A, the CONSUMER span in B that it was
 * delivered to) has no reply: it bounds the offset one way only, B's
 * clock minus A's at most t2 - t1 (a delivery cannot precede its publish).
 *
 * Offsets go out from the first file (the reference) along the process
 * pairs with requests (for each pair the request with the smallest bound,
 * NTP's minimum filter; the smallest sum of bounds wins); a process whose
 * wall clock already lies within every request's interval keeps it (the
 * midpoint is no better, and a wall clock synchronised to a microsecond is
 * often much better).  A process no request reaches is placed within its
 * messages' bounds: its wall clock if it fits them, else the nearest
 * offset that does.  A process nothing links keeps its wall clock and is
 * reported unaligned. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "trace.h"

/* A ts beyond this (about 3 years of microseconds) is not a recorder's:
 * the bound keeps every sum of ts and wall clock differences inside what a
 * double holds to the nanosecond and an int64_t of nanoseconds holds. */
#define TS_MAX 1e14
/* wall_origin_ns in [0, 2^62): differences of two never overflow. */
#define WALL_MAX ((int64_t)1 << 62)

static const char *const kind_names[] = {"internal", "server", "client",
                                         "producer", "consumer"};

static int kind_of(const char *s) {
  for (int k = 0; k < 5; k++)
    if (s != NULL && strcmp(s, kind_names[k]) == 0)
      return k;
  return KIND_INTERNAL;
}

static const char *str_of(json_t *obj, const char *key) {
  return json_string_value(json_object_get(obj, key));
}

static int is_hex16(const char *s) {
  return s != NULL && strlen(s) == 16 &&
         strspn(s, "0123456789abcdefABCDEF") == 16;
}

/* ---- spans by id: open addressing on the 64-bit span id ----------------- */

typedef struct {
  size_t *slots; /* span index + 1; 0 empty */
  size_t mask;
} span_index_t;

static uint64_t id_hash(const char *hex) {
  uint64_t h = strtoull(hex, NULL, 16);
  return h * 0x9e3779b97f4a7c15ull;
}

static int index_build(span_index_t *ix, const trace_merge_t *m) {
  size_t cap = 16;
  while (cap < 2 * m->nspans)
    cap *= 2;
  ix->slots = calloc(cap, sizeof *ix->slots);
  ix->mask = cap - 1;
  if (ix->slots == NULL)
    return -1;
  for (size_t i = 0; i < m->nspans; i++) {
    size_t h = (size_t)id_hash(m->spans[i].id) & ix->mask;
    while (ix->slots[h] != 0)
      h = (h + 1) & ix->mask;
    ix->slots[h] = i + 1;
  }
  return 0;
}

/* The first span with this id in process proc (-1: any process). */
static trace_span_t *index_find(const span_index_t *ix, trace_merge_t *m,
                                const char *id, int proc) {
  for (size_t h = (size_t)id_hash(id) & ix->mask; ix->slots[h] != 0;
       h = (h + 1) & ix->mask) {
    trace_span_t *s = &m->spans[ix->slots[h] - 1];
    if (strcmp(s->id, id) == 0 && (proc < 0 || s->proc == proc))
      return s;
  }
  return NULL;
}

/* ---- reading: the first pass keeps the spans only ------------------------ */

typedef struct {
  char id[17];
  int proc, open;
  double ts;
} span_end_t;

typedef struct {
  trace_merge_t *m;
  int proc;
  size_t cap;
  span_end_t *ends;
  size_t nends, ends_cap;
} loader_t;

static int bad_event(const loader_t *l, size_t index, json_t *e,
                     const char *what) {
  const char *ph = str_of(e, "ph"), *name = str_of(e, "name");
  fprintf(stderr, "uvp-trace: %s: event %zu (ph %s%s%s): %s\n",
          l->m->procs[l->proc].path, index, ph != NULL ? ph : "none",
          name != NULL ? ", name " : "", name != NULL ? name : "", what);
  return -1;
}

static int add_begin(loader_t *l, json_t *e, double ts) {
  json_t *args = json_object_get(e, "args");
  const char *id = str_of(args, "span_id");
  const char *parent = str_of(args, "parent_id");
  trace_merge_t *m = l->m;
  if (m->nspans == l->cap) {
    size_t n = l->cap == 0 ? 256 : 2 * l->cap;
    trace_span_t *s = realloc(m->spans, n * sizeof *s);
    if (s == NULL)
      return -1;
    m->spans = s;
    l->cap = n;
  }
  trace_span_t *s = &m->spans[m->nspans++];
  memset(s, 0, sizeof *s);
  s->proc = l->proc;
  memcpy(s->id, id, 17);
  if (parent != NULL)
    memcpy(s->parent, parent, 17);
  s->kind = kind_of(str_of(args, "kind"));
  s->begin = s->end = ts;
  s->cut_off = json_is_true(json_object_get(args, "cut_off"));
  s->whole = !s->cut_off;
  s->tid = json_integer_value(json_object_get(e, "tid"));
  return 0;
}

static int add_end(loader_t *l, const char *id, json_t *e, double ts) {
  if (l->nends == l->ends_cap) {
    size_t n = l->ends_cap == 0 ? 256 : 2 * l->ends_cap;
    span_end_t *s = realloc(l->ends, n * sizeof *s);
    if (s == NULL)
      return -1;
    l->ends = s;
    l->ends_cap = n;
  }
  span_end_t *x = &l->ends[l->nends++];
  memcpy(x->id, id, 17);
  x->proc = l->proc;
  x->ts = ts;
  x->open = json_is_true(json_object_get(json_object_get(e, "args"), "open"));
  return 0;
}

/* One event of the first pass: its ts checked, a span's ids checked and
 * kept.  A begin the ring cut off says no ids: nothing to link, kept out. */
static int load_event(void *arg, json_t *e, size_t index) {
  loader_t *l = arg;
  json_t *jts = json_object_get(e, "ts");
  double ts = json_number_value(jts);
  if (jts != NULL && !json_is_number(jts))
    return bad_event(l, index, e, "ts is not a number");
  if (jts != NULL && !(fabs(ts) <= TS_MAX))
    return bad_event(l, index, e, "ts out of range (1e14 us at most)");
  trace_proc_t *p = &l->m->procs[l->proc];
  if (jts != NULL && ts < p->min_ts)
    p->min_ts = ts;
  const char *ph = str_of(e, "ph"), *cat = str_of(e, "cat");
  if (ph == NULL || cat == NULL || strcmp(cat, "span") != 0)
    return 0;
  if (strcmp(ph, "b") == 0) {
    json_t *args = json_object_get(e, "args");
    json_t *id = json_object_get(args, "span_id");
    json_t *parent = json_object_get(args, "parent_id");
    if (id == NULL)
      return 0;
    if (!is_hex16(json_string_value(id)))
      return bad_event(l, index, e, "args.span_id is not 16 hex digits");
    if (parent != NULL && !is_hex16(json_string_value(parent)))
      return bad_event(l, index, e, "args.parent_id is not 16 hex digits");
    if (jts == NULL)
      return bad_event(l, index, e, "a span's begin without ts");
    return add_begin(l, e, ts) == 0 ? 0 : bad_event(l, index, e, "no memory");
  }
  if (strcmp(ph, "e") == 0) {
    const char *id = str_of(e, "id");
    if (id == NULL || strncmp(id, "0x", 2) != 0 || !is_hex16(id + 2))
      return bad_event(l, index, e, "a span's id is not 0x and 16 hex digits");
    if (jts == NULL)
      return bad_event(l, index, e, "a span's end without ts");
    return add_end(l, id + 2, e, ts) == 0 ? 0
                                          : bad_event(l, index, e, "no memory");
  }
  return 0;
}

/* An integer of otherData's in [min, max) into *out (absent: left). */
static int other_int(const trace_proc_t *p, json_t *other, const char *key,
                     int64_t min, int64_t max, int64_t *out) {
  json_t *v = json_object_get(other, key);
  if (v == NULL || json_is_null(v))
    return 0;
  if (!json_is_integer(v) || json_integer_value(v) < min ||
      json_integer_value(v) >= max) {
    fprintf(stderr,
            "uvp-trace: %s: otherData's %s is not an integer from %lld to "
            "%lld\n",
            p->path, key, (long long)min, (long long)(max - 1));
    return -1;
  }
  *out = json_integer_value(v);
  return 0;
}

/* A pipe cannot be read twice: its bytes are kept in a temporary file. */
static FILE *rereadable(FILE *f, const char *path) {
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode))
    return f;
  FILE *t = tmpfile();
  char buf[65536];
  size_t n;
  while (t != NULL && (n = fread(buf, 1, sizeof buf, f)) > 0)
    if (fwrite(buf, 1, n, t) != n)
      break;
  int bad = t == NULL || ferror(f) || ferror(t) || fseek(t, 0, SEEK_SET) != 0;
  if (bad)
    fprintf(stderr, "uvp-trace: %s: %s\n", path,
            t == NULL ? "no temporary file to keep it in" : strerror(errno));
  fclose(f);
  if (bad && t != NULL)
    fclose(t);
  return bad ? NULL : t;
}

/* n bytes of s as a string of its own (strndup, which not every C
 * library has). */
static char *copy_of(const char *s, size_t n) {
  char *c = malloc(n + 1);
  if (c != NULL) {
    memcpy(c, s, n);
    c[n] = '\0';
  }
  return c;
}

static int load_one(loader_t *l, const char *arg) {
  trace_proc_t *p = &l->m->procs[l->proc];
  const char *eq = strchr(arg, '=');
  p->path = arg;
  p->ts_origin = -1;
  p->source_pid = -1;
  p->align = ALIGN_WALL;
  p->via = -1;
  p->bound_us = -1;
  p->min_ts = INFINITY;
  if (eq != NULL && eq != arg && memchr(arg, '/', (size_t)(eq - arg)) == NULL) {
    p->name = copy_of(arg, (size_t)(eq - arg));
    p->path = eq + 1;
  } else {
    const char *base = strrchr(arg, '/') != NULL ? strrchr(arg, '/') + 1 : arg;
    size_t len = strlen(base);
    if (len > 5 && strcmp(base + len - 5, ".json") == 0)
      len -= 5;
    p->name = copy_of(base, len);
  }
  if (p->name == NULL || (p->in = trace_open(p->path)) == NULL ||
      (p->in = rereadable(p->in, p->path)) == NULL)
    return -1;
  json_t *other;
  if (trace_stream(p->in, p->path, load_event, l, &other) != 0)
    return -1;
  int64_t pid = -1;
  int rc =
      other_int(p, other, "wall_origin_ns", 0, WALL_MAX, &p->wall_origin) !=
          0 ||
      other_int(p, other, "ts_origin_ns", 0, WALL_MAX, &p->ts_origin) != 0 ||
      other_int(p, other, "pid", 0, INT64_MAX, &pid) != 0;
  p->source_pid = pid;
  json_decref(other);
  return rc ? -1 : 0;
}

/* Each span's end, by its id in its process. */
static int match_ends(trace_merge_t *m, span_end_t *ends, size_t n) {
  span_index_t ix;
  if (index_build(&ix, m) != 0)
    return -1;
  for (size_t i = 0; i < n; i++) {
    trace_span_t *s = index_find(&ix, m, ends[i].id, ends[i].proc);
    if (s == NULL)
      continue;
    s->end = ends[i].ts;
    if (ends[i].open)
      s->whole = 0;
  }
  free(ix.slots);
  return 0;
}

/* Files of one process: the same pid and the same monotonic clock (their
 * wall origins minus their ts origins within a millisecond: the wall
 * clock is read once a file, a few microseconds apart).  They keep the
 * first one's wall clock, moved by their ts origins' difference, exact. */
static void same_clocks(trace_merge_t *m) {
  for (int p = 0; p < m->nprocs; p++) {
    trace_proc_t *a = &m->procs[p];
    a->clock = p;
    for (int q = 0; q < p && a->clock == p; q++) {
      const trace_proc_t *b = &m->procs[q];
      if (b->clock != q || a->source_pid < 0 ||
          a->source_pid != b->source_pid || a->ts_origin < 0 ||
          b->ts_origin < 0 || a->wall_origin == 0 || b->wall_origin == 0)
        continue;
      int64_t da = a->wall_origin - a->ts_origin;
      int64_t db = b->wall_origin - b->ts_origin;
      if (llabs(da - db) < 1000000) {
        a->clock = q;
        a->wall_origin -= da - db; /* within a millisecond: no overflow */
      }
    }
  }
}

/* Each server or consumer span whose parent is a client or producer span
 * (in any file): a flow; across two clocks, clock evidence on their edge.
 */
static int link_flows(trace_merge_t *m, trace_edge_t *edges, FILE *report) {
  span_index_t ix;
  if (index_build(&ix, m) != 0)
    return -1;
  for (size_t i = 0; i < m->nspans; i++) {
    trace_span_t *s = &m->spans[i];
    if (s->parent[0] == '\0' ||
        (s->kind != KIND_SERVER && s->kind != KIND_CONSUMER))
      continue;
    trace_span_t *c = index_find(&ix, m, s->parent, -1);
    if (c == NULL || (c->kind != KIND_CLIENT && c->kind != KIND_PRODUCER))
      continue;
    if (m->nflows % 256 == 0) {
      trace_flow_t *f = realloc(m->flows, (m->nflows + 256) * sizeof *f);
      if (f == NULL) {
        free(ix.slots);
        return -1;
      }
      m->flows = f;
    }
    m->flows[m->nflows++] = (trace_flow_t){(size_t)(c - m->spans), i};
    trace_evidence(m, edges, c, s, report);
  }
  free(ix.slots);
  return 0;
}

int trace_merge_load(trace_merge_t *m, char **args, int n, FILE *report) {
  memset(m, 0, sizeof *m);
  m->procs = calloc((size_t)n, sizeof *m->procs);
  if (m->procs == NULL)
    goto nomem;
  m->nprocs = n;
  loader_t l = {m, 0, 0, NULL, 0, 0};
  for (l.proc = 0; l.proc < n; l.proc++)
    if (load_one(&l, args[l.proc]) != 0) {
      m->nprocs = l.proc + 1;
      free(l.ends);
      return -1;
    }
  int rc = match_ends(m, l.ends, l.nends);
  free(l.ends);
  same_clocks(m);
  size_t nn = (size_t)n * (size_t)n;
  trace_edge_t *edges = rc == 0 ? malloc(nn * sizeof *edges) : NULL;
  for (size_t i = 0; edges != NULL && i < nn; i++)
    edges[i] = (trace_edge_t){0, 0, -INFINITY, INFINITY, 0, 0};
  if (edges == NULL || link_flows(m, edges, report) != 0) {
    free(edges);
    goto nomem;
  }
  rc = trace_align(m, edges, report);
  free(edges);
  return rc;
nomem:
  fprintf(stderr, "uvp-trace: %s\n", strerror(ENOMEM));
  return -1;
}
