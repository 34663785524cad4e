/* tests/dist/test_faults.c - injected faults (nn/fault.h hooks): a worker with a NaN gradient
 * gets weight 0 and is reset to the center, all workers non-finite stops the run, single-replica
 * Inf loss or NaN gradient with nan_policy stop and with skip, a stalled worker hits the sync
 * deadline, a worker's error propagates with every thread joined, and the stop flag writes a
 * checkpoint. */
#include <sys/stat.h>
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
typedef struct nan_worker_seen {
    fx_trace t;   /* first member: fx_on_step/fx_on_eval get &nan_worker_seen as their fx_trace */
    nnc_round_info r2;
    int got_r2;
    int center_checked, center_finite;   /* written by worker 0 only */
} nan_worker_seen;

static void nan_worker_on_round(const nnc_round_info *r, void *ud)
{
    nan_worker_seen *b = ud;
    fx_on_round(r, &b->t);
    if (r->round == 2) b->r2 = *r, b->got_r2 = 1;
}

static void nan_worker_on_log(const char *line, void *ud) { fx_on_log(line, &((nan_worker_seen *)ud)->t); }

static void nan_worker_observer(const nnc_run *R, nnc__obs_event ev, int w, double loss, void *ud)
{
    (void)loss;
    nan_worker_seen *b = ud;
    if (ev == NNC__OBS_APPLIED && R->round == 2 && w == 0) {
        b->center_checked = 1;
        b->center_finite = nnc__grawa_finite(R->center, R->ly.n) && nnc__grawa_finite(R->pub, R->ly.n);
    }
}

Test(dist_faults, nan_worker_is_reset, .timeout = 60)
{
    arm("worker_nan:2:2");
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(128, 2);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 4);
    c.tau = 2;
    c.epochs = 6;
    char dir[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    static nan_worker_seen b;
    fx_trace *tp = &b.t;
    fx_hook(&c, tp);
    c.on_round = nan_worker_on_round;
    c.on_log = nan_worker_on_log;
    c.ud = &b;
    nnc__dist_observe(nan_worker_observer, &b);
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

Test(dist_faults, weight_zero_in_round_info, .timeout = 60)
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

Test(dist_faults, all_workers_nonfinite, .timeout = 60)
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

Test(dist_faults, single_replica_inf_loss, .timeout = 60)
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

/* Callbacks of the single-replica nan_policy stop/skip runs: stat last.ckpt after step `mark`,
 * stop after step `stop_step` (on_step, log_every 1) or at the first skip (on_log). */
typedef struct policy_run {
    fx_trace t;   /* first member: fx_on_* get &policy_run as their fx_trace */
    const char *dir;
    long mark, stop_step;
    int stop_at_skip;
    struct stat at_mark;
    volatile sig_atomic_t stop;
} policy_run;

static void policy_on_step(const nnc_step_info *s, void *ud)
{
    policy_run *b = ud;
    fx_on_step(s, &b->t);
    char path[300];
    snprintf(path, sizeof path, "%s/last.ckpt", b->dir);
    if (s->step == b->mark) cr_assert_eq(stat(path, &b->at_mark), 0);
    if (s->step == b->stop_step) b->stop = 2;
}

static void policy_on_log(const char *line, void *ud)
{
    policy_run *b = ud;
    fx_on_log(line, &b->t);
    if (b->stop_at_skip && strstr(line, "skipped")) b->stop = 2;
}

static nnc_train_config policy_config(policy_run *b, char *dir, size_t n)
{
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.ckpt_dir = fx_tmpdir(dir, n);
    c.log_every = 1;
    fx_hook(&c, &b->t);
    memset(b, 0, sizeof *b);
    b->dir = dir;
    c.on_step = policy_on_step;
    c.on_log = policy_on_log;
    c.stop = &b->stop;
    c.ud = b;
    return c;
}

Test(dist_faults, stop_keeps_last_good_checkpoint, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    const char *faults[2] = {"loss_inf:21", "grad_nan:21"};
    const char *what[2] = {"non-finite loss at step 21", "non-finite gradient at step 21"};
    for (int f = 0; f < 2; f++) {
        arm(faults[f]);
        policy_run b;
        char dir[64], path[128];
        nnc_train_config c = policy_config(&b, dir, sizeof dir);
        b.mark = 20;
        nnc_train_result r;
        cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EDIVERGED);
        cr_assert(strstr(nnc_error_message(), what[f]), "%s", nnc_error_message());
        cr_assert_eq(r.steps, 20, "stopped within the faulty step");
        /* last.ckpt is the one of epoch 1 (step 16), untouched since step 20, and finite. */
        struct stat now;
        snprintf(path, sizeof path, "%s/last.ckpt", dir);
        cr_assert_eq(stat(path, &now), 0);
        cr_assert(now.st_ino == b.at_mark.st_ino && now.st_mtim.tv_sec == b.at_mark.st_mtim.tv_sec &&
                  now.st_mtim.tv_nsec == b.at_mark.st_mtim.tv_nsec && now.st_size == b.at_mark.st_size);
        nnc_model *m = fx_load_model(dir, "last.ckpt", "");
        cr_assert(nnc_params_all_finite(nnc_model_params(m)));
        nnc_model_free(m);
        fx_rmdir(dir);
    }
    arm("");
    fx_dataset_free(tr);
}

