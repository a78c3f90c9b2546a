/* uvp-fanout --nats URL --durable JOB: a fan-out whose work and results
 * JetStream keeps (nats-server -js), so that no process's death loses
 * either.  Both sides are here; main.c calls them.
 *
 * The job JOB is three things on the server, named from JOB:
 *  - the stream uvp-fanout-JOB (work queue, subject uvp-fanout.job.JOB):
 *    one message per URL, {"v":1,"id":N,"url":URL}, with Nats-Msg-Id
 *    "JOB.N" (N the URL's row, from 1), so that publishing a URL again
 *    within the stream's duplicate window stores nothing;
 *  - its durable pull consumer "workers", which the workers share: each
 *    pulls at most its -c, and a URL whose worker died goes to another
 *    after ack_wait;
 *  - the KV bucket uvp-fanout-JOB: key "job" the job's manifest (how many
 *    URLs, a hash of their list, curl's options), key "r.N" URL N's result
 *    (the core mode's reply, plus "delivery"), written with create, so the
 *    first write wins and a URL fetched twice is reported once.
 *
 * The coordinator makes them (or finds them, run again), watches the
 * bucket's "r.*" keys (the results stored so far, then each as it comes),
 * and once it has caught up publishes the URLs that have no result, -c
 * publishes awaiting their acknowledgement at a time; it prints each row
 * in input order as soon as it and those before it are known, and ends
 * when every row is.  Killed and run again, it prints the whole job and
 * publishes only what has no result; what it had published and is still
 * queued or being fetched is deduplicated by its Nats-Msg-Id.
 *
 * A worker pulls from the consumer and serves each URL as a fiber
 * (uvp_nats_js_serve): the fetch (fanout_fetch, curl's options from the
 * manifest), then the result's create, then the ack.  A URL delivered
 * again whose result is stored already (its worker died between the two)
 * is acked without a fetch.
 *
 * Replicas: the coordinator asks for 3 and takes what the server says: a
 * server outside a cluster refuses (JetStream's error 10074, "replicas >
 * 1 not supported in non-clustered mode"), and the job is made with 1;
 * the bucket gets what the stream got.  No other probe exists in the
 * public API: nats.c does not expose the server INFO's "cluster", and
 * account info ($JS.API.INFO) does not say. */
#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fanout.h"
#include "jsonw.h"
#include "uvp-nats-js.h"

#define JOB_PREFIX "uvp-fanout-"
#define CONSUMER "workers"
#define MANIFEST_KEY "job"
/* Messages out to the workers and not acknowledged, over all of them: far
 * above what any set of workers' -c adds up to. */
#define MAX_ACK_PENDING 65536
/* The duplicate window at least (JetStream's own default). */
#define WINDOW_MIN_MS (2 * 60 * 1000)
#define WINDOW_MAX_MS (7ull * 24 * 3600 * 1000)
/* A call the server could not answer yet (no leader while a cluster
 * elects, a server restarting): tried again, 250 ms doubling to 2 s,
 * this many times (about a minute) during setup. */
#define SETUP_TRIES 32
/* A result's write: the time it may take past the fetch's, and how often
 * it is tried before the URL is given back (-NAK) for a later delivery. */
#define STORE_MS 10000
#define STORE_TRIES 8
/* A pull request's life at the server: a request the server lost (the
 * consumer's leader died) is asked again this and 2 s after it was sent.
 * The results' watch hears a heartbeat this often while idle, and starts
 * again after two missed (the bucket's leader died). */
#define PULL_EXPIRES_MS 2000
#define WATCH_HEARTBEAT_MS 1000
/* How often a worker looks for a job that does not exist yet, and for
 * the purge of the one it serves; how long what runs then may finish. */
#define JOB_POLL_MS 2000
#define PURGE_POLL_MS 2000
#define PURGE_DRAIN_MS 1000
/* How often the coordinator's progress line asks the consumer: as often
 * as the line is looked at (main.c's PROGRESS_EVERY_MS). */
#define PROGRESS_POLL_MS 250

typedef struct names_s {
  char stream[96];  /* uvp-fanout-JOB: the work queue */
  char subject[96]; /* uvp-fanout.job.JOB */
  char bucket[96];  /* uvp-fanout-JOB: the results (stream KV_uvp-fanout-JOB) */
} names_t;

static void job_names(const char *job, names_t *n) {
  snprintf(n->stream, sizeof(n->stream), JOB_PREFIX "%s", job);
  snprintf(n->subject, sizeof(n->subject), "uvp-fanout.job.%s", job);
  snprintf(n->bucket, sizeof(n->bucket), JOB_PREFIX "%s", job);
}

/* What another try, a moment later, may get past. */
static bool transient(int rc) {
  return rc == UV_ETIMEDOUT || rc == UV_EAGAIN ||
         rc == UVP_NATS_ENORESPONDERS || rc == UVP_NATS_EDISCONNECTED;
}

/* In a fiber: after a transient failure, wait and say to try again (at
 * most SETUP_TRIES times). */
static bool again(uvp_ctx_t *ctx, int rc, unsigned *n) {
  if (!transient(rc) || *n >= SETUP_TRIES)
    return false;
  uint64_t ms = 250u << (*n < 3 ? *n : 3);
  (*n)++;
  uvp_promise_t *d;
  return uvp_await_take(uvp_delay(ctx, ms, NULL, NULL, 0, &d), &d, NULL) == 0;
}

/* A failure in words: JetStream's own description when it gave one. */
static const char *why(int rc, const uvp_outcome_t *o) {
  const uvp_nats_js_error_t *e = o != NULL ? o->value : NULL;
  if ((rc == UVP_NATS_EJETSTREAM || rc == UV_EACCES) && e != NULL &&
      e->description != NULL) /* UV_EACCES: the server's words, subject */
    return e->description;
  return uvp_nats_strerror(rc);
}

/* The connection's options: fanout_nats_options, and a comma-separated
 * --nats list (a cluster's nodes) as nats.c's server list (its 3.4
 * finds no server in a list given as one URL).  *url is what the connect
 * is then given (NULL: the list). */
static natsOptions *connect_options(const char *name, const nats_cli_t *cli,
                                    const char **url) {
  natsOptions *no = fanout_nats_options(name, cli);
  *url = cli->url;
  if (no == NULL || strchr(cli->url, ',') == NULL)
    return no;
  char *list = strdup(cli->url), *save = NULL;
  const char *servers[64];
  int n = 0;
  for (char *t = list != NULL ? strtok_r(list, ",", &save) : NULL;
       t != NULL && n < 64; t = strtok_r(NULL, ",", &save))
    servers[n++] = t;
  if (n > 0 && natsOptions_SetServers(no, servers, n) == NATS_OK)
    *url = NULL;
  free(list);
  return no;
}

/* FNV-1a over the URLs, each ended by a newline: a restart given another
 * list is told so. */
static uint64_t urls_hash(const run_t *r) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < r->n; i++) {
    for (const char *c = r->rows[i].url; *c != '\0'; c++)
      h = (h ^ (unsigned char)*c) * 1099511628211ull;
    h = (h ^ '\n') * 1099511628211ull;
  }
  return h;
}

/* ---- the coordinator ----------------------------------------------------- */

typedef struct dco_s {
  run_t *r;
  const nats_cli_t *cli;
  names_t nm;
  unsigned refs; /* main's, the setup's, each handler's (co_release) */
  uvp_nats_t *nc;
  uvp_nats_js_t *js;
  uvp_nats_kv_watch_t *watch;
  uvp_promise_t *done;     /* main's: fulfils once every row is printed */
  uvp_promise_t *deadline; /* -d's delay */
  uvp_promise_t *poll;     /* the progress line's figures: co_poll */
  unsigned char *known;    /* per row: its outcome is in the row */
  size_t nknown, printed;
  size_t *todo, ntodo, next_todo, publishing; /* rows to publish */
  uint64_t *bad_rev; /* per row: the revision of an unreadable result, 0 */
  bool caught_up, finished;
  bool resync, resyncing; /* after a reconnect: see on_event */
  size_t nresults, resync_at;
  int replicas;
  jsonw_t body;
  char msg_id[96];
} dco_t;

