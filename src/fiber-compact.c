/* The compact mode of fibers (uvp_ctx_set_fiber_mode): a fiber's record is
 * on the heap, and while it is parked its live frames are copied out of the
 * stack it runs on, into a buffer of their size (fiber-compact.h has the
 * interface; docs/internals/fibers-2.md 13.9 the figures).
 *
 * Three builds of it, chosen here and nowhere else:
 *  - shared (our switch, no ASan in the process): compact fibers run on one
 *    stack per context, at the same addresses each (so pointers between
 *    their frames hold), and a parked one's frames are copied out only when
 *    another compact fiber needs the stack: a fiber resumed before
 *    anything else runs there is not copied at all;
 *  - poisoned (our switch, ASan in the process): each compact fiber has a
 *    stack of its own, its frames are copied out as soon as it parks and
 *    their bytes poisoned, so that a pointer into a parked fiber's frames
 *    is reported where it is used.  "ASan in the process" is decided at
 *    run time (fiber-asan.h): a release uvp in a program built with ASan
 *    does the same as an ASan build of uvp, since the program's frames
 *    leave their redzones in ASan's shadow of the stack, which a shared
 *    stack would hand on to the next fiber;
 *  - a stack each, nothing copied, where the switch gives no saved stack
 *    pointer to copy from (UVP__FIBER_CAN_COPY undefined: a ucontext whose
 *    layout uvp does not know; glibc's on every Debian machine is known).
 * Nothing here calls into fiber.c: the fiber's entry is passed in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "fiber-compact.h"

#if defined(UVP__FIBER_CAN_COPY)
/* One stack per context, got with its first compact fiber. */
static bool shared(void) { return !uvp__fiber_asan(); }
/* A stack each, copied out and poisoned as soon as the fiber parks. */
static bool poisoned(void) { return uvp__fiber_asan(); }
#else
static bool shared(void) { return false; }
static bool poisoned(void) { return false; }
#endif

/* f's context, on its stack up to uvp__compact_top(f), to run
 * entry(f, msg). */
static void make_context(uvp__fiber_t *f, uvp__fiber_entry_t entry) {
  uvp__stack_t *stack = uvp__fiber_stack(f);
  uvp__fiber_init(&f->fctx, stack->base,
                  (size_t)(uvp__compact_top(f) - stack->base), entry, f);
  uvp__fiber_watch(&f->fctx, stack);
  uvp__compact_name_stack(f);
  f->started = true;
}

int uvp__compact_new(uvp__fiber_state_t *st, uvp__fiber_t **out) {
  uvp__fiber_t *f = uvp__malloc(sizeof(*f));
  if (f == NULL)
    return UV_ENOMEM;
  memset(f, 0, sizeof(*f));
  st->park_at_once = poisoned(); /* run() reads it; the same for all */
  if (shared()) {
    if (st->run_stack == NULL) {
      int rc = uvp__stack_get(&st->stacks, 0, &st->run_stack);
      if (rc != 0) {
        uvp__free(f);
        return rc;
      }
    }
    f->fctx.stack = st->run_stack;
    st->on_run_stack++;
  } else {
    int rc = uvp__stack_get(&st->stacks, 0, &f->fctx.stack);
    if (rc != 0) {
      uvp__free(f);
      return rc;
    }
  }
  /* uvp__compact_unpark tells the shared build so. */
  UVP__CHECK(shared() == (uvp__fiber_stack(f) == st->run_stack));
  f->st = st;
  f->compact = true;
  *out = f;
  return 0;
}

void uvp__compact_free(uvp__fiber_t *f) {
  uvp__fiber_state_t *st = f->st;
  if (st->owner == f)
    st->owner = NULL;
  uvp__free(f->saved);
  if (shared())
    st->on_run_stack--;
  else
    uvp__stack_put(&st->stacks, uvp__fiber_stack(f));
  uvp__free(f);
}

void uvp__compact_put_stack(uvp__fiber_state_t *st) {
  if (st->run_stack != NULL && st->on_run_stack == 0) {
    uvp__stack_put(&st->stacks, st->run_stack);
    st->run_stack = NULL;
    st->owner = NULL;
  }
}

#if defined(UVP__FIBER_CAN_COPY)
/* ---- where frames are copied --------------------------------------------- */

/* Its context is made at its first run: where the switch keeps
 * floating-point modes per context, it starts with those of its spawn all
 * the same (elsewhere a fiber's modes are the thread's until it keeps its
 * own: fiber-switch.h). */
void uvp__compact_spawned(uvp__fiber_t *f, uvp__fiber_entry_t entry) {
  (void)entry;
#if !defined(UVP__FIBER_SHARED_FP)
  f->fp = uvp__fiber_fp_control();
#else
  (void)f;
#endif
}

void uvp__compact_start(uvp__fiber_t *f, uvp__fiber_entry_t entry) {
  make_context(f, entry);
#if !defined(UVP__FIBER_SHARED_FP)
  uvp__fiber_set_fp_control(&f->fctx, f->fp);
#endif
  f->busy_ns = 0; /* fp's word, counted in from now on */
}

