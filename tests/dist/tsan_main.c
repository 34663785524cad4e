/* tests/dist/tsan_main.c - the dist thread scenarios as a plain program, for ThreadSanitizer
 * (pass: no report, exit 0). Criterion cannot start under TSan (its inheritable arena mmap fails
 * once TSan has reserved the address space: Snaipe/Criterion#274), so `make SAN=thread
 * check-threads` aborts before any test runs. Build and run this instead:
 *   make SAN=thread build/san-thread/libnnc_testing.a
 *   clang -std=c11 -g -O1 -fsanitize=thread -D_GNU_SOURCE -DNNC_TESTING -pthread -I. \
 *       tests/dist/tsan_main.c build/san-thread/libnnc_testing.a \
 *       $(pkg-config --libs openblas zlib libcurl hwloc) -lm -o build/san-thread/dist_tsan
 *   build/san-thread/dist_tsan     (exit 0 and no "WARNING: ThreadSanitizer" = pass)
 * Scenarios: every algorithm with 4 workers in both sync modes, the single replica (loader
 * prefetch thread), a NaN worker under jitter, a stalled worker, a failing worker, a stop
 * request with checkpoint + resume, time budgets with the evaluation grid and a modelled link, two
 * training contexts on two threads at once, two concurrent runs with different kernel thread team
 * sizes (2 workers x 2 threads beside one replica of 3 threads, then pinned 2 x 1 beside unpinned
 * 1 x 2), the test-only worker observer (dist/run.h) reading what it documents as stable, and
 * the center reduction on the parked workers' teams over a synthetic 2-node machine.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "dist/dist.h"
#include "dist/run.h"
#include "nn/fault.h"
#include "nn/nnc.h"

static nnc_dataset *g_train;
static volatile sig_atomic_t g_stop;

/* 256 images 1x8x8 of 4 classes: a bright quadrant per class over noise. */
static nnc_dataset *make_dataset(int n)
{
    nnc_dataset *d = nnc__calloc(1, sizeof *d);
    snprintf(d->name, sizeof d->name, "synthetic");
    d->n = n, d->c = 1, d->h = 8, d->w = 8, d->num_classes = 4;
    d->images = nnc__calloc((size_t)n * 64, 1);
    d->labels = nnc__calloc((size_t)n, sizeof(int));
    d->mean[0] = 0.3f, d->std[0] = 0.3f;
    nnc_rng r;
    nnc_rng_seed(&r, 1, 2);
    for (int i = 0; i < n; i++) {
        d->labels[i] = i % 4;
        for (int j = 0; j < 64; j++) {
            int quadrant = (j / 32) * 2 + (j % 8) / 4;
            d->images[i * 64 + j] = (uint8_t)(nnc_rng_below(&r, 90) + (quadrant == i % 4 ? 140 : 0));
        }
    }
    return d;
}

static void stop_at_round_3(const nnc_round_info *r, void *ud)
{
    if (ud && r->round == 3) g_stop = 2;
}

static nnc_train_config config(nnc_algo a, int M, nnc_sync_mode sync)
{
    nnc_train_config c = nnc_train_config_default();
    c.model = "tiny";
    c.batch = 16;
    c.lr = 0.05f;
    c.epochs = 2;
    c.workers = M;
    c.algo = a;
    c.sync = sync;
    c.tau = (a == NNC_ALGO_DP || a == NNC_ALGO_DP_SAM) ? 0 : 2;
    c.probe_batch = 32;
    c.bn_reestimate_batches = 2;
    c.sync_timeout = 20;
    c.seed = 3;
    return c;
}

static int run(const char *what, nnc_train_config c, int expect)
{
    nnc_train_result r;
    int s = nnc_train(&c, g_train, g_train, &r);
    printf("%-22s status %3d (expect %3d) rounds %3ld test acc %.3f %s\n", what, s, expect, r.rounds,
           r.test_acc, s ? nnc_error_message() : "");
    return s != expect;
}

static void arm(const char *spec)
{
    setenv("NNC_FAULT", spec, 1);
    nnc__fault_reload();
}

/* Reads everything nnc__dist_observe documents as readable; per-worker sums (slot w only). */
static double g_obs[NNC_MAX_WORKERS];

static void observer(const nnc_run *R, nnc__obs_event ev, int w, double loss, void *ud)
{
    (void)ud;
    const nnc_params *p = R->rep[w]->p;
    double s = (double)R->round + (isfinite(loss) ? loss : 0.0) + R->center[0] + R->pub[p->n_data - 1];
    for (size_t j = 0; j < p->n_data; j += 7) s += p->data[j] + p->grad[j];
    if (ev == NNC__OBS_ARRIVE)
        for (int l = 0; l < R->ly.L; l++) s += R->norms[(size_t)w * R->ly.L + l];
    g_obs[w] += s;
}

static void *context(void *arg)
{
    nnc_train_config c = config(NNC_ALGO_LGRAWA, 2, NNC_SYNC_ASYNC);
    c.seed = (uint64_t)(size_t)arg;
    nnc_train_result r;
    return (void *)(size_t)(nnc_train(&c, g_train, NULL, &r) != NNC_OK);
}

/* A run with its own team size (arg: 0 = 2 workers x 2 threads, 1 = one replica of 3 threads,
 * 2 = 2 workers x 1 thread pinned, 3 = one replica of 2 threads unpinned). */
