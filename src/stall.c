/* The stall detector (see stall.h; the contract is in uvp/debug.h, how it
 * works in docs/internals/diagnostics.md).
 *
 * The loop thread keeps the slice it runs now in `cur` (its own) and in
 * the published words (`pub`), which the watchdog thread reads as a
 * sequence lock: the sequence is odd while the words change, and a
 * reading that saw it change is thrown away.  A slice's mark reads no
 * clock: the even sequence names the slice, and the watchdog times it
 * by its own looks.  The loop thread reads the clock at its turn's marks
 * (idle, prepare, check), at about one slice's mark in SAMPLE (to time
 * that slice for the histogram), and at the end of a slice the watchdog
 * has flagged as stalled.  Every word is an atomic
 * read and written relaxed, so nothing the two threads share is a plain
 * access: the watchdog never dereferences what the loop thread owns (a
 * scope, a fiber's name), only literals (sites' files) and the
 * process-wide tables of sites and traces, under their lock. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Under valgrind, or with the watchdog behind, the loop thread times
 * every slice itself (`self`).  -DUVP_STALL_NO_SELF builds without that,
 * so that callgrind (whose one thread at a time starves the watchdog)
 * counts the marks as they run natively (docs/internals/diagnostics.md, "The
 * stall detector"). */
#if defined(UVP_HAVE_VALGRIND) && !defined(UVP_STALL_NO_SELF)
#define UVP__STALL_VALGRIND 1
#include <valgrind/valgrind.h>
#endif

#include "alloc.h"
#include "diag.h"
#include "dump.h"
#include "mono.h"
#include "promise.h"
#include "recorder.h"
#include "scope.h"
#include "stall-marks.h"
#include "stall.h"
#include "trace.h"

#define TEXT_MAX 1024
#define NAME_BUF (UVP__NAME_MAX + 1)
/* One slice's mark in SAMPLE (on average) is timed for the histogram. */
#define SAMPLE 64

typedef struct stall_state_s {
  uvp__stall_hot_t h; /* first: the marks inline elsewhere read it */
  uvp_ctx_t *ctx;
  uv_prepare_t prepare;
  bool prepare_open;
  /* The loop thread's. */
  uint64_t thr_ns;
  uvp_stall_cb cb;
  void *arg;
  uvp_stall_cb observe; /* the console's (uvp__stall_observe), or NULL */
  void *observe_arg;
  int phase;      /* the open slice's, if UVP_STALL_OUTSIDE */
  uint64_t start; /* the last clock read: the open slice's start if timed */
  bool timed;     /* the open slice's start was read to time it: its end
                   * is read */
  bool forced;    /* h.countdown is 1 for the open slice's end (timed, or
                   * holding a scope or name) ... */
  unsigned rest;  /* ... and this is the marks to the next sampled one */
  unsigned rng;
  /* Every mark reads the clock while `self` (each slice's length known
   * when it ends, whatever the watchdog saw): always under valgrind
   * (one thread runs at a time there, and a busy loop on this one may
   * starve the watchdog for all its length), else until self_until, set
   * whenever a clock read finds the watchdog's last look older than
   * lag_ns. */
  bool self, valgrind;
  uint64_t self_until, lag_ns, hold_ns;
  unsigned ended; /* the last slice counted as a stall here (its seq) */
  char name_buf[NAME_BUF];
  /* The histogram: written by the loop thread only, read by any. */
  /* (how many slices: the buckets' sum, when asked) */
  _Atomic uint64_t stalls, max_us, buckets[UVP_STALL_BUCKETS];
  /* With h.flag, the watchdog's word to the loop thread: the slice of
   * sequence flag - 1 has run past the threshold, from flag_lb at the
   * latest (flag 0: none).  The loop thread reads the clock when it
   * ends. */
  _Atomic uint64_t flag_lb;
  /* The watchdog's clock at its last look (the loop thread reads it to
   * know whether the watchdog keeps up). */
  _Atomic uint64_t w_look;
  /* The watchdog's, under wmu. */
  uv_mutex_t wmu;
  uv_cond_t wcv;
  uv_thread_t thread;
  bool running, stop;
  uint64_t w_thr_ns;
  uvp_stall_cb w_cb;
  void *w_arg;
} stall_state_t;

static const char *const phase_text[UVP__PH_COUNT + 1] = {
    "since the stall detector was turned on",
    "after uvp's idle callback: the program's idle or prepare callbacks",
    ("after uvp's check callback: the program's check, close, timer, "
     "pending or idle callbacks, or code outside uv_run"),
    "waiting in poll",
    "in the I/O callbacks after poll: the program's or a binding's"};
#define PH_IO UVP__PH_COUNT /* reported only, never published */

