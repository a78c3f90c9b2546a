/* uvp-console: attach to running uvp programs' live consoles
 * (uvp_console_listen, or a tool run with UVP_CONSOLE=PATH) and show
 * their tasks: live on the terminal (screen.c), or one snapshot with
 * --once, as text or JSON, for scripts and bug reports. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uvp.h>

#include "cli.h"
#include "console.h"

#define TOOL "uvp-console"

static void usage(FILE *out) {
  fprintf(
      out,
      "Usage: " TOOL " [OPTION]... [PATH]...\n"
      "Show the tasks of running uvp programs live: each PATH is a\n"
      "program's console socket (uvp_console_listen; the tools serve it\n"
      "at $UVP_CONSOLE), with PATH.1, PATH.2, ... (a gateway's further\n"
      "workers) when they exist.  No PATH: $UVP_CONSOLE.\n"
      "\n"
      "  -1, --once           print one snapshot and exit\n"
      "  -j, --json           with --once: the programs' JSON documents,\n"
      "                       one a line, as they sent them\n"
      "  -i, --interval=MS    refresh every MS milliseconds (250)\n"
      "  -r, --recorder       also ask for the flight recorder's last\n"
      "                       events (the live view's 'e' does too)\n"
      "  -h, --help           this help\n"
      "  -V, --version        the version\n"
      "\n"
      "Keys: 1-9, 0, - and = sort by that column (again: reverse), / filter\n"
      "(Enter ends it, Esc clears it), Up/Down select, Enter details,\n"
      "e recorder events, p pause, q quit.\n"
      "\n"
      "Exit status: 0 once the programs went away or on q, 1 when a\n"
      "socket cannot be attached to, 2 on a usage error.\n");
}

/* --once, as text: the panel, the table, the warnings. */
static void print_text(view_t *v) {
  char line[1024];
  for (size_t i = 0; i < v->nsrc; i++)
    if (v->src[i].doc != NULL) {
      panel_line(v, i, line, sizeof(line));
      printf("%s\n", line);
    }
  printf("%-3s %-18s %-8s %-12s %-40s %7s %7s %7s %7s %-28s %8s %s\n", "CTX",
         "ID", "KIND", "NAME", "STATE", "AGE", "WAIT", "BUSY", "IDLE", "GROUP",
         "DEADLINE", "SITE");
  for (size_t i = 0; i < v->nrows; i++) {
    const row_t *r = &v->rows[i];
    printf("%-3s %-18s %-8s %-12.12s %-40.40s %7s %7s %7s %7s %-28.28s %8s "
           "%s\n",
           r->col[COL_CTX], r->col[COL_ID], r->col[COL_KIND], r->col[COL_NAME],
           r->col[COL_STATE], r->col[COL_AGE], r->col[COL_WAIT],
           r->col[COL_BUSY], r->col[COL_IDLE], r->col[COL_GROUP],
           r->col[COL_DEADLINE], r->col[COL_SITE]);
  }
  size_t at = 0;
  bool any = false;
  while (warning_line(v, &at, line, sizeof(line))) {
    if (!any)
      printf("warnings:\n");
    any = true;
    printf("  %s\n", line);
  }
}

static void print_json(view_t *v) {
  for (size_t i = 0; i < v->nsrc; i++)
    if (v->src[i].doc != NULL) {
      char *s = json_dumps(v->src[i].doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
      if (s != NULL)
        printf("%s\n", s);
      free(s);
    }
}

/* Attach to each path (none: $UVP_CONSOLE); false, said so, if one
 * cannot be. */
static bool attach_all(view_t *v, char **paths, int n, const char *env) {
  for (int i = 0; i < n || (i == 0 && n == 0); i++) {
    const char *path = n > 0 ? paths[i] : env;
    int rc = view_attach(v, path);
    if (rc != 0) {
      fprintf(stderr, TOOL ": %s: cannot attach: %s\n", path, strerror(-rc));
      view_free(v);
      return false;
    }
  }
  return true;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"once", no_argument, NULL, '1'},
      {"json", no_argument, NULL, 'j'},
      {"interval", required_argument, NULL, 'i'},
      {"recorder", no_argument, NULL, 'r'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  const char *shortopts = ":1ji:rhV";
  bool once = false, json = false;
  int interval = 250;
  view_t v = {.sort = COL_AGE, .reverse = true};
  opterr = 0;
  for (int c; (c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1;) {
    char *end;
    switch (c) {
    case '1':
      once = true;
      break;
    case 'j':
      json = true;
      break;
    case 'r':
      v.recorder = true;
      break;
    case 'i':
      interval = (int)strtol(optarg, &end, 10);
      if (*end != '\0' || interval < 10 || interval > 60000) {
        cli_usage_error(TOOL, "--interval: %s is not from 10 to 60000 ms",
                        optarg);
        return 2;
      }
      break;
    case 'h':
      usage(stdout);
      return 0;
    case 'V':
      printf(TOOL " %s\n", uvp_version_string());
      return 0;
    default:
      cli_option_error(TOOL, c, argv, shortopts, longopts);
      return 2;
    }
  }
  if (json && !once) {
    cli_usage_error(TOOL, "--json goes with --once");
    return 2;
  }
  const char *env = getenv("UVP_CONSOLE");
  if (optind == argc && (env == NULL || env[0] == '\0')) {
    cli_usage_error(TOOL, "no PATH, and UVP_CONSOLE is not set");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a program gone: its write fails, said so */
  if (!attach_all(&v, argv + optind, argc - optind, env))
    return 1;
  int status = 0;
  if (once) {
    char why[4200] = "";
    if (!view_refresh(&v, why, sizeof(why))) {
      fprintf(stderr, TOOL ": %s\n", why);
      status = 1;
    } else if (json) {
      print_json(&v);
    } else {
      view_rows(&v);
      print_text(&v);
    }
  } else {
    status = screen_run(&v, interval);
  }
  view_free(&v);
  return status;
}
