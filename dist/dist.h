/* dist/dist.h - training: one replica or M pthread worker replicas with GRAWA and its baselines.
 *
 * nnc_train() is the whole training run behind `./nnc train`: it builds the model, M replicas
 * (each with params, grads, optimizer state, BN statistics, step graph, data shard and RNG
 * stream, all from one initialisation), starts M persistent worker threads (M > 1, or any
 * algorithm other than sgd) while the calling thread acts as the synchronizer/coordinator,
 * runs until the epochs or the time budget are used up (a time budget ends at the deadline:
 * workers stop taking local steps when the training clock reaches it and one last round closes
 * the run, docs/algorithms.md "How a run ends"),
 * evaluates, and joins every thread. `workers 1, algo sgd` is the plain single-replica loop on
 * the calling thread. Algorithms follow docs/algorithms.md; each is one nnc_algo_def
 * (dist/algo.h; one file per family, a registry line in dist/algo.c), the math is dist/grawa.h,
 * the communication seam dist/transport.h, the thread protocol dist/sync.c and dist/worker.c.
 *
 * Implementation choices the algorithms leave open: the GRAWA probe leaves BN running
 * statistics untouched (saved and restored around its train-mode forward); the center combines
 * trained parameters only, and its BN buffers (used for resets, checkpoints and evaluation
 * without re-estimation) are the uniform average of the finite workers'; a worker with a
 * non-finite norm, loss or parameters gets weight 0, is reset to the center (EASGD: the old center,
 * LSGD: the leader) with its momentum zeroed, and its EMA keeps its last finite value.
 * Evaluation (M > 1): "center" is the GRAWA/EASGD center, the last local-sgd average, the last
 * LSGD leader, or replica 0 for DP (all replicas are identical); "average" is the uniform
 * average of the workers; both get BN statistics re-estimated (bn_reestimate_batches). The
 * reported test_acc is the average for LSGD and local-sgd (as the public code), else the center;
 * that model, with its re-estimated BN statistics, is what checkpoints taken at the evaluated
 * state store as their model sections (docs/checkpoints.md), so evaluating best.ckpt reproduces
 * the recorded accuracy exactly. The stop flag is polled inside evaluation and BN re-estimation:
 * a stop there abandons the evaluation, writes last.ckpt (the state it started from) and returns
 * NNC_EINTERRUPTED.
 * The time-drop schedule reads the training seconds published at the last round (M > 1).
 *
 * Progress reaches the caller only through the callbacks (library code never prints); they are
 * called from the thread that called nnc_train() (the coordinator), never concurrently.
 *
 * Errors: NNC_EINVAL (bad config: every field is checked before anything is built, the message
 * names it and the value), NNC_ENOMEM (out of memory, also a step arena that cannot hold a
 * batch's activations, in any worker), NNC_EFORMAT (resume: a checkpoint value out of range or
 * a non-finite tensor, naming file, section and field), NNC_EDIVERGED (all workers non-finite / loss non-finite with
 * no recovery), NNC_ETIMEOUT (stalled worker or MPI rank: message names it and the round), NNC_ETHREAD (a
 * worker failed: its message), NNC_EINTERRUPTED (stop flag set: a checkpoint was written),
 * NNC_EIO (checkpoint write failed). Every thread is joined before nnc_train() returns.
 *
 * Non-finite steps (nan_policy): a step whose loss or gradient is non-finite is never applied.
 * One replica (algo sgd): NNC_NAN_STOP returns NNC_EDIVERGED at that step (last.ckpt stays the
 * last good one; no checkpoint with non-finite values is ever written); NNC_NAN_SKIP (llm.c
 * style) skips it - parameters and momentum bitwise unchanged, BN running statistics restored,
 * the batch consumed and the step counted as taken for the schedule - reports it through on_log,
 * counts it in nnc_train_result.skipped_steps and trains on. M > 1: the worker is always reset
 * to the center at the next round (above), so NNC_NAN_SKIP is refused with NNC_EINVAL there.
 *
 * Checkpoints (ckpt_dir): last.ckpt at every epoch end and at the end; best.ckpt when the
 * evaluated accuracy improves (section "metric" = "test_acc=<best>"); with keep_epochs N > 0
 * also epoch-<EEEE>.ckpt (a hard link to that last.ckpt, or a second save where links fail) at
 * every epoch end, after which older epoch-*.ckpt beyond the N newest are deleted. Every file
 * appears under its name only complete (temp file + rename), so the newest complete checkpoint
 * is never deleted, whatever point a crash interrupts.
 *
 * Test-only fault points (NNC_FAULT, nn/fault.h): worker_nan:W:ROUND (W = -1: every worker;
 * ROUND = 0: every round),
 * worker_stall:W (-1: all), worker_error:W, worker_sleep_jitter:MAXMS, loss_inf:STEP,
 * grad_nan:STEP (a NaN in the gradient of local step STEP), eval_acc:A1/A2/... (one replica: the
 * k-th evaluation reports accuracy Ak instead of the measured one), eval_sleep:MS (every evaluation
 * sleeps MS milliseconds: time that must not count as training time).
 * Thread-safety: independent runs may execute concurrently in one process (no global state;
 * the kernel and BLAS thread counts are process-wide and set to 1 when M > 1).
 */
