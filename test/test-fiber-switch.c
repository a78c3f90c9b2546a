/* The layer under uvp's fibers (src/fiber-stack.h, src/fiber-switch.h),
 * tested through its private headers since it has no public API yet:
 * values passed both ways between the thread and fibers and from fiber to
 * fiber; the callee-saved registers and the floating-point control state
 * kept per context; 30 000 fibers suspended at once, each on its own
 * guarded stack; the pool's reuse, caps, counters and page release; stacks
 * that cannot be mapped (an absurd size, the kernel's limit on mappings)
 * failing with UV_ENOMEM; a fiber that runs off its stack dying on the guard
 * page (in a child process); recursion to 3/4 of a stack; fibers on two
 * threads at once.  Suites `fiber` and `threads` (TSan). */
#include <fenv.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "../src/fiber-stack.h"
#include "../src/fiber-switch.h"
#include "child.h"
#include "proc-maps.h"
#include "skip.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#if defined(UVP__FIBER_ASAN)
#include <sanitizer/asan_interface.h>
#endif
#if !defined(RUNNING_ON_VALGRIND)
#define RUNNING_ON_VALGRIND 0
#endif

#define NOINLINE __attribute__((noinline))
#if defined(__clang__) || defined(__SANITIZE_ADDRESS__)
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define NO_ASAN
#endif

/* A fiber and its stack.  `owner` and `tag` are for its entry to use. */
typedef struct fib_s {
  uvp__fiber_ctx_t ctx;
  uvp__stack_t *stack;
  void *owner;
  uintptr_t tag;
} fib_t;

static void fib_start(uvp__stack_pool_t *pool, fib_t *f, size_t size,
                      uvp__fiber_entry_t entry) {
  assert_int_equal(uvp__stack_get(pool, size, &f->stack), 0);
  uvp__fiber_init(&f->ctx, f->stack->base, f->stack->size, entry, f);
  uvp__fiber_watch(&f->ctx, f->stack);
}

static void fib_end(uvp__stack_pool_t *pool, fib_t *f) {
  uvp__fiber_destroy(&f->ctx);
  uvp__stack_put(pool, f->stack);
}

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* Resident pages of the whole pages holding [addr, addr + len). */
static size_t resident_pages(const void *addr, size_t len) {
  size_t page = page_size();
  uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(page - 1);
  size_t n = ((uintptr_t)addr + len - a + page - 1) / page, r = 0;
  unsigned char *vec = malloc(n);
  assert_non_null(vec);
  assert_int_equal(mincore((void *)a, n * page, (void *)vec), 0);
  for (size_t i = 0; i < n; i++)
    r += vec[i] & 1;
  free(vec);
  return r;
}

/* ---- values both ways ---------------------------------------------------- */

typedef struct {
  uvp__fiber_ctx_t main;
  fib_t fib;
  int steps;
  void *first_msg;
} pp_t;

static void pp_entry(void *arg, void *msg) {
  fib_t *f = arg;
  pp_t *p = f->owner;
  uintptr_t v = (uintptr_t)msg;
  p->first_msg = msg;
  while (v != 0) {
    p->steps++;
    v = (uintptr_t)uvp__fiber_switch(&f->ctx, &p->main, (void *)(v * 2 + 1));
  }
  uvp__fiber_exit(&f->ctx, &p->main, (void *)(uintptr_t)0xdead);
}

static void test_ping_pong(void **state) {
  (void)state;
  uvp__stack_pool_t pool;
  pp_t p = {.steps = 0};
  uvp__stack_pool_init(&pool, 0);
  uvp__fiber_thread_init(&p.main);
  p.fib.owner = &p;
  fib_start(&pool, &p.fib, 0, pp_entry);
  assert_int_equal(p.steps, 0); /* nothing runs before the first switch */
  for (uintptr_t i = 1; i <= 1000; i++) {
    uintptr_t r = (uintptr_t)uvp__fiber_switch(&p.main, &p.fib.ctx, (void *)i);
    assert_int_equal(r, i * 2 + 1);
    assert_int_equal(p.steps, (int)i);
  }
  assert_ptr_equal(p.first_msg, (void *)1);
  assert_ptr_equal(uvp__fiber_switch(&p.main, &p.fib.ctx, NULL),
                   (void *)(uintptr_t)0xdead);
  assert_int_equal(p.steps, 1000);
  fib_end(&pool, &p.fib);
  uvp__fiber_destroy(&p.main);
  uvp__stack_pool_close(&pool);
  assert_int_equal(pool.live_count, 0);
  assert_int_equal(pool.idle_count, 0);
}

/* Three fibers in a row: the thread hands a value to the first, each adds
 * its number and hands it straight to the next, the last to the thread. */
#define RING 3
#define RING_STOP ((void *)(uintptr_t)-1)

typedef struct {
  uvp__fiber_ctx_t main;
  fib_t fib[RING];
  int runs[RING];
} ring_t;

static void ring_entry(void *arg, void *msg) {
  fib_t *f = arg;
  ring_t *r = f->owner;
  uvp__fiber_ctx_t *next =
      f->tag + 1 < RING ? &r->fib[f->tag + 1].ctx : &r->main;
  while (msg != RING_STOP) {
    r->runs[f->tag]++;
    msg = uvp__fiber_switch(&f->ctx, next,
                            (void *)((uintptr_t)msg * 10 + f->tag + 1));
  }
  uvp__fiber_exit(&f->ctx, &r->main, (void *)f);
}

static void test_fiber_to_fiber(void **state) {
  (void)state;
  uvp__stack_pool_t pool;
  ring_t r = {.runs = {0}};
  uvp__stack_pool_init(&pool, 0);
  uvp__fiber_thread_init(&r.main);
  for (int i = 0; i < RING; i++) {
    r.fib[i].owner = &r;
    r.fib[i].tag = (uintptr_t)i;
    fib_start(&pool, &r.fib[i], 0, ring_entry);
  }
  for (uintptr_t lap = 1; lap <= 100; lap++) {
    uintptr_t v =
        (uintptr_t)uvp__fiber_switch(&r.main, &r.fib[0].ctx, (void *)lap);
    assert_int_equal(v, lap * 1000 + 123);
  }
  for (int i = 0; i < RING; i++) {
    assert_int_equal(r.runs[i], 100);
    assert_ptr_equal(uvp__fiber_switch(&r.main, &r.fib[i].ctx, RING_STOP),
                     &r.fib[i]);
    fib_end(&pool, &r.fib[i]);
  }
  assert_int_equal(pool.idle_count, RING);
  uvp__stack_pool_close(&pool);
}

/* ---- what a switch keeps ----------------------------------------------- */

/* Overwrites every callee-saved register (the compiler saves and restores
 * them around this in the fiber's own frame), then switches: if the switch
 * kept one of them wrong, the other side sees this garbage. */
typedef struct {
  uvp__fiber_ctx_t main;
  fib_t fib;
} regs_t;

