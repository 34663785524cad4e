/* nn/rng.h - counter-free, splittable pseudo-random streams (xoshiro256**).
 *
 * rand() is banned in nnc: every consumer (weight init, dropout, augmentation, data order, each
 * worker) owns an nnc_rng seeded from (seed, stream id). The state is four plain words, so it
 * is checkpointed by copying the struct. Thread-safety: one owner per nnc_rng.
 */
#ifndef NNC_RNG_H
#define NNC_RNG_H

#include <stdint.h>

typedef struct nnc_rng {
    uint64_t s[4];
} nnc_rng;

/* Independent stream `stream` of seed `seed` (splitmix64-expanded; any values allowed). */
void nnc_rng_seed(nnc_rng *r, uint64_t seed, uint64_t stream);
uint64_t nnc_rng_u64(nnc_rng *r);
/* Uniform float in [0, 1). */
float nnc_rng_uniform(nnc_rng *r);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint32_t nnc_rng_below(nnc_rng *r, uint32_t n);
/* Standard normal (Box-Muller, double precision internally). */
float nnc_rng_normal(nnc_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void nnc_rng_shuffle(nnc_rng *r, uint32_t *idx, uint32_t n);

#endif
