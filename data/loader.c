/* data/loader.c - augmentation and the sharded, seeded batch loader with prefetch.
 *
 * Order: epoch e visits perm_e, a Fisher-Yates permutation drawn from stream e of an rng
 * seeded by cfg.seed (identity when shuffle = 0). Shard k of n takes the contiguous slice
 * [k*N/n, (k+1)*N/n) of perm_e, so shards are disjoint, differ in size by at most one, and
 * their union is the whole set. With drop_last the slices are [k*(N/n), (k+1)*(N/n)) instead:
 * equal sizes, so every shard has the same number of batches (lockstep workers), and the
 * N mod n items at the end of each epoch's permutation are dropped along with each shard's
 * partial batch (PyTorch DistributedSampler(drop_last=True)). Augmentation draws come from an
 * rng reseeded at the start of every batch from (seed, epoch, shard, batch), so a batch's
 * contents depend only on its position: prefetch on/off and seek() give bit-identical batches.
 *
 * Prefetch: one producer thread, created in nnc_loader_new and joined in nnc_loader_free,
 * fills two slots (double buffer) ahead of the consumer; nnc_loader_next copies a ready slot
 * out. Seek bumps a generation counter so batches filled for the old position are dropped.
 */
#include <pthread.h>
#include <string.h>

#include "data/data_internal.h"
#include "nn/alloc.h"
#include "nn/status.h"

#define ORDER_SEED_XOR 0x6f72646572000000ULL /* "order" */
#define AUG_SEED_XOR 0x6175676d656e7400ULL   /* "augment" */

nnc_loader_config nnc_loader_config_default(void)
{
    nnc_loader_config c = {.batch = 128, .shuffle = 1, .augment = 1, .crop_pad = 4, .flip = 1,
                           .drop_last = 1, .shard = 0, .num_shards = 1, .seed = 0,
                           .prefetch = 1};
    return c;
}

/* src (C, H, W) uint8 -> dst (C, H, W) float: dst[c][y][x] = norm(P[c][y+dy][x'+dx]) where P is
 * src zero-padded by `pad` on every side and x' = W-1-x when flipping (crop, then flip, as
 * torchvision's RandomCrop + RandomHorizontalFlip). Padding is pixel value 0, normalised. */
void nnc_augment_image(const nnc_dataset *d, const uint8_t *src, int pad, int dy, int dx, int flip,
                       float *dst)
{
    const int C = d->c, H = d->h, W = d->w;
    NNC_ASSERT(dy >= 0 && dy <= 2 * pad && dx >= 0 && dx <= 2 * pad, "crop offset out of range");
    for (int c = 0; c < C; c++) {
        float lut[256]; /* exactly (v / 255 - mean) / std in float */
        for (int v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - d->mean[c]) / d->std[c];
        const float bias = lut[0];
        const uint8_t *s = src + (size_t)c * H * W;
        float *o = dst + (size_t)c * H * W;
        if (pad == 0 && !flip) {
            for (int i = 0; i < H * W; i++) o[i] = lut[s[i]];
            continue;
        }
        for (int y = 0; y < H; y++) {
            int sy = y + dy - pad;
            float *row = o + (size_t)y * W;
            if (sy < 0 || sy >= H) {
                for (int x = 0; x < W; x++) row[x] = bias;
                continue;
            }
            const uint8_t *srow = s + (size_t)sy * W;
            for (int x = 0; x < W; x++) {
                int sx = (flip ? W - 1 - x : x) + dx - pad;
                row[x] = (sx < 0 || sx >= W) ? bias : lut[srow[sx]];
            }
        }
    }
}

typedef struct slot {
    float *x;
    int *y;
    int n, full;
    long epoch, batch;
} slot;

struct nnc_loader {
    const nnc_dataset *d;
    nnc_loader_config cfg;
    size_t img;                 /* floats per image */
    uint32_t start, count;      /* this shard's slice of each permutation */
    uint32_t *perm;             /* permutation of the epoch in perm_epoch (filler thread) */
    long perm_epoch;
    long epoch, batch;          /* consumer position */
    /* prefetch */
    int threaded, stop;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot slots[2];
    int rslot, wslot;
    long pe, pb;                /* producer position */
    unsigned gen;
};

