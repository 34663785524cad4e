/* dist/worker.c - one worker thread of a multi-worker run: local steps on its own replica
 * (plus the proximity pull toward the published target, or the gradient of a data-parallel
 * step), then at a round: finiteness, the probe norms where the algorithm wants them, park
 * until the synchronizer (dist/sync.c) publishes the round - while parked, run the round's jobs
 * the synchronizer hands out (dist/parked.c: the center reduction, the distances) on its own
 * team -, apply it to its own replica (pull on its team, reset or the averaged-gradient step) and
 * go on. The worker names no algorithm: it reads the
 * capability flags and hooks of dist/algo.h.
 * async: a shared counter of local steps; a round once it reaches tau*M (fast workers take more).
 * lockstep: exactly tau local steps per worker per round: bitwise reproducible for a seed.
 * Cancellation is checked at step boundaries; an error is recorded for the synchronizer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/reduce.h"
#include "dist/run.h"
#include "nn/fault.h"

#define GO_ROUND 1
#define GO_CANCEL 2

/* Capability of the run's algorithm (dist/algo.h). */
static int has(const nnc_run *R, unsigned flag) { return (R->A->flags & flag) != 0; }

#ifdef NNC_TESTING
static void sleep_ms(double ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000.0),
                          .tv_nsec = (long)(fmod(ms, 1000.0) * 1e6)};
    nanosleep(&ts, NULL);
}

static int cancelled(nnc_run *R)
{
    pthread_mutex_lock(&R->mu);
    int c = R->cancel;
    pthread_mutex_unlock(&R->mu);
    return c;
}
#endif

#ifdef NNC_TESTING
static nnc__obs_fn obs_fn;
static void *obs_ud;

void nnc__dist_observe(nnc__obs_fn fn, void *ud)
{
    obs_fn = fn;
    obs_ud = ud;
}

#define OBSERVE(R, ev, w, loss) \
    do { \
        if (obs_fn) obs_fn((R), (ev), (w), (loss), obs_ud); \
    } while (0)
#else
#define OBSERVE(R, ev, w, loss) ((void)0)
#endif

/* Test-only fault points at a worker's step boundary (nn/fault.h). */
static int step_hooks(nnc_run *R, int i, nnc_rng *jitter)
{
#ifdef NNC_TESTING
    char a[32];
    if (nnc__fault_arg("worker_stall", a, sizeof a) && (atoi(a) == i || atoi(a) < 0)) {
        while (!cancelled(R)) sleep_ms(5);   /* "stalled forever", but cancellable */
        return GO_CANCEL;
    }
    if (nnc__fault_arg("worker_error", a, sizeof a) && atoi(a) == i)
        return nnc__fail(NNC_EIO, "worker %d: injected fault worker_error at local step %ld", i,
                         R->rep[i]->steps + 1);
    if (nnc__fault_arg("worker_sleep_jitter", a, sizeof a) && atoi(a) > 0)
        sleep_ms(nnc_rng_below(jitter, (uint32_t)atoi(a) * 1000u) / 1000.0);
#else
    (void)R;
    (void)i;
    (void)jitter;
#endif
    return 0;
}

/* Record a finished local step in the shared mirrors. */
static void count_step(nnc_run *R, int i, double loss, long dc, long dseen)
{
    pthread_mutex_lock(&R->mu);
    R->W[i].wround++;
    R->W[i].wsteps = R->rep[i]->steps;
    R->total_steps++;
    R->round_steps++;
    if (isfinite(loss)) {
        R->W[i].wloss += loss;
        R->W[i].wloss_n++;
    }
    R->W[i].wcorrect += dc;
    R->W[i].wseen += dseen;
    pthread_mutex_unlock(&R->mu);
}

/* The time budget, seen by a worker before a local step: the run's end if the worker stops now
 * is about the clock plus what the round still costs it (GRAWA: the probe, a forward and
 * backward of probe_batch images), one step later if it takes the step; it stops when that is
 * the nearer one to the budget. est: this worker's smoothed seconds per step (0 = none yet).
 * mu held (the clock's excluded time is written by the synchronizer with every worker parked). */
static int deadline_near(const nnc_run *R, double est)
{
    if (!(R->c.time_budget > 0) || !(est > 0)) return 0;
    double tail = has(R, NNC_ALGO_F_PROBE) ? est * (double)R->c.probe_batch / (double)R->c.batch : 0.0;
    return nnc__run_seconds(R) + 0.5 * est + tail >= R->c.time_budget;
}

/* Local steps until this worker must join a round. Returns GO_ROUND, GO_CANCEL or an error;
 * *stopping is set when the round is the stop request's; *est is the worker's smoothed step time. */
