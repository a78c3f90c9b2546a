/* uvp-nats JetStream: durable promises on a KV bucket (js.c says how it
 * fits; uvp-nats-js.h is the contract).
 *
 * A durable promise is one key of a bucket holding Resonate's record, as
 * JSON.  It changes only from PENDING to a completed state, by a
 * compare-and-set on the key's revision (the stream's leader compares
 * Nats-Expected-Last-Subject-Sequence and writes at once): a completion
 * reads the record, and writes the completed one at the revision it read;
 * if another write came between, it reads again, and finds it completed
 * (UVP_ESETTLED).  Reads are direct gets, which a replica may answer a
 * little behind the leader: a stale read costs one failed write and a
 * read more, never a wrong answer, since only the leader's write counts.
 * A pending record past its timeout is completed as REJECTED_TIMEDOUT by
 * whichever reader sees it first, the same way.
 *
 * An await (create or await) is a record of work in flight of its own
 * and a watch of the key (kv-watch.c's, with a callback): the watch hands it
 * the record as it is, then each write; a completed record settles the
 * promise.  A watch that catches up without the record may be behind
 * it (dw_read): a read decides.  While the record is pending, a timer
 * waits for its timeout (wall clock: the record says when in ms since
 * the epoch), then completes it as timed out, and the watch brings the
 * outcome, whoever won.  The await's memory goes with its timer's
 * close callback, once the ops it started (the create, a read, a
 * timeout's completion) are over. */
#include "js-internal.h"

static const char *const state_names[] = {"PENDING", "RESOLVED", "REJECTED",
                                          "REJECTED_CANCELED",
                                          "REJECTED_TIMEDOUT"};

const char *uvp_nats_dpromise_state_name(uvp_nats_dpromise_state_t s) {
  return (unsigned)s <= UVP_NATS_DPROMISE_REJECTED_TIMEDOUT ? state_names[s]
                                                            : "UNKNOWN";
}

/* ---- records ------------------------------------------------------------- */

/* The record's JSON: Resonate's, with data as a JSON string (json, a
 * string value: consumed), the code as the value's Uvp-Error, and param
 * (consumed; NULL: empty headers and data) as its creator made it. */
static char *record_text(const char *id, uvp_nats_dpromise_state_t state,
                         int code, json_t *data, uint64_t timeout,
                         uint64_t created, uint64_t completed, json_t *param) {
  json_t *headers = json_object();
  if (state == UVP_NATS_DPROMISE_REJECTED && headers != NULL)
    json_object_set_new(headers, UVP_NATS_ERROR_HEADER,
                        json_string(uvp_nats_err_name(code)));
  if (param == NULL)
    param = json_pack("{s:{}, s:s}", "headers", "data", "");
  json_t *j = json_pack(
      "{s:s, s:s, s:o, s:{s:o, s:o}, s:I, s:I, s:{}}", "id", id, "state",
      state_names[state], "param", param, "value", "headers", headers, "data",
      data != NULL ? data : json_string(""), "timeout", (json_int_t)timeout,
      "createdOn", (json_int_t)created, "tags");
  if (j != NULL && completed > 0)
    json_object_set_new(j, "completedOn", json_integer((json_int_t)completed));
  char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  return text;
}

/* js-internal.h says what it counts. */
bool uvp_nats__json_costly(const char *d, size_t n) {
  size_t values = 1;
  int depth = 0;
  for (const char *c = d, *end = d + n; c < end; c++) {
    if (*c == '"') { /* a string: its commas and brackets are text */
      for (c++; c < end && *c != '"'; c++)
        c += *c == '\\';
      continue;
    }
    if (*c == '[' || *c == '{') {
      if (++depth > JSON_MAX_DEPTH)
        return true;
    } else if (*c == ']' || *c == '}') {
      depth--;
    }
    values += *c == ',' || *c == '[' || *c == '{';
    if (values > UVP_NATS_JS_MAX_JSON_VALUES)
      return true;
  }
  return false;
}

/* A record read from entry e (the caller's to free), and its param
 * into *param if not NULL (a reference, NULL if it has none), or
 * UV_EPROTO. */
