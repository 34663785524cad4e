/* tests/dist/test_budget.c - how a run's training time ends and what counts in it: every
 * algorithm's time-budget run ends within tolerance of the budget (with slow workers, whose
 * rounds are long), evaluation time (a slow evaluation injected) is excluded from the training
 * clock and from every timestamp, the training-time evaluation grid (eval_seconds), the global
 * step carried by each round, and the modelled interconnect (the charged cost, the data-parallel
 * throughput it predicts, and bitwise-unchanged lockstep results). */
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#include "nn/fault.h"
#include "tests/dist/dist_fixture.h"

static void arm(const char *spec)
{
    if (spec) setenv("NNC_FAULT", spec, 1);
    else unsetenv("NNC_FAULT");
    nnc__fault_reload();
}

static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* What the callbacks saw: eval timestamps, round steps and modelled costs. */
typedef struct rec {
    int evals, rounds;
    double eval_s[256];
    long round_step[256];
    double round_s[256], comm[256];
} rec;

static void rec_eval(const nnc_eval_info *e, void *ud)
{
    rec *r = ud;
    if (r->evals < 256) r->eval_s[r->evals] = e->seconds;
    r->evals++;
}

static void rec_round(const nnc_round_info *ri, void *ud)
{
    rec *r = ud;
    if (r->rounds < 256) {
        r->round_step[r->rounds] = ri->step;
        r->round_s[r->rounds] = ri->seconds;
        r->comm[r->rounds] = ri->comm_seconds;
    }
    r->rounds++;
}

static void hook(nnc_train_config *c, rec *r)
{
    memset(r, 0, sizeof *r);
    c->on_eval = rec_eval;
    c->on_round = rec_round;
    c->ud = r;
}

#define BUDGET 2.0
#define TOL 0.5

/* A time-budget run of `algo` with slow workers (up to 20 ms per step) and long rounds (tau
 * 64: ~0.6 s, so stopping at the first round boundary past the budget would overshoot by up to
 * that): its training seconds end within TOL of the budget. */
static void budget_run(nnc_algo algo, int M)
{
    arm("worker_sleep_jitter:20");
    nnc_dataset *tr = fx_dataset(512, 1);
    nnc_train_config c = fx_config(algo, M);
    c.epochs = 0;
    c.time_budget = BUDGET;
    c.sync = NNC_SYNC_ASYNC;
    c.tau = 64;
    rec r;
    hook(&c, &r);
    nnc_train_result res;
    int s = nnc_train(&c, tr, NULL, &res);
    arm(NULL);
    cr_assert_eq(s, NNC_OK, "%s", nnc_error_message());
    cr_assert(fabs(res.seconds - BUDGET) <= TOL && fabs(res.seconds - BUDGET) <= 0.25, "%s: trained %.3f s for a %.1f s budget", nnc_algo_name(algo),
              res.seconds, BUDGET);
    cr_assert_gt(res.steps, 0);
    fx_dataset_free(tr);
}

Test(dist_budget, ends_at_budget_sgd, .timeout = 60) { budget_run(NNC_ALGO_SGD, 1); }
Test(dist_budget, ends_at_budget_mgrawa, .timeout = 60) { budget_run(NNC_ALGO_MGRAWA, 2); }
Test(dist_budget, ends_at_budget_lgrawa, .timeout = 60) { budget_run(NNC_ALGO_LGRAWA, 2); }
Test(dist_budget, ends_at_budget_local_sgd, .timeout = 60) { budget_run(NNC_ALGO_LOCAL_SGD, 2); }
Test(dist_budget, ends_at_budget_easgd, .timeout = 60) { budget_run(NNC_ALGO_EASGD, 2); }
Test(dist_budget, ends_at_budget_lsgd, .timeout = 60) { budget_run(NNC_ALGO_LSGD, 2); }
Test(dist_budget, ends_at_budget_dp, .timeout = 60) { budget_run(NNC_ALGO_DP, 2); }
Test(dist_budget, ends_at_budget_dp_sam, .timeout = 60) { budget_run(NNC_ALGO_DP_SAM, 2); }
Test(dist_budget, ends_at_budget_slowmo, .timeout = 60) { budget_run(NNC_ALGO_SLOWMO, 2); }

