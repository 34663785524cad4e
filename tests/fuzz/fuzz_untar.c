/* tests/fuzz/fuzz_untar.c - libFuzzer harness for the tar reader behind dataset extraction
 * (nnc__untar, the code under nnc__untar_gz) on the uncompressed archive bytes, validating
 * without writing files (dest NULL). Build/run: make fuzz-run. */
#include "data/data_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    nnc__mem_src m = {data, size, 0};
    nnc__reader r = {nnc__mem_read, NULL, &m};
    nnc__untar("fuzz.tar", &r, NULL);
    return 0;
}
