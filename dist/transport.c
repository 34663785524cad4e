/* dist/transport.c - the in-process transport (see dist/transport.h). */
#include "dist/transport.h"

#include "dist/dist.h"

#include <string.h>

#include "nn/alloc.h"
#include "nn/status.h"

static int local_reduce(nnc_transport *t, const nnc_grawa_layers *ly, const float *const *x,
                        const double *u, int nlocal, int per_layer, double *acc, double *usum)
{
    (void)t;
    memset(acc, 0, ly->n * sizeof(double));
    int nsum = per_layer ? ly->L : 1;
    memset(usum, 0, (size_t)(nsum ? nsum : 1) * sizeof(double));
    nnc__grawa_accumulate(ly, acc, x, u, nlocal, per_layer);
    nnc__grawa_accumulate_wsum(ly->L, usum, u, nlocal, per_layer);
    return NNC_OK;
}

static int local_broadcast(nnc_transport *t, void *buf, size_t bytes, int root)
{
    (void)t;
    (void)buf;
    (void)bytes;
    NNC_ASSERT(root == 0, "local transport has one rank, root %d", root);
    return NNC_OK;
}

static int local_barrier(nnc_transport *t)
{
    (void)t;
    return NNC_OK;
}

static int local_allgather(nnc_transport *t, void *buf, const size_t *bytes)
{
    (void)t;
    (void)buf;
    (void)bytes;
    return NNC_OK;
}

static void local_free(nnc_transport *t)
{
    nnc__free(t);
}

static const nnc_transport_ops local_ops = {
    .name = "local",
    .reduce_weighted = local_reduce,
    .broadcast = local_broadcast,
    .barrier = local_barrier,
    .allgather = local_allgather,
    .free = local_free,
};

int nnc__transport_local_new(nnc_transport **out)
{
    nnc_transport *t = nnc__calloc(1, sizeof *t);
    if (!t) return nnc__fail(NNC_ENOMEM, "transport: out of memory");
    t->ops = &local_ops;
    t->rank = 0;
    t->size = 1;
    *out = t;
    return NNC_OK;
}

#ifndef NNC_MPI
/* Without the MPI build (transport_mpi.c defines these there). */
int nnc__transport_default_new(nnc_transport **out) { return nnc__transport_local_new(out); }
int nnc_mpi_init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return nnc__fail(NNC_EUNSUPPORTED, "this nnc was built without MPI (rebuild with make MPI=1)");
}
int nnc_mpi_active(void) { return 0; }
int nnc_mpi_rank(void) { return 0; }
int nnc_mpi_size(void) { return 1; }
void nnc_mpi_finalize(void) {}
void nnc_mpi_abort(int code) { (void)code; }
#endif

void nnc__transport_free(nnc_transport *t)
{
    if (t) t->ops->free(t);
}

int nnc__transport_center(nnc_transport *t, const nnc_grawa_layers *ly, const float *const *x,
                          const double *u, int nlocal, int per_layer, double *acc, double *usum,
                          float *center)
{
    int s = t->ops->reduce_weighted(t, ly, x, u, nlocal, per_layer, acc, usum);
    if (s) return s;
    nnc__grawa_finalize(ly, center, acc, usum, per_layer);
    return NNC_OK;
}

double nnc__transport_round_bytes(size_t n, int L, int per_layer)
{
    /* Up: the local contribution and its weight sums; down: the finished center. */
    double up = (double)n * sizeof(float) + (double)(per_layer ? L : 1) * sizeof(double);
    return up + (double)n * sizeof(float);
}