#ifndef NNC_DIST_H
#define NNC_DIST_H

#include <signal.h>
#include <stdint.h>

#include "data/data.h"
#include "dist/link.h"
#include "models/models.h"
#include "nn/precision.h"
#include "optim/optim.h"

typedef struct nnc_step_info nnc_step_info;
typedef struct nnc_round_info nnc_round_info;
typedef struct nnc_eval_info nnc_eval_info;

typedef enum nnc_algo {
    NNC_ALGO_SGD,        /* one replica, plain SGD (workers must be 1) */
    NNC_ALGO_MGRAWA,     /* model-level GRAWA */
    NNC_ALGO_LGRAWA,     /* layer-level GRAWA */
    NNC_ALGO_LOCAL_SGD,  /* uniform averaging every tau steps (c = 1) */
    NNC_ALGO_EASGD,
    NNC_ALGO_LSGD,
    NNC_ALGO_DP,         /* synchronous gradient averaging */
    NNC_ALGO_DP_SAM,
    NNC_ALGO_SLOWMO      /* local SGD with slow momentum on the synchronised model */
} nnc_algo;

int nnc_algo_parse(const char *s, nnc_algo *out);   /* "mgrawa", "dp-sam", ... */
const char *nnc_algo_name(nnc_algo a);

/* What a non-finite loss or gradient does (see above). */
typedef enum nnc_nan_policy { NNC_NAN_STOP, NNC_NAN_SKIP } nnc_nan_policy;

typedef enum nnc_sync_mode { NNC_SYNC_ASYNC, NNC_SYNC_LOCKSTEP } nnc_sync_mode;
/* Where worker teams run (dist/place.h): auto = planned over the machine's topology and pinned,
 * none = no pinning (the OS schedules). */
typedef enum nnc_placement { NNC_PLACEMENT_AUTO, NNC_PLACEMENT_NONE } nnc_placement;
typedef enum nnc_norm_kind { NNC_NORM_SUM_LAYERS, NNC_NORM_GLOBAL_L2 } nnc_norm_kind;

/* A default named in a field comment is the library's (nnc_train_config_default()); "CLI:"
 * marks where `nnc train` uses a different one. */
