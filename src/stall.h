/* Private to src/: the stall detector (uvp_ctx_set_stall; how it works is
 * in docs/internals.md, "The stall detector").
 *
 * The loop thread marks where each slice of its time begins: a reaction
 * (the drain), a fiber's slice (its resumption), one of uvp's callbacks,
 * or time outside uvp (after a drain, from uvp's prepare to its check).
 * A mark publishes the new slice in words the watchdog thread reads, and
 * reads the clock only to end a slice that was timed (about one in 64)
 * or that the watchdog flagged as stalled (then reported), and at the
 * loop's turns.  All of it behind the head's `stall` flag: off, a slice
 * costs the test of that flag. */
#ifndef UVP_STALL_H
#define UVP_STALL_H

#include "sched.h"

struct uvp__scope_s;

/* Where the loop thread is, outside uvp's slices. */
enum {
  UVP__PH_SETUP,       /* the detector was just turned on */
  UVP__PH_AFTER_IDLE,  /* after uvp's idle callback, before its prepare */
  UVP__PH_AFTER_CHECK, /* after uvp's check callback, before its prepare */
  UVP__PH_POLL,        /* from uvp's prepare to its check: may be waiting */
  UVP__PH_COUNT
};

/* One slice, as its layer describes it. */
typedef struct uvp__slice_s {
  int kind;         /* UVP_STALL_* */
  uint16_t site;    /* a handler's: its promise's site id */
  uint16_t trace;   /* its async trace, or 0 */
  const char *file; /* a fiber's spawn site (a literal) */
  int line;
  const char *await_file; /* a fiber's last await (a literal), or NULL */
  int await_line;
  const char *name;           /* a fiber's name, or NULL */
  struct uvp__scope_s *scope; /* what it runs in, or NULL */
  const char *what;           /* UVP_STALL_UVP: which callback */
} uvp__slice_t;

/* A slice of s's kind begins now.  clock false: the slice open now (the
 * drain's run of a fiber's wake) becomes this one, from the same start. */
void uvp__stall_mark(uvp_ctx_t *ctx, const uvp__slice_t *s, bool clock);
/* The reaction r is about to run (the drain). */
void uvp__stall_reaction(uvp_ctx_t *ctx, const uvp__reaction_t *r);
/* The loop thread leaves uvp's work for the phase `ph`. */
void uvp__stall_outside(uvp_ctx_t *ctx, int ph);
/* uvp's check callback begins: the time since the poll returned was the
 * I/O callbacks'. */
void uvp__stall_check(uvp_ctx_t *ctx);

/* The prepare handle of the detector, for uvp_ctx_close (NULL: it was
 * never on). */
uv_handle_t *uvp__stall_handle(uvp_ctx_t *ctx);

#endif
