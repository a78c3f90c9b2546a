/* Private to src/: the one door into the core for what reaches a context
 * from outside its own loop, and for the cuts of work the core does not
 * know (a producer's record that winds down).  A subsystem that other threads
 * use to reach contexts it does not own (calls between loops) cannot wait for a
 * context's own extension (head.h's uvp__ext_t, made on that context's
 * loop thread) to be told of a teardown: it opens a door once per process,
 * and the core walks the doors at each context's teardown and free in the
 * fixed order of their slots.  The core names none of their functions, so
 * a subsystem added above it changes no file of the core but this list of
 * slots.  Teardown only: no door is walked on a path that settles or runs
 * a reaction.
 *
 * Opening is an atomic store (sequentially consistent) made before the
 * subsystem first reaches any context; a teardown marks the context shut
 * (uvp__shut) the same way before it reads the doors.  So either the
 * teardown sees the door, or the subsystem, which tests uvp__shut under
 * its own lock before it reaches a context, sees the context shut: never
 * neither. */
#ifndef UVP_DOOR_H
#define UVP_DOOR_H

#include <stdbool.h>

#include <uvp.h>

/* The slots, in the order a teardown walks them. */
enum {
  UVP__DOOR_CALLS, /* calls between loops (call.c) */
  UVP__DOOR_WORK,  /* the door of uvp's work: its cuts (work-door.c) */
  UVP__DOOR_COUNT
};

/* Room on a cut's stack for a door's own frame (cut_begin, cut_end). */
typedef struct uvp__door_frame_s {
  void *room[4];
} uvp__door_frame_t;

typedef struct uvp__door_s {
  /* uvp_ctx_close, on ctx's loop thread, no lock held: after the sweep
   * has settled its promises and before its extensions' close hooks
   * (fibers run to their end after it).  ctx is shut: nothing new of the
   * subsystem reaches it.  Returns whether the core must read ctx's
   * mailbox once more (a message posted before the shut may have come
   * after the sweep read it).  May be NULL. */
  bool (*closing)(uvp_ctx_t *ctx);
  /* ctx is about to be freed, out of the registry, its extensions
   * destroyed: returns once nothing of the subsystem still reads it.  Any
   * thread, no lock held.  May be NULL. */
  void (*freed)(uvp_ctx_t *ctx);
  /* A cut (uvp_promise_cancel and its kin; a teardown's UVP_ECLOSED is
   * not one) of pending p whose cancel hook is cut_hook, with its
   * argument arg: cut_begin runs first, p held by the core.  True: the
   * door took the cut whole, p stays pending (its producer settles it)
   * and the core does nothing more.  False: p is rejected, its hook runs,
   * then cut_end with the frame cut_begin may have filled.  The opener
   * must open the door, on the loop thread, before it gives a promise
   * cut_hook.  NULL cut_hook: none. */
  uvp_cancel_cb cut_hook;
  bool (*cut_begin)(uvp_ctx_t *ctx, uvp_promise_t *p, void *arg, int code,
                    uvp__door_frame_t *f);
  void (*cut_end)(uvp_ctx_t *ctx, uvp__door_frame_t *f);
} uvp__door_t;

/* Opens door in slot for the rest of the process (again with the same
 * door: nothing).  Any thread, before the subsystem first reaches a
 * context. */
void uvp__door_open(int slot, const uvp__door_t *door);

/* The door whose cut_hook is hook, or NULL (cuts only). */
const uvp__door_t *uvp__door_of_cut(uvp_cancel_cb hook);

#endif
