/* uvp-nats: the connect, the flush, and what uvp_nats_open holds while it
 * connects (uvp-nats.c's opening comment says how a connection works;
 * this file is its connect, on a thread of the binding's that the loop
 * can leave behind, and its blocking flush, on libuv's pool). */
#include <stdatomic.h>
#ifndef _WIN32
#include <pthread.h>
#endif

#include "nats-internal.h"

static void connect_more(job_t *j, natsConnection *conn, natsStatus s);

/* The connect, on a thread of the binding's: nats.c 3.4's connect has no
 * bound of its own against a server that sends INFO and never answers
 * the PING (its read of the PONG loops past its deadline) or announces
 * TLS and never speaks it (a blocking handshake), and cannot be
 * interrupted, so the loop must be able to go on without it (abandon):
 * on libuv's pool it would hold the loop (uv_run and uv_loop_close wait
 * for a pool job) and the process's exit (libuv joins its pool threads
 * then).  Abandoned, the thread frees what it made once nats.c returns
 * (the peer closing, at the latest). */
/* Connects abandoned whose threads have not ended yet. */
static atomic_size_t abandoned_threads;

size_t uvp_nats_connects_abandoned(void) {
  return atomic_load(&abandoned_threads);
}

/* The server refused the connect's credentials. */
static bool auth_refused(natsStatus s) {
  const char *e = nats_GetLastError(NULL);
  return s != NATS_OK && e != NULL &&
         strstr(e, "Authorization Violation") != NULL;
}

static void connect_thread(void *arg) {
  job_t *j = arg;
  uvp_nats_t *b = j->b;
  natsConnection *conn = NULL;
  natsStatus s = natsConnection_Connect(&conn, b->opts);
  /* nats.c before 3.8.0 (Debian 12 has 3.4.1) sends an empty signature
   * when a nkey's signature of the server's nonce begins with a zero byte
   * (its base64 encoder took that byte for a string's end; nats.c's
   * commit e2da8105): the server refuses 1 connect in 256 made with a
   * nkey or a .creds file (3 of 1 000 measured).  The next connect signs
   * a new nonce; a refusal that is the credentials' is refused again. */
  if (auth_refused(s) && nats_GetVersionNumber() < 0x030800) {
    uv_mutex_lock(&b->lock);
    bool abandoned = b->abandoned;
    uv_mutex_unlock(&b->lock);
    if (!abandoned)
      s = natsConnection_Connect(&conn, b->opts);
  }
  uv_mutex_lock(&b->lock);
  b->returned = true;
  bool abandoned = b->abandoned;
  uv_mutex_unlock(&b->lock);
  if (!abandoned) {
    connect_more(j, conn, s);
    uv_mutex_lock(&b->lock); /* the loop takes it in on_async */
    b->ready = true;
    uv_async_send(&b->async);
    uv_mutex_unlock(&b->lock);
  } else {
    natsOptions_Destroy(b->opts); /* the loop left them to this thread */
    if (s == NATS_OK)             /* late: its closed callback lets b go */
      natsConnection_Destroy(conn);
  }
  uvp_nats__release_thread_memory();
  if (abandoned && s != NATS_OK)
    uvp_nats__thread_done(b);
  if (abandoned) /* its last touch of nats.c is behind it */
    atomic_fetch_sub(&abandoned_threads, 1);
}

static void connect_more(job_t *j, natsConnection *conn, natsStatus s) {
  uvp_nats_t *b = j->b;
  if (s != NATS_OK) {
    /* nats.c's words say why (the server's -ERR: "Authorization
     * Violation"; a certificate it does not trust), where its code is
     * often a plain NATS_ERR; kept for the rejection, on this thread's
     * record that is freed next */
    const char *e = nats_GetLastError(NULL);
    j->err = e != NULL && *e != '\0' ? strdup(e) : NULL;
    j->rc = uvp_nats_code(s);
    if (j->rc == UVP_NATS_ENATS && e != NULL &&
        strstr(e, "Authorization Violation") != NULL)
      j->rc = UV_EACCES;
    return;
  }
  j->conn = conn; /* the loop takes it in connect_after: b->conn is the
                     loop's (the attach, queued meanwhile, sets it too) */
  if (natsConnection_HasHeaderSupport(conn) != NATS_OK) {
    j->rc = UV_ENOTSUP;
    return;
  }
  char wild[sizeof(b->inbox) + 2]; /* "<inbox>.<id>" */
  snprintf(wild, sizeof(wild), "%s.>", b->inbox);
  s = natsConnection_Subscribe(&b->inbox_sub, conn, wild, uvp_nats__inbox_cb,
                               b);
  if (s == NATS_OK)
    s = natsSubscription_SetOnCompleteCB(b->inbox_sub, uvp_nats__inbox_done_cb,
                                         b);
  if (s == NATS_OK) /* replies are taken at once: no limit to trip */
    s = natsSubscription_SetPendingLimits(b->inbox_sub, -1, -1);
  j->rc = uvp_nats_code(s);
}

