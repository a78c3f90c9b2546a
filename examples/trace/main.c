/* uvp-trace: one timeline of a job that ran in several processes.
 *
 *   uvp-trace merge [-o OUT.json] [--svg OUT.svg] [--title TEXT] [NAME=]FILE...
 *   uvp-trace svg [-o OUT.svg] [--title TEXT] TRACE.json
 *
 * merge reads the flight recorder's files (UVP_RECORD_JSON, with spans:
 * uvp-fanout --trace, uvp-gateway --trace-dir) and writes one Chrome trace
 * (merge.c says how the clocks are lined up); svg draws one (svg.c). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "trace.h"
#include "uvp.h"

static void usage(void) {
  printf(
      "usage: uvp-trace merge [-o OUT.json] [--svg OUT.svg] [--title TEXT] "
      "[NAME=]FILE...\n"
      "       uvp-trace svg [-o OUT.svg] [--title TEXT] TRACE.json\n"
      "Merge the flight recorder's trace files of several processes "
      "(uvp-fanout\n"
      "--trace FILE, uvp-gateway --trace-dir DIR: Chrome trace JSON with "
      "spans)\n"
      "into one Chrome trace JSON, which https://ui.perfetto.dev opens (Open\n"
      "trace file): each FILE a process of its own, named NAME (default: the\n"
      "file's name), every event kept, and a flow (category \"request\") from\n"
      "each client span to the server or consumer span that served it.\n"
      "\n"
      "Clocks: each file is placed first by its wall clock (otherData's\n"
      "wall_origin_ns); files of one process (the same pid and monotonic "
      "clock)\n"
      "are one clock.  Then by the requests between the processes: a client\n"
      "span in A (begun t1, ended t4) and the span in B that served it (t2, "
      "t3)\n"
      "put B's clock minus A's within [t3-t4, t2-t1].  A process whose wall\n"
      "clock lies within every request's interval keeps it; else it gets the\n"
      "midpoint ((t2-t1)+(t3-t4))/2 of the request with the smallest bound\n"
      "((t4-t1)-(t3-t2))/2, offsets going from the first FILE (the "
      "reference)\n"
      "along the pairs, their bounds adding up.  A process no request "
      "reaches\n"
      "is placed by its messages (a producer span and the consumer span "
      "under\n"
      "it): a delivery does not precede its publish, which bounds the offset\n"
      "one way; its wall clock is kept if it fits, else the nearest offset "
      "that\n"
      "does.  A process nothing links keeps its wall clock and is reported\n"
      "UNALIGNED (in the table, otherData, its process label and the "
      "picture).\n"
      "Each process's offset and bound are printed once the output is "
      "written,\n"
      "and put into its otherData (\"processes\"); a service that starts "
      "before\n"
      "its request, or ends after its reply, beyond the bounds is reported "
      "as\n"
      "inconsistent.\n"
      "\n"
      "Each FILE is read one event at a time, twice (a pipe is copied to a\n"
      "temporary file): memory grows with the spans, not the events.  A ts "
      "that\n"
      "is not a number, a span id that is not 16 hex digits, wall_origin_ns\n"
      "outside [0, 2^62) are refused, the file and the event named.\n"
      "\n"
      "svg draws a trace (merged or not) as an SVG picture: a lane per "
      "process,\n"
      "its spans as bars, an arrow from each request to where it was served;\n"
      "a trace without spans gives a picture that says so.\n"
      "\n"
      "  -o, --output FILE  where the JSON (merge) or SVG (svg) goes\n"
      "                     (default: standard output)\n"
      "  --svg FILE         merge: also draw the merged trace into FILE\n"
      "  --title TEXT       the picture's title\n"
      "  -h, --help         this text\n"
      "  --version          print the version (uvp's) and exit\n"
      "\n"
      "Exit status: 0 written, 1 a file could not be read or written (an "
      "output\n"
      "not written whole is removed), 2 usage error.  Inconsistencies are\n"
      "reported, not failed.\n");
}

static int is_stdout(const char *path) {
  return path == NULL || strcmp(path, "-") == 0;
}

/* Where an output goes; a file is opened only once the inputs have been
 * read (a bad input leaves an old output as it was), and never over one
 * of them (ins: the inputs, open, n of them), which is read again. */
static FILE *open_out(const char *path, FILE *const *ins, int n) {
  if (is_stdout(path))
    return stdout;
  struct stat so, si;
  for (int i = 0; i < n && stat(path, &so) == 0; i++)
    if (ins[i] != NULL && fstat(fileno(ins[i]), &si) == 0 &&
        si.st_ino != 0 && /* 0: a system without inode numbers */
        si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
      fprintf(stderr, "uvp-trace: %s: is also an input\n", path);
      return NULL;
    }
  FILE *f = fopen(path, "w");
  if (f == NULL)
    fprintf(stderr, "uvp-trace: %s: %s\n", path, strerror(errno));
  return f;
}

