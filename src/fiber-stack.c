/* Fiber stacks (see fiber-stack.h): slots carved from chunks, pooled
 * warm or released.  The guard below each stack (marker, page or canary)
 * and the handler that reports a fault in one are fiber-guard.c's; this
 * file chooses a slot's guard when it is first carved. */
#if !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE, MADV_* */
#endif
#include "fiber-stack.h"
#include "fiber-asan.h"
#include "fiber-guard.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

/* Ranges advised per system call (IOV_MAX is 1024; this keeps the vector
 * at 1 KiB on the caller's stack, which may be a fiber's). */
#define ADVISE_BATCH 64u

/* Bytes at the top of a slot that are not part of its stack: where the
 * canary of the slot above lives. */
#define TOP_RESERVE 16u
/* The tops of consecutive slots are staggered by 64 bytes.  Every stack's
 * first frames and its fiber's record would otherwise sit at the same
 * offset in a page, so in the same few sets of every cache indexed by the
 * low address bits: 1000 fibers spawned and run in a round
 * (bench/fiber-spawn) took 190 ns each with the tops aligned, 88-110 with
 * them staggered over 32 steps (at most 1984 bytes), about 210 over 8.  But
 * 32 steps make a fiber parked 8 calls deep (bench/fiber-memory) cross
 * into a second page in 20 slots of 32: 6.6 KB a parked fiber instead of
 * 4.2.  So a slot handed out fresh (carved, or released: its pages to be
 * faulted in) is staggered over 8 steps (at most 448 bytes), where such a
 * fiber still fits its one page, and a warm one, handed out again with
 * its pages, over 32: the fibers that cycle through warm stacks are the
 * ones whose records evict each other, and a warm stack's pages are the
 * pool's already (docs/internals/fibers.md 13.8).  A slot has room for the
 * widest. */
#define STAGGER_STEP 64u
#define STAGGER_NARROW 8u
#define STAGGER_WIDE 32u
#define STAGGER_MAX (STAGGER_STEP * (STAGGER_WIDE - 1))
/* A slot's descriptor, at its top, below the canary of the slot above. */
#define DESC_LEN ((sizeof(uvp__stack_t) + 15u) & ~(size_t)15u)

/* A slot's state, in its byte of the chunk's meta (with its guard, and
 * whether its pages are still to be given back). */
enum { S_FRESH, S_LIVE, S_WARM, S_RELEASED, S_ORPHAN };
#define META_STATE 0x07u
#define META_DIRTY 0x08u
#define META_GUARD_SHIFT 4 /* two bits */
#define META_WIDE 0x40u    /* staggered over STAGGER_WIDE steps */

/* What the pool keeps of a chunk on the heap: a byte a slot (its state,
 * guard and whether its pages are still to be given back), whatever
 * became of the slot's pages.  A slot's descriptor (uvp__stack_t) is in
 * the slot's top page, above its stack: it lives while the slot's pages do
 * (live, warm, released but not yet given back) and is written afresh
 * whenever the slot is handed out. */
struct uvp__stack_chunk_s {
  char *map;    /* the mapping: a lead page, then the slots */
  bool markers; /* every slot's guard page has its marker (install_markers) */
  size_t map_len;
  size_t slot_len;
  size_t nslots, carved; /* slots [0, carved) have been handed out once */
  size_t live, warm, released;
  size_t page_guards; /* slots guarded by mprotect: the budget's share */
  size_t rel_scan;    /* no slot below this one is released */
  uvp__stack_chunk_t *prev, *next;   /* the pool's chunks */
  uvp__stack_chunk_t *rprev, *rnext; /* the pool's chunks with released */
  unsigned char meta[];              /* per slot */
};

/* ---- the tools ----------------------------------------------------------- */

/* The usable part of an idle stack is out of bounds for the tools: for
 * ASan whenever its runtime is in the process (fiber-asan.h), a release uvp
 * in a program built with ASan too. */
static void mark_idle(uvp__stack_t *stack) {
  uvp__fiber_poison(stack->base, stack->size);
#if defined(UVP__STACK_VALGRIND)
  (void)VALGRIND_MAKE_MEM_NOACCESS(stack->base, stack->size);
#endif
  (void)stack;
}

