/* nn/params.c - flat parameter, gradient and buffer arenas with a name table. */
#include "nn/params.h"

#include <math.h>
#include <string.h>

/* nnc_params_all_finite() is the divergence check: it needs IEEE NaN/Inf semantics (so the build never uses -ffast-math; tests/nn/test_numerics.c checks that). */
#if defined(__FAST_MATH__) || (defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__)
#error "nnc must not be built with -ffast-math, -Ofast or -ffinite-math-only"
#endif

#define ALIGN_FLOATS (NNC_ALIGN / sizeof(float))

int nnc_params_new(nnc_params **out)
{
    *out = nnc__calloc(1, sizeof **out);
    return *out ? NNC_OK : nnc__fail(NNC_ENOMEM, "params: out of memory");
}

void nnc_params_free(nnc_params *p)
{
    if (!p) return;
    nnc__free(p->entries);
    nnc__free(p->data);
    nnc__free(p->grad);
    nnc__free(p->buf);
    nnc__free(p->tensors);
    nnc__free(p);
}

int nnc_params_find(const nnc_params *p, const char *name)
{
    for (int i = 0; i < p->count; i++)
        if (strcmp(p->entries[i].name, name) == 0) return i;
    return -1;
}

int nnc_params_add(nnc_params *p, const char *name, int ndim, const int *shape, unsigned flags)
{
    NNC_ASSERT(!p->finalized, "params_add after finalize");
    if (strlen(name) >= NNC_PARAM_NAME_MAX)
        return nnc__fail(NNC_EINVAL, "parameter name '%s' longer than %d", name, NNC_PARAM_NAME_MAX - 1);
    if (nnc_params_find(p, name) >= 0)
        return nnc__fail(NNC_EINVAL, "duplicate parameter name '%s'", name);
    if (ndim < 1 || ndim > NNC_MAX_DIMS)
        return nnc__fail(NNC_EINVAL, "parameter '%s': ndim %d not in 1..%d", name, ndim, NNC_MAX_DIMS);
    if (p->count == p->cap) {
        int cap = p->cap ? p->cap * 2 : 32;
        nnc_param_entry *e = nnc__alloc(sizeof *e * (size_t)cap);
        if (!e) return nnc__fail(NNC_ENOMEM, "params: out of memory");
        if (p->count) memcpy(e, p->entries, sizeof *e * (size_t)p->count);
        nnc__free(p->entries);
        p->entries = e;
        p->cap = cap;
    }
    nnc_param_entry *e = &p->entries[p->count];
    memset(e, 0, sizeof *e);
    strcpy(e->name, name);
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) return nnc__fail(NNC_EINVAL, "parameter '%s': dimension %d is %d", name, i, shape[i]);
        e->shape[i] = shape[i];
    }
    e->numel = nnc_shape_numel(ndim, shape);
    e->flags = flags;
    return p->count++;
}

static void make_tensors(nnc_params *p)
{
    for (int i = 0; i < p->count; i++) {
        nnc_param_entry *e = &p->entries[i];
        nnc_tensor *t = &p->tensors[i];
        memset(t, 0, sizeof *t);
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->numel = e->numel;
        t->node = -1;
        t->name = e->name;
        if (e->flags & NNC_PARAM_BUFFER) {
            t->data = p->buf + e->offset;
        } else {
            t->data = p->data + e->offset;
            t->grad = p->grad + e->offset;
            t->requires_grad = 1;
        }
    }
}

int nnc_params_finalize(nnc_params *p)
{
    NNC_ASSERT(!p->finalized, "params finalized twice");
    size_t nd = 0, nb = 0;
    for (int i = 0; i < p->count; i++) {
        nnc_param_entry *e = &p->entries[i];
        size_t *n = (e->flags & NNC_PARAM_BUFFER) ? &nb : &nd;
        e->offset = *n;
        *n += (e->numel + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
    }
    p->n_data = nd;
    p->n_buf = nb;
    p->data = nnc__calloc(nd ? nd : 1, sizeof(float));
    p->grad = nnc__calloc(nd ? nd : 1, sizeof(float));
    p->buf = nnc__calloc(nb ? nb : 1, sizeof(float));
    p->tensors = nnc__calloc(p->count ? (size_t)p->count : 1, sizeof *p->tensors);
    if (!p->data || !p->grad || !p->buf || !p->tensors)
        return nnc__fail(NNC_ENOMEM, "params: cannot allocate %zu + %zu floats", nd, nb);
    make_tensors(p);
    p->finalized = 1;
    return NNC_OK;
}

int nnc_params_clone(const nnc_params *src, nnc_params **out)
{
    NNC_ASSERT(src->finalized, "clone of unfinalized params");
    nnc_params *p;
    int s = nnc_params_new(&p);
    if (s) return s;
    for (int i = 0; i < src->count; i++) {
        const nnc_param_entry *e = &src->entries[i];
        s = nnc_params_add(p, e->name, e->ndim, e->shape, e->flags);
        if (s < 0) goto fail;
    }
    if ((s = nnc_params_finalize(p))) goto fail;
    nnc_params_copy(p, src);
    *out = p;
    return NNC_OK;
fail:
    nnc_params_free(p);
    *out = NULL;
    return s;
}

int nnc_params_same_layout(const nnc_params *a, const nnc_params *b)
{
    if (a->count != b->count || a->n_data != b->n_data || a->n_buf != b->n_buf) return 0;
    for (int i = 0; i < a->count; i++) {
        const nnc_param_entry *x = &a->entries[i], *y = &b->entries[i];
        if (strcmp(x->name, y->name) || x->ndim != y->ndim || x->flags != y->flags ||
            memcmp(x->shape, y->shape, sizeof x->shape))
            return 0;
    }
    return 1;
}

void nnc_params_copy(nnc_params *dst, const nnc_params *src)
{
    NNC_ASSERT(nnc_params_same_layout(dst, src), "params_copy between different layouts");
    memcpy(dst->data, src->data, src->n_data * sizeof(float));
    memcpy(dst->buf, src->buf, src->n_buf * sizeof(float));
}

nnc_tensor *nnc_params_tensor(nnc_params *p, int i)
{
    NNC_ASSERT(p->finalized && i >= 0 && i < p->count, "param index %d of %d", i, p->count);
    return &p->tensors[i];
}

float *nnc_params_ptr(nnc_params *p, int i) { return nnc_params_tensor(p, i)->data; }

void nnc_params_zero_grad(nnc_params *p) { memset(p->grad, 0, p->n_data * sizeof(float)); }

size_t nnc_params_num_scalars(const nnc_params *p)
{
    size_t n = 0;
    for (int i = 0; i < p->count; i++)
        if (!(p->entries[i].flags & NNC_PARAM_BUFFER)) n += p->entries[i].numel;
    return n;
}

int nnc_params_num_trained(const nnc_params *p)
{
    int n = 0;
    for (int i = 0; i < p->count; i++)
        if (!(p->entries[i].flags & NNC_PARAM_BUFFER)) n++;
    return n;
}

int nnc_params_all_finite(const nnc_params *p)
{
    for (int i = 0; i < p->count; i++) {
        const nnc_tensor *t = &p->tensors[i];
        for (size_t k = 0; k < t->numel; k++)
            if (!isfinite(t->data[k])) return 0;
    }
    return 1;
}
