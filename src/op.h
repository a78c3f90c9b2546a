/* Private to src/: the operation layer.  Every libuv operation uvp wraps
 * (fs, tcp, dns, work, process) begins with a uvp__op_t and is driven
 * through the same few calls:
 *
 *   op = uvp__op_new(ctx, &kind, sizeof(*op), ...)    slot + promise
 *   return uvp__op_started(op, uv_xxx(...), out)      or undone if refused
 *   ... libuv's callback:
 *   uvp__op_settle(op, status, value, free_cb)        settle now, or
 *   uvp__op_complete_later(op)                        settle from the run
 *                                                     queue (kind.complete)
 *   uvp__op_finish(op)                                release, free
 *
 * Cancellation (uvp_promise_cancel, timeouts, teardown) rejects the promise
 * and calls kind.cancel while the operation is in flight.  The promise is
 * movable (see uvp__movable_new): a handler returning a fresh operation's
 * promise hands the operation to its derived promise, so the layer always
 * reads op->p afresh. */
#ifndef UVP_OP_H
#define UVP_OP_H

#include "work-door.h"

/* Operations up to this size take a slot of a per-context pool, so that a
 * steady stream of I/O does not call malloc; larger ones are allocated. */
#define UVP__OP_SLOT 640

typedef struct uvp__op_s uvp__op_t;

typedef struct uvp__op_kind_s {
  /* Stop what is in flight in libuv (uv_cancel, close the handle).  The
   * promise is already rejected (UV_ECANCELED, or UVP_ECLOSED at
   * teardown).  Not called once the operation's completion is queued. */
  void (*cancel)(uvp__op_t *op);
  /* A queued completion runs: settle op's promise `p` from the finished
   * request, or, with p NULL (teardown dropped it), only release what the
   * request produced.  Ends with uvp__op_finish or keeps the operation
   * alive on its own terms; it must not release p (the queue's reference). */
  void (*complete)(uvp__op_t *op, uvp_promise_t *p);
  /* libuv refused the first request synchronously: undo what the wrapper
   * did besides uvp__op_new (may be NULL). */
  void (*abort)(uvp__op_t *op);
  /* The operation acts on an object that tells an owner of its own (scope.h)
   * about its work until its operations are done (a TCP connection): that
   * object's owner waits for it, not the owner of the scope it started in. */
  bool object_owned;
  /* The task dump: what the operation in flight is and what it acts on
   * (its kind "fs.stat", its target "/etc/hosts"). */
  void (*describe)(const uvp__op_t *op, uvp__what_t *w);
  /* Nothing is on its way for it (a watch, which may wait for ever): the
   * virtual clock does not count it as real work in flight (clock.c). */
  bool idle;
} uvp__op_kind_t;

struct uvp__op_s {
  union {
    /* Its record of work (work-door.h): started with the operation, done
     * when libuv is done with its request. */
    uvp__work_t work;
    uvp_promise_t *p; /* = work.p: the promise it settles; NULL once
                         complete_later */
  };
  uvp_ctx_t *ctx; /* the slot's owner, also once p is being destroyed */
  const uvp__op_kind_t *kind;
  /* The queued completion: on the line a completion reads anyway. */
  uvp__handler_t done;
  uint32_t size; /* bytes, for uvp__op_finish */
};

/* A new operation of `size` bytes with its promise (the header is filled
 * in, the rest is the wrapper's to initialise: zeroing memory libuv is
 * about to write costs stores to cold lines), which has two references: the
 * caller's (handed out by uvp__op_started) and the operation's.  NULL with *rc
 * set: UV_EINVAL (NULL ctx or out), UVP_ECLOSED, UVP_ETHREAD (the context's
 * thread check), UV_ENOMEM. */
void *uvp__op_new(uvp_ctx_t *ctx, const uvp__op_kind_t *kind, size_t size,
                  uvp_promise_t **out, const char *file, int line, int *rc);

/* `rc` is what starting the libuv request returned: 0 hands the promise
 * out; anything else undoes the operation (kind.abort, the promise, the
 * memory) and is returned. */
int uvp__op_started(uvp__op_t *op, int rc, uvp_promise_t **out);

/* Settle op's promise if it is still pending (a cancellation may have
 * settled it): fulfil with value, or reject with status (< 0).  The value
 * is taken only by a fulfilment; otherwise it is released (free_cb). */
void uvp__op_settle(uvp__op_t *op, int status, void *value,
                    uvp_free_cb free_cb);

/* libuv has finished: settle later, from the run queue, when no handler is
 * queued (kind.complete).  From here on the operation no longer names its
 * promise: it can be neither moved nor cancelled in libuv. */
void uvp__op_complete_later(uvp__op_t *op);

/* Whether op's promise still waits for the operation's result. */
static inline bool uvp__op_wanted(const uvp__op_t *op) {
  return op->p != NULL && uvp__is_pending(op->p);
}

/* Done: the memory goes back, then the operation's reference to its
 * promise (which may free the context). */
void uvp__op_finish(uvp__op_t *op);
/* Only the memory (the promise is released elsewhere). */
void uvp__op_free(uvp__op_t *op);

/* Per-context memory a wrapper needs (one block per key, `size` bytes,
 * allocated on first use, freed with the context): NULL if there is no
 * memory. */
enum { UVP__OPDATA_TCP_SCRATCH, UVP__OPDATA_COUNT };
void *uvp__op_data(uvp_ctx_t *ctx, int key, size_t size);

#endif
