/* uvp-nats JetStream: key-value buckets, reads and writes (js.c says how it
 * fits; kv-watch.c has the watches).
 *
 * A bucket is the stream "KV_<bucket>" on "$KV.<bucket>.>", as nats.c
 * and the nats CLI make it.  A read is a direct get (any replica answers)
 * of the key's subject's last message; a write is a publish with
 * acknowledgement whose headers carry the compare-and-set
 * (Nats-Expected-Last-Subject-Sequence) or the deletion
 * (KV-Operation: DEL).  A create that finds a deletion marker reads its
 * revision and writes over it, as nats.c's kvStore_Create does: one op,
 * three requests.
 */
#include <time.h>

#include "js-internal.h"

/* ---- names --------------------------------------------------------------- */

/* A key: letters, digits and -/_=. in tokens none of which is empty; with
 * `wild`, "*" tokens and a last ">" too. */
bool uvp_nats__kv_key_ok(const char *k, bool wild) {
  if (k == NULL || *k == '\0' || strlen(k) > 200)
    return false;
  if (!uvp_nats__subject_ok(k, wild))
    return false;
  for (const char *c = k; *c != '\0'; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
          (*c >= '0' && *c <= '9') || strchr("-/_=.", *c) != NULL ||
          (wild && (*c == '*' || *c == '>'))))
      return false;
  return true;
}

/* ---- entries ------------------------------------------------------------- */

/* "2023-05-01T12:00:00.123456789Z" in ns since the epoch; 0 if not. */
static int64_t rfc3339_ns(const char *s) {
  struct tm tm = {0};
  const char *rest = s != NULL ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
  if (rest == NULL)
    return 0;
  int64_t ns = 0, scale = 100000000;
  if (*rest == '.')
    for (rest++; *rest >= '0' && *rest <= '9'; rest++, scale /= 10)
      ns += (*rest - '0') * scale;
  return (int64_t)timegm(&tm) * 1000000000 + ns;
}

static uvp_nats_kv_op_t op_of(natsMsg *m) {
  const char *v = uvp_nats_msg_header(m, "KV-Operation");
  if (v == NULL)
    return UVP_NATS_KV_PUT;
  return strcmp(v, "PURGE") == 0 ? UVP_NATS_KV_PURGE : UVP_NATS_KV_DEL;
}

uvp_nats_kv_entry_t *uvp_nats__kv_entry_new(const char *bucket, const char *key,
                                            natsMsg *m, uint64_t revision,
                                            int64_t time_ns, uint64_t delta) {
  size_t bl = strlen(bucket), kl = strlen(key);
  int len = natsMsg_GetDataLength(m);
  uvp_nats_kv_entry_t *e = malloc(sizeof(*e) + bl + kl + (size_t)len + 3);
  if (e == NULL)
    return NULL;
  char *at = (char *)(e + 1);
  memcpy(at, bucket, bl + 1);
  e->bucket = at;
  at += bl + 1;
  memcpy(at, key, kl + 1);
  e->key = at;
  at += kl + 1;
  if (len > 0)
    memcpy(at, natsMsg_GetData(m), (size_t)len);
  at[len] = '\0';
  e->value = at;
  e->len = (size_t)len;
  e->revision = revision;
  e->time_ns = time_ns;
  e->delta = delta;
  e->op = op_of(m);
  return e;
}

/* A direct get's reply as an entry (deletion markers too); UV_ENOENT for
 * its 404. */
static int got_entry(natsMsg *m, const char *bucket, uvp_nats_kv_entry_t **out,
                     uvp_nats_js_error_t **err) {
  *out = NULL;
  int status = uvp_nats__js_status(m);
  if (status != 0) {
    json_t *j = NULL;
    int rc = uvp_nats__js_json(m, &j, err);
    json_decref(j);
    return rc != 0 ? rc : UV_EPROTO;
  }
  const char *subj = uvp_nats_msg_header(m, "Nats-Subject");
  const char *seq = uvp_nats_msg_header(m, "Nats-Sequence");
  size_t skip = 5 + strlen(bucket); /* "$KV.<bucket>." */
  if (subj == NULL || seq == NULL || strlen(subj) <= skip)
    return UV_EPROTO;
  *out = uvp_nats__kv_entry_new(
      bucket, subj + skip, m, strtoull(seq, NULL, 10),
      rfc3339_ns(uvp_nats_msg_header(m, "Nats-Time-Stamp")), 0);
  return *out != NULL ? 0 : UV_ENOMEM;
}