typedef struct pub_s {
  dco_t *co;
  size_t i;
  unsigned refs; /* the retry's and its handler's */
} pub_t;

static void co_release(void *arg) {
  dco_t *co = arg;
  if (--co->refs > 0)
    return;
  free(co->known);
  free(co->bad_rev);
  free(co->todo);
  free(co->body.p);
  free(co);
}

/* Give back a reference taken for a handler that was never registered:
 * main's is still held, so this is never the last. */
static void co_drop(dco_t *co) {
  assert(co->refs > 1);
  co->refs--;
}

static void co_print(dco_t *co) {
  run_t *r = co->r;
  size_t was = co->printed;
  while (co->printed < r->n && co->known[co->printed]) {
    row_t *row = &r->rows[co->printed];
    uvp_settled_t s = {.status = row->error};
    fanout_report_row(r, co->printed++, &s);
  }
  if (co->printed > was && co->printed < r->n)
    fanout_progress_draw(r); /* below the rows */
}

/* Row i's outcome is known (stored, or what this run found out). */
static void co_known(dco_t *co, size_t i) {
  run_t *r = co->r;
  row_t *row = &r->rows[i];
  co->known[i] = 1;
  co->nknown++;
  fanout_row_trace_end(r, row, row->error);
  row->end_ns = uv_hrtime();
  r->settled++;
  if (row->error != 0 || row->status >= 400)
    r->failed++;
  if (row->delivery > 1)
    r->redelivered++;
}

/* Every row printed (those still unknown with `rc`, a deadline's), then
 * main's report: the summary. */
static void co_finish(dco_t *co, int rc) {
  run_t *r = co->r;
  if (co->finished)
    return;
  co->finished = true;
  if (co->deadline != NULL)
    uvp_promise_cancel(co->deadline);
  if (co->poll != NULL)
    uvp_promise_cancel(co->poll);
  if (co->watch != NULL)
    uvp_nats_kv_watch_close(co->watch);
  co->watch = NULL;
  if (rc != 0 && rc != UV_ETIMEDOUT) {
    fprintf(stderr, "uvp-fanout: job %s: %s\n", co->cli->job,
            uvp_nats_strerror(rc));
    for (size_t i = 0; i < r->n; i++) /* --trace: each URL's span ends */
      fanout_row_trace_end(r, &r->rows[i], rc);
    uvp_promise_reject(co->done, rc, NULL, NULL);
    return;
  }
  for (size_t i = 0; i < r->n; i++)
    if (!co->known[i]) {
      row_t *row = &r->rows[i];
      /* its latency: from its publish to now (none if never published) */
      if (row->start_ns == 0)
        row->start_ns = uv_hrtime();
      row->error = UV_ETIMEDOUT;
      free(row->reason);
      row->reason = strdup("no result before the deadline (-d); the job goes "
                           "on: run again for the rest");
      co_known(co, i);
    }
  co_print(co);
  uvp_promise_resolve(co->done, NULL, NULL);
}

/* The stored result e of URL id as a worker writes it (o: its JSON, the
 * caller's, may be NULL) into row (NULL: only checked); else NULL.  Not
 * what a worker writes (not JSON, another shape, another id, anything
 * over UVP_NATS_JS_MAX_JSON): whoever may write the bucket planted it. */
static json_t *result_read(const uvp_nats_kv_entry_t *e, unsigned long long id,
                           row_t *row) {
  if (e->len > UVP_NATS_JS_MAX_JSON)
    return NULL;
  json_error_t je;
  json_t *o = json_loadb(e->value, e->len, 0, &je);
  json_t *v = json_object_get(o, "v"), *jid = json_object_get(o, "id");
  row_t scratch = {0};
  if (json_is_integer(v) && json_integer_value(v) == NATS_PROTOCOL_VERSION &&
      json_is_integer(jid) &&
      (unsigned long long)json_integer_value(jid) == id &&
      fanout_reply_fields(row != NULL ? row : &scratch, o) == 0) {
    free(scratch.worker);
    free(scratch.reason);
    free(scratch.error_name);
    return o;
  }
  free(scratch.worker);
  free(scratch.reason);
  free(scratch.error_name);
  json_decref(o);
  return NULL;
}

static void co_refetch(dco_t *co, size_t i);

/* A stored result into its row; false if it is not one (nothing kept).
 * One the coordinator cannot read is no result (issue 71): the URL is
 * published again under an id of that revision's (the stream's dedupe
 * would drop its first id), a worker overwrites it, and the row says it
 * was fetched again. */
static bool result_take(dco_t *co, const uvp_nats_kv_entry_t *e) {
  run_t *r = co->r;
  char *end;
  if (e->op != UVP_NATS_KV_PUT || strncmp(e->key, "r.", 2) != 0)
    return false;
  unsigned long long n = strtoull(e->key + 2, &end, 10);
  if (*end != '\0' || n == 0 || n > r->n || co->known[n - 1])
    return false;
  row_t *row = &r->rows[n - 1];
  json_t *o = result_read(e, n, row);
  co->nresults++;
  if (o == NULL) {
    if (co->bad_rev == NULL && (co->bad_rev = calloc(r->n, 8)) == NULL) {
      co_finish(co, UV_ENOMEM);
      return true;
    }
    co->bad_rev[n - 1] = e->revision;
    row->refetched = 1;
    co_refetch(co, (size_t)n - 1);
    return true;
  }
  json_t *delivery = json_object_get(o, "delivery");
  row->delivery =
      json_is_integer(delivery) ? (unsigned)json_integer_value(delivery) : 1;
  json_decref(o);
  co_known(co, (size_t)n - 1);
  if (!co->caught_up)
    r->found++;
  return true;
}

static void pub_release(void *arg) {
  pub_t *pb = arg;
  if (--pb->refs > 0)
    return;
  co_release(pb->co);
  free(pb);
}

static int pub_attempt(void *arg, unsigned int n, uvp_promise_t **out) {
  pub_t *pb = arg;
  dco_t *co = pb->co;
  row_t *row = &co->r->rows[pb->i];
  jsonw_t *w = &co->body;
  if (co->finished)
    return UV_ECANCELED;
  row->sends = n + 1;
  if (row->start_ns == 0) /* what a deadline's row counts from */
    row->start_ns = uv_hrtime();
  jsonw_open(w);
  jsonw_key(w, "v");
  jsonw_int(w, NATS_PROTOCOL_VERSION);
  jsonw_key(w, "id");
  jsonw_int(w, (int64_t)pb->i + 1);
  jsonw_key(w, "url");
  (void)jsonw_str(w, row->url); /* checked to be UTF-8 before */
  jsonw_close(w);
  if (w->failed)
    return UV_ENOMEM;
  if (co->bad_rev != NULL && co->bad_rev[pb->i] != 0)
    snprintf(co->msg_id, sizeof(co->msg_id), "%s.%zu.r%llu", co->cli->job,
             pb->i + 1, (unsigned long long)co->bad_rev[pb->i]);
  else
    snprintf(co->msg_id, sizeof(co->msg_id), "%s.%zu", co->cli->job, pb->i + 1);
  uvp_nats_js_publish_opts_t po = {.msg_id = co->msg_id};
  /* --trace: the message carries the URL's trace, and so does each of
   * its redeliveries: every worker's fetch of it joins that trace */
  fanout_trace_was_t was;
  if (!co->known[pb->i]) /* (its span ended with its result) */
    fanout_row_trace_begin(co->r, row);
  fanout_row_trace_enter(co->r, row, &was);
  int rc = uvp_nats_js_publish(co->js, co->nm.subject, w->p, w->len, &po, out);
  fanout_row_trace_leave(co->r, &was);
  return rc;
}

