/* dist/train.c - nnc_train: config resolution, run set-up, the single-replica loop, evaluation
 * of the center and the uniform average, teardown (multi-worker rounds: sync.c). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/run.h"
#include "nn/blas.h"
#include "nn/fault.h"
#include "nn/threads.h"

#define EVAL_STREAM 0x6576616cULL /* "eval" */

static const char *const algo_names[] = {"sgd", "mgrawa", "lgrawa", "local-sgd",
                                         "easgd", "lsgd", "dp", "dp-sam"};

int nnc_algo_parse(const char *s, nnc_algo *out)
{
    for (int i = 0; i < (int)(sizeof algo_names / sizeof *algo_names); i++)
        if (s && strcmp(s, algo_names[i]) == 0) {
            *out = (nnc_algo)i;
            return NNC_OK;
        }
    if (s && strcmp(s, "grawa") == 0) {
        *out = NNC_ALGO_MGRAWA;
        return NNC_OK;
    }
    return nnc__fail(NNC_EINVAL,
                     "unknown algorithm '%s' (expected sgd, mgrawa, lgrawa, local-sgd, easgd, lsgd, "
                     "dp or dp-sam)", s ? s : "(null)");
}

const char *nnc_algo_name(nnc_algo a)
{
    return (unsigned)a < sizeof algo_names / sizeof *algo_names ? algo_names[a] : "?";
}

nnc_train_config nnc_train_config_default(void)
{
    nnc_train_config c;
    memset(&c, 0, sizeof c);
    c.model = "resnet20";
    c.model_cfg.in_channels = 0;
    c.batch = 128;
    c.augment = 1;
    c.lr = 0.1f;
    c.sgd = nnc_sgd_config_default();
    /* The schedule's own defaults (gamma 0.1, step_epochs 30: the CLI's --gamma/--step-epochs);
     * constant, as `nnc train` with only a time budget (its cosine needs --epochs). */
    c.sched = nnc_sched_default();
    c.sched.kind = NNC_SCHED_CONSTANT;
    c.epochs = 1;
    c.seed = 1;
    c.threads = 1;
    c.precision = NNC_PRECISION_FP32;
    c.workers = 1;
    c.algo = NNC_ALGO_SGD;
    c.sync = NNC_SYNC_ASYNC;
    c.tau = 0;
    c.pull = -1.0f;
    c.prox = -1.0f;
    c.easgd_beta = 0.1f;
    c.sam_rho = 0.05f;
    c.norm_kind = NNC_NORM_SUM_LAYERS;
    c.probe_batch = 128;
    c.bn_reestimate_batches = 20;
    c.sync_timeout = 0;
    c.eval_every_epochs = 1;
    c.log_every = 0;
    return c;
}

double nnc__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double nnc__run_seconds(const nnc_run *R)
{
    return nnc__now() - R->t_start - R->t_excluded + R->t_resumed;
}

void nnc__run_log(nnc_run *R, const char *fmt, ...)
{
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (R->c.on_log) R->c.on_log(line, R->c.ud);
}

float nnc__run_lr(const nnc_run *R, long step, double seconds)
{
    return nnc_sched_lr(&R->c.sched, step, seconds);
}

/* Upper bounds of sizes and counts (far above any real run; they keep products in range). */
#define MAX_BATCH (1 << 20)
#define MAX_TAU (1 << 20)
#define MAX_BN_BATCHES 100000

static int is_grawa(nnc_algo a) { return a == NNC_ALGO_MGRAWA || a == NNC_ALGO_LGRAWA; }