static void open_after(uvp_nats_t *b, job_t *j, uvp_promise_t *p);

void uvp_nats__connect_after(uvp_nats_t *b) {
  job_t *j = &b->connect_job;
  b->connect_done = true;
  uv_timer_stop(&b->connect_timer);
  uvp_promise_t *p = j->p;
  uvp_nats__ev_drain(b); /* the attach first: it names the connection too */
  if (b->conn == NULL)
    b->conn = j->conn;
  j->p = NULL;
  uvp_nats__waiting_add(b, -1);
  if (b->opened) {
    open_after(b, j, p);
  } else {
    b->state = S_OPEN;
    if (j->rc == 0 && !j->cut)
      uvp_promise_resolve(p, b, NULL);
    else
      uvp_nats__close_start(
          b, UV_ECANCELED); /* failed, or nobody wants it any more */
    if (j->rc != 0 && !j->cut) {
      uvp_promise_reject(p, j->rc, j->err, free);
      j->err = NULL;
    }
  }
  if (b->opened && j->err != NULL && b->connect_err == NULL)
    b->connect_err = j->err; /* uvp_nats_connect_error's */
  else
    free(j->err);
  j->err = NULL;
  uvp_inflight_end(&j->fl); /* the job has stopped */
  uvp_promise_release(p);
}

/* The loop goes on without the connect (see connect_thread): it ends as a
 * failed connect with rc and `words`, unless nats.c has returned already
 * (its outcome is on its way: taken as it comes). */
static void connect_abandon(uvp_nats_t *b, int rc, const char *words) {
  job_t *j = &b->connect_job;
  uv_mutex_lock(&b->lock);
  bool too_late = b->returned || b->connect_done;
  if (!too_late) {
    b->abandoned = b->thread_holds = true;
    atomic_fetch_add(&abandoned_threads, 1);
  }
  uv_mutex_unlock(&b->lock);
  if (too_late)
    return;
  uvp_nats__ev_drain(b); /* an attach queued before: ignored now */
  if (b->conn != NULL) { /* attached before: the thread closes it */
    b->conn = NULL;
    b->attached = false;
    b->fd = -1;
    uvp_nats__poll_close(b);
  }
  j->rc = rc;
  j->conn = NULL;
  j->err = words != NULL ? strdup(words) : NULL;
  uvp_nats__connect_after(b);
}

/* The connect's bound passed, or its promise was cut (the abandon waits
 * for this timer: not inside the cut's own call). */
void uvp_nats__on_connect_timer(uv_timer_t *t) {
  uvp_nats_t *b = t->data;
  job_t *j = &b->connect_job;
  char words[96];
  if (j->cut) {
    connect_abandon(b, j->cut_rc != 0 ? j->cut_rc : UV_ECANCELED, NULL);
    return;
  }
  snprintf(words, sizeof(words),
           "the server did not complete the NATS handshake within %llu ms",
           (unsigned long long)b->connect_bound_ms);
  connect_abandon(b, UV_ETIMEDOUT, words);
}

/* The connect's promise was cut: it has rejected; the loop abandons the
 * connect at once (uvp_nats__on_connect_timer), and its thread closes what it
 * makes. */
static void on_connect_cancel(uvp_inflight_t *fl, int code) {
  job_t *j = fl->data;
  j->cut = true;
  j->cut_rc = code;
  uv_timer_start(&j->b->connect_timer, uvp_nats__on_connect_timer, 0, 0);
}

static int connect_describe(uvp_inflight_t *fl, char *buf, size_t cap) {
  (void)fl;
  return snprintf(buf, cap, "connect");
}

static const uvp_inflight_class_t connect_class = {"NATS", on_connect_cancel,
                                                   connect_describe, 0};

