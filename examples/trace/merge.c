/* uvp-trace merge: several processes' recorder files as one timeline.
 *
 * Each file's ts are microseconds of its own clock, from its otherData's
 * ts_origin_ns; wall_origin_ns is the wall clock at that instant, which
 * places the files roughly (as well as the machines' clocks agree).  A
 * request pins them closer: a CLIENT span in process A (begun t1, ended
 * t4) and the SERVER or CONSUMER span in B whose parent is it (t2, t3)
 * say, as NTP's four timestamps do, that B's clock minus A's is
 *
 *   offset = ((t2 - t1) + (t3 - t4)) / 2,  within  ((t4 - t1) - (t3 - t2)) / 2
 *
 * whatever the two legs' delays were (the served request lies inside the
 * request's round trip).  For each pair of processes the pair with the
 * smallest bound is kept (NTP's minimum filter), and offsets go out from
 * the first file along the pairs, their bounds adding up (the smallest
 * sum wins).  A process no request reaches keeps its wall clock. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "trace.h"

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

/* ---- reading ------------------------------------------------------------ */

json_t *trace_load(const char *path) {
  json_error_t err;
  json_t *doc = json_load_file(path, 0, &err);
  if (doc == NULL && err.line > 0)
    fprintf(stderr, "uvp-trace: %s:%d: %s\n", path, err.line, err.text);
  else if (doc == NULL)
    fprintf(stderr, "uvp-trace: %s\n", err.text); /* names the file */
  return doc;
}

static int load_one(trace_proc_t *p, const char *arg) {
  const char *eq = strchr(arg, '=');
  p->path = arg;
  if (eq != NULL && eq != arg && memchr(arg, '/', (size_t)(eq - arg)) == NULL) {
    p->name = compat_strndup(arg, (size_t)(eq - arg));
    p->path = eq + 1;
  } else {
    const char *base = strrchr(arg, '/') != NULL ? strrchr(arg, '/') + 1 : arg;
    size_t len = strlen(base);
    if (len > 5 && strcmp(base + len - 5, ".json") == 0)
      len -= 5;
    p->name = compat_strndup(base, len);
  }
  p->doc = trace_load(p->path);
  if (p->doc == NULL)
    return -1;
  if (!json_is_array(json_object_get(p->doc, "traceEvents"))) {
    fprintf(stderr, "uvp-trace: %s: no traceEvents array (not a trace)\n",
            p->path);
    return -1;
  }
  json_t *other = json_object_get(p->doc, "otherData");
  json_t *wall = json_object_get(other, "wall_origin_ns");
  json_t *pid = json_object_get(other, "pid");
  p->wall_origin = json_is_integer(wall) ? json_integer_value(wall) : 0;
  p->source_pid = json_is_integer(pid) ? json_integer_value(pid) : -1;
  p->align = ALIGN_WALL;
  p->via = -1;
  return 0;
}

static int add_span(trace_merge_t *m, size_t *cap, int proc, json_t *e) {
  json_t *args = json_object_get(e, "args");
  const char *id = str_of(args, "span_id");
  const char *parent = str_of(args, "parent_id");
  if (id == NULL || strlen(id) != 16)
    return 0; /* a begin the ring cut off says no ids: nothing to link */
  if (m->nspans == *cap) {
    size_t n = *cap == 0 ? 256 : 2 * *cap;
    trace_span_t *s = realloc(m->spans, n * sizeof *s);
    if (s == NULL)
      return -1;
    m->spans = s;
    *cap = n;
  }
  trace_span_t *s = &m->spans[m->nspans++];
  memset(s, 0, sizeof *s);
  s->proc = proc;
  memcpy(s->id, id, 17);
  if (parent != NULL && strlen(parent) == 16)
    memcpy(s->parent, parent, 17);
  s->kind = kind_of(str_of(args, "kind"));
  s->begin = s->end = json_number_value(json_object_get(e, "ts"));
  s->whole = !json_is_true(json_object_get(args, "cut_off"));
  s->tid = json_integer_value(json_object_get(e, "tid"));
  s->name = str_of(e, "name");
  return 0;
}

