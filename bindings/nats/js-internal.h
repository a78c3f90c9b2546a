/* JetStream's own declarations, shared by its files (js.c, pull.c, kv.c,
 * kv-watch.c, dpromise.c, js-serve.c; not installed).  js.c's opening
 * comment is the design.  The floors: js.c stands on the connection's
 * requests.c, subs.c and msg.c; pull.c and kv.c on js.c; kv-watch.c on
 * kv.c; dpromise.c on both; js-serve.c on pull.c. */
#ifndef UVP_NATS_JS_INTERNAL_H
#define UVP_NATS_JS_INTERNAL_H

#include <jansson.h>

#include "nats-internal.h"
#include "uvp-nats-js.h"

/* Something made from a context that waits on the connection (a pull, a
 * watch, a service): told when it closes, as the connection's floors are
 * (uvp_nats__layer_t's fail). */
typedef struct js_obj_s js_obj_t;
struct js_obj_s {
  void (*fail)(js_obj_t *o, int rc, bool all);
  js_obj_t *prev, *next;
  bool linked;
};

struct uvp_nats_js_s {
  uvp_nats_t *b; /* NULL once the connection closes */
  uvp_ctx_t *ctx;
  char prefix[80]; /* "$JS.API" */
  uint64_t timeout_ms;
  uint64_t heartbeat_ms; /* durable promises' watches' */
  size_t max_reply;      /* the program's cap; 0: the server's max_payload */
  size_t refs; /* the program's (until uvp_nats_js_free), and each op's,
                  object's and message's */
  bool freed;
  js_obj_t *objs;
  uvp_nats_js_t *prev, *next; /* the connection's (b->js) */
};

void uvp_nats__js_retain(uvp_nats_js_t *js);
void uvp_nats__js_release(uvp_nats_js_t *js);
/* 0 if js can send now, else the code a call answers */
int uvp_nats__js_usable(const uvp_nats_js_t *js);
void uvp_nats__js_obj_link(uvp_nats_js_t *js, js_obj_t *o);
void uvp_nats__js_obj_unlink(uvp_nats_js_t *js, js_obj_t *o);
/* Unsubscribe s soon, not now (maybe inside its own delivery); what
 * still comes for it is dropped.  s is not the caller's any more. */
void uvp_nats__js_sub_drop(uvp_nats_sub_t *s);

/* ---- an API call: one request after another for one promise ----------- *
 * An op owns a promise (a record of work in flight of class "JetStream",
 * described by `what`) and sends requests one at a time; each reply goes
 * to its step, which sends the next or settles the op.  The step gets
 * the request's outcome: rc 0 and the reply (borrowed for the call), or
 * its rejection code.  An op may also have no promise of its own (an
 * internal call: `done` instead), then it is no record. */
typedef struct js_op_s js_op_t;
typedef void (*js_step_fn)(js_op_t *op, int rc, natsMsg *m);

struct js_op_s {
  uvp_nats_js_t *js;
  uvp_promise_t *p; /* ours; NULL once settled, or for an internal op */
  uvp_promise_t *r; /* the request in flight, or NULL */
  uvp_inflight_t w;
  js_step_fn step;
  /* an internal op's end (rc, value); NULL for a promise's */
  void (*done)(js_op_t *op, int rc, void *value, uvp_free_cb vfree);
  void *data; /* the step's own: data_free(data) with the op */
  void (*data_free)(void *data);
  unsigned holds; /* handlers registered on requests, and the start */
  bool cut;       /* p was cut: the requests' answers are not wanted */
  bool idle;      /* a long wait: UVP_INFLIGHT_IDLE */
  bool producer;  /* a publish: carries the trace context (PRODUCER) */
  int state;      /* the step's own */
  const char *file;
  int line;
  char what[160]; /* "publish JOBS.new" */
};