static int record_of(const uvp_nats_kv_entry_t *e, uvp_nats_dpromise_t **out,
                     json_t **param) {
  json_t *j = e->len <= UVP_NATS_JS_MAX_JSON && /* a planted giant, or */
                      !uvp_nats__json_costly(e->value, e->len) /* a slow */
                  ? json_loadb(e->value, e->len, 0, NULL)      /* shape: */
                  : NULL;                                      /* unparsed */
  const char *id = json_string_value(json_object_get(j, "id"));
  const char *st = json_string_value(json_object_get(j, "state"));
  json_t *value = json_object_get(j, "value");
  json_t *data = json_object_get(value, "data");
  const char *err = json_string_value(json_object_get(
      json_object_get(value, "headers"), UVP_NATS_ERROR_HEADER));
  int state = -1;
  for (int i = 0; st != NULL && i < 5; i++)
    if (strcmp(st, state_names[i]) == 0)
      state = i;
  if (id == NULL || state < 0) {
    json_decref(j);
    return UV_EPROTO;
  }
  size_t idl = strlen(id), len = json_string_length(data);
  uvp_nats_dpromise_t *r = calloc(1, sizeof(*r) + idl + len + 2);
  if (r == NULL) {
    json_decref(j);
    return UV_ENOMEM;
  }
  char *at = (char *)(r + 1);
  memcpy(at, id, idl + 1);
  r->id = at;
  at += idl + 1;
  if (len > 0)
    memcpy(at, json_string_value(data), len);
  at[len] = '\0';
  r->data = at;
  r->len = len;
  r->state = (uvp_nats_dpromise_state_t)state;
  r->code = state == UVP_NATS_DPROMISE_REJECTED_CANCELED   ? UV_ECANCELED
            : state == UVP_NATS_DPROMISE_REJECTED_TIMEDOUT ? UV_ETIMEDOUT
            : state != UVP_NATS_DPROMISE_REJECTED          ? 0
            : err != NULL ? uvp_nats__code_of_name(err)
                          : UV_EIO; /* another client's: no code */
  r->timeout = (uint64_t)json_integer_value(json_object_get(j, "timeout"));
  r->created_on = (uint64_t)json_integer_value(json_object_get(j, "createdOn"));
  r->completed_on =
      (uint64_t)json_integer_value(json_object_get(j, "completedOn"));
  r->revision = e->revision;
  if (param != NULL) {
    json_t *pm = json_object_get(j, "param");
    *param = json_is_object(pm) ? json_incref(pm) : NULL;
  }
  json_decref(j);
  *out = r;
  return 0;
}

/* How an await settles for a completed record: 0 (fulfil) or the code. */
static int outcome_of(const uvp_nats_dpromise_t *r) {
  return r->state == UVP_NATS_DPROMISE_RESOLVED ? 0 : r->code;
}

/* ---- completing: read, then compare-and-set ------------------------------ */

enum { K_GET, K_RESOLVE, K_REJECT, K_CANCEL, K_TIMEOUT };
enum { S_READ, S_TIMING_OUT, S_COMPLETING };

typedef struct dop_s {
  char bucket[65];
  char id[201];
  int kind;
  int code;
  json_t *data;               /* resolve's and reject's, a JSON string */
  uvp_nats_dpromise_t *seen;  /* the record read last */
  json_t *param;              /* ... its param, kept by its completion */
  uvp_nats_dpromise_t *wrote; /* the record the write in flight stores */
  char *text;                 /* its JSON */
  int tries;
  struct dwait_s *dw; /* a timeout's: the await that started it */
} dop_t;

static void dw_release(struct dwait_s *dw);

static void dop_free(void *arg) {
  dop_t *d = arg;
  if (d->dw != NULL)
    dw_release(d->dw);
  json_decref(d->data);
  json_decref(d->param);
  free(d->seen);
  free(d->wrote);
  free(d->text);
  free(d);
}

/* The record completed from d->seen: state, code, data (a JSON string,
 * shared); as text (d->text) and as a value (d->wrote). */
