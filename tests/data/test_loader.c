/* tests/data/test_loader.c - augmentation, layout/normalisation, data order and sharding,
 * prefetch equivalence, seek/resume, gather, throughput sanity. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/data_internal.h"
#include "nn/nnc.h"

/* n images of (c, h, w) with pixel = (i*7 + j*13) & 255 and label i % 10. */
static nnc_dataset *synth(const char *name, int n, int c, int h, int w)
{
    nnc_dataset *d;
    cr_assert_eq(nnc__dataset_new(name, n, c, h, w, 10, &d), NNC_OK);
    size_t img = (size_t)c * h * w;
    for (int i = 0; i < n; i++) {
        for (size_t j = 0; j < img; j++) d->images[i * img + j] = (uint8_t)((i * 7 + j * 13) & 255);
        d->labels[i] = i % 10;
    }
    return d;
}

static float norm(const nnc_dataset *d, int c, int v)
{
    return ((float)v / 255.0f - d->mean[c]) / d->std[c];
}

/* Data order: every index exactly once per epoch across shards; epochs differ; same seed same order. */
Test(data_loader, shards_cover_every_index_once_per_epoch)
{
    const int N = 1003, S = 3;
    nnc_dataset *d = synth("cifar10", N, 1, 2, 2);
    for (int i = 0; i < N; i++) d->labels[i] = i; /* label = index to recover the order */
    d->num_classes = N;
    int *order[2];
    for (long e = 0; e < 2; e++) {
        int *seen = calloc(N, sizeof(int));
        order[e] = malloc(N * sizeof(int));
        int pos = 0;
        for (int k = 0; k < S; k++) {
            nnc_loader_config c = nnc_loader_config_default();
            c.batch = 16, c.drop_last = 0, c.augment = 0, c.shard = k, c.num_shards = S;
            c.seed = 42, c.prefetch = k & 1;
            nnc_loader *l;
            cr_assert_eq(nnc_loader_new(d, &c, &l), NNC_OK);
            nnc_loader_seek(l, e, 0);
            float x[16 * 4];
            int y[16], n, total = 0;
            while ((n = nnc_loader_next(l, x, y)) > 0) {
                for (int i = 0; i < n; i++) {
                    seen[y[i]]++;
                    order[e][pos++] = y[i];
                }
                total += n;
            }
            cr_assert_eq(nnc_loader_epoch(l), e + 1, "end of epoch advances the epoch");
            cr_assert(total == N / S || total == N / S + 1, "shard %d has %d items", k, total);
            nnc_loader_free(l);
        }
        cr_assert_eq(pos, N);
        for (int i = 0; i < N; i++)
            cr_assert_eq(seen[i], 1, "epoch %ld index %d seen %d times", e, i, seen[i]);
        free(seen);
    }
    int same = 0;
    for (int i = 0; i < N; i++) same += order[0][i] == order[1][i];
    cr_assert_lt(same, N / 10, "epoch 0 and 1 orders must differ (%d equal positions)", same);
    free(order[0]);
    free(order[1]);
    nnc_dataset_free(d);
}

static void run_epochs(const nnc_dataset *d, nnc_loader_config c, int epochs, float *xs, int *ys,
                       int *ns)
{
    nnc_loader *l;
    cr_assert_eq(nnc_loader_new(d, &c, &l), NNC_OK);
    size_t img = (size_t)d->c * d->h * d->w;
    long b = 0, bpe = nnc_loader_batches_per_epoch(l);
    for (int e = 0; e < epochs; e++)
        for (long i = 0; i <= bpe; i++, b++)
            ns[b] = nnc_loader_next(l, xs + b * c.batch * img, ys + b * c.batch);
    nnc_loader_free(l);
}

