/* nn/status.h - status codes, thread-local error messages, assert and log hooks.
 *
 * Anything that can fail because of the outside world (files, data, config values, memory,
 * threads, divergence) returns an nnc_status: NNC_OK (0) or a negative code. The failing call
 * also records a human-readable message in a thread-local buffer (nnc_error_message()) that
 * names the file, offset or field and what was expected vs found.
 *
 * Programmer errors (shape mismatch between tensors the caller built, NULL handles, backward
 * without forward) are not statuses: they hit NNC_ASSERT, which is always on, calls the assert
 * hook and aborts.
 *
 * Thread-safety: the message buffer is per thread; the hooks are process-wide and should be
 * set once before other threads start.
 */
#ifndef NNC_STATUS_H
#define NNC_STATUS_H

#include <stdarg.h>

typedef enum nnc_status {
    NNC_OK = 0,
    NNC_EINVAL = -1,      /* bad argument, flag or config value */
    NNC_ENOMEM = -2,      /* allocation failed */
    NNC_EIO = -3,         /* file system error (open, read, write, rename) */
    NNC_EFORMAT = -4,     /* malformed data file or checkpoint */
    NNC_EDIVERGED = -5,   /* numerical divergence (non-finite loss/params) */
    NNC_ETHREAD = -6,     /* thread creation or a worker failed */
    NNC_ETIMEOUT = -7,    /* a deadline passed (stalled worker) */
    NNC_EINTERRUPTED = -8,/* stopped by a signal */
    NNC_ENET = -9,        /* network transfer failed */
    NNC_ECHECKSUM = -10,  /* downloaded or stored data failed its checksum */
    NNC_EUNSUPPORTED = -11/* feature not built in / not supported */
} nnc_status;

/* Short name of a status ("I/O error", ...). Never NULL. */
const char *nnc_status_str(int status);

/* The message recorded by the last failing call on this thread ("" if none). */
const char *nnc_error_message(void);

/* Record a message for status s on this thread and return s (for `return nnc__fail(...)`). */
int nnc__fail(int s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefix the current message with more context ("loading X: <old message>"). Returns s. */
int nnc__fail_prefix(int s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void nnc__clear_error(void);

/* Assert hook: called with the formatted message before abort(). NULL restores the default
 * (print to stderr). The hook must not return into the failing code (abort follows anyway). */
typedef void (*nnc_assert_hook)(const char *msg);
void nnc_set_assert_hook(nnc_assert_hook hook);

_Noreturn void nnc__assert_fail(const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define NNC_ASSERT(cond, ...)                                                                   \
    do {                                                                                        \
        if (!(cond)) nnc__assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                 \
    } while (0)

/* Log hook: library code never prints; it hands lines to this hook. Default: stderr for
 * warnings and errors, nothing for info/debug. */
typedef enum nnc_log_level { NNC_LOG_DEBUG, NNC_LOG_INFO, NNC_LOG_WARN, NNC_LOG_ERROR } nnc_log_level;
typedef void (*nnc_log_hook)(nnc_log_level level, const char *msg, void *ud);
void nnc_set_log_hook(nnc_log_hook hook, void *ud);
void nnc__log(nnc_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