static int completed(dop_t *d, uvp_nats_dpromise_state_t state, int code,
                     json_t *data) {
  const uvp_nats_dpromise_t *r = d->seen;
  uint64_t now = uvp_nats__js_unix_ms();
  free(d->text);
  free(d->wrote);
  d->wrote = NULL;
  d->text = record_text(r->id, state, code, json_incref(data), r->timeout,
                        r->created_on, now, json_incref(d->param));
  const char *s = data != NULL ? json_string_value(data) : "";
  size_t len = data != NULL ? json_string_length(data) : 0;
  size_t idl = strlen(r->id);
  d->wrote =
      d->text != NULL ? calloc(1, sizeof(*d->wrote) + idl + len + 2) : NULL;
  if (d->wrote == NULL)
    return UV_ENOMEM;
  char *at = (char *)(d->wrote + 1);
  memcpy(at, r->id, idl + 1);
  d->wrote->id = at;
  at += idl + 1;
  memcpy(at, s, len);
  at[len] = '\0';
  d->wrote->data = at;
  d->wrote->len = len;
  d->wrote->state = state;
  d->wrote->code = state == UVP_NATS_DPROMISE_REJECTED_CANCELED   ? UV_ECANCELED
                   : state == UVP_NATS_DPROMISE_REJECTED_TIMEDOUT ? UV_ETIMEDOUT
                                                                  : code;
  d->wrote->timeout = r->timeout;
  d->wrote->created_on = r->created_on;
  d->wrote->completed_on = now;
  return 0;
}

static void write_wrote(js_op_t *op, dop_t *d) {
  uvp_nats__kv_send_write(op, d->bucket, d->id, d->text, strlen(d->text),
                          d->seen->revision, false);
}

/* Hand over what the op found: `r` as its value (rc 0) or payload. */
static void dop_end(js_op_t *op, int rc, uvp_nats_dpromise_t **r) {
  uvp_nats_dpromise_t *v = *r;
  *r = NULL;
  if (rc == 0)
    uvp_nats__js_op_end(op, 0, v, free, NULL);
  else
    uvp_nats__js_op_end(op, rc, NULL, NULL, v);
}

static void dop_read_again(js_op_t *op, dop_t *d) {
  if (++d->tries >= 10) {
    uvp_nats__js_op_end(op, UV_EAGAIN, NULL, NULL, NULL);
    return;
  }
  op->state = S_READ;
  uvp_nats__kv_send_get(op, d->bucket, d->id);
}

static void dop_read(js_op_t *op, dop_t *d, int rc, natsMsg *m) {
  uvp_nats_kv_entry_t *e = NULL;
  uvp_nats_js_error_t *err = NULL;
  if (rc == 0)
    rc = uvp_nats__kv_entry_of(m, d->bucket, &e, &err);
  if (rc == 0 && e->op != UVP_NATS_KV_PUT)
    rc = UV_ENOENT;
  free(d->seen);
  d->seen = NULL;
  json_decref(d->param);
  d->param = NULL;
  if (rc == 0)
    rc = record_of(e, &d->seen, &d->param);
  free(e);
  free(err); /* a rejection's payload is a record, or nothing */
  if (rc != 0) {
    uvp_nats__js_op_end(op, rc, NULL, NULL, NULL);
    return;
  }
  const uvp_nats_dpromise_t *r = d->seen;
  if (r->state != UVP_NATS_DPROMISE_PENDING) {
    dop_end(op, d->kind == K_GET ? 0 : UVP_ESETTLED, &d->seen);
    return;
  }
  if (uvp_nats__js_unix_ms() >= r->timeout) { /* the first to see it */
    rc = completed(d, UVP_NATS_DPROMISE_REJECTED_TIMEDOUT, 0, NULL);
    op->state = S_TIMING_OUT;
  } else if (d->kind == K_GET || d->kind == K_TIMEOUT) {
    dop_end(op, 0, &d->seen);
    return;
  } else {
    rc = completed(d,
                   d->kind == K_RESOLVE  ? UVP_NATS_DPROMISE_RESOLVED
                   : d->kind == K_REJECT ? UVP_NATS_DPROMISE_REJECTED
                                         : UVP_NATS_DPROMISE_REJECTED_CANCELED,
                   d->code, d->data);
    op->state = S_COMPLETING;
  }
  if (rc != 0) {
    uvp_nats__js_op_end(op, rc, NULL, NULL, NULL);
    return;
  }
  write_wrote(op, d);
}

static void dop_step(js_op_t *op, int rc, natsMsg *m) {
  dop_t *d = op->data;
  if (op->state == S_READ) {
    dop_read(op, d, rc, m);
    return;
  }
  uvp_nats_js_ack_t *ack = NULL;
  uvp_nats_js_error_t *err = NULL;
  if (rc == 0)
    rc = uvp_nats__js_puback(m, &ack, &err);
  free(err);
  if (rc == UVP_NATS_EREVISION) { /* another write came first */
    dop_read_again(op, d);
    return;
  }
  if (rc != 0) {
    uvp_nats__js_op_end(op, rc, NULL, NULL, NULL);
    return;
  }
  d->wrote->revision = ack->seq;
  free(ack);
  /* timed out by this call: a read sees it so, a completion lost */
  bool won =
      op->state == S_COMPLETING || d->kind == K_GET || d->kind == K_TIMEOUT;
  dop_end(op, won ? 0 : UVP_ESETTLED, &d->wrote);
}

