/* Private to src/: object layout and the functions the files share. */
#ifndef UVP_INTERNAL_H
#define UVP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uvp.h"

#define UVP__API UVP_EXTERN

#if defined(__GNUC__)
#define UVP__LIKELY(x) __builtin_expect(!!(x), 1)
#define UVP__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define UVP__ALWAYS_INLINE inline __attribute__((always_inline))
#define UVP__NOINLINE __attribute__((noinline))
#else
#define UVP__LIKELY(x) (x)
#define UVP__UNLIKELY(x) (x)
#define UVP__ALWAYS_INLINE inline
#define UVP__NOINLINE
#endif

/* ---- allocation (alloc.c) ---------------------------------------------- */

void *uvp__malloc(size_t size);
void *uvp__calloc(size_t count, size_t size);
void *uvp__realloc(void *ptr, size_t size);
void uvp__free(void *ptr);
void uvp__ctx_count(int delta);
/* The lock of what the whole process shares (the context ids, the
 * creation sites): false, and not locked, if it could not be created. */
bool uvp__process_lock(void);
void uvp__process_unlock(void);

/* A pool hands out fixed-size slots carved from large chunks and recycles
 * them through a free list, so steady-state traffic never reaches malloc.
 * Slots are 16-byte aligned: the low 4 bits of a promise's address carry a
 * reaction's kind.  Chunks go back to the allocator only when the pool is
 * destroyed.
 *
 * When its last slot comes back, a pool rewinds: the free list is dropped
 * and the chunks are carved again from their start.  The free list holds
 * slots in the order their objects died, which after a fan-out is random;
 * carving hands out neighbours in address order, so the objects of the
 * next burst made together (a promise, its derived promise, a chain's
 * steps) share cache lines and pages again, and taking one follows no
 * pointer into cold memory. */
typedef struct uvp__chunk_s uvp__chunk_t;
typedef struct uvp__pool_s {
  void *free_list;
  char *bump;           /* the next slot to carve, inline ... */
  char *bump_end;       /* ... while below this (in populated memory) */
  size_t live;          /* slots handed out and not yet put back */
  uvp__chunk_t *carve;  /* the chunk `bump` is in (NULL: none yet) */
  uvp__chunk_t *chunks; /* oldest first, so that carving after a rewind
                           meets populated chunks before the newest one's
                           unpopulated tail */
  uvp__chunk_t *last;
  size_t slot_size;
  size_t bytes;
  size_t allocs;
} uvp__pool_t;

void uvp__pool_init(uvp__pool_t *pool, size_t slot_size);
void uvp__pool_destroy(uvp__pool_t *pool);
void *uvp__pool_get_slow(uvp__pool_t *pool);
void uvp__pool_rewind(uvp__pool_t *pool);
/* Pre-allocate and pre-fault `slots` more free slots; `init` (may be NULL)
 * marks each as free for whoever walks the pool. */
int uvp__pool_reserve(uvp__pool_t *pool, size_t slots,
                      void (*init)(void *slot));
/* Visit every slot carved since the last rewind (free ones included). */
void uvp__pool_each(uvp__pool_t *pool, void (*fn)(void *slot, void *arg),
                    void *arg);

static inline void *uvp__pool_get(uvp__pool_t *pool) {
  void *slot = pool->free_list;
  if (UVP__LIKELY(slot != NULL)) {
    void *next = *(void **)slot;
    pool->free_list = next;
    pool->live++;
#if defined(__GNUC__)
    /* Slots come back in the order their objects died, scattered over the
     * chunks: a burst of creations walks a cold list, each pop stalling
     * on the next link.  Loading the next slot now overlaps that miss
     * with the caller's work until the next pop (a prefetch of NULL does
     * not fault). */
    __builtin_prefetch(next, 1);
#endif
    return slot;
  }
  if (UVP__LIKELY(pool->bump < pool->bump_end)) {
    slot = pool->bump;
    pool->bump += pool->slot_size;
    pool->live++;
#if defined(__GNUC__)
    /* The stores run ahead (past the chunk's end, a prefetch is dropped). */
    __builtin_prefetch((const void *)((uintptr_t)slot + 256), 1);
#endif
    return slot;
  }
  return uvp__pool_get_slow(pool);
}

