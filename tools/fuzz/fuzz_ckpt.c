/* tools/fuzz/fuzz_ckpt.c - libFuzzer harness for the checkpoint loader (TESTS.md C6).
 * Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined; run by `make fuzz-run`
 * over the seed corpus in tools/fuzz/corpus/ckpt. Every input must either load, or fail with
 * NNC_EFORMAT and a message; a loaded checkpoint is then queried through the lookup API.
 * Each input is tried twice: as is, and with its CRCs recomputed, so that mutations get past
 * the checksums into the structure checks and lookups. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nnc.h"

static nnc_params *table;

/* The table of the seed checkpoint "params.ckpt": w (4,8) trained, rm (4) buffer. */
static nnc_params *make_table(void)
{
    nnc_params *p;
    int w[2] = {4, 8}, b[1] = {4};
    if (nnc_params_new(&p) || nnc_params_add(p, "w", 2, w, 0) < 0 ||
        nnc_params_add(p, "rm", 1, b, NNC_PARAM_BUFFER) < 0 || nnc_params_finalize(p))
        abort();
    return p;
}

static uint32_t rd32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void wr32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
}

/* Rewrite the header CRC and every section CRC that can be located (layout: nn/checkpoint.h). */
static void fix_crcs(uint8_t *b, size_t n)
{
    if (n < 24) return;
    uint32_t alen = rd32(b + 16), nsec = rd32(b + 12);
    if (alen > n - 24) return;
    size_t off = 20 + (size_t)alen;
    wr32(b + off, nnc_crc32(0, b, off));
    off += 4;
    for (uint32_t i = 0; i < nsec; i++) {
        size_t start = off;
        if (n - off < 4) return;
        uint32_t nl = rd32(b + off);
        if (nl > n - off - 4 || n - off - 4 - nl < 8) return;
        off += 4 + nl + 4;
        uint32_t ndim = rd32(b + off);
        off += 4;
        if (ndim > 4 || n - off < 4 * (size_t)ndim + 12) return;
        off += 4 * (size_t)ndim;
        uint64_t nbytes = (uint64_t)rd32(b + off) | (uint64_t)rd32(b + off + 4) << 32;
        off += 8;
        size_t crc_at = off;
        off += 4;
        if (nbytes > n - off) return;
        wr32(b + crc_at, nnc_crc32(nnc_crc32(0, b + start, crc_at - start), b + off, (size_t)nbytes));
        off += (size_t)nbytes;
    }
}

static void one(const uint8_t *data, size_t size)
{
    nnc_ckpt *c = NULL;
    int s = nnc_ckpt_load_mem(data, size, "fuzz", &c);
    if (s != NNC_OK) {
        if (c || s != NNC_EFORMAT || !nnc_error_message()[0]) abort();
        return;
    }
    if (strlen(nnc_ckpt_arch(c)) > 4096) abort();
    float dst[32];
    int shape[2] = {4, 8};
    const void *bytes;
    size_t n;
    if (nnc_ckpt_get_floats(c, "a", 2, shape, dst) == NNC_OK && nnc_ckpt_has(c, "a") != 1) abort();
    if (nnc_ckpt_get_bytes(c, "bb", &bytes, &n) == NNC_OK) {
        volatile unsigned char sink = 0;
        for (size_t i = 0; i < n; i++) sink ^= ((const unsigned char *)bytes)[i];
        (void)sink;
    }
    float mom[64];
    nnc_ckpt_get_params(c, "", table);
    nnc_ckpt_get_params_like(c, "m/", table, mom);
    nnc_ckpt_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!table) table = make_table();
    one(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    fix_crcs(copy, size);
    one(copy, size);
    free(copy);
    return 0;
}
