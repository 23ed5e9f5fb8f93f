#ifndef AGENTFLOW_CCURL_SHIM_H
#define AGENTFLOW_CCURL_SHIM_H

#include <curl/curl.h>

// curl_easy_setopt and curl_easy_getinfo are variadic, and Swift cannot call
// variadic C functions. Each wrapper fixes the type of the one argument, so the
// Swift side picks the wrapper that matches the option's documented type.

static inline CURLcode agentflow_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode agentflow_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode agentflow_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode agentflow_curl_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}

typedef size_t (*agentflow_curl_data_callback)(char *data, size_t size, size_t count, void *userdata);

static inline CURLcode agentflow_curl_setopt_data_callback(CURL *handle, CURLoption option, agentflow_curl_data_callback callback) {
    return curl_easy_setopt(handle, option, callback);
}

typedef int (*agentflow_curl_xferinfo_callback)(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow);

static inline CURLcode agentflow_curl_setopt_xferinfo_callback(CURL *handle, agentflow_curl_xferinfo_callback callback) {
    return curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, callback);
}

static inline CURLcode agentflow_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode agentflow_curl_getinfo_string(CURL *handle, CURLINFO info, char **value) {
    return curl_easy_getinfo(handle, info, value);
}

/// `CURLVERSION_NOW` is a macro naming an enum case; this fixes it at the
/// version of the headers we compiled against, as libcurl intends.
static inline curl_version_info_data *agentflow_curl_version_info(void) {
    return curl_version_info(CURLVERSION_NOW);
}

#endif