/* Published again while the server cannot take it (a restart, an
 * election): with the same Nats-Msg-Id, which dedupes. */
static int pub_again(void *arg, int code, unsigned int n) {
  pub_t *pb = arg;
  (void)n;
  return !pb->co->finished && transient(code);
}

static void pub_pump(dco_t *co);

static uvp_ret_t on_published(void *arg, const uvp_outcome_t *in) {
  pub_t *pb = arg;
  dco_t *co = pb->co;
  run_t *r = co->r;
  if (co->finished)
    return uvp_ret_value(NULL, NULL);
  co->publishing--;
  if (in->status == 0) {
    const uvp_nats_js_ack_t *ack = in->value;
    if (ack->duplicate)
      r->duplicates++;
    else
      r->published++;
  } else if (!co->known[pb->i]) { /* for good: its row says why */
    row_t *row = &r->rows[pb->i];
    row->error = in->status;
    free(row->reason);
    row->reason = strdup(why(in->status, in));
    row->attempts = 1;
    co_known(co, pb->i);
    co_print(co);
    if (co->nknown == r->n) {
      co_finish(co, 0);
      return uvp_ret_value(NULL, NULL);
    }
  }
  pub_pump(co);
  return uvp_ret_value(NULL, NULL);
}

/* Keep -c publishes awaiting their acknowledgement. */
static void pub_pump(dco_t *co) {
  while (!co->finished && co->publishing < co->cli->concurrency &&
         co->next_todo < co->ntodo) {
    pub_t *pb = malloc(sizeof(*pb));
    if (pb == NULL) {
      co_finish(co, UV_ENOMEM);
      return;
    }
    *pb = (pub_t){co, co->todo[co->next_todo++], 2};
    co->refs++;
    uvp_retry_opts_t ro = {.attempts = 1000000,
                           .base_ms = 100,
                           .max_ms = 2000,
                           .factor = 2.0,
                           .jitter = 0.5,
                           .should_retry = pub_again,
                           .arg_free = pub_release};
    uvp_promise_t *p;
    int rc = uvp_retry(co->r->ctx, pub_attempt, pb, &ro, &p);
    if (rc != 0) { /* the retry let its share go: the handler's is ours */
      free(pb);
      co_drop(co);
      co_finish(co, rc);
      return;
    }
    co->publishing++;
    rc = uvp_promise_on_full(p, UVP_ON_BOTH | UVP_ON_TAKE, on_published, pb,
                             pub_release, NULL);
    if (rc != 0) { /* the handler's share went with the refusal */
      co_finish(co, rc);
      return;
    }
  }
}

/* The watch has handed out every result stored before it started: what
 * has none is published (what this run found out itself, a URL that is
 * not UTF-8, is not). */
static void co_caught_up(dco_t *co) {
  run_t *r = co->r;
  co->caught_up = true;
  co->todo = malloc((r->n + 1) * sizeof(*co->todo)); /* co_refetch's too */
  if (co->todo == NULL) {
    co_finish(co, UV_ENOMEM);
    return;
  }
  co->ntodo = 0;
  jsonw_t probe = {0};
  for (size_t i = 0; i < r->n; i++) {
    if (co->known[i])
      continue;
    jsonw_open(&probe);
    if (!jsonw_str(&probe, r->rows[i].url) && !probe.failed) {
      row_t *row = &r->rows[i];
      row->error = UV_EINVAL;
      row->attempts = 1;
      row->reason = strdup("the URL is not valid UTF-8");
      co_known(co, i);
      continue;
    }
    co->todo[co->ntodo++] = i;
  }
  free(probe.p);
  r->started = r->n;
  co_print(co);
  if (co->nknown == r->n)
    co_finish(co, 0);
  else
    pub_pump(co);
}

/* Row i's stored result was unreadable: published again once the watch
 * has caught up (co_caught_up publishes it before). */
static void co_refetch(dco_t *co, size_t i) {
  if (!co->caught_up)
    return;
  if (co->ntodo > co->r->n) { /* full of what was published: drop that */
    memmove(co->todo, co->todo + co->next_todo,
            (co->ntodo - co->next_todo) * sizeof(*co->todo));
    co->ntodo -= co->next_todo;
    co->next_todo = 0;
    if (co->ntodo > co->r->n)
      return;
  }
  co->todo[co->ntodo++] = i;
  pub_pump(co);
}

/* Every URL that has no result, published again. */
static void co_republish(dco_t *co) {
  co->ntodo = co->next_todo = 0;
  for (size_t i = 0; i < co->r->n; i++)
    if (!co->known[i])
      co->todo[co->ntodo++] = i;
  pub_pump(co);
}

/* Once the watch has handed out as many results as the bucket held when
 * the resync began. */
static void co_resync_check(dco_t *co) {
  if (co->resync && co->nresults >= co->resync_at) {
    co->resync = false;
    co_republish(co);
  }
}

/* How many results the bucket holds now (the manifest is its one other
 * key); if it cannot say, everything without a result goes again. */
static uvp_ret_t co_resync(void *arg) {
  dco_t *co = arg;
  uvp_promise_t *p;
  uvp_outcome_t o;
  unsigned n = 0;
  int rc;
  char kv[128];
  snprintf(kv, sizeof(kv), "KV_%s", co->nm.bucket);
  do
    rc = uvp_await_take(uvp_nats_js_stream_info(co->js, kv, &p), &p, &o);
  while (!co->finished && again(co->r->ctx, rc, &n));
  co->resyncing = false;
  if (co->finished)
    return uvp_ret_value(NULL, NULL);
  uint64_t m =
      rc == 0 ? ((const uvp_nats_js_stream_info_t *)o.value)->messages : 0;
  co->resync_at = m > 0 ? (size_t)m - 1 : 0;
  co->resync = true;
  co_resync_check(co);
  return uvp_ret_value(NULL, NULL);
}

/* Connected again after the connection dropped: the server may have been
 * killed and started again, and a message it acknowledged in its last
 * milliseconds may not have reached its disk (its file store writes
 * behind), a URL or a result.  So every URL that has no result is
 * published again: those the stream holds are duplicates by their
 * Nats-Msg-Id, the others are fetched (again, if a result was lost).  Not
 * at once: the watch, which starts again too, first catches up with the
 * results stored meanwhile, whose URLs' messages are acknowledged and
 * gone (their ids with them, for a server that restarted), and would be
 * fetched a second time. */
static void on_event(void *arg, uvp_nats_t *nc, uvp_nats_event_t event) {
  dco_t *co = arg;
  (void)nc;
  if (event != UVP_NATS_RECONNECTED || !co->caught_up || co->finished ||
      co->resyncing)
    return;
  co->resyncing = true;
  co->refs++;
  uvp_fiber_opts_t fo = {.arg_free = co_release};
  if (uvp_fiber_spawn(co->r->ctx, co_resync, co, &fo, NULL) != 0) {
    co->resyncing = false; /* co_release has run (uvp.h, "Handing over") */
    co_republish(co);
  }
}

static void watch_more(dco_t *co);

static uvp_ret_t on_entry(void *arg, const uvp_outcome_t *in) {
  dco_t *co = arg;
  if (co->finished)
    return uvp_ret_value(NULL, NULL);
  if (in->status != 0) {
    co_finish(co, in->status);
    return uvp_ret_value(NULL, NULL);
  }
  if (in->value == NULL) {
    co_caught_up(co);
  } else if (result_take(co, in->value)) {
    co_print(co);
    if (co->nknown == co->r->n)
      co_finish(co, 0);
    else
      co_resync_check(co);
  }
  if (!co->finished)
    watch_more(co);
  return uvp_ret_value(NULL, NULL);
}

