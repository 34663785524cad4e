/* tools/bench_layers.c - `nnc bench --layers`: time every conv layer of a model on its own.
 *
 * For each conv descriptor of the model (models/layers.h: input shape, filters, kernel,
 * stride, pad) the conv kernels (nn/conv/conv.h) run on random data of that layer's shape at
 * the bench batch size: forward (plain epilogue), input gradient alone, weight gradient alone.
 * Each figure is the median of `runs` timed calls after one warm-up call; GFLOP/s counts the
 * nominal 2*N*K*P*Q*C*R*S per pass (taps on the zero padding included: the small-image path
 * skips those, so it can show more than 100% of peak on tiny images) and "% peak" divides by
 * peak_gflops * threads. The total row sums what a training step runs (no input gradient for
 * the model's first layer). The path column is forward/backward: d direct, s small-image
 * (channel-vectorised), g im2col + GEMM.
 * Single-threaded caller; the kernels use the thread pool set by nnc_set_threads. */
#include <stdlib.h>
#include <string.h>

#include "models/layers.h"
#include "nn/conv/conv.h"
#include "nn/nnc.h"
#include "tools/bench_layers.h"
#include "tools/cli.h"

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

enum { PASS_FWD, PASS_DX, PASS_DW };

typedef struct layer_bufs {
    nnc__conv_shape cs;
    float *x, *w, *y, *dy, *dx, *dw;
} layer_bufs;

static void run_pass(layer_bufs *b, int pass)
{
    nnc__conv_epilogue ep = {NULL, NULL, NULL, 0};
    if (pass == PASS_FWD) nnc__conv_forward(NULL, &b->cs, b->x, b->w, &ep, NULL, b->y);
    else if (pass == PASS_DX) nnc__conv_backward(NULL, &b->cs, b->x, b->w, NULL, b->dy, b->dx, 1, NULL, NULL);
    else nnc__conv_backward(NULL, &b->cs, b->x, b->w, NULL, b->dy, NULL, 0, b->dw, NULL);
}

/* Median seconds of one pass over runs (one untimed warm-up). */
static double time_pass(layer_bufs *b, int pass, int runs, double *scratch)
{
    run_pass(b, pass);
    for (int r = 0; r < runs; r++) {
        double t0 = cli_now();
        run_pass(b, pass);
        scratch[r] = cli_now() - t0;
    }
    qsort(scratch, (size_t)runs, sizeof *scratch, cmp_dbl);
    return runs % 2 ? scratch[runs / 2] : 0.5 * (scratch[runs / 2 - 1] + scratch[runs / 2]);
}

static float *rand_buf(nnc_rng *rng, size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (p)
        for (size_t i = 0; i < n; i++) p[i] = nnc_rng_uniform(rng) * 2.0f - 1.0f;
    return p;
}

static const char *path_name(const nnc__conv_shape *cs, int backward)
{
    nnc__conv_path p = nnc__conv_pick(cs, backward);
    return p == NNC__CONV_KVEC ? "small" : p == NNC__CONV_GEMM ? "gemm" : "direct";
}

int bench_layers(const nnc_model *m, int batch, int threads, int runs, double peak_gflops, int path)
{
    double *tv = malloc(sizeof(double) * (size_t)runs);
    if (!tv) return nnc__fail(NNC_ENOMEM, "bench --layers: out of memory");
    nnc__conv_set_path(path);
    const double peak = peak_gflops * threads;
    printf("%s conv layers, batch %d, threads %d, median of %d runs; peak %.1f GFLOP/s; nominal FLOPs (padding "
           "taps included); path fwd/bwd: d direct, s small-image, g GEMM\n",
           m->name, batch, threads, runs, peak);
    printf("%-22s %-20s %-6s %9s %7s %5s %9s %7s %5s %9s %7s %5s\n", "layer", "C>K HxW k/s/p", "path", "fwd ms",
           "GFLOP/s", "%pk", "dx ms", "GFLOP/s", "%pk", "dw ms", "GFLOP/s", "%pk");
    double tot[3] = {0, 0, 0}, tot_flop[3] = {0, 0, 0};
    int st = NNC_OK, first = 1;
    nnc_rng rng;
    nnc_rng_seed(&rng, 1, 9);
    for (int i = 0; i < m->nlayers && !st; i++) {
        const nnc__layer *l = &m->layers[i];
        if (l->kind != NNC__L_CONV) continue;
        layer_bufs b;
        memset(&b, 0, sizeof b);
        nnc__conv_shape cs = {batch, l->in_shape[0], l->in_shape[1], l->in_shape[2], l->out_shape[0], l->k, l->k,
                              l->stride, l->pad, l->out_shape[1], l->out_shape[2], (int)nnc_get_precision()};
        b.cs = cs;
        size_t nx = (size_t)batch * cs.c * cs.h * cs.w, nw = (size_t)cs.k * cs.c * cs.r * cs.s;
        size_t ny = (size_t)batch * cs.k * cs.p * cs.q;
        b.x = rand_buf(&rng, nx);
        b.w = rand_buf(&rng, nw);
        b.dy = rand_buf(&rng, ny);
        b.y = malloc(ny * sizeof(float));
        b.dx = malloc(nx * sizeof(float));
        b.dw = calloc(nw, sizeof(float));
        if (!b.x || !b.w || !b.dy || !b.y || !b.dx || !b.dw) {
            st = nnc__fail(NNC_ENOMEM, "bench --layers: out of memory for layer %s", l->name);
        } else {
            double flop = 2.0 * (double)batch * cs.k * cs.p * cs.q * (double)cs.c * cs.r * cs.s, t[3];
            for (int p = 0; p < 3; p++) t[p] = time_pass(&b, p, runs, tv);
            char shape[40], path_s[16];
            snprintf(shape, sizeof shape, "%d>%d %dx%d %d/%d/%d", cs.c, cs.k, cs.h, cs.w, cs.r, cs.stride, cs.pad);
            snprintf(path_s, sizeof path_s, "%c/%c", path_name(&cs, 0)[0], path_name(&cs, 1)[0]);
            printf("%-22s %-20s %-6s", l->name, shape, path_s);
            for (int p = 0; p < 3; p++) {
                double gf = flop / t[p] / 1e9;
                printf(" %9.3f %7.1f %5.1f", t[p] * 1e3, gf, 100.0 * gf / peak);
                if (p == PASS_DX && first) continue; /* training computes no gradient of the input */
                tot[p] += t[p];
                tot_flop[p] += flop;
            }
            printf("%s\n", first ? "  (dx unused in training)" : "");
            first = 0;
        }
        free(b.x);
        free(b.w);
        free(b.y);
        free(b.dy);
        free(b.dx);
        free(b.dw);
    }
    nnc__conv_set_path(0);
    if (!st) {
        printf("%-22s %-20s %-6s", "total (training)", "", "");
        for (int p = 0; p < 3; p++)
            printf(" %9.3f %7.1f %5.1f", tot[p] * 1e3, tot_flop[p] / tot[p] / 1e9, 100.0 * tot_flop[p] / tot[p] / 1e9 / peak);
        double all = tot[0] + tot[1] + tot[2];
        printf("\nconv time per training step %.1f ms (%.1f img/s if convs were all), inference convs %.1f ms "
               "(%.1f img/s)\n", all * 1e3, batch / all, tot[0] * 1e3, batch / tot[0]);
    }
    free(tv);
    return st;
}
