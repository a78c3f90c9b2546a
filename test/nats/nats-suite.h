/* What the NATS suites' mains do once their tests have run. */
#ifndef NATS_SUITE_H
#define NATS_SUITE_H

#include <uv.h>

#include "uvp-nats.h"

/* nats.c's process-wide threads and memory go, so that memcheck sees none
 * at exit; rc is the tests', returned.  First the connects the binding
 * abandoned (a case that closes while connecting leaves one) must have
 * left nats.c, as uvp-nats.h asks (uvp_nats_connects_abandoned): one still
 * inside natsConnection_Connect when nats_CloseAndWait has freed the
 * library faults on its lock.  Each ends once its connect returns, here
 * within milliseconds (the servers are local); 10 s at most.  A failed
 * case may have left connections behind: then not for ever. */
static inline int nats_suite_end(int rc) {
  for (int i = 0; i < 1000 && uvp_nats_connects_abandoned() != 0; i++)
    uv_sleep(10);
  nats_CloseAndWait(rc == 0 ? 0 : 2000);
  return rc;
}

#endif