/* A fresh inbox, "<prefix>.<nuid>", under b's prefix (the first
 * inbox_plen bytes of b->inbox): a private prefix is what a server's
 * permissions give each user its replies by (issue 71). */
int uvp_nats__inbox_new(const uvp_nats_t *b, char *buf, size_t cap) {
  char *inbox = NULL;
  natsStatus s = natsInbox_Create(&inbox); /* "_INBOX.<nuid>" */
  if (s != NATS_OK)
    return uvp_nats_code(s);
  const char *nuid = strrchr(inbox, '.');
  char tmp[sizeof(b->inbox)];
  int n = snprintf(tmp, sizeof(tmp), "%.*s%s", (int)b->inbox_plen, b->inbox,
                   nuid != NULL ? nuid : ".");
  natsInbox_Destroy(inbox);
  if (n < 0 || (size_t)n + 3 > cap || (size_t)n + 3 > sizeof(tmp))
    return UV_EINVAL;
  memcpy(buf, tmp, (size_t)n + 1);
  return 0;
}

/* The reply inbox's name: made here, so that uvp_nats_open's requests
 * have their reply subjects before the connection is up (options_make has
 * called nats_Open: a NUID needs it). */
static int inbox_make(uvp_nats_t *b, const char *prefix) {
  if (prefix != NULL && (!uvp_nats__subject_ok(prefix, false) ||
                         strlen(prefix) > UVP_NATS_INBOX_PREFIX_MAX))
    return UV_EINVAL;
  if (prefix != NULL &&
      natsOptions_SetCustomInboxPrefix(b->opts, prefix) != NATS_OK)
    return UV_EINVAL;
  snprintf(b->inbox, sizeof(b->inbox), "%s",
           prefix != NULL ? prefix : "_INBOX");
  b->inbox_plen = strlen(b->inbox);
  int rc = uvp_nats__inbox_new(b, b->inbox, sizeof(b->inbox));
  if (rc != 0)
    return rc;
  b->inbox_len = strlen(b->inbox);
  /* the key of the requests' cancel tokens (requests.c): the kernel's
   * CSPRNG, once a connection */
  return uv_random(NULL, NULL, b->cancel_key, sizeof(b->cancel_key), 0, NULL);
}

/* The connect's thread, detached: nobody joins it (an abandoned one may
 * outlive the loop, and the process's exit must not wait for it). */
static int thread_start(job_t *j) {
  uv_thread_t t;
  int rc = uv_thread_create(&t, connect_thread, j);
  if (rc == 0) {
#ifdef _WIN32
    CloseHandle(t);
#else
    pthread_detach(t);
#endif
  }
  return rc;
}

/* The connect's bound: nats.c's timeout for each server of the list (the
 * program's, or nats.c's 2 s), and UVP_NATS_CONNECT_SLACK_MS for the rest. */
static int bound_set(uvp_nats_t *b, const uvp_nats_connect_opts_t *o,
                     const uvp_nats_connect_more_t *more) {
  uint64_t each = more != NULL && more->connect_timeout_ms > 0
                      ? more->connect_timeout_ms
                      : UVP_NATS_CONNECT_TIMEOUT_DEFAULT;
  if (each > UVP_NATS_CONNECT_TIMEOUT_MAX)
    return UV_EINVAL;
  if (more != NULL && more->connect_timeout_ms > 0 &&
      natsOptions_SetTimeout(b->opts, (int64_t)each) != NATS_OK)
    return UV_EINVAL;
  uint64_t servers = 1;
  for (const char *c = o != NULL && o->url != NULL ? o->url : ""; *c; c++)
    servers += *c == ',';
  b->connect_bound_ms = each * servers + UVP_NATS_CONNECT_SLACK_MS;
  return 0;
}

/* uvp_nats_connect's and uvp_nats_open's start: the binding, its handles
 * and the connect's thread.  *out (NULL for open) gets the connect's
 * promise. */
