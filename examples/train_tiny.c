/* examples/train_tiny.c - embedding nnc: build a small CNN from nn ops over a params table,
 * train it with plain SGD on generated 8x8 stripe images (class 0 horizontal, class 1
 * vertical), save a checkpoint, reload it into a fresh model and check the logits match.
 * Exits 1 if the loss does not fall clearly, accuracy stays low, or the reload differs.
 * Build it against an installed nnc (make install; for a prefix outside pkg-config's path set
 * PKG_CONFIG_PATH=PREFIX/lib/pkgconfig, and LD_LIBRARY_PATH=PREFIX/lib to run), from the
 * repository root (make check builds it with this very line):
 *   cc examples/train_tiny.c $(pkg-config --cflags --libs nnc) -o train_tiny
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/nnc.h"

#define N 32     /* batch */
#define S 8      /* image side */
#define C 8      /* conv channels */
#define STEPS 60

typedef struct model {
    nnc_params *p;
    int conv, bn_g, bn_b, bn_m, bn_v, fc_w, fc_b;
} model;

static int check(int s, const char *what)
{
    if (s < 0) fprintf(stderr, "train_tiny: %s: %s (%s)\n", what, nnc_error_message(), nnc_status_str(s));
    return s < 0;
}

/* conv1 (C,1,3,3) - bn (C) + running stats - fc (2,C) + bias; He-normal init from seed. */
static int model_new(model *m, uint64_t seed)
{
    int cw[4] = {C, 1, 3, 3}, c1[1] = {C}, fw[2] = {2, C}, fb[1] = {2};
    if (check(nnc_params_new(&m->p), "params")) return -1;
    nnc_params *p = m->p;
    if ((m->conv = nnc_params_add(p, "conv1.weight", 4, cw, 0)) < 0 ||
        (m->bn_g = nnc_params_add(p, "bn1.weight", 1, c1, NNC_PARAM_BN | NNC_PARAM_NO_DECAY)) < 0 ||
        (m->bn_b = nnc_params_add(p, "bn1.bias", 1, c1, NNC_PARAM_BN | NNC_PARAM_NO_DECAY)) < 0 ||
        (m->bn_m = nnc_params_add(p, "bn1.running_mean", 1, c1, NNC_PARAM_BUFFER)) < 0 ||
        (m->bn_v = nnc_params_add(p, "bn1.running_var", 1, c1, NNC_PARAM_BUFFER)) < 0 ||
        (m->fc_w = nnc_params_add(p, "fc.weight", 2, fw, 0)) < 0 ||
        (m->fc_b = nnc_params_add(p, "fc.bias", 1, fb, NNC_PARAM_NO_DECAY)) < 0)
        return check(-1, "params_add"), -1;
    if (check(nnc_params_finalize(p), "params_finalize")) return -1;
    nnc_rng r;
    nnc_rng_seed(&r, seed, 0);
    for (int i = 0; i < C * 9; i++) nnc_params_ptr(p, m->conv)[i] = nnc_rng_normal(&r) * sqrtf(2.0f / 9.0f);
    for (int i = 0; i < 2 * C; i++) nnc_params_ptr(p, m->fc_w)[i] = nnc_rng_normal(&r) * sqrtf(1.0f / C);
    for (int i = 0; i < C; i++) {
        nnc_params_ptr(p, m->bn_g)[i] = 1.0f;
        nnc_params_ptr(p, m->bn_v)[i] = 1.0f;
    }
    return 0;
}

/* images (N,1,S,S) -> logits (N,2): conv-bn-relu, max-pool 2, global average pool, linear. */
static nnc_tensor *forward(nnc_graph *g, model *m, float *images, int training)
{
    nnc_params *p = m->p;
    int xs[4] = {N, 1, S, S};
    nnc_tensor *x = nnc_tensor_wrap(g, images, 4, xs);
    nnc_tensor *h = nnc_conv2d(g, x, nnc_params_tensor(p, m->conv), NULL, 1, 1);
    h = nnc_batchnorm2d(g, h, nnc_params_tensor(p, m->bn_g), nnc_params_tensor(p, m->bn_b),
                        nnc_params_tensor(p, m->bn_m), nnc_params_tensor(p, m->bn_v), 0.1f, 1e-5f, training);
    h = nnc_max_pool2d(g, nnc_relu(g, h), 2, 2, 0);
    h = nnc_global_avg_pool(g, h);
    return nnc_linear(g, h, nnc_params_tensor(p, m->fc_w), nnc_params_tensor(p, m->fc_b));
}

