/* dist/algo.c - the algorithm registry (one line per algorithm) and the round pieces several
 * algorithms share (uniform weights, the weighted center, the configured pull). */
#include "dist/algo.h"

#include <stdio.h>
#include <string.h>

#include "dist/run.h"
#include "nn/names.h"

/* The one replica of `--workers 1 --algo sgd`: no rounds (train.c runs it on the calling thread). */
const nnc_algo_def nnc__algo_sgd = {
    .id = NNC_ALGO_SGD, .name = "sgd", .summary = "one replica, plain SGD (workers 1)",
    .tau = 1, .pull = 0.0f, .prox = 0.0f, .flags = NNC_ALGO_F_SINGLE,
};

/* The registry: help order. Adding an algorithm = its file + one line here. */
static const nnc_algo_def *const registry[] = {
    &nnc__algo_sgd,       &nnc__algo_mgrawa, &nnc__algo_lgrawa, &nnc__algo_local_sgd, &nnc__algo_easgd,
    &nnc__algo_lsgd,      &nnc__algo_dp,     &nnc__algo_dp_sam, &nnc__algo_slowmo,
};
#define NREG ((int)(sizeof registry / sizeof *registry))

int nnc_algo_count(void) { return NREG; }

const nnc_algo_def *nnc_algo_at(int i) { return i >= 0 && i < NREG ? registry[i] : NULL; }

const nnc_algo_def *nnc_algo_find(const char *name)
{
    for (int i = 0; name && i < NREG; i++)
        if (!strcmp(name, registry[i]->name) || (registry[i]->alias && !strcmp(name, registry[i]->alias)))
            return registry[i];
    return NULL;
}

const nnc_algo_def *nnc_algo_get(nnc_algo id)
{
    for (int i = 0; i < NREG; i++)
        if (registry[i]->id == id) return registry[i];
    return NULL;
}

const char *nnc_algo_suggest(const char *s)
{
    const char *names[2 * (sizeof registry / sizeof *registry)];
    int n = 0;
    for (int i = 0; i < NREG; i++) {
        names[n++] = registry[i]->name;
        if (registry[i]->alias) names[n++] = registry[i]->alias;
    }
    return nnc__closest_name(s, names, n);
}

int nnc_algo_parse(const char *s, nnc_algo *out)
{
    const nnc_algo_def *d = nnc_algo_find(s);
    if (d) {
        *out = d->id;
        return NNC_OK;
    }
    char list[256];
    size_t o = 0;
    for (int i = 0; i < NREG && o < sizeof list; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", registry[i]->name);
    const char *best = nnc_algo_suggest(s);
    if (best)
        return nnc__fail(NNC_EINVAL, "unknown algorithm '%s' (did you mean '%s'?); expected one of %s", s, best,
                         list);
    return nnc__fail(NNC_EINVAL, "unknown algorithm '%s' (expected one of %s)", s ? s : "(null)", list);
}

const char *nnc_algo_name(nnc_algo a)
{
    const nnc_algo_def *d = nnc_algo_get(a);
    return d ? d->name : "?";
}

int nnc__algo_uniform_weights(nnc_run *R, nnc_round_info *ri, const char **why)
{
    (void)why;
    for (int i = 0; i < R->M; i++) R->u[i] = R->ok[i] ? 1.0 : 0.0;
    /* u_i / sum_j u_j, the sum formed in worker order as the reduction forms it. */
    double usum = 0.0;
    for (int i = 0; i < R->M; i++) usum += R->u[i];
    for (int i = 0; i < R->M; i++) ri->weight[i] = usum > 0 ? R->u[i] / usum : 0.0;
    return NNC_OK;
}

int nnc__algo_weighted_center(nnc_run *R, const float *const *x, nnc_round_info *ri)
{
    int pl = (R->A->flags & NNC_ALGO_F_PER_LAYER) != 0, L = R->ly.L;
    int s = nnc__run_center(R, x, R->u, pl, R->center);
    if (s) return s;
    memcpy(R->pub, R->center, R->ly.n * sizeof(float));
    if (pl)
        for (int i = 0; i < R->M; i++) {
            /* The reported weight of a worker: its mean over the layers. */
            double w = 0.0;
            for (int l = 0; l < L; l++) w += R->usum[l] > 0 ? R->u[(size_t)i * L + l] / R->usum[l] : 0.0;
            ri->weight[i] = L ? w / L : 0.0;
        }
    return NNC_OK;
}

double nnc__algo_config_pull(const nnc_run *R, int i)
{
    (void)i;
    return R->c.pull;
}