static void watch_more(dco_t *co) {
  uvp_promise_t *p;
  int rc = uvp_nats_kv_watch_next(co->watch, &p);
  if (rc == 0) {
    co->refs++;
    rc = uvp_promise_on_full(p, UVP_ON_BOTH | UVP_ON_TAKE, on_entry, co,
                             co_release, NULL); /* refused: co_release ran */
  }
  if (rc != 0)
    co_finish(co, rc);
}

static uvp_ret_t on_deadline(void *arg, const uvp_outcome_t *in) {
  dco_t *co = arg;
  if (in->status == 0)
    co_finish(co, UV_ETIMEDOUT);
  return uvp_ret_value(NULL, NULL);
}

/* The progress line's figures (a terminal's only): what the consumer has
 * not delivered yet, and what it has delivered and waits to see acked,
 * every PROGRESS_POLL_MS until co_finish cancels this.  What the workers
 * hold is the consumer's count, not this run's publishes: a URL
 * published is queued at the server until a worker pulls it. */
static uvp_ret_t co_poll(void *arg) {
  dco_t *co = arg;
  run_t *r = co->r;
  uvp_promise_t *p;
  uvp_outcome_t o;
  int rc = 0;
  while (!co->finished && rc != UV_ECANCELED && rc != UVP_ECLOSED) {
    rc = uvp_await_take(
        uvp_nats_js_consumer_info(co->js, co->nm.stream, CONSUMER, &p), &p, &o);
    if (rc == 0) {
      const uvp_nats_js_consumer_info_t *ci = o.value;
      r->job_queued = (long long)ci->num_pending;
      r->job_held = (long long)ci->num_ack_pending;
    }
    if (rc != UV_ECANCELED && rc != UVP_ECLOSED) /* a failure: next time */
      rc = uvp_await_take(
          uvp_delay(r->ctx, PROGRESS_POLL_MS, NULL, NULL, 0, &p), &p, NULL);
  }
  return uvp_ret_value(NULL, NULL);
}

/* The work queue: found, or made with 3 replicas, or 1 where the server
 * is not in a cluster. */
static int stream_ensure(dco_t *co, uvp_outcome_t *o) {
  run_t *r = co->r;
  uvp_ctx_t *ctx = r->ctx;
  uvp_promise_t *p;
  unsigned n = 0;
  int rc;
  do
    rc = uvp_await_take(uvp_nats_js_stream_info(co->js, co->nm.stream, &p), &p,
                        o);
  while (again(ctx, rc, &n));
  if (rc == 0) {
    co->replicas = ((const uvp_nats_js_stream_info_t *)o->value)->replicas;
    return 0;
  }
  if (rc != UV_ENOENT)
    return rc;
  /* How long the job may take if -c URLs were fetched at a time, each
   * taking -m on every attempt: what the dedupe of a publish must cover. */
  uint64_t rounds = (r->n + co->cli->concurrency - 1) / co->cli->concurrency;
  uint64_t window = rounds * fanout_request_timeout(r);
  window = window < WINDOW_MIN_MS   ? WINDOW_MIN_MS
           : window > WINDOW_MAX_MS ? WINDOW_MAX_MS
                                    : window;
  const char *subjects[] = {co->nm.subject, NULL};
  uvp_nats_js_stream_config_t sc = {.name = co->nm.stream,
                                    .subjects = subjects,
                                    .retention = UVP_NATS_JS_WORKQUEUE,
                                    .replicas = 3,
                                    .duplicate_window_ms = window};
  for (;;) {
    n = 0;
    do
      rc = uvp_await_take(uvp_nats_js_stream_add(co->js, &sc, &p), &p, o);
    while (again(ctx, rc, &n));
    const uvp_nats_js_error_t *e = rc == UVP_NATS_EJETSTREAM ? o->value : NULL;
    if (e != NULL && e->err_code == 10074 && sc.replicas > 1) {
      sc.replicas = 1; /* not clustered */
      continue;
    }
    break;
  }
  if (rc == 0)
    co->replicas = ((const uvp_nats_js_stream_info_t *)o->value)->replicas;
  return rc;
}

/* The manifest: written by the job's first run, compared by the next. */
static int manifest_ensure(dco_t *co, uvp_outcome_t *o) {
  run_t *r = co->r;
  uvp_ctx_t *ctx = r->ctx;
  uint64_t hash = urls_hash(r);
  char hex[17];
  snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)hash);
  json_t *m = json_pack("{s:i,s:s,s:I,s:s,s:o}", "v", NATS_PROTOCOL_VERSION,
                        "job", co->cli->job, "urls", (json_int_t)r->n, "hash",
                        hex, "opts", fanout_request_opts(r));
  char *text = m != NULL ? json_dumps(m, JSON_COMPACT) : NULL;
  json_decref(m);
  if (text == NULL)
    return UV_ENOMEM;
  uvp_promise_t *p;
  unsigned n = 0;
  int rc;
  do
    rc = uvp_await_take(uvp_nats_kv_create(co->js, co->nm.bucket, MANIFEST_KEY,
                                           text, strlen(text), &p),
                        &p, o);
  while (again(ctx, rc, &n));
  free(text);
  if (rc != UV_EEXIST)
    return rc;
  n = 0;
  do
    rc = uvp_await_take(
        uvp_nats_kv_get(co->js, co->nm.bucket, MANIFEST_KEY, &p), &p, o);
  while (again(ctx, rc, &n));
  if (rc != 0)
    return rc;
  const uvp_nats_kv_entry_t *e = o->value;
  json_error_t je;
  json_t *had = json_loadb(e->value, e->len, 0, &je);
  json_t *urls = json_object_get(had, "urls");
  const char *h = json_string_value(json_object_get(had, "hash"));
  bool same = json_is_integer(urls) &&
              (size_t)json_integer_value(urls) == r->n && h != NULL &&
              strcmp(h, hex) == 0;
  if (!same)
    fprintf(stderr,
            "uvp-fanout: job %s was made with another list of URLs (%lld): "
            "purge it (--purge) or name another job\n",
            co->cli->job,
            json_is_integer(urls) ? (long long)json_integer_value(urls) : -1LL);
  json_decref(had);
  return same ? 0 : UV_EEXIST;
}

/* Connect; the stream, the bucket, the manifest, the consumer; the watch.
 * Then the rows come through the watch's handlers. */