int uvp_nats__js_op_new(uvp_nats_js_t *js, js_step_fn step, const char *file,
                        int line, js_op_t **out, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Free an op that has not started (or whose start failed: done then). */
void uvp_nats__js_op_drop(js_op_t *op);
/* The first request; then *out (if not NULL) gets a reference to the
 * promise.  On error nothing is started and the op is gone. */
int uvp_nats__js_op_start(js_op_t *op, const char *subject, const void *data,
                          size_t len, const char *const *headers,
                          uvp_promise_t **out);
/* The next request, from a step; on error the op ends with it. */
void uvp_nats__js_op_send(js_op_t *op, const char *subject, const void *data,
                          size_t len, const char *const *headers);
/* An API request: PREFIX.api (printf-style), with body (consumed; NULL:
 * empty), as op_send or op_start (start: out). */
int uvp_nats__js_op_api(js_op_t *op, bool start, uvp_promise_t **out,
                        json_t *body, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* An internal op's owner lets it go: its request is cancelled and done
 * is not called. */
void uvp_nats__js_op_cancel(js_op_t *op);
/* The op ends: rc 0 fulfils with value, else rejects with rc and payload
 * (the payload's free: free). */
void uvp_nats__js_op_end(js_op_t *op, int rc, void *value, uvp_free_cb vfree,
                         void *payload);

/* ---- replies ----------------------------------------------------------- */

/* A reply's JSON (*out, yours), or the code of its API error (with
 * *err, a uvp_nats_js_error_t to free, if err is not NULL). */
int uvp_nats__js_json(natsMsg *m, json_t **out, uvp_nats_js_error_t **err);
/* JSON deeper than this the binding does not parse (uvp_nats__json_costly). */
#define JSON_MAX_DEPTH 64
/* True if the n bytes at d hold more than UVP_NATS_JS_MAX_JSON_VALUES
 * values or nest deeper than JSON_MAX_DEPTH: too costly to parse on the
 * loop (a scan, no allocation). */
bool uvp_nats__json_costly(const char *d, size_t n);
/* A fresh inbox under b's prefix into buf (uvp-nats.c). */
int uvp_nats__inbox_new(const uvp_nats_t *b, char *buf, size_t cap);
/* The largest reply js takes (its data): max_reply, or the server's
 * max_payload; 0 while unknown (not connected yet: nothing to cap). */
size_t uvp_nats__js_cap(const uvp_nats_js_t *js);
/* A message's status ("404"), as a number; 0 if none. */
int uvp_nats__js_status(natsMsg *m);
/* The code for an API error's code and err_code. */
int uvp_nats__js_code(int code, int err_code);
/* Milliseconds since the Unix epoch. */
uint64_t uvp_nats__js_unix_ms(void);
/* A name a stream, consumer or bucket may have. */
bool uvp_nats__js_name_ok(const char *s);
/* A published message's acknowledgement (PubAck JSON), as a
 * uvp_nats_js_ack_t (*out, to free); else the code (*err as above). */
int uvp_nats__js_puback(natsMsg *m, uvp_nats_js_ack_t **out,
                        uvp_nats_js_error_t **err);
/* Publish with acknowledgement as the step's request: its headers. */
int uvp_nats__js_pub_headers(const uvp_nats_js_publish_opts_t *o, char ***out);
void uvp_nats__js_headers_free(char **h);
/* A delivery's $JS.ACK reply subject: its stream and consumer (not
 * terminated: lengths), and delivered, stream seq, consumer seq, time,
 * pending. */
bool uvp_nats__js_metadata(const char *reply, const char **stream, size_t *slen,
                           const char **consumer, size_t *clen,
                           uint64_t nums[5]);
/* A stream's info reply (STREAM.CREATE, STREAM.INFO) as a value. */
int uvp_nats__js_stream_info_of(json_t *j, uvp_nats_js_stream_info_t **out);
/* A JSON duration in nanoseconds, in ms. */
uint64_t uvp_nats__js_ms(json_t *j, const char *key);

/* ---- pulls (pull.c), for a service (js-serve.c) ------------------------ */

/* Takes a pull's messages instead of its waits (the taker's: finish it,
 * then uvp_nats__js_msg_free); NULL: the pull failed (the connection
 * closed, the consumer was deleted). */
typedef void (*uvp_nats__js_take_fn)(void *owner, uvp_nats_js_msg_t *m);
void uvp_nats__js_pull_take(uvp_nats_js_pull_t *pull, uvp_nats__js_take_fn take,
                            void *owner);
/* How many messages the taker wants now (asked as the limit allows). */
void uvp_nats__js_pull_want(uvp_nats_js_pull_t *pull, size_t want);
size_t uvp_nats__js_pull_limit(const uvp_nats_js_pull_t *pull);
void uvp_nats__js_pull_retain(uvp_nats_js_pull_t *pull);
void uvp_nats__js_pull_release(uvp_nats_js_pull_t *pull);
uvp_nats_js_t *uvp_nats__js_pull_js(const uvp_nats_js_pull_t *pull);
/* 0 if a service may take the pull: UV_EINVAL (served, or waited on),
 * UVP_ECLOSED. */
int uvp_nats__js_pull_usable(const uvp_nats_js_pull_t *pull);
/* A message's destructor: one nobody finished is given back (-NAK). */
void uvp_nats__js_msg_free(void *m);

/* ---- key-value (kv.c, kv-watch.c), for durable promises (dpromise.c) ---- */

/* A watch's entries go to see (the owner's to free) instead of its
 * waits; NULL and 0: caught up; NULL and rc < 0: it failed for good. */
typedef void (*uvp_nats__kv_see_fn)(void *owner, uvp_nats_kv_entry_t *e,
                                    int rc);
/* A watch of bucket's keys for see, made but not started: go starts it;
 * close it with uvp_nats_kv_watch_close (also from inside see). */
int uvp_nats__kv_watch_start(uvp_nats_js_t *js, const char *bucket,
                             const char *keys, int flags, uint64_t hb_ms,
                             uvp_nats__kv_see_fn see, void *owner,
                             uvp_nats_kv_watch_t **out);
void uvp_nats__kv_watch_go(uvp_nats_kv_watch_t *w);
/* An op's next request: the key's last entry (a direct get), or a
 * write (expected_rev UINT64_MAX: none; del: a deletion marker). */
void uvp_nats__kv_send_get(js_op_t *op, const char *bucket, const char *key);
void uvp_nats__kv_send_write(js_op_t *op, const char *bucket, const char *key,
                             const void *data, size_t len,
                             uint64_t expected_rev, bool del);
/* A direct get's reply as an entry (deletion markers too: see op);
 * UV_ENOENT for none. */
int uvp_nats__kv_entry_of(natsMsg *m, const char *bucket,
                          uvp_nats_kv_entry_t **out, uvp_nats_js_error_t **err);
/* A name a key may have (wild: a pattern). */
bool uvp_nats__kv_key_ok(const char *k, bool wild);
/* An entry of key in bucket, its value message m's data, its operation
 * m's KV-Operation header (kv-watch.c's deliveries, kv.c's gets); the
 * caller frees it.  NULL without memory. */
uvp_nats_kv_entry_t *uvp_nats__kv_entry_new(const char *bucket, const char *key,
                                            natsMsg *m, uint64_t revision,
                                            int64_t time_ns, uint64_t delta);

#define JS_NS 1000000ll /* nanoseconds in a millisecond */

#endif
