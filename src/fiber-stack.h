/* Fiber stacks: carved from large mappings, guarded, pooled.  Private to
 * src/ (and its tests).
 *
 * Stacks are slots of a few large anonymous mappings ("chunks"), not a
 * mapping each: a process may hold a million of them while its table of
 * mappings (vm.max_map_count, 65 530 entries by default) holds a few
 * hundred chunks.  A chunk is mapped when the pool runs out of slots, each
 * one twice the size of the last, up to 64 MiB (a stack of its own size is
 * a chunk of one slot):
 *
 *   low                                                             high
 *   [ lead page ][ slot 0 ][ slot 1 ] ...
 *   slot: [ guard page ][ usable stack ...... ][ descriptor ][ stagger ][ 16 ]
 *                        ^ base               ^ base + size
 *
 * The descriptor (uvp__stack_t) sits just above the stack, in its top page,
 * where the fiber's record and first frames are: it costs no page of its
 * own.  The stagger is (slot index mod 8) * 64 bytes for a slot handed out
 * fresh, (mod 32) for a warm one handed out again: the tops of consecutive
 * stacks, where fibers keep their records and first frames, fall in
 * different cache sets, and a fiber parked a few calls deep on a fresh
 * stack still fits the one page it faults in (docs/internals/fibers.md 13.8). A
 * slot has a page more than the stack's size for it.
 *
 * Below each stack one of three guards (a guard marker, a PROT_NONE
 * page, or a canary the switch layer checks), chosen per slot when it is
 * first carved: fiber-stack.c says how each works and when it is used.
 *
 * What must outlive a slot's pages (its state, guard and stagger) is a
 * byte in its chunk's record on the heap; the descriptor goes with the
 * pages and is written afresh whenever the slot is handed out, so a
 * stack's descriptor is valid while the stack is handed out or warm, not
 * after it is released.  Getting a stack from the pool and putting it
 * back neither allocates nor makes a system call while the pool holds
 * idle stacks with pages ("warm"); beyond its caps, a returned stack is
 * released: the slot stays in the chunk, to be handed out before a fresh
 * one is carved, and its pages are given back to the kernel
 * (MADV_DONTNEED; the guard stays) with UVP__STACK_RELEASE_BATCH others in
 * one system call, or with its chunk, or not at all if it is handed out
 * first.  A chunk whose slots are all released or never carved is
 * unmapped.
 *
 * A pool belongs to one owner (a context, on its loop thread): nothing in
 * it is locked.  Warm stacks come back most recently used first, because
 * their pages are the ones still resident and warm: on the VMs this was
 * measured on, the first touch of a page costs 1.3-1.6 us, at times
 * 12-16 us (bench/first-touch, bench/fiber-switch).
 *
 * Tools: under ASan an idle stack is poisoned, and under memcheck it is
 * no-access, so a fiber frame used after its stack went back to the pool is
 * reported; a stack handed out is addressable again (its old contents
 * undefined).  Telling the tools that a stack is a stack is the switch
 * layer's business (fiber-switch.h), so stacks from elsewhere work too. */
#ifndef UVP_FIBER_STACK_H
#define UVP_FIBER_STACK_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of a stack when the pool is not told otherwise.  256 KiB of
 * address space costs nothing resident until touched, and it leaves room
 * for what a libuv callback may call into: glibc lets itself alloca up to
 * 64 KiB on the current stack (getaddrinfo, the NSS modules, printf of
 * wide values) believing it is on a thread stack of several MiB, and ASan
 * builds triple frame sizes.  64 KiB would overflow on the first of those;
 * libdex's 128 KiB leaves 64 KiB beside such a call.  The price of the
 * larger size is address space (a million fibers: 254 GiB of it, of the
 * 128 TiB a process has) and page tables (a 4 KiB table maps 2 MiB, so
 * eight such stacks: 512 bytes per suspended fiber).
 * A 32-bit process has 4 GiB of address space at most (3 GiB on a 32-bit
 * kernel): 256 KiB stacks fill it at 15 800 fibers (i386 on x86-64), so
 * there a stack is 128 KiB, libdex's size, whose frames of 4-byte words
 * hold about what 256 KiB hold on 64 bits: 30 800 fibers fit (spawned until
 * UV_ENOMEM; .ci/i386 parks 20 000 with bench/million). */
