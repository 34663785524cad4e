/* tests/fuzz/fuzz_image.c - libFuzzer harness for image decoding behind nnc_image_load and the
 * image-folder loader: PNG/BMP/PPM/PGM via stb_image, JPEG (magic bytes FF D8 FF)
 * via libjpeg-turbo. The input is the file; dimension cap 1024 (checked before decoding),
 * output 3 x 16 x 16, and JPEG inputs are decoded a second time to 1 channel (libjpeg's RGB/YCbCr
 * -> grey path). Seeds include baseline, progressive, grey, arithmetic-coded and restart-marker
 * JPEGs (corpus/image/jpeg-*). Build/run: make fuzz-run. */
#include "data/data_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t out[3 * 16 * 16];
    int kind;
    nnc__image_decode_mem("fuzz", data, size, 3, 16, 1024, out, &kind);
    if (nnc__jpeg_is(data, size)) nnc__image_decode_mem("fuzz", data, size, 1, 16, 1024, out, &kind);
    return 0;
}