long nnc_loader_batches_per_epoch(const nnc_loader *l)
{
    long b = l->cfg.batch;
    return l->cfg.drop_last ? (long)l->count / b : ((long)l->count + b - 1) / b;
}

static void ensure_perm(nnc_loader *l, long epoch)
{
    if (l->perm_epoch == epoch) return;
    uint32_t n = (uint32_t)l->d->n;
    for (uint32_t i = 0; i < n; i++) l->perm[i] = i;
    if (l->cfg.shuffle) {
        nnc_rng r;
        nnc_rng_seed(&r, l->cfg.seed ^ ORDER_SEED_XOR, (uint64_t)epoch);
        nnc_rng_shuffle(&r, l->perm, n);
    }
    l->perm_epoch = epoch;
}

/* Fill batch `b` of `epoch` into x/y; returns its image count (0 for the end marker). */
static int fill(nnc_loader *l, long epoch, long b, float *x, int *y)
{
    if (b >= nnc_loader_batches_per_epoch(l)) return 0;
    ensure_perm(l, epoch);
    const nnc_loader_config *c = &l->cfg;
    long first = b * c->batch;
    int n = (int)((long)l->count - first < c->batch ? (long)l->count - first : c->batch);
    const uint32_t *idx = l->perm + l->start + first;
    const size_t bytes = l->img;
    if (!c->augment) {
        nnc_dataset_gather(l->d, idx, n, x, y);
        return n;
    }
    nnc_rng r;
    uint64_t stream = ((uint64_t)epoch << 40) ^ ((uint64_t)c->shard << 24) ^ (uint64_t)b;
    nnc_rng_seed(&r, c->seed ^ AUG_SEED_XOR, stream);
    int pad = c->crop_pad;
    for (int i = 0; i < n; i++) {
        int dy = pad ? (int)nnc_rng_below(&r, 2u * pad + 1) : 0;
        int dx = pad ? (int)nnc_rng_below(&r, 2u * pad + 1) : 0;
        int flip = c->flip ? (int)nnc_rng_below(&r, 2) : 0;
        nnc_augment_image(l->d, l->d->images + (size_t)idx[i] * bytes, pad, dy, dx, flip,
                          x + (size_t)i * bytes);
        y[i] = l->d->labels[idx[i]];
    }
    return n;
}

static void advance(nnc_loader *l, long *e, long *b)
{
    if (*b >= nnc_loader_batches_per_epoch(l)) {
        (*e)++;
        *b = 0;
    } else {
        (*b)++;
    }
}

static void *producer(void *arg)
{
    nnc_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && l->slots[l->wslot].full) pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) break;
        int w = l->wslot;
        long e = l->pe, b = l->pb;
        unsigned gen = l->gen;
        slot *s = &l->slots[w];
        pthread_mutex_unlock(&l->mu);
        int n = fill(l, e, b, s->x, s->y);
        pthread_mutex_lock(&l->mu);
        if (gen != l->gen) continue; /* a seek moved the position: drop this batch */
        s->n = n, s->epoch = e, s->batch = b, s->full = 1;
        advance(l, &l->pe, &l->pb);
        l->wslot ^= 1;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

