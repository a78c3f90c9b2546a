/* uv_getaddrinfo as a promise.  As in fs.c, one heap object per lookup
 * holds the request and a reference to its promise until libuv's callback,
 * which always runs (with UV_EAI_CANCELED after uv_cancel) and is the one
 * place the result list is either handed to the promise or freed. */
#include <string.h>

#include "internal.h"

typedef struct dnsop_s {
  uvp_promise_t *p; /* first: UVP__OP_MOVABLE */
  uv_getaddrinfo_t req;
} dnsop_t;

/* uv_freeaddrinfo's parameter type is not void *. */
static void addrinfo_free(void *ptr) { uv_freeaddrinfo(ptr); }

static void dns_cancel(uvp_promise_t *p, void *arg) {
  dnsop_t *op = arg;
  (void)p;
  /* 0: the callback will get UV_EAI_CANCELED.  UV_EBUSY: the lookup is
   * running; its result arrives later and finds the promise settled. */
  (void)uv_cancel((uv_req_t *)&op->req);
}

static void dns_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  dnsop_t *op = req->data;
  uvp_promise_t *p = op->p;
  if (!uvp__is_pending(p)) {
    uv_freeaddrinfo(res); /* a late result nobody wants (NULL is fine) */
  } else if (status < 0) {
    uv_freeaddrinfo(res);
    /* Only our cancel hook calls uv_cancel, and it runs after the promise
     * is rejected; still, every wrapper reports cancellation the same way. */
    uvp__reject(p, status == UV_EAI_CANCELED ? UV_ECANCELED : status, NULL,
                NULL);
  } else {
    uvp__fulfill(p, res, addrinfo_free);
  }
  uvp__free(op);
  uvp__rel(p);
}

int uvp_getaddrinfo_at(uvp_ctx_t *ctx, const char *node, const char *service,
                       const struct addrinfo *hints, uvp_promise_t **out,
                       const char *file, int line) {
  if (ctx == NULL || out == NULL || (node == NULL && service == NULL))
    return UV_EINVAL;
  if (ctx->closed)
    return UVP_ECLOSED;
  dnsop_t *op = uvp__malloc(sizeof(*op));
  if (op == NULL)
    return UV_ENOMEM;
  memset(op, 0, sizeof(*op));
  op->p = uvp__op_new(ctx, file, line, dns_cancel, op);
  if (op->p == NULL) {
    uvp__free(op);
    return UV_ENOMEM;
  }
  UVP__OP_MOVABLE(dnsop_t, op);
  op->req.data = op;
  int rc = uv_getaddrinfo(ctx->loop, &op->req, dns_cb, node, service, hints);
  if (rc != 0) {
    /* Refused synchronously: nothing is in flight, nothing was allocated
     * by libuv, and the promise was never seen. */
    uvp_promise_t *p = op->p;
    p->flags &= (uint8_t)~UVP__F_CANCEL;
    uvp__rel(p);
    uvp__rel(p);
    uvp__free(op);
    return rc;
  }
  *out = op->p;
  return 0;
}
