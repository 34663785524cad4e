/* dist/replica.c - one worker's replica: batches, local steps, the GRAWA probe (see replica.h). */
#include "dist/replica.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fault.h"

#define PROBE_STREAM 0x70726f6265ULL /* "probe" */
#define DROPOUT_STREAM 0x64726f70ULL /* "drop" */

void nnc__replica_free(nnc_replica *r)
{
    if (!r) return;
    nnc_loader_free(r->loader);
    nnc_graph_free(r->g);
    nnc_sgd_free(r->opt);
    nnc_model_free(r->model);
    nnc__free(r->x);
    nnc__free(r->y);
    nnc__free(r->pred);
    nnc__free(r->probe_x);
    nnc__free(r->probe_y);
    nnc__free(r->probe_idx);
    nnc__free(r->buf_save);
    nnc__free(r->sam_saved);
    nnc__free(r->pend_buf);
    nnc__free(r);
}

int nnc__replica_new(const nnc_model *init, const nnc_dataset *train, const nnc_train_config *cfg,
                     int id, int M, nnc_replica **out)
{
    *out = NULL;
    nnc_replica *r = nnc__calloc(1, sizeof *r);
    if (!r) return nnc__fail(NNC_ENOMEM, "replica %d: out of memory", id);
    r->id = id;
    r->train = train;
    r->batch = cfg->batch;
    r->img = train->c * train->h * train->w;
    r->anomaly = cfg->anomaly;
    int s = nnc_model_clone(init, &r->model);
    if (s) goto fail;
    r->p = nnc_model_params(r->model);
    if ((s = nnc_sgd_new(r->p, &cfg->sgd, &r->opt))) goto fail;
    if ((s = nnc_graph_new(0, &r->g))) goto fail;
    nnc_graph_set_anomaly(r->g, cfg->anomaly);
    nnc_graph_set_recycle(r->g, 1); /* loss and predictions are read before backward */
    nnc_loader_config lc = nnc_loader_config_default();
    lc.batch = cfg->batch;
    lc.shuffle = 1;
    lc.augment = cfg->augment;
    lc.drop_last = 1;
    lc.shard = id;
    lc.num_shards = M;
    lc.seed = cfg->seed;
    lc.prefetch = M == 1;
    if ((s = nnc_loader_new(train, &lc, &r->loader))) goto fail;
    if (nnc_loader_batches_per_epoch(r->loader) < 1) {
        s = nnc__fail(NNC_EINVAL,
                      "training set too small: %d images over %d worker(s) give no full batch of %d",
                      train->n, M, cfg->batch);
        goto fail;
    }
    nnc_rng_seed(&r->rng, cfg->seed, DROPOUT_STREAM + (uint64_t)id);
    nnc_rng_seed(&r->probe_rng, cfg->seed, PROBE_STREAM + (uint64_t)id);
    r->probe_rng_round = r->probe_rng;
    r->probe_n = cfg->probe_batch < train->n ? cfg->probe_batch : train->n;
    size_t bx = (size_t)r->batch * (size_t)r->img, px = (size_t)r->probe_n * (size_t)r->img;
    r->x = nnc__calloc(bx, sizeof(float));
    r->y = nnc__calloc((size_t)r->batch, sizeof(int));
    r->pred = nnc__calloc((size_t)r->batch, sizeof(int));
    r->probe_x = nnc__calloc(px ? px : 1, sizeof(float));
    r->probe_y = nnc__calloc((size_t)r->probe_n + 1, sizeof(int));
    r->probe_idx = nnc__calloc((size_t)r->probe_n + 1, sizeof(uint32_t));
    r->buf_save = nnc__calloc(r->p->n_buf + 1, sizeof(float));
    r->sam_saved = nnc__calloc(r->p->n_data + 1, sizeof(float));
    r->pend_buf = nnc__calloc(r->p->n_buf + 1, sizeof(float));
    if (!r->x || !r->y || !r->pred || !r->probe_x || !r->probe_y || !r->probe_idx || !r->buf_save ||
        !r->sam_saved || !r->pend_buf) {
        s = nnc__fail(NNC_ENOMEM, "replica %d: cannot allocate batch buffers (batch %d)", id, r->batch);
        goto fail;
    }
    *out = r;
    return NNC_OK;
fail:
    nnc__replica_free(r);
    return s;
}

int nnc__replica_next_batch(nnc_replica *r)
{
    int n = nnc_loader_next(r->loader, r->x, r->y);
    if (n == 0) n = nnc_loader_next(r->loader, r->x, r->y);
    return n;
}

static int forward_backward_run(nnc_replica *r, float *x, const int *y, int n, nnc_reduction red,
                                double *loss, long *correct);

/* Forward in train mode on n images of x, cross-entropy with reduction red, backward. A step
 * arena that cannot grow (activations of a batch too big for the memory) is NNC_ENOMEM. */
