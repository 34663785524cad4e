/* nn/tensor.h - float32 tensors, the step graph (arena + autograd tape) and backward.
 *
 * A tensor is a view: shape (up to 4 dims, NCHW at the API) plus pointers to its data and its
 * gradient. Step tensors (activations) live in the graph's arena and die at nnc_graph_reset();
 * parameter tensors point into the params arenas (nn/params.h) and live with the model.
 *
 * The graph records define-by-run: every op called with grad enabled appends a node (op name,
 * backward function, inputs, output, saved state) to the tape when one of its inputs requires a
 * gradient. nnc_backward() walks the tape in reverse, accumulating into ->grad; step gradients
 * are allocated zero-filled in the arena on first use, parameter gradients accumulate into the
 * grads arena (zero them with nnc_params_zero_grad()). Gradients of op outputs are recycled
 * during backward unless nnc_graph_set_keep_grads() says otherwise.
 *
 * Thread-safety: a graph and its tensors belong to one thread at a time.
 */
#ifndef NNC_TENSOR_H
#define NNC_TENSOR_H

#include <stddef.h>

#include "nn/alloc.h"
#include "nn/status.h"

#define NNC_MAX_DIMS 4

typedef struct nnc_tensor {
    float *data;
    float *grad;                /* NULL until backward needs it */
    int ndim;
    int shape[NNC_MAX_DIMS];
    size_t numel;
    int node;                   /* tape index of the producing op, -1 for leaves */
    int requires_grad;
    const char *name;           /* parameter name, or NULL */
    int owns_data;              /* data was allocated for this tensor by nnc_tensor_new (not a view) */
} nnc_tensor;

typedef struct nnc_graph nnc_graph;
typedef struct nnc_node nnc_node;
typedef void (*nnc_backward_fn)(nnc_graph *g, nnc_node *n);

#define NNC_NODE_MAX_IN 6

/* One recorded op. Ops keep what backward needs in iargs/fargs/saved (saved lives in the arena). */
struct nnc_node {
    const char *op;
    nnc_backward_fn backward;
    nnc_tensor *out;
    nnc_tensor *in[NNC_NODE_MAX_IN];
    int nin;
    int iargs[8];
    float fargs[4];
    void *saved;
    const void *cptr;           /* op-specific constant pointer (e.g. labels) */
};

/* Create a graph whose arena starts with arena_bytes (0 = 1 MiB; it grows on demand). */
int nnc_graph_new(size_t arena_bytes, nnc_graph **out);
void nnc_graph_free(nnc_graph *g);
/* Forget every step tensor and node (one arena reset). Parameters are untouched. */
void nnc_graph_reset(nnc_graph *g);
/* Grad mode: when off, ops record nothing (evaluation). Default on. */
void nnc_graph_set_grad(nnc_graph *g, int enabled);
int nnc_graph_grad_enabled(const nnc_graph *g);
/* Backward hands the gradient buffer of every op output to later gradients of the same size
 * as soon as the op's own backward has run (the output's ->grad becomes NULL): only leaves and
 * parameters keep gradients after backward, and the step needs a few gradient buffers instead
 * of one per activation. keep = 1 keeps every gradient (for inspecting intermediate ones). */
void nnc_graph_set_keep_grads(nnc_graph *g, int keep);
/* Recycle mode (default off; training loops turn it on): backward also hands the data of every
 * op output the graph allocated (not views, not the tensor backward started from) to later
 * gradients once the op's backward has run - nothing earlier on the tape reads it - and sets
 * its ->data to NULL. Gradients are carved from these dead regions (adjacent ones merged), so
 * the step's peak memory is about the forward activations alone. Read what you need (logits,
 * intermediate activations) before nnc_backward. */
void nnc_graph_set_recycle(nnc_graph *g, int recycle);
/* Anomaly mode: backward checks every gradient it produces and fails with NNC_EDIVERGED naming
 * the op, its tape index and the parameter, instead of propagating NaN/Inf. */
void nnc_graph_set_anomaly(nnc_graph *g, int enabled);
nnc_arena *nnc_graph_arena(nnc_graph *g);
int nnc_graph_num_nodes(const nnc_graph *g);
const nnc_node *nnc_graph_node(const nnc_graph *g, int i);

/* New step tensor with uninitialised data (aborts on OOM: the arena is sized by the first step). */
nnc_tensor *nnc_tensor_new(nnc_graph *g, int ndim, const int *shape);
nnc_tensor *nnc_tensor_new4(nnc_graph *g, int n, int c, int h, int w);
/* Step tensor viewing caller memory (no copy, no grad); e.g. an input batch. */
nnc_tensor *nnc_tensor_wrap(nnc_graph *g, float *data, int ndim, const int *shape);
/* Step-lifetime scratch memory for ops (aligned; aborts on OOM). */
void *nnc_graph_scratch(nnc_graph *g, size_t bytes);

size_t nnc_shape_numel(int ndim, const int *shape);
int nnc_tensor_same_shape(const nnc_tensor *a, const nnc_tensor *b);
/* "(2,3,32,32)" into buf; returns buf. */
const char *nnc_tensor_shape_str(const nnc_tensor *t, char *buf, size_t n);

/* Backward from a scalar loss (seed 1). */
int nnc_backward(nnc_graph *g, nnc_tensor *loss);
/* Backward from any tensor with an explicit seed gradient (numel floats, copied). */
int nnc_backward_seed(nnc_graph *g, nnc_tensor *out, const float *seed);

/* --- for op implementations (nn/ops_*.c) --- */
/* Append a node if grad is enabled and any input requires grad; marks out as requiring grad.
 * Returns NULL when nothing was recorded. */
nnc_node *nnc__record(nnc_graph *g, const char *op, nnc_backward_fn bw, nnc_tensor *out, int nin,
                      nnc_tensor *const *in);
/* Gradient buffer of t, allocated zero-filled in the arena on first use. */
float *nnc__grad(nnc_graph *g, nnc_tensor *t);
/* The same buffer, but a newly allocated one is left uninitialised and *fresh = 1: the caller
 * must then write (not accumulate into) every element. *fresh = 0: accumulate as usual. */
float *nnc__grad_fresh(nnc_graph *g, nnc_tensor *t, int *fresh);

#endif
