/* The allocator and the slabs (src/alloc.c), and the run queue's memory
 * (src/sched.c): once warmed up (or reserved), the hot path of create,
 * settle and react never reaches the allocator — counted through
 * uvp_replace_allocator, not assumed — reserved slots are invisible to the
 * pending dump and to teardown, a run queue that cannot grow still runs
 * every handler in order, and fresh slab memory is prefaulted a small
 * window ahead of use. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#if defined(__linux__)
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>
#endif

#include "child.h"
#include "helpers.h"

/* The core's objects, as src/promise.c states their sizes for each ABI. */
#if UINTPTR_MAX > UINT32_MAX
enum { PROMISE_BYTES = 48, HANDLER_BYTES = 32 };
#else
enum { PROMISE_BYTES = 32, HANDLER_BYTES = 16 };
#endif

static long allocs;
static long live; /* allocations not yet freed */
static bool deny; /* fail every allocation */

static void *c_malloc(size_t n) {
  allocs++;
  void *p = deny ? NULL : malloc(n);
  live += p != NULL;
  return p;
}
static void *c_calloc(size_t c, size_t n) {
  allocs++;
  void *p = deny ? NULL : calloc(c, n);
  live += p != NULL;
  return p;
}
static void *c_realloc(void *p, size_t n) {
  allocs++;
  void *q = deny ? NULL : realloc(p, n);
  live += q != NULL && p == NULL;
  return q;
}
static void c_free(void *p) {
  live -= p != NULL;
  free(p);
}

/* A fixture whose context allocates through the given functions. */
static fixture_t *fixture_on(uvp_malloc_func m, uvp_realloc_func r,
                             uvp_calloc_func c, uvp_free_func fr) {
  assert_int_equal(uvp_replace_allocator(m, r, c, fr), 0);
  fixture_t *f = NULL; /* no test function: see fixture_setup */
  fixture_setup((void **)&f);
  return f;
}

/* Tear it down and give uvp the C library's allocator back. */
static void fixture_off(fixture_t *f) {
  fixture_teardown((void **)&f);
  assert_int_equal(uvp_replace_allocator(malloc, realloc, calloc, free), 0);
}

static uvp_ret_t add(void *arg, const uvp_outcome_t *in) {
  *(long *)arg += (long)(intptr_t)in->value;
  return uvp_ret_value(NULL, NULL);
}

/* n promises: create, then (with a derived promise), resolve, release. */
static void burst(fixture_t *f, int n, long *sum) {
  for (int i = 0; i < n; i++) {
    uvp_promise_t *p, *d;
    assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
    assert_int_equal(uvp_promise_then(p, add, sum, &d), 0);
    assert_int_equal(uvp_promise_resolve(p, (void *)(intptr_t)1, NULL), 0);
    uvp_promise_release(p);
    uvp_promise_release(d);
  }
  run_loop(f);
}

static void test_hot_path_never_allocates_once_warm(void **state) {
  (void)state;
  fixture_t *f = fixture_on(c_malloc, c_realloc, c_calloc, c_free);
  long sum = 0;
  burst(f, 50000, &sum); /* warm-up: slabs grow to the peak */
  allocs = 0;
  for (int round = 0; round < 5; round++)
    burst(f, 50000, &sum);
  assert_int_equal(sum, 6 * 50000);
  assert_int_equal(allocs, 0);
  fixture_off(f);
}

static void test_reserve_means_no_allocation_later(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_reserve(f->ctx, 200000, 100000), 0);
  uvp_ctx_stats_t before, after;
  assert_int_equal(uvp_ctx_stats(f->ctx, &before), 0);
  assert_true(before.slab_bytes >=
              200000 * PROMISE_BYTES + 100000 * HANDLER_BYTES);
  assert_int_equal(before.live, 0);
  long sum = 0;
  burst(f, 100000, &sum);
  assert_int_equal(uvp_ctx_stats(f->ctx, &after), 0);
  assert_int_equal(after.slab_allocs, before.slab_allocs);
  assert_int_equal(sum, 100000);
}

static void test_reserved_slots_are_not_pending(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_reserve(f->ctx, 5000, 5000), 0);
  uvp_promise_t *p;
  assert_int_equal(uvp_promise_new(f->ctx, &p), 0);
  FILE *out = tmpfile();
  assert_non_null(out);
  /* Exactly the one real pending promise, not thousands of free slots. */
  assert_int_equal(uvp_ctx_dump_pending(f->ctx, out), 1);
  fclose(out);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, 1);
  assert_int_equal(st.pending, 1);
  /* Teardown sweeps only live promises. */
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  f->ctx = NULL;
  assert_int_equal(uvp_promise_reason(p, NULL), UVP_ECLOSED);
  uvp_promise_release(p);
}