static void regs_entry(void *arg, void *msg) {
  fib_t *f = arg;
  regs_t *r = f->owner;
  while (msg != NULL) {
#if defined(__x86_64__)
    __asm__ __volatile__("movq $-1, %%rbx\n\tmovq $-1, %%r12\n\t"
                         "movq $-1, %%r13\n\tmovq $-1, %%r14\n\t"
                         "movq $-1, %%r15\n\t"
                         :
                         :
                         : "rbx", "r12", "r13", "r14", "r15");
#elif defined(__aarch64__)
    __asm__ __volatile__(
        "mov x19, #-1\n\tmov x20, #-1\n\tmov x21, #-1\n\tmov x22, #-1\n\t"
        "mov x23, #-1\n\tmov x24, #-1\n\tmov x25, #-1\n\tmov x26, #-1\n\t"
        "mov x27, #-1\n\tmov x28, #-1\n\t"
        "movi d8, #0xff\n\tmovi d9, #0xff\n\tmovi d10, #0xff\n\t"
        "movi d11, #0xff\n\tmovi d12, #0xff\n\tmovi d13, #0xff\n\t"
        "movi d14, #0xff\n\tmovi d15, #0xff\n\t"
        :
        :
        : "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28",
          "d8", "d9", "d10", "d11", "d12", "d13", "d14", "d15");
#elif defined(__i386__)
    /* Not ebp: a frame pointer at -O0. */
    __asm__ __volatile__("movl $-1, %%ebx\n\tmovl $-1, %%esi\n\t"
                         "movl $-1, %%edi\n\t"
                         :
                         :
                         : "ebx", "esi", "edi");
#elif defined(__arm__) && defined(__ARM_FP)
    /* Not r7 and r11: a frame pointer at -O0 (Thumb, ARM). */
    __asm__ __volatile__(
        "mov r4, #-1\n\tmov r5, #-1\n\tmov r6, #-1\n\tmov r8, #-1\n\t"
        "mov r9, #-1\n\tmov r10, #-1\n\t"
        "vmov.f64 d8, #-2.0\n\tvmov.f64 d9, #-2.0\n\tvmov.f64 d10, #-2.0\n\t"
        "vmov.f64 d11, #-2.0\n\tvmov.f64 d12, #-2.0\n\t"
        "vmov.f64 d13, #-2.0\n\tvmov.f64 d14, #-2.0\n\t"
        "vmov.f64 d15, #-2.0\n\t"
        :
        :
        : "r4", "r5", "r6", "r8", "r9", "r10", "d8", "d9", "d10", "d11", "d12",
          "d13", "d14", "d15");
#elif defined(__powerpc64__)
    /* Not r31: a frame pointer at -O0. */
    __asm__ __volatile__(
        "li 14,-1\n\tli 15,-1\n\tli 16,-1\n\tli 17,-1\n\tli 18,-1\n\t"
        "li 19,-1\n\tli 20,-1\n\tli 21,-1\n\tli 22,-1\n\tli 23,-1\n\t"
        "li 24,-1\n\tli 25,-1\n\tli 26,-1\n\tli 27,-1\n\tli 28,-1\n\t"
        "li 29,-1\n\tli 30,-1\n\t"
        "fneg 14,14\n\tfneg 15,15\n\tfneg 16,16\n\tfneg 17,17\n\t"
        "fneg 18,18\n\tfneg 19,19\n\tfneg 20,20\n\tfneg 21,21\n\t"
        "fneg 22,22\n\tfneg 23,23\n\tfneg 24,24\n\tfneg 25,25\n\t"
        "fneg 26,26\n\tfneg 27,27\n\tfneg 28,28\n\tfneg 29,29\n\t"
        "fneg 30,30\n\tfneg 31,31\n\t"
        :
        :
        : "r14", "r15", "r16", "r17", "r18", "r19", "r20", "r21", "r22", "r23",
          "r24", "r25", "r26", "r27", "r28", "r29", "r30", "fr14", "fr15",
          "fr16", "fr17", "fr18", "fr19", "fr20", "fr21", "fr22", "fr23",
          "fr24", "fr25", "fr26", "fr27", "fr28", "fr29", "fr30", "fr31");
#elif defined(__s390x__)
    /* Not r11 (a frame pointer at -O0) and r12 (the GOT pointer). */
    __asm__ __volatile__(
        "lghi %%r6,-1\n\tlghi %%r7,-1\n\tlghi %%r8,-1\n\tlghi %%r9,-1\n\t"
        "lghi %%r10,-1\n\tlghi %%r13,-1\n\t"
        "lzdr %%f8\n\tlzdr %%f9\n\tlzdr %%f10\n\tlzdr %%f11\n\t"
        "lzdr %%f12\n\tlzdr %%f13\n\tlzdr %%f14\n\tlzdr %%f15\n\t"
        :
        :
        : "r6", "r7", "r8", "r9", "r10", "r13", "f8", "f9", "f10", "f11", "f12",
          "f13", "f14", "f15");
#endif
    msg = uvp__fiber_switch(&f->ctx, &r->main, msg);
  }
  uvp__fiber_exit(&f->ctx, &r->main, NULL);
}

/* Enough values live across the switch to fill the callee-saved registers
 * of the machines, integer and floating-point; `sw` NULL computes the
 * same without switching. */
static NOINLINE double live_across(uint64_t seed, regs_t *sw) {
  uint64_t a = seed * 3, b = seed ^ 0x5555, c = seed + 7, d = seed * seed,
           e = seed >> 1, g = ~seed, h = seed * 11, k = seed ^ (seed << 7),
           m = seed + 99, n = seed * 13;
  double x = (double)seed * 0.5, y = (double)seed / 3.0, z = x * y, w = x + y,
         u = x - y, v = z / (w + 1.0), s = w * 1.25, t = u - 4.0;
  if (sw != NULL)
    assert_ptr_equal(uvp__fiber_switch(&sw->main, &sw->fib.ctx, sw), sw);
  return (double)(a + b + c + d + e + g + h + k + m + n) + x + y + z + w + u +
         v + s + t + (double)(a * b ^ c * d ^ e * g ^ h * k ^ m * n);
}

static void test_callee_saved(void **state) {
  (void)state;
  uvp__stack_pool_t pool;
  regs_t r;
  uvp__stack_pool_init(&pool, 0);
  uvp__fiber_thread_init(&r.main);
  r.fib.owner = &r;
  fib_start(&pool, &r.fib, 0, regs_entry);
  for (uint64_t seed = 1; seed < 50; seed++)
    assert_true(live_across(seed, &r) == live_across(seed, NULL));
  assert_null(uvp__fiber_switch(&r.main, &r.fib.ctx, NULL));
  fib_end(&pool, &r.fib);
  uvp__stack_pool_close(&pool);
}

