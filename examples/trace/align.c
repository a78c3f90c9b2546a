/* uvp-trace merge: the clocks lined up (merge.c's comment says how). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

/* The ts' rounding to the nanosecond, twice. */
#define TOL_US 2e-3

/* Process q's wall clock minus p's, in microseconds (both in [0, 2^62)
 * or moved from there by under a millisecond: no overflow). */
static double wall_delta(const trace_merge_t *m, int p, int q) {
  return (double)(m->procs[q].wall_origin - m->procs[p].wall_origin) / 1e3;
}

double trace_place(const trace_merge_t *m, int p, double ts) {
  return ts + wall_delta(m, 0, p) - m->procs[p].offset_us + m->shift_us;
}

static void bound_edge(trace_edge_t *e, trace_edge_t *back, double lo,
                       double hi) {
  e->lo = fmax(e->lo, lo);
  e->hi = fmin(e->hi, hi);
  back->lo = -e->hi;
  back->hi = -e->lo;
  e->linked = back->linked = 1;
}

void trace_evidence(trace_merge_t *m, trace_edge_t *edges,
                    const trace_span_t *c, const trace_span_t *s,
                    FILE *report) {
  int n = m->nprocs, a = m->procs[c->proc].clock, b = m->procs[s->proc].clock;
  if (a == b || c->cut_off)
    return; /* one clock; or a begin the ring cut, later than it was */
  trace_edge_t *ab = &edges[a * n + b], *ba = &edges[b * n + a];
  double t1 = c->begin, t4 = c->end, t2 = s->begin, t3 = s->end;
  double wd = wall_delta(m, c->proc, s->proc);
  if (c->kind == KIND_PRODUCER || !c->whole || !s->whole) {
    /* No reply: the service began after the request did, no more. */
    m->messages += c->kind == KIND_PRODUCER;
    bound_edge(ab, ba, -INFINITY, t2 - t1 + wd);
    return;
  }
  double offset = ((t2 - t1) + (t3 - t4)) / 2 + wd;
  double bound = ((t4 - t1) - (t3 - t2)) / 2;
  if (bound < 0) {
    fprintf(report,
            "uvp-trace: inconsistent: %s's span %s lasted %.3f us, longer "
            "than %s's request %s (%.3f us)\n",
            m->procs[s->proc].name, s->id, t3 - t2, m->procs[c->proc].name,
            c->id, t4 - t1);
    m->inconsistent++;
    return;
  }
  m->pairs++;
  bound_edge(ab, ba, t3 - t4 + wd, t2 - t1 + wd);
  if (!ab->set || bound < ab->bound) {
    ab->offset = offset;
    ba->offset = -offset;
    ab->bound = ba->bound = bound;
    ab->set = ba->set = 1;
  }
}

/* q placed from p along e (requests): its wall clock where it lies within
 * every request's interval, else the best request's midpoint. */
static void from_requests(trace_merge_t *m, int p, int q,
                          const trace_edge_t *e) {
  trace_proc_t *pp = &m->procs[p], *pq = &m->procs[q];
  double d = -pp->offset_us; /* q's wall clock, as an offset from p's */
  double off, bound;
  int how;
  if (e->lo - TOL_US <= d && d <= e->hi + TOL_US) {
    how = ALIGN_WALL_FITS;
    off = 0;
    bound = pp->bound_us + fmax(0, fmax(d - e->lo, e->hi - d));
  } else {
    how = ALIGN_REQUESTS;
    off = pp->offset_us + e->offset;
    bound = pp->bound_us + e->bound;
  }
  if (pq->align != ALIGN_WALL && pq->bound_us <= bound)
    return;
  pq->align = how;
  pq->offset_us = off;
  pq->bound_us = bound;
  pq->via = p;
}

/* Dijkstra from the reference over the clocks that requests link: the
 * smallest sum of bounds. */
static int by_requests(trace_merge_t *m, const trace_edge_t *edges) {
  int n = m->nprocs;
  char *done = calloc((size_t)n, 1);
  if (done == NULL)
    return -1;
  m->procs[0].align = ALIGN_REFERENCE;
  m->procs[0].bound_us = 0;
  for (;;) {
    int best = -1;
    for (int p = 0; p < n; p++)
      if (!done[p] && m->procs[p].clock == p &&
          m->procs[p].align != ALIGN_WALL &&
          (best < 0 || m->procs[p].bound_us < m->procs[best].bound_us))
        best = p;
    if (best < 0)
      break;
    done[best] = 1;
    for (int q = 0; q < n; q++)
      if (edges[best * n + q].set && !done[q])
        from_requests(m, best, q, &edges[best * n + q]);
  }
  free(done);
  return 0;
}

/* A clock no request reaches, within what its messages bound: [lo, hi]
 * of its offset from the placed clocks' edges to it.  1 if placed. */
