/* Private to the flight recorder's writer: recorder-write.c (the entry),
 * recorder-json.c and recorder-text.c (one file per format), and
 * recorder-passes.c beneath them (what they read of the rings, the passes
 * over the records written, the output they go through).  What the
 * writer knows of the records and the entities they name; how the
 * passes run is in recorder-passes.c. */
#ifndef UVP_RECORDER_PASSES_H
#define UVP_RECORDER_PASSES_H

#include <string.h>

#include "diag.h"
#include "recorder.h"

#define NONE UINT32_MAX
#define LINE_CAP 16384
/* Lines go out in chunks of whole lines, a call of the sink's per chunk
 * rather than per line (a full ring is a million lines): at most PIPE_BUF
 * bytes to a descriptor written directly (diag.h: a pipe takes each
 * whole), CHUNK to a stream or a callback (a file's stream writes a
 * chunk that size at once, rather than a system call per 4 KiB). */
#define CHUNK 65536
#define STR_CAP 1100 /* a string read back from the ring */
/* `ts` counts from 1 s before the first record: its first at a round
 * time, and otherData's ts_origin_ns says where it is. */
#define TS_FROM 1000000000u /* ns */

/* Tracks (thread ids); a fiber's track is FIBER_TID0 + its number. */
enum { TID_LOOP = 1, TID_STALLS = 2, FIBER_TID0 = 3 };

/* What an id names. */
enum { E_FIBER, E_WORK, E_JOIN, E_GROUP, E_CAUSE, E_SPAN };
/* How a fiber stands, or stood at the first record written. */
enum { F_NONE, F_RUN, F_AWAIT };

typedef struct ent_s {
  uint8_t kind;     /* E_* */
  bool begun;       /* its beginning is among the records written */
  bool ended;       /* its end is */
  uint8_t at_first; /* a fiber begun before the records: F_RUN, F_AWAIT */
  /* The third pass's: its slice is open (written, not yet ended); a
   * fiber's inner slice F_*. */
  bool open;
  uint8_t now;
  bool settled, cut;
  bool ends_at_settle; /* a promise with a described hook: no end of its own */
  uint32_t num;        /* a fiber's number, or a work's or group's id */
  uint32_t cause;      /* the cause that cut it (an entity), or NONE */
  uint32_t first_resume; /* a fiber's first resume (a record), or NONE; a
                            cause's own record */
  uint32_t spawn;        /* a fiber's spawn (a record), or NONE */
  uint32_t cuts, flows;  /* a cause: what it cut, and the flows written */
  uint32_t stall;        /* a fiber's stall (a record), or NONE ... */
  bool stall_flow;       /* ... whose flow's end is written */
  const void *awaiting;  /* the third pass's: what a fiber awaits */
  const void *id, *p;    /* its id; a work's promise */
  const void *owner;     /* the group it answers to */
  const char *kind_lit;  /* a class's kind */
  const char *file;      /* its site */
  uint32_t line;
  int status; /* its promise's, once settled; a span's at its end */
  int code;   /* the cut's; a span's kind */
  uintptr_t desc_kind, desc_target, name; /* a span's name: its string */
} ent_t;

/* An open-addressing map from (namespace, id) to an entity. */
enum { NS_FIBER, NS_WORK, NS_PROMISE, NS_GROUP, NS_CAUSE, NS_AWAITED, NS_SPAN };
typedef struct map_s {
  uintptr_t *keys; /* 0: free */
  uint32_t *vals;
  uint8_t *ns;
  size_t cap, n; /* cap a power of two, at most half full */
} map_t;

/* A site's file, escaped (out_site). */
#define SITE_CACHE 64
typedef struct site_s {
  const char *file;
  size_t len;
  char text[192];
} site_t;

typedef struct writer_s {
  uvp_ctx_t *ctx;
  const uvp__rec_t *ring;
  size_t cap, first, count; /* the window: count records from first */
  uint64_t *t;              /* each record's time */
  uint32_t *ent, *ent2, *ent3, *tid;
  ent_t *ents;
  size_t nents, ents_cap;
  map_t map;
  uint32_t fibers, flows;
  uint64_t t0, t_end;
  uint64_t overwritten; /* records the ring no longer holds */
  uint64_t *last;       /* the last time written on each track (by tid) */
  size_t last_cap;
  bool loop_at_first_poll, loop_at_first_uvp;
  uint64_t stall_end;
  uvp__diag_t *w;
  size_t len, whole; /* buf's bytes, and those of whole lines */
  size_t chunk;      /* PIPE_BUF or CHUNK */
  char buf[LINE_CAP + CHUNK];
  char str[STR_CAP];
  site_t sites[SITE_CACHE];
} writer_t;

static inline const uvp__rec_t *rec_at(const writer_t *wr, size_t i) {
  return &wr->ring[(wr->first + i) % wr->cap];
}
static inline uint32_t fiber_tid(const ent_t *x) { return FIBER_TID0 + x->num; }

/* ---- output: whole lines into buf, handed to diag.h's writer in chunks */

static UVP__ALWAYS_INLINE void out(writer_t *wr, const char *s, size_t n) {
  /* A line is cut at LINE_CAP (room kept for its last "}}\n"). */
  if (UVP__UNLIKELY(n > LINE_CAP - 3 - (wr->len - wr->whole)))
    n = LINE_CAP - 3 - (wr->len - wr->whole);
  memcpy(wr->buf + wr->len, s, n);
  wr->len += n;
}
/* A literal. */
#define OUTL(wr, lit) out((wr), "" lit, sizeof(lit) - 1)
static inline void outs(writer_t *wr, const char *s) { out(wr, s, strlen(s)); }
/* The line is whole: it goes out with the chunk it completes. */
void uvp__rw_line_end(writer_t *wr);
void uvp__rw_u64(writer_t *wr, uint64_t v);
void uvp__rw_hex(writer_t *wr, const void *p); /* 0x... */
/* The string at position pos of the recorder's string ring into buf (cap
 * bytes, NUL-terminated): its length, or -1 if it was overwritten (or
 * never kept). */
int uvp__rw_read(const writer_t *wr, uintptr_t pos, char *buf, size_t cap);
/* The string at pos, or `instead` when it is overwritten (in wr->str
 * until the next call). */
const char *uvp__rw_str(writer_t *wr, uintptr_t pos, const char *instead);

/* The entity of id in namespace ns (NS_*), or NONE; a new one's: 0, or
 * UV_ENOMEM. */
uint32_t uvp__rw_get(const map_t *m, uint8_t ns, const void *id);
int uvp__rw_put(map_t *m, uint8_t ns, const void *id, uint32_t e);

/* A writer of what ctx's ring holds, each record timed (pass 1), its
 * window the last last_ms milliseconds (0: all); NULL without memory.
 * uvp__rw_entities: the entities (pass 2), for the JSON form: 0 or
 * UV_ENOMEM.  (recorder-passes.c.) */
writer_t *uvp__rw_new(uvp_ctx_t *ctx, uint64_t last_ms);
int uvp__rw_entities(writer_t *wr);
void uvp__rw_free(writer_t *wr);
/* The wall clock's time (ns since the epoch) at mono (ns of the clock
 * uv_hrtime reads, mono.h), to a microsecond; 0 if unknown. */
uint64_t uvp__rw_wall(uint64_t mono);
/* Lines written so far, whole, go out. */
void uvp__rw_flush(writer_t *wr);

/* The formats: every record held, after the passes (recorder-json.c,
 * recorder-text.c). */
void uvp__rw_json(writer_t *wr);
void uvp__rw_text(writer_t *wr);

#endif
