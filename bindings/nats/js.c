/* uvp-nats JetStream: the context, its API calls, streams, consumers and
 * publishes with acknowledgement (uvp-nats-js.h is the contract).
 *
 * How.  Every JetStream call is a NATS request: an API request on
 * "$JS.API.<what>" with a JSON body, or a publish to a stream's subject
 * whose reply is the stream's acknowledgement.  The binding sends them
 * with uvp_nats_request_at (its requests' inbox, timer and records of
 * work in flight; UVP_NATS_REQUEST_NO_TIMEOUT_HEADER, so that a stored
 * message carries no Uvp-Timeout-Ms) and reads the JSON with jansson on
 * the loop thread.  Not nats.c's own JetStream calls: they block their
 * thread until the server answers (js_AddStream, kvStore_Create...), or
 * for a whole long poll (natsSubscription_Fetch, kvWatcher_Next); on
 * libuv's pool of four threads a few pulls would starve every other
 * pool job, and a cut (a deadline, a cancel) could not stop them.  Here
 * every wait is a request, a subscription of the binding's or a timer,
 * on the loop: cut at once, and named in the task dump.
 *
 * An op (js-internal.h) is one promise of the program's, a record of
 * work in flight of kind "JetStream", and the requests it sends one after
 * another (a key's create that finds a deletion marker, a durable
 * promise's compare-and-set that lost and reads again): each reply goes
 * to the op's step, which sends the next or settles the promise.  The
 * request's own promise has a handler (op_reply) with the op as its
 * argument and a destroy notifier (op_unhold) that runs whether or not
 * the handler does (uvp_ctx_close drops handlers): the op goes with the
 * last of them.  A cut of the op's promise cancels the request in flight.
 *
 * The context is the program's until uvp_nats_js_free; everything made
 * from it (an op, a pull, a watch, a handed-out message) holds a
 * reference, and its memory goes with the last.  The connection tells it
 * that it closes through the floor's hook (UVP_NATS__JS's fail): its
 * objects (pulls, watches, services) end what waits, and with `all` (the
 * connection's memory goes) the context forgets it (js->b = NULL). */
#include <errno.h>
#include <stdarg.h>
#include <time.h>

#include "js-internal.h"

/* ---- the context --------------------------------------------------------- */

void uvp_nats__js_retain(uvp_nats_js_t *js) { js->refs++; }

void uvp_nats__js_release(uvp_nats_js_t *js) {
  if (--js->refs > 0)
    return;
  if (js->b != NULL) {
    if (js->prev != NULL)
      js->prev->next = js->next;
    else
      js->b->js = js->next;
    if (js->next != NULL)
      js->next->prev = js->prev;
  }
  free(js);
}

int uvp_nats__js_usable(const uvp_nats_js_t *js) {
  if (js->b == NULL || (js->b->state != S_OPEN && js->b->state != S_CONNECTING))
    return UVP_ECLOSED;
  return 0;
}

void uvp_nats__js_obj_link(uvp_nats_js_t *js, js_obj_t *o) {
  o->prev = NULL;
  o->next = js->objs;
  if (js->objs != NULL)
    js->objs->prev = o;
  js->objs = o;
  o->linked = true;
}

void uvp_nats__js_obj_unlink(uvp_nats_js_t *js, js_obj_t *o) {
  if (!o->linked)
    return;
  if (o->prev != NULL)
    o->prev->next = o->next;
  else
    js->objs = o->next;
  if (o->next != NULL)
    o->next->prev = o->prev;
  o->prev = o->next = NULL;
  o->linked = false;
}

/* The connection closes (all: its memory goes; else nats.c gave up on
 * the server): every object ends what waits.  An object may unlink
 * itself meanwhile, and the context may go with it: it is held. */
static void js_fail(uvp_nats_t *b, int rc, bool all) {
  for (uvp_nats_js_t *js = b->js, *next; js != NULL; js = next) {
    uvp_nats__js_retain(js);
    for (js_obj_t *o = js->objs, *onext; o != NULL; o = onext) {
      onext = o->next;
      o->fail(o, rc, all);
    }
    next = js->next;
    if (all) {
      js->b = NULL;
      js->prev = js->next = NULL;
    }
    uvp_nats__js_release(js);
  }
  if (all)
    b->js = NULL;
}

static const uvp_nats__layer_t js_layer = {.fail = js_fail};

