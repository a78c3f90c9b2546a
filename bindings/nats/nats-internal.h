/* The NATS binding's own declarations, shared by its files (not
 * installed): the binding's objects and the functions one file of it
 * calls in another, all named uvp_nats__*: never exported (the library
 * is built with hidden visibility), and out of a program's way when it
 * links the static library.  uvp-nats.c's opening comment is the design. */
#ifndef UVP_NATS_INTERNAL_H
#define UVP_NATS_INTERNAL_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nats-trace.h"
#include "uvp-nats.h"

enum {
  EV_ATTACH,
  EV_READ,
  EV_WRITE,
  EV_DETACH,
  EV_MSG,
  EV_CONN,
  EV_INBOX_DONE,
  EV_DENIED /* a permission violation: msg's data is nats.c's words */
};

typedef struct ev_s {
  struct ev_s *next;
  int type;
  int arg; /* add (READ, WRITE), the socket (ATTACH), the event (CONN) */
  natsConnection *conn; /* ATTACH */
  natsMsg *msg;         /* MSG */
} ev_t;

typedef struct poll_s {
  uv_poll_t h;
  uvp_nats_t *b;
  int fd; /* our duplicate of nats.c's socket */
} poll_t;

/* A request in flight, its subject and, while uvp_nats_open connects, its
 * message: requests.c's alone. */
typedef struct req_s req_t;
typedef struct subj_s subj_t;
typedef struct held_s held_t;
typedef struct waiter_s waiter_t;
struct waiter_s {
  uvp_nats_sub_t *s;
  uvp_promise_t *p; /* ours */
  waiter_t *prev, *next;
  uvp_inflight_t w; /* its work in flight (data: the wait) */
};

struct uvp_nats_sub_s {
  uvp_nats_t *b;
  natsSubscription *sub;
  char *subject, *queue;
  waiter_t *wfirst, *wlast;
  natsMsg *held; /* taken from nats.c while draining, for the next wait */
  uvp_promise_t *drain_p;
  bool draining;
  int64_t dropped; /* natsSubscription_GetDropped, as last counted */
  /* A service's subscription (serve.c): its messages go to the taker, not
   * to waits. */
  const struct uvp_nats__taker_s *taker;
  void *owner;
  uvp_nats_sub_t *prev, *next;
};

/* What takes a subscription's messages instead of its waits, as
 * uvp_nats_serve's service does: subs.c calls it without naming it. */
typedef struct uvp_nats__taker_s {
  void (*take)(void *owner, natsMsg *m); /* m is the owner's */
  /* nats.c's drain of the subscription is complete: the owner frees it */
  void (*drained)(void *owner);
  /* the subscription goes (rc < 0: the connection closes) */
  void (*gone)(void *owner, int rc);
} uvp_nats__taker_t;

struct served_s;

struct uvp_nats_svc_s {
  uvp_nats_t *b;
  uvp_nats_sub_t *sub;     /* NULL once drained or closed */
  uvp_nats_sub_t *cancels; /* UVP_NATS_CANCEL_PREFIX + subject, or NULL */
  uvp_group_t *g;
  uvp_nats_serve_opts_t o;
  size_t max_waiting;
  char worker[300];
  uvp_promise_t *drain_p;
  uvp_promise_t *deadline; /* the drain's deadline's handler, or NULL */
  uint64_t drain_at;       /* that deadline on uvp's clock (UINT64_MAX) */
  bool closed;             /* the connection is closing: no more replies */
  bool cut;                /* the drain's deadline has passed */
  bool joined; /* its group has joined: freed once nothing holds it */
  /* the requests held, waiting or running (serve.c): a list, oldest
   * first, and a hash by reply subject for the cancels */
  struct served_s *first, *last, **buckets;
  size_t nbuckets, held, waiting, running;
  size_t live; /* requests' records not yet freed (a cut fiber's too) */
  uvp_nats_serve_stats_ex_t stats;
};

/* A blocking nats.c call run on the thread pool for a promise. */
typedef struct job_s {
  uv_work_t w;
  uvp_nats_t *b;
  uvp_promise_t *p;  /* NULL once cancelled */
  uvp_inflight_t fl; /* the promise's work in flight (data: the job) */
  bool cut;          /* p was cut (cancel, deadline): the job runs on */
  int64_t timeout_ms;
  natsStatus s;
  int rc;
  natsConnection *conn; /* the connect job's, for the loop to take */
  int cut_rc;           /* why p was cut */
  char *err;            /* the connect's: nats.c's words for its failure */
  struct job_s *next;   /* flushes held while uvp_nats_open connects */
} job_t;

enum { S_CONNECTING, S_OPEN, S_DEAD, S_CLOSING };