typedef struct nnc_train_config {
    /* model and data */
    const char *model;            /* registry name, "resnet20" */
    nnc_model_config model_cfg;   /* in_channels/image_size/classes: filled from the dataset if 0 */
    int batch;                    /* per worker, 128 */
    int augment;                  /* 1 (CLI: off for mnist and fashion-mnist unless --augment) */
    long limit_train, limit_test; /* 0 = all (applied by the caller when loading) */
    /* optimisation */
    float lr;                     /* 0.1 */
    nnc_sgd_config sgd;
    nnc_sched sched;              /* nnc_sched_default(): constant (CLI: cosine over --epochs when
                                     epochs > 0, else constant); base_lr is taken from lr */
    int epochs;                   /* 1, per worker (CLI too); epochs and time_budget both bound a
                                     run, whichever ends first: set epochs = 0 for a time-only
                                     run (0 = until the time budget) */
    double time_budget;           /* seconds of training time (test time excluded); 0 = none */
    uint64_t seed;
    int threads;                  /* 1 (CLI: all online cores); kernel threads (nn/threads.h) of one
                                     replica (workers 1; workers > 1: threads_per_worker). The
                                     run's own team; BLAS runs with 1 */
    nnc_precision precision;      /* conv operands (nn/precision.h): FP32 (default) or BF16; the
                                     run's teams' and the caller's during the run, not process-
                                     wide (NNC_EUNSUPPORTED without AVX512_BF16) */
    /* distribution */
    int workers;                  /* 1; MPI build under mpirun: the total over all ranks */
    nnc_algo algo;
    nnc_sync_mode sync;
    int tau;                      /* 0 = algorithm default (32 GRAWA/local-sgd/slowmo, 4 EASGD/LSGD) */
    float pull;                   /* GRAWA c (0.5), LSGD c (0.1); < 0 = default */
    float prox;                   /* GRAWA p (0.01), LSGD p (0.1); < 0 = default */
    float easgd_beta;             /* 0.1 */
    float sam_rho;                /* 0.05 */
    float slow_momentum;          /* slow momentum beta: < 0 = default (0.7 slowmo, 0 = off for
                                     mgrawa, lgrawa, local-sgd; refused for the others) */
    float slow_lr;                /* slow learning rate alpha: <= 0 = default 1 */
    nnc_norm_kind norm_kind;
    int probe_batch;              /* 128 */
    int bn_reestimate_batches;    /* 20 (0 = keep running statistics) */
    double sync_timeout;          /* seconds a round waits for the last worker after the first
                                     arrived, or with no worker progressing at all; 0 = 600 */
    /* evaluation and checkpoints */
    int eval_every_epochs;        /* 1 (0 = only at the end) */
    const char *ckpt_dir;         /* NULL = no checkpoints; else last.ckpt, best.ckpt inside */
    int resume;                   /* continue from ckpt_dir/last.ckpt exactly (same workers,
                                     algorithm, sync mode, data and batch; else NNC_EINVAL) */
    int keep_epochs;              /* 0; N > 0: also keep the N newest ckpt_dir/epoch-<EEEE>.ckpt */
    const char *ckpt_meta_json;   /* NULL, or text stored as bytes section "meta/json" in every
                                   * checkpoint (the CLI puts dataset name, mean/std, class names
                                   * there for `nnc predict`) */
    int anomaly;                  /* anomaly mode on every graph */
    nnc_nan_policy nan_policy;    /* NNC_NAN_STOP; NNC_NAN_SKIP only with one replica (algo sgd) */
    int log_every;                /* 0 (CLI: 50); on_step every this many steps (0 = ~10 per epoch;
                                     M > 1: global steps, approximate: the coordinator polls every
                                     50 ms) */
    volatile sig_atomic_t *stop;  /* set (to the signal number) to stop after the current step */
    /* callbacks (may be NULL) */
    void (*on_step)(const nnc_step_info *s, void *ud);
    void (*on_round)(const nnc_round_info *r, void *ud);
    void (*on_eval)(const nnc_eval_info *e, void *ud);
    void (*on_log)(const char *line, void *ud);   /* warnings such as "worker 2 non-finite, reset" */
    void *ud;
    /* added late (kept at the end so that other additions merge) */
    double eval_seconds;          /* 0; S > 0: also evaluate every S seconds of training time (a
                                     grid: at the first round or step boundary past k*S) */
    nnc_link link;                /* modelled interconnect (docs/algorithms.md): bytes_per_s 0 =
                                     none; else every collective waits the modelled time less the
                                     real one, counted as training time */
    /* kernel thread teams (nn/threads.h; each run owns its teams) */
    int threads_per_worker;       /* 0 = the machine's cores divided among the workers (at least
                                     1); one replica (workers 1): 0 = `threads`. Over the core
                                     count is allowed (a warning, short spins) */
    nnc_placement placement;      /* NNC_PLACEMENT_AUTO: each team pinned to its own cores, inside
                                     one NUMA node where it fits (dist/place.h); MPI runs with
                                     several ranks pin nothing */
} nnc_train_config;

nnc_train_config nnc_train_config_default(void);