static inline void uvp__pool_put(uvp__pool_t *pool, void *slot) {
  *(void **)slot = pool->free_list;
  pool->free_list = slot;
  if (UVP__UNLIKELY(--pool->live == 0))
    uvp__pool_rewind(pool);
}

/* Wrapper operations (a uv_fs_t and its bookkeeping, ...) take one slot of
 * a per-context pool, so a steady stream of I/O does not call malloc.  The
 * core never looks inside a slot.  Slots are taken on the loop thread while
 * the context is open; after teardown a slot may be returned from a value
 * destructor running on another thread, hence the lock then. */
#define UVP__OP_SLOT 512
struct uvp_ctx_s;
void *uvp__op_slot_get(struct uvp_ctx_s *ctx);
void uvp__op_slot_put(struct uvp_ctx_s *ctx, void *slot);

/* One scratch buffer per context for stream reads: libuv calls a stream's
 * alloc and read callbacks back to back on the loop thread, so a read can
 * land here and only what arrived is copied out (as Node does).  NULL if
 * it cannot be allocated; freed with the context. */
#define UVP__SCRATCH_LEN (64 * 1024)
char *uvp__ctx_scratch(struct uvp_ctx_s *ctx);

/* A combinator's block: from the allocator, or, for large ones, the spare
 * the context kept from an earlier combinator.  malloc hands blocks this
 * big out as fresh mappings, and touching them again costs a page fault
 * per 4 KiB every time (several ms per MB on some VMs), so the context
 * keeps its largest freed one for the next fan-out.  *size is the size
 * wanted on entry, the block's capacity on return (pass it to _put). */
void *uvp__ctx_block_get(struct uvp_ctx_s *ctx, size_t *size);
void uvp__ctx_block_put(struct uvp_ctx_s *ctx, void *block, size_t size);

/* ---- objects ----------------------------------------------------------- */

/* A registered handler.  `target` is a promise pointer with the reaction's
 * kind in its low 4 bits (promises are 16-byte aligned): the derived
 * promise (whose `link` names the source while it waits), or, with
 * R_NODERIVED, the source itself.  32 bytes.
 *
 * The first 16 bytes alone make a "cell" (kind R_CELL): the reaction of an
 * owner that registers one per input of a large fan-out (all), whose
 * callback and argument are the same for every input and live with the
 * owner.  A cell's target names the owner, which begins with a
 * uvp__cell_owner_t; which input a cell is for follows from the cell's
 * address. */
typedef struct uvp__reaction_s uvp__reaction_t;
struct uvp__reaction_s {
  uvp__reaction_t *next; /* in the source's list, then in the run queue */
  uintptr_t target;
  uvp_then_cb cb; /* not in a cell */
  void *arg;      /* not in a cell */
};

/* A cell's owner begins with this.  Cell i is at (char *)cells + 16 i and
 * reacts to sources[i]: the core finds a cell's source itself, so that it
 * can run the cell like any internal owner's reaction, and the drain can
 * prefetch the source's entry ahead. */
typedef struct uvp__cell_owner_s uvp__cell_owner_t;
typedef struct uvp__cell_ops_s {
  /* Cell `index`'s source settled with *in (NULL: the cell was dropped and
   * will never run).  The core releases the source afterwards if the run
   * queue held it. */
  void (*run)(uvp__cell_owner_t *owner, size_t index, const uvp_outcome_t *in);
} uvp__cell_ops_t;
struct uvp__cell_owner_s {
  const uvp__cell_ops_t *ops;
  uvp__reaction_t *cells;
  uvp_promise_t **sources;
};
#define UVP__CELL_SIZE 16

