/* nn/threads.c - kernel thread teams (see nn/threads.h).
 *
 * One job at a time per team: the dispatcher publishes (fn, ctx, ntasks, width) under the
 * team's mutex, bumps the generation and broadcasts; every participating thread takes task
 * indices from a shared atomic counter until none are left (so a thread slowed by other
 * processes on a shared machine just runs fewer tasks), and helpers decrement `pending` when
 * done. Helpers and the dispatcher spin briefly on the atomics before sleeping on the condition
 * variables, since the ops dispatch many short jobs per step. The only other state is
 * thread-local: the calling thread's current team and its default team. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "nn/alloc.h"
#include "nn/precision.h"
#include "nn/status.h"
#include "nn/threads.h"

/* Spin iterations before sleeping: long while every thread has a core of its own (a futex
 * wake-up between two short jobs cost ResNet-20 inference at 2 threads a quarter of its speed:
 * 3560 -> 4690 img/s with the long spin), short when threads outnumber the cores, where a
 * spinning thread would hold the core the working one needs. */
#define SPIN_LONG 200000
#define SPIN_SHORT 2000

typedef struct helper {
    nnc_team *team;
    int me;                    /* 1..nworkers */
    pthread_t tid;
} helper;

struct nnc_team {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    helper *h;
    int *cpus;                 /* NULL or size OS CPU numbers */
    int size;
    int nworkers;              /* helpers started */
    atomic_uint gen;           /* job generation */
    atomic_int pending;        /* helpers still running the current job */
    atomic_int busy;           /* a job is being dispatched (guards against misuse) */
    atomic_int next;           /* next task index of the current job */
    atomic_int stop;
    atomic_int pin_failed;     /* a helper could not be pinned */
    int spin;
    nnc__task_fn fn;
    void *ctx;
    int ntasks, width;
    atomic_int precision;      /* nnc_precision of the ops run on this team (nn/precision.h) */
    /* nnc_team_enter / nnc_team_leave (one entering thread at a time) */
    nnc_team *prev;
    int restore;
    cpu_set_t old_mask;
};

static _Thread_local nnc_team *cur;         /* the calling thread's current team */
static _Thread_local nnc_team *own;         /* its default team (nnc_set_threads) */
static _Thread_local int in_pool_job;
static _Thread_local int own_prec;          /* precision of its default team (nnc_set_precision) */

static int pin_self(int cpu)
{
    cpu_set_t m;
    CPU_ZERO(&m);
    if (cpu < 0 || cpu >= CPU_SETSIZE) return -1;
    CPU_SET(cpu, &m);
    return pthread_setaffinity_np(pthread_self(), sizeof m, &m) ? -1 : 0;
}

/* Take tasks of the current job until there are none left. */
static void run_tasks(nnc_team *P, nnc__task_fn fn, void *ctx, int ntasks, int t)
{
    for (int i; (i = atomic_fetch_add_explicit(&P->next, 1, memory_order_relaxed)) < ntasks;) fn(ctx, i, t);
}

static void *worker_main(void *arg)
{
    helper *hp = arg;
    nnc_team *P = hp->team;
    int me = hp->me;
    unsigned seen = 0;
    in_pool_job = 1;
    if (P->cpus && pin_self(P->cpus[me])) atomic_store(&P->pin_failed, 1);
    for (;;) {
        unsigned g = atomic_load_explicit(&P->gen, memory_order_acquire);
        for (int i = 0; i < P->spin && g == seen; i++) g = atomic_load_explicit(&P->gen, memory_order_acquire);
        if (g == seen) {
            pthread_mutex_lock(&P->mu);
            while ((g = atomic_load_explicit(&P->gen, memory_order_acquire)) == seen && !atomic_load(&P->stop))
                pthread_cond_wait(&P->wake, &P->mu);
            pthread_mutex_unlock(&P->mu);
        }
        if (g == seen) return NULL; /* stop */
        seen = g;
        if (atomic_load(&P->stop)) return NULL;
        if (me < P->width) run_tasks(P, P->fn, P->ctx, P->ntasks, me);
        if (atomic_fetch_sub_explicit(&P->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&P->mu);
            pthread_cond_signal(&P->done);
            pthread_mutex_unlock(&P->mu);
        }
    }
}