/* Reserving reactions also makes run-queue room for them all queued at
 * once: a burst of 100 000 settles, each queueing its handler, then never
 * reaches the allocator. */
static void test_reserve_covers_the_run_queue(void **state) {
  (void)state;
  fixture_t *f = fixture_on(c_malloc, c_realloc, c_calloc, c_free);
  /* Each burst step holds a promise, its derived promise and a reaction. */
  assert_int_equal(uvp_ctx_reserve(f->ctx, 200000, 100000), 0);
  allocs = 0;
  long sum = 0;
  burst(f, 100000, &sum);
  assert_int_equal(sum, 100000);
  assert_int_equal(allocs, 0);
  fixture_off(f);
  assert_int_equal(live, 0);
}

typedef struct {
  int n;
  int order[2048];
} seen_t;

static seen_t seen;
static uvp_promise_t *chain; /* resolved by handler 0, if set */

static uvp_ret_t note(void *arg, const uvp_outcome_t *in) {
  (void)in;
  assert_true(seen.n < 2048);
  seen.order[seen.n++] = (int)(intptr_t)arg;
  if (arg == 0 && chain != NULL) {
    assert_int_equal(uvp_promise_resolve(chain, NULL, NULL), 0);
    uvp_promise_release(chain);
    chain = NULL;
  }
  return uvp_ret_value(NULL, NULL);
}

/* Settle n promises, each with one handler, in a scrambled order (with
 * every allocation refused if `starve`); handler i records base + i, and
 * `want` gets the order they were settled in.  Returns the allocation
 * calls made while settling. */
static long settle_scrambled(fixture_t *f, int n, int base, int *want,
                             bool starve) {
  uvp_promise_t *p[1024];
  assert_true(n <= 1024);
  for (int i = 0; i < n; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &p[i]), 0);
    assert_int_equal(uvp_promise_on(p[i], UVP_ON_BOTH, note,
                                    (void *)(intptr_t)(base + i), NULL),
                     0);
  }
  long before = allocs;
  deny = starve;
  for (int k = 0; k < n; k++) {
    int i = (k * 7919) % n;
    assert_int_equal(uvp_promise_resolve(p[i], NULL, NULL), 0);
    want[k] = base + i;
  }
  deny = false;
  for (int i = 0; i < n; i++)
    uvp_promise_release(p[i]);
  return allocs - before;
}

/* The run queue is a ring that doubles when a burst overflows it.  When it
 * cannot (no memory), settling must still work: the handlers queue behind
 * the ring, and everything runs in settle order, including a handler
 * registered on an already settled promise while the queue is spilled, and
 * one queued by a handler while the ring has room again but the spill is
 * not yet drained.  Once drained, the ring grows again as usual. */
static void test_queue_spills_when_ring_cannot_grow(void **state) {
  (void)state;
  enum { N = 1000 }; /* the ring starts with 256 slots */
  fixture_t *f = fixture_on(c_malloc, c_realloc, c_calloc, c_free);
  static int want[N + 2];
  uvp_ctx_stats_t st;

  seen.n = 0;
  assert_int_equal(uvp_promise_new(f->ctx, &chain), 0);
  assert_int_equal(
      uvp_promise_on(chain, UVP_ON_BOTH, note, (void *)(intptr_t)(N + 1), NULL),
      0);
  /* Slot 257 finds the ring full; its growth is refused, and every later
   * one goes behind it without asking again. */
  assert_int_equal(settle_scrambled(f, N, 0, want, true), 1);
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.queued, N);
  uvp_promise_t *late;
  assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &late), 0);
  assert_int_equal(
      uvp_promise_on(late, UVP_ON_BOTH, note, (void *)(intptr_t)N, NULL), 0);
  want[N] = N;
  want[N + 1] = N + 1; /* queued by handler 0, the first to run */
  uvp_promise_release(late);
  run_loop(f);
  assert_null(chain);
  assert_int_equal(seen.n, N + 2);
  assert_memory_equal(seen.order, want, sizeof(want));
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.queued, 0);
  assert_int_equal(st.live, 0);

  /* With memory back, the same burst grows the ring (8 bytes a slot). */
  seen.n = 0;
  size_t before = st.slab_bytes;
  assert_true(settle_scrambled(f, N, 0, want, false) >= 1);
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_true(st.slab_bytes >= before + (1024 - 256) * sizeof(void *));
  run_loop(f);
  assert_int_equal(seen.n, N);
  assert_memory_equal(seen.order, want, N * sizeof(int));

  fixture_off(f);
  assert_int_equal(live, 0);
}

