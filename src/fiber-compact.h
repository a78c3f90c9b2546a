/* The compact mode of fibers: its interface, and what it reads of fiber.c.
 * Private to fiber.c and fiber-compact.c.
 *
 * The compact mode (uvp_ctx_set_fiber_mode): a fiber's record is on the
 * heap, and while it is parked its live frames may be copied out of the
 * stack it runs on, into a buffer of their size.  How (one stack per
 * context whose frames are copied when another compact fiber needs it; a
 * stack each, copied out at once and poisoned, under ASan; a stack each
 * and nothing copied with the ucontext switch) is fiber-compact.c's
 * business: fiber.c calls the functions below the same way in every
 * build.  Compact fibers never hand off to other fibers, nor others to
 * them: they switch through the loop's stack, where the copy runs.
 *
 * A fiber's record and a context's fiber state are fiber.c's; they are
 * defined here, below it, because the compact mode keeps the fields
 * marked "the compact mode's" and reads the stack, the context of
 * execution, the await's entry and the spawn site.  So fiber-compact.c
 * needs nothing of fiber.c (the fiber's entry is passed in), and fiber.c
 * depends on it, not the other way round. */
#ifndef UVP_FIBER_COMPACT_H
#define UVP_FIBER_COMPACT_H

#include <stdbool.h>
#include <stdint.h>

#include "fiber-stack.h"
#include "fiber-switch.h"
#include "site.h"
#include "work-door.h"

typedef struct uvp__fiber_s uvp__fiber_t;

/* Per context. */
typedef struct uvp__fiber_state_s {
  uvp__ext_t ext;
  uvp_ctx_t *ctx;
  uvp__stack_pool_t stacks;
  uvp__fiber_ctx_t loop;      /* the loop thread's own, while a fiber runs */
  uvp__fiber_t *all;          /* every fiber not finished, for teardown/dump */
  struct uvp__sites_s *sites; /* the context's (uvp__ctx_sites) */
  size_t count;
  int mode; /* uvp_ctx_set_fiber_mode */
  /* While UVP__WATCH_TIME is set (the live console listens): uv_hrtime()
   * at the start of the running fiber's slice, 0: not known (timing was
   * off when it began). */
  uint64_t slice_at;
  /* The compact mode's. */
  bool park_at_once;       /* compact frames leave as they park (set by _new) */
  uvp__stack_t *run_stack; /* where compact fibers run, if they share one */
  uvp__fiber_t *owner;     /* whose frames are on it, if anyone's */
  size_t on_run_stack;     /* compact fibers alive that use it */
  /* What an await uses of the stack below the frame of
   * uvp__compact_reserve, by entry (uvp_await, uvp_await_shielded and
   * their _take forms, UVP__AWAIT_*): 0 until measured. */
  uint32_t park_slack[4];
} uvp__fiber_state_t;

struct uvp__fiber_s {
  /* Its stack is its context's, fctx.stack (uvp__fiber_stack), from its
   * spawn. */
  uvp__fiber_ctx_t fctx;
  uvp__fiber_state_t *st;
  union {
    /* Its record of work (work-door.h), which tells nobody anything: a
     * fiber is its group's member, no request, and its awaits are what
     * counts as work.  So nothing is ever done with it. */
    uvp__work_t work;
    uvp_promise_t *p; /* = work.p: the fiber's promise, the fiber's
                         reference; its site is the spawn's */
  };
  union {
    uvp_fiber_fn fn;   /* until it starts (state F_QUEUED), */
    void *woken_value; /* then what its last wake delivered: woken_status,
                          this value, and `waiting`, the promise */
  };
  void *arg;
  uvp_free_cb arg_free;
  /* Suspended: what it awaits (our reference), or NULL.  Running: the
   * promise its last uvp_await_take returned (our reference, released when
   * its next await returns or it returns), or NULL. */
  uvp_promise_t *waiting;
  uvp__handler_t wake;
  uvp__fiber_t *prev, *next; /* in st->all */
  uvp__scope_t *scope;       /* what it runs in (a reference), between runs */
  void *saved;               /* the compact mode's: its frames, when out */
  union {
    /* A compact fiber's floating-point control state to start with, until
     * its first run; */
    uint64_t fp;
    /* from then on (for every fiber, zeroed at its spawn), the time it has
     * run in ns, counted while UVP__WATCH_TIME is set. */
    uint64_t busy_ns;
  };
  char *name; /* uvp_fiber_set_name's copy, or NULL */
  int woken_status;
  /* The loop time (uvp__now) it began to wait, its low 32 bits: the task
   * dump's age of its wait, exact below 49 days (fiber.c's waited_since). */
  uint32_t await_at;
  /* The compact mode's: the room in `saved`, and the bytes of stack above
   * its last await's frame. */
  uint32_t saved_cap;
  uint32_t await_depth;
  uint16_t await_site; /* where it waits, interned (site.h): 0 till then */
  uint16_t trace;      /* its frame: its spawn, or the await it last left */
  uint8_t state;       /* fiber.c's F_* */
  uint8_t await_entry; /* the compact mode's: its last await's UVP__AWAIT_* */
  bool cancelled : 1;  /* its promise was cancelled: awaits say so */
  bool timed_out : 1;  /* ... by its deadline: they say UV_ETIMEDOUT */
  bool shielded : 1;   /* in uvp_await_shielded: cancelling waits too */
  /* The compact mode's. */
  bool compact : 1;
  bool started : 1; /* its context made on its stack (at its first run) */
  bool out : 1;     /* its live frames are in `saved`, not on its stack */
};

