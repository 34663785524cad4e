/* models/models.c - model lifecycle, initialisation, the descriptor-loop forward, layer
 * summaries and the registry lookups (architectures live in builders.c). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/layers.h"
#include "nn/names.h"

#define INIT_STREAM 0x696e6974ULL /* "init": the weight-initialisation stream of a seed */

nnc_model_config nnc_model_config_default(void)
{
    nnc_model_config c = {.in_channels = 3, .image_size = 32, .num_classes = 10};
    return c;
}

int nnc_model_num_registered(void) { return nnc__num_model_defs; }

const char *nnc_model_registered_name(int i)
{
    return i >= 0 && i < nnc__num_model_defs ? nnc__model_defs[i].name : NULL;
}

static const nnc__model_def *find_def(const char *name)
{
    for (int i = 0; name && i < nnc__num_model_defs; i++)
        if (strcmp(nnc__model_defs[i].name, name) == 0) return &nnc__model_defs[i];
    return NULL;
}

int nnc_model_exists(const char *name) { return find_def(name) != NULL; }

const char *nnc_model_suggest(const char *name)
{
    const char *names[64];
    int n = 0;
    for (int i = 0; i < nnc__num_model_defs && n < 64; i++) names[n++] = nnc__model_defs[i].name;
    return nnc__closest_name(name, names, n);
}

int nnc_model_list(char *buf, size_t n)
{
    size_t o = 0;
    if (n) buf[0] = '\0';
    for (int i = 0; i < nnc__num_model_defs; i++) {
        int w = snprintf(buf + (o < n ? o : n), o < n ? n - o : 0, "%s%s", i ? ", " : "", nnc__model_defs[i].name);
        if (w > 0) o += (size_t)w;
    }
    return (int)o;
}

static int unknown_model(const char *name)
{
    char list[512];
    nnc_model_list(list, sizeof list);
    const char *best = nnc_model_suggest(name);
    if (best)
        return nnc__fail(NNC_EINVAL, "unknown model '%s' (did you mean '%s'?); models: %s", name, best, list);
    return nnc__fail(NNC_EINVAL, "unknown model '%s'; models: %s", name ? name : "(null)", list);
}

static int check_config(const nnc__model_def *d, const nnc_model_config *c)
{
    if (c->in_channels < 1 || c->in_channels > 4096)
        return nnc__fail(NNC_EINVAL, "model %s: in_channels must be in 1..4096, found %d", d->name,
                         c->in_channels);
    if (c->image_size < d->min_size || c->image_size > 4096)
        return nnc__fail(NNC_EINVAL, "model %s: image_size must be in %d..4096, found %d", d->name,
                         d->min_size, c->image_size);
    if (c->num_classes < 1 || c->num_classes > 1000000)
        return nnc__fail(NNC_EINVAL, "model %s: num_classes must be in 1..1000000, found %d", d->name,
                         c->num_classes);
    return NNC_OK;
}

void nnc_model_free(nnc_model *m)
{
    if (!m) return;
    nnc_params_free(m->params);
    nnc__free(m->layers);
    nnc__free(m);
}

/* Build the architecture (layers + zeroed, finalized params table); no initialisation. */
static int build(const nnc__model_def *d, const nnc_model_config *cfg, nnc_model **out)
{
    *out = NULL;
    int s = check_config(d, cfg);
    if (s) return s;
    nnc_model *m = nnc__calloc(1, sizeof *m);
    if (!m) return nnc__fail(NNC_ENOMEM, "model %s: out of memory", d->name);
    snprintf(m->name, sizeof m->name, "%s", d->name);
    m->cfg = *cfg;
    snprintf(m->arch, sizeof m->arch, "%s/c%d/s%d/k%d", d->name, cfg->in_channels, cfg->image_size,
             cfg->num_classes);
    if ((s = nnc_params_new(&m->params))) goto fail;
    nnc__builder b = {.m = m, .c = cfg->in_channels, .h = cfg->image_size, .w = cfg->image_size};
    d->build(&b, d->arg);
    if ((s = b.status)) goto fail;
    if ((s = nnc_params_finalize(m->params))) goto fail;
    *out = m;
    return NNC_OK;
fail:
    nnc_model_free(m);
    return s;
}

static void fill_uniform(float *x, size_t n, float bound, nnc_rng *r)
{
    for (size_t i = 0; i < n; i++) x[i] = bound * (2.0f * nnc_rng_uniform(r) - 1.0f);
}

