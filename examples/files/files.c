/* uvp-files: a checksum of every regular file under a directory tree.
 *
 *   uvp-files [-j N] DIR
 *   uvp-files --help | --version
 *
 * A batch job on uvp's file-system wrappers, in three phases:
 *
 *   1. walk: uvp_fs_scandir on DIR and, as they are found, on every
 *      directory below it (those scans run concurrently on libuv's thread
 *      pool);
 *   2. read: every file through uvp_fs_read_file, at most N in flight, with
 *      uvp_promise_map (default N: uvp_pool_size(), the size of the thread
 *      pool every read runs on);
 *   3. report: one line per file on stdout, sorted by path (byte order),
 *
 *        <checksum>  <path>  <bytes>
 *        ERROR <NAME>  <path>
 *
 *      where NAME is libuv's error name (EACCES, ...).  A directory that
 *      cannot be read gets an ERROR line of its own.  Then a summary on
 *      stderr.
 *
 * The checksum is the CRC that POSIX cksum(1) prints, so any line can be
 * checked with `cksum FILE`.  Symbolic links are not followed (as find(1)
 * without -L) and, like other special files, are not listed, only counted
 * in the summary.  Each file is read whole, so memory peaks at about N
 * times the largest file.
 *
 * Exit status: 0 every file was read, 1 some could not be, 2 usage error.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "console-env.h"
#include "uvp.h"

/* ---- the checksum: POSIX cksum's CRC-32 --------------------------------- */

/* Polynomial 0x04C11DB7, most significant bit first, no initial value; the
 * data is followed by its length (least significant byte first, as few
 * bytes as it takes) and the result complemented. */
static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i << 24;
    for (int k = 0; k < 8; k++)
      c = (c & 0x80000000u) != 0 ? (c << 1) ^ 0x04C11DB7u : c << 1;
    crc_table[i] = c;
  }
}

static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n) {
  while (n-- > 0)
    crc = (crc << 8) ^ crc_table[(crc >> 24) ^ *p++];
  return crc;
}

static uint32_t cksum(const char *data, size_t len) {
  uint32_t crc = crc_update(0, (const unsigned char *)data, len);
  for (size_t n = len; n != 0; n >>= 8) {
    unsigned char byte = (unsigned char)(n & 0xff);
    crc = crc_update(crc, &byte, 1);
  }
  return ~crc;
}

/* ---- what the job collects ---------------------------------------------- */

typedef struct entry_s {
  char *path;
  int err;      /* < 0 when the walk already failed on it (a directory) */
  uint32_t crc; /* set by the read phase */
  uint64_t size;
} entry_t;

typedef struct job_s {
  uvp_ctx_t *ctx;
  entry_t *entries; /* files, and directories that could not be read */
  size_t count;
  size_t cap;
  size_t skipped; /* links and special files */
} job_t;

/* An example may stop at the first failed allocation. */
static void *xmalloc(size_t size) {
  void *p = malloc(size);
  if (p == NULL) {
    fprintf(stderr, "uvp-files: out of memory\n");
    exit(1);
  }
  return p;
}

static char *join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *path = xmalloc(a + 1 + b + 1);
  memcpy(path, dir, a);
  path[a] = '/';
  memcpy(path + a + 1, name, b + 1);
  return path;
}

/* Takes `path`. */
static void add_entry(job_t *job, char *path, int err) {
  if (job->count == job->cap) {
    job->cap = job->cap == 0 ? 64 : 2 * job->cap;
    entry_t *grown = realloc(job->entries, job->cap * sizeof(entry_t));
    if (grown == NULL) {
      fprintf(stderr, "uvp-files: out of memory\n");
      exit(1);
    }
    job->entries = grown;
  }
  entry_t *e = &job->entries[job->count++];
  memset(e, 0, sizeof(*e));
  e->path = path;
  e->err = err;
}

/* ---- phase 1: the walk -------------------------------------------------- */

/* What a handler of the walk needs: the job and the path it is about. */
typedef struct visit_s {
  job_t *job;
  char *path;
} visit_t;

static void visit(job_t *job, char *path, uv_dirent_type_t type);

/* Given the result of starting a request on `path` (rc, and its promise p
 * when rc is 0), attach `handler` for either outcome.  Takes `path`.
 * Nobody needs the derived promise, so we ask for none, and the handler
 * takes our reference (UVP_ON_TAKE): p lives until the handler has run. */
