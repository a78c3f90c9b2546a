/* uvp-fanout --nats URL [options] [URLs]: the coordinator.  Each URL is
 * one NATS request on uvp-fanout.fetch (the workers' queue group spreads
 * them), under the same uvp_promise_map as the local mode (-c URLs under
 * way), and the same report with a worker column.
 *
 * Exactly once per URL: a URL is one item of the map, which settles once.
 * Its request is sent again (a new id, a new reply subject) only after the
 * previous one has ended (timed out, found no responders, dropped with the
 * connection, refused EBUSY): the binding then has no entry for the old
 * one, and a reply to it that comes after all (a slow worker, or one
 * nats.c buffered while disconnected and sent after the reconnect) is
 * dropped and counted (uvp_nats_stats' late).  A reply whose id is not
 * its request's is EPROTO, as one that does not parse.
 *
 * Busy workers.  A worker holds at most its -c running and 2 x -c waiting
 * and answers EBUSY at once past that: "not now".  The coordinator does
 * not know how many workers there are nor what they hold, so it keeps a
 * window of requests in flight, learnt as TCP learns its congestion
 * window: it starts at WINDOW_START, grows by one per reply up to the
 * first EBUSY (doubling each round trip), then by one per window of
 * replies; an EBUSY halves it, once per round (an EBUSY to a request sent
 * before the last halving says nothing new), never below 1 nor above -c.
 * Halving the bound of one worker, 3 x -c, leaves 1.5 x -c: its slots stay
 * full.  URLs past the window wait in the coordinator (their time has not
 * started); a refused URL waits first, oldest first (by its first send),
 * and every send pauses after an EBUSY until one of our requests is
 * answered otherwise (a slot freed) or a backoff passes (100 ms, doubling
 * to 1 s, with jitter: the workers are full of someone else's work).  A
 * request a worker takes waits its whole time (what one request waits,
 * fanout_request_timeout); a URL refused again and again ends EBUSY, its
 * row naming the worker, once that time has passed since its first send
 * (or -d), not counted against --nats-retry. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "fanout.h"
#include "jsonw.h"
#include "uvp-nats.h"

/* Between two sends of a URL that got no answer (no responders: workers
 * not yet up, or the connection coming back); the pause after an EBUSY. */
#define RESEND_BASE_MS 100
#define RESEND_MAX_MS 1000
/* What a request waits for its reply past the fetch's own time. */
#define REPLY_MARGIN_MS 1000
/* The connection's reconnect wait: short, a fan-out is short. */
#define RECONNECT_WAIT_MS 100
/* How long the exit waits for nats.c's threads (fanout_nats_shutdown). */
#define NATS_SHUTDOWN_MS 1000
/* The window's first size (at most -c). */
#define WINDOW_START 16
/* How often waiting URLs are held against -d and their own time. */
#define EXPIRE_EVERY_MS 100

typedef struct ticket_s ticket_t;

typedef struct coord_s {
  run_t *r;
  uvp_nats_t *nc;
  const nats_cli_t *cli;
  json_t *opts;    /* every request's "opts" */
  char *opts_json; /* opts, dumped */
  jsonw_t body;    /* the request being made */
  uint64_t next_id;
  uint64_t timeout_ms;
  uvp_promise_t *connect;
  /* The window (Busy workers, above). */
  double window, ssthresh;
  size_t inflight;   /* requests sent, not yet answered */
  uint64_t round;    /* next_id at the last halving */
  unsigned streak;   /* EBUSY answers since another: the pause's exponent */
  bool paused;       /* since an EBUSY: until a reply or the pause timer */
  ticket_t *head[2]; /* waiting: [0] refused (oldest first), [1] new */
  ticket_t *tail[2];
  uv_timer_t pause, expire;
  unsigned refs; /* each timer's (until closed) and each ticket's */
  bool ended;    /* coord_end ran */
  uint64_t rng;  /* the pause's jitter (xorshift64) */
} coord_t;

/* One attempt of a URL (uvp_retry's): waits for room in the window, is
 * sent, and sent again after each EBUSY; its promise settles with the
 * reply, a failure without one, or EBUSY once the URL's time is spent. */
struct ticket_s {
  coord_t *co;
  row_t *row;
  uvp_promise_t *p;      /* NULL once settled (or cancelled, torn down) */
  struct send_s *sent;   /* its request in flight, if any */
  ticket_t *prev, *next; /* a waiting list */
  int list;              /* -1: on none; else head[list] */
  unsigned refs;         /* p's while pending, and its request's */
};

/* One request for one URL: what its reply must match. */
typedef struct send_s {
  coord_t *co;
  row_t *row;
  uint64_t id;
  ticket_t *t;
  uvp_promise_t *req; /* the request's promise (held) */
  bool answered;      /* on_reply ran */
} send_t;

static int deadline_passed(const run_t *r) {
  return r->deadline_ms != 0 && uv_now(r->loop) >= r->deadline_at;
}

static void row_set(row_t *row, char **field, const char *value) {
  (void)row;
  free(*field);
  *field = value != NULL ? strdup(value) : NULL;
}

