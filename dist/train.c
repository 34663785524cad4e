/* dist/train.c - nnc_train: config resolution, run set-up and teardown (the single-replica loop:
 * single.c; multi-worker rounds: sync.c and worker.c; evaluation: evaluate.c). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/run.h"
#include "nn/blas.h"
#include "nn/threads.h"

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
    c.slow_momentum = -1.0f;
    c.slow_lr = 0.0f;
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

/* Fill algorithm defaults and check every value; errors name the field and the value. */
static int resolve(nnc_train_config *c, const nnc_dataset *train)
{
    if (c->workers < 1 || c->workers > NNC_MAX_WORKERS)
        return nnc__fail(NNC_EINVAL, "workers must be in 1..%d, found %d", NNC_MAX_WORKERS, c->workers);
    const nnc_algo_def *A = nnc_algo_get(c->algo);
    if (!A) return nnc__fail(NNC_EINVAL, "unknown algorithm %d", (int)c->algo);
    if ((A->flags & NNC_ALGO_F_SINGLE) && c->workers != 1) {
        char list[256];
        size_t o = 0;
        for (int i = 0; i < nnc_algo_count() && o < sizeof list; i++)
            if (!(nnc_algo_at(i)->flags & NNC_ALGO_F_SINGLE))
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", nnc_algo_at(i)->name);
        return nnc__fail(NNC_EINVAL, "algorithm %s trains one replica: workers must be 1, found %d (use %s)",
                         A->name, c->workers, list);
    }
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
    if (c->tau == 0) c->tau = A->tau;
    if (c->pull < 0.0f) c->pull = A->pull;
    if (c->prox < 0.0f) c->prox = A->prox;
    if (c->slow_momentum < 0.0f) c->slow_momentum = (A->flags & NNC_ALGO_F_SLOWMO) ? 0.7f : 0.0f;
    if (c->slow_lr <= 0.0f) c->slow_lr = 1.0f;
    if (!(c->slow_momentum < 1.0f) || !isfinite(c->slow_lr) || c->slow_lr > 1e6f)
        return nnc__fail(NNC_EINVAL, "slow momentum must be in [0, 1) and slow lr in (0, 1e6], found %g and %g",
                         (double)c->slow_momentum, (double)c->slow_lr);
    if ((c->slow_momentum > 0.0f || c->slow_lr != 1.0f) && !(A->flags & NNC_ALGO_F_SLOW_MOMENTUM))
        return nnc__fail(NNC_EINVAL, "slow momentum %g, slow lr %g: algorithm %s has no center to move with "
                         "momentum (use slowmo, mgrawa, lgrawa or local-sgd)", (double)c->slow_momentum,
                         (double)c->slow_lr, A->name);
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
    if (c->threads_per_worker < 0 || c->threads_per_worker > NNC_TEAM_MAX_THREADS)
        return nnc__fail(NNC_EINVAL, "threads per worker must be in 0..%d (0 = cores / workers), found %d",
                         NNC_TEAM_MAX_THREADS, c->threads_per_worker);
    if (c->placement != NNC_PLACEMENT_AUTO && c->placement != NNC_PLACEMENT_NONE)
        return nnc__fail(NNC_EINVAL, "unknown placement %d (expected auto or none)", (int)c->placement);
    if (c->eval_every_epochs < 0)
        return nnc__fail(NNC_EINVAL, "eval every must be >= 0 epochs (0 = only at the end), found %d",
                         c->eval_every_epochs);
    if (!(c->eval_seconds >= 0.0) || !isfinite(c->eval_seconds))
        return nnc__fail(NNC_EINVAL, "eval seconds must be finite and >= 0 (0 = no time grid), found %g", c->eval_seconds);
    if (c->link.bytes_per_s != 0.0 &&
        (!(c->link.bytes_per_s > 0.0) || !isfinite(c->link.bytes_per_s) || !(c->link.latency_s >= 0.0) ||
         !isfinite(c->link.latency_s)))
        return nnc__fail(NNC_EINVAL, "link must have a finite latency >= 0 s and bandwidth > 0 B/s (0 = none), "
                         "found %g s, %g B/s", c->link.latency_s, c->link.bytes_per_s);
    if (c->log_every < 0) return nnc__fail(NNC_EINVAL, "log every must be >= 0 steps (0 = auto), found %d", c->log_every);
    if (c->resume && !c->ckpt_dir) return nnc__fail(NNC_EINVAL, "resume needs a checkpoint folder");
    if (c->keep_epochs < 0) return nnc__fail(NNC_EINVAL, "keep must be >= 0 (0 = no epoch checkpoints), found %d", c->keep_epochs);
    if ((unsigned)c->nan_policy > NNC_NAN_SKIP)
        return nnc__fail(NNC_EINVAL, "unknown non-finite policy %d (expected stop or skip)", (int)c->nan_policy);
    if (c->nan_policy == NNC_NAN_SKIP && (c->workers != 1 || !(A->flags & NNC_ALGO_F_SINGLE)))
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
    for (int i = 0; i < NNC_MAX_WORKERS; i++) nnc_team_free(R->team[i]);
    nnc__plan_free(&R->place);
    nnc__topo_free(&R->topo);
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
    nnc__free(R->slow_u);
    nnc__free(R->slow_x0);
}

