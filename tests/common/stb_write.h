/* tests/common/stb_write.h - image writers for test fixtures: stb_image_write's public API
 * (stbi_write_png, stbi_write_bmp, ...) plus its in-memory PNG encoder, compiled once in
 * tests/common/stb_write.c. */
#ifndef NNC_TEST_STB_WRITE_H
#define NNC_TEST_STB_WRITE_H

#include <stb/stb_image_write.h>

/* PNG bytes of a (h, w, comp) image in memory; free with tw_free. NULL on failure. */
unsigned char *tw_png_to_mem(const unsigned char *px, int stride, int w, int h, int comp, int *len);
void tw_free(void *p);

#endif
