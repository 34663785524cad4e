/* tests/models/test_models.c - model registry and builders: parameter/tensor counts and MACs
 * vs PyTorch, flags, forward shapes (32x32x3, 28x28x1), clones, config errors, init, a tiny
 * model that trains, and forward/backward of ResNet-8 (the smallest ResNet with both option-A shortcuts) and ResNet-20 against
 * float64 PyTorch fixtures (tests/fixtures/gen_models_ref.py -> models_ref.h), and which fused
 * ops a training forward records. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nnc.h"
#include "nn/ops_fuse.h"
#include "tests/fixtures/models_ref.h"

static nnc_model *make(const char *name, int c, int s, int k, uint64_t seed)
{
    nnc_model_config cfg = {.in_channels = c, .image_size = s, .num_classes = k};
    nnc_model *m = NULL;
    int st = nnc_model_new(name, &cfg, seed, &m);
    cr_assert_eq(st, NNC_OK, "%s: %s", name, nnc_error_message());
    return m;
}

static int ref_index(const char *name)
{
    for (size_t i = 0; i < sizeof ref_counts / sizeof ref_counts[0]; i++)
        if (strcmp(ref_counts[i].name, name) == 0) return (int)i;
    return -1;
}

/* Counts from PyTorch (ref_counts: torch_bench.py's classes, see gen_models_ref.py); the brief's
 * figures are asserted literally as well. */
Test(models_models, param_and_tensor_counts_match_pytorch)
{
    int checked = 0;
    for (int i = 0; i < nnc_model_num_registered(); i++) {
        const char *name = nnc_model_registered_name(i);
        int r = ref_index(name);
        if (strncmp(name, "tiny", 4) == 0) continue;   /* test models: no PyTorch reference */
        cr_assert_geq(r, 0, "registered model %s has no reference numbers", name);
        nnc_model *m = make(name, 3, 32, 10, 1);
        const nnc_params *p = nnc_model_params_const(m);
        cr_expect_eq((long)nnc_params_num_scalars(p), ref_counts[r].params, "%s params %zu vs %ld", name,
                     nnc_params_num_scalars(p), ref_counts[r].params);
        cr_expect_eq(nnc_params_num_trained(p), ref_counts[r].tensors, "%s tensors", name);
        cr_expect_eq(nnc_model_macs(m), ref_counts[r].macs, "%s MACs %lld vs %lld", name, nnc_model_macs(m),
                     ref_counts[r].macs);
        nnc_model_free(m);
        checked++;
    }
    cr_assert_eq(checked, 10);
    cr_assert_eq(nnc_model_registered_name(nnc_model_num_registered()), NULL);
    static const struct { const char *n; long p; int t; } brief[] = {
        {"resnet20", 269722, 59}, {"resnet56", 853018, 167}, {"resnet110", 1727962, 329}, {"vgg16", 15253578, 58}};
    for (int i = 0; i < 4; i++) {
        nnc_model *m = make(brief[i].n, 3, 32, 10, 1);
        cr_assert_eq((long)nnc_params_num_scalars(nnc_model_params(m)), brief[i].p, "%s", brief[i].n);
        cr_assert_eq(nnc_params_num_trained(nnc_model_params(m)), brief[i].t, "%s", brief[i].n);
        nnc_model_free(m);
    }
}