/* A reply that is not what the protocol says: EPROTO, naming its worker. */
static void reply_bad(row_t *row, const char *worker, const char *why) {
  char msg[256];
  snprintf(msg, sizeof(msg), "the reply of %s %s",
           worker != NULL ? worker : "a worker", why);
  row->error = UV_EPROTO;
  row->status = 0;
  row->bytes = 0;
  row->attempts = row->attempts > 0 ? row->attempts : 1;
  row_set(row, &row->error_name, NULL);
  row_set(row, &row->reason, msg);
  row_set(row, &row->worker, worker != NULL ? worker : "?");
}

static int json_uint(json_t *o, const char *key, uint64_t *out) {
  json_t *v = json_object_get(o, key);
  if (!json_is_integer(v) || json_integer_value(v) < 0)
    return -1;
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

/* The fields of a well-formed reply into the row; -1 if one is missing or
 * of the wrong type (nothing is then recorded). */
int fanout_reply_fields(row_t *row, json_t *o) {
  uint64_t status, bytes, us, attempts;
  json_t *worker = json_object_get(o, "worker");
  json_t *error = json_object_get(o, "error");
  json_t *message = json_object_get(o, "message");
  if (!json_is_string(worker) || json_uint(o, "status", &status) != 0 ||
      json_uint(o, "bytes", &bytes) != 0 ||
      json_uint(o, "latency_us", &us) != 0 ||
      json_uint(o, "attempts", &attempts) != 0 ||
      !(json_is_null(error) || json_is_string(error)) || status > 999)
    return -1;
  row_set(row, &row->worker, json_string_value(worker));
  row->attempts = attempts > 0 ? (unsigned)attempts : 1;
  row->latency_us = us;
  row_set(row, &row->reason,
          json_is_string(message) ? json_string_value(message) : NULL);
  if (json_is_string(error)) {
    int code = fanout_err_code(json_string_value(error));
    row->error = code != 0 ? code : UV_EPROTO;
    row->status = 0;
    row->bytes = 0;
    row_set(row, &row->error_name, json_string_value(error));
  } else {
    row->error = 0;
    row->status = (int)status;
    row->bytes = (size_t)bytes;
    row_set(row, &row->error_name, NULL);
  }
  return 0;
}

/* ---- the reply, read without jansson when it is plain ----------------------
 * A worker's reply is one flat object (nats-worker.c's reply_json), which
 * jansson parses into a hash of allocated values: 22 000 instructions, as
 * much as all the rest of the coordinator's work for the URL.  A reply of
 * plain members (keys and strings without escapes or bytes past ASCII,
 * integers, null) that passes every check is read here, by scanning; any
 * other (an escape, a nested value, a check that fails) goes to jansson,
 * which decides as before. */
typedef struct fval_s {
  enum { F_NONE, F_NULL, F_STR, F_INT } kind;
  const char *s; /* F_STR: not NUL-terminated */
  size_t n;
  uint64_t i;
} fval_t;

static const char *fast_ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    p++;
  return p;
}

/* A string's contents up to its closing quote (p after the opening one);
 * NULL if it has an escape, a control byte or one past ASCII. */
static const char *fast_str(const char *p, const char *e) {
  while (p < e && *p != '"') {
    unsigned char c = (unsigned char)*p;
    if (c < 0x20 || c >= 0x7f || c == '\\')
      return NULL;
    p++;
  }
  return p < e ? p : NULL;
}

static const char *fast_value(const char *p, const char *e, fval_t *v) {
  if (p < e && *p == '"') {
    const char *end = fast_str(p + 1, e);
    if (end == NULL)
      return NULL;
    *v = (fval_t){F_STR, p + 1, (size_t)(end - p - 1), 0};
    return end + 1;
  }
  if (e - p >= 4 && memcmp(p, "null", 4) == 0) {
    *v = (fval_t){F_NULL, NULL, 0, 0};
    return p + 4;
  }
  const char *d = p;
  uint64_t i = 0;
  for (; d < e && *d >= '0' && *d <= '9' && d - p < 18; d++)
    i = i * 10 + (uint64_t)(*d - '0');
  if (d == p || (*p == '0' && d - p > 1) ||
      (d < e &&
       ((*d >= '0' && *d <= '9') || *d == '.' || *d == 'e' || *d == 'E')))
    return NULL;
  *v = (fval_t){F_INT, NULL, 0, i};
  return d;
}

static char *fast_dup(const fval_t *v) {
  return v->kind == F_STR ? strndup(v->s, v->n) : NULL;
}

