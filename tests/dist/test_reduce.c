/* tests/dist/test_reduce.c - the node-by-node center reduction (dist/reduce.h) is bitwise the
 * flat nnc__grawa_accumulate + nnc__grawa_finalize: several worker counts, per-layer and global
 * weights with zero weights, layer tables with gaps, chunks that do and do not divide n, node
 * assignments of 1, 2 and 4 nodes (contiguous, interleaved, and the planner's on synthetic
 * HWLOC_SYNTHETIC machines), run by one thread per worker on its own team of 1 or 2 threads;
 * the team-split pull equals nnc__grawa_pull; and lockstep mgrawa / lgrawa runs on a synthetic
 * 2-node machine, with threads per worker 1 and 2 and small chunks, end bitwise equal to the
 * flat reduction's run (NNC_FAULT=reduce_flat). */
#include <pthread.h>

#include "dist/grawa.h"
#include "dist/place.h"
#include "dist/reduce.h"
#include "nn/fault.h"
#include "nn/threads.h"
#include "tests/dist/dist_fixture.h"

/* Layers with gaps between them (alignment slack the reduction must leave at 0). */
static void layers(nnc_grawa_layers *ly, size_t *off, size_t *len)
{
    static const size_t o[] = {0, 37, 40, 301, 310}, l[] = {33, 3, 250, 9, 411};
    ly->L = 5;
    for (int i = 0; i < 5; i++) off[i] = o[i], len[i] = l[i];
    ly->off = off;
    ly->len = len;
    ly->n = 730;
}

/* Values over many magnitudes and signs: a changed summation order changes the bits. */
static float value(nnc_rng *r)
{
    float m = (float)nnc_rng_below(r, 1000000) / 1e6f - 0.5f;
    int e = (int)nnc_rng_below(r, 40) - 20;
    return ldexpf(m, e);
}

typedef struct thr_arg {
    nnc__reduce *r;
    int i, T;
    int status;
} thr_arg;

static void *worker(void *p)
{
    thr_arg *a = p;
    nnc_team *t = NULL;
    a->status = nnc_team_new(a->T, NULL, 1, &t);
    if (a->status) return NULL;
    nnc_team_enter(t);
    nnc__reduce_run(a->r, nnc__reduce_node_of(a->r, a->i));
    nnc_team_leave(t);
    nnc_team_free(t);
    return NULL;
}

/* One case: the reduction by M threads (teams of T) against the flat one, bitwise. */
static void check(int M, int per_layer, const int *node, size_t chunk, int T, uint64_t seed)
{
    nnc_grawa_layers ly;
    size_t off[5], len[5];
    layers(&ly, off, len);
    size_t n = ly.n;
    nnc_rng r;
    nnc_rng_seed(&r, seed, (uint64_t)M);
    float *xs = nnc__calloc((size_t)M * n, sizeof(float));
    const float *x[NNC_MAX_WORKERS];
    double u[NNC_MAX_WORKERS * 5];
    for (int i = 0; i < M; i++) {
        x[i] = xs + (size_t)i * n;
        for (size_t j = 0; j < n; j++) xs[(size_t)i * n + j] = value(&r);
    }
    int nu = per_layer ? M * ly.L : M;
    for (int k = 0; k < nu; k++) u[k] = (k % 3 == 1) ? 0.0 : 1.0 / (1e-3 + (double)nnc_rng_below(&r, 1000));
    if (!per_layer && M > 2) u[M - 1] = 0.0;   /* a skipped last worker */
    double *a0 = nnc__calloc(n, sizeof(double)), *a1 = nnc__calloc(n, sizeof(double));
    float *c0 = nnc__calloc(n, sizeof(float)), *c1 = nnc__calloc(n, sizeof(float));
    double us[5] = {0};
    nnc__grawa_accumulate(&ly, a0, x, u, M, per_layer);
    nnc__grawa_accumulate_wsum(ly.L, us, u, M, per_layer);
    nnc__grawa_finalize(&ly, c0, a0, us, per_layer);
    for (size_t j = 0; j < n; j++) a1[j] = NAN, c1[j] = NAN;   /* every element is written */
    nnc__reduce red;
    cr_assert_eq(nnc__reduce_init(&red, &ly, x, u, M, per_layer, node, chunk, a1, us, c1), NNC_OK);
    pthread_t th[NNC_MAX_WORKERS];
    thr_arg ta[NNC_MAX_WORKERS];
    for (int i = 0; i < M; i++) {
        ta[i] = (thr_arg){.r = &red, .i = i, .T = T};
        cr_assert_eq(pthread_create(&th[i], NULL, worker, &ta[i]), 0);
    }
    for (int i = 0; i < M; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(ta[i].status, NNC_OK);
    }
    cr_assert(memcmp(a0, a1, n * sizeof(double)) == 0, "acc differs: M %d per_layer %d chunk %zu T %d nodes %d", M,
              per_layer, chunk, T, red.nnodes);
    cr_assert(memcmp(c0, c1, n * sizeof(float)) == 0, "center differs: M %d per_layer %d chunk %zu T %d", M,
              per_layer, chunk, T);
    nnc__reduce_free(&red);
    /* the serial form too */
    for (size_t j = 0; j < n; j++) a1[j] = NAN;
    cr_assert_eq(nnc__reduce_init(&red, &ly, x, u, M, per_layer, node, chunk, a1, us, NULL), NNC_OK);
    nnc__reduce_serial(&red);
    cr_assert(memcmp(a0, a1, n * sizeof(double)) == 0, "serial acc differs: M %d chunk %zu", M, chunk);
    nnc__reduce_free(&red);
    nnc__free(xs);
    nnc__free(a0);
    nnc__free(a1);
    nnc__free(c0);
    nnc__free(c1);
}

