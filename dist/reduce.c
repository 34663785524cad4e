/* dist/reduce.c - the node-by-node pipelined center reduction (see dist/reduce.h). */
#include "dist/reduce.h"

#include <sched.h>
#include <string.h>

#include "nn/alloc.h"
#include "nn/status.h"
#include "nn/threads.h"

int nnc__reduce_init(nnc__reduce *r, const nnc_grawa_layers *ly, const float *const *x, const double *u, int M,
                     int per_layer, const int *node, size_t chunk, double *acc, const double *usum,
                     float *center)
{
    memset(r, 0, sizeof *r);
    if (M < 1 || M > NNC_MAX_WORKERS)
        return nnc__fail(NNC_EINVAL, "reduction: %d workers, expected 1..%d", M, NNC_MAX_WORKERS);
    r->ly = ly;
    r->x = x;
    r->u = u;
    r->M = M;
    r->per_layer = per_layer;
    r->acc = acc;
    r->usum = usum;
    r->center = center;
    r->chunk = chunk ? chunk : NNC_REDUCE_CHUNK;
    size_t nc = (ly->n + r->chunk - 1) / r->chunk;
    if (nc > (size_t)1 << 30) return nnc__fail(NNC_EINVAL, "reduction: %zu chunks of %zu floats", nc, r->chunk);
    r->nchunks = (int)nc;
    /* Nodes renumbered by first appearance; stages = runs of consecutive workers on one node. */
    int id[NNC_MAX_WORKERS], raw[NNC_MAX_WORKERS];
    for (int i = 0; i < M; i++) {
        raw[i] = node && node[i] >= 0 ? node[i] : 0;
        id[i] = -1;
        for (int j = 0; j < i; j++)
            if (raw[j] == raw[i]) id[i] = id[j];
        if (id[i] < 0) id[i] = r->nnodes++;
        if (i == 0 || id[i] != id[i - 1]) {
            r->stage_lo[r->nstages] = i;
            r->stage_node[r->nstages++] = id[i];
        }
    }
    r->stage_lo[r->nstages] = M;
    for (int s = 0; s < r->nstages; s++) r->node_stages[r->stage_node[s]]++;
    for (int k = 0; k < r->nnodes; k++) r->node_first[k + 1] = r->node_first[k] + r->node_stages[k];
    int fill[NNC_MAX_WORKERS] = {0};
    for (int s = 0; s < r->nstages; s++) {
        int k = r->stage_node[s];
        r->node_list[r->node_first[k] + fill[k]++] = s;
    }
    for (int k = 0; k < r->nnodes; k++) atomic_init(&r->next[k], 0);
    r->done = nnc__calloc(nc ? nc : 1, sizeof *r->done);
    if (!r->done) return nnc__fail(NNC_ENOMEM, "reduction: out of memory for %zu chunk counters", nc);
    for (size_t c = 0; c < nc; c++) atomic_init(&r->done[c], 0);
    return NNC_OK;
}

void nnc__reduce_free(nnc__reduce *r)
{
    if (!r) return;
    nnc__free(r->done);
    r->done = NULL;
}

int nnc__reduce_node_of(const nnc__reduce *r, int i)
{
    for (int s = 0; s < r->nstages; s++)
        if (i < r->stage_lo[s + 1]) return r->stage_node[s];
    return 0;
}

/* The same element operation as the flat reduction's (dist/grawa.c axpy_d). */
static void axpy_d(double *restrict acc, const float *restrict x, double u, size_t len)
{
    for (size_t j = 0; j < len; j++) acc[j] += u * (double)x[j];
}

