/* dist/reduce.h - the in-process center reduction over the parked workers' thread teams, node
 * by node, bitwise identical to the flat nnc__grawa_accumulate (dist/grawa.h).
 *
 * The flat reduction forms acc[j] = (((0 + u0 x0[j]) + u1 x1[j]) + u2 x2[j]) + ... in double,
 * workers in index order. Here the index range is cut into chunks and the workers into stages:
 * maximal runs of consecutive workers on the same NUMA node. Task (stage s, chunk c) adds the
 * terms of stage s's workers, in worker order, to chunk c; it starts only once stage s - 1 has
 * finished chunk c (a per-chunk counter, release/acquire). So every acc[j] sees exactly the flat
 * chain of additions in the flat order - the same bits - while the stages work on different
 * chunks at once (a pipeline over chunks). Stage 0 zeroes its chunk first (the flat reduction's
 * memset, first-touching acc on worker 0's node); the last stage writes the chunk's center
 * (the flat nnc__grawa_finalize, element by element), first-touching it on its own node. Node
 * k's tasks are run only by threads of node k's workers (their teams), which read node k's
 * replicas. One node: one stage, the chunks spread over every worker's team, no waiting.
 *
 * Deadlock freedom: node k's threads take their tasks in (chunk, stage) order from one counter;
 * the smallest unfinished task's predecessor is finished, and every task its node took before
 * it is smaller, hence finished: a thread of its node is free to take and run it.
 *
 * Ownership: the caller owns every buffer. Thread-safety: one job at a time; nnc__reduce_run may
 * be called concurrently by several threads on the same job (each with its own team), which is
 * how the parked workers run it (dist/sync.c). */
#ifndef NNC_DIST_REDUCE_H
#define NNC_DIST_REDUCE_H

#include <stdatomic.h>
#include <stddef.h>

#include "dist/dist.h"
#include "dist/grawa.h"

/* Default chunk of the pipeline, in floats (64 KiB of a replica, 128 KiB of the accumulator). */
#define NNC_REDUCE_CHUNK 16384

typedef struct nnc__reduce {
    /* inputs, as nnc__grawa_accumulate takes them (M workers, u: M or M*L) */
    const nnc_grawa_layers *ly;
    const float *const *x;
    const double *u;
    int M, per_layer;
    double *acc;            /* ly->n doubles: the result (set, not added to) */
    /* optional: center = acc / usum per chunk (nnc__grawa_finalize), when center != NULL */
    const double *usum;
    float *center;
    /* the plan (nnc__reduce_init) */
    size_t chunk;
    int nchunks, nstages, nnodes;
    int stage_lo[NNC_MAX_WORKERS + 1];   /* stage s = workers [stage_lo[s], stage_lo[s + 1]) */
    int stage_node[NNC_MAX_WORKERS];
    int node_stages[NNC_MAX_WORKERS];    /* stages on node k */
    int node_first[NNC_MAX_WORKERS + 1]; /* node k's stages: node_list[node_first[k] ..] */
    int node_list[NNC_MAX_WORKERS];
    atomic_int next[NNC_MAX_WORKERS];    /* node k's next task */
    atomic_int *done;                    /* [nchunks]: stages finished on chunk c */
} nnc__reduce;

/* Plan a reduction: node[i] is worker i's node (any int; NULL or negative: node 0), chunk the
 * pipeline's chunk in floats (0: NNC_REDUCE_CHUNK). Nodes are renumbered 0..nnodes-1 in order of
 * their first worker. Allocates the chunk counters (NNC_ENOMEM). Free with nnc__reduce_free. */
int nnc__reduce_init(nnc__reduce *r, const nnc_grawa_layers *ly, const float *const *x, const double *u, int M,
                     int per_layer, const int *node, size_t chunk, double *acc, const double *usum,
                     float *center);
void nnc__reduce_free(nnc__reduce *r);
/* The reduction's node (0..nnodes-1) of worker i. */
int nnc__reduce_node_of(const nnc__reduce *r, int i);
/* Run node k's tasks on the calling thread's team (every thread of it takes tasks until none
 * are left); returns when this thread's share is done. Call once per participating thread group:
 * every node must have at least one caller running concurrently with the others. */
void nnc__reduce_run(nnc__reduce *r, int k);
/* The whole reduction on the calling thread (nodes one after another would deadlock, so this
 * runs the tasks in (chunk, stage) order: the flat order per chunk). For tests and fallbacks. */
void nnc__reduce_serial(nnc__reduce *r);

/* x <- (1 - s) x + s c (nnc__grawa_pull) split into chunks over the calling thread's team:
 * element by element the same operation, so the same bits for any team size. */
void nnc__reduce_pull(float *x, const float *c, double s, size_t n);

#endif