enum {
  UVP__R_NODERIVED = 1u,
  UVP__R_ON_OK = 2u,   /* UVP_ON_FULFILLED << 1 */
  UVP__R_ON_ERR = 4u,  /* UVP_ON_REJECTED << 1 */
  UVP__R_FINALLY = 8u, /* with ON_OK and ON_ERR */
  UVP__R_NOTIFY = 16u, /* internal owners: cb runs for either outcome (set
                        * NODERIVED, ON_OK and ON_ERR too), what it returns
                        * is ignored, and a drop calls cb(arg, NULL) */
  UVP__R_EMBEDDED = 32u, /* lives in its owner's memory, not the pool; only
                          * with NOTIFY */
  UVP__R_CELL = 64u,     /* a cell (with NOTIFY and EMBEDDED): see above */
  UVP__R_TAG = 15u       /* the bits of `target` that hold the kind */
};

/* Seven flags in four bits: the low four are stored as they are, and the
 * three NOTIFY kinds take codes no other combination uses (NODERIVED
 * alone, NODERIVED|FINALLY without either outcome, and
 * NODERIVED|ON_ERR|FINALLY). */
#define UVP__R_CODE_NOTIFY 1u
#define UVP__R_CODE_NOTIFY_EMBEDDED 9u
#define UVP__R_CODE_CELL 13u
static inline uintptr_t uvp__rtag(unsigned flags) {
  if (flags & UVP__R_CELL)
    return UVP__R_CODE_CELL;
  if (flags & UVP__R_NOTIFY)
    return (flags & UVP__R_EMBEDDED) ? UVP__R_CODE_NOTIFY_EMBEDDED
                                     : UVP__R_CODE_NOTIFY;
  return flags & UVP__R_TAG;
}
static inline unsigned uvp__rflags(const uvp__reaction_t *r) {
  static const unsigned char flags[16] = {
      0, 1 | 2 | 4 | 16, 2, 3, 4, 5, 6, 7,
      8, 1 | 2 | 4 | 16 | 32, 10, 11, 12, 1 | 2 | 4 | 16 | 32 | 64, 14, 15};
  return flags[r->target & UVP__R_TAG];
}
static inline bool uvp__is_cell(const uvp__reaction_t *r) {
  return (r->target & UVP__R_TAG) == UVP__R_CODE_CELL;
}
static inline void uvp__cell_init(uvp__reaction_t *cell,
                                  uvp__cell_owner_t *owner) {
  cell->next = NULL;
  cell->target = (uintptr_t)owner | UVP__R_CODE_CELL;
}
static inline uvp__cell_owner_t *uvp__cell_owner(const uvp__reaction_t *cell) {
  return (uvp__cell_owner_t *)(cell->target & ~(uintptr_t)UVP__R_TAG);
}
static inline size_t uvp__cell_index(const uvp__cell_owner_t *o,
                                     const uvp__reaction_t *cell) {
  return (size_t)((const char *)cell - (const char *)o->cells) /
         UVP__CELL_SIZE;
}
/* Where the promise a cell reacts to is named. */
static inline uvp_promise_t **uvp__cell_source_slot(const uvp__reaction_t *cell) {
  uvp__cell_owner_t *o = uvp__cell_owner(cell);
  return &o->sources[uvp__cell_index(o, cell)];
}

/* The promise a reaction's `target` word names, without its flags. */
static inline uvp_promise_t *uvp__untag(uintptr_t target) {
  return (uvp_promise_t *)(target & ~(uintptr_t)UVP__R_TAG);
}
static inline uvp_promise_t *uvp__reaction_target(const uvp__reaction_t *r) {
  return uvp__untag(r->target);
}

/* What uvp__run_reaction hands a callback: the public outcome, followed by
 * the reaction that carried it.  An owner that embeds many reactions in one
 * block (a combinator: one per input) finds the input's index from the
 * reaction's address instead of storing a pointer per input. */
typedef struct {
  uvp_outcome_t in;
  uvp__reaction_t *r;
} uvp__outcome_t;

static inline uvp__reaction_t *uvp__outcome_reaction(const uvp_outcome_t *in) {
  return ((const uvp__outcome_t *)(const void *)in)->r;
}

enum {
  UVP__S_PENDING = UVP_PENDING,
  UVP__S_FULFILLED = UVP_FULFILLED,
  UVP__S_REJECTED = UVP_REJECTED,
  UVP__S_FREE = 3
};

