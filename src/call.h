/* Private to src/: calls between loops (uvp_call_start, call.c), as the
 * teardown sees them. */
#ifndef UVP_CALL_H
#define UVP_CALL_H

#include "sched.h"

/* ctx has just been torn down (uvp_ctx_close, after the sweep, on its loop
 * thread, no lock held): no call reaches it any more, and every call
 * queued to it is answered with UVP_ECLOSED.  Returns whether the caller
 * must read ctx's mailbox once more (a call's message may have come in
 * after the sweep read it). */
bool uvp__calls_closing(uvp_ctx_t *ctx);

/* A context is about to be freed and is out of the registry: returns once
 * no call being made into it can still read it (any thread, no lock
 * held). */
void uvp__calls_freed(void);

/* The tests' seam: run, when set, between a target's take of a link's
 * requests and its serving them (with_calls: it took calls, not only
 * cuts), to widen the window in which the caller may let go of the link.
 * NULL outside the tests: one test of a pointer per drained message. */
extern void (*uvp__call_gap)(bool with_calls);

#endif
