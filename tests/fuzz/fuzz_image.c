/* tests/fuzz/fuzz_image.c - libFuzzer harness for image decoding (PNG/BMP/PPM/PGM via
 * stb_image; JPEG inputs must be refused, behind nnc_image_load and the image-folder loader; TESTS.md C6). The input is the
 * file; dimension cap 1024 (checked before decoding), output 3 x 16 x 16. Build/run: make fuzz-run. */
#include "data/data_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t out[3 * 16 * 16];
    int kind;
    nnc__image_decode_mem("fuzz", data, size, 3, 16, 1024, out, &kind);
    return 0;
}
