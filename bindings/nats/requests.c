/* uvp-nats: requests, their reply inbox and their timer (uvp-nats.c says
 * how it fits). */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "nats-internal.h"

/* ---- requests ------------------------------------------------------------ */

/* A request in flight.  What a burst holds is mostly these records, so a
 * record keeps only what every request needs while it waits: its subject
 * is shared (subj_t), its message made while uvp_nats_open connects is
 * apart (held_t), its site is its promise's, its connection is its work
 * record's data, and the one list of every request is the timer's
 * (internals 21.13). */
struct req_s {
  uvp_promise_t *p; /* ours */
  uint64_t id;
  uint64_t expire_ms;
  req_t *hnext;         /* hash chain */
  req_t *tprev, *tnext; /* every request, by expiry, then oldest first */
  uvp_inflight_t w;     /* its work in flight (data: the connection) */
  subj_t *subject;
  uvp_span_t *span;  /* its CLIENT or PRODUCER span (trace.c), or NULL */
  uint32_t start_ms; /* uv_now's low bits: the dump's age, to 49 days */
  bool tell;         /* sent: a cut tells the serving side */
  bool held;         /* made while uvp_nats_open connects: sent then */
};
_Static_assert(sizeof(void *) != 8 || sizeof(req_t) <= 120,
               "a record fits a 128-byte malloc chunk (internals 21.13)");

/* A subject, shared by the requests to it and kept as b->subj for the
 * next ones: a burst to one subject keeps one copy, where a copy in each
 * record was 48 of its bytes.  Blocks for subjects under SUBJ_SMALL bytes
 * are of one size and go back to a free list, as records do, so that a
 * program alternating subjects allocates nothing either once warm. */
struct subj_s {
  subj_t *next; /* on the free list */
  size_t refs;  /* its requests, and one while it is b->subj */
  size_t len;
  char s[];
};

/* A request made while uvp_nats_open connects: its message, sent by
 * send_held in the order the requests were made. */
struct held_s {
  held_t *next;
  req_t *r;
  natsMsg *m;
  uint64_t end_ms; /* when its caller stops waiting */
};

/* Ids are consecutive and replies come mostly in the order of their
 * requests: the id itself is the bucket, so a burst's replies walk the
 * buckets (and the records, made in the same order) forward, where a
 * scattering hash missed the cache on both, every reply. */
static size_t req_bucket(const uvp_nats_t *b, uint64_t id) {
  return (size_t)id & (b->nbuckets - 1);
}

static req_t *req_find(const uvp_nats_t *b, uint64_t id) {
  if (b->nbuckets == 0)
    return NULL;
  for (req_t *r = b->buckets[req_bucket(b, id)]; r != NULL; r = r->hnext)
    if (r->id == id)
      return r;
  return NULL;
}

static req_t *req_of(uvp_inflight_t *w) {
  return (req_t *)(void *)((char *)w - offsetof(req_t, w));
}

/* Records go back to a free list of the connection's when they end (at
 * most POOL_MAX of them, then to malloc), and so do small subjects'
 * blocks: a program that keeps a few hundred requests in flight makes
 * them without malloc.  A burst of more gives them back to malloc past
 * that, where the replies that come find them again. */
enum { POOL_MAX = 256, SUBJ_SMALL = 32 };

static void subj_put(uvp_nats_t *b, subj_t *u) {
  if (u == NULL || --u->refs > 0)
    return;
  if (u->len >= SUBJ_SMALL || b->subj_pooled >= POOL_MAX) {
    free(u);
    return;
  }
  u->next = b->subj_pool;
  b->subj_pool = u;
  b->subj_pooled++;
}

/* The subject s (n bytes), shared: b->subj if it is s, else a new one
 * that becomes b->subj.  NULL: no memory. */
static subj_t *subj_take(uvp_nats_t *b, const char *s, size_t n) {
  subj_t *u = b->subj;
  if (u != NULL && u->len == n && memcmp(u->s, s, n) == 0) {
    u->refs++;
    return u;
  }
  if (n < SUBJ_SMALL && (u = b->subj_pool) != NULL) {
    b->subj_pool = u->next;
    b->subj_pooled--;
  } else if ((u = malloc(sizeof(*u) + (n < SUBJ_SMALL ? SUBJ_SMALL : n + 1))) ==
             NULL) {
    return NULL;
  }
  memcpy(u->s, s, n);
  u->s[n] = '\0';
  u->len = n;
  u->refs = 2; /* the request's and b->subj's */
  subj_put(b, b->subj);
  b->subj = u;
  return u;
}

