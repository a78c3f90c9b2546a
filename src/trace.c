/* Async stack traces (see trace.h; the contract is in uvp.h).
 *
 * The table of frames is static, as the table of sites is (site.c): frames
 * outlive contexts, interning never fails for want of memory (past
 * TRACE_MAX frames, new ones are not recorded and a chain stops there),
 * and it only grows, under the process-wide lock.  A frame's parent was
 * interned before it, so its id is smaller: every chain ends.  Each
 * context with traces on keeps a direct-mapped cache of frames so that
 * creating a promise takes no lock once its chains have been seen. */
#include "trace.h"

#include <string.h>

#include "alloc.h"
#include "promise.h"
#include "registry.h"
#include "site.h"

#define TRACE_MAX 16384               /* ids 1..TRACE_MAX-1; 0: none */
#define TRACE_BUCKETS (2 * TRACE_MAX) /* open addressing, at most half full */
#define TRACE_DEPTH 48 /* frames a chain grows to; deeper ones stop */
#define TRACE_FOLD 4   /* ancestors a new frame may repeat (intern_locked) */
#define CACHE_SIZE 256 /* entries of a context's cache, a power of two */

typedef struct {
  uint16_t site;
  uint16_t parent;
  uint8_t kind;
  uint8_t depth; /* frames from this one down, itself included */
} frame_t;

static frame_t frames[TRACE_MAX];
static uint16_t buckets[TRACE_BUCKETS]; /* ids; 0 is an empty bucket */
static unsigned nframes = 1;

/* A frame's key: site, parent and kind in the low 40 bits.  A cache entry
 * is the key shifted above the 16-bit id it maps to (a key is never 0 with
 * an id: site 0 is skipped, see uvp__trace_intern). */
static uint64_t key_of(uint16_t site, uvp__tkind_t kind, uint16_t parent) {
  return (uint64_t)site | (uint64_t)parent << 16 | (uint64_t)kind << 32;
}
_Static_assert(UVP__TK_COUNT <= 256, "a kind fits the key's 8 bits");

static uint32_t key_hash(uint64_t key) {
  return (uint32_t)((key * 0x9E3779B97F4A7C15u) >> 32);
}

/* Under the process lock. */
static uint16_t intern_locked(uint16_t site, uvp__tkind_t kind,
                              uint16_t parent) {
  /* A repeat of one of the few frames just below: that frame. */
  uint16_t a = parent;
  for (int i = 0; i < TRACE_FOLD && a != 0; i++, a = frames[a].parent)
    if (frames[a].site == site && frames[a].kind == kind)
      return a;
  if (parent != 0 && frames[parent].depth >= TRACE_DEPTH)
    return parent;
  uint64_t key = key_of(site, kind, parent);
  for (uint32_t b = key_hash(key);; b++) {
    uint16_t *slot = &buckets[b & (TRACE_BUCKETS - 1)];
    if (*slot == 0) {
      if (nframes >= TRACE_MAX)
        return parent;
      uint16_t id = (uint16_t)nframes++;
      frames[id] =
          (frame_t){site, parent, (uint8_t)kind,
                    (uint8_t)(parent != 0 ? frames[parent].depth + 1 : 1)};
      *slot = id;
      return id;
    }
    frame_t *f = &frames[*slot];
    if (f->site == site && f->parent == parent && f->kind == kind)
      return *slot;
  }
}

/* Names of fibers and groups (uvp__trace_named), interned as frames are:
 * copied once into a static arena, never freed, never allocated (past its
 * room, a chain shows no name).  A UVP__TK_NAME frame's site is an id
 * here. */
#define NAME_COUNT 4096               /* ids 1..NAME_COUNT-1; 0: none */
#define NAME_BYTES (64 * 1024)        /* 1024 names of 63 bytes, at least */
#define NAME_BUCKETS (2 * NAME_COUNT) /* open addressing */

static char name_bytes[NAME_BYTES];
static uint32_t name_at[NAME_COUNT]; /* offsets into name_bytes */
static uint16_t name_buckets[NAME_BUCKETS];
static unsigned nnames = 1;
static size_t name_used;

/* Under the process lock.  0: no room. */
static uint16_t name_intern_locked(const char *name) {
  size_t n = strlen(name);
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)name[i]) * 16777619u;
  for (uint32_t b = h;; b++) {
    uint16_t *slot = &name_buckets[b & (NAME_BUCKETS - 1)];
    if (*slot == 0) {
      if (nnames >= NAME_COUNT || n + 1 > NAME_BYTES - name_used)
        return 0;
      memcpy(name_bytes + name_used, name, n + 1);
      name_at[nnames] = (uint32_t)name_used;
      name_used += n + 1;
      *slot = (uint16_t)nnames++;
      return *slot;
    }
    if (strcmp(name_bytes + name_at[*slot], name) == 0)
      return *slot;
  }
}

uint16_t uvp__trace_named(uint16_t frame, const char *name) {
  if (frame == 0 || !uvp__process_lock())
    return frame;
  if (frames[frame].kind == UVP__TK_NAME) /* named before: renamed */
    frame = frames[frame].parent;
  uint16_t id = frame;
  if (name != NULL) {
    uint16_t nid = name_intern_locked(name);
    if (nid != 0)
      id = intern_locked(nid, UVP__TK_NAME, frame);
  }
  uvp__process_unlock();
  return id;
}

