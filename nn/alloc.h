/* nn/alloc.h - allocation hooks, counted aligned allocation, and the resettable step arena.
 *
 * Every allocation the library makes goes through nnc__alloc/nnc__free, which call the
 * installed allocator (default: aligned_alloc/free) and count calls, so tests can assert that a
 * training step allocates nothing once shapes are known.
 *
 * nnc_arena is a bump allocator for step-lifetime memory (activations, their gradients, the
 * tape). nnc_arena_reset() frees everything at once; if the last cycle needed more than one
 * block, reset replaces them with one block big enough for the whole cycle, so from the
 * second step on a step with the same shapes performs no allocation at all.
 *
 * Thread-safety: the allocator hook is process-wide (set before threads start); the counters
 * are atomic. An arena belongs to one thread at a time.
 */
#ifndef NNC_ALLOC_H
#define NNC_ALLOC_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

#define NNC_ALIGN 64 /* bytes: one cache line, one AVX-512 vector */

typedef struct nnc_allocator {
    void *(*alloc)(size_t size, size_t align, void *ud); /* returns NULL on failure */
    void (*free)(void *ptr, void *ud);
    void *ud;
} nnc_allocator;

/* Install an allocator (NULL restores the default). Only while no library memory is live. */
void nnc_set_allocator(const nnc_allocator *a);

/* Number of successful allocations made through the hook since process start. */
uint64_t nnc_alloc_count(void);
/* Bytes currently live through the hook. */
int64_t nnc_alloc_live_bytes(void);

/* Aligned (NNC_ALIGN) allocation; NULL on failure (size 0 returns a valid unique pointer). */
void *nnc__alloc(size_t size);
/* Same, zero-filled; checks n*size for overflow. */
void *nnc__calloc(size_t n, size_t size);
void nnc__free(void *ptr);
/* Overflow-checked multiply: returns 0 and sets *out, or -1 on overflow. */
int nnc__mul_size(size_t a, size_t b, size_t *out);

typedef struct nnc_arena nnc_arena;

/* Create an arena whose first block holds at least initial_bytes (0 = 1 MiB). */
int nnc_arena_new(size_t initial_bytes, nnc_arena **out);
void nnc_arena_free(nnc_arena *a);
/* Aligned bump allocation; grows by a new block if needed; NULL only on OOM. */
void *nnc_arena_alloc(nnc_arena *a, size_t size);
/* Release everything allocated since the last reset (coalescing blocks, see above). */
void nnc_arena_reset(nnc_arena *a);
/* Bytes used since last reset / total capacity of all blocks / number of blocks. */
size_t nnc_arena_used(const nnc_arena *a);
size_t nnc_arena_capacity(const nnc_arena *a);
int nnc_arena_blocks(const nnc_arena *a);

/* Recovering from a step arena that cannot grow. Graph construction hands out arena memory from
 * functions that return tensors, not statuses, and treats NULL as fatal; code that runs a whole
 * forward/backward and can fail cleanly catches the failure instead:
 *
 *     jmp_buf jb;
 *     jmp_buf *prev = nnc__oom_catch(&jb);
 *     if (setjmp(jb)) { nnc__oom_release(prev); ...free, return NNC_ENOMEM... }
 *     ...build and run graphs...
 *     nnc__oom_release(prev);
 *
 * While a catch is active on a thread, an nnc_arena_alloc on that thread that cannot get memory
 * longjmps to it (after recording the request size, nnc__oom_bytes()) instead of returning NULL.
 * Only arena growth does so: the arena's blocks stay owned by the arena, so nothing leaks, and
 * the graph that was being built must be reset before reuse. Arena allocations happen on the
 * thread that builds the graph, never inside a parallel kernel. Catches nest (per thread). */
jmp_buf *nnc__oom_catch(jmp_buf *jb);
void nnc__oom_release(jmp_buf *prev);
size_t nnc__oom_bytes(void);
/* Other graph-lifetime growth (the tape) that cannot get `bytes`: longjmps to the active catch
 * like the arena does; returns only when no catch is active (the caller then asserts). */
void nnc__oom_raise(size_t bytes);

#endif
