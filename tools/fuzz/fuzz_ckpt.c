/* tools/fuzz/fuzz_ckpt.c - libFuzzer harness for the checkpoint loader and the
 * run-checkpoint load path. Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined;
 * run by `make fuzz-run` over the seed corpus in tools/fuzz/corpus/ckpt. Every input must either
 * load, or fail with NNC_EFORMAT and a message; a loaded checkpoint is then queried through the
 * lookup API. Each input is tried twice: as is, and with its CRCs recomputed, so that mutations
 * get past the checksums into the structure checks and lookups. The CRC-fixed input is then
 * also a run's last.ckpt: nnc_train_ckpt_progress reads it, and when that succeeds a tiny
 * two-worker run of its algorithm resumes from it (the run-state codec, every range check, the
 * tensors): any outcome but a status with a message, or a crash, is a bug.
 * The seed run_mgrawa.ckpt / run_slowmo.ckpt come from this file built with
 * -DFUZZ_CKPT_SEEDGEN (a main that trains the same tiny run and keeps its last.ckpt):
 *   cc -std=c11 -D_GNU_SOURCE -pthread -I. -DFUZZ_CKPT_SEEDGEN tools/fuzz/fuzz_ckpt.c build/libnnc.a \
 *      $(LDLIBS) -o seedgen && ./seedgen mgrawa out.ckpt */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
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

/* ---- the run-checkpoint path ---- */

/* 64 images 1x8x8 of 4 classes: class k has a bright quadrant k. */
static nnc_dataset *tiny_data(void)
{
    static nnc_dataset d;
    static uint8_t img[64 * 64];
    static int lab[64];
    if (d.n) return &d;
    snprintf(d.name, sizeof d.name, "fuzz");
    d.c = 1, d.h = 8, d.w = 8, d.num_classes = 4;
    d.images = img;
    d.labels = lab;
    d.mean[0] = 0.3f;
    d.std[0] = 0.3f;
    for (int i = 0; i < 64; i++) {
        lab[i] = i % 4;
        for (int p = 0; p < 64; p++)
            img[i * 64 + p] = (uint8_t)((p * 37 + i * 11) % 90 + (((p / 8 >= 4) * 2 + (p % 8 >= 4)) == i % 4 ? 140 : 0));
    }
    d.n = 64;
    return &d;
}

static nnc_train_config tiny_config(nnc_algo algo, const char *dir)
{
    nnc_train_config c = nnc_train_config_default();
    c.model = "tiny";
    c.batch = 16;
    c.augment = 0;
    c.lr = 0.05f;
    c.epochs = 1;
    c.seed = 3;
    c.workers = 2;
    c.algo = algo;
    c.sync = NNC_SYNC_LOCKSTEP;
    c.tau = 2;
    c.probe_batch = 8;
    c.bn_reestimate_batches = 1;
    c.eval_every_epochs = 0;
    c.sync_timeout = 20;
    c.ckpt_dir = dir;
    return c;
}

static char run_dir[64];

static void run_path(const uint8_t *data, size_t size)
{
    if (!run_dir[0]) {
        snprintf(run_dir, sizeof run_dir, "/tmp/nnc_fuzz_run_XXXXXX");
        if (!mkdtemp(run_dir)) abort();
    }
    char path[128];
    snprintf(path, sizeof path, "%s/last.ckpt", run_dir);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) abort();
    nnc_ckpt_progress q;
    int s = nnc_train_ckpt_progress(path, &q);
    if (s != NNC_OK) {
        if (!nnc_error_message()[0]) abort();
        return;
    }
    if (q.workers != 2 || q.algo == NNC_ALGO_SGD) return;
    nnc_train_config c = tiny_config(q.algo, run_dir);
    c.epochs = 2;
    c.resume = 1;
    nnc_train_result r;
    s = nnc_train(&c, tiny_data(), NULL, &r);
    if (s != NNC_OK && !nnc_error_message()[0]) abort();
}

#ifdef FUZZ_CKPT_SEEDGEN
int main(int argc, char **argv)
{
    nnc_algo a;
    if (argc != 3 || nnc_algo_parse(argv[1], &a)) return 2;
    char dir[64] = "/tmp/nnc_fuzz_seed_XXXXXX", cmd[256];
    if (!mkdtemp(dir)) return 1;
    nnc_train_config c = tiny_config(a, dir);
    nnc_train_result r;
    if (nnc_train(&c, tiny_data(), NULL, &r)) {
        fprintf(stderr, "%s\n", nnc_error_message());
        return 1;
    }
    snprintf(cmd, sizeof cmd, "cp '%s/last.ckpt' '%s' && rm -rf '%s'", dir, argv[2], dir);
    return system(cmd) == 0 ? 0 : 1;
}
#else
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!table) table = make_table();
    one(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    fix_crcs(copy, size);
    one(copy, size);
    run_path(copy, size);
    free(copy);
    return 0;
}
#endif
