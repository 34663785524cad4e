/* tests/optim/test_sgd.c - SGD vs hand-computed and torch.optim.SGD values:
 * momentum, Nesterov, no momentum, weight decay with no-decay flags, buffers untouched,
 * reset, config validation. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nnc.h"
#include "nn/threads.h"

/* Three scalar parameters a (decayed), b (NO_DECAY), c (BN|NO_DECAY) plus one buffer. */
static const float W0[3] = {1.0f, -2.0f, 0.5f};
static const float GRADS[3][3] = {{0.1f, -0.2f, 0.3f}, {0.05f, 0.1f, -0.1f}, {-0.2f, 0.0f, 0.4f}};
static const float LRS[3] = {0.1f, 0.1f, 0.05f};

static nnc_params *make_params(void)
{
    nnc_params *p;
    int one[1] = {1};
    cr_assert_eq(nnc_params_new(&p), NNC_OK);
    cr_assert_geq(nnc_params_add(p, "a", 1, one, 0), 0);
    cr_assert_geq(nnc_params_add(p, "b", 1, one, NNC_PARAM_NO_DECAY), 0);
    cr_assert_geq(nnc_params_add(p, "running", 1, one, NNC_PARAM_BUFFER), 0);
    cr_assert_geq(nnc_params_add(p, "c", 1, one, NNC_PARAM_NO_DECAY | NNC_PARAM_BN), 0);
    cr_assert_eq(nnc_params_finalize(p), NNC_OK);
    return p;
}

static const int IDX[3] = {0, 1, 3};

/* Runs 3 steps, returning the weights after each in out[step][param]. */
static void run3(const nnc_sgd_config *cfg, float out[3][3])
{
    nnc_params *p = make_params();
    for (int j = 0; j < 3; j++) nnc_params_ptr(p, IDX[j])[0] = W0[j];
    nnc_params_ptr(p, 2)[0] = 7.0f;
    nnc_sgd *o;
    cr_assert_eq(nnc_sgd_new(p, cfg, &o), NNC_OK);
    for (int t = 0; t < 3; t++) {
        for (int j = 0; j < 3; j++) nnc_params_tensor(p, IDX[j])->grad[0] = GRADS[t][j];
        nnc_sgd_step(o, LRS[t]);
        for (int j = 0; j < 3; j++) out[t][j] = nnc_params_ptr(p, IDX[j])[0];
    }
    cr_assert_eq(o->steps, 3);
    cr_assert_eq(nnc_params_ptr(p, 2)[0], 7.0f, "buffers are not trained");
    nnc_sgd_free(o);
    nnc_params_free(p);
}

static void expect(float got[3][3], const float want[3][3], const char *label)
{
    for (int t = 0; t < 3; t++)
        for (int j = 0; j < 3; j++)
            cr_expect_leq(fabs((double)got[t][j] - want[t][j]), 1e-7 * fmax(1.0, fabs(want[t][j])),
                          "%s step %d param %d: got %.9g want %.9g", label, t + 1, j, (double)got[t][j],
                          (double)want[t][j]);
}

/* The `want` tables are torch.optim.SGD (torch 1.13.1, float32) with lr 0.1, 0.1, 0.05 and
 * weight decay 0.01, produced by tests/fixtures/gen_sgd_ref.py; param groups {a: wd} and
 * {b, c: wd, or 0 for the no-decay case}. The hand computations in the comments agree. */
Test(optim_sgd, momentum_matches_hand_and_torch)
{
    /* Hand computation for a: step 1 g = 0.1 + 0.01*1 = 0.11, v = 0.11, w = 1 - 0.011 = 0.989;
     * step 2 g = 0.05 + 0.00989 = 0.05989, v = 0.099 + 0.05989 = 0.15889, w = 0.9731111;
     * step 3 g = -0.2 + 0.009731111 = -0.190268889, v = 0.143001 - 0.190268889 = -0.047267889,
     * w = 0.9731111 + 0.05 * 0.047267889 = 0.97547449. */
    static const float want[3][3] = {{9.890000224e-01f, -1.978000045e+00f, 4.695000052e-01f},
                                     {9.731110334e-01f, -1.966222048e+00f, 4.515804946e-01f},
                                     {9.754744172e-01f, -1.959938884e+00f, 4.232909381e-01f}};
    nnc_sgd_config c = {.momentum = 0.9f, .weight_decay = 0.01f, .nesterov = 0, .decay_bn_bias = 1};
    float got[3][3];
    run3(&c, got);
    expect(got, want, "momentum");
    cr_assert_float_eq(got[0][0], 0.989, 1e-7);
    cr_assert_float_eq(got[1][0], 0.9731111, 1e-7);
    cr_assert_float_eq(got[2][0], 0.97547449, 1e-7);
}