/* A fiber that keeps its modes (uvp__fiber_keep_fp) starts with those of
 * whoever made it; then each side keeps its own, in the x87 control word,
 * the MXCSR (x86-64) and the FPCR (aarch64): fegetround reads the first,
 * SSE division obeys the second. */
typedef struct {
  uvp__fiber_ctx_t main;
  fib_t fib;
  int seen_first, seen_resumed;
  double third;
} fp_t;

/* A division the compiler can neither fold at its own rounding mode nor
 * move across a call to fesetround (clang sinks a / b past it). */
static volatile double one = 1.0, three = 3.0;

static NOINLINE double divide(void) { return one / three; }

static void fp_entry(void *arg, void *msg) {
  fib_t *f = arg;
  fp_t *p = f->owner;
  p->seen_first = fegetround();
  fesetround(FE_DOWNWARD);
  (void)uvp__fiber_switch(&f->ctx, &p->main, msg);
  p->seen_resumed = fegetround();
  p->third = divide();
  fesetround(FE_TONEAREST);
  uvp__fiber_exit(&f->ctx, &p->main, NULL);
}

static void test_fp_control_per_context(void **state) {
  (void)state;
  uvp__stack_pool_t pool;
  fp_t p = {.seen_first = -1, .seen_resumed = -1};
  double up, down;
  /* valgrind runs SSE arithmetic to nearest whatever the MXCSR says (it
   * does keep the register): the control words are checked there, not the
   * divisions. */
  int sse_rounds = !RUNNING_ON_VALGRIND;
  uvp__stack_pool_init(&pool, 0);
  uvp__fiber_thread_init(&p.main);
  p.fib.owner = &p;
  assert_int_equal(fesetround(FE_DOWNWARD), 0);
  down = divide();
  assert_int_equal(fesetround(FE_UPWARD), 0);
  up = divide();
  assert_true(up > down || !sse_rounds);
  fib_start(&pool, &p.fib, 0, fp_entry);
  uvp__fiber_keep_fp(&p.fib.ctx);
  (void)uvp__fiber_switch(&p.main, &p.fib.ctx, NULL);
  assert_int_equal(p.seen_first, FE_UPWARD);
  /* The fiber went downward; the thread did not. */
  assert_int_equal(fegetround(), FE_UPWARD);
  assert_true(divide() == up);
  (void)uvp__fiber_switch(&p.main, &p.fib.ctx, NULL);
  assert_int_equal(p.seen_resumed, FE_DOWNWARD);
  assert_true(p.third == down);
  assert_int_equal(fegetround(), FE_UPWARD);
  fesetround(FE_TONEAREST);
  fib_end(&pool, &p.fib);
  uvp__stack_pool_close(&pool);
}

/* A fiber that does not keep its modes shares the thread's where the
 * switch keeps none (x86-64): what either side sets, the other sees.
 * Elsewhere each keeps its own all the same. */
static void test_fp_control_shared(void **state) {
  (void)state;
  uvp__stack_pool_t pool;
  fp_t p = {.seen_first = -1, .seen_resumed = -1};
  uvp__stack_pool_init(&pool, 0);
  uvp__fiber_thread_init(&p.main);
  p.fib.owner = &p;
  assert_int_equal(fesetround(FE_UPWARD), 0);
  fib_start(&pool, &p.fib, 0, fp_entry);
  (void)uvp__fiber_switch(&p.main, &p.fib.ctx, NULL);
  assert_int_equal(p.seen_first, FE_UPWARD);
#if defined(UVP__FIBER_SHARED_FP)
  assert_int_equal(fegetround(), FE_DOWNWARD); /* the fiber's */
  assert_int_equal(fesetround(FE_TOWARDZERO), 0);
  (void)uvp__fiber_switch(&p.main, &p.fib.ctx, NULL);
  assert_int_equal(p.seen_resumed, FE_TOWARDZERO); /* the thread's */
  assert_int_equal(fegetround(), FE_TONEAREST);    /* the fiber's last */
#else
  assert_int_equal(fegetround(), FE_UPWARD);
  (void)uvp__fiber_switch(&p.main, &p.fib.ctx, NULL);
  assert_int_equal(p.seen_resumed, FE_DOWNWARD);
  assert_int_equal(fegetround(), FE_UPWARD);
#endif
  fesetround(FE_TONEAREST);
  fib_end(&pool, &p.fib);
  uvp__stack_pool_close(&pool);
}

/* ---- many at once -------------------------------------------------------- */

typedef struct {
  uvp__fiber_ctx_t main;
  size_t verified;
} many_t;

static void many_entry(void *arg, void *msg) {
  fib_t *f = arg;
  many_t *m = f->owner;
  volatile uintptr_t mark[8];
  size_t ok = 1;
  (void)msg;
  for (int i = 0; i < 8; i++)
    mark[i] = f->tag * 8 + (uintptr_t)i;
  (void)uvp__fiber_switch(&f->ctx, &m->main, f);
  for (int i = 0; i < 8; i++)
    ok &= mark[i] == f->tag * 8 + (uintptr_t)i;
  m->verified += ok;
  uvp__fiber_exit(&f->ctx, &m->main, f);
}

/* Stacks are slots of a few chunks, not a mapping each: 30 000 suspended
 * fibers add a few dozen lines to the process's maps where they once added
 * 60 000 (without guard markers, page guards add two each while their
 * budget lasts).  valgrind keeps its registered stacks in a list it walks
 * at every switch, TSan maps memory per fiber, and ASan with
 * detect_stack_use_after_return a fake stack of several MiB: fewer there. */
static size_t many_count(void) {
#if defined(UVP__FIBER_TSAN)
  return 5000;
#else
#if defined(UVP__FIBER_ASAN)
  if (__asan_get_current_fake_stack() != NULL)
    return 500;
#endif
  /* ILP32: what a 32-bit address space is promised to hold (about 30 000
   * default stacks fit in all: fiber-stack.h). */
  return RUNNING_ON_VALGRIND ? 10000 : sizeof(void *) > 4 ? 30000 : 20000;
#endif
}

