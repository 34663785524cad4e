/* tests/tools/test_cli_eval.c - `nnc eval` runs the inference forward (batch norms folded into
 * the convolutions, models/infer.c): on a checkpoint trained here on generated CIFAR-format files
 * it must report what the training run recorded for the same weights and test images, and what
 * the unfolded eval-mode forward (nnc_model_forward, BN applied as scale and shift) gives in this
 * process.
 *
 * Tolerances: the accuracy is compared exactly (printed to 0.01%, 100 images: one changed
 * prediction moves it by 1%); the mean loss within 2e-4, twice the 1e-4 rounding of the
 * 4 decimals printed (the folded and unfolded forwards differ by float rounding only, about 1e-6
 * of the logits). The training run's summary.json keeps 6+ digits, so its loss is compared within
 * 2e-4 as well and its accuracy within 1e-6.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "models/models.h"
#include "nn/nnc.h"
#include "tests/common/cli_run.h"
#include "tools/ckpt_model.h"

static double summary_num(const char *run, const char *key)
{
    char *p = tcli_path(run, "summary.json"), *t = tcli_slurp(p);
    free(p);
    cr_assert(t, "summary.json in %s", run);
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    char *at = strstr(t, pat);
    cr_assert(at, "summary.json has %s: %s", key, t);
    double v = strtod(at + strlen(pat), NULL);
    free(t);
    return v;
}

/* The unfolded eval-mode forward over the first `limit` test images: mean loss and accuracy. */
static void unfolded_eval(const char *ckpt, const char *data, int limit, double *loss, double *acc)
{
    nnc_ckpt *ck;
    nnc_model *m;
    cr_assert_eq(cli_model_from_ckpt(ckpt, NULL, &ck, &m), 0, "%s", nnc_error_message());
    nnc_dataset *d;
    cr_assert_eq(nnc_dataset_load("cifar10", data, 0, limit, &d), NNC_OK, "%s", nnc_error_message());
    nnc_graph *g;
    cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
    const int batch = 32;
    float *x = malloc(sizeof(float) * (size_t)batch * d->c * d->h * d->w);
    int y[32], pred[32];
    uint32_t idx[32];
    double lsum = 0;
    long right = 0;
    for (int at = 0; at < d->n; at += batch) {
        int n = d->n - at < batch ? d->n - at : batch;
        for (int i = 0; i < n; i++) idx[i] = (uint32_t)(at + i);
        nnc_dataset_gather(d, idx, n, x, y);
        nnc_graph_reset(g);
        nnc_graph_set_grad(g, 0);
        int shape[4] = {n, d->c, d->h, d->w};
        nnc_tensor *logits = nnc_model_forward(m, g, nnc_tensor_wrap(g, x, 4, shape), 0, NULL);
        lsum += nnc_softmax_cross_entropy(g, logits, y, NNC_REDUCE_SUM, 0.0f)->data[0];
        nnc_argmax_rows(logits, pred);
        for (int i = 0; i < n; i++) right += pred[i] == y[i];
    }
    *loss = lsum / d->n;
    *acc = (double)right / d->n;
    free(x);
    nnc_graph_free(g);
    nnc_dataset_free(d);
    nnc_model_free(m);
    nnc_ckpt_free(ck);
}

Test(tools_cli_eval, eval_of_a_trained_checkpoint_matches_training_and_the_unfolded_forward, .timeout = 300)
{
    char *data = tcli_tmpdir(), *work = tcli_tmpdir();
    cr_assert(data && work);
    cr_assert_eq(tcli_write_cifar10(data, 256), 0);
    char *run = tcli_path(work, "run");
    /* resnet8: conv + BN folds on the direct and channel-vectorised kernel sets, residual epilogues */
    tcli_result r = tcli_run(240, "train", "cifar10", "--data", data, "--no-download", "--model", "resnet8", "--batch",
                             "64", "--limit-train", "256", "--limit-test", "100", "--lr", "0.05", "--threads", "1",
                             "--epochs", "2", "--seed", "4", "--run-dir", run, NULL);
    cr_assert_eq(r.code, 0, "train exit %d\n%s\n%s", r.code, r.out, r.err);
    tcli_free(&r);
    const double tr_acc = summary_num(run, "test_acc"), tr_loss = summary_num(run, "test_loss");
    char *ck = tcli_path(run, "last.ckpt");
    r = tcli_run(120, "eval", "cifar10", "--ckpt", ck, "--data", data, "--limit", "100", "--batch", "48", NULL);
    cr_assert_eq(r.code, 0, "eval exit %d\n%s", r.code, r.err);
    const char *line = strstr(r.out, "top-1 accuracy ");
    cr_assert(line, "%s", r.out);
    double ev_acc = -1, ev_loss = -1;
    cr_assert_eq(sscanf(line, "top-1 accuracy %lf%%  mean loss %lf", &ev_acc, &ev_loss), 2, "%s", line);
    tcli_free(&r);
    double un_loss, un_acc;
    unfolded_eval(ck, data, 100, &un_loss, &un_acc);
    cr_log_info("eval %.2f%% %.4f, training %.4f%% %.6f, unfolded %.2f%% %.6f", ev_acc, ev_loss, 100 * tr_acc, tr_loss,
                100 * un_acc, un_loss);
    cr_expect(fabs(ev_acc - 100 * tr_acc) < 1e-6 + 0.005, "eval accuracy %.2f%%, recorded in training %.4f%%", ev_acc,
              100 * tr_acc);
    cr_expect(fabs(ev_loss - tr_loss) <= 2e-4, "eval loss %.4f, recorded in training %.6f", ev_loss, tr_loss);
    cr_expect(fabs(ev_acc - 100 * un_acc) < 0.005, "eval accuracy %.2f%%, unfolded forward %.2f%%", ev_acc, 100 * un_acc);
    cr_expect(fabs(ev_loss - un_loss) <= 2e-4, "eval loss %.4f, unfolded forward %.6f", ev_loss, un_loss);
    /* a trained model, not a constant predictor: the loss moved off ln(10) */
    cr_expect(fabs(un_loss - log(10.0)) > 1e-3, "loss %.6f: the model did not train", un_loss);
    free(ck);
    free(run);
    tcli_rmrf(data);
    tcli_rmrf(work);
    free(data);
    free(work);
}