static int dop_new(uvp_nats_js_t *js, const char *bucket, const char *id,
                   int kind, const char *verb, const char *file, int line,
                   js_op_t **out) {
  if (js == NULL || !uvp_nats__js_name_ok(bucket) ||
      !uvp_nats__kv_key_ok(id, false))
    return UV_EINVAL;
  dop_t *d = calloc(1, sizeof(*d));
  if (d == NULL)
    return UV_ENOMEM;
  snprintf(d->bucket, sizeof(d->bucket), "%s", bucket);
  snprintf(d->id, sizeof(d->id), "%s", id);
  d->kind = kind;
  js_op_t *op;
  int rc = uvp_nats__js_op_new(js, dop_step, file, line, &op,
                               "dpromise %s %s/%s", verb, bucket, id);
  if (rc != 0) {
    free(d);
    return rc;
  }
  op->data = d;
  op->data_free = dop_free;
  *out = op;
  return 0;
}

static int dop_start(js_op_t *op, uvp_promise_t **out) {
  dop_t *d = op->data;
  char subj[300];
  snprintf(subj, sizeof(subj), "$KV.%s.%s", d->bucket, d->id);
  json_t *body = json_pack("{s:s}", "last_by_subj", subj);
  if (body == NULL) {
    uvp_nats__js_op_drop(op);
    return UV_ENOMEM;
  }
  return uvp_nats__js_op_api(op, true, out, body, "DIRECT.GET.KV_%s",
                             d->bucket);
}

static int complete(uvp_nats_js_t *js, const char *bucket, const char *id,
                    int kind, int code, const void *data, size_t len,
                    uvp_promise_t **out, const char *file, int line) {
  static const char *const verbs[] = {"get", "resolve", "reject", "cancel",
                                      "timeout"};
  if (out == NULL || (data == NULL && len > 0) ||
      (kind == K_REJECT && code >= 0))
    return UV_EINVAL;
  json_t *j = NULL;
  if (kind == K_RESOLVE || kind == K_REJECT) {
    j = json_stringn(data != NULL ? data : "", len);
    if (j == NULL) /* not UTF-8 */
      return UV_EINVAL;
  }
  js_op_t *op;
  int rc = dop_new(js, bucket, id, kind, verbs[kind], file, line, &op);
  if (rc != 0) {
    json_decref(j);
    return rc;
  }
  dop_t *d = op->data;
  d->code = code;
  d->data = j;
  return dop_start(op, out);
}

int uvp_nats_dpromise_resolve_at(uvp_nats_js_t *js, const char *bucket,
                                 const char *id, const void *data, size_t len,
                                 uvp_promise_t **out, const char *file,
                                 int line) {
  return complete(js, bucket, id, K_RESOLVE, 0, data, len, out, file, line);
}

int uvp_nats_dpromise_reject_at(uvp_nats_js_t *js, const char *bucket,
                                const char *id, int code, const void *data,
                                size_t len, uvp_promise_t **out,
                                const char *file, int line) {
  return complete(js, bucket, id, K_REJECT, code, data, len, out, file, line);
}

int uvp_nats_dpromise_cancel_at(uvp_nats_js_t *js, const char *bucket,
                                const char *id, uvp_promise_t **out,
                                const char *file, int line) {
  return complete(js, bucket, id, K_CANCEL, 0, NULL, 0, out, file, line);
}

int uvp_nats_dpromise_get_at(uvp_nats_js_t *js, const char *bucket,
                             const char *id, uvp_promise_t **out,
                             const char *file, int line) {
  return complete(js, bucket, id, K_GET, 0, NULL, 0, out, file, line);
}

/* ---- awaiting ------------------------------------------------------------ */