static void join_all(nnc_team *P)
{
    if (!P->nworkers) return;
    pthread_mutex_lock(&P->mu);
    atomic_store(&P->stop, 1);
    pthread_cond_broadcast(&P->wake);
    pthread_mutex_unlock(&P->mu);
    for (int i = 0; i < P->nworkers; i++) pthread_join(P->h[i].tid, NULL);
    P->nworkers = 0;
}

void nnc_team_free(nnc_team *t)
{
    if (!t) return;
    join_all(t);
    pthread_cond_destroy(&t->done);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->mu);
    nnc__free(t->h);
    nnc__free(t->cpus);
    nnc__free(t);
}

int nnc_team_new(int n, const int *cpus, int short_spin, nnc_team **out)
{
    *out = NULL;
    if (n < 1 || n > NNC_TEAM_MAX_THREADS)
        return nnc__fail(NNC_EINVAL, "threads: %d kernel threads requested, expected 1..%d", n,
                         NNC_TEAM_MAX_THREADS);
    nnc_team *t = nnc__calloc(1, sizeof *t);
    if (!t) return nnc__fail(NNC_ENOMEM, "threads: out of memory for a team of %d", n);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->wake, NULL);
    pthread_cond_init(&t->done, NULL);
    t->size = n;
    atomic_init(&t->precision, (int)nnc_get_precision()); /* the creating thread's (nn/precision.h) */
    t->spin = short_spin ? SPIN_SHORT : SPIN_LONG;
    t->h = nnc__calloc((size_t)n, sizeof *t->h);
    if (cpus) {
        t->cpus = nnc__calloc((size_t)n, sizeof(int));
        if (t->cpus) memcpy(t->cpus, cpus, (size_t)n * sizeof(int));
    }
    if (!t->h || (cpus && !t->cpus)) {
        nnc_team_free(t);
        return nnc__fail(NNC_ENOMEM, "threads: out of memory for a team of %d", n);
    }
    for (int i = 0; i < n - 1; i++) {
        t->h[i] = (helper){.team = t, .me = i + 1};
        if (pthread_create(&t->h[i].tid, NULL, worker_main, &t->h[i]) != 0) {
            nnc_team_free(t);
            return nnc__fail(NNC_ETHREAD, "threads: cannot start kernel thread %d of %d", i + 2, n);
        }
        t->nworkers = i + 1;
    }
    if (cpus && n > 1) {
        /* A helper pins itself first thing; one parallel region waits for all of them. */
        nnc_team *keep = cur;
        int keep_job = in_pool_job;
        in_pool_job = 0;
        cur = t;
        nnc__parallel_for(0, NULL, NULL);
        cur = keep;
        in_pool_job = keep_job;
        if (atomic_load(&t->pin_failed)) {
            nnc_team_free(t);
            return nnc__fail(NNC_ETHREAD, "threads: cannot pin the kernel threads of a team of %d", n);
        }
    }
    *out = t;
    return NNC_OK;
}

int nnc_team_size(const nnc_team *t) { return t ? t->size : 1; }

int nnc_team_enter(nnc_team *t)
{
    t->prev = cur;
    t->restore = 0;
    if (t->cpus) {
        if (pthread_getaffinity_np(pthread_self(), sizeof t->old_mask, &t->old_mask) == 0) t->restore = 1;
        if (pin_self(t->cpus[0]))
            return nnc__fail(NNC_ETHREAD, "threads: cannot pin a thread to CPU %d", t->cpus[0]);
    }
    cur = t;
    return NNC_OK;
}

void nnc_team_leave(nnc_team *t)
{
    if (t->restore) pthread_setaffinity_np(pthread_self(), sizeof t->old_mask, &t->old_mask);
    t->restore = 0;
    if (cur == t) cur = t->prev;
    t->prev = NULL;
}

/* The default team is freed when its thread exits. */
static pthread_key_t own_key;
static pthread_once_t own_once = PTHREAD_ONCE_INIT;
static void own_destroy(void *v) { nnc_team_free(v); }
static void own_init(void) { (void)pthread_key_create(&own_key, own_destroy); }