/* Lockstep with long rounds: the deadline cuts the last round short. */
Test(dist_budget, lockstep_ends_at_budget, .timeout = 60)
{
    arm("worker_sleep_jitter:20");
    nnc_dataset *tr = fx_dataset(512, 1);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.epochs = 0;
    c.time_budget = BUDGET;
    c.tau = 64;   /* ~0.64 s a round: a round-boundary stop would overshoot by up to that */
    nnc_train_result res;
    int s = nnc_train(&c, tr, NULL, &res);
    arm(NULL);
    cr_assert_eq(s, NNC_OK, "%s", nnc_error_message());
    cr_assert(fabs(res.seconds - BUDGET) <= 0.25, "trained %.3f s for a %.1f s budget", res.seconds, BUDGET);
    fx_dataset_free(tr);
}

/* A slow evaluation (300 ms each, on a 0.5 s training-time grid) is not training time: the
 * run still trains BUDGET seconds, every evaluation's timestamp is training time (the last
 * one is the run's end), and the wall clock shows the evaluations were really there. */
static void eval_excluded(nnc_algo algo, int M)
{
    arm("eval_sleep:300");
    nnc_dataset *tr = fx_dataset(512, 1), *te = fx_dataset(64, 2);
    nnc_train_config c = fx_config(algo, M);
    c.epochs = 0;
    c.time_budget = BUDGET;
    c.eval_seconds = 0.5;
    c.bn_reestimate_batches = 1;
    rec r;
    hook(&c, &r);
    nnc_train_result res;
    double w0 = wall();
    int s = nnc_train(&c, tr, te, &res);
    double w = wall() - w0;
    arm(NULL);
    cr_assert_eq(s, NNC_OK, "%s", nnc_error_message());
    int per = M > 1 ? 2 : 1;   /* center and average */
    int n = r.evals / per;
    cr_assert_geq(n, 4, "%d evaluations on a 0.5 s grid over %.1f s", n, BUDGET);
    cr_assert(fabs(res.seconds - BUDGET) <= TOL, "trained %.3f s (evaluations included?)", res.seconds);
    cr_assert_geq(w, BUDGET + 0.3 * n - 0.1, "wall %.2f s, %d evaluations", w, n);
    for (int k = 0; k < r.evals && k < 256; k++) {
        cr_assert_leq(r.eval_s[k], res.seconds + 1e-9, "evaluation %d at %.3f s after the end %.3f s", k, r.eval_s[k],
                      res.seconds);
        if (k >= per)
            cr_assert_geq(r.eval_s[k] - r.eval_s[k - per], 0.0, "timestamps go back");
    }
    /* grid: evaluation j (before the last) at or just past j * 0.5 s of training */
    for (int j = 0; j + 1 < n; j++)
        cr_assert(r.eval_s[j * per] >= 0.5 * (j + 1) - 1e-9 && r.eval_s[j * per] < 0.5 * (j + 1) + 0.3,
                  "grid evaluation %d at %.3f s", j, r.eval_s[j * per]);
    cr_assert_eq(r.eval_s[r.evals - 1], res.seconds, "the final evaluation is stamped with the training time");
    fx_dataset_free(tr);
    fx_dataset_free(te);
}

Test(dist_budget, eval_time_excluded_single, .timeout = 60) { eval_excluded(NNC_ALGO_SGD, 1); }
Test(dist_budget, eval_time_excluded_mgrawa, .timeout = 60) { eval_excluded(NNC_ALGO_MGRAWA, 2); }

/* Each round reports the global step at it: lockstep tau*M per round, DP M per round. */
Test(dist_budget, round_step_values, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.tau = 4;
    c.epochs = 2;
    rec r;
    hook(&c, &r);
    nnc_train_result res;
    cr_assert_eq(nnc_train(&c, tr, NULL, &res), NNC_OK, "%s", nnc_error_message());
    cr_assert_gt(r.rounds, 3);
    for (int k = 0; k < r.rounds && k < 256; k++)
        cr_assert_eq(r.round_step[k], (long)(k + 1) * 4 * 2, "round %d step %ld", k + 1, r.round_step[k]);
    c = fx_config(NNC_ALGO_DP, 2);
    c.epochs = 1;
    hook(&c, &r);
    cr_assert_eq(nnc_train(&c, tr, NULL, &res), NNC_OK, "%s", nnc_error_message());
    for (int k = 0; k < r.rounds && k < 256; k++)
        cr_assert_eq(r.round_step[k], (long)(k + 1) * 2, "DP round %d step %ld", k + 1, r.round_step[k]);
    cr_assert_eq(r.round_step[r.rounds - 1], res.steps);
    fx_dataset_free(tr);
}

