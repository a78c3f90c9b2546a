/* uvp-trace merge: the merged file written, each input read again one
 * event at a time (merge.c read them first for their spans only). */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

static const char *str_of(json_t *obj, const char *key) {
  return json_string_value(json_object_get(obj, key));
}

static const char *const how[] = {"reference", "requests",
                                  "wall clock, within the bounds", "messages",
                                  "wall clock only"};

typedef struct {
  const trace_merge_t *m;
  int proc;
  FILE *out;
  trace_svg_t *svg;
  int first;
} writer_t;

/* e (given) written as one line, and drawn. */
static int emit(writer_t *w, json_t *e) {
  int rc = 0;
  if (e == NULL)
    return -1;
  if (!w->first)
    fputc(',', w->out);
  w->first = 0;
  if (json_dumpf(e, w->out, JSON_COMPACT | JSON_REAL_PRECISION(16)) != 0 ||
      fputc('\n', w->out) == EOF)
    rc = -1;
  if (rc == 0 && w->svg != NULL && trace_svg_event(w->svg, e) != 0)
    rc = -1;
  json_decref(e);
  return rc;
}

static json_t *meta(int pid, const char *what, json_t *args) {
  return json_pack("{s:s,s:i,s:i,s:s,s:o}", "ph", "M", "pid", pid, "tid", 0,
                   "name", what, "args", args);
}

/* Ids local to a file made unique to the output: an async slice's number
 * moved past every other file's; a flow's, which viewers read as a hex
 * number (Perfetto drops a flow whose id is not one, as the recorder's
 * "cause.12.0"), a hash of it and its file.  A call between loops is the
 * exception: its flow's id is the same in the caller's file and the
 * target's, both of one process, so it is hashed with the process's
 * clock (merge.c's same_clocks: files of one process share it) to pair. */
static void renumber(json_t *e, const trace_merge_t *m, int p) {
  const char *ph = str_of(e, "ph"), *cat = str_of(e, "cat");
  const char *id = str_of(e, "id");
  if (ph == NULL || id == NULL || (cat != NULL && strcmp(cat, "span") == 0))
    return;
  char buf[40];
  if (ph[0] != '\0' && strchr("stf", ph[0]) != NULL) {
    int seed = cat != NULL && strcmp(cat, "call") == 0 ? m->procs[p].clock : p;
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)(seed + 1); /* FNV-1a */
    for (const char *c = id; *c != '\0'; c++)
      h = (h ^ (unsigned char)*c) * 0x100000001b3ull;
    snprintf(buf, sizeof buf, "0x%016" PRIx64, h);
  } else if (id[0] != '\0' && strspn(id, "0123456789") == strlen(id) &&
             strlen(id) < 12) {
    snprintf(buf, sizeof buf, "%llu",
             ((unsigned long long)(p + 1) << 40) + strtoull(id, NULL, 10));
  } else {
    return; /* a string of its own: left as it is */
  }
  json_object_set_new(e, "id", json_string(buf));
}

static int write_event(void *arg, json_t *e, size_t index) {
  writer_t *w = arg;
  const char *ph = str_of(e, "ph"), *name = str_of(e, "name");
  (void)index;
  if (ph != NULL && strcmp(ph, "M") == 0 && name != NULL &&
      strcmp(name, "process_name") == 0)
    return 0;
  json_object_set_new(e, "pid", json_integer(w->proc + 1));
  json_t *ts = json_object_get(e, "ts");
  if (json_is_number(ts))
    json_object_set_new(
        e, "ts",
        json_real(
            round(trace_place(w->m, w->proc, json_number_value(ts)) * 1e3) /
            1e3));
  renumber(e, w->m, w->proc);
  return emit(w, json_incref(e));
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
  double ts = round(trace_place(m, at->proc, at->begin) * 1e3) / 1e3;
  return json_pack("{s:s,s:i,s:I,s:f,s:s,s:s,s:s,s:s,s:{s:s,s:s}}", "ph",
                   end ? "f" : "s", "pid", at->proc + 1, "tid",
                   (json_int_t)at->tid, "ts", ts, "cat", "request", "name",
                   "request", "id", id, "bp", "e", "args", "client", cid,
                   "server", sid);
}

/* What a process's clock was placed by, where it is not the requests:
 * a label on its lane, in viewers and in the picture. */
static const char *label_of(const trace_proc_t *p) {
  return p->align == ALIGN_WALL       ? "clock unaligned: wall clock only"
         : p->align == ALIGN_MESSAGES ? "clock placed by messages' bounds"
                                      : NULL;
}

static int write_process(writer_t *w, int p) {
  const trace_proc_t *pr = &w->m->procs[p];
  if (emit(w, meta(p + 1, "process_name",
                   json_pack("{s:s}", "name", pr->name))) != 0 ||
      emit(w, meta(p + 1, "process_sort_index",
                   json_pack("{s:i}", "sort_index", p))) != 0)
    return -1;
  if (w->m->nprocs > 1 && label_of(pr) != NULL &&
      emit(w, meta(p + 1, "process_labels",
                   json_pack("{s:s}", "labels", label_of(pr)))) != 0)
    return -1;
  if (fseek(pr->in, 0, SEEK_SET) != 0) {
    perror(pr->path);
    return -1;
  }
  w->proc = p;
  return trace_stream(pr->in, pr->path, write_event, w, NULL);
}