int uvp_nats_js_new(uvp_nats_t *nc, const uvp_nats_js_opts_t *opts,
                    uvp_nats_js_t **out) {
  if (nc == NULL || out == NULL)
    return UV_EINVAL;
  const char *domain = opts != NULL ? opts->domain : NULL;
  if (opts != NULL && (opts->timeout_ms > UVP_NATS_TIMEOUT_MAX ||
                       opts->heartbeat_ms > UVP_NATS_TIMEOUT_MAX))
    return UV_EINVAL;
  if (domain != NULL && (!uvp_nats__subject_ok(domain, false) ||
                         strchr(domain, '.') != NULL || strlen(domain) > 64))
    return UV_EINVAL;
  if (nc->state != S_OPEN && nc->state != S_CONNECTING)
    return UVP_ECLOSED;
  uvp_nats_js_t *js = calloc(1, sizeof(*js));
  if (js == NULL)
    return UV_ENOMEM;
  uvp_nats__layer_set(nc, UVP_NATS__JS, &js_layer);
  js->b = nc;
  js->ctx = nc->ctx;
  js->refs = 1;
  js->timeout_ms =
      opts != NULL && opts->timeout_ms > 0 ? opts->timeout_ms : 5000;
  js->heartbeat_ms =
      opts != NULL && opts->heartbeat_ms > 0 ? opts->heartbeat_ms : 5000;
  js->max_reply = opts != NULL ? opts->max_reply : 0;
  if (domain != NULL)
    snprintf(js->prefix, sizeof(js->prefix), "$JS.%s.API", domain);
  else
    snprintf(js->prefix, sizeof(js->prefix), "$JS.API");
  js->next = nc->js;
  if (nc->js != NULL)
    nc->js->prev = js;
  nc->js = js;
  *out = js;
  return 0;
}

int uvp_nats_js_free(uvp_nats_js_t *js) {
  if (js == NULL || js->freed)
    return UV_EINVAL;
  js->freed = true;
  uvp_nats__js_release(js);
  return 0;
}

/* ---- a subscription let go later ---------------------------------------- */

/* A subscription must not be freed inside its own delivery (subs.c's
 * sub_poll reads it after its taker returns): one to let go from there
 * gets a taker that drops what still comes, and its unsubscribe runs from
 * a handler of a settled promise, in the scheduler's turn (or at
 * uvp_ctx_close, as the handler's destroy notifier).  The cell learns if
 * the connection's close freed the subscription first. */
typedef struct drop_s {
  uvp_nats_sub_t *s; /* NULL once freed by the connection's close */
} drop_t;

static void drop_take(void *owner, natsMsg *m) {
  (void)owner;
  uvp_nats__msg_free(m);
}

static void drop_drained(void *owner) { (void)owner; }

static void drop_gone(void *owner, int rc) {
  drop_t *d = owner;
  (void)rc;
  d->s = NULL;
}

static drop_t orphan; /* what an undeferred drop's gone clears */

static const uvp_nats__taker_t drop_taker = {drop_take, drop_drained,
                                             drop_gone};

static void drop_now(void *arg) {
  drop_t *d = arg;
  if (d->s != NULL) {
    uvp_nats_sub_t *s = d->s;
    d->s = NULL;
    uvp_nats_unsubscribe(s);
  }
  free(d);
}

static uvp_ret_t drop_noop(void *arg, const uvp_outcome_t *in) {
  (void)arg;
  (void)in;
  return uvp_ret_value(NULL, NULL);
}

void uvp_nats__js_sub_drop(uvp_nats_sub_t *s) {
  drop_t *d = malloc(sizeof(*d));
  uvp_promise_t *p = NULL;
  int rc =
      d == NULL ? UV_ENOMEM : uvp_promise_resolved(s->b->ctx, NULL, NULL, &p);
  if (rc != 0) {
    free(d);
  } else { /* refused, the registration has run drop_now: d is gone */
    d->s = NULL;
    rc = uvp_promise_on_full(p, UVP_ON_BOTH, drop_noop, d, drop_now, NULL);
  }
  if (rc != 0) {
    /* cannot defer: s stays, dropping what comes, until the connection
     * closes */
    s->taker = &drop_taker;
    s->owner = &orphan;
    if (p != NULL)
      uvp_promise_release(p);
    return;
  }
  d->s = s;
  s->taker = &drop_taker;
  s->owner = d;
  uvp_promise_release(p);
}

/* ---- ops ----------------------------------------------------------------- */

static void op_cancel(uvp_inflight_t *w, int code) {
  js_op_t *op = w->data;
  (void)code;
  op->cut = true;
  if (op->r != NULL) /* its handler then runs, or is dropped: op_unhold */
    uvp_promise_cancel(op->r);
}

static int op_describe(uvp_inflight_t *w, char *buf, size_t cap) {
  const js_op_t *op = w->data;
  return snprintf(buf, cap, "%s", op->what);
}

static const uvp_inflight_class_t op_class = {"JetStream", op_cancel,
                                              op_describe, 0};

void uvp_nats__js_op_drop(js_op_t *op) {
  uvp_inflight_end(&op->w);
  if (op->p != NULL)
    uvp_promise_release(op->p);
  if (op->data_free != NULL)
    op->data_free(op->data);
  uvp_nats__js_release(op->js);
  free(op);
}