/* Room for f's frames before it parks, so that parking does not fail: the
 * stack above this function's frame, and what the await uses below it.
 * That is a constant of the build for each entry (the frames of the switch
 * and of whatever of the await is not inlined, beside this one's), except
 * under ASan, whose fake stacks vary it: measured at the first park, 4 KiB
 * until then. */
UVP__NOINLINE int uvp__compact_reserve(uvp__fiber_t *f, unsigned entry) {
  size_t depth =
      (size_t)(uvp__compact_top(f) - (char *)__builtin_frame_address(0));
  uint32_t known = f->st->park_slack[entry];
  size_t slack = known != 0 ? known : 4096;
  size_t need = (uvp__fiber_saved_size(depth + slack) + 15) & ~(size_t)15;
  f->await_depth = (uint32_t)depth;
  f->await_entry = (uint8_t)entry;
  if (need <= f->saved_cap)
    return 0;
  if (need > UINT32_MAX)
    return UV_ENOMEM;
  void *buf = uvp__realloc(f->saved, need);
  if (buf == NULL)
    return UV_ENOMEM;
  f->saved = buf;
  f->saved_cap = (uint32_t)need;
  return 0;
}

/* f->saved holds `need` bytes, or the process stops where it cannot (a
 * shared stack must be freed for the next fiber); false: f stays on its
 * own stack, unparked, for want of memory. */
static bool room_to_park(uvp__fiber_t *f, size_t need, size_t len) {
  if (need > f->saved_cap) {
    /* Only where frames vary in size (ASan's fake stacks): the fiber has
     * a stack of its own there, and stays on it unparked if there is no
     * memory for its frames. */
    void *buf = uvp__realloc(f->saved, need);
    if (buf == NULL) {
      if (!shared())
        return false;
      uvp__site_at_t at = uvp__site_known(f->p->site);
      fprintf(stderr,
              "uvp: the frames of the compact fiber spawned at %s:%d (%zu "
              "bytes) outgrew the room taken for them (%u); aborting\n",
              at.file != NULL ? at.file : "?", at.line, len,
              (unsigned)f->saved_cap);
      abort();
    }
    f->saved = buf;
    f->saved_cap = (uint32_t)need;
  } else if (f->saved_cap > 4096 && f->saved_cap / 4 > need) {
    /* Parked deep once, shallow now: give most of it back. */
    void *buf = uvp__realloc(f->saved, (need + 15) & ~(size_t)15);
    if (buf != NULL) {
      f->saved = buf;
      f->saved_cap = (uint32_t)((need + 15) & ~(size_t)15);
    }
  }
  return true;
}

/* f's frames leave its stack, into f->saved (the loop's stack is running:
 * f is suspended, in an await). */
void uvp__compact_park(uvp__fiber_t *f) {
  uvp__fiber_state_t *st = f->st;
  char *top = uvp__compact_top(f);
  size_t len = uvp__fiber_live(&f->fctx, top);
  /* What this await used below its reserve: the next ones' reserve, to
   * the byte.  It is the await's own code between the two, the same at
   * every await through this entry, except under ASan (whose fake stacks
   * vary it, and where each fiber has a stack of its own: room_to_park
   * grows the room).  A margin would be paid by every parked fiber: 16
   * bytes here took its frames' buffer from a 288-byte malloc chunk to a
   * 304-byte one (docs/internals/fibers-2.md 13.9). */
  size_t below = len > f->await_depth ? len - f->await_depth : 0;
  if (below > st->park_slack[f->await_entry])
    st->park_slack[f->await_entry] = (uint32_t)below;
  /* The frames (and shadow) */
  if (!room_to_park(f, uvp__fiber_saved_size(len), len))
    return;
  uvp__fiber_save(&f->fctx, top, f->saved);
  f->out = true;
  if (st->owner == f)
    st->owner = NULL;
  /* Nobody else runs here: any use of f's frames while it is parked is a
   * bug (its stack below them is as its frames' returns left it). */
  if (poisoned())
    uvp__fiber_poison(top - len, len);
}
#else
/* ---- the ucontext switch: a stack each, nothing copied ------------------- */

/* Nothing is gained by waiting: its context is made now, with the
 * floating-point modes of its spawn. */
void uvp__compact_spawned(uvp__fiber_t *f, uvp__fiber_entry_t entry) {
  make_context(f, entry);
}

void uvp__compact_start(uvp__fiber_t *f, uvp__fiber_entry_t entry) {
  (void)f; /* never: its context was made at its spawn */
  (void)entry;
}

int uvp__compact_reserve(uvp__fiber_t *f, unsigned entry) {
  (void)f; /* nothing will be copied */
  (void)entry;
  return 0;
}

void uvp__compact_park(uvp__fiber_t *f) {
  (void)f; /* never: poisoned() and shared() are false */
}
#endif
