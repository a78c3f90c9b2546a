/* uvp-trace's parts: the merge of several processes' recorder files into
 * one timeline (merge.c) and its picture as SVG (svg.c). */
#ifndef TRACE_H
#define TRACE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

enum { KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER };

/* How a process's clock was placed against the reference's. */
enum { ALIGN_REFERENCE, ALIGN_REQUESTS, ALIGN_WALL };

typedef struct trace_proc_s {
  const char *name; /* NAME of NAME=FILE, or FILE's base name */
  const char *path;
  json_t *doc;          /* the file as read (owned) */
  int64_t wall_origin;  /* otherData's wall_origin_ns (0: none) */
  long long source_pid; /* otherData's pid (-1: none) */
  double offset_us;     /* its clock minus the reference's, once aligned */
  double bound_us;      /* |error| of offset_us at most this (ALIGN_WALL: -) */
  int align;            /* ALIGN_* */
  int via;              /* the process its offset came from (-1: none) */
} trace_proc_t;

typedef struct trace_span_s {
  int proc;
  char id[17], parent[17]; /* hex; parent "" for a root */
  int kind;                /* KIND_* */
  double begin, end;       /* the file's own ts (microseconds) */
  int whole; /* begin and end both recorded (not cut off, not open) */
  long long tid;
  const char *name;
} trace_span_t;

/* A request from a client (or producer) span to the span that served it. */
typedef struct trace_flow_s {
  int client, server; /* indexes into the spans */
} trace_flow_t;

typedef struct trace_merge_s {
  trace_proc_t *procs;
  int nprocs;
  trace_span_t *spans;
  size_t nspans;
  trace_flow_t *flows;
  size_t nflows;
  size_t pairs; /* request/reply pairs across processes (clock evidence) */
  size_t inconsistent; /* served before asked, or replied after answered */
  double shift_us;     /* added to every ts so that none is negative */
} trace_merge_t;

/* A JSON file read whole, or NULL after a line on stderr. */
json_t *trace_load(const char *path);
/* Read each "NAME=FILE" or "FILE" of args (n of them) into m: its spans,
 * the flows between them, each process's offset and bound.  0, or -1
 * after a line on stderr.  Inconsistencies are printed to `report`. */
int trace_merge_load(trace_merge_t *m, char **args, int n, FILE *report);
/* The merged Chrome trace JSON into out (a new reference). */
json_t *trace_merge_doc(const trace_merge_t *m);
void trace_merge_print(const trace_merge_t *m, FILE *out);
void trace_merge_free(trace_merge_t *m);

/* A merged (or single) trace as SVG: a lane per process, its spans as bars
 * (stacked where they overlap), an arrow for each "request" flow. */
int trace_svg_write(json_t *doc, const char *title, FILE *out);

#endif