enum {
  UVP__F_HANDLED = 1u,  /* a reaction observed or propagated it */
  UVP__F_WAITING = 2u,  /* pending and `link` is what it waits for */
  UVP__F_FORWARD = 4u,  /* settled; `link` is the promise owning the value */
  UVP__F_CANCEL = 8u,   /* pending; value/fn hold a cancel hook */
  UVP__F_NOTIFIED = 16u, /* unhandled hook already ran */
  UVP__F_OWNED = 32u,    /* settled only by the library (combinators, timers) */
  UVP__F_MANY = 64u,     /* pending with more than one reaction */
  UVP__F_OP = 128u       /* pending; a movable operation's: see below */
};

/* 48 bytes.  The context is named by a 16-bit id (uvp__contexts), the
 * creation site by an interned one (site.c).  What every settle and
 * release reads comes first, in 16 bytes: promises are 16-byte aligned and
 * 48 apart, so a 16-byte group never spans two cache lines, where the
 * first 32 bytes do for one promise in four (a loop settling scattered
 * promises then waits for two misses instead of one: measured, 5-10% of
 * `all` over a million inputs). */
struct uvp_promise_s {
  uvp__reaction_t *reactions; /* pending: newest first.  First: a free
                               * slot's free-list link goes here */
  uint32_t refs;
  uint8_t state;
  uint8_t flags;
  uint16_t ctx_id;
  void *value; /* value, payload, or cancel hook argument */
  union {
    uvp_free_cb free_cb;
    uvp_cancel_cb cancel_cb;
  } fn;
  uvp_promise_t *link; /* see F_WAITING / F_FORWARD */
  union {
    struct {
      union {
        int32_t code;  /* rejected */
        uint32_t born; /* pending: ms since the context's epoch */
      };
      uint16_t site;
    };
    /* refs reached 0 (uvp__release_local): none of this is read again,
     * and a walk over the slabs skips the promise */
    uvp_promise_t *next_dead;
  };
};

/* Every open context (and every closed one not yet freed) by id: a promise
 * names its context in two bytes.  Id 0 is never used.  An entry is written
 * by uvp_ctx_new before any promise of the context exists and cleared when
 * the context is freed, after its last promise: whoever holds a promise
 * may read its entry without a lock. */
#define UVP__MAX_CONTEXTS 65536
extern uvp_ctx_t *uvp__contexts[UVP__MAX_CONTEXTS];

static inline uvp_ctx_t *uvp__promise_ctx(const uvp_promise_t *p) {
  return uvp__contexts[p->ctx_id];
}
/* Whether a and b belong to one context: an id names one context for as
 * long as any of its promises lives, so the ids alone tell. */
static inline bool uvp__same_ctx(const uvp_promise_t *a,
                                 const uvp_promise_t *b) {
  return a->ctx_id == b->ctx_id;
}

/* ---- creation sites (site.c) -------------------------------------------- */

/* For the process-wide table: every bit of file and line reaches the
 * result (line is spread by the first multiply, the address by the
 * second). */
static inline uint32_t uvp__site_hash(const char *file, int line) {
  uint64_t h = ((uint64_t)(uintptr_t)file ^
                (uint64_t)(uint32_t)line * 0x9E3779B97F4A7C15u) *
               0xBF58476D1CE4E5B9u;
  return (uint32_t)(h >> 32);
}
typedef struct {
  const char *file;
  int line;
  uint16_t id;
} uvp__site_cache_t;
/* A context's cache is UVP__SITE_SETS sets of two entries.  A site's set is
 * its file's hash plus its line, so the sites of one function (a file's
 * lines within UVP__SITE_SETS of each other) never evict each other, and
 * two files that share sets still fit.  Before this, the index depended on
 * the file alone and a fan-out alternating between two lines of one file
 * took the process-wide lock for every promise. */
#define UVP__SITE_SETS 64 /* a power of two */
static inline uint32_t uvp__site_set(const char *file, int line) {
  uint32_t f = (uint32_t)((uint64_t)(uintptr_t)file * 0x9E3779B97F4A7C15u >> 40);
  return (f + (uint32_t)line) & (UVP__SITE_SETS - 1);
}
uint16_t uvp__site_miss(uvp_ctx_t *ctx, uvp__site_cache_t *set,
                        const char *file, int line);