/* Fill algorithm defaults and check every value; errors name the field and the value. */
static int resolve(nnc_train_config *c, const nnc_dataset *train)
{
    if (c->workers < 1 || c->workers > NNC_MAX_WORKERS)
        return nnc__fail(NNC_EINVAL, "workers must be in 1..%d, found %d", NNC_MAX_WORKERS, c->workers);
    if ((unsigned)c->algo > NNC_ALGO_DP_SAM) return nnc__fail(NNC_EINVAL, "unknown algorithm %d", (int)c->algo);
    if (c->algo == NNC_ALGO_SGD && c->workers != 1)
        return nnc__fail(NNC_EINVAL, "algorithm sgd trains one replica: workers must be 1, found %d "
                         "(use mgrawa, lgrawa, local-sgd, easgd, lsgd, dp or dp-sam)", c->workers);
    if (c->batch < 1 || c->batch > MAX_BATCH)
        return nnc__fail(NNC_EINVAL, "batch must be in 1..%d, found %d", MAX_BATCH, c->batch);
    if (c->limit_train < 0) return nnc__fail(NNC_EINVAL, "limit_train must be >= 0 (0 = all), found %ld", c->limit_train);
    if (c->limit_test < 0) return nnc__fail(NNC_EINVAL, "limit_test must be >= 0 (0 = all), found %ld", c->limit_test);
    if (!(c->lr > 0.0f) || !isfinite(c->lr)) return nnc__fail(NNC_EINVAL, "lr must be > 0, found %g", (double)c->lr);
    if (!(c->sgd.momentum >= 0.0f && c->sgd.momentum < 1.0f))
        return nnc__fail(NNC_EINVAL, "momentum must be in [0, 1), found %g", (double)c->sgd.momentum);
    if (!(c->sgd.weight_decay >= 0.0f) || !isfinite(c->sgd.weight_decay))
        return nnc__fail(NNC_EINVAL, "weight decay must be finite and >= 0, found %g", (double)c->sgd.weight_decay);
    if (c->sgd.nesterov && !(c->sgd.momentum > 0.0f))
        return nnc__fail(NNC_EINVAL, "nesterov needs momentum > 0, found momentum %g", (double)c->sgd.momentum);
    {
        /* The schedule as the run will use it (base lr and epoch length filled in later). */
        nnc_sched sc = c->sched;
        sc.base_lr = c->lr;
        if (sc.steps_per_epoch <= 0) sc.steps_per_epoch = 1;
        if (sc.kind == NNC_SCHED_COSINE && sc.total_steps == 0) sc.total_steps = 1; /* = the planned steps */
        int s = nnc_sched_check(&sc);
        if (s) return s;
    }
    if (c->epochs < 0) return nnc__fail(NNC_EINVAL, "epochs must be >= 0, found %d", c->epochs);
    if (!(c->time_budget >= 0.0) || !isfinite(c->time_budget))
        return nnc__fail(NNC_EINVAL, "time budget must be finite and >= 0 s, found %g", c->time_budget);
    if (c->epochs == 0 && c->time_budget == 0.0)
        return nnc__fail(NNC_EINVAL, "nothing bounds the run: set epochs > 0 or a time budget");
    if (c->tau < 0) return nnc__fail(NNC_EINVAL, "tau must be >= 0 (0 = default), found %d", c->tau);
    if (c->tau == 0)
        c->tau = (c->algo == NNC_ALGO_EASGD || c->algo == NNC_ALGO_LSGD) ? 4
                 : (c->algo == NNC_ALGO_DP || c->algo == NNC_ALGO_DP_SAM) ? 1 : 32;
    if (c->pull < 0.0f) c->pull = c->algo == NNC_ALGO_LSGD ? 0.1f : c->algo == NNC_ALGO_LOCAL_SGD ? 1.0f : 0.5f;
    if (c->prox < 0.0f) c->prox = c->algo == NNC_ALGO_LSGD ? 0.1f : is_grawa(c->algo) ? 0.01f : 0.0f;
    if (c->sync != NNC_SYNC_ASYNC && c->sync != NNC_SYNC_LOCKSTEP)
        return nnc__fail(NNC_EINVAL, "unknown sync mode %d (expected async or lockstep)", (int)c->sync);
    if (c->norm_kind != NNC_NORM_SUM_LAYERS && c->norm_kind != NNC_NORM_GLOBAL_L2)
        return nnc__fail(NNC_EINVAL, "unknown norm kind %d (expected sum-layers or global-l2)", (int)c->norm_kind);
    if (c->tau > MAX_TAU) return nnc__fail(NNC_EINVAL, "tau must be in 0..%d (0 = default), found %d", MAX_TAU, c->tau);
    if (c->pull > 1.0f || !isfinite(c->pull)) return nnc__fail(NNC_EINVAL, "pull must be in [0, 1], found %g", (double)c->pull);
    if (c->prox > (float)c->tau || !isfinite(c->prox))
        return nnc__fail(NNC_EINVAL, "prox must be in [0, tau=%d], found %g", c->tau, (double)c->prox);
    if (!(c->easgd_beta > 0.0f && c->easgd_beta <= 1.0f))
        return nnc__fail(NNC_EINVAL, "easgd beta must be in (0, 1], found %g", (double)c->easgd_beta);
    if (!(c->sam_rho >= 0.0f) || !isfinite(c->sam_rho))
        return nnc__fail(NNC_EINVAL, "sam rho must be finite and >= 0, found %g", (double)c->sam_rho);
    if (c->probe_batch < 1 || c->probe_batch > MAX_BATCH)
        return nnc__fail(NNC_EINVAL, "probe batch must be in 1..%d, found %d", MAX_BATCH, c->probe_batch);
    if (c->bn_reestimate_batches < 0 || c->bn_reestimate_batches > MAX_BN_BATCHES)
        return nnc__fail(NNC_EINVAL, "bn re-estimation batches must be in 0..%d, found %d", MAX_BN_BATCHES,
                         c->bn_reestimate_batches);
    if (!(c->sync_timeout >= 0.0) || !isfinite(c->sync_timeout))
        return nnc__fail(NNC_EINVAL, "sync timeout must be finite and >= 0 (0 = 600 s), found %g", c->sync_timeout);
    if (c->sync_timeout == 0.0) c->sync_timeout = 600.0;
    if (c->threads < 0) return nnc__fail(NNC_EINVAL, "threads must be >= 0 (0 = 1), found %d", c->threads);
    if (c->threads < 1) c->threads = 1;
    if (c->eval_every_epochs < 0)
        return nnc__fail(NNC_EINVAL, "eval every must be >= 0 epochs (0 = only at the end), found %d",
                         c->eval_every_epochs);
    if (c->log_every < 0) return nnc__fail(NNC_EINVAL, "log every must be >= 0 steps (0 = auto), found %d", c->log_every);
    if (c->resume && !c->ckpt_dir) return nnc__fail(NNC_EINVAL, "resume needs a checkpoint folder");
    if (c->keep_epochs < 0) return nnc__fail(NNC_EINVAL, "keep must be >= 0 (0 = no epoch checkpoints), found %d", c->keep_epochs);
    if ((unsigned)c->nan_policy > NNC_NAN_SKIP)
        return nnc__fail(NNC_EINVAL, "unknown non-finite policy %d (expected stop or skip)", (int)c->nan_policy);
    if (c->nan_policy == NNC_NAN_SKIP && (c->workers != 1 || c->algo != NNC_ALGO_SGD))
        return nnc__fail(NNC_EINVAL, "non-finite policy skip needs one replica (workers 1, algorithm sgd), found "
                         "%d worker(s), algorithm %s: with workers a non-finite worker is reset to the center",
                         c->workers, nnc_algo_name(c->algo));
    if (!c->model) return nnc__fail(NNC_EINVAL, "no model name given");
    if (c->model_cfg.in_channels == 0) c->model_cfg.in_channels = train->c;
    if (c->model_cfg.image_size == 0) c->model_cfg.image_size = train->h;
    if (c->model_cfg.num_classes == 0) c->model_cfg.num_classes = train->num_classes;
    if (train->h != train->w || c->model_cfg.in_channels != train->c || c->model_cfg.image_size != train->h)
        return nnc__fail(NNC_EINVAL, "dataset '%s' has images %dx%dx%d, model config expects %dx%dx%d",
                         train->name, train->c, train->h, train->w, c->model_cfg.in_channels,
                         c->model_cfg.image_size, c->model_cfg.image_size);
    if (train->num_classes > c->model_cfg.num_classes)
        return nnc__fail(NNC_EINVAL, "dataset '%s' has %d classes, model config has %d", train->name,
                         train->num_classes, c->model_cfg.num_classes);
    return NNC_OK;
}

