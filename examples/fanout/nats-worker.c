/* uvp-fanout --nats URL --worker [-c N] [--name NAME]: serves
 * uvp-fanout.fetch in the queue group uvp-fanout with uvp_nats_serve, at
 * most -c requests at once.  Each request is the local mode's fetch
 * (fanout_fetch: uvp-curl, --retry, curl's options from the request's
 * "opts"), under the deadline the binding set from its Uvp-Timeout-Ms;
 * its reply is the outcome as JSON.  A request that does not parse is
 * answered EPROTO, and the worker goes on.  It holds at most -c running
 * and 2 x -c waiting: past that a request is answered EBUSY at once (the
 * coordinator sends it again later).  A request its coordinator cancelled
 * is cut (its fetch stops) and not answered.  SIGTERM or SIGINT drains
 * within -m: no new request is taken, those taken are answered; past -m
 * what still waits is answered ECANCELED and what runs is cut; a second
 * signal does that at once.  Then it exits 0.  A signal while it connects
 * stops the connect at once (exit 0). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h> /* malloc_trim */
#endif

#include <jansson.h>

#include "fanout.h"
#include "uvp-nats.h"

typedef struct worker_s {
  run_t *r;
  uvp_nats_t *nc;
  uvp_nats_svc_t *svc;
  char name[300];
  uv_signal_t sigint, sigterm;
  uv_timer_t trim; /* gives a refused pile's memory back (trim_check) */
  uv_timer_t stop; /* stops the worker outside uvp_nats's callbacks */
  const char *url;
  bool down;               /* disconnected: nats.c reconnects */
  uint64_t trim_busy;      /* EBUSY answers counted at the last look */
  int trim_due;            /* some came since the last trim */
  uvp_promise_t *drain;    /* on_drained's */
  uvp_promise_t *drain_p;  /* the drain's own: settled, the service is gone */
  uvp_promise_t *starting; /* the connect or the first flush, awaited */
  int signals;             /* received so far */
  int exit_code;
} worker_t;

/* One request being fetched: a job_t (fanout.h). */

void fanout_job_free(void *arg) {
  job_t *j = arg;
  free(j->row.reason);
  free(j->row.final_url);
  free(j->url);
  free(j->proxy);
  free(j->userpwd);
  free(j);
}

