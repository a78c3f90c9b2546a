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
  char *id, *name, *kind; /* owned */
  double begin, end;
  int status, row;
} bar_t;

typedef struct {
  long long pid;
  char *name, *label; /* owned */
  int rows;
  double y; /* its lane's top */
} lane_t;

typedef struct {
  char *id; /* owned */
  double ts;
  int status;
} end_t;

typedef struct {
  char *client, *server; /* owned */
} arrow_t;

/* Growable arrays of the above, filled one event at a time. */
#define VEC(T)                                                                 \
  struct {                                                                     \
    T *v;                                                                      \
    size_t n, cap;                                                             \
  }

struct trace_svg_s {
  VEC(bar_t) bars;
  VEC(lane_t) lanes;
  VEC(end_t) ends;
  VEC(arrow_t) arrows;
  int nomem;
};

static void *grow(void *v, size_t *cap, size_t n, size_t size) {
  if (n < *cap)
    return v;
  size_t c = *cap == 0 ? 64 : 2 * *cap;
  void *g = realloc(v, c * size);
  if (g == NULL)
    return v; /* still n of cap: PUSH says no memory */
  *cap = c;
  return g;
}
#define PUSH(vec, svg)                                                         \
  ((vec).n < (vec).cap ||                                                      \
           ((vec).v = grow((vec).v, &(vec).cap, (vec).n, sizeof *(vec).v),     \
            (vec).n < (vec).cap)                                               \
       ? &(vec).v[(vec).n++]                                                   \
       : ((svg)->nomem = 1, NULL))

static char *dup(trace_svg_t *svg, const char *s) {
  char *d = s != NULL ? strdup(s) : NULL;
  if (s != NULL && d == NULL)
    svg->nomem = 1;
  return d;
}

static const char *str_of(json_t *obj, const char *key) {
  return json_string_value(json_object_get(obj, key));
}

static int str_is(json_t *obj, const char *key, const char *value) {
  const char *s = str_of(obj, key);
  return s != NULL && strcmp(s, value) == 0;
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
  bar_t key = {.id = (char *)id}, *k = &key;
  bar_t **found = bsearch(&k, ids, n, sizeof *ids, by_id);
  return found != NULL ? *found : NULL;
}

trace_svg_t *trace_svg_new(void) { return calloc(1, sizeof(trace_svg_t)); }

void trace_svg_free(trace_svg_t *svg) {
  if (svg == NULL)
    return;
  for (size_t i = 0; i < svg->bars.n; i++) {
    free(svg->bars.v[i].id);
    free(svg->bars.v[i].name);
    free(svg->bars.v[i].kind);
  }
  for (size_t i = 0; i < svg->lanes.n; i++) {
    free(svg->lanes.v[i].name);
    free(svg->lanes.v[i].label);
  }
  for (size_t i = 0; i < svg->ends.n; i++)
    free(svg->ends.v[i].id);
  for (size_t i = 0; i < svg->arrows.n; i++) {
    free(svg->arrows.v[i].client);
    free(svg->arrows.v[i].server);
  }
  free(svg->bars.v);
  free(svg->lanes.v);
  free(svg->ends.v);
  free(svg->arrows.v);
  free(svg);
}

static lane_t *lane_of(trace_svg_t *svg, long long pid) {
  for (size_t l = 0; l < svg->lanes.n; l++)
    if (svg->lanes.v[l].pid == pid)
      return &svg->lanes.v[l];
  lane_t *lane = PUSH(svg->lanes, svg);
  if (lane != NULL)
    *lane = (lane_t){pid, NULL, NULL, 0, 0};
  return lane;
}

/* Lanes from the process metadata, bars from the spans' begins and ends,
 * arrows from the requests' flows ("s": its args name both spans). */
int trace_svg_event(trace_svg_t *svg, json_t *e) {
  const char *ph = str_of(e, "ph"), *id = str_of(e, "id");
  long long pid = json_integer_value(json_object_get(e, "pid"));
  double ts = json_number_value(json_object_get(e, "ts"));
  json_t *args = json_object_get(e, "args");
  if (ph == NULL)
    return 0;
  if (strcmp(ph, "M") == 0 && (str_is(e, "name", "process_name") ||
                               str_is(e, "name", "process_labels"))) {
    lane_t *lane = lane_of(svg, pid);
    char **at = lane == NULL                        ? NULL
                : str_is(e, "name", "process_name") ? &lane->name
                                                    : &lane->label;
    const char *v = str_of(args, at == &lane->name ? "name" : "labels");
    if (at != NULL && v != NULL) {
      free(*at);
      *at = dup(svg, v);
    }
  } else if (str_is(e, "cat", "span") && id != NULL && strcmp(ph, "b") == 0) {
    bar_t *b = PUSH(svg->bars, svg);
    if (b != NULL)
      *b = (bar_t){pid,
                   dup(svg, id),
                   dup(svg, str_of(e, "name")),
                   dup(svg, str_of(args, "kind")),
                   ts,
                   ts,
                   0,
                   0};
  } else if (str_is(e, "cat", "span") && id != NULL && strcmp(ph, "e") == 0) {
    end_t *x = PUSH(svg->ends, svg);
    if (x != NULL)
      *x = (end_t){dup(svg, id), ts,
                   (int)json_integer_value(json_object_get(args, "status"))};
  } else if (strcmp(ph, "s") == 0 && str_is(e, "cat", "request") &&
             str_of(args, "client") != NULL && str_of(args, "server") != NULL) {
    arrow_t *a = PUSH(svg->arrows, svg);
    if (a != NULL)
      *a = (arrow_t){dup(svg, str_of(args, "client")),
                     dup(svg, str_of(args, "server"))};
  }
  if (svg->nomem)
    fprintf(stderr, "uvp-trace: out of memory\n");
  return svg->nomem ? -1 : 0;
}

