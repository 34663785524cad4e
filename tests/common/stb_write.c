/* tests/common/stb_write.c - the one translation unit compiling stb_image_write for the tests
 * (PNG/BMP fixtures are written at test time). stb's own warnings are silenced here only. */
#include "tests/common/stb_write.h"

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wall"
#pragma clang diagnostic ignored "-Wextra"
#else
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#endif
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#if defined(__clang__)
#pragma clang diagnostic pop
#else
#pragma GCC diagnostic pop
#endif

unsigned char *tw_png_to_mem(const unsigned char *px, int stride, int w, int h, int comp, int *len)
{
    return stbi_write_png_to_mem(px, stride, w, h, comp, len);
}

void tw_free(void *p) { STBIW_FREE(p); }