static void test_many_suspended(void **state) {
  (void)state;
  uvp__stack_pool_t pool;
  many_t m = {.verified = 0};
  size_t n = many_count();
  fib_t *fibs = calloc(n, sizeof(*fibs));
  assert_non_null(fibs);
  uvp__stack_pool_init(&pool, 0);
  uvp__fiber_thread_init(&m.main);
  size_t maps0 = proc_map_count();
  for (size_t i = 0; i < n; i++) {
    fibs[i].owner = &m;
    fibs[i].tag = i;
    fib_start(&pool, &fibs[i], 0, many_entry);
    assert_ptr_equal(uvp__fiber_switch(&m.main, &fibs[i].ctx, NULL), &fibs[i]);
  }
  assert_int_equal(pool.live_count, n);
  assert_int_equal(pool.idle_count, 0);
  size_t maps1 = proc_map_count();
  print_message(
      "%zu suspended fibers: %zu chunks, %zu more lines in the maps "
      "(guards: %zu markers, %zu pages, %zu canaries)\n",
      n, pool.chunks, maps1 - maps0, pool.guard_counts[UVP__GUARD_MARKER],
      pool.guard_counts[UVP__GUARD_PAGE], pool.guard_counts[UVP__GUARD_CANARY]);
  size_t tools = 0;
#if defined(UVP__FIBER_TSAN)
  tools = 2 * n; /* TSan maps memory of its own per fiber */
#endif
  assert_true(maps1 <= maps0 + 2 * pool.guard_counts[UVP__GUARD_PAGE] +
                           2 * pool.chunks + tools + 64);
  assert_true(pool.chunks < 100 + n / 200);
  /* Resumed in the reverse order, to switch across the address space. */
  for (size_t i = n; i-- > 0;) {
    assert_ptr_equal(uvp__fiber_switch(&m.main, &fibs[i].ctx, NULL), &fibs[i]);
    fib_end(&pool, &fibs[i]);
  }
  assert_int_equal(m.verified, n);
  assert_int_equal(pool.live_count, 0);
  assert_int_equal(pool.live_bytes, 0);
  /* Kept warm: the last 1024 to come back; the others gave their pages
   * back, and the chunks holding none of the warm ones are unmapped. */
  size_t warm =
      n < UVP__STACK_DEFAULT_MAX_IDLE ? n : UVP__STACK_DEFAULT_MAX_IDLE;
  assert_int_equal(pool.peak_live, n);
  assert_int_equal(pool.warm_count, warm);
  assert_true(pool.idle_count >= warm);
  assert_true(pool.chunks <= 20);
  uvp__stack_pool_close(&pool);
  assert_int_equal(pool.idle_count, 0);
  assert_int_equal(pool.idle_bytes, 0);
  assert_int_equal(pool.chunks, 0);
  assert_true(proc_map_count() <= maps0 + tools + 64);
  free(fibs);
}

/* ---- the pool ------------------------------------------------------------ */

static void test_pool_reuse_and_caps(void **state) {
  (void)state;
  uvp__stack_pool_t pool;
  uvp__stack_t *a, *b, *c, *big;
  size_t page = page_size(), bytes;
  uvp__stack_pool_init(&pool, 0);

  assert_int_equal(uvp__stack_get(&pool, 0, &a), 0);
  /* At least the default size, less 16 bytes at the top; at most a page
   * more (the tops are staggered by up to 1984 bytes). */
  assert_true(a->size + 16 >= UVP__STACK_DEFAULT_SIZE);
  assert_true(a->size <= UVP__STACK_DEFAULT_SIZE + page);
  assert_int_equal((uintptr_t)a->base % page, 0);
  assert_int_equal((uintptr_t)(a->base + a->size) % 16, 0);
  assert_int_equal(pool.live_count, 1);
  bytes = pool.live_bytes;
  assert_true(bytes > a->size); /* the guard page is counted too */
  /* The guard is there: the page below faults, the stack does not. */
  assert_true(proc_guarded(a->base - 1));
  assert_false(proc_guarded(a->base));
  assert_null(a->canary);
  memset(a->base, 0xa5, a->size); /* every usable byte is writable */

  uvp__stack_put(&pool, a);
  assert_int_equal(pool.live_count, 0);
  assert_int_equal(pool.live_bytes, 0);
  assert_int_equal(pool.idle_count, 1);
  assert_int_equal(pool.warm_count, 1);
  assert_int_equal(pool.idle_bytes, bytes);
  assert_int_equal(uvp__stack_get(&pool, 0, &b), 0);
  assert_ptr_equal(b, a);   /* the same stack back, its pages with it */
  if (!RUNNING_ON_VALGRIND) /* for memcheck a stack handed out is undefined */
    assert_int_equal((unsigned char)b->base[0], 0xa5);
  assert_int_equal(pool.idle_count, 0);
  assert_int_equal(pool.idle_bytes, 0);

  /* Most recently returned first: its pages are the warm ones.  Both from
   * one chunk. */
  assert_int_equal(uvp__stack_get(&pool, 0, &c), 0);
  assert_ptr_not_equal(c, b);
  assert_int_equal(pool.chunks, 1);
  uvp__stack_put(&pool, b);
  uvp__stack_put(&pool, c);
  assert_int_equal(pool.idle_count, 2);
  assert_int_equal(pool.idle_bytes, 2 * bytes);
  assert_int_equal(uvp__stack_get(&pool, 0, &a), 0);
  assert_ptr_equal(a, c);
  assert_int_equal(uvp__stack_get(&pool, 0, &a), 0);
  assert_ptr_equal(a, b);

  /* A size of its own: a chunk of its own, unmapped when it comes back. */
  assert_int_equal(uvp__stack_get(&pool, 1024 * 1024, &big), 0);
  assert_true(big->size + 16 >= 1024 * 1024);
  assert_int_equal(pool.live_count, 3);
  assert_int_equal(pool.chunks, 2);
  assert_true(pool.live_bytes > 2 * bytes + 1024 * 1024);
  assert_true(proc_guarded(big->base - 1));
  char *gone = big->base; /* the descriptor goes with its chunk */
  uvp__stack_put(&pool, big);
  assert_int_equal(pool.idle_count, 0);
  assert_int_equal(pool.chunks, 1);
  assert_false(proc_mapped(gone));

  /* The caps: one warm stack by count; the other gives its pages back and
   * stays in its chunk, handed out before a fresh slot is carved ... */
  memset(b->base, 0x5a, b->size);
  memset(c->base, 0x5a, c->size);
  /* A released stack's descriptor is in its top page, and goes with its
   * pages: what the test reads of b afterwards is kept here. */
  char *b_base = b->base;
  size_t b_size = b->size;
  pool.max_idle = 1;
  uvp__stack_put(&pool, b);
  uvp__stack_put(&pool, c);
  assert_int_equal(pool.idle_count, 2);
  assert_int_equal(pool.warm_count, 1);
  /* A demoted stack's pages go with the next batch (or a trim), not one
   * system call each as it comes back. */
  assert_int_equal(pool.dirty, 1);
  assert_true(resident_pages(b_base, b_size) >= b_size / page);
  uvp__stack_pool_trim(&pool, 1);
  assert_int_equal(pool.dirty, 0);
  assert_int_equal(pool.warm_count, 1);
  assert_int_equal(resident_pages(b_base, b_size), 0);
  assert_true(resident_pages(c->base, c->size) >= c->size / page);
  assert_true(proc_guarded(b_base - 1)); /* the guard stays */
  assert_int_equal(uvp__stack_get(&pool, 0, &a), 0);
  assert_ptr_equal(a, c);
  assert_int_equal(uvp__stack_get(&pool, 0, &a), 0);
  assert_ptr_equal(a, b); /* its descriptor written again, in place */
  assert_ptr_equal(b->base, b_base);
  assert_int_equal(b->size, b_size);
  if (!RUNNING_ON_VALGRIND)
    assert_int_equal(b->base[0], 0); /* fresh pages */
  /* A released stack handed out before the flush keeps its pages: no
   * system call either way. */
  memset(b->base, 0x5a, b->size);
  uvp__stack_put(&pool, b);
  uvp__stack_put(&pool, a == b ? c : a);
  assert_int_equal(pool.dirty, 1);
  assert_int_equal(uvp__stack_get(&pool, 0, &a), 0);
  assert_int_equal(uvp__stack_get(&pool, 0, &b), 0);
  assert_int_equal(pool.dirty, 0);
  assert_true(resident_pages(b->base, b->size) >= b->size / page);
  /* ... or by bytes. */
  pool.max_idle = 10;
  pool.max_idle_bytes = a->size + a->size / 2;
  b_base = b->base;
  uvp__stack_put(&pool, b);
  uvp__stack_put(&pool, c);
  assert_int_equal(pool.idle_count, 2);
  assert_int_equal(pool.warm_count, 1);
  uvp__stack_pool_trim(&pool, 1);
  assert_int_equal(resident_pages(b_base, b_size), 0);
  /* trim keeps the warmest. */
  pool.max_idle_bytes = 4 * bytes;
  assert_int_equal(uvp__stack_get(&pool, 0, &a), 0);
  assert_int_equal(uvp__stack_get(&pool, 0, &b), 0);
  uvp__stack_put(&pool, a);
  uvp__stack_put(&pool, b);
  assert_int_equal(pool.warm_count, 2);
  uvp__stack_pool_trim(&pool, 1);
  assert_int_equal(pool.warm_count, 1);
  assert_int_equal(pool.idle_count, 2);
  assert_ptr_equal(pool.warm, b);
  /* Nothing in use or warm: the chunk goes. */
  gone = b->base;
  uvp__stack_pool_trim(&pool, 0);
  assert_int_equal(pool.idle_count, 0);
  assert_int_equal(pool.chunks, 0);
  assert_false(proc_mapped(gone));

  /* Closing with a stack out: its chunk is unmapped when it comes back. */
  assert_int_equal(uvp__stack_get(&pool, 0, &a), 0);
  assert_int_equal(uvp__stack_get(&pool, 0, &b), 0);
  uvp__stack_put(&pool, b);
  uvp__stack_pool_close(&pool);
  assert_int_equal(pool.idle_count, 0);
  assert_int_equal(pool.chunks, 1);
  assert_true(proc_mapped(a->base));
  gone = a->base;
  uvp__stack_put(&pool, a);
  assert_int_equal(pool.live_count, 0);
  assert_int_equal(pool.idle_count, 0);
  assert_int_equal(pool.chunks, 0);
  assert_false(proc_mapped(gone));
}

