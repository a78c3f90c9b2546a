/* Private to src/: the head of a context, what every layer (the core's
 * own files and those above and below it) reads of one: the loop, the
 * thread check, the current scope, cause and trace frame, the layers'
 * own per-context state (the `ext` slots).  Below the core: it names
 * nothing of the scheduler's, so the small modules the core itself uses
 * (scopes, causes, traces, the recorder's hook) stand on this header
 * without standing on the core.  The whole context is context.h's, the
 * rest of what a layer may call sched.h's. */
#ifndef UVP_HEAD_H
#define UVP_HEAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>
#include <uvp.h>

#include "base.h"

/* What a layer above the core keeps per context (the operation layer's
 * slots and its wrappers' data, the fibers): created on first use,
 * destroyed with the context.  The core never looks inside. */
typedef struct uvp__ext_s uvp__ext_t;
typedef struct uvp__task_sink_s uvp__task_sink_t; /* tasks.h */
struct uvp__ext_s {
  /* uvp_ctx_close, after every promise's teardown (may be NULL) */
  void (*close)(uvp__ext_t *ext);
  void (*destroy)(uvp__ext_t *ext);
  /* adds the layer's figures to uvp_ctx_stats' */
  void (*stats)(const uvp__ext_t *ext, uvp_ctx_stats_t *out);
  /* adds lines to UVP_DUMP_PROMISES's listing, counting them (may be NULL) */
  void (*dump)(uvp__ext_t *ext, FILE *stream, int *count);
  /* gives back what uvp_ctx_trim asks of it (may be NULL) */
  void (*trim)(uvp__ext_t *ext);
  /* tells uvp_ctx_dump_tasks about each task it keeps, through the sink
   * (tasks.h; may be NULL) */
  void (*tasks)(uvp__ext_t *ext, uvp__task_sink_t *sink);
};
enum {
  UVP__EXT_OPS,
  UVP__EXT_FIBERS,
  UVP__EXT_GROUPS,
  UVP__EXT_TRACES,
  UVP__EXT_DUMP,
  UVP__EXT_CLOCK,
  UVP__EXT_STALL,    /* the stall detector (stall.h) */
  UVP__EXT_WORK,     /* the records cut and winding down (work-cut.h) */
  UVP__EXT_INFLIGHT, /* bindings' records of work (inflight.c) */
  UVP__EXT_REC,      /* the flight recorder (recorder.h) */
  UVP__EXT_CALLS,    /* calls between loops (call.c) */
  UVP__EXT_CONSOLE,  /* the live console's socket (console.c) */
  UVP__EXT_COUNT
};
/* A layer's state is a struct of its own holding a uvp__ext_t named `ext`:
 * UVP__EXT_OF(ctx, slot, type) is ctx's, or NULL until it is made;
 * UVP__EXT_MAKE(ctx, slot, type, &hooks) makes it (zeroed, its ext a copy
 * of hooks) and puts it in the slot, or returns NULL without memory; the
 * layer then initialises the rest. */
#define UVP__EXT_OF(ctx, slot, type)                                           \
  ((type *)uvp__ext_of((ctx), (slot), offsetof(type, ext)))
#define UVP__EXT_MAKE(ctx, slot, type, hooks)                                  \
  ((type *)uvp__ext_make((ctx), (slot), sizeof(type), offsetof(type, ext),     \
                         (hooks)))
void *uvp__ext_make(uvp_ctx_t *ctx, int slot, size_t size, size_t offset,
                    const uvp__ext_t *hooks);

/* The head's `watch` bits. */
enum { UVP__WATCH_STALL = 1, UVP__WATCH_REC = 2, UVP__WATCH_TIME = 4 };

/* What every layer reads of a context, first in it: the loop, the thread
 * check, the current scope and trace frame, the layers' state.  Read and
 * written through uvp__head(ctx) (a context begins with its head). */
