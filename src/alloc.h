/* Private to src/: the allocator hook, the slab pools promises, reactions
 * and operations come from, and large blocks kept for reuse.  How the
 * pools are tuned, and the figures behind it: docs/internals/memory.md. */
#ifndef UVP_ALLOC_H
#define UVP_ALLOC_H

#include "base.h"

void *uvp__malloc(size_t size);
void *uvp__calloc(size_t count, size_t size);
void *uvp__realloc(void *ptr, size_t size);
void uvp__free(void *ptr);

/* Free slots are invisible to the tools that find use-after-free bugs:
 * under ASan they are poisoned, and in builds with valgrind's headers and
 * assertions on, memcheck sees them as no-access memory, so a double
 * release or a use of a released promise is reported where it happens.
 * (Not as a memcheck memory pool: its slots would then be blocks of their
 * own to the leak check, and a program exiting with a live context would
 * see its slabs reported lost.)  Both compile to nothing otherwise. */
#if defined(__SANITIZE_ADDRESS__)
#define UVP__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UVP__ASAN 1
#endif
#endif
#if defined(UVP__ASAN)
#include <sanitizer/asan_interface.h>
#endif
#if defined(UVP_HAVE_VALGRIND) && !defined(NDEBUG) && !defined(UVP__ASAN)
#define UVP__MEMCHECK 1
#include <valgrind/memcheck.h>
#endif

static inline void uvp__slot_free(void *pool, void *slot, size_t size) {
  (void)pool, (void)slot, (void)size;
#if defined(UVP__ASAN)
  ASAN_POISON_MEMORY_REGION(slot, size);
#elif defined(UVP__MEMCHECK)
  VALGRIND_MAKE_MEM_NOACCESS(slot, size);
#endif
}
/* Before reading a free slot's link. */
static inline void uvp__slot_peek(void *slot) {
  (void)slot;
#if defined(UVP__ASAN)
  ASAN_UNPOISON_MEMORY_REGION(slot, sizeof(void *));
#elif defined(UVP__MEMCHECK)
  VALGRIND_MAKE_MEM_DEFINED(slot, sizeof(void *));
#endif
}
static inline void uvp__slot_alloc(void *pool, void *slot, size_t size) {
  (void)pool, (void)slot, (void)size;
#if defined(UVP__ASAN)
  ASAN_UNPOISON_MEMORY_REGION(slot, size);
#elif defined(UVP__MEMCHECK)
  VALGRIND_MAKE_MEM_UNDEFINED(slot, size);
#endif
}

/* Fixed-size slots carved from large chunks and recycled through a free
 * list, so that steady traffic never reaches malloc.  Chunks are 64-byte
 * aligned, so a slot is aligned to the largest power of two (up to 64)
 * that divides its size: UVP__SLOT_ALIGN for a size that is a multiple of
 * it.  Chunks go back to the allocator when the pool is trimmed
 * (uvp__pool_trim: those with no slot in use) or destroyed.  When its last slot
 * comes back, a pool rewinds: the free list is dropped and the chunks are
 * carved again from their start, so the objects of the next burst are
 * neighbours in memory again. */
#define UVP__SLOT_ALIGN 16
typedef struct uvp__chunk_s uvp__chunk_t;
typedef struct uvp__pool_s {
  void *free_list;
  char *bump;           /* the next slot to carve, inline ... */
  char *bump_end;       /* ... while below this (in populated memory) */
  size_t live;          /* slots handed out and not yet put back */
  uvp__chunk_t *carve;  /* the chunk `bump` is in (NULL: none yet) */
  uvp__chunk_t *chunks; /* oldest first */
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
/* Give the allocator back every chunk none of whose slots is in use: their
 * free slots leave the free list.  Returns the bytes given back. */
size_t uvp__pool_trim(uvp__pool_t *pool);
/* Bytes the pool holds beyond its slots in use. */
static inline size_t uvp__pool_idle_bytes(const uvp__pool_t *pool) {
  return pool->bytes - pool->live * pool->slot_size;
}
/* Visit every slot carved since the last rewind, free ones included: fn
 * reads the slot's own mark and returns whether it is in use (a free slot
 * is hidden from the tools again afterwards). */
void uvp__pool_each(uvp__pool_t *pool, bool (*fn)(void *slot, void *arg),
                    void *arg);

/* A slot from the free list or the chunk being carved, or NULL where
 * uvp__pool_get would need its slow path (a call): the entry points' fast
 * paths then go their general way, and need no stack frame. */
static UVP__ALWAYS_INLINE void *uvp__pool_try(uvp__pool_t *pool) {
  void *slot = pool->free_list;
  if (UVP__LIKELY(slot != NULL)) {
    uvp__slot_peek(slot);
    void *next = *(void **)slot;
    pool->free_list = next;
    pool->live++;
    UVP__PREFETCH_W(
        next); /* the next pop's link: see docs/internals/memory.md */
    uvp__slot_alloc(pool, slot, pool->slot_size);
    return slot;
  }
  if (UVP__LIKELY(pool->bump < pool->bump_end)) {
    slot = pool->bump;
    pool->bump += pool->slot_size;
    pool->live++;
    uvp__slot_alloc(pool, slot, pool->slot_size);
    /* An integer: the address may lie past the chunk, where a pointer
     * could not point (a prefetch there is dropped). */
    UVP__PREFETCH_W((const void *)((uintptr_t)slot + 256));
    return slot;
  }
  return NULL;
}

static inline void *uvp__pool_get(uvp__pool_t *pool) {
  void *slot = uvp__pool_try(pool);
  if (UVP__LIKELY(slot != NULL))
    return slot;
  return uvp__pool_get_slow(pool);
}

static inline void uvp__pool_put(uvp__pool_t *pool, void *slot) {
  *(void **)slot = pool->free_list;
  pool->free_list = slot;
  uvp__slot_free(pool, slot, pool->slot_size);
  if (UVP__UNLIKELY(--pool->live == 0))
    uvp__pool_rewind(pool);
}

/* Give back the slot just taken, when what it was for cannot go on: as
 * uvp__pool_put, but a pool left empty does not rewind (a call the fast
 * paths that take two slots would otherwise need a stack frame for). */
static UVP__ALWAYS_INLINE void uvp__pool_unget(uvp__pool_t *pool, void *slot) {
  *(void **)slot = pool->free_list;
  pool->free_list = slot;
  uvp__slot_free(pool, slot, pool->slot_size);
  pool->live--;
}

/* Large blocks (a combinator's or a map's state over many inputs): malloc
 * hands blocks this big out as fresh mappings, and touching them again
 * costs a page fault per 4 KiB every time, so the largest one freed is kept
 * for the next.  *size is the size wanted on entry, the block's capacity on
 * return (pass it back to _put).  `keep` false: free it whatever its size
 * (the owner is going away). */
typedef struct uvp__blocks_s {
  void *spare;
  size_t spare_size;
} uvp__blocks_t;
void *uvp__block_get(uvp__blocks_t *b, size_t *size);
void uvp__block_put(uvp__blocks_t *b, void *block, size_t size, bool keep);
void uvp__blocks_destroy(uvp__blocks_t *b);
/* Give the kept block back; returns its bytes. */
size_t uvp__blocks_trim(uvp__blocks_t *b);

#endif
