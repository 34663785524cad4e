/* examples/grawa_workers.c - embedding nnc's distributed trainer: 4 GRAWA worker threads train
 * the "tiny" model on generated 8x8 images (class k has a bright quadrant k), printing each
 * synchronisation round (per-worker smoothed gradient norm and weight in the center), then the
 * test accuracy of the GRAWA center and of the uniform average of the workers.
 * Exits 1 if training fails, the round loss does not fall, or the center stays inaccurate.
 * Build it against an installed nnc (make install; for a prefix outside pkg-config's path set
 * PKG_CONFIG_PATH=PREFIX/lib/pkgconfig, and LD_LIBRARY_PATH=PREFIX/lib to run), from the
 * repository root (make check builds it with this very line):
 *   cc examples/grawa_workers.c $(pkg-config --cflags --libs nnc) -o grawa_workers
 */
#include <stdio.h>
#include <stdlib.h>

#include "nn/nnc.h"

/* n images 1x8x8 of 4 classes; pixels from seed (the caller frees images and labels). */
static nnc_dataset make_data(int n, uint64_t seed)
{
    nnc_dataset d = {.name = "quadrants", .n = n, .c = 1, .h = 8, .w = 8, .num_classes = 4};
    d.images = malloc((size_t)n * 64);
    d.labels = malloc((size_t)n * sizeof(int));
    d.mean[0] = 0.3f;
    d.std[0] = 0.3f;
    nnc_rng r;
    nnc_rng_seed(&r, seed, 0);
    for (int i = 0; d.images && d.labels && i < n; i++) {
        d.labels[i] = i % 4;
        for (int p = 0; p < 64; p++) {
            int quadrant = (p / 32) * 2 + (p % 8) / 4;
            d.images[(size_t)i * 64 + p] = (uint8_t)(nnc_rng_below(&r, 200) + (quadrant == i % 4 ? 35 : 0));
        }
    }
    return d;
}

typedef struct progress {
    double first_loss, last_loss;
} progress;

/* Called on the thread that called nnc_train(), once per round. */
static void on_round(const nnc_round_info *r, void *ud)
{
    progress *p = ud;
    if (r->round == 1) p->first_loss = r->loss;
    p->last_loss = r->loss;
    printf("round %2ld loss %.4f |", r->round, r->loss);
    for (int i = 0; i < r->workers; i++) printf(" w%d norm %6.2f weight %.3f |", i, r->norm[i], r->weight[i]);
    printf("\n");
}

int main(void)
{
    nnc_dataset train = make_data(1024, 1), test = make_data(256, 2);
    if (!train.images || !train.labels || !test.images || !test.labels) return 1;
    nnc_train_config c = nnc_train_config_default();
    c.model = "tiny";
    c.batch = 16;
    c.augment = 0;
    c.lr = 0.05f;
    c.epochs = 4;
    c.workers = 4;
    c.algo = NNC_ALGO_MGRAWA;
    c.sync = NNC_SYNC_LOCKSTEP;   /* bitwise reproducible for the seed */
    c.tau = 4;                    /* local steps per worker between rounds */
    c.probe_batch = 64;
    c.bn_reestimate_batches = 4;
    c.eval_every_epochs = 0;
    progress p = {0};
    c.on_round = on_round;
    c.ud = &p;
    nnc_train_result res;
    int s = nnc_train(&c, &train, &test, &res);
    if (s) fprintf(stderr, "grawa_workers: %s (%s)\n", nnc_error_message(), nnc_status_str(s));
    else
        printf("%ld rounds, %ld steps: center test acc %.1f%%, average %.1f%%, %.0f bytes/round\n", res.rounds,
               res.steps, 100 * res.center_test_acc, 100 * res.average_test_acc, res.bytes_per_round);
    int bad = s || !(p.last_loss < 0.7 * p.first_loss) || !(res.center_test_acc > 0.8);
    free(train.images);
    free(train.labels);
    free(test.images);
    free(test.labels);
    return bad;
}
