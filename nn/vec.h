/* nn/vec.h - portable 4-float vectors (GCC/clang vector extensions) for the memory-bound
 * passes (elementwise ops, batch-norm statistics). Compiled for the baseline ISA: on x86-64
 * each operation is one SSE instruction (wider types would change the ABI of these inline helpers), which keeps these passes at memory speed without
 * per-ISA code. Internal to nn/. Thread-safety: pure functions. */
#ifndef NNC_VEC_H
#define NNC_VEC_H

#include <string.h>

typedef float nnc__v4 __attribute__((vector_size(16)));
typedef int nnc__v4i __attribute__((vector_size(16)));

static inline nnc__v4 nnc__v4_load(const float *p)
{
    nnc__v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void nnc__v4_store(float *p, nnc__v4 v) { memcpy(p, &v, sizeof v); }
static inline nnc__v4 nnc__v4_set1(float x) { return (nnc__v4){x, x, x, x}; }
/* Lanes where mask is true keep v, the others become +0. */
static inline nnc__v4 nnc__v4_keep(nnc__v4 v, nnc__v4i mask) { return (nnc__v4)((nnc__v4i)v & mask); }
/* Sum of the 4 lanes in a fixed order, in double. */
static inline double nnc__v4_hsum(nnc__v4 v)
{
    return ((double)v[0] + v[1]) + ((double)v[2] + v[3]);
}

#endif