Test(models_models, macs_resnet20_vgg16_and_layer_table)
{
    /* torch_bench.py info: resnet20 40.55 M, vgg16 313.73 M forward MACs per 3x32x32 image */
    static const struct { const char *n; long long macs; } want[] = {{"resnet20", 40551040LL},
                                                                    {"vgg16", 313725952LL}};
    for (int i = 0; i < 2; i++) {
        nnc_model *m = make(want[i].n, 3, 32, 10, 1);
        cr_assert_eq(nnc_model_macs(m), want[i].macs, "%s", want[i].n);
        int n = nnc_model_layers(m, NULL, 0);
        cr_assert_gt(n, 5);
        nnc_model_layer_info *info = calloc((size_t)n, sizeof *info);
        cr_assert_eq(nnc_model_layers(m, info, n), n);
        long long macs = 0;
        long params = 0;
        for (int j = 0; j < n; j++) {
            macs += info[j].macs;
            params += info[j].params;
        }
        cr_assert_eq(macs, want[i].macs);
        cr_assert_eq(params, (long)nnc_params_num_scalars(nnc_model_params(m)));
        cr_assert_eq(info[n - 1].out_shape[0], 10);
        cr_assert_str_eq(info[n - 1].kind, "linear");
        if (i == 0) {
            cr_assert_str_eq(info[0].name, "conv1");
            cr_assert_eq(info[0].params, 432);
            cr_assert_eq(info[0].macs, 16LL * 32 * 32 * 27);
            int shortcuts = 0;
            for (int j = 0; j < n; j++) shortcuts += strcmp(info[j].kind, "add+shortcut_a") == 0;
            cr_assert_eq(shortcuts, 2, "two option-A shortcuts in a CIFAR ResNet");
        }
        free(info);
        nnc_model_free(m);
    }
}

Test(models_models, flags_and_names)
{
    nnc_model *m = make("resnet20", 3, 32, 10, 1);
    const nnc_params *p = nnc_model_params_const(m);
    int buffers = 0, bn = 0, nodecay = 0;
    for (int i = 0; i < p->count; i++) {
        const nnc_param_entry *e = &p->entries[i];
        if (e->flags & NNC_PARAM_BUFFER) {
            buffers++;
            cr_assert(strstr(e->name, "running_"), "%s", e->name);
            continue;
        }
        if (e->flags & NNC_PARAM_BN) {
            bn++;
            cr_assert(e->flags & NNC_PARAM_NO_DECAY, "%s", e->name);
        }
        if (e->flags & NNC_PARAM_NO_DECAY) nodecay++;
    }
    cr_assert_eq(buffers, 38, "19 BN layers x (running mean, running var)");
    cr_assert_eq(bn, 38);
    cr_assert_eq(nodecay, 39, "BN gamma/beta and fc.bias");
    cr_assert_eq(p->entries[nnc_params_find(p, "fc.bias")].flags, NNC_PARAM_NO_DECAY);
    cr_assert_eq(p->entries[nnc_params_find(p, "layers.8.conv2.weight")].flags, 0);
    cr_assert_geq(nnc_params_find(p, "layers.4.bn1.running_var"), 0);
    cr_assert_str_eq(nnc_model_name(m), "resnet20");
    cr_assert_str_eq(nnc_model_arch(m), "resnet20/c3/s32/k10");
    nnc_model_free(m);
    m = make("vgg16", 1, 28, 7, 1);
    p = nnc_model_params_const(m);
    cr_assert_str_eq(nnc_model_arch(m), "vgg16/c1/s28/k7");
    cr_assert_eq(p->entries[nnc_params_find(p, "features.0.bias")].flags, NNC_PARAM_NO_DECAY);
    cr_assert_eq(p->entries[nnc_params_find(p, "features.1.weight")].flags, NNC_PARAM_BN | NNC_PARAM_NO_DECAY);
    cr_assert_geq(nnc_params_find(p, "classifier.6.weight"), 0);
    nnc_model_config c = nnc_model_get_config(m);
    cr_assert(c.in_channels == 1 && c.image_size == 28 && c.num_classes == 7);
    nnc_model_free(m);
}

static nnc_tensor *input(nnc_graph *g, float *buf, int n, int c, int s, nnc_rng *r)
{
    for (int i = 0; i < n * c * s * s; i++) buf[i] = nnc_rng_normal(r);
    int shape[4] = {n, c, s, s};
    return nnc_tensor_wrap(g, buf, 4, shape);
}