static req_t *req_alloc(uvp_nats_t *b) {
  req_t *r = b->req_pool;
  if (r != NULL) {
    b->req_pool = r->hnext;
    b->req_pooled--;
  } else if ((r = malloc(sizeof(*r))) == NULL) {
    return NULL;
  }
  memset(r, 0, sizeof(*r));
  return r;
}

static void req_free(uvp_nats_t *b, req_t *r) {
  subj_put(b, r->subject);
  if (b->req_pooled >= POOL_MAX) {
    free(r);
    return;
  }
  r->hnext = b->req_pool;
  b->req_pool = r;
  b->req_pooled++;
}

/* The teardown: every request has ended. */
static void reqs_free(uvp_nats_t *b) {
  for (req_t *r = b->req_pool, *next; r != NULL; r = next) {
    next = r->hnext;
    free(r);
  }
  subj_put(b, b->subj);
  for (subj_t *u = b->subj_pool, *next; u != NULL; u = next) {
    next = u->next;
    free(u);
  }
  b->req_pool = NULL;
  b->subj = b->subj_pool = NULL;
  b->req_pooled = b->subj_pooled = 0;
}

/* r's message, made while uvp_nats_open connects, waits for send_held. */
static int held_add(uvp_nats_t *b, req_t *r, natsMsg *m, uint64_t end_ms) {
  held_t *h = malloc(sizeof(*h));
  if (h == NULL)
    return UV_ENOMEM;
  *h = (held_t){.next = NULL, .r = r, .m = m, .end_ms = end_ms};
  if (b->held_last != NULL)
    b->held_last->next = h;
  else
    b->held_first = h;
  b->held_last = h;
  r->held = true;
  return 0;
}

/* r ends before its held message went: the message goes with it. */
static void held_drop(uvp_nats_t *b, req_t *r) {
  if (!r->held)
    return;
  held_t *h = b->held_first, *prev = NULL;
  for (; h->r != r; h = h->next)
    prev = h;
  if (prev != NULL)
    prev->next = h->next;
  else
    b->held_first = h->next;
  if (b->held_last == h)
    b->held_last = prev;
  uvp_nats__msg_free(h->m);
  free(h);
  r->held = false;
}

/* The hash with n buckets (a power of two), its entries moved over. */
static int req_rehash(uvp_nats_t *b, size_t n) {
  req_t **nb = calloc(n, sizeof(*nb));
  if (nb == NULL)
    return UV_ENOMEM;
  req_t **old = b->buckets;
  size_t oldn = b->nbuckets;
  b->buckets = nb;
  b->nbuckets = n;
  for (size_t i = 0; i < oldn; i++)
    for (req_t *r = old[i], *next; r != NULL; r = next) {
      next = r->hnext;
      size_t k = req_bucket(b, r->id);
      r->hnext = nb[k];
      nb[k] = r;
    }
  free(old);
  return 0;
}

/* Room for one more in the hash: a bucket per request in flight at most
 * (chains of one or two), grown twice as large when full. */
static int req_room(uvp_nats_t *b) {
  if (b->stats.in_flight + 1 <= b->nbuckets)
    return 0;
  return req_rehash(b, b->nbuckets ? b->nbuckets * 2 : 64);
}

/* A burst's hash is a quarter its size once an eighth of it is in use:
 * 8 bytes a bucket that the replies held afterwards do not pay for. */
static void req_shrink(uvp_nats_t *b) {
  if (b->nbuckets > 64 && b->stats.in_flight < b->nbuckets / 8)
    (void)req_rehash(b, b->nbuckets / 4); /* no memory: it stays */
}

static void on_timer(uv_timer_t *t);

static void timer_arm(uvp_nats_t *b) {
  if (b->tfirst == NULL) {
    uv_timer_stop(&b->timer);
    return;
  }
  uint64_t now = uv_now(b->loop);
  uint64_t at = b->tfirst->expire_ms;
  uv_timer_start(&b->timer, on_timer, at > now ? at - now : 0, 0);
}

