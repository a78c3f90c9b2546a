/* The convenience, uvp_curl_fetch: an easy handle of the binding's own,
 * set from the options; the callbacks that read the response's body and
 * headers into its fetch_t, within their caps; and the transfer started
 * as any other (transfers.c's uvp_curl__start), which response.c settles
 * once finished.  No other file of the binding calls it. */
#include <limits.h>
#include <stdarg.h>
#include <strings.h>

#include "curl-internal.h"

static char *fmt(const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  char *s = NULL;
  if (vasprintf(&s, f, ap) < 0)
    s = NULL;
  va_end(ap);
  return s;
}

/* Stop the transfer with the binding's own code: libcurl then ends it
 * with CURLE_WRITE_ERROR, and finish() rejects with `code`. */
static size_t refuse(xfer_t *x, int code, char *msg) {
  if (x->fail == 0) {
    x->fail = code;
    x->fail_msg = msg;
  } else {
    free(msg);
  }
  return 0;
}

static int grow(char **buf, size_t *cap, size_t need) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : 1024;
  while (n < need)
    n *= 2;
  char *b = realloc(*buf, n);
  if (b == NULL)
    return UV_ENOMEM;
  *buf = b;
  *cap = n;
  return 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg) {
  xfer_t *x = arg;
  fetch_t *f = x->fetch;
  size_t n = size * nmemb;
  if (n > f->max_body - f->bytes)
    return refuse(x, UV_EFBIG,
                  fmt("response body larger than %zu bytes", f->max_body));
  if (!(f->flags & UVP_CURL_DISCARD_BODY)) {
    if (grow(&f->body, &f->body_cap, f->body_len + n + 1) != 0)
      return refuse(x, UV_ENOMEM, NULL);
    memcpy(f->body + f->body_len, ptr, n);
    f->body_len += n;
  }
  f->bytes += n;
  return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *arg) {
  xfer_t *x = arg;
  fetch_t *f = x->fetch;
  size_t n = size * nitems;
  /* The cap counts every byte of every response's head the transfer
   * reads: those of redirects, 1xx answers and a proxy's CONNECT answer
   * too, so that no line resets it (a hostile server's lines beginning
   * with "HTTP/" did, until libcurl's own 300 KB limit). */
  f->header_bytes += n;
  if (f->header_bytes > f->max_header)
    return refuse(x, UV_EMSGSIZE,
                  fmt("response header larger than %zu bytes", f->max_header));
  size_t len = n;
  while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
    len--;
  bool status = n >= 5 && memcmp(buf, "HTTP/", 5) == 0;
  if (status && !f->in_head) {
    /* A response's status line (after a redirect, a 1xx, a proxy's
     * CONNECT answer): the headers kept are the final response's. */
    f->in_head = true;
    f->hdr_len = 0;
    f->nheaders = 0;
    return n;
  }
  if (len == 0)
    f->in_head = false; /* the blank line: that head is whole */
  const char *colon = memchr(buf, ':', len);
  if (len == 0 || colon == NULL || buf[0] == ' ' || buf[0] == '\t' || status)
    return n; /* the blank line, an obsolete fold, no header, a line
                 beginning with HTTP/ inside a head (no header name) */
  size_t nlen = (size_t)(colon - buf);
  const char *v = colon + 1, *end = buf + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  size_t vlen = (size_t)(end - v);
  if (grow(&f->hdr, &f->hdr_cap, f->hdr_len + nlen + vlen + 2) != 0)
    return refuse(x, UV_ENOMEM, NULL);
  memcpy(f->hdr + f->hdr_len, buf, nlen);
  f->hdr[f->hdr_len + nlen] = '\0';
  memcpy(f->hdr + f->hdr_len + nlen + 1, v, vlen);
  f->hdr[f->hdr_len + nlen + 1 + vlen] = '\0';
  f->hdr_len += nlen + vlen + 2;
  f->nheaders++;
  return n;
}

static int add_header(fetch_t *f, const char *line) {
  struct curl_slist *l = curl_slist_append(f->req_headers, line);
  if (l == NULL)
    return UV_ENOMEM;
  f->req_headers = l;
  return 0;
}

/* A fetch made under a trace context is a CLIENT span of it, whose own
 * context goes out as `traceparent`, with the scope's `tracestate`,
 * unless the program's headers carry a traceparent of their own (theirs
 * is sent, and no span).  Without one, the one uvp_tracectx_get (a NULL
 * compare, UV_ENOENT) is all this costs.  The span is named "GET
 * host/path" (the URL without scheme, query and fragment, cut at 120
 * bytes); uvp_curl__xfer_free ends it. */