/* FNV-1a over the text of every setting that must agree between ranks (the numbers, and what
 * decides which collective steps a run takes: evaluation, checkpoints). */
static uint64_t config_hash(const nnc_run *R)
{
    const nnc_train_config *c = &R->c;
    char t[1024];
    int n = snprintf(t, sizeof t,
                     "%s|%d,%d,%d|%d %d %ld|%a %a %a %d %d|%d %a %a %d %ld %ld %a|%d %a %llu|%d %d %d %d|%a %a %a "
                     "%a %d %d %d|%d %d %d %d %d|%d %d %d %d %ld|%a %a",
                     c->model, c->model_cfg.in_channels, c->model_cfg.image_size, c->model_cfg.num_classes,
                     c->batch, c->augment, c->limit_train, (double)c->lr, (double)c->sgd.momentum,
                     (double)c->sgd.weight_decay, c->sgd.nesterov, c->sgd.decay_bn_bias, (int)c->sched.kind,
                     (double)c->sched.gamma, (double)c->sched.min_lr, c->sched.step_epochs, c->sched.total_steps,
                     c->sched.warmup_steps, c->sched.drop_seconds,
                     c->epochs, c->time_budget, (unsigned long long)c->seed, c->workers, (int)c->algo,
                     (int)c->sync, c->tau, (double)c->pull, (double)c->prox, (double)c->easgd_beta,
                     (double)c->sam_rho, (int)c->norm_kind, c->probe_batch, c->bn_reestimate_batches, R->train->n,
                     R->train->c, R->train->h, R->train->num_classes, c->resume, c->eval_every_epochs,
                     c->ckpt_dir != NULL, c->keep_epochs, (int)c->nan_policy, R->test ? (long)R->test->n : -1L,
                     (double)c->slow_momentum, (double)c->slow_lr);
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
    if ((s = nnc__run_plan_teams(R))) return s;
    for (int i = 0; i < R->M; i++)
        if ((s = nnc__run_replica_new_placed(R, i))) return s;
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
    /* Slow momentum: u = 0, x0 = the common initial model. */
    R->slow = (R->A->flags & NNC_ALGO_F_SLOWMO) || c->slow_momentum > 0.0f || c->slow_lr != 1.0f;
    R->slow_beta = c->slow_momentum;
    R->slow_alpha = c->slow_lr;
    if (R->slow) {
        R->slow_u = nnc__calloc(n, sizeof(float));
        R->slow_x0 = nnc__calloc(n, sizeof(float));
        if (!R->slow_u || !R->slow_x0)
            return nnc__fail(NNC_ENOMEM, "training: cannot allocate the slow momentum (%zu floats)", n);
        memcpy(R->slow_x0, p->data, p->n_data * sizeof(float));
    }
    R->spe = nnc_loader_batches_per_epoch(R->rep[0]->loader);
    R->plan = (long)c->epochs * R->spe;
    c->sched.base_lr = c->lr;
    c->sched.steps_per_epoch = R->spe;
    if (c->sched.total_steps == 0) c->sched.total_steps = R->plan;
    R->prox = c->tau > 0 ? (double)c->prox / c->tau : 0.0;
    R->best_acc = -1.0;
    return NNC_OK;
}

/* The epoch the run ended on, when it ended exactly at an epoch end (else 0). */
static long end_epoch(const nnc_run *R)
{
    if (!R->spe) return 0;
    if (R->A->flags & NNC_ALGO_F_SINGLE)
        return R->rep[0]->steps % R->spe == 0 ? R->rep[0]->steps / R->spe : 0;
    for (int i = 0; i < R->M; i++)
        if (!R->plan || R->rep[i]->steps < R->plan) return 0;
    return R->c.epochs;
}

