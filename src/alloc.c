/* The allocator hook, the slab pools, prefaulting and the kept blocks
 * (see alloc.h; the figures behind the tuning: docs/internals/memory.md). */
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#if !defined(MADV_POPULATE_WRITE)
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL */
#endif
#endif

#include "alloc.h"
#include "registry.h"

typedef struct {
  uvp_malloc_func malloc_f;
  uvp_realloc_func realloc_f;
  uvp_calloc_func calloc_f;
  uvp_free_func free_f;
} uvp__allocator_t;

static uvp__allocator_t allocator = {malloc, realloc, calloc, free};

int uvp_replace_allocator(uvp_malloc_func malloc_func,
                          uvp_realloc_func realloc_func,
                          uvp_calloc_func calloc_func,
                          uvp_free_func free_func) {
  if (malloc_func == NULL || realloc_func == NULL || calloc_func == NULL ||
      free_func == NULL)
    return UV_EINVAL;
  /* Memory from one allocator must never reach another one's free. */
  if (uvp__registry_busy())
    return UV_EBUSY;
  allocator.malloc_f = malloc_func;
  allocator.realloc_f = realloc_func;
  allocator.calloc_f = calloc_func;
  allocator.free_f = free_func;
  return 0;
}

void *uvp__malloc(size_t size) { return allocator.malloc_f(size); }
void *uvp__calloc(size_t count, size_t size) {
  return allocator.calloc_f(count, size);
}
void *uvp__realloc(void *ptr, size_t size) {
  return allocator.realloc_f(ptr, size);
}
void uvp__free(void *ptr) {
  if (ptr != NULL)
    allocator.free_f(ptr);
}

/* ---- prefaulting --------------------------------------------------------- */

/* Fresh memory is faulted in ahead of use, a window at a time, with one
 * madvise(MADV_POPULATE_WRITE) instead of a page fault per 4 KiB: on the
 * VMs this was measured on, a fault costs several us, and writing 64 MiB
 * takes 60 ms when populated in 16 KiB windows first, against 180 ms
 * with a fault per page.  The window bounds what is resident ahead of use:
 * memory is only ever populated where it is about to be written.  Whole
 * pages that hold any of [start, end) are populated: they are mapped, since
 * our block is in them, and populating changes no byte.  A failure (an
 * older kernel, another OS) just leaves the faults to happen. */
#define UVP__FILL_WINDOW (16 * 1024)

static void populate(void *start, void *end) {
#if defined(__linux__)
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t a = (uintptr_t)start & ~(page - 1);
  uintptr_t b = ((uintptr_t)end + page - 1) & ~(page - 1);
  if (b > a)
    (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);
#else
  (void)start;
  (void)end;
#endif
}

/* ---- pools --------------------------------------------------------------- */

/* Slabs start small (a context with a few promises stays small) and double
 * up to 256 KiB, so the per-slab headers cost ~0.04 bytes per object at
 * scale, while one object still alive after a burst keeps at most 256 KiB
 * of its pool from uvp_ctx_trim (2 MiB slabs kept 75 % of a burst's 21 MB
 * for 10 survivors: test_trim_gives_a_burst_back).  Each request is 32
 * bytes short of a power of two: with malloc's own header the block then
 * fills the power of two exactly, and the large ones map to whole pages
 * with nothing wasted. */
#define UVP__CHUNK_MIN (64 * 1024)
#define UVP__CHUNK_MAX (256 * 1024)
#define UVP__MALLOC_OVERHEAD 32
#define UVP__ALIGN 64
_Static_assert(UVP__ALIGN % UVP__SLOT_ALIGN == 0,
               "chunks start on a slot boundary");

struct uvp__chunk_s {
  uvp__chunk_t *next;
  char *slots;
  size_t used;
  size_t cap;
  char *filled;      /* populated up to here (see populate) */
  size_t bytes;      /* what it counts in the pool's `bytes` */
  size_t free_slots; /* on the free list (counted by uvp__pool_trim) */
};

