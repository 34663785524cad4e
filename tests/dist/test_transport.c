/* tests/dist/test_transport.c - the transport seam's contracts that the MPI transport relies on
 * (ranks vs threads parity, checked without MPI): a reduction continued from the partial sums
 * of the workers before (the rank-order chain of dist/transport_mpi.c) equals the one-process
 * reduction bit for bit, per model and per layer, with zero weights skipped; the rank split of
 * the workers is contiguous, in order and never empty; the local transport's collectives are
 * no-ops. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist/grawa.h"
#include "dist/transport.h"
#include "nn/nnc.h"

#define NW 7 /* workers */
#define NL 3 /* layers */
static const size_t len[NL] = {257, 3, 1000};

static void make_layers(nnc_grawa_layers *ly, size_t *off, size_t *ln)
{
    size_t o = 0;
    for (int l = 0; l < NL; l++) {
        off[l] = o;
        ln[l] = len[l];
        o += len[l];
    }
    *ly = (nnc_grawa_layers){.L = NL, .off = off, .len = ln, .n = o};
}

/* Values of varied magnitude so that the order of additions changes the rounding. */
static void fill(float *x, size_t n, uint64_t seed)
{
    nnc_rng r;
    nnc_rng_seed(&r, seed, 7);
    for (size_t j = 0; j < n; j++) {
        float e = (float)(nnc_rng_below(&r, 16)) - 8.0f;
        x[j] = (nnc_rng_uniform(&r) - 0.5f) * ldexpf(1.0f, (int)e);
    }
}

static void chain_case(int per_layer)
{
    size_t off[NL], ln[NL];
    nnc_grawa_layers ly;
    make_layers(&ly, off, ln);
    float *buf = calloc((size_t)NW * ly.n, sizeof(float));
    const float *x[NW];
    double u[NW * NL];
    for (int i = 0; i < NW; i++) {
        fill(buf + (size_t)i * ly.n, ly.n, 100 + (uint64_t)i);
        x[i] = buf + (size_t)i * ly.n;
    }
    for (int k = 0; k < NW * NL; k++) u[k] = 1.0 / (1.0 + 0.37 * k);
    u[per_layer ? 2 * NL + 1 : 2] = 0.0; /* a weight-0 worker (or layer) is skipped */
    int ns = per_layer ? NL : 1;
    nnc_transport *t;
    cr_assert_eq(nnc__transport_local_new(&t), NNC_OK);
    double *full = calloc(ly.n, sizeof(double)), fsum[NL];
    cr_assert_eq(t->ops->reduce_weighted(t, &ly, x, u, NW, per_layer, full, fsum), NNC_OK);
    /* Every split into 1..NW "ranks": each continues the previous one's partial sums. */
    for (int R = 1; R <= NW; R++) {
        double *acc = calloc(ly.n, sizeof(double)), usum[NL] = {0};
        for (int r = 0; r < R; r++) {
            int lo = nnc__transport_first_worker(NW, R, r), hi = nnc__transport_first_worker(NW, R, r + 1);
            const double *ur = u + (per_layer ? lo * NL : lo);
            nnc__grawa_accumulate(&ly, acc, x + lo, ur, hi - lo, per_layer);
            nnc__grawa_accumulate_wsum(NL, usum, ur, hi - lo, per_layer);
        }
        cr_assert_eq(memcmp(acc, full, ly.n * sizeof(double)), 0, "%d ranks: sums differ from one process", R);
        cr_assert_eq(memcmp(usum, fsum, (size_t)ns * sizeof(double)), 0, "%d ranks: weight sums differ", R);
        free(acc);
    }
    /* The order matters at all with these values (else the test would prove nothing). */
    double *rev = calloc(ly.n, sizeof(double));
    for (int i = NW - 1; i >= 0; i--)
        nnc__grawa_accumulate(&ly, rev, x + i, u + (per_layer ? i * NL : i), 1, per_layer);
    cr_assert_neq(memcmp(rev, full, ly.n * sizeof(double)), 0, "reverse order gave the same bits");
    free(rev);
    free(full);
    free(buf);
    nnc__transport_free(t);
}

Test(dist_transport, chain_in_rank_order_is_bitwise_the_one_process_sum_model)
{
    chain_case(0);
}

Test(dist_transport, chain_in_rank_order_is_bitwise_the_one_process_sum_per_layer)
{
    chain_case(1);
}

Test(dist_transport, rank_split_contiguous_in_order_never_empty)
{
    for (int m = 1; m <= NNC_MAX_WORKERS; m++)
        for (int R = 1; R <= m; R++) {
            cr_assert_eq(nnc__transport_first_worker(m, R, 0), 0);
            cr_assert_eq(nnc__transport_first_worker(m, R, R), m);
            for (int r = 0; r < R; r++) {
                int a = nnc__transport_first_worker(m, R, r), b = nnc__transport_first_worker(m, R, r + 1);
                cr_assert_gt(b, a, "M=%d R=%d: rank %d has no worker", m, R, r);
                cr_assert_leq(b - a, m / R + 1, "M=%d R=%d: rank %d has %d workers", m, R, r, b - a);
            }
        }
}

Test(dist_transport, local_collectives_are_noops)
{
    nnc_transport *t;
    cr_assert_eq(nnc__transport_default_new(&t), NNC_OK);
    cr_assert_str_eq(t->ops->name, "local");
    cr_assert_eq(t->rank, 0);
    cr_assert_eq(t->size, 1);
    int v[2] = {3, 4};
    size_t bytes[1] = {sizeof v};
    cr_assert_eq(t->ops->allgather(t, v, bytes), NNC_OK);
    cr_assert_eq(t->ops->broadcast(t, v, sizeof v, 0), NNC_OK);
    cr_assert_eq(t->ops->barrier(t), NNC_OK);
    cr_assert(v[0] == 3 && v[1] == 4);
    cr_assert_eq(nnc_mpi_active(), 0);
    cr_assert_eq(nnc_mpi_size(), 1);
#ifndef NNC_MPI
    cr_assert_eq(nnc_mpi_init(NULL, NULL), NNC_EUNSUPPORTED);
#endif
    nnc__transport_free(t);
}