/* The connection (uvp-nats.c) is the ground floor: requests.c and subs.c
 * stand on it and on msg.c, serve.c on them.  What the connection must
 * tell a floor above it goes through that floor's hooks, which it sets
 * (uvp_nats__layer_set) when a program first uses it: the connection
 * never names the files above it.  A hook may be NULL. */
typedef struct uvp_nats__layer_s {
  /* a message on the reply inbox (requests) */
  void (*msg)(uvp_nats_t *b, natsMsg *m);
  /* the loop served the socket or the queue: hand out what nats.c holds */
  void (*poll)(uvp_nats_t *b);
  /* uvp_nats_open's connection is up: what was asked meanwhile goes */
  void (*up)(uvp_nats_t *b);
  /* what waits ends with rc; with `all`, what was made goes too (the
   * connection closes), else it stays (nats.c gave up on the server) */
  void (*fail)(uvp_nats_t *b, int rc, bool all);
  /* nats.c dropped messages (a slow consumer): count them now */
  void (*count_dropped)(uvp_nats_t *b);
  /* messages dropped so far, counted or not */
  uint64_t (*dropped)(const uvp_nats_t *b);
  /* the server refused a publish to, or a subscription to, `subject`:
   * what it hit ends with UV_EACCES (`why`: nats.c's words) */
  void (*denied)(uvp_nats_t *b, bool publish, const char *subject,
                 const char *why);
  /* the connection's memory goes (everything has ended): so does what the
   * floor kept for its next uses */
  void (*free)(uvp_nats_t *b);
} uvp_nats__layer_t;

/* In the order the connection tells them what waits fails. */
enum { UVP_NATS__REQS, UVP_NATS__SUBS, UVP_NATS__JS, UVP_NATS__LAYERS };

struct uvp_nats_s {
  uvp_ctx_t *ctx;
  uv_loop_t *loop;
  uv_thread_t loop_thread;
  natsOptions *opts;
  natsConnection *conn;
  natsSubscription *inbox_sub;
  char inbox[128];              /* "_INBOX.<nuid>", or the program's prefix */
  size_t inbox_len, inbox_plen; /* its length, and its prefix's */
  uint64_t cancel_key[2];       /* SipHash's, from uv_random: requests.c */
  int flags;
  uvp_nats_event_cb on_event;
  void *arg;
  int state;
  /* the queue from nats.c's threads (lock) */
  uv_mutex_t lock;
  uv_async_t async;
  ev_t *qhead, *qtail, *qfree;
  ev_t *batch;              /* taken from the queue, not yet applied */
  ev_t *spent, *spent_tail; /* applied, for qfree at the next take */
  bool write_wanted;        /* nats.c's last write request, queued or not */
  /* the socket */
  poll_t *poll;
  bool poll_closing, attached;
  bool read_paused; /* nats.c's buffer past OUT_MAX: not reading */
  int fd, events;   /* events: what nats.c asked for */
  unsigned in_nats; /* inside natsConnection_Process*Event */
  size_t unsent;    /* bytes published since nats.c's buffer was empty */
  /* requests */
  uv_timer_t timer, drain_timer;
  req_t **buckets;
  size_t nbuckets;
  req_t *tfirst, *tlast; /* every request, by expiry */
  uint64_t next_id;
  req_t *req_pool; /* records that ended, for the next (on hnext) */
  size_t req_pooled;
  subj_t *subj;      /* the subject last requested, kept for the next */
  subj_t *subj_pool; /* small subjects' blocks, for the next */
  size_t subj_pooled;
  held_t *held_first, *held_last; /* requests made while connecting */
  size_t waiting; /* what keeps uv_run going: requests, waits, jobs */
  uvp_nats_sub_t *subs;
  size_t draining;
  size_t svcs; /* services whose group has not joined yet */
  /* teardown */
  job_t connect_job, close_job;
  job_t *held_flushes; /* asked for while connecting, started after */
  bool opened;         /* by uvp_nats_open: the program's from the start,
                          freed only after its uvp_nats_close */
  bool close_asked;    /* the program called uvp_nats_close */
  size_t jobs;         /* flush jobs running */
  bool connect_done;   /* the connect job returned, or was abandoned */
  /* The connect runs on a thread of the binding's (connect_thread), which
   * the loop may abandon (its bound passed, its promise cut, closed while
   * it connects): the loop then goes on without it, and the thread, once
   * nats.c lets it go, frees what it made; b's memory goes when both are
   * done with it.  Under lock: abandoned, returned (nats.c's connect
   * did: too late to abandon), ready (the outcome is the loop's to take),
   * thread_holds, loop_gone. */
  bool abandoned, returned, ready, thread_holds, loop_gone;
  uv_timer_t connect_timer; /* the connect's bound */
  uint64_t connect_bound_ms;
  char *connect_err; /* nats.c's words for a failed connect (open's) */
  char *denied;      /* the last permission violation (uvp_nats_denied) */
  bool close_started, close_done, got_closed, inbox_done, finished;
  unsigned handles; /* libuv handles not yet closed */
  uvp_nats_stats_t stats;
  const uvp_nats__layer_t *layers[UVP_NATS__LAYERS];
  struct uvp_nats_js_s *js; /* its JetStream contexts (js.c) */
};