static void req_link(uvp_nats_t *b, req_t *r) {
  size_t k = req_bucket(b, r->id);
  r->hnext = b->buckets[k];
  b->buckets[k] = r;
  req_t *t = b->tlast; /* sorted by expiry, from the tail */
  while (t != NULL && t->expire_ms > r->expire_ms)
    t = t->tprev;
  r->tprev = t;
  r->tnext = t != NULL ? t->tnext : b->tfirst;
  if (r->tnext != NULL)
    r->tnext->tprev = r;
  else
    b->tlast = r;
  if (t != NULL)
    t->tnext = r;
  else
    b->tfirst = r;
  b->stats.in_flight++;
  if (b->tfirst == r)
    timer_arm(b);
  uvp_nats__waiting_add(b, 1);
}

static void req_unlink(uvp_nats_t *b, req_t *r) {
  req_t **pp = &b->buckets[req_bucket(b, r->id)];
  while (*pp != r)
    pp = &(*pp)->hnext;
  *pp = r->hnext;
  bool was_first = b->tfirst == r;
  if (r->tprev != NULL)
    r->tprev->tnext = r->tnext;
  else
    b->tfirst = r->tnext;
  if (r->tnext != NULL)
    r->tnext->tprev = r->tprev;
  else
    b->tlast = r->tprev;
  b->stats.in_flight--;
  req_shrink(b);
  if (was_first)
    timer_arm(b);
  uvp_nats__waiting_add(b, -1);
}

/* Settle r's promise (rc 0: with msg as its value; else msg, if any, is
 * the rejection's payload), end its work in flight, and let it go. */
static void req_end(uvp_nats_t *b, req_t *r, int rc, natsMsg *msg) {
  req_unlink(b, r);
  uvp_nats__trace_end(b->ctx, &r->span, rc);
  held_drop(b, r);
  uvp_promise_t *p = r->p;
  if (rc == 0)
    uvp_promise_resolve(p, msg, uvp_nats__msg_free);
  else
    uvp_promise_reject(p, rc, msg, msg != NULL ? uvp_nats__msg_free : NULL);
  uvp_inflight_end(&r->w);
  req_free(b, r);
  uvp_promise_release(p); /* may run the program's code: r is gone */
}

static void on_timer(uv_timer_t *t) {
  uvp_nats_t *b = t->data;
  uint64_t now = uv_now(b->loop);
  while (b->tfirst != NULL && b->tfirst->expire_ms <= now) {
    b->stats.timeouts++;
    req_end(b, b->tfirst, UV_ETIMEDOUT, NULL);
  }
}

/* A reply subject: "<inbox>.<id>". */
enum { REPLY_MAX = sizeof(((uvp_nats_t *)0)->inbox) + 24 };
static void reply_subject(const uvp_nats_t *b, uint64_t id, char *buf);

/* ---- cancel tokens ------------------------------------------------------- *
 * A cancel names its request by the reply subject, which anyone who reads
 * the service's subject sees, and which names the request wherever it is
 * logged: "<inbox>.<id>" alone let any client on the server cut every
 * request (issue 71).  So a request that may be cancelled carries a token
 * of 128 bits only its caller knows, in UVP_NATS_CANCEL_TOKEN_HEADER, and
 * its cancel carries it too; the service cuts nothing for a cancel whose
 * token is not the request's.  The token is SipHash-2-4 of the
 * request's id under the connection's random key (twice, for 128 bits):
 * nothing kept per request, and one token seen (by a worker that served
 * the request) says nothing of another.  After 0.3.0, main moved it into
 * the reply subject for a while, because a header then was a second entry
 * in nats.c's header map (some 1 700 instructions a request); but every
 * reply then brought the token back, and nats.c parses a reply's subject
 * at about 36 instructions a byte.  Since the binding writes a request's
 * headers as bytes (msg.c), the header costs its bytes alone and the
 * reply brings back nothing: back in the header, the form every service
 * since 0.3.0 takes (internals 21.12). */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                               \
  do {                                                                         \
    v0 += v1;                                                                  \
    v1 = ROTL(v1, 13);                                                         \
    v1 ^= v0;                                                                  \
    v0 = ROTL(v0, 32);                                                         \
    v2 += v3;                                                                  \
    v3 = ROTL(v3, 16);                                                         \
    v3 ^= v2;                                                                  \
    v0 += v3;                                                                  \
    v3 = ROTL(v3, 21);                                                         \
    v3 ^= v0;                                                                  \
    v2 += v1;                                                                  \
    v1 = ROTL(v1, 17);                                                         \
    v1 ^= v2;                                                                  \
    v2 = ROTL(v2, 32);                                                         \
  } while (0)

