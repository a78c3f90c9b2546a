/* uv_getaddrinfo as a promise.  One operation per lookup holds the request
 * and a reference to its promise until libuv's callback, which always runs
 * (with UV_EAI_CANCELED after uv_cancel) and is the one place the result
 * list is either handed to the promise or freed. */
#include <string.h>

#include "op.h"

typedef struct dnsop_s {
  uvp__op_t op;
  /* The name's first bytes, for the task dump: the request's own copy is
   * private to libuv (not there at all on Windows). */
  char node[40];
  uv_getaddrinfo_t req;
} dnsop_t;

/* uv_freeaddrinfo's parameter type is not void *. */
static void addrinfo_free(void *ptr) { uv_freeaddrinfo(ptr); }

static void dns_cancel(uvp__op_t *o) {
  /* 0: the callback will get UV_EAI_CANCELED.  UV_EBUSY: the lookup is
   * running; its result arrives later and finds the promise settled. */
  (void)uv_cancel((uv_req_t *)&UVP__CONTAINER_OF(o, dnsop_t, op)->req);
}

/* The task dump: "dns example.com". */
static void dns_describe(const uvp__op_t *o, uvp__what_t *w) {
  const dnsop_t *op = UVP__CONTAINER_OF(o, dnsop_t, op);
  snprintf(w->kind, sizeof(w->kind), "dns");
  snprintf(w->target, sizeof(w->target), "%s", op->node);
}

static const uvp__op_kind_t dns_kind = {dns_cancel, NULL,         NULL,
                                        false,      dns_describe, false};

static void dns_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dnsop_t *op = UVP__CONTAINER_OF(req, dnsop_t, req);
  if (status < 0) {
    uv_freeaddrinfo(res); /* NULL is fine */
    /* Every wrapper reports cancellation the same way. */
    uvp__op_settle(&op->op, status == UV_EAI_CANCELED ? UV_ECANCELED : status,
                   NULL, NULL);
  } else {
    /* A late result nobody wants is freed by uvp__op_settle. */
    uvp__op_settle(&op->op, 0, res, addrinfo_free);
  }
  uvp__op_finish(&op->op);
}

int uvp_getaddrinfo_at(uvp_ctx_t *ctx, const char *node, const char *service,
                       const struct addrinfo *hints, uvp_promise_t **out,
                       const char *file, int line) {
  if (node == NULL && service == NULL)
    return UV_EINVAL;
  int rc;
  dnsop_t *op =
      uvp__op_new(ctx, &dns_kind, sizeof(dnsop_t), out, file, line, &rc);
  if (op == NULL)
    return rc;
  /* A longer name is shown cut, ending "...". */
  if (snprintf(op->node, sizeof(op->node), "%s", node != NULL ? node : "?") >=
      (int)sizeof(op->node))
    memcpy(op->node + sizeof(op->node) - 4, "...", 4);
  return uvp__op_started(
      &op->op,
      uv_getaddrinfo(uvp__loop(ctx), &op->req, dns_cb, node, service, hints),
      out);
}