/* True if the reply was plain and right, and is now in the row. */
static bool reply_fast(send_t *s, const char *p, size_t len) {
  enum { V, ID, WORKER, STATUS, BYTES, LAT, ATT, ERROR, MESSAGE, NKEYS };
  static const char *const keys[NKEYS] = {"v",        "id",    "worker",
                                          "status",   "bytes", "latency_us",
                                          "attempts", "error", "message"};
  fval_t f[NKEYS] = {0}, other;
  const char *e = p + len;
  p = fast_ws(p, e);
  if (p >= e || *p++ != '{')
    return false;
  for (;;) {
    p = fast_ws(p, e);
    const char *key = p + 1, *kend;
    if (p >= e || *p != '"' || (kend = fast_str(key, e)) == NULL)
      return false;
    p = fast_ws(kend + 1, e);
    if (p >= e || *p++ != ':')
      return false;
    fval_t *v = &other;
    for (int k = 0; k < NKEYS; k++)
      if (strlen(keys[k]) == (size_t)(kend - key) &&
          memcmp(keys[k], key, (size_t)(kend - key)) == 0)
        v = &f[k];
    if ((p = fast_value(fast_ws(p, e), e, v)) == NULL)
      return false;
    p = fast_ws(p, e);
    if (p < e && *p == ',') {
      p++;
      continue;
    }
    if (p >= e || *p++ != '}')
      return false;
    break;
  }
  if (fast_ws(p, e) != e || f[V].kind != F_INT ||
      f[V].i != NATS_PROTOCOL_VERSION || f[ID].kind != F_INT ||
      f[ID].i != s->id || f[WORKER].kind != F_STR || f[STATUS].kind != F_INT ||
      f[STATUS].i > 999 || f[BYTES].kind != F_INT || f[LAT].kind != F_INT ||
      f[ATT].kind != F_INT ||
      (f[ERROR].kind != F_NULL && f[ERROR].kind != F_STR))
    return false;
  row_t *row = s->row;
  char *worker = fast_dup(&f[WORKER]), *message = fast_dup(&f[MESSAGE]);
  char *error = fast_dup(&f[ERROR]);
  free(row->worker);
  row->worker = worker;
  row->attempts = f[ATT].i > 0 ? (unsigned)f[ATT].i : 1;
  row->latency_us = f[LAT].i;
  free(row->reason);
  row->reason = message;
  free(row->error_name);
  row->error_name = error;
  if (error != NULL) {
    int code = fanout_err_code(error);
    row->error = code != 0 ? code : UV_EPROTO;
    row->status = 0;
    row->bytes = 0;
  } else {
    row->error = 0;
    row->status = (int)f[STATUS].i;
    row->bytes = (size_t)f[BYTES].i;
  }
  return true;
}

static void reply_record(send_t *s, natsMsg *msg) {
  if (reply_fast(s, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg)))
    return;
  row_t *row = s->row;
  const char *hdr = uvp_nats_msg_header(msg, UVP_NATS_WORKER_HEADER);
  json_error_t je;
  json_t *o = json_loadb(natsMsg_GetData(msg),
                         (size_t)natsMsg_GetDataLength(msg), 0, &je);
  json_t *v = json_object_get(o, "v");
  json_t *id = json_object_get(o, "id");
  if (!json_is_object(o))
    reply_bad(row, hdr, "is not a JSON object");
  else if (!json_is_integer(v) ||
           json_integer_value(v) != NATS_PROTOCOL_VERSION)
    reply_bad(row, hdr, "has an unknown protocol version (v)");
  else if (!json_is_integer(id) || (uint64_t)json_integer_value(id) != s->id)
    reply_bad(row, hdr, "answers another request (id)");
  else if (fanout_reply_fields(row, o) != 0)
    reply_bad(row, hdr, "lacks a field or has one of the wrong type");
  json_decref(o);
}

/* A request's end: a reply (the URL's outcome, whatever it says), a
 * worker's failure (Uvp-Error: its outcome too), or no reply (kept for
 * uvp_retry to judge). */

/* The milliseconds left of a URL's own time (what one request of it
 * waits, co->timeout_ms, from its first send); 0 once spent. */
static uint64_t url_left(const coord_t *co, const row_t *row) {
  uint64_t spent = (uv_hrtime() - row->start_ns) / 1000000;
  return spent < co->timeout_ms ? co->timeout_ms - spent : 0;
}

/* ---- the window ------------------------------------------------------------
 * (Busy workers, at the top.) */

static void co_unref(coord_t *co) {
  if (--co->refs > 0)
    return;
  free(co);
}

static void ticket_unref(ticket_t *t) {
  if (--t->refs > 0)
    return;
  coord_t *co = t->co;
  free(t);
  co_unref(co);
}

static void list_unlink(ticket_t *t) {
  coord_t *co = t->co;
  if (t->list < 0)
    return;
  int l = t->list;
  *(t->prev != NULL ? &t->prev->next : &co->head[l]) = t->next;
  *(t->next != NULL ? &t->next->prev : &co->tail[l]) = t->prev;
  t->prev = t->next = NULL;
  t->list = -1;
}

/* A new URL at the end of its list; a refused one in the order of its
 * first send (nearly always at the end: they come back in the order they
 * went). */
static void list_add(ticket_t *t, int l) {
  coord_t *co = t->co;
  ticket_t *after = co->tail[l];
  while (l == 0 && after != NULL && after->row->start_ns > t->row->start_ns)
    after = after->prev;
  t->list = l;
  t->prev = after;
  t->next = after != NULL ? after->next : co->head[l];
  *(t->next != NULL ? &t->next->prev : &co->tail[l]) = t;
  *(after != NULL ? &after->next : &co->head[l]) = t;
}

/* The ticket's promise, settled (with 0: fulfilled with nothing, the row
 * holds the outcome); t may be gone after it. */
