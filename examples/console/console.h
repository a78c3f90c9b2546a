/* uvp-console: what its parts share.  snap.c attaches to the programs'
 * sockets and turns their documents into rows; main.c reads the command
 * line and prints --once; screen.c is the live view (ncurses). */
#ifndef UVP_CONSOLE_TOOL_H
#define UVP_CONSOLE_TOOL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* One context's socket. */
typedef struct source_s {
  char *path;
  int fd;      /* -1: not attached */
  json_t *doc; /* its last snapshot, or NULL */
  bool gone;   /* the program went away */
} source_t;

/* The table's columns, in order. */
enum {
  COL_CTX,
  COL_ID,
  COL_KIND,
  COL_NAME,
  COL_STATE,
  COL_AGE,
  COL_WAIT,
  COL_BUSY, /* a fiber's time on the CPU (us), while the console listens */
  COL_IDLE, /* the rest of its age (us): parked, or queued to run */
  COL_GROUP,
  COL_DEADLINE,
  COL_SITE,
  NCOLS
};

typedef struct row_s {
  int src;      /* which source */
  json_t *task; /* borrowed from the source's doc */
  char col[NCOLS][160];
  long long num[NCOLS]; /* for the numeric columns: their value, -1 none */
} row_t;

typedef struct view_s {
  source_t *src;
  size_t nsrc;
  row_t *rows;
  size_t nrows, cap;
  int sort;     /* COL_* */
  bool reverse; /* descending */
  char filter[64];
  bool recorder; /* ask for the recorder's last events */
} view_t;

extern const char *const col_name[NCOLS];

/* Attach to path (and path.1, path.2, ... while they exist). 0, or -errno
 * of the first path's connect. */
int view_attach(view_t *v, const char *path);
/* Ask every attached source for a snapshot; false once every one is gone
 * (why: which went away, in *why). */
bool view_refresh(view_t *v, char *why, size_t cap);
/* Build v->rows from the documents, filtered and sorted. */
void view_rows(view_t *v);
void view_free(view_t *v);
/* "1.2s", "340ms", "-" for milliseconds (negative: none). */
void fmt_ms(char *buf, size_t cap, long long ms);
/* The same for microseconds: "850us" under a millisecond. */
void fmt_us(char *buf, size_t cap, long long us);
/* The key that sorts by column c: 1-9, 0, then - and =. */
char col_key(int c);
/* The selected row's async stack: the row's task, then the task that
 * awaits it, and so on up to the root (a task nothing listed awaits),
 * a line each into line[0..max); returns how many. */
size_t async_stack(const view_t *v, const row_t *r, char (*line)[256],
                   size_t max);
/* The panel's line for source i: program, pid, tasks by what, stalls. */
void panel_line(const view_t *v, size_t i, char *buf, size_t cap);
/* The warnings' lines of every source, one by one: *at from 0; false
 * once there are no more. */
bool warning_line(const view_t *v, size_t *at, char *buf, size_t cap);

/* The live view; returns the exit status. */
int screen_run(view_t *v, int interval_ms);

#endif
