/* nn/status.c - status strings, thread-local messages, assert and log hooks. */
#include "nn/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char err_msg[1024];

const char *nnc_status_str(int s)
{
    switch (s) {
    case NNC_OK: return "ok";
    case NNC_EINVAL: return "invalid argument";
    case NNC_ENOMEM: return "out of memory";
    case NNC_EIO: return "I/O error";
    case NNC_EFORMAT: return "malformed input";
    case NNC_EDIVERGED: return "numerical divergence";
    case NNC_ETHREAD: return "thread failure";
    case NNC_ETIMEOUT: return "timeout";
    case NNC_EINTERRUPTED: return "interrupted";
    case NNC_ENET: return "network error";
    case NNC_ECHECKSUM: return "checksum mismatch";
    case NNC_EUNSUPPORTED: return "unsupported";
    default: return "unknown error";
    }
}

const char *nnc_error_message(void) { return err_msg; }

void nnc__clear_error(void) { err_msg[0] = 0; }

int nnc__fail(int s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return s;
}

int nnc__fail_prefix(int s, const char *fmt, ...)
{
    char prefix[512], old[sizeof err_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_msg, sizeof old);
    snprintf(err_msg, sizeof err_msg, "%s: %s", prefix, old);
    return s;
}

static nnc_assert_hook assert_hook;

void nnc_set_assert_hook(nnc_assert_hook hook) { assert_hook = hook; }

void nnc__assert_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
    char msg[1024];
    int n = snprintf(msg, sizeof msg, "nnc: assertion failed at %s:%d: %s: ", file, line, expr);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof msg) vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    if (assert_hook)
        assert_hook(msg);
    else
        fprintf(stderr, "%s\n", msg);
    abort();
}

static nnc_log_hook log_hook;
static void *log_ud;

void nnc_set_log_hook(nnc_log_hook hook, void *ud)
{
    log_hook = hook;
    log_ud = ud;
}

void nnc__log(nnc_log_level level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log_hook)
        log_hook(level, msg, log_ud);
    else if (level >= NNC_LOG_WARN)
        fprintf(stderr, "nnc: %s\n", msg);
}

#include "nn/version.h"

const char *nnc_version(void) { return NNC_VERSION; }