int uvp_nats__js_op_new(uvp_nats_js_t *js, js_step_fn step, const char *file,
                        int line, js_op_t **out, const char *fmt, ...) {
  int rc = uvp_nats__js_usable(js);
  if (rc != 0)
    return rc;
  js_op_t *op = calloc(1, sizeof(*op));
  if (op == NULL)
    return UV_ENOMEM;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(op->what, sizeof(op->what), fmt, ap);
  va_end(ap);
  op->js = js;
  op->step = step;
  op->file = file;
  op->line = line;
  op->w.data = op;
  uvp_nats__js_retain(js);
  *out = op;
  return 0;
}

/* The destroy notifier of a request's handler: the op goes with the
 * last.  A promise still pending here was cut (or torn down). */
static void op_unhold(void *arg) {
  js_op_t *op = arg;
  if (--op->holds > 0)
    return;
  uvp_nats__js_op_drop(op);
}

size_t uvp_nats__js_cap(const uvp_nats_js_t *js) {
  if (js->max_reply > 0)
    return js->max_reply;
  natsConnection *nc = js->b != NULL ? uvp_nats_connection(js->b) : NULL;
  int64_t max = nc != NULL ? natsConnection_GetMaxPayload(nc) : 0;
  return max > 0 ? (size_t)max : 0;
}

/* A reply over the cap goes to the step as UV_EMSGSIZE, unread: a server
 * (or a responder planted on $JS.API.>) says what it likes, and a step
 * copies a value, or parses it (issue 71). */
static int reply_rc(const js_op_t *op, const uvp_outcome_t *in) {
  if (in->status != 0)
    return in->status;
  size_t cap = uvp_nats__js_cap(op->js);
  int len = natsMsg_GetDataLength(in->value);
  return cap > 0 && len > 0 && (size_t)len > cap ? UV_EMSGSIZE : 0;
}

static uvp_ret_t op_reply(void *arg, const uvp_outcome_t *in) {
  js_op_t *op = arg;
  uvp_promise_t *r = op->r;
  op->r = NULL;
  if (!op->cut) {
    int rc = reply_rc(op, in);
    op->step(op, rc, rc == 0 ? in->value : NULL);
  }
  uvp_promise_release(r); /* the reaction holds it until we return */
  return uvp_ret_value(NULL, NULL);
}

static int op_request(js_op_t *op, const char *subject, const void *data,
                      size_t len, const char *const *headers) {
  int rc = uvp_nats__js_usable(op->js);
  if (rc != 0)
    return rc;
  /* no Uvp-Timeout-Ms, and no cancel: JetStream is no uvp service; a
   * trace context only on a publish (the stream keeps it for whoever
   * consumes the message), not on the API's calls */
  uvp_nats_request_opts_t ro = {
      .timeout_ms = op->js->timeout_ms,
      .headers = headers,
      .flags = UVP_NATS_REQUEST_NO_TIMEOUT_HEADER | UVP_NATS_REQUEST_NO_CANCEL |
               (op->producer ? UVP_NATS__REQUEST_PRODUCER
                             : UVP_NATS__REQUEST_UNTRACED)};
  uvp_promise_t *r;
  rc = uvp_nats_request_at(op->js->b, subject, data, len, &ro, &r, op->file,
                           op->line);
  if (rc != 0)
    return rc;
  op->holds++; /* op_unhold's, which a refusal runs at once */
  rc = uvp_promise_on_full_at(r, UVP_ON_BOTH, op_reply, op, op_unhold, NULL,
                              op->file, op->line);
  if (rc != 0) {
    uvp_promise_cancel(r);
    uvp_promise_release(r);
    return rc;
  }
  op->r = r;
  return 0;
}

int uvp_nats__js_op_start(js_op_t *op, const char *subject, const void *data,
                          size_t len, const char *const *headers,
                          uvp_promise_t **out) {
  int rc = 0;
  if (op->done == NULL) {
    rc = uvp_promise_new_at(op->js->ctx, &op->p, op->file, op->line);
    if (rc == 0)
      rc = uvp_inflight_start(op->js->ctx, &op->w, op->p, &op_class);
  }
  if (rc == 0)
    rc = op_request(op, subject, data, len, headers);
  if (rc != 0) {
    uvp_nats__js_op_drop(op);
    return rc;
  }
  if (out != NULL)
    *out = uvp_promise_retain(op->p);
  return 0;
}

static uvp_nats_js_error_t *error_new(int code, int err_code,
                                      const char *desc) {
  size_t n = strlen(desc);
  uvp_nats_js_error_t *e = malloc(sizeof(*e) + n + 1);
  if (e == NULL)
    return NULL;
  char *d = (char *)(e + 1);
  memcpy(d, desc, n + 1);
  *e = (uvp_nats_js_error_t){code, err_code, d};
  return e;
}