static void run_free(nnc_run *R)
{
    for (int i = 0; i < NNC_MAX_WORKERS; i++) nnc__replica_free(R->rep[i]);
    nnc_model_free(R->scratch);
    nnc_graph_free(R->eval_g);
    nnc__grawa_layers_free(&R->ly);
    nnc__grawa_layers_free(&R->buf_ly);
    nnc__free(R->buf_acc);
    nnc__transport_free(R->tp);
    nnc__free(R->center);
    nnc__free(R->pub);
    nnc__free(R->center_buf);
    nnc__free(R->model_data);
    nnc__free(R->model_buf);
    nnc__free(R->acc);
    nnc__free(R->usum);
    nnc__free(R->u);
    nnc__free(R->ema);
    nnc__free(R->norms);
}

/* FNV-1a over the text of every setting that must agree between ranks (the numbers, and what
 * decides which collective steps a run takes: evaluation, checkpoints). */
static uint64_t config_hash(const nnc_run *R)
{
    const nnc_train_config *c = &R->c;
    char t[1024];
    int n = snprintf(t, sizeof t,
                     "%s|%d,%d,%d|%d %d %ld|%a %a %a %d %d|%d %a %a %d %ld %ld %a|%d %a %llu|%d %d %d %d|%a %a %a "
                     "%a %d %d %d|%d %d %d %d %d|%d %d %d %d %ld",
                     c->model, c->model_cfg.in_channels, c->model_cfg.image_size, c->model_cfg.num_classes,
                     c->batch, c->augment, c->limit_train, (double)c->lr, (double)c->sgd.momentum,
                     (double)c->sgd.weight_decay, c->sgd.nesterov, c->sgd.decay_bn_bias, (int)c->sched.kind,
                     (double)c->sched.gamma, (double)c->sched.min_lr, c->sched.step_epochs, c->sched.total_steps,
                     c->sched.warmup_steps, c->sched.drop_seconds,
                     c->epochs, c->time_budget, (unsigned long long)c->seed, c->workers, (int)c->algo,
                     (int)c->sync, c->tau, (double)c->pull, (double)c->prox, (double)c->easgd_beta,
                     (double)c->sam_rho, (int)c->norm_kind, c->probe_batch, c->bn_reestimate_batches, R->train->n,
                     R->train->c, R->train->h, R->train->num_classes, c->resume, c->eval_every_epochs,
                     c->ckpt_dir != NULL, c->keep_epochs, (int)c->nan_policy, R->test ? (long)R->test->n : -1L);
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n && i < (int)sizeof t; i++) h = (h ^ (unsigned char)t[i]) * 1099511628211ULL;
    return h;
}