/* Usable again, contents undefined. */
static void mark_live(uvp__stack_t *stack) {
  uvp__fiber_unpoison(stack->base, stack->size);
#if defined(UVP__STACK_VALGRIND)
  (void)VALGRIND_MAKE_MEM_UNDEFINED(stack->base, stack->size);
#endif
  (void)stack;
}

/* ---- slots --------------------------------------------------------------- */

static char *slot_start(const uvp__stack_pool_t *pool,
                        const uvp__stack_chunk_t *c, size_t i) {
  return c->map + pool->page + i * c->slot_len;
}

/* The bytes between slot i's stack (its descriptor) and its top. */
static size_t stagger_of(const uvp__stack_chunk_t *c, size_t i) {
  size_t steps = (c->meta[i] & META_WIDE) != 0 ? STAGGER_WIDE : STAGGER_NARROW;
  return i % steps * STAGGER_STEP;
}

static uvp__stack_t *desc_of(const uvp__stack_pool_t *pool,
                             const uvp__stack_chunk_t *c, size_t i) {
  return (uvp__stack_t *)(void *)(slot_start(pool, c, i) + c->slot_len -
                                  TOP_RESERVE - DESC_LEN - stagger_of(c, i));
}

static size_t index_of(const uvp__stack_pool_t *pool, const uvp__stack_t *s) {
  (void)pool;
  return s->slot;
}

static unsigned state_at(const uvp__stack_chunk_t *c, size_t i) {
  return c->meta[i] & META_STATE;
}

static void set_state(uvp__stack_chunk_t *c, size_t i, unsigned state) {
  c->meta[i] = (unsigned char)((c->meta[i] & ~META_STATE) | state);
}

/* The descriptor of slot i, written afresh (its pages may have been given
 * back since it was last handed out). */
static uvp__stack_t *init_desc(const uvp__stack_pool_t *pool,
                               uvp__stack_chunk_t *c, size_t i) {
  uvp__stack_t *s = desc_of(pool, c, i);
  char *start = slot_start(pool, c, i);
  memset(s, 0, sizeof(*s));
  s->chunk = c;
  s->slot = (uint32_t)i;
  s->base = start + pool->page;
  s->size = (size_t)((char *)s - s->base);
  s->guard = (unsigned char)(c->meta[i] >> META_GUARD_SHIFT);
  s->canary = s->guard == UVP__GUARD_CANARY
                  ? (uint64_t *)(void *)(start - TOP_RESERVE)
                  : NULL;
  return s;
}

/* The warm list, through the descriptors (a warm slot's pages stay). */
static void push(uvp__stack_t **head, uvp__stack_t **tail, uvp__stack_t *s) {
  s->prev = NULL;
  s->next = *head;
  if (*head != NULL)
    (*head)->prev = s;
  else if (tail != NULL)
    *tail = s;
  *head = s;
}

static void unlink_slot(uvp__stack_t **head, uvp__stack_t **tail,
                        uvp__stack_t *s) {
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    *head = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  else if (tail != NULL)
    *tail = s->prev;
  s->prev = s->next = NULL;
}

/* The released slots: the chunks that have any, and in each the slots
 * whose state says so (nothing of a released slot's own memory can hold a
 * link: its pages may be gone). */
static void rel_push(uvp__stack_pool_t *pool, uvp__stack_chunk_t *c, size_t i) {
  if (i < c->rel_scan)
    c->rel_scan = i;
  if (c->released++ == 0) {
    c->rprev = NULL;
    c->rnext = pool->released;
    if (c->rnext != NULL)
      c->rnext->rprev = c;
    pool->released = c;
  }
}

static void rel_unlink_chunk(uvp__stack_pool_t *pool, uvp__stack_chunk_t *c) {
  if (c->rprev != NULL)
    c->rprev->rnext = c->rnext;
  else
    pool->released = c->rnext;
  if (c->rnext != NULL)
    c->rnext->rprev = c->rprev;
  c->rprev = c->rnext = NULL;
}

/* Slot i of c, released, is no longer (its state is the caller's). */
static void rel_take(uvp__stack_pool_t *pool, uvp__stack_chunk_t *c) {
  if (--c->released == 0)
    rel_unlink_chunk(pool, c);
}

/* The lowest released slot of c, taken. */
static size_t rel_pop(uvp__stack_pool_t *pool, uvp__stack_chunk_t *c) {
  size_t i = c->rel_scan;
  while (state_at(c, i) != S_RELEASED)
    i++;
  c->rel_scan = i + 1;
  rel_take(pool, c);
  return i;
}

