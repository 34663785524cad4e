/* dist/grawa.c - GRAWA / EASGD / LSGD / SAM math over flat vectors (see dist/grawa.h). */
#include "dist/grawa.h"

#include <math.h>
#include <string.h>

#include "nn/alloc.h"
#include "nn/status.h"

int nnc__grawa_layers_new(const nnc_params *p, nnc_grawa_layers *out)
{
    memset(out, 0, sizeof *out);
    int L = nnc_params_num_trained(p);
    out->off = nnc__calloc(L ? (size_t)L : 1, sizeof(size_t));
    out->len = nnc__calloc(L ? (size_t)L : 1, sizeof(size_t));
    if (!out->off || !out->len) {
        nnc__grawa_layers_free(out);
        return nnc__fail(NNC_ENOMEM, "grawa: cannot allocate the layer table (%d layers)", L);
    }
    int l = 0;
    for (int i = 0; i < p->count; i++) {
        if (p->entries[i].flags & NNC_PARAM_BUFFER) continue;
        out->off[l] = p->entries[i].offset;
        out->len[l] = p->entries[i].numel;
        l++;
    }
    out->L = L;
    out->n = p->n_data;
    return NNC_OK;
}

void nnc__grawa_layers_free(nnc_grawa_layers *l)
{
    nnc__free(l->off);
    nnc__free(l->len);
    l->off = l->len = NULL;
    l->L = 0;
}

void nnc__grawa_layer_norms(const nnc_grawa_layers *ly, const float *g, double *out)
{
    for (int l = 0; l < ly->L; l++) {
        const float *s = g + ly->off[l];
        double acc = 0.0;
        for (size_t j = 0; j < ly->len[l]; j++) acc += (double)s[j] * (double)s[j];
        out[l] = sqrt(acc);
    }
}

double nnc__grawa_model_norm(const double *layer, int L, nnc_norm_kind kind)
{
    double acc = 0.0;
    for (int l = 0; l < L; l++) acc += kind == NNC_NORM_GLOBAL_L2 ? layer[l] * layer[l] : layer[l];
    return kind == NNC_NORM_GLOBAL_L2 ? sqrt(acc) : acc;
}

double nnc__grawa_ema(double *m, double n, long k)
{
    *m = NNC_GRAWA_BETA * *m + (1.0 - NNC_GRAWA_BETA) * n;
    return *m / (1.0 - pow(NNC_GRAWA_BETA, (double)k));
}

int nnc__grawa_inv_weights_layers(const double *norms, const int *ok, int M, int L, double *u)
{
    int valid = 0;
    for (int i = 0; i < M; i++) {
        int any = 0;
        for (int l = 0; l < L; l++) {
            size_t k = (size_t)i * L + l;
            double n = norms[k];
            if ((ok && !ok[i]) || !isfinite(n) || n < 0.0) {
                u[k] = 0.0;
                continue;
            }
            u[k] = 1.0 / (n + NNC_GRAWA_EPS);
            any = 1;
        }
        valid += any;
    }
    return valid;
}

int nnc__grawa_inv_weights(const double *norms, const int *ok, int M, double *u)
{
    return nnc__grawa_inv_weights_layers(norms, ok, M, 1, u);
}

int nnc__grawa_weights(const double *norms, const int *ok, int M, double *w)
{
    int valid = nnc__grawa_inv_weights(norms, ok, M, w);
    double s = 0.0;
    for (int i = 0; i < M; i++) s += w[i];
    for (int i = 0; i < M; i++) w[i] = valid ? w[i] / s : 0.0;
    return valid;
}

/* acc[0..len) += u * x[0..len). */
static void axpy_d(double *restrict acc, const float *restrict x, double u, size_t len)
{
    for (size_t j = 0; j < len; j++) acc[j] += u * (double)x[j];
}

