/* tests/dist/test_train.c - nnc_train end to end on a tiny model and in-memory data: the single
 * replica, every algorithm with 4 workers, 1-worker GRAWA == plain SGD, DP step parity
 * (M workers x batch b equal one worker x batch M*b), config errors. */
#include "tests/dist/dist_fixture.h"

Test(dist_train, single_replica_learns, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(128, 2);
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.log_every = 1;
    c.eval_every_epochs = 1;
    fx_trace t;
    fx_hook(&c, &t);
    nnc_train_result r;
    int s = nnc_train(&c, tr, te, &r);
    cr_assert_eq(s, NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(r.steps, 4 * (256 / 16));
    cr_assert_eq(t.steps, r.steps, "log_every 1: one on_step per step");
    cr_assert_lt(t.step_loss[t.steps - 1], t.step_loss[0] * 0.7, "loss falls: %g -> %g", t.step_loss[0],
                 t.step_loss[t.steps - 1]);
    cr_assert_gt(r.test_acc, 0.8, "test accuracy %g", r.test_acc);
    cr_assert(isnan(r.center_test_acc));
    cr_assert_eq(t.evals, 4, "one evaluation per epoch");
    cr_assert_eq(r.workers, 1);
    fx_dataset_free(tr);
    fx_dataset_free(te);
}

static void run_algo(nnc_algo algo, nnc_sync_mode sync)
{
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(128, 2);
    nnc_train_config c = fx_config(algo, 4);
    c.sync = sync;
    c.tau = algo == NNC_ALGO_DP || algo == NNC_ALGO_DP_SAM ? 0 : 2;
    c.epochs = 6;
    fx_trace t;
    fx_hook(&c, &t);
    nnc_train_result r;
    int s = nnc_train(&c, tr, te, &r);
    cr_assert_eq(s, NNC_OK, "%s: %s", nnc_algo_name(algo), nnc_error_message());
    cr_assert_eq(r.workers, 4);
    long per = 6 * (256 / 4 / 16);
    if (sync == NNC_SYNC_LOCKSTEP || algo == NNC_ALGO_DP || algo == NNC_ALGO_DP_SAM)
        for (int i = 0; i < 4; i++) cr_assert_eq(r.local_steps[i], per, "%s worker %d", nnc_algo_name(algo), i);
    long sum = 0;
    for (int i = 0; i < 4; i++) sum += r.local_steps[i];
    cr_assert_eq(sum, 4 * per);
    cr_assert_eq(r.steps, 4 * per);
    cr_assert_gt(r.rounds, 1);
    cr_assert_eq(t.rounds, r.rounds);
    cr_assert_gt(r.bytes_per_round, 0);
    cr_assert_lt(t.last_loss, t.first_loss * 0.8, "%s: loss %g -> %g", nnc_algo_name(algo), t.first_loss,
                 t.last_loss);
    cr_assert_gt(r.center_test_acc, 0.6, "%s center acc %g", nnc_algo_name(algo), r.center_test_acc);
    cr_assert_gt(r.average_test_acc, 0.6, "%s average acc %g", nnc_algo_name(algo), r.average_test_acc);
    cr_assert_eq(r.resets, 0);
    fx_dataset_free(tr);
    fx_dataset_free(te);
}

Test(dist_train, mgrawa_lockstep, .timeout = 60) { run_algo(NNC_ALGO_MGRAWA, NNC_SYNC_LOCKSTEP); }
Test(dist_train, mgrawa_async, .timeout = 60) { run_algo(NNC_ALGO_MGRAWA, NNC_SYNC_ASYNC); }
Test(dist_train, lgrawa, .timeout = 60) { run_algo(NNC_ALGO_LGRAWA, NNC_SYNC_LOCKSTEP); }
Test(dist_train, local_sgd, .timeout = 60) { run_algo(NNC_ALGO_LOCAL_SGD, NNC_SYNC_ASYNC); }
Test(dist_train, easgd, .timeout = 60) { run_algo(NNC_ALGO_EASGD, NNC_SYNC_LOCKSTEP); }
Test(dist_train, lsgd, .timeout = 60) { run_algo(NNC_ALGO_LSGD, NNC_SYNC_ASYNC); }
Test(dist_train, dp, .timeout = 60) { run_algo(NNC_ALGO_DP, NNC_SYNC_LOCKSTEP); }
Test(dist_train, dp_sam, .timeout = 60) { run_algo(NNC_ALGO_DP_SAM, NNC_SYNC_LOCKSTEP); }

Test(dist_train, config_errors)
{
    nnc_dataset *tr = fx_dataset(64, 1);
    nnc_train_result r;
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 2);
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "workers must be 1"), "%s", nnc_error_message());
    c = fx_config(NNC_ALGO_MGRAWA, 100);
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "workers must be in 1..64, found 100"), "%s", nnc_error_message());
    c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.epochs = 0;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINVAL);
    c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.pull = 1.5f;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "pull must be in [0, 1], found 1.5"), "%s", nnc_error_message());
    c = fx_config(NNC_ALGO_MGRAWA, 8);
    c.batch = 16; /* 64 images over 8 workers: 8 each, no full batch */
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "no full batch"), "%s", nnc_error_message());
    nnc_dataset *odd = fx_dataset(16, 2);
    odd->h = odd->w = 4;  /* same bytes, smaller images */
    c = fx_config(NNC_ALGO_MGRAWA, 2);
    cr_assert_eq(nnc_train(&c, tr, odd, &r), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "test set 'synthetic' has images 1x4x4"), "%s", nnc_error_message());
    fx_dataset_free(odd);
    nnc_algo a;
    cr_assert_eq(nnc_algo_parse("dp-sam", &a), NNC_OK);
    cr_assert_eq(a, NNC_ALGO_DP_SAM);
    cr_assert_str_eq(nnc_algo_name(NNC_ALGO_LOCAL_SGD), "local-sgd");
    cr_assert_eq(nnc_algo_parse("grawa2", &a), NNC_EINVAL);
    fx_dataset_free(tr);
}