static uvp_ret_t co_setup(void *arg) {
  dco_t *co = arg;
  run_t *r = co->r;
  uvp_ctx_t *ctx = r->ctx;
  uvp_promise_t *p;
  uvp_outcome_t o = {0};
  unsigned n = 0;
  const char *what = co->cli->shown;
  uvp_nats_connect_opts_t c = {.on_event = on_event, .arg = co};
  c.options = connect_options("uvp-fanout", co->cli, &c.url);
  int rc = uvp_await_take(fanout_nats_connect(ctx, &c, co->cli, &p), &p, &o);
  if (rc == 0) {
    co->nc = o.value;
    rc = uvp_nats_js_new(co->nc, NULL, &co->js);
  } else {
    fanout_nats_connect_failed(co->cli, rc, o.value);
    what = NULL; /* said */
  }
  if (rc == 0) {
    what = co->nm.stream;
    rc = stream_ensure(co, &o);
  }
  if (rc == 0) {
    what = co->nm.bucket;
    uvp_nats_kv_config_t kc = {.bucket = co->nm.bucket,
                               .replicas = co->replicas};
    do
      rc = uvp_await_take(uvp_nats_kv_bucket_add(co->js, &kc, &p), &p, &o);
    while (again(ctx, rc, &n));
  }
  if (rc == 0 && (rc = manifest_ensure(co, &o)) == UV_EEXIST)
    what = NULL; /* another list of URLs: said */
  if (rc == 0) {
    what = "consumer " CONSUMER;
    uvp_nats_js_consumer_config_t cc = {.durable = CONSUMER,
                                        .ack_wait_ms =
                                            fanout_request_timeout(r),
                                        .max_ack_pending = MAX_ACK_PENDING};
    n = 0;
    do
      rc = uvp_await_take(
          uvp_nats_js_consumer_add(co->js, co->nm.stream, &cc, &p), &p, &o);
    while (again(ctx, rc, &n));
    if (rc == UV_EEXIST) /* a later run's -m: the first one's stays */
      rc = 0;
  }
  if (rc == 0) {
    what = co->nm.bucket;
    n = 0;
    uvp_nats_kv_watch_opts_t wo = {.heartbeat_ms = WATCH_HEARTBEAT_MS};
    do
      rc = uvp_await_take(
          uvp_nats_kv_watch(co->js, co->nm.bucket, "r.*", &wo, &p), &p, &o);
    while (again(ctx, rc, &n));
    if (rc == 0)
      co->watch = o.value;
  }
  if (rc != 0) {
    if (what != NULL)
      fprintf(stderr, "uvp-fanout: job %s: %s: %s\n", co->cli->job, what,
              why(rc, &o));
    co->finished = true;
    uvp_promise_reject(co->done, rc, NULL, NULL);
    return uvp_ret_value(NULL, NULL);
  }
  uv_update_time(r->loop);
  r->start_ns = uv_hrtime();
  if (r->deadline_ms != 0) {
    rc = uvp_delay(ctx, r->deadline_ms, NULL, NULL, UVP_UNREF, &co->deadline);
    if (rc == 0) {
      co->refs++;
      rc = uvp_promise_on_full(co->deadline, UVP_ON_BOTH, on_deadline, co,
                               co_release, NULL); /* refused: co_release ran */
    }
  }
  if (rc == 0 && r->progress) {
    co->refs++;
    uvp_fiber_opts_t fo = {.arg_free = co_release};
    rc = uvp_fiber_spawn(ctx, co_poll, co, &fo, &co->poll); /* or co_release */
  }
  if (rc == 0)
    watch_more(co);
  else
    co_finish(co, rc);
  return uvp_ret_value(NULL, NULL);
}

static void before_report(run_t *r) {
  dco_t *co = r->nats;
  uvp_nats_stats_t st;
  if (co->nc != NULL && uvp_nats_stats(co->nc, &st) == 0)
    r->disconnects = st.disconnects;
}

static void coord_end(run_t *r) {
  dco_t *co = r->nats;
  co->finished = true;
  if (co->watch != NULL)
    uvp_nats_kv_watch_close(co->watch);
  co->watch = NULL;
  uvp_promise_release(co->deadline);
  co->deadline = NULL;
  uvp_promise_release(co->poll);
  co->poll = NULL;
  if (co->js != NULL)
    uvp_nats_js_free(co->js);
  if (co->nc != NULL)
    uvp_nats_close(co->nc);
  uvp_promise_release(co->done);
  r->nats = NULL;
  r->nats_end = NULL;
  r->nats_before_report = NULL;
  co_release(co);
}

int fanout_durable_coord(run_t *r, const nats_cli_t *cli, uvp_promise_t **out) {
  dco_t *co = calloc(1, sizeof(*co));
  if (co == NULL)
    return UV_ENOMEM;
  co->r = r;
  co->cli = cli;
  co->refs = 1;
  job_names(cli->job, &co->nm);
  co->known = calloc(r->n + 1, 1);
  r->nats = co;
  r->nats_mode = 1;
  r->job = cli->job;
  r->nats_before_report = before_report;
  r->nats_end = coord_end;
  int rc = co->known != NULL ? uvp_promise_new(r->ctx, &co->done) : UV_ENOMEM;
  if (rc == 0) {
    co->refs++;
    uvp_fiber_opts_t fo = {.arg_free = co_release};
    rc = uvp_fiber_spawn(r->ctx, co_setup, co, &fo, NULL); /* or co_release */
  }
  if (rc == 0) {
    *out = uvp_promise_retain(co->done);
  } else {
    coord_end(r);
    r->job = NULL;
  }
  return rc;
}

/* ---- the worker ---------------------------------------------------------- */

typedef struct dwk_s {
  run_t *r;
  const nats_cli_t *cli;
  names_t nm;
  char name[300];
  uvp_nats_t *nc;
  uvp_nats_js_t *js;
  uvp_nats_js_pull_t *pull;
  uvp_nats_js_svc_t *svc;
  uvp_promise_t *setup, *drain;
  job_t tmpl; /* the manifest's options over the worker's */
  uint64_t ack_wait_ms;
  int64_t manifest_ns;  /* when the manifest was written */
  uint64_t stored;      /* redelivered URLs whose result was stored */
  uint64_t replaced;    /* stored results no coordinator could read, put
                           over (issue 71) */
  uint64_t check_until; /* on the loop's clock: see on_wk_event */
  uv_signal_t sigint, sigterm;
  bool drained, stopping;
  int exit_code;
} dwk_t;

/* A URL's result: the core mode's reply, plus JetStream's delivery count
 * of the message that was fetched. */
static char *result_json(const dwk_t *w, const job_t *j, uint64_t delivery,
                         int error, const char *message) {
  const row_t *row = &j->row;
  jsonw_t b = {0};
  jsonw_open(&b);
  jsonw_key(&b, "v");
  jsonw_int(&b, NATS_PROTOCOL_VERSION);
  jsonw_key(&b, "id");
  jsonw_int(&b, j->id);
  jsonw_key(&b, "worker");
  if (!jsonw_str(&b, w->name))
    jsonw_null(&b);
  jsonw_key(&b, "status");
  jsonw_int(&b, error != 0 ? 0 : row->status);
  jsonw_key(&b, "bytes");
  jsonw_int(&b, error != 0 ? 0 : (int64_t)row->bytes);
  jsonw_key(&b, "latency_us");
  jsonw_int(&b, (int64_t)row->latency_us);
  jsonw_key(&b, "attempts");
  jsonw_int(&b, row->attempts > 0 ? row->attempts : 1);
  jsonw_key(&b, "error");
  if (error != 0)
    (void)jsonw_str(&b, fanout_err_name(error));
  else
    jsonw_null(&b);
  if (message != NULL) {
    jsonw_key(&b, "message");
    if (!jsonw_str(&b, message))
      (void)jsonw_str(&b, "(not UTF-8)");
  }
  jsonw_key(&b, "delivery");
  jsonw_int(&b, (int64_t)delivery);
  jsonw_close(&b);
  if (b.failed) {
    free(b.p);
    return NULL;
  }
  return b.p;
}

/* Key `key` exists: a worker's result stays (0); one no coordinator can
 * read is replaced, on its revision (UVP_NATS_EREVISION if it changed
 * meanwhile: tried again). */
static int store_over(dwk_t *w, const char *key, long long id,
                      const char *body) {
  uvp_promise_t *p;
  uvp_outcome_t o;
  int rc =
      uvp_await_take(uvp_nats_kv_get(w->js, w->nm.bucket, key, &p), &p, &o);
  if (rc != 0)
    return rc == UV_ENOENT ? UV_EAGAIN : rc; /* deleted: create again */
  const uvp_nats_kv_entry_t *e = o.value;
  json_t *had = e->op == UVP_NATS_KV_PUT
                    ? result_read(e, (unsigned long long)id, NULL)
                    : NULL;
  uint64_t rev = e->revision;
  if (had != NULL) {
    json_decref(had);
    return 0;
  }
  w->replaced++;
  return uvp_await_take(
      uvp_nats_kv_update(w->js, w->nm.bucket, key, body, strlen(body), rev, &p),
      &p, NULL);
}

/* One URL, as a fiber of the service: fetched unless its result is stored
 * already (looked for when it is delivered again, and for a while after a
 * reconnect: on_wk_event), then its result created (the first write wins; a
 * second is EEXIST, as good), then acknowledged by the service when this
 * fulfils. A failure to store, or a cut (the drain's deadline), rejects with a
 * retryable code: the URL is given back. */