/* A tick step of 1, 2 or 5 times a power of ten, about 8 to the width. */
static double tick_step(double span_us) {
  double raw = span_us / 8, p = pow(10, floor(log10(raw)));
  return raw <= p ? p : raw <= 2 * p ? 2 * p : raw <= 5 * p ? 5 * p : 10 * p;
}

typedef struct {
  trace_svg_t *svg;
  bar_t **ids; /* the bars by id */
  double t0, span, scale;
  int height;
} picture_t;

static double x_of(const picture_t *pic, double ts) {
  return LEFT + (ts - pic->t0) * pic->scale;
}

/* Bars sorted and ended, the time axis, each lane's rows: a bar goes on
 * the first row free (a pixel's gap) at its begin. */
static int lay_out(picture_t *pic) {
  trace_svg_t *svg = pic->svg;
  size_t n = svg->bars.n;
  bar_t *bars = svg->bars.v;
  if (n > 0) /* bars is NULL when there are none */
    qsort(bars, n, sizeof *bars, by_begin);
  pic->ids = calloc(n + 1, sizeof *pic->ids);
  if (pic->ids == NULL)
    return -1;
  for (size_t i = 0; i < n; i++)
    pic->ids[i] = &bars[i];
  qsort(pic->ids, n, sizeof *pic->ids, by_id);
  for (size_t i = 0; i < svg->ends.n; i++) {
    bar_t *b = find_bar(pic->ids, n, svg->ends.v[i].id);
    if (b != NULL) {
      b->end = svg->ends.v[i].ts;
      b->status = svg->ends.v[i].status;
    }
  }
  double t0 = n > 0 ? bars[0].begin : 0, t1 = n > 0 ? bars[0].end : 0;
  for (size_t i = 0; i < n; i++) {
    t0 = fmin(t0, bars[i].begin);
    t1 = fmax(t1, bars[i].end);
  }
  pic->t0 = t0;
  pic->span = fmax(t1 - t0, 1);
  pic->scale = (WIDTH - LEFT - RIGHT) / pic->span;
  double row_end[64], y = TOP;
  for (size_t l = 0; l < svg->lanes.n; l++) {
    lane_t *lane = &svg->lanes.v[l];
    int rows = 0;
    for (size_t i = 0; i < n; i++) {
      if (bars[i].pid != lane->pid)
        continue;
      int r = 0;
      while (r < rows && r < 63 && row_end[r] + 1 > x_of(pic, bars[i].begin))
        r++;
      if (r == rows && rows < 64)
        rows++;
      row_end[r] = x_of(pic, bars[i].end) + 1;
      bars[i].row = r;
    }
    lane->rows = rows > 0 ? rows : 1;
    lane->y = y;
    y += lane->rows * ROW + 2 * GAP + (lane->label != NULL ? ROW : 0);
  }
  pic->height = (int)y + 24 + (n == 0 ? 2 * ROW : 0);
  return 0;
}

