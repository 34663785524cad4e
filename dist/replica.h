/* dist/replica.h - one training replica and the evaluation helpers (internal to dist/).
 *
 * A replica is everything one worker owns: a model clone (params, grads, BN statistics), its
 * SGD state, its step graph, its loader shard (shard = worker index), its RNG streams and its
 * batch buffers. All replicas of a run are clones of one initialisation.
 *
 * Thread-safety: a replica has exactly one writer, the thread that runs it; the synchronizer
 * reads it only while that worker is parked at a round.
 */
#ifndef NNC_DIST_REPLICA_H
#define NNC_DIST_REPLICA_H

#include <stdint.h>

#include "dist/dist.h"
#include "dist/grawa.h"

typedef struct nnc_replica {
    int id;
    nnc_model *model;
    nnc_params *p;           /* the model's params (not owned separately) */
    nnc_sgd *opt;
    nnc_graph *g;
    nnc_loader *loader;
    const nnc_dataset *train;
    nnc_rng rng;             /* dropout */
    nnc_rng probe_rng;       /* probe-batch sample indices */
    nnc_rng probe_rng_round; /* probe_rng at the start of the current round (checkpointed) */
    int batch, img;          /* images per batch, floats per image */
    float *x;                /* batch images */
    int *y, *pred;           /* batch labels, predictions */
    int probe_n;
    float *probe_x;
    int *probe_y;
    uint32_t *probe_idx;
    float *buf_save;         /* BN buffers saved around the probe */
    float *sam_saved;        /* DP-SAM: parameters before the ascent step */
    int anomaly;
    long steps;              /* local optimizer steps taken */
    long correct, seen;      /* right predictions / images of the local steps so far */
    /* DP: the step whose gradient waits for its round (undone in a checkpoint taken then) */
    long pend_epoch, pend_batch, pend_n, pend_correct, pend_seen;
    double pend_wloss;       /* the worker's loss sum before that step (restored exactly) */
    nnc_rng pend_rng;
    float *pend_buf;         /* BN buffers before that step's forward passes */
} nnc_replica;

/* Clone init into a new replica with worker index id of M (loader shard id of M). */
int nnc__replica_new(const nnc_model *init, const nnc_dataset *train, const nnc_train_config *cfg,
                     int id, int M, nnc_replica **out);
void nnc__replica_free(nnc_replica *r);

/* Load the next training batch (rolling into the next epoch at its end). Returns images > 0. */
int nnc__replica_next_batch(nnc_replica *r);
/* Forward + backward of the loaded batch (mean cross-entropy, train mode): grads in r->p->grad.
 * *loss receives the batch loss, *correct (may be NULL) the number of right predictions. */
int nnc__replica_grad(nnc_replica *r, int n, double *loss, long *correct);
/* One local SGD step: next batch, forward, backward, SGD with lr. A non-finite loss or gradient
 * returns NNC_EDIVERGED before the step is applied (parameters, momentum and r->steps unchanged;
 * the batch is consumed and BN running statistics were updated by its forward). */
int nnc__replica_step(nnc_replica *r, float lr, double *loss);
/* GRAWA probe: per-layer gradient norms (L values into out) of the summed cross-entropy on a
 * fresh uniform sample (with replacement, from probe_rng) of the whole training set, no
 * augmentation, no weight decay. BN running statistics are
 * saved and restored around the probe forward, so the probe leaves the replica unchanged. */
int nnc__replica_probe(nnc_replica *r, const nnc_grawa_layers *ly, double *out);

/* Re-estimate BN running statistics of m: reset, then the cumulative average of the batch
 * statistics over `batches` train-mode forwards on un-augmented training batches drawn with
 * rng (PyTorch momentum=None). No-op when m has no buffers or batches <= 0. stop (may be NULL)
 * is polled before every forward: once it is set the buffers are restored to their values on
 * entry and NNC_EINTERRUPTED is returned. */
int nnc__bn_reestimate_stop(nnc_model *m, nnc_graph *g, const nnc_dataset *d, int batches, int batch,
                            nnc_rng *rng, volatile sig_atomic_t *stop);
/* The same without a stop flag. */
int nnc__bn_reestimate(nnc_model *m, nnc_graph *g, const nnc_dataset *d, int batches, int batch,
                       nnc_rng *rng);
/* nnc_evaluate that polls stop (may be NULL) before every batch: NNC_EINTERRUPTED once set. */
int nnc__evaluate_stop(nnc_model *m, const nnc_dataset *d, int batch, double *loss, double *acc,
                       long *confusion, volatile sig_atomic_t *stop);

#endif