/* The file and line of site `id` (NULL and 0 for 0, the unknown site). */
void uvp__site_get(uint16_t id, const char **file, int *line);

typedef struct uvp__msg_s uvp__msg_t;

struct uvp_ctx_s {
  uv_loop_t *loop;
  uint16_t id; /* in uvp__contexts */
  const char *thread; /* the loop thread's &uvp__thread_anchor */

  /* Run queue, in run order: a ring of reaction pointers, so queueing a
   * reaction writes neither the reaction nor its predecessor (cold lines
   * when a burst settles promises scattered over the slabs) and the drain
   * knows the next ones early enough to prefetch them.  If the ring is
   * full and cannot grow, reactions queue on `spill` through their `next`
   * until the ring has drained: everything on it is newer. */
  uvp__reaction_t **ring;
  size_t ring_cap; /* a power of two */
  size_t rhead;    /* free-running indices */
  size_t rtail;
  uvp__reaction_t *spill;
  uvp__reaction_t *spill_tail;
  /* Wrappers' finished operations wait apart, in arrival order, and run
   * when no reaction is queued (see drain in sched.c): each one's handlers
   * then run before the next one settles.  Linked through `next`. */
  uvp__reaction_t *chead;
  uvp__reaction_t *ctail;
  size_t queued;      /* reactions and completions */
  size_t completions; /* how many of `queued` wait on chead */
  size_t overdue;     /* completions a drain had no moment to run */
  unsigned int budget;
  bool idle_active;
  bool closed;        /* written by the loop thread under `mu` */
  bool freeing;       /* draining free_stack */
  uvp_promise_t *free_stack;

  uvp__pool_t promises;
  uvp__pool_t reactions;
  uvp__pool_t ops; /* UVP__OP_SLOT bytes each: see uvp__op_slot_get */
  char *scratch;   /* UVP__SCRATCH_LEN bytes, lazily: uvp__ctx_scratch */
  void *spare;     /* see uvp__ctx_block_get */
  size_t spare_size;
  size_t live;
  size_t pending;
  size_t objects; /* wrapper objects (TCP connections) still open */
  uint64_t epoch;

  uvp_unhandled_cb unhandled_cb;
  void *unhandled_arg;

  /* Recently used creation sites (see uvp__site_set): an empty entry
   * (NULL, 0) already answers 0, the unknown site.  Loop thread only. */
  uvp__site_cache_t sites[2 * UVP__SITE_SETS];
  size_t site_misses;

  uv_idle_t idle;   /* ref'd and active only while the queue is not empty */
  uv_check_t check; /* unref'd: drains right after I/O callbacks */
  uv_async_t async; /* unref'd: wake-up for messages from other threads */
  int handles_open;

  /* cross-thread; recursive so destructors may release under it */
  uv_mutex_t mu;
  int mu_depth;
  uvp__msg_t *mhead;
  uvp__msg_t *mtail;
};

/* The id of creation site (file, line), for p->site. */
static inline uint16_t uvp__site(uvp_ctx_t *ctx, const char *file, int line) {
  uvp__site_cache_t *set = &ctx->sites[2 * uvp__site_set(file, line)];
  if (UVP__LIKELY(set[0].file == file && set[0].line == line))
    return set[0].id;
  if (set[1].file == file && set[1].line == line)
    return set[1].id;
  return uvp__site_miss(ctx, set, file, line);
}

/* ---- scheduler (sched.c) ----------------------------------------------- */

/* Which thread is this?  Every thread has its own copy of a thread-local
 * variable, so its address names the thread: one instruction, where
 * uv_thread_self() and uv_thread_equal() are two calls on every settle and
 * release.  Like a pthread_t, the address may be reused by a thread
 * created after the loop thread has exited. */
#if defined(__GNUC__)
extern _Thread_local char uvp__thread_anchor
    __attribute__((tls_model("initial-exec")));
#else
extern _Thread_local char uvp__thread_anchor;
#endif