void nnc__grawa_accumulate(const nnc_grawa_layers *ly, double *acc, const float *const *x,
                           const double *u, int M, int per_layer)
{
    for (int i = 0; i < M; i++) {
        if (per_layer) {
            for (int l = 0; l < ly->L; l++) {
                double w = u[(size_t)i * ly->L + l];
                if (w != 0.0) axpy_d(acc + ly->off[l], x[i] + ly->off[l], w, ly->len[l]);
            }
        } else if (u[i] != 0.0) {
            for (int l = 0; l < ly->L; l++) axpy_d(acc + ly->off[l], x[i] + ly->off[l], u[i], ly->len[l]);
        }
    }
}

void nnc__grawa_accumulate_wsum(int L, double *usum, const double *u, int M, int per_layer)
{
    for (int i = 0; i < M; i++) {
        if (per_layer)
            for (int l = 0; l < L; l++) usum[l] += u[(size_t)i * L + l];
        else
            usum[0] += u[i];
    }
}

void nnc__grawa_finalize(const nnc_grawa_layers *ly, float *center, const double *acc,
                         const double *usum, int per_layer)
{
    memset(center, 0, ly->n * sizeof(float));
    for (int l = 0; l < ly->L; l++) {
        double s = per_layer ? usum[l] : usum[0];
        double inv = s > 0.0 ? 1.0 / s : 0.0;
        const double *a = acc + ly->off[l];
        float *c = center + ly->off[l];
        for (size_t j = 0; j < ly->len[l]; j++) c[j] = (float)(a[j] * inv);
    }
}

void nnc__grawa_pull(float *x, const float *c, double s, size_t n)
{
    if (s == 0.0) return;
    if (s == 1.0) {
        memmove(x, c, n * sizeof(float));
        return;
    }
    for (size_t j = 0; j < n; j++) x[j] = (float)((double)x[j] + s * ((double)c[j] - (double)x[j]));
}

double nnc__grawa_distance(const float *a, const float *b, size_t n)
{
    double acc = 0.0;
    for (size_t j = 0; j < n; j++) {
        double d = (double)a[j] - (double)b[j];
        acc += d * d;
    }
    return sqrt(acc);
}

int nnc__grawa_finite(const float *x, size_t n)
{
    for (size_t j = 0; j < n; j++)
        if (!isfinite(x[j])) return 0;
    return 1;
}

void nnc__easgd_center(float *c, const float *mean, double beta, size_t n)
{
    nnc__grawa_pull(c, mean, beta, n);
}

void nnc__lsgd_push(nnc_lsgd_hist *h, double loss)
{
    h->loss[h->next] = loss;
    h->next = (h->next + 1) % NNC_LSGD_HISTORY;
    if (h->count < NNC_LSGD_HISTORY) h->count++;
}

double nnc__lsgd_mean(const nnc_lsgd_hist *h)
{
    if (h->count == 0) return INFINITY;
    double s = 0.0;
    for (int k = 0; k < h->count; k++) s += h->loss[k];
    s /= h->count;
    return isfinite(s) ? s : INFINITY;
}

int nnc__lsgd_leader(const nnc_lsgd_hist *h, const int *ok, int M)
{
    int best = -1;
    double bv = INFINITY;
    for (int i = 0; i < M; i++) {
        if (ok && !ok[i]) continue;
        double v = nnc__lsgd_mean(&h[i]);
        if (best < 0 || v < bv) {
            best = i;
            bv = v;
        }
    }
    return best;
}

double nnc__sam_perturb(float *w, const float *g, float *saved, double rho, size_t n)
{
    memcpy(saved, w, n * sizeof(float));
    double s = 0.0;
    for (size_t j = 0; j < n; j++) s += (double)g[j] * (double)g[j];
    double norm = sqrt(s);
    if (!(norm > 0.0) || !isfinite(norm)) return norm;
    double k = rho / norm;
    for (size_t j = 0; j < n; j++) w[j] = (float)((double)w[j] + k * (double)g[j]);
    return norm;
}