/* The modelled link: each round charges the ring all-reduce of the parameters plus GRAWA's
 * norm all-gather, the run waits it (training time), and the lockstep bits do not change. */
Test(dist_budget, link_cost_charged_and_bits_unchanged, .timeout = 120)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char d1[64], d2[64];
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.tau = 4;
    c.epochs = 2;
    c.ckpt_dir = fx_tmpdir(d1, sizeof d1);
    rec r;
    hook(&c, &r);
    nnc_train_result a, b;
    cr_assert_eq(nnc_train(&c, tr, NULL, &a), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(a.comm_model_seconds, 0.0);
    c.ckpt_dir = fx_tmpdir(d2, sizeof d2);
    cr_assert_eq(nnc_link_parse("50ms,10MB", &c.link), NNC_OK);
    hook(&c, &r);
    cr_assert_eq(nnc_train(&c, tr, NULL, &b), NNC_OK, "%s", nnc_error_message());
    nnc_model *m = fx_load_model(d2, "last.ckpt", "");
    double bytes = (double)nnc_model_params(m)->n_data * sizeof(float);
    nnc_model_free(m);
    double per = nnc_link_allreduce_seconds(&c.link, bytes, 2) + 2.0 * 1 * 0.050;
    cr_assert_eq(b.rounds, a.rounds);
    cr_assert_float_eq(b.comm_model_seconds, b.rounds * per, 1e-9, "charged %.6f s, expected %ld x %.6f s",
                       b.comm_model_seconds, b.rounds, per);
    for (int k = 0; k < r.rounds && k < 256; k++) cr_assert_float_eq(r.comm[k], per, 1e-12);
    cr_assert_geq(b.seconds, b.rounds * per, "the wait is training time: %.3f s < %.3f s", b.seconds, b.rounds * per);
    cr_assert_gt(b.seconds, a.seconds);
    /* Resumed for one more epoch: the modelled seconds cover the whole run, not the resume. */
    char d3[64];
    fx_tmpdir(d3, sizeof d3);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "cp -r %s/. %s/", d2, d3);
    cr_assert_eq(system(cmd), 0);
    nnc_train_config c3 = c;
    c3.ckpt_dir = d3;
    c3.resume = 1;
    c3.epochs = 3;
    nnc_train_result e;
    hook(&c3, &r);
    cr_assert_eq(nnc_train(&c3, tr, NULL, &e), NNC_OK, "%s", nnc_error_message());
    cr_assert_gt(e.rounds, b.rounds);
    cr_assert_float_eq(e.comm_model_seconds, e.rounds * per, 1e-9, "resumed: charged %.6f s, expected %ld x %.6f s",
                       e.comm_model_seconds, e.rounds, per);
    fx_rmdir(d3);
    const char *pre[] = {"", "w0/", "w1/"};
    for (int k = 0; k < 3; k++) {
        nnc_model *ma = fx_load_model(d1, "last.ckpt", pre[k]), *mb = fx_load_model(d2, "last.ckpt", pre[k]);
        cr_assert(fx_same_params(ma, mb), "'%s' differs with the link", pre[k]);
        nnc_model_free(ma);
        nnc_model_free(mb);
    }
    fx_rmdir(d1);
    fx_rmdir(d2);
    fx_dataset_free(tr);
}

/* Data-parallel throughput with the link: every step pays the modelled all-reduce, so the
 * images per second fall to t / (t + cost - sync) of the unmodelled run (t: seconds per step). */