void uvp__pool_init(uvp__pool_t *pool, size_t slot_size) {
  /* Slots hold pointers (the free list's link first). */
  UVP__CHECK(slot_size % sizeof(void *) == 0);
  memset(pool, 0, sizeof(*pool));
  pool->slot_size = slot_size;
}

void uvp__pool_destroy(uvp__pool_t *pool) {
  /* The chunks go back to malloc, which hides freed memory its own way:
   * the free slots in them are shown to the tools again first. */
  for (uvp__chunk_t *c = pool->chunks; c != NULL; c = c->next)
    uvp__slot_alloc(pool, c->slots, pool->slot_size * c->cap);
  uvp__chunk_t *c = pool->chunks;
  while (c != NULL) {
    uvp__chunk_t *next = c->next;
    uvp__free(c);
    c = next;
  }
  memset(pool, 0, sizeof(*pool));
}

/* Record in the chunk being carved how far uvp__pool_get has carved it
 * inline. */
static void sync_carved(uvp__pool_t *pool) {
  uvp__chunk_t *c = pool->carve;
  if (c != NULL && pool->bump != NULL)
    c->used = (size_t)(pool->bump - c->slots) / pool->slot_size;
}

/* Let uvp__pool_get carve c inline up to what is populated. */
static void bump_in(uvp__pool_t *pool, uvp__chunk_t *c) {
  char *end = c->slots + pool->slot_size * c->cap;
  char *limit = c->filled < end ? c->filled : end;
  size_t n = (size_t)(limit - c->slots) / pool->slot_size;
  pool->carve = c;
  pool->bump = c->slots + pool->slot_size * c->used;
  pool->bump_end = c->slots + pool->slot_size * n;
}

/* The next slot in address order: from the chunk being carved, else the
 * next one with room, else a new chunk. */
static void *carve(uvp__pool_t *pool) {
  sync_carved(pool);
  uvp__chunk_t *c = pool->carve;
  while (c != NULL && c->used == c->cap)
    c = c->next;
  if (c == NULL) {
    size_t bytes = pool->bytes == 0 ? UVP__CHUNK_MIN : pool->bytes;
    if (bytes > UVP__CHUNK_MAX)
      bytes = UVP__CHUNK_MAX;
    bytes -= UVP__MALLOC_OVERHEAD;
    /* One allocation holds the header and the aligned slots. */
    c = uvp__malloc(bytes);
    if (c == NULL)
      return NULL;
    uintptr_t first = (uintptr_t)(c + 1);
    first = (first + UVP__ALIGN - 1) & ~(uintptr_t)(UVP__ALIGN - 1);
    c->slots = (char *)first;
    /* As many as fit however malloc aligned the block, so that a slab's
     * capacity never depends on where it landed. */
    c->cap = (bytes - sizeof(*c) - (UVP__ALIGN - 1)) / pool->slot_size;
    c->used = 0;
    c->filled = c->slots;
    c->bytes = bytes + UVP__MALLOC_OVERHEAD;
    c->next = NULL;
    if (pool->last != NULL)
      pool->last->next = c;
    else
      pool->chunks = c;
    pool->last = c;
    pool->bytes += bytes + UVP__MALLOC_OVERHEAD;
    pool->allocs++;
  }
  char *slot = c->slots + pool->slot_size * c->used++;
  if (slot + pool->slot_size > c->filled) {
    char *end = c->slots + pool->slot_size * c->cap;
    if ((size_t)(end - slot) > UVP__FILL_WINDOW)
      end = slot + UVP__FILL_WINDOW;
    populate(c->filled, end);
    c->filled = end;
  }
  bump_in(pool, c);
  return slot;
}

void *uvp__pool_get_slow(uvp__pool_t *pool) {
  void *slot = carve(pool);
  if (slot != NULL) {
    pool->live++;
    uvp__slot_alloc(pool, slot, pool->slot_size);
  }
  return slot;
}

/* Every slot is free: see the comment on uvp__pool_t.  A chunk's pages
 * stay populated, so carving them again costs no fault. */
void uvp__pool_rewind(uvp__pool_t *pool) {
  pool->free_list = NULL;
  for (uvp__chunk_t *c = pool->chunks; c != NULL; c = c->next)
    c->used = 0;
  if (pool->chunks != NULL)
    bump_in(pool, pool->chunks);
}

