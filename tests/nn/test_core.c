/* tests/nn/test_core.c - status messages, arena, graph/tape, params table, RNG. */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <string.h>

#include "nn/nnc.h"

Test(nn_core, status_message_and_prefix)
{
    int s = nnc__fail(NNC_EIO, "open %s: %s", "x.bin", "No such file");
    cr_assert_eq(s, NNC_EIO);
    nnc__fail_prefix(s, "loading model");
    cr_assert_str_eq(nnc_error_message(), "loading model: open x.bin: No such file");
    cr_assert_str_eq(nnc_status_str(NNC_EFORMAT), "malformed input");
}

Test(nn_core, arena_coalesces_and_stops_growing)
{
    nnc_arena *a;
    cr_assert_eq(nnc_arena_new(1024, &a), NNC_OK);
    for (int i = 0; i < 10; i++) cr_assert_not_null(nnc_arena_alloc(a, 1000));
    cr_assert_gt(nnc_arena_blocks(a), 1);
    size_t used = nnc_arena_used(a);
    nnc_arena_reset(a);
    cr_assert_eq(nnc_arena_blocks(a), 1);
    cr_assert_geq(nnc_arena_capacity(a), used);
    uint64_t before = nnc_alloc_count();
    for (int cycle = 0; cycle < 3; cycle++) {
        for (int i = 0; i < 10; i++) cr_assert_not_null(nnc_arena_alloc(a, 1000));
        nnc_arena_reset(a);
    }
    cr_assert_eq(nnc_alloc_count(), before, "same-size cycles must not allocate");
    cr_assert_eq(nnc_arena_blocks(a), 1);
    void *p = nnc_arena_alloc(a, 3);
    cr_assert_eq((uintptr_t)p % NNC_ALIGN, 0);
    nnc_arena_free(a);
}

Test(nn_core, params_table_offsets_and_clone)
{
    nnc_params *p;
    cr_assert_eq(nnc_params_new(&p), NNC_OK);
    int shp_w[4] = {4, 3, 3, 3}, shp_b[1] = {4};
    int w = nnc_params_add(p, "conv.w", 4, shp_w, 0);
    int g = nnc_params_add(p, "bn.gamma", 1, shp_b, NNC_PARAM_NO_DECAY | NNC_PARAM_BN);
    int rm = nnc_params_add(p, "bn.running_mean", 1, shp_b, NNC_PARAM_BUFFER);
    cr_assert_eq(nnc_params_add(p, "conv.w", 1, shp_b, 0), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "duplicate parameter name 'conv.w'"));
    cr_assert_eq(nnc_params_finalize(p), NNC_OK);
    cr_assert_eq(nnc_params_num_scalars(p), 108 + 4);
    cr_assert_eq(nnc_params_num_trained(p), 2);
    cr_assert_eq(p->entries[g].offset % 16, 0);
    cr_assert_eq(p->entries[rm].offset, 0);
    cr_assert_eq(nnc_params_tensor(p, rm)->requires_grad, 0);
    cr_assert_eq(nnc_params_tensor(p, w)->grad, p->grad + p->entries[w].offset);
    nnc_params_ptr(p, w)[5] = 2.5f;
    nnc_params_ptr(p, rm)[1] = -1.0f;
    nnc_params *q;
    cr_assert_eq(nnc_params_clone(p, &q), NNC_OK);
    cr_assert_eq(nnc_params_ptr(q, w)[5], 2.5f);
    cr_assert_eq(nnc_params_ptr(q, rm)[1], -1.0f);
    cr_assert(nnc_params_same_layout(p, q));
    cr_assert(nnc_params_all_finite(q));
    nnc_params_ptr(q, rm)[0] = NAN;
    cr_assert_not(nnc_params_all_finite(q));
    nnc_params_free(p);
    nnc_params_free(q);
    nnc_params_free(NULL);
}

Test(nn_core, rng_streams_are_reproducible_and_distinct)
{
    nnc_rng a, b, c;
    nnc_rng_seed(&a, 42, 0);
    nnc_rng_seed(&b, 42, 0);
    nnc_rng_seed(&c, 42, 1);
    int same_c = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = nnc_rng_u64(&a);
        cr_assert_eq(x, nnc_rng_u64(&b));
        same_c += x == nnc_rng_u64(&c);
    }
    cr_assert_eq(same_c, 0);
    double sum = 0, sq = 0;
    for (int i = 0; i < 20000; i++) {
        float z = nnc_rng_normal(&a);
        sum += z;
        sq += z * z;
        float u = nnc_rng_uniform(&a);
        cr_assert(u >= 0.0f && u < 1.0f);
        cr_assert_lt(nnc_rng_below(&a, 7), 7u);
    }
    cr_assert_lt(fabs(sum / 20000), 0.05);
    cr_assert_lt(fabs(sq / 20000 - 1.0), 0.05);
}

static void quiet_hook(const char *m) { (void)m; }

Test(nn_core, backward_without_forward_aborts, .signal = SIGABRT)
{
    nnc_set_assert_hook(quiet_hook);
    nnc_graph *g;
    nnc_graph_new(0, &g);
    int shape[1] = {1};
    nnc_tensor *t = nnc_tensor_new(g, 1, shape);
    nnc_backward(g, t);
}
