#ifndef AGENTFLOW_CNGHTTP2_SHIM_H
#define AGENTFLOW_CNGHTTP2_SHIM_H

// nghttp2's API is plain functions and constants; Swift imports it directly.
#include <nghttp2/nghttp2.h>

#endif