static inline bool uvp__on_loop_thread(const uvp_ctx_t *ctx) {
  return &uvp__thread_anchor == ctx->thread;
}

/* The context this thread used last: NULL, or an open context whose loop
 * thread this is (set by uvp__local_ctx_slow, cleared by uvp_ctx_close,
 * which runs on the loop thread), and its id (0 with NULL).  */
#if defined(__GNUC__)
extern _Thread_local uvp_ctx_t *uvp__current
    __attribute__((tls_model("initial-exec")));
extern _Thread_local uint16_t uvp__current_id
    __attribute__((tls_model("initial-exec")));
#else
extern _Thread_local uvp_ctx_t *uvp__current;
extern _Thread_local uint16_t uvp__current_id;
#endif

/* p's context if it is the one this thread used last, else NULL: then
 * uvp__local_ctx_slow tells and updates uvp__current.
 * It compares p's context id with uvp__current_id (0 when there is none)
 * and then works on uvp__current: the context's address does not wait for
 * p's line.  When a loop settles promises scattered over memory, p is a
 * cache miss each time; were the queue and counters reached through p's
 * id, every settle's updates would wait for that miss and the next
 * settle's behind them, where with a compare the CPU runs ahead on a
 * predicted branch and overlaps the misses of consecutive settles. */
static inline uvp_ctx_t *uvp__cached_ctx(const uvp_promise_t *p) {
  if (UVP__LIKELY(p->ctx_id == uvp__current_id))
    /* Volatile: the compiler must not wait for p to find the context. */
    return *(uvp_ctx_t *volatile *)&uvp__current;
  return NULL;
}
/* p's context if this is its loop thread and it is open (then it becomes
 * uvp__current), else NULL. */
uvp_ctx_t *uvp__local_ctx_slow(const uvp_promise_t *p);

/* The object of type `type` whose member `member` is at `ptr`. */
#define UVP__CONTAINER_OF(ptr, type, member)                                   \
  ((type *)((char *)(ptr)-offsetof(type, member)))

/* Append r to the list from *head to *tail, linked through `next`. */
static inline void uvp__rlist_append(uvp__reaction_t **head,
                                     uvp__reaction_t **tail,
                                     uvp__reaction_t *r) {
  r->next = NULL;
  if (*tail != NULL)
    (*tail)->next = r;
  else
    *head = r;
  *tail = r;
}
void uvp__queue_push_slow(uvp_ctx_t *ctx, uvp__reaction_t *r);
/* Append r to the run queue (the caller wakes the context). */
static inline void uvp__queue_push(uvp_ctx_t *ctx, uvp__reaction_t *r) {
  if (UVP__LIKELY(ctx->rtail - ctx->rhead < ctx->ring_cap &&
                  ctx->spill == NULL))
    ctx->ring[ctx->rtail++ & (ctx->ring_cap - 1)] = r;
  else
    uvp__queue_push_slow(ctx, r);
  ctx->queued++;
}
void uvp__enqueue(uvp_ctx_t *ctx, uvp__reaction_t *r);
void uvp__wake_slow(uvp_ctx_t *ctx);
/* After splicing into the queue: make sure the queue will be drained. */
static inline void uvp__wake(uvp_ctx_t *ctx) {
  if (UVP__UNLIKELY(!ctx->idle_active))
    uvp__wake_slow(ctx);
}
/* Queue a wrapper's finished operation: r (R_NOTIFY, embedded
 * in the operation, its target the operation's promise) settles that
 * promise when it runs.  It waits behind queued reactions, not in the ring
 * (see drain in sched.c), and runs with uvp__run_completion. */
static inline void uvp__enqueue_completion(uvp_ctx_t *ctx,
                                           uvp__reaction_t *r) {
  uvp__rlist_append(&ctx->chead, &ctx->ctail, r);
  ctx->completions++;
  ctx->queued++;
  uvp__wake(ctx);
}
/* Off-loop-thread entry: queue a resolve/reject/release for the loop. */
enum { UVP__MSG_RESOLVE, UVP__MSG_REJECT, UVP__MSG_RELEASE };
int uvp__post(uvp_promise_t *p, int op, int code, void *value,
              uvp_free_cb free_cb);