Test(models_models, forward_shapes_32x32x3_and_28x28x1)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_graph_set_grad(g, 0);
    nnc_rng r;
    nnc_rng_seed(&r, 5, 0);
    static float buf[2 * 3 * 32 * 32];
    static const int sizes[2][2] = {{3, 32}, {1, 28}};
    for (int i = 0; i < nnc_model_num_registered(); i++) {
        const char *name = nnc_model_registered_name(i);
        for (int k = 0; k < 2; k++) {
            nnc_model *m = make(name, sizes[k][0], sizes[k][1], 10, 3);
            nnc_tensor *x = input(g, buf, 2, sizes[k][0], sizes[k][1], &r);
            /* training mode (batch statistics): a fresh VGG in eval mode maps every image to
             * nearly the classifier bias, as PyTorch does */
            nnc_tensor *y = nnc_model_forward(m, g, x, 1, &r);
            cr_assert(y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 10, "%s at %d: %s", name, sizes[k][1],
                      nnc_tensor_shape_str(y, (char[32]){0}, 32));
            for (size_t j = 0; j < y->numel; j++) cr_assert(isfinite(y->data[j]), "%s", name);
            cr_assert_gt(fabsf(y->data[0] - y->data[10]), 0.0f, "%s: images give different logits", name);
            nnc_graph_reset(g);
            nnc_model_free(m);
        }
    }
    nnc_graph_free(g);
}

static int count_kind(const nnc_model *m, const char *kind)
{
    nnc_model_layer_info info[128];
    int n = nnc_model_layers(m, info, 128), c = 0;
    cr_assert_leq(n, 128);
    for (int i = 0; i < n; i++) c += strcmp(info[i].kind, kind) == 0;
    return c;
}

/* VGG at sizes other than 32: documented rule (builders.c) */
Test(models_models, vgg_other_image_sizes)
{
    nnc_model *m = make("vgg16", 3, 32, 10, 1);
    cr_assert_eq(count_kind(m, "maxpool2d"), 5);
    cr_assert_eq(count_kind(m, "global_avgpool"), 0);
    nnc_model_free(m);
    m = make("vgg16", 1, 28, 10, 1); /* 28 -> 14 -> 7 -> 3 -> 1, fifth pool left out */
    cr_assert_eq(count_kind(m, "maxpool2d"), 4);
    cr_assert_eq(count_kind(m, "global_avgpool"), 0);
    cr_assert_eq((long)nnc_params_num_scalars(nnc_model_params(m)), 15253578 - 2 * 64 * 9);
    nnc_model_free(m);
    m = make("vgg11", 3, 64, 10, 1); /* 64 -> 2 after five pools, then global average pool */
    cr_assert_eq(count_kind(m, "maxpool2d"), 5);
    cr_assert_eq(count_kind(m, "global_avgpool"), 1);
    nnc_model_free(m);
}

Test(models_models, unknown_name_and_bad_config)
{
    nnc_model *m = (nnc_model *)1;
    cr_assert_eq(nnc_model_new("resnet21", NULL, 1, &m), NNC_EINVAL);
    cr_assert_null(m);
    const char *msg = nnc_error_message();
    cr_assert(strstr(msg, "'resnet21'") && strstr(msg, "resnet20") && strstr(msg, "vgg19") && strstr(msg, "tiny"),
              "%s", msg);
    cr_assert_eq(nnc_model_new(NULL, NULL, 1, &m), NNC_EINVAL);
    nnc_model_config c = nnc_model_config_default();
    cr_assert(c.in_channels == 3 && c.image_size == 32 && c.num_classes == 10);
    c.image_size = 4;
    cr_assert_eq(nnc_model_new("resnet20", &c, 1, &m), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "image_size") && strstr(nnc_error_message(), "found 4"), "%s",
              nnc_error_message());
    c = nnc_model_config_default();
    c.in_channels = 0;
    cr_assert_eq(nnc_model_new("vgg11", &c, 1, &m), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "in_channels"), "%s", nnc_error_message());
    c = nnc_model_config_default();
    c.num_classes = 0;
    cr_assert_eq(nnc_model_new("tiny", &c, 1, &m), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "num_classes"), "%s", nnc_error_message());
    nnc_model_free(NULL);
}

