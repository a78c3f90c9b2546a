/* uvp-console: attaching to the programs' sockets (uvp_console_listen),
 * asking for snapshots, and the rows, panel and warnings made of them. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "console.h"

#define ANSWER_TIMEOUT_MS 10000
#define ANSWER_MAX (8u << 20) /* the program caps its answers at 2 MiB */

const char *const col_name[NCOLS] = {"CTX",   "ID",    "KIND",     "NAME",
                                     "STATE", "AGE",   "WAIT",     "BUSY",
                                     "IDLE",  "GROUP", "DEADLINE", "SITE"};

char col_key(int c) { return "1234567890-="[c]; }

static int dial(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path))
    return -ENAMETOOLONG;
  memcpy(sa.sun_path, path, strlen(path));
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0)
    return -errno;
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

static int add_source(view_t *v, const char *path, int fd) {
  source_t *s = realloc(v->src, (v->nsrc + 1) * sizeof(*s));
  if (s == NULL)
    return -ENOMEM;
  v->src = s;
  s[v->nsrc] = (source_t){strdup(path), fd, NULL, false};
  v->nsrc++;
  return 0;
}

int view_attach(view_t *v, const char *path) {
  int fd = dial(path);
  if (fd < 0)
    return fd;
  if (add_source(v, path, fd) != 0) {
    close(fd);
    return -ENOMEM;
  }
  /* A gateway's further workers: PATH.1, PATH.2, ... (console-env.h). */
  for (unsigned i = 1; i < 1024; i++) {
    char more[4096];
    snprintf(more, sizeof(more), "%s.%u", path, i);
    if ((fd = dial(more)) < 0)
      break;
    if (add_source(v, more, fd) != 0) {
      close(fd);
      break;
    }
  }
  return 0;
}

/* One answer line, or NULL (the program went away, or is stuck). */
static char *answer(int fd) {
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap);
  while (buf != NULL) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, ANSWER_TIMEOUT_MS) <= 0)
      break;
    if (len + 1 == cap) {
      char *b = cap < ANSWER_MAX ? realloc(buf, cap *= 2) : NULL;
      if (b == NULL)
        break;
      buf = b;
    }
    ssize_t n = read(fd, buf + len, cap - len - 1);
    if (n <= 0)
      break;
    char *nl = memchr(buf + len, '\n', (size_t)n);
    len += (size_t)n;
    if (nl != NULL) {
      *nl = '\0';
      return buf;
    }
  }
  free(buf);
  return NULL;
}

static void source_drop(source_t *s) {
  if (s->fd >= 0)
    close(s->fd);
  s->fd = -1;
  s->gone = true;
  json_decref(s->doc);
  s->doc = NULL;
}

bool view_refresh(view_t *v, char *why, size_t cap) {
  const char *req =
      v->recorder ? "snapshot json recorder\n" : "snapshot json\n";
  bool any = false;
  for (size_t i = 0; i < v->nsrc; i++) {
    source_t *s = &v->src[i];
    if (s->gone)
      continue;
    char *a = NULL;
    if (write(s->fd, req, strlen(req)) == (ssize_t)strlen(req))
      a = answer(s->fd);
    json_t *doc = a != NULL ? json_loads(a, 0, NULL) : NULL;
    free(a);
    if (doc == NULL) {
      snprintf(why, cap, "%s: the program went away (its console closed)",
               s->path);
      source_drop(s);
      continue;
    }
    json_decref(s->doc);
    s->doc = doc;
    any = true;
  }
  return any;
}

void fmt_ms(char *buf, size_t cap, long long ms) {
  if (ms < 0)
    snprintf(buf, cap, "-");
  else if (ms < 1000)
    snprintf(buf, cap, "%lldms", ms);
  else if (ms < 600000)
    snprintf(buf, cap, "%.1fs", (double)ms / 1000);
  else
    snprintf(buf, cap, "%lldm", ms / 60000);
}

void fmt_us(char *buf, size_t cap, long long us) {
  if (us >= 0 && us < 1000)
    snprintf(buf, cap, "%lldus", us);
  else
    fmt_ms(buf, cap, us < 0 ? -1 : us / 1000);
}

static const char *str(json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s != NULL ? s : "";
}

static long long num(json_t *o, const char *key) {
  json_t *n = json_object_get(o, key);
  return json_is_integer(n) ? (long long)json_integer_value(n) : -1;
}

/* What it does: what it waits for, or its state; cancelled first. */
static void state_of(json_t *t, char *buf, size_t cap) {
  json_t *w = json_object_get(t, "waits_for");
  const char *cut = json_object_get(t, "cause") != NULL ? "cancelled; " : "";
  if (w != NULL)
    snprintf(buf, cap, "%s%s %s", cut, str(w, "kind"), str(w, "target"));
  else
    snprintf(buf, cap, "%s%s", cut, str(t, "state"));
}

