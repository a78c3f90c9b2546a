/* A transfer's life, from uvp_curl__start to uvp_curl__xfer_free
 * (uvp-curl.c's opening comment: transfers, their records, and every call
 * into libcurl between enter and leave): the table of transfers by easy
 * handle, the deferred queue and the drain that empties it, the call into
 * libcurl for a socket or the timeout (uvp_curl__action), start, cancel
 * and finish, uvp_curl_perform and uvp_curl_dump.  It stands on errors.c,
 * watchdog.c and response.c; sockets.c, fetch.c and uvp-curl.c call it. */
#include "curl-internal.h"

/* Transfers in the multi keep the loop alive (each holds a virtual clock
 * to the loop's pace through its record).  Called as running goes from 0
 * to 1 and back. */

static void keep_set(uvp_curl_t *c) {
  if (c->stats.running > 0)
    uv_ref((uv_handle_t *)&c->keep);
  else
    uv_unref((uv_handle_t *)&c->keep);
  uvp_curl__wd_set_active(c, c->stats.running > 0);
}

/* ---- transfers by easy handle -------------------------------------------- */

static size_t hash_of(const CURL *easy, size_t n) {
  uintptr_t v = (uintptr_t)easy;
  v ^= v >> 17;
  v *= (uintptr_t)0x9E3779B97F4A7C15ull;
  return (size_t)(v >> 7) & (n - 1);
}

static xfer_t *xfer_find(const uvp_curl_t *c, const CURL *easy) {
  if (c->nbuckets == 0)
    return NULL;
  for (xfer_t *x = c->buckets[hash_of(easy, c->nbuckets)]; x != NULL;
       x = x->hnext)
    if (x->easy == easy)
      return x;
  return NULL;
}

/* Room for one more (the table grows to twice the transfers). */
static int xfer_room(uvp_curl_t *c) {
  size_t want = c->stats.running + 1;
  if (want * 2 <= c->nbuckets)
    return 0;
  size_t n = c->nbuckets ? c->nbuckets * 2 : 64;
  while (n < want * 2)
    n *= 2;
  xfer_t **b = calloc(n, sizeof(*b));
  if (b == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < c->nbuckets; i++)
    for (xfer_t *x = c->buckets[i], *next; x != NULL; x = next) {
      next = x->hnext;
      size_t h = hash_of(x->easy, n);
      x->hnext = b[h];
      b[h] = x;
    }
  free(c->buckets);
  c->buckets = b;
  c->nbuckets = n;
  return 0;
}

static void xfer_link(uvp_curl_t *c, xfer_t *x) {
  size_t h = hash_of(x->easy, c->nbuckets);
  x->hnext = c->buckets[h];
  c->buckets[h] = x;
  x->prev = c->last;
  if (c->last != NULL)
    c->last->next = x;
  else
    c->first = x;
  c->last = x;
  if (++c->stats.running == 1)
    keep_set(c);
}

static void xfer_unlink(uvp_curl_t *c, xfer_t *x) {
  xfer_t **pp = &c->buckets[hash_of(x->easy, c->nbuckets)];
  while (*pp != x)
    pp = &(*pp)->hnext;
  *pp = x->hnext;
  if (x->prev != NULL)
    x->prev->next = x->next;
  else
    c->first = x->next;
  if (x->next != NULL)
    x->next->prev = x->prev;
  else
    c->last = x->prev;
  if (--c->stats.running == 0)
    keep_set(c);
}

/* ---- calls into libcurl -------------------------------------------------- */

static void drain(uvp_curl_t *c);

/* Back from libcurl: the outermost return does what waited for it. */
static void leave(uvp_curl_t *c) {
  if (--c->depth == 0)
    drain(c);
}

static void defer(uvp_curl_t *c, xfer_t *x) {
  if (x->queued)
    return;
  x->queued = true;
  x->dnext = NULL;
  if (c->dtail != NULL)
    c->dtail->dnext = x;
  else
    c->dhead = x;
  c->dtail = x;
  c->stats.deferred++;
}

static void unqueue(uvp_curl_t *c, xfer_t *x) {
  xfer_t *prev = NULL;
  for (xfer_t *q = c->dhead; q != NULL; prev = q, q = q->dnext) {
    if (q != x)
      continue;
    if (prev != NULL)
      prev->dnext = x->dnext;
    else
      c->dhead = x->dnext;
    if (c->dtail == x)
      c->dtail = prev;
    break;
  }
  x->queued = false;
}