Test(models_models, init_statistics_and_seeding)
{
    nnc_model *a = make("resnet20", 3, 32, 10, 42), *b = make("resnet20", 3, 32, 10, 42);
    nnc_model *c = make("resnet20", 3, 32, 10, 43);
    nnc_params *pa = nnc_model_params(a), *pb = nnc_model_params(b), *pc = nnc_model_params(c);
    cr_assert_eq(memcmp(pa->data, pb->data, pa->n_data * sizeof(float)), 0, "same seed, same weights");
    cr_assert_neq(memcmp(pa->data, pc->data, pa->n_data * sizeof(float)), 0, "other seed, other weights");
    /* kaiming_normal_ (fan_in): std sqrt(2 / (64*9)) */
    int w = nnc_params_find(pa, "layers.8.conv2.weight");
    const float *x = nnc_params_ptr(pa, w);
    size_t n = pa->entries[w].numel;
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    double mean = s / n, sd = sqrt(s2 / n - mean * mean), want = sqrt(2.0 / 576);
    cr_assert_lt(fabs(mean), 0.01 * want * 10, "mean %g", mean);
    cr_assert_lt(fabs(sd / want - 1), 0.03, "std %g vs %g", sd, want);
    int g = nnc_params_find(pa, "layers.3.bn2.weight"), be = g + 1;
    int rv = nnc_params_find(pa, "layers.3.bn2.running_var"), rm = rv - 1;
    for (int i = 0; i < 32; i++) {
        cr_assert_eq(nnc_params_ptr(pa, g)[i], 1.0f);
        cr_assert_eq(nnc_params_ptr(pa, be)[i], 0.0f);
        cr_assert_eq(nnc_params_ptr(pa, rm)[i], 0.0f);
        cr_assert_eq(nnc_params_ptr(pa, rv)[i], 1.0f);
    }
    const float *fb = nnc_params_ptr(pa, nnc_params_find(pa, "fc.bias"));
    for (int i = 0; i < 10; i++) cr_assert_leq(fabsf(fb[i]), 0.125f, "fc bias U(+-1/sqrt(64))");
    nnc_model_free(a);
    nnc_model_free(b);
    nnc_model_free(c);
    /* VGG: PyTorch default U(+-1/sqrt(fan_in)) */
    a = make("vgg11", 3, 32, 10, 7);
    pa = nnc_model_params(a);
    w = nnc_params_find(pa, "features.0.weight");
    float mx = 0;
    for (int i = 0; i < 64 * 27; i++) mx = fmaxf(mx, fabsf(nnc_params_ptr(pa, w)[i]));
    cr_assert(mx <= 1.0f / sqrtf(27.0f) && mx > 0.9f / sqrtf(27.0f), "max |w| %g", (double)mx);
    nnc_model_free(a);
}

static float train_loss(nnc_model *m, nnc_graph *g, float *xb, const int *labels, int n, int training)
{
    nnc_model_config c = nnc_model_get_config(m);
    int shape[4] = {n, c.in_channels, c.image_size, c.image_size};
    nnc_tensor *x = nnc_tensor_wrap(g, xb, 4, shape);
    nnc_tensor *y = nnc_model_forward(m, g, x, training, NULL);
    nnc_tensor *loss = nnc_softmax_cross_entropy(g, y, labels, NNC_REDUCE_MEAN, 0);
    return loss->data[0];
}