/* Closed; a file that failed is removed, not left half written. */
static int close_out(FILE *f, const char *path, int failed) {
  if (f == NULL)
    return -1;
  int bad = ferror(f) != 0;
  if (f != stdout)
    bad |= fclose(f) != 0;
  else
    bad |= fflush(f) != 0;
  if (bad)
    fprintf(stderr, "uvp-trace: %s: write failed\n", path ? path : "stdout");
  if ((bad || failed) && !is_stdout(path) && remove(path) != 0)
    fprintf(stderr, "uvp-trace: %s: %s\n", path, strerror(errno));
  return bad || failed ? -1 : 0;
}

static int svg_event(void *arg, json_t *e, size_t index) {
  (void)index;
  return trace_svg_event(arg, e);
}

static int svg_mode(const char *in, const char *output, const char *title) {
  trace_svg_t *svg = trace_svg_new();
  FILE *f = trace_open(in);
  int rc = svg == NULL || f == NULL ||
           trace_stream(f, in, svg_event, svg, NULL) != 0;
  if (rc == 0) {
    FILE *out = open_out(output, &f, 1);
    int failed = out == NULL || trace_svg_write(svg, title, out) != 0;
    rc = close_out(out, output, failed) != 0;
  }
  if (f != NULL && fclose(f) != 0)
    rc = 1;
  if (svg == NULL)
    fprintf(stderr, "uvp-trace: out of memory\n");
  trace_svg_free(svg);
  return rc;
}

static int merge_mode(char **files, int n, const char *output,
                      const char *svg_path, const char *title) {
  trace_merge_t m;
  trace_svg_t *svg = NULL;
  FILE *report = is_stdout(output) ? stderr : stdout;
  if (trace_merge_load(&m, files, n, report) != 0) {
    trace_merge_free(&m);
    return 1;
  }
  FILE **ins = calloc((size_t)n, sizeof *ins);
  for (int i = 0; ins != NULL && i < n; i++)
    ins[i] = m.procs[i].in;
  if (ins == NULL || (svg_path != NULL && (svg = trace_svg_new()) == NULL))
    fprintf(stderr, "uvp-trace: out of memory\n");
  /* Both outputs opened before either is written: one that cannot be
   * leaves neither. */
  FILE *out = ins == NULL || (svg_path != NULL && svg == NULL)
                  ? NULL
                  : open_out(output, ins, n);
  FILE *pic =
      out != NULL && svg_path != NULL ? open_out(svg_path, ins, n) : NULL;
  int failed = out == NULL || (svg_path != NULL && pic == NULL) ||
               trace_merge_write(&m, out, svg) != 0 ||
               (pic != NULL && trace_svg_write(svg, title, pic) != 0);
  int rc = close_out(out, output, failed) != 0;
  if (svg_path != NULL)
    rc |= close_out(pic, svg_path, failed) != 0;
  if (rc == 0)
    trace_merge_print(&m, report);
  free(ins);
  trace_svg_free(svg);
  trace_merge_free(&m);
  return rc;
}

int main(int argc, char **argv) {
  enum { OPT_SVG = 256, OPT_TITLE, OPT_VERSION };
  static const struct option longopts[] = {
      {"output", required_argument, NULL, 'o'},
      {"svg", required_argument, NULL, OPT_SVG},
      {"title", required_argument, NULL, OPT_TITLE},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, OPT_VERSION},
      {NULL, 0, NULL, 0}};
  const char *shortopts = ":o:h", *output = NULL, *svg = NULL, *title = NULL;
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
    switch (c) {
    case 'o':
      output = optarg;
      break;
    case OPT_SVG:
      svg = optarg;
      break;
    case OPT_TITLE:
      title = optarg;
      break;
    case 'h':
      usage();
      return 0;
    case OPT_VERSION:
      printf("uvp-trace %s\n", uvp_version_string());
      return 0;
    default:
      cli_option_error("uvp-trace", c, argv, shortopts, longopts);
      return 2;
    }
  }
  const char *mode = optind < argc ? argv[optind++] : NULL;
  int nfiles = argc - optind;
  if (mode == NULL ||
      (strcmp(mode, "merge") != 0 && strcmp(mode, "svg") != 0)) {
    cli_usage_error("uvp-trace",
                    mode ? "unknown mode '%s' (merge or svg)"
                         : "a mode (merge or svg) is needed%s",
                    mode ? mode : "");
    return 2;
  }
  if (strcmp(mode, "svg") == 0) {
    if (nfiles != 1 || svg != NULL) {
      cli_usage_error("uvp-trace", "svg takes one TRACE.json%s",
                      svg ? ", and no --svg" : "");
      return 2;
    }
    return svg_mode(argv[optind], output, title);
  }
  if (nfiles < 1) {
    cli_usage_error("uvp-trace", "merge needs one FILE at least");
    return 2;
  }
  return merge_mode(argv + optind, nfiles, output, svg, title);
}
