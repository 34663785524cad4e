/* data/input.c - opening the data files nnc reads (IDX, CIFAR, images, archives, class-name
 * lists): every open goes through nnc__open_regular (nn/fileio.h), so a FIFO, a device or a
 * socket given as a data file is refused at once instead of blocking or streaming forever.
 * Missing paths and folders keep the historical "cannot open PATH: <strerror>" wording. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"
#include "nn/alloc.h"
#include "nn/fileio.h"
#include "nn/status.h"

int nnc__data_open(const char *path, const char *what, struct stat *st_out)
{
    struct stat st;
    if (stat(path, &st) != 0) return nnc__fail_errno("cannot open", path, errno);
    if (S_ISDIR(st.st_mode)) return nnc__fail_errno("cannot open", path, EISDIR);
    int fd = nnc__open_regular(path, what);
    if (fd < 0) return fd;
    if (st_out && fstat(fd, st_out) != 0) {
        int e = errno;
        close(fd);
        return nnc__fail_errno("cannot stat", path, e);
    }
    return fd;
}

int nnc__data_read_small(const char *path, const char *what, size_t max, uint8_t **out,
                         size_t *len)
{
    *out = NULL, *len = 0;
    struct stat st;
    int fd = nnc__data_open(path, what, &st);
    if (fd < 0) return fd;
    if ((uint64_t)st.st_size > (uint64_t)max) {
        close(fd);
        return nnc__fail(NNC_EFORMAT, "%s: %lld bytes, above the %zu-byte %s cap", path,
                         (long long)st.st_size, max, what);
    }
    size_t want = (size_t)st.st_size, got = 0;
    uint8_t *b = nnc__alloc(want + 1);
    if (!b) {
        close(fd);
        return nnc__fail(NNC_ENOMEM, "%s: out of memory (%zu bytes)", path, want + 1);
    }
    while (got < want) {
        ssize_t n = read(fd, b + got, want - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            nnc__free(b);
            close(fd);
            return nnc__fail_errno("cannot read", path, e);
        }
        if (n == 0) break; /* shrank while reading: use what is there */
        got += (size_t)n;
    }
    close(fd);
    b[got] = 0;
    *out = b, *len = got;
    return NNC_OK;
}
