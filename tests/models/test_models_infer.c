/* tests/models/test_models_infer.c - inference slicing in nnc_model_forward: an eval-mode
 * forward with grad off runs the batch in slices of 8 images (cache locality); its logits must
 * equal the unsliced eval forward (grad on) for batch sizes around the slice size. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "nn/nnc.h"
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
    check_model("vgg11", 32, 11);
}
