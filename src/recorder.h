/* Private to src/: the flight recorder (uvp_ctx_set_recorder; how it works
 * is in docs/internals/diagnostics.md, "The flight recorder").
 *
 * A ring of fixed-size events per context, written by the loop thread
 * alone, each where it happens (a fiber's park, a piece of work's start
 * through the door, a cut, a loop turn), behind the head's
 * UVP__WATCH_REC bit: off, a path that records costs the test of that
 * byte.  Strings (a work's description, a name, a cause, a stall report)
 * go into a second ring of bytes, named by their position in it; an
 * event outliving its string finds it overwritten and says so.  Nothing
 * is allocated while recording, and nothing in the ring points to what
 * may be freed meanwhile except as an id: the writer (recorder-write.c)
 * reads only the rings and string literals (sites, a class's kind). */
#ifndef UVP_RECORDER_H
#define UVP_RECORDER_H

#include "watch.h"

struct uvp__work_s;
struct uvp__work_class_s;
struct uvp__scope_s;
struct uvp__cause_s;

/* What happened.  The fields each kind uses (a, b, c, d: see uvp__rec_t;
 * a string's position in the string ring travels as a uintptr_t). */
enum {
  UVP__R_NONE,
  /* Work through the door: a = its record, b = its promise, c = the
   * owner it answers to (a group, or NULL), d = its class's kind (a
   * literal), file:line its site; x what it is (recorder.c's START_*).
   * A fiber's spawn is the start of its work, kind "fiber", b its id; a
   * group's join is kind "group"; a promise given a described cancel
   * hook is work too, a = b = the promise, ending at its settle or cut
   * (its kind is its description's). */
  UVP__R_WORK_START,
  UVP__R_WORK_DESC, /* a = the record, b = its kind's string, c = target */
  UVP__R_WORK_END,  /* a = the record */
  /* A promise with a cancel hook settled (uvp's work, a program's hook):
   * a = it, b = its code (0: fulfilled). */
  UVP__R_SETTLE,
  /* The fiber a (its promise) parks at its await file:line, for promise
   * b; fiber c (NULL: none, the loop's stack) runs next, the status of its
   * await d, x 1 if it starts (a fiber's hand-off to the next: one
   * record). */
  UVP__R_PARK,
  UVP__R_RESUME,    /* fiber a runs, the await's status b (x 1: starts) */
  UVP__R_FIBER_END, /* fiber a has returned */
  UVP__R_NAME,      /* a (x: 0 a fiber, 1 a group) is named string b */
  /* A cancellation begins with cause a (its words: string b; x its kind),
   * on the track that runs it: what it cuts names a. */
  UVP__R_CAUSE,
  UVP__R_CUT, /* promise a cut by cause b, with code c */
  /* Group a made at file:line, its join's record b, inside group c. */
  UVP__R_GROUP,
  UVP__R_MEMBER,    /* group a has a new member, promise b */
  UVP__R_GROUP_END, /* group a's join has settled */
  UVP__R_PREPARE,   /* the loop is about to poll; b: work in flight */
  UVP__R_CHECK,     /* uvp's check callback; b: the loop's time (ms) */
  UVP__R_IDLE,      /* uvp's idle callback (a drain) */
  UVP__R_UVP_END,   /* uvp's check or idle callback is done */
  /* The loop applied a message of another thread's: a = the promise, b
   * its op (resolve, reject, release), c its code. */
  UVP__R_MAIL,
  /* The stall detector's report of an ended stall: x its kind, b its
   * length (ns), c the report's string, a its culprit (the promise whose
   * handler stalled, or the fiber's; NULL: none), file:line its site. */
  UVP__R_STALL,
  /* A span begins (uvp_span_begin): a = its key (the recorder's), b =
   * its string: its traceparent (UVP_TRACEPARENT_LEN bytes), its parent's
   * id (16 hex digits, zeros for a root), its name; x its kind. */
  UVP__R_SPAN_BEGIN,
  UVP__R_SPAN_END, /* span a ends, with status b */
  /* A call between loops (call.c), each side in its own context's ring:
   * CALL_OUT on the caller, a = the call's promise, b = its number among
   * the caller's calls, c = the target context; CALL_IN on the target as
   * its fn runs, a = the call, b = the same number, c = the caller's
   * context (none for a call posted from a thread with no context).  The
   * caller's context and the number name the call on both sides (the
   * writer's flow). */
  UVP__R_CALL_OUT,
  UVP__R_CALL_IN,
  UVP__R_COUNT
};