#if UINTPTR_MAX > UINT32_MAX
#define UVP__STACK_DEFAULT_SIZE (256u * 1024u)
#else
#define UVP__STACK_DEFAULT_SIZE (128u * 1024u)
#endif
/* What a pool keeps warm (pages and all) when stacks come back: up to 1024
 * stacks and 256 MiB of their address space (both caps apply).  A program
 * that runs a thousand fibers at a time then spawns, runs and ends each
 * without a system call (bench/fiber-spawn); a warm stack costs the pages
 * its last fiber touched (a fiber that awaits a few calls deep: one or two
 * pages, so a thousand warm stacks hold 4-8 MiB).  Beyond the caps a
 * stack's pages are given back as it returns (one madvise). */
#define UVP__STACK_DEFAULT_MAX_IDLE 1024u
#define UVP__STACK_DEFAULT_MAX_IDLE_BYTES (256u * 1024u * 1024u)
/* keep_warm's value for "never release pages of a warm stack". */
#define UVP__STACK_KEEP_ALL ((size_t)-1)
/* Stacks released (warm beyond the caps) whose pages are given back
 * together, in one system call (process_madvise): not one each. */
#define UVP__STACK_RELEASE_BATCH 256u
/* The largest chunk mapped, and the slots of the first. */
#define UVP__STACK_CHUNK_MAX (64u * 1024u * 1024u)
#define UVP__STACK_CHUNK_FIRST 8u

/* How a pool guards the stacks it carves. */
enum {
  UVP__GUARDS_AUTO = 0,     /* markers if the kernel has them, else FALLBACK */
  UVP__GUARDS_FALLBACK = 1, /* page guards while the budget lasts, then
                               canaries: what a kernel without markers gets */
  UVP__GUARDS_CANARY = 2    /* canaries only (tests) */
};
/* A stack's guard. */
enum { UVP__GUARD_MARKER = 1, UVP__GUARD_PAGE = 2, UVP__GUARD_CANARY = 3 };

typedef struct uvp__stack_chunk_s uvp__stack_chunk_t;
typedef struct uvp__stack_s uvp__stack_t;
struct uvp__stack_s {
  char *base;  /* lowest usable byte, just above the guard page */
  size_t size; /* usable bytes: [base, base + size); 16-byte aligned top */
  /* NULL, or the canary below the stack (guard UVP__GUARD_CANARY): 16
   * bytes, uvp__stack_canary_intact(canary) while nothing overwrote them */
  uint64_t *canary;
  /* Who runs on it, for the overflow reports: set by the user of the
   * stack (NULL: nobody said). */
  const char *file;
  int line;
  unsigned char guard; /* UVP__GUARD_* */
  /* Private to fiber-stack.c. */
  uint32_t dirty_at;         /* its index in dirty_slots, while it is there */
  uint32_t slot;             /* its index in its chunk */
  uvp__stack_t *prev, *next; /* the warm list */
  uvp__stack_chunk_t *chunk;
};

typedef struct uvp__stack_pool_s {
  /* Settings: set by _init, may be changed by the owner at any time
   * (guards: before the first get). */
  size_t size;           /* bytes of a stack asked for with size 0 */
  size_t max_idle;       /* warm stacks kept at most ... */
  size_t max_idle_bytes; /* ... and of their size (`size`) at most */
  /* Bytes at the top of a returned warm stack whose pages stay resident;
   * the pages below are given back to the kernel (MADV_DONTNEED), so that
   * a fiber which once recursed deeply does not pin that memory in the
   * pool.  UVP__STACK_KEEP_ALL (the default) releases nothing: the caps
   * already bound what warm stacks can pin, and releasing costs every
   * fiber a system call. */
  size_t keep_warm;
  int guards; /* UVP__GUARDS_* */
  /* Counters, read-only for the owner. */
  size_t idle_count;      /* idle stacks: warm and released */
  size_t idle_bytes;      /* their slots' bytes, guard pages included */
  size_t warm_count;      /* how many of them are warm ... */
  size_t warm_bytes;      /* ... and their slots' bytes */
  size_t live_count;      /* stacks handed out and not yet put back */
  size_t live_bytes;      /* their slots' bytes */
  size_t peak_live;       /* the most stacks handed out at once */
  size_t chunks;          /* chunks mapped */
  size_t guard_counts[4]; /* stacks carved, by guard (UVP__GUARD_*) */
  /* Private. */
  uvp__stack_t *warm, *warm_tail; /* most recently put back first */
  uvp__stack_chunk_t *released;   /* chunks with released slots */
  /* Released stacks whose pages are still to be given back, all at once
   * when there are UVP__STACK_RELEASE_BATCH of them. */
  size_t dirty;
  uvp__stack_t *dirty_slots[UVP__STACK_RELEASE_BATCH];
  uvp__stack_chunk_t *chunk_list, *carving;
  size_t next_slots; /* slots of the next chunk */
  size_t page;
  int closed;
} uvp__stack_pool_t;

