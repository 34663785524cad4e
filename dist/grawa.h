/* dist/grawa.h - the pure math of GRAWA and its baselines (docs/algorithms.md), no threads.
 *
 * Everything works on flat float vectors laid out like a params arena (nn/params.h) and on a
 * layer table (one segment per trained tensor). Reductions run in a fixed worker order and
 * accumulate in double, so the same inputs always give the same bits.
 *
 * Ownership: callers own every buffer; nothing here allocates except nnc__grawa_layers_new().
 * Thread-safety: all functions are reentrant; buffers follow their owner's rules.
 */
#ifndef NNC_DIST_GRAWA_H
#define NNC_DIST_GRAWA_H

#include <stddef.h>

#include "dist/dist.h"
#include "nn/params.h"

/* EMA factor of the gradient-norm smoothing: 0.9^8 (public code). */
#define NNC_GRAWA_BETA 0.43046721
/* Added to norms before inverting: a zero norm gives a large finite weight, never Inf/NaN. */
#define NNC_GRAWA_EPS 1e-12

/* The trained tensors of a params table as segments of the data arena (L = number of layers). */
typedef struct nnc_grawa_layers {
    int L;
    size_t *off, *len;
    size_t n;            /* floats in the arena (params->n_data) */
} nnc_grawa_layers;

int nnc__grawa_layers_new(const nnc_params *p, nnc_grawa_layers *out);
void nnc__grawa_layers_free(nnc_grawa_layers *l);

/* out[l] = ||g[off_l .. off_l + len_l)||_2 for every layer (g: a gradient arena). */
void nnc__grawa_layer_norms(const nnc_grawa_layers *ly, const float *g, double *out);
/* Model-level norm: sum of the per-layer norms (GRAWA default) or the global L2 norm. */
double nnc__grawa_model_norm(const double *layer, int L, nnc_norm_kind kind);

/* One EMA step with bias correction: m <- beta m + (1 - beta) n; returns m / (1 - beta^k),
 * k = 1, 2, ... the number of updates so far (this one included). */
double nnc__grawa_ema(double *m, double n, long k);

/* Unnormalised inverse-norm weights u_i = 1 / (n_i + eps); u_i = 0 where ok[i] == 0 or n_i is
 * not finite (ok may be NULL). Returns the number of workers with u_i > 0. */
int nnc__grawa_inv_weights(const double *norms, const int *ok, int M, double *u);
/* Convex weights w_i = u_i / sum_j u_j (all 0 when no worker is valid). Returns valid count. */
int nnc__grawa_weights(const double *norms, const int *ok, int M, double *w);

/* acc[j] += sum_i u_i x_i[j] over workers i = 0..M-1 in order (u_i == 0 skipped). Per layer
 * when per_layer (u has M*L entries, u[i*L + l]), else one weight per worker (u has M).
 * Accumulates into acc (n doubles): callers zero it, then add groups in a fixed order. */
void nnc__grawa_accumulate(const nnc_grawa_layers *ly, double *acc, const float *const *x,
                           const double *u, int M, int per_layer);
/* usum[l] (or usum[0]) += sum_i u_i, same order and layout as nnc__grawa_accumulate. */
void nnc__grawa_accumulate_wsum(int L, double *usum, const double *u, int M, int per_layer);
/* center[j] = acc[j] / usum (per layer or global); entries outside layers are set to 0. */
void nnc__grawa_finalize(const nnc_grawa_layers *ly, float *center, const double *acc,
                         const double *usum, int per_layer);

/* x <- (1 - s) x + s c over n floats (s = 0: unchanged, s = 1: x = c, x == c: unchanged). */
void nnc__grawa_pull(float *x, const float *c, double s, size_t n);
/* ||a - b||_2 over n floats. */
double nnc__grawa_distance(const float *a, const float *b, size_t n);
/* 1 if all n floats are finite. */
int nnc__grawa_finite(const float *x, size_t n);

/* EASGD center step: c <- (1 - beta) c + beta * mean (mean: the workers' uniform average). */
void nnc__easgd_center(float *c, const float *mean, double beta, size_t n);

/* LSGD: running mean of the last NNC_LSGD_HISTORY losses of each worker. */
#define NNC_LSGD_HISTORY 4
typedef struct nnc_lsgd_hist {
    double loss[NNC_LSGD_HISTORY];
    int count, next;
} nnc_lsgd_hist;
void nnc__lsgd_push(nnc_lsgd_hist *h, double loss);
double nnc__lsgd_mean(const nnc_lsgd_hist *h);   /* +Inf when empty or non-finite */
/* Leader = argmin of the running means among ok workers (ties: lowest index); -1 if none. */
int nnc__lsgd_leader(const nnc_lsgd_hist *h, const int *ok, int M);

/* SAM ascent: saved <- w (for an exact restore by copy), then w += rho g / ||g||. Returns
 * ||g||. A zero or non-finite gradient norm leaves w unchanged. */
double nnc__sam_perturb(float *w, const float *g, float *saved, double rho, size_t n);

/* Eigenvalues of the symmetric tridiagonal matrix with diagonal d[0..n) and off-diagonal
 * e[i] = T(i, i+1) (e[n-1] ignored): implicit QL; eigenvalues into d (unsorted), e destroyed.
 * Returns 0, or -1 if an eigenvalue did not converge (dist/flatness.c). */
int nnc__tridiag_eigenvalues(double *d, double *e, int n);

#endif
