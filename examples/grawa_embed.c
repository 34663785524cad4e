/* examples/grawa_embed.c - embedding nnc's high-level API: an in-memory dataset, GRAWA training
 * on 2 pthread workers with nnc_train(), then evaluation of the returned center.
 *
 * The dataset is generated: 12x12 grayscale images of 4 classes (a faint bar, 55 grey levels above
 * strong noise, at one of four positions). The program exits 1 unless the GRAWA center reaches
 * 85% test accuracy (chance: 25%).
 *   cc -I. examples/grawa_embed.c build/libnnc.a $(pkg-config --libs openblas zlib libcurl) -lm
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nnc.h"

#define SIDE 12
#define CLASSES 4

/* Fill a dataset the caller owns (plain malloc: freed by free_set, not nnc_dataset_free). */
static int make_set(nnc_dataset *d, int n, uint64_t seed)
{
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "bars");
    d->n = n, d->c = 1, d->h = SIDE, d->w = SIDE, d->num_classes = CLASSES;
    d->images = malloc((size_t)n * SIDE * SIDE);
    d->labels = malloc(sizeof(int) * (size_t)n);
    if (!d->images || !d->labels) return -1;
    d->mean[0] = 0.3f, d->std[0] = 0.3f;
    nnc_rng r;
    nnc_rng_seed(&r, seed, 0);
    for (int i = 0; i < n; i++) {
        int y = (int)nnc_rng_below(&r, CLASSES);
        uint8_t *im = d->images + (size_t)i * SIDE * SIDE;
        for (int p = 0; p < SIDE * SIDE; p++) im[p] = (uint8_t)nnc_rng_below(&r, 200);
        int row = 1 + 3 * y;
        for (int col = 2; col < SIDE - 2; col++) im[row * SIDE + col] += 55;
        d->labels[i] = y;
    }
    return 0;
}

static void free_set(nnc_dataset *d)
{
    free(d->images);
    free(d->labels);
}

static void on_round(const nnc_round_info *r, void *ud)
{
    (void)ud;
    if (r->round % 32) return;
    printf("grawa_embed: round %ld  weights", r->round);
    for (int i = 0; i < r->workers; i++) printf(" %.3f", r->weight[i]);
    printf("  loss %.3f\n", r->loss);
}

int main(void)
{
    nnc_dataset train, test;
    if (make_set(&train, 4096, 1) || make_set(&test, 256, 2)) return fprintf(stderr, "out of memory\n"), 1;

    nnc_train_config cfg = nnc_train_config_default();
    cfg.model = "tiny";
    cfg.batch = 32;
    cfg.lr = 0.05f;
    cfg.epochs = 4;
    cfg.workers = 2;
    cfg.algo = NNC_ALGO_MGRAWA;
    cfg.sync = NNC_SYNC_LOCKSTEP; /* bit-reproducible for a fixed seed */
    cfg.tau = 8;
    cfg.augment = 0;
    cfg.bn_reestimate_batches = 4;
    cfg.seed = 7;
    cfg.on_round = on_round;

    nnc_train_result res;
    int s = nnc_train(&cfg, &train, &test, &res);
    free_set(&train);
    free_set(&test);
    if (s < 0) {
        fprintf(stderr, "grawa_embed: training failed: %s (%s)\n", nnc_error_message(), nnc_status_str(s));
        return 1;
    }
    printf("grawa_embed: %ld rounds, center test acc %.3f, average of workers %.3f, %.0f img/s\n",
           res.rounds, res.center_test_acc, res.average_test_acc, res.images_per_sec);
    return res.center_test_acc >= 0.85 ? 0 : 1;
}
