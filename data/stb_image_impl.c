/* data/stb_image_impl.c - the one translation unit that compiles stb_image (Debian libstb-dev,
 * header-only route). Only the PNG, BMP and PNM (PPM/PGM) decoders are built (JPEG is left out,
 * see data/image.c), without stdio (image.c reads files), with allocation routed through
 * nnc__alloc and a dimension cap; third-party warnings are silenced for this file only. */
#include <string.h>

#include "nn/alloc.h"

static void *stbi_nnc_realloc(void *p, size_t old, size_t n)
{
    void *q = nnc__alloc(n);
    if (q && p) memcpy(q, p, old < n ? old : n);
    if (q) nnc__free(p);
    return q;
}

#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_PNM
#define STBI_MAX_DIMENSIONS (1 << 16)
#define STBI_MALLOC(sz) nnc__alloc(sz)
#define STBI_FREE(p) nnc__free(p)
#define STBI_REALLOC_SIZED(p, oldsz, newsz) stbi_nnc_realloc(p, oldsz, newsz)

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wall"
#pragma clang diagnostic ignored "-Wextra"
/* stb 2.27 computes NULL + 0 and memcpy(NULL, p, 0) for a zero-length first IDAT chunk:
 * benign, but UBSan reports both. Only those two checks are turned off, only here;
 * out-of-bounds accesses are still caught by ASan. */
#pragma clang attribute push(__attribute__((no_sanitize("pointer-overflow", "nonnull-attribute"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#endif
#include <stb/stb_image.h>
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang diagnostic pop
#elif defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
