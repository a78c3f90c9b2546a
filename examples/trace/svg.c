/* uvp-trace svg: a merged timeline as a picture, for a page or a report
 * where no trace viewer runs.  A lane per process (its name at the left),
 * its spans as bars on rows of their own where they overlap, coloured by
 * kind (a failed one outlined red), and for each request an arrow from the
 * client's bar to the server's, a dashed one back from the reply. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

enum { WIDTH = 1200, LEFT = 160, RIGHT = 20, TOP = 44, ROW = 16, GAP = 10 };

typedef struct {
  long long pid;
  const char *id, *name, *kind;
  double begin, end;
  int status, row;
} bar_t;

typedef struct {
  long long pid;
  const char *name;
  int rows;
  double y; /* its lane's top */
} lane_t;

static const char *str_of(json_t *obj, const char *key) {
  return json_string_value(json_object_get(obj, key));
}

static int by_begin(const void *a, const void *b) {
  const bar_t *x = a, *y = b;
  if (x->pid != y->pid)
    return x->pid < y->pid ? -1 : 1;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static void esc(FILE *out, const char *s) {
  for (; s != NULL && *s != '\0'; s++) {
    if (*s == '<')
      fputs("&lt;", out);
    else if (*s == '>')
      fputs("&gt;", out);
    else if (*s == '&')
      fputs("&amp;", out);
    else if (*s == '"')
      fputs("&quot;", out);
    else if ((unsigned char)*s >= 0x20)
      fputc(*s, out);
  }
}

static const char *color(const char *kind) {
  static const char *const k[][2] = {
      {"client", "#5b8bd9"},   {"server", "#4caf50"},   {"consumer", "#26a69a"},
      {"producer", "#9c6ade"}, {"internal", "#9e9e9e"},
  };
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
    if (kind != NULL && strcmp(kind, k[i][0]) == 0)
      return k[i][1];
  return "#9e9e9e";
}

static int by_id(const void *a, const void *b) {
  return strcmp((*(bar_t *const *)a)->id, (*(bar_t *const *)b)->id);
}

/* The bar of span id: ids are the bars in by_id's order (n of them). */
static bar_t *find_bar(bar_t **ids, size_t n, const char *id) {
  bar_t key = {.id = id}, *k = &key;
  bar_t **found = bsearch(&k, ids, n, sizeof *ids, by_id);
  return found != NULL ? *found : NULL;
}

/* A tick step of 1, 2 or 5 times a power of ten, about 8 to the width. */
static double tick_step(double span_us) {
  double raw = span_us / 8, p = pow(10, floor(log10(raw)));
  return raw <= p ? p : raw <= 2 * p ? 2 * p : raw <= 5 * p ? 5 * p : 10 * p;
}

int trace_svg_write(json_t *doc, const char *title, FILE *out) {
  json_t *events = json_object_get(doc, "traceEvents"), *e;
  size_t n = json_array_size(events), nbars = 0, nlanes = 0, i;
  bar_t *bars = calloc(n + 1, sizeof *bars);
  lane_t *lanes = calloc(n + 1, sizeof *lanes);
  if (bars == NULL || lanes == NULL) {
    free(bars);
    free(lanes);
    fprintf(stderr, "uvp-trace: out of memory\n");
    return -1;
  }
  json_array_foreach(events, i, e) {
    const char *ph = str_of(e, "ph"), *cat = str_of(e, "cat");
    const char *id = str_of(e, "id");
    long long pid = json_integer_value(json_object_get(e, "pid"));
    double ts = json_number_value(json_object_get(e, "ts"));
    json_t *args = json_object_get(e, "args");
    if (ph != NULL && strcmp(ph, "M") == 0 &&
        strcmp(str_of(e, "name") ? str_of(e, "name") : "", "process_name") == 0)
      lanes[nlanes++] = (lane_t){pid, str_of(args, "name"), 0, 0};
    if (ph != NULL && cat != NULL && id != NULL && strcmp(cat, "span") == 0 &&
        strcmp(ph, "b") == 0)
      bars[nbars++] = (bar_t){
          pid, id, str_of(e, "name"), str_of(args, "kind"), ts, ts, 0, 0};
  }
  qsort(bars, nbars, sizeof *bars, by_begin);
  bar_t **ids = calloc(nbars + 1, sizeof *ids);
  for (i = 0; ids != NULL && i < nbars; i++)
    ids[i] = &bars[i];
  if (ids != NULL)
    qsort(ids, nbars, sizeof *ids, by_id);
  json_array_foreach(events, i, e) { /* each span's end, by its id */
    const char *ph = str_of(e, "ph"), *cat = str_of(e, "cat");
    const char *id = str_of(e, "id");
    bar_t *b = ids != NULL && ph != NULL && cat != NULL && id != NULL &&
                       strcmp(cat, "span") == 0 && strcmp(ph, "e") == 0
                   ? find_bar(ids, nbars, id)
                   : NULL;
    if (b != NULL) {
      json_t *args = json_object_get(e, "args");
      b->end = json_number_value(json_object_get(e, "ts"));
      b->status = (int)json_integer_value(json_object_get(args, "status"));
    }
  }
  if (nbars == 0 || ids == NULL) {
    free(bars);
    free(lanes);
    free(ids);
    fprintf(stderr, "uvp-trace: %s\n",
            nbars == 0 ? "no spans to draw" : "out of memory");
    return -1;
  }
  double t0 = bars[0].begin, t1 = bars[0].end;
  for (i = 0; i < nbars; i++) {
    t0 = fmin(t0, bars[i].begin);
    t1 = fmax(t1, bars[i].end);
  }
  double span = fmax(t1 - t0, 1), scale = (WIDTH - LEFT - RIGHT) / span;
#define X(ts) (LEFT + ((ts)-t0) * scale)
  /* Rows: a bar goes on the first row free (a pixel's gap) at its begin. */
  double row_end[64];
  double y = TOP;
  for (size_t l = 0; l < nlanes; l++) {
    int rows = 0;
    for (i = 0; i < nbars; i++) {
      if (bars[i].pid != lanes[l].pid)
        continue;
      int r = 0;
      while (r < rows && r < 63 && row_end[r] + 1 > X(bars[i].begin))
        r++;
      if (r == rows && rows < 64)
        rows++;
      row_end[r] = X(bars[i].end) + 1;
      bars[i].row = r;
    }
    lanes[l].rows = rows > 0 ? rows : 1;
    lanes[l].y = y;
    y += lanes[l].rows * ROW + 2 * GAP;
  }
  int height = (int)y + 24;
  fprintf(out,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
          "height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n"
          "<defs><marker id=\"a\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" "
          "markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path "
          "d=\"M0,0 L8,4 L0,8 z\" fill=\"#333\"/></marker></defs>\n"
          "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
          WIDTH, height);
  if (title != NULL) {
    fputs("<text x=\"8\" y=\"18\" font-size=\"14\" font-weight=\"bold\">", out);
    esc(out, title);
    fputs("</text>\n", out);
  }
  double step = tick_step(span);
  for (double t = 0; t <= span + 1e-9; t += step) {
    fprintf(out,
            "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
            "stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%d\" fill=\"#555\" "
            "text-anchor=\"middle\">%g ms</text>\n",
            X(t0 + t), TOP - 6, X(t0 + t), height - 24, X(t0 + t), TOP - 10,
            t / 1e3);
  }
  for (size_t l = 0; l < nlanes; l++) {
    fprintf(out,
            "<rect x=\"0\" y=\"%.1f\" width=\"%d\" height=\"%d\" "
            "fill=\"%s\" opacity=\"0.5\"/>\n<text x=\"8\" y=\"%.1f\" "
            "font-weight=\"bold\">",
            lanes[l].y, WIDTH, lanes[l].rows * ROW + 2 * GAP,
            l % 2 ? "#f4f4f4" : "#e8eef8", lanes[l].y + GAP + 11);
    esc(out, lanes[l].name);
    fputs("</text>\n", out);
  }
  for (i = 0; i < nbars; i++) {
    const bar_t *b = &bars[i];
    const lane_t *lane = NULL;
    for (size_t l = 0; l < nlanes && lane == NULL; l++)
      lane = lanes[l].pid == b->pid ? &lanes[l] : NULL;
    if (lane == NULL)
      continue;
    double x = X(b->begin), w = fmax(X(b->end) - x, 1.5);
    double by = lane->y + GAP + b->row * ROW;
    fprintf(out,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" "
            "fill=\"%s\" stroke=\"%s\"><title>",
            x, by + 1, w, ROW - 3, color(b->kind),
            b->status != 0 ? "#d32f2f" : "none");
    esc(out, b->name);
    fprintf(out, " (%s, %.3f ms, status %d)</title></rect>\n",
            b->kind ? b->kind : "?", (b->end - b->begin) / 1e3, b->status);
    if (b->name != NULL && w > 6.0 * (double)strlen(b->name) + 4) {
      fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" fill=\"white\">", x + 3,
              by + ROW - 5);
      esc(out, b->name);
      fputs("</text>\n", out);
    }
  }
  /* Requests: an "s" and an "f" each, whose args name the two spans. */
  json_array_foreach(events, i, e) {
    const char *ph = str_of(e, "ph"), *cat = str_of(e, "cat");
    json_t *args = json_object_get(e, "args");
    const char *cid = str_of(args, "client"), *sid = str_of(args, "server");
    if (ph == NULL || cat == NULL || cid == NULL || sid == NULL ||
        strcmp(ph, "s") != 0 || strcmp(cat, "request") != 0)
      continue;
    const bar_t *c = find_bar(ids, nbars, cid), *s = find_bar(ids, nbars, sid);
    const lane_t *lc = NULL, *ls = NULL;
    for (size_t l = 0; l < nlanes; l++) {
      lc = c != NULL && lanes[l].pid == c->pid ? &lanes[l] : lc;
      ls = s != NULL && lanes[l].pid == s->pid ? &lanes[l] : ls;
    }
    if (lc == NULL || ls == NULL)
      continue;
    double yc = lc->y + GAP + c->row * ROW + ROW / 2.0 - 1;
    double ys = ls->y + GAP + s->row * ROW + ROW / 2.0 - 1;
    fprintf(out,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
            "stroke=\"#333\" marker-end=\"url(#a)\"/>\n",
            X(c->begin), yc, X(s->begin), ys);
    if (strcmp(c->kind ? c->kind : "", "client") == 0)
      fprintf(out,
              "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
              "stroke=\"#333\" stroke-dasharray=\"3,2\" "
              "marker-end=\"url(#a)\"/>\n",
              X(s->end), ys, X(c->end), yc);
  }
  fprintf(out,
          "<text x=\"8\" y=\"%d\" fill=\"#555\">bars: spans (blue client, "
          "green server, teal consumer, purple producer, grey internal; red "
          "outline: failed); arrows: a request to where it was served, dashed: "
          "its reply</text>\n</svg>\n",
          height - 8);
#undef X
  free(ids);
  free(bars);
  free(lanes);
  return ferror(out) ? -1 : 0;
}