typedef struct dwait_s {
  uvp_nats_js_t *js;
  uvp_promise_t *p; /* ours; NULL once settled or cut */
  uvp_inflight_t fl;
  char bucket[65];
  char id[201];
  char *create; /* the record to create, or NULL (await) */
  js_op_t *op;  /* the create or a timeout's completion in flight */
  uvp_nats_kv_watch_t *w;
  uv_timer_t timer;
  uint64_t timeout; /* the record's, ms since the epoch; 0: unknown */
  bool seen;        /* the watch (or a read) handed a record */
  bool waiting;     /* counted in the connection's waits */
  size_t refs;      /* the await's, and the op's in flight */
} dwait_t;

static void dw_timer_closed(uv_handle_t *h) {
  dwait_t *dw = h->data;
  uvp_nats__js_release(dw->js);
  free(dw->create);
  free(dw);
}

static void dw_release(dwait_t *dw) {
  if (--dw->refs == 0)
    uv_close((uv_handle_t *)&dw->timer, dw_timer_closed);
}

/* While the await waits, uv_run() goes on for it (as for a next); once
 * the connection is gone there is nothing to keep. */
static void dw_unwait(dwait_t *dw) {
  if (dw->waiting && dw->js->b != NULL)
    uvp_nats__waiting_add(dw->js->b, -1);
  dw->waiting = false;
}

/* Stop what runs for the await: its watch, its op, its timer. */
static void dw_stop(dwait_t *dw) {
  if (dw->w != NULL) {
    (void)uvp_nats_kv_watch_close(dw->w);
    dw->w = NULL;
  }
  if (dw->op != NULL) {
    uvp_nats__js_op_cancel(dw->op);
    dw->op = NULL;
  }
  uv_timer_stop(&dw->timer);
}

/* The await settles: rc 0 with r, else rc with r (or NULL) as payload. */
static void dw_end(dwait_t *dw, int rc, uvp_nats_dpromise_t *r) {
  uvp_promise_t *p = dw->p;
  if (p == NULL) {
    free(r);
    return;
  }
  dw->p = NULL;
  dw_stop(dw);
  dw_unwait(dw);
  if (rc == 0)
    uvp_promise_resolve(p, r, free);
  else
    uvp_promise_reject(p, rc, r, r != NULL ? free : NULL);
  uvp_inflight_end(&dw->fl);
  uvp_promise_release(p);
  dw_release(dw);
}

static void on_dw_cancel(uvp_inflight_t *fl, int code) {
  dwait_t *dw = fl->data;
  uvp_promise_t *p = dw->p;
  (void)code;
  dw->p = NULL;
  dw_stop(dw);
  dw_unwait(dw);
  uvp_inflight_end(&dw->fl);
  uvp_promise_release(p);
  dw_release(dw);
}

static int dw_describe(uvp_inflight_t *fl, char *buf, size_t cap) {
  const dwait_t *dw = fl->data;
  return snprintf(buf, cap, "dpromise %s/%s", dw->bucket, dw->id);
}

static const uvp_inflight_class_t dw_class = {"JetStream", on_dw_cancel,
                                              dw_describe, UVP_INFLIGHT_IDLE};

static void dw_op_start(dwait_t *dw, int kind);

/* Due: the record's timeout, or a read again (the record not seen). */
static void on_dw_timer(uv_timer_t *t) {
  dwait_t *dw = t->data;
  dw_op_start(dw, dw->seen ? K_TIMEOUT : K_GET);
}

static void dw_arm_at(dwait_t *dw, uint64_t unix_ms) {
  uint64_t now = uvp_nats__js_unix_ms();
  uv_timer_start(&dw->timer, on_dw_timer, unix_ms > now ? unix_ms - now : 1, 0);
}

/* A record of the key, the watch's or a read's: a completed one settles
 * the await, a pending one arms the timer for its timeout. */
static void dw_record(dwait_t *dw, uvp_nats_dpromise_t *r) {
  dw->seen = true;
  if (r->state != UVP_NATS_DPROMISE_PENDING) {
    dw_end(dw, outcome_of(r), r);
    return;
  }
  dw->timeout = r->timeout;
  free(r);
  if (dw->op == NULL)
    dw_arm_at(dw, dw->timeout);
}

/* The watch hands the record as it is, then each write. */
static void dw_see(void *owner, uvp_nats_kv_entry_t *e, int rc) {
  dwait_t *dw = owner;
  if (dw->p == NULL) {
    free(e);
    return;
  }
  if (rc != 0) { /* the watch failed for good */
    dw_end(dw, rc, NULL);
    return;
  }
  if (e == NULL) { /* caught up: with no record, maybe there is none */
    if (!dw->seen)
      dw_op_start(dw, K_GET);
    return;
  }
  uvp_nats_dpromise_t *r = NULL;
  rc = e->op == UVP_NATS_KV_PUT ? record_of(e, &r, NULL) : UV_ENOENT;
  free(e);
  if (rc != 0) {
    dw_end(dw, rc, NULL);
    return;
  }
  dw_record(dw, r);
}