#if defined(__linux__)
/* An allocator handing out fresh anonymous mappings: nothing of a block is
 * resident until something writes to it (or populates it). */
typedef struct {
  size_t len;
  char pad[8];
} map_head_t;

static void *m_malloc(size_t n) {
  size_t len = sizeof(map_head_t) + n;
  void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
  if (m == MAP_FAILED)
    return NULL;
  ((map_head_t *)m)->len = len;
  return (map_head_t *)m + 1;
}
static void m_free(void *p) {
  if (p != NULL) {
    map_head_t *h = (map_head_t *)p - 1;
    munmap(h, h->len);
  }
}
static void *m_calloc(size_t c, size_t n) { return m_malloc(c * n); }
static void *m_realloc(void *p, size_t n) {
  void *q = m_malloc(n);
  if (q != NULL && p != NULL) {
    size_t old = ((map_head_t *)p - 1)->len - sizeof(map_head_t);
    memcpy(q, p, old < n ? old : n);
    m_free(p);
  }
  return q;
}

/* Whether the page holding addr is resident: /proc/self/pagemap's bit 63.
 * -1 if that cannot be read. */
static int resident(const void *addr) {
  int fd = open("/proc/self/pagemap", O_RDONLY);
  if (fd < 0)
    return -1;
  long page = sysconf(_SC_PAGESIZE);
  uint64_t e;
  ssize_t n = pread(fd, &e, sizeof(e),
                    (off_t)((uintptr_t)addr / (uintptr_t)page * sizeof(e)));
  close(fd);
  return n == (ssize_t)sizeof(e) ? (int)(e >> 63) : -1;
}
#endif

/* Fresh slab memory is faulted in a small window ahead of use (one madvise
 * instead of a page fault per 4 KiB), never further.  With every slab a fresh
 * mapping, promises 22 000 to 25 500 (LP64; 25 000 to 30 000 on ILP32) are
 * carved in address order from one 256 KiB slab, a promise's size apart, 64
 * KiB short of its end.  Before the next page has
 * held any promise it is often already resident; nothing 64 KiB ahead ever is.
 */
static void test_slabs_prefault_a_window_ahead(void **state) {
  (void)state;
#if defined(__linux__)
  SKIP_UNDER_EMULATOR("qemu-user ignores madvise's MADV_POPULATE_WRITE, and "
                      "/proc/self/pagemap shows the host's pages");
  char probe[1] = {0};
  if (resident(probe) != 1)
    SKIP_BECAUSE("no /proc/self/pagemap here, or no present bit in it");
  fixture_t *f = fixture_on(m_malloc, m_realloc, m_calloc, m_free);
  /* Slabs of 64, 64, 128, 256, 256 and 256 KiB hold ~21 800 (LP64), and
   * ~32 700 (ILP32, whose promises are 32 bytes): the range is in the next
   * slab (LP64), or in the sixth (ILP32), far enough from its end. */
#if UINTPTR_MAX > UINT32_MAX
  enum { FIRST = 22000, N = 25500 };
#else
  enum { FIRST = 25000, N = 30000 };
#endif
  static uvp_promise_t *p[N];
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  int ahead = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &p[i]), 0);
    if (i < FIRST)
      continue;
    assert_ptr_equal((char *)p[i - 1] + PROMISE_BYTES, (char *)p[i]);
    uintptr_t next_page = ((uintptr_t)p[i] & ~(page - 1)) + page;
    ahead += resident((void *)next_page) == 1;
    assert_int_equal(resident((char *)p[i] + 64 * 1024), 0);
  }
  assert_true(ahead > (N - FIRST) / 2);
  for (int i = 0; i < N; i++)
    uvp_promise_release(p[i]);
  fixture_off(f);
#else
  SKIP_BECAUSE("not Linux: residency is read from /proc/self/pagemap");
#endif
}

/* Reserved operations: 200 stats of a real directory in flight at once
 * take their room from the reservation, so uvp's allocator is not called;
 * without the reservation it is (the control). */
static uvp_ret_t count_stat(void *arg, const uvp_outcome_t *in) {
  const uv_stat_t *st = in->value;
  *(long *)arg += in->status == 0 && S_ISDIR(st->st_mode);
  return uvp_ret_value(NULL, NULL);
}

