/* uvp-fanout --nats URL [options] [URLs]: the coordinator.  Each URL is
 * one NATS request on uvp-fanout.fetch (the workers' queue group spreads
 * them), under the same uvp_promise_map as the local mode (-c requests in
 * flight), and the same report with a worker column.
 *
 * Exactly once per URL: a URL is one item of the map, which settles once.
 * Its request is sent again (a new id, a new reply subject) only after the
 * previous one has ended (timed out, found no responders, dropped with the
 * connection): the binding then has no entry for the old one, and a reply
 * to it that comes after all (a slow worker, or one nats.c buffered while
 * disconnected and sent after the reconnect) is dropped and counted
 * (uvp_nats_stats' late).  A reply whose id is not its request's is
 * EPROTO, as one that does not parse.
 *
 * A worker whose queue is full answers EBUSY at once: the URL is sent
 * again after a backoff (100 ms, doubling up to 1 s, with jitter), as
 * often as it takes within the URL's own time (what one request of it
 * waits, from its first send) and -d, not counted against --nats-retry;
 * past that its row says EBUSY and names the worker. */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fanout.h"
#include "jsonw.h"
#include "uvp-nats.h"

/* Between two sends of a URL (no responders: workers not yet up, or the
 * connection coming back). */
#define RESEND_BASE_MS 100
#define RESEND_MAX_MS 1000
/* What a request waits for its reply past the fetch's own time. */
#define REPLY_MARGIN_MS 1000
/* The connection's reconnect wait: short, a fan-out is short. */
#define RECONNECT_WAIT_MS 100

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
} coord_t;

