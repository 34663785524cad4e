/* tests/dist/test_faults.c - injected faults (nn/fault.h hooks): NaN worker reset (B3), all
 * workers non-finite (B4), single-replica Inf loss (B2), stalled worker deadline (E6), worker
 * error propagation (E7), stop flag with checkpoint (E8). */
#include <time.h>

#include "nn/fault.h"

#include "tests/dist/dist_fixture.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void arm(const char *spec)
{
    setenv("NNC_FAULT", spec, 1);
    nnc__fault_reload();
}

Test(dist_faults, b3_nan_worker_is_reset, .timeout = 60)
{
    arm("worker_nan:2:2");
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(128, 2);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 4);
    c.tau = 2;
    c.epochs = 6;
    char dir[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    fx_trace t;
    fx_hook(&c, &t);
    nnc_train_result r;
    int s = nnc_train(&c, tr, te, &r);
    cr_assert_eq(s, NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(r.resets, 1);
    cr_assert_eq(t.logs, 1);
    cr_assert(strstr(t.log[0], "worker 2 non-finite") && strstr(t.log[0], "reset") &&
                  strstr(t.log[0], "round 2"), "%s", t.log[0]);
    cr_assert_gt(r.center_test_acc, 0.6, "training continues: center acc %g", r.center_test_acc);
    /* Everything saved at the end is finite, the center included. */
    nnc_model *m = fx_load_model(dir, "last.ckpt", "");
    cr_assert(nnc_params_all_finite(nnc_model_params(m)));
    nnc_model_free(m);
    m = fx_load_model(dir, "last.ckpt", "w2/");
    cr_assert(nnc_params_all_finite(nnc_model_params(m)));
    nnc_model_free(m);
    fx_rmdir(dir);
    fx_dataset_free(tr);
    fx_dataset_free(te);
}

Test(dist_faults, b3_weight_zero_in_round_info, .timeout = 60)
{
    arm("worker_nan:1:3");
    nnc_dataset *tr = fx_dataset(256, 1);
    nnc_train_config c = fx_config(NNC_ALGO_LGRAWA, 3);
    c.tau = 2;
    c.epochs = 2;
    fx_trace t;
    fx_hook(&c, &t);
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(r.resets, 1);
    cr_assert(strstr(t.log[0], "worker 1 non-finite"), "%s", t.log[0]);
    fx_dataset_free(tr);
}

Test(dist_faults, b4_all_workers_nonfinite, .timeout = 60)
{
    arm("worker_nan:-1:2");
    nnc_dataset *tr = fx_dataset(256, 1);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 4);
    c.tau = 2;
    char dir[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    nnc_train_result r;
    int s = nnc_train(&c, tr, NULL, &r);
    cr_assert_eq(s, NNC_EDIVERGED);
    cr_assert(strstr(nnc_error_message(), "all 4 workers non-finite at round 2"), "%s", nnc_error_message());
    char path[128];
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    cr_assert_neq(access(path, F_OK), 0, "no checkpoint written from a non-finite state");
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

Test(dist_faults, b2_single_replica_inf_loss, .timeout = 60)
{
    arm("loss_inf:21");   /* epoch 2 (16 steps per epoch) */
    nnc_dataset *tr = fx_dataset(256, 1);
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    char dir[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    nnc_train_result r;
    int s = nnc_train(&c, tr, NULL, &r);
    cr_assert_eq(s, NNC_EDIVERGED);
    cr_assert(strstr(nnc_error_message(), "at step 21"), "%s", nnc_error_message());
    /* The last good checkpoint (end of epoch 1) is there, loads, and is finite. */
    nnc_model *m = fx_load_model(dir, "last.ckpt", "");
    cr_assert(nnc_params_all_finite(nnc_model_params(m)));
    nnc_model_free(m);
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

Test(dist_faults, e6_stalled_worker_times_out, .timeout = 30)
{
    arm("worker_stall:1");
    nnc_dataset *tr = fx_dataset(256, 1);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 4);
    c.tau = 2;
    c.sync = NNC_SYNC_ASYNC;
    c.sync_timeout = 1.0;
    c.epochs = 50;
    nnc_train_result r;
    double t0 = now_s();
    int s = nnc_train(&c, tr, NULL, &r);
    double dt = now_s() - t0;
    cr_assert_eq(s, NNC_ETIMEOUT, "%s", nnc_error_message());
    /* async: the others may run whole rounds before worker 1 gets its first step and stalls. */
    cr_assert(strstr(nnc_error_message(), "worker 1 did not arrive") && strstr(nnc_error_message(), "sync round"),
              "%s", nnc_error_message());
    cr_assert_lt(dt, 1.0 + 2.0, "returned after %.2f s", dt);
    fx_dataset_free(tr);
}

Test(dist_faults, e6_all_workers_stalled_times_out, .timeout = 30)
{
    arm("worker_stall:-1");
    nnc_dataset *tr = fx_dataset(256, 1);
    nnc_train_config c = fx_config(NNC_ALGO_LGRAWA, 2);
    c.sync_timeout = 1.0;
    nnc_train_result r;
    double t0 = now_s();
    int s = nnc_train(&c, tr, NULL, &r);
    double dt = now_s() - t0;
    cr_assert_eq(s, NNC_ETIMEOUT, "%s", nnc_error_message());
    cr_assert(strstr(nnc_error_message(), "sync round 1: no worker made progress") &&
                  strstr(nnc_error_message(), "worker 0"), "%s", nnc_error_message());
    cr_assert_lt(dt, 1.0 + 2.0, "returned after %.2f s", dt);
    fx_dataset_free(tr);
}

Test(dist_faults, e7_worker_error_propagates, .timeout = 30)
{
    arm("worker_error:2");
    nnc_dataset *tr = fx_dataset(256, 1);
    nnc_train_config c = fx_config(NNC_ALGO_EASGD, 4);
    nnc_train_result r;
    double t0 = now_s();
    int s = nnc_train(&c, tr, NULL, &r);
    cr_assert_eq(s, NNC_ETHREAD);
    cr_assert(strstr(nnc_error_message(), "worker 2") && strstr(nnc_error_message(), "injected fault"),
              "%s", nnc_error_message());
    cr_assert_lt(now_s() - t0, 2.0);
    fx_dataset_free(tr);
}

Test(dist_faults, e8_stop_flag_writes_checkpoint, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.tau = 2;
    char dir[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    volatile sig_atomic_t stop = 0;
    c.stop = &stop;
    fx_trace t;
    fx_hook(&c, &t);
    t.stop = &stop;
    t.stop_at_round = 3;
    nnc_train_result r;
    int s = nnc_train(&c, tr, NULL, &r);
    cr_assert_eq(s, NNC_EINTERRUPTED, "%s", nnc_error_message());
    cr_assert_eq(r.stopped_by_signal, 2);
    cr_assert(strstr(nnc_error_message(), "checkpoint written"), "%s", nnc_error_message());
    nnc_model *m = fx_load_model(dir, "last.ckpt", "w1/");
    nnc_model_free(m);
    fx_rmdir(dir);
    fx_dataset_free(tr);
}