Test(optim_sgd, nesterov_matches_hand_and_torch)
{
    /* a: step 1 g = 0.11, v = 0.11, d = g + 0.9 v = 0.209, w = 1 - 0.0209 = 0.9791. */
    static const float want[3][3] = {{9.790999889e-01f, -1.958199978e+00f, 4.420500100e-01f},
                                     {9.588297009e-01f, -1.955659389e+00f, 4.355051219e-01f},
                                     {9.704877734e-01f, -1.949039459e+00f, 3.898451030e-01f}};
    nnc_sgd_config c = {.momentum = 0.9f, .weight_decay = 0.01f, .nesterov = 1, .decay_bn_bias = 1};
    float got[3][3];
    run3(&c, got);
    expect(got, want, "nesterov");
    cr_assert_float_eq(got[0][0], 0.9791, 1e-7);
}

Test(optim_sgd, plain_sgd_without_momentum)
{
    /* a: w1 = 1 - 0.1 * 0.11 = 0.989; w2 = 0.989 - 0.1 * (0.05 + 0.00989) = 0.983011. */
    static const float want[3][3] = {{9.890000224e-01f, -1.978000045e+00f, 4.695000052e-01f},
                                     {9.830110073e-01f, -1.986021996e+00f, 4.790305197e-01f},
                                     {9.925194979e-01f, -1.985028982e+00f, 4.587910175e-01f}};
    nnc_sgd_config c = {.momentum = 0.0f, .weight_decay = 0.01f, .nesterov = 0, .decay_bn_bias = 1};
    float got[3][3];
    run3(&c, got);
    expect(got, want, "plain");
    cr_assert_float_eq(got[1][0], 0.983011, 1e-7);
}

Test(optim_sgd, no_decay_flags_honoured)
{
    /* b and c are flagged NO_DECAY: plain momentum on the raw gradient. b: w1 = -2 + 0.02 = -1.98. */
    static const float want[3][3] = {{9.890000224e-01f, -1.980000019e+00f, 4.699999988e-01f},
                                     {9.731110334e-01f, -1.972000003e+00f, 4.530000091e-01f},
                                     {9.754744172e-01f, -1.968400002e+00f, 4.253500104e-01f}};
    nnc_sgd_config c = {.momentum = 0.9f, .weight_decay = 0.01f, .nesterov = 0, .decay_bn_bias = 0};
    float got[3][3];
    run3(&c, got);
    expect(got, want, "no-decay");
    cr_assert_float_eq(got[0][1], -1.98, 1e-7);
}

Test(optim_sgd, reset_forgets_momentum)
{
    nnc_params *p = make_params();
    nnc_sgd_config c = {.momentum = 0.9f, .weight_decay = 0.0f};
    nnc_sgd *o;
    cr_assert_eq(nnc_sgd_new(p, &c, &o), NNC_OK);
    nnc_params_tensor(p, 0)->grad[0] = 1.0f;
    nnc_sgd_step(o, 0.5f);
    cr_assert_float_eq(nnc_params_ptr(p, 0)[0], -0.5f, 1e-7);
    nnc_sgd_reset(o);
    nnc_sgd_step(o, 0.5f); /* v = g again, not 0.9 + 1 */
    cr_assert_float_eq(nnc_params_ptr(p, 0)[0], -1.0f, 1e-7);
    nnc_sgd_step(o, 0.5f); /* v = 0.9 * 1 + 1 */
    cr_assert_float_eq(nnc_params_ptr(p, 0)[0], -1.95f, 1e-6);
    cr_assert_eq(o->steps, 3);
    nnc_sgd_free(o);
    nnc_params_free(p);
}

