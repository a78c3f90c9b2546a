/* uvp-console's live view (ncurses): the panel of each program, the task
 * table refreshed every interval, sorted and filtered by keys, a task's
 * details, the warnings and the recorder's last events. */
#include <curses.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "console.h"

#define MAX_WARNINGS 5
#define MAX_EVENTS 8
#define KEY_ESC 27

typedef struct ui_s {
  view_t *v;
  char selected[160]; /* the selected task's id ("" none) */
  size_t sel;         /* its row */
  bool details, paused, filtering, events;
  char status[4200];
} ui_t;

static const int width[NCOLS] = {4, 16, 8, 12, 40, 7, 7, 7, 7, 20, 9, 0};

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void draw_header(ui_t *u, int y) {
  attron(A_BOLD | A_UNDERLINE);
  move(y, 0);
  clrtoeol();
  for (int c = 0; c < NCOLS; c++) {
    char h[48];
    snprintf(h, sizeof(h), "%c%s%s", col_key(c), col_name[c],
             c == u->v->sort ? (u->v->reverse ? "v" : "^") : "");
    if (width[c] > 0)
      printw("%-*.*s ", width[c], width[c], h);
    else
      printw("%s", h);
  }
  attroff(A_BOLD | A_UNDERLINE);
}

static void draw_row(const row_t *r, int y, bool selected) {
  if (selected)
    attron(A_REVERSE);
  move(y, 0);
  clrtoeol();
  for (int c = 0; c < NCOLS; c++) {
    bool right = c == COL_AGE || c == COL_WAIT || c == COL_BUSY ||
                 c == COL_IDLE || c == COL_DEADLINE;
    if (width[c] == 0)
      printw("%.*s", COLS > 0 ? COLS : 80, r->col[c]);
    else if (right)
      printw("%*.*s ", width[c], width[c], r->col[c]);
    else
      printw("%-*.*s ", width[c], width[c], r->col[c]);
  }
  if (selected)
    attroff(A_REVERSE);
}

/* The table's rows from y to bottom (exclusive), the selection in view. */
static void draw_table(ui_t *u, int y, int bottom) {
  view_t *v = u->v;
  int rows = bottom - y;
  size_t first = 0;
  if (rows > 0 && u->sel >= (size_t)rows)
    first = u->sel - (size_t)rows + 1;
  for (int i = 0; i < rows; i++) {
    size_t k = first + (size_t)i;
    if (k < v->nrows)
      draw_row(&v->rows[k], y + i, k == u->sel && u->selected[0] != '\0');
    else {
      move(y + i, 0);
      clrtoeol();
    }
  }
}