Test(dist_budget, dp_throughput_falls_as_predicted, .timeout = 120)
{
    nnc_dataset *tr = fx_dataset(1024, 1);
    nnc_train_config c = fx_config(NNC_ALGO_DP, 2);
    c.epochs = 1;
    nnc_train_result a, b;
    cr_assert_eq(nnc_train(&c, tr, NULL, &a), NNC_OK, "%s", nnc_error_message());
    double t = a.seconds / (double)a.rounds, sync = a.sync_seconds / (double)a.rounds;
    /* a link whose all-reduce costs about 2 steps */
    double cost = 2.0 * t > 0.002 ? 2.0 * t : 0.002;
    c.link.latency_s = cost / 2.0;
    c.link.bytes_per_s = 1e15;
    cr_assert_eq(nnc_train(&c, tr, NULL, &b), NNC_OK, "%s", nnc_error_message());
    double charged = b.comm_model_seconds / (double)b.rounds;
    double predicted = t / (t - sync + (charged > sync ? charged : sync));
    double ratio = b.images_per_sec / a.images_per_sec;
    cr_assert(fabs(ratio - predicted) <= 0.35 * predicted, "img/s ratio %.3f, predicted %.3f (step %.4f s, cost %.4f s)",
              ratio, predicted, t, charged);
    fx_dataset_free(tr);
}

/* When a resume has nothing left to train, by the rules the run stops by: a budget run that
 * ended just short of its budget is finished for it; asynchronous averaging counts the steps of
 * all workers, lockstep and data-parallel runs each worker's. */
Test(dist_budget, finished_rule_of_a_checkpoint)
{
    nnc_ckpt_progress p = {.steps = 60, .min_steps = 12, .steps_per_epoch = 10, .seconds = 119.7, .workers = 4,
                           .algo = NNC_ALGO_MGRAWA, .sync = NNC_SYNC_ASYNC, .budget_done = 120.0};
    cr_assert(nnc_train_ckpt_finished(&p, 0, 120.0), "ended at its 120 s budget 0.3 s early");
    cr_assert(nnc_train_ckpt_finished(&p, 0, 100.0));
    cr_assert_not(nnc_train_ckpt_finished(&p, 0, 150.0), "a larger budget continues");
    p.budget_done = 0;
    cr_assert_not(nnc_train_ckpt_finished(&p, 0, 120.0), "stopped by a signal at 119.7 s: continues");
    cr_assert(nnc_train_ckpt_finished(&p, 0, 119.0));
    /* async: 60 steps of all 4 workers = 1.5 epochs of 10 steps each, whatever the slowest did */
    cr_assert(nnc_train_ckpt_finished(&p, 1, 0.0));
    cr_assert_not(nnc_train_ckpt_finished(&p, 2, 0.0));
    p.sync = NNC_SYNC_LOCKSTEP;
    cr_assert(nnc_train_ckpt_finished(&p, 1, 0.0));
    p.min_steps = 9;
    cr_assert_not(nnc_train_ckpt_finished(&p, 1, 0.0), "lockstep: every worker its own epoch");
    p.algo = NNC_ALGO_DP;
    p.sync = NNC_SYNC_ASYNC;
    cr_assert_not(nnc_train_ckpt_finished(&p, 1, 0.0), "data-parallel: every worker");
}

/* A finished budget run resumed with the same budget trains nothing: its checkpoint and counts
 * stay as they were, even when it ended a little before the budget. */
Test(dist_budget, resumed_finished_budget_run_trains_nothing, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(512, 1);
    char d[64];
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.epochs = 0;
    c.time_budget = 1.0;
    c.ckpt_dir = fx_tmpdir(d, sizeof d);
    nnc_train_result a, b;
    cr_assert_eq(nnc_train(&c, tr, NULL, &a), NNC_OK, "%s", nnc_error_message());
    char path[128];
    snprintf(path, sizeof path, "%s/last.ckpt", d);
    nnc_ckpt_progress p;
    cr_assert_eq(nnc_train_ckpt_progress(path, &p), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(p.budget_done, 1.0, "the run records the budget it ended at");
    struct stat st0, st1;
    cr_assert_eq(stat(path, &st0), 0);
    c.resume = 1;
    cr_assert_eq(nnc_train(&c, tr, NULL, &b), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(stat(path, &st1), 0);
    cr_assert_eq(b.rounds, a.rounds, "resumed: %ld rounds, first run %ld", b.rounds, a.rounds);
    cr_assert(st1.st_mtim.tv_sec == st0.st_mtim.tv_sec && st1.st_mtim.tv_nsec == st0.st_mtim.tv_nsec,
              "last.ckpt rewritten");
    fx_rmdir(d);
    fx_dataset_free(tr);
}
