/* nn/graph.c - step graph: arena-backed tensors, the autograd tape, backward. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/fault.h"
#include "nn/tensor.h"

struct nnc_graph {
    nnc_arena *arena;   /* tensor data and gradients (and large op scratch) */
    nnc_arena *meta;    /* tensor headers and small op scratch: keeps the data buffers adjacent */
    nnc_node *tape;     /* persistent across resets; grows by doubling, then stays */
    int ntape, cap;
    int grad_enabled;
    int anomaly;
    int backward_done;
    int keep_grads;
    int recycle;
    /* Dead regions of the data arena, sorted by address, adjacent ones merged: gradient buffers
     * of op outputs whose producer's backward has run and (recycle mode) those outputs' data.
     * New gradients are carved from them best-fit (persistent array; entries die at reset). */
    struct region {
        char *p;
        size_t n;
    } *free_regions;
    int nfree, free_cap;
};

#define META_BYTES 4096 /* nnc_graph_scratch requests below this go to the meta arena */

static size_t rounded(size_t bytes) { return (bytes + NNC_ALIGN - 1) / NNC_ALIGN * NNC_ALIGN; }

int nnc_graph_new(size_t arena_bytes, nnc_graph **out)
{
    *out = NULL;
    nnc_graph *g = nnc__calloc(1, sizeof *g);
    if (!g) return nnc__fail(NNC_ENOMEM, "graph: out of memory");
    int s = nnc_arena_new(arena_bytes, &g->arena);
    if (!s) s = nnc_arena_new(64 << 10, &g->meta);
    if (s) {
        nnc_arena_free(g->arena);
        nnc__free(g);
        return s;
    }
    g->cap = 256;
    g->tape = nnc__alloc(sizeof *g->tape * (size_t)g->cap);
    if (!g->tape) {
        nnc_arena_free(g->arena);
        nnc_arena_free(g->meta);
        nnc__free(g);
        return nnc__fail(NNC_ENOMEM, "graph: out of memory");
    }
    g->grad_enabled = 1;
    *out = g;
    return NNC_OK;
}

void nnc_graph_free(nnc_graph *g)
{
    if (!g) return;
    nnc_arena_free(g->arena);
    nnc_arena_free(g->meta);
    nnc__free(g->tape);
    nnc__free(g->free_regions);
    nnc__free(g);
}

void nnc_graph_reset(nnc_graph *g)
{
    nnc_arena_reset(g->arena);
    nnc_arena_reset(g->meta);
    g->ntape = 0;
    g->backward_done = 0;
    g->nfree = 0;
}

void nnc_graph_set_keep_grads(nnc_graph *g, int keep) { g->keep_grads = keep; }
void nnc_graph_set_recycle(nnc_graph *g, int recycle) { g->recycle = recycle; }

void nnc_graph_set_grad(nnc_graph *g, int enabled) { g->grad_enabled = enabled; }
int nnc_graph_grad_enabled(const nnc_graph *g) { return g->grad_enabled; }
void nnc_graph_set_anomaly(nnc_graph *g, int enabled) { g->anomaly = enabled; }
nnc_arena *nnc_graph_arena(nnc_graph *g) { return g->arena; }
int nnc_graph_num_nodes(const nnc_graph *g) { return g->ntape; }

const nnc_node *nnc_graph_node(const nnc_graph *g, int i)
{
    NNC_ASSERT(i >= 0 && i < g->ntape, "node %d of %d", i, g->ntape);
    return &g->tape[i];
}

static void *data_alloc(nnc_graph *g, size_t bytes)
{
    void *p = nnc_arena_alloc(g->arena, bytes);
    NNC_ASSERT(p != NULL, "step arena: out of memory allocating %zu bytes", bytes);
    return p;
}

void *nnc_graph_scratch(nnc_graph *g, size_t bytes)
{
    if (bytes >= META_BYTES) return data_alloc(g, bytes);
    void *p = nnc_arena_alloc(g->meta, bytes);
    NNC_ASSERT(p != NULL, "step arena: out of memory allocating %zu bytes", bytes);
    return p;
}

