/* tests/common/cli_run.h - run the nnc binary (path in $NNC_BIN, set by make check) as a child
 * process with captured stdout/stderr and a timeout; temp folders; generated CIFAR-format files.
 * Used by the tools_cli* suites. Not thread-safe (tests run one per process). */
#ifndef NNC_TESTS_CLI_RUN_H
#define NNC_TESTS_CLI_RUN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tcli_result {
    int code;       /* exit status, or 128 + signal number when killed */
    int timed_out;  /* 1 if the timeout killed it */
    char *out, *err;/* captured stdout / stderr (NUL-terminated, never NULL) */
} tcli_result;

/* Run $NNC_BIN with the NULL-terminated arguments (not including the binary). */
tcli_result tcli_run(double timeout_s, const char *arg, ...);
tcli_result tcli_runv(double timeout_s, const char *const *args);
void tcli_free(tcli_result *r);

/* Start $NNC_BIN in the background with stdout/stderr to files in dir (out.txt, err.txt). */
pid_t tcli_spawn(const char *dir, const char *const *args);
/* Wait up to timeout_s; returns the exit code (128+sig if signalled), or -1 after killing it. */
int tcli_wait(pid_t pid, double timeout_s);

/* A fresh temp folder (malloc'd path); tcli_rmrf removes it recursively. */
char *tcli_tmpdir(void);
void tcli_rmrf(const char *path);
/* Read a whole file (malloc'd, NUL-terminated) or NULL. */
char *tcli_slurp(const char *path);
char *tcli_path(const char *dir, const char *name); /* malloc'd dir/name */
int tcli_exists(const char *path);

/* Write CIFAR-10 binary files (data_batch_1..5.bin, test_batch.bin, batches.meta.txt) of the
 * official sizes into dir. The first `real` records of each file carry a learnable class pattern
 * (label = record % 10); the rest are zero (written sparse, so this is fast). */
int tcli_write_cifar10(const char *dir, int real);

#endif