void uvp_nats__js_op_end(js_op_t *op, int rc, void *value, uvp_free_cb vfree,
                         void *payload) {
  if (op->done != NULL) {
    void (*done)(js_op_t *, int, void *, uvp_free_cb) = op->done;
    op->done = NULL;
    free(payload);
    done(op, rc, value, vfree);
    return;
  }
  if (op->p == NULL || op->cut) {
    if (vfree != NULL)
      vfree(value);
    free(payload);
    return;
  }
  if (rc == UV_EACCES && payload == NULL && op->js->b->denied != NULL)
    payload = error_new(403, 0, op->js->b->denied); /* the server's words,
                                                       with the subject */
  if (rc == 0)
    uvp_promise_resolve(op->p, value, vfree);
  else
    uvp_promise_reject(op->p, rc, payload, payload != NULL ? free : NULL);
}

void uvp_nats__js_op_cancel(js_op_t *op) {
  op->cut = true;
  op->done = NULL;
  if (op->r != NULL)
    uvp_promise_cancel(op->r);
}

void uvp_nats__js_op_send(js_op_t *op, const char *subject, const void *data,
                          size_t len, const char *const *headers) {
  int rc = op_request(op, subject, data, len, headers);
  if (rc != 0)
    uvp_nats__js_op_end(op, rc, NULL, NULL, NULL);
}

int uvp_nats__js_op_api(js_op_t *op, bool start, uvp_promise_t **out,
                        json_t *body, const char *fmt, ...) {
  char subject[512];
  int n = snprintf(subject, sizeof(subject), "%s.", op->js->prefix);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(subject + n, sizeof(subject) - (size_t)n, fmt, ap);
  va_end(ap);
  char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  if (body != NULL && text == NULL) {
    if (start) {
      uvp_nats__js_op_drop(op);
      return UV_ENOMEM;
    }
    uvp_nats__js_op_end(op, UV_ENOMEM, NULL, NULL, NULL);
    return UV_ENOMEM;
  }
  size_t len = text != NULL ? strlen(text) : 0;
  int rc = 0;
  if (start)
    rc = uvp_nats__js_op_start(op, subject, text, len, NULL, out);
  else
    uvp_nats__js_op_send(op, subject, text, len, NULL);
  free(text);
  return rc;
}

/* ---- replies ------------------------------------------------------------- */

int uvp_nats__js_status(natsMsg *m) {
  const char *v = NULL;
  if (natsMsgHeader_Get(m, "Status", &v) != NATS_OK || v == NULL)
    return 0;
  return atoi(v);
}

int uvp_nats__js_code(int code, int err_code) {
  switch (err_code) {
  case 10059: /* stream not found */
  case 10014: /* consumer not found */
  case 10037: /* no message found */
    return UV_ENOENT;
  case 10058: /* stream name already in use with a different config */
  case 10065: /* subjects overlap with an existing stream */
  case 10060: /* expected stream does not match */
  case 10148: /* consumer already exists */
  case 10013: /* consumer name already in use */
    return UV_EEXIST;
  case 10071: /* wrong last sequence */
    return UVP_NATS_EREVISION;
  case 10008: /* JetStream system temporarily unavailable */
    return UV_EAGAIN;
  case 10039: /* JetStream not enabled for account */
  case 10076: /* JetStream not enabled */
    return UV_ENOTSUP;
  default:
    break;
  }
  if (code == 404)
    return UV_ENOENT;
  return UVP_NATS_EJETSTREAM;
}

int uvp_nats__js_json(natsMsg *m, json_t **out, uvp_nats_js_error_t **err) {
  *out = NULL;
  if (err != NULL)
    *err = NULL;
  int status = uvp_nats__js_status(m);
  if (status >= 400) { /* a status message: no JSON */
    const char *d = NULL;
    (void)natsMsgHeader_Get(m, "Description", &d);
    if (err != NULL)
      *err = error_new(status, 0, d != NULL ? d : "");
    return status == 503 ? UVP_NATS_ENORESPONDERS
                         : uvp_nats__js_code(status, 0);
  }
  const char *data = natsMsg_GetData(m);
  int len = natsMsg_GetDataLength(m);
  if (len > 0 && (size_t)len > UVP_NATS_JS_MAX_JSON) { /* unparsed */
    if (err != NULL) {
      char d[96];
      snprintf(d, sizeof(d), "a reply of %d bytes, over the %zu parsed", len,
               UVP_NATS_JS_MAX_JSON);
      *err = error_new(0, 0, d);
    }
    return UV_EMSGSIZE;
  }
  if (len > 0 && uvp_nats__json_costly(data, (size_t)len)) { /* unparsed */
    if (err != NULL) {
      char d[96];
      snprintf(d, sizeof(d),
               "a reply of more than %u JSON values, or deeper "
               "than %d",
               UVP_NATS_JS_MAX_JSON_VALUES, JSON_MAX_DEPTH);
      *err = error_new(0, 0, d);
    }
    return UV_EMSGSIZE;
  }
  json_t *j = data != NULL ? json_loadb(data, (size_t)len, 0, NULL) : NULL;
  if (j == NULL || !json_is_object(j)) {
    json_decref(j);
    return UV_EPROTO;
  }
  json_t *e = json_object_get(j, "error");
  if (e != NULL) {
    int code = (int)json_integer_value(json_object_get(e, "code"));
    int err_code = (int)json_integer_value(json_object_get(e, "err_code"));
    const char *d = json_string_value(json_object_get(e, "description"));
    if (err != NULL)
      *err = error_new(code, err_code, d != NULL ? d : "");
    json_decref(j);
    return uvp_nats__js_code(code, err_code);
  }
  *out = j;
  return 0;
}