Test(models_models, clone_equal_and_independent)
{
    nnc_model *m = make("resnet8", 3, 8, 10, 9), *c;
    cr_assert_eq(nnc_model_clone(m, &c), NNC_OK);
    nnc_params *pm = nnc_model_params(m), *pc = nnc_model_params(c);
    cr_assert(nnc_params_same_layout(pm, pc));
    cr_assert_neq(pm->data, pc->data);
    cr_assert_eq(memcmp(pm->data, pc->data, pm->n_data * sizeof(float)), 0);
    cr_assert_eq(memcmp(pm->buf, pc->buf, pm->n_buf * sizeof(float)), 0);
    cr_assert_str_eq(nnc_model_arch(c), nnc_model_arch(m));
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    static float xb[4 * 3 * 8 * 8];
    nnc_rng r;
    nnc_rng_seed(&r, 1, 0);
    for (size_t i = 0; i < sizeof xb / sizeof xb[0]; i++) xb[i] = nnc_rng_normal(&r);
    int labels[4] = {0, 1, 2, 3};
    /* same forward bits (training mode also updates each model's own running stats) */
    float l1 = train_loss(m, g, xb, labels, 4, 1);
    nnc_graph_reset(g);
    float l2 = train_loss(c, g, xb, labels, 4, 1);
    nnc_graph_reset(g);
    cr_assert_eq(l1, l2);
    cr_assert_eq(memcmp(pm->buf, pc->buf, pm->n_buf * sizeof(float)), 0);
    /* a training step on the clone leaves the original untouched */
    float *saved = malloc(pm->n_data * sizeof(float));
    memcpy(saved, pm->data, pm->n_data * sizeof(float));
    nnc_sgd *o;
    cr_assert_eq(nnc_sgd_new(pc, NULL, &o), NNC_OK);
    nnc_tensor *y = nnc_model_forward(c, g, nnc_tensor_wrap(g, xb, 4, (int[4]){4, 3, 8, 8}), 1, NULL);
    cr_assert_eq(nnc_backward(g, nnc_softmax_cross_entropy(g, y, labels, NNC_REDUCE_MEAN, 0)), NNC_OK);
    nnc_graph_reset(g);
    nnc_sgd_step(o, 0.1f);
    cr_assert_eq(memcmp(saved, pm->data, pm->n_data * sizeof(float)), 0);
    cr_assert_neq(memcmp(pc->data, pm->data, pm->n_data * sizeof(float)), 0);
    for (size_t i = 0; i < pm->n_data; i++) cr_assert_eq(pm->grad[i], 0.0f, "original grads untouched");
    /* the clone outlives its source */
    nnc_model_free(m);
    float l3 = train_loss(c, g, xb, labels, 4, 0);
    cr_assert(isfinite(l3));
    free(saved);
    nnc_sgd_free(o);
    nnc_graph_free(g);
    nnc_model_free(c);
}

Test(models_models, tiny_model_trains)
{
    nnc_model *m = make("tiny", 3, 8, 4, 11);
    nnc_params *p = nnc_model_params(m);
    nnc_sgd_config sc = {.momentum = 0.9f, .weight_decay = 5e-4f, .decay_bn_bias = 1};
    nnc_sgd *o;
    cr_assert_eq(nnc_sgd_new(p, &sc, &o), NNC_OK);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    enum { N = 16 };
    static float xb[N * 3 * 8 * 8];
    int labels[N];
    nnc_rng r;
    nnc_rng_seed(&r, 12, 0);
    for (size_t i = 0; i < sizeof xb / sizeof xb[0]; i++) xb[i] = nnc_rng_normal(&r);
    for (int i = 0; i < N; i++) labels[i] = (int)nnc_rng_below(&r, 4);
    float first = 0, last = 0;
    uint64_t allocs = 0;
    for (int step = 0; step < 30; step++) {
        if (step == 2) allocs = nnc_alloc_count();
        nnc_params_zero_grad(p);
        nnc_tensor *y = nnc_model_forward(m, g, nnc_tensor_wrap(g, xb, 4, (int[4]){N, 3, 8, 8}), 1, NULL);
        nnc_tensor *loss = nnc_softmax_cross_entropy(g, y, labels, NNC_REDUCE_MEAN, 0);
        cr_assert_eq(nnc_backward(g, loss), NNC_OK);
        if (step == 0) first = loss->data[0];
        last = loss->data[0];
        nnc_graph_reset(g);
        nnc_sgd_step(o, 0.05f);
    }
    cr_assert_eq(nnc_alloc_count(), allocs, "steps with known shapes allocate nothing");
    cr_assert_lt(last, 0.5f * first, "loss %g -> %g over 30 steps", (double)first, (double)last);
    cr_assert(nnc_params_all_finite(p));
    nnc_sgd_free(o);
    nnc_graph_free(g);
    nnc_model_free(m);
}