/* Chunks grow: each twice the slots of the last, up to 64 MiB; stacks
 * released beyond the caps are handed out again before new slots are
 * carved, and a chunk with none of its stacks in use or warm is unmapped. */
static void test_pool_chunks(void **state) {
  (void)state;
  enum { N = 200 };
  uvp__stack_pool_t pool;
  static uvp__stack_t *s[N];
  uvp__stack_pool_init(&pool, 64 * 1024);
  pool.max_idle = 16;
  for (int i = 0; i < N; i++)
    assert_int_equal(uvp__stack_get(&pool, 0, &s[i]), 0);
  /* 8 + 16 + 32 + 64 + 128 slots */
  assert_int_equal(pool.chunks, 5);
  char *first = s[0]->base; /* its descriptor goes with its chunk */
  for (int i = 0; i < N; i++)
    uvp__stack_put(&pool, s[i]);
  /* The 16 last to come back are warm; the chunks holding none of them
   * went (the last chunk holds slots 120-247, so only it stays). */
  assert_int_equal(pool.warm_count, 16);
  assert_int_equal(pool.chunks, 1);
  assert_int_equal(pool.idle_count, N - 120);
  assert_false(proc_mapped(first));
  /* Handed out again: warm first, then released, then fresh slots. */
  for (int i = 0; i < N; i++)
    assert_int_equal(uvp__stack_get(&pool, 0, &s[i]), 0);
  assert_int_equal(pool.idle_count, 0);
  assert_int_equal(pool.chunks, 2);
  for (int i = 0; i < N; i++)
    uvp__stack_put(&pool, s[i]);
  uvp__stack_pool_resize(&pool, 32 * 1024);
  assert_int_equal(pool.idle_count, 0);
  assert_int_equal(pool.chunks, 0);
  uvp__stack_pool_close(&pool);
}

/* Issue 57: a fresh stack's top is at most 448 bytes below its page's end
 * (a fiber with 3.5 KB of frames and record stays in the page it faults
 * in); a warm one handed out again is staggered over 32 lines (its top at
 * 32 offsets of a page, for the caches); with markers, a chunk's guards
 * are in place before its slots are carved (installed at once). */
static void test_pool_stagger(void **state) {
  (void)state;
  enum { N = 64 };
  uvp__stack_pool_t pool;
  uvp__stack_t *s[N];
  size_t page = page_size(), offsets[N];
  uvp__stack_pool_init(&pool, 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(uvp__stack_get(&pool, 0, &s[i]), 0);
    uintptr_t top = (uintptr_t)(s[i]->base + s[i]->size);
    size_t room = page - top % page;
    assert_true(top % page == 0 || room <= 448 + 128); /* desc + canary */
    assert_int_equal((top - 3500) / page, (top - 1) / page);
  }
  if (uvp__stack_markers() && !RUNNING_ON_VALGRIND) {
    /* slot 1 of the second chunk (16 slots) is not carved: guarded yet */
    size_t slot = (size_t)(s[9]->base - s[8]->base);
    assert_true(proc_guarded(s[N - 1]->base + slot - 1));
  }
  for (int i = 0; i < N; i++)
    uvp__stack_put(&pool, s[i]);
  /* Warm, most recently returned first: the same stacks, staggered wide. */
  size_t distinct = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(uvp__stack_get(&pool, 0, &s[i]), 0);
    offsets[i] = (uintptr_t)(s[i]->base + s[i]->size) % page;
    bool seen = false;
    for (int j = 0; j < i; j++)
      seen = seen || offsets[j] == offsets[i];
    distinct += !seen;
    memset(s[i]->base, 0x5a, s[i]->size); /* every byte still usable */
  }
  assert_int_equal(distinct, 32);
  for (int i = 0; i < N; i++)
    uvp__stack_put(&pool, s[i]);
  uvp__stack_pool_close(&pool);
  assert_int_equal(pool.chunks, 0);
}

/* Only touched pages are resident, and keep_warm gives back the rest. */
typedef struct {
  uvp__fiber_ctx_t main;
  size_t depth; /* bytes of stack to write below the entry's frame */
} touch_t;