void uvp__lock(uvp_ctx_t *ctx);
void uvp__unlock(uvp_ctx_t *ctx); /* may free a closed, empty context */
/* Wrapper objects that outlive promises (a TCP connection) keep the
 * context's memory alive until they are closed. */
void uvp__ctx_hold(uvp_ctx_t *ctx);
void uvp__ctx_drop(uvp_ctx_t *ctx);

/* ---- promise core (promise.c) ------------------------------------------ */

void uvp__run_reaction(uvp_ctx_t *ctx, uvp__reaction_t *r);
/* Run a queued completion: its callback gets an outcome that
 * says nothing (only NULL, a drop, means anything to it), then the queue's
 * reference to the promise is released. */
void uvp__run_completion(uvp_ctx_t *ctx, uvp__reaction_t *r);
void uvp__drop_reaction(uvp_ctx_t *ctx, uvp__reaction_t *r, bool queued);
int uvp__resolve_local(uvp_promise_t *p, void *value, uvp_free_cb free_cb);
int uvp__reject_local(uvp_promise_t *p, int code, void *payload,
                      uvp_free_cb free_cb);
void uvp__release_local(uvp_promise_t *p);
void uvp__sweep(uvp_ctx_t *ctx); /* teardown of every live promise */

/* For the combinators and wrappers, which build on the core. */
uvp_promise_t *uvp__promise_new(uvp_ctx_t *ctx, const char *file, int line);
uvp__reaction_t *uvp__reaction_new(uvp_ctx_t *ctx, uvp_then_cb cb, void *arg,
                                   uvp_promise_t *target, unsigned flags);
/* Fill in a reaction its owner allocated (R_EMBEDDED): the core never frees
 * it, and it may be looked at after it ran or was dropped. */
static inline void uvp__reaction_init(uvp__reaction_t *r, uvp_then_cb cb,
                                      void *arg, uvp_promise_t *target,
                                      unsigned flags) {
  r->next = NULL;
  r->cb = cb;
  r->arg = arg;
  r->target = (uintptr_t)target | uvp__rtag(flags | UVP__R_EMBEDDED);
}
/* Register r on p (which it observes); marks p handled. */
void uvp__attach(uvp_promise_t *p, uvp__reaction_t *r);
/* Push r on pending p's reaction list. */
static inline void uvp__push_reaction(uvp_promise_t *p, uvp__reaction_t *r) {
  if (p->reactions != NULL)
    p->flags |= UVP__F_MANY;
  r->next = p->reactions;
  p->reactions = r;
}
void uvp__fulfill(uvp_promise_t *p, void *value, uvp_free_cb free_cb);
void uvp__reject(uvp_promise_t *p, int code, void *payload,
                 uvp_free_cb free_cb);
void uvp__forward(uvp_promise_t *p, uvp_promise_t *src);
void uvp__rel(uvp_promise_t *p);

/* A promise for a libuv operation: only uvp settles it (F_OWNED), `cancel`
 * runs if it is cancelled or torn down while pending, and it comes with two
 * references: the caller's and the operation's. */
uvp_promise_t *uvp__op_new(uvp_ctx_t *ctx, const char *file, int line,
                           uvp_cancel_cb cancel, void *arg);

/* An operation whose struct begins with its promise pointer, reads that
 * pointer afresh whenever it settles or releases, and whose cancel hook
 * ignores its promise argument, may have its promise replaced, until it
 * sets that pointer to NULL (an operation whose completion is queued).  When a
 * handler returns such an operation's fresh promise, the core then hands
 * the operation to the handler's derived promise instead of adopting (see
 * take_over in promise.c).  Call right after uvp__op_new. */
#define UVP__OP_MOVABLE(type, op)                                              \
  do {                                                                         \
    _Static_assert(offsetof(type, p) == 0, "the promise must come first");     \
    (op)->p->flags |= UVP__F_OP;                                               \
  } while (0)

static inline bool uvp__is_pending(const uvp_promise_t *p) {
  return p->state == UVP__S_PENDING;
}
void uvp__report_unhandled(uvp_promise_t *p);

#endif