static void follow(job_t *job, char *path, int rc, uvp_promise_t *p,
                   uvp_then_cb handler) {
  visit_t *v = NULL;
  if (rc == 0) {
    v = xmalloc(sizeof(*v));
    v->job = job;
    v->path = path;
    rc = uvp_promise_on(p, UVP_ON_BOTH | UVP_ON_TAKE, handler, v, NULL);
  }
  if (rc != 0) {
    free(v);
    add_entry(job, path, rc);
  }
}

static uvp_ret_t on_scandir(void *arg, const uvp_outcome_t *in) {
  visit_t *v = arg;
  if (in->status < 0) {
    add_entry(v->job, v->path, in->status); /* e.g. ERROR EACCES  dir */
  } else {
    const uvp_dirents_t *d = in->value;
    for (size_t i = 0; i < d->count; i++)
      visit(v->job, join(v->path, d->items[i].name), d->items[i].type);
    free(v->path);
  }
  free(v);
  return uvp_ret_value(NULL, NULL);
}

/* Some file systems do not report entry types: ask lstat. */
static uvp_ret_t on_lstat(void *arg, const uvp_outcome_t *in) {
  visit_t *v = arg;
  if (in->status < 0) {
    add_entry(v->job, v->path, in->status);
  } else {
    const uv_stat_t *st = in->value; /* anything else is skipped */
    visit(v->job, v->path,
          S_ISDIR(st->st_mode)   ? UV_DIRENT_DIR
          : S_ISREG(st->st_mode) ? UV_DIRENT_FILE
                                 : UV_DIRENT_LINK);
  }
  free(v);
  return uvp_ret_value(NULL, NULL);
}

/* Takes `path`. */
static void visit(job_t *job, char *path, uv_dirent_type_t type) {
  uvp_promise_t *p = NULL;
  int rc;
  switch (type) {
  case UV_DIRENT_FILE:
    add_entry(job, path, 0);
    break;
  case UV_DIRENT_DIR:
    rc = uvp_fs_scandir(job->ctx, path, &p);
    follow(job, path, rc, p, on_scandir);
    break;
  case UV_DIRENT_UNKNOWN:
    rc = uvp_fs_lstat(job->ctx, path, &p);
    follow(job, path, rc, p, on_lstat);
    break;
  default: /* links, sockets, FIFOs, devices */
    job->skipped++;
    free(path);
    break;
  }
}

/* ---- phase 2: the reads ------------------------------------------------- */

/* Runs on the loop thread once a file is in memory.  The value it returns
 * is NULL: the checksum goes into the entry, and the buffer is freed with
 * the read's promise right after this handler, so only the files in flight
 * are ever in memory.  (A checksum of very large files would belong on the
 * thread pool, with uvp_work.) */
static uvp_ret_t on_file(void *arg, const uvp_outcome_t *in) {
  entry_t *e = arg;
  const uvp_buf_t *buf = in->value;
  e->crc = cksum(buf->base, buf->len);
  e->size = buf->len;
  return uvp_ret_value(NULL, NULL);
}

/* uvp_promise_map calls this for item i when a slot is free. */
static int start_read(void *arg, size_t i, uvp_promise_t **out) {
  job_t *job = arg;
  entry_t *e = &job->entries[i];
  if (e->err < 0)
    return e->err; /* the walk failed on it: this item fails, no I/O */
  uvp_promise_t *file;
  int rc = uvp_fs_read_file(job->ctx, e->path, 0, &file);
  if (rc != 0)
    return rc;
  /* A rejection (EACCES, EISDIR, ...) passes through to *out. */
  return uvp_promise_then_take(file, on_file, e, out);
}

static int by_path(const void *a, const void *b) {
  return strcmp(((const entry_t *)a)->path, ((const entry_t *)b)->path);
}

/* ---- main --------------------------------------------------------------- */

static int usage(void) {
  printf("usage: uvp-files [-j N] DIR\n"
         "  a cksum(1) CRC of every regular file under DIR, one line\n"
         "  per file sorted by path: \"<crc>  <path>  <bytes>\" or\n"
         "  \"ERROR <NAME>  <path>\"\n"
         "  -j N       files read at once (1..4096; default %zu, the size\n"
         "             of libuv's thread pool)\n"
         "  -h, --help this text\n"
         "  --version  print the version (uvp's) and exit\n",
         uvp_pool_size());
  return 0;
}