/* Every span's begin, then (by its id) its end. */
static int collect_spans(trace_merge_t *m) {
  size_t cap = 0;
  for (int p = 0; p < m->nprocs; p++) {
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(m->procs[p].doc, "traceEvents"), i, e) {
      const char *ph = str_of(e, "ph"), *cat = str_of(e, "cat");
      if (ph != NULL && cat != NULL && strcmp(cat, "span") == 0 &&
          strcmp(ph, "b") == 0 && add_span(m, &cap, p, e) != 0)
        return -1;
    }
  }
  span_index_t ix;
  if (index_build(&ix, m) != 0)
    return -1;
  for (int p = 0; p < m->nprocs; p++) {
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(m->procs[p].doc, "traceEvents"), i, e) {
      const char *ph = str_of(e, "ph"), *cat = str_of(e, "cat");
      const char *id = str_of(e, "id");
      if (ph == NULL || cat == NULL || id == NULL || strcmp(cat, "span") != 0 ||
          strcmp(ph, "e") != 0 || strncmp(id, "0x", 2) != 0)
        continue;
      trace_span_t *s = index_find(&ix, m, id + 2, p);
      if (s == NULL)
        continue;
      s->end = json_number_value(json_object_get(e, "ts"));
      if (json_is_true(json_object_get(json_object_get(e, "args"), "open")))
        s->whole = 0;
    }
  }
  free(ix.slots);
  return 0;
}

/* ---- the flows and the clocks ------------------------------------------- */

typedef struct {
  double offset, bound; /* of the column's process minus the row's */
  int set;
} edge_t;

/* ts of process p on the reference's clock (its wall offset taken out). */
static double wall_delta(const trace_merge_t *m, int p, int q) {
  return (double)(m->procs[q].wall_origin - m->procs[p].wall_origin) / 1e3;
}

static int link_flows(trace_merge_t *m, edge_t *edges, FILE *report) {
  span_index_t ix;
  if (index_build(&ix, m) != 0)
    return -1;
  int n = m->nprocs;
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
    m->flows[m->nflows++] = (trace_flow_t){(int)(c - m->spans), (int)i};
    if (c->proc == s->proc || c->kind != KIND_CLIENT || !c->whole || !s->whole)
      continue;
    double t1 = c->begin, t4 = c->end, t2 = s->begin, t3 = s->end;
    double offset =
        ((t2 - t1) + (t3 - t4)) / 2 + wall_delta(m, c->proc, s->proc);
    double bound = ((t4 - t1) - (t3 - t2)) / 2;
    if (bound < 0) {
      fprintf(report,
              "uvp-trace: inconsistent: %s's span %s (%s) lasted %.3f us, "
              "longer than %s's request %s (%.3f us)\n",
              m->procs[s->proc].name, s->id, s->name ? s->name : "", t3 - t2,
              m->procs[c->proc].name, c->id, t4 - t1);
      m->inconsistent++;
      continue;
    }
    m->pairs++;
    edge_t *ab = &edges[c->proc * n + s->proc],
           *ba = &edges[s->proc * n + c->proc];
    if (!ab->set || bound < ab->bound) {
      *ab = (edge_t){offset, bound, 1};
      *ba = (edge_t){-offset, bound, 1};
    }
  }
  free(ix.slots);
  return 0;
}

/* Dijkstra from the reference over the pairs: the smallest sum of bounds. */
static void align(trace_merge_t *m, const edge_t *edges) {
  int n = m->nprocs;
  char *done = calloc((size_t)n, 1);
  m->procs[0].align = ALIGN_REFERENCE;
  while (done != NULL) {
    int best = -1;
    for (int p = 0; p < n; p++)
      if (!done[p] && m->procs[p].align != ALIGN_WALL &&
          (best < 0 || m->procs[p].bound_us < m->procs[best].bound_us))
        best = p;
    if (best < 0)
      break;
    done[best] = 1;
    for (int q = 0; q < n; q++) {
      const edge_t *e = &edges[best * n + q];
      trace_proc_t *pq = &m->procs[q];
      double bound = m->procs[best].bound_us + e->bound;
      if (!e->set || done[q] ||
          (pq->align != ALIGN_WALL && pq->bound_us <= bound))
        continue;
      pq->align = ALIGN_REQUESTS;
      pq->offset_us = m->procs[best].offset_us + e->offset;
      pq->bound_us = bound;
      pq->via = best;
    }
  }
  free(done);
  /* A process no request reaches: its wall clock's reading, as is. */
  for (int p = 0; p < n; p++)
    if (m->procs[p].align == ALIGN_WALL)
      m->procs[p].offset_us = 0;
}

/* A ts of process p on the output's clock. */
static double place(const trace_merge_t *m, int p, double ts) {
  return ts + wall_delta(m, 0, p) - m->procs[p].offset_us + m->shift_us;
}

/* With the offsets known: does each request still come before its service,
 * and its reply after, within the two processes' bounds? */
