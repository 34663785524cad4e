/* tests/bench/bench_loader.c - loader throughput (images/s) on one consumer thread, with and
 * without augmentation and prefetch, on synthetic CIFAR-shaped data, plus the Fashion-MNIST
 * train load time when Debian's copy is installed. Build/run: make bench-loader. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "data/data_internal.h"
#include "nn/nnc.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double run(const nnc_dataset *d, int augment, int prefetch)
{
    nnc_loader_config c = nnc_loader_config_default();
    c.batch = 128, c.augment = augment, c.prefetch = prefetch, c.seed = 1;
    nnc_loader *l;
    if (nnc_loader_new(d, &c, &l)) return 0;
    float *x = malloc((size_t)c.batch * d->c * d->h * d->w * sizeof(float));
    int *y = malloc((size_t)c.batch * sizeof(int));
    long imgs = 0;
    nnc_loader_next(l, x, y); /* warm-up */
    double t0 = now();
    for (int e = 0; e < 2; e++) {
        int n;
        while ((n = nnc_loader_next(l, x, y)) > 0) imgs += n;
    }
    double dt = now() - t0;
    nnc_loader_free(l);
    free(x), free(y);
    return (double)imgs / dt;
}

int main(void)
{
    nnc_dataset *d;
    if (nnc__dataset_new("cifar10", 50000, 3, 32, 32, 10, &d)) return 1;
    for (size_t i = 0; i < (size_t)50000 * 3072; i++) d->images[i] = (uint8_t)(i * 2654435761u >> 24);
    for (int i = 0; i < 50000; i++) d->labels[i] = i % 10;
    for (int aug = 0; aug < 2; aug++)
        for (int pf = 0; pf < 2; pf++)
            printf("cifar-shaped 50000x3x32x32 batch 128 augment=%d prefetch=%d: %.0f img/s\n", aug, pf,
                   run(d, aug, pf));
    nnc_dataset_free(d);
    double t0 = now();
    if (nnc_dataset_load("fashion-mnist", NULL, 1, 0, &d) == NNC_OK) {
        printf("fashion-mnist train load (60000, gz): %.3f s\n", now() - t0);
        printf("fashion-mnist batch 128 augment=1 prefetch=0: %.0f img/s\n", run(d, 1, 0));
        nnc_dataset_free(d);
    }
    return 0;
}