/* The memory this process may have, in bytes: the machine's, or less
 * when its control group sets a limit (as a container's does); SIZE_MAX
 * if unknown.  libuv returns 0 for what it cannot tell, and cgroup v1's
 * "no limit" as a number larger than any machine's memory. */
static size_t memory_bytes(void) {
  uint64_t total = uv_get_total_memory();
  uint64_t limit = uv_get_constrained_memory();
  if (total == 0 || (limit != 0 && limit < total))
    total = limit;
  size_t bytes = total == 0 || total > SIZE_MAX ? SIZE_MAX : (size_t)total;
#if SIZE_MAX <= UINT32_MAX
  /* A 32-bit process has 4 GiB of address space at most, some of it its
   * program's and its libraries': more than half of it is not to be had,
   * and carving until it runs out would touch gigabytes first. */
  if (bytes > SIZE_MAX / 2)
    bytes = SIZE_MAX / 2;
#endif
  return bytes;
}

int uvp__pool_reserve(uvp__pool_t *pool, size_t slots,
                      void (*init)(void *slot)) {
  /* Every slot reserved is touched, and with overcommit malloc does not
   * fail first: a count beyond the memory the process may have would end
   * with the OOM killer instead of UV_ENOMEM. */
  if (slots > memory_bytes() / pool->slot_size)
    return UV_ENOMEM;
  /* Carve the slots now and touch every page, so the first burst of
   * traffic meets neither malloc nor page faults: slots go on the free
   * list in address order. */
  void *head = NULL, **tail = &head;
  int rc = 0;
  for (size_t i = 0; i < slots; i++) {
    void *slot = carve(pool);
    if (slot == NULL) {
      rc = UV_ENOMEM;
      break;
    }
    uvp__slot_alloc(pool, slot, pool->slot_size);
    memset(slot, 0, pool->slot_size);
    if (init != NULL)
      init(slot);
    *tail = slot;
    tail = (void **)slot;
  }
  *tail = pool->free_list;
  /* Free slots are hidden from the tools (see alloc.h). */
  for (void *slot = head; slot != pool->free_list;) {
    void *next = *(void **)slot;
    uvp__slot_free(pool, slot, pool->slot_size);
    slot = next;
  }
  pool->free_list = head;
  return rc;
}

void uvp__pool_each(uvp__pool_t *pool, bool (*fn)(void *slot, void *arg),
                    void *arg) {
  sync_carved(pool);
  for (uvp__chunk_t *c = pool->chunks; c != NULL; c = c->next) {
    for (size_t i = 0; i < c->used; i++) {
      char *slot = c->slots + pool->slot_size * i;
      /* fn reads a free slot's mark too; it is hidden again after. */
#if defined(UVP__ASAN)
      bool hidden = __asan_address_is_poisoned(slot);
      ASAN_UNPOISON_MEMORY_REGION(slot, pool->slot_size);
#elif defined(UVP__MEMCHECK)
      bool hidden = true;
      VALGRIND_MAKE_MEM_DEFINED(slot, pool->slot_size);
#else
      bool hidden = false;
#endif
      if (!fn(slot, arg) && hidden)
        uvp__slot_free(pool, slot, pool->slot_size);
    }
  }
}

/* ---- trimming ------------------------------------------------------------ */

static int by_address(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)(*(uvp__chunk_t *const *)a)->slots;
  uintptr_t y = (uintptr_t)(*(uvp__chunk_t *const *)b)->slots;
  return x < y ? -1 : x > y;
}