/* Initialise in layer order from one stream (see nnc__init). fan_in = in features * k * k. */
static void init_params(nnc_model *m, uint64_t seed)
{
    nnc_rng r;
    nnc_rng_seed(&r, seed, INIT_STREAM);
    nnc_params *p = m->params;
    for (int i = 0; i < m->nlayers; i++) {
        const nnc__layer *l = &m->layers[i];
        if (l->kind == NNC__L_BN) {
            float *g = nnc_params_ptr(p, l->p[0]), *v = nnc_params_ptr(p, l->p[3]);
            for (size_t j = 0; j < p->entries[l->p[0]].numel; j++) g[j] = v[j] = 1.0f;
            continue; /* beta and running mean stay 0 */
        }
        if (l->kind != NNC__L_CONV && l->kind != NNC__L_LINEAR) continue;
        const nnc_param_entry *w = &p->entries[l->p[0]];
        size_t fan_in = w->numel / (size_t)w->shape[0];
        float bound = (float)(1.0 / sqrt((double)fan_in));
        float *wd = nnc_params_ptr(p, l->p[0]);
        if (l->init == NNC__INIT_KAIMING_FAN_IN) {
            float std = (float)sqrt(2.0 / (double)fan_in);
            for (size_t j = 0; j < w->numel; j++) wd[j] = std * nnc_rng_normal(&r);
        } else {
            fill_uniform(wd, w->numel, bound, &r);
        }
        if (l->p[1] >= 0) fill_uniform(nnc_params_ptr(p, l->p[1]), p->entries[l->p[1]].numel, bound, &r);
    }
}

int nnc_model_new(const char *name, const nnc_model_config *cfg, uint64_t seed, nnc_model **out)
{
    NNC_ASSERT(out, "model_new: NULL out");
    *out = NULL;
    const nnc__model_def *d = find_def(name);
    if (!d) return unknown_model(name);
    nnc_model_config c = cfg ? *cfg : nnc_model_config_default();
    int s = build(d, &c, out);
    if (s) return s;
    init_params(*out, seed);
    return NNC_OK;
}

int nnc_model_clone(const nnc_model *m, nnc_model **out)
{
    NNC_ASSERT(m && out, "model_clone: NULL argument");
    int s = build(find_def(m->name), &m->cfg, out);
    if (s) return nnc__fail_prefix(s, "cloning model %s", m->name);
    nnc_params_copy((*out)->params, m->params);
    return NNC_OK;
}

static nnc_tensor *forward_layers(nnc_model *m, nnc_graph *g, nnc_tensor *x, int training, nnc_rng *rng, int from,
                                  int to);

/* Inference runs in slices of INFER_SLICE images up to a split layer and on the whole batch
 * after it (every layer is per image in eval mode, so neither changes a value). A slice keeps a
 * layer's activations in the L2 cache for the next one, which pays only where a slice's
 * activations fit (SLICE_MAX_BYTES per tensor; measured: ResNet-20 gains, VGG-16's 256 KiB per
 * image 32x32x64 layers lose). Every conv call packs its weights once, so layers whose output
 * images are tiny (fewer than SLICE_MIN_PIXELS pixels per slice) run on the whole batch: the
 * split is the last layer boundary before the first such conv where no residual input is held
 * (no SAVE whose RESIDUAL lies beyond it). Returns 0 when slicing does not pay at all.
 * nnc_model_forward_infer (models/infer.c) slices the same way. */
#define INFER_SLICE NNC__INFER_SLICE
#define SLICE_MIN_PIXELS 256
#define SLICE_MAX_BYTES (1u << 20)

int nnc__model_infer_split(const nnc_model *m)
{
    int limit = m->nlayers;
    for (int i = 0; i < m->nlayers; i++) {
        const nnc__layer *l = &m->layers[i];
        if (l->kind == NNC__L_CONV && l->out_shape[1] * l->out_shape[2] * INFER_SLICE < SLICE_MIN_PIXELS) {
            limit = i;
            break;
        }
    }
    int split = 0, open = 0; /* open: a SAVE whose RESIDUAL has not come yet */
    for (int i = 0; i <= limit; i++) {
        if (!open) split = i;
        if (i == m->nlayers) break;
        if (m->layers[i].kind == NNC__L_SAVE) open = 1;
        if (m->layers[i].kind == NNC__L_RESIDUAL) open = 0;
    }
    for (int i = 0; i < split; i++) {
        const int *o = m->layers[i].out_shape;
        if ((size_t)o[0] * o[1] * o[2] * sizeof(float) * INFER_SLICE > SLICE_MAX_BYTES) return 0;
    }
    return split;
}