Test(models_models, vgg_dropout_needs_rng_only_in_training)
{
    nnc_model *m = make("vgg11", 3, 8, 10, 2);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    static float xb[2 * 3 * 8 * 8];
    nnc_rng r;
    nnc_rng_seed(&r, 3, 0);
    nnc_tensor *x = input(g, xb, 2, 3, 8, &r);
    nnc_tensor *e1 = nnc_model_forward(m, g, x, 0, NULL), *e2 = nnc_model_forward(m, g, x, 0, NULL);
    cr_assert_eq(memcmp(e1->data, e2->data, 20 * sizeof(float)), 0, "eval is deterministic");
    nnc_rng d1, d2;
    nnc_rng_seed(&d1, 4, 0);
    nnc_rng_seed(&d2, 5, 0);
    nnc_tensor *t1 = nnc_model_forward(m, g, x, 1, &d1), *t2 = nnc_model_forward(m, g, x, 1, &d2);
    cr_assert_neq(memcmp(t1->data, t2->data, 20 * sizeof(float)), 0, "dropout masks differ by rng");
    nnc_graph_free(g);
    nnc_model_free(m);
}

Test(models_models, eval_keeps_running_stats_training_updates_them)
{
    nnc_model *m = make("resnet8", 2, 8, 3, 4);
    nnc_params *p = nnc_model_params(m);
    float *before = malloc(p->n_buf * sizeof(float));
    memcpy(before, p->buf, p->n_buf * sizeof(float));
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    static float xb[3 * 2 * 8 * 8];
    nnc_rng r;
    nnc_rng_seed(&r, 8, 0);
    nnc_tensor *x = input(g, xb, 3, 2, 8, &r);
    nnc_model_forward(m, g, x, 0, NULL);
    cr_assert_eq(memcmp(before, p->buf, p->n_buf * sizeof(float)), 0, "eval leaves running stats alone");
    nnc_model_forward(m, g, x, 1, NULL);
    const nnc_param_entry *e = &p->entries[nnc_params_find(p, "layers.2.bn2.running_var")];
    cr_assert_neq(memcmp(before + e->offset, p->buf + e->offset, e->numel * sizeof(float)), 0,
                  "training updates the last block's running stats");
    free(before);
    nnc_graph_free(g);
    nnc_model_free(m);
}

static void quiet_hook(const char *msg) { (void)msg; }

Test(models_models, forward_with_wrong_input_shape_asserts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_model *m = make("tiny", 3, 8, 10, 1);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    static float xb[1 * 1 * 8 * 8];
    nnc_tensor *x = nnc_tensor_wrap(g, xb, 4, (int[4]){1, 1, 8, 8});
    nnc_model_forward(m, g, x, 0, NULL); /* model expects 3 channels */
}

/* Replicas on worker threads: each thread trains its own clone on its own graph; the result is
 * bitwise the same as running the clones one after another (what dist relies on). */
typedef struct replica_job {
    nnc_model *m;
    const float *x;
    const int *labels;
    float loss[3];
    int status;
} replica_job;

static void *replica_train(void *arg)
{
    replica_job *j = arg;
    nnc_graph *g;
    nnc_sgd *o;
    if ((j->status = nnc_graph_new(0, &g))) return NULL;
    if ((j->status = nnc_sgd_new(nnc_model_params(j->m), NULL, &o))) {
        nnc_graph_free(g);
        return NULL;
    }
    for (int step = 0; step < 3 && !j->status; step++) {
        nnc_params_zero_grad(nnc_model_params(j->m));
        nnc_tensor *x = nnc_tensor_wrap(g, (float *)j->x, 4, (int[4]){4, 3, 8, 8});
        nnc_tensor *y = nnc_model_forward(j->m, g, x, 1, NULL);
        nnc_tensor *l = nnc_softmax_cross_entropy(g, y, j->labels, NNC_REDUCE_MEAN, 0);
        j->loss[step] = l->data[0];
        j->status = nnc_backward(g, l);
        nnc_graph_reset(g);
        nnc_sgd_step(o, 0.1f);
    }
    nnc_sgd_free(o);
    nnc_graph_free(g);
    return NULL;
}