/* 64 bytes, one cache line: a record dirties one line, whatever its kind. */
typedef struct uvp__rec_s {
  uint64_t t;        /* ns of uv_hrtime's clock; UVP__REC_GUESS: the last
                        read's, the event came after it (see uvp__rec_time) */
  const void *track; /* the fiber running (its promise); NULL: the loop's
                        own stack */
  const void *a, *b, *c, *d;
  const char *file; /* a site's (a literal) */
  uint32_t line;
  uint8_t type; /* UVP__R_* */
  uint8_t x;
  uint16_t y;
#if UINTPTR_MAX <= UINT32_MAX
  char pad[24]; /* ILP32: 40 bytes of fields, and the rest of the line */
#endif
} uvp__rec_t;
_Static_assert(sizeof(uvp__rec_t) == 64, "a record is a cache line");
#define UVP__REC_GUESS ((uint64_t)1 << 63)
/* A string's position: none (no room, or too long). */
#define UVP__REC_NOSTR ((uintptr_t)-1)

/* What a record touches, first in the recorder's state (recorder.c). */
typedef struct uvp__rec_hot_s {
  uvp__ext_t ext;
  uvp__rec_t *next;       /* the next slot ... */
  uvp__rec_t *ring, *end; /* ... of the ring, end - ring records */
  uint64_t laps;          /* times `next` went round */
  uint64_t now;           /* the last clock read */
  /* Hand-offs from fiber to fiber to the next that reads the clock. */
  unsigned countdown, every;
  unsigned kinds;    /* UVP_RECORD_* */
  const void *track; /* the fiber running now (its promise), or NULL */
} uvp__rec_hot_t;

/* Which UVP_RECORD_* kind an event belongs to. */
extern const unsigned char uvp__rec_kind[UVP__R_COUNT];

static inline uvp__rec_hot_t *uvp__rec_hot(const uvp_ctx_t *ctx) {
  return UVP__EXT_OF(ctx, UVP__EXT_REC, uvp__rec_hot_t);
}

/* Reads the clock: the time of an event now (and `every` events to the
 * next hand-off that reads it). */
uint64_t uvp__rec_clock(uvp__rec_hot_t *h);
/* The next slot, overwriting the oldest once the ring is full. */
static UVP__ALWAYS_INLINE uvp__rec_t *uvp__rec_slot(uvp__rec_hot_t *h) {
  uvp__rec_t *r = h->next;
  if (UVP__UNLIKELY(++h->next == h->end)) {
    h->next = h->ring;
    h->laps++;
  }
  return r;
}
/* The next record, its time (a clock read), track and type written. */
static UVP__ALWAYS_INLINE uvp__rec_t *uvp__rec_put(uvp__rec_hot_t *h,
                                                   int type) {
  uvp__rec_t *r = uvp__rec_slot(h);
  r->t = uvp__rec_clock(h);
  r->track = h->track;
  r->type = (uint8_t)type;
  return r;
}
/* Whether events of `type` are recorded now (the recorder is on). */
static inline bool uvp__rec_wants(const uvp__rec_hot_t *h, int type) {
  return (h->kinds & uvp__rec_kind[type]) != 0;
}

/* ---- the hooks of the layers above the core, each called behind
 * uvp__recording(ctx); the core tells the rest through watch.h -------- */

/* A record of a's, b's... of type `type` (the ids only, no site). */
void uvp__rec_event(uvp_ctx_t *ctx, int type, const void *a, const void *b,
                    const void *c);
/* What w is, as the task dump says it (its class's describe). */
void uvp__rec_work_desc(uvp_ctx_t *ctx, const struct uvp__work_s *w);
/* Group g has a new member, promise p. */
void uvp__rec_member(uvp_ctx_t *ctx, const void *g, const uvp_promise_t *p);
/* What p's described hook says now, if it has one (its description is
 * often complete only after the hook was set): at a member's add. */