static int by_messages(trace_merge_t *m, const trace_edge_t *edges, int p) {
  int n = m->nprocs, via = -1;
  double lo = -INFINITY, hi = INFINITY, err = 0;
  int unknown = 0;
  for (int q = 0; q < n; q++) {
    const trace_edge_t *e = &edges[q * n + p];
    const trace_proc_t *pq = &m->procs[q];
    if (!e->linked || pq->clock != q || pq->align == ALIGN_WALL)
      continue;
    lo = fmax(lo, pq->offset_us + e->lo);
    hi = fmin(hi, pq->offset_us + e->hi);
    err = fmax(err, pq->bound_us);
    unknown |= pq->bound_us < 0;
    via = q;
  }
  if (via < 0)
    return 0;
  trace_proc_t *pp = &m->procs[p];
  pp->via = via;
  if (lo - TOL_US <= 0 && 0 <= hi + TOL_US) {
    pp->align = ALIGN_WALL_FITS;
    pp->offset_us = 0;
  } else {
    pp->align = ALIGN_MESSAGES;
    pp->offset_us = isfinite(lo) && isfinite(hi) ? (lo + hi) / 2
                    : 0 < lo                     ? lo
                                                 : hi;
  }
  /* Unknown where one side is unbounded; else as far as an end is. */
  pp->bound_us = isfinite(lo) && isfinite(hi) && !unknown
                     ? err + fmax(pp->offset_us - lo, hi - pp->offset_us)
                     : -1;
  return 1;
}

/* With the offsets known: does each request still come before its
 * service, and its reply after, within the two processes' bounds?  An
 * unaligned process's flows are checked too: its picture is wrong all
 * the same. */
static void check_order(trace_merge_t *m, FILE *report) {
  for (size_t i = 0; i < m->nflows; i++) {
    const trace_span_t *c = &m->spans[m->flows[i].client];
    const trace_span_t *s = &m->spans[m->flows[i].server];
    const trace_proc_t *pc = &m->procs[c->proc], *ps = &m->procs[s->proc];
    if (pc->clock == ps->clock)
      continue; /* one clock: as it was recorded */
    double tol = fmax(pc->bound_us, 0) + fmax(ps->bound_us, 0) + TOL_US;
    double early = c->cut_off ? 0
                              : trace_place(m, c->proc, c->begin) -
                                    trace_place(m, s->proc, s->begin);
    double late =
        c->kind == KIND_CLIENT && c->whole && s->whole
            ? trace_place(m, s->proc, s->end) - trace_place(m, c->proc, c->end)
            : 0;
    if (early > tol || late > tol) {
      int unaligned = pc->align == ALIGN_WALL || ps->align == ALIGN_WALL;
      fprintf(report,
              "uvp-trace: inconsistent: %s's span %s %s %s's %s %s by %.3f "
              "us (bounds: %.3f us)%s\n",
              ps->name, s->id, early > tol ? "starts before" : "ends after",
              pc->name, c->kind == KIND_PRODUCER ? "message" : "request", c->id,
              early > tol ? early : late, tol,
              unaligned ? " (a clock unaligned: nothing else placed it)" : "");
      m->inconsistent++;
    }
  }
}

int trace_align(trace_merge_t *m, const trace_edge_t *edges, FILE *report) {
  int n = m->nprocs;
  if (by_requests(m, edges) != 0) {
    fprintf(stderr, "uvp-trace: out of memory\n");
    return -1;
  }
  /* Messages place what requests did not, each placed clock bounding the
   * next: as many rounds as it takes. */
  for (int changed = 1; changed;) {
    changed = 0;
    for (int p = 0; p < n; p++)
      if (m->procs[p].clock == p && m->procs[p].align == ALIGN_WALL)
        changed |= by_messages(m, edges, p);
  }
  for (int p = 0; p < n; p++) {
    trace_proc_t *pp = &m->procs[p];
    const trace_proc_t *c = &m->procs[pp->clock];
    if (pp->clock != p) {
      pp->align = c->align;
      pp->offset_us = c->offset_us;
      pp->bound_us = c->bound_us;
      pp->via = c->via;
    }
  }
  /* No event before 0 on the output's clock. */
  double first = 0;
  for (int p = 0; p < n; p++)
    if (isfinite(m->procs[p].min_ts))
      first = fmin(first, trace_place(m, p, m->procs[p].min_ts));
  m->shift_us = first < 0 ? ceil(-first) : 0;
  if (!(m->shift_us < 4e15)) {
    fprintf(stderr,
            "uvp-trace: the files' clocks are %g us apart (more than "
            "4e15 us: not one job)\n",
            m->shift_us);
    return -1;
  }
  check_order(m, report);
  return 0;
}
