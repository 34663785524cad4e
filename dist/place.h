/* dist/place.h - machine topology (hwloc) and the placement planner: which cores each worker's
 * kernel thread team runs on.
 *
 * The planner is a plain function of a topology (nnc__topo), so it is tested on synthetic
 * machines (HWLOC_SYNTHETIC, or nnc__topo_load's synthetic argument) without binding anything.
 * Plan rules, with M workers of T threads on C cores:
 *   - M x T > C (oversubscribed) or placement none: nothing is pinned (a warning says so for
 *     oversubscription);
 *   - else every thread gets its own core, core sets are disjoint; a worker's team lies inside one
 *     NUMA node when some node still has T free cores (the node with the fewest workers so far,
 *     then the most free cores, then the lowest index: workers spread evenly over the nodes);
 *     otherwise it takes the free cores of the nodes with the most free cores first.
 * A thread is pinned to the first hardware thread (PU) of its core. */
#ifndef NNC_DIST_PLACE_H
#define NNC_DIST_PLACE_H

#include <stddef.h>

typedef struct nnc__topo {
    int ncores, nnodes, npackages, npus;
    int thissystem;         /* 0 for a synthetic topology: nothing may be pinned from it */
    int *core_node;         /* [ncores] NUMA node (0..nnodes-1, logical order) */
    int *core_pkg;          /* [ncores] package (0..npackages-1) */
    int *core_cpu;          /* [ncores] OS number of the core's first PU */
} nnc__topo;

/* This machine (hwloc honours HWLOC_SYNTHETIC and HWLOC_XMLFILE), or the synthetic description
 * when synthetic is not NULL (e.g. "pack:2 numa:1 core:8 pu:2"). NNC_EIO/NNC_EINVAL with a
 * message when hwloc cannot load it. */
int nnc__topo_load(const char *synthetic, nnc__topo *out);
void nnc__topo_free(nnc__topo *t);

typedef struct nnc__plan {
    int M, T;
    int pinned;             /* 1: cpus are set and the teams are pinned */
    int oversubscribed;     /* M x T > cores */
    int *node;              /* [M] the node holding most of worker w's cores; -1 unpinned */
    int *cpus;              /* [M x T] worker w's thread t on cpus[w * T + t]; -1 unpinned */
    char warning[256];      /* one line, or "" */
} nnc__plan;

/* placement: NNC_PLACEMENT_AUTO or NNC_PLACEMENT_NONE (dist/dist.h). NNC_EINVAL for M or T < 1,
 * or M x T above the team limit; NNC_ENOMEM. */
int nnc__plan_make(const nnc__topo *t, int M, int T, int placement, nnc__plan *out);
void nnc__plan_free(nnc__plan *p);
/* {"cores": C, "nodes": K, "packages": P, "threads_per_worker": T, "pinned": true|false,
 *  "workers": [{"worker": 0, "node": 0, "cpus": [0, 1]}, ...]}; first_worker offsets the worker
 * numbers (MPI ranks). Returns the length, or -1 when it does not fit (buf then holds a valid
 * shorter object without the workers). */
int nnc__plan_json(const nnc__topo *t, const nnc__plan *p, int first_worker, char *buf, size_t n);
/* One line: "placement: 2 workers x 1 thread on 2 cores, 1 node: w0 node 0 cpus 0 | w1 ...". */
void nnc__plan_line(const nnc__topo *t, const nnc__plan *p, int first_worker, char *buf, size_t n);

#endif
