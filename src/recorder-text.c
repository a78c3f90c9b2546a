/* The flight recorder's text form (uvp_ctx_recorder_write's
 * UVP_RECORD_TEXT): a line per record, in the order written, for people:
 * `SECONDS.MICROS TRACK: WHAT`.  It needs none of the writer's passes but
 * the first (the times). */
#include <stdio.h>

#include "recorder-passes.h"

/* "started", or "resumed (STATUS)". */
static void resumed(writer_t *wr, bool starts, int code) {
  if (starts) {
    OUTL(wr, "started");
    return;
  }
  OUTL(wr, "resumed (");
  outs(wr, code == 0 ? "fulfilled" : uvp_err_name(code));
  OUTL(wr, ")");
}

/* `what`, then the id. */
static void named(writer_t *wr, const char *what, const void *id) {
  outs(wr, what);
  uvp__rw_hex(wr, id);
}

/* The time and the track. */
static void text_head(writer_t *wr, const uvp__rec_t *r, uint64_t t) {
  uvp__rw_u64(wr, t / 1000000000u);
  char frac[8] = {'.'};
  uint64_t us = t / 1000 % 1000000;
  for (int k = 6; k >= 1; k--, us /= 10)
    frac[k] = (char)('0' + us % 10);
  out(wr, frac, 7);
  if (r->t & UVP__REC_GUESS)
    out(wr, "~", 1);
  if (r->track != NULL) {
    named(wr, " fiber ", r->track);
    OUTL(wr, ": ");
  } else {
    OUTL(wr, " loop: ");
  }
}

/* Something begun at a site: work, a spawn, a group. */
static void text_begin(writer_t *wr, const uvp__rec_t *r) {
  char buf[STR_CAP + 64];
  if (r->type == UVP__R_GROUP)
    snprintf(buf, sizeof(buf), "group " UVP__PTR " made at %s:%u",
             UVP__PTRV(r->a), r->file != NULL ? r->file : "?", r->line);
  else
    snprintf(buf, sizeof(buf), "%s %s " UVP__PTR " at %s:%u",
             r->x == 1 ? "spawned" : "started",
             r->x == 1 ? "fiber" : (r->d != NULL ? (const char *)r->d : "work"),
             UVP__PTRV(r->x == 1 ? r->b : r->a),
             r->file != NULL ? r->file : "?", r->line);
  outs(wr, buf);
  if (r->c != NULL)
    named(wr, " in group ", r->c);
}

static void text_work(writer_t *wr, const uvp__rec_t *r) {
  int code = (int)(intptr_t)r->b;
  switch (r->type) {
  case UVP__R_WORK_DESC:
    named(wr, "work ", r->a);
    OUTL(wr, " is ");
    outs(wr, uvp__rw_str(wr, (uintptr_t)r->b, "(overwritten)"));
    OUTL(wr, " ");
    outs(wr, uvp__rw_str(wr, (uintptr_t)r->c, ""));
    break;
  case UVP__R_WORK_END:
    named(wr, "work ", r->a);
    OUTL(wr, " ended");
    break;
  default: /* UVP__R_SETTLE */
    named(wr, "promise ", r->a);
    outs(wr, code == 0 ? " fulfilled" : " rejected ");
    if (code != 0)
      outs(wr, uvp_err_name(code));
    break;
  }
}

static void text_fiber(writer_t *wr, const uvp__rec_t *r) {
  switch (r->type) {
  case UVP__R_PARK:
    OUTL(wr, "parked at ");
    outs(wr, r->file != NULL ? r->file : "?");
    OUTL(wr, ":");
    uvp__rw_u64(wr, r->line);
    named(wr, " awaiting ", r->b);
    if (r->c != NULL) {
      named(wr, "; fiber ", r->c);
      OUTL(wr, " ");
      resumed(wr, r->x, (int)(intptr_t)r->d);
    }
    break;
  case UVP__R_RESUME:
    resumed(wr, r->x, (int)(intptr_t)r->b);
    break;
  case UVP__R_FIBER_END:
    OUTL(wr, "ended");
    break;
  default: /* UVP__R_NAME */
    named(wr, r->x ? "group " : "fiber ", r->a);
    OUTL(wr, " named \"");
    outs(wr, uvp__rw_str(wr, (uintptr_t)r->b, "(overwritten)"));
    OUTL(wr, "\"");
    break;
  }
}

/* A cancellation, a group's member or end, a stall. */
static void text_other(writer_t *wr, const uvp__rec_t *r) {
  switch (r->type) {
  case UVP__R_CAUSE:
    named(wr, "cancellation ", r->a);
    OUTL(wr, ": ");
    outs(wr, uvp__rw_str(wr, (uintptr_t)r->b, "(overwritten)"));
    break;
  case UVP__R_CUT:
    named(wr, "cut ", r->a);
    OUTL(wr, " (");
    outs(wr, uvp_err_name((int)(intptr_t)r->c));
    named(wr, ") by cancellation ", r->b);
    break;
  case UVP__R_MEMBER:
    named(wr, "group ", r->a);
    named(wr, ": member ", r->b);
    break;
  case UVP__R_GROUP_END:
    named(wr, "group ", r->a);
    OUTL(wr, " ended");
    break;
  default: /* UVP__R_STALL */
    outs(wr, uvp__rw_str(wr, (uintptr_t)r->c, "stall (report overwritten)"));
    if (r->a != NULL) {
      named(wr, r->x == UVP_STALL_FIBER ? " (fiber " : " (promise ", r->a);
      OUTL(wr, ")");
    }
    break;
  }
}