Test(models_models, clones_train_concurrently_like_serially, .timeout = 60)
{
    int saved_threads = nnc_blas_threads();
    nnc_blas_set_threads(1);
    nnc_model *base = make("resnet8", 3, 8, 10, 21);
    enum { R = 3 };
    static float xb[R][4 * 3 * 8 * 8];
    static int labels[R][4];
    nnc_rng r;
    nnc_rng_seed(&r, 22, 0);
    for (int k = 0; k < R; k++) {
        for (int i = 0; i < 4 * 3 * 8 * 8; i++) xb[k][i] = nnc_rng_normal(&r);
        for (int i = 0; i < 4; i++) labels[k][i] = (int)nnc_rng_below(&r, 10);
    }
    replica_job serial[R], par[R];
    for (int k = 0; k < R; k++) {
        serial[k] = (replica_job){.x = xb[k], .labels = labels[k]};
        par[k] = serial[k];
        cr_assert_eq(nnc_model_clone(base, &serial[k].m), NNC_OK);
        cr_assert_eq(nnc_model_clone(base, &par[k].m), NNC_OK);
        replica_train(&serial[k]);
    }
    pthread_t th[R];
    for (int k = 0; k < R; k++) cr_assert_eq(pthread_create(&th[k], NULL, replica_train, &par[k]), 0);
    for (int k = 0; k < R; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < R; k++) {
        cr_assert_eq(serial[k].status, NNC_OK);
        cr_assert_eq(par[k].status, NNC_OK);
        cr_assert_eq(memcmp(serial[k].loss, par[k].loss, sizeof serial[k].loss), 0, "replica %d losses", k);
        nnc_params *a = nnc_model_params(serial[k].m), *b = nnc_model_params(par[k].m);
        cr_assert_eq(memcmp(a->data, b->data, a->n_data * sizeof(float)), 0, "replica %d weights", k);
        cr_assert_eq(memcmp(a->buf, b->buf, a->n_buf * sizeof(float)), 0, "replica %d BN statistics", k);
        cr_assert_lt(serial[k].loss[2], serial[k].loss[0], "replica %d learns", k);
        nnc_model_free(serial[k].m);
        nnc_model_free(par[k].m);
    }
    nnc_model_free(base);
    nnc_blas_set_threads(saved_threads);
}

/* Graph recycle mode (what the trainer uses) on real models: parameter gradients bit-identical to
 * the default mode, a smaller step arena (gradients carved from dead activations), and a second
 * step that fits the coalesced arena without growing it. */
Test(models_models, recycle_mode_same_gradients_smaller_arena)
{
    const char *names[2] = {"resnet8", "vgg11"};
    for (int mi = 0; mi < 2; mi++) {
        nnc_model *m = make(names[mi], 3, 32, 10, 21), *c;
        cr_assert_eq(nnc_model_clone(m, &c), NNC_OK);
        static float xb[6 * 3 * 32 * 32];
        nnc_rng r;
        nnc_rng_seed(&r, 2, 0);
        for (size_t i = 0; i < sizeof xb / sizeof xb[0]; i++) xb[i] = nnc_rng_normal(&r);
        int labels[6] = {0, 1, 2, 3, 4, 5};
        size_t used[2];
        nnc_model *ms[2] = {m, c};
        for (int rec = 0; rec < 2; rec++) {
            nnc_graph *g;
            cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
            nnc_graph_set_recycle(g, rec);
            for (int step = 0; step < 2; step++) {
                nnc_graph_reset(g);
                size_t cap = nnc_arena_capacity(nnc_graph_arena(g));
                nnc_params_zero_grad(nnc_model_params(ms[rec]));
                int shape[4] = {6, 3, 32, 32};
                nnc_rng dr;
                nnc_rng_seed(&dr, 3, (uint64_t)step); /* vgg11's dropout: the same masks in both modes */
                nnc_tensor *y = nnc_model_forward(ms[rec], g, nnc_tensor_wrap(g, xb, 4, shape), 1, &dr);
                nnc_tensor *loss = nnc_softmax_cross_entropy(g, y, labels, NNC_REDUCE_MEAN, 0);
                cr_assert_eq(nnc_backward(g, loss), NNC_OK);
                used[rec] = nnc_arena_used(nnc_graph_arena(g));
                if (step) cr_expect_eq(nnc_arena_capacity(nnc_graph_arena(g)), cap, "%s: second step grew the arena", names[mi]);
            }
            nnc_graph_free(g);
        }
        nnc_params *pm = nnc_model_params(m), *pc = nnc_model_params(c);
        cr_expect_eq(memcmp(pm->grad, pc->grad, pm->n_data * sizeof(float)), 0, "%s: recycle mode changed the gradients",
                     names[mi]);
        cr_expect_lt(used[1], used[0], "%s: arena %zu bytes in recycle mode, %zu without", names[mi], used[1], used[0]);
        nnc_model_free(m);
        nnc_model_free(c);
    }
}

