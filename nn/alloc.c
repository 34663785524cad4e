/* nn/alloc.c - counted aligned allocation and the step arena. */
#include "nn/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "nn/status.h"

static void *default_alloc(size_t size, size_t align, void *ud)
{
    (void)ud;
    size_t rounded = (size + align - 1) / align * align;
    return aligned_alloc(align, rounded ? rounded : align);
}

static void default_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

static nnc_allocator current = {default_alloc, default_free, NULL};
static atomic_uint_fast64_t alloc_calls;
static atomic_int_fast64_t live_bytes;

/* Each block carries its size in a header so live bytes can be tracked. */
#define HDR NNC_ALIGN

void nnc_set_allocator(const nnc_allocator *a)
{
    if (a)
        current = *a;
    else
        current = (nnc_allocator){default_alloc, default_free, NULL};
}

uint64_t nnc_alloc_count(void) { return atomic_load(&alloc_calls); }
int64_t nnc_alloc_live_bytes(void) { return atomic_load(&live_bytes); }

int nnc__mul_size(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

void *nnc__alloc(size_t size)
{
    if (size > SIZE_MAX - HDR) return NULL;
    unsigned char *p = current.alloc(size + HDR, NNC_ALIGN, current.ud);
    if (!p) return NULL;
    memcpy(p, &size, sizeof size);
    atomic_fetch_add(&alloc_calls, 1);
    atomic_fetch_add(&live_bytes, (int64_t)size);
    return p + HDR;
}

void *nnc__calloc(size_t n, size_t size)
{
    size_t total;
    if (nnc__mul_size(n, size, &total)) return NULL;
    void *p = nnc__alloc(total);
    if (p) memset(p, 0, total);
    return p;
}

void nnc__free(void *ptr)
{
    if (!ptr) return;
    unsigned char *p = (unsigned char *)ptr - HDR;
    size_t size;
    memcpy(&size, p, sizeof size);
    atomic_fetch_sub(&live_bytes, (int64_t)size);
    current.free(p, current.ud);
}

typedef struct block {
    struct block *next;
    size_t cap, used;
    unsigned char *mem;
} block;

struct nnc_arena {
    block *head;       /* current block (newest first) */
    size_t cycle_used; /* bytes handed out since reset, over all blocks */
    size_t peak_cycle; /* largest cycle_used seen */
};

static block *block_new(size_t cap)
{
    block *b = nnc__alloc(sizeof *b);
    if (!b) return NULL;
    b->mem = nnc__alloc(cap);
    if (!b->mem) {
        nnc__free(b);
        return NULL;
    }
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    return b;
}

int nnc_arena_new(size_t initial, nnc_arena **out)
{
    *out = NULL;
    nnc_arena *a = nnc__alloc(sizeof *a);
    if (!a) return nnc__fail(NNC_ENOMEM, "arena: out of memory");
    a->head = block_new(initial ? initial : (size_t)1 << 20);
    if (!a->head) {
        nnc__free(a);
        return nnc__fail(NNC_ENOMEM, "arena: cannot allocate %zu bytes", initial);
    }
    a->cycle_used = a->peak_cycle = 0;
    *out = a;
    return NNC_OK;
}

void nnc_arena_free(nnc_arena *a)
{
    if (!a) return;
    for (block *b = a->head, *n; b; b = n) {
        n = b->next;
        nnc__free(b->mem);
        nnc__free(b);
    }
    nnc__free(a);
}

static _Thread_local jmp_buf *oom_top;
static _Thread_local size_t oom_bytes;

jmp_buf *nnc__oom_catch(jmp_buf *jb)
{
    jmp_buf *prev = oom_top;
    oom_top = jb;
    return prev;
}

void nnc__oom_release(jmp_buf *prev) { oom_top = prev; }

size_t nnc__oom_bytes(void) { return oom_bytes; }

void nnc__oom_raise(size_t bytes)
{
    oom_bytes = bytes;
    if (oom_top) longjmp(*oom_top, 1);
}

/* An arena request of `bytes` failed: to the active catch of this thread, if any. */
static void *arena_oom(size_t bytes)
{
    oom_bytes = bytes;
    if (oom_top) longjmp(*oom_top, 1);
    return NULL;
}

void *nnc_arena_alloc(nnc_arena *a, size_t size)
{
    size_t need = (size + NNC_ALIGN - 1) / NNC_ALIGN * NNC_ALIGN;
    if (need < size) return arena_oom(size);
    if (a->head->cap - a->head->used < need) {
        size_t cap = a->head->cap * 2;
        if (cap < need) cap = need;
        block *b = block_new(cap);
        if (!b && cap > need) b = block_new(need); /* doubling may ask far more than needed */
        if (!b) return arena_oom(need);
        b->next = a->head;
        a->head = b;
    }
    void *p = a->head->mem + a->head->used;
    a->head->used += need;
    a->cycle_used += need;
    if (a->cycle_used > a->peak_cycle) a->peak_cycle = a->cycle_used;
    return p;
}

void nnc_arena_reset(nnc_arena *a)
{
    if (a->head->next) {
        /* More than one block this cycle: replace them all with one that fits the peak. */
        block *b = block_new(a->peak_cycle);
        if (b) {
            for (block *o = a->head, *n; o; o = n) {
                n = o->next;
                nnc__free(o->mem);
                nnc__free(o);
            }
            a->head = b;
        } else {
            for (block *o = a->head; o; o = o->next) o->used = 0;
        }
    }
    a->head->used = 0;
    a->cycle_used = 0;
}

size_t nnc_arena_used(const nnc_arena *a) { return a->cycle_used; }

size_t nnc_arena_capacity(const nnc_arena *a)
{
    size_t c = 0;
    for (const block *b = a->head; b; b = b->next) c += b->cap;
    return c;
}

int nnc_arena_blocks(const nnc_arena *a)
{
    int n = 0;
    for (const block *b = a->head; b; b = b->next) n++;
    return n;
}