int nnc_set_threads(int n)
{
    if (n < 1 || n > NNC_TEAM_MAX_THREADS)
        return nnc__fail(NNC_EINVAL, "threads: %d kernel threads requested, expected 1..%d", n,
                         NNC_TEAM_MAX_THREADS);
    if (own && cur == own) cur = NULL;
    nnc_team_free(own);
    own = NULL;
    if (n == 1) {
        cur = NULL;
        return NNC_OK;
    }
    int s = nnc_team_new(n, NULL, n > nnc_cpu_count(), &own);
    cur = own;
    pthread_once(&own_once, own_init);
    (void)pthread_setspecific(own_key, own);
    return s;
}

int nnc_threads(void) { return cur ? cur->size : 1; }

int nnc_cpu_count(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---- precision (nn/precision.h): the current team's, or the thread's default team's ---- */
int nnc_team_set_precision(nnc_team *t, nnc_precision p)
{
    int s = nnc__precision_check(p);
    if (s) return s;
    if (t == own || !t) own_prec = (int)p;
    else atomic_store_explicit(&t->precision, (int)p, memory_order_relaxed);
    return NNC_OK;
}

nnc_precision nnc_team_precision(const nnc_team *t)
{
    if (!t || t == own) return (nnc_precision)own_prec;
    return (nnc_precision)atomic_load_explicit(&((nnc_team *)t)->precision, memory_order_relaxed);
}

nnc_status nnc_set_precision(nnc_precision p) { return nnc_team_set_precision(cur, p); }

nnc_precision nnc_get_precision(void) { return nnc_team_precision(cur); }

int nnc__parallel_width(int ntasks)
{
    int t = cur ? cur->size : 1;
    return ntasks < t ? (ntasks < 1 ? 1 : ntasks) : t;
}

void nnc__parallel_for(int ntasks, nnc__task_fn fn, void *ctx)
{
    nnc_team *P = cur;
    /* ntasks 0 with pinning: an empty job that only waits for every helper to have started. */
    if (ntasks < 0 || (ntasks == 0 && fn)) return;
    int width = ntasks ? nnc__parallel_width(ntasks) : (P ? P->size : 1);
    int expected = 0;
    if (!P || width == 1 || in_pool_job || !atomic_compare_exchange_strong(&P->busy, &expected, 1)) {
        /* Inline, in task order, as thread 0. */
        for (int i = 0; i < ntasks; i++) fn(ctx, i, 0);
        return;
    }
    P->fn = fn;
    P->ctx = ctx;
    P->ntasks = ntasks;
    P->width = width;
    atomic_store_explicit(&P->next, 0, memory_order_relaxed);
    atomic_store_explicit(&P->pending, P->nworkers, memory_order_relaxed);
    pthread_mutex_lock(&P->mu);
    atomic_fetch_add_explicit(&P->gen, 1, memory_order_release);
    pthread_cond_broadcast(&P->wake);
    pthread_mutex_unlock(&P->mu);
    in_pool_job = 1;
    run_tasks(P, fn, ctx, ntasks, 0);
    in_pool_job = 0;
    for (int i = 0; i < P->spin && atomic_load_explicit(&P->pending, memory_order_acquire); i++)
        ;
    if (atomic_load_explicit(&P->pending, memory_order_acquire)) {
        pthread_mutex_lock(&P->mu);
        while (atomic_load_explicit(&P->pending, memory_order_acquire)) pthread_cond_wait(&P->done, &P->mu);
        pthread_mutex_unlock(&P->mu);
    }
    atomic_store(&P->busy, 0);
}

/* ---- per-thread scratch: one growable block per thread, freed by a key destructor ---- */
typedef struct scratch_block {
    void *p;
    size_t n;
} scratch_block;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_destroy(void *v)
{
    scratch_block *b = v;
    nnc__free(b->p);
    nnc__free(b);
}

static void scratch_init(void) { (void)pthread_key_create(&scratch_key, scratch_destroy); }

void *nnc__thread_scratch(size_t bytes)
{
    pthread_once(&scratch_once, scratch_init);
    scratch_block *b = pthread_getspecific(scratch_key);
    if (!b) {
        b = nnc__calloc(1, sizeof *b);
        if (!b) return NULL;
        if (pthread_setspecific(scratch_key, b) != 0) {
            nnc__free(b);
            return NULL;
        }
    }
    if (b->n < bytes) {
        nnc__free(b->p);
        b->n = 0;
        b->p = nnc__alloc(bytes);
        if (!b->p) return NULL;
        b->n = bytes;
    }
    return b->p;
}
