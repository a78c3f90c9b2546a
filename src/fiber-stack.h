/* Fiber stacks: mmap'd, guarded, pooled.  Private to src/ (and its tests).
 *
 * A stack is one anonymous mapping:
 *
 *   low                                                              high
 *   [ guard page, PROT_NONE ][ usable stack ............ ][ uvp__stack_t ]
 *                             ^ base                      ^ base + size
 *
 * A fiber that runs off the bottom faults on the guard page at once instead
 * of writing over whatever lies below.  The descriptor sits above the
 * usable part, in the page the fiber's first frames use anyway, so a stack
 * needs no other memory: getting one from the pool and putting it back
 * neither allocates nor makes a system call (unless the pool releases
 * pages, see keep_warm).  Only touched pages cost resident memory.
 *
 * A pool belongs to one owner (a context, on its loop thread): nothing in
 * it is locked.  Stacks come back most recently used first, because their
 * pages are the ones still resident and warm: on the VMs this was measured
 * on, the first touch of a page costs 1.3-1.6 us, at times 12-16 us
 * (bench/first-touch, bench/fiber-switch).
 *
 * Tools: under ASan an idle stack is poisoned, and under memcheck it is
 * no-access, so a fiber frame used after its stack went back to the pool is
 * reported; a stack handed out is addressable again (its old contents
 * undefined).  Telling the tools that a stack is a stack is the switch
 * layer's business (fiber-switch.h), so stacks from elsewhere work too. */
#ifndef UVP_FIBER_STACK_H
#define UVP_FIBER_STACK_H

#include <stddef.h>

/* Bytes of a stack when the pool is not told otherwise.  256 KiB of
 * address space costs nothing resident until touched, and it leaves room
 * for what a libuv callback may call into: glibc lets itself alloca up to
 * 64 KiB on the current stack (getaddrinfo, the NSS modules, printf of
 * wide values) believing it is on a thread stack of several MiB, and ASan
 * builds triple frame sizes.  64 KiB would overflow on the first of those;
 * libdex's 128 KiB leaves 64 KiB beside such a call.  The price of the
 * larger size is address space only (30 000 fibers: 7.4 GiB of it, of the
 * 128 TiB a process has). */
#define UVP__STACK_DEFAULT_SIZE (256u * 1024u)
/* What a pool keeps when stacks come back and nobody waits for them: up
 * to 64 stacks and 16 MiB of mappings (both caps apply) as they are ... */
#define UVP__STACK_DEFAULT_MAX_IDLE 64u
#define UVP__STACK_DEFAULT_MAX_IDLE_BYTES (16u * 1024u * 1024u)
/* ... and beyond those, spares: as many more as were ever in use at once,
 * up to 1024, each with its pages below the top 16 KiB given back to the
 * kernel.  A server whose load holds a thousand fibers would otherwise map
 * and unmap a stack per fiber (7.6 us each; the TCP fan-out of
 * bench/run-fiber ran 1.30x slower than its promise client so, 1.02x with
 * the spares); a spare costs address space and at most 16 KiB resident. */
#define UVP__STACK_DEFAULT_MAX_SPARE 1024u
#define UVP__STACK_SPARE_WARM (16u * 1024u)
/* keep_warm's value for "never release pages". */
#define UVP__STACK_KEEP_ALL ((size_t)-1)

typedef struct uvp__stack_s uvp__stack_t;
struct uvp__stack_s {
  char *base;  /* lowest usable byte, just above the guard page */
  size_t size; /* usable bytes: [base, base + size); 16-byte aligned top */
  /* Private to fiber-stack.c. */
  uvp__stack_t *next; /* in the pool's idle list */
  size_t map_len;     /* the whole mapping, guard page included */
  int spare;          /* idle as a spare: its lower pages were released */
};

typedef struct uvp__stack_pool_s {
  /* Settings: set by _init, may be changed by the owner at any time. */
  size_t size;           /* bytes of a stack asked for with size 0 */
  size_t max_idle;       /* idle stacks kept at most ... */
  size_t max_idle_bytes; /* ... and mapped bytes of them at most */
  size_t max_spare;      /* spares beyond those at most (see above) */
  /* Bytes at the top of a returned stack whose pages stay resident; the
   * pages below are given back to the kernel (MADV_DONTNEED), so that a
   * fiber which once recursed deeply does not pin that memory in the pool.
   * UVP__STACK_KEEP_ALL (the default) releases nothing: the caps already
   * bound what idle stacks can pin, and releasing costs every fiber.  A
   * fiber's life on a pooled stack (get, run, exit, put; bench/fiber-switch)
   * takes 23 ns keeping the pages, 420 ns releasing below a 16 KiB window
   * when the fiber used 1 KiB (the madvise call alone) and 19.6 us when it
   * used 64 KiB (the pages faulted in again); mapping a stack per fiber
   * costs 7.6 us and 32 us. */
  size_t keep_warm;
  /* Counters, read-only for the owner. */
  size_t idle_count;  /* stacks in the pool */
  size_t idle_bytes;  /* their mappings' bytes, guard pages included */
  size_t live_count;  /* stacks handed out and not yet put back */
  size_t live_bytes;  /* their mappings' bytes */
  size_t peak_live;   /* the most stacks handed out at once */
  size_t spare_count; /* how many of the idle stacks are spares */
  /* Private. */
  uvp__stack_t *idle; /* most recently put back first */
  size_t page;
} uvp__stack_pool_t;

/* A pool of stacks of `size` bytes (0: the default).  A stack's size is
 * rounded up to whole pages, and its descriptor takes the top 48 bytes of
 * them (uvp__stack_t.size says what is left).  Cannot fail. */
void uvp__stack_pool_init(uvp__stack_pool_t *pool, size_t size);

/* Unmaps the idle stacks.  Stacks still handed out stay valid and may
 * still be put back (they are then unmapped, the caps being 0 after
 * this), so the owner may close the pool before its last fiber ends. */
void uvp__stack_pool_close(uvp__stack_pool_t *pool);

/* Unmaps idle stacks until at most `keep` remain (the coldest go first). */
void uvp__stack_pool_trim(uvp__stack_pool_t *pool, size_t keep);

/* A stack of `size` bytes (0: the pool's size; rounded up as above), from
 * the pool if one of that size is idle, else freshly mapped.  Returns 0, or
 * UV_ENOMEM if it cannot be mapped: the address space, RLIMIT_AS or the
 * kernel's limit on mappings (vm.max_map_count, a guarded stack takes two
 * of its 65530 by default) is exhausted, or size is absurd.  The caller
 * owns *out until it puts it back. */
int uvp__stack_get(uvp__stack_pool_t *pool, size_t size, uvp__stack_t **out);

/* Gives a stack from uvp__stack_get back: it is kept for the next get if
 * it has the pool's size and the caps allow (as a spare if only the spares'
 * cap does), else unmapped.  No fiber may be running or suspended on it. */
void uvp__stack_put(uvp__stack_pool_t *pool, uvp__stack_t *stack);

#endif