/* What a parked compact fiber holds is this record, its frames and its
 * promise (docs/internals/fibers-2.md 13.9): each field above is paid by
 * every fiber, so the record is held to a 224-byte malloc chunk where the
 * switch's context is the plain one. */
#if (defined(__x86_64__) || defined(__aarch64__)) &&                           \
    !defined(UVP__FIBER_UCONTEXT) && !defined(UVP__FIBER_TSAN)
_Static_assert(sizeof(struct uvp__fiber_s) <= 216,
               "a fiber's record outgrew its 224-byte malloc chunk");
#endif

/* The stack f runs on. */
static inline uvp__stack_t *uvp__fiber_stack(const uvp__fiber_t *f) {
  return f->fctx.stack;
}

/* The live console's fiber times (fiber.c): on, every fiber's time on the
 * CPU is counted from now on, at one clock read per switch (a fiber's
 * busy_ns); off, not.  Loop thread. */
void uvp__fiber_time(uvp_ctx_t *ctx, bool on);

/* ---- the compact mode (fiber-compact.c) ---------------------------------- */

/* A compact fiber's record, zeroed but for its stack, state and `compact`,
 * on the heap, and its stack: the context's run stack (got with the first
 * compact fiber) or one of its own.  0, or UV_ENOMEM (no record, no stack;
 * nothing to undo). */
int uvp__compact_new(uvp__fiber_state_t *st, uvp__fiber_t **out);

/* f is spawned (its fields set): the floating-point modes it is to start
 * with are taken now, or, where nothing is copied, its context is made now
 * to run entry(f, msg) on its stack. */
void uvp__compact_spawned(uvp__fiber_t *f, uvp__fiber_entry_t entry);

/* Gives back what uvp__compact_new took (after uvp__fiber_destroy, if its
 * context was made), the record with it. */
void uvp__compact_free(uvp__fiber_t *f);

/* The awaits' entries, each with a frame of its own below which an await
 * uses the stack: bit 0 the shield, bit 1 the take. */
enum { UVP__AWAIT_SHIELD = 1, UVP__AWAIT_TAKE = 2 };

/* Before the running compact fiber f awaits (entry: UVP__AWAIT_* bits):
 * the room its frames will need when it parks, so that parking cannot
 * fail.  0, or UV_ENOMEM: the await must fail.  Measures the stack from
 * its own frame, so it is never inlined (the call is its measure). */
int uvp__compact_reserve(uvp__fiber_t *f, unsigned entry);

/* Compact fiber f has switched back to the loop's stack, suspended: its
 * frames leave the stack now (done when st->park_at_once says so; else
 * only when another compact fiber needs the stack, by unpark). */
void uvp__compact_park(uvp__fiber_t *f);

/* The top of f's stack, as its context was made with. */
static inline char *uvp__compact_top(const uvp__fiber_t *f) {
  const uvp__stack_t *stack = uvp__fiber_stack(f);
  return (char *)(((uintptr_t)stack->base + stack->size) & ~(uintptr_t)15);
}

/* The overflow reports name the fiber running on f's stack as f: set
 * when f's context is made, and again whenever f takes the shared stack
 * from another (not at every resume: the stack still names f then). */
static inline void uvp__compact_name_stack(const uvp__fiber_t *f) {
  uvp__site_at_t at = uvp__site_known(f->p->site);
  uvp__stack_t *stack = uvp__fiber_stack(f);
  stack->file = at.file;
  stack->line = at.line;
}

/* f's context made on its stack at its first run, to run entry(f, msg)
 * (uvp__compact_unpark's, once per fiber). */
void uvp__compact_start(uvp__fiber_t *f, uvp__fiber_entry_t entry);

/* Before the loop's stack switches to compact fiber f: its frames back on
 * its stack (the fiber whose frames are there copied out of the way
 * first), or its context made there at its first run.  Inline, the same
 * in every build: run() is the compact ping-pong's hot path, and a call
 * here cost it 0.6 % more instructions (7 an await).  f's stack is the
 * context's run stack exactly where compact fibers share one (the shared
 * build, uvp__compact_new); f is out only where frames are copied. */
static UVP__ALWAYS_INLINE void uvp__compact_unpark(uvp__fiber_t *f,
                                                   uvp__fiber_entry_t entry) {
  uvp__fiber_state_t *st = f->st;
  uvp__stack_t *stack = uvp__fiber_stack(f);
  if (stack == st->run_stack && st->owner != f) {
    if (st->owner != NULL)
      uvp__compact_park(st->owner);
    st->owner = f;
    uvp__compact_name_stack(f);
  }
  if (UVP__UNLIKELY(!f->started)) {
    uvp__compact_start(f, entry);
  } else if (f->out) {
    /* Its frames and their shadow, poisoned or another fiber's till now. */
    uvp__fiber_restore(&f->fctx, uvp__compact_top(f), f->saved);
    f->out = false;
  }
}

/* The compact fibers' shared stack goes back to the pool once none of them
 * uses it (before the pool's size changes, and at teardown). */
void uvp__compact_put_stack(uvp__fiber_state_t *st);

#endif
