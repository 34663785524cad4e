/* tests/dist/test_determinism.c - bitwise reproducibility: two seeded lockstep runs with random
 * sleeps injected into the workers give the same bits, the fixed-order center is bit-identical
 * over 20 jittered repeats, 1 worker GRAWA == plain SGD, two concurrent training contexts in one
 * process equal each run alone (no hidden global state), data-parallel parity (M workers x
 * batch b equal one worker x batch M*b, BN-free model) and the DP step against its definition
 * (BN model), and exact resume (interrupted and resumed equals uninterrupted, bitwise) for the
 * single replica, for lockstep M = 2, and after a stop request. */
#include <pthread.h>
#include <sys/stat.h>

#include "nn/fault.h"
#include "tests/dist/dist_fixture.h"

static void arm(const char *spec)
{
    setenv("NNC_FAULT", spec, 1);
    nnc__fault_reload();
}

/* Run c with checkpoints in a fresh folder; returns the folder (caller frees with fx_rmdir). */
static void run_ok(nnc_train_config *c, const nnc_dataset *tr, nnc_train_result *r)
{
    int s = nnc_train(c, tr, NULL, r);
    cr_assert_eq(s, NNC_OK, "%s", nnc_error_message());
}

static void assert_same_ckpt(const char *a, const char *b, const char *prefix)
{
    nnc_model *ma = fx_load_model(a, "last.ckpt", prefix), *mb = fx_load_model(b, "last.ckpt", prefix);
    cr_assert(fx_same_params(ma, mb), "parameters under '%s' differ between %s and %s", prefix, a, b);
    nnc_model_free(ma);
    nnc_model_free(mb);
}

Test(dist_determinism, lockstep_bitwise_under_jitter, .timeout = 120)
{
    arm("worker_sleep_jitter:2");
    nnc_dataset *tr = fx_dataset(256, 1);
    char d1[64], d2[64];
    fx_trace t1, t2;
    nnc_train_result r1, r2;
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 3);
    c.tau = 2;
    c.epochs = 2;
    c.ckpt_dir = fx_tmpdir(d1, sizeof d1);
    fx_hook(&c, &t1);
    run_ok(&c, tr, &r1);
    c.ckpt_dir = fx_tmpdir(d2, sizeof d2);
    fx_hook(&c, &t2);
    run_ok(&c, tr, &r2);
    cr_assert_gt(t1.rounds, 3);
    cr_assert_eq(t1.rounds, t2.rounds);
    cr_assert_eq(t1.hash, t2.hash, "round traces (norms, weights, distances, losses) differ");
    assert_same_ckpt(d1, d2, "");
    assert_same_ckpt(d1, d2, "w0/");
    assert_same_ckpt(d1, d2, "w2/");
    fx_rmdir(d1);
    fx_rmdir(d2);
    fx_dataset_free(tr);
}

Test(dist_determinism, center_bits_20_repeats, .timeout = 120)
{
    arm("worker_sleep_jitter:1");
    nnc_dataset *tr = fx_dataset(128, 1);
    char first[64], dir[64];
    nnc_train_config c = fx_config(NNC_ALGO_LGRAWA, 4);
    c.tau = 2;
    c.epochs = 1;  /* 2 local steps per worker: exactly one round */
    c.bn_reestimate_batches = 0;
    nnc_train_result r;
    c.ckpt_dir = fx_tmpdir(first, sizeof first);
    run_ok(&c, tr, &r);
    cr_assert_eq(r.rounds, 1);
    for (int k = 1; k < 20; k++) {
        c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
        run_ok(&c, tr, &r);
        assert_same_ckpt(first, dir, "");
        fx_rmdir(dir);
    }
    fx_rmdir(first);
    fx_dataset_free(tr);
}