static json_t *process_info(const trace_merge_t *m, int p) {
  const trace_proc_t *pr = &m->procs[p];
  json_t *o = json_pack("{s:i,s:s,s:s,s:s,s:f}", "pid", p + 1, "name", pr->name,
                        "file", pr->path, "aligned_by", how[pr->align],
                        "offset_us", pr->offset_us);
  json_object_set_new(o, "bound_us",
                      pr->bound_us < 0 ? json_null() : json_real(pr->bound_us));
  if (pr->via >= 0)
    json_object_set_new(o, "via", json_string(m->procs[pr->via].name));
  if (pr->clock != p)
    json_object_set_new(o, "same_process_as",
                        json_string(m->procs[pr->clock].name));
  if (pr->source_pid >= 0)
    json_object_set_new(o, "source_pid", json_integer(pr->source_pid));
  return o;
}

int trace_merge_write(const trace_merge_t *m, FILE *out, trace_svg_t *svg) {
  writer_t w = {m, 0, out, svg, 1};
  fputs("{\"traceEvents\":[\n", out);
  for (int p = 0; p < m->nprocs; p++)
    if (write_process(&w, p) != 0)
      return -1;
  for (size_t i = 0; i < m->nflows; i++) {
    const trace_span_t *c = &m->spans[m->flows[i].client];
    const trace_span_t *s = &m->spans[m->flows[i].server];
    if (emit(&w, flow_event(m, c, s, 0)) != 0 ||
        emit(&w, flow_event(m, c, s, 1)) != 0)
      return -1;
  }
  json_t *procs = json_array();
  for (int p = 0; p < m->nprocs; p++)
    json_array_append_new(procs, process_info(m, p));
  json_t *other = json_pack(
      "{s:i,s:s,s:I,s:o,s:I,s:I,s:I,s:I}", "uvp_trace_merge", 1, "method",
      "a process's wall clock where it fits every request's and message's "
      "bounds, else the offset of the request/reply span pair with the "
      "smallest bound ((t4-t1)-(t3-t2))/2, summed along pairs from the first "
      "file, else the messages' one-sided bounds",
      "ts_origin_wall_ns",
      (json_int_t)(m->procs[0].wall_origin - (int64_t)(m->shift_us * 1e3)),
      "processes", procs, "requests", (json_int_t)m->nflows, "clock_pairs",
      (json_int_t)m->pairs, "messages", (json_int_t)m->messages, "inconsistent",
      (json_int_t)m->inconsistent);
  fputs("],\"displayTimeUnit\":\"ns\",\"otherData\":", out);
  int rc = other == NULL ||
           json_dumpf(other, out, JSON_COMPACT | JSON_REAL_PRECISION(16)) != 0;
  json_decref(other);
  fputs("}\n", out);
  return rc || ferror(out) ? -1 : 0;
}

void trace_merge_print(const trace_merge_t *m, FILE *out) {
  fprintf(out,
          "%d process%s, %zu spans, %zu requests linked (%zu request/reply "
          "pairs and %zu messages across processes), %zu inconsistent\n",
          m->nprocs, m->nprocs == 1 ? "" : "es", m->nspans, m->nflows, m->pairs,
          m->messages, m->inconsistent);
  fprintf(out, "%4s  %-16s %14s %12s  %s\n", "pid", "process", "offset (us)",
          "bound (us)", "aligned by");
  for (int p = 0; p < m->nprocs; p++) {
    const trace_proc_t *pr = &m->procs[p];
    char bound[32] = "-";
    if (pr->bound_us >= 0)
      snprintf(bound, sizeof bound, "%.3f", pr->bound_us);
    fprintf(out, "%4d  %-16s %14.3f %12s  %s", p + 1, pr->name, pr->offset_us,
            bound, how[pr->align]);
    if (pr->via >= 0)
      fprintf(out, " %s %s", pr->align == ALIGN_MESSAGES ? "from" : "via",
              m->procs[pr->via].name);
    if (pr->clock != p)
      fprintf(out, " (one process with %s)", m->procs[pr->clock].name);
    if (pr->align == ALIGN_WALL && m->nprocs > 1)
      fputs(" (UNALIGNED: no request or message links it)", out);
    fputc('\n', out);
  }
}

void trace_merge_free(trace_merge_t *m) {
  for (int p = 0; p < m->nprocs; p++) {
    free((char *)m->procs[p].name);
    if (m->procs[p].in != NULL && fclose(m->procs[p].in) != 0)
      perror(m->procs[p].path);
  }
  free(m->procs);
  free(m->spans);
  free(m->flows);
}