/* SipHash-2-4 of one 8-byte word m under key k. */
static uint64_t siphash_u64(const uint64_t k[2], uint64_t m) {
  uint64_t v0 = k[0] ^ 0x736f6d6570736575ull, v1 = k[1] ^ 0x646f72616e646f6dull;
  uint64_t v2 = k[0] ^ 0x6c7967656e657261ull, v3 = k[1] ^ 0x7465646279746573ull;
  uint64_t last = (uint64_t)8 << 56;
  v3 ^= m;
  SIPROUND;
  SIPROUND;
  v0 ^= m;
  v3 ^= last;
  SIPROUND;
  SIPROUND;
  v0 ^= last;
  v2 ^= 0xff;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  SIPROUND;
  return v0 ^ v1 ^ v2 ^ v3;
}

/* Every byte's two lowercase hex digits: a token is written a byte at a
 * time (every request that may be cancelled writes one). */
#define HEXD(n) (char)((n) < 10 ? '0' + (n) : 'a' + (n)-10)
#define HEX2(b) HEXD((b) >> 4), HEXD((b)&15)
#define HEX8(b)                                                                \
  HEX2(b), HEX2((b) + 1), HEX2((b) + 2), HEX2((b) + 3), HEX2((b) + 4),         \
      HEX2((b) + 5), HEX2((b) + 6), HEX2((b) + 7)
#define HEX64(b)                                                               \
  HEX8(b), HEX8((b) + 8), HEX8((b) + 16), HEX8((b) + 24), HEX8((b) + 32),      \
      HEX8((b) + 40), HEX8((b) + 48), HEX8((b) + 56)
static const char hex2[512] = {HEX64(0), HEX64(64), HEX64(128), HEX64(192)};
_Static_assert(UVP_NATS_CANCEL_TOKEN_LEN == 2 * 2 * sizeof(uint64_t),
               "a token: two 64-bit hashes in hex");

/* Request id's token: UVP_NATS_CANCEL_TOKEN_LEN hex digits and a NUL. */
static void cancel_token(const uvp_nats_t *b, uint64_t id, char *buf) {
  uint64_t h[2] = {siphash_u64(b->cancel_key, id << 1),
                   siphash_u64(b->cancel_key, id << 1 | 1)};
  for (int w = 0; w < 2; w++)
    for (int i = 0; i < 8; i++)
      memcpy(buf + w * 16 + i * 2, hex2 + 2 * ((h[w] >> (56 - 8 * i)) & 0xff),
             2);
  buf[UVP_NATS_CANCEL_TOKEN_LEN] = '\0';
}

/* Tell whoever serves r that its caller gave up: one publish on
 * UVP_NATS_CANCEL_PREFIX + its subject, every instance of the service
 * listening (uvp-nats.h says what it costs and promises), the reply
 * subject naming the request, its token and the cut's cause in
 * headers.  Only here,
 * on a cut: the request's own path pays nothing for it. */
