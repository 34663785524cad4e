/* dist/algo_grawa.c - GRAWA (docs/algorithms.md, "GRAWA"): MGRAWA (one weight per worker) and
 * LGRAWA (one weight per worker and layer), inversely proportional to the smoothed probe
 * gradient norms; the center is the weighted mean, every worker is pulled toward it, and the
 * proximity term keeps it near that center between rounds. */
#include "dist/algo.h"

#include <math.h>

#include "dist/run.h"

/* Smooth each finite worker's probe norms (EMA with bias correction) and turn them into the
 * reduction weights u = 1 / (nhat + eps) with the same functions the hand-computed tests check. */
static int grawa_weights(nnc_run *R, nnc_round_info *ri, const char **why)
{
    int M = R->M, L = R->ly.L, pl = (R->A->flags & NNC_ALGO_F_PER_LAYER) != 0;
    double nhat[NNC_MAX_WORKERS];
    for (int i = 0; i < M; i++) {
        nhat[i] = 0.0;
        if (!R->ok[i]) continue;
        const double *nl = &R->norms[(size_t)i * L];
        double nm = nnc__grawa_model_norm(nl, L, R->c.norm_kind);
        if (!isfinite(nm)) {
            R->ok[i] = 0;
            why[i] = "gradient norm";
            continue;
        }
        long k = ++R->W[i].ema_n;
        if (pl) {
            /* The smoothed layer norms go into u, then become weights in place. */
            double mean = 0.0;
            for (int l = 0; l < L; l++) {
                double nh = nnc__grawa_ema(&R->ema[(size_t)i * L + l], nl[l], k);
                R->u[(size_t)i * L + l] = nh;
                mean += nh;
            }
            ri->norm[i] = L ? mean / L : 0.0;
        } else {
            nhat[i] = nnc__grawa_ema(&R->ema[(size_t)i * (L > 0 ? L : 1)], nm, k);
            ri->norm[i] = nhat[i];
        }
    }
    if (pl) {
        nnc__grawa_inv_weights_layers(R->u, R->ok, M, L, R->u);
    } else {
        nnc__grawa_inv_weights(nhat, R->ok, M, R->u);
        nnc__grawa_weights(nhat, R->ok, M, ri->weight);
    }
    return NNC_OK;
}

const nnc_algo_def nnc__algo_mgrawa = {
    .id = NNC_ALGO_MGRAWA, .name = "mgrawa", .alias = "grawa",
    .summary = "model-level GRAWA: center weighted by inverse gradient norms",
    .tau = 32, .pull = 0.5f, .prox = 0.01f,
    .flags = NNC_ALGO_F_PROBE | NNC_ALGO_F_SLOW_MOMENTUM,
    .weights = grawa_weights, .center = nnc__algo_weighted_center, .pull_coef = nnc__algo_config_pull,
    .state = nnc__slowmo_state,
};

const nnc_algo_def nnc__algo_lgrawa = {
    .id = NNC_ALGO_LGRAWA, .name = "lgrawa",
    .summary = "layer-level GRAWA: one inverse-norm weight per worker and layer",
    .tau = 32, .pull = 0.5f, .prox = 0.01f,
    .flags = NNC_ALGO_F_PROBE | NNC_ALGO_F_PER_LAYER | NNC_ALGO_F_SLOW_MOMENTUM,
    .weights = grawa_weights, .center = nnc__algo_weighted_center, .pull_coef = nnc__algo_config_pull,
    .state = nnc__slowmo_state,
};
