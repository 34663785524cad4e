/* optim/sgd.c - SGD with momentum, Nesterov and weight decay, PyTorch semantics (dampening 0).
 *
 * One flat loop per params entry over data/grad/momentum at the same offsets; buffers are
 * skipped. The momentum buffer starts at zero, so v = m*0 + g = g on the first step exactly as
 * torch.optim.SGD's "buf = clone(d_p)". */
#include <math.h>
#include <string.h>

#include "nn/threads.h"
#include "optim/optim.h"

nnc_sgd_config nnc_sgd_config_default(void)
{
    nnc_sgd_config c = {.momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = 0, .decay_bn_bias = 1};
    return c;
}

int nnc_sgd_new(nnc_params *p, const nnc_sgd_config *cfg, nnc_sgd **out)
{
    NNC_ASSERT(p && p->finalized && out, "sgd_new: params must be finalized");
    *out = NULL;
    nnc_sgd_config c = cfg ? *cfg : nnc_sgd_config_default();
    if (!isfinite(c.momentum) || c.momentum < 0.0f)
        return nnc__fail(NNC_EINVAL, "sgd: momentum must be a finite value >= 0, found %g", (double)c.momentum);
    if (!isfinite(c.weight_decay) || c.weight_decay < 0.0f)
        return nnc__fail(NNC_EINVAL, "sgd: weight decay must be a finite value >= 0, found %g",
                         (double)c.weight_decay);
    if (c.nesterov && c.momentum <= 0.0f)
        return nnc__fail(NNC_EINVAL, "sgd: Nesterov momentum requires momentum > 0, found %g",
                         (double)c.momentum);
    nnc_sgd *o = nnc__calloc(1, sizeof *o);
    if (!o) return nnc__fail(NNC_ENOMEM, "sgd: out of memory");
    o->cfg = c;
    o->params = p;
    o->momentum = nnc__calloc(p->n_data ? p->n_data : 1, sizeof(float));
    if (!o->momentum) {
        nnc__free(o);
        return nnc__fail(NNC_ENOMEM, "sgd: cannot allocate %zu momentum floats", p->n_data);
    }
    *out = o;
    return NNC_OK;
}

void nnc_sgd_free(nnc_sgd *o)
{
    if (!o) return;
    nnc__free(o->momentum);
    nnc__free(o);
}

void nnc_sgd_reset(nnc_sgd *o)
{
    memset(o->momentum, 0, o->params->n_data * sizeof(float));
}

/* w, g, v: n floats of one entry. */
static void step_entry(float *restrict w, const float *restrict g, float *restrict v, size_t n,
                       float lr, float wd, float mom, int nesterov)
{
    if (mom == 0.0f) {
        for (size_t i = 0; i < n; i++) {
            float d = g[i] + wd * w[i];
            w[i] -= lr * d;
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * w[i];
        float m = mom * v[i] + d;
        v[i] = m;
        if (nesterov) d = d + mom * m;
        else d = m;
        w[i] -= lr * d;
    }
}

typedef struct step_ctx {
    const nnc_sgd *o;
    float lr;
} step_ctx;

#define STEP_CHUNK 16384 /* floats per task */

/* Floats [task*STEP_CHUNK, +STEP_CHUNK) of the flat parameter array, entry by entry (buffers and
 * the gaps between entries skipped). Elementwise: any split gives the same bits. */
static void step_task(void *vctx, int task, int thread)
{
    (void)thread;
    const step_ctx *c = vctx;
    const nnc_sgd *o = c->o;
    const nnc_params *p = o->params;
    size_t lo = (size_t)task * STEP_CHUNK, hi = lo + STEP_CHUNK;
    for (int i = 0; i < p->count; i++) {
        const nnc_param_entry *e = &p->entries[i];
        if (e->flags & NNC_PARAM_BUFFER) continue;
        size_t a = e->offset > lo ? e->offset : lo, b = e->offset + e->numel < hi ? e->offset + e->numel : hi;
        if (a >= b) continue;
        float wd = o->cfg.weight_decay;
        if (!o->cfg.decay_bn_bias && (e->flags & NNC_PARAM_NO_DECAY)) wd = 0.0f;
        step_entry(p->data + a, p->grad + a, o->momentum + a, b - a, c->lr, wd, o->cfg.momentum, o->cfg.nesterov);
    }
}

void nnc_sgd_step(nnc_sgd *o, float lr)
{
    step_ctx c = {o, lr};
    nnc__parallel_for((int)((o->params->n_data + STEP_CHUNK - 1) / STEP_CHUNK), step_task, &c);
    o->steps++;
}