static long stats_in_flight(fixture_t *f, int n) {
  long done = 0;
  for (int i = 0; i < n; i++) {
    uvp_promise_t *p, *d;
    assert_int_equal(uvp_fs_stat(f->ctx, ".", &p), 0);
    assert_int_equal(uvp_promise_then(p, count_stat, &done, &d), 0);
    uvp_promise_release(p);
    uvp_promise_release(d);
  }
  run_loop(f);
  return done;
}

static void test_reserve_ops_means_no_allocation_later(void **state) {
  (void)state;
  enum { N = 200 };
  for (int reserve_ops = 0; reserve_ops < 2; reserve_ops++) {
    fixture_t *f = fixture_on(c_malloc, c_realloc, c_calloc, c_free);
    assert_int_equal(uvp_ctx_reserve(f->ctx, 4 * N, 4 * N), 0);
    if (reserve_ops) {
      assert_int_equal(uvp_ctx_reserve_ops(f->ctx, N), 0);
      uvp_ctx_stats_t st;
      assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
      assert_true(st.slab_bytes >=
                  (size_t)N * (4 * PROMISE_BYTES + 4 * HANDLER_BYTES + 512));
    }
    allocs = 0;
    assert_int_equal(stats_in_flight(f, N), N);
    if (reserve_ops)
      assert_int_equal(allocs, 0);
    else
      assert_true(allocs > 0);
    fixture_off(f);
  }
}

/* When its last promise is freed, the context's promise pool rewinds: the
 * next burst is handed out in address order again, whatever order the last
 * one died in, from the same memory (src/alloc.c: uvp__pool_rewind). */
static void test_pool_rewinds_once_empty(void **state) {
  fixture_t *f = *state;
  enum { N = 1000 };
  static uvp_promise_t *p[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(uvp_promise_new(f->ctx, &p[i]), 0);
  uvp_ctx_stats_t before, after;
  assert_int_equal(uvp_ctx_stats(f->ctx, &before), 0);
  for (int i = 0; i < N; i++) /* 7919 is prime: a scrambled order */
    uvp_promise_release(p[(size_t)i * 7919 % N]);
  for (int i = 0; i < N; i++)
    assert_int_equal(uvp_promise_new(f->ctx, &p[i]), 0);
  int neighbours = 0;
  for (int i = 0; i + 1 < N; i++)
    neighbours += (char *)p[i + 1] - (char *)p[i] == PROMISE_BYTES;
  assert_int_equal(neighbours, N - 1);
  assert_int_equal(uvp_ctx_stats(f->ctx, &after), 0);
  assert_int_equal(after.slab_allocs, before.slab_allocs);
  assert_int_equal(after.live, N);
  for (int i = 0; i < N; i++)
    uvp_promise_release(p[i]);
}

/* A rewind after a reservation hands out the reserved slots again, in the
 * same order: carving restarts at the oldest chunk, so a burst the size of
 * the reservation never reaches the unreserved (unpopulated) tail of the
 * newest one.  Enough promises for several chunks. */
static void test_rewind_reuses_the_reserved_slots(void **state) {
  fixture_t *f = *state;
  enum { N = 6000 };
  static uvp_promise_t *p[N];
  static uvp_promise_t *first[N];
  assert_int_equal(uvp_ctx_reserve(f->ctx, N, 0), 0);
  uvp_ctx_stats_t before, after;
  assert_int_equal(uvp_ctx_stats(f->ctx, &before), 0);
  assert_true(before.slab_allocs >= 3);
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < N; i++) {
      assert_int_equal(uvp_promise_new(f->ctx, &p[i]), 0);
      if (round == 0)
        first[i] = p[i];
      else
        assert_ptr_equal(p[i], first[i]);
    }
    for (int i = 0; i < N; i++)
      uvp_promise_release(p[(size_t)i * 7919 % N]);
  }
  assert_int_equal(uvp_ctx_stats(f->ctx, &after), 0);
  assert_int_equal(after.slab_allocs, before.slab_allocs);
  assert_int_equal(after.slab_bytes, before.slab_bytes);
}

/* ---- giving memory back ----------------------------------------------------
 */

static uvp_ret_t count_one(void *arg, const uvp_outcome_t *in) {
  (void)in;
  (*(long *)arg)++;
  return uvp_ret_pass();
}

/* Issue 41: a burst's memory came back never.  After a burst of 200 000
 * promises with handlers, of which a few stay alive (scattered: one in
 * 20 000, so most slabs hold none), uvp_ctx_trim gives the slabs without
 * a live slot back to the allocator (counted through it, not assumed);
 * the survivors still work, and the next burst grows the pools again. */
