/* Private to src/: async stack traces (uvp_ctx_set_traces).
 *
 * A trace is a chain of frames, each a creation site, a kind (how it leads
 * to the frame below it) and its parent frame.  A frame is interned once
 * per process into a 16-bit id, like a site (site.h): a promise names its
 * trace in two bytes it had spare, so traces cost no memory per promise.
 * Which frame is the parent: for a then()'s promise, the trace of the
 * promise it follows; for anything else created, the frame of the code
 * running at the time (the head's trace, sched.h): the handler's promise, the
 * fiber and the await it resumed from, the group starting a member.  With
 * traces off every promise's trace is 0 and nothing but a flag is read. */
#ifndef UVP_TRACE_H
#define UVP_TRACE_H

#include <stdio.h>

#include "head.h"

typedef enum {
  UVP__TK_PROMISE, /* created while the parent frame ran */
  UVP__TK_THEN,    /* a then()/catch()/finally() of the parent */
  UVP__TK_FIBER,   /* a fiber spawned while the parent frame ran */
  UVP__TK_AWAIT,   /* a fiber (the parent) resumed from an await here */
  UVP__TK_GROUP,   /* a task group created while the parent frame ran */
  UVP__TK_NAME,    /* the name given to the fiber or group of the parent
                      frame: its `site` is a name's id (uvp__trace_named) */
  UVP__TK_COUNT
} uvp__tkind_t;

/* The frame (site, kind) above `parent`; `parent` itself when no frame
 * can be recorded (the table of sites or of frames is full, or the chain
 * is as deep as it may grow): the chain stops there.  A frame whose
 * (site, kind) repeats one of the few just below it is that one: a loop
 * or a recursion shows once, and a chain built step by step does not fill
 * the table.  Traces are on for ctx. */
uint16_t uvp__trace_intern(uvp_ctx_t *ctx, uint16_t site, uvp__tkind_t kind,
                           uint16_t parent);

/* The trace of a promise created now at `site`. */
static inline uint16_t uvp__trace_new(uvp_ctx_t *ctx, uint16_t site) {
  if (UVP__LIKELY(!uvp__head(ctx)->traces))
    return 0;
  return uvp__trace_intern(ctx, site, UVP__TK_PROMISE, uvp__head(ctx)->trace);
}

/* Run the next code on behalf of `frame`; returns what to restore. */
static inline uint16_t uvp__trace_enter(uvp_ctx_t *ctx, uint16_t frame) {
  uint16_t was = uvp__head(ctx)->trace;
  uvp__head(ctx)->trace = frame;
  return was;
}

/* `frame` (a fiber's or a group's frame, or one naming it) named `name`
 * (NULL: no name): a UVP__TK_NAME frame above it, in place of the one it
 * had.  Names are interned once per process, like frames (a static table:
 * never freed, bounded); past its room, or when `frame` is 0, `frame`
 * without the name. */
uint16_t uvp__trace_named(uint16_t frame, const char *name);

/* Prints the frames of a trace, one per line, each after `indent`; a
 * name's frame is printed with the frame it names: `fiber "NAME" at
 * FILE:LINE`. */
void uvp__trace_print(FILE *stream, uint16_t trace, const char *indent);

/* The frames of a trace, as uvp_promise_trace gives them: any thread
 * (the stall detector's watchdog reads them). */
size_t uvp__trace_collect(uint16_t trace, uvp_trace_frame_t *out, size_t max);

/* Per context: on or off (off frees the cache). */
int uvp__trace_set(uvp_ctx_t *ctx, bool on);

#endif