static void cancel_send(uvp_nats_t *b, const req_t *r) {
  static const char prefix[] = UVP_NATS_CANCEL_PREFIX;
  size_t n = r->subject->len;
  char local[128], *subject = local;
  if (sizeof(prefix) + n > sizeof(local) &&
      (subject = malloc(sizeof(prefix) + n)) == NULL)
    return;
  memcpy(subject, prefix, sizeof(prefix) - 1);
  memcpy(subject + sizeof(prefix) - 1, r->subject->s, n + 1);
  char reply[REPLY_MAX], cause[256], token[UVP_NATS_CANCEL_TOKEN_LEN + 1];
  reply_subject(b, r->id, reply);
  cancel_token(b, r->id, token);
  (void)uvp_cause_format(uvp_promise_cause(r->p), cause, sizeof(cause));
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, subject, NULL, reply, (int)strlen(reply));
  if (s == NATS_OK)
    s = natsMsgHeader_Set(m, UVP_NATS_CANCEL_TOKEN_HEADER, token);
  if (s == NATS_OK && cause[0] != '\0')
    s = natsMsgHeader_Set(m, UVP_NATS_CAUSE_HEADER, cause);
  if (s == NATS_OK)
    (void)uvp_nats__msg_send(b, m, UINT64_MAX); /* at most once, as said */
  else
    uvp_nats__msg_free(m);
  if (subject != local)
    free(subject);
}

/* The promise was cut (cancel, deadline, uvp_ctx_close): it has
 * rejected; drop the entry (the inbox is shared: no UNSUB), and tell the
 * serving side if the request went out. */
static void on_req_cancel(uvp_inflight_t *w, int code) {
  req_t *r = req_of(w);
  uvp_nats_t *b = w->data;
  uvp_promise_t *p = r->p;
  (void)code;
  if (r->tell && !r->held && b->state == S_OPEN)
    cancel_send(b, r);
  req_unlink(b, r);
  uvp_nats__trace_end(b->ctx, &r->span, code);
  held_drop(b, r);
  b->stats.cancelled++;
  uvp_inflight_end(&r->w);
  req_free(b, r);
  uvp_promise_release(p);
}

/* The one place a request is named: the task dump and uvp_nats_dump. */
static int req_describe(uvp_inflight_t *w, char *buf, size_t cap) {
  const req_t *r = req_of(w);
  return snprintf(buf, cap, "request %s #%" PRIu64, r->subject->s, r->id);
}

/* A request is work in flight (uvp_inflight_start: the scope's deadline,
 * its group, the task dump, uvp_ctx_close), holding a virtual clock to
 * the loop's pace unless UVP_NATS_REQUEST_NO_HOLD (then "idle"). */
static const uvp_inflight_class_t req_class = {"NATS", on_req_cancel,
                                               req_describe, 0};
static const uvp_inflight_class_t req_class_nohold = {
    "NATS", on_req_cancel, req_describe, UVP_INFLIGHT_IDLE};

/* The decimal number that is all of s (a reply subject's last token), at
 * most 19 digits (no overflow). */
static bool id_parse(const char *s, uint64_t *out) {
  uint64_t v = 0;
  const char *c = s;
  for (; *c >= '0' && *c <= '9' && c - s < 19; c++)
    v = v * 10 + (uint64_t)(*c - '0');
  *out = v;
  return c != s && *c == '\0';
}

static void on_reply(uvp_nats_t *b, natsMsg *m) {
  const char *subj = natsMsg_GetSubject(m);
  req_t *r = NULL;
  uint64_t id;
  if (subj != NULL && strncmp(subj, b->inbox, b->inbox_len) == 0 &&
      subj[b->inbox_len] == '.' && id_parse(subj + b->inbox_len + 1, &id))
    r = req_find(b, id);
  if (r == NULL) {
    b->stats.late++;
    uvp_nats__msg_free(m);
    return;
  }
  if (natsMsg_IsNoResponders(m)) {
    uvp_nats__msg_free(m);
    b->stats.no_responders++;
    req_end(b, r, UVP_NATS_ENORESPONDERS, NULL);
    return;
  }
  b->stats.replies++;
  const char *err = uvp_nats__error_header(m);
  if (err != NULL) { /* the worker's handler failed: that code */
    req_end(b, r, uvp_nats__code_of_name(err), m);
    return;
  }
  req_end(b, r, 0, m);
}

/* Every request in flight ends with rc (no more replies will come). */
static void reqs_fail(uvp_nats_t *b, int rc, bool all) {
  (void)all; /* a request is nothing but its wait */
  while (b->tfirst != NULL) {
    b->stats.cancelled++;
    req_end(b, b->tfirst, rc, NULL);
  }
}