static int trace_begin(xfer_t *x, const char *url,
                       const uvp_curl_fetch_opts_t *o) {
  uvp_tracectx_t tc;
  const char *ts;
  if (uvp_tracectx_get(x->c->ctx, &tc, &ts) != 0)
    return 0;
  for (const char *const *h = o->headers; h != NULL && *h != NULL; h++)
    if (strncasecmp(*h, "traceparent:", 12) == 0)
      return 0;
  const char *rest = strstr(url, "://");
  rest = rest != NULL ? rest + 3 : url;
  char name[160];
  snprintf(name, sizeof(name), "%s %.*s",
           o->method != NULL ? o->method
           : o->body != NULL ? "POST"
                             : "GET",
           (int)(strcspn(rest, "?#") < 120 ? strcspn(rest, "?#") : 120), rest);
  int rc = uvp_span_begin(x->c->ctx, &x->span, name, UVP_SPAN_CLIENT, &tc, 0);
  if (rc != 0)
    return rc == UV_ENOMEM ? rc : 0; /* (closed: uvp_curl__start says so) */
  x->traced = true;
  char line[sizeof("tracestate: ") + UVP_TRACESTATE_MAX];
  memcpy(line, "traceparent: ", 13);
  uvp_tracectx_format(&x->span.tc, line + 13);
  if ((rc = add_header(x->fetch, line)) != 0)
    return rc;
  if (ts != NULL && *ts != '\0') {
    snprintf(line, sizeof(line), "tracestate: %s", ts);
    rc = add_header(x->fetch, line);
  }
  return rc;
}

static int fetch_setup(xfer_t *x, const char *url,
                       const uvp_curl_fetch_opts_t *o) {
  CURL *e = x->easy;
  fetch_t *f = x->fetch;
  f->max_body = o->max_body ? o->max_body : UVP_CURL_MAX_BODY_DEFAULT;
  f->max_header = o->max_header ? o->max_header : UVP_CURL_MAX_HEADER_DEFAULT;
  f->flags = o->flags;
  if (curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK)
    return UV_ENOMEM;
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  if (o->body != NULL) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    if (curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, o->body) != CURLE_OK)
      return UV_ENOMEM;
  }
  if (o->method != NULL) {
    if (strcmp(o->method, "HEAD") == 0)
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(o->method, "GET") != 0 &&
             curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method) != CURLE_OK)
      return UV_ENOMEM;
  }
  for (const char *const *h = o->headers; h != NULL && *h != NULL; h++)
    if (add_header(f, *h) != 0)
      return UV_ENOMEM;
  int rc = trace_begin(x, url, o);
  if (rc != 0)
    return rc;
  if (f->req_headers != NULL)
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->req_headers);
  if (o->timeout_ms != 0)
    curl_easy_setopt(
        e, CURLOPT_TIMEOUT_MS,
        (long)(o->timeout_ms > (uint64_t)LONG_MAX ? LONG_MAX : o->timeout_ms));
  if (o->setup != NULL) {
    rc = o->setup(o->setup_arg, e);
    if (rc != 0)
      return rc < 0 ? rc : UV_EINVAL;
  }
  return 0;
}

int uvp_curl_fetch_at(uvp_curl_t *c, const char *url,
                      const uvp_curl_fetch_opts_t *opts, uvp_promise_t **out,
                      const char *file, int line) {
  static const uvp_curl_fetch_opts_t defaults;
  if (c == NULL || url == NULL || out == NULL)
    return UV_EINVAL;
  if (c->closing)
    return UVP_ECLOSED;
  xfer_t *x = calloc(1, sizeof(*x));
  fetch_t *f = calloc(1, sizeof(*f));
  CURL *e = curl_easy_init();
  if (x == NULL || f == NULL || e == NULL) {
    free(x);
    free(f);
    curl_easy_cleanup(e);
    return UV_ENOMEM;
  }
  x->c = c;
  x->easy = e;
  x->fetch = f;
  x->file = file;
  x->line = line;
  int rc = fetch_setup(x, url, opts != NULL ? opts : &defaults);
  if (rc == 0)
    rc = uvp_curl__start(c, x, out);
  if (rc != 0 && x->traced) { /* nothing started: the span says why */
    uvp_span_end(c->ctx, &x->span, rc);
    x->traced = false;
  }
  if (rc != 0)
    uvp_curl__xfer_free(x);
  return rc;
}