static int local_phase(nnc_run *R, int i, nnc_rng *jitter, int *stopping, double *est)
{
    nnc_replica *r = R->rep[i];
    for (;;) {
        pthread_mutex_lock(&R->mu);
        int cancel = R->cancel;
        *stopping = R->stop_req;
        int arrive = R->stop_req || R->W[i].bad;
        /* The time budget's deadline (sync.c): no further local step, the round after it closes
         * the run. A data-parallel worker arrives after every step anyway. */
        if (!has(R, NNC_ALGO_F_GRADIENTS)) {
            /* the first worker to see the end near raises the flag for all: the round after it
             * closes the run (no rounds without local steps while the clock catches up) */
            if (!R->deadline && deadline_near(R, *est)) R->deadline = 1;
            arrive |= R->deadline;
        }
        if (has(R, NNC_ALGO_F_GRADIENTS)) {
            arrive |= R->W[i].wround >= 1;
        } else if (R->c.sync == NNC_SYNC_ASYNC) {
            /* A step is reserved before it is taken, so a round holds exactly tau*M steps. */
            arrive |= R->round_req || R->round_resv >= (long)R->c.tau * R->nloc ||
                      (R->plan && R->total_resv >= R->plan * R->nloc);
            if (!arrive) R->round_resv++, R->total_resv++;
        } else {
            arrive |= R->W[i].wround >= R->c.tau || (R->plan && r->steps >= R->plan);
        }
        pthread_mutex_unlock(&R->mu);
        if (cancel) return GO_CANCEL;
        if (arrive) return GO_ROUND;
        double t_step = nnc__now();
        int h = step_hooks(R, i, jitter);
        if (h) return h;
        double loss = 0.0;
        long c0 = r->correct, s0 = r->seen;
        if (has(R, NNC_ALGO_F_GRADIENTS)) {
            /* Where this step started, for a checkpoint taken before its round (stop). */
            r->pend_epoch = nnc_loader_epoch(r->loader);
            r->pend_batch = nnc_loader_batch_index(r->loader);
            r->pend_rng = r->rng;
            memcpy(r->pend_buf, r->p->buf, r->p->n_buf * sizeof(float));
            int n = nnc__replica_next_batch(r);
            if (n <= 0) return nnc__fail(NNC_EINVAL, "worker %d: the loader returned no batch", i);
            long correct = 0;
            int s = R->A->gradient(R, r, n, &loss, &correct);
            if (s && s != NNC_EDIVERGED) return s;
            r->seen += n;
            r->correct += correct;
            if (!isfinite(loss) || !nnc__grawa_finite(r->p->grad, r->p->n_data)) R->W[i].bad = 1;
            r->pend_n = isfinite(loss);
            r->pend_correct = r->correct - c0;
            r->pend_seen = r->seen - s0;
            pthread_mutex_lock(&R->mu);
            R->W[i].wround = 1;
            r->pend_wloss = R->W[i].wloss;
            if (isfinite(loss)) {
                R->W[i].wloss += loss;
                R->W[i].wloss_n++;
            }
            R->W[i].wcorrect += r->correct - c0;
            R->W[i].wseen += r->seen - s0;
            pthread_mutex_unlock(&R->mu);
            continue;
        }
        OBSERVE(R, NNC__OBS_STEP_PRE, i, NAN);
        int s = nnc__replica_step(r, nnc__run_lr(R, r->steps, R->pub_seconds), &loss);
        if (s == NNC_EDIVERGED) {
            /* Parameters unchanged; this worker is reset at the next round. */
            R->W[i].bad = 1;
            pthread_mutex_lock(&R->mu);
            R->round_req = 1;
            if (R->c.sync == NNC_SYNC_ASYNC) R->round_resv--, R->total_resv--;
            pthread_mutex_unlock(&R->mu);
            continue;
        }
        if (s) return s;
        OBSERVE(R, NNC__OBS_STEP_SGD, i, loss);
        if (R->prox > 0.0) nnc__grawa_pull(r->p->data, R->pub, R->prox, r->p->n_data);
        OBSERVE(R, NNC__OBS_STEP_DONE, i, loss);
        if (has(R, NNC_ALGO_F_LOSS_HISTORY)) nnc__lsgd_push(&R->W[i].hist, loss);
        count_step(R, i, loss, r->correct - c0, r->seen - s0);
        double dt = nnc__now() - t_step;
        *est = *est > 0 ? 0.7 * *est + 0.3 * dt : dt;
    }
}

/* Worker-side round preparation: finiteness and (GRAWA) the probe norms. */
static int round_prepare(nnc_run *R, int i, int stopping)
{
    nnc_replica *r = R->rep[i];
#ifdef NNC_TESTING
    char a[32];
    int w, k;
    if (nnc__fault_arg("worker_nan", a, sizeof a) && sscanf(a, "%d:%d", &w, &k) == 2 && (w == i || w < 0) &&
        (k == R->round + 1 || k == 0) && !stopping)
        r->p->data[0] = NAN;
#endif
    if (stopping || has(R, NNC_ALGO_F_GRADIENTS)) return NNC_OK;
    if (!R->W[i].bad && !nnc_params_all_finite(r->p)) R->W[i].bad = 1;
    if (has(R, NNC_ALGO_F_PROBE) && !R->W[i].bad) {
        int s = nnc__replica_probe(r, &R->ly, &R->norms[(size_t)i * R->ly.L]);
        if (s) return s;
    }
    return NNC_OK;
}

