/* What uvp_curl_fetch settles with: the response made of what its
 * callbacks (fetch.c) read into the fetch_t, handed over whole, and
 * uvp_curl_response_header on it; what was read, freed.  It calls no other
 * file of the binding: transfers.c resolves a finished fetch's promise
 * here, and frees a transfer's fetch_t here. */
#include <strings.h>

#include "curl-internal.h"

void uvp_curl__fetch_free(fetch_t *f) {
  if (f == NULL)
    return;
  free(f->body);
  free(f->hdr);
  curl_slist_free_all(f->req_headers);
  free(f);
}

static void response_free(void *p) {
  uvp_curl_response_t *r = p;
  curl_easy_cleanup(r->easy);
  free(r->body.base);
  free((void *)r->headers); /* the array and the strings: one block */
  free(r);
}

/* The response of a finished fetch: it takes the easy handle and the body
 * over; the headers are copied into one block with their array. */
static uvp_curl_response_t *response_new(xfer_t *x) {
  fetch_t *f = x->fetch;
  size_t arr = f->nheaders * sizeof(uvp_curl_header_t);
  uvp_curl_response_t *r = calloc(1, sizeof(*r));
  char *block = malloc(arr + f->hdr_len + 1);
  char *body = f->body != NULL ? f->body : malloc(1);
  if (r == NULL || block == NULL || body == NULL) {
    free(r);
    free(block);
    if (body != f->body)
      free(body);
    return NULL;
  }
  uvp_curl_header_t *h = (uvp_curl_header_t *)(void *)block;
  char *s = block + arr;
  if (f->hdr_len > 0)
    memcpy(s, f->hdr, f->hdr_len);
  for (size_t i = 0; i < f->nheaders; i++) {
    h[i].name = s;
    s += strlen(s) + 1;
    h[i].value = s;
    s += strlen(s) + 1;
  }
  body[f->body_len] = '\0';
  f->body = NULL;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r->status);
  r->body.base = body;
  r->body.len = f->body_len;
  r->bytes = f->bytes;
  r->nheaders = f->nheaders;
  r->headers = h;
  r->easy = x->easy;
  /* Nothing of the binding's stays reachable from the easy. */
  curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, NULL);
  curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, NULL);
  curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, NULL);
  curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, NULL);
  curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, NULL);
  return r;
}

/* A finished fetch's promise resolves with its response, which takes the
 * easy handle over (x->easy is NULL after), and what was read goes; or,
 * without the memory for it, rejects with UV_ENOMEM. */
void uvp_curl__fetch_resolve(xfer_t *x) {
  uvp_curl_response_t *r = response_new(x);
  if (r != NULL) {
    x->easy = NULL; /* the response's now */
    uvp_curl__fetch_free(x->fetch);
    x->fetch = NULL;
    uvp_promise_resolve(x->p, r, response_free);
  } else {
    uvp_promise_reject(x->p, UV_ENOMEM, NULL, NULL);
  }
}

const char *uvp_curl_response_header(const uvp_curl_response_t *res,
                                     const char *name) {
  if (res == NULL || name == NULL)
    return NULL;
  for (size_t i = 0; i < res->nheaders; i++)
    if (strcasecmp(res->headers[i].name, name) == 0)
      return res->headers[i].value;
  return NULL;
}