static int forward_backward(nnc_replica *r, float *x, const int *y, int n, nnc_reduction red,
                            double *loss, long *correct)
{
    jmp_buf jb;
    jmp_buf *prev = nnc__oom_catch(&jb);
    if (setjmp(jb)) {
        nnc__oom_release(prev);
        nnc_graph_reset(r->g);
        return nnc__fail(NNC_ENOMEM, "out of memory allocating %zu bytes for the step arena (batch of %d images)",
                         nnc__oom_bytes(), n);
    }
    int s = forward_backward_run(r, x, y, n, red, loss, correct);
    nnc__oom_release(prev);
    return s;
}

static int forward_backward_run(nnc_replica *r, float *x, const int *y, int n, nnc_reduction red,
                                double *loss, long *correct)
{
    nnc_graph_reset(r->g);
    nnc_graph_set_grad(r->g, 1);
    int shape[4] = {n, r->train->c, r->train->h, r->train->w};
    nnc_tensor *in = nnc_tensor_wrap(r->g, x, 4, shape);
    nnc_tensor *logits = nnc_model_forward(r->model, r->g, in, 1, &r->rng);
    nnc_tensor *l = nnc_softmax_cross_entropy(r->g, logits, y, red, 0.0f);
    *loss = l->data[0];
    if (correct) {
        nnc_argmax_rows(logits, r->pred);
        long c = 0;
        for (int i = 0; i < n; i++) c += r->pred[i] == y[i];
        *correct = c;
    }
    nnc_params_zero_grad(r->p);
    return nnc_backward(r->g, l);
}

int nnc__replica_grad(nnc_replica *r, int n, double *loss, long *correct)
{
    int s = forward_backward(r, r->x, r->y, n, NNC_REDUCE_MEAN, loss, correct);
    if (s) return nnc__fail_prefix(s, "worker %d, local step %ld", r->id, r->steps + 1);
    return NNC_OK;
}

int nnc__replica_step(nnc_replica *r, float lr, double *loss)
{
    int n = nnc__replica_next_batch(r);
    if (n <= 0) return nnc__fail(NNC_EINVAL, "worker %d: the loader returned no batch", r->id);
    long correct = 0;
    int s = nnc__replica_grad(r, n, loss, &correct);
    if (s) return s;
    r->seen += n;
    r->correct += correct;
#ifdef NNC_TESTING
    char arg[32];
    if (nnc__fault_arg("loss_inf", arg, sizeof arg) && atol(arg) == r->steps + 1) *loss = INFINITY;
    if (nnc__fault_arg("grad_nan", arg, sizeof arg) && atol(arg) == r->steps + 1) r->p->grad[0] = NAN;
#endif
    if (!isfinite(*loss)) {
        return nnc__fail(NNC_EDIVERGED, "worker %d: non-finite loss (%g) at step %ld; step not applied",
                         r->id, *loss, r->steps + 1);
    }
    if (!nnc__grawa_finite(r->p->grad, r->p->n_data))
        return nnc__fail(NNC_EDIVERGED, "worker %d: non-finite gradient at step %ld; step not applied",
                         r->id, r->steps + 1);
    nnc_sgd_step(r->opt, lr);
    r->steps++;
    return NNC_OK;
}

int nnc__replica_probe(nnc_replica *r, const nnc_grawa_layers *ly, double *out)
{
    for (int i = 0; i < r->probe_n; i++) r->probe_idx[i] = nnc_rng_below(&r->probe_rng, (uint32_t)r->train->n);
    nnc_dataset_gather(r->train, r->probe_idx, r->probe_n, r->probe_x, r->probe_y);
    memcpy(r->buf_save, r->p->buf, r->p->n_buf * sizeof(float));
    double loss;
    int s = forward_backward(r, r->probe_x, r->probe_y, r->probe_n, NNC_REDUCE_SUM, &loss, NULL);
    memcpy(r->p->buf, r->buf_save, r->p->n_buf * sizeof(float));
    if (s == NNC_EDIVERGED) {
        /* Anomaly mode names the op; at a probe this is the non-finite-worker case. */
        for (int l = 0; l < ly->L; l++) out[l] = NAN;
        return NNC_OK;
    }
    if (s) return nnc__fail_prefix(s, "worker %d: GRAWA probe", r->id);
    nnc__grawa_layer_norms(ly, r->p->grad, out);
    nnc_params_zero_grad(r->p);
    return NNC_OK;
}

int nnc__bn_reestimate(nnc_model *m, nnc_graph *g, const nnc_dataset *d, int batches, int batch,
                       nnc_rng *rng)
{
    return nnc__bn_reestimate_stop(m, g, d, batches, batch, rng, NULL);
}

/* Scratch of one BN re-estimation. */
typedef struct bn_scratch {
    double *acc;
    float *orig, *last, *x;
    int *y;
    uint32_t *idx;
} bn_scratch;