static NOINLINE void touch_down(char *top, size_t depth) {
  volatile char buf[512];
  buf[0] = 1;
  buf[511] = 2;
  if ((size_t)(top - (char *)__builtin_frame_address(0)) < depth)
    touch_down(top, depth);
  buf[0] = buf[511];
}

static NOINLINE void *shallow(fib_t *f, touch_t *t) {
  volatile char buf[64] = {0};
  void *r = uvp__fiber_switch(&f->ctx, &t->main, (void *)buf);
  return r;
}

static void touch_entry(void *arg, void *msg) {
  fib_t *f = arg;
  touch_t *t = f->owner;
  (void)msg;
  if (t->depth == 0)
    (void)shallow(f, t);
  else
    touch_down(f->stack->base + f->stack->size, t->depth);
  uvp__fiber_exit(&f->ctx, &t->main, NULL);
}

static void run_touch(uvp__stack_pool_t *pool, fib_t *f, size_t depth,
                      int suspend) {
  touch_t *t = f->owner;
  t->depth = depth;
  fib_start(pool, f, 0, touch_entry);
  (void)uvp__fiber_switch(&t->main, &f->ctx, NULL);
  if (suspend)
    return;
  fib_end(pool, f);
}

static void test_resident_pages(void **state) {
  (void)state;
  uvp__stack_pool_t pool;
  touch_t t;
  fib_t f = {.owner = &t};
  size_t page = page_size(), pages, kept;
  uvp__stack_pool_init(&pool, 0);
  uvp__fiber_thread_init(&t.main);

  /* A fresh stack with a fiber suspended a few calls deep. */
  run_touch(&pool, &f, 0, 1);
  pages = resident_pages(f.stack->base, f.stack->size);
  print_message("suspended fiber, small depth: %zu resident page(s) of %zu\n",
                pages, f.stack->size / page);
  assert_true(pages >= 1);
  assert_true(pages <= 3);
  (void)uvp__fiber_switch(&t.main, &f.ctx, NULL);
  fib_end(&pool, &f);

  /* 128 KiB touched: resident as long as the pool keeps all ... */
  run_touch(&pool, &f, 128 * 1024, 0);
  pages = resident_pages(f.stack->base, f.stack->size);
  assert_true(pages >= 128 * 1024 / page);
  /* ... and down to the kept window with keep_warm. */
  pool.keep_warm = 16 * 1024;
  run_touch(&pool, &f, 128 * 1024, 0);
  kept = resident_pages(f.stack->base, f.stack->size);
  print_message("after 128 KiB deep, keep_warm 16 KiB: %zu resident\n", kept);
  assert_true(kept <= 16 * 1024 / page + 1);
  assert_int_equal(pool.idle_count, 1); /* the same stack each time */
  uvp__stack_pool_close(&pool);
}

/* ---- failures ------------------------------------------------------------ */

static void test_enomem_absurd_size(void **state) {
  (void)state;
  uvp__stack_pool_t pool;
  uvp__stack_t *s = NULL;
  uvp__stack_pool_init(&pool, 0);
  /* More than the address space, and more than a size_t can round up. */
#if SIZE_MAX > UINT32_MAX
  assert_int_equal(uvp__stack_get(&pool, (size_t)1 << 62, &s), UV_ENOMEM);
#else
  /* ILP32: all of it but 1 MiB, where the program's own mappings are. */
  assert_int_equal(uvp__stack_get(&pool, SIZE_MAX - (1u << 20), &s), UV_ENOMEM);
#endif
  assert_int_equal(uvp__stack_get(&pool, SIZE_MAX - 100, &s), UV_ENOMEM);
  assert_null(s);
  assert_int_equal(pool.live_count, 0);
  assert_int_equal(pool.live_bytes, 0);
  /* The pool still works. */
  assert_int_equal(uvp__stack_get(&pool, 0, &s), 0);
  uvp__stack_put(&pool, s);
  uvp__stack_pool_close(&pool);
}

/* No wall: stacks carved until far more than the kernel's table of
 * mappings could once hold (two entries a stack), in a child, with the
 * guards the mode gives.  Reports what the pool counted and the maps. */
enum { WALL_N = 100000 };
typedef struct {
  int rc;
  size_t got, maps_growth, chunks, guards[4], after_put_chunks;
  int malloc_ok, mmap_ok;
} wall_t;

static int wall_mode;

static size_t wall_count(void) {
#if defined(UVP__FIBER_TSAN)
  return WALL_N / 5;
#else
  return WALL_N;
#endif
}

static void wall_child(int fd) {
  static uvp__stack_t *stacks[WALL_N];
  uvp__stack_pool_t pool;
  wall_t w = {.rc = 0};
  size_t n = wall_count();
  uvp__stack_pool_init(&pool, 16 * 1024);
  pool.guards = wall_mode;
  size_t maps0 = proc_map_count();
  while (w.got < n && (w.rc = uvp__stack_get(&pool, 0, &stacks[w.got])) == 0)
    w.got++;
  w.maps_growth = proc_map_count() - maps0;
  w.chunks = pool.chunks;
  memcpy(w.guards, pool.guard_counts, sizeof(w.guards));
  /* malloc (a block past its mmap threshold too) and mmap still work. */
  void *m = malloc(4 * 1024 * 1024);
  w.malloc_ok = m != NULL;
  free(m);
  void *map = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  w.mmap_ok = map != MAP_FAILED;
  if (map != MAP_FAILED)
    munmap(map, 1 << 20);
  pool.max_idle = 0;
  for (size_t i = 0; i < w.got; i++)
    uvp__stack_put(&pool, stacks[i]);
  w.after_put_chunks = pool.chunks;
  if (write(fd, &w, sizeof(w)) != (ssize_t)sizeof(w))
    _exit(3);
}

static wall_t run_wall(int mode) {
  int fd;
  wall_t w;
  wall_mode = mode;
  int status = test_in_child(wall_child, &fd, NULL, 0);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_int_equal(read(fd, &w, sizeof(w)), sizeof(w));
  close(fd);
  print_message("%zu stacks of 16 KiB: %zu chunks, maps +%zu; guards: %zu "
                "markers, %zu pages, %zu canaries\n",
                w.got, w.chunks, w.maps_growth, w.guards[UVP__GUARD_MARKER],
                w.guards[UVP__GUARD_PAGE], w.guards[UVP__GUARD_CANARY]);
  assert_int_equal(w.rc, 0);
  assert_int_equal(w.got, wall_count());
  assert_true(w.malloc_ok);
  assert_true(w.mmap_ok);
  assert_int_equal(w.after_put_chunks, 0);
  assert_int_equal(w.guards[UVP__GUARD_MARKER] + w.guards[UVP__GUARD_PAGE] +
                       w.guards[UVP__GUARD_CANARY],
                   w.got);
  /* Two entries per page guard at most, a few per chunk (the chunks'
   * records past malloc's mmap threshold), and the map's slack. */
  assert_true(w.maps_growth <=
              2 * w.guards[UVP__GUARD_PAGE] + 3 * w.chunks + 64);
  assert_true(w.maps_growth < 65530 * 3 / 4); /* room left for malloc */
  return w;
}