/* Stage s on chunk c: [a, b) of every layer, the stage's workers in order. */
static void task(nnc__reduce *r, int s, int c)
{
    const nnc_grawa_layers *ly = r->ly;
    size_t a = (size_t)c * r->chunk, b = a + r->chunk < ly->n ? a + r->chunk : ly->n;
    if (s == 0) memset(r->acc + a, 0, (b - a) * sizeof(double));
    for (int i = r->stage_lo[s]; i < r->stage_lo[s + 1]; i++) {
        for (int l = 0; l < ly->L; l++) {
            size_t lo = ly->off[l] > a ? ly->off[l] : a, hi = ly->off[l] + ly->len[l] < b ? ly->off[l] + ly->len[l] : b;
            if (lo >= hi) continue;
            double w = r->per_layer ? r->u[(size_t)i * ly->L + l] : r->u[i];
            if (w != 0.0) axpy_d(r->acc + lo, r->x[i] + lo, w, hi - lo);
        }
    }
    if (s == r->nstages - 1 && r->center) {
        /* nnc__grawa_finalize on [a, b): 0 outside the layers, acc * (1 / usum) inside. */
        memset(r->center + a, 0, (b - a) * sizeof(float));
        for (int l = 0; l < ly->L; l++) {
            size_t lo = ly->off[l] > a ? ly->off[l] : a, hi = ly->off[l] + ly->len[l] < b ? ly->off[l] + ly->len[l] : b;
            if (lo >= hi) continue;
            double sum = r->per_layer ? r->usum[l] : r->usum[0];
            double inv = sum > 0.0 ? 1.0 / sum : 0.0;
            for (size_t j = lo; j < hi; j++) r->center[j] = (float)(r->acc[j] * inv);
        }
    }
}

/* Wait until stage s - 1 has finished chunk c (spin briefly, then yield the core: the thread
 * that finishes it may need this one's core). */
static void wait_for(nnc__reduce *r, int s, int c)
{
    for (int k = 0; atomic_load_explicit(&r->done[c], memory_order_acquire) < s; k++)
        if (k > 64) sched_yield();
}

typedef struct node_ctx {
    nnc__reduce *r;
    int k;
} node_ctx;

static void node_tasks(void *ctx, int unused, int thread)
{
    (void)unused;
    (void)thread;
    node_ctx *n = ctx;
    nnc__reduce *r = n->r;
    int k = n->k, ns = r->node_stages[k];
    long total = (long)ns * r->nchunks;
    for (long t; (t = atomic_fetch_add_explicit(&r->next[k], 1, memory_order_relaxed)) < total;) {
        int c = (int)(t / ns), s = r->node_list[r->node_first[k] + (int)(t % ns)];
        wait_for(r, s, c);
        task(r, s, c);
        atomic_store_explicit(&r->done[c], s + 1, memory_order_release);
    }
}

void nnc__reduce_run(nnc__reduce *r, int k)
{
    if (k < 0 || k >= r->nnodes) return;
    node_ctx n = {.r = r, .k = k};
    nnc__parallel_for(nnc_threads(), node_tasks, &n);
}

void nnc__reduce_serial(nnc__reduce *r)
{
    for (int c = 0; c < r->nchunks; c++)
        for (int s = 0; s < r->nstages; s++) {
            task(r, s, c);
            atomic_store_explicit(&r->done[c], s + 1, memory_order_relaxed);
        }
}

typedef struct pull_ctx {
    float *x;
    const float *c;
    double s;
    size_t n, chunk;
} pull_ctx;

static void pull_task(void *ctx, int t, int thread)
{
    (void)thread;
    pull_ctx *p = ctx;
    size_t a = (size_t)t * p->chunk, b = a + p->chunk < p->n ? a + p->chunk : p->n;
    nnc__grawa_pull(p->x + a, p->c + a, p->s, b - a);
}

void nnc__reduce_pull(float *x, const float *c, double s, size_t n)
{
    if (s == 0.0 || n == 0) return;
    pull_ctx p = {.x = x, .c = c, .s = s, .n = n, .chunk = NNC_REDUCE_CHUNK};
    size_t nt = (n + p.chunk - 1) / p.chunk;
    if (nnc_threads() == 1 || nt == 1) {
        nnc__grawa_pull(x, c, s, n);
        return;
    }
    nnc__parallel_for((int)nt, pull_task, &p);
}