Test(dist_determinism, one_worker_grawa_equals_plain_sgd, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char d1[64], d2[64];
    nnc_train_result r1, r2;
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.ckpt_dir = fx_tmpdir(d1, sizeof d1);
    run_ok(&c, tr, &r1);
    c = fx_config(NNC_ALGO_MGRAWA, 1);
    c.tau = 4;
    c.prox = 0.0f;  /* with one worker the center is the worker: only proximity could differ */
    c.ckpt_dir = fx_tmpdir(d2, sizeof d2);
    run_ok(&c, tr, &r2);
    cr_assert_eq(r2.rounds, r1.steps / 4);
    nnc_model *a = fx_load_model(d1, "last.ckpt", ""), *b = fx_load_model(d2, "last.ckpt", "w0/");
    cr_assert(fx_same_params(a, b), "1-worker GRAWA differs from plain SGD");
    nnc_model_free(a);
    nnc_model_free(b);
    fx_rmdir(d1);
    fx_rmdir(d2);
    fx_dataset_free(tr);
}

typedef struct ctx_job {
    const nnc_dataset *tr;
    uint64_t seed;
    fx_trace t;
    nnc_train_result r;
    int status;
} ctx_job;

static void *ctx_run(void *arg)
{
    ctx_job *j = arg;
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.tau = 2;
    c.epochs = 2;
    c.seed = j->seed;
    fx_hook(&c, &j->t);
    j->status = nnc_train(&c, j->tr, NULL, &j->r);
    return NULL;
}

Test(dist_determinism, two_contexts_in_one_process, .timeout = 120)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    ctx_job alone[2] = {{.tr = tr, .seed = 5}, {.tr = tr, .seed = 6}};
    ctx_job both[2] = {{.tr = tr, .seed = 5}, {.tr = tr, .seed = 6}};
    for (int k = 0; k < 2; k++) ctx_run(&alone[k]);
    pthread_t th[2];
    for (int k = 0; k < 2; k++) cr_assert_eq(pthread_create(&th[k], NULL, ctx_run, &both[k]), 0);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(alone[k].status, NNC_OK);
        cr_assert_eq(both[k].status, NNC_OK);
        cr_assert_eq(alone[k].t.hash, both[k].t.hash, "context %d differs when run beside another", k);
        cr_assert_eq(alone[k].r.rounds, both[k].r.rounds);
    }
    cr_assert_neq(alone[0].t.hash, alone[1].t.hash, "different seeds give different runs");
    fx_dataset_free(tr);
}

/* Data-parallel parity, literally: M workers x batch b with DP equal one worker x batch M*b
 * after one step. The BN-free tiny-nobn makes every sample's gradient independent of the rest of
 * its batch, and a training set of exactly M*b images makes each shard one batch: the workers'
 * first batches are a partition of the set, and the single worker's first batch is the whole set
 * (in another order, which changes only the summation order). */