uint64_t uvp_nats__js_unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

bool uvp_nats__js_name_ok(const char *s) {
  if (s == NULL || *s == '\0' || strlen(s) > 64)
    return false;
  for (const char *c = s; *c != '\0'; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
          (*c >= '0' && *c <= '9') || *c == '-' || *c == '_'))
      return false;
  return true;
}

uint64_t uvp_nats__js_ms(json_t *j, const char *key) {
  json_int_t ns = json_integer_value(json_object_get(j, key));
  return ns > 0 ? (uint64_t)ns / JS_NS : 0;
}

static uint64_t u64(json_t *j, const char *key) {
  json_int_t v = json_integer_value(json_object_get(j, key));
  return v > 0 ? (uint64_t)v : 0;
}

/* Room for a struct of `size` and strings after it: *at points past it. */
static void *value_alloc(size_t size, const char *const *strs, size_t n,
                         char **at) {
  size_t total = size;
  for (size_t i = 0; i < n; i++)
    total += strs[i] != NULL ? strlen(strs[i]) + 1 : 0;
  char *v = calloc(1, total);
  if (v != NULL)
    *at = v + size;
  return v;
}

static const char *put_str(char **at, const char *s) {
  if (s == NULL)
    return NULL;
  size_t n = strlen(s) + 1;
  char *d = *at;
  memcpy(d, s, n);
  *at += n;
  return d;
}

int uvp_nats__js_stream_info_of(json_t *j, uvp_nats_js_stream_info_t **out) {
  json_t *cfg = json_object_get(j, "config");
  json_t *st = json_object_get(j, "state");
  json_t *cl = json_object_get(j, "cluster");
  const char *name = json_string_value(json_object_get(cfg, "name"));
  const char *leader = json_string_value(json_object_get(cl, "leader"));
  if (name == NULL)
    return UV_EPROTO;
  char *at;
  const char *strs[] = {name, leader};
  uvp_nats_js_stream_info_t *v = value_alloc(sizeof(*v), strs, 2, &at);
  if (v == NULL)
    return UV_ENOMEM;
  v->name = put_str(&at, name);
  v->leader = put_str(&at, leader);
  v->messages = u64(st, "messages");
  v->bytes = u64(st, "bytes");
  v->first_seq = u64(st, "first_seq");
  v->last_seq = u64(st, "last_seq");
  v->consumers = u64(st, "consumer_count");
  v->replicas = (int)u64(cfg, "num_replicas");
  *out = v;
  return 0;
}

/* The $JS.ACK subject's tokens: "$JS.ACK.<stream>.<consumer>.<delivered>.
 * <sseq>.<cseq>.<time>.<pending>", or after ACK a domain and an account
 * hash first (and a token last). */
bool uvp_nats__js_metadata(const char *reply, const char **stream, size_t *slen,
                           const char **consumer, size_t *clen,
                           uint64_t nums[5]) {
  const char *tok[14];
  size_t len[14], n = 0;
  if (reply == NULL || strncmp(reply, "$JS.ACK.", 8) != 0)
    return false;
  for (const char *c = reply, *t = reply;; c++) {
    if (*c == '.' || *c == '\0') {
      if (n == 14)
        return false;
      tok[n] = t;
      len[n++] = (size_t)(c - t);
      if (*c == '\0')
        break;
      t = c + 1;
    }
  }
  size_t at;
  if (n == 9)
    at = 2;
  else if (n >= 11)
    at = 4;
  else
    return false;
  *stream = tok[at];
  *slen = len[at];
  *consumer = tok[at + 1];
  *clen = len[at + 1];
  for (int i = 0; i < 5; i++) {
    char *end;
    errno = 0;
    nums[i] = strtoull(tok[at + 2 + i], &end, 10);
    if (errno != 0 || end != tok[at + 2 + i] + len[at + 2 + i])
      return false;
  }
  return true;
}

/* ---- streams ------------------------------------------------------------- */

/* The step of a call whose reply is a stream's info. */
static void stream_step(js_op_t *op, int rc, natsMsg *m) {
  json_t *j = NULL;
  uvp_nats_js_error_t *err = NULL;
  uvp_nats_js_stream_info_t *v = NULL;
  if (rc == 0)
    rc = uvp_nats__js_json(m, &j, &err);
  if (rc == 0)
    rc = uvp_nats__js_stream_info_of(j, &v);
  json_decref(j);
  uvp_nats__js_op_end(op, rc, v, free, err);
}