/* The re-estimation loop over buffers allocated by the caller (see nnc__bn_reestimate_stop). */
static int bn_reestimate_run(nnc_model *m, nnc_graph *g, const nnc_dataset *d, int batches, int batch,
                             nnc_rng *rng, volatile sig_atomic_t *stop, const bn_scratch *w)
{
    nnc_params *p = nnc_model_params(m);
    double *acc = w->acc;
    float *orig = w->orig, *last = w->last, *x = w->x;
    int *y = w->y;
    uint32_t *idx = w->idx;
    int shape[4] = {batch, d->c, d->h, d->w};
    /* Every buffer is an EMA r' = (1 - m) r + m s of a batch statistic s, whatever the model's
     * momentum m. A forward from r = 0 yields m s; one more forward of the last batch from
     * r = 1 yields (1 - m) + m s, which gives m. The cumulative average of s (PyTorch's
     * momentum=None) is then sum_b (m s_b) / (batches m). Buffers that are not EMAs (m ~ 0)
     * keep their value. */
    for (int b = 0; b <= batches; b++) {
        if (stop && *stop) {
            memcpy(p->buf, orig, p->n_buf * sizeof(float));
            return nnc__fail(NNC_EINTERRUPTED, "BN re-estimation stopped by signal %d after %d of %d batches",
                             (int)*stop, b, batches);
        }
        if (b < batches) {
            for (int i = 0; i < batch; i++) idx[i] = nnc_rng_below(rng, (uint32_t)d->n);
            nnc_dataset_gather(d, idx, batch, x, y);
        }
        float fill = b < batches ? 0.0f : 1.0f;
        for (size_t j = 0; j < p->n_buf; j++) p->buf[j] = fill;
        nnc_graph_reset(g);
        nnc_graph_set_grad(g, 0);
        nnc_tensor *in = nnc_tensor_wrap(g, x, 4, shape);
        nnc_model_forward(m, g, in, 1, rng);
        if (b < batches) {
            for (size_t j = 0; j < p->n_buf; j++) acc[j] += p->buf[j];
            memcpy(last, p->buf, p->n_buf * sizeof(float));
        }
    }
    for (size_t j = 0; j < p->n_buf; j++) {
        double mom = 1.0 - ((double)p->buf[j] - (double)last[j]);
        p->buf[j] = fabs(mom) > 1e-6 ? (float)(acc[j] / (batches * mom)) : orig[j];
    }
    return NNC_OK;
}

typedef struct bn_args {
    nnc_model *m;
    nnc_graph *g;
    const nnc_dataset *d;
    int batches, batch;
    nnc_rng *rng;
    volatile sig_atomic_t *stop;
    const bn_scratch *w;
} bn_args;

/* bn_reestimate_run with a step arena that cannot grow reported as NNC_ENOMEM (the buffers go
 * back to their values on entry). */
static int bn_guarded(const bn_args *a)
{
    jmp_buf jb;
    jmp_buf *prev = nnc__oom_catch(&jb);
    int s;
    if (setjmp(jb)) {
        nnc_params *p = nnc_model_params(a->m);
        memcpy(p->buf, a->w->orig, p->n_buf * sizeof(float));
        s = nnc__fail(NNC_ENOMEM, "out of memory allocating %zu bytes for the step arena (BN re-estimation, "
                      "batch of %d images)", nnc__oom_bytes(), a->batch);
    } else {
        s = bn_reestimate_run(a->m, a->g, a->d, a->batches, a->batch, a->rng, a->stop, a->w);
    }
    nnc__oom_release(prev);
    return s;
}

int nnc__bn_reestimate_stop(nnc_model *m, nnc_graph *g, const nnc_dataset *d, int batches, int batch,
                            nnc_rng *rng, volatile sig_atomic_t *stop)
{
    nnc_params *p = nnc_model_params(m);
    if (p->n_buf == 0 || batches <= 0) return NNC_OK;
    if (batch > d->n) batch = d->n;
    size_t img = (size_t)d->c * d->h * d->w;
    bn_scratch w = {.acc = nnc__calloc(p->n_buf, sizeof(double)),
                    .orig = nnc__calloc(p->n_buf, sizeof(float)),
                    .last = nnc__calloc(p->n_buf, sizeof(float)),
                    .x = nnc__calloc((size_t)batch * img, sizeof(float)),
                    .y = nnc__calloc((size_t)batch, sizeof(int)),
                    .idx = nnc__calloc((size_t)batch, sizeof(uint32_t))};
    int s = NNC_OK;
    if (!w.acc || !w.orig || !w.last || !w.x || !w.y || !w.idx) {
        s = nnc__fail(NNC_ENOMEM, "BN re-estimation: out of memory (batch %d)", batch);
        goto done;
    }
    memcpy(w.orig, p->buf, p->n_buf * sizeof(float));
    bn_args a = {m, g, d, batches, batch, rng, stop, &w};
    s = bn_guarded(&a);
done:
    nnc__free(w.acc);
    nnc__free(w.orig);
    nnc__free(w.last);
    nnc__free(w.x);
    nnc__free(w.y);
    nnc__free(w.idx);
    nnc_graph_reset(g);
    nnc_graph_set_grad(g, 1);
    return s;
}