/* A new request and its promise, not started yet. */
static int req_new(uvp_nats_t *b, const char *subject, req_t **out,
                   const char *file, int line) {
  req_t *r = req_alloc(b);
  if (r == NULL)
    return UV_ENOMEM;
  if ((r->subject = subj_take(b, subject, strlen(subject))) == NULL) {
    req_free(b, r);
    return UV_ENOMEM;
  }
  r->id = ++b->next_id;
  r->w.data = b;
  int rc = uvp_promise_new_at(b->ctx, &r->p, file, line);
  if (rc != 0) {
    req_free(b, r);
    return rc;
  }
  *out = r;
  return 0;
}

/* "<inbox>.<id>" into buf (REPLY_MAX bytes). */
static void reply_subject(const uvp_nats_t *b, uint64_t id, char *buf) {
  char digits[24];
  char *end = digits + sizeof(digits), *d = uvp_nats__u64_digits(end, id);
  memcpy(buf, b->inbox, b->inbox_len);
  buf[b->inbox_len] = '.';
  char *at = buf + b->inbox_len + 1;
  memcpy(at, d, (size_t)(end - d));
  at += end - d;
  *at = '\0';
}

static void send_held(uvp_nats_t *b);

/* A publish refused: the requests to that subject end (a reply to a
 * subscription refused: the inbox's, every request).  A request's
 * subject has no wildcard: a plain compare. */
static void reqs_denied(uvp_nats_t *b, bool publish, const char *subject,
                        const char *why) {
  bool inbox = !publish && strncmp(subject, b->inbox, b->inbox_plen) == 0 &&
               subject[b->inbox_plen] == '.';
  uint64_t last = b->next_id; /* not those made meanwhile by a handler */
  for (req_t *r = b->tfirst, *next; r != NULL; r = next) {
    next = r->tnext;
    if (r->id <= last &&
        (inbox || (publish && strcmp(r->subject->s, subject) == 0))) {
      b->stats.cancelled++;
      req_end(b, r, UV_EACCES, uvp_nats__why_msg(why));
      next = b->tfirst; /* req_end may run the program's code */
    }
  }
}

static const uvp_nats__layer_t reqs_layer = {.msg = on_reply,
                                             .up = send_held,
                                             .fail = reqs_fail,
                                             .denied = reqs_denied,
                                             .free = reqs_free};

int uvp_nats_request_at(uvp_nats_t *b, const char *subject, const void *data,
                        size_t len, const uvp_nats_request_opts_t *opts,
                        uvp_promise_t **out, const char *file, int line) {
  if (b == NULL || out == NULL || !uvp_nats__subject_ok(subject, false) ||
      (data == NULL && len > 0))
    return UV_EINVAL;
  bool connecting = b->state == S_CONNECTING; /* uvp_nats_open's */
  if (b->state != S_OPEN && !connecting)
    return UVP_ECLOSED;
  uvp_nats__layer_set(b, UVP_NATS__REQS, &reqs_layer);
  int rc = req_room(b);
  req_t *r;
  if (rc != 0 || (rc = req_new(b, subject, &r, file, line)) != 0)
    return rc;
  uint64_t timeout = opts != NULL && opts->timeout_ms > 0
                         ? opts->timeout_ms
                         : UVP_NATS_REQUEST_TIMEOUT_DEFAULT;
  uint64_t left = uvp_deadline_left(b->ctx);
  bool tell =
      left > 0 && !(opts != NULL && opts->flags & UVP_NATS_REQUEST_NO_CANCEL);
  char reply[REPLY_MAX], token[UVP_NATS_CANCEL_TOKEN_LEN + 1];
  reply_subject(b, r->id, reply);
  if (tell)
    cancel_token(b, r->id, token);
  bool hold = opts == NULL || !(opts->flags & UVP_NATS_REQUEST_NO_HOLD);
  bool stamp =
      opts == NULL || !(opts->flags & UVP_NATS_REQUEST_NO_TIMEOUT_HEADER);
  const char *const *headers = opts != NULL ? opts->headers : NULL;
  rc = uvp_inflight_start(b->ctx, &r->w, r->p,
                          hold ? &req_class : &req_class_nohold);
  uint64_t wait = !stamp ? UINT64_MAX : left < timeout ? left : timeout;
  int flags = opts != NULL ? opts->flags : 0; /* a trace context: a span */
  bool traced = !(flags & UVP_NATS__REQUEST_UNTRACED) &&
                uvp_tracectx_get(b->ctx, NULL, NULL) == 0;
  /* a passed deadline cuts it once started: nothing is sent then; while
   * connecting, the message waits for send_held, which stamps it */
  natsMsg *m = NULL;
  if (rc == 0 && left > 0)
    rc = uvp_nats__msg_make_request(
        &m, subject, reply, data, len, headers, connecting ? UINT64_MAX : wait,
        tell ? token : NULL, !connecting && !traced);
  if (rc == 0 && left > 0 && traced)
    rc = uvp_nats__trace_out(b->ctx,
                             flags & UVP_NATS__REQUEST_PRODUCER
                                 ? UVP_SPAN_PRODUCER
                                 : UVP_SPAN_CLIENT,
                             subject, m, &r->span);
  uint64_t now = uv_now(b->loop);
  if (rc == 0 && left > 0) {
    if (connecting)
      rc = held_add(b, r, m, wait == UINT64_MAX ? UINT64_MAX : now + wait);
    else
      rc = uvp_nats__msg_send(b, m, UINT64_MAX);
    if (rc == 0 || !connecting)
      m = NULL; /* held, or the send's */
  }
  if (rc != 0) {
    uvp_nats__trace_end(b->ctx, &r->span, rc);
    uvp_inflight_end(&r->w); /* a record not started: nothing */
    uvp_nats__msg_free(m);
    uvp_promise_release(r->p);
    req_free(b, r);
    return rc;
  }
  r->start_ms = (uint32_t)now;
  r->expire_ms = now + (left > 0 ? timeout : 0);
  r->tell = tell;
  req_link(b, r);
  b->stats.requests++;
  *out = uvp_promise_retain(r->p);
  return 0;
}

