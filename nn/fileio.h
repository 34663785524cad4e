/* nn/fileio.h - opening input files safely and creating temp files exclusively.
 *
 * Every file nnc reads from a path the user gave goes through nnc__open_regular (or
 * nnc__fopen_regular): it opens without blocking, refuses anything that is not a regular file
 * (a FIFO, a device, a folder) with a message naming the path, and only then hands back a
 * blocking descriptor. Every temp file is created by nnc__create_temp: a fresh, unpredictable
 * name next to the target, created with O_EXCL | O_NOFOLLOW, so a planted file or symlink under
 * a temp name is never followed or overwritten.
 *
 * Internal to the library and the CLI (nnc__ prefix). Thread-safe; failures set the thread's
 * error message (nn/status.h).
 */
#ifndef NNC_FILEIO_H
#define NNC_FILEIO_H

#include <stddef.h>
#include <stdio.h>

/* Open `path` read-only; `what` names the file's role in messages ("checkpoint", "config").
 * Returns a descriptor >= 0, or a negative nnc_status: NNC_EIO when it cannot be opened or is
 * not a regular file. */
int nnc__open_regular(const char *path, const char *what);

/* The same as a stdio stream (mode "rb"); NULL with *status set on failure. */
FILE *nnc__fopen_regular(const char *path, const char *what, int *status);

/* Create a new temp file for `final_path` ("<final_path>.tmp.<pid>.<random>") with
 * O_CREAT | O_EXCL | O_NOFOLLOW and mode 0644; its name goes to tmp (n bytes, which must hold
 * strlen(final_path) + 40). Returns the descriptor or a negative nnc_status (NNC_EINVAL when the
 * name does not fit, NNC_EIO otherwise). */
int nnc__create_temp(const char *final_path, char *tmp, size_t n);

#endif