static void draw_frame(const picture_t *pic, const char *title, FILE *out) {
  fprintf(out,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
          "height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n"
          "<defs><marker id=\"a\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" "
          "markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path "
          "d=\"M0,0 L8,4 L0,8 z\" fill=\"#333\"/></marker></defs>\n"
          "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
          WIDTH, pic->height);
  if (title != NULL) {
    fputs("<text x=\"8\" y=\"18\" font-size=\"14\" font-weight=\"bold\">", out);
    esc(out, title);
    fputs("</text>\n", out);
  }
  double step = tick_step(pic->span);
  for (double t = 0; pic->svg->bars.n > 0 && t <= pic->span + 1e-9; t += step)
    fprintf(out,
            "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
            "stroke=\"#ddd\"/><text x=\"%.1f\" y=\"%d\" fill=\"#555\" "
            "text-anchor=\"middle\">%g ms</text>\n",
            x_of(pic, pic->t0 + t), TOP - 6, x_of(pic, pic->t0 + t),
            pic->height - 24, x_of(pic, pic->t0 + t), TOP - 10, t / 1e3);
  for (size_t l = 0; l < pic->svg->lanes.n; l++) {
    const lane_t *lane = &pic->svg->lanes.v[l];
    int extra = lane->label != NULL ? ROW : 0;
    fprintf(out,
            "<rect x=\"0\" y=\"%.1f\" width=\"%d\" height=\"%d\" "
            "fill=\"%s\" opacity=\"0.5\"/>\n<text x=\"8\" y=\"%.1f\" "
            "font-weight=\"bold\">",
            lane->y, WIDTH, lane->rows * ROW + 2 * GAP + extra,
            l % 2 ? "#f4f4f4" : "#e8eef8", lane->y + GAP + 11);
    esc(out, lane->name);
    fputs("</text>\n", out);
    if (lane->label != NULL) { /* e.g. a clock nothing placed */
      fprintf(out, "<text x=\"8\" y=\"%.1f\" fill=\"#d32f2f\">",
              lane->y + GAP + 11 + ROW);
      esc(out, lane->label);
      fputs("</text>\n", out);
    }
  }
}

static const lane_t *lane_at(const trace_svg_t *svg, long long pid) {
  for (size_t l = 0; l < svg->lanes.n; l++)
    if (svg->lanes.v[l].pid == pid)
      return &svg->lanes.v[l];
  return NULL;
}

static double bar_y(const lane_t *lane, const bar_t *b) {
  return lane->y + GAP + (lane->label != NULL ? ROW : 0) + b->row * ROW;
}

static void draw_bars(const picture_t *pic, FILE *out) {
  for (size_t i = 0; i < pic->svg->bars.n; i++) {
    const bar_t *b = &pic->svg->bars.v[i];
    const lane_t *lane = lane_at(pic->svg, b->pid);
    if (lane == NULL)
      continue;
    double x = x_of(pic, b->begin), w = fmax(x_of(pic, b->end) - x, 1.5);
    double by = bar_y(lane, b);
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
}

/* Requests: an arrow to where each was served, a dashed one back. */
static void draw_arrows(const picture_t *pic, FILE *out) {
  size_t n = pic->svg->bars.n;
  for (size_t i = 0; i < pic->svg->arrows.n; i++) {
    const arrow_t *a = &pic->svg->arrows.v[i];
    const bar_t *c = find_bar(pic->ids, n, a->client);
    const bar_t *s = find_bar(pic->ids, n, a->server);
    const lane_t *lc = c != NULL ? lane_at(pic->svg, c->pid) : NULL;
    const lane_t *ls = s != NULL ? lane_at(pic->svg, s->pid) : NULL;
    if (lc == NULL || ls == NULL)
      continue;
    double yc = bar_y(lc, c) + ROW / 2.0 - 1, ys = bar_y(ls, s) + ROW / 2.0 - 1;
    fprintf(out,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
            "stroke=\"#333\" marker-end=\"url(#a)\"/>\n",
            x_of(pic, c->begin), yc, x_of(pic, s->begin), ys);
    if (strcmp(c->kind ? c->kind : "", "client") == 0)
      fprintf(out,
              "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
              "stroke=\"#333\" stroke-dasharray=\"3,2\" "
              "marker-end=\"url(#a)\"/>\n",
              x_of(pic, s->end), ys, x_of(pic, c->end), yc);
  }
}

int trace_svg_write(trace_svg_t *svg, const char *title, FILE *out) {
  picture_t pic = {svg, NULL, 0, 1, 1, 0};
  if (svg->nomem || lay_out(&pic) != 0) {
    free(pic.ids);
    fprintf(stderr, "uvp-trace: out of memory\n");
    return -1;
  }
  draw_frame(&pic, title, out);
  draw_bars(&pic, out);
  draw_arrows(&pic, out);
  if (svg->bars.n == 0) /* a picture that says why it is empty */
    fprintf(out,
            "<text x=\"%d\" y=\"%d\" font-size=\"14\" fill=\"#d32f2f\">no "
            "spans in this trace: nothing to draw (spans are recorded by "
            "uvp_span_begin, uvp-fanout --trace, uvp-gateway "
            "--trace-dir)</text>\n",
            LEFT, pic.height - 24 - ROW);
  fprintf(out,
          "<text x=\"8\" y=\"%d\" fill=\"#555\">bars: spans (blue client, "
          "green server, teal consumer, purple producer, grey internal; red "
          "outline: failed); arrows: a request to where it was served, dashed: "
          "its reply</text>\n</svg>\n",
          pic.height - 8);
  free(pic.ids);
  return ferror(out) ? -1 : 0;
}
