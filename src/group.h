/* Private to src/: what the layers need of task groups (group.c).  Work
 * running in a group's scope holds the group for each libuv request and
 * handle it starts, until that is done: the group's join waits for them. */
#ifndef UVP_GROUP_H
#define UVP_GROUP_H

#include "sched.h"

void uvp__group_hold(uvp_group_t *g);
void uvp__group_drop(uvp_group_t *g);
/* A scope naming g was made, or is gone (scope.c). */
void uvp__group_scope_made(uvp_group_t *g);
void uvp__group_scope_gone(uvp_group_t *g);

#endif
