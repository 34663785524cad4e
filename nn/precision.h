/* nn/precision.h - the precision of the convolution operands (FP32 or BF16 mixed precision).
 *
 * BF16 mixed precision: the convolution's inputs, weights and output gradients are rounded to
 * BF16 (round to nearest even) just before its dot products, which run on AVX512_BF16
 * (vdpbf16ps) with FP32 accumulation; everything else stays FP32 - master weights, optimizer
 * state, batch-norm statistics, the loss and every reduction. docs/precision.md has the details
 * and the measured speed and accuracy.
 *
 * The setting is process-wide, like nnc_set_threads, and is read when an op runs.
 * Thread-safety: nnc_set_precision must not run concurrently with ops.
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
/* "fp32" / "bf16"; nnc_precision_parse returns 0 and sets *p for those names, -1 otherwise. */
const char *nnc_precision_name(nnc_precision p);
int nnc_precision_parse(const char *s, nnc_precision *p);
/* Whether this CPU (and NNC_ISA) can run BF16. */
int nnc_precision_bf16_available(void);

#endif
