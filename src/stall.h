/* Private to src/: the stall detector (uvp_ctx_set_stall; how it works is
 * in docs/internals/diagnostics.md, "The stall detector").
 *
 * The loop thread marks where each slice of its time begins: a reaction
 * (the drain), a fiber's slice (its resumption), one of uvp's callbacks,
 * or time outside uvp (after a drain, from uvp's prepare to its check).
 * A mark publishes the new slice in words the watchdog thread reads, and
 * reads the clock only to end a slice that was timed (about one in 64)
 * or that the watchdog flagged as stalled (then reported), and at the
 * loop's turns.  All of it behind the head's UVP__WATCH_STALL bit: off, a slice
 * costs the test of that flag. */
#ifndef UVP_STALL_H
#define UVP_STALL_H

#include <stdatomic.h>

#include "sched.h"

struct uvp__scope_s;

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

typedef _Atomic(const char *) uvp__atomic_cstr;

/* The slice open now, as the watchdog thread reads it: a sequence lock
 * (odd while the words change).  Each word is an atomic written by the
 * loop thread alone; a mark stores only the words of its kind. */
typedef struct uvp__stall_pub_s {
  atomic_uint seq;
  _Atomic uint64_t word; /* kind | trace << 8 | site << 24 (UVP__STALL_W) */
  uvp__atomic_cstr file, await_file; /* a fiber's sites (literals) */
  _Atomic uint64_t lines;            /* a fiber's: line << 32 | await_line */
  /* At a mark that read the clock: that read, and the sequence of the
   * slice it began (start_seq == seq: the slice's start exactly). */
  _Atomic uint64_t start;
  atomic_uint start_seq;
  atomic_int phase;      /* UVP_STALL_OUTSIDE's */
  uvp__atomic_cstr what; /* UVP_STALL_UVP's */
} uvp__stall_pub_t;

#define UVP__STALL_W(kind, trace, site)                                        \
  ((uint64_t)(unsigned)(kind) | (uint64_t)(trace) << 8 | (uint64_t)(site) << 24)

/* What a mark touches, first in the detector's state (stall.c), so that
 * the usual mark is inline where it happens. */
typedef struct uvp__stall_hot_s {
  uvp__ext_t ext;
  /* Marks to the next one that takes stall.c's way: the sampled one, or
   * the next at all (1) when the slice open now is timed, holds a scope
   * or a name, or the watchdog flagged it (the watchdog stores 1 after
   * its flag).  Written by the loop thread, and by the watchdog once a
   * stall. */
  atomic_uint countdown;
  /* The slice open now (its kind is the published word's): */
  struct uvp__scope_s *scope; /* a reference on its scope, */
  const char *name;           /* a copy of its fiber's name */
  /* Whose slice it is, if a handler's or a fiber's: the handler's promise,
   * or the fiber's; the loop thread's alone, an id the flight recorder's
   * stall names (never read through). */
  const void *culprit;
  /* The watchdog's word to the loop thread (stall.c's slice_length). */
  atomic_uint flag;
  uvp__stall_pub_t pub;
} uvp__stall_hot_t;

static inline uvp__stall_hot_t *uvp__stall_hot(const uvp_ctx_t *ctx) {
  return UVP__EXT_OF(ctx, UVP__EXT_STALL, uvp__stall_hot_t);
}

/* The usual mark (the loop thread's): true when the countdown says the
 * slice open now needs nothing at its end (no clock read, no reference or
 * name to let go of) and no sample is due, and the new slice has no
 * scope or name to hold (extra: its scope | name).  False: the caller
 * takes uvp__stall_mark_counted's way. */
static UVP__ALWAYS_INLINE bool uvp__stall_quick(uvp__stall_hot_t *h,
                                                uintptr_t extra) {
  unsigned c = atomic_load_explicit(&h->countdown, memory_order_relaxed) - 1;
  atomic_store_explicit(&h->countdown, c, memory_order_relaxed);
  return UVP__LIKELY(c != 0) && UVP__LIKELY(extra == 0);
}

/* Publish a slice of kind `kind` (after uvp__stall_quick said yes). */
static UVP__ALWAYS_INLINE unsigned uvp__stall_open(uvp__stall_hot_t *h) {
  unsigned s = atomic_load_explicit(&h->pub.seq, memory_order_relaxed);
  atomic_store_explicit(&h->pub.seq, s + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  return s + 2;
}
static UVP__ALWAYS_INLINE void uvp__stall_close(uvp__stall_hot_t *h,
                                                unsigned s) {
  atomic_store_explicit(&h->pub.seq, s, memory_order_release);
}
static UVP__ALWAYS_INLINE void
uvp__stall_fiber_words(uvp__stall_hot_t *h, uint16_t trace, const char *file,
                       int line, const char *await_file, int await_line) {
  atomic_store_explicit(&h->pub.word, UVP__STALL_W(UVP_STALL_FIBER, trace, 0),
                        memory_order_relaxed);
  atomic_store_explicit(&h->pub.file, file, memory_order_relaxed);
  atomic_store_explicit(&h->pub.await_file, await_file, memory_order_relaxed);
  atomic_store_explicit(&h->pub.lines,
                        (uint64_t)(uint32_t)line << 32 | (uint32_t)await_line,
                        memory_order_relaxed);
}

/* A slice of s's kind begins now.  clock false: the slice open now (the
 * drain's run of a fiber's wake) becomes this one, from the same start. */
void uvp__stall_mark(uvp_ctx_t *ctx, const uvp__slice_t *s, bool clock);
/* uvp__stall_mark(ctx, s, true) after uvp__stall_quick said no (which
 * counted the mark). */
void uvp__stall_mark_counted(uvp_ctx_t *ctx, const uvp__slice_t *s);

/* Have observe(arg, report) called too, after the program's callback (or
 * the line on stderr), for each stall report made when the stall ends, on
 * the loop thread (the console's warnings: console.c); NULL: no more.
 * Does not turn the detector on.  Loop thread.  0 or UV_ENOMEM. */
int uvp__stall_observe(uvp_ctx_t *ctx, uvp_stall_cb observe, void *arg);
/* The detector's threshold while it is on, else 0.  Loop thread. */
uint64_t uvp__stall_threshold_ms(const uvp_ctx_t *ctx);

#endif
