/* Fiber stacks (see fiber-stack.h). */
#include "fiber-stack.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include <uv.h>

#if defined(__SANITIZE_ADDRESS__)
#define UVP__STACK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UVP__STACK_ASAN 1
#endif
#endif
#if defined(UVP__STACK_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define UVP__STACK_VALGRIND 1
#endif
#endif

#if !defined(MAP_STACK)
#define MAP_STACK 0
#endif
#if !defined(MAP_NORESERVE)
#define MAP_NORESERVE 0
#endif

/* The descriptor's share of the top page, keeping the top 16-byte aligned. */
#define DESC_SIZE ((sizeof(uvp__stack_t) + 15) & ~(size_t)15)

void uvp__stack_pool_init(uvp__stack_pool_t *pool, size_t size) {
  long page = sysconf(_SC_PAGESIZE);
  pool->page = page > 0 ? (size_t)page : 4096;
  pool->size = size != 0 ? size : UVP__STACK_DEFAULT_SIZE;
  pool->max_idle = UVP__STACK_DEFAULT_MAX_IDLE;
  pool->max_idle_bytes = UVP__STACK_DEFAULT_MAX_IDLE_BYTES;
  pool->max_spare = UVP__STACK_DEFAULT_MAX_SPARE;
  pool->peak_live = 0;
  pool->spare_count = 0;
  pool->keep_warm = UVP__STACK_KEEP_ALL;
  pool->idle_count = 0;
  pool->idle_bytes = 0;
  pool->live_count = 0;
  pool->live_bytes = 0;
  pool->idle = NULL;
}

/* The mapping for a stack of `size` bytes: a guard page, then `size`
 * rounded up to whole pages.  0 if that does not fit in a size_t. */
static size_t map_len_for(const uvp__stack_pool_t *pool, size_t size) {
  size_t page = pool->page;
  if (size > SIZE_MAX / 2)
    return 0;
  if (size < DESC_SIZE + 256)
    size = DESC_SIZE + 256;
  return page + ((size + page - 1) & ~(page - 1));
}

static void unmap(uvp__stack_t *stack) {
#if defined(UVP__STACK_ASAN)
  /* ASan keeps the shadow of unmapped memory: whatever is mapped here next
   * must not inherit the poison of an idle stack or a dead fiber's frames. */
  ASAN_UNPOISON_MEMORY_REGION(stack->base, stack->size);
#endif
  (void)munmap(stack->base - (stack->map_len - stack->size - DESC_SIZE),
               stack->map_len);
}

/* The usable part of an idle stack is out of bounds for the tools. */
static void mark_idle(uvp__stack_t *stack) {
#if defined(UVP__STACK_ASAN)
  ASAN_POISON_MEMORY_REGION(stack->base, stack->size);
#endif
#if defined(UVP__STACK_VALGRIND)
  (void)VALGRIND_MAKE_MEM_NOACCESS(stack->base, stack->size);
#endif
  (void)stack;
}

/* Usable again, contents undefined. */
static void mark_live(uvp__stack_t *stack) {
#if defined(UVP__STACK_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(stack->base, stack->size);
#endif
#if defined(UVP__STACK_VALGRIND)
  (void)VALGRIND_MAKE_MEM_UNDEFINED(stack->base, stack->size);
#endif
  (void)stack;
}

int uvp__stack_get(uvp__stack_pool_t *pool, size_t size, uvp__stack_t **out) {
  size_t map_len = map_len_for(pool, size != 0 ? size : pool->size);
  size_t page = pool->page;
  uvp__stack_t *stack = pool->idle;
  char *map;

  if (map_len == 0)
    return UV_ENOMEM;
  if (stack != NULL && stack->map_len == map_len) {
    pool->idle = stack->next;
    pool->idle_count--;
    pool->idle_bytes -= map_len;
    pool->spare_count -= stack->spare != 0;
  } else {
    map = mmap(NULL, map_len, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED)
      return UV_ENOMEM;
    /* Splitting the mapping takes a second entry of the process's map
     * table: this is the call that fails when the table is full. */
    if (mprotect(map, page, PROT_NONE) != 0) {
      (void)munmap(map, map_len);
      return UV_ENOMEM;
    }
    stack = (uvp__stack_t *)(map + map_len - DESC_SIZE);
    stack->base = map + page;
    stack->size = map_len - page - DESC_SIZE;
    stack->map_len = map_len;
  }
  stack->next = NULL;
  if (++pool->live_count > pool->peak_live)
    pool->peak_live = pool->live_count;
  pool->live_bytes += map_len;
  mark_live(stack);
  *out = stack;
  return 0;
}

/* Gives the pages of stack below its top `keep` bytes back to the kernel:
 * whole pages only, so the descriptor's page and the window's stay. */
static void release_below(uvp__stack_pool_t *pool, uvp__stack_t *stack,
                          size_t keep) {
  if (keep >= stack->size)
    return;
  uintptr_t end = ((uintptr_t)stack->base + stack->size - keep) &
                  ~(uintptr_t)(pool->page - 1);
  if (end > (uintptr_t)stack->base)
    (void)madvise(stack->base, end - (uintptr_t)stack->base, MADV_DONTNEED);
}

void uvp__stack_put(uvp__stack_pool_t *pool, uvp__stack_t *stack) {
  size_t map_len = stack->map_len;
  size_t spares =
      pool->peak_live < pool->max_spare ? pool->peak_live : pool->max_spare;
  pool->live_count--;
  pool->live_bytes -= map_len;
  if (map_len != map_len_for(pool, pool->size)) {
    unmap(stack);
    return;
  }
  /* Spares all have the pool's size, as this one. */
  size_t warm = pool->idle_count - pool->spare_count;
  size_t warm_bytes = pool->idle_bytes - pool->spare_count * map_len;
  if (warm < pool->max_idle && warm_bytes + map_len <= pool->max_idle_bytes) {
    stack->spare = 0;
    release_below(pool, stack, pool->keep_warm);
  } else if (pool->spare_count < spares) {
    stack->spare = 1;
    pool->spare_count++;
    release_below(pool, stack, UVP__STACK_SPARE_WARM);
  } else {
    unmap(stack);
    return;
  }
  mark_idle(stack);
  stack->next = pool->idle;
  pool->idle = stack;
  pool->idle_count++;
  pool->idle_bytes += map_len;
}

void uvp__stack_pool_trim(uvp__stack_pool_t *pool, size_t keep) {
  uvp__stack_t **link = &pool->idle;
  size_t n = 0;
  while (*link != NULL && n < keep) {
    link = &(*link)->next;
    n++;
  }
  while (*link != NULL) {
    uvp__stack_t *stack = *link;
    *link = stack->next;
    pool->idle_count--;
    pool->idle_bytes -= stack->map_len;
    pool->spare_count -= stack->spare != 0;
    unmap(stack);
  }
}

void uvp__stack_pool_close(uvp__stack_pool_t *pool) {
  uvp__stack_pool_trim(pool, 0);
  pool->max_idle = 0;
  pool->max_idle_bytes = 0;
  pool->max_spare = 0;
}