/* Every transfer ends here, started or not: its record ends first (its
 * group may settle its join; the context's count drops), and its span
 * with the promise's outcome (still pending: cancelled by the close). */
void uvp_curl__xfer_free(xfer_t *x) {
  uvp_inflight_end(&x->w);
  if (x->traced) {
    uvp_state_t st = x->p != NULL ? uvp_promise_state(x->p) : UVP_PENDING;
    uvp_span_end(x->c->ctx, &x->span,
                 st == UVP_FULFILLED  ? 0
                 : st == UVP_REJECTED ? uvp_promise_reason(x->p, NULL)
                                      : UV_ECANCELED);
  }
  if (x->fetch != NULL) {
    curl_easy_cleanup(x->easy); /* the binding's own handle */
    uvp_curl__fetch_free(x->fetch);
  }
  free(x->fail_msg);
  free(x);
}

/* Take x out of the multi (at depth 0) and out of the tables. */
static void xfer_remove(uvp_curl_t *c, xfer_t *x) {
  xfer_unlink(c, x);
  uvp_curl__enter(c);
  curl_multi_remove_handle(c->multi, x->easy);
  c->depth--; /* the caller drains */
  curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, NULL);
}

/* The transfer was cancelled: its promise is rejected already. */
static void xfer_drop(uvp_curl_t *c, xfer_t *x) {
  if (x->state != X_ADD_PENDING)
    xfer_remove(c, x);
  c->stats.cancelled++;
  uvp_promise_t *p = x->p;
  uvp_curl__xfer_free(x);
  uvp_promise_release(p); /* may run the program's code: x is gone */
}

/* A transfer out of the multi (or never in it) at uvp_curl_close: its
 * promise is cancelled, if still pending, without the hook, saying why
 * (uvp_promise_cause). */
static void xfer_abandon(uvp_curl_t *c, xfer_t *x) {
  uvp_promise_t *p = x->p;
  c->stats.cancelled++;
  uvp_curl__xfer_free(x);
  uvp_promise_set_cancel(p, NULL, NULL);
  uvp_promise_cancel_binding(p, UV_ECANCELED,
                             "uvp_curl_close: the client was closed");
  uvp_promise_release(p);
}

/* Every transfer still in flight at uvp_curl_close: out of the multi, then
 * its promise cancelled without our hook (its work is done here).  After
 * uvp_ctx_close none is left: the teardown ran the hooks. */
void uvp_curl__xfers_abandon(uvp_curl_t *c) {
  while (c->first != NULL) {
    xfer_t *x = c->first;
    if (x->queued) /* (closed from code the drain ran) */
      unqueue(c, x);
    x->cancelled = true;
    xfer_remove(c, x);
    xfer_abandon(c, x);
  }
  while (c->dhead != NULL) { /* adds still waiting: never in the multi */
    xfer_t *x = c->dhead;
    unqueue(c, x);
    xfer_abandon(c, x);
  }
}

static void on_cancel(uvp_inflight_t *w, int code);
static int add_now(uvp_curl_t *c, xfer_t *x);
static void finish(uvp_curl_t *c, xfer_t *x, CURLcode result);

/* What callbacks asked for while libcurl ran, in order, then the
 * transfers libcurl has finished: once libcurl has returned (depth 0),
 * one at a time, until there is nothing left of either.  What the
 * program's code does meanwhile (a value's destructor starting or
 * cancelling a transfer) joins the same loop instead of nesting one. */
