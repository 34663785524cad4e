/* tests/dist/test_replica.c - BN re-estimation (cumulative average of batch statistics, the
 * PyTorch momentum=None protocol) against a direct computation, and the GRAWA probe leaving the
 * replica unchanged, and the probe being a summed loss on un-augmented images. */
#include "dist/replica.h"
#include "tests/dist/dist_fixture.h"

Test(dist_replica, bn_reestimate_is_the_mean_of_batch_statistics)
{
    enum { K = 3, B = 16 };
    nnc_dataset *d = fx_dataset(64, 4);
    nnc_model_config mc = {.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *m, *ref;
    cr_assert_eq(nnc_model_new("tiny", &mc, 9, &m), NNC_OK);
    cr_assert_eq(nnc_model_clone(m, &ref), NNC_OK);
    nnc_params *p = nnc_model_params(m), *pr = nnc_model_params(ref);
    cr_assert_gt(p->n_buf, 0);
    for (size_t j = 0; j < p->n_buf; j++) p->buf[j] = 123.0f;  /* stale statistics to forget */
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    nnc_rng rng;
    nnc_rng_seed(&rng, 77, 1);
    cr_assert_eq(nnc__bn_reestimate(m, g, d, K, B, &rng), NNC_OK);
    /* Reference: each batch's statistic from one momentum-0.1 update of fresh buffers
     * (mean 0, var 1; models.h documents momentum 0.1), averaged over the same K batches. */
    double want[256] = {0};
    cr_assert_leq(pr->n_buf, 256);
    nnc_rng_seed(&rng, 77, 1);
    float x[B * 64];
    int y[B];
    uint32_t idx[B];
    for (int b = 0; b < K; b++) {
        for (int i = 0; i < B; i++) idx[i] = nnc_rng_below(&rng, (uint32_t)d->n);
        nnc_dataset_gather(d, idx, B, x, y);
        for (int e = 0; e < pr->count; e++) {
            if (!(pr->entries[e].flags & NNC_PARAM_BUFFER)) continue;
            float fresh = strstr(pr->entries[e].name, "var") ? 1.0f : 0.0f;
            for (size_t j = 0; j < pr->entries[e].numel; j++) pr->buf[pr->entries[e].offset + j] = fresh;
        }
        nnc_graph_reset(g);
        int shape[4] = {B, 1, 8, 8};
        nnc_model_forward(ref, g, nnc_tensor_wrap(g, x, 4, shape), 1, &rng);
        for (int e = 0; e < pr->count; e++) {
            if (!(pr->entries[e].flags & NNC_PARAM_BUFFER)) continue;
            float fresh = strstr(pr->entries[e].name, "var") ? 1.0f : 0.0f;
            for (size_t j = 0; j < pr->entries[e].numel; j++) {
                size_t o = pr->entries[e].offset + j;
                want[o] += ((double)pr->buf[o] - 0.9 * fresh) / 0.1 / K;
            }
        }
    }
    for (int e = 0; e < p->count; e++) {
        if (!(p->entries[e].flags & NNC_PARAM_BUFFER)) continue;
        for (size_t j = 0; j < p->entries[e].numel; j++) {
            size_t o = p->entries[e].offset + j;
            cr_assert_float_eq(p->buf[o], want[o], 1e-4 * fabs(want[o]) + 1e-5, "%s[%zu]: %g vs %g",
                               p->entries[e].name, j, p->buf[o], want[o]);
        }
    }
    nnc_graph_free(g);
    nnc_model_free(m);
    nnc_model_free(ref);
    fx_dataset_free(d);
}

Test(dist_replica, probe_leaves_replica_unchanged)
{
    nnc_dataset *d = fx_dataset(64, 4);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.model_cfg = (nnc_model_config){.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *init;
    cr_assert_eq(nnc_model_new("tiny", &c.model_cfg, 3, &init), NNC_OK);
    nnc_replica *r;
    cr_assert_eq(nnc__replica_new(init, d, &c, 1, 2, &r), NNC_OK);
    nnc_grawa_layers ly;
    cr_assert_eq(nnc__grawa_layers_new(r->p, &ly), NNC_OK);
    nnc_params *before;
    cr_assert_eq(nnc_params_clone(r->p, &before), NNC_OK);
    double n1[64], n2[64];
    cr_assert_leq(ly.L, 64);
    cr_assert_eq(nnc__replica_probe(r, &ly, n1), NNC_OK);
    cr_assert_eq(memcmp(before->data, r->p->data, r->p->n_data * sizeof(float)), 0);
    cr_assert_eq(memcmp(before->buf, r->p->buf, r->p->n_buf * sizeof(float)), 0, "BN statistics untouched");
    for (int l = 0; l < ly.L; l++) cr_assert(isfinite(n1[l]) && n1[l] > 0.0, "layer %d norm %g", l, n1[l]);
    /* A fresh probe batch gives different norms; the sum loss scales with the batch size. */
    cr_assert_eq(nnc__replica_probe(r, &ly, n2), NNC_OK);
    cr_assert_neq(memcmp(n1, n2, ly.L * sizeof(double)), 0);
    nnc_params_free(before);
    nnc__grawa_layers_free(&ly);
    nnc__replica_free(r);
    nnc_model_free(init);
    fx_dataset_free(d);
}

Test(dist_replica, evaluate_confusion_matrix)
{
    nnc_dataset *d = fx_dataset(50, 5);  /* 50: the last batch of 16 is partial */
    nnc_model_config mc = {.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *m;
    cr_assert_eq(nnc_model_new("tiny", &mc, 2, &m), NNC_OK);
    long conf[16];
    double loss, acc, loss1, acc1;
    cr_assert_eq(nnc_evaluate(m, d, 16, &loss, &acc, conf), NNC_OK);
    long total = 0, diag = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            total += conf[i * 4 + j];
            diag += i == j ? conf[i * 4 + j] : 0;
        }
    cr_assert_eq(total, 50);
    for (int i = 0; i < 4; i++) {
        long row = 0;
        for (int j = 0; j < 4; j++) row += conf[i * 4 + j];
        cr_assert_eq(row, i < 2 ? 13 : 12, "row %d counts the images of true class %d", i, i);
    }
    cr_assert_float_eq(acc, diag / 50.0, 1e-12);
    cr_assert(isfinite(loss) && loss > 0.0);
    /* Batch size does not change the result; bad batch and shape mismatches are refused. */
    cr_assert_eq(nnc_evaluate(m, d, 7, &loss1, &acc1, NULL), NNC_OK);
    cr_assert_eq(acc1, acc);
    cr_assert_float_eq(loss1, loss, 1e-6 * loss);
    cr_assert_eq(nnc_evaluate(m, d, 0, &loss1, &acc1, NULL), NNC_EINVAL);
    d->h = d->w = 4;
    cr_assert_eq(nnc_evaluate(m, d, 16, &loss1, &acc1, NULL), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "expects 1x8x8"), "%s", nnc_error_message());
    d->h = d->w = 8;
    nnc_model_free(m);
    fx_dataset_free(d);
}

/* The probe loss is a SUM over the probe batch (its gradient norm is probe_n times that of the
 * mean loss on the same images) and the probe images are un-augmented even when training
 * augments. */
Test(dist_replica, probe_is_summed_loss_without_augmentation)
{
    nnc_dataset *d = fx_dataset(64, 4);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.augment = 1;
    c.probe_batch = 24;
    c.model_cfg = (nnc_model_config){.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *init;
    cr_assert_eq(nnc_model_new("tiny", &c.model_cfg, 3, &init), NNC_OK);
    nnc_replica *r;
    cr_assert_eq(nnc__replica_new(init, d, &c, 0, 2, &r), NNC_OK);
    cr_assert_eq(r->probe_n, 24);
    nnc_grawa_layers ly;
    cr_assert_eq(nnc__grawa_layers_new(r->p, &ly), NNC_OK);
    double got[64], ref[64];
    cr_assert_leq(ly.L, 64);
    cr_assert_eq(nnc__replica_probe(r, &ly, got), NNC_OK);
    enum { N = 24 };
    float x[N * 64];
    int y[N];
    nnc_dataset_gather(d, r->probe_idx, N, x, y);
    cr_assert_eq(memcmp(x, r->probe_x, sizeof x), 0, "probe images are the un-augmented ones");
    cr_assert_eq(memcmp(y, r->probe_y, sizeof y), 0);
    /* The same images through the loader's augmentation would differ (so the check has teeth). */
    float aug[64];
    int differs = 0;
    for (int i = 0; i < N && !differs; i++) {
        nnc_augment_image(d, d->images + (size_t)r->probe_idx[i] * 64, 4, 1, 3, 1, aug);
        differs = memcmp(aug, x + (size_t)i * 64, sizeof aug) != 0;
    }
    cr_assert(differs);
    /* Reference: mean cross-entropy on the same batch, same parameters, train mode. */
    nnc_model *m;
    cr_assert_eq(nnc_model_clone(r->model, &m), NNC_OK);
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    int shape[4] = {N, 1, 8, 8};
    nnc_rng rng;
    nnc_rng_seed(&rng, 0, 0);
    nnc_tensor *lo = nnc_model_forward(m, g, nnc_tensor_wrap(g, x, 4, shape), 1, &rng);
    nnc_tensor *loss = nnc_softmax_cross_entropy(g, lo, y, NNC_REDUCE_MEAN, 0.0f);
    nnc_params_zero_grad(nnc_model_params(m));
    cr_assert_eq(nnc_backward(g, loss), NNC_OK);
    nnc__grawa_layer_norms(&ly, nnc_model_params(m)->grad, ref);
    for (int l = 0; l < ly.L; l++) {
        cr_assert_gt(ref[l], 0.0);
        cr_assert_float_eq(got[l], N * ref[l], 1e-5 * N * ref[l], "layer %d: probe norm %g vs %d x mean-loss norm %g",
                           l, got[l], N, ref[l]);
    }
    nnc_graph_free(g);
    nnc_model_free(m);
    nnc__grawa_layers_free(&ly);
    nnc__replica_free(r);
    nnc_model_free(init);
    fx_dataset_free(d);
}