/* A pool of stacks of `size` bytes (0: the default).  A stack's size is
 * rounded up to whole pages, less 16 bytes at the top (uvp__stack_t.size
 * says what is left).  Cannot fail. */
void uvp__stack_pool_init(uvp__stack_pool_t *pool, size_t size);

/* Gives back every idle stack, and makes the pool keep none from now on.
 * Stacks still handed out stay valid and may still be put back (their
 * chunk is unmapped with the last of them), so the owner may close the
 * pool before its last fiber ends. */
void uvp__stack_pool_close(uvp__stack_pool_t *pool);

/* Keeps the `keep` most recently returned warm stacks; the pages of every
 * other idle stack are given back now, and chunks left without a stack in
 * use or warm are unmapped. */
void uvp__stack_pool_trim(uvp__stack_pool_t *pool, size_t keep);

/* Sets the pool's stack size (0: the default) and forgets its idle stacks:
 * those of the old size can no longer be handed out. */
void uvp__stack_pool_resize(uvp__stack_pool_t *pool, size_t size);

/* A stack of `size` bytes (0: the pool's size; rounded up as above), from
 * the pool if one of that size is idle, else carved afresh.  Returns 0, or
 * UV_ENOMEM if no chunk can be mapped (the address space, RLIMIT_AS, the
 * kernel's limit on mappings) or its record allocated, or size is absurd.
 * The caller owns *out until it puts it back; its file and line are NULL
 * and 0. */
int uvp__stack_get(uvp__stack_pool_t *pool, size_t size, uvp__stack_t **out);

/* Gives a stack from uvp__stack_get back: kept warm if it has the pool's
 * size and the caps allow, else released (its pages are given back with
 * the next batch; uvp__stack_pool_trim gives them back at once).  No fiber
 * may be running or suspended on it.  Its descriptor (*stack) stays valid
 * while it is warm, and goes with its pages once released. */
void uvp__stack_put(uvp__stack_pool_t *pool, uvp__stack_t *stack);

/* The value each of the two words of a canary at `where` holds while its
 * stack is intact (two: a frame's padding may skip one word, not two). */
static inline uint64_t uvp__stack_canary_value(const uint64_t *where) {
  return 0x7576705f73746b21u ^ (uint64_t)(uintptr_t)where; /* "uvp_stk!" */
}
static inline int uvp__stack_canary_intact(const uint64_t *where) {
  return where[0] == uvp__stack_canary_value(where) &&
         where[1] == uvp__stack_canary_value(where + 1);
}

/* Whether the kernel installs guard markers, found out once per process
 * (the probe maps two pages and unmaps them).  The environment variable
 * UVP_FIBER_GUARD=fallback answers no, UVP_FIBER_GUARD=canary also takes
 * the page guards away (pools of mode AUTO then only use canaries), for
 * tests and for comparing. */
int uvp__stack_markers(void);

/* For tests: the guards of pools of mode AUTO from now on (UVP__GUARDS_*:
 * FALLBACK or CANARY as if the kernel had no markers, AUTO as probed). */
void uvp__stack_default_guards(int mode);

/* What the SIGSEGV and SIGBUS handler asks to learn which stack the thread
 * is running on (NULL: none of ours).  Called in a signal handler: it may
 * only read memory.  The handler is installed with the first stack carved
 * with a marker or page guard; it reports a fault inside the guard page of
 * the running stack on stderr, naming its file and line, and in every case
 * hands the fault on to the handler that was installed before it (ASan's,
 * the program's, or the default action: the process dies of the signal,
 * SIGSEGV on Linux, SIGBUS on macOS). */
void uvp__stack_set_running_hook(const uvp__stack_t *(*running)(void));

/* Reports an overrun found by a canary check (fiber-switch.c) on stderr,
 * naming stack->file and ->line, and aborts. */
#if defined(__GNUC__)
__attribute__((noreturn, cold))
#endif
void uvp__stack_overrun(const uvp__stack_t *stack, const void *sp);

#endif
