/* dist/transport_mpi.c - the MPI transport (see dist/transport.h) and nnc_mpi_* (dist/dist.h).
 * Compiled only by `make MPI=1` (with mpicc, -DNNC_MPI).
 *
 * Every operation is non-blocking MPI polled against the transport's deadline, so a stalled or
 * dead peer gives NNC_ETIMEOUT ("sync round N: ... rank K ...") instead of a hang; the caller
 * then aborts the job (nnc_mpi_abort), since the pending requests cannot be withdrawn.
 * The weighted reduction is a chain in rank order over a private duplicate of MPI_COMM_WORLD:
 * rank r receives the partial sums of ranks 0..r-1, adds its workers in index order (the same
 * double-precision sequence as the in-process transport), passes them on; the last rank
 * broadcasts. allgather collects the blocks on rank 0 (so it can name a missing rank) and
 * broadcasts the whole buffer.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dist/dist.h"
#include "dist/transport.h"
#include "nn/alloc.h"
#include "nn/status.h"

#define TAG_CHAIN 11
#define TAG_GATHER 12

static int g_active, g_rank, g_size = 1;

typedef struct mpi_impl {
    MPI_Comm comm;
    double *chain;       /* n + L doubles: the running partial sums */
    size_t chain_n;
    int broken;          /* a wait timed out: requests are pending, the communicator unusable */
} mpi_impl;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wait for n requests until t->timeout; on expiry name `peer` (or the first request still
 * open: peers[k]) and what was being waited for. */
