/* Creation sites.  A promise remembers where it was created, for the
 * pending dump and the unhandled-rejection report, in two bytes: a
 * (file, line) pair is interned once per process into a 16-bit id (see
 * site.h for the per-context cache in front of it).
 *
 * The table is static: sites outlive contexts and allocator replacements,
 * and interning never fails for want of memory (past SITE_MAX distinct
 * sites, new ones are reported as unknown).  It only grows, under the
 * process-wide lock (uvp__process_lock);
 * each context keeps a small cache of ids (uvp__site) so that creating a
 * promise takes no lock.  Files are compared by address, which is what
 * __FILE__ gives a call site: two copies of one name are two sites that
 * print the same. */
#include "site.h"
#include "registry.h"

#define SITE_MAX UVP__SITE_MAX
#define SITE_BUCKETS (2 * SITE_MAX) /* open addressing, at most half full */

uvp__site_at_t uvp__site_table[SITE_MAX];
static uint16_t buckets[SITE_BUCKETS]; /* ids; 0 is an empty bucket */
static unsigned nsites = 1;

/* Every bit of file and line reaches the result (line is spread by the
 * first multiply, the address by the second). */
static uint32_t site_hash(const char *file, int line) {
  uint64_t h = ((uint64_t)(uintptr_t)file ^
                (uint64_t)(uint32_t)line * 0x9E3779B97F4A7C15u) *
               0xBF58476D1CE4E5B9u;
  return (uint32_t)(h >> 32);
}

static uint16_t intern(const char *file, int line) {
  if (!uvp__process_lock())
    return 0;
  uint16_t id = 0;
  for (uint32_t b = site_hash(file, line);; b++) {
    uint16_t *slot = &buckets[b & (SITE_BUCKETS - 1)];
    if (*slot == 0) {
      if (nsites < SITE_MAX) {
        id = (uint16_t)nsites++;
        uvp__site_table[id].file = file;
        uvp__site_table[id].line = line;
        *slot = id;
      }
      break;
    }
    if (uvp__site_table[*slot].file == file &&
        uvp__site_table[*slot].line == line) {
      id = *slot;
      break;
    }
  }
  uvp__process_unlock();
  return id;
}

/* The newest site takes the set's first entry; the one it displaces
 * moves to the second. */
uint16_t uvp__site_miss(uvp__sites_t *cache, uvp__site_entry_t *set,
                        const char *file, int line) {
  uint16_t id = intern(file, line);
  cache->misses++;
  set[1] = set[0];
  set[0].file = file;
  set[0].line = line;
  set[0].id = id;
  return id;
}

void uvp__site_get(uint16_t id, const char **file, int *line) {
  const char *f = NULL;
  int l = 0;
  if (id != 0 && id < SITE_MAX && uvp__process_lock()) {
    f = uvp__site_table[id].file;
    l = uvp__site_table[id].line;
    uvp__process_unlock();
  }
  if (file != NULL)
    *file = f;
  if (line != NULL)
    *line = l;
}
