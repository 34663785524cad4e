/* nnc.h - the one public header of nnc.
 *
 * In the source tree: cc -I<repo> ... build/libnnc.a (or build/libnnc.so). Installed
 * (make install): cc prog.c $(pkg-config --cflags --libs nnc); the headers then live in
 * <includedir>/nnc/ with their repository paths, so `#include "nn/nnc.h"` works in both places,
 * and <includedir>/nnc/nnc.h allows `#include <nnc.h>`. docs/embedding.md is the guide.
 *
 * nnc trains convolutional networks on the CPU, alone or as GRAWA/EASGD/LSGD/data-parallel
 * worker replicas. Modules, each with its own header documenting ownership and thread-safety:
 *   nn/      version, status codes, allocation, step graph + autograd, ops, params arenas,
 *            checkpoints, kernel thread teams (nnc_team, nnc_set_threads)
 *   optim/   SGD and learning-rate schedules
 *   data/    datasets, download, augmentation, loaders
 *   models/  model builders and the name registry
 *   dist/    replicas, workers, synchronizer, distributed algorithms
 * This umbrella is the one header allowed to include from every folder.
 */
#ifndef NNC_H
#define NNC_H

#include "nn/version.h"
#include "nn/alloc.h"
#include "nn/blas.h"
#include "nn/checkpoint.h"
#include "nn/ops.h"
#include "nn/params.h"
#include "nn/rng.h"
#include "nn/status.h"
#include "nn/tensor.h"
#include "nn/threads.h"
#include "optim/optim.h"
#include "data/data.h"
#include "models/models.h"
#include "dist/dist.h"
#include "dist/link.h"

#endif