/* A site's file without its directories: the table is narrow (the
 * details show it whole). */
static const char *base(const char *site) {
  const char *slash = strrchr(site, '/');
  return slash != NULL ? slash + 1 : site;
}

/* A group as the table shows it: its name if it has one ("group \"NAME\"
 * at FILE:LINE"), else where it was made. */
static void short_group(const char *g, char *buf, size_t cap) {
  const char *at = g != NULL ? strstr(g, " at ") : NULL;
  if (g == NULL)
    snprintf(buf, cap, "%s", "");
  else if (at != NULL && strncmp(g, "group \"", 7) == 0)
    snprintf(buf, cap, "%.*s", (int)(at - g - 6), g + 6);
  else if (at != NULL)
    snprintf(buf, cap, "group@%s", base(at + 4));
  else
    snprintf(buf, cap, "%s", g);
}

static void fill_row(row_t *r, int src, json_t *t) {
  memset(r, 0, sizeof(*r));
  r->src = src;
  r->task = t;
  for (int c = 0; c < NCOLS; c++)
    r->num[c] = -1;
  snprintf(r->col[COL_CTX], sizeof(r->col[0]), "%d", src);
  r->num[COL_CTX] = src;
  snprintf(r->col[COL_ID], sizeof(r->col[0]), "%s", str(t, "id"));
  snprintf(r->col[COL_KIND], sizeof(r->col[0]), "%s", str(t, "task"));
  snprintf(r->col[COL_NAME], sizeof(r->col[0]), "%s", str(t, "name"));
  state_of(t, r->col[COL_STATE], sizeof(r->col[0]));
  r->num[COL_AGE] = num(t, "age_ms");
  r->num[COL_WAIT] = num(t, "waiting_ms");
  r->num[COL_DEADLINE] = num(t, "deadline_left_ms");
  fmt_ms(r->col[COL_AGE], sizeof(r->col[0]), r->num[COL_AGE]);
  fmt_ms(r->col[COL_WAIT], sizeof(r->col[0]), r->num[COL_WAIT]);
  fmt_ms(r->col[COL_DEADLINE], sizeof(r->col[0]), r->num[COL_DEADLINE]);
  /* Only a fiber runs code of its own: the others show "-". */
  r->num[COL_BUSY] = num(t, "busy_us");
  r->num[COL_IDLE] = num(t, "idle_us");
  fmt_us(r->col[COL_BUSY], sizeof(r->col[0]), r->num[COL_BUSY]);
  fmt_us(r->col[COL_IDLE], sizeof(r->col[0]), r->num[COL_IDLE]);
  short_group(
      json_string_value(json_array_get(json_object_get(t, "groups"), 0)),
      r->col[COL_GROUP], sizeof(r->col[0]));
  snprintf(r->col[COL_SITE], sizeof(r->col[0]), "%s", base(str(t, "site")));
}

static bool matches(const row_t *r, const char *filter) {
  if (filter[0] == '\0')
    return true;
  for (int c = 0; c < NCOLS; c++)
    if (strcasestr(r->col[c], filter) != NULL)
      return true;
  return false;
}

static int g_sort; /* qsort's comparator has no argument */
static bool g_reverse;

static int by_column(const void *a, const void *b) {
  const row_t *x = a, *y = b;
  int d;
  if (x->num[g_sort] >= 0 || y->num[g_sort] >= 0)
    d = (x->num[g_sort] > y->num[g_sort]) - (x->num[g_sort] < y->num[g_sort]);
  else
    d = strcmp(x->col[g_sort], y->col[g_sort]);
  if (d == 0)
    d = strcmp(x->col[COL_ID], y->col[COL_ID]); /* a stable order */
  return g_reverse ? -d : d;
}

void view_rows(view_t *v) {
  v->nrows = 0;
  for (size_t i = 0; i < v->nsrc; i++) {
    json_t *tasks = json_object_get(v->src[i].doc, "tasks");
    size_t k;
    json_t *t;
    json_array_foreach(tasks, k, t) {
      if (v->nrows == v->cap) {
        size_t cap = v->cap != 0 ? 2 * v->cap : 64;
        row_t *rows = realloc(v->rows, cap * sizeof(*rows));
        if (rows == NULL)
          return; /* the rows so far */
        v->rows = rows;
        v->cap = cap;
      }
      fill_row(&v->rows[v->nrows], (int)i, t);
      if (matches(&v->rows[v->nrows], v->filter))
        v->nrows++;
    }
  }
  g_sort = v->sort;
  g_reverse = v->reverse;
  if (v->nrows > 1)
    qsort(v->rows, v->nrows, sizeof(row_t), by_column);
}

