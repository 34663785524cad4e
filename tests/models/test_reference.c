/* tests/models/test_reference.c - forward/backward of whole networks vs PyTorch in float64
 * (tests/fixtures/gen_models_ref.py, the classes of torch_bench.py): ResNet-8 on 2 images 8x8
 * (the smallest ResNet with both option-A shortcuts, within 1e-5) and ResNet-20 on 2
 * images 32x32 (within 1e-4), ResNet-8 on 1-channel 10x10 images (odd sizes through the
 * shortcut) and VGG-11 in eval mode (conv bias, max-pools, classifier) within 1e-5. Weights and inputs are closed-form (fill_param / fill_input here
 * mirror fill() / input_batch() in the script), so the fixture holds only outputs. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "nn/nnc.h"
#include "tests/fixtures/models_ref.h"

/* Pseudo-random value in [0, 1): frac(sin(a) * 43758.5453), as hash01() in the script. */
static double hash01(double a)
{
    double v = sin(a) * 43758.5453;
    return v - floor(v);
}

static void fill_params(nnc_params *p)
{
    int ti = 0;
    for (int i = 0; i < p->count; i++) {
        const nnc_param_entry *e = &p->entries[i];
        if (e->flags & NNC_PARAM_BUFFER) continue;
        size_t fan_in = e->ndim > 1 ? e->numel / (size_t)e->shape[0] : 1;
        size_t len = strlen(e->name);
        int is_weight = len > 6 && strcmp(e->name + len - 6, "weight") == 0;
        float *x = nnc_params_ptr(p, i);
        for (size_t j = 0; j < e->numel; j++) {
            double s = hash01(12.9898 * (double)j + 78.233 * ti + 0.5) * 2.0 - 1.0;
            double v = !is_weight ? 0.1 * s : (e->flags & NNC_PARAM_BN) ? 1.0 + 0.25 * s : sqrt(3.0 / fan_in) * s;
            x[j] = (float)v;
        }
        ti++;
    }
}

/* max over elements of |got - want| / (tol * max(max|want|, 1e-3) ) must be <= 1: errors are
 * measured relative to the tensor's scale so near-zero entries do not dominate. */
static void expect_close(const char *what, const float *got, const double *want, size_t n, double tol)
{
    double scale = 1e-3, worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / scale;
        if (e > worst || isnan(e)) {
            worst = e;
            at = i;
        }
    }
    cr_expect_leq(worst, tol, "%s: relative error %.3g at %zu (got %.9g want %.9g, scale %.3g)", what, worst, at,
                  (double)got[at], want[at], scale);
}

typedef struct ref_grad {
    const char *param;
    const double *want;
    size_t n;
} ref_grad;

static void run_case(const char *name, int cin, int size, const int *labels, const double *logits, const double *loss,
                     const double *dx, const ref_grad *grads, int ngrads, const double *rmean, const double *rvar,
                     const double *eval_logits, double tol)
{
    nnc_model_config cfg = {.in_channels = cin, .image_size = size, .num_classes = 10};
    nnc_model *m;
    cr_assert_eq(nnc_model_new(name, &cfg, 1, &m), NNC_OK);
    nnc_params *p = nnc_model_params(m);
    fill_params(p);
    int n = 2 * cin * size * size;
    float *xb = malloc((size_t)n * sizeof(float));
    for (int j = 0; j < n; j++) xb[j] = (float)(hash01(91.3458 * j + 0.25) * 3.0 - 1.5);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *x = nnc_tensor_wrap(g, xb, 4, (int[4]){2, cin, size, size});
    x->requires_grad = 1;
    nnc_tensor *y = nnc_model_forward(m, g, x, 1, NULL);
    nnc_tensor *l = nnc_softmax_cross_entropy(g, y, labels, NNC_REDUCE_MEAN, 0);
    cr_assert_eq(nnc_backward(g, l), NNC_OK);
    expect_close("logits", y->data, logits, 20, tol);
    expect_close("loss", l->data, loss, 1, tol);
    if (dx) expect_close("input gradient", x->grad, dx, (size_t)n, tol);
    for (int i = 0; i < ngrads; i++) {
        int k = nnc_params_find(p, grads[i].param);
        cr_assert_geq(k, 0, "%s", grads[i].param);
        cr_assert_eq(p->entries[k].numel, grads[i].n, "%s", grads[i].param);
        expect_close(grads[i].param, nnc_params_tensor(p, k)->grad, grads[i].want, grads[i].n, tol);
    }
    expect_close("bn1.running_mean", nnc_params_ptr(p, nnc_params_find(p, "bn1.running_mean")), rmean, 16, tol);
    expect_close("bn1.running_var", nnc_params_ptr(p, nnc_params_find(p, "bn1.running_var")), rvar, 16, tol);
    nnc_graph_reset(g);
    nnc_graph_set_grad(g, 0);
    x = nnc_tensor_wrap(g, xb, 4, (int[4]){2, cin, size, size});
    y = nnc_model_forward(m, g, x, 0, NULL);
    expect_close("eval logits", y->data, eval_logits, 20, tol);
    nnc_graph_free(g);
    free(xb);
    nnc_model_free(m);
}

