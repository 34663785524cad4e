/* tests/models/test_models_infer.c - inference slicing in nnc_model_forward: an eval-mode
 * forward with grad off runs the batch in slices of 8 images (cache locality) up to a split
 * layer and the whole batch after it; its logits must equal the unsliced eval forward (grad on)
 * for batch sizes around the slice size, with and without a split.
 * Whole-model thread invariance: a ResNet-8 and a VGG-11 training step (forward,
 * cross-entropy, backward) give bitwise identical loss, gradients and BN running statistics
 * with 1, 2 and 4 kernel threads. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nnc.h"
#include "nn/threads.h"
#include "tests/common/gradcheck.h"

static void check_model(const char *name, int size, int batch)
{
    nnc_model_config cfg = nnc_model_config_default();
    cfg.image_size = size;
    nnc_model *m;
    cr_assert_eq(nnc_model_new(name, &cfg, 5, &m), NNC_OK);
    nnc_rng r;
    nnc_rng_seed(&r, 6, 0);
    size_t nx = (size_t)batch * 3 * size * size;
    float *x = malloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++) x[i] = nnc_rng_normal(&r);
    int shape[4] = {batch, 3, size, size};
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *whole = nnc_model_forward(m, g, nnc_tensor_wrap(g, x, 4, shape), 0, NULL);
    nnc_graph_set_grad(g, 0);
    nnc_tensor *sliced = nnc_model_forward(m, g, nnc_tensor_wrap(g, x, 4, shape), 0, NULL);
    cr_assert_eq(sliced->numel, whole->numel);
    cr_assert_eq(sliced->shape[0], batch);
    double err = gc_max_err(sliced->data, whole->data, whole->numel, 1e-6, 1e-6);
    cr_expect_leq(err, 1.0, "%s batch %d: sliced inference differs from the whole batch (err %.3g)", name, batch, err);
    nnc_graph_free(g);
    nnc_model_free(m);
    free(x);
}

Test(models_infer, sliced_inference_equals_whole_batch)
{
    int batches[] = {1, 8, 9, 21};
    for (int i = 0; i < 4; i++) check_model("resnet8", 16, batches[i]);
    check_model("vgg11", 32, 11); /* 256 KiB per image activations: no slicing */
    check_model("vgg11", 16, 21); /* sliced up to the 4x4 layers, whole batch after them */
}

/* One training step of a fresh model (seed 5) on a fixed batch: returns loss, fills grads and
 * running statistics (caller frees). */
static float train_step(const char *name, int size, int batch, float **grads, size_t *ng, float **bufs, size_t *nb)
{
    nnc_model_config cfg = nnc_model_config_default();
    cfg.image_size = size;
    nnc_model *m;
    cr_assert_eq(nnc_model_new(name, &cfg, 5, &m), NNC_OK);
    nnc_rng r, drop;
    nnc_rng_seed(&r, 7, 0);
    nnc_rng_seed(&drop, 8, 0);
    size_t nx = (size_t)batch * 3 * size * size;
    float *x = malloc(nx * sizeof(float));
    int *labels = malloc(sizeof(int) * (size_t)batch);
    for (size_t i = 0; i < nx; i++) x[i] = nnc_rng_normal(&r);
    for (int i = 0; i < batch; i++) labels[i] = (int)nnc_rng_below(&r, 10);
    int shape[4] = {batch, 3, size, size};
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_params *p = nnc_model_params(m);
    nnc_params_zero_grad(p);
    nnc_tensor *logits = nnc_model_forward(m, g, nnc_tensor_wrap(g, x, 4, shape), 1, &drop);
    nnc_tensor *loss = nnc_softmax_cross_entropy(g, logits, labels, NNC_REDUCE_MEAN, 0.0f);
    cr_assert_eq(nnc_backward(g, loss), NNC_OK);
    float l = loss->data[0];
    *ng = p->n_data;
    *nb = p->n_buf;
    *grads = malloc(p->n_data * sizeof(float));
    *bufs = malloc((p->n_buf ? p->n_buf : 1) * sizeof(float));
    memcpy(*grads, p->grad, p->n_data * sizeof(float));
    if (p->n_buf) memcpy(*bufs, p->buf, p->n_buf * sizeof(float));
    nnc_graph_free(g);
    nnc_model_free(m);
    free(x);
    free(labels);
    return l;
}

static void check_threads(const char *name, int size, int batch)
{
    float *g1, *b1;
    size_t ng, nb;
    cr_assert_eq(nnc_set_threads(1), NNC_OK);
    float l1 = train_step(name, size, batch, &g1, &ng, &b1, &nb);
    for (int t = 2; t <= 4; t += 2) {
        float *gt, *bt;
        size_t ngt, nbt;
        cr_assert_eq(nnc_set_threads(t), NNC_OK);
        float lt = train_step(name, size, batch, &gt, &ngt, &bt, &nbt);
        cr_expect(memcmp(&l1, &lt, sizeof l1) == 0, "%s: loss %.9g with %d threads, %.9g with 1", name, lt, t, l1);
        cr_expect(ngt == ng && memcmp(g1, gt, ng * sizeof(float)) == 0, "%s: gradients differ with %d threads", name, t);
        cr_expect(nbt == nb && memcmp(b1, bt, nb * sizeof(float)) == 0, "%s: BN statistics differ with %d threads",
                  name, t);
        free(gt);
        free(bt);
    }
    cr_assert_eq(nnc_set_threads(1), NNC_OK);
    free(g1);
    free(b1);
}

Test(models_infer, training_step_bitwise_equal_for_1_2_4_threads, .timeout = 60)
{
    check_threads("resnet8", 16, 12);
    check_threads("vgg11", 32, 3);
}
