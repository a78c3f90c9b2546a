/* Private to src/: calls between loops (uvp_call_start, call.c), as the
 * teardown sees them. */
#ifndef UVP_CALL_H
#define UVP_CALL_H

#include "sched.h"

/* The calls' door (door.h), opened before a call first reaches a
 * context: its teardown answers every call queued to a context with
 * UVP_ECLOSED, and its free waits for a call that found the context. */
void uvp__calls_door_open(void);

/* The tests' seam: run, when set, between a target's take of a link's
 * requests and its serving them (with_calls: it took calls, not only
 * cuts), to widen the window in which the caller may let go of the link.
 * NULL outside the tests: one test of a pointer per drained message. */
extern void (*uvp__call_gap)(bool with_calls);

#endif