static const size_t chunks[] = {1, 7, 64, 73, 730, 0};   /* 0: the default, > n */

Test(dist_reduce, bitwise_flat_for_node_layouts, .timeout = 120)
{
    const int Ms[] = {1, 2, 3, 5, 8};
    for (size_t m = 0; m < sizeof Ms / sizeof *Ms; m++) {
        int M = Ms[m], one[NNC_MAX_WORKERS], two_blk[NNC_MAX_WORKERS], two_rr[NNC_MAX_WORKERS],
            four[NNC_MAX_WORKERS];
        for (int i = 0; i < M; i++) {
            one[i] = 0;
            two_blk[i] = i >= M / 2;
            two_rr[i] = i % 2;
            four[i] = 3 - i % 4;   /* numbered backwards: the reduction renumbers */
        }
        const int *layouts[] = {NULL, one, two_blk, two_rr, four};
        for (size_t k = 0; k < sizeof layouts / sizeof *layouts; k++)
            for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++)
                for (int pl = 0; pl < 2; pl++) check(M, pl, layouts[k], chunks[c], 1 + (int)(c % 2), 11 + m);
    }
}

Test(dist_reduce, bitwise_flat_for_planned_synthetic_machines, .timeout = 120)
{
    const char *desc[] = {"pack:2 numa:1 core:8 pu:2", "pack:2 numa:2 core:4 pu:1"};
    const int nodes[] = {2, 4};
    for (int d = 0; d < 2; d++)
        for (int M = 2; M <= 8; M += 3) {
            nnc__topo t;
            nnc__plan p;
            cr_assert_eq(nnc__topo_load(desc[d], &t), NNC_OK, "%s", nnc_error_message());
            cr_assert_eq(t.nnodes, nodes[d]);
            cr_assert_eq(nnc__plan_make(&t, M, 1, NNC_PLACEMENT_AUTO, &p), NNC_OK);
            cr_assert(p.pinned);
            nnc__reduce probe;
            cr_assert_eq(nnc__reduce_init(&probe, &(nnc_grawa_layers){.n = 1}, NULL, NULL, M, 0, p.node, 1, NULL,
                                          NULL, NULL),
                         NNC_OK);
            cr_assert_eq(probe.nnodes, M < nodes[d] ? M : nodes[d], "%s: %d workers on %d nodes", desc[d], M,
                         probe.nnodes);
            nnc__reduce_free(&probe);
            for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++)
                for (int pl = 0; pl < 2; pl++) check(M, pl, p.node, chunks[c], 2, 40 + (uint64_t)M);
            nnc__plan_free(&p);
            nnc__topo_free(&t);
        }
}

typedef struct pull_arg {
    float *x;
    const float *c;
    double s;
    size_t n;
} pull_arg;

static void *pull_main(void *p)
{
    pull_arg *a = p;
    nnc_team *t;
    if (nnc_team_new(3, NULL, 1, &t)) return p;
    nnc_team_enter(t);
    nnc__reduce_pull(a->x, a->c, a->s, a->n);
    nnc_team_leave(t);
    nnc_team_free(t);
    return NULL;
}