/* Apply the published round to this worker's replica. */
static void round_apply(nnc_run *R, int i)
{
    nnc_replica *r = R->rep[i];
    nnc_params *p = r->p;
    int grads = has(R, NNC_ALGO_F_GRADIENTS);
    if (grads) {
        memcpy(p->grad, R->pub, p->n_data * sizeof(float));
        nnc_sgd_step(r->opt, nnc__run_lr(R, r->steps, R->pub_seconds));
        r->steps++;
    } else if (R->reset[i]) {
        memcpy(p->data, R->pub, p->n_data * sizeof(float));
        memcpy(p->buf, R->center_buf, p->n_buf * sizeof(float));
        nnc_sgd_reset(r->opt);
        memset(&R->W[i].hist, 0, sizeof R->W[i].hist);
    } else {
        nnc__reduce_pull(p->data, R->pub, R->pull_c[i], p->n_data);   /* on this worker's team */
    }
    R->W[i].bad = 0;
    r->probe_rng_round = r->probe_rng;
    pthread_mutex_lock(&R->mu);
    if (grads) {
        R->W[i].wsteps = r->steps;
        R->total_steps++;
    }
    R->W[i].wround = 0;
    pthread_mutex_unlock(&R->mu);
}

static void worker_fail(nnc_run *R, int i, int s)
{
    pthread_mutex_lock(&R->mu);
    R->wstatus[i] = s;
    snprintf(R->wmsg[i], sizeof R->wmsg[i], "%s", nnc_error_message());
    if (!R->failed) R->failed = i + 1;
    pthread_cond_signal(&R->cv_sync);
    pthread_mutex_unlock(&R->mu);
}

void *nnc__worker_main(void *arg)
{
    nnc_run *R = ((nnc__worker_arg *)arg)->R;
    int i = ((nnc__worker_arg *)arg)->id;
    nnc_rng jitter;
    nnc_rng_seed(&jitter, (uint64_t)(nnc__now() * 1e9), (uint64_t)i);
    double est = 0.0;   /* smoothed seconds per local step (the time budget's end) */
    for (;;) {
        int stopping = 0;
        int s = local_phase(R, i, &jitter, &stopping, &est);
        if (s == GO_CANCEL) break;
        if (s == GO_ROUND) s = round_prepare(R, i, stopping);
        if (s) {
            worker_fail(R, i, s);
            break;
        }
        OBSERVE(R, NNC__OBS_ARRIVE, i, NAN);
        pthread_mutex_lock(&R->mu);
        long g = R->gen, jg = R->job_gen;
        R->arrived++;
        R->here[i] = 1;
        pthread_cond_signal(&R->cv_sync);
        while (R->gen == g && !R->cancel) {
            if (R->job_gen != jg) {
                /* A job of the round (dist/parked.c) on this thread and its team. */
                void (*fn)(void *, int) = R->job_fn;
                void *ctx = R->job_ctx;
                jg = R->job_gen;
                pthread_mutex_unlock(&R->mu);
                fn(ctx, i);
                pthread_mutex_lock(&R->mu);
                if (++R->job_done == R->nloc) pthread_cond_signal(&R->cv_sync);
                continue;
            }
            pthread_cond_wait(&R->cv_work, &R->mu);
        }
        int cancel = R->cancel, ex = R->exit_req, done = R->round_done, ack = R->need_ack;
        pthread_mutex_unlock(&R->mu);
        if (cancel) break;
        if (done) {
            round_apply(R, i);
            OBSERVE(R, NNC__OBS_APPLIED, i, NAN);
        }
        if (ack) {
            pthread_mutex_lock(&R->mu);
            long g2 = R->gen2;
            R->arrived2++;
            pthread_cond_signal(&R->cv_sync);
            while (R->gen2 == g2 && !R->cancel) pthread_cond_wait(&R->cv_work, &R->mu);
            pthread_mutex_unlock(&R->mu);
        }
        if (ex) break;
    }
    return NULL;
}

/* A worker thread runs its ops on its own team (pinned where the plan pins it). */
void *nnc__worker_entry(void *arg)
{
    nnc__worker_arg *a = arg;
    nnc_run *R = a->R;
    nnc_team *t = R->team[a->id];
    int s = t ? nnc_team_enter(t) : NNC_OK;
    if (s) {
        pthread_mutex_lock(&R->mu);
        R->wstatus[a->id] = s;
        snprintf(R->wmsg[a->id], sizeof R->wmsg[a->id], "worker %d: %s", a->id, nnc_error_message());
        if (!R->failed) R->failed = a->id + 1;
        pthread_cond_signal(&R->cv_sync);
        pthread_mutex_unlock(&R->mu);
        return NULL;
    }
    nnc__worker_main(arg);
    if (t) nnc_team_leave(t);
    return NULL;
}
