/* Private to the cuts (promise.c's cancel_with), the door (work-door.c)
 * and the task dump (dump.c): the records of work a cut has settled while
 * their work winds down. */
#ifndef UVP_WORK_CUT_H
#define UVP_WORK_CUT_H

#include "work-door.h"

/* The records whose promise a cut has settled while their work winds down
 * (a binding's, a request libuv still runs): the task dump lists them,
 * which it cannot find through their promise any more.  cancel_with
 * marks a record before the promise rejects (`born` is the promise's:
 * the rejection's code takes its place) if it still holds its promise
 * (w->p) and its class neither is listed by its layer (UVP__WORK_TASK)
 * nor lets its promise go at the cut (UVP__WORK_GONE_AT_CUT), and once
 * the cancel hook has returned keeps it, unless it has ended meanwhile
 * (most do: a binding whose cancel ends its record) or the context is
 * closing; it leaves when it is done.  Kept per context in a hash set of
 * records, so that neither end costs more than a probe, whatever their
 * number; without memory for it the record is not kept (the dump leaves
 * it out).  Loop thread. */
typedef struct uvp__cut_frame_s {
  uvp__work_t *w; /* NULL once it has ended inside the hook */
  uint32_t born;
  struct uvp__cut_frame_s *up; /* the cut this one runs inside, or NULL */
} uvp__cut_frame_t;
void uvp__work_keep(uvp_ctx_t *ctx, uvp__work_t *w, uint32_t born);
/* Each record kept, with its promise's `born`; fn must not start or end
 * work.  A record's w->p is its producer's reference to its promise while
 * set: a record that has let it go is skipped. */
void uvp__work_cut_each(uvp_ctx_t *ctx,
                        void (*fn)(void *arg, const uvp__work_t *w,
                                   uint32_t born),
                        void *arg);

#endif