static uvp_ret_t serve_url(void *arg) {
  uvp_nats_js_served_t *req = arg;
  dwk_t *w = req->arg;
  run_t *r = w->r;
  uvp_ctx_t *ctx = r->ctx;
  uvp_nats_js_msg_t *m = req->msg;
  job_t *j = calloc(1, sizeof(*j));
  if (j == NULL)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  j->id = -1;
  j->http = w->tmpl.http;
  j->row.retries = w->tmpl.row.retries;
  const char *bad = fanout_job_parse(j, m->msg);
  uvp_promise_t *p;
  uvp_outcome_t o;
  int rc = 0;
  if (bad != NULL && j->id < 1) { /* not one of ours: never redelivered */
    fanout_job_free(j);
    return uvp_ret_reject(UV_EPROTO, NULL, NULL);
  }
  char key[32];
  snprintf(key, sizeof(key), "r.%lld", (long long)j->id);
  if ((m->delivered > 1 || uv_now(r->loop) < w->check_until) &&
      uvp_await_take(uvp_nats_kv_get(w->js, w->nm.bucket, key, &p), &p, &o) ==
          0) {
    json_t *had = result_read(o.value, (unsigned long long)j->id, NULL);
    if (had != NULL) { /* its worker died after the store, before the ack */
      json_decref(had);
      w->stored++;
      fanout_job_free(j);
      return uvp_ret_value(NULL, NULL);
    }
  }
  int error = 0;
  const char *message = bad;
  if (bad != NULL) {
    error = UV_EPROTO;
  } else {
    j->row.run = r;
    j->row.http = &j->http;
    j->row.url = j->url;
    j->row.start_ns = uv_hrtime();
    rc = uvp_await_take(fanout_fetch(r, &j->row, &p), &p, &o);
    error = j->row.error;
    if (rc < 0 && error == 0 && j->row.status == 0)
      error = rc;     /* cut before any attempt recorded */
    if (error != 0) { /* how long it took to fail, as the worker saw it */
      message =
          j->row.reason != NULL ? j->row.reason : uvp_curl_strerror(error);
      j->row.latency_us = (uv_hrtime() - j->row.start_ns) / 1000;
    }
  }
  if (rc == UV_ECANCELED) { /* the drain cut it: for another worker */
    fanout_job_free(j);
    return uvp_ret_reject(UV_ECANCELED, NULL, NULL);
  }
  char *body = result_json(w, j, m->delivered, error, message);
  long long id = j->id;
  fanout_job_free(j);
  if (body == NULL)
    return uvp_ret_reject(UV_ENOMEM, NULL, NULL);
  unsigned n = 0;
  do {
    rc = uvp_await_take(
        uvp_nats_kv_create(w->js, w->nm.bucket, key, body, strlen(body), &p),
        &p, NULL);
    if (rc == UV_EEXIST) /* another worker stored it first, or a stranger */
      rc = store_over(w, key, id, body);
  } while (rc != 0 && n < STORE_TRIES && again(ctx, rc, &n));
  free(body);
  if (rc != 0 && !transient(rc) && rc != UV_ECANCELED)
    rc = UV_EAGAIN; /* given back all the same: the fetch is not at fault */
  return rc == 0 ? uvp_ret_value(NULL, NULL) : uvp_ret_reject(rc, NULL, NULL);
}

static void wk_signals_close(dwk_t *w) {
  if (!uv_is_closing((uv_handle_t *)&w->sigint)) {
    uv_close((uv_handle_t *)&w->sigint, NULL);
    uv_close((uv_handle_t *)&w->sigterm, NULL);
  }
}

/* Drained: what held the loop goes, so that uv_run returns. */
static uvp_ret_t on_drained(void *arg, const uvp_outcome_t *in) {
  dwk_t *w = arg;
  (void)in;
  w->drained = true;
  w->svc = NULL;                /* freed by the drain */
  uvp_promise_cancel(w->setup); /* its watch for a purge */
  uvp_nats_js_pull_close(w->pull);
  w->pull = NULL;
  uvp_nats_js_free(w->js);
  w->js = NULL;
  uvp_nats_close(w->nc);
  w->nc = NULL;
  uvp_curl_close(w->r->curl);
  w->r->curl = NULL;
  return uvp_ret_value(NULL, NULL);
}

/* Stop serving: what runs may finish within `ms`, then is cut (given
 * back); the service's counters for its operator. */
static void wk_drain(dwk_t *w, uint64_t ms) {
  if (w->svc == NULL || w->stopping)
    return;
  w->stopping = true;
  uvp_nats_js_serve_stats_t st;
  uvp_nats_js_pull_stats_t ps = {0};
  (void)uvp_nats_js_pull_stats(w->pull, &ps);
  if (uvp_nats_js_serve_stats(w->svc, &st) == 0)
    printf("draining %s: received %llu, acked %llu (%llu redelivered "
           "with a result stored: not fetched), given back %llu, termed "
           "%llu; %llu pull requests; %llu unreadable results replaced\n",
           w->name, (unsigned long long)st.received,
           (unsigned long long)st.acked, (unsigned long long)w->stored,
           (unsigned long long)st.naked, (unsigned long long)st.termed,
           (unsigned long long)ps.requests, (unsigned long long)w->replaced);
  fflush(stdout);
  uvp_promise_t *d;
  if (uvp_nats_js_serve_drain(w->svc, ms, &d) == 0)
    (void)uvp_promise_on(d, UVP_ON_BOTH | UVP_ON_TAKE, on_drained, w,
                         &w->drain);
}

static void on_signal(uv_signal_t *h, int signum) {
  dwk_t *w = h->data;
  (void)signum;
  wk_signals_close(w);
  if (w->svc == NULL) { /* still setting up: stop that */
    w->stopping = true;
    uvp_promise_cancel(w->setup);
    return;
  }
  wk_drain(w, w->tmpl.http.timeout_ms);
}

/* The options of the job's manifest over the worker's own. */
static int manifest_read(dwk_t *w, const uvp_nats_kv_entry_t *e) {
  json_error_t je;
  json_t *m = json_loadb(e->value, e->len, 0, &je);
  w->manifest_ns = e->time_ns;
  w->tmpl.http = w->r->http;
  const char *bad = fanout_job_opts(&w->tmpl, json_object_get(m, "opts"));
  json_decref(m);
  if (bad != NULL)
    fprintf(stderr, "uvp-fanout: job %s: its manifest: %s\n", w->cli->job, bad);
  return bad != NULL ? UV_EPROTO : 0;
}

/* While serving: a job purged (--purge) deletes the consumer, which a
 * pull waiting at the server is told of (and then asks no more) and an
 * idle one is not.  So the worker looks every PURGE_POLL_MS: no consumer
 * (the API's answer, not a timeout), or a manifest written at another
 * time (purged and made again: its pull is dead), and it stops. */
static int purge_watch(dwk_t *w) {
  uvp_ctx_t *ctx = w->r->ctx;
  uvp_promise_t *p;
  uvp_outcome_t o;
  int rc = 0;
  const char *gone = NULL;
  while (gone == NULL && rc != UV_ECANCELED) {
    rc = uvp_await_take(uvp_delay(ctx, PURGE_POLL_MS, NULL, NULL, 0, &p), &p,
                        NULL);
    if (rc == 0)
      rc = uvp_await_take(
          uvp_nats_js_consumer_info(w->js, w->nm.stream, CONSUMER, &p), &p,
          NULL);
    if (rc == UV_ENOENT)
      gone = "was purged";
    if (rc == 0)
      rc = uvp_await_take(
          uvp_nats_kv_get(w->js, w->nm.bucket, MANIFEST_KEY, &p), &p, &o);
    if (rc == 0 &&
        ((const uvp_nats_kv_entry_t *)o.value)->time_ns != w->manifest_ns)
      gone = "was purged and made again";
  }
  if (gone != NULL) {
    printf("job %s %s: stopping %s\n", w->cli->job, gone, w->name);
    fflush(stdout);
    wk_drain(w, PURGE_DRAIN_MS);
  }
  return 0;
}