/* The chunk of sorted[0..n) whose slots hold `slot`. */
static size_t chunk_index(uvp__chunk_t **sorted, size_t n, const char *slot) {
  size_t lo = 0, hi = n;
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (slot >= sorted[mid]->slots)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

/* A chunk none of whose carved slots is in use (all on the free list). */
static bool unused(const uvp__chunk_t *c) { return c->free_slots == c->used; }

/* Rare (a program's uvp_ctx_trim after a burst): it counts each chunk's
 * free slots on the free list, a walk over every free slot. */
size_t uvp__pool_trim(uvp__pool_t *pool) {
  sync_carved(pool);
  size_t n = 0;
  for (uvp__chunk_t *c = pool->chunks; c != NULL; c = c->next) {
    c->free_slots = 0;
    n++;
  }
  if (n == 0)
    return 0;
  /* The chunks by address, to find a slot's. */
  uvp__chunk_t **sorted = uvp__malloc(n * sizeof(*sorted));
  if (sorted == NULL)
    return 0; /* nothing given back; nothing changed */
  size_t i = 0;
  for (uvp__chunk_t *c = pool->chunks; c != NULL; c = c->next)
    sorted[i++] = c;
  qsort(sorted, n, sizeof(*sorted), by_address);
  for (void *slot = pool->free_list; slot != NULL;) {
    uvp__slot_peek(slot);
    void *next = *(void **)slot;
    uvp__slot_free(pool, slot, pool->slot_size);
    sorted[chunk_index(sorted, n, slot)]->free_slots++;
    slot = next;
  }
  /* The free list without the slots of chunks that go, in its order.  The
   * links of the slots kept are shown to the tools until relinked. */
  void *head = NULL, **tail = &head;
  for (void *slot = pool->free_list; slot != NULL;) {
    uvp__slot_peek(slot);
    void *next = *(void **)slot;
    if (!unused(sorted[chunk_index(sorted, n, slot)])) {
      *tail = slot;
      tail = (void **)slot;
    } else {
      uvp__slot_free(pool, slot, pool->slot_size);
    }
    slot = next;
  }
  *tail = NULL;
  for (void *slot = head; slot != NULL;) {
    void *next = *(void **)slot;
    uvp__slot_free(pool, slot, pool->slot_size);
    slot = next;
  }
  pool->free_list = head;
  uvp__free(sorted);
  /* The chunk list, in creation order, without them. */
  size_t given = 0;
  uvp__chunk_t **at = &pool->chunks, *last = NULL;
  while (*at != NULL) {
    uvp__chunk_t *c = *at;
    if (!unused(c)) {
      last = c;
      at = &c->next;
      continue;
    }
    *at = c->next;
    /* Shown to the tools again: malloc hides freed memory its own way. */
    uvp__slot_alloc(pool, c->slots, pool->slot_size * c->cap);
    if (pool->carve == c) {
      pool->carve = NULL;
      pool->bump = pool->bump_end = NULL;
    }
    given += c->bytes;
    uvp__free(c);
  }
  pool->last = last;
  pool->bytes -= given;
  if (pool->carve == NULL && pool->chunks != NULL)
    bump_in(pool, pool->chunks);
  return given;
}

/* ---- kept blocks -------------------------------------------------------- */

/* Below this, malloc's own free lists recycle the block without faults. */
#define UVP__BLOCK_KEEP (256 * 1024)

void *uvp__block_get(uvp__blocks_t *b, size_t *size) {
  if (*size >= UVP__BLOCK_KEEP && b->spare != NULL && b->spare_size >= *size) {
    void *block = b->spare;
    *size = b->spare_size;
    b->spare = NULL;
    b->spare_size = 0;
    return block;
  }
  void *block = uvp__malloc(*size);
  /* Written whole at once.  Only a large block is a fresh mapping worth
   * a system call; malloc recycles small ones already faulted in. */
  if (block != NULL && *size >= UVP__BLOCK_KEEP)
    populate(block, (char *)block + *size);
  return block;
}

void uvp__block_put(uvp__blocks_t *b, void *block, size_t size, bool keep) {
  if (keep && size >= UVP__BLOCK_KEEP && size > b->spare_size) {
    uvp__free(b->spare);
    b->spare = block;
    b->spare_size = size;
    return;
  }
  uvp__free(block);
}

size_t uvp__blocks_trim(uvp__blocks_t *b) {
  size_t bytes = b->spare_size;
  uvp__blocks_destroy(b);
  return bytes;
}

void uvp__blocks_destroy(uvp__blocks_t *b) {
  uvp__free(b->spare);
  b->spare = NULL;
  b->spare_size = 0;
}
