/* tools/bench_workers.c - `nnc bench --workers M`: multi-worker training throughput against the
 * best single replica, both through nnc_train on the same synthetic data for the same seconds.
 *
 * The data is a CIFAR-shaped in-memory dataset (random pixels and labels, seeded), so the run
 * includes everything a real one does - loader threads, augmentation, probe batches, rounds and
 * the proximity steps - except evaluation. Reported: images/s of the single replica (one
 * worker, `threads` kernel threads), aggregate images/s of M workers (1 kernel thread each),
 * their ratio, and the synchronizer's share of the workers' wall time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nnc.h"
#include "nn/threads.h"
#include "tools/cli.h"

/* A synthetic 3x32x32, 10-class dataset of n images (caller frees images/labels). */
static int synth_dataset(nnc_dataset *d, int n, uint64_t seed)
{
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "synthetic");
    d->n = n;
    d->c = 3;
    d->h = d->w = 32;
    d->num_classes = 10;
    d->images = malloc((size_t)n * 3 * 32 * 32);
    d->labels = malloc(sizeof(int) * (size_t)n);
    if (!d->images || !d->labels) return nnc__fail(NNC_ENOMEM, "bench: out of memory for %d synthetic images", n);
    nnc_rng r;
    nnc_rng_seed(&r, seed, 11);
    for (size_t i = 0; i < (size_t)n * 3 * 32 * 32; i++) d->images[i] = (uint8_t)nnc_rng_below(&r, 256);
    for (int i = 0; i < n; i++) d->labels[i] = (int)nnc_rng_below(&r, 10);
    for (int c = 0; c < 3; c++) {
        d->mean[c] = 0.5f;
        d->std[c] = 0.29f;
    }
    return NNC_OK;
}

/* One nnc_train run of `seconds` on d. */
static int run(const nnc_dataset *d, const char *model, int workers, nnc_algo algo, int threads, int batch,
               double seconds, uint64_t seed, nnc_train_result *res)
{
    nnc_train_config c = nnc_train_config_default();
    c.model = model;
    c.batch = batch;
    c.workers = workers;
    c.algo = algo;
    c.threads = threads;
    c.time_budget = seconds;
    c.epochs = 0; /* until the time budget */
    c.seed = seed;
    c.eval_every_epochs = 0;
    c.bn_reestimate_batches = 0;
    c.log_every = 1 << 30;
    return nnc_train(&c, d, NULL, res);
}

int bench_workers(const char *model, int workers, const char *algo_name, int threads, int batch, double seconds,
                  long seed, int json)
{
    nnc_algo algo;
    if (nnc_algo_parse(algo_name, &algo)) {
        cli_error("--algo: %s", nnc_error_message());
        return EXIT_USAGE;
    }
    nnc_dataset d;
    int st = synth_dataset(&d, 8192, (uint64_t)seed);
    nnc_train_result one, many;
    if (!st) st = run(&d, model, 1, NNC_ALGO_SGD, threads, batch, seconds, (uint64_t)seed, &one);
    if (!st) st = run(&d, model, workers, algo, 1, batch, seconds, (uint64_t)seed, &many);
    free(d.images);
    free(d.labels);
    nnc_set_threads(1);
    if (st) {
        cli_error("bench: %s", nnc_error_message());
        return cli_exit_code(st);
    }
    double ratio = one.images_per_sec > 0 ? many.images_per_sec / one.images_per_sec : 0.0;
    double share = many.seconds > 0 ? many.sync_seconds / many.seconds : 0.0;
    printf("%s batch %d, %.0f s each: single replica (%d threads) %.1f img/s; %d %s workers (1 thread each) "
           "%.1f img/s aggregate = %.3fx; %ld rounds, synchronizer %.3f s = %.3f%% of %.1f s\n",
           model, batch, seconds, threads, one.images_per_sec, workers, nnc_algo_name(algo), many.images_per_sec,
           ratio, many.rounds, many.sync_seconds, 100.0 * share, many.seconds);
    if (json)
        printf("{\"model\": \"%s\", \"batch\": %d, \"workers\": %d, \"algo\": \"%s\", \"threads\": %d, "
               "\"single_images_per_sec\": %.2f, \"workers_images_per_sec\": %.2f, \"ratio\": %.4f, "
               "\"rounds\": %ld, \"sync_seconds\": %.4f, \"sync_share\": %.6f, \"seconds\": %.2f}\n",
               model, batch, workers, nnc_algo_name(algo), threads, one.images_per_sec, many.images_per_sec, ratio,
               many.rounds, many.sync_seconds, share, many.seconds);
    return EXIT_OK;
}