/* Mismatched configuration across ranks: every rank must run the same model and config; a
 * mismatch names the first differing rank (on every rank, so all exit alike instead of hanging
 * in a round). */
static int check_ranks(nnc_run *R)
{
    nnc_transport *t = R->tp;
    if (t->size == 1) return NNC_OK;
    uint64_t *v = nnc__calloc((size_t)t->size * 2, sizeof(uint64_t));
    size_t bytes[NNC_MAX_WORKERS];
    if (!v) return nnc__fail(NNC_ENOMEM, "training: out of memory");
    for (int r = 0; r < t->size; r++) bytes[r] = 2 * sizeof(uint64_t);
    v[2 * t->rank] = nnc_model_params(R->scratch)->n_data + nnc_model_params(R->scratch)->n_buf;
    v[2 * t->rank + 1] = config_hash(R);
    int s = t->ops->allgather(t, v, bytes);
    for (int r = 1; !s && r < t->size; r++)
        if (v[2 * r] != v[0] || v[2 * r + 1] != v[1])
            s = nnc__fail(NNC_EINVAL, "rank %d runs a different configuration than rank 0: %llu vs %llu "
                          "parameters, config hash %016llx vs %016llx (same model, data, flags and seed "
                          "needed on every rank)", r, (unsigned long long)v[2 * r], (unsigned long long)v[0],
                          (unsigned long long)v[2 * r + 1], (unsigned long long)v[1]);
    nnc__free(v);
    return s;
}