/* Connected again: if the server was killed, it may have lost acks it had
 * taken in its last moments (its consumer's state is written behind), and
 * it delivers those URLs again as if for the first time (a delivery count
 * of 1).  Until whatever it held could have come back (ack_wait, and the
 * time a result's write takes), every URL's result is looked for before
 * its fetch. */
static void on_wk_event(void *arg, uvp_nats_t *nc, uvp_nats_event_t event) {
  dwk_t *w = arg;
  (void)nc;
  if (event == UVP_NATS_RECONNECTED)
    w->check_until = uv_now(w->r->loop) +
                     (w->ack_wait_ms > 0 ? w->ack_wait_ms : 30000) + STORE_MS;
}

/* Connect; wait for the job's consumer; its manifest; pull and serve. */
static uvp_ret_t wk_setup(void *arg) {
  dwk_t *w = arg;
  run_t *r = w->r;
  uvp_ctx_t *ctx = r->ctx;
  uvp_promise_t *p;
  uvp_outcome_t o = {0};
  unsigned n = 0;
  uvp_nats_connect_opts_t c = {.on_event = on_wk_event, .arg = w};
  c.options = connect_options(w->name, w->cli, &c.url);
  int rc = uvp_await_take(fanout_nats_connect(ctx, &c, w->cli, &p), &p, &o);
  if (rc != 0) {
    fanout_nats_connect_failed(w->cli, rc, o.value);
    w->exit_code = 1;
    return uvp_ret_value(NULL, NULL);
  }
  w->nc = o.value;
  rc = uvp_nats_js_new(w->nc, NULL, &w->js);
  /* The consumer's creation is announced (a JetStream advisory): a worker
   * waiting for its job starts as soon as it exists, and looks again every
   * JOB_POLL_MS should the advisory be missed. */
  char adv[160];
  snprintf(adv, sizeof(adv), "$JS.EVENT.ADVISORY.CONSUMER.CREATED.%s.%s",
           w->nm.stream, CONSUMER);
  uvp_nats_sub_t *sub = NULL;
  if (rc == 0)
    rc = uvp_nats_subscribe(w->nc, adv, NULL, &sub);
  bool told = false;
  while (rc == 0) {
    rc = uvp_await_take(
        uvp_nats_js_consumer_info(w->js, w->nm.stream, CONSUMER, &p), &p, &o);
    if (rc == 0) {
      w->ack_wait_ms =
          ((const uvp_nats_js_consumer_info_t *)o.value)->ack_wait_ms;
      break;
    }
    if (rc != UV_ENOENT && !transient(rc))
      break;
    if (!told && rc == UV_ENOENT) {
      printf("waiting for job %s\n", w->cli->job);
      fflush(stdout);
      told = true;
    }
    uvp_promise_t *nx;
    rc = uvp_nats_next(sub, &nx);
    if (rc == 0)
      rc = uvp_timeout(nx, JOB_POLL_MS, UVP_TAKE_INPUTS, &p);
    rc = uvp_await_take(rc, &p, NULL);
    if (rc == UV_ETIMEDOUT)
      rc = 0;
  }
  if (sub != NULL)
    uvp_nats_unsubscribe(sub);
  n = 0;
  if (rc == 0) {
    do
      rc = uvp_await_take(
          uvp_nats_kv_get(w->js, w->nm.bucket, MANIFEST_KEY, &p), &p, &o);
    while (again(ctx, rc, &n));
    if (rc == 0)
      rc = manifest_read(w, o.value);
  }
  uvp_nats_js_pull_opts_t po = {.limit = (size_t)w->cli->concurrency,
                                .expires_ms = PULL_EXPIRES_MS};
  n = 0;
  if (rc == 0) {
    do
      rc = uvp_await_take(
          uvp_nats_js_pull(w->js, w->nm.stream, CONSUMER, &po, &p), &p, &o);
    while (again(ctx, rc, &n));
    if (rc == 0)
      w->pull = o.value;
  }
  uvp_nats_js_serve_opts_t so = {.fiber = serve_url,
                                 .arg = w,
                                 .default_timeout_ms =
                                     w->ack_wait_ms + STORE_MS};
  if (rc == 0 && !w->stopping)
    rc = uvp_nats_js_serve(w->pull, &so, &w->svc);
  if (rc == 0 && !w->stopping) {
    printf("serving job %s as %s\n", w->cli->job, w->name);
    fflush(stdout); /* whoever started us waits for this line */
    rc = purge_watch(w);
  }
  if (rc != 0 && rc != UV_ECANCELED) {
    fprintf(stderr, "uvp-fanout: job %s: %s: %s\n", w->cli->job, w->cli->shown,
            why(rc, &o));
    w->exit_code = 1;
  }
  return uvp_ret_value(NULL, NULL);
}

int fanout_durable_worker(run_t *r, const nats_cli_t *cli) {
  dwk_t w = {.r = r, .cli = cli};
  job_names(cli->job, &w.nm);
  fanout_worker_name(cli, w.name, sizeof(w.name));
  w.tmpl.http = r->http;
  int rc = uvp_ctx_new(r->loop, &r->ctx);
  if (rc == 0)
    rc = fanout_trace_start(r);
  if (rc == 0)
    rc = uvp_curl_new(r->ctx, &r->curl);
  if (rc == 0)
    curl_multi_setopt(uvp_curl_multi(r->curl), CURLMOPT_MAXCONNECTS,
                      (long)cli->concurrency);
  uv_signal_init(r->loop, &w.sigint);
  uv_signal_init(r->loop, &w.sigterm);
  w.sigint.data = w.sigterm.data = &w;
  uv_signal_start(&w.sigint, on_signal, SIGINT);
  uv_signal_start(&w.sigterm, on_signal, SIGTERM);
  /* The setup fiber, then the service, keep the loop going: uv_run
   * returns once the drain has closed everything. */
  uv_unref((uv_handle_t *)&w.sigint);
  uv_unref((uv_handle_t *)&w.sigterm);
  if (rc == 0)
    rc = uvp_fiber_spawn(r->ctx, wk_setup, &w, NULL, &w.setup);
  if (rc == 0) {
    uv_run(r->loop, UV_RUN_DEFAULT);
    w.svc = NULL; /* drained, or the connection closed under it */
  } else {
    fprintf(stderr, "uvp-fanout: %s\n", uvp_strerror(rc));
    w.exit_code = 1;
  }
  wk_signals_close(&w);
  if (w.pull != NULL)
    uvp_nats_js_pull_close(w.pull);
  if (w.js != NULL)
    uvp_nats_js_free(w.js);
  if (w.nc != NULL)
    uvp_nats_close(w.nc);
  if (r->curl != NULL)
    uvp_curl_close(r->curl);
  r->curl = NULL;
  uvp_promise_release(w.setup);
  uvp_promise_release(w.drain);
  free(w.tmpl.proxy);
  free(w.tmpl.userpwd);
  if (fanout_trace_write(r) != 0) /* each delivery's CONSUMER span in it */
    w.exit_code = 1;
  if (r->ctx != NULL)
    uvp_ctx_close(r->ctx);
  uv_run(r->loop, UV_RUN_DEFAULT);
  return w.exit_code;
}

/* ---- --status, --purge --------------------------------------------------- */

typedef struct adm_s {
  run_t *r;
  const nats_cli_t *cli;
  names_t nm;
  int exit_code;
} adm_t;

static void print_bytes(const char *what, uint64_t b) {
  if (b >= 10u << 20)
    printf("%s %.1f MB", what, (double)b / 1e6);
  else if (b >= 10u << 10)
    printf("%s %.1f kB", what, (double)b / 1e3);
  else
    printf("%s %llu B", what, (unsigned long long)b);
}

