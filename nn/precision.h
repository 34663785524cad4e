/* nn/precision.h - the precision of the convolution operands (FP32 or BF16 mixed precision).
 *
 * BF16 mixed precision: the convolution's inputs, weights and output gradients are rounded to
 * BF16 (round to nearest even) just before its dot products, which run on AVX512_BF16
 * (vdpbf16ps) with FP32 accumulation; everything else stays FP32 - master weights, optimizer
 * state, batch-norm statistics, the loss and every reduction. docs/precision.md has the details
 * and the measured speed and accuracy.
 *
 * The setting belongs to a kernel thread team (nn/threads.h), not to the process: an op runs in
 * the precision of the calling thread's current team, read when the op starts. nnc_set_precision
 * sets the precision of the calling thread's current team - its default team (the one
 * nnc_set_threads sizes) unless it entered another with nnc_team_enter - and nnc_get_precision
 * reads it; nnc_team_set_precision sets any team's. A thread's default team starts in FP32; a
 * team made by nnc_team_new starts in the precision its creating thread was running then.
 * nnc_train runs in its config's precision on its own teams (and on the calling thread while it
 * evaluates), and gives the calling thread its previous precision back: two runs in one process,
 * on two threads, each keep their own precision.
 * Thread-safety: a team's precision may be set while another team runs ops; setting it while
 * that same team runs an op changes only the ops that start afterwards.
 */
#ifndef NNC_PRECISION_H
#define NNC_PRECISION_H

#include "nn/status.h"

typedef enum nnc_precision { NNC_PRECISION_FP32 = 0, NNC_PRECISION_BF16 = 1 } nnc_precision;

/* Sets the precision. BF16 needs a CPU with AVX512_BF16 (and NNC_ISA not below avx512): without
 * it nnc_set_precision refuses (NNC_EUNSUPPORTED, the setting stays as it was) instead of
 * silently running FP32 - a run asked for in BF16 then never reports FP32 figures or accuracy
 * as BF16 ones. */
nnc_status nnc_set_precision(nnc_precision p);
nnc_precision nnc_get_precision(void);
/* The same for team t (NULL: the calling thread's default team). */
struct nnc_team;
nnc_status nnc_team_set_precision(struct nnc_team *t, nnc_precision p);
nnc_precision nnc_team_precision(const struct nnc_team *t);
/* "fp32" / "bf16"; nnc_precision_parse returns 0 and sets *p for those names, -1 otherwise. */
const char *nnc_precision_name(nnc_precision p);
int nnc_precision_parse(const char *s, nnc_precision *p);
/* Whether this CPU (and NNC_ISA) can run BF16. */
int nnc_precision_bf16_available(void);

/* --- internal --- */
/* NNC_OK if p can run here, else the failure nnc_set_precision returns (message set). */
int nnc__precision_check(nnc_precision p);

#endif