static int run_setup(nnc_run *R)
{
    nnc_train_config *c = &R->c;
    int s = nnc__transport_default_new(&R->tp);
    if (s) return s;
    R->tp->timeout = c->sync_timeout;
    if (R->M < R->tp->size)
        return nnc__fail(NNC_EINVAL, "workers (%d, the total over all ranks) must be >= the number of "
                         "ranks (%d)", R->M, R->tp->size);
    R->lo = nnc__transport_first_worker(R->M, R->tp->size, R->tp->rank);
    R->hi = nnc__transport_first_worker(R->M, R->tp->size, R->tp->rank + 1);
    R->nloc = R->hi - R->lo;
    if (R->tp->rank != 0) {
        /* Rank 0 reports for everyone. */
        c->on_step = NULL;
        c->on_round = NULL;
        c->on_eval = NULL;
        c->on_log = NULL;
    }
    if ((s = nnc_model_new(c->model, &c->model_cfg, c->seed, &R->scratch))) return s;
    if ((s = check_ranks(R))) return s;
    if ((s = nnc_graph_new(0, &R->eval_g))) return s;
    for (int i = 0; i < R->M; i++)
        if ((s = nnc__replica_new(R->scratch, R->train, c, i, R->M, &R->rep[i]))) return s;
    nnc_params *p = nnc_model_params(R->scratch);
    if ((s = nnc__grawa_layers_new(p, &R->ly))) return s;
    R->buf_ly.off = nnc__calloc(1, sizeof(size_t));
    R->buf_ly.len = nnc__calloc(1, sizeof(size_t));
    R->buf_acc = nnc__calloc(p->n_buf + 1, sizeof(double));
    if (!R->buf_ly.off || !R->buf_ly.len || !R->buf_acc)
        return nnc__fail(NNC_ENOMEM, "training: cannot allocate the buffer averages (%zu floats)", p->n_buf);
    R->buf_ly.L = 1;
    R->buf_ly.len[0] = R->buf_ly.n = p->n_buf;
    int L = R->ly.L > 0 ? R->ly.L : 1;
    size_t n = p->n_data + 1;
    R->center = nnc__calloc(n, sizeof(float));
    R->pub = nnc__calloc(n, sizeof(float));
    R->center_buf = nnc__calloc(p->n_buf + 1, sizeof(float));
    R->model_data = nnc__calloc(n, sizeof(float));
    R->model_buf = nnc__calloc(p->n_buf + 1, sizeof(float));
    R->acc = nnc__calloc(n, sizeof(double));
    R->usum = nnc__calloc((size_t)L, sizeof(double));
    R->u = nnc__calloc((size_t)R->M * L, sizeof(double));
    R->ema = nnc__calloc((size_t)R->M * L, sizeof(double));
    R->norms = nnc__calloc((size_t)R->M * L, sizeof(double));
    if (!R->center || !R->pub || !R->center_buf || !R->model_data || !R->model_buf || !R->acc || !R->usum ||
        !R->u || !R->ema || !R->norms)
        return nnc__fail(NNC_ENOMEM, "training: cannot allocate the synchronizer state (%zu floats)", n);
    /* Before the first round the proximity target is the common initial model. */
    memcpy(R->center, p->data, p->n_data * sizeof(float));
    memcpy(R->pub, p->data, p->n_data * sizeof(float));
    memcpy(R->center_buf, p->buf, p->n_buf * sizeof(float));
    R->spe = nnc_loader_batches_per_epoch(R->rep[0]->loader);
    R->plan = (long)c->epochs * R->spe;
    c->sched.base_lr = c->lr;
    c->sched.steps_per_epoch = R->spe;
    if (c->sched.total_steps == 0) c->sched.total_steps = R->plan;
    R->prox = c->tau > 0 ? (double)c->prox / c->tau : 0.0;
    R->best_acc = -1.0;
    return NNC_OK;
}

/* The stop flag evaluation and BN re-estimation poll: the caller's, except across MPI ranks,
 * where a stop must become a collective decision at a round (a rank leaving an evaluation alone
 * would leave the others waiting in the next collective). */
static volatile sig_atomic_t *eval_stop(const nnc_run *R)
{
    return R->tp && R->tp->size > 1 ? NULL : R->user->stop;
}

/* Evaluate scratch (params already set) after BN re-estimation. */
static int eval_scratch(nnc_run *R, double *loss, double *acc)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, R->c.seed, EVAL_STREAM + (uint64_t)R->round);
    int s = nnc__bn_reestimate_stop(R->scratch, R->eval_g, R->train, R->c.bn_reestimate_batches, R->c.batch,
                                    &rng, eval_stop(R));
    if (s) return s;
    return nnc__evaluate_stop(R->scratch, R->test, R->c.batch, loss, acc, NULL, eval_stop(R));
}

static void emit_eval(nnc_run *R, const char *which, double loss, double acc, int best)
{
    if (!R->c.on_eval) return;
    nnc_eval_info e = {.epoch = R->spe ? (double)R->rep[0]->steps / R->spe : 0.0,
                       .seconds = nnc__run_seconds(R),
                       .step = R->M == 1 ? R->rep[0]->steps : R->total_steps,
                       .which = which,
                       .loss = loss,
                       .acc = acc,
                       .is_best = best};
    R->c.on_eval(&e, R->c.ud);
}

/* Uniform average of the workers' parameters and buffers into scratch (workers parked). */
static int load_average(nnc_run *R)
{
    nnc_params *p = nnc_model_params(R->scratch);
    const float *x[NNC_MAX_WORKERS];
    double u[NNC_MAX_WORKERS];
    for (int i = 0; i < R->M; i++) {
        x[i] = R->rep[i]->p->data;
        u[i] = 1.0;
    }
    int s = nnc__transport_center(R->tp, &R->ly, x + R->lo, u + R->lo, R->nloc, 0, R->acc, R->usum, p->data);
    if (s) return s;
    return nnc__run_buf_average(R, NULL, p->buf);
}

/* Test hook eval_acc:A1/A2/...: the k-th evaluation of this run reports Ak (one replica). */
static double forced_acc(nnc_run *R, double acc)
{
#ifdef NNC_TESTING
    char arg[256];
    if (nnc__fault_arg("eval_acc", arg, sizeof arg)) {
        const char *p = arg;
        for (int i = 0; i < R->n_evals && p; i++) {
            p = strchr(p, '/');
            if (p) p++;
        }
        if (p && *p) acc = atof(p);
    }
#endif
    R->n_evals++;
    return acc;
}

