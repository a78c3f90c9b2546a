/* The flight recorder's writer (uvp_ctx_recorder_write, recorder.h): what
 * the ring holds, in one of the forms, each a file of its own
 * (recorder-json.c: Chrome's trace event JSON; recorder-text.c: text
 * lines), after the passes of recorder-passes.c, through diag.h's
 * patient writer. */
#include "alloc.h"
#include "recorder-passes.h"

static int opts_check(const uvp_record_opts_t *opts) {
  if (opts->stream == NULL && opts->write == NULL)
    return UV_EINVAL;
  if (opts->format != UVP_RECORD_JSON && opts->format != UVP_RECORD_TEXT)
    return UV_EINVAL;
  return 0;
}

/* uvp_ctx_recorder_write's, its arguments checked. */
static int write_ring(uvp_ctx_t *ctx, const uvp_record_opts_t *opts) {
  const uvp__rec_hot_t *h = uvp__rec_hot(ctx);
  if (h == NULL || h->ring == NULL)
    return UV_ENOENT;
  writer_t *wr = uvp__rw_new(ctx, opts->last_ms);
  bool json = opts->format == UVP_RECORD_JSON;
  uvp__diag_t *w = wr != NULL ? uvp__malloc(sizeof(*w)) : NULL;
  if (w == NULL || (json && uvp__rw_entities(wr) != 0)) {
    uvp__free(w);
    if (wr != NULL)
      uvp__rw_free(wr);
    return UV_ENOMEM;
  }
  uvp__diag_open_patient(w, opts->stream, opts->write, opts->write_arg, json);
  wr->w = w;
  wr->chunk = w->fd >= 0 ? PIPE_BUF : CHUNK;
  if (json)
    uvp__rw_json(wr);
  else
    uvp__rw_text(wr);
  uvp__rw_flush(wr);
  int rc = uvp__diag_close(w);
  size_t count = wr->count;
  uvp__free(w);
  uvp__rw_free(wr);
  if (rc != 0)
    return rc;
  return count > INT32_MAX ? INT32_MAX : (int)count;
}

int uvp_ctx_recorder_write(uvp_ctx_t *ctx, const uvp_record_opts_t *opts) {
  int rc = ctx == NULL || opts == NULL ? UV_EINVAL : opts_check(opts);
  if (rc == 0)
    rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  return write_ring(ctx, opts);
}

int uvp_ctx_set_recorder_on_stall(uvp_ctx_t *ctx,
                                  const uvp_record_opts_t *opts) {
  int rc = opts != NULL ? opts_check(opts) : 0;
  if (rc == 0)
    rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  return uvp__rec_on_stall(ctx, opts, write_ring);
}