/* Params, BN buffers (prefix "") and momentum ("opt/") of dir/last.ckpt. */
static float *policy_state(const char *dir, nnc_model **m)
{
    *m = fx_load_model(dir, "last.ckpt", "");
    nnc_params *p = nnc_model_params(*m);
    char path[128];
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_load(path, &c), NNC_OK);
    float *mom = calloc(p->n_data, sizeof(float));
    cr_assert_eq(nnc_ckpt_get_params_like(c, "opt/", p, mom), NNC_OK, "%s", nnc_error_message());
    nnc_ckpt_free(c);
    return mom;
}

Test(dist_faults, skip_leaves_state_bitwise_unchanged, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    nnc_train_result r;
    policy_run b;
    char before[64], skipped[64], control[64];
    /* The state after step 20. */
    arm("");
    nnc_train_config c = policy_config(&b, before, sizeof before);
    b.stop_step = 20;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINTERRUPTED, "%s", nnc_error_message());
    cr_assert_eq(r.steps, 20);
    /* The state after step 21 whose gradient is NaN, skipped (stop right after the skip). */
    arm("grad_nan:21");
    c = policy_config(&b, skipped, sizeof skipped);
    c.nan_policy = NNC_NAN_SKIP;
    b.stop_at_skip = 1;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINTERRUPTED, "%s", nnc_error_message());
    cr_assert_eq(r.skipped_steps, 1);
    cr_assert_eq(r.steps, 21, "the skipped step is consumed");
    cr_assert_eq(b.t.logs, 1);
    cr_assert(strstr(b.t.log[0], "step 21: non-finite gradient") && strstr(b.t.log[0], "step skipped"), "%s",
              b.t.log[0]);
    /* The state after a normal step 21 (shows that step 21 does change the state). */
    arm("");
    c = policy_config(&b, control, sizeof control);
    b.stop_step = 21;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINTERRUPTED, "%s", nnc_error_message());
    nnc_model *m0, *m1, *m2;
    float *v0 = policy_state(before, &m0), *v1 = policy_state(skipped, &m1),
          *v2 = policy_state(control, &m2);
    size_t n = nnc_model_params(m0)->n_data;
    cr_assert(fx_same_params(m0, m1), "parameters and BN buffers bitwise equal to before the skipped step");
    cr_assert_eq(memcmp(v0, v1, n * sizeof(float)), 0, "momentum bitwise equal");
    cr_assert(!fx_same_params(m0, m2) && memcmp(v0, v2, n * sizeof(float)) != 0);
    nnc_model_free(m0), nnc_model_free(m1), nnc_model_free(m2);
    free(v0), free(v1), free(v2);
    fx_rmdir(before), fx_rmdir(skipped), fx_rmdir(control);
    fx_dataset_free(tr);
}

Test(dist_faults, skip_trains_on_and_counts, .timeout = 60)
{
    arm("loss_inf:21,grad_nan:30");
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(64, 2);
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.nan_policy = NNC_NAN_SKIP;
    char dir[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    fx_trace t;
    fx_hook(&c, &t);
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, te, &r), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(r.skipped_steps, 2);
    cr_assert_eq(r.steps, 64, "4 epochs of 16 steps, skipped ones included");
    cr_assert_eq(t.logs, 2);
    cr_assert(strstr(t.log[0], "step 21: non-finite loss (loss inf)"), "%s", t.log[0]);
    cr_assert(strstr(t.log[1], "step 30: non-finite gradient") && strstr(t.log[1], "2 skipped so far"), "%s",
              t.log[1]);
    cr_assert(isfinite(r.train_loss) && r.test_acc > 0.5, "still learns: loss %g acc %g", r.train_loss, r.test_acc);
    nnc_model *m = fx_load_model(dir, "last.ckpt", "");
    cr_assert(nnc_params_all_finite(nnc_model_params(m)));
    nnc_model_free(m);
    /* With workers a non-finite worker is reset instead: skip is refused. */
    c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.nan_policy = NNC_NAN_SKIP;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "skip needs one replica") && strstr(nnc_error_message(), "2 worker(s)"),
              "%s", nnc_error_message());
    arm("");
    fx_rmdir(dir);
    fx_dataset_free(tr);
    fx_dataset_free(te);
}

Test(dist_faults, stalled_worker_times_out, .timeout = 30)
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

Test(dist_faults, all_workers_stalled_times_out, .timeout = 30)
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

Test(dist_faults, worker_error_propagates, .timeout = 30)
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

Test(dist_faults, stop_flag_writes_checkpoint, .timeout = 60)
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
