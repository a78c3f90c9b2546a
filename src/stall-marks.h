/* Private to the scheduler (sched.c) and the stall detector (stall.c):
 * the table of marks through which the detector sees the loop thread's
 * slices.  The head (head.h) keeps a pointer to it; no other layer reads
 * it. */
#ifndef UVP_STALL_MARKS_H
#define UVP_STALL_MARKS_H

#include "sched.h"

/* The stall detector (stall.c) marks the loop thread's slices from the
 * scheduler's callbacks through this table, which it installs when it is
 * first turned on: the scheduler stays below the detector and names none
 * of its functions.  Where the loop thread is, outside uvp's slices: */
enum {
  UVP__PH_SETUP,       /* the detector was just turned on */
  UVP__PH_AFTER_IDLE,  /* after uvp's idle callback, before its prepare */
  UVP__PH_AFTER_CHECK, /* after uvp's check callback, before its prepare */
  UVP__PH_POLL,        /* from uvp's prepare to its check: may be waiting */
  UVP__PH_COUNT
};
struct uvp__reaction_s;
typedef struct uvp__stall_marks_s {
  /* The reaction r is about to run (the drain). */
  void (*reaction)(uvp_ctx_t *ctx, const struct uvp__reaction_s *r);
  /* The loop thread leaves uvp's work for the phase `ph`. */
  void (*outside)(uvp_ctx_t *ctx, int ph);
  /* uvp's check callback begins: the time since the poll returned was the
   * I/O callbacks'. */
  void (*check)(uvp_ctx_t *ctx);
  /* uvp's async callback begins (mail from other threads). */
  void (*async)(uvp_ctx_t *ctx);
  /* The detector's prepare handle, for uvp_ctx_close (NULL: not open). */
  uv_handle_t *(*handle)(uvp_ctx_t *ctx);
} uvp__stall_marks_t;

#endif
