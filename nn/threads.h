/* nn/threads.h - the kernel thread pool: a small persistent set of worker threads that the
 * ops (convolution, batch norm, elementwise passes) split their batch or channel loops over.
 *
 * The pool is process-wide and created once by nnc_set_threads(n) (n - 1 workers; the calling
 * thread is worker 0). The default is 1 thread: no worker exists and every op runs inline.
 * Threads take task indices dynamically; a task's result never depends on which thread runs
 * it (thread indices only select scratch slices), and every reduction the ops do over tasks
 * runs in task order, so results are bitwise identical for any thread count.
 *
 * Thread-safety: nnc_set_threads must not run concurrently with ops. Ops may be called from
 * several threads at once (multi-worker training); a parallel region entered while another
 * one is running runs inline on the calling thread (same results, no parallelism), and a
 * parallel region never nests. Multi-worker runs use nnc_set_threads(1).
 */
#ifndef NNC_THREADS_H
#define NNC_THREADS_H

#include <stddef.h>

/* Set the number of kernel threads (1..64). Joins the previous workers, starts n - 1 new ones.
 * Returns NNC_OK, NNC_EINVAL for n out of range, or NNC_ETHREAD if a thread cannot start
 * (the pool then falls back to 1 thread). nnc_set_threads(1) joins every worker. */
int nnc_set_threads(int n);
/* Current number of kernel threads (>= 1). */
int nnc_threads(void);

/* --- for op implementations --- */
/* fn(ctx, task, thread) once for every task in [0, ntasks), spread over T = min(nnc_threads(),
 * ntasks) threads that take the next index as they finish; returns when all are done. thread
 * is in [0, nnc__parallel_width(ntasks)): the caller's slot for per-thread scratch. */
typedef void (*nnc__task_fn)(void *ctx, int task, int thread);
void nnc__parallel_for(int ntasks, nnc__task_fn fn, void *ctx);
/* Per-calling-thread scratch of at least `bytes` (64-byte aligned), grown through nnc__alloc
 * and reused across calls (freed when the thread exits); NULL on OOM. Valid until the next
 * call from the same thread: an op takes it once and passes slices to its parallel tasks. */
void *nnc__thread_scratch(size_t bytes);
/* Number of distinct thread indices a parallel_for over ntasks can pass (for scratch sizing). */
int nnc__parallel_width(int ntasks);

#endif
