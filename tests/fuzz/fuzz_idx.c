/* tests/fuzz/fuzz_idx.c - libFuzzer harness for the IDX (MNIST) parser.
 * Input: a 2-byte big-endian length L, then L bytes of images file, then the labels file.
 * Runs nnc__idx_parse, the code behind nnc_idx_load, on memory readers. Build/run: make fuzz-run. */
#include "data/data_internal.h"
#include "nn/status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t l = (size_t)data[0] << 8 | data[1];
    if (l > size - 2) l = size - 2;
    nnc__mem_src mi = {data + 2, l, 0}, ml = {data + 2 + l, size - 2 - l, 0};
    nnc__reader ri = {nnc__mem_read, NULL, &mi}, rl = {nnc__mem_read, NULL, &ml};
    nnc_dataset *d = NULL;
    if (nnc__idx_parse("img", &ri, "lbl", &rl, "mnist", &d) == NNC_OK) nnc_dataset_free(d);
    return 0;
}