nnc_tensor *nnc_model_forward(nnc_model *m, nnc_graph *g, nnc_tensor *x, int training, nnc_rng *rng)
{
    NNC_ASSERT(m && g && x, "model_forward: NULL argument");
    NNC_ASSERT(x->ndim == 4 && x->shape[1] == m->cfg.in_channels && x->shape[2] == m->cfg.image_size &&
                   x->shape[3] == m->cfg.image_size,
               "model %s: input must be (N,%d,%d,%d)", m->arch, m->cfg.in_channels, m->cfg.image_size,
               m->cfg.image_size);
    const int N = x->shape[0];
    int split = nnc__model_infer_split(m);
    if (training || nnc_graph_grad_enabled(g) || N <= INFER_SLICE || split == 0)
        return forward_layers(m, g, x, training, rng, 0, m->nlayers);
    const size_t per = x->numel / (size_t)N;
    nnc_tensor *out = NULL;
    for (int n0 = 0; n0 < N; n0 += INFER_SLICE) {
        int shape[4] = {N - n0 < INFER_SLICE ? N - n0 : INFER_SLICE, x->shape[1], x->shape[2], x->shape[3]};
        nnc_tensor *y = forward_layers(m, g, nnc_tensor_wrap(g, x->data + (size_t)n0 * per, 4, shape), 0, rng, 0, split);
        if (!out) {
            int os[NNC_MAX_DIMS] = {N, y->shape[1], y->shape[2], y->shape[3]};
            out = nnc_tensor_new(g, y->ndim, os);
        }
        size_t row = y->numel / (size_t)shape[0];
        memcpy(out->data + (size_t)n0 * row, y->data, y->numel * sizeof(float));
    }
    return split < m->nlayers ? forward_layers(m, g, out, 0, rng, split, m->nlayers) : out;
}

/* Layers [from, to) on x; the fused patterns look ahead only inside the range (infer_split puts
 * a range boundary where no pattern spans it). */
static nnc_tensor *forward_layers(nnc_model *m, nnc_graph *g, nnc_tensor *x, int training, nnc_rng *rng, int from,
                                  int to)
{
    nnc_params *p = m->params;
#define T(i) ((i) >= 0 ? nnc_params_tensor(p, (i)) : NULL)
    nnc_tensor *saved = NULL;
    /* with a tape (training, or gradients in eval) BN -> ReLU -> CONV runs as nnc_bn_relu_conv2d:
     * relu(bn(x)) is never stored; inference keeps the folded conv2d_bn_relu below */
    const int fuse = training || nnc_graph_grad_enabled(g);
    for (int i = from; i < to; i++) {
        const nnc__layer *l = &m->layers[i];
        switch (l->kind) {
        case NNC__L_CONV: {
            /* CONV -> BN -> ReLU and CONV -> BN -> residual -> ReLU run as nnc_conv2d_bn_relu (in
             * inference one pass over the output; in training conv + fused BN/ReLU), except that
             * with a tape CONV -> BN -> ReLU -> CONV runs as nnc_conv2d + nnc_bn_relu_conv2d */
            const nnc__layer *n1 = i + 1 < to ? l + 1 : NULL, *n2 = i + 2 < to ? l + 2 : NULL;
            const nnc__layer *n3 = i + 3 < to ? l + 3 : NULL;
            int plain = n1 && n1->kind == NNC__L_BN && n2 && n2->kind == NNC__L_RELU &&
                        !(fuse && n3 && n3->kind == NNC__L_CONV);
            int resid = n1 && n1->kind == NNC__L_BN && n2 && n2->kind == NNC__L_RESIDUAL && n3 && n3->kind == NNC__L_RELU;
            if (plain || resid) {
                nnc_tensor *sc = NULL;
                if (resid) {
                    sc = saved;
                    if (n2->stride != 1 || n2->out_c != n2->in_shape[0])
                        sc = nnc_shortcut_a(g, saved, n2->out_c, n2->stride);
                }
                x = nnc_conv2d_bn_relu(g, x, T(l->p[0]), T(l->p[1]), l->stride, l->pad, T(n1->p[0]), T(n1->p[1]),
                                       T(n1->p[2]), T(n1->p[3]), 0.1f, 1e-5f, training, sc);
                i += plain ? 2 : 3;
            } else {
                x = nnc_conv2d(g, x, T(l->p[0]), T(l->p[1]), l->stride, l->pad);
            }
            break;
        }
        case NNC__L_BN: {
            /* BN -> ReLU and BN -> residual add -> ReLU run as one fused op (nn/ops.h) */
            const nnc__layer *n1 = i + 1 < to ? l + 1 : NULL, *n2 = i + 2 < to ? l + 2 : NULL;
            if (fuse && n1 && n2 && n1->kind == NNC__L_RELU && n2->kind == NNC__L_CONV) {
                /* the ReLU output feeds only this conv (a SAVE in between breaks the pattern) */
                x = nnc_bn_relu_conv2d(g, x, T(l->p[0]), T(l->p[1]), T(l->p[2]), T(l->p[3]), 0.1f, 1e-5f, training,
                                       T(n2->p[0]), T(n2->p[1]), n2->stride, n2->pad);
                i += 2;
            } else if (n1 && n1->kind == NNC__L_RELU) {
                x = nnc_batchnorm2d_relu(g, x, T(l->p[0]), T(l->p[1]), T(l->p[2]), T(l->p[3]), 0.1f, 1e-5f,
                                         training, NULL);
                i += 1;
            } else if (n1 && n2 && n1->kind == NNC__L_RESIDUAL && n2->kind == NNC__L_RELU) {
                nnc_tensor *sc = saved;
                if (n1->stride != 1 || n1->out_c != n1->in_shape[0])
                    sc = nnc_shortcut_a(g, saved, n1->out_c, n1->stride);
                x = nnc_batchnorm2d_relu(g, x, T(l->p[0]), T(l->p[1]), T(l->p[2]), T(l->p[3]), 0.1f, 1e-5f,
                                         training, sc);
                i += 2;
            } else {
                x = nnc_batchnorm2d(g, x, T(l->p[0]), T(l->p[1]), T(l->p[2]), T(l->p[3]), 0.1f, 1e-5f, training);
            }
            break;
        }
        case NNC__L_RELU:
            x = nnc_relu(g, x);
            break;
        case NNC__L_MAXPOOL:
            x = nnc_max_pool2d(g, x, l->k, l->stride, 0);
            break;
        case NNC__L_GAP:
            x = nnc_global_avg_pool(g, x);
            break;
        case NNC__L_LINEAR:
            x = nnc_linear(g, x, T(l->p[0]), T(l->p[1]));
            break;
        case NNC__L_DROPOUT:
            NNC_ASSERT(!training || rng, "model %s: training forward with dropout needs an rng", m->arch);
            x = nnc_dropout(g, x, l->pdrop, training, rng);
            break;
        case NNC__L_SAVE:
            saved = x;
            break;
        case NNC__L_RESIDUAL: {
            nnc_tensor *sc = saved;
            if (l->stride != 1 || l->out_c != l->in_shape[0]) sc = nnc_shortcut_a(g, saved, l->out_c, l->stride);
            x = nnc_add(g, x, sc);
            break;
        }
        }
    }
#undef T
    return x;
}