/* ---- chunks -------------------------------------------------------------- */

void uvp__stack_pool_init(uvp__stack_pool_t *pool, size_t size) {
  memset(pool, 0, sizeof(*pool));
  pool->page = uvp__stack_page_size();
  pool->size = size != 0 ? size : UVP__STACK_DEFAULT_SIZE;
  pool->max_idle = UVP__STACK_DEFAULT_MAX_IDLE;
  pool->max_idle_bytes = UVP__STACK_DEFAULT_MAX_IDLE_BYTES;
  pool->keep_warm = UVP__STACK_KEEP_ALL;
  pool->guards = UVP__GUARDS_AUTO;
  pool->next_slots = UVP__STACK_CHUNK_FIRST;
}

/* The slot for a stack of `size` bytes: a guard page, then `size`, the
 * stagger and the descriptor rounded up to whole pages.  0 if that does
 * not fit in a size_t. */
static size_t slot_len_for(const uvp__stack_pool_t *pool, size_t size) {
  size_t page = pool->page;
  if (size > SIZE_MAX / 4)
    return 0;
  if (size < 256)
    size = 256;
  size += STAGGER_MAX + DESC_LEN;
  return page + ((size + page - 1) & ~(page - 1));
}

static void write_canary(uvp__stack_t *s) {
  s->canary[0] = uvp__stack_canary_value(s->canary);
  s->canary[1] = uvp__stack_canary_value(s->canary + 1);
}

/* The canary of the slot above slot i, in i's top page, went with i's
 * pages: written again if that stack is in use. */
static void rewrite_canary_above(const uvp__stack_pool_t *pool,
                                 uvp__stack_chunk_t *c, size_t i) {
  if (i + 1 < c->carved && state_at(c, i + 1) == S_LIVE) {
    uvp__stack_t *above = desc_of(pool, c, i + 1);
    if (above->canary != NULL)
      write_canary(above);
  }
}

/* Gives the pages of a slot's stack back to the kernel at once (its guard
 * stays: markers and PROT_NONE survive MADV_DONTNEED), its descriptor and
 * the canary of the slot above with them. */
static void release_pages(const uvp__stack_pool_t *pool, uvp__stack_chunk_t *c,
                          size_t i) {
  (void)madvise(slot_start(pool, c, i) + pool->page, c->slot_len - pool->page,
                MADV_DONTNEED);
  rewrite_canary_above(pool, c, i);
}

/* Gives back the pages of every released stack that still has them
 * (dirty: demoted since the last flush), ADVISE_BATCH ranges a system
 * call.  Their descriptors go with them: what is needed afterwards is read
 * first. */
static void flush_released(uvp__stack_pool_t *pool) {
  struct iovec iov[ADVISE_BATCH];
  uvp__stack_chunk_t *cs[ADVISE_BATCH];
  size_t is[ADVISE_BATCH];
  while (pool->dirty > 0) {
    size_t n = 0;
    while (pool->dirty > 0 && n < ADVISE_BATCH) {
      uvp__stack_t *s = pool->dirty_slots[--pool->dirty];
      cs[n] = s->chunk;
      is[n] = index_of(pool, s);
      cs[n]->meta[is[n]] &= (unsigned char)~META_DIRTY;
      iov[n].iov_base = s->base;
      iov[n].iov_len = cs[n]->slot_len - pool->page;
      n++;
    }
    (void)uvp__stack_advise(iov, n, MADV_DONTNEED);
    for (size_t k = 0; k < n; k++)
      rewrite_canary_above(pool, cs[k], is[k]);
  }
}

/* Released slot i leaves the dirty set (handed out again, forgotten,
 * unmapped): its pages need not be given back, or go with the chunk.  Its
 * descriptor is still there, since its pages are. */
static void undirty(uvp__stack_pool_t *pool, uvp__stack_chunk_t *c, size_t i) {
  if ((c->meta[i] & META_DIRTY) == 0)
    return;
  uvp__stack_t *s = desc_of(pool, c, i);
  uvp__stack_t *last = pool->dirty_slots[--pool->dirty];
  pool->dirty_slots[s->dirty_at] = last;
  last->dirty_at = s->dirty_at;
  c->meta[i] &= (unsigned char)~META_DIRTY;
}

/* Every released slot of c is forgotten (state: orphan or, as c goes,
 * nothing). */
