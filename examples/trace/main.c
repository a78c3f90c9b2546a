/* uvp-trace: one timeline of a job that ran in several processes.
 *
 *   uvp-trace merge [-o OUT.json] [--svg OUT.svg] [--title TEXT] [NAME=]FILE...
 *   uvp-trace svg [-o OUT.svg] [--title TEXT] TRACE.json
 *
 * merge reads the flight recorder's files (UVP_RECORD_JSON, with spans:
 * uvp-fanout --trace, uvp-gateway --trace-dir) and writes one Chrome trace
 * (merge.c says how the clocks are lined up); svg draws one (svg.c). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
      "wall_origin_ns), then by the requests between the processes: a client\n"
      "span in A (begun t1, ended t4) and the span in B that served it (t2, "
      "t3)\n"
      "put B's clock at ((t2-t1)+(t3-t4))/2 from A's, within\n"
      "((t4-t1)-(t3-t2))/2.  For each pair of processes the request with the\n"
      "smallest bound counts; offsets go from the first FILE (the reference)\n"
      "along the pairs, their bounds adding up.  Each process's offset and "
      "bound\n"
      "are printed and written into the output's otherData (\"processes\"); a\n"
      "service that starts before its request, or ends after its reply, "
      "beyond\n"
      "the bounds is reported as inconsistent.  A process no request reaches\n"
      "keeps its wall clock.\n"
      "\n"
      "svg draws a trace (merged or not) as an SVG picture: a lane per "
      "process,\n"
      "its spans as bars, an arrow from each request to where it was served.\n"
      "\n"
      "  -o, --output FILE  where the JSON (merge) or SVG (svg) goes\n"
      "                     (default: standard output)\n"
      "  --svg FILE         merge: also draw the merged trace into FILE\n"
      "  --title TEXT       the picture's title\n"
      "  -h, --help         this text\n"
      "  --version          print the version (uvp's) and exit\n"
      "\n"
      "Exit status: 0 written, 1 a file could not be read or written, 2 usage\n"
      "error.  Inconsistencies are reported on standard error, not failed.\n");
}

/* One event a line, as the recorder writes. */
static int write_json(json_t *doc, FILE *out) {
  json_t *events = json_object_get(doc, "traceEvents"), *e;
  size_t i;
  fputs("{\"traceEvents\":[\n", out);
  json_array_foreach(events, i, e) {
    if (i > 0)
      fputc(',', out);
    if (json_dumpf(e, out, JSON_COMPACT | JSON_REAL_PRECISION(16)) != 0)
      return -1;
    fputc('\n', out);
  }
  fputs("],\"displayTimeUnit\":\"ns\",\"otherData\":", out);
  if (json_dumpf(json_object_get(doc, "otherData"), out,
                 JSON_COMPACT | JSON_REAL_PRECISION(16)) != 0)
    return -1;
  fputs("}\n", out);
  return ferror(out) ? -1 : 0;
}

static FILE *open_out(const char *path) {
  if (path == NULL || strcmp(path, "-") == 0)
    return stdout;
  FILE *f = fopen(path, "w");
  if (f == NULL)
    perror(path);
  return f;
}

static int close_out(FILE *f, const char *path) {
  int bad = ferror(f);
  if (f != stdout)
    bad |= fclose(f) != 0;
  else
    bad |= fflush(f) != 0;
  if (bad)
    fprintf(stderr, "uvp-trace: %s: write failed\n", path ? path : "stdout");
  return bad ? -1 : 0;
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
    json_t *doc = trace_load(argv[optind]);
    if (doc == NULL)
      return 1;
    FILE *out = open_out(output);
    int rc = out == NULL || trace_svg_write(doc, title, out) != 0;
    rc |= out != NULL && close_out(out, output) != 0;
    json_decref(doc);
    return rc;
  }
  if (nfiles < 1) {
    cli_usage_error("uvp-trace", "merge needs one FILE at least");
    return 2;
  }
  trace_merge_t m;
  if (trace_merge_load(&m, argv + optind, nfiles, stderr) != 0) {
    trace_merge_free(&m);
    return 1;
  }
  json_t *doc = trace_merge_doc(&m);
  trace_merge_print(&m, output == NULL || strcmp(output, "-") == 0 ? stderr
                                                                   : stdout);
  FILE *out = open_out(output);
  int rc = doc == NULL || out == NULL || write_json(doc, out) != 0;
  rc |= out != NULL && close_out(out, output) != 0;
  if (rc == 0 && svg != NULL) {
    FILE *f = open_out(svg);
    rc = f == NULL || trace_svg_write(doc, title, f) != 0;
    rc |= f != NULL && close_out(f, svg) != 0;
  }
  json_decref(doc);
  trace_merge_free(&m);
  return rc;
}