static void test_trim_gives_a_burst_back(void **state) {
  (void)state;
  fixture_t *f = fixture_on(c_malloc, c_realloc, c_calloc, c_free);
  enum { N = 200000, EVERY = 20000 };
  static uvp_promise_t *all[N];
  static uvp_promise_t *keep[N / EVERY];
  long ran = 0;
  int kept = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(uvp_promise_new(f->ctx, &all[i]), 0);
    assert_int_equal(uvp_promise_then(all[i], count_one, &ran, NULL), 0);
  }
  for (int i = 0; i < N; i++) {
    if (i % EVERY == EVERY / 2) {
      keep[kept++] = all[i]; /* pending: its handler waits */
      continue;
    }
    assert_int_equal(uvp_promise_resolve(all[i], NULL, NULL), 0);
    uvp_promise_release(all[i]);
  }
  run_loop(f);
  uvp_ctx_stats_t grown, trimmed;
  assert_int_equal(uvp_ctx_stats(f->ctx, &grown), 0);
  assert_int_equal(grown.live, (size_t)kept);
  assert_true(grown.slab_bytes > (size_t)N * (PROMISE_BYTES + HANDLER_BYTES));
  assert_true(grown.slab_idle_bytes +
                  (size_t)kept * (PROMISE_BYTES + HANDLER_BYTES) >=
              grown.slab_bytes);
  long live_before = live;
  assert_int_equal(uvp_ctx_trim(f->ctx), 0);
  assert_int_equal(uvp_ctx_stats(f->ctx, &trimmed), 0);
  assert_true(live < live_before); /* chunks went back to the allocator */
  /* What stays: the slabs the survivors are in (at most one of each pool
   * per survivor, 2 MiB each at most) and the first ones. */
  printf("trim: slabs %zu -> %zu bytes (%zu idle -> %zu) for %d live\n",
         grown.slab_bytes, trimmed.slab_bytes, grown.slab_idle_bytes,
         trimmed.slab_idle_bytes, kept);
  assert_true(trimmed.slab_bytes < grown.slab_bytes / 2);
  assert_int_equal(trimmed.live, (size_t)kept);
  /* The survivors are intact: their handlers run when they settle. */
  for (int i = 0; i < kept; i++) {
    assert_int_equal(uvp_promise_resolve(keep[i], NULL, NULL), 0);
    uvp_promise_release(keep[i]);
  }
  run_loop(f);
  assert_int_equal(ran, N);
  /* Everything free now: a second trim gives back the rest. */
  assert_int_equal(uvp_ctx_trim(f->ctx), 0);
  assert_int_equal(uvp_ctx_stats(f->ctx, &trimmed), 0);
  assert_int_equal(trimmed.live, 0);
  assert_true(trimmed.slab_bytes <= 256 * sizeof(void *) + 1024);
  /* And the pools grow again for the next burst. */
  long sum = 0;
  burst(f, 50000, &sum);
  assert_int_equal(sum, 50000);
  fixture_off(f);
}

/* Trimming a pool whose free slots lie in every slab, some slabs half
 * full: the free list keeps exactly the free slots of the slabs that stay
 * (each handed out once more, none twice, none lost). */
