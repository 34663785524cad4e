/* tests/dist/test_faults.c - injected faults (nn/fault.h hooks): NaN worker reset (B3), all
 * workers non-finite (B4), single-replica Inf loss (B2), stalled worker deadline (E6), worker
 * error propagation (E7), stop flag with checkpoint (E8). */
#include <time.h>

#include "dist/run.h"
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

/* Round 2 as the callbacks and the worker observer (dist/run.h) saw it. */
typedef struct b3_seen {
    fx_trace t;   /* first member: fx_on_step/fx_on_eval get &b3_seen as their fx_trace */
    nnc_round_info r2;
    int got_r2;
    int center_checked, center_finite;   /* written by worker 0 only */
} b3_seen;

static void b3_on_round(const nnc_round_info *r, void *ud)
{
    b3_seen *b = ud;
    fx_on_round(r, &b->t);
    if (r->round == 2) b->r2 = *r, b->got_r2 = 1;
}

static void b3_on_log(const char *line, void *ud) { fx_on_log(line, &((b3_seen *)ud)->t); }

static void b3_observer(const nnc_run *R, nnc__obs_event ev, int w, double loss, void *ud)
{
    (void)loss;
    b3_seen *b = ud;
    if (ev == NNC__OBS_APPLIED && R->round == 2 && w == 0) {
        b->center_checked = 1;
        b->center_finite = nnc__grawa_finite(R->center, R->ly.n) && nnc__grawa_finite(R->pub, R->ly.n);
    }
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
    static b3_seen b;
    fx_trace *tp = &b.t;
    fx_hook(&c, tp);
    c.on_round = b3_on_round;
    c.on_log = b3_on_log;
    c.ud = &b;
    nnc__dist_observe(b3_observer, &b);
    nnc_train_result r;
    int s = nnc_train(&c, tr, te, &r);
    nnc__dist_observe(NULL, NULL);
    cr_assert_eq(s, NNC_OK, "%s", nnc_error_message());
    fx_trace t = b.t;
    cr_assert_eq(r.resets, 1);
    cr_assert_eq(t.logs, 1);
    cr_assert(strstr(t.log[0], "worker 2 non-finite") && strstr(t.log[0], "reset") &&
                  strstr(t.log[0], "round 2"), "%s", t.log[0]);
    /* Round 2: the bad worker has weight 0, the others' weights are a convex combination, the
     * center the synchronizer published is finite. */
    cr_assert(b.got_r2);
    cr_assert_eq(b.r2.workers, 4);
    cr_assert_eq(b.r2.weight[2], 0.0, "NaN worker weight %g", b.r2.weight[2]);
    double wsum = 0.0;
    for (int i = 0; i < 4; i++) {
        if (i != 2) cr_assert_gt(b.r2.weight[i], 0.0, "worker %d weight", i);
        wsum += b.r2.weight[i];
    }
    cr_assert_float_eq(wsum, 1.0, 1e-12, "weights of the finite workers sum to %.17g", wsum);
    cr_assert(b.center_checked && b.center_finite, "center after round 2 is finite");
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
