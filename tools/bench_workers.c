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
#include "dist/place.h"
#include <unistd.h>
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
static int run(const nnc_dataset *d, const bench_workers_opts *o, int workers, nnc_algo algo, int threads, int tpw,
               nnc_train_result *res)
{
    nnc_train_config c = nnc_train_config_default();
    c.model = o->model;
    c.batch = o->batch;
    c.workers = workers;
    c.algo = algo;
    c.threads = threads;
    c.threads_per_worker = tpw;
    c.placement = (nnc_placement)o->placement;
    c.time_budget = o->seconds;
    c.epochs = 0; /* until the time budget */
    c.seed = (uint64_t)o->seed;
    c.precision = nnc_get_precision(); /* --precision */
    c.eval_every_epochs = 0;
    c.bn_reestimate_batches = 0;
    c.log_every = 1 << 30;
    return nnc_train(&c, d, NULL, res);
}

/* The core count the runs divide (hwloc's, as nnc_train's planner sees it). */
static int core_count(void)
{
    nnc__topo t;
    int n = 0;
    if (!nnc__topo_load(NULL, &t)) n = t.ncores;
    nnc__topo_free(&t);
    if (n < 1) n = nnc_cpu_count();
    return n > 0 ? n : 1;
}

int bench_workers(const bench_workers_opts *o)
{
    nnc_algo algo;
    if (nnc_algo_parse(o->algo, &algo)) {
        cli_error("--algo: %s", nnc_error_message());
        return EXIT_USAGE;
    }
    int cores = core_count();
    int threads = o->threads > 0 ? o->threads : cores;
    int M = o->workers, tpw = o->threads_per_worker > 0 ? o->threads_per_worker : (cores / M > 1 ? cores / M : 1);
    nnc_dataset d;
    int st = synth_dataset(&d, 8192, (uint64_t)o->seed);
    nnc_train_result one, many;
    if (!st) st = run(&d, o, 1, NNC_ALGO_SGD, threads, 0, &one);
    if (!st) st = run(&d, o, M, algo, 1, tpw, &many);
    if (st) {
        free(d.images);
        free(d.labels);
        cli_error("bench: %s", nnc_error_message());
        return cli_exit_code(st);
    }
    double ratio = one.images_per_sec > 0 ? many.images_per_sec / one.images_per_sec : 0.0;
    double share = many.seconds > 0 ? many.sync_seconds / many.seconds : 0.0;
    printf("%s batch %d, %.0f s each: single replica (%d threads) %.1f img/s; %d %s workers (%d thread%s each, "
           "placement %s) %.1f img/s aggregate = %.3fx; %ld rounds, synchronizer %.3f s = %.3f%% of %.1f s\n",
           o->model, o->batch, o->seconds, threads, one.images_per_sec, M, nnc_algo_name(algo), tpw,
           tpw == 1 ? "" : "s", o->placement == NNC_PLACEMENT_NONE ? "none" : "auto", many.images_per_sec, ratio,
           many.rounds, many.sync_seconds, 100.0 * share, many.seconds);
    printf("plan: %s\n", many.placement);
    if (o->json)
        printf("{\"model\": \"%s\", \"batch\": %d, \"workers\": %d, \"algo\": \"%s\", \"threads\": %d, "
               "\"threads_per_worker\": %d, \"single_images_per_sec\": %.2f, \"workers_images_per_sec\": %.2f, "
               "\"ratio\": %.4f, \"rounds\": %ld, \"sync_seconds\": %.4f, \"sync_share\": %.6f, "
               "\"seconds\": %.2f, \"placement\": %s}\n",
               o->model, o->batch, M, nnc_algo_name(algo), threads, tpw, one.images_per_sec, many.images_per_sec,
               ratio, many.rounds, many.sync_seconds, share, many.seconds,
               many.placement[0] ? many.placement : "null");
    if (o->scaling) {
        /* M = 1 is the single replica on all cores measured above. */
        printf("scaling on %d cores (%s, %.0f s each):\n%8s %8s %12s %8s\n", cores, nnc_algo_name(algo), o->seconds,
               "workers", "threads", "img/s", "ratio");
        printf("%8d %8d %12.1f %8.3f\n", 1, threads, one.images_per_sec, 1.0);
        for (int m = 2; !st && m <= cores && m <= NNC_MAX_WORKERS; m *= 2) {
            nnc_train_result r;
            int t = cores / m > 1 ? cores / m : 1;
            if (m == M && t == tpw) r = many;
            else st = run(&d, o, m, algo, 1, t, &r);
            if (!st)
                printf("%8d %8d %12.1f %8.3f\n", m, t, r.images_per_sec,
                       one.images_per_sec > 0 ? r.images_per_sec / one.images_per_sec : 0.0);
        }
    }
    free(d.images);
    free(d.labels);
    if (st) {
        cli_error("bench: %s", nnc_error_message());
        return cli_exit_code(st);
    }
    return EXIT_OK;
}