/* ---- buckets ------------------------------------------------------------- */

int uvp_nats_kv_bucket_add_at(uvp_nats_js_t *js, const uvp_nats_kv_config_t *c,
                              uvp_promise_t **out, const char *file, int line) {
  if (js == NULL || c == NULL || out == NULL ||
      !uvp_nats__js_name_ok(c->bucket) || c->history < 0 || c->history > 64 ||
      c->replicas < 0 || c->max_bytes < 0)
    return UV_EINVAL;
  char name[80], subj[80];
  snprintf(name, sizeof(name), "KV_%s", c->bucket);
  snprintf(subj, sizeof(subj), "$KV.%s.>", c->bucket);
  /* nats.c's kvStore config: the dedupe window no longer than the ttl */
  uint64_t dw = 120000;
  if (c->ttl_ms > 0 && c->ttl_ms < dw)
    dw = c->ttl_ms;
  uvp_nats_js_stream_config_t sc = {
      .name = name,
      .subjects = (const char *[]){subj, NULL},
      .retention = UVP_NATS_JS_LIMITS,
      .replicas = c->replicas,
      .max_age_ms = c->ttl_ms,
      .duplicate_window_ms = dw,
      .max_bytes = c->max_bytes,
      .max_msgs_per_subject = c->history > 0 ? c->history : 1,
      .flags = (c->flags & UVP_NATS_JS_MEMORY) | UVP_NATS_JS_DISCARD_NEW |
               UVP_NATS_JS_ALLOW_DIRECT | UVP_NATS_JS_ALLOW_ROLLUP |
               UVP_NATS_JS_DENY_DELETE};
  return uvp_nats_js_stream_add_at(js, &sc, out, file, line);
}

int uvp_nats_kv_bucket_delete_at(uvp_nats_js_t *js, const char *bucket,
                                 uvp_promise_t **out, const char *file,
                                 int line) {
  if (!uvp_nats__js_name_ok(bucket))
    return UV_EINVAL;
  char name[80];
  snprintf(name, sizeof(name), "KV_%s", bucket);
  return uvp_nats_js_stream_delete_at(js, name, out, file, line);
}

/* ---- get and write ------------------------------------------------------- */

/* What a key's op remembers between its requests. */
typedef struct kvop_s {
  char bucket[65];
  char key[201];
  char *data;
  size_t len;
  int tries;
} kvop_t;

static void kvop_free(void *arg) {
  kvop_t *k = arg;
  free(k->data);
  free(k);
}

void uvp_nats__kv_send_get(js_op_t *op, const char *bucket, const char *key) {
  char subj[300];
  snprintf(subj, sizeof(subj), "$KV.%s.%s", bucket, key);
  json_t *body = json_pack("{s:s}", "last_by_subj", subj);
  if (body == NULL) {
    uvp_nats__js_op_end(op, UV_ENOMEM, NULL, NULL, NULL);
    return;
  }
  (void)uvp_nats__js_op_api(op, false, NULL, body, "DIRECT.GET.KV_%s", bucket);
}

int uvp_nats__kv_entry_of(natsMsg *m, const char *bucket,
                          uvp_nats_kv_entry_t **out,
                          uvp_nats_js_error_t **err) {
  return got_entry(m, bucket, out, err);
}

