/* dist/eval.c - nnc_evaluate: eval-mode loss, top-1 accuracy and confusion matrix. */
#include <math.h>
#include <string.h>

#include "dist/replica.h"

int nnc_evaluate(nnc_model *m, const nnc_dataset *d, int batch, double *loss, double *acc,
                 long *confusion)
{
    return nnc__evaluate_stop(m, d, batch, loss, acc, confusion, NULL);
}

int nnc__evaluate_stop(nnc_model *m, const nnc_dataset *d, int batch, double *loss, double *acc,
                       long *confusion, volatile sig_atomic_t *stop)
{
    NNC_ASSERT(m && d, "nnc_evaluate: NULL model or dataset");
    if (batch < 1) return nnc__fail(NNC_EINVAL, "evaluate: batch must be >= 1, found %d", batch);
    nnc_model_config mc = nnc_model_get_config(m);
    if (d->c != mc.in_channels || d->h != mc.image_size || d->w != mc.image_size)
        return nnc__fail(NNC_EINVAL,
                         "evaluate: dataset '%s' has images %dx%dx%d but model %s expects %dx%dx%d",
                         d->name, d->c, d->h, d->w, nnc_model_arch(m), mc.in_channels, mc.image_size,
                         mc.image_size);
    if (d->num_classes > mc.num_classes)
        return nnc__fail(NNC_EINVAL, "evaluate: dataset '%s' has %d classes, model %s outputs %d",
                         d->name, d->num_classes, nnc_model_arch(m), mc.num_classes);
    if (batch > d->n) batch = d->n > 0 ? d->n : 1;
    int K = mc.num_classes;
    size_t img = (size_t)d->c * d->h * d->w;
    nnc_graph *g = NULL;
    float *x = nnc__calloc((size_t)batch * img, sizeof(float));
    int *y = nnc__calloc((size_t)batch, sizeof(int));
    int *pred = nnc__calloc((size_t)batch, sizeof(int));
    uint32_t *idx = nnc__calloc((size_t)batch, sizeof(uint32_t));
    int s = nnc_graph_new(0, &g);
    if (!s && (!x || !y || !pred || !idx)) s = nnc__fail(NNC_ENOMEM, "evaluate: out of memory");
    if (confusion) memset(confusion, 0, (size_t)K * K * sizeof(long));
    double lsum = 0.0;
    long correct = 0;
    for (int at = 0; !s && at < d->n; at += batch) {
        if (stop && *stop) {
            s = nnc__fail(NNC_EINTERRUPTED, "evaluation stopped by signal %d after %d of %d images", (int)*stop,
                          at, d->n);
            break;
        }
        int n = d->n - at < batch ? d->n - at : batch;
        for (int i = 0; i < n; i++) idx[i] = (uint32_t)(at + i);
        nnc_dataset_gather(d, idx, n, x, y);
        nnc_graph_reset(g);
        nnc_graph_set_grad(g, 0);
        int shape[4] = {n, d->c, d->h, d->w};
        nnc_tensor *logits = nnc_model_forward(m, g, nnc_tensor_wrap(g, x, 4, shape), 0, NULL);
        nnc_tensor *l = nnc_softmax_cross_entropy(g, logits, y, NNC_REDUCE_SUM, 0.0f);
        lsum += l->data[0];
        nnc_argmax_rows(logits, pred);
        for (int i = 0; i < n; i++) {
            correct += pred[i] == y[i];
            if (confusion) confusion[(size_t)y[i] * K + pred[i]]++;
        }
    }
    if (!s) {
        if (loss) *loss = d->n ? lsum / d->n : NAN;
        if (acc) *acc = d->n ? (double)correct / d->n : NAN;
    }
    nnc_graph_free(g);
    nnc__free(x);
    nnc__free(y);
    nnc__free(pred);
    nnc__free(idx);
    return s;
}