/* The selected task's details: its JSON, its groups as a tree. */
static void draw_details(ui_t *u, int y, int bottom) {
  view_t *v = u->v;
  for (int i = y; i < bottom; i++) {
    move(i, 0);
    clrtoeol();
  }
  if (u->sel >= v->nrows) {
    mvprintw(y, 0, "(the task has ended)");
    return;
  }
  const row_t *r = &v->rows[u->sel];
  json_t *groups = json_object_get(r->task, "groups");
  mvprintw(y++, 0, "%s %s %s at %s", r->col[COL_KIND], r->col[COL_NAME],
           r->col[COL_ID], r->col[COL_SITE]);
  size_t depth = json_array_size(groups);
  for (size_t i = 0; i < depth && y < bottom; i++)
    mvprintw(y++, 0, "%*s%s", (int)(2 * (depth - i)), "",
             json_string_value(json_array_get(groups, depth - 1 - i)));
  char stack[16][256];
  size_t n = async_stack(v, r, stack, 16);
  if (y < bottom)
    mvprintw(y++, 0, "async stack:");
  for (size_t i = 0; i < n && y < bottom; i++)
    mvprintw(y++, 0, "  #%zu %.*s", i, COLS > 6 ? COLS - 6 : 0, stack[i]);
  char *s = json_dumps(r->task, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  for (char *line = s, *nl; line != NULL && y < bottom; line = nl) {
    nl = strchr(line, '\n');
    if (nl != NULL)
      *nl++ = '\0';
    mvprintw(y++, 0, "%.*s", COLS, line);
  }
  free(s);
}

static int draw_events(ui_t *u, int bottom) {
  json_t *last = NULL;
  for (size_t i = 0; i < u->v->nsrc && last == NULL; i++)
    last = json_object_get(
        json_object_get(json_object_get(u->v->src[i].doc, "panel"), "recorder"),
        "last");
  size_t n = json_array_size(last);
  if (!u->events)
    return bottom;
  if (n > MAX_EVENTS)
    n = MAX_EVENTS;
  int y = bottom - (int)n - 1;
  mvprintw(y, 0, "recorder's last events%s", last == NULL ? ": off" : ":");
  clrtoeol();
  size_t total = json_array_size(last);
  for (size_t i = 0; i < n; i++) {
    mvprintw(y + 1 + (int)i, 0, "  %.*s", COLS - 2,
             json_string_value(json_array_get(last, total - n + i)));
    clrtoeol();
  }
  return y;
}

static int draw_warnings(ui_t *u, int bottom) {
  char line[1024];
  size_t at = 0, n = 0;
  while (n < MAX_WARNINGS && warning_line(u->v, &at, line, sizeof(line)))
    n++;
  if (n == 0)
    return bottom;
  int y = bottom - (int)n - 1;
  attron(A_BOLD);
  mvprintw(y, 0, "warnings:");
  clrtoeol();
  attroff(A_BOLD);
  at = 0;
  for (size_t i = 0; i < n && warning_line(u->v, &at, line, sizeof(line));
       i++) {
    mvprintw(y + 1 + (int)i, 0, "  ! %.*s", COLS - 4, line);
    clrtoeol();
  }
  return y;
}

static void draw(ui_t *u) {
  view_t *v = u->v;
  int y = 0;
  attron(A_REVERSE);
  mvprintw(y++, 0, "uvp-console  %zu tasks%s%s%s  sort %s%s  %s", v->nrows,
           v->filter[0] != '\0' || u->filtering ? "  filter: " : "", v->filter,
           u->filtering ? "_" : "", col_name[v->sort],
           v->reverse ? " (desc)" : "", u->paused ? "  PAUSED" : "");
  clrtoeol();
  attroff(A_REVERSE);
  char line[1024];
  for (size_t i = 0; i < v->nsrc && y < 5; i++) {
    if (v->src[i].doc == NULL)
      continue;
    panel_line(v, i, line, sizeof(line));
    mvprintw(y++, 0, "%.*s", COLS, line);
    clrtoeol();
  }
  int bottom = LINES - 1;
  bottom = draw_events(u, bottom);
  bottom = draw_warnings(u, bottom);
  draw_header(u, y++);
  if (u->details)
    draw_details(u, y, bottom);
  else
    draw_table(u, y, bottom);
  mvprintw(LINES - 1, 0, "%.*s", COLS,
           u->status[0] != '\0'
               ? u->status
               : "q quit  1-= sort  / filter  Up/Down select  Enter details"
                 "  e events  p pause");
  clrtoeol();
  refresh();
}

/* After new rows: the selected task's row, by its id. */
static void reselect(ui_t *u) {
  view_t *v = u->v;
  for (size_t i = 0; i < v->nrows && u->selected[0] != '\0'; i++)
    if (strcmp(v->rows[i].col[COL_ID], u->selected) == 0) {
      u->sel = i;
      return;
    }
  if (u->sel >= v->nrows)
    u->sel = v->nrows > 0 ? v->nrows - 1 : 0;
  if (u->selected[0] != '\0' && u->sel < v->nrows)
    snprintf(u->selected, sizeof(u->selected), "%s",
             v->rows[u->sel].col[COL_ID]);
}

static void move_sel(ui_t *u, int d) {
  view_t *v = u->v;
  if (v->nrows == 0)
    return;
  if (u->selected[0] == '\0')
    u->sel = 0;
  else if (d < 0 && u->sel > 0)
    u->sel--;
  else if (d > 0 && u->sel + 1 < v->nrows)
    u->sel++;
  snprintf(u->selected, sizeof(u->selected), "%s", v->rows[u->sel].col[COL_ID]);
}

static void filter_key(ui_t *u, int ch) {
  size_t n = strlen(u->v->filter);
  if (ch == '\n' || ch == KEY_ENTER)
    u->filtering = false;
  else if (ch == KEY_ESC) {
    u->filtering = false;
    u->v->filter[0] = '\0';
  } else if ((ch == KEY_BACKSPACE || ch == 127 || ch == 8) && n > 0)
    u->v->filter[n - 1] = '\0';
  else if (ch >= 0x20 && ch < 0x7f && n + 1 < sizeof(u->v->filter)) {
    u->v->filter[n] = (char)ch;
    u->v->filter[n + 1] = '\0';
  }
}

/* One key; false: quit. */
static bool key(ui_t *u, int ch) {
  view_t *v = u->v;
  if (u->filtering) {
    filter_key(u, ch);
    return true;
  }
  int c = 0;
  while (c < NCOLS && col_key(c) != ch)
    c++;
  if (c < NCOLS) {
    v->reverse = c == v->sort ? !v->reverse : false;
    v->sort = c;
  } else if (ch == 'q' || ch == 'Q') {
    return false;
  } else if (ch == '/') {
    u->filtering = true;
  } else if (ch == KEY_UP || ch == 'k') {
    move_sel(u, -1);
  } else if (ch == KEY_DOWN || ch == 'j') {
    move_sel(u, 1);
  } else if (ch == '\n' || ch == KEY_ENTER) {
    u->details = !u->details && u->selected[0] != '\0';
  } else if (ch == KEY_ESC) {
    u->details = false;
    u->selected[0] = '\0';
  } else if (ch == 'e') {
    u->events = !u->events;
    v->recorder = u->events;
  } else if (ch == 'p') {
    u->paused = !u->paused;
  }
  return true;
}

int screen_run(view_t *v, int interval_ms) {
  ui_t u = {.v = v};
  char why[4200] = "";
  if (!view_refresh(v, why, sizeof(why))) {
    fprintf(stderr, "uvp-console: %s\n", why);
    return 1;
  }
  if (initscr() == NULL)
    return 1;
  cbreak();
  noecho();
  keypad(stdscr, TRUE);
  set_escdelay(25);
  curs_set(0);
  long long last = now_ms();
  view_rows(v);
  for (;;) {
    reselect(&u);
    draw(&u);
    long long wait = last + interval_ms - now_ms();
    timeout(wait > 0 ? (int)wait : 0);
    int ch = getch();
    if (ch != ERR && !key(&u, ch))
      break;
    if (now_ms() - last >= interval_ms && !u.paused) {
      last = now_ms();
      if (!view_refresh(v, why, sizeof(why))) {
        endwin();
        fprintf(stderr, "uvp-console: %s\n", why);
        return 0;
      }
      snprintf(u.status, sizeof(u.status), "%s", why);
    }
    view_rows(v);
  }
  endwin();
  return 0;
}
