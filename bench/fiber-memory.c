/* The resident memory of a suspended fiber: N fibers on the default stack
 * size, each suspended DEPTH calls deep with LOCALS bytes of locals per
 * call (a handler walking a parser, say), all awaiting one pending promise.
 * Reports the growth of the resident set over the N fibers, per fiber
 * (stack pages, the fiber's record and its promise, the pool's byte for
 * its slot), the resident bytes of one fiber's own stack (mincore over the
 * 256 KiB below its frames and the page above them: the stack's slot, not
 * its neighbours'), and the length of the mapping that holds that stack
 * (with the kernel's guard markers, a chunk of several stacks: one mapping
 * for them all, so its resident bytes are not one stack's).
 * Usage: fiber-memory [N] [DEPTH]   (defaults 10000 and 8; LOCALS is 320)
 * e.g. `build-bench/bench/fiber-memory 10000 8` (issue 57: at most 4 164
 * bytes a fiber, one resident page a stack; docs/internals/fibers.md 13.8). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core-common.h"
#include "uvp.h"

#define LOCALS 320

static uvp_promise_t *gate;
static size_t depth, suspended, bad;
static void *first_frame;

/* The mapping holding addr (/proc/self/maps): its bounds in *lo_out and
 * *hi_out, its length returned (0 if none). */
static size_t mapping_of(const void *addr, uintptr_t *lo_out,
                         uintptr_t *hi_out) {
  FILE *f = fopen("/proc/self/maps", "r");
  unsigned long lo, hi;
  size_t len = 0;
  if (f == NULL)
    exit(1);
  while (fscanf(f, "%lx-%lx%*[^\n]", &lo, &hi) == 2)
    if ((uintptr_t)addr >= lo && (uintptr_t)addr < hi) {
      len = hi - lo;
      *lo_out = lo;
      *hi_out = hi;
      break;
    }
  fclose(f);
  return len;
}

/* Resident bytes of the stack whose deepest recorded frame is at addr: the
 * 256 KiB below the page above addr's (the fiber's frames reach at most a
 * page above addr at this depth; above its stack's top is the next slot's
 * guard page, below its base its own), within the mapping holding addr:
 * the guard pages are never resident, and under qemu-user mincore fails
 * (ENOMEM) on a range that reaches one. */
static size_t resident_stack(const void *addr) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t hi = ((uintptr_t)addr & ~(uintptr_t)(page - 1)) + 2 * page;
  uintptr_t lo = hi - 256u * 1024u, map_lo = 0, map_hi = 0;
  if (mapping_of(addr, &map_lo, &map_hi) == 0)
    exit(1);
  lo = lo > map_lo ? lo : map_lo;
  hi = hi < map_hi ? hi : map_hi;
  long pages = bench_resident_pages((void *)lo, hi - lo);
  if (pages < 0)
    exit(1);
  return (size_t)pages * page;
}

static __attribute__((noinline)) int descend(size_t level) {
  volatile char locals[LOCALS];
  int rc;
  memset((char *)locals, (int)level, sizeof(locals));
  if (level + 1 < depth) {
    rc = descend(level + 1);
  } else {
    if (first_frame == NULL)
      first_frame = __builtin_frame_address(0);
    suspended++;
    rc = uvp_await(gate, NULL);
  }
  return rc + locals[level % LOCALS] - (char)level;
}

static uvp_ret_t body(void *arg) {
  (void)arg;
  bad += descend(0) != 0;
  return uvp_ret_pass();
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000;
  depth = argc > 2 ? strtoul(argv[2], NULL, 10) : 8;
  uvp_promise_t **fps = calloc(n, sizeof(*fps)), *warm;
  uv_loop_t loop;
  uvp_ctx_t *ctx;
  if (n == 0 || depth == 0 || fps == NULL)
    return 2;
  uv_loop_init(&loop);
  if (uvp_ctx_new(&loop, &ctx) != 0 || uvp_promise_new(ctx, &gate) != 0)
    return 1;
  /* The context's fiber state and first slabs exist before the count. */
  if (uvp_fiber_spawn(ctx, body, NULL, NULL, &warm) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  first_frame = NULL;
  long long rss0 = bench_rss_bytes();
  for (size_t i = 0; i < n; i++)
    if (uvp_fiber_spawn(ctx, body, NULL, NULL, &fps[i]) != 0)
      return 1;
  uv_run(&loop, UV_RUN_DEFAULT); /* until every fiber is suspended */
  long long rss1 = bench_rss_bytes();
  uintptr_t map_lo, map_hi;
  size_t map_len = mapping_of(first_frame, &map_lo, &map_hi);
  size_t stack_res = resident_stack(first_frame);
  if (rss0 < 0 || rss1 < 0)
    return 1;
  uvp_ctx_stats_t s;
  uvp_ctx_stats(ctx, &s);
  bad += suspended != n + 1 || s.fibers != n + 1;
  uvp_promise_resolve(gate, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  for (size_t i = 0; i < n; i++) {
    bad += uvp_promise_state(fps[i]) != UVP_FULFILLED;
    uvp_promise_release(fps[i]);
  }
  uvp_promise_release(warm);
  uvp_promise_release(gate);
  printf("uvp fiber-memory n=%zu depth=%zu locals=%d ok=%d "
         "rss_per_fiber_b=%.0f stack_resident_b=%zu stack_mapped_b=%zu\n",
         n, depth, LOCALS, bad == 0, (double)(rss1 - rss0) / (double)n,
         stack_res, map_len);
  free(fps);
  uvp_ctx_close(ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return bad == 0 ? 0 : 1;
}
