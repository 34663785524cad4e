/* tools/bench_layers.h - per-conv-layer timing behind `nnc bench --layers` (tools/bench_layers.c).
 * Prints to stdout; single-threaded caller (the kernels use the nnc_set_threads pool). */
#ifndef NNC_TOOLS_BENCH_LAYERS_H
#define NNC_TOOLS_BENCH_LAYERS_H

#include "models/models.h"

/* Time forward, input-gradient and weight-gradient passes of every conv layer of m at batch
 * size batch (median of runs); % of peak uses peak_gflops per thread. path: 0 automatic,
 * 1 direct kernels, 2 im2col + GEMM, 3 small-image kernels where they run. Returns a status. */
int bench_layers(const nnc_model *m, int batch, int threads, int runs, double peak_gflops, int path);

#endif