static void check_order(trace_merge_t *m, FILE *report) {
  for (size_t i = 0; i < m->nflows; i++) {
    const trace_span_t *c = &m->spans[m->flows[i].client];
    const trace_span_t *s = &m->spans[m->flows[i].server];
    const trace_proc_t *pc = &m->procs[c->proc], *ps = &m->procs[s->proc];
    if (c->proc == s->proc || pc->align == ALIGN_WALL ||
        ps->align == ALIGN_WALL)
      continue;
    double tol = pc->bound_us + ps->bound_us + 1e-3; /* the ts' ns rounding */
    double early = place(m, c->proc, c->begin) - place(m, s->proc, s->begin);
    double late = c->kind == KIND_CLIENT && c->whole && s->whole
                      ? place(m, s->proc, s->end) - place(m, c->proc, c->end)
                      : 0;
    if (early > tol || late > tol) {
      fprintf(report,
              "uvp-trace: inconsistent: %s's span %s (%s) %s %s's request "
              "%s by %.3f us (bounds: %.3f us)\n",
              ps->name, s->id, s->name ? s->name : "",
              early > tol ? "starts before" : "ends after", pc->name, c->id,
              early > tol ? early : late, tol);
      m->inconsistent++;
    }
  }
}

int trace_merge_load(trace_merge_t *m, char **args, int n, FILE *report) {
  memset(m, 0, sizeof *m);
  m->procs = calloc((size_t)n, sizeof *m->procs);
  if (m->procs == NULL)
    goto nomem;
  m->nprocs = n;
  for (int p = 0; p < n; p++)
    if (load_one(&m->procs[p], args[p]) != 0)
      return -1;
  edge_t *edges = calloc((size_t)n * (size_t)n, sizeof *edges);
  if (edges == NULL || collect_spans(m) != 0 ||
      link_flows(m, edges, report) != 0) {
    free(edges);
    goto nomem;
  }
  align(m, edges);
  free(edges);
  /* No event before 0 on the output's clock. */
  double first = 0;
  for (size_t i = 0; i < m->nspans; i++)
    first = fmin(first, place(m, m->spans[i].proc, m->spans[i].begin));
  for (int p = 0; p < n; p++) {
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(m->procs[p].doc, "traceEvents"), i, e) {
      json_t *ts = json_object_get(e, "ts");
      if (json_is_number(ts))
        first = fmin(first, place(m, p, json_number_value(ts)));
    }
  }
  m->shift_us = first < 0 ? ceil(-first) : 0;
  check_order(m, report);
  return 0;
nomem:
  fprintf(stderr, "uvp-trace: %s\n", strerror(ENOMEM));
  return -1;
}

/* ---- writing ------------------------------------------------------------ */

static json_t *meta(int pid, const char *what, json_t *args) {
  return json_pack("{s:s,s:i,s:i,s:s,s:o}", "ph", "M", "pid", pid, "tid", 0,
                   "name", what, "args", args);
}

/* Ids local to a file made unique to the output: an async slice's number
 * moved past every other file's; a flow's, which viewers read as a hex
 * number (Perfetto drops a flow whose id is not one, as the recorder's
 * "cause.12.0"), a hash of it and its process. */
static void renumber(json_t *e, int pid) {
  const char *ph = str_of(e, "ph"), *cat = str_of(e, "cat");
  const char *id = str_of(e, "id");
  if (ph == NULL || id == NULL || (cat != NULL && strcmp(cat, "span") == 0))
    return;
  char buf[40];
  if (strchr("stf", ph[0]) != NULL && ph[0] != '\0') {
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)pid; /* FNV-1a */
    for (const char *c = id; *c != '\0'; c++)
      h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
    snprintf(buf, sizeof buf, "0x%016" PRIx64, h);
  } else if (id[0] != '\0' && strspn(id, "0123456789") == strlen(id) &&
             strlen(id) < 12) {
    snprintf(buf, sizeof buf, "%llu",
             ((unsigned long long)pid << 40) + strtoull(id, NULL, 10));
  } else {
    return; /* a string of its own: left as it is */
  }
  json_object_set_new(e, "id", json_string(buf));
}

/* A request's flow: its id the served span's (a hex number, unique), from
 * the loop's slice where the client span began to the one where the
 * served span began; args name both spans. */
static json_t *flow_event(const trace_merge_t *m, const trace_span_t *c,
                          const trace_span_t *s, int end) {
  const trace_span_t *at = end ? s : c;
  char id[20], cid[20], sid[20];
  snprintf(id, sizeof id, "0x%s", s->id);
  snprintf(cid, sizeof cid, "0x%s", c->id);
  snprintf(sid, sizeof sid, "0x%s", s->id);
  double ts = round(place(m, at->proc, at->begin) * 1e3) / 1e3;
  return json_pack("{s:s,s:i,s:I,s:f,s:s,s:s,s:s,s:s,s:{s:s,s:s}}", "ph",
                   end ? "f" : "s", "pid", at->proc + 1, "tid",
                   (json_int_t)at->tid, "ts", ts, "cat", "request", "name",
                   "request", "id", id, "bp", "e", "args", "client", cid,
                   "server", sid);
}