int nnc_loader_new(const nnc_dataset *d, const nnc_loader_config *cfg, nnc_loader **out)
{
    *out = NULL;
    NNC_ASSERT(d && cfg, "NULL dataset or config");
    if (cfg->batch < 1)
        return nnc__fail(NNC_EINVAL, "loader: batch %d, expected >= 1", cfg->batch);
    if (cfg->num_shards < 1 || cfg->shard < 0 || cfg->shard >= cfg->num_shards)
        return nnc__fail(NNC_EINVAL, "loader: shard %d of %d, expected 0 <= shard < num_shards",
                         cfg->shard, cfg->num_shards);
    if (cfg->augment && (cfg->crop_pad < 0 || cfg->crop_pad > d->h || cfg->crop_pad > d->w))
        return nnc__fail(NNC_EINVAL, "loader: crop_pad %d, expected 0..%d", cfg->crop_pad,
                         d->h < d->w ? d->h : d->w);
    if (d->n < 1) return nnc__fail(NNC_EINVAL, "loader: dataset %s is empty", d->name);
    nnc_loader *l = nnc__calloc(1, sizeof *l);
    if (!l) return nnc__fail(NNC_ENOMEM, "loader: out of memory");
    l->d = d;
    l->cfg = *cfg;
    l->img = (size_t)d->c * d->h * d->w;
    if (cfg->drop_last) { /* equal slices: every shard has the same number of batches */
        l->count = (uint32_t)(d->n / cfg->num_shards);
        l->start = l->count * (uint32_t)cfg->shard;
    } else {
        l->start = (uint32_t)((uint64_t)d->n * cfg->shard / cfg->num_shards);
        l->count = (uint32_t)((uint64_t)d->n * (cfg->shard + 1) / cfg->num_shards) - l->start;
    }
    l->perm = nnc__alloc((size_t)d->n * sizeof(uint32_t));
    l->perm_epoch = -1;
    if (!l->perm) {
        nnc_loader_free(l);
        return nnc__fail(NNC_ENOMEM, "loader: out of memory");
    }
    if (cfg->prefetch) {
        for (int i = 0; i < 2; i++) {
            l->slots[i].x = nnc__alloc((size_t)cfg->batch * l->img * sizeof(float));
            l->slots[i].y = nnc__alloc((size_t)cfg->batch * sizeof(int));
            if (!l->slots[i].x || !l->slots[i].y) {
                nnc_loader_free(l);
                return nnc__fail(NNC_ENOMEM, "loader: out of memory for prefetch buffers");
            }
        }
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->cv, NULL);
        if (pthread_create(&l->thread, NULL, producer, l) != 0) {
            pthread_mutex_destroy(&l->mu);
            pthread_cond_destroy(&l->cv);
            nnc_loader_free(l);
            return nnc__fail(NNC_ETHREAD, "loader: cannot start the prefetch thread");
        }
        l->threaded = 1;
    }
    *out = l;
    return NNC_OK;
}

void nnc_loader_free(nnc_loader *l)
{
    if (!l) return;
    if (l->threaded) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
    }
    for (int i = 0; i < 2; i++) {
        nnc__free(l->slots[i].x);
        nnc__free(l->slots[i].y);
    }
    nnc__free(l->perm);
    nnc__free(l);
}

int nnc_loader_next(nnc_loader *l, float *x, int *y)
{
    int n;
    if (!l->threaded) {
        n = fill(l, l->epoch, l->batch, x, y);
    } else {
        pthread_mutex_lock(&l->mu);
        slot *s = &l->slots[l->rslot];
        while (!s->full) pthread_cond_wait(&l->cv, &l->mu);
        pthread_mutex_unlock(&l->mu);
        NNC_ASSERT(s->epoch == l->epoch && s->batch == l->batch,
                   "prefetch slot holds (%ld,%ld), expected (%ld,%ld)", s->epoch, s->batch,
                   l->epoch, l->batch);
        n = s->n;
        memcpy(x, s->x, (size_t)n * l->img * sizeof(float));
        memcpy(y, s->y, (size_t)n * sizeof(int));
        pthread_mutex_lock(&l->mu);
        s->full = 0;
        l->rslot ^= 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
    advance(l, &l->epoch, &l->batch);
    return n;
}

int nnc_loader_seek(nnc_loader *l, long epoch, long batch)
{
    long spe = nnc_loader_batches_per_epoch(l);
    if (epoch < 0 || batch < 0 || batch > spe)
        return nnc__fail(NNC_EINVAL, "loader: cannot seek to epoch %ld, batch %ld: expected epoch >= 0 and batch "
                         "in 0..%ld", epoch, batch, spe);
    l->epoch = epoch, l->batch = batch;
    if (!l->threaded) return NNC_OK;
    pthread_mutex_lock(&l->mu);
    l->gen++;
    l->slots[0].full = l->slots[1].full = 0;
    l->rslot = l->wslot = 0;
    l->pe = epoch, l->pb = batch;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return NNC_OK;
}

long nnc_loader_epoch(const nnc_loader *l) { return l->epoch; }
long nnc_loader_batch_index(const nnc_loader *l) { return l->batch; }