static void test_no_map_wall(void **state) {
  (void)state;
  if (RUNNING_ON_VALGRIND)
    SKIP_BECAUSE("valgrind's own table of segments is smaller than the "
                 "kernel's map limit this test fills");
  wall_t w = run_wall(UVP__GUARDS_AUTO);
  if (uvp__stack_markers())
    assert_int_equal(w.guards[UVP__GUARD_MARKER], w.got);
  else /* the fallback's, as below */
    assert_true(w.guards[UVP__GUARD_PAGE] > 1000);
}

/* Without guard markers: page guards while their budget lasts (a quarter
 * of the table, two entries each), then canaries. */
static void test_no_map_wall_fallback(void **state) {
  (void)state;
  if (RUNNING_ON_VALGRIND)
    SKIP_BECAUSE("valgrind's own table of segments is smaller than the "
                 "kernel's map limit this test fills");
  wall_t w = run_wall(UVP__GUARDS_FALLBACK);
  assert_int_equal(w.guards[UVP__GUARD_MARKER], 0);
  assert_true(w.guards[UVP__GUARD_PAGE] > 1000);
  assert_true(w.guards[UVP__GUARD_PAGE] <= 65530 / 4);
  assert_true(w.guards[UVP__GUARD_CANARY] > 0);
}

/* ---- the guard page ------------------------------------------------------ */

static char *guard_lo, *guard_hi;
static int guard_fd;

static void on_segv(int sig, siginfo_t *info, void *uc) {
  char c = (char *)info->si_addr >= guard_lo && (char *)info->si_addr < guard_hi
               ? 'G'
               : 'X';
  (void)uc;
  (void)!write(guard_fd, &c, 1);
  /* Die of it: the access faults again, with the default action. */
  struct sigaction dfl;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  (void)sigaction(sig, &dfl, NULL);
}

static volatile int forever = 1; /* hides the recursion's end from gcc */

static NOINLINE int recurse_forever(int n) {
  volatile char buf[256];
  buf[0] = (char)n;
  return (forever ? recurse_forever(n + 1) : 0) + buf[0];
}

typedef struct {
  uvp__fiber_ctx_t main;
} ovf_t;

static void overflow_entry(void *arg, void *msg) {
  fib_t *f = arg;
  ovf_t *o = f->owner;
  (void)msg;
  (void)recurse_forever(0);
  uvp__fiber_exit(&f->ctx, &o->main, NULL);
}

static int overflow_mode;

static void overflow_in_child(int fd) {
  uvp__stack_pool_t pool;
  ovf_t o;
  fib_t f = {.owner = &o};
  static char alt[64 * 1024];
  stack_t ss = {.ss_sp = alt, .ss_size = sizeof(alt)};
  struct rlimit no_core = {0, 0};
  struct sigaction sa;
  (void)setrlimit(RLIMIT_CORE, &no_core); /* an expected death */
  uvp__stack_pool_init(&pool, 16 * 1024);
  pool.guards = overflow_mode;
  uvp__fiber_thread_init(&o.main);
  fib_start(&pool, &f, 0, overflow_entry);
  if (f.stack->guard == UVP__GUARD_CANARY)
    _exit(6);
  guard_lo = f.stack->base - page_size();
  guard_hi = f.stack->base;
  guard_fd = fd;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  if (sigaltstack(&ss, NULL) != 0 || sigaction(SIGSEGV, &sa, NULL) != 0)
    _exit(4);
  (void)uvp__fiber_switch(&o.main, &f.ctx, NULL);
  _exit(5); /* the fiber came back: no overflow */
}

static void overflow_dies_in_guard(int mode) {
  int fd;
  char c = 0;
  overflow_mode = mode;
  int status = test_in_child(overflow_in_child, &fd, NULL, 0);
  ssize_t got = read(fd, &c, 1);
  close(fd);
  if (WIFEXITED(status))
    print_message("child exited with %d\n", WEXITSTATUS(status));
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGSEGV);
  assert_int_equal(got, 1);
  assert_int_equal(c, 'G'); /* the fault was in the guard page */
}

/* The guard the kernel offers: a marker, or without them a page. */
static void test_overflow_hits_guard_page(void **state) {
  (void)state;
  overflow_dies_in_guard(UVP__GUARDS_AUTO);
}

/* The fallback forced: a PROT_NONE page. */
static void test_overflow_hits_page_guard(void **state) {
  (void)state;
  overflow_dies_in_guard(UVP__GUARDS_FALLBACK);
}

/* No guard page: a fiber that ran past its stack into the slot below is
 * stopped at its next switch, with its site named: after returning from
 * the overrun, a local array written down past its base (the canary says
 * so), or switching from below its base, deep in a recursion (the stack
 * pointer says so). */
typedef struct {
  uvp__fiber_ctx_t main;
  char *top;
  size_t target;
  int switch_deep;
} canary_t;

/* Not instrumented: ASan would report the frames landing in the stack
 * below (its redzones), before the canary could. */
static NOINLINE NO_ASAN void overrun(canary_t *c, fib_t *f) {
  volatile unsigned char buf[200];
  for (int i = 0; i < 200; i++)
    buf[i] = (unsigned char)i;
  if ((size_t)(c->top - (char *)__builtin_frame_address(0)) < c->target)
    overrun(c, f);
  else if (c->switch_deep)
    (void)uvp__fiber_switch(&f->ctx, &c->main, NULL);
  buf[0] = buf[199];
}

/* One frame whose local array reaches the same depth, every byte of it
 * written: the recursion's frames leave bytes unwritten (on s390x the
 * lower part of each register save area), and which of them lands on the
 * canary moves with every frame above, so only a write of every byte down
 * to the target is sure to reach it.  Not instrumented, as overrun. */
static NOINLINE NO_ASAN void overrun_flat(canary_t *c) {
  size_t used = (size_t)(c->top - (char *)__builtin_frame_address(0));
  size_t n = c->target - used;
  volatile unsigned char buf[n];
  for (size_t i = 0; i < n; i++)
    buf[i] = (unsigned char)i;
  buf[0] = buf[n - 1];
}

static void canary_entry(void *arg, void *msg) {
  fib_t *f = arg;
  canary_t *c = f->owner;
  (void)msg;
  if (c->switch_deep)
    overrun(c, f);
  else
    overrun_flat(c);
  (void)uvp__fiber_switch(&f->ctx, &c->main, NULL);
  uvp__fiber_exit(&f->ctx, &c->main, NULL);
}

static int canary_switch_deep;

