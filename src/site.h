/* Private to src/: creation sites.  A promise names where it was created in
 * two bytes: a (file, line) pair is interned once per process into a
 * 16-bit id, and each context caches the ids of the sites it used lately
 * so that creating a promise takes no lock. */
#ifndef UVP_SITE_H
#define UVP_SITE_H

#include "base.h"

typedef struct {
  const char *file;
  int line;
  uint16_t id;
} uvp__site_entry_t;

/* A context's cache: UVP__SITE_SETS sets of two entries.  A site's set is
 * its file's hash plus its line, so the sites of one function (lines
 * within UVP__SITE_SETS of each other) never evict each other.  An empty
 * entry (NULL, 0) answers 0, the unknown site.  Loop thread only. */
#define UVP__SITE_SETS 64 /* a power of two */
typedef struct uvp__sites_s {
  uvp__site_entry_t entries[2 * UVP__SITE_SETS];
  size_t misses; /* lookups that went to the process-wide table */
} uvp__sites_t;

static inline uint32_t uvp__site_set(const char *file, int line) {
  uint32_t f =
      (uint32_t)((uint64_t)(uintptr_t)file * 0x9E3779B97F4A7C15u >> 40);
  return (f + (uint32_t)line) & (UVP__SITE_SETS - 1);
}

uint16_t uvp__site_miss(uvp__sites_t *cache, uvp__site_entry_t *set,
                        const char *file, int line);

/* Site (file, line)'s entry if it is the first of its set (the site used
 * last of those sharing the set), else NULL: uvp__site without the call
 * a miss makes, for the fast paths that need no stack frame. */
static UVP__ALWAYS_INLINE const uvp__site_entry_t *
uvp__site_first(const uvp__sites_t *cache, const char *file, int line) {
  const uvp__site_entry_t *set = &cache->entries[2 * uvp__site_set(file, line)];
  return UVP__LIKELY(set[0].file == file && set[0].line == line) ? set : NULL;
}

/* The id of site (file, line). */
static inline uint16_t uvp__site(uvp__sites_t *cache, const char *file,
                                 int line) {
  uvp__site_entry_t *set = &cache->entries[2 * uvp__site_set(file, line)];
  if (UVP__LIKELY(set[0].file == file && set[0].line == line))
    return set[0].id;
  if (set[1].file == file && set[1].line == line)
    return set[1].id;
  return uvp__site_miss(cache, set, file, line);
}

/* The file and line of site `id` (NULL and 0 for 0, the unknown site). */
void uvp__site_get(uint16_t id, const char **file, int *line);

/* The table behind the ids (site.c).  An entry is written once, under the
 * process lock, before its id is handed out, and never changes after: so
 * a thread reads the entry of an id it was given (through its context's
 * cache, or from a promise of its context) without the lock, and without
 * a call where a site is named on a fast path (a fiber's sites, as it
 * switches with the stall detector on, and its stack's overflow report,
 * async-signal-safe).  Entry 0 is (NULL, 0). */
#define UVP__SITE_MAX 16384 /* ids 1..UVP__SITE_MAX-1; 0 is "unknown" */
typedef struct uvp__site_at_s {
  const char *file;
  int line;
} uvp__site_at_t;
extern uvp__site_at_t uvp__site_table[UVP__SITE_MAX];
static inline uvp__site_at_t uvp__site_known(uint16_t id) {
  return uvp__site_table[id < UVP__SITE_MAX ? id : 0];
}

#endif