void uvp__rec_redescribe(uvp_ctx_t *ctx, const uvp_promise_t *p);
/* A fiber switch, inline where it happens (fiber.c): fiber `parked` (its
 * promise) parks at file:line for promise `awaited`, and fiber `next`
 * (NULL: the loop's stack) runs, its await's status `status`. */
static UVP__ALWAYS_INLINE void
uvp__rec_switch(uvp__rec_hot_t *h, const uvp_promise_t *parked,
                const uvp_promise_t *awaited, const char *file, int line,
                const uvp_promise_t *next, int status, bool starts) {
  h->track = next;
  if (UVP__LIKELY(h->kinds & UVP_RECORD_FIBERS)) {
    uvp__rec_t *r = uvp__rec_slot(h);
    r->track = parked;
    r->a = parked;
    r->b = awaited;
    r->c = next;
    r->d = (const void *)(intptr_t)status;
    r->file = file;
    r->line = (uint32_t)line;
    r->type = UVP__R_PARK;
    r->x = starts;
    /* Last: a clock read is then a tail call, with nothing to keep.  A
     * hand-off to the next fiber reads it at one in `every`; a park back
     * to the loop's stack (the end of a drain's run) always. */
    if (UVP__LIKELY(--h->countdown != 0) && UVP__LIKELY(next != NULL))
      r->t = h->now | UVP__REC_GUESS;
    else
      r->t = uvp__rec_clock(h);
  }
}
/* The drain runs fiber `fiber`, its await's status `status` (or it
 * starts). */
void uvp__rec_resume(uvp_ctx_t *ctx, const uvp_promise_t *fiber, int status,
                     bool starts);
void uvp__rec_fiber_end(uvp_ctx_t *ctx, const uvp_promise_t *fiber);
/* `id` (a fiber's promise, or a group) is named `name` (NULL: unnamed). */
void uvp__rec_name(uvp_ctx_t *ctx, const void *id, bool group,
                   const char *name);
/* Group g was made at file:line, its join's record w, inside `parent`. */
void uvp__rec_group(uvp_ctx_t *ctx, const void *g, const void *w,
                    const void *parent, const char *file, int line);
/* The stall detector reports an ended stall, ns long: s->kind, its site
 * (s->file, s->line), its report (s->text); `culprit` the promise whose
 * handler stalled, or the fiber's (its promise) that did (NULL: none). */
void uvp__rec_stall(uvp_ctx_t *ctx, const uvp_stall_t *s, uint64_t ns,
                    const void *culprit);

/* ---- for the writer (recorder-write.c), above the ring ------------------ */

/* uvp_ctx_set_recorder_on_stall's, its arguments checked: after each
 * stall, at the loop's next turn, write(ctx, a copy of opts); opts NULL:
 * no more.  0 or UV_ENOMEM.  (The writer hands its own function in: the
 * ring names none of the writer's.) */
typedef int (*uvp__rec_write_fn)(uvp_ctx_t *ctx, const uvp_record_opts_t *opts);
int uvp__rec_on_stall(uvp_ctx_t *ctx, const uvp_record_opts_t *opts,
                      uvp__rec_write_fn write);

/* The recorder's state (recorder.c's; the writer reads its rings). */
typedef struct uvp__rec_state_s {
  uvp__rec_hot_t h; /* first: the hooks inline elsewhere read it */
  uvp_ctx_t *ctx;
  size_t bytes; /* as asked for; 0: off */
  void *mem;    /* the ring's allocation: records, then strings */
  /* The string ring, str_cap bytes: a string is its length (2 bytes)
   * and its bytes, which may wrap round the ring's end. */
  char *str;
  size_t str_cap;
  uint64_t str_n; /* string bytes written since it was turned on */
  uv_prepare_t prepare;
  bool prepare_open;
  /* uvp_ctx_set_recorder_on_stall: what to write after a stall, and
   * whether a stall waits for it (written at the loop's next turn, out of
   * the fiber switch or the drain the stall was reported in). */
  bool on_stall, stall_pending;
  uvp_record_opts_t stall_opts;
  uvp__rec_write_fn stall_write;
  uintptr_t spans; /* spans begun: the last one's key */
} uvp__rec_state_t;

static inline uvp__rec_state_t *uvp__rec_state(const uvp_ctx_t *ctx) {
  return (uvp__rec_state_t *)uvp__rec_hot(ctx); /* h is first */
}

#endif