/* uvp-nats.c: the connection, for the floors above it. */
void uvp_nats__layer_set(uvp_nats_t *b, int which, const uvp_nats__layer_t *l);
/* Destroys a natsMsg (NULL: nothing): freed in this thread, not later on
 * nats.c's collector's, when uvp_nats__msg_frees_here(m) (nats.c's layout,
 * checked on m). */
void uvp_nats__msg_free(void *m);
int uvp_nats__msg_frees_here(const void *m);
bool uvp_nats__subject_ok(const char *s, bool wild);
int uvp_nats__code_of_name(const char *name);
void uvp_nats__waiting_add(uvp_nats_t *b, int d);
void uvp_nats__maybe_finish(uvp_nats_t *b);
void uvp_nats__sent(uvp_nats_t *b, size_t bytes);
/* uvp-nats.c and connect.c, each on the other's: the connect's side
 * (connect.c) and the connection's (uvp-nats.c). */
void uvp_nats__release_thread_memory(void);
void uvp_nats__ev_drain(uvp_nats_t *b);
void uvp_nats__poll_close(uvp_nats_t *b);
void uvp_nats__thread_done(uvp_nats_t *b);
void uvp_nats__close_start(uvp_nats_t *b, int rc);
int uvp_nats__options_make(uvp_nats_t *b, const uvp_nats_connect_opts_t *o);
int uvp_nats__handles_init(uvp_nats_t *b);
void uvp_nats__binding_free_early(uvp_nats_t *b);
void uvp_nats__keep_set(uvp_nats_t *b);
void uvp_nats__connect_after(uvp_nats_t *b);
void uvp_nats__on_connect_timer(uv_timer_t *t);
void uvp_nats__flush_end(job_t *j, int rc);
/* the inbox's callbacks (nats.c's delivery thread) */
void uvp_nats__inbox_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                        void *closure);
void uvp_nats__inbox_done_cb(void *closure);
/* A message of `why` alone: a UV_EACCES rejection's payload. */
natsMsg *uvp_nats__why_msg(const char *why);

/* msg.c: messages.  A message with subject, reply, data and the program's
 * headers; publishing one (then destroyed) with Uvp-Timeout-Ms: timeout_ms
 * (unless UINT64_MAX); and both, after the checks a publish and a reply
 * share. */
int uvp_nats__msg_make(natsMsg **out, const char *subject, const char *reply,
                       const void *data, size_t len,
                       const char *const *headers);
int uvp_nats__msg_send(uvp_nats_t *b, natsMsg *m, uint64_t timeout_ms);
/* A request's message: subject, reply, data and the program's headers,
 * with Uvp-Timeout-Ms: timeout_ms (unless UINT64_MAX) and
 * UVP_NATS_CANCEL_TOKEN_HEADER: token (unless NULL).  The headers' bytes
 * are written by the binding where uvp_nats__msg_raw_headers() (nats.c 3),
 * the program has none and the message is `sealed` (no header is added
 * to it later: a trace's, a stamp at send_held); through nats.c's header
 * map otherwise. */
int uvp_nats__msg_make_request(natsMsg **out, const char *subject,
                               const char *reply, const void *data, size_t len,
                               const char *const *headers, uint64_t timeout_ms,
                               const char *token, bool sealed);
bool uvp_nats__msg_raw_headers(void);
/* A reply's Uvp-Error (uvp_nats_msg_header's), without nats.c's header
 * map where its bytes show it has none. */
const char *uvp_nats__error_header(natsMsg *m);
/* uvp_nats__publish_msg without its checks of the arguments (a subject
 * checked already, a reply subject the binding made or nats.c received) */
int uvp_nats__publish(uvp_nats_t *b, const char *subject, const char *reply,
                      const void *data, size_t len, uint64_t timeout_ms,
                      const char *const *headers);
char *uvp_nats__u64_digits(char *end, uint64_t v);
int uvp_nats__publish_msg(uvp_nats_t *b, const char *subject, const char *reply,
                          const void *data, size_t len, uint64_t timeout_ms,
                          const char *const *headers);

/* subs.c: for a service (serve.c). */
void uvp_nats__sub_free(uvp_nats_sub_t *s, int rc);
int uvp_nats__drain_start(uvp_nats_sub_t *s, uvp_cancel_cb cancel,
                          uvp_promise_t **p, const char *file, int line);

#endif