static void drop_released(uvp__stack_pool_t *pool, uvp__stack_chunk_t *c) {
  while (c->released > 0) {
    size_t i = rel_pop(pool, c);
    undirty(pool, c, i);
    set_state(c, i, S_ORPHAN);
    pool->idle_count--;
    pool->idle_bytes -= c->slot_len;
  }
}

static void free_chunk(uvp__stack_pool_t *pool, uvp__stack_chunk_t *c) {
  drop_released(pool, c);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    pool->chunk_list = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  if (pool->carving == c)
    pool->carving = NULL;
  pool->chunks--;
  /* ASan keeps the shadow of unmapped memory: whatever is mapped here next
   * must not inherit the poison of an idle stack or a dead fiber's frames. */
  uvp__fiber_unpoison(c->map, c->map_len);
  (void)munmap(c->map, c->map_len);
  uvp__stack_page_guards_give(c->page_guards);
  free(c);
}

/* Unmaps c if nothing in it is in use or warm. */
static void maybe_free_chunk(uvp__stack_pool_t *pool, uvp__stack_chunk_t *c) {
  if (c->live == 0 && c->warm == 0)
    free_chunk(pool, c);
}

static uvp__stack_chunk_t *map_chunk(uvp__stack_pool_t *pool, size_t slot_len,
                                     size_t nslots) {
  size_t page = pool->page;
  for (;;) {
    size_t len = page + nslots * slot_len;
    char *map =
        mmap(NULL, len, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (map != MAP_FAILED) {
      uvp__stack_chunk_t *c = malloc(sizeof(*c) + nslots);
      if (c == NULL) {
        (void)munmap(map, len);
        return NULL;
      }
      /* A huge page under a stack would make a touch of 4 KiB cost 2 MiB
       * (kernels before 6.7 do not infer this from MAP_STACK). */
#if defined(MADV_NOHUGEPAGE)
      (void)madvise(map, len, MADV_NOHUGEPAGE);
#endif
      memset(c, 0, sizeof(*c) + nslots);
      c->map = map;
      c->map_len = len;
      c->slot_len = slot_len;
      c->nslots = nslots;
      c->next = pool->chunk_list;
      if (c->next != NULL)
        c->next->prev = c;
      pool->chunk_list = c;
      pool->chunks++;
      return c;
    }
    if (nslots == 1)
      return NULL;
    nslots /= 2; /* RLIMIT_AS or a strict overcommit may allow less */
  }
}

static int pool_guards(const uvp__stack_pool_t *pool) {
  return pool->guards != UVP__GUARDS_AUTO ? pool->guards
                                          : uvp__stack_guards_auto();
}

/* The guard of a slot carved now: a marker if the kernel has them, else a
 * PROT_NONE page while the budget lasts, else a canary. */
static unsigned char guard_slot(uvp__stack_pool_t *pool, uvp__stack_chunk_t *c,
                                char *guard) {
  int mode = pool_guards(pool);
  if (mode == UVP__GUARDS_AUTO &&
      madvise(guard, pool->page, MADV_GUARD_INSTALL) == 0)
    return UVP__GUARD_MARKER;
  if (mode != UVP__GUARDS_CANARY && uvp__stack_page_guard_take()) {
    if (mprotect(guard, pool->page, PROT_NONE) == 0) {
      c->page_guards++;
      return UVP__GUARD_PAGE;
    }
    uvp__stack_page_guards_give(1);
  }
  return UVP__GUARD_CANARY;
}

/* Every slot's guard page of a fresh chunk gets its marker at once: a
 * system call per ADVISE_BATCH slots, not one per stack carved.  false:
 * some did not (the kernel refuses process_madvise and a madvise failed),
 * and the slots get their guards one by one as they are carved. */
static bool install_markers(const uvp__stack_pool_t *pool,
                            const uvp__stack_chunk_t *c) {
  struct iovec iov[ADVISE_BATCH];
  for (size_t i = 0; i < c->nslots;) {
    size_t n = 0;
    for (; i < c->nslots && n < ADVISE_BATCH; i++, n++) {
      iov[n].iov_base = c->map + pool->page + i * c->slot_len;
      iov[n].iov_len = pool->page;
    }
    if (uvp__stack_advise(iov, n, MADV_GUARD_INSTALL) != 0)
      return false;
  }
  return true;
}

/* A fresh slot of slot_len bytes: from the chunk being carved when it is
 * of the pool's size, else from a new chunk. */
static uvp__stack_t *carve(uvp__stack_pool_t *pool, size_t slot_len,
                           int pooled) {
  uvp__stack_chunk_t *c = pooled ? pool->carving : NULL;
  if (c == NULL || c->carved == c->nslots) {
    size_t max = UVP__STACK_CHUNK_MAX / slot_len;
    size_t n = pooled ? pool->next_slots : 1;
    if (n > max)
      n = max;
    if (n == 0)
      n = 1;
    c = map_chunk(pool, slot_len, n);
    if (c == NULL)
      return NULL;
    if (pool_guards(pool) == UVP__GUARDS_AUTO)
      c->markers = install_markers(pool, c);
    if (pooled) {
      pool->carving = c;
      if (pool->next_slots < max)
        pool->next_slots *= 2;
    }
  }
  size_t i = c->carved++;
  unsigned char guard = c->markers
                            ? UVP__GUARD_MARKER
                            : guard_slot(pool, c, slot_start(pool, c, i));
  c->meta[i] = (unsigned char)(guard << META_GUARD_SHIFT);
  uvp__stack_t *s = init_desc(pool, c, i);
  pool->guard_counts[guard]++;
  if (guard != UVP__GUARD_CANARY && c->carved == 1) {
    uvp__stack_fault_handler_ensure();
  }
  return s;
}

/* ---- get and put --------------------------------------------------------- */

/* The warmest idle stack, taken off the warm list.  Staggered wide from
 * its first time warm: its descriptor moves down into what was its stack
 * then, and stays from there on. */
static uvp__stack_t *take_warm(uvp__stack_pool_t *pool) {
  uvp__stack_t *s = pool->warm;
  uvp__stack_chunk_t *c = s->chunk;
  size_t i = index_of(pool, s);
  unlink_slot(&pool->warm, &pool->warm_tail, s);
  pool->warm_count--;
  pool->warm_bytes -= c->slot_len;
  c->warm--;
  if ((c->meta[i] & META_WIDE) == 0) {
    mark_live(s); /* the descriptor's new place is in bounds */
    c->meta[i] |= META_WIDE;
    s = init_desc(pool, c, i);
  }
  return s;
}

/* A released stack, handed out as a fresh one (staggered narrow): one whose
 * pages are still there first (used again, not dropped). */
static uvp__stack_t *take_released(uvp__stack_pool_t *pool) {
  uvp__stack_chunk_t *c;
  size_t i;
  if (pool->dirty > 0) {
    c = pool->dirty_slots[pool->dirty - 1]->chunk;
    i = index_of(pool, pool->dirty_slots[pool->dirty - 1]);
    undirty(pool, c, i);
    rel_take(pool, c);
  } else {
    c = pool->released;
    i = rel_pop(pool, c);
  }
  c->meta[i] &= (unsigned char)~META_WIDE;
  return init_desc(pool, c, i);
}

/* The warmest idle stack of the pool's size, else a released one; NULL if
 * there is none. */
static uvp__stack_t *take_idle(uvp__stack_pool_t *pool) {
  uvp__stack_t *s;
  if (pool->warm != NULL)
    s = take_warm(pool);
  else if (pool->released != NULL)
    s = take_released(pool);
  else
    return NULL;
  pool->idle_count--;
  pool->idle_bytes -= s->chunk->slot_len;
  /* a released slot's canary went with its pages, or the slot below's */
  mark_live(s);
  return s;
}

int uvp__stack_get(uvp__stack_pool_t *pool, size_t size, uvp__stack_t **out) {
  size_t pool_len = slot_len_for(pool, pool->size);
  size_t slot_len = size != 0 ? slot_len_for(pool, size) : pool_len;
  int pooled = slot_len == pool_len && !pool->closed;
  uvp__stack_t *s = NULL;

  if (slot_len == 0)
    return UV_ENOMEM;
  if (pooled)
    s = take_idle(pool);
  if (s == NULL) {
    s = carve(pool, slot_len, pooled);
    if (s == NULL)
      return UV_ENOMEM;
  }
  set_state(s->chunk, index_of(pool, s), S_LIVE);
  s->chunk->live++;
  s->file = NULL;
  s->line = 0;
  if (s->canary != NULL)
    write_canary(s);
  if (++pool->live_count > pool->peak_live)
    pool->peak_live = pool->live_count;
  pool->live_bytes += slot_len;
  *out = s;
  return 0;
}

/* A warm stack (the least recently returned) is released: its pages go
 * with the next flush (RELEASE_BATCH of them a system call), or with its
 * chunk if that goes first, or not at all if it is handed out before. */
static void demote(uvp__stack_pool_t *pool, uvp__stack_t *s) {
  uvp__stack_chunk_t *c = s->chunk;
  size_t i = index_of(pool, s);
  unlink_slot(&pool->warm, &pool->warm_tail, s);
  pool->warm_count--;
  pool->warm_bytes -= c->slot_len;
  c->warm--;
  set_state(c, i, S_RELEASED);
  c->meta[i] |= META_DIRTY;
  s->dirty_at = (uint32_t)pool->dirty;
  pool->dirty_slots[pool->dirty++] = s;
  rel_push(pool, c, i);
  maybe_free_chunk(pool, c);
  if (pool->dirty == UVP__STACK_RELEASE_BATCH)
    flush_released(pool);
}

void uvp__stack_put(uvp__stack_pool_t *pool, uvp__stack_t *stack) {
  uvp__stack_chunk_t *c = stack->chunk;
  size_t slot_len = c->slot_len;
  pool->live_count--;
  pool->live_bytes -= slot_len;
  c->live--;
  mark_idle(stack);
  if (pool->closed || slot_len != slot_len_for(pool, pool->size)) {
    set_state(c, index_of(pool, stack), S_ORPHAN);
    maybe_free_chunk(pool, c);
    return;
  }
  if (pool->keep_warm < stack->size) {
    uintptr_t end = ((uintptr_t)stack->base + stack->size - pool->keep_warm) &
                    ~(uintptr_t)(pool->page - 1);
    if (end > (uintptr_t)stack->base)
      (void)madvise(stack->base, end - (uintptr_t)stack->base, MADV_DONTNEED);
  }
  set_state(c, index_of(pool, stack), S_WARM);
  push(&pool->warm, &pool->warm_tail, stack);
  pool->warm_count++;
  pool->warm_bytes += slot_len;
  c->warm++;
  pool->idle_count++;
  pool->idle_bytes += slot_len;
  while (pool->warm_tail != NULL &&
         (pool->warm_count > pool->max_idle ||
          pool->warm_count * pool->size > pool->max_idle_bytes))
    demote(pool, pool->warm_tail);
}

void uvp__stack_pool_trim(uvp__stack_pool_t *pool, size_t keep) {
  while (pool->warm_tail != NULL && pool->warm_count > keep)
    demote(pool, pool->warm_tail);
  flush_released(pool);
}

/* Forgets every released slot (they are not handed out again; each chunk
 * goes with its last stack in use); their pages are given back first. */
static void forget_released(uvp__stack_pool_t *pool) {
  flush_released(pool);
  while (pool->released != NULL)
    drop_released(pool, pool->released);
}

void uvp__stack_pool_resize(uvp__stack_pool_t *pool, size_t size) {
  uvp__stack_t *s;
  /* Warm stacks are forgotten too; their pages go now only if their chunk
   * stays (a stack of it still in use): an unmapped chunk takes them. */
  while ((s = pool->warm) != NULL) {
    uvp__stack_chunk_t *c = s->chunk;
    size_t i = index_of(pool, s);
    unlink_slot(&pool->warm, &pool->warm_tail, s);
    pool->warm_count--;
    pool->warm_bytes -= c->slot_len;
    pool->idle_count--;
    pool->idle_bytes -= c->slot_len;
    c->warm--;
    set_state(c, i, S_ORPHAN);
    if (c->live > 0)
      release_pages(pool, c, i);
  }
  forget_released(pool);
  pool->size = size != 0 ? size : UVP__STACK_DEFAULT_SIZE;
  pool->carving = NULL;
  pool->next_slots = UVP__STACK_CHUNK_FIRST;
  /* Chunks with nothing in use go now. */
  uvp__stack_chunk_t *c = pool->chunk_list, *next;
  for (; c != NULL; c = next) {
    next = c->next;
    maybe_free_chunk(pool, c);
  }
}

void uvp__stack_pool_close(uvp__stack_pool_t *pool) {
  uvp__stack_pool_resize(pool, pool->size);
  pool->closed = 1;
  pool->max_idle = 0;
  pool->max_idle_bytes = 0;
}