/* A write of key: expected_rev UINT64_MAX: none; del: a deletion marker. */
void uvp_nats__kv_send_write(js_op_t *op, const char *bucket, const char *key,
                             const void *data, size_t len,
                             uint64_t expected_rev, bool del) {
  char subj[300], expect[80];
  snprintf(subj, sizeof(subj), "$KV.%s.%s", bucket, key);
  snprintf(expect, sizeof(expect),
           "Nats-Expected-Last-Subject-Sequence: %" PRIu64, expected_rev);
  const char *h[3] = {NULL, NULL, NULL};
  size_t n = 0;
  if (expected_rev != UINT64_MAX)
    h[n++] = expect;
  if (del)
    h[n++] = "KV-Operation: DEL";
  uvp_nats__js_op_send(op, subj, data, len, h);
}

static void get_step(js_op_t *op, int rc, natsMsg *m) {
  kvop_t *k = op->data;
  uvp_nats_kv_entry_t *e = NULL;
  uvp_nats_js_error_t *err = NULL;
  if (rc == 0)
    rc = got_entry(m, k->bucket, &e, &err);
  if (rc == 0 && e->op != UVP_NATS_KV_PUT) { /* deleted or purged */
    free(e);
    e = NULL;
    rc = UV_ENOENT;
  }
  uvp_nats__js_op_end(op, rc, e, free, err);
}

/* The step of a write: its acknowledgement. */
static void ack_step(js_op_t *op, int rc, natsMsg *m) {
  uvp_nats_js_ack_t *v = NULL;
  uvp_nats_js_error_t *err = NULL;
  if (rc == 0)
    rc = uvp_nats__js_puback(m, &v, &err);
  uvp_nats__js_op_end(op, rc, v, free, err);
}

/* A create: a write expecting no message (state 0); if the key has one,
 * read it (1): a deletion marker is written over at its revision (2). */
static void create_step(js_op_t *op, int rc, natsMsg *m) {
  kvop_t *k = op->data;
  if (op->state == 0 || op->state == 2) {
    uvp_nats_js_ack_t *v = NULL;
    uvp_nats_js_error_t *err = NULL;
    if (rc == 0)
      rc = uvp_nats__js_puback(m, &v, &err);
    if (rc == UVP_NATS_EREVISION && k->tries++ < 3) {
      free(err);
      op->state = 1;
      uvp_nats__kv_send_get(op, k->bucket, k->key);
      return;
    }
    uvp_nats__js_op_end(op, rc, v, free, err);
    return;
  }
  uvp_nats_kv_entry_t *e = NULL;
  uvp_nats_js_error_t *err = NULL;
  if (rc == 0)
    rc = got_entry(m, k->bucket, &e, &err);
  if (rc == 0 && e->op == UVP_NATS_KV_PUT)
    rc = UV_EEXIST;
  if (rc != 0 && rc != UV_ENOENT) {
    free(e);
    uvp_nats__js_op_end(op, rc, NULL, NULL, err);
    return;
  }
  free(err);
  op->state = rc == UV_ENOENT ? 0 : 2; /* purged meanwhile: from none */
  uvp_nats__kv_send_write(op, k->bucket, k->key, k->data, k->len,
                          e != NULL ? e->revision : 0, false);
  free(e);
}

static int kv_call(uvp_nats_js_t *js, const char *bucket, const char *key,
                   const void *data, size_t len, js_step_fn step,
                   const char *verb, uvp_promise_t **out, const char *file,
                   int line, kvop_t **kout, js_op_t **opout) {
  if (js == NULL || out == NULL || !uvp_nats__js_name_ok(bucket) ||
      !uvp_nats__kv_key_ok(key, false) || (data == NULL && len > 0))
    return UV_EINVAL;
  kvop_t *k = calloc(1, sizeof(*k));
  if (k == NULL || (len > 0 && (k->data = malloc(len)) == NULL)) {
    free(k);
    return UV_ENOMEM;
  }
  snprintf(k->bucket, sizeof(k->bucket), "%s", bucket);
  snprintf(k->key, sizeof(k->key), "%s", key);
  if (len > 0)
    memcpy(k->data, data, len);
  k->len = len;
  js_op_t *op;
  int rc = uvp_nats__js_op_new(js, step, file, line, &op, "kv %s %s/%s", verb,
                               bucket, key);
  if (rc != 0) {
    kvop_free(k);
    return rc;
  }
  op->data = k;
  op->data_free = kvop_free;
  *kout = k;
  *opout = op;
  return 0;
}