/* One request for one URL: what its reply must match. */
typedef struct send_s {
  coord_t *co;
  row_t *row;
  uint64_t id;
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
static uvp_ret_t on_reply(void *arg, const uvp_outcome_t *in) {
  send_t *s = arg;
  row_t *row = s->row;
  if (in->status == 0) {
    reply_record(s, in->value);
    return uvp_ret_value(NULL, NULL);
  }
  if (in->value != NULL) { /* the serving side failed: its reply says how */
    natsMsg *msg = in->value;
    if (in->status == UV_EBUSY)
      row->busy++; /* its row says so only if it is the last word */
    const char *hdr = uvp_nats_msg_header(msg, UVP_NATS_WORKER_HEADER);
    const char *name = uvp_nats_msg_header(msg, UVP_NATS_ERROR_HEADER);
    row->error = in->status;
    row->status = 0;
    row->bytes = 0;
    row->attempts = row->attempts > 0 ? row->attempts : 1;
    row_set(row, &row->worker, hdr != NULL ? hdr : "?");
    row_set(row, &row->error_name, name);
    char *why =
        strndup(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
    row_set(row, &row->reason, why != NULL && *why != '\0' ? why : NULL);
    free(why);
    /* busy: not an outcome, uvp_retry sends it again (should_resend) */
    return in->status == UV_EBUSY ? uvp_ret_pass() : uvp_ret_value(NULL, NULL);
  }
  row->error = in->status;
  row_set(row, &row->reason, NULL);
  return uvp_ret_pass();
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

/* The milliseconds left of a URL's own time (what one request of it
 * waits, co->timeout_ms, from its first send); 0 once spent. */
static uint64_t url_left(const coord_t *co, const row_t *row) {
  uint64_t spent = (uv_hrtime() - row->start_ns) / 1000000;
  return spent < co->timeout_ms ? co->timeout_ms - spent : 0;
}

static int send_one(coord_t *co, row_t *row, uint64_t left,
                    uvp_promise_t **out) {
  run_t *r = co->r;
  send_t *s = malloc(sizeof(*s));
  const char *body = NULL;
  int rc = s != NULL ? 0 : UV_ENOMEM;
  if (rc == 0) {
    *s = (send_t){co, row, ++co->next_id};
    body = request_body(co, row, s->id);
    if (body == NULL && co->body.failed) {
      rc = UV_ENOMEM;
    } else if (body == NULL) {
      row_set(row, &row->reason, "the URL is not valid UTF-8");
      rc = UV_EINVAL;
    }
  }
  uvp_promise_t *p;
  /* sent again after EBUSY: within what is left of the URL's time */
  uvp_nats_request_opts_t ro = {.timeout_ms = row->busy > 0 ? url_left(co, row)
                                                            : co->timeout_ms};
  if (ro.timeout_ms == 0)
    rc = rc != 0 ? rc : UV_EBUSY;
  if (rc == 0 && left != 0)
    rc = uvp_deadline_set(r->ctx, left);
  if (rc == 0)
    rc = uvp_nats_request(co->nc, NATS_SUBJECT, body, strlen(body), &ro, &p);
  if (rc == 0) {
    rc = uvp_promise_on_full(p, UVP_ON_BOTH | UVP_ON_TAKE, on_reply, s, free,
                             out);
    s = rc == 0 ? NULL : s;
  }
  if (left != 0) /* as main.c's attempt: the handler holds the deadline */
    (void)uvp_deadline_shield(r->ctx, UVP_NO_DEADLINE);
  free(s);
  return rc;
}

static int send_attempt(void *arg, unsigned int n, uvp_promise_t **out) {
  row_t *row = arg;
  run_t *r = row->run;
  coord_t *co = r->nats;
  uv_update_time(r->loop);
  uint64_t left = 0;
  if (r->deadline_ms != 0) {
    uint64_t now = uv_now(r->loop);
    if (now >= r->deadline_at) {
      row->error = UV_ETIMEDOUT;
      row_set(row, &row->reason, "deadline (-d) passed before this resend");
      return UV_ETIMEDOUT;
    }
    left = r->deadline_at - now;
  }
  row->sends = n + 1;
  return send_one(co, row, left, out);
}

/* Sent again: a request that got no answer at all, --nats-retry times; one
 * a busy worker refused, within the URL's own time.  One a worker
 * answered, even with a failure, has its outcome. */
static int should_resend(void *arg, int code, unsigned int n) {
  row_t *row = arg;
  const coord_t *co = row->run->nats;
  if (deadline_passed(row->run))
    return 0;
  if (code == UV_EBUSY)
    return url_left(co, row) > RESEND_BASE_MS;
  return (code == UV_ETIMEDOUT || code == UVP_NATS_ENORESPONDERS ||
          code == UVP_NATS_EDISCONNECTED) &&
         n + 1 - row->busy < co->cli->retries + 1;
}

static int start_url(void *arg, size_t i, uvp_promise_t **out) {
  run_t *r = arg;
  row_t *row = &r->rows[i];
  uv_update_time(r->loop);
  row->start_ns = uv_hrtime();
  if (deadline_passed(r))
    return UV_ECANCELED; /* never sent */
  r->started++;
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
    fprintf(stderr, "uvp-fanout: %s: %s\n", co->cli->url,
            uvp_nats_strerror(in->status));
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

static void coord_end(run_t *r) {
  coord_t *co = r->nats;
  if (co->nc != NULL)
    uvp_nats_close(co->nc);
  uvp_promise_release(co->connect);
  json_decref(co->opts);
  free(co->opts_json);
  free(co->body.p);
  free(co);
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
  co->timeout_ms = fanout_request_timeout(r);
  co->opts = fanout_request_opts(r);
  co->opts_json = co->opts != NULL ? json_dumps(co->opts, JSON_COMPACT) : NULL;
  r->nats = co;
  r->nats_mode = 1;
  r->nats_before_report = before_report;
  r->nats_end = coord_end;
  uvp_nats_connect_opts_t o = {
      .url = cli->url,
      .options = fanout_nats_options("uvp-fanout", cli->ping_ms),
      .flags = UVP_NATS_FAIL_ON_DISCONNECT};
  int rc = co->opts_json != NULL ? 0 : UV_ENOMEM;
  if (rc == 0)
    rc = uvp_nats_connect(r->ctx, &o, &co->connect);
  else if (o.options != NULL)
    natsOptions_Destroy(o.options);
  if (rc == 0)
    rc = uvp_promise_on(co->connect, UVP_ON_BOTH, on_connected, co, out);
  if (rc != 0)
    coord_end(r);
  return rc;
}

/* Both sides reconnect for ever, 100 ms apart: a worker or coordinator
 * outlives a server's restart. */
natsOptions *fanout_nats_options(const char *name, uint64_t ping_ms) {
  natsOptions *no = NULL;
  if (natsOptions_Create(&no) != NATS_OK)
    return NULL;
  natsOptions_SetMaxReconnect(no, -1);
  natsOptions_SetReconnectWait(no, RECONNECT_WAIT_MS);
  natsOptions_SetName(no, name);
  if (ping_ms > 0) { /* --nats-ping */
    natsOptions_SetPingInterval(no, (int64_t)ping_ms);
    natsOptions_SetMaxPingsOut(no, 2);
  }
  return no;
}

void fanout_nats_shutdown(void) { nats_CloseAndWait(0); }
