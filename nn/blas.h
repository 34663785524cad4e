/* nn/blas.h - the BLAS seam. nn/blas.c is the only file that includes cblas.h.
 *
 * Row-major single-precision GEMM: C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
 * Thread-safety: sgemm is reentrant; nnc_blas_set_threads is process-wide (call it before
 * starting multi-worker training: workers run BLAS single-threaded).
 */
#ifndef NNC_BLAS_H
#define NNC_BLAS_H

void nnc__sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                const float *b, int ldb, float beta, float *c, int ldc);
void nnc_blas_set_threads(int n);
int nnc_blas_threads(void);

#endif