Test(dist_reduce, team_pull_equals_pull)
{
    size_t n = 3 * NNC_REDUCE_CHUNK + 123;
    float *x0 = nnc__calloc(n, sizeof(float)), *x1 = nnc__calloc(n, sizeof(float)),
          *c = nnc__calloc(n, sizeof(float));
    nnc_rng r;
    nnc_rng_seed(&r, 3, 4);
    const double s[] = {0.0, 0.3, 1.0};
    for (int k = 0; k < 3; k++) {
        for (size_t j = 0; j < n; j++) x0[j] = x1[j] = value(&r), c[j] = value(&r);
        nnc__grawa_pull(x0, c, s[k], n);
        pull_arg a = {.x = x1, .c = c, .s = s[k], .n = n};
        pthread_t th;
        void *rv;
        pthread_create(&th, NULL, pull_main, &a);
        pthread_join(th, &rv);
        cr_assert_null(rv);
        cr_assert(memcmp(x0, x1, n * sizeof(float)) == 0, "pull s = %g differs", s[k]);
    }
    nnc__free(x0);
    nnc__free(x1);
    nnc__free(c);
}

static void arm(const char *spec)
{
    setenv("NNC_FAULT", spec, 1);
    nnc__fault_reload();
}

/* A lockstep run of 3 workers (on 2 nodes: w0 and w2 on node 0, w1 on node 1 - three pipeline
 * stages) against the flat reduction's run: trace and final center bitwise equal. */
static void lockstep_vs_flat(nnc_algo algo)
{
    nnc_dataset *tr = fx_dataset(192, 1);
    struct { const char *synth, *fault; int tpw; } v[] = {
        {NULL, "reduce_flat:1", 1},                                /* today's reduction */
        {NULL, "", 1},                                             /* one node, one chunk */
        {"pack:2 numa:1 core:8 pu:2", "reduce_chunk:37", 1},       /* 2 nodes, many chunks */
        {"pack:2 numa:1 core:8 pu:2", "reduce_chunk:64", 2},
        {NULL, "reduce_chunk:37", 2},                              /* 1 node, many chunks */
    };
    uint64_t h0 = 0;
    char d0[64];
    for (size_t k = 0; k < sizeof v / sizeof *v; k++) {
        nnc_train_config c = fx_config(algo, 3);
        c.sync = NNC_SYNC_LOCKSTEP;
        c.tau = 2;
        c.epochs = 2;
        c.threads_per_worker = v[k].tpw;
        fx_trace t;
        nnc_train_result r;
        char d[64];
        c.ckpt_dir = fx_tmpdir(d, sizeof d);
        fx_hook(&c, &t);
        if (v[k].synth) setenv("HWLOC_SYNTHETIC", v[k].synth, 1);
        else unsetenv("HWLOC_SYNTHETIC");
        arm(v[k].fault);
        int s = nnc_train(&c, tr, NULL, &r);
        unsetenv("HWLOC_SYNTHETIC");
        arm("");
        cr_assert_eq(s, NNC_OK, "%s", nnc_error_message());
        cr_assert_gt(t.rounds, 3);
        if (v[k].synth) cr_assert(strstr(r.placement, "\"nodes\": 2"), "%s", r.placement);
        if (k == 0) {
            h0 = t.hash;
            memcpy(d0, d, sizeof d);
            continue;
        }
        cr_assert_eq(t.hash, h0, "%s, case %zu: the round trace differs from the flat reduction's",
                     nnc_algo_name(algo), k);
        nnc_model *a = fx_load_model(d0, "last.ckpt", ""), *b = fx_load_model(d, "last.ckpt", "");
        cr_assert(fx_same_params(a, b), "%s, case %zu: the center differs from the flat reduction's",
                  nnc_algo_name(algo), k);
        nnc_model_free(a);
        nnc_model_free(b);
        fx_rmdir(d);
    }
    fx_rmdir(d0);
    fx_dataset_free(tr);
}

Test(dist_reduce, lockstep_mgrawa_two_nodes_bitwise_flat, .timeout = 240) { lockstep_vs_flat(NNC_ALGO_MGRAWA); }

Test(dist_reduce, lockstep_lgrawa_two_nodes_bitwise_flat, .timeout = 240) { lockstep_vs_flat(NNC_ALGO_LGRAWA); }