static char *reply_dump(json_t *o) {
  char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

/* The reply of a request: {"v":1,"id":…,"worker":…,"status":…,"error":…,
 * "message":…,"bytes":…,"latency_us":…,"attempts":…}. */
static char *reply_json(const worker_t *w, json_t *id, int status,
                        const char *error, const char *message, size_t bytes,
                        uint64_t us, unsigned attempts) {
  json_t *o = json_pack(
      "{s:i,s:o,s:s,s:i,s:I,s:I,s:I}", "v", NATS_PROTOCOL_VERSION, "id", id,
      "worker", w->name, "status", status, "bytes", (json_int_t)bytes,
      "latency_us", (json_int_t)us, "attempts", (json_int_t)attempts);
  if (o != NULL) {
    json_object_set_new(o, "error",
                        error != NULL ? json_string(error) : json_null());
    if (message != NULL) {
      json_t *m = json_string(message);
      json_object_set_new(o, "message",
                          m != NULL ? m : json_string("(not UTF-8)"));
    }
  }
  return reply_dump(o);
}

static uvp_ret_t job_done(void *arg, const uvp_outcome_t *in) {
  job_t *j = arg;
  row_t *row = &j->row;
  int error = row->error;
  if (in->status < 0 && error == 0 && row->status == 0)
    error = in->status; /* cut before any attempt recorded (a deadline) */
  const char *why = NULL;
  if (error != 0)
    why = row->reason != NULL ? row->reason : uvp_curl_strerror(error);
  char *body =
      reply_json(j->w, json_integer(j->id), error != 0 ? 0 : row->status,
                 error != 0 ? fanout_err_name(error) : NULL, why,
                 error != 0 ? 0 : row->bytes, row->latency_us, row->attempts);
  if (body == NULL)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  return uvp_ret_value(body, free);
}

static int opt_u64(json_t *o, const char *key, uint64_t *out) {
  json_t *v = json_object_get(o, key);
  if (v == NULL)
    return 0; /* the worker's own */
  if (!json_is_integer(v) || json_integer_value(v) < 0)
    return -1;
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

static int opt_bool(json_t *o, const char *key, int *out) {
  json_t *v = json_object_get(o, key);
  if (v == NULL)
    return 0;
  if (!json_is_boolean(v))
    return -1;
  *out = json_is_true(v);
  return 0;
}

static int opt_str(json_t *o, const char *key, char **out) {
  json_t *v = json_object_get(o, key);
  if (v == NULL)
    return 0;
  if (!json_is_string(v) || (*out = strdup(json_string_value(v))) == NULL)
    return -1;
  return 0;
}

/* The request's curl options over the worker's own (its CA store stays
 * its own: a path on the coordinator's machine means nothing here). */
const char *fanout_job_opts(job_t *j, json_t *opts) {
  http_t *h = &j->http;
  uint64_t redirs = (uint64_t)h->max_redirects, retry = 0;
  if (opts == NULL)
    return NULL;
  if (!json_is_object(opts))
    return "\"opts\" is not an object";
  if (opt_u64(opts, "timeout_ms", &h->timeout_ms) != 0 ||
      opt_u64(opts, "connect_timeout_ms", &h->connect_timeout_ms) != 0 ||
      opt_u64(opts, "max_filesize", &h->max_body) != 0 ||
      opt_u64(opts, "max_redirs", &redirs) != 0 ||
      opt_u64(opts, "retry", &retry) != 0 ||
      opt_bool(opts, "location", &h->follow) != 0 ||
      opt_bool(opts, "insecure", &h->insecure) != 0 ||
      opt_bool(opts, "http2", &h->http2) != 0 ||
      opt_bool(opts, "compressed", &h->compressed) != 0 ||
      opt_str(opts, "proxy", &j->proxy) != 0 ||
      opt_str(opts, "user", &j->userpwd) != 0)
    return "an option in \"opts\" has the wrong type";
  if (h->timeout_ms == 0 || h->connect_timeout_ms == 0 || h->max_body == 0 ||
      redirs > 1000 || retry > 100)
    return "an option in \"opts\" is out of range";
  h->max_redirects = (long)redirs;
  h->proxy = j->proxy;
  h->userpwd = j->userpwd;
  j->row.retries = (unsigned)retry;
  return NULL;
}

/* Fill the job from the request's JSON; NULL, or why it is refused. */
const char *fanout_job_parse(job_t *j, natsMsg *msg) {
  json_error_t je;
  json_t *o = json_loadb(natsMsg_GetData(msg),
                         (size_t)natsMsg_GetDataLength(msg), 0, &je);
  const char *why = NULL;
  json_t *v = json_object_get(o, "v"), *id = json_object_get(o, "id");
  json_t *url = json_object_get(o, "url");
  if (!json_is_object(o))
    why = "the request is not a JSON object";
  else if (!json_is_integer(v) ||
           json_integer_value(v) != NATS_PROTOCOL_VERSION)
    why = "unknown protocol version (v)";
  else if (!json_is_integer(id) || !json_is_string(url))
    why = "the request lacks \"id\" or \"url\"";
  if (json_is_integer(id))
    j->id = json_integer_value(id);
  if (why == NULL && (j->url = strdup(json_string_value(url))) == NULL)
    why = "out of memory";
  if (why == NULL)
    why = fanout_job_opts(j, json_object_get(o, "opts"));
  json_decref(o);
  return why;
}

static int serve_one(uvp_nats_served_t *req, uvp_promise_t **out) {
  worker_t *w = req->arg;
  run_t *r = w->r;
  job_t *j = calloc(1, sizeof(*j));
  if (j == NULL)
    return UV_ENOMEM;
  j->w = w;
  j->id = -1;
  j->http = r->http;
  const char *why = fanout_job_parse(j, req->msg);
  if (why != NULL) { /* answered EPROTO, as a reply the coordinator reads */
    char *body = reply_json(w, j->id >= 0 ? json_integer(j->id) : json_null(),
                            0, "EPROTO", why, 0, 0, 0);
    fanout_job_free(j);
    if (body == NULL)
      return UV_ENOMEM;
    int rc = uvp_promise_resolved(r->ctx, body, free, out);
    if (rc != 0)
      free(body);
    return rc;
  }
  j->row.run = r;
  j->row.http = &j->http;
  j->row.url = j->url;
  j->row.start_ns = uv_hrtime();
  uvp_promise_t *p;
  int rc = fanout_fetch(r, &j->row, &p);
  if (rc != 0) {
    fanout_job_free(j);
    return rc;
  }
  /* refused, p and j are let go (uvp.h, "Handing over") */
  return uvp_promise_on_full(p, UVP_ON_BOTH | UVP_ON_TAKE, job_done, j,
                             fanout_job_free, out);
}

/* ---- the worker's life --------------------------------------------------- */

static void settle(uv_loop_t *loop, uvp_promise_t *p) {
  while (uvp_promise_state(p) == UVP_PENDING)
    uv_run(loop, UV_RUN_ONCE);
}

static void signals_close(worker_t *w) {
  if (!uv_is_closing((uv_handle_t *)&w->sigint)) {
    uv_close((uv_handle_t *)&w->sigint, NULL);
    uv_close((uv_handle_t *)&w->sigterm, NULL);
    uv_close((uv_handle_t *)&w->trim, NULL);
    uv_close((uv_handle_t *)&w->stop, NULL);
  }
}

/* Every second: once a pile of requests answered EBUSY has stopped coming
 * (a second without one), give the memory it went through back to the
 * system: glibc's heap keeps the high water of what the pile held, and
 * malloc_trim(0) hands its free pages back.  uvp-nats frees messages as
 * they are destroyed, where it finds nats.c's layout; elsewhere nats.c's
 * garbage-collector thread frees them later, and under a pile thousands
 * wait for it (docs/internals/nats-2.md 21.7: 0.3 to 5 MB after 100 000;
 * 21.11). */
static void trim_check(uv_timer_t *t) {
  worker_t *w = t->data;
  uvp_nats_serve_stats_ex_t st;
  if (w->svc == NULL || uvp_nats_serve_stats_ex(w->svc, &st) != 0)
    return;
  if (st.busy != w->trim_busy) {
    w->trim_busy = st.busy;
    w->trim_due = 1;
  } else if (w->trim_due) {
    w->trim_due = 0;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
  }
}

/* The end without a drain: the connection is gone for good, or down
 * with nothing held (nothing to answer, and nothing can come). */
static void worker_end(worker_t *w) {
  w->svc = NULL; /* freed with its connection */
  signals_close(w);
  if (w->nc != NULL)
    uvp_nats_close(w->nc);
  w->nc = NULL;
  uvp_curl_close(w->r->curl);
  w->r->curl = NULL;
}

static void on_stop(uv_timer_t *t) { worker_end(t->data); }

/* What the connection does is said, as it happens: a worker that cannot
 * serve must not look as if it did.  nats.c gives up on a server that
 * refuses the credentials twice (a password rotated under it): closed
 * for good, the worker ends (exit 1) with nats.c's words. */
static void on_event(void *arg, uvp_nats_t *nc, uvp_nats_event_t event) {
  worker_t *w = arg;
  const char *why = NULL;
  natsConnection *conn = uvp_nats_connection(nc);
  if (conn != NULL)
    (void)natsConnection_GetLastError(conn, &why); /* its status: why's */
  switch (event) {
  case UVP_NATS_DISCONNECTED:
    w->down = true;
    fprintf(stderr, "uvp-fanout: %s: disconnected; reconnecting\n", w->url);
    break;
  case UVP_NATS_RECONNECTED:
    w->down = false;
    fprintf(stderr, "uvp-fanout: %s: reconnected\n", w->url);
    break;
  case UVP_NATS_CLOSED:
    fprintf(stderr, "uvp-fanout: %s: the connection is closed for good%s%s\n",
            w->url, why != NULL && *why != '\0' ? ": " : "",
            why != NULL ? why : "");
    w->exit_code = 1;
    uv_timer_start(&w->stop, on_stop, 0, 0); /* not inside its callback */
    break;
  case UVP_NATS_DENIED: /* said at once; its own subscription refused:
                           it cannot serve, it ends (exit 1) */
    why = uvp_nats_denied(nc) != NULL ? uvp_nats_denied(nc) : "denied";
    fprintf(stderr, "uvp-fanout: %s: %s\n", w->url, why);
    if (strstr(why, "Subscription to \"" NATS_SUBJECT) != NULL &&
        w->exit_code == 0) {
      w->exit_code = 1;
      uv_timer_start(&w->stop, on_stop, 0, 0);
    }
    break;
  default:
    break;
  }
}

static uvp_ret_t on_drained(void *arg, const uvp_outcome_t *in) {
  worker_t *w = arg;
  if (in->status != 0)
    fprintf(stderr, "uvp-fanout: drain: %s\n", uvp_nats_strerror(in->status));
  const uvp_nats_serve_stats_ex_t *st = in->value; /* the last counters */
  if (in->status == 0 && st != NULL)
    printf("drained %s: replied %llu, %llu cut by the drain's deadline, %llu "
           "cancelled by their callers, %llu answered EBUSY, %llu forged "
           "cancels dropped\n",
           w->name, (unsigned long long)st->base.replied,
           (unsigned long long)st->cut, (unsigned long long)st->cancelled,
           (unsigned long long)st->busy, (unsigned long long)st->forged);
  fflush(stdout);
  w->svc = NULL; /* freed with the drain */
  signals_close(w);
  uvp_nats_close(w->nc);
  w->nc = NULL;
  uvp_curl_close(w->r->curl);
  w->r->curl = NULL;
  return uvp_ret_pass();
}

/* The first signal drains within -m, the second ends the drain at once;
 * the handles stay until the drain is over, so that a second one is ours
 * and not the default's (killed, with nothing closed). */
static void on_signal(uv_signal_t *h, int signum) {
  worker_t *w = h->data;
  (void)signum;
  uvp_promise_t *d;
  if (w->starting != NULL) { /* not serving yet: stop starting */
    w->signals++;
    /* it fails only when the promise has settled this turn: worker_start
     * reads w->signals either way */
    int rc = uvp_promise_cancel(w->starting);
    if (rc != 0 && rc != UVP_ESETTLED)
      fprintf(stderr, "uvp-fanout: stopping: %s\n", uvp_nats_strerror(rc));
    return;
  }
  if (w->svc == NULL) /* nothing to drain */
    return;
  if (w->signals++ > 0) {
    if (uvp_promise_state(w->drain_p) != UVP_PENDING)
      return; /* drained: on_drained is on its way */
    printf("stopping %s now\n", w->name);
    fflush(stdout);
    if (uvp_nats_serve_drain_within(w->svc, 0, &d) == 0)
      uvp_promise_release(d); /* on_drained is already on it */
    return;
  }
  uvp_nats_serve_stats_ex_t ex;
  if (w->down && uvp_nats_serve_stats_ex(w->svc, &ex) == 0 &&
      ex.waiting + ex.running == 0) { /* nothing to answer, nor to come */
    printf("stopping %s: disconnected, nothing held\n", w->name);
    fflush(stdout);
    worker_end(w);
    return;
  }
  /* What it did, for its operator (the service is freed by the drain). */
  uvp_nats_serve_stats_t st;
  if (uvp_nats_serve_stats(w->svc, &st) == 0)
    printf("draining %s: received %llu, replied %llu (%llu failed), %llu "
           "expired unserved\n",
           w->name, (unsigned long long)st.received,
           (unsigned long long)st.replied, (unsigned long long)st.failed,
           (unsigned long long)st.expired);
  fflush(stdout);
  int rc = uvp_nats_serve_drain_within(w->svc, w->r->http.timeout_ms, &d);
  if (rc != 0) { /* UVP_ECLOSED: the connection is gone, nothing to drain */
    fprintf(stderr, "uvp-fanout: drain: %s\n", uvp_nats_strerror(rc));
    worker_end(w);
    return;
  }
  w->drain_p = uvp_promise_retain(d);
  (void)uvp_promise_on(d, UVP_ON_BOTH | UVP_ON_TAKE, on_drained, w, &w->drain);
}

/* Connect, serve, and tell whoever waits ("serving as NAME" on stdout,
 * once the server has the subscription). */
static int worker_start(worker_t *w, const nats_cli_t *cli) {
  run_t *r = w->r;
  uvp_promise_t *c, *f = NULL;
  uvp_nats_connect_opts_t o = {.url = cli->url,
                               .options = fanout_nats_options(w->name, cli),
                               .on_event = on_event,
                               .arg = w};
  int rc = fanout_nats_connect(r->ctx, &o, cli, &c);
  if (rc != 0)
    return rc;
  w->starting = c;
  settle(r->loop, c);
  w->starting = NULL;
  void *words = NULL;
  rc = uvp_promise_reason(c, &words);
  if (rc == 0)
    w->nc = uvp_promise_value(c);
  else if (w->signals == 0)
    fanout_nats_connect_failed(cli, rc, words);
  uvp_promise_mark_handled(c); /* said, or taken */
  uvp_promise_release(c);
  if (rc != 0)
    return w->signals > 0 ? 2 : 1; /* 2: stopped by a signal, 1: said */
  uvp_nats_serve_opts_t so = {.start = serve_one,
                              .arg = w,
                              .limit = (size_t)cli->concurrency,
                              .worker = w->name};
  if (rc == 0)
    rc = uvp_nats_serve(w->nc, NATS_SUBJECT, NATS_QUEUE, &so, &w->svc);
  if (rc == 0)
    rc = uvp_nats_flush(w->nc, &f);
  if (rc == 0) {
    w->starting = f;
    settle(r->loop, f);
    w->starting = NULL;
    rc = uvp_promise_reason(f, NULL);
    uvp_promise_mark_handled(f); /* said by our caller */
  }
  uvp_promise_release(f);
  if (w->exit_code != 0) /* refused or closed meanwhile: said by on_event */
    return 1;
  return rc != 0 && w->signals > 0 ? 2 : rc;
}

static void signals_start(worker_t *w) {
  uv_signal_init(w->r->loop, &w->sigint);
  uv_signal_init(w->r->loop, &w->sigterm);
  w->sigint.data = w->sigterm.data = w;
  uv_signal_start(&w->sigint, on_signal, SIGINT);
  uv_signal_start(&w->sigterm, on_signal, SIGTERM);
  uv_timer_init(w->r->loop, &w->trim);
  uv_timer_init(w->r->loop, &w->stop);
  w->trim.data = w->stop.data = w;
  uv_unref((uv_handle_t *)&w->trim);
  uv_timer_start(&w->trim, trim_check, 1000, 1000);
}

void fanout_worker_name(const nats_cli_t *cli, char *buf, size_t size) {
  if (cli->name != NULL) {
    snprintf(buf, size, "%s", cli->name);
  } else {
    char host[256] = "localhost";
    (void)gethostname(host, sizeof(host) - 1);
    snprintf(buf, size, "%s:%ld", host, (long)getpid());
  }
}

int fanout_nats_worker(run_t *r, const nats_cli_t *cli) {
  worker_t w = {.r = r, .url = cli->shown};
  fanout_worker_name(cli, w.name, sizeof(w.name));
  int rc = uvp_ctx_new(r->loop, &r->ctx);
  if (rc == 0)
    rc = fanout_trace_start(r);
  if (rc == 0)
    rc = uvp_curl_new(r->ctx, &r->curl);
  if (rc == 0)
    curl_multi_setopt(uvp_curl_multi(r->curl), CURLMOPT_MAXCONNECTS,
                      (long)cli->concurrency);
  signals_start(&w);
  if (rc == 0)
    rc = worker_start(&w, cli);
  if (rc == 0) {
    printf("serving as %s\n", w.name);
    fflush(stdout); /* whoever started us waits for this line */
    uv_run(r->loop, UV_RUN_DEFAULT); /* until drained */
  } else if (rc == 2) { /* a signal while it connected: nothing to drain */
    printf("stopped %s before it served\n", w.name);
  } else {
    if (rc != 1) /* 1: said by worker_start */
      fprintf(stderr, "uvp-fanout: %s: %s\n", cli->shown,
              uvp_nats_strerror(rc));
    w.exit_code = 1;
  }
  signals_close(&w);
  if (w.nc != NULL)
    uvp_nats_close(w.nc);
  if (r->curl != NULL)
    uvp_curl_close(r->curl);
  uvp_promise_release(w.drain);
  uvp_promise_release(w.drain_p);
  if (fanout_trace_write(r) != 0) /* each request's SERVER span in it */
    w.exit_code = 1;
  if (r->ctx != NULL)
    uvp_ctx_close(r->ctx);
  uv_run(r->loop, UV_RUN_DEFAULT);
  return w.exit_code;
}
