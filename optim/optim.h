/* optim/optim.h - SGD (momentum, Nesterov, weight decay with no-decay flags) and learning-rate
 * schedules. Flat loops over a params arena: no per-layer code.
 *
 * SGD follows PyTorch's torch.optim.SGD exactly (dampening 0):
 *   g = grad + wd * w           (wd skipped for entries flagged NO_DECAY / BN when asked)
 *   v = momentum * v + g        (v = g on the first step)
 *   d = nesterov ? g + momentum * v : v
 *   w = w - lr * d
 * State (momentum buffer at the params' offsets, step count) is plain memory so checkpoints
 * and replicas copy it.
 *
 * Thread-safety: an optimizer belongs to the thread that owns its params.
 */
#ifndef NNC_OPTIM_H
#define NNC_OPTIM_H

#include "nn/params.h"

typedef struct nnc_sgd_config {
    float momentum;       /* 0.9 */
    float weight_decay;   /* 5e-4 */
    int nesterov;         /* 0 */
    int decay_bn_bias;    /* 1 = decay everything (PyTorch default); 0 = skip NO_DECAY entries */
} nnc_sgd_config;

nnc_sgd_config nnc_sgd_config_default(void);

typedef struct nnc_sgd {
    nnc_sgd_config cfg;
    nnc_params *params;   /* not owned */
    float *momentum;      /* n_data floats, same offsets as params->data */
    long steps;           /* steps taken */
} nnc_sgd;

/* Optimizer over finalized params p (not owned). Momentum starts at zero, which is PyTorch's
 * "v = g on the first step" since dampening is 0. NNC_EINVAL for negative or non-finite
 * momentum/weight decay, or Nesterov without momentum (as PyTorch). */
int nnc_sgd_new(nnc_params *p, const nnc_sgd_config *cfg, nnc_sgd **out);
void nnc_sgd_free(nnc_sgd *o);
/* One step with learning rate lr over every trained entry (reads params->grad). */
void nnc_sgd_step(nnc_sgd *o, float lr);
/* Forget momentum (e.g. after a replica is replaced): zeroes the buffer, keeps `steps`. */
void nnc_sgd_reset(nnc_sgd *o);

typedef enum nnc_sched_kind {
    NNC_SCHED_CONSTANT,
    NNC_SCHED_STEP,       /* lr * gamma^(floor(epoch / step_epochs)) */
    NNC_SCHED_MULTISTEP,  /* lr * gamma^(number of milestones <= epoch) */
    NNC_SCHED_COSINE,     /* lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2 over total steps */
    NNC_SCHED_TIME_DROP   /* lr until elapsed >= drop_seconds, then lr * gamma (GRAWA runs);
                           * drop_seconds <= 0 never drops */
} nnc_sched_kind;

#define NNC_SCHED_MAX_MILESTONES 8

typedef struct nnc_sched {
    nnc_sched_kind kind;
    float base_lr;
    float min_lr;               /* cosine floor, default 0 */
    float gamma;                /* 0.1 */
    int step_epochs;            /* STEP */
    int milestones[NNC_SCHED_MAX_MILESTONES]; /* MULTISTEP, in epochs, ascending */
    int nmilestones;
    long total_steps;           /* COSINE horizon (steps) */
    long steps_per_epoch;       /* converts steps to (fractional) epochs */
    long warmup_steps;          /* linear warm-up from base_lr/warmup_steps... to the schedule */
    double drop_seconds;        /* TIME_DROP */
} nnc_sched;

/* Defaults: constant, base_lr 0.1, min_lr 0, gamma 0.1, step_epochs 30, steps_per_epoch 1,
 * no milestones, no warm-up. */
nnc_sched nnc_sched_default(void);
/* NNC_EINVAL naming the field if a value is unusable (negative lr, gamma <= 0, milestones not
 * ascending, cosine without total_steps, ...). */
int nnc_sched_check(const nnc_sched *s);
/* Parse a comma-separated ascending epoch list "100,150" into s->milestones/nmilestones. */
int nnc_sched_parse_milestones(const char *text, nnc_sched *s);
/* Parse "constant|step|multistep|cosine|time-drop" (NNC_EINVAL naming the value otherwise). */
int nnc_sched_parse_kind(const char *s, nnc_sched_kind *out);
const char *nnc_sched_kind_name(nnc_sched_kind k);
/* Learning rate for the step about to be taken (0-based) at elapsed training seconds.
 * Pure function of its arguments, so resuming mid-schedule gives the same value. Epoch =
 * floor(step / steps_per_epoch) for STEP/MULTISTEP; COSINE uses t = min(step, total_steps).
 * Warm-up: lr(step) = schedule(step) * (step + 1) / warmup_steps for step < warmup_steps. */
float nnc_sched_lr(const nnc_sched *s, long step, double elapsed_s);

#endif
