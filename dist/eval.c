/* dist/eval.c - nnc_evaluate: eval-mode loss, top-1 accuracy and confusion matrix, on the inference
 * forward (nnc_model_forward_infer: batch norms folded into the convolutions) like predict and bench. */
#include <math.h>
#include <string.h>

#include "dist/replica.h"

/* Buffers of one evaluation. */
typedef struct eval_scratch {
    nnc_graph *g;
    float *x;
    int *y, *pred;
    uint32_t *idx;
} eval_scratch;

/* The batch loop: sums of the loss and of the right predictions. */
static int eval_run(nnc_model *m, const nnc_dataset *d, int batch, int K, const eval_scratch *w, long *confusion,
                    volatile sig_atomic_t *stop, double *lsum_out, long *correct_out)
{
    nnc_graph *g = w->g;
    float *x = w->x;
    int *y = w->y, *pred = w->pred;
    uint32_t *idx = w->idx;
    double lsum = 0.0;
    long correct = 0;
    int s = NNC_OK;
    for (int at = 0; at < d->n; at += batch) {
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
        nnc_tensor *logits = nnc_model_forward_infer(m, g, nnc_tensor_wrap(g, x, 4, shape));
        nnc_tensor *l = nnc_softmax_cross_entropy(g, logits, y, NNC_REDUCE_SUM, 0.0f);
        lsum += l->data[0];
        nnc_argmax_rows(logits, pred);
        for (int i = 0; i < n; i++) {
            correct += pred[i] == y[i];
            if (confusion) confusion[(size_t)y[i] * K + pred[i]]++;
        }
    }
    *lsum_out = lsum;
    *correct_out = correct;
    return s;
}

typedef struct eval_args {
    nnc_model *m;
    const nnc_dataset *d;
    int batch, K;
    const eval_scratch *w;
    long *confusion;
    volatile sig_atomic_t *stop;
    double *lsum;
    long *correct;
} eval_args;

/* eval_run with a step arena that cannot grow reported as NNC_ENOMEM. */
static int eval_guarded(const eval_args *a)
{
    jmp_buf jb;
    jmp_buf *prev = nnc__oom_catch(&jb);
    int s;
    if (setjmp(jb))
        s = nnc__fail(NNC_ENOMEM, "out of memory allocating %zu bytes for the step arena (evaluation, batch of "
                      "%d images)", nnc__oom_bytes(), a->batch);
    else
        s = eval_run(a->m, a->d, a->batch, a->K, a->w, a->confusion, a->stop, a->lsum, a->correct);
    nnc__oom_release(prev);
    return s;
}

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
    eval_scratch w = {.x = nnc__calloc((size_t)batch * img, sizeof(float)),
                      .y = nnc__calloc((size_t)batch, sizeof(int)),
                      .pred = nnc__calloc((size_t)batch, sizeof(int)),
                      .idx = nnc__calloc((size_t)batch, sizeof(uint32_t))};
    int s = nnc_graph_new(0, &w.g);
    if (!s && (!w.x || !w.y || !w.pred || !w.idx)) s = nnc__fail(NNC_ENOMEM, "evaluate: out of memory");
    if (confusion) memset(confusion, 0, (size_t)K * K * sizeof(long));
    double lsum = 0.0;
    long correct = 0;
    if (!s) {
        eval_args a = {m, d, batch, K, &w, confusion, stop, &lsum, &correct};
        s = eval_guarded(&a);
    }
    if (!s) {
        if (loss) *loss = d->n ? lsum / d->n : NAN;
        if (acc) *acc = d->n ? (double)correct / d->n : NAN;
    }
    nnc_graph_free(w.g);
    nnc__free(w.x);
    nnc__free(w.y);
    nnc__free(w.pred);
    nnc__free(w.idx);
    return s;
}