#define G(prefix, pname, arr) {pname, prefix##_grad_##arr, sizeof prefix##_grad_##arr / sizeof(double)}

Test(models_reference, resnet8_block_forward_backward_a2)
{
    static const ref_grad grads[] = {
        G(r8, "conv1.weight", conv1_weight),
        G(r8, "bn1.weight", bn1_weight),
        G(r8, "layers.1.conv1.weight", layers_1_conv1_weight),
        G(r8, "layers.1.bn2.weight", layers_1_bn2_weight),
        G(r8, "layers.1.bn2.bias", layers_1_bn2_bias),
        G(r8, "layers.2.bn1.weight", layers_2_bn1_weight),
        G(r8, "fc.weight", fc_weight),
        G(r8, "fc.bias", fc_bias),
    };
    static const int labels[2] = {3, 7};
    run_case("resnet8", 3, 8, labels, r8_logits, r8_loss, r8_dx, grads, 8, r8_bn1_running_mean, r8_bn1_running_var,
             r8_eval_logits, 1e-5);
}

Test(models_reference, resnet20_forward_backward_vs_pytorch)
{
    static const ref_grad grads[] = {
        G(r20, "conv1.weight", conv1_weight),
        G(r20, "layers.3.bn1.weight", layers_3_bn1_weight),
        G(r20, "layers.3.bn1.bias", layers_3_bn1_bias),
        G(r20, "layers.8.bn2.weight", layers_8_bn2_weight),
        G(r20, "fc.weight", fc_weight),
        G(r20, "fc.bias", fc_bias),
    };
    static const int labels[2] = {1, 8};
    run_case("resnet20", 3, 32, labels, r20_logits, r20_loss, NULL, grads, 6, r20_bn1_running_mean,
             r20_bn1_running_var, r20_eval_logits, 1e-4);
}

Test(models_reference, resnet8_odd_sizes_one_channel)
{
    static const ref_grad grads[] = {
        G(r8odd, "conv1.weight", conv1_weight),
        G(r8odd, "layers.1.bn1.bias", layers_1_bn1_bias),
        G(r8odd, "layers.2.bn2.weight", layers_2_bn2_weight),
        G(r8odd, "fc.bias", fc_bias),
    };
    static const int labels[2] = {0, 9};
    run_case("resnet8", 1, 10, labels, r8odd_logits, r8odd_loss, NULL, grads, 4, r8odd_bn1_running_mean,
             r8odd_bn1_running_var, r8odd_eval_logits, 1e-5);
}

Test(models_reference, vgg11_eval_forward_backward)
{
    static const ref_grad grads[] = {
        G(v11, "features.0.weight", features_0_weight),
        G(v11, "features.0.bias", features_0_bias),
        G(v11, "features.26.weight", features_26_weight),
        G(v11, "features.26.bias", features_26_bias),
        G(v11, "classifier.1.bias", classifier_1_bias),
        G(v11, "classifier.6.bias", classifier_6_bias),
    };
    static const int labels[2] = {4, 2};
    nnc_model *m;
    cr_assert_eq(nnc_model_new("vgg11", NULL, 1, &m), NNC_OK);
    nnc_params *p = nnc_model_params(m);
    fill_params(p);
    static float xb[2 * 3 * 32 * 32];
    for (int j = 0; j < 2 * 3 * 32 * 32; j++) xb[j] = (float)(hash01(91.3458 * j + 0.25) * 3.0 - 1.5);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_tensor *y = nnc_model_forward(m, g, nnc_tensor_wrap(g, xb, 4, (int[4]){2, 3, 32, 32}), 0, NULL);
    nnc_tensor *l = nnc_softmax_cross_entropy(g, y, labels, NNC_REDUCE_MEAN, 0);
    cr_assert_eq(nnc_backward(g, l), NNC_OK);
    expect_close("logits", y->data, v11_logits, 20, 1e-5);
    expect_close("loss", l->data, v11_loss, 1, 1e-5);
    for (size_t i = 0; i < sizeof grads / sizeof grads[0]; i++) {
        int k = nnc_params_find(p, grads[i].param);
        cr_assert_geq(k, 0, "%s", grads[i].param);
        cr_assert_eq(p->entries[k].numel, grads[i].n, "%s", grads[i].param);
        expect_close(grads[i].param, nnc_params_tensor(p, k)->grad, grads[i].want, grads[i].n, 1e-5);
    }
    nnc_graph_free(g);
    nnc_model_free(m);
}
