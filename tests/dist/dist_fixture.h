/* tests/dist/dist_fixture.h - shared helpers for the dist suites: a small learnable in-memory
 * dataset (no files), a default tiny-model config, callback recorders and checkpoint readers. */
#ifndef NNC_TEST_DIST_FIXTURE_H
#define NNC_TEST_DIST_FIXTURE_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "nn/checkpoint.h"
#include "nn/nnc.h"

/* n images 1x8x8 of 4 classes: class k has a bright quadrant k over uniform noise. */
static inline nnc_dataset *fx_dataset(int n, uint64_t seed)
{
    nnc_dataset *d = nnc__calloc(1, sizeof *d);
    snprintf(d->name, sizeof d->name, "synthetic");
    d->n = n, d->c = 1, d->h = 8, d->w = 8, d->num_classes = 4;
    d->images = nnc__calloc((size_t)n * 64, 1);
    d->labels = nnc__calloc((size_t)n, sizeof(int));
    d->mean[0] = 0.3f;
    d->std[0] = 0.3f;
    nnc_rng r;
    nnc_rng_seed(&r, seed, 99);
    for (int i = 0; i < n; i++) {
        int k = i % 4;
        d->labels[i] = k;
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int q = (y >= 4) * 2 + (x >= 4);
                d->images[(size_t)i * 64 + y * 8 + x] =
                    (uint8_t)(nnc_rng_below(&r, 90) + (q == k ? 140 : 0));
            }
    }
    return d;
}

static inline void fx_dataset_free(nnc_dataset *d)
{
    nnc__free(d->images);
    nnc__free(d->labels);
    nnc__free(d);
}

static inline nnc_train_config fx_config(nnc_algo algo, int workers)
{
    nnc_train_config c = nnc_train_config_default();
    c.model = "tiny";
    c.batch = 16;
    c.augment = 0;
    c.lr = 0.05f;
    c.sgd.weight_decay = 0.0f;
    c.epochs = 4;
    c.seed = 5;
    c.workers = workers;
    c.algo = algo;
    c.sync = NNC_SYNC_LOCKSTEP;
    c.probe_batch = 32;
    c.bn_reestimate_batches = 2;
    c.eval_every_epochs = 0;
    c.sync_timeout = 20;
    return c;
}

/* Records of the callbacks. */
typedef struct fx_trace {
    int rounds, steps, logs, evals;
    double first_loss, last_loss;
    double round_loss[256];
    uint64_t hash;          /* FNV over every on_round / on_step value */
    char log[8][256];       /* on_log lines but the run's placement plan and its warning: */
    char plan[2][256];      /* those go here */
    int plan_logs;
    long stop_at_round;     /* set *stop when this round is reported (0 = never) */
    volatile sig_atomic_t *stop;
    double step_loss[512];
} fx_trace;

static inline void fx_hash(fx_trace *t, const void *p, size_t n)
{
    const unsigned char *b = p;
    if (!t->hash) t->hash = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) t->hash = (t->hash ^ b[i]) * 1099511628211ULL;
}

static inline void fx_on_round(const nnc_round_info *r, void *ud)
{
    fx_trace *t = ud;
    if (t->rounds < 256) t->round_loss[t->rounds] = r->loss;
    if (t->rounds == 0) t->first_loss = r->loss;
    t->last_loss = r->loss;
    t->rounds++;
    fx_hash(t, &r->round, sizeof r->round);
    fx_hash(t, r->norm, sizeof(double) * r->workers);
    fx_hash(t, r->weight, sizeof(double) * r->workers);
    fx_hash(t, r->distance, sizeof(double) * r->workers);
    fx_hash(t, r->local_steps, sizeof(long) * r->workers);
    fx_hash(t, &r->loss, sizeof r->loss);
    if (t->stop && t->stop_at_round == r->round) *t->stop = 2;
}

static inline void fx_on_step(const nnc_step_info *s, void *ud)
{
    fx_trace *t = ud;
    if (t->steps < 512) t->step_loss[t->steps] = s->loss;
    if (t->steps == 0 && t->rounds == 0) t->first_loss = s->loss;
    t->steps++;
}

static inline void fx_on_log(const char *line, void *ud)
{
    fx_trace *t = ud;
    if (!strncmp(line, "placement: ", 11) || strstr(line, "oversubscribed, threads not pinned")) {
        if (t->plan_logs < 2) snprintf(t->plan[t->plan_logs], sizeof t->plan[0], "%s", line);
        t->plan_logs++;
        return;
    }
    if (t->logs < 8) snprintf(t->log[t->logs], sizeof t->log[0], "%s", line);
    t->logs++;
}

static inline void fx_on_eval(const nnc_eval_info *e, void *ud)
{
    fx_trace *t = ud;
    t->evals++;
    (void)e;
}

static inline void fx_hook(nnc_train_config *c, fx_trace *t)
{
    memset(t, 0, sizeof *t);
    c->on_round = fx_on_round;
    c->on_step = fx_on_step;
    c->on_log = fx_on_log;
    c->on_eval = fx_on_eval;
    c->ud = t;
}

/* A fresh temp folder for checkpoints (caller removes it with fx_rmdir). */
static inline char *fx_tmpdir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/nnc_dist_XXXXXX");
    cr_assert_not_null(mkdtemp(buf));
    return buf;
}

static inline void fx_rmdir(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Load params (prefix "", "w0/", ...) of ckpt dir/name into a fresh `model` (1x8x8, 4 classes). */
static inline nnc_model *fx_load_model_of(const char *model, const char *dir, const char *name,
                                          const char *prefix)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_load(path, &c), NNC_OK, "%s", nnc_error_message());
    nnc_model_config mc = {.in_channels = 1, .image_size = 8, .num_classes = 4};
    nnc_model *m;
    cr_assert_eq(nnc_model_new(model, &mc, 1, &m), NNC_OK);
    cr_assert_eq(nnc_ckpt_get_params(c, prefix, nnc_model_params(m)), NNC_OK, "%s", nnc_error_message());
    nnc_ckpt_free(c);
    return m;
}

/* The same for the default "tiny" model. */
static inline nnc_model *fx_load_model(const char *dir, const char *name, const char *prefix)
{
    return fx_load_model_of("tiny", dir, name, prefix);
}

static inline int fx_same_params(nnc_model *a, nnc_model *b)
{
    nnc_params *pa = nnc_model_params(a), *pb = nnc_model_params(b);
    return pa->n_data == pb->n_data && pa->n_buf == pb->n_buf &&
           memcmp(pa->data, pb->data, pa->n_data * sizeof(float)) == 0 &&
           memcmp(pa->buf, pb->buf, pa->n_buf * sizeof(float)) == 0;
}

#endif
