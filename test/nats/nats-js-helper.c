/* A second process for test-nats-js (filled in by the durable-promise
 * cases). */
#include "uvp-nats-js.h"

int main(void) { return 0; }
