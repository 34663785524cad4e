/* nn/fileio.c - regular-file opens and exclusive temp files (see nn/fileio.h). */
#include "nn/fileio.h"

#include "nn/status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int nnc__open_regular(const char *path, const char *what)
{
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return nnc__fail(NNC_EIO, "%s '%s': cannot open: %s", what, path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return nnc__fail(NNC_EIO, "%s '%s': cannot stat: %s", what, path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        const char *kind = S_ISDIR(st.st_mode)    ? "a directory"
                           : S_ISFIFO(st.st_mode) ? "a FIFO"
                           : S_ISCHR(st.st_mode)  ? "a character device"
                           : S_ISBLK(st.st_mode)  ? "a block device"
                           : S_ISSOCK(st.st_mode) ? "a socket"
                                                  : "not a regular file";
        return nnc__fail(NNC_EIO, "%s '%s': expected a regular file, found %s", what, path, kind);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        int e = errno;
        close(fd);
        return nnc__fail(NNC_EIO, "%s '%s': fcntl: %s", what, path, strerror(e));
    }
    return fd;
}

FILE *nnc__fopen_regular(const char *path, const char *what, int *status)
{
    int fd = nnc__open_regular(path, what);
    if (fd < 0) {
        if (status) *status = fd;
        return NULL;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        int s = nnc__fail(e == ENOMEM ? NNC_ENOMEM : NNC_EIO, "%s '%s': fdopen: %s", what, path, strerror(e));
        if (status) *status = s;
        return NULL;
    }
    if (status) *status = NNC_OK;
    return f;
}

static atomic_uint_fast64_t temp_counter;

/* splitmix64: a well-mixed 64-bit value from a counter, the pid and the clock. */
static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int nnc__create_temp(const char *final_path, char *tmp, size_t n)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t r = mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                           ((uint64_t)getpid() << 48) ^ atomic_fetch_add(&temp_counter, 1));
        int k = snprintf(tmp, n, "%s.tmp.%ld.%08llx", final_path, (long)getpid(),
                         (unsigned long long)(r & 0xffffffffULL));
        if (k < 0 || (size_t)k >= n)
            return nnc__fail(NNC_EINVAL, "temp file for '%s': path too long (%zu bytes max)", final_path,
                             n > 40 ? n - 40 : 0);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd >= 0) return fd;
        if (errno != EEXIST && errno != ELOOP)
            return nnc__fail(NNC_EIO, "cannot create temp file '%s': %s", tmp, strerror(errno));
    }
    return nnc__fail(NNC_EIO, "cannot create a temp file for '%s': every name tried exists", final_path);
}