/* Same seed -> same stream (order + augmentation); prefetch on/off identical; seed changes it. */
Test(data_loader, prefetch_and_seed_determinism, .timeout = 30)
{
    nnc_dataset *d = synth("cifar10", 100, 3, 8, 8);
    nnc_loader_config c = nnc_loader_config_default();
    c.batch = 12, c.drop_last = 0, c.seed = 7;
    size_t img = 3 * 8 * 8, nb = 2 * 10, sz = nb * c.batch * img;
    float *xa = calloc(sz, 4), *xb = calloc(sz, 4), *xc = calloc(sz, 4);
    int ya[240], yb[240], yc[240], na[20], nb2[20], nc[20];
    memset(ya, 0, sizeof ya), memset(yb, 0, sizeof yb), memset(yc, 0, sizeof yc);
    c.prefetch = 1;
    run_epochs(d, c, 2, xa, ya, na);
    c.prefetch = 0;
    run_epochs(d, c, 2, xb, yb, nb2);
    cr_assert_eq(memcmp(na, nb2, sizeof na), 0);
    cr_assert_eq(na[8], 100 - 8 * 12, "last partial batch");
    cr_assert_eq(na[9], 0, "end-of-epoch marker");
    cr_assert_eq(memcmp(xa, xb, sz * 4), 0, "prefetch on/off must give identical batches");
    cr_assert_eq(memcmp(ya, yb, sizeof ya), 0);
    c.seed = 8;
    run_epochs(d, c, 2, xc, yc, nc);
    cr_assert_neq(memcmp(xa, xc, sz * 4), 0, "another seed gives another stream");
    free(xa), free(xb), free(xc);
    nnc_dataset_free(d);
}

/* Seek to (epoch, batch) reproduces exactly what an uninterrupted run produced there. */
Test(data_loader, seek_resumes_identically, .timeout = 30)
{
    nnc_dataset *d = synth("cifar10", 64, 3, 8, 8);
    for (int pf = 0; pf < 2; pf++) {
        nnc_loader_config c = nnc_loader_config_default();
        c.batch = 10, c.seed = 3, c.prefetch = pf;
        nnc_loader *a, *b;
        cr_assert_eq(nnc_loader_new(d, &c, &a), NNC_OK);
        cr_assert_eq(nnc_loader_new(d, &c, &b), NNC_OK);
        cr_assert_eq(nnc_loader_batches_per_epoch(a), 6);
        float xa[10 * 192], xb[10 * 192];
        int ya[10], yb[10];
        for (int i = 0; i < 7 + 4; i++)
            nnc_loader_next(a, xa, ya); /* epoch 0 (6 + end), 4 of epoch 1 */
        cr_assert_eq(nnc_loader_epoch(a), 1);
        cr_assert_eq(nnc_loader_batch_index(a), 4);
        nnc_loader_next(b, xb, yb); /* b primes its prefetch for a different position */
        nnc_loader_seek(b, 1, 4);
        for (int i = 0; i < 10; i++) {
            int na = nnc_loader_next(a, xa, ya), nb = nnc_loader_next(b, xb, yb);
            cr_assert_eq(na, nb);
            cr_assert_eq(memcmp(xa, xb, (size_t)na * 192 * 4), 0, "batch %d after seek differs", i);
            cr_assert_eq(memcmp(ya, yb, (size_t)na * sizeof(int)), 0);
        }
        nnc_loader_free(a);
        nnc_loader_free(b);
    }
    nnc_dataset_free(d);
}

/* Augmentation: crop offsets cover 0..2*pad, flip twice is identity, padding, eval has no augmentation. */
Test(data_loader, augmentation_crop_flip_exact)
{
    nnc_dataset *d = synth("cifar10", 1, 3, 32, 32);
    const uint8_t *src = d->images;
    float *a = malloc(3072 * 4), *b = malloc(3072 * 4);
    uint8_t flipped[3072];
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++)
                flipped[c * 1024 + y * 32 + x] = src[c * 1024 + y * 32 + 31 - x];
    for (int dy = 0; dy <= 8; dy++)
        for (int dx = 0; dx <= 8; dx++) {
            nnc_augment_image(d, src, 4, dy, dx, 0, a);
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < 32; y++)
                    for (int x = 0; x < 32; x++) {
                        int sy = y + dy - 4, sx = x + dx - 4;
                        int v = (sy < 0 || sy >= 32 || sx < 0 || sx >= 32)
                                    ? 0
                                    : src[c * 1024 + sy * 32 + sx];
                        cr_assert_eq(a[c * 1024 + y * 32 + x], norm(d, c, v),
                                     "crop (%d,%d) pixel (%d,%d,%d)", dy, dx, c, y, x);
                    }
            /* flip(flip(img)) == img: flipping the flipped source gives the unflipped result */
            nnc_augment_image(d, flipped, 4, dy, 8 - dx, 1, b);
            cr_assert_eq(memcmp(a, b, 3072 * 4), 0, "flip twice != identity at (%d,%d)", dy, dx);
        }
    nnc_augment_image(d, src, 4, 4, 4, 0, a);
    nnc_augment_image(d, src, 0, 0, 0, 0, b);
    cr_assert_eq(memcmp(a, b, 3072 * 4), 0, "centre crop == no augmentation");
    free(a), free(b);
    nnc_dataset_free(d);
}

