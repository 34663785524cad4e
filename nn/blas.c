/* nn/blas.c - OpenBLAS wrapper (the only includer of cblas.h). */
#include "nn/blas.h"

#include <cblas.h>

void nnc__sgemm(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                const float *b, int ldb, float beta, float *c, int ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
                alpha, a, lda, b, ldb, beta, c, ldc);
}

void nnc_blas_set_threads(int n) { openblas_set_num_threads(n); }
int nnc_blas_threads(void) { return openblas_get_num_threads(); }