/* uvp_nats_open's connection is up: the requests made meanwhile go, in
 * the order they were made, each saying how long its caller still waits. */
static void send_held(uvp_nats_t *b) {
  uint64_t now = uv_now(b->loop);
  for (held_t *h; (h = b->held_first) != NULL;) {
    b->held_first = h->next;
    if (b->held_first == NULL)
      b->held_last = NULL;
    req_t *r = h->r;
    natsMsg *m = h->m;
    uint64_t end = h->end_ms;
    r->held = false;
    free(h);
    int rc = uvp_nats__msg_send(b, m,
                                end == UINT64_MAX ? UINT64_MAX
                                : end > now       ? end - now
                                                  : 1);
    if (rc != 0) {
      b->stats.cancelled++;
      req_end(b, r, rc, NULL);
    }
  }
}

static int by_id(const void *x, const void *y) {
  uint64_t a = (*(req_t *const *)x)->id, b = (*(req_t *const *)y)->id;
  return a < b ? -1 : a > b;
}

/* The requests, oldest first: the timer's list (by expiry) sorted by id,
 * which counts up as they are made. */
int uvp_nats_dump(uvp_nats_t *b, FILE *stream) {
  if (b == NULL || stream == NULL)
    return UV_EINVAL;
  size_t n = b->stats.in_flight, i = 0;
  req_t **v = n > 0 ? malloc(n * sizeof(*v)) : NULL;
  if (n > 0 && v == NULL)
    return UV_ENOMEM;
  for (req_t *r = b->tfirst; r != NULL && i < n; r = r->tnext)
    v[i++] = r;
  if (i > 1) /* v is NULL when there is none */
    qsort(v, i, sizeof(*v), by_id);
  uint32_t now = (uint32_t)uv_now(b->loop);
  for (size_t k = 0; k < i; k++) {
    const char *file;
    int line;
    uvp_promise_site(v[k]->p, &file, &line);
    fprintf(stream,
            "NATS request %s #%" PRIu64 " for %" PRIu32
            " ms (promise at %s:%d)\n",
            v[k]->subject->s, v[k]->id, (uint32_t)(now - v[k]->start_ms),
            file != NULL ? file : "?", line);
  }
  free(v);
  return (int)i;
}

natsConnection *uvp_nats_connection(const uvp_nats_t *b) {
  return b != NULL ? b->conn : NULL;
}