struct nnc_step_info {
    long step;               /* global optimizer steps so far (all workers) */
    long total_steps;        /* planned, or 0 when only a time budget bounds the run */
    double epoch;            /* fractional epoch of worker 0 */
    double seconds;          /* training seconds so far */
    double loss, acc;        /* running means over the last reporting window */
    float lr;
    double images_per_sec;   /* aggregate over workers */
};

#define NNC_MAX_WORKERS 64

struct nnc_round_info {
    long round;
    double seconds;
    int workers;
    double norm[NNC_MAX_WORKERS];      /* smoothed gradient norm (GRAWA), loss (LSGD), 0 otherwise */
    double weight[NNC_MAX_WORKERS];    /* weight in the center (MGRAWA; LGRAWA: mean over layers) */
    double distance[NNC_MAX_WORKERS];  /* ||x_i - x_C|| before the pull */
    long local_steps[NNC_MAX_WORKERS]; /* local steps of each worker since the last round */
    double loss;                       /* mean training loss over workers since the last round */
    double sync_seconds;               /* time the synchronizer spent in this round */
    long step;                         /* global optimizer steps at this round (a DP round's
                                          step counted) */
    double comm_seconds;               /* modelled communication time of this round (0 = no link) */
};

struct nnc_eval_info {
    double epoch, seconds;
    long step;
    const char *which;       /* "model" (one replica), "center", "average" */
    double loss, acc;
    int is_best;
};

typedef struct nnc_train_result {
    double test_acc, test_loss;         /* the reported model: replica (sgd), average (LSGD,
                                           local-sgd), else center; NAN without a test set */
    double center_test_acc, average_test_acc; /* NAN when M = 1 */
    double train_loss, train_acc;       /* sgd: last epoch; M > 1: mean over the whole run */
    double epochs, seconds, images_per_sec;
    long steps, rounds;
    double bytes_per_round;             /* all workers: each sends x_i and receives the target */
    double sync_seconds;                /* synchronizer busy time */
    int workers;
    long local_steps[NNC_MAX_WORKERS];
    int resets;                         /* non-finite worker resets */
    long skipped_steps;                 /* steps skipped by NNC_NAN_SKIP */
    int stopped_by_signal;              /* signal number, or 0 */
    double comm_model_seconds;          /* modelled communication time of the whole run, part of
                                           `seconds` (a resumed run: since its start; 0 without a link) */
    int threads_per_worker;             /* the team size each replica ran with */
    char placement[8192];               /* the plan as JSON (nnc info --topology --json's form) */
} nnc_train_result;

/* What a training checkpoint (ckpt_dir/last.ckpt, ...) says about the run's progress. */
typedef struct nnc_ckpt_progress {
    long steps;            /* global optimizer steps (one replica: its steps) */
    long min_steps;        /* the fewest local steps of any worker */
    long steps_per_epoch;  /* of one worker */
    long rounds;
    double seconds;        /* training seconds */
    double epoch;          /* worker 0's steps / steps_per_epoch */
    int workers;
    nnc_algo algo;
    nnc_sync_mode sync;
    double budget_done;    /* the --time-budget the run ended at (0: it did not end by a budget) */
} nnc_ckpt_progress;

/* Read the progress of the run that wrote the checkpoint at path, without building anything.
 * Errors: those of nnc_ckpt_load (NNC_EIO, NNC_EFORMAT), NNC_EFORMAT for a file that is not a
 * training checkpoint or holds another run-state version (the message says which). */
int nnc_train_ckpt_progress(const char *path, nnc_ckpt_progress *out);
/* 1 when that run is finished for `epochs` (0 = none) and `time_budget` seconds (0 = none) by
 * the rules nnc_train stops by, so resuming it with those targets trains nothing: the budget
 * when its seconds reach it or the run ended at that budget or a larger one (a budget run ends
 * within half a step of it, possibly before); the epochs, for asynchronous model averaging
 * (mgrawa, lgrawa, easgd, lsgd, local-sgd, slowmo with --sync async), when the workers' steps
 * together reach epochs x steps_per_epoch x workers, otherwise when every worker has trained
 * epochs x steps_per_epoch. */
int nnc_train_ckpt_finished(const nnc_ckpt_progress *p, long epochs, double time_budget);