json_t *trace_merge_doc(const trace_merge_t *m) {
  json_t *events = json_array(), *procs = json_array();
  for (int p = 0; p < m->nprocs; p++) {
    const trace_proc_t *pr = &m->procs[p];
    json_array_append_new(events, meta(p + 1, "process_name",
                                       json_pack("{s:s}", "name", pr->name)));
    json_array_append_new(events, meta(p + 1, "process_sort_index",
                                       json_pack("{s:i}", "sort_index", p)));
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(pr->doc, "traceEvents"), i, e) {
      const char *ph = str_of(e, "ph"), *name = str_of(e, "name");
      if (ph != NULL && strcmp(ph, "M") == 0 && name != NULL &&
          strcmp(name, "process_name") == 0)
        continue;
      json_object_set_new(e, "pid", json_integer(p + 1));
      json_t *ts = json_object_get(e, "ts");
      if (json_is_number(ts))
        json_object_set_new(
            e, "ts",
            json_real(round(place(m, p, json_number_value(ts)) * 1e3) / 1e3));
      renumber(e, p + 1);
      json_array_append(events, e);
    }
    static const char *const how[] = {"reference", "requests", "wall clock"};
    json_t *o = json_pack("{s:i,s:s,s:s,s:s,s:f}", "pid", p + 1, "name",
                          pr->name, "file", pr->path, "aligned_by",
                          how[pr->align], "offset_us", pr->offset_us);
    json_object_set_new(o, "bound_us",
                        pr->align == ALIGN_WALL ? json_null()
                                                : json_real(pr->bound_us));
    if (pr->via >= 0)
      json_object_set_new(o, "via", json_string(m->procs[pr->via].name));
    if (pr->source_pid >= 0)
      json_object_set_new(o, "source_pid", json_integer(pr->source_pid));
    json_array_append_new(procs, o);
  }
  for (size_t i = 0; i < m->nflows; i++) {
    const trace_span_t *c = &m->spans[m->flows[i].client];
    const trace_span_t *s = &m->spans[m->flows[i].server];
    json_array_append_new(events, flow_event(m, c, s, 0));
    json_array_append_new(events, flow_event(m, c, s, 1));
  }
  json_t *other = json_pack(
      "{s:i,s:s,s:I,s:o,s:I,s:I,s:I}", "uvp_trace_merge", 1, "method",
      "offset per process pair from the request/reply span pair with the "
      "smallest bound ((t4-t1)-(t3-t2))/2, summed along pairs from the first "
      "file",
      "ts_origin_wall_ns",
      (json_int_t)(m->procs[0].wall_origin - (int64_t)(m->shift_us * 1e3)),
      "processes", procs, "requests", (json_int_t)m->nflows, "clock_pairs",
      (json_int_t)m->pairs, "inconsistent", (json_int_t)m->inconsistent);
  return json_pack("{s:o,s:s,s:o}", "traceEvents", events, "displayTimeUnit",
                   "ns", "otherData", other);
}

void trace_merge_print(const trace_merge_t *m, FILE *out) {
  fprintf(out,
          "%d process%s, %zu spans, %zu requests linked (%zu request/reply "
          "pairs across processes), %zu inconsistent\n",
          m->nprocs, m->nprocs == 1 ? "" : "es", m->nspans, m->nflows, m->pairs,
          m->inconsistent);
  fprintf(out, "%4s  %-16s %14s %12s  %s\n", "pid", "process", "offset (us)",
          "bound (us)", "aligned by");
  for (int p = 0; p < m->nprocs; p++) {
    const trace_proc_t *pr = &m->procs[p];
    if (pr->align == ALIGN_WALL)
      fprintf(out, "%4d  %-16s %14s %12s  wall clock only\n", p + 1, pr->name,
              "-", "-");
    else
      fprintf(out, "%4d  %-16s %14.3f %12.3f  %s%s\n", p + 1, pr->name,
              pr->offset_us, pr->bound_us,
              pr->align == ALIGN_REFERENCE ? "reference" : "requests with ",
              pr->via >= 0 ? m->procs[pr->via].name : "");
  }
}

void trace_merge_free(trace_merge_t *m) {
  for (int p = 0; p < m->nprocs; p++) {
    free((char *)m->procs[p].name);
    json_decref(m->procs[p].doc);
  }
  free(m->procs);
  free(m->spans);
  free(m->flows);
}