static void dw_op_free(void *arg) { dw_release(arg); }

/* A timeout's completion is over: the watch brings the outcome, whoever
 * won.  Still pending (this clock ran ahead of the record's): wait
 * again; failed: try again in a second. */
static void timed_out(js_op_t *op, int rc, void *value, uvp_free_cb vfree) {
  dwait_t *dw = ((dop_t *)op->data)->dw;
  const uvp_nats_dpromise_t *r = value;
  bool pending = rc == 0 && r != NULL && r->state == UVP_NATS_DPROMISE_PENDING;
  if (vfree != NULL)
    vfree(value);
  dw->op = NULL;
  if (dw->p == NULL)
    return;
  if (pending)
    dw_arm_at(dw, dw->timeout);
  else if (rc != 0 && rc != UVP_ESETTLED)
    dw_arm_at(dw, uvp_nats__js_unix_ms() + 1000);
}

/* A read of the record, for a watch that caught up without it: its
 * consumer, made on a replica behind the stream's leader (one made
 * during a leader change), may not have it yet.  Found, it counts as the
 * watch's; none, an await's rejects (UV_ENOENT), a create's waits for
 * the watch (the record is there: this call wrote it, or found it);
 * failed, read again in a second. */
static void dw_read(js_op_t *op, int rc, void *value, uvp_free_cb vfree) {
  dwait_t *dw = ((dop_t *)op->data)->dw;
  dw->op = NULL;
  if (dw->p == NULL || dw->seen) { /* the watch brought it meanwhile */
    if (vfree != NULL)
      vfree(value);
    if (dw->p != NULL)
      dw_arm_at(dw, dw->timeout);
    return;
  }
  if (rc == 0)
    dw_record(dw, value);
  else if (rc == UV_ENOENT && dw->create == NULL)
    dw_end(dw, UV_ENOENT, NULL);
  else if (rc != UV_ENOENT)
    dw_arm_at(dw, uvp_nats__js_unix_ms() + 1000);
}

/* A read (K_GET) of the record, or, past its timeout (K_TIMEOUT), its
 * completion as timed out (unless another did). */
static void dw_op_start(dwait_t *dw, int kind) {
  if (dw->p == NULL || dw->op != NULL)
    return;
  js_op_t *op;
  if (dop_new(dw->js, dw->bucket, dw->id, kind,
              kind == K_GET ? "read" : "timeout", __FILE__, __LINE__,
              &op) != 0) {
    dw_arm_at(dw, uvp_nats__js_unix_ms() + 1000);
    return;
  }
  ((dop_t *)op->data)->dw = dw;
  dw->refs++;
  op->done = kind == K_GET ? dw_read : timed_out;
  dw->op = op;
  if (dop_start(op, NULL) != 0) { /* the op is gone, its data_free ran */
    dw->op = NULL;
    dw_arm_at(dw, uvp_nats__js_unix_ms() + 1000);
  }
}

static void dw_start_watch(dwait_t *dw) {
  int rc = uvp_nats__kv_watch_start(dw->js, dw->bucket, dw->id, 0,
                                    dw->js->heartbeat_ms, dw_see, dw, &dw->w);
  if (rc != 0) {
    dw_end(dw, rc, NULL);
    return;
  }
  uvp_nats__kv_watch_go(dw->w);
}

static void dw_created(js_op_t *op, int rc, void *value, uvp_free_cb vfree) {
  dwait_t *dw = op->data;
  if (vfree != NULL)
    vfree(value);
  dw->op = NULL;
  if (dw->p == NULL)
    return;
  if (rc != 0 && rc != UVP_NATS_EREVISION) { /* EREVISION: it exists */
    dw_end(dw, rc, NULL);
    return;
  }
  dw_start_watch(dw);
}

static void create_step(js_op_t *op, int rc, natsMsg *m) {
  uvp_nats_js_ack_t *v = NULL;
  uvp_nats_js_error_t *err = NULL;
  if (rc == 0)
    rc = uvp_nats__js_puback(m, &v, &err);
  uvp_nats__js_op_end(op, rc, v, free, err);
}

