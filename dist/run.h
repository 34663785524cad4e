/* dist/run.h - the state of one training run (internal to dist/).
 *
 * train.c resolves the config and builds the replicas, single.c runs the single-replica loop;
 * sync.c (the synchronizer on the calling thread) and worker.c (the worker threads) run M > 1
 * workers (with MPI ranks, this rank's workers [lo, hi) of the M); the algorithms are
 * dist/algo*.c; runckpt.c saves and restores a run, record.c encodes its counters. One nnc_run
 * per nnc_train() call: no global state.
 *
 * Ownership and threads: rep[i] and W[i] (its w* mirrors under mu) are written only by worker
 * i; center, pub, center_buf, ema, ok, reset, pull_c, leader, slow_u, slow_x0 are written only
 * by the synchronizer while every worker is parked at a round, and read by workers after the
 * round's generation bump (mu gives the ordering). Within a round the synchronizer may hand the
 * parked workers a job (dist/parked.c: the center reduction into acc and center, the distances):
 * they run it on their own threads and teams and the synchronizer waits for all of them under mu
 * before it reads the result.
 */
#ifndef NNC_DIST_RUN_H
#define NNC_DIST_RUN_H

#include <pthread.h>

#include "dist/algo.h"
#include "dist/place.h"
#include "nn/threads.h"
#include "dist/replica.h"
#include "dist/transport.h"

/* One worker's state besides its replica (parameters, momentum, counters, RNG streams, loader:
 * dist/replica.h). Together they are the worker's record: dist/record.c encodes both, field by
 * field in little-endian, for the checkpoint section "run/workers", the round exchange and the
 * whole-worker transfer between ranks. Written by worker i (under mu where the synchronizer
 * reads it between rounds), except ema_n (the synchronizer, every worker parked); the other
 * ranks' workers here are shadows refreshed by the exchange. */
typedef struct nnc__worker {
    long wround;        /* local steps since the last round */
    long wsteps;        /* published copy of the replica's step count */
    double wloss;       /* sum of the finite step losses so far */
    long wloss_n, wcorrect, wseen;  /* their count; right predictions and images so far */
    long ema_n;         /* GRAWA: norm smoothing updates so far (bias correction) */
    nnc_lsgd_hist hist; /* LSGD: the last losses */
    int bad;            /* non-finite since the last round */
    long bad_rounds;    /* consecutive rounds this worker was non-finite (the synchronizer) */
} nnc__worker;

/* A worker non-finite at this many rounds in a row (reset to the center each time, never
 * completing a finite step in between) stops the run with NNC_EDIVERGED: without it, a worker
 * that diverges from every center would keep a run that waits for its steps going forever. */
#define NNC__MAX_BAD_ROUNDS 8