/* Run training on train (and evaluate on test, may be NULL). */
int nnc_train(const nnc_train_config *cfg, const nnc_dataset *train, const nnc_dataset *test,
              nnc_train_result *out);

/* Evaluate a model on a dataset (eval mode, batches of `batch`): mean loss, top-1 accuracy, and
 * optionally a num_classes x num_classes confusion matrix (row = true class, column = predicted). */
int nnc_evaluate(nnc_model *m, const nnc_dataset *d, int batch, double *loss, double *acc,
                 long *confusion);

/* Flatness (docs/algorithms.md, "Flatness"): top eigenvalues of the training-loss Hessian by
 * Lanczos with full re-orthogonalisation; Hessian-vector products by central differences of
 * gradients, Hv ~ (g(w + eps v) - g(w - eps v)) / (2 eps), ||v|| = 1, so no double backward is
 * needed. The loss is the mean cross-entropy over a fixed subset of `samples` training images
 * (the first ones), without augmentation, model in train mode (BN batch statistics over each
 * chunk). */
typedef struct nnc_hessian_config {
    int iterations;   /* Lanczos steps per start (100) */
    int starts;       /* random starts, Ritz values averaged (3) */
    int samples;      /* images in the fixed subset (320) */
    int chunk;        /* images per forward/backward (64; BN statistics are per chunk) */
    int top;          /* Ritz values summed into the "trace" (100) */
    double eps;       /* central-difference step (1e-3) */
    uint64_t seed;    /* start vectors */
} nnc_hessian_config;

nnc_hessian_config nnc_hessian_config_default(void);
/* lambda_max and the sum of the top `top` Ritz values, each averaged over the starts. m's
 * parameters, buffers and gradients are unchanged on return (gradients zeroed). */
int nnc_hessian_top(nnc_model *m, const nnc_dataset *d, const nnc_hessian_config *cfg,
                    double *lambda_max, double *trace_top);
/* The same per start: lambda_max[s] and top_sum[s] (the sum of the top `top` Ritz values) for
 * s < cfg->starts, each start from its own random vector (seed, stream s), so callers can report
 * the spread over starts. Arrays of cfg->starts entries; m unchanged on return. */
int nnc_hessian_top_starts(nnc_model *m, const nnc_dataset *d, const nnc_hessian_config *cfg,
                           double *lambda_max, double *top_sum);
/* Hutchinson's estimate of the whole trace, tr(H) = E[z^T H z] for Rademacher z (each trained
 * scalar +1 or -1 with probability 1/2), over `probes` vectors (seed, stream per probe): *trace
 * is the mean of the probes' z^T H z, *std_error its standard error (sample standard deviation
 * / sqrt(probes); NAN for one probe). Same loss, subset, chunk and eps as nnc_hessian_top
 * (iterations, starts and top unused); one Hessian-vector product per probe. m unchanged on
 * return. */
int nnc_hessian_trace(nnc_model *m, const nnc_dataset *d, const nnc_hessian_config *cfg, int probes,
                      double *trace, double *std_error);

/* Across machines (MPI build only: `make MPI=1`, dist/transport_mpi.c). After nnc_mpi_init()
 * every nnc_train() in the process is one rank of a run over all ranks of MPI_COMM_WORLD:
 * cfg->workers is the total M, rank r runs the global workers [r*M/R, (r+1)*M/R) (data shard =
 * global worker index), rounds combine through MPI in global worker order (bitwise the
 * threaded run with the same M and seed in lockstep mode), stop decisions come from rank 0,
 * rank 0 alone calls the callbacks and writes checkpoints (gathered: one file), evaluation runs
 * on every rank. Without the MPI build these are no-ops: rank 0 of 1. Call from the main thread. */
int nnc_mpi_init(int *argc, char ***argv);   /* NNC_OK, or NNC_EUNSUPPORTED without MPI build */
int nnc_mpi_active(void);                    /* 1 once nnc_mpi_init succeeded */
int nnc_mpi_rank(void);
int nnc_mpi_size(void);
void nnc_mpi_finalize(void);
/* Terminate every rank with `code` (MPI_Abort): for a failed rank whose peers may wait on it.
 * Returns only without MPI. */
void nnc_mpi_abort(int code);

#endif