void view_free(view_t *v) {
  for (size_t i = 0; i < v->nsrc; i++) {
    source_drop(&v->src[i]);
    free(v->src[i].path);
  }
  free(v->src);
  free(v->rows);
}

void panel_line(const view_t *v, size_t i, char *buf, size_t cap) {
  json_t *d = v->src[i].doc;
  json_t *panel = json_object_get(d, "panel");
  json_t *sum = json_object_get(panel, "summary");
  json_t *stall = json_object_get(panel, "stall");
  json_t *rec = json_object_get(panel, "recorder");
  int n = snprintf(buf, cap, "[%zu] %s pid %lld: %lld tasks", i,
                   str(d, "program"), num(d, "pid"), num(sum, "tasks"));
  const char *k;
  json_t *c;
  bool first = true;
  json_object_foreach(json_object_get(sum, "by_what"), k, c) {
    if (n > 0 && (size_t)n < cap)
      n += snprintf(buf + n, cap - (size_t)n, "%s%s %lld", first ? " (" : ", ",
                    k, (long long)json_integer_value(c));
    first = false;
  }
  if (n < 0 || (size_t)n >= cap)
    return;
  long long thr = num(stall, "threshold_ms");
  if (thr > 0)
    snprintf(buf + n, cap - (size_t)n,
             "%s; stalls %lld (threshold %lld ms, longest %.1f ms); "
             "recorder %s",
             first ? "" : ")", num(stall, "stalls"), thr,
             (double)num(stall, "max_us") / 1000,
             num(rec, "bytes") > 0 ? "on" : "off");
  else
    snprintf(buf + n, cap - (size_t)n, "%s; stall detector off; recorder %s",
             first ? "" : ")", num(rec, "bytes") > 0 ? "on" : "off");
}

bool warning_line(const view_t *v, size_t *at, char *buf, size_t cap) {
  size_t k = *at;
  for (size_t i = 0; i < v->nsrc; i++) {
    json_t *ws = json_object_get(v->src[i].doc, "warnings");
    if (k < json_array_size(ws)) {
      json_t *w = json_array_get(ws, k);
      snprintf(buf, cap, "[%zu] %s: %s at %s: %s", i, str(w, "kind"),
               str(w, "task"), str(w, "site"), str(w, "why"));
      (*at)++;
      return true;
    }
    k -= json_array_size(ws);
  }
  return false;
}

/* The task of source src whose id is id, or that waits for id (awaiter):
 * NULL if none is listed. */
static json_t *find_task(const view_t *v, int src, const char *key,
                         const char *id) {
  if (id[0] == '\0')
    return NULL;
  json_t *tasks = json_object_get(v->src[src].doc, "tasks");
  size_t k;
  json_t *t;
  json_array_foreach(tasks, k, t) {
    if (strcmp(str(t, key), id) == 0)
      return t;
  }
  return NULL;
}

/* via: the combinator's result through which t awaits the line before
 * (NULL: t awaits it directly). */
static void stack_line(json_t *t, bool first, const char *via, char *buf,
                       size_t cap) {
  const char *name = str(t, "name");
  int n = snprintf(buf, cap, "%s%s%s%s%s %s at %s", first ? "" : "awaited by ",
                   str(t, "task"), name[0] != '\0' ? " \"" : "", name,
                   name[0] != '\0' ? "\"" : "", str(t, "id"), str(t, "site"));
  if (n > 0 && (size_t)n < cap && via != NULL)
    n += snprintf(buf + n, cap - (size_t)n, " through combinator %s", via);
  if (n > 0 && (size_t)n < cap && json_object_get(t, "await") != NULL)
    snprintf(buf + n, cap - (size_t)n, ", awaiting at %s", str(t, "await"));
}

size_t async_stack(const view_t *v, const row_t *r, char (*line)[256],
                   size_t max) {
  size_t n = 0;
  json_t *t = r->task;
  const char *via = NULL;
  /* Bounded: a cycle of awaits (which never settles) shows once. */
  for (; t != NULL && n < max; n++) {
    stack_line(t, n == 0, via, line[n], sizeof(line[n]));
    /* What awaits t, or else the combinator t is an input of. */
    json_t *up = find_task(v, r->src, "waits_id", str(t, "id"));
    via = NULL;
    if (up == NULL && json_object_get(t, "input_of") != NULL) {
      via = str(t, "input_of");
      up = find_task(v, r->src, "waits_id", via);
    }
    t = up;
  }
  return n;
}