static void ticket_settle(ticket_t *t, int code) {
  uvp_promise_t *p = t->p;
  if (p == NULL)
    return;
  list_unlink(t);
  t->p = NULL; /* ticket_p_gone may come now or later */
  if (code == 0)
    (void)uvp_promise_resolve(p, NULL, NULL);
  else
    (void)uvp_promise_reject(p, code, NULL, NULL);
}

/* Its promise settled, cancelled or torn down: off its list. */
static void ticket_p_gone(void *arg) {
  ticket_t *t = arg;
  t->p = NULL;
  list_unlink(t);
  ticket_unref(t);
}

/* uvp_retry gave up on it: its request too. */
static void ticket_cancelled(uvp_promise_t *p, void *arg) {
  ticket_t *t = arg;
  (void)p;
  if (t->sent != NULL)
    (void)uvp_promise_cancel(t->sent->req);
}

/* What a waiting URL ends with now: -d passed (never sent: ECANCELED), or
 * its own time, spent on EBUSY answers; 0 if it may still be sent. */
static int ticket_expired(ticket_t *t) {
  row_t *row = t->row;
  run_t *r = row->run;
  if (deadline_passed(r)) {
    if (row->sends == 0)
      return UV_ECANCELED; /* never sent */
    row->error = UV_ETIMEDOUT;
    row_set(row, &row->reason, "deadline (-d) passed before this resend");
    return UV_ETIMEDOUT;
  }
  if (row->error == UV_EBUSY && url_left(t->co, row) == 0)
    return UV_EBUSY; /* the row holds the last refusal */
  return 0;
}

static void pump(coord_t *co);

static void on_pause_end(uv_timer_t *h) {
  coord_t *co = h->data;
  co->paused = false;
  pump(co);
}

/* Every EXPIRE_EVERY_MS while URLs wait: those whose time is up end. */
static void on_expire(uv_timer_t *h) {
  coord_t *co = h->data;
  uv_update_time(co->r->loop);
  for (int l = 0; l < 2; l++) {
    ticket_t *t = co->head[l], *next;
    for (; t != NULL; t = next) {
      next = t->next;
      int code = ticket_expired(t);
      if (code != 0)
        ticket_settle(t, code); /* off the list */
    }
  }
  pump(co);
}

/* An EBUSY: the window halves (once a round), and sending pauses. */
static void window_busy(coord_t *co, const send_t *s) {
  co->streak++;
  if (s->id > co->round) {
    co->ssthresh = co->window / 2 >= 1 ? co->window / 2 : 1;
    co->window = co->ssthresh;
    co->round = co->next_id;
  }
  if (co->paused)
    return;
  unsigned k = co->streak - 1 < 4 ? co->streak - 1 : 4;
  uint64_t ms = (uint64_t)RESEND_BASE_MS << k;
  ms = ms < RESEND_MAX_MS ? ms : RESEND_MAX_MS;
  co->rng ^= co->rng >> 12; /* jitter, [ms / 2, ms]: apart from others */
  co->rng ^= co->rng << 25;
  co->rng ^= co->rng >> 27;
  ms -= (co->rng * 2685821657736338717ULL >> 33) % (ms / 2 + 1);
  co->paused = true;
  uv_timer_start(&co->pause, on_pause_end, ms, 0);
}

/* Another answer: a slot is free again. */
static void window_reply(coord_t *co) {
  double cap = (double)co->cli->concurrency;
  co->streak = 0;
  if (co->paused) {
    co->paused = false;
    uv_timer_stop(&co->pause);
  }
  co->window += co->window < co->ssthresh ? 1 : 1 / co->window;
  if (co->window > cap)
    co->window = cap;
}

/* ---- requests ------------------------------------------------------------ */

/* A request's end: a reply (the URL's outcome, whatever it says), a
 * worker's failure (Uvp-Error: its outcome too, but EBUSY: the URL waits
 * again), or no reply (kept for uvp_retry to judge). */