typedef struct nnc_run {
    nnc_train_config c;             /* resolved copy of the caller's config */
    const nnc_algo_def *A;          /* the algorithm (dist/algo.h) */
    const nnc_train_config *user;   /* the caller's (for the stop flag) */
    const nnc_dataset *train, *test;
    int M, per_layer;
    nnc_model *scratch;             /* evaluation model (center, average) */
    nnc_graph *eval_g;
    nnc_replica *rep[NNC_MAX_WORKERS];
    nnc_grawa_layers ly;
    nnc_transport *tp;
    /* ranks (MPI build): this rank runs the global workers [lo, hi); rep[i] outside that range
     * is a shadow, refreshed from its owner at rounds (counters) and checkpoints (everything) */
    int lo, hi, nloc;
    nnc_grawa_layers buf_ly;        /* the BN buffers as one "layer" (buffer averages) */
    double *buf_acc;                /* n_buf + 1 doubles */
    unsigned char *xbuf;            /* per-round exchange records of all workers */
    float *center;                  /* algorithm state: GRAWA/EASGD center, LSGD leader, average */
    float *pub;                     /* target of pulls and proximity (x_C_last / x_L_last) */
    float *center_buf;              /* BN buffers averaged over the finite workers */
    /* The reported model of the last evaluation (M > 1): the center (or the workers' average
     * for LSGD and local-sgd) with the BN statistics re-estimated for it, exactly the model whose
     * accuracy was reported. Checkpoints taken at that state store it as their model sections. */
    float *model_data, *model_buf;
    int model_valid;
    long model_round, model_steps;  /* R->round and R->total_steps when it was evaluated */
    double *acc, *usum, *u, *norms;
    double *ema;                    /* smoothed probe norms: row i (L values) is worker i's */
    nnc__worker W[NNC_MAX_WORKERS];
    int ok[NNC_MAX_WORKERS], reset[NNC_MAX_WORKERS];
    double pull_c[NNC_MAX_WORKERS];
    int leader;                     /* LSGD: the leader of the last round */
    /* slow momentum (algo_slowmo.c), when slow: u and the synchronised model x0 */
    int slow;
    double slow_beta, slow_alpha;
    float *slow_u, *slow_x0;
    double prox;                    /* per-step proximity strength p / tau */
    long spe;                       /* optimizer steps per epoch of one worker */
    long plan;                      /* planned steps per worker (0 = time budget only) */
    double budget_done;             /* the --time-budget the run ended at, 0 if none (run meta) */
    long round;
    /* clock: training seconds = now - t_start - t_excluded + t_resumed */
    double t_start, t_excluded, t_resumed;
    double pub_seconds;             /* training seconds published at the last round */
    double best_acc;
    int n_evals;                    /* evaluations so far in this call (test hook eval_acc) */
    nnc_train_result *res;
    /* threads (M > 1) */
    pthread_mutex_t mu;
    pthread_cond_t cv_sync, cv_work;
    int arrived, arrived2;
    long gen, gen2;
    int need_ack, exit_req, stop_req, round_req, round_done, cancel, failed;
    int here[NNC_MAX_WORKERS];      /* worker i is parked at the current round */
    long last_epoch;                /* last epoch boundary handled (eval / last.ckpt) */
    long round_steps, total_steps;
    long round_resv, total_resv;
    double mark_loss;               /* loss sums at the last round (the round-loss window) */
    long mark_n;    /* async: local steps reserved (about to be taken) */
    int wstatus[NNC_MAX_WORKERS];
    char wmsg[NNC_MAX_WORKERS][512];
    /* the time budget and the training-time evaluation grid */
    int deadline;                   /* the time budget is (about) used up: workers stop taking
                                       local steps and arrive; set under mu by the synchronizer
                                       (clock >= budget) or the first worker whose next step would
                                       end farther from the budget than stopping now */
    int ended;                      /* training over: evaluations report end_seconds */
    double end_seconds;
    long next_eval_slot;            /* eval_seconds grid: the next k with k * S still to evaluate */
    /* kernel thread teams: team[i] runs worker i's ops (this rank's workers; one replica: the
     * caller's thread enters team[0]); the plan says which cores (dist/place.h) */
    nnc_team *team[NNC_MAX_WORKERS];
    nnc__topo topo;
    nnc__plan place;
    int tpw;                        /* threads per worker */
    int rnode[NNC_MAX_WORKERS];     /* the NUMA node of worker i for the center reduction: the
                                       plan's node, or an unpinned plan's node when nothing is
                                       pinned (synthetic topologies, placement none), else 0 */
    /* work for the parked workers (dist/parked.c): set by the synchronizer under mu while
     * parked is 1 (every local worker parked at the round, inside do_round) */
    int parked;
    void (*job_fn)(void *ctx, int i);
    void *job_ctx;
    long job_gen;
    int job_done;
} nnc_run;

/* Monotonic seconds. */
double nnc__now(void);
double nnc__run_seconds(const nnc_run *R);
/* The run's progress as its checkpoint would report it (seconds: the training clock to report),
 * for the one stop rule nnc_train_ckpt_finished that training, resume and the CLI share. */