/* A usage error: one line, and where the usage is. */
#define usage_error(...) (cli_usage_error("uvp-files", __VA_ARGS__), 2)

static const char *plural(uint64_t n) { return n == 1 ? "" : "s"; }

enum { OPT_VERSION = 256 };

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, OPT_VERSION},
      {NULL, 0, NULL, 0},
  };
  static const char shortopts[] = ":hj:";
  size_t limit = uvp_pool_size();
  int opt;
  opterr = 0; /* cli_option_error says it in one line */
  while ((opt = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
    char *end;
    switch (opt) {
    case 'j':
      limit = (size_t)strtoul(optarg, &end, 10);
      if (*optarg < '0' || *optarg > '9' || *end != '\0' || limit < 1 ||
          limit > 4096) {
        fprintf(stderr, "uvp-files: -j wants a number from 1 to 4096\n");
        return 2;
      }
      break;
    case 'h':
      return usage();
    case OPT_VERSION:
      printf("uvp-files %s\n", uvp_version_string());
      return 0;
    default:
      cli_option_error("uvp-files", opt, argv, shortopts, longopts);
      return 2;
    }
  }
  if (optind == argc)
    return usage_error("no DIR given");
  if (optind < argc - 1)
    return usage_error("one DIR only: '%s' is one too many", argv[optind + 1]);

  /* "dir/" and "dir" name the same tree: print "dir/a", not "dir//a". */
  char *root = strdup(argv[optind]);
  if (root == NULL)
    return 1;
  for (size_t n = strlen(root); n > 1 && root[n - 1] == '/'; n--)
    root[n - 1] = '\0';

  crc_init();
  uv_loop_t loop;
  job_t job = {0};
  int rc = uv_loop_init(&loop);
  if (rc == 0)
    rc = uvp_ctx_new(&loop, &job.ctx);
  if (rc == 0)
    rc = tool_console_listen(job.ctx, "uvp-files", 0); /* UVP_CONSOLE */
  if (rc != 0) {
    fprintf(stderr, "uvp-files: %s\n", uvp_strerror(rc));
    free(root);
    return 1;
  }
  uint64_t t0 = uv_hrtime();

  /* 1. Walk.  The scans keep the loop running until the last directory
   * has been read and its handler has run. */
  visit(&job, root, UV_DIRENT_DIR);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (job.count > 0) /* an empty tree has no array, and qsort wants one */
    qsort(job.entries, job.count, sizeof(entry_t), by_path);

  /* 2. Read with bounded concurrency.  The map's result fulfils with one
   * outcome per entry, in entry order, whatever the order of completion. */
  uvp_map_opts_t opts = {.limit = limit};
  uvp_promise_t *all;
  rc = uvp_promise_map(job.ctx, job.count, start_read, &job, &opts, &all);
  if (rc != 0) {
    fprintf(stderr, "uvp-files: %s\n", uvp_strerror(rc));
    exit(1);
  }
  uv_run(&loop, UV_RUN_DEFAULT);

  /* 3. Report. */
  const uvp_settled_list_t *list = uvp_promise_value(all);
  uint64_t bytes = 0;
  for (size_t i = 0; i < list->count; i++) {
    const entry_t *e = &job.entries[i];
    if (list->items[i].status == 0) {
      printf("%" PRIu32 "  %s  %" PRIu64 "\n", e->crc, e->path, e->size);
      bytes += e->size;
    } else {
      printf("ERROR %s  %s\n", uvp_err_name(list->items[i].status), e->path);
    }
  }
  fflush(stdout);
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  fprintf(stderr,
          "uvp-files: %zu read (%" PRIu64 " byte%s), %zu failed, %zu link%s "
          "or special file%s skipped; %.3f s, -j %zu\n",
          list->fulfilled, bytes, plural(bytes), list->rejected, job.skipped,
          plural(job.skipped), plural(job.skipped), secs, limit);
  int status = list->rejected == 0 ? 0 : 1;

  /* Teardown: nothing is in flight any more, so closing the context and
   * running the loop once for uvp's handles leaves it empty. */
  uvp_promise_release(all);
  for (size_t i = 0; i < job.count; i++)
    free(job.entries[i].path);
  free(job.entries);
  uvp_ctx_close(job.ctx);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "uvp-files: the loop still has handles open\n");
    return 1;
  }
  return status;
}
