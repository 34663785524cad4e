/* nn/conv/ref.c - the naive reference of the convolution (nnc_ref_conv2d_*, nn/ops.h; tests only):
 * the definition of cross-correlation, written as loops accumulating in double. Every kernel set
 * behind nn/conv/conv.h is tested against it. */
#include "nn/ops.h"

static int out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

/* x (N,C,H,W), w (K,C,R,S), b (K) or NULL -> y (N,K,P,Q), overwritten. */
void nnc_ref_conv2d_forward(const float *x, const float *w, const float *b, float *y, int n, int c,
                            int h, int wd, int k, int r, int s, int stride, int pad)
{
    int P = out_size(h, r, stride, pad), Q = out_size(wd, s, stride, pad);
    for (int in = 0; in < n; in++)
        for (int ik = 0; ik < k; ik++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    double acc = b ? b[ik] : 0.0;
                    for (int ic = 0; ic < c; ic++)
                        for (int ir = 0; ir < r; ir++)
                            for (int is = 0; is < s; is++) {
                                int ih = p * stride - pad + ir, iw = q * stride - pad + is;
                                if (ih < 0 || ih >= h || iw < 0 || iw >= wd) continue;
                                acc += (double)x[((in * c + ic) * h + ih) * wd + iw] *
                                       (double)w[((ik * c + ic) * r + ir) * s + is];
                            }
                    y[((in * k + ik) * P + p) * Q + q] = (float)acc;
                }
}

/* Gradients of the above for upstream dy (N,K,P,Q); dx, dw, db (any may be NULL) += . */
void nnc_ref_conv2d_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                             float *db, int n, int c, int h, int wd, int k, int r, int s, int stride,
                             int pad)
{
    int P = out_size(h, r, stride, pad), Q = out_size(wd, s, stride, pad);
    if (db)
        for (int ik = 0; ik < k; ik++) {
            double acc = 0;
            for (int in = 0; in < n; in++)
                for (int i = 0; i < P * Q; i++) acc += dy[(in * k + ik) * P * Q + i];
            db[ik] += (float)acc;
        }
    if (dw)
        for (int ik = 0; ik < k; ik++)
            for (int ic = 0; ic < c; ic++)
                for (int ir = 0; ir < r; ir++)
                    for (int is = 0; is < s; is++) {
                        double acc = 0;
                        for (int in = 0; in < n; in++)
                            for (int p = 0; p < P; p++)
                                for (int q = 0; q < Q; q++) {
                                    int ih = p * stride - pad + ir, iw = q * stride - pad + is;
                                    if (ih < 0 || ih >= h || iw < 0 || iw >= wd) continue;
                                    acc += (double)dy[((in * k + ik) * P + p) * Q + q] *
                                           (double)x[((in * c + ic) * h + ih) * wd + iw];
                                }
                        dw[((ik * c + ic) * r + ir) * s + is] += (float)acc;
                    }
    if (dx)
        for (int in = 0; in < n; in++)
            for (int ic = 0; ic < c; ic++)
                for (int ih = 0; ih < h; ih++)
                    for (int iw = 0; iw < wd; iw++) {
                        double acc = 0;
                        for (int ik = 0; ik < k; ik++)
                            for (int ir = 0; ir < r; ir++)
                                for (int is = 0; is < s; is++) {
                                    int ph = ih + pad - ir, qw = iw + pad - is;
                                    if (ph % stride || qw % stride) continue;
                                    int p = ph / stride, q = qw / stride;
                                    if (ph < 0 || qw < 0 || p >= P || q >= Q) continue;
                                    acc += (double)dy[((in * k + ik) * P + p) * Q + q] *
                                           (double)w[((ik * c + ic) * r + ir) * s + is];
                                }
                        dx[((in * c + ic) * h + ih) * wd + iw] += (float)acc;
                    }
}