nnc_ckpt_progress nnc__run_progress(const nnc_run *R, double seconds);
/* on_log with a formatted line (coordinator thread only). */
void nnc__run_log(nnc_run *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Learning rate of a worker's next step (schedule from c.sched, c.lr). */
float nnc__run_lr(const nnc_run *R, long step, double seconds);

/* The single-replica loop (single.c). */
int nnc__run_single(nnc_run *R);
/* Multi-worker training (sync.c). */
int nnc__run_workers(nnc_run *R);
/* The thread of worker `id` (worker.c). */
typedef struct nnc__worker_arg {
    nnc_run *R;
    int id;
} nnc__worker_arg;
void *nnc__worker_main(void *arg);
/* The worker thread's start routine: enters the worker's team (pinned where the plan pins it),
 * runs nnc__worker_main, leaves the team; a team that cannot be entered fails the worker. */
void *nnc__worker_entry(void *arg);
/* dist/teams.c: the placement plan of this rank's workers and their teams (not entered yet);
 * replica i built on its worker's cores when the plan pins it. */
int nnc__run_plan_teams(nnc_run *R);
int nnc__run_replica_new_placed(nnc_run *R, int i);
/* out (n_buf floats) = mean of the BN buffers of the workers with ok[i] (NULL: all), summed in
 * global worker order over every rank (collective). */
int nnc__run_buf_average(nnc_run *R, const int *ok, float *out);
/* Rank of global worker i. */
int nnc__run_owner(const nnc_run *R, int i);
/* dist/parked.c (synchronizer, every local worker parked, R->parked): fn(ctx, i) on every local
 * worker i's own thread (its team), returning when all are done. */
int nnc__run_on_parked(nnc_run *R, void (*fn)(void *ctx, int i), void *ctx);
/* center = sum_i u_i x_i / sum_i u_i over all M workers in worker order (per layer when
 * per_layer; x: M vectors, u: M or M*L weights, global), R->acc and R->usum as scratch. One rank
 * with the workers parked: node by node on their teams (dist/reduce.h), bitwise equal to the
 * transport's flat reduction, which every other case uses. */
int nnc__run_center(nnc_run *R, const float *const *x, const double *u, int per_layer, float *center);
/* ri->distance[i] = ||x_i - pub|| for this rank's finite workers (on their own threads when
 * parked). */
int nnc__run_distances(nnc_run *R, nnc_round_info *ri);

#ifdef NNC_TESTING
/* Test-only observation points of the worker threads (compiled only into the test binary, like
 * the fault points of nn/fault.h). The observer runs on worker `w`'s thread, concurrently with
 * the other workers' calls; it may read R->rep[w], R->pub and R->center (stable at every point:
 * the synchronizer writes them only while all workers are parked) and R->norms row w at ARRIVE.
 *   ARRIVE     w is about to park at round R->round + 1: pre-pull replica, probe norms
 *              (GRAWA), R->center of the previous round
 *   APPLIED    w applied round R->round (pull, reset or DP step): R->center of this round
 *   STEP_PRE   before a local SGD step (not DP)
 *   STEP_SGD   after that step's SGD update (r->p->grad: its gradient), before the proximity;
 *              loss = the step's batch loss
 *   STEP_DONE  after the proximity pull of that step */
typedef enum nnc__obs_event {
    NNC__OBS_ARRIVE, NNC__OBS_APPLIED, NNC__OBS_STEP_PRE, NNC__OBS_STEP_SGD, NNC__OBS_STEP_DONE
} nnc__obs_event;
typedef void (*nnc__obs_fn)(const nnc_run *R, nnc__obs_event ev, int w, double loss, void *ud);
/* Install (fn = NULL: remove) the process-wide observer; call only while no run is active. */
void nnc__dist_observe(nnc__obs_fn fn, void *ud);
#endif

/* Evaluate the replica (sgd), or the center and the uniform average, at the end or an epoch
 * boundary (train.c; coordinator with every worker parked). Updates R->res, calls on_eval,
 * writes best.ckpt when the reported accuracy improves. */
int nnc__run_evaluate(nnc_run *R);

/* Checkpoints (runckpt.c): the whole run state to ckpt_dir/<name>, or back. The bytes sections
 * "run/meta" (the run counters) and "run/workers" (one record per worker) are encoded by
 * dist/record.c, little-endian field by field; resuming checks every value against its range. */
#define NNC__RUN_META_VERSION 3

/* The run meta (section run/meta), decoded. */
typedef struct nnc__meta {
    int32_t version, workers, algo, sync, layers, slow;
    int64_t round, total_steps, round_steps, last_epoch, steps_per_epoch, mark_n;
    double seconds, best_acc, pub_seconds, mark_loss;
    double comm_seconds;   /* modelled communication seconds so far (version 3; 0 in a version 2 file) */
    double budget_done;    /* the time budget the run ended at (0: not ended by a budget; version 3) */
} nnc__meta;

size_t nnc__meta_bytes(void);
void nnc__meta_encode(const nnc__meta *m, unsigned char *b);
/* Version and size first (NNC_EFORMAT naming them), then every field (unchecked: nnc__meta_check). */
int nnc__meta_decode(const unsigned char *b, size_t n, const char *path, nnc__meta *m);
void nnc__meta_get(const nnc_run *R, nnc__meta *m);
int nnc__meta_check(const nnc_run *R, const char *path, const nnc__meta *m);
void nnc__meta_apply(nnc_run *R, const nnc__meta *m);
/* Byte offset of a field in the encoded meta (-1 if none; tests). */
long nnc__meta_field_offset(const char *name);

/* The per-worker record: nnc__worker_bytes(L) bytes per worker (fixed fields, then the L
 * smoothed norms of its EMA row). Views: SAVE (checkpoint: between steps, a pending
 * data-parallel step undone), LIVE (the exchange and transfers: as it is). Decoding applies
 * NONE (only *stop), ROUND (the counters, flags and LSGD history a round needs) or ALL; with a
 * path every field is checked first (NNC_EFORMAT naming path, section, worker, field). */
enum { NNC__REC_SAVE, NNC__REC_LIVE };
enum { NNC__REC_NONE, NNC__REC_ROUND, NNC__REC_ALL };
size_t nnc__worker_bytes(int layers);
void nnc__worker_encode(const nnc_run *R, int i, int view, unsigned char *b);
int nnc__worker_decode(nnc_run *R, int i, const unsigned char *b, int what, const char *path, int *stop);
/* Byte offset of a field ("steps", "hist.next", "rng", "ema", ...) in a record (-1 if none). */
long nnc__worker_field_offset(const char *name);

int nnc__run_save(nnc_run *R, const char *name);
/* last.ckpt at the end of epoch `epoch` (0: not at an epoch end); with keep_epochs > 0 also
 * epoch-<EEEE>.ckpt, then the epoch files beyond the keep_epochs newest are deleted. */
int nnc__run_save_epoch(nnc_run *R, long epoch);
int nnc__run_load(nnc_run *R);
/* Multi-rank (collective): rank 0's shadows get every other rank's workers (whole state). */
int nnc__run_gather_workers(nnc_run *R);

#endif
