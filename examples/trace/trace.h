/* uvp-trace's parts: the merge of several processes' recorder files into
 * one timeline (merge.c) and its picture as SVG (svg.c). */
#ifndef TRACE_H
#define TRACE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

enum { KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER };

/* How a process's clock was placed against the reference's: the first
 * file; the requests' midpoint; its wall clock, which fits every request
 * and message bound that links it; the one-sided bounds of messages (a
 * delivery after its publish), its wall clock not fitting them; its wall
 * clock alone, nothing linking it (unaligned). */
enum {
  ALIGN_REFERENCE,
  ALIGN_REQUESTS,
  ALIGN_WALL_FITS,
  ALIGN_MESSAGES,
  ALIGN_WALL
};

typedef struct trace_proc_s {
  const char *name; /* NAME of NAME=FILE, or FILE's base name */
  const char *path;
  FILE *in;             /* the file, read twice (a pipe's copy) */
  int64_t wall_origin;  /* otherData's wall_origin_ns (0: none) */
  int64_t ts_origin;    /* otherData's ts_origin_ns (-1: none) */
  long long source_pid; /* otherData's pid (-1: none) */
  int clock;            /* the first file of its process (one clock) */
  double min_ts;        /* its earliest ts (INFINITY: none) */
  double offset_us;     /* its clock minus the reference's, once aligned */
  double bound_us;      /* |error| of offset_us at most this (-1: unknown) */
  int align;            /* ALIGN_* */
  int via;              /* the process its offset came from (-1: none) */
} trace_proc_t;

typedef struct trace_span_s {
  int proc;
  char id[17], parent[17]; /* hex; parent "" for a root */
  int kind;                /* KIND_* */
  double begin, end;       /* the file's own ts (microseconds) */
  int whole;   /* begin and end both recorded (not cut off, not open) */
  int cut_off; /* its begin is the ring's first instant, not its own */
  long long tid;
} trace_span_t;

/* A request from a client (or producer) span to the span that served it. */
typedef struct trace_flow_s {
  size_t client, server; /* indexes into the spans */
} trace_flow_t;

typedef struct trace_merge_s {
  trace_proc_t *procs;
  int nprocs;
  trace_span_t *spans;
  size_t nspans;
  trace_flow_t *flows;
  size_t nflows;
  size_t pairs;    /* request/reply pairs across processes (clock evidence) */
  size_t messages; /* producer/consumer links across processes */
  size_t inconsistent; /* served before asked, or replied after answered */
  double shift_us;     /* added to every ts so that none is negative */
} trace_merge_t;

/* Each element of traceEvents, borrowed for the call; its index in the
 * array.  Non-zero stops the reading (after a line on stderr). */
typedef int (*trace_event_cb)(void *arg, json_t *event, size_t index);
/* Read f (path names it in messages) one event at a time: cb for each,
 * *other (may be NULL) set to otherData (a new reference, or NULL).  0,
 * or -1 after a line on stderr naming the file. */
int trace_stream(FILE *f, const char *path, trace_event_cb cb, void *arg,
                 json_t **other);
/* fopen for reading, or NULL after a line on stderr. */
FILE *trace_open(const char *path);

/* Read each "NAME=FILE" or "FILE" of args (n of them) into m: its spans,
 * the flows between them, each process's offset and bound; the events
 * themselves are not kept.  0, or -1 after a line on stderr (m is then
 * still to be freed).  Inconsistencies are printed to `report`. */
int trace_merge_load(trace_merge_t *m, char **args, int n, FILE *report);

/* What the spans say of clock b minus clock a (a row of a's, column b's,
 * by each process's clock index). */
typedef struct trace_edge_s {
  double offset, bound; /* the request with the smallest bound */
  double lo, hi;        /* every request's and message's bounds, intersected */
  int set;              /* a request gave offset and bound */
  int linked;           /* lo or hi was set */
} trace_edge_t;
/* What span c (client or producer) and s (served it) say of their
 * clocks, into edges (a request: both ways; a message: one way). */
void trace_evidence(trace_merge_t *m, trace_edge_t *edges,
                    const trace_span_t *c, const trace_span_t *s, FILE *report);
/* Each process's offset and bound from the edges; the flows checked
 * against them (inconsistencies to report).  0, or -1 (no memory). */
int trace_align(trace_merge_t *m, const trace_edge_t *edges, FILE *report);
/* A ts of process p on the output's clock. */
double trace_place(const trace_merge_t *m, int p, double ts);

typedef struct trace_svg_s trace_svg_t;
/* The merged Chrome trace JSON into out, one event a line, each event
 * also given to svg (may be NULL).  0, or -1 (a write failed). */
int trace_merge_write(const trace_merge_t *m, FILE *out, trace_svg_t *svg);
void trace_merge_print(const trace_merge_t *m, FILE *out);
void trace_merge_free(trace_merge_t *m);

/* A merged (or single) trace as SVG: a lane per process, its spans as bars
 * (stacked where they overlap), an arrow for each "request" flow.  Events
 * are given one at a time (what is drawn is copied), then written. */
trace_svg_t *trace_svg_new(void);
int trace_svg_event(trace_svg_t *svg, json_t *event);
/* 0, or -1 after a line on stderr.  A trace without spans is drawn as a
 * picture that says so. */
int trace_svg_write(trace_svg_t *svg, const char *title, FILE *out);
void trace_svg_free(trace_svg_t *svg);

#endif
