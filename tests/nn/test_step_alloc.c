/* tests/nn/test_step_alloc.c - once the first training step has run (and its arena reset has
 * coalesced the blocks), further steps with the same shapes allocate nothing: nnc_alloc_count()
 * stays put and the step arena keeps its capacity and single block. The net is a tiny ResNet
 * built from nn ops over a params table, trained with a hand-written SGD update. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/nnc.h"

#define N 4
#define K 3

typedef struct net {
    nnc_params *p;
    int conv1, bn1g, bn1b, bn1m, bn1v;   /* stem: 3 -> 8 */
    int c2, b2g, b2b, b2m, b2v;          /* downsampling block: 8 -> 16, stride 2 */
    int c3, b3g, b3b, b3m, b3v;
    int fcw, fcb;
} net;

static int add(nnc_params *p, const char *name, int ndim, int a, int b, int c, int d, unsigned flags)
{
    int shape[4] = {a, b, c, d};
    int i = nnc_params_add(p, name, ndim, shape, flags);
    cr_assert_geq(i, 0, "%s", nnc_error_message());
    return i;
}

static void add_bn(nnc_params *p, const char *pre, int c, int *g, int *b, int *m, int *v)
{
    char n[64];
    snprintf(n, sizeof n, "%s.weight", pre);
    *g = add(p, n, 1, c, 0, 0, 0, NNC_PARAM_BN | NNC_PARAM_NO_DECAY);
    snprintf(n, sizeof n, "%s.bias", pre);
    *b = add(p, n, 1, c, 0, 0, 0, NNC_PARAM_BN | NNC_PARAM_NO_DECAY);
    snprintf(n, sizeof n, "%s.running_mean", pre);
    *m = add(p, n, 1, c, 0, 0, 0, NNC_PARAM_BUFFER);
    snprintf(n, sizeof n, "%s.running_var", pre);
    *v = add(p, n, 1, c, 0, 0, 0, NNC_PARAM_BUFFER);
}

static void build(net *m)
{
    cr_assert_eq(nnc_params_new(&m->p), NNC_OK);
    nnc_params *p = m->p;
    m->conv1 = add(p, "conv1.weight", 4, 8, 3, 3, 3, 0);
    add_bn(p, "bn1", 8, &m->bn1g, &m->bn1b, &m->bn1m, &m->bn1v);
    m->c2 = add(p, "block.conv1.weight", 4, 16, 8, 3, 3, 0);
    add_bn(p, "block.bn1", 16, &m->b2g, &m->b2b, &m->b2m, &m->b2v);
    m->c3 = add(p, "block.conv2.weight", 4, 16, 16, 3, 3, 0);
    add_bn(p, "block.bn2", 16, &m->b3g, &m->b3b, &m->b3m, &m->b3v);
    m->fcw = add(p, "fc.weight", 2, K, 16, 0, 0, 0);
    m->fcb = add(p, "fc.bias", 1, K, 0, 0, 0, NNC_PARAM_NO_DECAY);
    cr_assert_eq(nnc_params_finalize(p), NNC_OK);
    nnc_rng r;
    nnc_rng_seed(&r, 5, 0);
    for (int i = 0; i < p->count; i++) {
        const nnc_param_entry *e = &p->entries[i];
        float *x = nnc_params_ptr(p, i);
        int is_var = strstr(e->name, "running_var") != NULL;
        int is_gamma = (e->flags & NNC_PARAM_BN) && strstr(e->name, ".weight");
        float fan_in = e->ndim > 1 ? (float)(e->numel / (size_t)e->shape[0]) : 1.0f;
        for (size_t k = 0; k < e->numel; k++) {
            if (is_var || is_gamma)
                x[k] = 1.0f;
            else if ((e->flags & NNC_PARAM_BUFFER) || e->ndim == 1)
                x[k] = 0.0f;
            else
                x[k] = nnc_rng_normal(&r) * sqrtf(2.0f / fan_in);
        }
    }
}

static nnc_tensor *bn(nnc_graph *g, net *m, nnc_tensor *x, int ga, int be, int mu, int va)
{
    nnc_params *p = m->p;
    return nnc_batchnorm2d(g, x, nnc_params_tensor(p, ga), nnc_params_tensor(p, be), nnc_params_tensor(p, mu),
                           nnc_params_tensor(p, va), 0.1f, 1e-5f, 1);
}

