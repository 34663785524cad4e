/* nn/threads.h - kernel thread teams: a small persistent set of threads that the ops
 * (convolution, batch norm, elementwise passes) split their batch or channel loops over.
 *
 * A team (nnc_team) is an object: nnc_team_new(n, ...) starts n - 1 helper threads; the thread
 * that enters the team is its thread 0. An op runs on the team of the thread that calls it: each
 * thread has a current team (a thread-local pointer set by nnc_team_enter, e.g. by each worker of
 * a multi-worker run on its own thread); a thread that never entered one uses its own default
 * team, sized by nnc_set_threads (1 thread until then: every op runs inline). No state is shared
 * between threads or teams, so two runs in one process never share threads. A team also carries
 * the precision its ops run in (nn/precision.h: nnc_team_set_precision).
 *
 * Threads take task indices dynamically; a task's result never depends on which thread runs it
 * (thread indices only select scratch slices), and every reduction the ops do over tasks runs in
 * task order, so results are bitwise identical for any team size.
 *
 * Thread-safety: a team is entered by one thread at a time; a team must not be freed or resized
 * while it runs a parallel region. A parallel region never nests (an op called from inside a
 * task runs inline), and a region entered on a team already running one (which only a misuse can
 * cause) runs inline on the calling thread: same results, no parallelism.
 */
#ifndef NNC_THREADS_H
#define NNC_THREADS_H

#include <stddef.h>

/* Largest team (a guard against nonsense values, not a machine limit). */
#define NNC_TEAM_MAX_THREADS 65536

typedef struct nnc_team nnc_team;

/* A team of `threads` (1..NNC_TEAM_MAX_THREADS) threads: threads - 1 helpers are started here.
 * cpus: NULL (no pinning) or `threads` OS CPU numbers: helper t is pinned to cpus[t] and the
 * thread that enters the team to cpus[0] while it is entered. short_spin: 1 when the machine
 * runs more kernel threads than it has cores (threads then sleep soon instead of spinning on a
 * core another thread needs). Returns NNC_OK, NNC_EINVAL, NNC_ENOMEM or NNC_ETHREAD (a helper
 * cannot start or cannot be pinned; nothing is left running). */
int nnc_team_new(int threads, const int *cpus, int short_spin, nnc_team **out);
/* Joins the helpers and frees the team (NULL: nothing). The team must not be entered. */
void nnc_team_free(nnc_team *t);
int nnc_team_size(const nnc_team *t);
/* Make t the calling thread's current team (pinning the thread to cpus[0] if the team has CPUs:
 * its previous affinity is kept and restored by nnc_team_leave). Returns NNC_OK or NNC_ETHREAD
 * (the affinity cannot be set; the team is not entered). */
int nnc_team_enter(nnc_team *t);
/* Undo nnc_team_enter on the same thread: the previous current team and affinity come back. */
void nnc_team_leave(nnc_team *t);

/* Resize the calling thread's default team to n kernel threads (1..NNC_TEAM_MAX_THREADS) and
 * make it the thread's current team (replacing an entered one, which stays alive). Returns
 * NNC_OK, NNC_EINVAL for n out of range, or NNC_ETHREAD if a thread cannot start (the default
 * team then falls back to 1 thread). nnc_set_threads(1) joins the default team's helpers. */
int nnc_set_threads(int n);
/* Number of kernel threads of the calling thread's current team (>= 1). */
int nnc_threads(void);
/* CPUs this process may run on: the size of its affinity mask (taskset, a cgroup cpuset, a batch
 * scheduler's allocation), at least 1; the online CPU count where the mask cannot be read.
 * "All cores" defaults (threads 0, threads per worker 0) mean this many. */
int nnc_cpu_count(void);

/* --- for op implementations --- */
/* fn(ctx, task, thread) once for every task in [0, ntasks), spread over T = min(nnc_threads(),
 * ntasks) threads of the calling thread's team that take the next index as they finish; returns
 * when all are done. thread is in [0, nnc__parallel_width(ntasks)): the caller's slot for
 * per-thread scratch. */
typedef void (*nnc__task_fn)(void *ctx, int task, int thread);
void nnc__parallel_for(int ntasks, nnc__task_fn fn, void *ctx);
/* Per-calling-thread scratch of at least `bytes` (64-byte aligned), grown through nnc__alloc
 * and reused across calls (freed when the thread exits); NULL on OOM. Valid until the next
 * call from the same thread: an op takes it once and passes slices to its parallel tasks. */
void *nnc__thread_scratch(size_t bytes);
/* Number of distinct thread indices a parallel_for over ntasks can pass (for scratch sizing). */
int nnc__parallel_width(int ntasks);

#endif