size_t nnc_shape_numel(int ndim, const int *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

nnc_tensor *nnc_tensor_wrap(nnc_graph *g, float *data, int ndim, const int *shape)
{
    NNC_ASSERT(ndim >= 1 && ndim <= NNC_MAX_DIMS, "ndim %d", ndim);
    nnc_tensor *t = nnc_graph_scratch(g, sizeof *t);
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        NNC_ASSERT(shape[i] > 0, "dimension %d is %d", i, shape[i]);
        t->shape[i] = shape[i];
    }
    t->numel = nnc_shape_numel(ndim, shape);
    t->data = data;
    t->node = -1;
    return t;
}

nnc_tensor *nnc_tensor_new(nnc_graph *g, int ndim, const int *shape)
{
    nnc_tensor *t = nnc_tensor_wrap(g, NULL, ndim, shape);
    t->data = data_alloc(g, t->numel * sizeof(float));
    t->owns_data = 1;
    return t;
}

nnc_tensor *nnc_tensor_new4(nnc_graph *g, int n, int c, int h, int w)
{
    int shape[4] = {n, c, h, w};
    return nnc_tensor_new(g, 4, shape);
}

int nnc_tensor_same_shape(const nnc_tensor *a, const nnc_tensor *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

const char *nnc_tensor_shape_str(const nnc_tensor *t, char *buf, size_t n)
{
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "(");
    for (int i = 0; i < t->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ",%d" : "%d", t->shape[i]);
    if (off < n) snprintf(buf + off, n - off, ")");
    return buf;
}

nnc_node *nnc__record(nnc_graph *g, const char *op, nnc_backward_fn bw, nnc_tensor *out, int nin,
                      nnc_tensor *const *in)
{
    NNC_ASSERT(nin <= NNC_NODE_MAX_IN, "%s: %d inputs", op, nin);
    if (!g->grad_enabled) return NULL;
    int any = 0;
    for (int i = 0; i < nin; i++)
        if (in[i] && in[i]->requires_grad) any = 1;
    if (!any) return NULL;
    if (g->ntape == g->cap) {
        size_t bytes = sizeof(nnc_node) * (size_t)g->cap * 2;
        nnc_node *t = nnc__alloc(bytes);
        if (!t) nnc__oom_raise(bytes); /* the step's catch turns it into NNC_ENOMEM */
        NNC_ASSERT(t != NULL, "tape: out of memory allocating %zu bytes", bytes);
        memcpy(t, g->tape, sizeof *t * (size_t)g->ntape);
        nnc__free(g->tape);
        g->tape = t;
        g->cap *= 2;
    }
    nnc_node *n = &g->tape[g->ntape];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = bw;
    n->out = out;
    n->nin = nin;
    for (int i = 0; i < nin; i++) n->in[i] = in[i];
    out->node = g->ntape++;
    out->requires_grad = 1;
    return n;
}

/* Carve bytes (rounded) from the best-fitting dead region, or NULL. */
static float *take_region(nnc_graph *g, size_t bytes)
{
    size_t need = rounded(bytes);
    int best = -1;
    for (int i = 0; i < g->nfree; i++)
        if (g->free_regions[i].n >= need && (best < 0 || g->free_regions[i].n < g->free_regions[best].n)) best = i;
    if (best < 0) return NULL;
    struct region *r = &g->free_regions[best];
    float *p = (float *)r->p;
    r->p += need;
    r->n -= need;
    if (r->n == 0) {
        memmove(r, r + 1, sizeof *r * (size_t)(g->nfree - best - 1));
        g->nfree--;
    }
    return p;
}

/* Mark bytes (rounded) at p dead, merging with adjacent dead regions. A full list just leaks the
 * region until reset (the list only grows on the first steps). */