/* An evaluation that failed with s. A stop (NNC_EINTERRUPTED from the stop flag polled inside
 * the evaluation) ends the run like a stop between steps: last.ckpt gets the state the
 * evaluation started from (workers parked, nothing trained since), and the status says so. */
static int eval_failed(nnc_run *R, int s)
{
    if (s != NNC_EINTERRUPTED) return s;
    R->res->stopped_by_signal = R->user->stop && *R->user->stop ? (int)*R->user->stop : -1;
    long step = R->M == 1 ? R->rep[0]->steps : R->total_steps;
    int w = R->c.ckpt_dir ? nnc__run_save(R, "last.ckpt") : NNC_OK;
    if (w) return w;
    return nnc__fail(NNC_EINTERRUPTED, "stopped by signal %d during the evaluation after step %ld%s",
                     R->res->stopped_by_signal, step, R->c.ckpt_dir ? " (checkpoint written)" : "");
}

int nnc__run_evaluate(nnc_run *R)
{
    if (!R->test) return NNC_OK;
    double t0 = nnc__now();
    double loss = NAN, acc = NAN;
    int s = NNC_OK, best = 0;
    nnc_train_result *res = R->res;
    if (R->M == 1 && R->c.algo == NNC_ALGO_SGD) {
        if ((s = nnc__evaluate_stop(R->rep[0]->model, R->test, R->c.batch, &loss, &acc, NULL, eval_stop(R))))
            return eval_failed(R, s);
        acc = forced_acc(R, acc);
        best = acc > R->best_acc;
        res->test_acc = acc;
        res->test_loss = loss;
        emit_eval(R, "model", loss, acc, best);
    } else {
        nnc_params *p = nnc_model_params(R->scratch);
        if (R->c.algo == NNC_ALGO_DP || R->c.algo == NNC_ALGO_DP_SAM) {
            /* Every replica holds the same parameters; BN buffers are replica 0's (rank 0). */
            memcpy(R->center, R->rep[R->lo]->p->data, p->n_data * sizeof(float));
            memcpy(R->center_buf, R->rep[0]->p->buf, p->n_buf * sizeof(float));
            if (R->tp->size > 1 && p->n_buf &&
                (s = R->tp->ops->broadcast(R->tp, R->center_buf, p->n_buf * sizeof(float), 0)))
                return s;
        }
        memcpy(p->data, R->center, p->n_data * sizeof(float));
        memcpy(p->buf, R->center_buf, p->n_buf * sizeof(float));
        double closs, cacc, aloss, aacc;
        int use_avg = R->c.algo == NNC_ALGO_LSGD || R->c.algo == NNC_ALGO_LOCAL_SGD;
        if ((s = eval_scratch(R, &closs, &cacc))) return eval_failed(R, s);
        if (!use_avg) {
            memcpy(R->model_data, p->data, p->n_data * sizeof(float));
            memcpy(R->model_buf, p->buf, p->n_buf * sizeof(float));
        }
        if ((s = load_average(R))) return s;
        if ((s = eval_scratch(R, &aloss, &aacc))) return eval_failed(R, s);
        if (use_avg) {
            memcpy(R->model_data, p->data, p->n_data * sizeof(float));
            memcpy(R->model_buf, p->buf, p->n_buf * sizeof(float));
        }
        R->model_valid = 1;
        R->model_round = R->round;
        R->model_steps = R->total_steps;
        if (R->tp->size > 1) {
            /* Every rank evaluated (in parallel); rank 0's numbers decide for all (best.ckpt is
             * collective), even where another machine's kernels round differently. */
            double v[4] = {closs, cacc, aloss, aacc};
            if ((s = R->tp->ops->broadcast(R->tp, v, sizeof v, 0))) return s;
            closs = v[0], cacc = v[1], aloss = v[2], aacc = v[3];
        }
        loss = use_avg ? aloss : closs;
        acc = use_avg ? aacc : cacc;
        best = acc > R->best_acc;
        res->center_test_acc = cacc;
        res->average_test_acc = aacc;
        res->test_acc = acc;
        res->test_loss = loss;
        emit_eval(R, "center", closs, cacc, best && !use_avg);
        emit_eval(R, "average", aloss, aacc, best && use_avg);
    }
    if (best) R->best_acc = acc;
    R->t_excluded += nnc__now() - t0;
    if (best && R->c.ckpt_dir) {
        double t1 = nnc__now();
        s = nnc__run_save(R, "best.ckpt");
        R->t_excluded += nnc__now() - t1;
    }
    return s;
}