/* A record's param made under a trace context: its traceparent and
 * tracestate in the headers, where Resonate keeps a promise's (whoever
 * completes or reads it may continue the trace); NULL without one. */
static json_t *trace_param(uvp_ctx_t *ctx) {
  uvp_tracectx_t tc;
  const char *state = NULL;
  char tp[UVP_TRACEPARENT_LEN + 1];
  if (uvp_tracectx_get(ctx, &tc, &state) != 0 ||
      uvp_tracectx_format(&tc, tp) != 0)
    return NULL;
  json_t *h = json_pack("{s:s}", UVP_NATS_TRACEPARENT_HEADER, tp);
  if (h != NULL && state != NULL && *state != '\0')
    json_object_set_new(h, UVP_NATS_TRACESTATE_HEADER, json_string(state));
  return h != NULL ? json_pack("{s:o, s:s}", "headers", h, "data", "") : NULL;
}

static int await_start(uvp_nats_js_t *js, const char *bucket, const char *id,
                       uint64_t timeout_ms, bool create, uvp_promise_t **out,
                       const char *file, int line) {
  if (js == NULL || out == NULL || !uvp_nats__js_name_ok(bucket) ||
      !uvp_nats__kv_key_ok(id, false) ||
      (create && (timeout_ms == 0 || timeout_ms > 253402300800000ull)))
    return UV_EINVAL;
  int rc = uvp_nats__js_usable(js);
  if (rc != 0)
    return rc;
  dwait_t *dw = calloc(1, sizeof(*dw));
  if (dw == NULL)
    return UV_ENOMEM;
  snprintf(dw->bucket, sizeof(dw->bucket), "%s", bucket);
  snprintf(dw->id, sizeof(dw->id), "%s", id);
  dw->js = js;
  dw->fl.data = dw;
  if (create) {
    uint64_t now = uvp_nats__js_unix_ms();
    dw->create = record_text(id, UVP_NATS_DPROMISE_PENDING, 0, NULL,
                             now + timeout_ms, now, 0, trace_param(js->ctx));
    if (dw->create == NULL) {
      free(dw);
      return UV_ENOMEM;
    }
  }
  rc = uvp_promise_new_at(js->ctx, &dw->p, file, line);
  if (rc == 0 &&
      (rc = uvp_inflight_start(js->ctx, &dw->fl, dw->p, &dw_class)) != 0)
    uvp_promise_release(dw->p);
  if (rc != 0) {
    free(dw->create);
    free(dw);
    return rc;
  }
  uvp_nats__js_retain(js);
  uv_timer_init(js->b->loop, &dw->timer);
  dw->timer.data = dw;
  uv_unref((uv_handle_t *)&dw->timer);
  dw->refs = 1;
  dw->waiting = true;
  uvp_nats__waiting_add(js->b, 1);
  *out = uvp_promise_retain(dw->p);
  if (!create) {
    dw_start_watch(dw);
    return 0;
  }
  js_op_t *op;
  rc = uvp_nats__js_op_new(js, create_step, file, line, &op,
                           "dpromise create %s/%s", bucket, id);
  if (rc == 0) {
    op->done = dw_created;
    op->data = dw;
    op->data_free = dw_op_free;
    dw->refs++;
    dw->op = op;
    char subj[300];
    snprintf(subj, sizeof(subj), "$KV.%s.%s", bucket, id);
    /* create-if-absent: no message on the key yet */
    const char *h[] = {"Nats-Expected-Last-Subject-Sequence: 0", NULL};
    rc = uvp_nats__js_op_start(op, subj, dw->create, strlen(dw->create), h,
                               NULL);
    if (rc != 0)
      dw->op = NULL; /* its data_free ran */
  }
  if (rc != 0)
    dw_end(dw, rc, NULL);
  return 0;
}

int uvp_nats_dpromise_create_at(uvp_nats_js_t *js, const char *bucket,
                                const char *id, uint64_t timeout_ms,
                                uvp_promise_t **out, const char *file,
                                int line) {
  return await_start(js, bucket, id, timeout_ms, true, out, file, line);
}

int uvp_nats_dpromise_await_at(uvp_nats_js_t *js, const char *bucket,
                               const char *id, uvp_promise_t **out,
                               const char *file, int line) {
  return await_start(js, bucket, id, 0, false, out, file, line);
}