typedef struct uvp__ctx_head_s {
  uv_loop_t *loop;
  const char *thread; /* the loop thread's &uvp__thread_anchor */
  bool closed;        /* written by the loop thread under the lock */
  bool check_thread;  /* UVP_CHECK_THREAD */
  bool guarded;       /* closed || check_thread: every call tests this one */
  bool traces;        /* uvp_ctx_set_traces (trace.h) */
  uint16_t trace;     /* the frame of the code running now */
  bool vclock;        /* uvp's time is the virtual clock's (clock.h); in
                         what was padding, on the line every call reads */
  uint8_t watch;      /* who watches the loop thread's work: the stall
                         detector (UVP__WATCH_STALL, stall.h), the flight
                         recorder (UVP__WATCH_REC, watch.h), the live
                         console's fiber times (UVP__WATCH_TIME,
                         fiber.c); in the last byte of padding before
                         `scope`, so that off, a path that tells any of
                         them tests one byte */
  struct uvp__scope_s *scope;      /* the current scope (scope.h), held */
  uvp__ext_t *ext[UVP__EXT_COUNT]; /* NULL until used */
  uint64_t vnow; /* the virtual clock's time, kept by clock.c */
  /* Real work in flight, counted only while vclock is set (the mode does
   * not change while work lives): operations' requests and handles, and
   * bindings' work (uvp_inflight_start).  Read by clock.c: automatic
   * advance does not jump while any is. */
  size_t real_work;
  /* The cause of the cancellation running now (cause.h), or NULL: what it
   * cuts takes it.  Read only when a cancellation rejects a promise. */
  struct uvp__cause_s *cause;
  /* The stall detector's marks, set when it is first turned on (NULL
   * until then) and kept: read only while UVP__WATCH_STALL is set, and by
   * uvp_ctx_close for its handle. */
  const struct uvp__stall_marks_s *stall_marks;
  /* The recorder's hook (watch.h), the same way: read while
   * UVP__WATCH_REC is set, and by uvp_ctx_close. */
  const struct uvp__watch_hook_s *watch_hook;
  /* The cuts of uvp's work running now, innermost first (work-door.c's
   * cut_begin, through the core's door), or NULL. */
  struct uvp__cut_frame_s *cutting;
  /* The teardown has begun walking the doors (door.h): a subsystem that
   * reaches the context from other threads starts nothing new into it.
   * Written once by the loop thread, read by any (uvp__shut). */
  atomic_bool shut;
} uvp__ctx_head_t;

static inline uvp__ctx_head_t *uvp__head(const uvp_ctx_t *ctx) {
  return (uvp__ctx_head_t *)(void *)ctx;
}
static inline void *uvp__ext_of(const uvp_ctx_t *ctx, int slot, size_t offset) {
  uvp__ext_t *e = uvp__head(ctx)->ext[slot];
  return e != NULL ? (void *)((char *)e - offset) : NULL;
}
static inline uv_loop_t *uvp__loop(const uvp_ctx_t *ctx) {
  return uvp__head(ctx)->loop;
}
static inline bool uvp__closed(const uvp_ctx_t *ctx) {
  return uvp__head(ctx)->closed;
}
/* Whether ctx's teardown has shut its doors (door.h): any thread, while
 * ctx is known to be alive (in the registry, say). */
static inline bool uvp__shut(const uvp_ctx_t *ctx) {
  return atomic_load(&uvp__head(ctx)->shut);
}
/* uv_now(loop) without the call: the field is in uv.h's loop struct (its
 * private part), and an await records the time it began (the task dump)
 * on a path where a call costs a visible share. */
static inline uint64_t uvp__loop_time(const uv_loop_t *loop) {
  return loop->time;
}

/* The time uvp's own timers, deadlines and the task dump's ages count in:
 * the loop's, or the virtual clock's (uvp_ctx_set_clock).  Read where a
 * promise is made: the field, not uv_now's call through the PLT, and one
 * test of a flag on the head's first line when the clock is off. */
static inline uint64_t uvp__now(const uvp_ctx_t *ctx) {
  if (UVP__UNLIKELY(uvp__head(ctx)->vclock))
    return uvp__head(ctx)->vnow;
  return uvp__loop_time(uvp__head(ctx)->loop);
}

/* ---- which thread -------------------------------------------------------- */

/* Every thread has its own copy of a thread-local variable, so its address
 * names the thread in one instruction (see docs/internals/core.md).  Like a
 * pthread_t, the address may be reused by a thread created after the loop
 * thread has exited. */
#if defined(__GNUC__)
#define UVP__TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define UVP__TLS _Thread_local
#endif
extern UVP__TLS char uvp__thread_anchor;

static inline bool uvp__on_loop_thread(const uvp_ctx_t *ctx) {
  return &uvp__thread_anchor == uvp__head(ctx)->thread;
}

/* A loop-thread-only call made elsewhere, with UVP_CHECK_THREAD on: it is
 * refused with UVP_ETHREAD. */
static inline bool uvp__refused_thread(const uvp_ctx_t *ctx) {
  return UVP__UNLIKELY(uvp__head(ctx)->check_thread) &&
         !uvp__on_loop_thread(ctx);
}

/* 0, or why a loop-thread-only call naming ctx cannot proceed: UV_EINVAL
 * (NULL), UVP_ETHREAD (another thread, when the check is on), UVP_ECLOSED.
 * The thread is checked first: `closed` is the loop thread's to write. */
int uvp__ctx_check_slow(const uvp_ctx_t *ctx);
static inline int uvp__ctx_check(const uvp_ctx_t *ctx) {
  if (UVP__LIKELY(ctx != NULL && !uvp__head(ctx)->guarded))
    return 0;
  return uvp__ctx_check_slow(ctx);
}

/* While this thread runs code on a stack that uvp_ctx_close would free (a
 * fiber's), the layer running it sets the code the close is refused with:
 * 0 otherwise. */
extern UVP__TLS int uvp__close_refused;

#endif