static void emit_step(nnc_run *R, double loss_sum, long n, long correct, long seen, double *img_t0,
                      long *img_seen0, float lr)
{
    if (!R->c.on_step || n == 0) return;
    double now = nnc__run_seconds(R);
    nnc_step_info si = {.step = R->rep[0]->steps,
                        .total_steps = R->plan,
                        .epoch = R->spe ? (double)R->rep[0]->steps / R->spe : 0.0,
                        .seconds = now,
                        .loss = loss_sum / n,
                        .acc = seen ? (double)correct / seen : 0.0,
                        .lr = lr,
                        .images_per_sec = now > *img_t0 ? (double)(seen) / (now - *img_t0) : 0.0};
    *img_t0 = now;
    *img_seen0 = 0;
    R->c.on_step(&si, R->c.ud);
}

/* The plain single-replica loop (workers 1, algo sgd). */
static int run_single(nnc_run *R)
{
    nnc_replica *r = R->rep[0];
    nnc_train_result *res = R->res;
    int log_every = R->c.log_every > 0 ? R->c.log_every : (int)(R->spe / 10 > 0 ? R->spe / 10 : 1);
    double wloss = 0.0, eloss = 0.0, t_img = nnc__run_seconds(R);
    long wn = 0, wc = 0, ws = 0, en = 0, ec = 0, es = 0, img0 = 0;
    float lr = R->c.lr;
    int skip = R->c.nan_policy == NNC_NAN_SKIP;
    for (;;) {
        if (R->user->stop && *R->user->stop) {
            res->stopped_by_signal = (int)*R->user->stop;
            res->steps = res->local_steps[0] = r->steps; /* so epochs/summary describe the stopped run */
            int s = R->c.ckpt_dir ? nnc__run_save(R, "last.ckpt") : NNC_OK;
            if (s) return s;
            return nnc__fail(NNC_EINTERRUPTED, "stopped by signal %d after step %ld%s", res->stopped_by_signal,
                             r->steps, R->c.ckpt_dir ? " (checkpoint written)" : "");
        }
        if (R->plan && r->steps >= R->plan) break;
        if (R->c.time_budget > 0 && nnc__run_seconds(R) >= R->c.time_budget) break;
        lr = nnc__run_lr(R, r->steps, nnc__run_seconds(R));
        double loss = NAN;
        long c0 = r->correct, s0 = r->seen;
        if (skip) memcpy(r->buf_save, r->p->buf, r->p->n_buf * sizeof(float));
        int s = nnc__replica_step(r, lr, &loss);
        if (s == NNC_EDIVERGED && !skip)
            return nnc__fail(NNC_EDIVERGED, "%s at step %ld (epoch %.2f); stopped (--nan-policy stop), "
                             "parameters and the last checkpoint are from before this step",
                             isfinite(loss) ? "non-finite gradient" : "non-finite loss", r->steps + 1,
                             (double)r->steps / R->spe);
        if (s == NNC_EDIVERGED) {
            /* Skip: parameters and momentum were not touched; undo the forward's BN updates and
             * its counts, consume the step. */
            memcpy(r->p->buf, r->buf_save, r->p->n_buf * sizeof(float));
            r->correct = c0, r->seen = s0;
            r->steps++;
            res->skipped_steps++;
            nnc__run_log(R, "step %ld: non-finite %s (loss %g), step skipped (%ld skipped so far)", r->steps,
                         isfinite(loss) ? "gradient" : "loss", loss, res->skipped_steps);
        } else if (s) {
            return s;
        } else {
            long dc = r->correct - c0, dsn = r->seen - s0;
            wloss += loss, wn++, wc += dc, ws += dsn;
            eloss += loss, en++, ec += dc, es += dsn;
            img0 += dsn;
        }
        if (r->steps % log_every == 0) {
            emit_step(R, wloss, wn, wc, ws, &t_img, &img0, lr);
            wloss = 0.0, wn = wc = ws = 0;
        }
        if (r->steps % R->spe == 0) {
            res->train_loss = en ? eloss / en : NAN;
            res->train_acc = es ? (double)ec / es : 0.0;
            eloss = 0.0, en = ec = es = 0;
            long epoch = r->steps / R->spe;
            int last = R->plan && r->steps >= R->plan;
            if (!last && R->c.eval_every_epochs && epoch % R->c.eval_every_epochs == 0 &&
                (s = nnc__run_evaluate(R)))
                return s;
            if (R->c.ckpt_dir) {
                double t1 = nnc__now();
                s = nnc__run_save_epoch(R, epoch);
                R->t_excluded += nnc__now() - t1;
                if (s) return s;
            }
        }
    }
    if (wn) emit_step(R, wloss, wn, wc, ws, &t_img, &img0, lr);
    if (en) {
        res->train_loss = eloss / en;
        res->train_acc = es ? (double)ec / es : 0.0;
    }
    res->local_steps[0] = r->steps;
    res->steps = r->steps;
    return NNC_OK;
}

