/* dist/parked.c - work the synchronizer hands to the parked workers during a round (M > 1, one
 * rank): the center reduction node by node on the workers' own thread teams (dist/reduce.h) and
 * the workers' distances to the target.
 *
 * Protocol: with every local worker parked at the round (dist/sync.c, do_round; lockstep and
 * async alike: the synchronizer starts a round only once all of them have arrived), the
 * synchronizer publishes a job (fn, ctx) under mu and bumps job_gen; each parked worker runs
 * fn(ctx, its index) on its own thread - hence on its own team, pinned to its own cores - then
 * counts itself done and parks again (dist/worker.c). The synchronizer waits for all of them
 * before it goes on, so a worker's team is borrowed only inside its park.
 * Thread-safety: jobs are posted by the synchronizer only; mu orders job and results. */
#include <math.h>
#include <string.h>

#include "dist/reduce.h"
#include "dist/run.h"
#ifdef NNC_TESTING
#include <stdlib.h>

#include "nn/fault.h"
#endif

int nnc__run_on_parked(nnc_run *R, void (*fn)(void *ctx, int i), void *ctx)
{
    pthread_mutex_lock(&R->mu);
    R->job_fn = fn;
    R->job_ctx = ctx;
    R->job_done = 0;
    R->job_gen++;
    pthread_cond_broadcast(&R->cv_work);
    while (R->job_done < R->nloc) pthread_cond_wait(&R->cv_sync, &R->mu);
    R->job_fn = NULL;
    R->job_ctx = NULL;
    pthread_mutex_unlock(&R->mu);
    return NNC_OK;
}

/* The pipeline's chunk (tests shrink it with NNC_FAULT=reduce_chunk:N to get many chunks out of
 * a tiny model, and compare with the flat reduction under NNC_FAULT=reduce_flat:1). */
static size_t chunk_floats(void)
{
#ifdef NNC_TESTING
    char a[32];
    if (nnc__fault_arg("reduce_chunk", a, sizeof a) && atol(a) > 0) return (size_t)atol(a);
#endif
    return NNC_REDUCE_CHUNK;
}

static void reduce_job(void *ctx, int i)
{
    nnc__reduce *r = ctx;
    nnc__reduce_run(r, nnc__reduce_node_of(r, i));
}

int nnc__run_center(nnc_run *R, const float *const *x, const double *u, int per_layer, float *center)
{
    int flat = !R->parked || R->tp->size > 1;
#ifdef NNC_TESTING
    if (nnc__fault_arg("reduce_flat", NULL, 0)) flat = 1;   /* tests: today's flat reduction */
#endif
    if (flat)
        return nnc__transport_center(R->tp, &R->ly, x + R->lo, u + (per_layer ? R->lo * R->ly.L : R->lo), R->nloc,
                                     per_layer, R->acc, R->usum, center);
    /* One rank: every worker is local and parked. The weight sums as the flat reduction forms
     * them; the vector on the workers' teams, node by node. */
    int nsum = per_layer ? R->ly.L : 1;
    memset(R->usum, 0, (size_t)(nsum ? nsum : 1) * sizeof(double));
    nnc__grawa_accumulate_wsum(R->ly.L, R->usum, u, R->M, per_layer);
    nnc__reduce r;
    int s = nnc__reduce_init(&r, &R->ly, x, u, R->M, per_layer, R->rnode, chunk_floats(), R->acc, R->usum, center);
    if (s) return s;
    s = nnc__run_on_parked(R, reduce_job, &r);
    nnc__reduce_free(&r);
    return s;
}

typedef struct dist_job {
    nnc_run *R;
    nnc_round_info *ri;
} dist_job;

static void distance_job(void *ctx, int i)
{
    dist_job *j = ctx;
    nnc_run *R = j->R;
    if (R->ok[i]) j->ri->distance[i] = nnc__grawa_distance(R->rep[i]->p->data, R->pub, R->ly.n);
}

int nnc__run_distances(nnc_run *R, nnc_round_info *ri)
{
    if (R->parked) {
        dist_job j = {.R = R, .ri = ri};
        return nnc__run_on_parked(R, distance_job, &j);
    }
    for (int i = R->lo; i < R->hi; i++)
        if (R->ok[i]) ri->distance[i] = nnc__grawa_distance(R->rep[i]->p->data, R->pub, R->ly.n);
    return NNC_OK;
}