/* The step of a call whose reply says only that it worked. */
static void success_step(js_op_t *op, int rc, natsMsg *m) {
  json_t *j = NULL;
  uvp_nats_js_error_t *err = NULL;
  if (rc == 0)
    rc = uvp_nats__js_json(m, &j, &err);
  json_decref(j);
  uvp_nats__js_op_end(op, rc, NULL, NULL, err);
}

static const char *const retentions[] = {"limits", "workqueue", "interest"};

static json_t *stream_json(const uvp_nats_js_stream_config_t *c) {
  json_t *subjects = json_array();
  if (c->subjects == NULL)
    json_array_append_new(subjects, json_string(c->name));
  for (size_t i = 0; c->subjects != NULL && c->subjects[i] != NULL; i++)
    json_array_append_new(subjects, json_string(c->subjects[i]));
  json_t *j = json_pack(
      "{s:s, s:o, s:s, s:s, s:i, s:s, s:I, s:I, s:I, s:I, s:b, s:b, s:b}",
      "name", c->name, "subjects", subjects, "retention",
      retentions[c->retention], "storage",
      c->flags & UVP_NATS_JS_MEMORY ? "memory" : "file", "num_replicas",
      c->replicas > 0 ? c->replicas : 1, "discard",
      c->flags & UVP_NATS_JS_DISCARD_NEW ? "new" : "old", "max_age",
      (json_int_t)c->max_age_ms * JS_NS, "max_msgs",
      (json_int_t)(c->max_msgs > 0 ? c->max_msgs : -1), "max_bytes",
      (json_int_t)(c->max_bytes > 0 ? c->max_bytes : -1),
      "max_msgs_per_subject",
      (json_int_t)(c->max_msgs_per_subject > 0 ? c->max_msgs_per_subject : -1),
      "allow_direct", (c->flags & UVP_NATS_JS_ALLOW_DIRECT) != 0,
      "allow_rollup_hdrs", (c->flags & UVP_NATS_JS_ALLOW_ROLLUP) != 0,
      "deny_delete", (c->flags & UVP_NATS_JS_DENY_DELETE) != 0);
  if (j != NULL && c->duplicate_window_ms > 0)
    json_object_set_new(
        j, "duplicate_window",
        json_integer((json_int_t)c->duplicate_window_ms * JS_NS));
  return j;
}

static bool subjects_ok(const char *const *s) {
  for (size_t i = 0; s != NULL && s[i] != NULL; i++)
    if (!uvp_nats__subject_ok(s[i], true))
      return false;
  return true;
}

int uvp_nats_js_stream_add_at(uvp_nats_js_t *js,
                              const uvp_nats_js_stream_config_t *c,
                              uvp_promise_t **out, const char *file, int line) {
  if (js == NULL || c == NULL || out == NULL ||
      !uvp_nats__js_name_ok(c->name) || !subjects_ok(c->subjects) ||
      (unsigned)c->retention > UVP_NATS_JS_INTEREST || c->replicas < 0 ||
      c->max_age_ms > INT64_MAX / JS_NS ||
      c->duplicate_window_ms > INT64_MAX / JS_NS)
    return UV_EINVAL;
  js_op_t *op;
  int rc = uvp_nats__js_op_new(js, stream_step, file, line, &op,
                               "stream add %s", c->name);
  if (rc != 0)
    return rc;
  json_t *body = stream_json(c);
  if (body == NULL) {
    uvp_nats__js_op_drop(op);
    return UV_ENOMEM;
  }
  return uvp_nats__js_op_api(op, true, out, body, "STREAM.CREATE.%s", c->name);
}

static int stream_call(uvp_nats_js_t *js, const char *stream, js_step_fn step,
                       const char *verb, const char *api, uvp_promise_t **out,
                       const char *file, int line) {
  if (js == NULL || out == NULL || !uvp_nats__js_name_ok(stream))
    return UV_EINVAL;
  js_op_t *op;
  int rc = uvp_nats__js_op_new(js, step, file, line, &op, "stream %s %s", verb,
                               stream);
  if (rc != 0)
    return rc;
  return uvp_nats__js_op_api(op, true, out, NULL, "%s.%s", api, stream);
}

int uvp_nats_js_stream_info_at(uvp_nats_js_t *js, const char *stream,
                               uvp_promise_t **out, const char *file,
                               int line) {
  return stream_call(js, stream, stream_step, "info", "STREAM.INFO", out, file,
                     line);
}

int uvp_nats_js_stream_delete_at(uvp_nats_js_t *js, const char *stream,
                                 uvp_promise_t **out, const char *file,
                                 int line) {
  return stream_call(js, stream, success_step, "delete", "STREAM.DELETE", out,
                     file, line);
}