/* Per context while traces are on: the frames interned last, so that most
 * need no lock. */
typedef struct trace_state_s {
  uvp__ext_t ext;
  uint64_t cache[CACHE_SIZE];
} trace_state_t;

static void state_destroy(uvp__ext_t *ext) {
  uvp__free(UVP__CONTAINER_OF(ext, trace_state_t, ext));
}

static void state_stats(const uvp__ext_t *ext, uvp_ctx_stats_t *out) {
  (void)ext;
  (void)out;
}

uint16_t uvp__trace_intern(uvp_ctx_t *ctx, uint16_t site, uvp__tkind_t kind,
                           uint16_t parent) {
  if (site == 0) /* the site table is full: nothing to name */
    return parent;
  uint64_t key = key_of(site, kind, parent);
  trace_state_t *st = UVP__EXT_OF(ctx, UVP__EXT_TRACES, trace_state_t);
  uint64_t *entry = &st->cache[key_hash(key) & (CACHE_SIZE - 1)];
  if (UVP__LIKELY(*entry >> 16 == key))
    return (uint16_t)*entry;
  if (!uvp__process_lock())
    return parent;
  uint16_t id = intern_locked(site, kind, parent);
  uvp__process_unlock();
  *entry = key << 16 | id;
  return id;
}

int uvp__trace_set(uvp_ctx_t *ctx, bool on) {
  static const uvp__ext_t hooks = {.destroy = state_destroy,
                                   .stats = state_stats};
  uvp__ctx_head_t *h = uvp__head(ctx);
  if (on && h->ext[UVP__EXT_TRACES] == NULL &&
      UVP__EXT_MAKE(ctx, UVP__EXT_TRACES, trace_state_t, &hooks) == NULL)
    return UV_ENOMEM;
  if (!on && h->ext[UVP__EXT_TRACES] != NULL) {
    h->ext[UVP__EXT_TRACES]->destroy(h->ext[UVP__EXT_TRACES]);
    h->ext[UVP__EXT_TRACES] = NULL;
    h->trace = 0;
  }
  h->traces = on;
  return 0;
}

/* The frames of trace `id` (how many there are; the first `max` in out),
 * read under the lock: another thread may be interning meanwhile. */
static size_t collect(uint16_t id, uvp_trace_frame_t *out, size_t max) {
  static const char *const what[UVP__TK_COUNT] = {"promise", "then",  "fiber",
                                                  "await",   "group", "name"};
  frame_t f[TRACE_DEPTH + 1];
  size_t n = 0;
  if (id == 0 || !uvp__process_lock())
    return 0;
  for (; id != 0 && n <= TRACE_DEPTH; id = frames[id].parent)
    f[n++] = frames[id];
  uvp__process_unlock();
  for (size_t i = 0; i < n && i < max; i++) {
    out[i].what = what[f[i].kind];
    if (f[i].kind == UVP__TK_NAME) { /* read-only once interned */
      out[i].file = name_bytes + name_at[f[i].site];
      out[i].line = 0;
    } else {
      uvp__site_get(f[i].site, &out[i].file, &out[i].line);
    }
  }
  return n;
}

size_t uvp__trace_collect(uint16_t trace, uvp_trace_frame_t *out, size_t max) {
  return collect(trace, out, max);
}

void uvp__trace_print(FILE *stream, uint16_t trace, const char *indent) {
  uvp_trace_frame_t f[TRACE_DEPTH + 1];
  size_t n = collect(trace, f, TRACE_DEPTH + 1);
  for (size_t i = 0; i < n; i++) {
    bool named = strcmp(f[i].what, "name") == 0;
    if (named && i + 1 == n) { /* the chain stopped under it */
      fprintf(stream, "%sname \"%s\"\n", indent, f[i].file);
      continue;
    }
    const char *name = named ? f[i++].file : NULL;
    fprintf(stream, "%s%s%s%s%s at %s:%d\n", indent, f[i].what,
            name != NULL ? " \"" : "", name != NULL ? name : "",
            name != NULL ? "\"" : "", f[i].file != NULL ? f[i].file : "?",
            f[i].line);
  }
}

/* ---- public ------------------------------------------------------------ */

int uvp_ctx_set_traces(uvp_ctx_t *ctx, int on) {
  int rc = uvp__ctx_check(ctx);
  return rc != 0 ? rc : uvp__trace_set(ctx, on != 0);
}

size_t uvp_promise_trace(const uvp_promise_t *p, uvp_trace_frame_t *frames_out,
                         size_t max) {
  if (p == NULL || (frames_out == NULL && max != 0))
    return 0;
  return collect(p->trace, frames_out, max);
}

int uvp_promise_print_trace(const uvp_promise_t *p, FILE *stream) {
  if (p == NULL || stream == NULL)
    return UV_EINVAL;
  if (p->trace == 0)
    return UV_ENOENT;
  uvp__trace_print(stream, p->trace, "  ");
  return 0;
}