/* Augmentation: over many loader draws every crop offset 0..8 and both flips occur; augment=0 gives the
 * plain normalised images (eval pipeline). */
Test(data_loader, loader_augmentation_covers_offsets, .timeout = 30)
{
    nnc_dataset *d;
    cr_assert_eq(nnc__dataset_new("cifar10", 400, 1, 32, 32, 10, &d), NNC_OK);
    memset(d->images, 0, 400 * 1024);
    /* marker A = 255 at (16, 16) and B = 128 at (16, 17): B left of A means flipped */
    for (int i = 0; i < 400; i++) {
        d->images[i * 1024 + 16 * 32 + 16] = 255, d->images[i * 1024 + 16 * 32 + 17] = 128;
        d->labels[i] = 0;
    }
    nnc_loader_config c = nnc_loader_config_default();
    c.batch = 50, c.prefetch = 0, c.seed = 5;
    nnc_loader *l;
    cr_assert_eq(nnc_loader_new(d, &c, &l), NNC_OK);
    float *x = malloc(50 * 1024 * 4);
    const float va = norm(d, 0, 255), vb = norm(d, 0, 128), v0 = norm(d, 0, 0);
    int y[50], seen_y[9] = {0}, seen_x[9] = {0}, flips = 0;
    for (int b = 0; b < 8; b++) {
        cr_assert_eq(nnc_loader_next(l, x, y), 50);
        for (int i = 0; i < 50; i++) {
            int pa = -1, pb = -1, other = 0;
            for (int p = 0; p < 1024; p++) {
                float v = x[i * 1024 + p];
                if (v == va)
                    pa = p;
                else if (v == vb)
                    pb = p;
                else
                    other += v != v0;
            }
            cr_assert(pa >= 0 && pb >= 0 && other == 0,
                      "both markers survive, rest is padding/zero");
            cr_assert_eq(pa / 32, pb / 32);
            int flip = pb % 32 < pa % 32, px = pa % 32;
            cr_assert_eq(abs(pb % 32 - px), 1);
            int dy = 20 - pa / 32;             /* row 16 lands at 16 - (dy - 4) */
            int dx = flip ? px - 11 : 20 - px; /* flipped: px = 31 - (20 - dx) */
            cr_assert(dy >= 0 && dy <= 8 && dx >= 0 && dx <= 8);
            seen_y[dy]++, seen_x[dx]++, flips += flip;
        }
    }
    for (int k = 0; k <= 8; k++) {
        cr_assert_gt(seen_y[k], 0, "dy=%d never drawn", k);
        cr_assert_gt(seen_x[k], 0, "dx=%d never drawn", k);
    }
    cr_assert(flips > 100 && flips < 300, "flip probability 1/2: %d of 400", flips);
    nnc_loader_free(l);
    c.augment = 0;
    cr_assert_eq(nnc_loader_new(d, &c, &l), NNC_OK);
    cr_assert_eq(nnc_loader_next(l, x, y), 50);
    for (int i = 0; i < 50; i++) cr_assert_eq(x[i * 1024 + 16 * 32 + 16], va, "eval: no crop/flip");
    nnc_loader_free(l);
    free(x);
    nnc_dataset_free(d);
}