static void *team_run(void *arg)
{
    int k = (int)(size_t)arg;
    nnc_train_config c = k == 1 || k == 3 ? config(NNC_ALGO_SGD, 1, NNC_SYNC_ASYNC)
                                          : config(NNC_ALGO_MGRAWA, 2, NNC_SYNC_LOCKSTEP);
    c.threads_per_worker = k == 0 ? 2 : k == 2 ? 1 : 0;
    c.threads = k == 1 ? 3 : 2;
    c.placement = k == 3 ? NNC_PLACEMENT_NONE : NNC_PLACEMENT_AUTO;
    nnc_train_result r;
    int s = nnc_train(&c, g_train, NULL, &r);
    int want = k == 0 ? 2 : k == 1 ? 3 : k == 2 ? 1 : 2;
    return (void *)(size_t)(s != NNC_OK || r.threads_per_worker != want);
}

int main(void)
{
    g_train = make_dataset(256);
    int bad = 0;
    char name[64];
    for (int a = NNC_ALGO_MGRAWA; a <= NNC_ALGO_SLOWMO; a++)
        for (int s = 0; s < 2; s++) {
            snprintf(name, sizeof name, "%s/%s", nnc_algo_name((nnc_algo)a), s ? "lockstep" : "async");
            bad += run(name, config((nnc_algo)a, 4, (nnc_sync_mode)s), NNC_OK);
        }
    bad += run("sgd single", config(NNC_ALGO_SGD, 1, NNC_SYNC_ASYNC), NNC_OK);
    /* time budgets (the deadline flag, the workers' own end test, the synchronizer's wake at the
     * deadline), the training-time evaluation grid and the modelled link's wait */
    const nnc_algo timed[] = {NNC_ALGO_MGRAWA, NNC_ALGO_LSGD, NNC_ALGO_DP, NNC_ALGO_SGD};
    for (int k = 0; k < 4; k++)
        for (int s = 0; s < 2; s++) {
            nnc_train_config t = config(timed[k], timed[k] == NNC_ALGO_SGD ? 1 : 4, (nnc_sync_mode)s);
            t.epochs = 0;
            t.time_budget = 0.6;
            t.eval_seconds = 0.2;
            t.link.latency_s = 1e-3;
            t.link.bytes_per_s = 1e9;
            snprintf(name, sizeof name, "budget %s/%s", nnc_algo_name(timed[k]), s ? "lockstep" : "async");
            bad += run(name, t, NNC_OK);
        }
    nnc__dist_observe(observer, NULL);
    bad += run("observed mgrawa", config(NNC_ALGO_MGRAWA, 4, NNC_SYNC_LOCKSTEP), NNC_OK);
    bad += run("observed easgd async", config(NNC_ALGO_EASGD, 4, NNC_SYNC_ASYNC), NNC_OK);
    bad += run("observed dp", config(NNC_ALGO_DP, 4, NNC_SYNC_LOCKSTEP), NNC_OK);
    nnc__dist_observe(NULL, NULL);
    arm("worker_nan:2:2,worker_sleep_jitter:2");
    bad += run("nan worker", config(NNC_ALGO_MGRAWA, 4, NNC_SYNC_LOCKSTEP), NNC_OK);
    arm("worker_stall:1");
    nnc_train_config c = config(NNC_ALGO_MGRAWA, 4, NNC_SYNC_ASYNC);
    c.sync_timeout = 0.5;
    c.epochs = 50;
    bad += run("stalled worker", c, NNC_ETIMEOUT);
    arm("worker_error:3");
    bad += run("failing worker", config(NNC_ALGO_DP, 4, NNC_SYNC_ASYNC), NNC_ETHREAD);
    arm("");
    char dir[] = "/tmp/nnc_dist_tsan_XXXXXX";
    if (!mkdtemp(dir)) return 2;
    c = config(NNC_ALGO_MGRAWA, 3, NNC_SYNC_ASYNC);
    c.stop = &g_stop;
    c.on_round = stop_at_round_3;
    c.ud = (void *)1;
    c.ckpt_dir = dir;
    bad += run("stop", c, NNC_EINTERRUPTED);
    c.stop = NULL;
    c.resume = 1;
    c.on_round = NULL;
    bad += run("resume", c, NNC_OK);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) bad++;
    pthread_t th[2];
    for (int k = 0; k < 2; k++) pthread_create(&th[k], NULL, context, (void *)(size_t)(k + 1));
    for (int k = 0; k < 2; k++) {
        void *rv;
        pthread_join(th[k], &rv);
        bad += (int)(size_t)rv;
    }
    printf("two concurrent contexts: %s\n", bad ? "see above" : "ok");
    for (int pair = 0; pair < 2; pair++) {
        for (int k = 0; k < 2; k++) pthread_create(&th[k], NULL, team_run, (void *)(size_t)(2 * pair + k));
        for (int k = 0; k < 2; k++) {
            void *rv;
            pthread_join(th[k], &rv);
            bad += (int)(size_t)rv;
        }
    }
    printf("two concurrent runs, different team sizes: %s\n", bad ? "see above" : "ok");
    /* the center reduction node by node on the parked workers' teams: a synthetic 2-node
     * machine, 3 workers x 2 threads, chunks of 37 floats (a pipeline of three stages) */
    setenv("HWLOC_SYNTHETIC", "pack:2 numa:1 core:8 pu:2", 1);
    arm("reduce_chunk:37");
    for (int s = 0; s < 2; s++) {
        nnc_train_config h = config(s ? NNC_ALGO_LGRAWA : NNC_ALGO_MGRAWA, 3, (nnc_sync_mode)s);
        h.threads_per_worker = 2;
        bad += run(s ? "2-node reduce lgrawa" : "2-node reduce mgrawa", h, NNC_OK);
    }
    arm("");
    unsetenv("HWLOC_SYNTHETIC");
    printf("%s: %d failure(s)\n", bad ? "FAIL" : "OK", bad);
    nnc__free(g_train->images);
    nnc__free(g_train->labels);
    nnc__free(g_train);
    return bad != 0;
}
