/* tests/dist/test_trust.c - what a run folder's checkpoints can be trusted with: best.ckpt and
 * the final last.ckpt hold exactly the model whose accuracy they record (multi-worker runs
 * included), values decoded from a checkpoint never reach an index or an assert unchecked,
 * non-finite tensors are refused, the config is validated up front, an arena that cannot grow
 * is NNC_ENOMEM, and a stop during an evaluation ends the run promptly with a resumable
 * checkpoint. */
#include <signal.h>
#include <sys/wait.h>

#include "dist/run.h"

#include "tests/dist/dist_fixture.h"

/* ------------------------------------------------------------------ helpers */

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len);
    cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

static uint32_t rd32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Overwrite n bytes at offset `at` of the data of section `name` in the checkpoint file at
 * path, and recompute that section's CRC (nn/checkpoint.h layout), so only the value is wrong. */
static void patch_section(const char *path, const char *name, size_t at, const void *bytes, size_t n)
{
    size_t len;
    unsigned char *b = slurp(path, &len);
    size_t off = 8 + 4;
    uint32_t nsec = rd32(b + off);
    off += 4;
    uint32_t alen = rd32(b + off);
    off += 4 + alen + 4;
    int done = 0;
    for (uint32_t i = 0; i < nsec && !done; i++) {
        size_t start = off;
        uint32_t nl = rd32(b + off);
        const char *nm = (const char *)b + off + 4;
        off += 4 + nl + 4;
        uint32_t ndim = rd32(b + off);
        off += 4 + 4 * ndim;
        uint64_t nb = 0;
        for (int k = 0; k < 8; k++) nb |= (uint64_t)b[off + k] << (8 * k);
        off += 8;
        size_t crc_at = off;
        off += 4;
        if (nl == strlen(name) && !memcmp(nm, name, nl)) {
            cr_assert(at + n <= nb, "patch inside section %s", name);
            memcpy(b + off + at, bytes, n);
            uint32_t crc = nnc_crc32(nnc_crc32(0, b + start, crc_at - start), b + off, (size_t)nb);
            wr32(b + crc_at, crc);
            done = 1;
        }
        off += (size_t)nb;
    }
    cr_assert(done, "section %s found in %s", name, path);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, len, f), len);
    fclose(f);
    free(b);
}