static void drain(uvp_curl_t *c) {
  if (c->draining || c->depth > 0)
    return;
  c->draining = true;
  for (;;) {
    xfer_t *x = c->dhead;
    if (x != NULL) {
      c->dhead = x->dnext;
      if (c->dhead == NULL)
        c->dtail = NULL;
      x->queued = false;
      if (x->cancelled) {
        xfer_drop(c, x);
      } else if (x->state == X_ADD_PENDING) {
        int rc = add_now(c, x);
        if (rc == 0) {
          uvp_curl__enter(c);
          uvp_curl__socket_action(c, CURL_SOCKET_TIMEOUT, 0);
          c->depth--;
        } else { /* not added after all: the promise says why */
          uvp_promise_t *p = x->p;
          uvp_promise_set_cancel(p, NULL, NULL);
          uvp_curl__xfer_free(x);
          uvp_promise_reject(p, rc, NULL, NULL);
          uvp_promise_release(p);
        }
      } else { /* X_REMOVE_PENDING: the binding failed it */
        finish(c, x, CURLE_OK);
      }
      continue;
    }
    CURLMsg *m;
    int left;
    if (c->multi == NULL || (m = curl_multi_info_read(c->multi, &left)) == NULL)
      break;
    if (m->msg != CURLMSG_DONE)
      continue;
    CURLcode result = m->data.result; /* m dies with the removal */
    x = xfer_find(c, m->easy_handle);
    if (x != NULL && x->state == X_ADDED)
      finish(c, x, result);
  }
  c->draining = false;
}

/* One call into libcurl for a socket libcurl watches (or the timeout),
 * then what it left to do. */
void uvp_curl__action(uvp_curl_t *c, curl_socket_t fd, int flags) {
  uvp_curl__enter(c);
  uvp_curl__socket_action(c, fd, flags);
  leave(c);
}

/* The binding fails the transfer of `easy` with `rc` (a socket libcurl
 * asked for that it could not watch), once libcurl has returned. */
void uvp_curl__xfer_fail(uvp_curl_t *c, CURL *easy, int rc) {
  xfer_t *x = xfer_find(c, easy);
  if (x == NULL || x->state != X_ADDED || x->fail != 0)
    return;
  x->fail = rc;
  x->state = X_REMOVE_PENDING;
  defer(c, x);
}

/* ---- a transfer's record, start and cancel ------------------------------- */

/* The one place a transfer is named, as "GET url" (its kind is "HTTP"):
 * for the task dump (uvp_ctx_dump_tasks) and uvp_curl_dump. */
static int transfer_target(const xfer_t *x, char *buf, size_t len) {
  char *method = NULL, *url = NULL;
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_METHOD, &method);
  curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &url);
  return snprintf(buf, len, "%s %s", method != NULL ? method : "GET",
                  url != NULL && *url != '\0' ? url : "(URL not read yet)");
}

static int describe(uvp_inflight_t *w, char *buf, size_t cap) {
  return transfer_target(w->data, buf, cap);
}

static const uvp_inflight_class_t xfer_class = {"HTTP", on_cancel, describe, 0};

int uvp_curl_dump(uvp_curl_t *c, FILE *stream) {
  if (c == NULL || stream == NULL)
    return UV_EINVAL;
  int n = 0;
  uint64_t now = uv_now(c->loop);
  for (xfer_t *x = c->first; x != NULL; x = x->next, n++) {
    char name[512];
    transfer_target(x, name, sizeof(name));
    fprintf(stream, "HTTP %s for %llu ms (promise at %s:%d)\n", name,
            (unsigned long long)(now - x->start_ms),
            x->file != NULL ? x->file : "?", x->line);
  }
  return n;
}

static void on_cancel(uvp_inflight_t *w, int code) {
  xfer_t *x = w->data;
  uvp_curl_t *c = x->c;
  (void)code;
  x->cancelled = true;
  if (x->queued)
    return; /* the queue drops it */
  if (c->depth > 0) {
    defer(c, x);
    return;
  }
  xfer_drop(c, x);
  drain(c);
}

/* Add x to the multi and let libcurl start it now: it reads the URL and
 * begins resolving or connecting, so the transfer is under way (and named
 * by its URL) when the call returns. */
static int add_now(uvp_curl_t *c, xfer_t *x) {
  int rc = xfer_room(c);
  if (rc != 0)
    return rc;
  x->errbuf[0] = '\0';
  curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->errbuf);
  uvp_curl__enter(c);
  CURLMcode mc = curl_multi_add_handle(c->multi, x->easy);
  c->depth--;
  if (mc != CURLM_OK) {
    curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, NULL);
    return mc == CURLM_OUT_OF_MEMORY   ? UV_ENOMEM
           : mc == CURLM_ADDED_ALREADY ? UV_EBUSY
                                       : UV_EINVAL;
  }
  x->state = X_ADDED;
  xfer_link(c, x);
  c->stats.started++;
  x->start_ms = uv_now(c->loop);
  return 0;
}