static void text_loop(writer_t *wr, const uvp__rec_t *r) {
  int op = (int)(intptr_t)r->b;
  switch (r->type) {
  case UVP__R_PREPARE:
    OUTL(wr, "poll (");
    uvp__rw_u64(wr, (uint64_t)(uintptr_t)r->b);
    OUTL(wr, " in flight)");
    break;
  case UVP__R_CHECK:
    OUTL(wr, "check (the poll returned at loop time ");
    uvp__rw_u64(wr, (uint64_t)(uintptr_t)r->b);
    OUTL(wr, " ms)");
    break;
  case UVP__R_IDLE:
    OUTL(wr, "idle (a drain)");
    break;
  case UVP__R_UVP_END:
    OUTL(wr, "uvp's callback done");
    break;
  default: /* UVP__R_MAIL */
    named(wr,
          op == 0   ? "mail: resolve "
          : op == 1 ? "mail: reject "
                    : "mail: release ",
          r->a);
    if (op == 1) {
      OUTL(wr, " ");
      outs(wr, uvp_err_name((int)(intptr_t)r->c));
    }
    break;
  }
}

/* `span 7 begins: NAME (client) 00-TRACE-SPAN-01 parent P`, `span 7 ends:
 * STATUS`, by the recorder's key. */
static void text_span(writer_t *wr, const uvp__rec_t *r) {
  OUTL(wr, "span ");
  uvp__rw_u64(wr, (uint64_t)(uintptr_t)r->a);
  if (r->type == UVP__R_SPAN_END) {
    OUTL(wr, " ends: ");
    int status = (int)(intptr_t)r->b;
    outs(wr, status == 0 ? "ok" : uvp_err_name(status));
    return;
  }
  static const char *const kinds[] = {"internal", "server", "client",
                                      "producer", "consumer"};
  const char *text = uvp__rw_str(wr, (uintptr_t)r->b, NULL);
  OUTL(wr, " begins: ");
  if (text == NULL || strlen(text) < UVP_TRACEPARENT_LEN + 16) {
    OUTL(wr, "(overwritten)");
    return;
  }
  outs(wr, text + UVP_TRACEPARENT_LEN + 16);
  OUTL(wr, " (");
  outs(wr, r->x < 5 ? kinds[r->x] : "internal");
  OUTL(wr, ") ");
  out(wr, text, UVP_TRACEPARENT_LEN);
  OUTL(wr, " parent ");
  out(wr, text + UVP_TRACEPARENT_LEN, 16);
}

static void text_rec(writer_t *wr, size_t i) {
  const uvp__rec_t *r = rec_at(wr, i);
  text_head(wr, r, wr->t[i]);
  switch (r->type) {
  case UVP__R_WORK_START:
  case UVP__R_GROUP:
    text_begin(wr, r);
    break;
  case UVP__R_WORK_DESC:
  case UVP__R_WORK_END:
  case UVP__R_SETTLE:
    text_work(wr, r);
    break;
  case UVP__R_PARK:
  case UVP__R_RESUME:
  case UVP__R_FIBER_END:
  case UVP__R_NAME:
    text_fiber(wr, r);
    break;
  case UVP__R_CAUSE:
  case UVP__R_CUT:
  case UVP__R_MEMBER:
  case UVP__R_GROUP_END:
  case UVP__R_STALL:
    text_other(wr, r);
    break;
  case UVP__R_PREPARE:
  case UVP__R_CHECK:
  case UVP__R_IDLE:
  case UVP__R_UVP_END:
  case UVP__R_MAIL:
    text_loop(wr, r);
    break;
  case UVP__R_SPAN_BEGIN:
  case UVP__R_SPAN_END:
    text_span(wr, r);
    break;
  case UVP__R_CALL_OUT:
  case UVP__R_CALL_IN: {
    char buf[160];
    snprintf(
        buf, sizeof(buf),
        r->type == UVP__R_CALL_OUT
            ? "call " UVP__PTR ".%llu into context " UVP__PTR
              " (promise " UVP__PTR ")"
            : "call " UVP__PTR ".%llu from context " UVP__PTR
              " runs (work " UVP__PTR ")",
        UVP__PTRV(r->type == UVP__R_CALL_OUT ? (const void *)wr->ctx : r->c),
        (unsigned long long)(uintptr_t)r->b, UVP__PTRV(r->c), UVP__PTRV(r->a));
    outs(wr, buf);
    break;
  }
  default:
    OUTL(wr, "?");
  }
  uvp__rw_line_end(wr);
}

void uvp__rw_text(writer_t *wr) {
  for (size_t i = 0; i < wr->count; i++)
    text_rec(wr, i);
}