/* Training forward of ResNet-8 and VGG-11: every BN -> ReLU -> conv runs as one bn_relu_conv2d
 * node (relu(bn(x)) never stored), no standalone relu or batchnorm2d node is left, and every
 * batch norm reads a conv output whose statistics the conv took in its output pass. */
Test(models_models, training_forward_fuses_bn_relu_conv_and_reuses_conv_statistics)
{
    const char *names[2] = {"resnet8", "vgg11"};
    const int fused_want[2] = {3, 4}; /* one per ResNet block; VGG-11 at 8x8: 256-256, 512 x4 */
    for (int mi = 0; mi < 2; mi++) {
        nnc_model *m = make(names[mi], 3, 8, 5, 9);
        nnc_graph *g;
        cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
        static float xb[2 * 3 * 8 * 8];
        nnc_rng r;
        nnc_rng_seed(&r, 12, 0);
        nnc_rng dr;
        nnc_rng_seed(&dr, 13, 0);
        nnc_model_forward(m, g, input(g, xb, 2, 3, 8, &r), 1, &dr);
        int fused = 0, bn = 0;
        for (int i = 0; i < nnc_graph_num_nodes(g); i++) {
            const nnc_node *n = nnc_graph_node(g, i);
            cr_expect(strcmp(n->op, "batchnorm2d") != 0 || n->in[0]->ndim == 2, "%s: node %d is an unfused batchnorm2d",
                      names[mi], i);
            if (strcmp(n->op, "bn_relu_conv2d") == 0) fused++;
            if (strcmp(n->op, "bn_relu_conv2d") == 0 || strcmp(n->op, "batchnorm2d_relu") == 0) {
                bn++;
                cr_expect(nnc__conv_output_stats(g, n->in[0]) != NULL,
                          "%s: node %d (%s) reads a tensor without conv statistics", names[mi], i, n->op);
            }
        }
        cr_expect_eq(fused, fused_want[mi], "%s: %d bn_relu_conv2d nodes, want %d", names[mi], fused, fused_want[mi]);
        cr_expect_gt(bn, fused, "%s: the other batch norms run as batchnorm2d_relu", names[mi]);
        nnc_graph_free(g);
        nnc_model_free(m);
    }
}

/* The fused training path (conv statistics, bn_relu_conv2d and its backward's gradient buffers)
 * allocates nothing once the first steps have sized the arenas, with and without recycle mode. */
Test(models_models, resnet8_training_steps_allocate_nothing)
{
    for (int rec = 0; rec < 2; rec++) {
        nnc_model *m = make("resnet8", 3, 8, 4, 21);
        nnc_graph *g;
        cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
        nnc_graph_set_recycle(g, rec);
        enum { N = 4 };
        static float xb[N * 3 * 8 * 8];
        int labels[N] = {0, 1, 2, 3};
        nnc_rng r;
        nnc_rng_seed(&r, 22, 0);
        for (size_t i = 0; i < sizeof xb / sizeof xb[0]; i++) xb[i] = nnc_rng_normal(&r);
        uint64_t allocs = 0;
        for (int step = 0; step < 6; step++) {
            if (step == 2) allocs = nnc_alloc_count();
            nnc_params_zero_grad(nnc_model_params(m));
            nnc_tensor *y = nnc_model_forward(m, g, nnc_tensor_wrap(g, xb, 4, (int[4]){N, 3, 8, 8}), 1, NULL);
            cr_assert_eq(nnc_backward(g, nnc_softmax_cross_entropy(g, y, labels, NNC_REDUCE_MEAN, 0)), NNC_OK);
            nnc_graph_reset(g);
        }
        cr_expect_eq(nnc_alloc_count(), allocs, "recycle %d: steps with known shapes allocate nothing", rec);
        nnc_graph_free(g);
        nnc_model_free(m);
    }
}