/* x (N,3,8,8) -> loss: stem conv-bn-relu, max-pool, one option-A residual block, GAP, fc, CE. */
static nnc_tensor *forward(nnc_graph *g, net *m, float *images, const int *labels)
{
    nnc_params *p = m->p;
    int xs[4] = {N, 3, 8, 8};
    nnc_tensor *x = nnc_tensor_wrap(g, images, 4, xs);
    nnc_tensor *h = nnc_conv2d(g, x, nnc_params_tensor(p, m->conv1), NULL, 1, 1);
    h = nnc_relu(g, bn(g, m, h, m->bn1g, m->bn1b, m->bn1m, m->bn1v));
    h = nnc_max_pool2d(g, h, 2, 2, 0); /* (N,8,4,4) */
    nnc_tensor *r = nnc_conv2d(g, h, nnc_params_tensor(p, m->c2), NULL, 2, 1);
    r = nnc_relu(g, bn(g, m, r, m->b2g, m->b2b, m->b2m, m->b2v));
    r = nnc_conv2d(g, r, nnc_params_tensor(p, m->c3), NULL, 1, 1);
    r = bn(g, m, r, m->b3g, m->b3b, m->b3m, m->b3v); /* (N,16,2,2) */
    h = nnc_relu(g, nnc_add(g, r, nnc_shortcut_a(g, h, 16, 2)));
    h = nnc_global_avg_pool(g, h);
    h = nnc_linear(g, h, nnc_params_tensor(p, m->fcw), nnc_params_tensor(p, m->fcb));
    return nnc_softmax_cross_entropy(g, h, labels, NNC_REDUCE_MEAN, 0.0f);
}

static float train_step(nnc_graph *g, net *m, float *images, const int *labels)
{
    nnc_params_zero_grad(m->p);
    nnc_tensor *loss = forward(g, m, images, labels);
    float l = loss->data[0];
    cr_assert_eq(nnc_backward(g, loss), NNC_OK, "%s", nnc_error_message());
    for (size_t i = 0; i < m->p->n_data; i++) m->p->data[i] -= 0.05f * m->p->grad[i];
    nnc_graph_reset(g);
    return l;
}

Test(nn_step_alloc, steady_state_steps_allocate_nothing)
{
    net m;
    build(&m);
    float images[N * 3 * 8 * 8];
    int labels[N] = {0, 1, 2, 1};
    nnc_rng r;
    nnc_rng_seed(&r, 6, 0);
    for (size_t i = 0; i < sizeof images / sizeof images[0]; i++) images[i] = nnc_rng_normal(&r);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(4096, &g), NNC_OK); /* deliberately small: step 1 must grow it */
    nnc_arena *a = nnc_graph_arena(g);

    nnc_tensor *loss = forward(g, &m, images, labels);
    cr_assert_eq(nnc_backward(g, loss), NNC_OK);
    cr_assert_gt(nnc_arena_blocks(a), 1, "the first step outgrew the initial block");
    size_t used = nnc_arena_used(a);
    nnc_graph_reset(g);
    cr_assert_eq(nnc_arena_blocks(a), 1, "reset coalesced the blocks");
    cr_assert_geq(nnc_arena_capacity(a), used);

    uint64_t count = nnc_alloc_count();
    int64_t live = nnc_alloc_live_bytes();
    size_t cap = nnc_arena_capacity(a);
    float first = 0, last = 0;
    for (int step = 0; step < 5; step++) {
        float l = train_step(g, &m, images, labels);
        cr_assert(isfinite(l));
        if (step == 0) first = l;
        last = l;
        cr_assert_eq(nnc_alloc_count(), count, "step %d allocated %llu times", step + 2,
                     (unsigned long long)(nnc_alloc_count() - count));
        cr_assert_eq(nnc_alloc_live_bytes(), live);
        cr_assert_eq(nnc_arena_capacity(a), cap, "step %d grew the arena", step + 2);
        cr_assert_eq(nnc_arena_blocks(a), 1);
    }
    cr_assert_lt(last, first, "SGD on a fixed batch lowers the loss (%g -> %g)", first, last);
    nnc_graph_free(g);
    nnc_params_free(m.p);
}