/* The epoch the run ended on, when it ended exactly at an epoch end (else 0). */
static long end_epoch(const nnc_run *R)
{
    if (!R->spe) return 0;
    if (R->M == 1 && R->c.algo == NNC_ALGO_SGD)
        return R->rep[0]->steps % R->spe == 0 ? R->rep[0]->steps / R->spe : 0;
    for (int i = 0; i < R->M; i++)
        if (!R->plan || R->rep[i]->steps < R->plan) return 0;
    return R->c.epochs;
}

int nnc_train(const nnc_train_config *cfg, const nnc_dataset *train, const nnc_dataset *test,
              nnc_train_result *out)
{
    NNC_ASSERT(cfg && train && out, "nnc_train: NULL config, dataset or result");
    memset(out, 0, sizeof *out);
    out->test_acc = out->test_loss = NAN;
    out->center_test_acc = out->average_test_acc = NAN;
    nnc_run *R = nnc__calloc(1, sizeof *R);
    if (!R) return nnc__fail(NNC_ENOMEM, "training: out of memory");
    R->c = *cfg;
    R->user = cfg;
    R->train = train;
    R->test = test;
    R->res = out;
    int s = resolve(&R->c, train);
    if (!s && test && (test->c != train->c || test->h != train->h || test->w != train->w))
        s = nnc__fail(NNC_EINVAL, "test set '%s' has images %dx%dx%d, training set '%s' %dx%dx%d", test->name,
                      test->c, test->h, test->w, train->name, train->c, train->h, train->w);
    if (!s) {
        R->M = R->c.workers;
        R->per_layer = R->c.algo == NNC_ALGO_LGRAWA;
        out->workers = R->M;
        /* Kernel threads are process-wide: one per replica when M > 1. BLAS stays
         * single-threaded: its GEMMs are called from the kernel pool's threads, which already
         * split the batch. Only changed when different, so concurrent runs with the same
         * setting never touch them. */
        int want = R->M > 1 ? 1 : R->c.threads;
        if (nnc_threads() != want && (s = nnc_set_threads(want)))
            s = nnc__fail_prefix(s, "training: %d kernel threads", want);
        if (!s && nnc_blas_threads() != 1) nnc_blas_set_threads(1);
        if (!s && nnc_get_precision() != R->c.precision && (s = nnc_set_precision(R->c.precision)))
            s = nnc__fail_prefix(s, "training");
        if (!s) s = run_setup(R);
    }
    if (!s && R->c.resume) s = nnc__run_load(R);
    int done = 0;
    if (!s && R->c.resume && R->plan) {
        done = 1;
        for (int i = 0; i < R->M; i++) done &= R->rep[i]->steps >= R->plan;
        if (done) {
            nnc__run_log(R, "already at epoch %.2f >= target %d epochs: nothing to train, checkpoints "
                         "left unchanged", (double)R->rep[0]->steps / R->spe, R->c.epochs);
            out->steps = R->M == 1 && R->c.algo == NNC_ALGO_SGD ? R->rep[0]->steps : R->total_steps;
            out->rounds = R->round;
            for (int i = 0; i < R->M; i++) out->local_steps[i] = R->rep[i]->steps;
        }
    }
    if (!s && !done) {
        R->t_start = nnc__now();
        if (R->M == 1 && R->c.algo == NNC_ALGO_SGD) {
            s = run_single(R);
            out->steps = out->local_steps[0] = R->rep[0]->steps;  /* also when stopped or failed */
        } else {
            s = nnc__run_workers(R);
        }
        out->seconds = nnc__run_seconds(R);
        out->epochs = R->spe ? (double)out->steps / ((double)R->spe * R->M) : 0.0;
        out->images_per_sec = out->seconds > 0 ? (double)out->steps * R->c.batch / out->seconds : 0.0;
    }
    if (!s && !done) s = nnc__run_evaluate(R);
    if (!s && R->c.ckpt_dir && !done) s = nnc__run_save_epoch(R, end_epoch(R));
    if (s) {
        /* Keep the failing thread's message while the run is torn down. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nnc_error_message());
        run_free(R);
        nnc__free(R);
        return nnc__fail(s, "%s", msg);
    }
    run_free(R);
    nnc__free(R);
    return NNC_OK;
}