/* Every transfer, perform's and fetch's, starts here: its record starts
 * (uvp-curl.c's opening comment).  On an error the caller frees x,
 * which ends it. */
int uvp_curl__start(uvp_curl_t *c, xfer_t *x, uvp_promise_t **out) {
  int rc = uvp_promise_new_at(c->ctx, &x->p, x->file, x->line);
  if (rc != 0)
    return rc;
  x->w.data = x;
  if ((rc = uvp_inflight_start(c->ctx, &x->w, x->p, &xfer_class)) != 0) {
    uvp_promise_release(x->p); /* pending, no hook: nothing runs */
    x->p = NULL;
    return rc;
  }
  if (c->depth > 0) {
    x->state = X_ADD_PENDING;
    defer(c, x);
  } else if ((rc = add_now(c, x)) != 0) {
    uvp_inflight_end(&x->w); /* its hook goes with it */
    uvp_promise_release(x->p);
    x->p = NULL;
    return rc;
  }
  *out = uvp_promise_retain(x->p);
  if (x->state == X_ADDED)
    uvp_curl__action(c, CURL_SOCKET_TIMEOUT, 0);
  return 0;
}

static bool easy_in_use(const uvp_curl_t *c, const CURL *easy) {
  if (xfer_find(c, easy) != NULL)
    return true;
  for (const xfer_t *x = c->dhead; x != NULL; x = x->dnext)
    if (x->easy == easy)
      return true;
  return false;
}

int uvp_curl_perform_at(uvp_curl_t *c, CURL *easy, uvp_promise_t **out,
                        const char *file, int line) {
  if (c == NULL || easy == NULL || out == NULL)
    return UV_EINVAL;
  if (c->closing)
    return UVP_ECLOSED;
  if (easy_in_use(c, easy))
    return UV_EBUSY;
  xfer_t *x = calloc(1, sizeof(*x));
  if (x == NULL)
    return UV_ENOMEM;
  x->c = c;
  x->easy = easy;
  x->file = file;
  x->line = line;
  int rc = uvp_curl__start(c, x, out);
  if (rc != 0)
    free(x);
  return rc;
}

/* ---- the end of a transfer ----------------------------------------------- */

/* Out of the multi and settled: with libcurl's result, or the binding's
 * own failure (x->fail).  Then x goes. */
static void finish(uvp_curl_t *c, xfer_t *x, CURLcode result) {
  xfer_remove(c, x);
  long conns = 0;
  if (curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &conns) == CURLE_OK &&
      conns > 0)
    c->stats.connects += (uint64_t)conns;
  c->stats.finished++;
  if (result != CURLE_OK && x->fail == 0 && uvp_curl__wd_ended(c, x->easy)) {
    uvp_curl_error_t *e = malloc(sizeof(*e));
    if (e != NULL) { /* (libcurl's words cut short: the whole fits) */
      e->code = result;
      snprintf(e->message, sizeof(e->message),
               "the binding ended the connection: one call into libcurl "
               "read it for %llu ms without returning (busy limit; libcurl "
               "said: %.96s)",
               (unsigned long long)c->busy_limit_ms,
               x->errbuf[0] != '\0' ? x->errbuf : curl_easy_strerror(result));
    }
    uvp_promise_reject(x->p, UV_ETIMEDOUT, e, free);
  } else if (x->fail != 0) {
    const char *msg = x->fail_msg != NULL ? x->fail_msg : uvp_strerror(x->fail);
    uvp_promise_reject(x->p, x->fail,
                       uvp_curl__error_new(CURLE_WRITE_ERROR, msg), free);
  } else if (result != CURLE_OK) {
    uvp_curl_error_t *e = uvp_curl__error_new(result, x->errbuf);
    const char *msg = e != NULL ? e->message : x->errbuf;
    uvp_promise_reject(x->p, uvp_curl__map_code(result, x->easy, msg), e, free);
  } else if (x->fetch != NULL) {
    uvp_curl__fetch_resolve(x);
  } else {
    uvp_promise_resolve(x->p, x->easy, NULL);
  }
  uvp_promise_t *p = x->p;
  uvp_curl__xfer_free(x);
  uvp_promise_release(p); /* may run the program's code: x is gone */
}