static void test_trim_keeps_the_free_list_whole(void **state) {
  fixture_t *f = *state;
  enum { N = 30000 };
  static uvp_promise_t *p[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(uvp_promise_new(f->ctx, &p[i]), 0);
  /* Free all but the first 100 and every 997th: the first slab and a
   * few scattered slots stay in use. */
  int alive = 0;
  for (int i = 0; i < N; i++) {
    if (i < 100 || i % 997 == 0) {
      alive++;
      continue;
    }
    uvp_promise_release(p[(size_t)i * 7919 % N]);
    p[(size_t)i * 7919 % N] = NULL;
  }
  assert_int_equal(uvp_ctx_trim(f->ctx), 0);
  uvp_ctx_stats_t st;
  assert_int_equal(uvp_ctx_stats(f->ctx, &st), 0);
  assert_int_equal(st.live, (size_t)alive);
  /* Hand out as many as the slabs kept hold free: every one distinct, and
   * none the address of a survivor. */
  size_t room = st.slab_idle_bytes / PROMISE_BYTES, n = room < N ? room : N;
  static uvp_promise_t *q[N];
  for (size_t i = 0; i < n; i++)
    assert_int_equal(uvp_promise_new(f->ctx, &q[i]), 0);
  for (int i = 0; i < N; i++)
    for (size_t j = 0; p[i] != NULL && j < n; j += 1 + n / 64)
      assert_ptr_not_equal(p[i], q[j]);
  for (size_t i = 0; i < n; i++)
    uvp_promise_release(q[i]);
  for (int i = 0; i < N; i++)
    if (p[i] != NULL)
      uvp_promise_release(p[i]);
}

/* The layers' pools too: file operations, group members, fiber stacks. */
static uvp_ret_t idle_fiber(void *arg) {
  (void)arg;
  return uvp_ret_pass();
}

static void test_trim_the_layers(void **state) {
  fixture_t *f = *state;
  enum { OPS = 3000, MEMBERS = 5000, FIBERS = 200 };
  static uvp_promise_t *p[OPS];
  for (int i = 0; i < OPS; i++)
    assert_int_equal(uvp_fs_stat(f->ctx, "/", &p[i]), 0);
  uvp_group_t *g;
  assert_int_equal(uvp_group_new(f->ctx, NULL, &g), 0);
  for (int i = 0; i < MEMBERS; i++) {
    uvp_promise_t *m;
    assert_int_equal(uvp_promise_resolved(f->ctx, NULL, NULL, &m), 0);
    assert_int_equal(uvp_group_add(g, m), 0);
    uvp_promise_release(m);
  }
  for (int i = 0; i < FIBERS; i++) {
    uvp_promise_t *fp;
    assert_int_equal(uvp_fiber_spawn(f->ctx, idle_fiber, NULL, NULL, &fp), 0);
    uvp_promise_release(fp);
  }
  run_loop(f);
  for (int i = 0; i < OPS; i++)
    uvp_promise_release(p[i]);
  uvp_group_release(g);
  run_loop(f);
  uvp_ctx_stats_t before, after;
  assert_int_equal(uvp_ctx_stats(f->ctx, &before), 0);
  assert_int_equal(before.live, 0);
  assert_true(before.fiber_stacks > 0);
  assert_int_equal(uvp_ctx_trim(f->ctx), 0);
  assert_int_equal(uvp_ctx_stats(f->ctx, &after), 0);
  printf("trim, layers: slabs %zu -> %zu bytes, idle stacks %zu -> %zu\n",
         before.slab_bytes, after.slab_bytes, before.fiber_stacks,
         after.fiber_stacks);
  assert_true(after.slab_bytes <= 256 * sizeof(void *) + 1024);
  assert_int_equal(after.slab_idle_bytes, after.slab_bytes);
  assert_int_equal(after.fiber_stacks, 0);
  /* Still usable: an operation, a group, a fiber. */
  uvp_promise_t *st, *fp;
  assert_int_equal(uvp_fs_stat(f->ctx, "/", &st), 0);
  assert_int_equal(uvp_fiber_spawn(f->ctx, idle_fiber, NULL, NULL, &fp), 0);
  run_loop(f);
  assert_int_equal(uvp_promise_state(st), UVP_FULFILLED);
  assert_int_equal(uvp_promise_state(fp), UVP_FULFILLED);
  uvp_promise_release(st);
  uvp_promise_release(fp);
  /* Refused as any call on a closed context. */
  assert_int_equal(uvp_ctx_trim(NULL), UV_EINVAL);
  uvp_ctx_t *ctx = close_ctx(f);
  assert_int_equal(uvp_ctx_trim(ctx), UVP_ECLOSED);
}

static void test_reserve_bad_input(void **state) {
  fixture_t *f = *state;
  assert_int_equal(uvp_ctx_reserve(NULL, 1, 1), UV_EINVAL);
  assert_int_equal(uvp_ctx_reserve(f->ctx, 0, 0), 0);
  assert_int_equal(uvp_ctx_reserve_ops(NULL, 1), UV_EINVAL);
  assert_int_equal(uvp_ctx_reserve_ops(f->ctx, 0), 0);
  assert_int_equal(uvp_ctx_reserve_ops(f->ctx, 3), 0);
  assert_int_equal(uvp_ctx_close(f->ctx), 0);
  assert_int_equal(uvp_ctx_reserve_ops(f->ctx, 1), UVP_ECLOSED);
  f->ctx = NULL;
}

/* Counts no machine has the memory for: refused at once, with nothing
 * reserved (every reserved page is touched, so trying would end with the
 * OOM killer, malloc never failing first under overcommit), and the
 * context still reserves what it can have. */
static void test_reserve_beyond_memory(void **state) {
  fixture_t *f = *state;
  uvp_ctx_stats_t before, after;
  assert_int_equal(uvp_ctx_reserve_ops(f->ctx, 1), 0); /* the ops' state */
  assert_int_equal(uvp_ctx_stats(f->ctx, &before), 0);
  assert_int_equal(uvp_ctx_reserve(f->ctx, SIZE_MAX, 0), UV_ENOMEM);
#if SIZE_MAX > UINT32_MAX
  assert_int_equal(uvp_ctx_reserve(f->ctx, 0, SIZE_MAX / 64), UV_ENOMEM);
#else
  /* ILP32: SIZE_MAX / 64 reactions is 1 GiB, which a 32-bit process may
   * have; all of its address space it cannot. */
  assert_int_equal(uvp_ctx_reserve(f->ctx, 0, SIZE_MAX / HANDLER_BYTES),
                   UV_ENOMEM);
#endif
  assert_int_equal(uvp_ctx_reserve_ops(f->ctx, SIZE_MAX / 1024), UV_ENOMEM);
  assert_int_equal(uvp_ctx_stats(f->ctx, &after), 0);
  assert_int_equal(after.slab_bytes, before.slab_bytes);
  assert_int_equal(after.slab_allocs, before.slab_allocs);
  assert_int_equal(uvp_ctx_reserve(f->ctx, 5000, 5000), 0);
  assert_int_equal(uvp_ctx_reserve_ops(f->ctx, 500), 0);
  assert_int_equal(uvp_ctx_stats(f->ctx, &after), 0);
  assert_true(after.slab_bytes > before.slab_bytes);
}

#if defined(__linux__)
/* A memory control group (cgroup v1, the hierarchy libuv 1.44 reads) with
 * a limit far below the machine's memory, as a container has. */
#define MEMCG "/sys/fs/cgroup/memory/uvp-test-reserve"
#define MEMCG_LIMIT (256u << 20)

static bool write_text(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  bool ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
  return close(fd) == 0 && ok;
}

/* In the child: join the group, and see it as a container does (its own
 * cgroup namespace, the memory hierarchy mounted again inside a mount
 * namespace of its own), so that uv_get_constrained_memory reads the
 * group's limit.  Then reserve more than the limit allows and less than
 * the machine has.  Reports {setup errno, the limit seen, the two
 * reserves' codes}. */
static void reserve_in_memcg(int fd) {
  long r[4] = {0, 0, 1, 1};
  char pid[32];
  snprintf(pid, sizeof(pid), "%ld", (long)getpid());
  if (!write_text(MEMCG "/cgroup.procs", pid) ||
      unshare(CLONE_NEWNS | CLONE_NEWCGROUP) != 0 ||
      mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
      umount2("/sys/fs/cgroup/memory", MNT_DETACH) != 0 ||
      mount("uvp-test", "/sys/fs/cgroup/memory", "cgroup", 0, "memory") != 0)
    r[0] = errno != 0 ? errno : -1;
  if (r[0] == 0) {
    uv_loop_t loop;
    uvp_ctx_t *ctx;
    r[1] = (long)(uv_get_constrained_memory() >> 20);
    if (uv_loop_init(&loop) == 0 && uvp_ctx_new(&loop, &ctx) == 0) {
      /* 16 Mi promises: over 256 MiB, whatever a promise's size. */
      r[2] = uvp_ctx_reserve(ctx, (size_t)16 << 20, 0);
      r[3] = uvp_ctx_reserve(ctx, 10000, 10000);
      (void)uvp_ctx_close(ctx);
      (void)uv_run(&loop, UV_RUN_DEFAULT);
      (void)uv_loop_close(&loop);
    }
  }
  (void)!write(fd, r, sizeof(r));
}
#endif

/* In a container with a memory limit, a reservation beyond the limit is
 * refused at once, as one beyond the machine's memory is: touching it
 * would end with the group's OOM killer.  Needs root and a cgroup v1
 * memory hierarchy (else skipped). */
static void test_reserve_beyond_memcg_limit(void **state) {
  (void)state;
#if !defined(__linux__)
  SKIP_BECAUSE("not Linux: the limit is a cgroup's");
#else
  char limit[32];
  long r[4];
  int fd;
  if (geteuid() != 0 || uv_get_total_memory() < 4 * (uint64_t)MEMCG_LIMIT ||
      (mkdir(MEMCG, 0755) != 0 && errno != EEXIST)) {
    SKIP_BECAUSE("needs root, 1 GiB, and a cgroup v1 memory hierarchy at "
                 "/sys/fs/cgroup/memory");
  }
  snprintf(limit, sizeof(limit), "%u", MEMCG_LIMIT);
  assert_true(write_text(MEMCG "/memory.limit_in_bytes", limit));
  int status = test_in_child(reserve_in_memcg, &fd, NULL, 0);
  ssize_t got = read(fd, r, sizeof(r));
  close(fd);
  assert_int_equal(rmdir(MEMCG), 0);
  assert_true(WIFEXITED(status)); /* not killed by the group's OOM killer */
  assert_int_equal(got, sizeof(r));
  if (r[0] != 0) { /* a sandbox may forbid namespaces or mounts */
    SKIP_BECAUSE("the child could not enter the group: %s",
                 strerror((int)r[0]));
  }
  assert_int_equal(r[1], MEMCG_LIMIT >> 20);
  assert_int_equal(r[2], UV_ENOMEM);
  assert_int_equal(r[3], 0);
#endif
}

/* An allocator that aligns to 8 bytes and never to 16 (as C allows for
 * small sizes): the first 16-aligned address of malloc's block (malloc
 * aligns to 8 only on armhf) plus 24, with malloc's pointer at that
 * address and the size at 16. */
static void *a8_malloc(size_t n) {
  char *raw = malloc(n + 24 + 15);
  if (raw == NULL)
    return NULL;
  char *p = raw + (16 - (uintptr_t)raw % 16) % 16;
  *(char **)(void *)p = raw;
  *(size_t *)(void *)(p + 16) = n;
  return p + 24;
}
static void a8_free(void *p) {
  if (p != NULL)
    free(*(char **)(void *)((char *)p - 24));
}
static void *a8_calloc(size_t c, size_t n) {
  void *p = a8_malloc(c * n);
  if (p != NULL)
    memset(p, 0, c * n);
  return p;
}
static void *a8_realloc(void *p, size_t n) {
  void *q = a8_malloc(n);
  if (q != NULL && p != NULL) {
    size_t old = *(size_t *)(void *)((char *)p - 8);
    memcpy(q, p, old < n ? old : n);
    a8_free(p);
  }
  return q;
}

/* all marks its cells with 4 bits of the combinator's address: with an
 * allocator that hands out blocks 8 bytes off 16, all (and allSettled,
 * whose records share the layout) still work. */
static void test_combinators_with_an_8_byte_aligned_allocator(void **state) {
  (void)state;
  fixture_t *f = fixture_on(a8_malloc, a8_realloc, a8_calloc, a8_free);
  enum { N = 64 };
  uvp_promise_t *p[N], *all, *settled;
  for (int i = 0; i < N; i++)
    assert_int_equal(uvp_promise_new(f->ctx, &p[i]), 0);
  for (int round = 0; round < 3; round++) {
    assert_int_equal(uvp_promise_all(f->ctx, p, N, 0, &all), 0);
    assert_int_equal(uvp_promise_all_settled(f->ctx, p, N, &settled), 0);
    if (round == 0)
      for (int i = 0; i < N; i++)
        assert_int_equal(
            uvp_promise_resolve(p[i], (void *)(intptr_t)(i + 1), NULL), 0);
    run_loop(f);
    const uvp_values_t *v = uvp_promise_value(all);
    const uvp_settled_list_t *l = uvp_promise_value(settled);
    assert_non_null(v);
    assert_non_null(l);
    for (int i = 0; i < N; i++) {
      assert_int_equal((intptr_t)v->values[i], i + 1);
      assert_ptr_equal(l->items[i].promise, p[i]);
    }
    uvp_promise_release(all);
    uvp_promise_release(settled);
  }
  for (int i = 0; i < N; i++)
    uvp_promise_release(p[i]);
  fixture_off(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hot_path_never_allocates_once_warm),
      FIXTURE_TEST(test_reserve_means_no_allocation_later),
      FIXTURE_TEST(test_reserved_slots_are_not_pending),
      FIXTURE_TEST(test_reserve_bad_input),
      FIXTURE_TEST(test_reserve_beyond_memory),
      FIXTURE_TEST(test_pool_rewinds_once_empty),
      FIXTURE_TEST(test_rewind_reuses_the_reserved_slots),
      cmocka_unit_test(test_trim_gives_a_burst_back),
      FIXTURE_TEST(test_trim_keeps_the_free_list_whole),
      FIXTURE_TEST(test_trim_the_layers),
      cmocka_unit_test(test_reserve_ops_means_no_allocation_later),
      cmocka_unit_test(test_reserve_covers_the_run_queue),
      cmocka_unit_test(test_reserve_beyond_memcg_limit),
      cmocka_unit_test(test_slabs_prefault_a_window_ahead),
      cmocka_unit_test(test_queue_spills_when_ring_cannot_grow),
      cmocka_unit_test(test_combinators_with_an_8_byte_aligned_allocator),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
