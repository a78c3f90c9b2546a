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

#endif