static uvp_ret_t on_reply(void *arg, const uvp_outcome_t *in) {
  send_t *s = arg;
  coord_t *co = s->co;
  ticket_t *t = s->t;
  row_t *row = s->row;
  s->answered = true;
  co->inflight--;
  t->sent = NULL;
  int code = 0;
  if (t->p == NULL) { /* cancelled, or torn down: nothing to record */
  } else if (in->status == 0) {
    reply_record(s, in->value);
    window_reply(co);
  } else if (in->value != NULL) { /* the serving side failed: its reply */
    natsMsg *msg = in->value;
    const char *hdr = uvp_nats_msg_header(msg, UVP_NATS_WORKER_HEADER);
    const char *name = uvp_nats_msg_header(msg, UVP_NATS_ERROR_HEADER);
    row->error = in->status;
    row->status = 0;
    row->bytes = 0;
    row->attempts = row->attempts > 0 ? row->attempts : 1;
    /* no worker for the server's own refusal (UV_EACCES: its words) */
    row_set(row, &row->worker,
            hdr != NULL               ? hdr
            : in->status == UV_EACCES ? NULL
                                      : "?");
    row_set(row, &row->error_name, name);
    char *why =
        strndup(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
    row_set(row, &row->reason, why != NULL && *why != '\0' ? why : NULL);
    free(why);
    if (in->status == UV_EBUSY) { /* not now: it waits (its row says so
                                     only if it is the last word) */
      row->busy++;
      window_busy(co, s);
      code = ticket_expired(t);
      if (code == 0)
        list_add(t, 0);
    } else {
      window_reply(co);
    }
  } else {
    row->error = in->status;
    row_set(row, &row->reason, NULL);
    code = in->status;
  }
  if (t->list < 0)
    ticket_settle(t, code);
  if (!co->ended)
    pump(co);
  return uvp_ret_value(NULL, NULL);
}

static void send_free(void *arg) {
  send_t *s = arg;
  coord_t *co = s->co;
  if (!s->answered) { /* dropped unanswered (torn down) */
    co->inflight--;
    s->t->sent = NULL;
  }
  uvp_promise_release(s->req);
  ticket_unref(s->t);
  free(s);
}

/* {"v":1,"id":ID,"url":URL,"opts":OPTS}: what json_pack and json_dumps
 * made of it (jsonw.h), the options dumped once for the run; NULL if the
 * URL is not UTF-8. */
static const char *request_body(coord_t *co, const row_t *row, uint64_t id) {
  jsonw_t *w = &co->body;
  jsonw_open(w);
  jsonw_key(w, "v");
  jsonw_int(w, NATS_PROTOCOL_VERSION);
  jsonw_key(w, "id");
  jsonw_int(w, (int64_t)id);
  jsonw_key(w, "url");
  if (!jsonw_str(w, row->url))
    return NULL;
  jsonw_key(w, "opts");
  jsonw_raw(w, co->opts_json, strlen(co->opts_json));
  jsonw_close(w);
  return w->failed ? NULL : w->p;
}

static int send_one(ticket_t *t, uint64_t left) {
  coord_t *co = t->co;
  row_t *row = t->row;
  run_t *r = co->r;
  send_t *s = malloc(sizeof(*s));
  const char *body = NULL;
  int rc = s != NULL ? 0 : UV_ENOMEM;
  if (rc == 0) {
    *s = (send_t){co, row, ++co->next_id, t, NULL, false};
    body = request_body(co, row, s->id);
    if (body == NULL && co->body.failed) {
      rc = UV_ENOMEM;
    } else if (body == NULL) {
      row_set(row, &row->reason, "the URL is not valid UTF-8");
      rc = UV_EINVAL;
    }
  }
  /* a worker that takes it gives it its whole time, refused before or not */
  uvp_nats_request_opts_t ro = {.timeout_ms = co->timeout_ms};
  if (rc == 0 && left != 0)
    rc = uvp_deadline_set(r->ctx, left);
  fanout_trace_was_t was; /* --trace: the request in the URL's trace */
  fanout_row_trace_enter(r, row, &was);
  if (rc == 0)
    rc = uvp_nats_request(co->nc, NATS_SUBJECT, body, strlen(body), &ro,
                          &s->req);
  fanout_row_trace_leave(r, &was);
  if (rc == 0) {
    /* What send_free gives back: at once if the handler is refused
     * (uvp.h, "Handing over"), s with it. */
    t->refs++;
    t->sent = s;
    co->inflight++;
    uvp_promise_t *req = uvp_promise_retain(s->req);
    rc = uvp_promise_on_full(s->req, UVP_ON_BOTH, on_reply, s, send_free, NULL);
    if (rc != 0)
      (void)uvp_promise_cancel(req);
    uvp_promise_release(req);
    s = NULL;
  }
  if (left != 0) /* as main.c's attempt: the handler holds the deadline */
    (void)uvp_deadline_shield(r->ctx, UVP_NO_DEADLINE);
  free(s); /* not handed over */
  return rc;
}

static void ticket_send(ticket_t *t) {
  coord_t *co = t->co;
  row_t *row = t->row;
  run_t *r = co->r;
  int code = ticket_expired(t);
  uint64_t left = 0;
  if (code == 0 && r->deadline_ms != 0)
    left = r->deadline_at - uv_now(r->loop);
  if (code == 0 && row->sends == 0) { /* its time starts */
    row->start_ns = uv_hrtime();
    r->started++;
  }
  if (code == 0)
    code = send_one(t, left);
  if (code == 0)
    row->sends++;
  else
    ticket_settle(t, code);
}

/* Send what waits, the refused first, as the window allows. */
static void pump(coord_t *co) {
  uv_update_time(co->r->loop);
  while (!co->paused && (double)co->inflight + 1 <= co->window) {
    ticket_t *t = co->head[0] != NULL ? co->head[0] : co->head[1];
    if (t == NULL)
      break;
    list_unlink(t);
    ticket_send(t);
  }
  bool waiting = co->head[0] != NULL || co->head[1] != NULL;
  if (waiting && !uv_is_active((uv_handle_t *)&co->expire))
    uv_timer_start(&co->expire, on_expire, EXPIRE_EVERY_MS, EXPIRE_EVERY_MS);
  else if (!waiting)
    uv_timer_stop(&co->expire);
}

/* uvp_retry's attempt: a ticket, which waits its turn. */
static int send_attempt(void *arg, unsigned int n, uvp_promise_t **out) {
  row_t *row = arg;
  coord_t *co = row->run->nats;
  (void)n;
  ticket_t *t = calloc(1, sizeof(*t));
  if (t == NULL)
    return UV_ENOMEM;
  *t = (ticket_t){co, row, NULL, NULL, NULL, NULL, -1, 1};
  uvp_promise_t *p;
  int rc = uvp_promise_new(co->r->ctx, &p);
  if (rc != 0) {
    free(t);
    return rc;
  }
  t->p = p;
  co->refs++; /* t's: ticket_p_gone gives both back, at once if refused */
  rc = uvp_promise_set_cancel_full(p, ticket_cancelled, t, ticket_p_gone);
  if (rc != 0) {
    uvp_promise_release(p);
    return rc;
  }
  *out = t->p; /* uvp_retry's reference; ours goes with ticket_p_gone */
  list_add(t, row->sends > 0 ? 0 : 1);
  pump(co);
  return 0;
}

/* Sent again: a request that got no answer at all, --nats-retry times.
 * One a worker answered, even with a failure, has its outcome; EBUSY
 * comes here only once the URL's time is spent. */
static int should_resend(void *arg, int code, unsigned int n) {
  row_t *row = arg;
  const coord_t *co = row->run->nats;
  if (deadline_passed(row->run))
    return 0;
  return (code == UV_ETIMEDOUT || code == UVP_NATS_ENORESPONDERS ||
          code == UVP_NATS_EDISCONNECTED) &&
         n < co->cli->retries;
}

static int start_url(void *arg, size_t i, uvp_promise_t **out) {
  run_t *r = arg;
  row_t *row = &r->rows[i];
  uv_update_time(r->loop);
  row->start_ns = uv_hrtime(); /* again at its first send */
  if (deadline_passed(r))
    return UV_ECANCELED; /* never sent */
  fanout_row_trace_begin(r, row);
  uvp_retry_opts_t ro = {.attempts = UINT_MAX, /* should_resend decides */
                         .base_ms = RESEND_BASE_MS,
                         .max_ms = RESEND_MAX_MS,
                         .factor = 2.0,
                         .jitter = 0.5,
                         .should_retry = should_resend};
  return uvp_retry(r->ctx, send_attempt, row, &ro, out);
}

static uvp_ret_t on_connected(void *arg, const uvp_outcome_t *in) {
  coord_t *co = arg;
  run_t *r = co->r;
  if (in->status != 0) {
    fanout_nats_connect_failed(co->cli, in->status, in->value);
    return uvp_ret_pass();
  }
  co->nc = in->value;
  uv_update_time(r->loop);
  r->start_ns = uv_hrtime();
  r->deadline_at = uv_now(r->loop) + r->deadline_ms;
  uvp_map_opts_t mo = {.limit = (size_t)co->cli->concurrency,
                       .on_settle = fanout_on_item};
  uvp_promise_t *all;
  int rc = uvp_promise_map(r->ctx, r->n, start_url, r, &mo, &all);
  if (rc != 0)
    return uvp_ret_reject(rc, NULL, NULL);
  return uvp_ret_adopt(all);
}

static void before_report(run_t *r) {
  coord_t *co = r->nats;
  uvp_nats_stats_t st;
  if (co->nc != NULL && uvp_nats_stats(co->nc, &st) == 0) {
    r->late = st.late;
    r->disconnects = st.disconnects;
  }
}

static void timer_closed(uv_handle_t *h) { co_unref(h->data); }

/* A permission the server refused is said at once, with its subject (the
 * requests it hit end EACCES, not retried); the same words once. */
static void coord_event(void *arg, uvp_nats_t *nc, uvp_nats_event_t event) {
  static char last[256];
  const char *why = uvp_nats_denied(nc);
  if (event != UVP_NATS_DENIED || why == NULL || strcmp(why, last) == 0)
    return;
  snprintf(last, sizeof(last), "%s", why);
  fprintf(stderr, "uvp-fanout: %s: %s\n", (const char *)arg, why);
}

static void coord_end(run_t *r) {
  coord_t *co = r->nats;
  co->ended = true;
  if (co->nc != NULL)
    uvp_nats_close(co->nc);
  uvp_promise_release(co->connect);
  json_decref(co->opts);
  free(co->opts_json);
  free(co->body.p);
  /* co itself goes with the timers and the last ticket */
  uv_close((uv_handle_t *)&co->pause, timer_closed);
  uv_close((uv_handle_t *)&co->expire, timer_closed);
  r->nats = NULL;
  r->nats_end = NULL;
  r->nats_before_report = NULL;
}

/* What a request waits: the fetch's -m for each of its attempts (--retry)
 * and the backoffs between them at their longest, plus a second. */
uint64_t fanout_request_timeout(const run_t *r) {
  uint64_t ms = r->http.timeout_ms * (r->retries + 1) + REPLY_MARGIN_MS;
  uint64_t wait = 200; /* retry.h's RETRY_BASE_MS */
  for (unsigned k = 0; k < r->retries; k++) {
    ms += wait + wait / 2; /* with its jitter */
    wait = wait * 2 < 5000 ? wait * 2 : 5000;
  }
  return ms;
}

json_t *fanout_request_opts(const run_t *r) {
  const http_t *h = &r->http;
  json_t *o = json_pack("{s:I,s:I,s:I,s:b,s:I,s:b,s:b,s:b,s:I}", "timeout_ms",
                        (json_int_t)h->timeout_ms, "connect_timeout_ms",
                        (json_int_t)h->connect_timeout_ms, "max_filesize",
                        (json_int_t)h->max_body, "location", h->follow,
                        "max_redirs", (json_int_t)h->max_redirects, "insecure",
                        h->insecure, "http2", h->http2, "compressed",
                        h->compressed, "retry", (json_int_t)r->retries);
  if (o != NULL && h->proxy != NULL)
    json_object_set_new(o, "proxy", json_string(h->proxy));
  if (o != NULL && h->userpwd != NULL)
    json_object_set_new(o, "user", json_string(h->userpwd));
  return o;
}

int fanout_nats_coord(run_t *r, const nats_cli_t *cli, uvp_promise_t **out) {
  coord_t *co = calloc(1, sizeof(*co));
  if (co == NULL)
    return UV_ENOMEM;
  co->r = r;
  co->cli = cli;
  co->refs = 2; /* the timers' */
  uv_timer_init(r->loop, &co->pause);
  uv_timer_init(r->loop, &co->expire);
  co->pause.data = co->expire.data = co;
  co->rng = uv_hrtime() | 1;
  co->ssthresh = (double)cli->concurrency;
  co->window =
      cli->concurrency < WINDOW_START ? (double)cli->concurrency : WINDOW_START;
  co->timeout_ms = fanout_request_timeout(r);
  co->opts = fanout_request_opts(r);
  co->opts_json = co->opts != NULL ? json_dumps(co->opts, JSON_COMPACT) : NULL;
  r->nats = co;
  r->nats_mode = 1;
  r->nats_before_report = before_report;
  r->nats_end = coord_end;
  uvp_nats_connect_opts_t o = {.url = cli->url,
                               .options =
                                   fanout_nats_options("uvp-fanout", cli),
                               .flags = UVP_NATS_FAIL_ON_DISCONNECT,
                               .on_event = coord_event,
                               .arg = (void *)cli->shown};
  int rc = co->opts_json != NULL ? 0 : UV_ENOMEM;
  if (rc == 0)
    rc = fanout_nats_connect(r->ctx, &o, cli, &co->connect);
  else if (o.options != NULL)
    natsOptions_Destroy(o.options);
  if (rc == 0)
    rc = uvp_promise_on(co->connect, UVP_ON_BOTH, on_connected, co, out);
  if (rc != 0)
    coord_end(r);
  return rc;
}

/* An option's value, or its environment variable's: secrets stay out of
 * ps (a password in --nats's URL is seen there too). */
static const char *opt_or_env(const char *opt, const char *env) {
  const char *v = opt != NULL ? opt : getenv(env);
  return v != NULL && *v != '\0' ? v : NULL;
}

/* The option a field of uvp_nats_auth_t is given by (uvp_nats_options_auth
 * names the field, or the environment variable, which stays as it is). */
static const char *option_of(const char *what) {
  static const char *const map[][2] = {
      {"user", "--nats-user"},   {"password", "--nats-user"},
      {"token", "--nats-token"}, {"creds", "--creds"},
      {"nkey", "--nkey"},        {"ca", "--tlsca"},
      {"cert", "--tlscert"},     {"key", "--tlskey"},
      {"tls_name", "--tlsname"}};
  for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
    if (strcmp(what, map[i][0]) == 0)
      return map[i][1];
  return what;
}

/* Both sides reconnect for ever, 100 ms apart: a worker or coordinator
 * outlives a server's restart.  Credentials and TLS from cli, or the
 * environment; NULL (said on stderr, in one line naming the option) if
 * nats.c refuses one: a file it cannot read, a certificate it cannot
 * load. */
natsOptions *fanout_nats_options(const char *name, const nats_cli_t *cli) {
  natsOptions *no = NULL;
  if (natsOptions_Create(&no) != NATS_OK)
    return NULL;
  natsOptions_SetMaxReconnect(no, -1);
  natsOptions_SetReconnectWait(no, RECONNECT_WAIT_MS);
  natsOptions_SetName(no, name);
  if (cli->ping_ms > 0) { /* --nats-ping */
    natsOptions_SetPingInterval(no, (int64_t)cli->ping_ms);
    natsOptions_SetMaxPingsOut(no, 2);
  }
  uvp_nats_auth_t auth = {.user = cli->user,
                          .password = cli->password,
                          .token = cli->token,
                          .creds = cli->creds,
                          .nkey = cli->nkey,
                          .ca = cli->tlsca,
                          .cert = cli->tlscert,
                          .key = cli->tlskey,
                          .tls_name = cli->tlsname};
  const char *what = NULL, *why = NULL;
  int rc = uvp_nats_options_auth(no, &auth, &what);
  if (rc != 0) {
    const char *e = nats_GetLastError(NULL);
    what = what != NULL ? what : "--nats";
    bool nkey = strcmp(what, "nkey") == 0 || strcmp(what, "NATS_NKEY") == 0;
    if (rc == UV_EINVAL)
      why = nkey ? "no public key in the file (nk -gen user -pubout writes "
                   "the seed and the key)"
                 : "both --tlscert and --tlskey are needed";
    else if (rc != UV_EPROTO && rc != UVP_NATS_ENATS)
      why = uv_strerror(rc); /* a file: ours, not nats.c's words */
    fprintf(stderr, "uvp-fanout: %s: %s\n", option_of(what),
            why != NULL               ? why
            : e != NULL && *e != '\0' ? e
                                      : uvp_nats_strerror(rc));
    natsOptions_Destroy(no);
    return NULL;
  }
  return no;
}

int fanout_nats_connect(uvp_ctx_t *ctx, const uvp_nats_connect_opts_t *o,
                        const nats_cli_t *cli, uvp_promise_t **out) {
  uvp_nats_connect_more_t more = {
      .inbox_prefix = opt_or_env(cli->inbox_prefix, "NATS_INBOX_PREFIX"),
      .connect_timeout_ms = cli->connect_ms};
  return uvp_nats_connect_more(ctx, o, &more, out);
}

void fanout_nats_connect_failed(const nats_cli_t *cli, int rc,
                                const void *words) {
  const char *w = words; /* uvp_nats_connect's rejection: nats.c's words */
  /* A server that verifies clients (tls { verify: true }) ends the
   * connection with a TLS alert once the handshake is done, which nats.c
   * reads as an empty line where the PONG should be: the alert's own
   * words stay in OpenSSL's queue on the binding's thread. */
  bool tls = strncmp(cli->url, "tls://", 6) == 0 ||
             opt_or_env(cli->tlsca, "NATS_CA") != NULL ||
             opt_or_env(cli->tlscert, "NATS_CERT") != NULL ||
             opt_or_env(cli->tlsname, "NATS_TLS_NAME") != NULL;
  const char *hint = NULL;
  if (tls && w != NULL && strstr(w, "Expected 'PONG', got ''") != NULL)
    hint = opt_or_env(cli->tlscert, "NATS_CERT") == NULL
               ? ": the server closed the TLS connection: it wants a client "
                 "certificate (--tlscert, --tlskey)"
               : ": the server closed the TLS connection: it did not accept "
                 "the client certificate (--tlscert)";
  fprintf(stderr, "uvp-fanout: %s: %s%s%s%s%s\n", cli->shown,
          uvp_nats_strerror(rc), w != NULL ? " (" : "", w != NULL ? w : "",
          w != NULL ? ")" : "", hint != NULL ? hint : "");
}

void fanout_url_redact(const char *url, char *out, size_t cap) {
  size_t o = 0;
  for (const char *c = url; *c != '\0' && o + 1 < cap;) {
    const char *end = strchr(c, ','); /* one server of the list */
    size_t n = end != NULL ? (size_t)(end - c) : strlen(c);
    const char *scheme = strstr(c, "://");
    const char *host = scheme != NULL && scheme < c + n ? scheme + 3 : c;
    const char *at = memchr(host, '@', n - (size_t)(host - c));
    const char *colon =
        at != NULL ? memchr(host, ':', (size_t)(at - host)) : NULL;
    int w = at == NULL ? snprintf(out + o, cap - o, "%.*s", (int)n, c)
            : colon != NULL /* user:password@: the user kept */
                ? snprintf(out + o, cap - o, "%.*s:***%.*s", (int)(colon - c),
                           c, (int)(c + n - at), at)
                : snprintf(out + o, cap - o, "%.*s***%.*s", /* a token */
                           (int)(host - c), c, (int)(c + n - at), at);
    if (w < 0 || (size_t)w >= cap - o)
      break;
    o += (size_t)w;
    c += n;
    if (*c == ',' && o + 1 < cap) {
      out[o++] = ',';
      c++;
    }
  }
  out[o < cap ? o : cap - 1] = '\0';
}

void fanout_secret_file_check(const char *option, const char *path) {
  struct stat st;
  if (path == NULL || *path == '\0' || stat(path, &st) != 0)
    return; /* its reader says why it cannot read it */
  if ((st.st_mode & 077) != 0)
    fprintf(stderr,
            "uvp-fanout: warning: %s %s is readable by others (mode %04o): "
            "chmod go-rwx it\n",
            option, path, (unsigned)(st.st_mode & 07777));
}

/* nats.c's threads, after the last connection; bounded, since a connect
 * the binding abandoned (a server that never finished the handshake)
 * holds nats.c until its peer lets it go. */
void fanout_nats_shutdown(void) {
  natsStatus s = nats_CloseAndWait(NATS_SHUTDOWN_MS);
  if (s != NATS_OK && s != NATS_TIMEOUT) /* a timeout: exit anyway */
    fprintf(stderr, "uvp-fanout: nats.c's shutdown: %s\n",
            natsStatus_GetText(s));
}