static int connect_start(uvp_ctx_t *ctx, const uvp_nats_connect_opts_t *o,
                         const uvp_nats_connect_more_t *more, bool opened,
                         uvp_nats_t **bp, uvp_promise_t **out, const char *file,
                         int line) {
  const char *prefix = more != NULL ? more->inbox_prefix : NULL;
  uvp_promise_t *p;
  int rc = uvp_promise_new_at(ctx, &p, file, line);
  uvp_nats_t *b = rc == 0 ? calloc(1, sizeof(*b)) : NULL;
  if (b == NULL || uv_mutex_init(&b->lock) != 0) {
    if (o != NULL)
      natsOptions_Destroy(o->options);
    if (p != NULL && rc == 0)
      uvp_promise_release(p);
    free(b);
    return rc != 0 ? rc : UV_ENOMEM;
  }
  b->ctx = ctx;
  b->loop = uvp_ctx_loop(ctx);
  b->loop_thread = uv_thread_self();
  b->fd = -1;
  b->opened = opened;
  b->flags = o != NULL ? o->flags : 0;
  b->on_event = o != NULL ? o->on_event : NULL;
  b->arg = o != NULL ? o->arg : NULL;
  b->connect_job.b = b;
  b->connect_job.p = p;
  b->connect_job.w.data = &b->connect_job;
  b->connect_job.fl.data = &b->connect_job;
  if ((rc = uvp_nats__options_make(b, o)) != 0 ||
      (rc = inbox_make(b, prefix)) != 0 || (rc = bound_set(b, o, more)) != 0 ||
      (rc = uvp_inflight_start(ctx, &b->connect_job.fl, p, &connect_class)) !=
          0 ||
      (rc = uvp_nats__handles_init(b)) != 0) {
    uvp_inflight_end(&b->connect_job.fl); /* not started: nothing */
    uvp_promise_release(p);
    uvp_nats__binding_free_early(b);
    return rc;
  }
  if (out != NULL)
    *out = uvp_promise_retain(p);
  else /* nobody awaits it: its outcome is told to what waits on b */
    uvp_promise_mark_handled(p);
  if ((rc = thread_start(&b->connect_job)) != 0) {
    if (out != NULL)
      uvp_promise_release(*out);
    uvp_inflight_end(&b->connect_job.fl);
    uvp_promise_release(p);
    b->connect_done = true;
    b->state = S_CLOSING;
    b->close_started = b->close_done = b->close_asked = true;
    uvp_nats__maybe_finish(b);
    return rc;
  }
  uvp_nats__waiting_add(b, 1);
  uv_timer_start(&b->connect_timer, uvp_nats__on_connect_timer,
                 b->connect_bound_ms, 0);
  *bp = b;
  return 0;
}

int uvp_nats_connect_at(uvp_ctx_t *ctx, const uvp_nats_connect_opts_t *o,
                        uvp_promise_t **out, const char *file, int line) {
  return uvp_nats_connect_more_at(ctx, o, NULL, out, file, line);
}

int uvp_nats_connect_more_at(uvp_ctx_t *ctx, const uvp_nats_connect_opts_t *o,
                             const uvp_nats_connect_more_t *more,
                             uvp_promise_t **out, const char *file, int line) {
  uvp_nats_t *b;
  if (ctx == NULL || out == NULL) {
    if (o != NULL)
      natsOptions_Destroy(o->options);
    return UV_EINVAL;
  }
  return connect_start(ctx, o, more, false, &b, out, file, line);
}

int uvp_nats_open_more_at(uvp_ctx_t *ctx, const uvp_nats_connect_opts_t *o,
                          const uvp_nats_connect_more_t *more, uvp_nats_t **out,
                          const char *file, int line) {
  if (ctx == NULL || out == NULL) {
    if (o != NULL)
      natsOptions_Destroy(o->options);
    return UV_EINVAL;
  }
  return connect_start(ctx, o, more, true, out, NULL, file, line);
}

int uvp_nats_open_at(uvp_ctx_t *ctx, const uvp_nats_connect_opts_t *o,
                     uvp_nats_t **out, const char *file, int line) {
  return uvp_nats_open_more_at(ctx, o, NULL, out, file, line);
}

const char *uvp_nats_connect_error(const uvp_nats_t *nc) {
  return nc != NULL ? nc->connect_err : NULL;
}

/* ---- flush --------------------------------------------------------------- */

static void flush_work(uv_work_t *w) {
  job_t *j = w->data;
  j->s = natsConnection_FlushTimeout(j->b->conn, j->timeout_ms);
  uvp_nats__release_thread_memory(); /* a pool thread lives on */
}