static void dp_parity(int M)
{
    enum { B = 8 };
    nnc_dataset *tr = fx_dataset(M * B, 7);
    char dd[64], ds[64];
    nnc_train_config c = fx_config(NNC_ALGO_DP, M);
    c.model = "tiny-nobn";
    c.epochs = 1;
    c.batch = B;
    c.sgd.momentum = 0.9f;
    c.sgd.weight_decay = 5e-4f;
    c.bn_reestimate_batches = 0;
    c.ckpt_dir = fx_tmpdir(dd, sizeof dd);
    nnc_train_result r;
    run_ok(&c, tr, &r);
    cr_assert_eq(r.rounds, 1);
    cr_assert_eq(r.steps, M, "one step per worker");
    nnc_train_config c1 = c;
    c1.workers = 1;
    c1.algo = NNC_ALGO_SGD;
    c1.batch = M * B;
    c1.ckpt_dir = fx_tmpdir(ds, sizeof ds);
    run_ok(&c1, tr, &r);
    cr_assert_eq(r.steps, 1);
    nnc_model_config mc = {.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *init;
    cr_assert_eq(nnc_model_new("tiny-nobn", &mc, c.seed, &init), NNC_OK);
    nnc_params *pi = nnc_model_params(init);
    cr_assert_eq(pi->n_buf, 0, "no BN buffers");
    nnc_model *one = fx_load_model_of("tiny-nobn", ds, "last.ckpt", "");
    nnc_params *po = nnc_model_params(one);
    cr_assert_neq(memcmp(po->data, pi->data, pi->n_data * sizeof(float)), 0, "a step was taken");
    for (int i = 0; i < M; i++) {
        char prefix[8];
        snprintf(prefix, sizeof prefix, "w%d/", i);
        nnc_model *got = fx_load_model_of("tiny-nobn", dd, "last.ckpt", prefix);
        nnc_params *pg = nnc_model_params(got);
        for (size_t j = 0; j < po->n_data; j++) {
            double d = fabs((double)pg->data[j] - po->data[j]);
            /* relative to the entry, and to its change when the entry itself is ~0 */
            double scale = fmax(fabs(po->data[j]), fabs((double)po->data[j] - pi->data[j]));
            cr_assert_leq(d, 1e-6 * scale + 1e-12, "M %d worker %d entry %zu: %.9g vs %.9g", M, i, j,
                          pg->data[j], po->data[j]);
        }
        nnc_model_free(got);
    }
    nnc_model_free(one);
    nnc_model_free(init);
    fx_rmdir(dd);
    fx_rmdir(ds);
    fx_dataset_free(tr);
}

Test(dist_determinism, dp_equals_one_worker_big_batch_m2, .timeout = 60) { dp_parity(2); }
Test(dist_determinism, dp_equals_one_worker_big_batch_m4, .timeout = 60) { dp_parity(4); }

Test(dist_determinism, dp_step_parity, .timeout = 60)
{
    /* tiny has BatchNorm, whose batch statistics make "M workers x batch b" differ from "one
     * worker x batch M*b" by design (as DDP without SyncBN). The DP step is checked against
     * its definition instead: each worker's gradient on its own shard batch, averaged, one
     * identical SGD step (momentum 0.9, no Nesterov) on every replica. */
    enum { M = 2, B = 16 };
    nnc_dataset *tr = fx_dataset(M * B, 3);
    char dir[64];
    nnc_train_config c = fx_config(NNC_ALGO_DP, M);
    c.epochs = 1;  /* one batch per shard: exactly one step */
    c.sgd.momentum = 0.9f;
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    nnc_train_result r;
    run_ok(&c, tr, &r);
    cr_assert_eq(r.rounds, 1);
    nnc_model_config mc = {.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *init, *rep[M];
    cr_assert_eq(nnc_model_new("tiny", &mc, c.seed, &init), NNC_OK);
    nnc_params *pi = nnc_model_params(init);
    float *avg = nnc__calloc(pi->n_data, sizeof(float));
    double *acc = nnc__calloc(pi->n_data, sizeof(double));
    for (int i = 0; i < M; i++) {
        cr_assert_eq(nnc_model_clone(init, &rep[i]), NNC_OK);
        nnc_loader_config lc = nnc_loader_config_default();
        lc.batch = B, lc.shuffle = 1, lc.augment = 0, lc.drop_last = 1;
        lc.shard = i, lc.num_shards = M, lc.seed = c.seed, lc.prefetch = 0;
        nnc_loader *l;
        cr_assert_eq(nnc_loader_new(tr, &lc, &l), NNC_OK);
        float x[B * 64];
        int y[B];
        cr_assert_eq(nnc_loader_next(l, x, y), B);
        nnc_graph *g;
        cr_assert_eq(nnc_graph_new(0, &g), NNC_OK);
        int shape[4] = {B, 1, 8, 8};
        nnc_rng rng;
        nnc_rng_seed(&rng, 0, 0);
        nnc_tensor *lo = nnc_model_forward(rep[i], g, nnc_tensor_wrap(g, x, 4, shape), 1, &rng);
        nnc_tensor *loss = nnc_softmax_cross_entropy(g, lo, y, NNC_REDUCE_MEAN, 0.0f);
        nnc_params *p = nnc_model_params(rep[i]);
        nnc_params_zero_grad(p);
        cr_assert_eq(nnc_backward(g, loss), NNC_OK);
        for (size_t j = 0; j < p->n_data; j++) acc[j] += p->grad[j];
        nnc_graph_free(g);
        nnc_loader_free(l);
    }
    for (size_t j = 0; j < pi->n_data; j++) avg[j] = (float)(acc[j] / M);
    nnc_params *p0 = nnc_model_params(rep[0]);
    memcpy(p0->grad, avg, p0->n_data * sizeof(float));
    nnc_sgd *o;
    cr_assert_eq(nnc_sgd_new(p0, &c.sgd, &o), NNC_OK);
    nnc_sgd_step(o, c.lr);
    for (int i = 0; i < M; i++) {
        char prefix[8];
        snprintf(prefix, sizeof prefix, "w%d/", i);
        nnc_model *got = fx_load_model(dir, "last.ckpt", prefix);
        nnc_params *pg = nnc_model_params(got);
        for (size_t j = 0; j < p0->n_data; j++)
            cr_assert_float_eq(pg->data[j], p0->data[j], 1e-6 * fabsf(p0->data[j]) + 1e-12,
                               "worker %d entry %zu", i, j);
        cr_assert_neq(memcmp(pg->data, pi->data, pi->n_data * sizeof(float)), 0, "a step was taken");
        nnc_model_free(got);
    }
    nnc_sgd_free(o);
    for (int i = 0; i < M; i++) nnc_model_free(rep[i]);
    nnc_model_free(init);
    nnc__free(avg);
    nnc__free(acc);
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

Test(dist_determinism, single_replica_resume_bitwise, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char da[64], db[64];
    fx_trace ta, tb1, tb2;
    nnc_train_result r;
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.log_every = 1;
    c.augment = 1;
    c.epochs = 4;
    c.ckpt_dir = fx_tmpdir(da, sizeof da);
    fx_hook(&c, &ta);
    run_ok(&c, tr, &r);
    c.epochs = 2;
    c.ckpt_dir = fx_tmpdir(db, sizeof db);
    fx_hook(&c, &tb1);
    run_ok(&c, tr, &r);
    c.epochs = 4;
    c.resume = 1;
    fx_hook(&c, &tb2);
    run_ok(&c, tr, &r);
    cr_assert_eq(ta.steps, 64);
    cr_assert_eq(tb1.steps + tb2.steps, 64);
    cr_assert_eq(memcmp(ta.step_loss, tb1.step_loss, 32 * sizeof(double)), 0);
    cr_assert_eq(memcmp(ta.step_loss + 32, tb2.step_loss, 32 * sizeof(double)), 0, "loss trace after resume");
    assert_same_ckpt(da, db, "");
    fx_rmdir(da);
    fx_rmdir(db);
    fx_dataset_free(tr);
}

/* Lockstep M = 2: a straight run vs a run cut in two (by epochs, or by a stop request). */
static void lockstep_resume(int by_stop, nnc_algo algo)
{
    arm("worker_sleep_jitter:1");
    nnc_dataset *tr = fx_dataset(256, 1);
    char da[64], db[64];
    fx_trace ta, tb;
    nnc_train_result r;
    nnc_train_config c = fx_config(algo, 2);
    c.tau = algo == NNC_ALGO_DP ? 0 : 2;
    c.augment = 1;
    c.epochs = 4;
    c.ckpt_dir = fx_tmpdir(da, sizeof da);
    fx_hook(&c, &ta);
    run_ok(&c, tr, &r);
    c.ckpt_dir = fx_tmpdir(db, sizeof db);
    fx_hook(&c, &tb);
    volatile sig_atomic_t stop = 0;
    if (by_stop) {
        c.stop = &stop;
        tb.stop = &stop;
        tb.stop_at_round = 5;
        cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINTERRUPTED, "%s", nnc_error_message());
        stop = 0;
        tb.stop = NULL;
    } else {
        c.epochs = 2;
        run_ok(&c, tr, &r);
        c.epochs = 4;
    }
    c.resume = 1;
    c.ud = &tb;  /* continue the same trace */
    run_ok(&c, tr, &r);
    cr_assert_eq(ta.rounds, tb.rounds);
    cr_assert_eq(ta.hash, tb.hash, "round trace differs after resume");
    assert_same_ckpt(da, db, "");
    assert_same_ckpt(da, db, "w0/");
    assert_same_ckpt(da, db, "w1/");
    fx_rmdir(da);
    fx_rmdir(db);
    fx_dataset_free(tr);
}

Test(dist_determinism, lockstep_resume_bitwise, .timeout = 120) { lockstep_resume(0, NNC_ALGO_MGRAWA); }
Test(dist_determinism, stop_then_resume_bitwise, .timeout = 120) { lockstep_resume(1, NNC_ALGO_MGRAWA); }
Test(dist_determinism, dp_stop_then_resume_bitwise, .timeout = 120) { lockstep_resume(1, NNC_ALGO_DP); }
Test(dist_determinism, lsgd_resume_bitwise, .timeout = 120) { lockstep_resume(0, NNC_ALGO_LSGD); }

Test(dist_determinism, best_ckpt_and_resume_already_done, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(64, 2);
    char dir[64], path[128];
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.tau = 2;
    c.epochs = 2;
    c.eval_every_epochs = 1;
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    c.ckpt_meta_json = "{\"dataset\":\"synthetic\"}";
    fx_trace t;
    fx_hook(&c, &t);
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, te, &r), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(t.evals, 4, "center + average after epoch 1 and at the end");
    /* best.ckpt records its metric. */
    snprintf(path, sizeof path, "%s/best.ckpt", dir);
    nnc_ckpt *ck;
    cr_assert_eq(nnc_ckpt_load(path, &ck), NNC_OK, "%s", nnc_error_message());
    const void *m;
    size_t n;
    cr_assert_eq(nnc_ckpt_get_bytes(ck, "metric", &m, &n), NNC_OK);
    cr_assert(n > 9 && memcmp(m, "test_acc=", 9) == 0);
    cr_assert_eq(nnc_ckpt_get_bytes(ck, "meta/json", &m, &n), NNC_OK);
    cr_assert(n == 23 && memcmp(m, "{\"dataset\":\"synthetic\"}", n) == 0);
    nnc_ckpt_free(ck);
    /* Resuming with a target already reached trains nothing and leaves last.ckpt alone. */
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    struct stat st0, st1;
    cr_assert_eq(stat(path, &st0), 0);
    c.resume = 1;
    c.epochs = 1;
    fx_hook(&c, &t);
    cr_assert_eq(nnc_train(&c, tr, te, &r), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(t.rounds, 0);
    cr_assert(t.logs == 1 && strstr(t.log[0], "already at epoch 2.00 >= target 1"), "%s", t.log[0]);
    cr_assert_eq(stat(path, &st1), 0);
    cr_assert(st0.st_mtim.tv_sec == st1.st_mtim.tv_sec && st0.st_mtim.tv_nsec == st1.st_mtim.tv_nsec);
    /* Resuming with a different worker count is refused with an explanation. */
    c.workers = 3;
    c.epochs = 3;
    cr_assert_eq(nnc_train(&c, tr, te, &r), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "2 worker(s)") && strstr(nnc_error_message(), "this run has 3"), "%s",
              nnc_error_message());
    fx_rmdir(dir);
    fx_dataset_free(tr);
    fx_dataset_free(te);
}
