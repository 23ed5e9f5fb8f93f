#ifndef AGENTFLOW_CHIREDIS_SHIM_H
#define AGENTFLOW_CHIREDIS_SHIM_H

// hiredis's command API is variadic (redisCommand); Swift calls the
// non-variadic redisCommandArgv instead, so no wrapper is needed here.
#include <hiredis/hiredis.h>

#endif
