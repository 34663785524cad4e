/* nn/ops_loss.c - softmax cross-entropy with label smoothing, and row argmax for accuracy.
 *
 * logits (N,K), labels[N] in [0,K), smoothing s, target t = (1-s) onehot(label) + s/K.
 * logp = z - max(z) - log(sum exp(z - max(z))) per row (double accumulation);
 * loss = -sum_n sum_k t[n,k] logp[n,k], divided by N for NNC_REDUCE_MEAN. Output shape (1).
 * Saved for backward: the softmax probabilities (N*K floats) and a copy of the labels;
 * dlogits = dloss * (p - t) (/ N for mean). */
#include <math.h>
#include <string.h>

#include "nn/ops.h"

typedef struct ce_saved {
    float *prob; /* (N,K) */
    int *labels; /* (N) */
} ce_saved;

static void ce_backward(nnc_graph *g, nnc_node *n)
{
    nnc_tensor *z = n->in[0];
    const ce_saved *sv = n->saved;
    int N = z->shape[0], K = z->shape[1];
    float s = n->fargs[0];
    float gl = n->out->grad[0] * (n->iargs[0] == NNC_REDUCE_MEAN ? 1.0f / (float)N : 1.0f);
    float off = s / (float)K, on = 1.0f - s + off;
    float *dz = nnc__grad(g, z);
    for (int r = 0; r < N; r++) {
        const float *p = sv->prob + (size_t)r * K;
        float *d = dz + (size_t)r * K;
        int y = sv->labels[r];
        for (int k = 0; k < K; k++) d[k] += gl * (p[k] - (k == y ? on : off));
    }
}

nnc_tensor *nnc_softmax_cross_entropy(nnc_graph *g, nnc_tensor *logits, const int *labels,
                                      nnc_reduction reduction, float smoothing)
{
    NNC_ASSERT(g && logits && labels, "softmax_cross_entropy: NULL argument");
    NNC_ASSERT(logits->ndim == 2, "softmax_cross_entropy: logits must be (N,K), got %d dims", logits->ndim);
    NNC_ASSERT(reduction == NNC_REDUCE_MEAN || reduction == NNC_REDUCE_SUM,
               "softmax_cross_entropy: reduction %d", (int)reduction);
    NNC_ASSERT(smoothing >= 0.0f && smoothing <= 1.0f, "softmax_cross_entropy: smoothing %g",
               (double)smoothing);
    int N = logits->shape[0], K = logits->shape[1];
    for (int r = 0; r < N; r++)
        NNC_ASSERT(labels[r] >= 0 && labels[r] < K,
                   "softmax_cross_entropy: label %d of sample %d outside [0, %d)", labels[r], r, K);

    ce_saved *sv = nnc_graph_scratch(g, sizeof *sv);
    sv->prob = nnc_graph_scratch(g, logits->numel * sizeof(float));
    sv->labels = nnc_graph_scratch(g, (size_t)N * sizeof(int));
    memcpy(sv->labels, labels, (size_t)N * sizeof(int));
    double off = (double)smoothing / K, on = 1.0 - smoothing + off, total = 0;
    for (int r = 0; r < N; r++) {
        const float *z = logits->data + (size_t)r * K;
        float *p = sv->prob + (size_t)r * K;
        float mx = z[0];
        for (int k = 1; k < K; k++)
            if (z[k] > mx) mx = z[k];
        double se = 0, sz = 0;
        for (int k = 0; k < K; k++) {
            double e = exp((double)z[k] - mx);
            p[k] = (float)e;
            se += e;
            sz += (double)z[k] - mx;
        }
        double lse = log(se);
        for (int k = 0; k < K; k++) p[k] = (float)(p[k] / se);
        /* -sum_k t_k logp_k with logp_k = (z_k - mx) - lse */
        double logp_y = (double)z[labels[r]] - mx - lse;
        total -= (on - off) * logp_y + off * (sz - K * lse);
    }
    if (reduction == NNC_REDUCE_MEAN) total /= N;
    int one = 1;
    nnc_tensor *loss = nnc_tensor_new(g, 1, &one);
    loss->data[0] = (float)total;
    nnc_node *n = nnc__record(g, "softmax_cross_entropy", ce_backward, loss, 1, &logits);
    if (n) {
        n->saved = sv;
        n->iargs[0] = (int)reduction;
        n->fargs[0] = smoothing;
    }
    return loss;
}

void nnc_argmax_rows(const nnc_tensor *t, int *out)
{
    NNC_ASSERT(t && out, "argmax_rows: NULL argument");
    size_t rows = (size_t)t->shape[0], k = t->numel / rows;
    for (size_t r = 0; r < rows; r++) {
        const float *p = t->data + r * k;
        size_t best = 0;
        for (size_t j = 1; j < k; j++)
            if (p[j] > p[best]) best = j;
        out[r] = (int)best;
    }
}