/* ---- consumers ----------------------------------------------------------- */

static void consumer_step(js_op_t *op, int rc, natsMsg *m) {
  json_t *j = NULL;
  uvp_nats_js_error_t *err = NULL;
  uvp_nats_js_consumer_info_t *v = NULL;
  if (rc == 0)
    rc = uvp_nats__js_json(m, &j, &err);
  if (rc == 0) {
    json_t *cfg = json_object_get(j, "config");
    const char *strs[] = {json_string_value(json_object_get(j, "stream_name")),
                          json_string_value(json_object_get(j, "name"))};
    char *at;
    if (strs[0] == NULL || strs[1] == NULL)
      rc = UV_EPROTO;
    else if ((v = value_alloc(sizeof(*v), strs, 2, &at)) == NULL)
      rc = UV_ENOMEM;
    else {
      v->stream = put_str(&at, strs[0]);
      v->name = put_str(&at, strs[1]);
      v->ack_wait_ms = uvp_nats__js_ms(cfg, "ack_wait");
      v->max_ack_pending =
          json_integer_value(json_object_get(cfg, "max_ack_pending"));
      v->max_deliver = json_integer_value(json_object_get(cfg, "max_deliver"));
      v->num_pending = u64(j, "num_pending");
      v->num_ack_pending = u64(j, "num_ack_pending");
      v->num_redelivered = u64(j, "num_redelivered");
      v->num_waiting = u64(j, "num_waiting");
    }
  }
  json_decref(j);
  uvp_nats__js_op_end(op, rc, v, free, err);
}

int uvp_nats_js_consumer_add_at(uvp_nats_js_t *js, const char *stream,
                                const uvp_nats_js_consumer_config_t *c,
                                uvp_promise_t **out, const char *file,
                                int line) {
  if (js == NULL || c == NULL || out == NULL || !uvp_nats__js_name_ok(stream) ||
      !uvp_nats__js_name_ok(c->durable) ||
      (c->filter_subject != NULL &&
       !uvp_nats__subject_ok(c->filter_subject, true)) ||
      c->ack_wait_ms > INT64_MAX / JS_NS || c->max_deliver < 0 ||
      c->max_ack_pending < 0 || (c->nbackoff > 0 && c->backoff_ms == NULL))
    return UV_EINVAL;
  for (size_t i = 0; i < c->nbackoff; i++)
    if (c->backoff_ms[i] == 0 || c->backoff_ms[i] > INT64_MAX / JS_NS)
      return UV_EINVAL;
  js_op_t *op;
  int rc = uvp_nats__js_op_new(js, consumer_step, file, line, &op,
                               "consumer add %s/%s", stream, c->durable);
  if (rc != 0)
    return rc;
  json_t *cfg = json_pack(
      "{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "durable_name", c->durable,
      "ack_policy", "explicit", "deliver_policy", "all", "replay_policy",
      "instant", "ack_wait",
      (json_int_t)(c->ack_wait_ms > 0 ? c->ack_wait_ms : 30000) * JS_NS,
      "max_deliver", (json_int_t)(c->max_deliver > 0 ? c->max_deliver : -1),
      "max_ack_pending",
      (json_int_t)(c->max_ack_pending > 0 ? c->max_ack_pending : 1000));
  if (cfg != NULL && c->filter_subject != NULL)
    json_object_set_new(cfg, "filter_subject", json_string(c->filter_subject));
  if (cfg != NULL && c->nbackoff > 0) {
    json_t *bo = json_array();
    for (size_t i = 0; i < c->nbackoff; i++)
      json_array_append_new(bo,
                            json_integer((json_int_t)c->backoff_ms[i] * JS_NS));
    json_object_set_new(cfg, "backoff", bo);
  }
  json_t *body = cfg != NULL ? json_pack("{s:s, s:o}", "stream_name", stream,
                                         "config", cfg)
                             : NULL;
  if (body == NULL) {
    uvp_nats__js_op_drop(op);
    return UV_ENOMEM;
  }
  return uvp_nats__js_op_api(
      op, true, out, body, "CONSUMER.DURABLE.CREATE.%s.%s", stream, c->durable);
}

static int consumer_call(uvp_nats_js_t *js, const char *stream,
                         const char *consumer, js_step_fn step,
                         const char *verb, const char *api, uvp_promise_t **out,
                         const char *file, int line) {
  if (js == NULL || out == NULL || !uvp_nats__js_name_ok(stream) ||
      !uvp_nats__js_name_ok(consumer))
    return UV_EINVAL;
  js_op_t *op;
  int rc = uvp_nats__js_op_new(js, step, file, line, &op, "consumer %s %s/%s",
                               verb, stream, consumer);
  if (rc != 0)
    return rc;
  return uvp_nats__js_op_api(op, true, out, NULL, "%s.%s.%s", api, stream,
                             consumer);
}

