/* Private to the live console: its socket and clients (console.c), its
 * snapshot document and warnings (console-snap.c). */
#ifndef UVP_CONSOLE_INT_H
#define UVP_CONSOLE_INT_H

#include "sched.h"

#define UVP__CONSOLE_OUT_CAP (2u << 20) /* one answer, at most */
#define UVP__CONSOLE_STALLS 8           /* stall reports kept */
#define UVP__CONSOLE_SEEN 256           /* cancelled fibers followed */

/* A stall report, copied (the report is valid during its call only). */
typedef struct uvp__console_stall_s {
  uint64_t at_ms; /* loop time it was reported */
  uint64_t ms;
  int kind;
  char task[96];  /* "fiber \"name\"", "handler" */
  char site[160]; /* FILE:LINE */
  char await[160];
  char text[384];
} uvp__console_stall_t;

/* A cancelled fiber a snapshot saw, and when it first did. */
typedef struct uvp__console_seen_s {
  const void *id;
  uint64_t first_ms;
  unsigned gen;
} uvp__console_seen_t;

typedef struct uvp__listener_s uvp__listener_t;

/* Per context, made by its first uvp_console_listen; lives as long as the
 * context. */
typedef struct uvp__console_s {
  uvp__ext_t ext;
  uvp_ctx_t *ctx;
  uvp__listener_t *listener; /* NULL: not listening */
  uvp__console_stall_t stalls[UVP__CONSOLE_STALLS];
  size_t nstalls, stall_next;
  uvp__console_seen_t seen[UVP__CONSOLE_SEEN];
  size_t nseen;
  unsigned gen;
} uvp__console_t;

/* The answer to "snapshot json": the document in *out (uvp__malloc'd, its
 * newline included), *len its length.  0 or UV_ENOMEM. */
int uvp__console_snapshot(uvp__console_t *con, bool recorder, char **out,
                          size_t *len);
/* Keeps a stall report for the warnings (uvp__stall_observe's callback). */
void uvp__console_stall(void *arg, const uvp_stall_t *stall);

#endif