nnc_params *nnc_model_params(nnc_model *m) { return m->params; }
const nnc_params *nnc_model_params_const(const nnc_model *m) { return m->params; }
const char *nnc_model_name(const nnc_model *m) { return m->name; }
nnc_model_config nnc_model_get_config(const nnc_model *m) { return m->cfg; }
const char *nnc_model_arch(const nnc_model *m) { return m->arch; }

static const char *kind_name(const nnc__layer *l)
{
    switch (l->kind) {
    case NNC__L_CONV: return "conv2d";
    case NNC__L_BN: return "batchnorm2d";
    case NNC__L_RELU: return "relu";
    case NNC__L_MAXPOOL: return "maxpool2d";
    case NNC__L_GAP: return "global_avgpool";
    case NNC__L_LINEAR: return "linear";
    case NNC__L_DROPOUT: return "dropout";
    case NNC__L_SAVE: return "save";
    case NNC__L_RESIDUAL:
        return l->stride != 1 || l->out_c != l->in_shape[0] ? "add+shortcut_a" : "add";
    }
    return "?";
}

int nnc_model_layers(const nnc_model *m, nnc_model_layer_info *out, int cap)
{
    int n = 0;
    for (int i = 0; i < m->nlayers; i++) {
        const nnc__layer *l = &m->layers[i];
        if (l->kind == NNC__L_SAVE) continue; /* bookkeeping, not a layer */
        if (n < cap) {
            nnc_model_layer_info *o = &out[n];
            memset(o, 0, sizeof *o);
            snprintf(o->name, sizeof o->name, "%s", l->name);
            snprintf(o->kind, sizeof o->kind, "%s", kind_name(l));
            memcpy(o->out_shape, l->out_shape, sizeof o->out_shape);
            o->params = l->params;
            o->macs = l->macs;
        }
        n++;
    }
    return n;
}

long long nnc_model_macs(const nnc_model *m)
{
    long long s = 0;
    for (int i = 0; i < m->nlayers; i++) s += m->layers[i].macs;
    return s;
}