static stall_state_t *state_of(const uvp_ctx_t *ctx) {
  return (stall_state_t *)uvp__stall_hot(ctx); /* h is first */
}

/* The kind of the slice open now (the loop thread reads its own word). */
static int cur_kind(const stall_state_t *st) {
  return (int)(atomic_load_explicit(&st->h.pub.word, memory_order_relaxed) &
               0xff);
}

static inline void add_relaxed(_Atomic uint64_t *a, uint64_t n) {
  atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

/* ---- the report ---------------------------------------------------------- */

/* What ran, into buf: "handler of the promise made at F:L", ... */
static void describe(char *buf, size_t cap, int kind, int phase, uint16_t site,
                     const char *file, int line, const char *await_file,
                     int await_line, const char *name, const char *what) {
  const char *sf = NULL;
  int sl = 0;
  switch (kind) {
  case UVP_STALL_HANDLER:
    uvp__site_get(site, &sf, &sl);
    snprintf(buf, cap, "handler of the promise made at %s:%d",
             sf != NULL ? sf : "?", sl);
    break;
  case UVP_STALL_FIBER: {
    int n =
        snprintf(buf, cap, "fiber %s%s%sspawned at %s:%d",
                 name != NULL ? "\"" : "", name != NULL ? name : "",
                 name != NULL ? "\" " : "", file != NULL ? file : "?", line);
    if (await_file != NULL && n > 0 && (size_t)n < cap)
      snprintf(buf + n, cap - (size_t)n, ", resumed from the await at %s:%d",
               await_file, await_line);
    else if (n > 0 && (size_t)n < cap)
      snprintf(buf + n, cap - (size_t)n, ", at its start");
    break;
  }
  case UVP_STALL_UVP:
    snprintf(buf, cap, "uvp's %s callback", what != NULL ? what : "?");
    break;
  default:
    snprintf(buf, cap, "outside uvp (%s)", phase_text[phase]);
  }
}

/* "; trace: then at a.c:3 <- fiber at a.c:1" appended at buf + *len. */
static void add_trace(char *buf, size_t cap, size_t *len, uint16_t trace) {
  uvp_trace_frame_t f[8];
  size_t n = uvp__trace_collect(trace, f, 8);
  for (size_t i = 0; i < n && i < 8 && *len < cap; i++) {
    bool named = strcmp(f[i].what, "name") == 0 && i + 1 < n && i + 1 < 8;
    const char *name = named ? f[i++].file : NULL;
    int k =
        snprintf(buf + *len, cap - *len, "%s%s%s%s%s at %s:%d",
                 i == 0 || (named && i == 1) ? "; trace: " : " <- ", f[i].what,
                 named ? " \"" : "", named ? name : "", named ? "\"" : "",
                 f[i].file != NULL ? f[i].file : "?", f[i].line);
    if (k > 0)
      *len += (size_t)k;
  }
  if (n > 8 && *len < cap) {
    int k = snprintf(buf + *len, cap - *len, " <- ...");
    if (k > 0)
      *len += (size_t)k;
  }
  if (*len >= cap)
    *len = cap - 1;
}

/* Hand the report to the program's callback, or write it on stderr as the
 * dumps write (never waiting). */
static void deliver(uvp_stall_cb cb, void *arg, uvp_stall_t *rec, char *text,
                    size_t len) {
  text[len] = '\0';
  rec->text = text;
  if (cb != NULL) {
    cb(arg, rec);
    return;
  }
  uvp__diag_t w;
  uvp__diag_open(&w, stderr, NULL, NULL, false);
  text[len] = '\n';
  uvp__diag_out(&w, text, len + 1);
  text[len] = '\0';
  (void)uvp__diag_close(&w);
}

/* The published words, as a slice (name and scope NULL): the words its
 * kind does not use may be another slice's, and are left out. */
static uvp__slice_t read_pub(const uvp__stall_pub_t *p, int *phase) {
  uint64_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
  uvp__slice_t c = {(int)(w & 0xff),
                    (uint16_t)(w >> 24),
                    (uint16_t)(w >> 8),
                    NULL,
                    0,
                    NULL,
                    0,
                    NULL,
                    NULL,
                    NULL};
  if (c.kind == UVP_STALL_FIBER) {
    uint64_t lines = atomic_load_explicit(&p->lines, memory_order_relaxed);
    c.file = atomic_load_explicit(&p->file, memory_order_relaxed);
    c.await_file = atomic_load_explicit(&p->await_file, memory_order_relaxed);
    c.line = (int)(uint32_t)(lines >> 32);
    c.await_line = (int)(uint32_t)lines;
  } else if (c.kind == UVP_STALL_UVP) {
    c.what = atomic_load_explicit(&p->what, memory_order_relaxed);
  }
  *phase = atomic_load_explicit(&p->phase, memory_order_relaxed);
  return c;
}

/* The slice open now, as published (the loop thread reads back its own
 * words). */
static uvp__slice_t published(const stall_state_t *st) {
  int phase;
  uvp__slice_t c = read_pub(&st->h.pub, &phase);
  c.name = st->h.name;
  c.scope = st->h.scope;
  return c;
}

/* The loop thread: the slice open now ran `ns`, past the threshold. */
static UVP__NOINLINE void report_ended(stall_state_t *st, int phase,
                                       uint64_t ns) {
  char text[TEXT_MAX + 2];
  char what[512];
  const uvp__slice_t cs = published(st), *c = &cs;
  describe(what, sizeof(what), c->kind, phase, c->site, c->file, c->line,
           c->await_file, c->await_line, c->name, c->what);
  uint64_t ms = ns / 1000000;
  int k = snprintf(text, TEXT_MAX, "uvp: stall: %s ran %llu ms", what,
                   (unsigned long long)ms);
  size_t len = k > 0 ? ((size_t)k < TEXT_MAX ? (size_t)k : TEXT_MAX - 1) : 0;
  if (c->kind != UVP_STALL_OUTSIDE) {
    add_trace(text, TEXT_MAX, &len, c->trace);
    len += uvp__slots_text(st->ctx, c->scope, text + len, TEXT_MAX - len);
  }
  uvp_stall_t rec = {c->kind,
                     0,
                     ms,
                     c->file,
                     c->line,
                     c->await_file,
                     c->await_line,
                     c->name,
                     c->kind == UVP_STALL_UVP       ? c->what
                     : c->kind == UVP_STALL_OUTSIDE ? phase_text[phase]
                                                    : NULL,
                     NULL};
  if (c->kind == UVP_STALL_HANDLER)
    uvp__site_get(c->site, &rec.file, &rec.line);
  deliver(st->cb, st->arg, &rec, text, len);
  if (st->observe != NULL)
    st->observe(st->observe_arg, &rec);
  if (uvp__recording(st->ctx))
    uvp__rec_stall(st->ctx, &rec, ns,
                   c->kind == UVP_STALL_HANDLER || c->kind == UVP_STALL_FIBER
                       ? st->h.culprit
                       : NULL);
}

/* ---- the loop thread's marks --------------------------------------------- */

/* Publish slice s (the loop thread); with_start: its start was read, at
 * st->start. */
static UVP__ALWAYS_INLINE void publish(stall_state_t *st, const uvp__slice_t *c,
                                       bool with_start) {
  uvp__stall_pub_t *p = &st->h.pub;
  unsigned s = atomic_load_explicit(&p->seq, memory_order_relaxed);
  atomic_store_explicit(&p->seq, s + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  if (with_start) {
    atomic_store_explicit(&p->start, st->start, memory_order_relaxed);
    atomic_store_explicit(&p->start_seq, s + 2, memory_order_relaxed);
  }
  atomic_store_explicit(&p->word, UVP__STALL_W(c->kind, c->trace, c->site),
                        memory_order_relaxed);
  atomic_store_explicit(&p->phase, st->phase, memory_order_relaxed);
  atomic_store_explicit(&p->file, c->file, memory_order_relaxed);
  atomic_store_explicit(&p->await_file, c->await_file, memory_order_relaxed);
  atomic_store_explicit(
      &p->lines, (uint64_t)(uint32_t)c->line << 32 | (uint32_t)c->await_line,
      memory_order_relaxed);
  atomic_store_explicit(&p->what, c->what, memory_order_relaxed);
  atomic_store_explicit(&p->seq, s + 2, memory_order_release);
}

static unsigned bucket_of(uint64_t us) {
  if (us == 0)
    return 0;
  unsigned b = 64u - (unsigned)__builtin_clzll(us);
  return b < UVP_STALL_BUCKETS ? b : UVP_STALL_BUCKETS - 1;
}

/* Time outside uvp that is no stall: waiting in poll, and the program's
 * own code from turning the detector on to the loop's first turn. */
static bool quiet_phase(int ph) {
  return ph == UVP__PH_POLL || ph == UVP__PH_SETUP;
}

/* How long the slice open now ran, ending at `now`: exactly if its start
 * was read (timed, or begun at a mark that read the clock), else from the
 * watchdog's bound on its start if the watchdog flagged it; false:
 * neither (a slice not looked at).  *sampled: it goes into the histogram
 * whatever its length (timed, or flagged). */
static bool slice_length(stall_state_t *st, uint64_t now, uint64_t *ns,
                         bool *sampled) {
  unsigned f = atomic_load_explicit(&st->h.flag, memory_order_acquire);
  unsigned seq = atomic_load_explicit(&st->h.pub.seq, memory_order_relaxed);
  bool flagged = f != 0 && f == seq + 1;
  uint64_t from = st->start;
  if (f != 0) {
    if (flagged) {
      uint64_t lb = atomic_load_explicit(&st->flag_lb, memory_order_relaxed);
      from = lb > from ? lb : from;
    } else if (f - 1 != st->ended) {
      /* Flagged just as it ended (the watchdog's flag came after its
       * mark): it ran past the threshold, its end was not seen.  (Unless
       * its end was seen: counted then.) */
      add_relaxed(&st->stalls, 1);
    }
    atomic_store_explicit(&st->h.flag, 0, memory_order_relaxed);
  }
  *sampled = st->timed || flagged;
  if (st->timed ||
      atomic_load_explicit(&st->h.pub.start_seq, memory_order_relaxed) == seq)
    from = st->start;
  else if (!flagged)
    return false;
  *ns = now > from ? now - from : 0;
  return true;
}

/* The slice open now ends at `now`: into the histogram if timed or
 * flagged, and reported if it ran past the threshold, whether or not the
 * watchdog saw it (then this is its only report). */
static void end_slice(stall_state_t *st, uint64_t now, int report_phase) {
  uint64_t ns;
  bool sampled;
  if (!slice_length(st, now, &ns, &sampled))
    return;
  bool stall =
      UVP__UNLIKELY(ns >= st->thr_ns) &&
      (cur_kind(st) != UVP_STALL_OUTSIDE || !quiet_phase(report_phase));
  if (cur_kind(st) != UVP_STALL_OUTSIDE && (sampled || stall)) {
    uint64_t us = ns / 1000;
    add_relaxed(&st->buckets[bucket_of(us)], 1);
    if (us > atomic_load_explicit(&st->max_us, memory_order_relaxed))
      atomic_store_explicit(&st->max_us, us, memory_order_relaxed);
  }
  if (stall) {
    add_relaxed(&st->stalls, 1);
    st->ended = atomic_load_explicit(&st->h.pub.seq, memory_order_relaxed);
    report_ended(st, report_phase, ns);
  }
}

/* At each clock read: whether the loop thread times every slice itself
 * from here on.  A watchdog whose last look is older than the threshold
 * and a period has let a stall go by unseen, or would have (a late look
 * or two is the machine's load, not worth a clock read per slice), and
 * the loop thread knows an untimed slice's length only from the
 * watchdog's flag: so from then on, for hold_ns past the last time it
 * found the watchdog behind, every mark reads the clock. */
static void watch_watchdog(stall_state_t *st, uint64_t now) {
#if !defined(UVP_STALL_NO_SELF)
  if (st->valgrind)
    return; /* self for good */
  uint64_t look = atomic_load_explicit(&st->w_look, memory_order_relaxed);
  if (now > look && now - look > st->lag_ns)
    st->self_until =
        now < UINT64_MAX - st->hold_ns ? now + st->hold_ns : UINT64_MAX;
  st->self = now < st->self_until;
#else
  (void)st;
  (void)now;
#endif
}

/* What cur holds of s beyond the published words: a reference on its
 * scope, a copy of its fiber's name. */
static UVP__NOINLINE void take_slow(stall_state_t *st, const uvp__slice_t *s) {
  struct uvp__scope_s *old = st->h.scope;
  st->h.scope = s->scope != NULL ? uvp__scope_ref(s->scope) : NULL;
  uvp__scope_unref(old);
  st->h.name = NULL;
  if (s->name != NULL) {
    size_t n = strnlen(s->name, NAME_BUF - 1);
    memcpy(st->name_buf, s->name, n);
    st->name_buf[n] = '\0';
    st->h.name = st->name_buf;
  }
}

/* cur becomes s. */
static UVP__ALWAYS_INLINE void take(stall_state_t *st, const uvp__slice_t *s) {
  if (UVP__UNLIKELY((s->scope != NULL) | (s->name != NULL) |
                    (st->h.scope != NULL) | (st->h.name != NULL)))
    take_slow(st, s);
}

/* The clock uv_hrtime reads (mono.h). */
static uint64_t now_ns(void) { return uvp__mono_ns(); }

static unsigned countdown(const stall_state_t *st) {
  return atomic_load_explicit(&st->h.countdown, memory_order_relaxed);
}
static void set_countdown(stall_state_t *st, unsigned n) {
  atomic_store_explicit(&st->h.countdown, n, memory_order_relaxed);
}

/* The next sampled mark: 32 to 95 marks on (64 on average), drawn so
 * that a ping-pong of two fibers is not always sampled on the same. */
static void next_sample(stall_state_t *st) {
  st->rng = st->rng * 1103515245u + 12345u;
  set_countdown(st, SAMPLE / 2 + ((st->rng >> 16) & (SAMPLE - 1)));
}

/* After a mark: if the slice open now needs its end seen (timed, every
 * slice timed, or it holds a scope or a name), the next mark takes the
 * slow way (one
 * countdown serves both that and the sampling). */
static void after_mark(stall_state_t *st) {
  if (!st->timed && !st->self && st->h.scope == NULL && st->h.name == NULL)
    return;
  if (!st->forced) {
    unsigned c = countdown(st);
    st->rest = c != 0 ? c : 1;
    st->forced = true;
  }
  set_countdown(st, 1);
}

/* A mark that reads the clock: the slice open now was timed or flagged,
 * or the new one is sampled. */
static UVP__NOINLINE void clocked_mark(stall_state_t *st, const uvp__slice_t *s,
                                       bool sample) {
  uint64_t now = now_ns();
  end_slice(st, now, st->phase);
  watch_watchdog(st, now);
  take(st, s);
  st->start = now;
  st->timed = sample;
  if (sample)
    next_sample(st);
  publish(st, s, true);
}

/* A mark whose countdown was counted (clock) or is not (!clock: the
 * slice open now, the drain's run of a fiber's wake, becomes this one).
 * Most marks take uvp__stall_quick's way instead: this one reads the
 * clock only if the open slice was timed or flagged or a sample is due. */
static void mark_counted(stall_state_t *st, const uvp__slice_t *s, bool clock) {
  if (!clock && cur_kind(st) != UVP_STALL_OUTSIDE) {
    /* The same slice, now known better: from the same start, if read. */
    bool read =
        atomic_load_explicit(&st->h.pub.start_seq, memory_order_relaxed) ==
        atomic_load_explicit(&st->h.pub.seq, memory_order_relaxed);
    take(st, s);
    publish(st, s, read);
    after_mark(st);
    return;
  }
  bool sample = false;
  if (countdown(st) == 0) {
    /* This mark counts towards the sample too (with every slice timed,
     * every mark is forced). */
    if (st->forced && st->rest > 1)
      set_countdown(st, st->rest - 1);
    else
      sample = true; /* (or the watchdog's 1: a sample more) */
    st->forced = false;
  }
  if (sample || st->timed || st->self ||
      atomic_load_explicit(&st->h.flag, memory_order_relaxed) != 0) {
    clocked_mark(st, s, sample);
  } else {
    take(st, s);
    publish(st, s, false);
  }
  after_mark(st);
}

void uvp__stall_mark(uvp_ctx_t *ctx, const uvp__slice_t *s, bool clock) {
  stall_state_t *st = state_of(ctx);
  if (clock || cur_kind(st) == UVP_STALL_OUTSIDE) {
    clock = true;
    set_countdown(st, countdown(st) - 1);
  }
  mark_counted(st, s, clock);
}

void uvp__stall_mark_counted(uvp_ctx_t *ctx, const uvp__slice_t *s) {
  mark_counted(state_of(ctx), s, true);
}

/* The promise whose site and trace name reaction r. */
static UVP__ALWAYS_INLINE const uvp_promise_t *
stall_source(const uvp__reaction_t *r) {
  return uvp__rkind(r) == UVP__RK_CELL
             ? ((const uvp__cell_t *)(const void *)r)->source
             : (const uvp_promise_t *)uvp__rtarget(r);
}

static UVP__NOINLINE void reaction_slow(uvp_ctx_t *ctx,
                                        const uvp__reaction_t *r) {
  const uvp_promise_t *p = stall_source(r);
  uvp__slice_t s = {
      UVP_STALL_HANDLER,      p->site, p->trace, NULL, 0, NULL, 0, NULL,
      uvp__reaction_scope(r), NULL};
  mark_counted(state_of(ctx), &s, true);
  /* After the mark, which may report the slice before. */
  state_of(ctx)->h.culprit = p;
}

/* The drain's mark of r: the usual one stores a word. */
static void mark_reaction(uvp_ctx_t *ctx, const uvp__reaction_t *r) {
  uvp__stall_hot_t *h = uvp__stall_hot(ctx);
  if (UVP__UNLIKELY(!uvp__stall_quick(h, (uintptr_t)uvp__reaction_scope(r)))) {
    reaction_slow(ctx, r);
    return;
  }
  const uvp_promise_t *p = stall_source(r);
  unsigned s = uvp__stall_open(h);
  atomic_store_explicit(&h->pub.word,
                        UVP__STALL_W(UVP_STALL_HANDLER, p->trace, p->site),
                        memory_order_relaxed);
  uvp__stall_close(h, s);
  h->culprit = p;
}

/* A timed slice begins at `now`: s. */
static void begin_timed(stall_state_t *st, uint64_t now,
                        const uvp__slice_t *s) {
  watch_watchdog(st, now);
  take(st, s);
  st->start = now;
  st->timed = true;
  publish(st, s, true);
  after_mark(st);
}

/* Outside uvp from `now`, in phase ph (always timed: the loop's turns,
 * not its slices). */
static void begin_outside(stall_state_t *st, uint64_t now, int ph) {
  uvp__slice_t s = {
      UVP_STALL_OUTSIDE, 0, 0, NULL, 0, NULL, 0, NULL, NULL, NULL};
  st->phase = ph;
  begin_timed(st, now, &s);
}

static void outside_at(stall_state_t *st, uint64_t now, int ph) {
  end_slice(st, now, st->phase);
  begin_outside(st, now, ph);
}

static void mark_outside(uvp_ctx_t *ctx, int ph) {
  outside_at(state_of(ctx), now_ns(), ph);
}

static void mark_check(uvp_ctx_t *ctx) {
  stall_state_t *st = state_of(ctx);
  uint64_t now = now_ns();
  int ph = st->phase;
  if (cur_kind(st) == UVP_STALL_OUTSIDE && ph == UVP__PH_POLL) {
    /* The loop's time is the poll's return (ms): what came after it, up
     * to here, was the I/O callbacks'.  (The poll's wait is no stall.) */
    uint64_t back = uv_now(uvp__loop(ctx)) * 1000000u;
    if (back > st->start && back < now)
      st->start = back;
    if (now - st->start >= st->thr_ns)
      ph = PH_IO;
  }
  end_slice(st, now, ph);
  uvp__slice_t s = {UVP_STALL_UVP, 0, 0, NULL, 0, NULL, 0, NULL, NULL, "check"};
  begin_timed(st, now, &s);
}

static void prepare_cb(uv_prepare_t *h) {
  outside_at(state_of(h->data), now_ns(), UVP__PH_POLL);
}

/* ---- the watchdog -------------------------------------------------------- */

/* What the watchdog knows of the loop thread's slices between looks. */
typedef struct looks_s {
  unsigned seq;      /* the slice seen at the last look */
  unsigned reported; /* the last slice reported (0: none; never a slice) */
  uint64_t first;    /* when `seq` was first seen: it had begun by then */
  uint64_t lb;       /* a look before it that saw another: it began after */
  uint64_t clear;    /* the last look that saw a slice at rest */
} looks_t;

/* The live report of a slice of `kind`..., running for ms so far. */
static void report_live(uvp_stall_cb cb, void *arg, int kind, int phase,
                        unsigned site, unsigned trace, const char *file,
                        int line, const char *af, int al, const char *what,
                        uint64_t ms) {
  char desc[512], text[TEXT_MAX + 2];
  describe(desc, sizeof(desc), kind, phase, (uint16_t)site, file, line, af, al,
           NULL, what);
  int k = snprintf(text, TEXT_MAX,
                   "uvp: stall: %s has been running for %llu ms (still "
                   "running)",
                   desc, (unsigned long long)ms);
  size_t len = k > 0 ? ((size_t)k < TEXT_MAX ? (size_t)k : TEXT_MAX - 1) : 0;
  if (kind != UVP_STALL_OUTSIDE)
    add_trace(text, TEXT_MAX, &len, (uint16_t)trace);
  uvp_stall_t rec = {kind,
                     1,
                     ms,
                     file,
                     line,
                     af,
                     al,
                     NULL,
                     kind == UVP_STALL_UVP       ? what
                     : kind == UVP_STALL_OUTSIDE ? phase_text[phase]
                                                 : NULL,
                     NULL};
  if (kind == UVP_STALL_HANDLER)
    uvp__site_get((uint16_t)site, &rec.file, &rec.line);
  deliver(cb, arg, &rec, text, len);
}

/* One look at the loop thread: a slice it has seen run past the
 * threshold (from its start when the loop thread read it, else from the
 * first look that saw it) and has not reported yet is flagged for the
 * loop thread, then reported. */
static void look(stall_state_t *st, uint64_t thr_ns, uvp_stall_cb cb, void *arg,
                 looks_t *w) {
  uvp__stall_pub_t *p = &st->h.pub;
  uint64_t t0 = now_ns();
  atomic_store_explicit(&st->w_look, t0, memory_order_relaxed);
  unsigned s1 = atomic_load_explicit(&p->seq, memory_order_acquire);
  if ((s1 & 1u) != 0)
    return;
  uint64_t start = atomic_load_explicit(&p->start, memory_order_relaxed);
  unsigned start_seq =
      atomic_load_explicit(&p->start_seq, memory_order_relaxed);
  int phase;
  const uvp__slice_t c = read_pub(p, &phase);
  int kind = c.kind;
  atomic_thread_fence(memory_order_acquire);
  if (atomic_load_explicit(&p->seq, memory_order_relaxed) != s1)
    return; /* it moved on meanwhile: not stuck */
  uint64_t t1 = now_ns();
  if (s1 != w->seq) {
    w->seq = s1;
    w->lb = w->clear;
    w->first = t1;
  }
  w->clear = t0;
  bool exact = start_seq == s1;
  uint64_t from = exact || start > w->lb ? start : w->lb;
  uint64_t ran = exact ? t1 - start : t1 - w->first; /* at least */
  if (s1 == w->reported || t1 < start || ran < thr_ns ||
      (kind == UVP_STALL_OUTSIDE && quiet_phase(phase)))
    return;
  w->reported = s1;
  atomic_store_explicit(&st->flag_lb, from, memory_order_relaxed);
  atomic_store_explicit(&st->h.flag, s1 + 1, memory_order_release);
  /* The loop thread's next mark looks at the flag (its countdown store
   * may overwrite this one only while it marks, past the flagged slice:
   * then the flag waits for the next sample, counted as a late flag). */
  atomic_store_explicit(&st->h.countdown, 1, memory_order_relaxed);
  report_live(cb, arg, kind, phase, c.site, c.trace, c.file, c.line,
              c.await_file, c.await_line, c.what, (t1 - from) / 1000000);
}

static uint64_t period_ns(uint64_t thr_ns) {
  uint64_t p = thr_ns / 4;
  return p < 1000000u ? 1000000u : p > 250000000u ? 250000000u : p;
}

static void watchdog(void *arg) {
  stall_state_t *st = arg;
  looks_t w = {0, 0, 0, 0, 0};
  uv_mutex_lock(&st->wmu);
  while (!st->stop) {
    (void)uv_cond_timedwait(&st->wcv, &st->wmu, period_ns(st->w_thr_ns));
    if (st->stop)
      break;
    /* Under wmu: a change of callback waits for this look to end. */
    look(st, st->w_thr_ns, st->w_cb, st->w_arg, &w);
  }
  uv_mutex_unlock(&st->wmu);
}

static void watchdog_stop(stall_state_t *st) {
  if (!st->running)
    return;
  uv_mutex_lock(&st->wmu);
  st->stop = true;
  uv_cond_signal(&st->wcv);
  uv_mutex_unlock(&st->wmu);
  (void)uv_thread_join(&st->thread);
  st->running = false;
}

/* ---- per context --------------------------------------------------------- */

static void turn_off(stall_state_t *st) {
  watchdog_stop(st);
  uvp__head(st->ctx)->watch &= (uint8_t)~UVP__WATCH_STALL;
  if (st->prepare_open && !uv_is_closing((uv_handle_t *)&st->prepare))
    uv_prepare_stop(&st->prepare);
  uvp__scope_unref(st->h.scope);
  st->h.scope = NULL;
}

static void stall_close(uvp__ext_t *ext) {
  turn_off(UVP__CONTAINER_OF(ext, stall_state_t, h.ext));
}

static void stall_destroy(uvp__ext_t *ext) {
  stall_state_t *st = UVP__CONTAINER_OF(ext, stall_state_t, h.ext);
  uv_cond_destroy(&st->wcv);
  uv_mutex_destroy(&st->wmu);
  uvp__free(st);
}

static void stall_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  (void)ext;
  (void)out;
}

static stall_state_t *state_new(uvp_ctx_t *ctx) {
  static const uvp__ext_t hooks = {
      .close = stall_close, .destroy = stall_destroy, .stats = stall_stats};
  stall_state_t *st = uvp__ext_make(ctx, UVP__EXT_STALL, sizeof(stall_state_t),
                                    offsetof(stall_state_t, h.ext), &hooks);
  if (st == NULL)
    return NULL;
  bool mu = uv_mutex_init(&st->wmu) == 0;
  if (!mu || uv_cond_init(&st->wcv) != 0) {
    if (mu)
      uv_mutex_destroy(&st->wmu);
    uvp__head(ctx)->ext[UVP__EXT_STALL] = NULL; /* as if never made */
    uvp__free(st);
    return NULL;
  }
  st->ctx = ctx;
  atomic_store_explicit(&st->h.pub.word, UVP__STALL_W(UVP_STALL_OUTSIDE, 0, 0),
                        memory_order_relaxed);
  st->rng = 1;
#if defined(UVP__STALL_VALGRIND)
  st->valgrind = st->self = RUNNING_ON_VALGRIND != 0;
#endif
  next_sample(st);
  return st;
}

static void open_prepare(stall_state_t *st) {
  uvp__ext_prepare_open(st->ctx, &st->prepare, &st->prepare_open);
}

static uv_handle_t *stall_handle(uvp_ctx_t *ctx) {
  stall_state_t *st = state_of(ctx);
  return st != NULL && st->prepare_open ? (uv_handle_t *)&st->prepare : NULL;
}

/* uvp's own callback, timed: it runs among the I/O callbacks. */
static void mark_async(uvp_ctx_t *ctx) {
  uvp__slice_t s = {
      UVP_STALL_UVP, 0, 0,    NULL, 0,
      NULL,          0, NULL, NULL, "async (messages from other threads)"};
  uvp__stall_mark(ctx, &s, true);
}

static const uvp__stall_marks_t marks = {mark_reaction, mark_outside,
                                         mark_check, mark_async, stall_handle};

int uvp__stall_observe(uvp_ctx_t *ctx, uvp_stall_cb observe, void *arg) {
  stall_state_t *st = state_of(ctx);
  if (st == NULL && observe == NULL)
    return 0;
  if (st == NULL && (st = state_new(ctx)) == NULL)
    return UV_ENOMEM;
  st->observe = observe;
  st->observe_arg = arg;
  return 0;
}

uint64_t uvp__stall_threshold_ms(const uvp_ctx_t *ctx) {
  const stall_state_t *st = state_of(ctx);
  return st != NULL && st->running ? st->thr_ns / 1000000u : 0;
}

int uvp_ctx_set_stall(uvp_ctx_t *ctx, uint64_t threshold_ms, uvp_stall_cb cb,
                      void *arg) {
  int rc = uvp__ctx_check(ctx);
  if (rc != 0)
    return rc;
  stall_state_t *st = state_of(ctx);
  if (threshold_ms == 0) {
    if (st != NULL)
      turn_off(st);
    return 0;
  }
  if (threshold_ms > UINT64_MAX / 1000000u)
    threshold_ms = UINT64_MAX / 1000000u;
  if (st == NULL && (st = state_new(ctx)) == NULL)
    return UV_ENOMEM;
  uv_mutex_lock(&st->wmu);
  st->w_thr_ns = threshold_ms * 1000000u;
  st->w_cb = cb;
  st->w_arg = arg;
  uv_mutex_unlock(&st->wmu);
  st->thr_ns = threshold_ms * 1000000u;
  st->cb = cb;
  st->arg = arg;
  uint64_t period = period_ns(st->thr_ns);
  st->lag_ns =
      st->thr_ns < UINT64_MAX - period ? st->thr_ns + period : UINT64_MAX;
  st->hold_ns = st->thr_ns < UINT64_MAX / 16 ? 16 * st->thr_ns : UINT64_MAX;
  if (st->hold_ns < 1000000000u)
    st->hold_ns = 1000000000u;
  if (st->running)
    return 0;
  st->stop = false;
  atomic_store_explicit(&st->w_look, now_ns(), memory_order_relaxed);
  atomic_store_explicit(&st->h.flag, 0, memory_order_relaxed);
  rc = uv_thread_create(&st->thread, watchdog, st);
  if (rc != 0)
    return rc;
  st->running = true;
  open_prepare(st);
  if (!uv_is_closing((uv_handle_t *)&st->prepare))
    uv_prepare_start(&st->prepare, prepare_cb);
  begin_outside(st, now_ns(), UVP__PH_SETUP);
  uvp__head(ctx)->stall_marks = &marks;
  uvp__head(ctx)->watch |= UVP__WATCH_STALL;
  return 0;
}

int uvp_ctx_stall_stats(const uvp_ctx_t *ctx, uvp_stall_stats_t *out) {
  if (ctx == NULL || out == NULL)
    return UV_EINVAL;
  memset(out, 0, sizeof(*out));
  const stall_state_t *st = state_of(ctx);
  if (st == NULL)
    return 0;
  out->stalls = atomic_load_explicit(&st->stalls, memory_order_relaxed);
  out->max_us = atomic_load_explicit(&st->max_us, memory_order_relaxed);
  for (int i = 0; i < UVP_STALL_BUCKETS; i++) {
    out->buckets[i] =
        atomic_load_explicit(&st->buckets[i], memory_order_relaxed);
    out->slices += out->buckets[i];
  }
  return 0;
}