static int adm_status(adm_t *a, uvp_nats_js_t *js, uvp_outcome_t *o) {
  uvp_ctx_t *ctx = a->r->ctx;
  uvp_promise_t *p;
  unsigned n = 0;
  int rc;
  uvp_nats_js_stream_info_t work, results;
  char leader[128] = "";
  do
    rc = uvp_await_take(uvp_nats_js_stream_info(js, a->nm.stream, &p), &p, o);
  while (again(ctx, rc, &n));
  if (rc == UV_ENOENT) {
    fprintf(stderr, "uvp-fanout: no job %s\n", a->cli->job);
    return rc;
  }
  if (rc != 0)
    return rc;
  work = *(const uvp_nats_js_stream_info_t *)o->value;
  if (work.leader != NULL)
    snprintf(leader, sizeof(leader), "%s", work.leader);
  char kv[128];
  snprintf(kv, sizeof(kv), "KV_%s", a->nm.bucket);
  n = 0;
  do
    rc = uvp_await_take(uvp_nats_js_stream_info(js, kv, &p), &p, o);
  while (again(ctx, rc, &n));
  if (rc != 0)
    return rc;
  results = *(const uvp_nats_js_stream_info_t *)o->value;
  n = 0;
  do
    rc = uvp_await_take(
        uvp_nats_js_consumer_info(js, a->nm.stream, CONSUMER, &p), &p, o);
  while (again(ctx, rc, &n));
  uvp_nats_js_consumer_info_t ci = {0};
  bool have_ci = rc == 0;
  if (rc == 0)
    ci = *(const uvp_nats_js_consumer_info_t *)o->value;
  else if (rc != UV_ENOENT)
    return rc;
  long long urls = -1;
  n = 0;
  do
    rc = uvp_await_take(uvp_nats_kv_get(js, a->nm.bucket, MANIFEST_KEY, &p), &p,
                        o);
  while (again(ctx, rc, &n));
  if (rc == 0) {
    const uvp_nats_kv_entry_t *e = o->value;
    json_error_t je;
    json_t *m = json_loadb(e->value, e->len, 0, &je);
    json_t *u = json_object_get(m, "urls");
    urls = json_is_integer(u) ? (long long)json_integer_value(u) : -1;
    json_decref(m);
  }
  /* The bucket holds the manifest and one key per result: what is done
   * is counted there.  What is queued is what the consumer will still
   * hand out (not delivered yet, or delivered and not acked), not the
   * stream's count: a server killed may lose the removal of messages
   * whose acks its consumer kept, and those stay in the stream, behind
   * the consumer, never delivered again. */
  uint64_t stored = results.messages - (urls >= 0 ? 1 : 0);
  uint64_t todo =
      urls > 0 && (uint64_t)urls > stored ? (uint64_t)urls - stored : 0;
  uint64_t queued =
      have_ci ? ci.num_pending + ci.num_ack_pending : work.messages;
  uint64_t stale = work.messages > queued ? work.messages - queued : 0;
  if (a->r->json) {
    json_t *j = json_pack(
        "{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:I,s:I}", "job", a->cli->job,
        "urls", (json_int_t)urls, "results", (json_int_t)stored, "to_do",
        (json_int_t)todo, "queued", (json_int_t)queued, "waiting",
        (json_int_t)ci.num_pending, "in_flight", (json_int_t)ci.num_ack_pending,
        "redelivered", (json_int_t)ci.num_redelivered, "stale",
        (json_int_t)stale, "replicas", work.replicas, "stream_bytes",
        (json_int_t)work.bytes, "results_bytes", (json_int_t)results.bytes);
    if (j != NULL)
      json_object_set_new(
          j, "leader", leader[0] != '\0' ? json_string(leader) : json_null());
    char *s = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    puts(s != NULL ? s : "{\"error\":\"out of memory\"}");
    free(s);
    json_decref(j);
  } else {
    printf("job %s: %lld URLs, %llu results stored, %llu to do; %llu queued "
           "(%llu waiting, %llu in flight at workers), %llu redelivered\n",
           a->cli->job, urls, (unsigned long long)stored,
           (unsigned long long)todo, (unsigned long long)queued,
           (unsigned long long)ci.num_pending,
           (unsigned long long)ci.num_ack_pending,
           (unsigned long long)ci.num_redelivered);
    if (stale > 0)
      printf("%llu message%s left in the stream behind its consumer, never "
             "delivered again (acked, but a server killed lost their "
             "removal; --purge drops them with the job)\n",
             (unsigned long long)stale, stale == 1 ? "" : "s");
    printf("%d replica%s", work.replicas, work.replicas == 1 ? "" : "s");
    if (leader[0] != '\0')
      printf(" (leader %s)", leader);
    print_bytes(", stream", work.bytes);
    print_bytes(", bucket", results.bytes);
    putchar('\n');
  }
  return 0;
}

static int adm_purge(adm_t *a, uvp_nats_js_t *js, uvp_outcome_t *o) {
  uvp_ctx_t *ctx = a->r->ctx;
  uvp_promise_t *p;
  unsigned n = 0;
  int rc, rc2;
  do
    rc = uvp_await_take(uvp_nats_js_stream_delete(js, a->nm.stream, &p), &p, o);
  while (again(ctx, rc, &n));
  n = 0;
  do
    rc2 =
        uvp_await_take(uvp_nats_kv_bucket_delete(js, a->nm.bucket, &p), &p, o);
  while (again(ctx, rc2, &n));
  if ((rc == 0 || rc == UV_ENOENT) && (rc2 == 0 || rc2 == UV_ENOENT)) {
    if (rc == UV_ENOENT && rc2 == UV_ENOENT) { /* an error, as --status's */
      fprintf(stderr, "uvp-fanout: no job %s\n", a->cli->job);
      return UV_ENOENT;
    }
    printf("job %s purged\n", a->cli->job);
    return 0;
  }
  return rc != 0 && rc != UV_ENOENT ? rc : rc2;
}

static uvp_ret_t adm_run(void *arg) {
  adm_t *a = arg;
  uvp_promise_t *p;
  uvp_outcome_t o = {0};
  uvp_nats_t *nc = NULL;
  uvp_nats_js_t *js = NULL;
  uvp_nats_connect_opts_t c = {0};
  c.options = connect_options("uvp-fanout", a->cli, &c.url);
  int rc =
      uvp_await_take(fanout_nats_connect(a->r->ctx, &c, a->cli, &p), &p, &o);
  if (rc != 0) {
    fanout_nats_connect_failed(a->cli, rc, o.value);
    a->exit_code = 1;
    return uvp_ret_value(NULL, NULL);
  }
  nc = o.value;
  rc = uvp_nats_js_new(nc, NULL, &js);
  if (rc == 0)
    rc = a->cli->job_status ? adm_status(a, js, &o) : adm_purge(a, js, &o);
  if (rc != 0 && rc != UV_ENOENT)
    fprintf(stderr, "uvp-fanout: job %s: %s\n", a->cli->job, why(rc, &o));
  a->exit_code = rc != 0;
  fflush(stdout);
  if (js != NULL)
    uvp_nats_js_free(js);
  if (nc != NULL)
    uvp_nats_close(nc);
  return uvp_ret_value(NULL, NULL);
}

int fanout_durable_admin(run_t *r, const nats_cli_t *cli) {
  adm_t a = {.r = r, .cli = cli, .exit_code = 1};
  job_names(cli->job, &a.nm);
  uvp_promise_t *f = NULL;
  int rc = uvp_ctx_new(r->loop, &r->ctx);
  if (rc == 0)
    rc = uvp_fiber_spawn(r->ctx, adm_run, &a, NULL, &f);
  if (rc == 0)
    uv_run(r->loop, UV_RUN_DEFAULT);
  else
    fprintf(stderr, "uvp-fanout: %s\n", uvp_strerror(rc));
  uvp_promise_release(f);
  if (r->ctx != NULL)
    uvp_ctx_close(r->ctx);
  uv_run(r->loop, UV_RUN_DEFAULT);
  return a.exit_code;
}