/* A flush ends (rc 0: fulfilled), its job stopped or never started. */
void uvp_nats__flush_end(job_t *j, int rc) {
  uvp_nats_t *b = j->b;
  b->jobs--;
  if (!j->cut) {
    uvp_nats__waiting_add(b, -1);
    if (rc == 0)
      uvp_promise_resolve(j->p, NULL, NULL);
    else
      uvp_promise_reject(j->p, rc, NULL, NULL);
  }
  uvp_inflight_end(&j->fl);
  uvp_promise_release(j->p);
  free(j);
}

static void flush_after(uv_work_t *w, int status) {
  job_t *j = w->data;
  uvp_nats_t *b = j->b;
  (void)status;
  uvp_nats__flush_end(j, uvp_nats_code(j->s));
  uvp_nats__maybe_finish(b);
}

/* The flush's promise was cut: it has rejected; the job runs on. */
static void on_flush_cancel(uvp_inflight_t *fl, int code) {
  job_t *j = fl->data;
  (void)code;
  j->cut = true;
  uvp_nats__waiting_add(j->b, -1);
}

static int flush_describe(uvp_inflight_t *fl, char *buf, size_t cap) {
  (void)fl;
  return snprintf(buf, cap, "flush");
}

static const uvp_inflight_class_t flush_class = {"NATS", on_flush_cancel,
                                                 flush_describe, 0};

int uvp_nats_flush_at(uvp_nats_t *b, uvp_promise_t **out, const char *file,
                      int line) {
  if (b == NULL || out == NULL)
    return UV_EINVAL;
  bool connecting = b->state == S_CONNECTING; /* uvp_nats_open's */
  if (b->state != S_OPEN && !connecting)
    return UVP_ECLOSED;
  job_t *j = calloc(1, sizeof(*j));
  if (j == NULL)
    return UV_ENOMEM;
  uint64_t left = uvp_deadline_left(b->ctx);
  j->b = b;
  j->w.data = j;
  j->fl.data = j;
  j->timeout_ms = left < UVP_NATS_REQUEST_TIMEOUT_DEFAULT
                      ? (int64_t)(left > 0 ? left : 1)
                      : (int64_t)UVP_NATS_REQUEST_TIMEOUT_DEFAULT;
  int rc = uvp_promise_new_at(b->ctx, &j->p, file, line);
  if (rc == 0)
    rc = uvp_inflight_start(b->ctx, &j->fl, j->p, &flush_class);
  if (rc == 0 && connecting) { /* after what was asked before it */
    job_t **tail = &b->held_flushes;
    while (*tail != NULL)
      tail = &(*tail)->next;
    *tail = j;
  } else if (rc == 0) {
    rc = uv_queue_work(b->loop, &j->w, flush_work, flush_after);
  }
  if (rc != 0) {
    uvp_inflight_end(&j->fl);
    if (j->p != NULL)
      uvp_promise_release(j->p);
    free(j);
    return rc;
  }
  b->jobs++;
  uvp_nats__waiting_add(b, 1);
  *out = uvp_promise_retain(j->p);
  return 0;
}

/* ---- uvp_nats_open: what is asked while it connects ---------------------- */

/* uvp_nats_open's connect returned.  Up: the subscriptions, requests and
 * flushes asked meanwhile go, in that order (a flush asked after a serve
 * then says the server has its subscription).  Failed or closed: they
 * end, and the connection closes (its memory goes at uvp_nats_close). */
static void open_after(uvp_nats_t *b, job_t *j, uvp_promise_t *p) {
  if (b->close_asked) { /* uvp_nats_close's fail_all has run */
    uvp_nats__close_start(b, UV_ECANCELED);
    return;
  }
  if (j->rc == 0 && !j->cut) {
    b->state = S_OPEN;
    uvp_promise_resolve(p, b, NULL);
    /* subscriptions first: a request asked after a subscribe may be
     * answered on it */
    for (int i = UVP_NATS__LAYERS - 1; i >= 0; i--)
      if (b->layers[i] != NULL && b->layers[i]->up != NULL)
        b->layers[i]->up(b);
    for (job_t *f; b->state == S_OPEN && (f = b->held_flushes) != NULL;) {
      b->held_flushes = f->next;
      if (uv_queue_work(b->loop, &f->w, flush_work, flush_after) != 0)
        uvp_nats__flush_end(f, UV_ENOMEM); /* cannot happen with a live loop */
    }
    return;
  }
  uvp_nats__close_start(b, j->rc != 0       ? j->rc
                           : j->cut_rc != 0 ? j->cut_rc
                                            : UV_ECANCELED);
}