/* A batch of stripe images with random phase, contrast and noise; labels 0/1. */
static void make_batch(nnc_rng *r, float *images, int *labels)
{
    for (int n = 0; n < N; n++) {
        int y = (int)nnc_rng_below(r, 2), phase = (int)nnc_rng_below(r, 2);
        float amp = 0.5f + nnc_rng_uniform(r);
        labels[n] = y;
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) {
                int k = y == 0 ? i : j;
                images[(n * S + i) * S + j] = ((k + phase) % 2 ? amp : -amp) + 0.3f * nnc_rng_normal(r);
            }
    }
}

static int accuracy(const nnc_tensor *logits, const int *labels)
{
    int pred[N], ok = 0;
    nnc_argmax_rows(logits, pred);
    for (int n = 0; n < N; n++) ok += pred[n] == labels[n];
    return ok;
}

int main(void)
{
    static float images[N * S * S];
    int labels[N];
    model m, m2 = {0};
    nnc_graph *g;
    nnc_rng data;
    nnc_rng_seed(&data, 2024, 0);
    if (model_new(&m, 1) || check(nnc_graph_new(0, &g), "graph")) return 1;

    /* train: plain SGD, the update written over the flat data/grad arenas */
    float first = 0, last = 0;
    printf("train_tiny: %d SGD steps, batch %d, loss:", STEPS, N);
    for (int step = 0; step < STEPS; step++) {
        make_batch(&data, images, labels);
        nnc_params_zero_grad(m.p);
        nnc_tensor *loss =
            nnc_softmax_cross_entropy(g, forward(g, &m, images, 1), labels, NNC_REDUCE_MEAN, 0.0f);
        float l = loss->data[0];
        if (check(nnc_backward(g, loss), "backward") || !isfinite(l)) return 1;
        for (size_t i = 0; i < m.p->n_data; i++) m.p->data[i] -= 0.1f * m.p->grad[i];
        nnc_graph_reset(g);
        if (step < 5) first += l / 5;
        if (step >= STEPS - 5) last += l / 5;
        if (step % 10 == 0 || step == STEPS - 1) printf(" %d:%.3f", step, l);
    }
    printf("\ntrain_tiny: mean loss of the first 5 steps %.3f, last 5 steps %.3f\n", first, last);

    /* save, reload into a fresh model with a different initialisation */
    const char *path = "train_tiny.ckpt";
    nnc_ckpt *c, *l;
    uint64_t steps = STEPS;
    if (check(nnc_ckpt_new("train_tiny/conv8-bn-gap-fc2", &c), "ckpt_new") ||
        check(nnc_ckpt_add_params(c, "", m.p), "ckpt_add_params") ||
        check(nnc_ckpt_add_bytes(c, "step", &steps, sizeof steps), "ckpt_add_bytes") ||
        check(nnc_ckpt_save(c, path), "ckpt_save"))
        return 1;
    nnc_ckpt_free(c);
    if (model_new(&m2, 99) || check(nnc_ckpt_load(path, &l), "ckpt_load")) return 1;
    if (strcmp(nnc_ckpt_arch(l), "train_tiny/conv8-bn-gap-fc2") != 0 ||
        check(nnc_ckpt_get_params(l, "", m2.p), "ckpt_get_params"))
        return 1;
    nnc_ckpt_free(l);
    remove(path);

    /* evaluate both on a fresh batch: running statistics, no tape */
    make_batch(&data, images, labels);
    nnc_graph_set_grad(g, 0);
    nnc_tensor *a = forward(g, &m, images, 0), *b = forward(g, &m2, images, 0);
    int same = memcmp(a->data, b->data, a->numel * sizeof(float)) == 0;
    int acc = accuracy(a, labels);
    printf("train_tiny: eval accuracy %d/%d, reloaded logits %s\n", acc, N, same ? "identical" : "DIFFER");
    nnc_graph_free(g);
    nnc_params_free(m.p);
    nnc_params_free(m2.p);
    if (!(last < 0.5f * first)) {
        fprintf(stderr, "train_tiny: loss did not fall clearly (%.3f -> %.3f)\n", first, last);
        return 1;
    }
    if (acc < N * 9 / 10 || !same) {
        fprintf(stderr, "train_tiny: %s\n", !same ? "reloaded model differs" : "accuracy below 90%");
        return 1;
    }
    return 0;
}