Test(optim_sgd, config_validation)
{
    nnc_params *p = make_params();
    nnc_sgd *o = (nnc_sgd *)1;
    nnc_sgd_config c = nnc_sgd_config_default();
    cr_assert_float_eq(c.momentum, 0.9f, 0);
    cr_assert_float_eq(c.weight_decay, 5e-4f, 0);
    c.momentum = -0.1f;
    cr_assert_eq(nnc_sgd_new(p, &c, &o), NNC_EINVAL);
    cr_assert_null(o);
    cr_assert(strstr(nnc_error_message(), "momentum"), "%s", nnc_error_message());
    c = nnc_sgd_config_default();
    c.weight_decay = NAN;
    cr_assert_eq(nnc_sgd_new(p, &c, &o), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "weight decay"), "%s", nnc_error_message());
    c = nnc_sgd_config_default();
    c.momentum = 0;
    c.nesterov = 1;
    cr_assert_eq(nnc_sgd_new(p, &c, &o), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "Nesterov"), "%s", nnc_error_message());
    cr_assert_eq(nnc_sgd_new(p, NULL, &o), NNC_OK, "NULL config means defaults");
    cr_assert_float_eq(o->cfg.momentum, 0.9f, 0);
    nnc_sgd_free(o);
    nnc_sgd_free(NULL);
    nnc_params_free(p);
}

/* Large tables step in chunks over the kernel threads: entries straddling chunk boundaries, a
 * no-decay entry and a buffer in between; 1 and 3 threads give the same bits, equal to the
 * per-element update written out here. */
Test(optim_sgd, chunked_step_equals_scalar_update_any_threads)
{
    float *res[2];
    int sizes[4] = {20000, 777, 5000, 40001};
    unsigned flags[4] = {0, NNC_PARAM_NO_DECAY, NNC_PARAM_BUFFER, 0};
    size_t total = 0;
    for (int threads = 1; threads <= 3; threads += 2) {
        cr_assert_eq(nnc_set_threads(threads), NNC_OK);
        nnc_params *p;
        cr_assert_eq(nnc_params_new(&p), NNC_OK);
        char name[8];
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof name, "t%d", i);
            cr_assert_geq(nnc_params_add(p, name, 1, &sizes[i], flags[i]), 0);
        }
        cr_assert_eq(nnc_params_finalize(p), NNC_OK);
        nnc_rng r;
        nnc_rng_seed(&r, 9, 0);
        for (size_t i = 0; i < p->n_data; i++) {
            p->data[i] = nnc_rng_normal(&r);
            p->grad[i] = nnc_rng_normal(&r);
        }
        float *w0 = malloc(sizeof(float) * p->n_data), *v = calloc(p->n_data, sizeof(float));
        memcpy(w0, p->data, sizeof(float) * p->n_data);
        nnc_sgd_config c = nnc_sgd_config_default();
        c.momentum = 0.9f;
        c.weight_decay = 5e-4f;
        c.nesterov = 1;
        c.decay_bn_bias = 0; /* NO_DECAY entries get no weight decay */
        nnc_sgd *o;
        cr_assert_eq(nnc_sgd_new(p, &c, &o), NNC_OK);
        nnc_sgd_step(o, 0.1f);
        nnc_sgd_step(o, 0.05f);
        for (int i = 0; i < 4; i++) {
            if (flags[i] & NNC_PARAM_BUFFER) continue;
            const nnc_param_entry *e = &p->entries[i];
            float wd = flags[i] & NNC_PARAM_NO_DECAY ? 0.0f : 5e-4f;
            for (size_t j = e->offset; j < e->offset + e->numel; j++) {
                float w = w0[j];
                for (int t = 0; t < 2; t++) {
                    float d = p->grad[j] + wd * w, m = 0.9f * v[j] + d;
                    v[j] = m;
                    w -= (t ? 0.05f : 0.1f) * (d + 0.9f * m);
                }
                cr_assert_eq(p->data[j], w, "%d threads: entry %d element %zu: %g, want %g", threads, i,
                             j - e->offset, p->data[j], w);
            }
        }
        total = p->n_data;
        res[threads / 2] = malloc(sizeof(float) * total);
        memcpy(res[threads / 2], p->data, sizeof(float) * total);
        nnc_sgd_free(o);
        nnc_params_free(p);
        free(w0);
        free(v);
    }
    cr_expect(memcmp(res[0], res[1], sizeof(float) * total) == 0, "1 and 3 threads differ");
    free(res[0]);
    free(res[1]);
    nnc_set_threads(1);
}