static int wait_all(nnc_transport *t, int n, MPI_Request *rq, const int *peers, const char *what)
{
    mpi_impl *m = t->impl;
    double t0 = now_s();
    struct timespec nap = {0, 100000};
    for (;;) {
        int done = 0;
        if (MPI_Testall(n, rq, &done, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
            return nnc__fail(NNC_EIO, "sync round %ld: MPI error during %s", t->round, what);
        if (done) return NNC_OK;
        if (t->timeout > 0 && now_s() - t0 > t->timeout) {
            int k = 0;
            for (; k < n; k++) {
                int f = 0;
                MPI_Request_get_status(rq[k], &f, MPI_STATUS_IGNORE);
                if (!f) break;
            }
            m->broken = 1;
            int peer = peers[k < n ? k : 0];
            char who[48];
            /* A collective this rank roots (a broadcast's root, a barrier) waits for the others:
             * name the other rank, or all of them when there are several. */
            if (peer == t->rank && t->size == 2) peer = 1 - t->rank;
            if (peer == t->rank)
                snprintf(who, sizeof who, "the other %d ranks", t->size - 1);
            else
                snprintf(who, sizeof who, "rank %d", peer);
            return nnc__fail(NNC_ETIMEOUT,
                             "sync round %ld: rank %d waited %.1f s for %s in the %s (stalled or "
                             "dead rank?)", t->round, t->rank, t->timeout, who, what);
        }
        nanosleep(&nap, NULL);
    }
}

static int mpi_reduce(nnc_transport *t, const nnc_grawa_layers *ly, const float *const *x, const double *u,
                      int nlocal, int per_layer, double *acc, double *usum)
{
    mpi_impl *m = t->impl;
    int nsum = per_layer ? ly->L : 1;
    size_t n = ly->n, tot = n + (size_t)nsum;
    NNC_ASSERT(tot < (size_t)INT32_MAX, "MPI reduction of %zu doubles", tot);
    if (m->chain_n < tot) {
        nnc__free(m->chain);
        m->chain = nnc__calloc(tot, sizeof(double));
        m->chain_n = m->chain ? tot : 0;
        if (!m->chain) return nnc__fail(NNC_ENOMEM, "MPI transport: cannot allocate %zu doubles", tot);
    }
    double *b = m->chain;
    MPI_Request rq;
    int s, peer;
    if (t->rank == 0) {
        memset(b, 0, tot * sizeof(double));
    } else {
        peer = t->rank - 1;
        MPI_Irecv(b, (int)tot, MPI_DOUBLE, peer, TAG_CHAIN, m->comm, &rq);
        if ((s = wait_all(t, 1, &rq, &peer, "reduction (partial sums)"))) return s;
    }
    nnc__grawa_accumulate(ly, b, x, u, nlocal, per_layer);
    nnc__grawa_accumulate_wsum(ly->L, b + n, u, nlocal, per_layer);
    if (t->rank + 1 < t->size) {
        peer = t->rank + 1;
        MPI_Isend(b, (int)tot, MPI_DOUBLE, peer, TAG_CHAIN, m->comm, &rq);
        if ((s = wait_all(t, 1, &rq, &peer, "reduction (passing partial sums)"))) return s;
    }
    peer = t->size - 1;
    MPI_Ibcast(b, (int)tot, MPI_DOUBLE, peer, m->comm, &rq);
    if ((s = wait_all(t, 1, &rq, &peer, "reduction (result broadcast)"))) return s;
    memcpy(acc, b, n * sizeof(double));
    memcpy(usum, b + n, (size_t)nsum * sizeof(double));
    return NNC_OK;
}

static int mpi_broadcast(nnc_transport *t, void *buf, size_t bytes, int root)
{
    mpi_impl *m = t->impl;
    NNC_ASSERT(bytes < (size_t)INT32_MAX, "MPI broadcast of %zu bytes", bytes);
    MPI_Request rq;
    MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, m->comm, &rq);
    return wait_all(t, 1, &rq, &root, "broadcast");
}

static int mpi_barrier(nnc_transport *t)
{
    mpi_impl *m = t->impl;
    MPI_Request rq;
    int peer = 0;
    MPI_Ibarrier(m->comm, &rq);
    return wait_all(t, 1, &rq, &peer, "barrier");
}

static int mpi_allgather(nnc_transport *t, void *buf, const size_t *bytes)
{
    mpi_impl *m = t->impl;
    unsigned char *b = buf;
    size_t off[NNC_MAX_WORKERS + 1], total = 0;
    NNC_ASSERT(t->size <= NNC_MAX_WORKERS, "%d ranks", t->size);
    for (int r = 0; r < t->size; r++) {
        off[r] = total;
        total += bytes[r];
    }
    NNC_ASSERT(total < (size_t)INT32_MAX, "MPI allgather of %zu bytes", total);
    MPI_Request rq[NNC_MAX_WORKERS];
    int peers[NNC_MAX_WORKERS], n = 0, s;
    if (t->rank == 0) {
        for (int r = 1; r < t->size; r++) {
            if (!bytes[r]) continue;
            peers[n] = r;
            MPI_Irecv(b + off[r], (int)bytes[r], MPI_BYTE, r, TAG_GATHER, m->comm, &rq[n++]);
        }
        if ((s = wait_all(t, n, rq, peers, "round exchange"))) return s;
    } else if (bytes[t->rank]) {
        peers[0] = 0;
        MPI_Isend(b + off[t->rank], (int)bytes[t->rank], MPI_BYTE, 0, TAG_GATHER, m->comm, &rq[0]);
        if ((s = wait_all(t, 1, rq, peers, "round exchange (sending)"))) return s;
    }
    peers[0] = 0;
    MPI_Ibcast(b, (int)total, MPI_BYTE, 0, m->comm, &rq[0]);
    return wait_all(t, 1, rq, peers, "round exchange (rank 0's answer)");
}

static void mpi_free(nnc_transport *t)
{
    mpi_impl *m = t->impl;
    if (m) {
        if (!m->broken && m->comm != MPI_COMM_NULL) MPI_Comm_free(&m->comm);
        nnc__free(m->chain);
        nnc__free(m);
    }
    nnc__free(t);
}

static const nnc_transport_ops mpi_ops = {
    .name = "mpi",
    .reduce_weighted = mpi_reduce,
    .broadcast = mpi_broadcast,
    .barrier = mpi_barrier,
    .allgather = mpi_allgather,
    .free = mpi_free,
};

int nnc__transport_mpi_new(nnc_transport **out)
{
    *out = NULL;
    if (!g_active) return nnc__fail(NNC_EINVAL, "MPI transport: nnc_mpi_init was not called");
    nnc_transport *t = nnc__calloc(1, sizeof *t);
    mpi_impl *m = nnc__calloc(1, sizeof *m);
    if (!t || !m) {
        nnc__free(t);
        nnc__free(m);
        return nnc__fail(NNC_ENOMEM, "MPI transport: out of memory");
    }
    if (MPI_Comm_dup(MPI_COMM_WORLD, &m->comm) != MPI_SUCCESS) {
        nnc__free(t);
        nnc__free(m);
        return nnc__fail(NNC_EIO, "MPI transport: MPI_Comm_dup failed");
    }
    t->ops = &mpi_ops;
    t->impl = m;
    MPI_Comm_rank(m->comm, &t->rank);
    MPI_Comm_size(m->comm, &t->size);
    if (t->size > NNC_MAX_WORKERS) {
        mpi_free(t);
        return nnc__fail(NNC_EINVAL, "MPI: %d ranks, at most %d (one worker each at least)", g_size,
                         NNC_MAX_WORKERS);
    }
    *out = t;
    return NNC_OK;
}

int nnc__transport_default_new(nnc_transport **out)
{
    return g_active ? nnc__transport_mpi_new(out) : nnc__transport_local_new(out);
}

int nnc_mpi_init(int *argc, char ***argv)
{
    if (g_active) return NNC_OK;
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return nnc__fail(NNC_EIO, "MPI_Init_thread failed");
    if (provided < MPI_THREAD_FUNNELED)
        return nnc__fail(NNC_EUNSUPPORTED, "MPI gives thread level %d, FUNNELED (%d) needed", provided,
                         MPI_THREAD_FUNNELED);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_active = 1;
    return NNC_OK;
}

int nnc_mpi_active(void) { return g_active; }
int nnc_mpi_rank(void) { return g_rank; }
int nnc_mpi_size(void) { return g_size; }

void nnc_mpi_finalize(void)
{
    if (g_active) MPI_Finalize();
    g_active = 0;
}

void nnc_mpi_abort(int code)
{
    if (g_active) MPI_Abort(MPI_COMM_WORLD, code);
}