/* Layout: a known pixel of a known record lands at its CHW index with the normalised value. */
Test(data_loader, layout_and_normalisation)
{
    nnc_dataset *d = synth("cifar10", 20, 3, 32, 32);
    uint32_t idx[2] = {17, 3};
    float *x = malloc(2 * 3072 * 4);
    int y[2];
    d->images[17 * 3072 + 2 * 1024 + 5 * 32 + 9] = 200; /* record 17, channel B, row 5, col 9 */
    nnc_dataset_gather(d, idx, 2, x, y);
    float want = (200.0f / 255.0f - 0.4465f) / 0.2616f;
    cr_assert_float_eq(x[0 * 3072 + 2 * 1024 + 5 * 32 + 9], want, 1e-6);
    cr_assert_float_eq(x[1 * 3072 + 0 * 1024 + 0], (3 * 7 / 255.0f - 0.4914f) / 0.2470f, 1e-6);
    cr_assert_eq(y[0], 7);
    cr_assert_eq(y[1], 3);
    free(x);
    nnc_dataset_free(d);
}

/* drop_last: equal shards (same batches per epoch for lockstep workers), still disjoint. */
Test(data_loader, drop_last_shards_are_equal_and_disjoint)
{
    const int N = 1003, S = 4;
    nnc_dataset *d = synth("cifar10", N, 1, 2, 2);
    for (int i = 0; i < N; i++) d->labels[i] = i;
    d->num_classes = N;
    int seen[1003] = {0}, total = 0;
    for (int k = 0; k < S; k++) {
        nnc_loader_config c = nnc_loader_config_default();
        c.batch = 10, c.augment = 0, c.shard = k, c.num_shards = S, c.seed = 9, c.prefetch = 0;
        nnc_loader *l;
        cr_assert_eq(nnc_loader_new(d, &c, &l), NNC_OK);
        cr_assert_eq(nnc_loader_batches_per_epoch(l), 25, "250 items per shard -> 25 batches");
        float x[40];
        int y[10], n;
        while ((n = nnc_loader_next(l, x, y)) > 0) {
            cr_assert_eq(n, 10);
            for (int i = 0; i < n; i++) seen[y[i]]++;
            total += n;
        }
        nnc_loader_free(l);
    }
    cr_assert_eq(total, 1000);
    for (int i = 0; i < N; i++) cr_assert_leq(seen[i], 1, "index %d seen twice", i);
    nnc_dataset_free(d);
}

Test(data_loader, config_errors_and_drop_last)
{
    nnc_dataset *d = synth("cifar10", 10, 1, 4, 4);
    nnc_loader_config c = nnc_loader_config_default();
    nnc_loader *l;
    c.shard = 2, c.num_shards = 2;
    cr_assert_eq(nnc_loader_new(d, &c, &l), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "shard 2 of 2"));
    c.shard = 0, c.num_shards = 1, c.batch = 0;
    cr_assert_eq(nnc_loader_new(d, &c, &l), NNC_EINVAL);
    c.batch = 4, c.drop_last = 1, c.prefetch = 0;
    cr_assert_eq(nnc_loader_new(d, &c, &l), NNC_OK);
    cr_assert_eq(nnc_loader_batches_per_epoch(l), 2);
    float x[64];
    int y[4];
    cr_assert_eq(nnc_loader_next(l, x, y), 4);
    cr_assert_eq(nnc_loader_next(l, x, y), 4);
    cr_assert_eq(nnc_loader_next(l, x, y), 0);
    cr_assert_eq(nnc_loader_epoch(l), 1);
    nnc_loader_free(l);
    nnc_dataset_free(d);
}

/* No allocation per batch once the loader exists (prefetch on). */
Test(data_loader, no_allocation_per_batch, .timeout = 30)
{
    nnc_dataset *d = synth("cifar10", 256, 3, 32, 32);
    nnc_loader_config c = nnc_loader_config_default();
    c.batch = 32;
    nnc_loader *l;
    cr_assert_eq(nnc_loader_new(d, &c, &l), NNC_OK);
    float *x = malloc(32 * 3072 * 4);
    int y[32];
    nnc_loader_next(l, x, y);
    uint64_t before = nnc_alloc_count();
    for (int i = 0; i < 20; i++) nnc_loader_next(l, x, y);
    cr_assert_eq(nnc_alloc_count(), before);
    nnc_loader_free(l);
    free(x);
    nnc_dataset_free(d);
}
