/* tests/fuzz/fuzz_cifar.c - libFuzzer harness for the CIFAR binary parser.
 * Input: byte 0 selects the format (bit 0: CIFAR-100) and the declared record count
 * (bits 1-2: 1..4); the rest is the file. Runs the same size check and record parser the
 * loader runs on files. Build/run: make fuzz-run. */
#include <stdlib.h>

#include "data/data_internal.h"
#include "nn/status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int cifar100 = data[0] & 1;
    long records = 1 + ((data[0] >> 1) & 3);
    const uint8_t *file = data + 1;
    size_t len = size - 1;
    if (nnc__cifar_check_size("fuzz.bin", len, cifar100, records) != NNC_OK) return 0;
    uint8_t *images = malloc((size_t)records * NNC_CIFAR_PIXELS);
    int *labels = malloc((size_t)records * sizeof(int));
    nnc__cifar_parse_mem("fuzz.bin", file, len, cifar100, 0, images, labels);
    free(images);
    free(labels);
    return 0;
}