static void give_region(nnc_graph *g, void *vp, size_t bytes)
{
    char *p = vp;
    size_t n = rounded(bytes);
    int i = 0;
    while (i < g->nfree && g->free_regions[i].p < p) i++;
    struct region *prev = i > 0 ? &g->free_regions[i - 1] : NULL, *next = i < g->nfree ? &g->free_regions[i] : NULL;
    NNC_ASSERT(!(prev && prev->p + prev->n > p) && !(next && p + n > next->p), "graph: buffer released twice");
    if (prev && prev->p + prev->n == p) {
        prev->n += n;
        if (next && prev->p + prev->n == next->p) {
            prev->n += next->n;
            memmove(next, next + 1, sizeof *next * (size_t)(g->nfree - i - 1));
            g->nfree--;
        }
        return;
    }
    if (next && p + n == next->p) {
        next->p = p;
        next->n += n;
        return;
    }
    if (g->nfree == g->free_cap) {
        int cap = g->free_cap ? 2 * g->free_cap : 64;
        struct region *f = nnc__alloc(sizeof *f * (size_t)cap);
        if (!f) return;
        if (g->nfree) memcpy(f, g->free_regions, sizeof *f * (size_t)g->nfree);
        nnc__free(g->free_regions);
        g->free_regions = f;
        g->free_cap = cap;
    }
    memmove(&g->free_regions[i + 1], &g->free_regions[i], sizeof *g->free_regions * (size_t)(g->nfree - i));
    g->free_regions[i].p = p;
    g->free_regions[i].n = n;
    g->nfree++;
}

float *nnc__grad_fresh(nnc_graph *g, nnc_tensor *t, int *fresh)
{
    *fresh = 0;
    if (!t->grad) {
        t->grad = take_region(g, t->numel * sizeof(float));
        if (!t->grad) t->grad = data_alloc(g, t->numel * sizeof(float));
        *fresh = 1;
    }
    return t->grad;
}

float *nnc__grad(nnc_graph *g, nnc_tensor *t)
{
    int fresh;
    float *p = nnc__grad_fresh(g, t, &fresh);
    if (fresh) memset(p, 0, t->numel * sizeof(float));
    return p;
}

/* Once an op's backward has run, its output's gradient is final and (nothing earlier on the tape
 * reads an op output) its data is dead: hand both to later gradients. */
static void release_output(nnc_graph *g, nnc_tensor *t, const nnc_tensor *root)
{
    if (g->keep_grads || t->node < 0) return;
    if (t->grad) {
        give_region(g, t->grad, t->numel * sizeof(float));
        t->grad = NULL;
    }
    if (g->recycle && t->owns_data && t != root && t->data) {
        give_region(g, t->data, t->numel * sizeof(float));
        t->data = NULL;
    }
}

static int all_finite(const float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i])) return 0;
    return 1;
}

int nnc_backward_seed(nnc_graph *g, nnc_tensor *out, const float *seed)
{
    NNC_ASSERT(out != NULL, "backward of NULL");
    NNC_ASSERT(out->node >= 0 && out->node < g->ntape && g->tape[out->node].out == out,
               "backward without forward: tensor was not produced by a recorded op of this graph "
               "(grad disabled, graph reset, or a leaf)");
    NNC_ASSERT(!g->backward_done, "backward called twice on one forward; reset the graph first");
    g->backward_done = 1;
    float *gr = nnc__grad(g, out);
    memcpy(gr, seed, out->numel * sizeof(float));
    for (int i = out->node; i >= 0; i--) {
        nnc_node *n = &g->tape[i];
        if (!n->out->grad) continue; /* does not reach the loss */
        n->backward(g, n);
#ifdef NNC_TESTING
        nnc__fault_backward(g, n, i);
#endif
        if (!g->anomaly) {
            release_output(g, n->out, out);
            continue;
        }
        for (int k = 0; k < n->nin; k++) {
            nnc_tensor *x = n->in[k];
            if (!x || !x->requires_grad || !x->grad) continue;
            if (!all_finite(x->grad, x->numel))
                return nnc__fail(NNC_EDIVERGED,
                                 "anomaly: backward of op '%s' (tape node %d) produced a non-finite "
                                 "gradient for input %d%s%s",
                                 n->op, i, k, x->name ? " = parameter " : "", x->name ? x->name : "");
        }
        release_output(g, n->out, out);
    }
    return NNC_OK;
}

int nnc_backward(nnc_graph *g, nnc_tensor *loss)
{
    NNC_ASSERT(loss && loss->numel == 1, "backward needs a scalar loss");
    const float one = 1.0f;
    return nnc_backward_seed(g, loss, &one);
}