static void canary_child(int fd) {
  uvp__stack_pool_t pool;
  canary_t c;
  fib_t below = {.owner = &c}, f = {.owner = &c};
  struct rlimit no_core = {0, 0};
  (void)fd;
  (void)setrlimit(RLIMIT_CORE, &no_core); /* an expected death */
  uvp__stack_pool_init(&pool, 16 * 1024);
  pool.guards = UVP__GUARDS_CANARY;
  uvp__fiber_thread_init(&c.main);
  c.switch_deep = canary_switch_deep;
  fib_start(&pool, &below, 0, pp_entry); /* the neighbour, never run */
  fib_start(&pool, &f, 0, canary_entry);
  if (f.stack->guard != UVP__GUARD_CANARY || f.stack->base <= below.stack->base)
    _exit(6);
  f.stack->file = "canary-site.c";
  f.stack->line = 42;
  c.top = f.stack->base + f.stack->size;
  /* Past the unused guard page and the canary, into the slot below. */
  c.target = f.stack->size + page_size() + 512;
  (void)uvp__fiber_switch(&c.main, &f.ctx, NULL);
  _exit(5); /* the fiber came back: not stopped */
}

static void canary_stops(int switch_deep, const char *why) {
  static char err[8192];
  int fd;
  canary_switch_deep = switch_deep;
  int status = test_in_child(canary_child, &fd, err, sizeof(err));
  close(fd);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
    fail_msg("child status %#x; its stderr:\n%s", (unsigned)status, err);
  if (strstr(err, "uvp: the fiber spawned at canary-site.c:42 overran its "
                  "stack of") == NULL ||
      strstr(err, why) == NULL)
    fail_msg("no report naming the site and \"%s\"; stderr:\n%s", why, err);
}

static void test_overflow_canary(void **state) {
  (void)state;
  canary_stops(0, "the canary at ");
  canary_stops(1, "its stack pointer ");
}

/* ---- deep recursion ------------------------------------------------------ */

typedef struct {
  uvp__fiber_ctx_t main;
  char *top;
  size_t target, reached;
  int bad;
} deep_t;

static NOINLINE void deep_down(deep_t *d, unsigned depth) {
  volatile unsigned char buf[200];
  size_t used = (size_t)(d->top - (char *)__builtin_frame_address(0));
  for (int i = 0; i < 200; i++)
    buf[i] = (unsigned char)(depth + (unsigned)i);
  if (used > d->reached)
    d->reached = used;
  if (used < d->target)
    deep_down(d, depth + 1);
  for (int i = 0; i < 200; i++)
    d->bad |= buf[i] != (unsigned char)(depth + (unsigned)i);
}

static void deep_entry(void *arg, void *msg) {
  fib_t *f = arg;
  deep_t *d = f->owner;
  (void)msg;
  deep_down(d, 0);
  uvp__fiber_exit(&f->ctx, &d->main, NULL);
}

static void test_deep_recursion(void **state) {
  (void)state;
  uvp__stack_pool_t pool;
  deep_t d = {.reached = 0, .bad = 0};
  fib_t f = {.owner = &d};
  uvp__stack_pool_init(&pool, 0);
  uvp__fiber_thread_init(&d.main);
  fib_start(&pool, &f, 0, deep_entry);
  d.top = f.stack->base + f.stack->size;
  d.target = f.stack->size / 4 * 3;
  (void)uvp__fiber_switch(&d.main, &f.ctx, NULL);
  assert_true(d.reached >= d.target);
  assert_int_equal(d.bad, 0);
  fib_end(&pool, &f);
  /* Again on the same stack, reused. */
  d.reached = 0;
  fib_start(&pool, &f, 0, deep_entry);
  assert_ptr_equal(f.stack->base + f.stack->size, d.top);
  (void)uvp__fiber_switch(&d.main, &f.ctx, NULL);
  assert_true(d.reached >= d.target);
  assert_int_equal(d.bad, 0);
  fib_end(&pool, &f);
  uvp__stack_pool_close(&pool);
}

/* ---- threads ------------------------------------------------------------- */

/* Each thread its own pool and fibers, all switching at the same time. */
typedef struct {
  uv_thread_t tid;
  size_t ok;
} worker_t;

static void worker(void *arg) {
  worker_t *w = arg;
  uvp__stack_pool_t pool;
  pp_t p[20];
  uvp__stack_pool_init(&pool, 64 * 1024);
  for (int i = 0; i < 20; i++) {
    p[i].steps = 0;
    uvp__fiber_thread_init(&p[i].main);
    p[i].fib.owner = &p[i];
    if (uvp__stack_get(&pool, 0, &p[i].fib.stack) != 0)
      return;
    uvp__fiber_init(&p[i].fib.ctx, p[i].fib.stack->base, p[i].fib.stack->size,
                    pp_entry, &p[i].fib);
    uvp__fiber_watch(&p[i].fib.ctx, p[i].fib.stack);
  }
  for (uintptr_t v = 1; v <= 200; v++)
    for (int i = 0; i < 20; i++)
      w->ok += (uintptr_t)uvp__fiber_switch(&p[i].main, &p[i].fib.ctx,
                                            (void *)v) == v * 2 + 1;
  for (int i = 0; i < 20; i++) {
    w->ok += uvp__fiber_switch(&p[i].main, &p[i].fib.ctx, NULL) ==
             (void *)(uintptr_t)0xdead;
    fib_end(&pool, &p[i].fib);
  }
  w->ok += pool.live_count == 0 && pool.idle_count == 20;
  uvp__stack_pool_close(&pool);
}

static void test_two_threads(void **state) {
  (void)state;
  worker_t w[2] = {{.ok = 0}, {.ok = 0}};
  for (int i = 0; i < 2; i++)
    assert_int_equal(uv_thread_create(&w[i].tid, worker, &w[i]), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(uv_thread_join(&w[i].tid), 0);
    assert_int_equal(w[i].ok, 200 * 20 + 20 + 1);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ping_pong),
      cmocka_unit_test(test_fiber_to_fiber),
      cmocka_unit_test(test_callee_saved),
      cmocka_unit_test(test_fp_control_per_context),
      cmocka_unit_test(test_fp_control_shared),
      cmocka_unit_test(test_many_suspended),
      cmocka_unit_test(test_pool_reuse_and_caps),
      cmocka_unit_test(test_pool_chunks),
      cmocka_unit_test(test_pool_stagger),
      cmocka_unit_test(test_resident_pages),
      cmocka_unit_test(test_enomem_absurd_size),
      cmocka_unit_test(test_no_map_wall),
      cmocka_unit_test(test_no_map_wall_fallback),
      cmocka_unit_test(test_overflow_hits_guard_page),
      cmocka_unit_test(test_overflow_hits_page_guard),
      cmocka_unit_test(test_overflow_canary),
      cmocka_unit_test(test_deep_recursion),
      cmocka_unit_test(test_two_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