/* Start op's first request: a write of k (expected_rev, del) or, for
 * `get`, a read. */
static int kv_start(js_op_t *op, kvop_t *k, bool get, uint64_t expected_rev,
                    bool del, uvp_promise_t **out) {
  if (get) {
    char subj[300];
    snprintf(subj, sizeof(subj), "$KV.%s.%s", k->bucket, k->key);
    json_t *body = json_pack("{s:s}", "last_by_subj", subj);
    if (body == NULL) {
      uvp_nats__js_op_drop(op);
      return UV_ENOMEM;
    }
    return uvp_nats__js_op_api(op, true, out, body, "DIRECT.GET.KV_%s",
                               k->bucket);
  }
  char subj[300], expect[80];
  snprintf(subj, sizeof(subj), "$KV.%s.%s", k->bucket, k->key);
  snprintf(expect, sizeof(expect),
           "Nats-Expected-Last-Subject-Sequence: %" PRIu64, expected_rev);
  const char *h[3] = {NULL, NULL, NULL};
  size_t n = 0;
  if (expected_rev != UINT64_MAX)
    h[n++] = expect;
  if (del)
    h[n++] = "KV-Operation: DEL";
  return uvp_nats__js_op_start(op, subj, k->data, k->len, h, out);
}

int uvp_nats_kv_get_at(uvp_nats_js_t *js, const char *bucket, const char *key,
                       uvp_promise_t **out, const char *file, int line) {
  kvop_t *k;
  js_op_t *op;
  int rc = kv_call(js, bucket, key, NULL, 0, get_step, "get", out, file, line,
                   &k, &op);
  return rc != 0 ? rc : kv_start(op, k, true, 0, false, out);
}

int uvp_nats_kv_put_at(uvp_nats_js_t *js, const char *bucket, const char *key,
                       const void *data, size_t len, uvp_promise_t **out,
                       const char *file, int line) {
  kvop_t *k;
  js_op_t *op;
  int rc = kv_call(js, bucket, key, data, len, ack_step, "put", out, file, line,
                   &k, &op);
  return rc != 0 ? rc : kv_start(op, k, false, UINT64_MAX, false, out);
}

int uvp_nats_kv_create_at(uvp_nats_js_t *js, const char *bucket,
                          const char *key, const void *data, size_t len,
                          uvp_promise_t **out, const char *file, int line) {
  kvop_t *k;
  js_op_t *op;
  int rc = kv_call(js, bucket, key, data, len, create_step, "create", out, file,
                   line, &k, &op);
  return rc != 0 ? rc : kv_start(op, k, false, 0, false, out);
}

int uvp_nats_kv_update_at(uvp_nats_js_t *js, const char *bucket,
                          const char *key, const void *data, size_t len,
                          uint64_t revision, uvp_promise_t **out,
                          const char *file, int line) {
  kvop_t *k;
  js_op_t *op;
  int rc = kv_call(js, bucket, key, data, len, ack_step, "update", out, file,
                   line, &k, &op);
  return rc != 0 ? rc : kv_start(op, k, false, revision, false, out);
}

int uvp_nats_kv_delete_at(uvp_nats_js_t *js, const char *bucket,
                          const char *key, uint64_t revision,
                          uvp_promise_t **out, const char *file, int line) {
  kvop_t *k;
  js_op_t *op;
  int rc = kv_call(js, bucket, key, NULL, 0, ack_step, "delete", out, file,
                   line, &k, &op);
  return rc != 0 ? rc
                 : kv_start(op, k, false, revision > 0 ? revision : UINT64_MAX,
                            true, out);
}
