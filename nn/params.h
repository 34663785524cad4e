/* nn/params.h - a model's state in flat arenas, described by one name table.
 *
 * Three arenas with one table: trained parameters (data) and their gradients (grad) share
 * offsets; buffers (BatchNorm running statistics, flag NNC_PARAM_BUFFER) live in their own arena.
 * Each entry is {name, shape, offset, numel, flags}; offsets are 64-byte aligned. Optimizers,
 * replica averaging and checkpoints walk this table, so new state is never silently skipped.
 *
 * Build in two phases: nnc_params_add() each entry, then nnc_params_finalize() allocates the
 * arenas (zero-filled); tensors are valid from then on.
 *
 * Thread-safety: a params object has one writer at a time; readers of a quiescent one may share it.
 */
#ifndef NNC_PARAMS_H
#define NNC_PARAMS_H

#include <stddef.h>

#include "nn/tensor.h"

enum {
    NNC_PARAM_NO_DECAY = 1, /* excluded from weight decay when the optimizer is asked to */
    NNC_PARAM_BUFFER = 2,   /* not trained: lives in the buffers arena, no gradient */
    NNC_PARAM_BN = 4        /* BatchNorm gamma/beta (for no-decay-on-BN policies) */
};

#define NNC_PARAM_NAME_MAX 64

typedef struct nnc_param_entry {
    char name[NNC_PARAM_NAME_MAX];
    int ndim;
    int shape[NNC_MAX_DIMS];
    size_t numel;
    size_t offset;  /* in floats, into data/grad (params) or buf (buffers) */
    unsigned flags;
} nnc_param_entry;

typedef struct nnc_params {
    nnc_param_entry *entries;
    int count, cap;
    float *data, *grad; /* trained parameters and gradients, n_data floats each */
    size_t n_data;
    float *buf;         /* buffers, n_buf floats */
    size_t n_buf;
    nnc_tensor *tensors;/* one view per entry */
    int finalized;
} nnc_params;

int nnc_params_new(nnc_params **out);
void nnc_params_free(nnc_params *p);
/* Add an entry; returns its index (>= 0) or a negative status (duplicate name, bad shape). */
int nnc_params_add(nnc_params *p, const char *name, int ndim, const int *shape, unsigned flags);
int nnc_params_finalize(nnc_params *p);
/* Deep copy: same table, copied data and buffers, zero gradients. */
int nnc_params_clone(const nnc_params *src, nnc_params **out);
/* Copy data and buffers from src (same layout, asserted). */
void nnc_params_copy(nnc_params *dst, const nnc_params *src);
/* 1 if both tables have identical names, shapes and flags. */
int nnc_params_same_layout(const nnc_params *a, const nnc_params *b);

nnc_tensor *nnc_params_tensor(nnc_params *p, int index);
int nnc_params_find(const nnc_params *p, const char *name); /* index or -1 */
void nnc_params_zero_grad(nnc_params *p);
/* Number of trained scalars / number of trained tensors ("layers"). */
size_t nnc_params_num_scalars(const nnc_params *p);
int nnc_params_num_trained(const nnc_params *p);
/* Pointer to entry i's floats in its arena. */
float *nnc_params_ptr(nnc_params *p, int index);
/* 1 if all data and buffers are finite. */
int nnc_params_all_finite(const nnc_params *p);

#endif