/* The recorded metric "test_acc=<x>" of a checkpoint. */
static double metric_of(const char *dir, const char *name)
{
    char path[600], text[64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    nnc_ckpt *ck;
    cr_assert_eq(nnc_ckpt_load(path, &ck), NNC_OK, "%s", nnc_error_message());
    const void *m;
    size_t n;
    cr_assert_eq(nnc_ckpt_get_bytes(ck, "metric", &m, &n), NNC_OK);
    cr_assert(n < sizeof text);
    memcpy(text, m, n);
    text[n] = 0;
    nnc_ckpt_free(ck);
    cr_assert(!strncmp(text, "test_acc=", 9), "%s", text);
    return atof(text + 9);
}

/* Evaluations as the run reported them. */
typedef struct evals {
    int n;
    double acc[16], loss[16];
    char which[16][16];
    int best[16];
    volatile sig_atomic_t *stop;
    long stop_at_step;  /* set *stop at this step's on_step (0: never) */
    long stop_at_round; /* set *stop at this round's on_round (0: never) */
} evals;

static void on_eval(const nnc_eval_info *e, void *ud)
{
    evals *v = ud;
    if (v->n < 16) {
        v->acc[v->n] = e->acc;
        v->loss[v->n] = e->loss;
        v->best[v->n] = e->is_best;
        snprintf(v->which[v->n], sizeof v->which[0], "%s", e->which);
    }
    v->n++;
}

static void on_step(const nnc_step_info *s, void *ud)
{
    evals *v = ud;
    if (v->stop && v->stop_at_step && s->step == v->stop_at_step) *v->stop = SIGTERM;
}

static void on_round(const nnc_round_info *r, void *ud)
{
    evals *v = ud;
    if (v->stop && v->stop_at_round && r->round == v->stop_at_round) *v->stop = SIGTERM;
}

/* A multi-worker run with evaluations every epoch; then best.ckpt evaluated on the same test set
 * with the same batch gives exactly the recorded metric and the best evaluation's loss, and the
 * final last.ckpt exactly the run's result. */
static void check_reproduces(nnc_algo algo, const char *reported)
{
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(64, 2);
    nnc_train_config c = fx_config(algo, 2);
    char dir[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    c.epochs = 3;
    c.tau = 4;
    c.eval_every_epochs = 1;
    c.bn_reestimate_batches = 3;
    evals v;
    memset(&v, 0, sizeof v);
    c.on_eval = on_eval;
    c.ud = &v;
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, te, &r), NNC_OK, "%s", nnc_error_message());
    /* The best of the reported evaluations. */
    double best_acc = -1, best_loss = NAN;
    for (int i = 0; i < v.n && i < 16; i++)
        if (!strcmp(v.which[i], reported) && v.acc[i] > best_acc) best_acc = v.acc[i], best_loss = v.loss[i];
    cr_assert(best_acc >= 0, "%s evaluations reported", reported);
    cr_assert_float_eq(metric_of(dir, "best.ckpt"), best_acc, 5e-7);
    double loss, acc;
    nnc_model *m = fx_load_model(dir, "best.ckpt", "");
    cr_assert_eq(nnc_evaluate(m, te, c.batch, &loss, &acc, NULL), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(acc, best_acc, "best.ckpt evaluates to %.6f, recorded %.6f", acc, best_acc);
    cr_assert_eq(loss, best_loss, "best.ckpt loss %.9g, the evaluation that recorded it %.9g", loss, best_loss);
    nnc_model_free(m);
    m = fx_load_model(dir, "last.ckpt", "");
    cr_assert_eq(nnc_evaluate(m, te, c.batch, &loss, &acc, NULL), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(acc, r.test_acc, "last.ckpt evaluates to %.6f, the run reported %.6f", acc, r.test_acc);
    cr_assert_eq(loss, r.test_loss, "last.ckpt loss %.9g, the run reported %.9g", loss, r.test_loss);
    nnc_model_free(m);
    fx_rmdir(dir);
    fx_dataset_free(tr);
    fx_dataset_free(te);
}

Test(dist_trust, best_ckpt_is_the_evaluated_center_mgrawa, .timeout = 60)
{
    check_reproduces(NNC_ALGO_MGRAWA, "center");
}

Test(dist_trust, best_ckpt_is_the_evaluated_average_lsgd, .timeout = 60)
{
    check_reproduces(NNC_ALGO_LSGD, "average");
}

/* A run of `algo` with 2 workers (1 epoch) leaving dir/last.ckpt; returns its config for a
 * resume to 2 epochs. */
static nnc_train_config short_run(nnc_algo algo, char *dir, size_t n, const nnc_dataset *tr)
{
    nnc_train_config c = fx_config(algo, algo == NNC_ALGO_SGD ? 1 : 2);
    c.ckpt_dir = fx_tmpdir(dir, n);
    c.epochs = 1;
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_OK, "%s", nnc_error_message());
    c.epochs = 2;
    c.resume = 1;
    return c;
}

/* Resuming from dir/last.ckpt fails with NNC_EFORMAT naming every word of `want`. */
static void expect_resume_refused(nnc_train_config *c, const nnc_dataset *tr, const char *const *want)
{
    nnc_train_result r;
    int s = nnc_train(c, tr, NULL, &r);
    cr_assert_eq(s, NNC_EFORMAT, "status %d: %s", s, nnc_error_message());
    for (; *want; want++)
        cr_assert(strstr(nnc_error_message(), *want), "'%s' in: %s", *want, nnc_error_message());
}

/* Bytes of one worker record of the tiny model's runs (dist/record.c). */
static size_t rec_bytes(void)
{
    nnc_model_config mc = {.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *m;
    cr_assert_eq(nnc_model_new("tiny", &mc, 1, &m), NNC_OK);
    size_t b = nnc__worker_bytes(nnc_params_num_trained(nnc_model_params(m)));
    nnc_model_free(m);
    return b;
}

/* Byte offset of a field in the encoded worker record. */
static size_t wfield(const char *name)
{
    long o = nnc__worker_field_offset(name);
    cr_assert_geq(o, 0, "no record field '%s'", name);
    return (size_t)o;
}

static void patch_worker(const char *dir, int worker, size_t field_off, const void *v, size_t n)
{
    char path[600];
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    patch_section(path, "run/workers", (size_t)worker * rec_bytes() + field_off, v, n);
}

Test(dist_trust, resume_refuses_lsgd_history_index_out_of_range, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char dir[64];
    nnc_train_config c = short_run(NNC_ALGO_LSGD, dir, sizeof dir, tr);
    int bad = 1000000;
    patch_worker(dir, 1, wfield("hist.next"), &bad, sizeof bad);
    const char *want[] = {"last.ckpt", "run/workers", "worker 1", "hist.next", "0..3", "1000000", NULL};
    expect_resume_refused(&c, tr, want);
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

Test(dist_trust, resume_refuses_lsgd_history_count_out_of_range, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char dir[64];
    nnc_train_config c = short_run(NNC_ALGO_LSGD, dir, sizeof dir, tr);
    int bad = -7;
    patch_worker(dir, 0, wfield("hist.count"), &bad, sizeof bad);
    const char *want[] = {"run/workers", "worker 0", "hist.count", "-7", NULL};
    expect_resume_refused(&c, tr, want);
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

Test(dist_trust, resume_refuses_loader_position_out_of_range, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char dir[64];
    nnc_train_config c = short_run(NNC_ALGO_SGD, dir, sizeof dir, tr);
    int64_t bad = 99; /* 16 batches per epoch */
    patch_worker(dir, 0, wfield("loader_batch"), &bad, sizeof bad);
    const char *want[] = {"run/workers", "loader_batch", "0..16", "99", NULL};
    expect_resume_refused(&c, tr, want);
    bad = -1;
    patch_worker(dir, 0, wfield("loader_batch"), &bad, sizeof bad);
    patch_worker(dir, 0, wfield("loader_epoch"), &bad, sizeof bad);
    const char *want2[] = {"loader_epoch", "-1", NULL};
    expect_resume_refused(&c, tr, want2);
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

Test(dist_trust, resume_refuses_bad_counters_and_rng, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char dir[64], path[600];
    nnc_train_config c = short_run(NNC_ALGO_MGRAWA, dir, sizeof dir, tr);
    /* A worker's round position beyond anything a round allows. */
    int64_t bad = 1000;
    patch_worker(dir, 1, wfield("wround"), &bad, sizeof bad);
    const char *want[] = {"worker 1", "wround", "1000", NULL};
    expect_resume_refused(&c, tr, want);
    bad = 0;
    patch_worker(dir, 1, wfield("wround"), &bad, sizeof bad);
    /* A zero xoshiro state would make every draw zero. */
    nnc_rng zero;
    memset(&zero, 0, sizeof zero);
    patch_worker(dir, 0, wfield("rng"), &zero, sizeof zero);
    const char *want2[] = {"worker 0", "'rng'", "non-zero", NULL};
    expect_resume_refused(&c, tr, want2);
    /* The run counters. */
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    nnc_train_config c2 = short_run(NNC_ALGO_MGRAWA, dir, sizeof dir, tr);
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    bad = -5;
    patch_section(path, "run/meta", (size_t)nnc__meta_field_offset("total_steps"), &bad, sizeof bad);
    const char *want3[] = {"run/meta", "total_steps", "-5", NULL};
    expect_resume_refused(&c2, tr, want3);
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

Test(dist_trust, resume_refuses_non_finite_tensors, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char dir[64], path[600];
    float nan = NAN, inf = INFINITY;
    /* One replica: a parameter; two workers: a worker's BN statistics and the center. */
    nnc_train_config c = short_run(NNC_ALGO_SGD, dir, sizeof dir, tr);
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    nnc_model *m = fx_load_model(dir, "last.ckpt", "");
    const char *first = nnc_model_params(m)->entries[0].name;
    char sec[128];
    snprintf(sec, sizeof sec, "param/%s", first);
    patch_section(path, sec, 3 * sizeof(float), &nan, sizeof nan);
    const char *want[] = {"last.ckpt", sec, "element 3", "nan", NULL};
    expect_resume_refused(&c, tr, want);
    fx_rmdir(dir);
    nnc_train_config c2 = short_run(NNC_ALGO_MGRAWA, dir, sizeof dir, tr);
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    patch_section(path, "run/center", 5 * sizeof(float), &inf, sizeof inf);
    const char *want2[] = {"run/center", "element 5", "inf", NULL};
    expect_resume_refused(&c2, tr, want2);
    nnc_params *p = nnc_model_params(m);
    const char *bufname = NULL;
    for (int i = 0; i < p->count && !bufname; i++)
        if (p->entries[i].flags & NNC_PARAM_BUFFER) bufname = p->entries[i].name;
    cr_assert_not_null(bufname, "the tiny model has BN statistics");
    fx_rmdir(dir);
    nnc_train_config c3 = short_run(NNC_ALGO_MGRAWA, dir, sizeof dir, tr);
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    snprintf(sec, sizeof sec, "w1/buf/%s", bufname);
    patch_section(path, sec, 0, &nan, sizeof nan);
    const char *want3[] = {sec, "element 0", NULL};
    expect_resume_refused(&c3, tr, want3);
    nnc_model_free(m);
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

/* ------------------------------------------------------------------ config validation */

static void expect_einval(nnc_train_config *c, const char *field, const char *value)
{
    nnc_dataset *tr = fx_dataset(64, 1);
    nnc_train_result r;
    int s = nnc_train(c, tr, NULL, &r);
    cr_assert_eq(s, NNC_EINVAL, "%s %s: status %d: %s", field, value, s, nnc_error_message());
    cr_assert(strstr(nnc_error_message(), field) && strstr(nnc_error_message(), value), "'%s' and '%s' in: %s",
              field, value, nnc_error_message());
    fx_dataset_free(tr);
}

Test(dist_trust, config_rejects_negative_gamma, .timeout = 30)
{
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.sched.kind = NNC_SCHED_STEP;
    c.sched.step_epochs = 1;
    c.sched.gamma = -5.0f;
    expect_einval(&c, "gamma", "-5");
}

Test(dist_trust, config_rejects_bad_schedule_fields, .timeout = 30)
{
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.sched.kind = NNC_SCHED_MULTISTEP; /* no milestones */
    expect_einval(&c, "milestones", "0");
    c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.sched.warmup_steps = -3;
    expect_einval(&c, "warm-up", "-3");
    c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.sched.kind = NNC_SCHED_COSINE;
    c.sched.min_lr = 1.0f; /* above lr 0.05 */
    expect_einval(&c, "min lr", "1");
}

Test(dist_trust, config_rejects_huge_bn_batches, .timeout = 30)
{
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.epochs = 1;
    c.bn_reestimate_batches = 2000000000;
    expect_einval(&c, "bn re-estimation batches", "2000000000");
}

Test(dist_trust, config_rejects_bad_optimizer_values, .timeout = 30)
{
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.sgd.momentum = -0.5f;
    expect_einval(&c, "momentum", "-0.5");
    c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.sgd.weight_decay = NAN;
    expect_einval(&c, "weight decay", "nan");
}

Test(dist_trust, config_rejects_negative_counts, .timeout = 30)
{
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.eval_every_epochs = -2;
    expect_einval(&c, "eval every", "-2");
    c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.log_every = -1;
    expect_einval(&c, "log every", "-1");
    c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.threads = -4;
    expect_einval(&c, "threads", "-4");
    c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.limit_train = -10;
    expect_einval(&c, "limit_train", "-10");
}

Test(dist_trust, config_rejects_non_finite_values, .timeout = 30)
{
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 1;
    c.time_budget = INFINITY;
    expect_einval(&c, "time budget", "inf");
    c = fx_config(NNC_ALGO_DP_SAM, 2);
    c.epochs = 1;
    c.sam_rho = INFINITY;
    expect_einval(&c, "sam rho", "inf");
    c = fx_config(NNC_ALGO_MGRAWA, 2);
    c.epochs = 1;
    c.sync_timeout = NAN;
    expect_einval(&c, "sync timeout", "nan");
}

/* ------------------------------------------------------------------ out of memory */

/* An allocator that refuses single requests above a limit (like an address-space limit would
 * for the big ones), so the failure hits the step arena and nothing else. */
static size_t big_limit;

static void *limited_alloc(size_t size, size_t align, void *ud)
{
    (void)ud;
    if (size > big_limit) return NULL;
    size_t rounded = (size + align - 1) / align * align;
    return aligned_alloc(align, rounded ? rounded : align);
}

static void limited_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

static void check_oom(nnc_algo algo, int workers)
{
    nnc_dataset *tr = fx_dataset(1024 * workers, 1);
    nnc_train_config c = fx_config(algo, workers);
    c.epochs = 1;
    c.batch = 1024;
    big_limit = (size_t)3 << 19; /* one activation of 1024 8x8 images with 8 channels is 2 MiB */
    nnc_allocator a = {limited_alloc, limited_free, NULL};
    nnc_set_allocator(&a);
    nnc_train_result r;
    int s = nnc_train(&c, tr, NULL, &r);
    nnc_set_allocator(NULL);
    cr_assert_eq(s, NNC_ENOMEM, "status %d: %s", s, nnc_error_message());
    cr_assert(strstr(nnc_error_message(), "out of memory allocating") &&
                  strstr(nnc_error_message(), "bytes for the step arena"),
              "%s", nnc_error_message());
    fx_dataset_free(tr);
}

Test(dist_trust, step_arena_out_of_memory_is_enomem, .timeout = 60)
{
    check_oom(NNC_ALGO_SGD, 1);
}

Test(dist_trust, worker_step_arena_out_of_memory_is_enomem, .timeout = 60)
{
    check_oom(NNC_ALGO_LOCAL_SGD, 2);
}

/* ------------------------------------------------------------------ stop during evaluation */

Test(dist_trust, stop_during_evaluation_single, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(64, 2);
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    char dir[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    c.epochs = 3;
    c.eval_every_epochs = 1;
    c.log_every = 1;
    volatile sig_atomic_t stop = 0;
    evals v;
    memset(&v, 0, sizeof v);
    v.stop = &stop;
    v.stop_at_step = 16; /* the last step of epoch 1: its evaluation follows */
    c.stop = &stop;
    c.on_eval = on_eval;
    c.on_step = on_step;
    c.ud = &v;
    nnc_train_result r;
    int s = nnc_train(&c, tr, te, &r);
    cr_assert_eq(s, NNC_EINTERRUPTED, "status %d: %s", s, nnc_error_message());
    cr_assert_eq(v.n, 0, "the evaluation under way stopped: nothing reported");
    cr_assert_eq(r.stopped_by_signal, SIGTERM);
    cr_assert(strstr(nnc_error_message(), "during the evaluation"), "%s", nnc_error_message());
    /* last.ckpt is the state the evaluation started from: resuming finishes the run. */
    nnc_model *m = fx_load_model(dir, "last.ckpt", "");
    nnc_model_free(m);
    stop = 0;
    v.stop_at_step = 0;
    c.resume = 1;
    cr_assert_eq(nnc_train(&c, tr, te, &r), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(r.steps, 48);
    fx_rmdir(dir);
    fx_dataset_free(tr);
    fx_dataset_free(te);
}

Test(dist_trust, stop_during_bn_reestimation_workers, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(64, 2);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    char dir[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    c.epochs = 3;
    c.tau = 4;
    c.eval_every_epochs = 1;
    c.bn_reestimate_batches = 50000; /* minutes if it ran to the end */
    volatile sig_atomic_t stop = 0;
    evals v;
    memset(&v, 0, sizeof v);
    v.stop = &stop;
    v.stop_at_round = 2; /* 8 steps per epoch and worker: the epoch-1 evaluation follows round 2 */
    c.stop = &stop;
    c.on_eval = on_eval;
    c.on_round = on_round;
    c.ud = &v;
    nnc_train_result r;
    double t0 = nnc__now();
    int s = nnc_train(&c, tr, te, &r);
    cr_assert_eq(s, NNC_EINTERRUPTED, "status %d: %s", s, nnc_error_message());
    cr_assert_lt(nnc__now() - t0, 20.0, "the stop ended the re-estimation promptly");
    cr_assert_eq(v.n, 0, "the evaluation under way stopped: nothing reported");
    cr_assert_eq(r.stopped_by_signal, SIGTERM);
    /* Resuming from the checkpoint written at the stop finishes the run. */
    stop = 0;
    v.stop_at_round = 0;
    c.bn_reestimate_batches = 2;
    c.resume = 1;
    cr_assert_eq(nnc_train(&c, tr, te, &r), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(r.local_steps[0], 24);
    cr_assert_eq(r.local_steps[1], 24);
    fx_rmdir(dir);
    fx_dataset_free(tr);
    fx_dataset_free(te);
}

/* ------------------------------------------------------------------ the CLI on crafted files */

#include "tests/common/cli_run.h"

static char *cli_data, *cli_work;

static void cli_setup(void)
{
    cli_data = tcli_tmpdir();
    cli_work = tcli_tmpdir();
    cr_assert(cli_data && cli_work);
    cr_assert_eq(tcli_write_cifar10(cli_data, 256), 0);
}

static void cli_teardown(void)
{
    tcli_rmrf(cli_data);
    tcli_rmrf(cli_work);
    free(cli_data);
    free(cli_work);
}

TestSuite(dist_trust_cli, .init = cli_setup, .fini = cli_teardown, .timeout = 120);

/* A one-epoch `nnc train` of the tiny model into cli_work/run (exit 0). */
static char *cli_train(const char *epochs)
{
    char *run = tcli_path(cli_work, "run");
    tcli_result r = tcli_run(60, "train", "cifar10", "--data", cli_data, "--no-download", "--model", "tiny", "--batch",
                             "32", "--limit-train", "256", "--limit-test", "100", "--lr", "0.05", "--threads", "1",
                             "--epochs", epochs, "--run-dir", run, NULL);
    cr_assert_eq(r.code, 0, "train: %s", r.err);
    tcli_free(&r);
    return run;
}

/* eval and predict load the model through the same code (tools/ckpt_model.c). */
Test(dist_trust_cli, eval_refuses_non_finite_bn_statistics)
{
    char *run = cli_train("1");
    char *best = tcli_path(run, "best.ckpt");
    nnc_ckpt *ck;
    cr_assert_eq(nnc_ckpt_load(best, &ck), NNC_OK, "%s", nnc_error_message());
    cr_assert(nnc_ckpt_has(ck, "buf/bn.running_var"), "the tiny model has BN statistics buf/bn.*");
    nnc_ckpt_free(ck);
    float nan = NAN;
    patch_section(best, "buf/bn.running_var", 2 * sizeof(float), &nan, sizeof nan);
    tcli_result r = tcli_run(60, "eval", "cifar10", "--data", cli_data, "--ckpt", best, "--limit", "100", NULL);
    cr_assert_eq(r.code, 2, "exit %d: %s", r.code, r.err);
    cr_assert(strstr(r.err, "buf/bn.running_var") && strstr(r.err, "element 2") && strstr(r.err, "nan"), "%s",
              r.err);
    tcli_free(&r);
    free(best);
    free(run);
}

Test(dist_trust_cli, resume_refuses_loader_position_with_exit_2)
{
    char *run = cli_train("1");
    char *last = tcli_path(run, "last.ckpt");
    int64_t bad = 1000;
    patch_section(last, "run/workers", wfield("loader_batch"), &bad, sizeof bad);
    tcli_result r = tcli_run(60, "train", "cifar10", "--data", cli_data, "--no-download", "--model", "tiny", "--batch",
                             "32", "--limit-train", "256", "--limit-test", "100", "--lr", "0.05", "--threads", "1",
                             "--epochs", "2", "--run-dir", run, "--resume", NULL);
    cr_assert_eq(r.code, 2, "exit %d (not an abort): %s", r.code, r.err);
    cr_assert(strstr(r.err, "loader_batch") && strstr(r.err, "1000"), "%s", r.err);
    tcli_free(&r);
    free(last);
    free(run);
}

/* ------------------------------------------------------------------ the run-state codec */

Test(dist_trust, run_state_is_little_endian_and_progress_query_reads_it, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char dir[64], path[600];
    nnc_train_config c = fx_config(NNC_ALGO_LGRAWA, 2);
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    c.epochs = 1;
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_OK, "%s", nnc_error_message());
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    nnc_ckpt_progress q;
    cr_assert_eq(nnc_train_ckpt_progress(path, &q), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(q.steps, r.steps);
    cr_assert_eq(q.workers, 2);
    cr_assert_eq(q.algo, NNC_ALGO_LGRAWA);
    cr_assert_eq(q.steps_per_epoch, 8);   /* 256 images / 2 workers / batch 16 */
    cr_assert_eq(q.min_steps, 8);
    cr_assert_eq(q.rounds, r.rounds);
    cr_assert_float_eq(q.epoch, 1.0, 1e-12);
    cr_assert(q.seconds > 0.0);
    /* The record's fields are little-endian whatever the host: worker 1's steps byte by byte. */
    nnc_ckpt *ck;
    cr_assert_eq(nnc_ckpt_load(path, &ck), NNC_OK);
    const void *d;
    size_t nb;
    cr_assert_eq(nnc_ckpt_get_bytes(ck, "run/workers", &d, &nb), NNC_OK);
    cr_assert_eq(nb, 2 * rec_bytes());
    const unsigned char *w1 = (const unsigned char *)d + rec_bytes() + wfield("steps");
    for (int k = 0; k < 8; k++) cr_assert_eq(w1[k], (unsigned char)((uint64_t)r.local_steps[1] >> (8 * k)));
    cr_assert_eq(nnc_ckpt_get_bytes(ck, "run/meta", &d, &nb), NNC_OK);
    cr_assert_eq(nb, nnc__meta_bytes());
    cr_assert_eq(((const unsigned char *)d)[0], NNC__RUN_META_VERSION);
    nnc_ckpt_free(ck);
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

/* Version 2 of the run meta (before the modelled communication seconds) still decodes: its
 * fields are version 3's without the last, which then reads 0. */
Test(dist_trust, run_meta_version_2_still_reads)
{
    nnc__meta m = {.version = NNC__RUN_META_VERSION, .workers = 4, .round = 7, .total_steps = 90,
                   .mark_loss = 1.5, .comm_seconds = 2.25, .budget_done = 60};
    unsigned char b[256], v2[256];
    size_t n3 = nnc__meta_bytes(), n2 = (size_t)nnc__meta_field_offset("comm_seconds");
    cr_assert_eq(n2 + 16, n3, "comm_seconds and budget_done are the last fields");
    nnc__meta_encode(&m, b);
    nnc__meta back;
    cr_assert_eq(nnc__meta_decode(b, n3, "x", &back), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(back.comm_seconds, 2.25);
    memcpy(v2, b, n2);
    v2[0] = 2;
    cr_assert_eq(nnc__meta_decode(v2, n2, "x", &back), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(back.version, 2);
    cr_assert_eq(back.round, 7);
    cr_assert_eq(back.mark_loss, 1.5);
    cr_assert_eq(back.comm_seconds, 0.0);
    cr_assert_eq(back.budget_done, 0.0);
    /* A version 2 meta with version 3's size (or the reverse) is refused, naming both sizes. */
    cr_assert_eq(nnc__meta_decode(v2, n3, "x", &back), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "version 2"), "%s", nnc_error_message());
    cr_assert_eq(nnc__meta_decode(b, n2, "x", &back), NNC_EFORMAT);
}

Test(dist_trust, resume_refuses_an_older_run_state_version, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char dir[64], path[600];
    nnc_train_config c = short_run(NNC_ALGO_MGRAWA, dir, sizeof dir, tr);
    snprintf(path, sizeof path, "%s/last.ckpt", dir);
    int32_t v1 = 1;
    patch_section(path, "run/meta", (size_t)nnc__meta_field_offset("version"), &v1, sizeof v1);
    const char *want[] = {"run/meta", "version", "expected 3, found 1", "the nnc that wrote it", NULL};
    expect_resume_refused(&c, tr, want);
    nnc_ckpt_progress q;
    cr_assert_eq(nnc_train_ckpt_progress(path, &q), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "found 1"), "%s", nnc_error_message());
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

Test(dist_trust, resume_refuses_a_non_finite_smoothed_norm, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    char dir[64];
    nnc_train_config c = short_run(NNC_ALGO_MGRAWA, dir, sizeof dir, tr);
    double nan = NAN;
    patch_worker(dir, 1, wfield("ema"), &nan, sizeof nan);
    const char *want[] = {"run/workers", "worker 1", "ema[0]", "nan", NULL};
    expect_resume_refused(&c, tr, want);
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

Test(dist_trust, progress_query_refuses_a_model_checkpoint)
{
    char dir[64], path[600];
    fx_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.ckpt", dir);
    nnc_model_config mc = {.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *m;
    cr_assert_eq(nnc_model_new("tiny", &mc, 1, &m), NNC_OK);
    nnc_ckpt *ck;
    cr_assert_eq(nnc_ckpt_new(nnc_model_arch(m), &ck), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_params(ck, "", nnc_model_params(m)), NNC_OK);
    cr_assert_eq(nnc_ckpt_save(ck, path), NNC_OK, "%s", nnc_error_message());
    nnc_ckpt_free(ck);
    nnc_model_free(m);
    nnc_ckpt_progress q;
    cr_assert_eq(nnc_train_ckpt_progress(path, &q), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "not a training checkpoint"), "%s", nnc_error_message());
    fx_rmdir(dir);
}

Test(dist_trust, loader_seek_out_of_range_is_a_status)
{
    nnc_dataset *tr = fx_dataset(64, 1);
    nnc_loader_config lc = nnc_loader_config_default();
    lc.batch = 16;
    lc.prefetch = 0;
    nnc_loader *l;
    cr_assert_eq(nnc_loader_new(tr, &lc, &l), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(nnc_loader_seek(l, 2, 3), NNC_OK);
    cr_assert_eq(nnc_loader_seek(l, 0, 5), NNC_EINVAL);   /* 4 batches per epoch */
    cr_assert(strstr(nnc_error_message(), "0..4"), "%s", nnc_error_message());
    cr_assert_eq(nnc_loader_seek(l, -1, 0), NNC_EINVAL);
    cr_assert_eq(nnc_loader_epoch(l), 2);
    cr_assert_eq(nnc_loader_batch_index(l), 3);
    nnc_loader_free(l);
    fx_dataset_free(tr);
}
