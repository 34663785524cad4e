/* dist/algo.h - the distributed-training algorithm interface and its registry.
 *
 * Every algorithm of `nnc train --algo NAME` is one nnc_algo_def in its own file
 * (dist/algo_<family>.c) plus one line in the registry (dist/algo.c). The worker loop, the
 * round protocol (dist/sync.c), the transport and checkpointing (dist/runckpt.c) name no
 * algorithm: they read the capability flags below and call the hooks. Adding an algorithm =
 * one file defining its nnc_algo_def + one registry line (dist/algo_slowmo.c is the example;
 * docs/algorithms.md, "Adding an algorithm").
 *
 * A round, with every worker parked, in this order (sync.c, do_round):
 *   1. ok[i] = worker i finite (the protocol checks parameters, loss, gradient);
 *   2. weights(R, ri, why): the unnormalised reduction weights R->u (M, or M*L per layer),
 *      u = 0 where !ok; may clear ok[i] (naming why[i]); fills ri->norm / ri->weight;
 *   3. center(R, x, ri): the combined vector (transport reductions of x in global worker
 *      order) into R->center, the pull / proximity target into R->pub;
 *   4. slow momentum (optional, NNC_ALGO_F_SLOW_MOMENTUM, when R->slow): the center moves
 *      with momentum (algo_slowmo.c), R->center = R->pub = x0;
 *   5. pull_coef(R, i): the coefficient c_i of worker i's pull x_i <- (1 - c_i) x_i + c_i pub.
 * Between rounds every local step moves the worker toward R->pub with strength prox / tau.
 *
 * Thread-safety: the definitions are immutable; hooks run on the synchronizer with every
 * worker parked, or (gradient) on worker i's own thread touching only its replica.
 */
#ifndef NNC_DIST_ALGO_H
#define NNC_DIST_ALGO_H

#include "dist/dist.h"

typedef struct nnc_run nnc_run;
typedef struct nnc_replica nnc_replica;

/* Capability flags. */
enum {
    NNC_ALGO_F_SINGLE = 1 << 0,        /* one replica on the calling thread, no rounds (sgd) */
    NNC_ALGO_F_PROBE = 1 << 1,         /* workers compute probe gradient norms before a round */
    NNC_ALGO_F_PER_LAYER = 1 << 2,     /* one weight per worker and layer (R->u is M*L) */
    NNC_ALGO_F_GRADIENTS = 1 << 3,     /* a round every step combines gradients (data parallel):
                                          the replicas stay identical, the center is replica 0 */
    NNC_ALGO_F_REPORT_AVERAGE = 1 << 4,/* the reported model (test_acc, best.ckpt) is the uniform
                                          average of the workers; else the center */
    NNC_ALGO_F_LOSS_HISTORY = 1 << 5,  /* keep each worker's ring of recent losses (LSGD) */
    NNC_ALGO_F_SLOW_MOMENTUM = 1 << 6, /* the center may move with slow momentum (--slow-momentum) */
    NNC_ALGO_F_SLOWMO = 1 << 7         /* slow momentum always on (defaults beta 0.7, alpha 1) */
};

/* A named float vector of algorithm state that checkpoints save and restore (section name) and
 * a resume sends from rank 0 to every rank. */
typedef struct nnc_algo_vec {
    const char *name;
    float *data;
    size_t n;
} nnc_algo_vec;
#define NNC_ALGO_MAX_STATE 4

typedef struct nnc_algo_def {
    nnc_algo id;
    const char *name;
    const char *alias;                 /* another accepted name, or NULL */
    const char *summary;               /* one line for help */
    int tau;                           /* default communication period */
    float pull, prox;                  /* default c and p */
    unsigned flags;
    /* Round hooks (synchronizer, every worker parked); NULL where the algorithm has no rounds. */
    int (*weights)(nnc_run *R, nnc_round_info *ri, const char **why);
    int (*center)(nnc_run *R, const float *const *x, nnc_round_info *ri);
    double (*pull_coef)(const nnc_run *R, int i);
    /* Data parallel: the gradient worker i contributes for the loaded batch of n images (its
     * thread); *loss the batch loss, *correct (may be NULL) its right predictions; NNC_EDIVERGED
     * or a non-finite gradient makes the worker non-finite for the round. */
    int (*gradient)(nnc_run *R, nnc_replica *r, int n, double *loss, long *correct);
    /* The algorithm's own synchronizer state beyond the center, the target and the per-worker
     * records (dist/record.c): up to NNC_ALGO_MAX_STATE vectors into v, returns how many;
     * NULL: none. */
    int (*state)(const nnc_run *R, nnc_algo_vec *v);
} nnc_algo_def;

/* The registered algorithm called name (or its alias), NULL if none. */
const nnc_algo_def *nnc_algo_find(const char *name);
/* The definition of id (never NULL for a valid id; NULL otherwise). */
const nnc_algo_def *nnc_algo_get(nnc_algo id);
/* Registry listing: the i-th algorithm (0 <= i < nnc_algo_count()), in help order. */
int nnc_algo_count(void);
const nnc_algo_def *nnc_algo_at(int i);
/* The registered name closest to s (edit distance, for "did you mean"), NULL if none is close. */
const char *nnc_algo_suggest(const char *s);

/* The definitions (one per file). */
extern const nnc_algo_def nnc__algo_sgd, nnc__algo_mgrawa, nnc__algo_lgrawa, nnc__algo_local_sgd,
    nnc__algo_easgd, nnc__algo_lsgd, nnc__algo_dp, nnc__algo_dp_sam, nnc__algo_slowmo;

/* Shared round pieces the algorithm files combine (dist/algo.c). */
/* u_i = 1 for ok workers, else 0; ri->weight = u_i / sum u (uniform weights). */
int nnc__algo_uniform_weights(nnc_run *R, nnc_round_info *ri, const char **why);
/* R->center = sum_i u_i x_i / sum_i u_i over all workers (per layer with NNC_ALGO_F_PER_LAYER),
 * R->pub = R->center. */
int nnc__algo_weighted_center(nnc_run *R, const float *const *x, nnc_round_info *ri);
/* c_i = the configured pull for every worker. */
double nnc__algo_config_pull(const nnc_run *R, int i);

/* Slow momentum (SlowMo, algo_slowmo.c), per element j over n floats, gamma the local learning
 * rate, beta the slow momentum, alpha the slow learning rate:
 *     d = x0 - avg;  u <- beta u + d / gamma;  x0 <- x0 - alpha (beta gamma u_old + d)
 * (the last is x0 - alpha gamma u_new, written so that beta = 0, alpha = 1 gives x0 = avg
 * exactly: the double difference of two floats is exact). */
void nnc__slowmo_update(float *x0, float *u, const float *avg, double beta, double alpha, double gamma,
                        size_t n);
/* The slow-momentum step of a round with R->slow: R->center (the round's average) becomes the
 * new x0 and the target (R->pub). */
int nnc__slowmo_round(nnc_run *R);
/* The state hook of the algorithms with NNC_ALGO_F_SLOW_MOMENTUM: u ("run/slow_u") and x0
 * ("run/slow_x0") when the run has slow momentum, else nothing. */
int nnc__slowmo_state(const nnc_run *R, nnc_algo_vec *v);

#endif