nnc_ckpt_progress nnc__run_progress(const nnc_run *R, double seconds)
{
    nnc_ckpt_progress p = {.steps_per_epoch = R->spe, .rounds = R->round, .seconds = seconds,
                           .workers = R->M, .algo = R->c.algo, .sync = R->c.sync, .budget_done = R->budget_done};
    for (int i = 0; i < R->M; i++)
        if (i == 0 || R->rep[i]->steps < p.min_steps) p.min_steps = R->rep[i]->steps;
    p.steps = (R->A->flags & NNC_ALGO_F_SINGLE) ? R->rep[0]->steps : R->total_steps;
    p.epoch = R->spe ? (double)R->rep[0]->steps / (double)R->spe : 0.0;
    return p;
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
    const nnc_precision caller_prec = nnc_get_precision();
    int prec_set = 0;
    int s = resolve(&R->c, train);
    if (!s && test && (test->c != train->c || test->h != train->h || test->w != train->w))
        s = nnc__fail(NNC_EINVAL, "test set '%s' has images %dx%dx%d, training set '%s' %dx%dx%d", test->name,
                      test->c, test->h, test->w, train->name, train->c, train->h, train->w);
    if (!s) {
        R->M = R->c.workers;
        R->A = nnc_algo_get(R->c.algo);
        R->per_layer = (R->A->flags & NNC_ALGO_F_PER_LAYER) != 0;
        out->workers = R->M;
        /* Each replica runs on the run's own kernel thread team (run_setup). BLAS stays
         * single-threaded: its GEMMs are called from the teams' threads, which already split the
         * batch. Only changed when different, so concurrent runs never touch it. */
        if (nnc_blas_threads() != 1) nnc_blas_set_threads(1);
        /* The run's precision is its teams' (dist/teams.c) and the calling thread's while it
         * runs (it evaluates, and is team 0's thread 0 with one replica); the caller's own comes
         * back at the end. Nothing process-wide: concurrent runs keep their own. */
        if ((s = nnc_set_precision(R->c.precision))) s = nnc__fail_prefix(s, "training");
        else prec_set = 1;
        if (!s) s = run_setup(R);
    }
    /* One replica: the caller's thread is its team's thread 0 for the whole run (training,
     * evaluation, checkpoints); its own team and affinity come back at the end. */
    int entered = 0;
    if (!s && (R->A->flags & NNC_ALGO_F_SINGLE)) {
        s = nnc_team_enter(R->team[0]);
        entered = !s;
    }
    if (!s && R->c.resume) s = nnc__run_load(R);
    int done = 0;
    if (!s && R->c.resume) {
        nnc_ckpt_progress p = nnc__run_progress(R, R->t_resumed); /* the clock has not started */
        done = nnc_train_ckpt_finished(&p, R->c.epochs, R->c.time_budget);
        if (done && nnc_train_ckpt_finished(&p, R->c.epochs, 0.0))
            nnc__run_log(R, "already at epoch %.2f >= target %d epochs: nothing to train, checkpoints left "
                         "unchanged", (double)R->rep[0]->steps / R->spe, R->c.epochs);
        else if (done)
            nnc__run_log(R, "already trained %.1f s of the %g s budget: nothing to train, checkpoints left "
                         "unchanged", R->t_resumed, R->c.time_budget);
        if (done) {
            out->steps = R->A->flags & NNC_ALGO_F_SINGLE ? R->rep[0]->steps : R->total_steps;
            out->rounds = R->round;
            for (int i = 0; i < R->M; i++) out->local_steps[i] = R->rep[i]->steps;
        }
    }
    if (!s && !done) {
        R->t_start = nnc__now();
        if (R->c.eval_seconds > 0) R->next_eval_slot = (long)floor(R->t_resumed / R->c.eval_seconds) + 1;
        if (R->A->flags & NNC_ALGO_F_SINGLE) {
            s = nnc__run_single(R);
            out->steps = out->local_steps[0] = R->rep[0]->steps;  /* also when stopped or failed */
        } else {
            s = nnc__run_workers(R);
        }
        out->seconds = nnc__run_seconds(R);
        if (!s && R->c.time_budget > 0) {
            /* ended by the budget unless the epochs were reached first */
            nnc_ckpt_progress p = nnc__run_progress(R, out->seconds);
            if (!nnc_train_ckpt_finished(&p, R->c.epochs, 0.0)) R->budget_done = R->c.time_budget;
        }
        R->ended = 1;
        R->end_seconds = out->seconds;
        out->epochs = R->spe ? (double)out->steps / ((double)R->spe * R->M) : 0.0;
        out->images_per_sec = out->seconds > 0 ? (double)out->steps * R->c.batch / out->seconds : 0.0;
    }
    if (!s && !done) s = nnc__run_evaluate(R);
    if (!s && R->c.ckpt_dir && !done) s = nnc__run_save_epoch(R, end_epoch(R));
    if (entered) nnc_team_leave(R->team[0]);
    if (prec_set) (void)nnc_set_precision(caller_prec);
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