int uvp_nats_js_consumer_info_at(uvp_nats_js_t *js, const char *stream,
                                 const char *consumer, uvp_promise_t **out,
                                 const char *file, int line) {
  return consumer_call(js, stream, consumer, consumer_step, "info",
                       "CONSUMER.INFO", out, file, line);
}

int uvp_nats_js_consumer_delete_at(uvp_nats_js_t *js, const char *stream,
                                   const char *consumer, uvp_promise_t **out,
                                   const char *file, int line) {
  return consumer_call(js, stream, consumer, success_step, "delete",
                       "CONSUMER.DELETE", out, file, line);
}

/* ---- publish with acknowledgement ---------------------------------------- */

int uvp_nats__js_puback(natsMsg *m, uvp_nats_js_ack_t **out,
                        uvp_nats_js_error_t **err) {
  json_t *j = NULL;
  int rc = uvp_nats__js_json(m, &j, err);
  if (rc != 0)
    return rc;
  const char *stream = json_string_value(json_object_get(j, "stream"));
  char *at;
  uvp_nats_js_ack_t *v = NULL;
  if (stream == NULL)
    rc = UV_EPROTO;
  else if ((v = value_alloc(sizeof(*v), &stream, 1, &at)) == NULL)
    rc = UV_ENOMEM;
  else {
    v->stream = put_str(&at, stream);
    v->seq = u64(j, "seq");
    v->duplicate = json_is_true(json_object_get(j, "duplicate"));
  }
  json_decref(j);
  *out = v;
  return rc;
}

static void publish_step(js_op_t *op, int rc, natsMsg *m) {
  uvp_nats_js_ack_t *v = NULL;
  uvp_nats_js_error_t *err = NULL;
  if (rc == 0)
    rc = uvp_nats__js_puback(m, &v, &err);
  uvp_nats__js_op_end(op, rc, v, free, err);
}

void uvp_nats__js_headers_free(char **h) {
  for (size_t i = 0; h != NULL && h[i] != NULL; i++)
    free(h[i]);
  free(h);
}

static int header_add(char **h, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int header_add(char **h, size_t *n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = malloc((size_t)len + 1);
  if (s == NULL)
    return UV_ENOMEM;
  va_start(ap, fmt);
  vsnprintf(s, (size_t)len + 1, fmt, ap);
  va_end(ap);
  h[(*n)++] = s;
  return 0;
}

int uvp_nats__js_pub_headers(const uvp_nats_js_publish_opts_t *o, char ***out) {
  *out = NULL;
  if (o == NULL)
    return 0;
  size_t extra = 0;
  while (o->headers != NULL && o->headers[extra] != NULL)
    extra++;
  char **h = calloc(extra + 5, sizeof(*h));
  if (h == NULL)
    return UV_ENOMEM;
  size_t n = 0;
  int rc = 0;
  if (o->msg_id != NULL)
    rc = header_add(h, &n, "Nats-Msg-Id: %s", o->msg_id);
  if (rc == 0 && o->expect_stream != NULL)
    rc = header_add(h, &n, "Nats-Expected-Stream: %s", o->expect_stream);
  if (rc == 0 && (o->flags & UVP_NATS_JS_EXPECT_LAST))
    rc = header_add(h, &n, "Nats-Expected-Last-Subject-Sequence: %" PRIu64,
                    o->expect_last_subject_seq);
  if (rc == 0 && o->deadline_ms > 0)
    rc = header_add(h, &n, UVP_NATS_DEADLINE_HEADER ": %" PRIu64,
                    uvp_nats__js_unix_ms() + o->deadline_ms);
  for (size_t i = 0; rc == 0 && i < extra; i++)
    rc = header_add(h, &n, "%s", o->headers[i]);
  if (rc != 0) {
    uvp_nats__js_headers_free(h);
    return rc;
  }
  *out = h;
  return 0;
}

static bool value_ok(const char *v) {
  return v == NULL || (*v != '\0' && strpbrk(v, "\r\n") == NULL);
}

int uvp_nats_js_publish_at(uvp_nats_js_t *js, const char *subject,
                           const void *data, size_t len,
                           const uvp_nats_js_publish_opts_t *opts,
                           uvp_promise_t **out, const char *file, int line) {
  if (js == NULL || out == NULL || !uvp_nats__subject_ok(subject, false) ||
      (data == NULL && len > 0) ||
      (opts != NULL &&
       (!value_ok(opts->msg_id) || !value_ok(opts->expect_stream))))
    return UV_EINVAL;
  char **h;
  int rc = uvp_nats__js_pub_headers(opts, &h);
  js_op_t *op;
  if (rc == 0 && (rc = uvp_nats__js_op_new(js, publish_step, file, line, &op,
                                           "publish %s", subject)) == 0) {
    op->producer = true;
    rc = uvp_nats__js_op_start(op, subject, data, len, (const char *const *)h,
                               out);
  }
  uvp_nats__js_headers_free(h);
  return rc;
}
