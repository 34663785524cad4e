/* dist/transport.h - the communication seam between the algorithms and the machines.
 *
 * Algorithm code never combines worker vectors itself: it hands its local contributions to a
 * transport, which returns the global result. The weighted center is one fused reduction of
 * [sum_i u_i x_i, sum_i u_i] (per layer for LGRAWA), associative over groups, so threads reduce
 * inside a process and ranks combine afterwards. Today there is the in-process transport (one
 * rank holding every worker); an MPI transport implements the same operations (reduce in rank
 * order, broadcast, barrier) without touching algorithm code.
 *
 * The MPI transport (dist/transport_mpi.c, built only with `make MPI=1`) runs one rank per
 * process; rank r holds the contiguous global workers [lo(r), lo(r+1)), lo(r) = r*M/R. Its
 * reduction is a chain in rank order (rank r adds its workers, in index order, to the partial
 * sum received from rank r-1; the last rank broadcasts), so the sum is formed in global worker
 * order: bitwise the in-process result. Every MPI wait has a deadline (`timeout` seconds):
 * a stalled or dead peer gives NNC_ETIMEOUT naming the rank and `round`, never a hang.
 *
 * Ownership: the caller owns every buffer passed in. Thread-safety: a transport is used by one
 * thread (the synchronizer) of each rank; MPI is initialised FUNNELED (nnc_mpi_init, dist.h).
 */
#ifndef NNC_DIST_TRANSPORT_H
#define NNC_DIST_TRANSPORT_H

#include <stddef.h>

#include "dist/grawa.h"

typedef struct nnc_transport nnc_transport;

typedef struct nnc_transport_ops {
    const char *name;
    /* acc (ly->n doubles) = sum over all workers of all ranks, in global worker order, of
     * u_i x_i (per layer when per_layer); usum (L or 1 doubles) = sum of the u_i. x and u hold
     * this rank's nlocal workers (u: nlocal or nlocal*L). The result is on every rank. */
    int (*reduce_weighted)(nnc_transport *t, const nnc_grawa_layers *ly, const float *const *x,
                           const double *u, int nlocal, int per_layer, double *acc, double *usum);
    /* Copy bytes of root's buf to every rank. */
    int (*broadcast)(nnc_transport *t, void *buf, size_t bytes, int root);
    int (*barrier)(nnc_transport *t);
    /* buf holds every rank's block back to back in rank order (bytes[r] bytes for rank r);
     * this rank's block is filled in place, the others are received. */
    int (*allgather)(nnc_transport *t, void *buf, const size_t *bytes);
    void (*free)(nnc_transport *t);
} nnc_transport_ops;

struct nnc_transport {
    const nnc_transport_ops *ops;
    int rank, size;     /* this process's rank, number of ranks */
    double timeout;     /* seconds any one wait may take (0: forever) */
    long round;         /* the round being synchronised, for messages */
    void *impl;
};

/* The run's transport: MPI when nnc_mpi_init() started MPI in this process (MPI build),
 * else the in-process one. */
int nnc__transport_default_new(nnc_transport **out);
#ifdef NNC_MPI
int nnc__transport_mpi_new(nnc_transport **out);
#endif

/* First global worker of rank r when M workers are split over `size` ranks. */
static inline int nnc__transport_first_worker(int M, int size, int r) { return (int)((long)r * M / size); }

/* The in-process transport: one rank, reductions over the local workers in index order. */
int nnc__transport_local_new(nnc_transport **out);
void nnc__transport_free(nnc_transport *t);

/* Weighted mean of the workers' vectors through t: center = (sum u_i x_i) / (sum u_i), per
 * layer when per_layer. acc (ly->n doubles) and usum (L doubles) are caller scratch. */
int nnc__transport_center(nnc_transport *t, const nnc_grawa_layers *ly, const float *const *x,
                          const double *u, int nlocal, int per_layer, double *acc, double *usum,
                          float *center);

/* Bytes one worker sends + receives per weighted reduction of n floats over the transport
 * (communication accounting, docs/algorithms.md "Communication"): the fused vector and its
 * weight sums. */
double nnc__transport_round_bytes(size_t n, int L, int per_layer);

#endif
