/* tests/nn/test_graph.c - gradient-buffer recycling in backward: op outputs give their gradient
 * buffers to later gradients of the same size (the step arena stays smaller), leaves and
 * parameters keep theirs, results equal the keep-everything mode bit for bit. */
#include <criterion/criterion.h>
#include <string.h>

#include "nn/nnc.h"
#include "tests/common/gradcheck.h"

/* x -> relu -> scale -> relu -> scale -> sum-like seed; returns arena bytes used after backward. */
static size_t run_chain(int keep, nnc_tensor *x, float *dx_out, nnc_tensor **mid_out)
{
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_graph_set_keep_grads(g, keep);
    memset(x->grad, 0, x->numel * sizeof(float));
    nnc_tensor *a = nnc_relu(g, x), *b = nnc_scale(g, a, 2.0f), *c = nnc_relu(g, b), *d = nnc_scale(g, c, -3.0f);
    float seed[64];
    for (size_t i = 0; i < d->numel; i++) seed[i] = (float)i * 0.25f - 4.0f;
    cr_assert_eq(nnc_backward_seed(g, d, seed), NNC_OK);
    memcpy(dx_out, x->grad, x->numel * sizeof(float));
    size_t used = nnc_arena_used(nnc_graph_arena(g));
    *mid_out = b->grad ? b : NULL;
    nnc_graph_free(g);
    return used;
}

Test(nn_graph, backward_recycles_intermediate_gradients)
{
    nnc_rng r;
    nnc_rng_seed(&r, 3, 0);
    int shape[2] = {4, 16};
    nnc_tensor *x = gc_leaf(2, shape, &r, -1, 1, 1);
    float dx_keep[64], dx_rec[64];
    nnc_tensor *mid_keep, *mid_rec;
    size_t used_keep = run_chain(1, x, dx_keep, &mid_keep);
    size_t used_rec = run_chain(0, x, dx_rec, &mid_rec);
    cr_expect(memcmp(dx_keep, dx_rec, sizeof dx_keep) == 0, "recycling changed the leaf gradient");
    cr_expect_not_null(mid_keep, "keep mode must keep intermediate gradients");
    cr_expect_null(mid_rec, "recycling must hand intermediate gradients back (grad NULL)");
    /* four intermediate gradients of 64 floats without recycling, two with it */
    cr_expect_lt(used_rec, used_keep, "arena used %zu with recycling, %zu without", used_rec, used_keep);
    cr_expect_eq(used_keep - used_rec, 2 * 64 * sizeof(float), "recycling saved %zu bytes",
                 used_keep - used_rec);
    /* dx by hand: d = -3 relu(2 relu(x)) => dx = -6 seed where x > 0 */
    for (int i = 0; i < 64; i++) {
        float want = x->data[i] > 0 ? -6.0f * ((float)i * 0.25f - 4.0f) : 0.0f;
        cr_expect_float_eq(dx_rec[i], want, 1e-5, "dx[%d] = %g, want %g", i, dx_rec[i], want);
    }
    gc_leaf_free(x);
}

/* Recycle mode on the same chain: op outputs' data is handed back (NULL afterwards), the
 * tensor backward started from keeps its data, and the leaf gradient is bit-identical. */
Test(nn_graph, recycle_mode_hands_back_activation_data)
{
    nnc_rng r;
    nnc_rng_seed(&r, 4, 0);
    int shape[2] = {4, 16};
    nnc_tensor *x = gc_leaf(2, shape, &r, -1, 1, 1);
    float dx[2][64];
    size_t used[2];
    for (int rec = 0; rec < 2; rec++) {
        nnc_graph *g;
        cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
        nnc_graph_set_recycle(g, rec);
        memset(x->grad, 0, x->numel * sizeof(float));
        nnc_tensor *a = nnc_relu(g, x), *b = nnc_scale(g, a, 2.0f), *c = nnc_relu(g, b), *d = nnc_scale(g, c, -3.0f);
        float seed[64];
        for (int i = 0; i < 64; i++) seed[i] = (float)i * 0.5f - 9.0f;
        cr_assert_eq(nnc_backward_seed(g, d, seed), NNC_OK);
        memcpy(dx[rec], x->grad, sizeof dx[rec]);
        used[rec] = nnc_arena_used(nnc_graph_arena(g));
        if (rec) {
            cr_expect(a->data == NULL && b->data == NULL && c->data == NULL, "intermediate data not handed back");
            cr_expect_not_null(d->data, "the tensor backward started from keeps its data");
            cr_expect_not_null(x->data, "leaves keep their data");
        } else {
            cr_expect(a->data && b->data && c->data, "without recycle mode activations stay");
        }
        nnc_graph_free(g);
    }
    cr_expect(memcmp(dx[0], dx[1], sizeof dx[0]) == 0, "recycle mode changed the gradient");
    /* (gradient recycling alone already covers this chain: the saving shows on real models,
     * tests/models/test_models.c recycle_mode_same_gradients_smaller_arena) */
    cr_expect_leq(used[1], used[0], "arena %zu bytes with recycle mode, %zu without", used[1], used[0]);
    gc_leaf_free(x);
}

/* A view (reshape) shares its input's data: recycle mode must not hand that data back while
 * the input's producer still needs it (relu's backward reads its output as the mask). */
Test(nn_graph, recycle_mode_keeps_data_behind_views)
{
    nnc_rng r;
    nnc_rng_seed(&r, 5, 0);
    int shape[2] = {4, 16}, flat[2] = {8, 8};
    nnc_tensor *x = gc_leaf(2, shape, &r, -1, 1, 1);
    float dx[2][64];
    for (int rec = 0; rec < 2; rec++) {
        nnc_graph *g;
        cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
        nnc_graph_set_recycle(g, rec);
        memset(x->grad, 0, x->numel * sizeof(float));
        nnc_tensor *a = nnc_relu(g, x), *v = nnc_reshape(g, a, 2, flat), *c = nnc_scale(g, v, 1.5f);
        nnc_tensor *d = nnc_relu(g, c);
        float seed[64];
        for (int i = 0; i < 64; i++) seed[i] = 1.0f + (float)(i % 5);
        cr_assert_eq(nnc_backward_seed(g, d, seed), NNC_OK);
        memcpy(dx[rec], x->grad, sizeof dx[rec]);
        if (rec) cr_expect_not_null(v->data, "a view's data belongs to its input");
        nnc_graph_free(g);
    }
    cr_expect(memcmp(dx[0], dx[1], sizeof dx[0]) == 0, "recycle mode changed the gradient through a view");
    for (int i = 0; i < 64; i++) {
        float want = x->data[i] > 0 ? 1.5f * (1.0f + (float)(i % 5)) : 0.0f;
        cr_expect_float_eq(dx[1][i], want, 1e-6, "dx[%d] = %g, want %g", i, dx[1][i], want);
    }
    gc_leaf_free(x);
}
