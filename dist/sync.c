/* dist/sync.c - M > 1 workers: the synchronizer (the thread that called nnc_train, so every
 * callback runs there) of the persistent worker threads (dist/worker.c).
 *
 * Protocol. Each worker runs local steps on its own replica, then arrives at a round: it
 * checks its parameters, computes its probe norms (GRAWA) in parallel with the others, bumps
 * `arrived` and parks on cv_work until the round's generation changes. The synchronizer waits
 * (in 50 ms slices: stop flag, progress reports, the sync_timeout deadline counted from the
 * first arrival), then with every worker parked computes the round in fixed worker order,
 * writes center/pub/weights, bumps the generation and lets the workers apply their own pull.
 * When an evaluation or checkpoint is due the workers park once more after the pull (phase 2)
 * so the synchronizer sees a consistent between-steps state. Inside the round the center
 * reduction and the distances run on the parked workers' own threads and teams (dist/parked.c).
 * coordinate() reads as its steps: wait_arrivals (parking, watchdogs, stop flag, reports),
 * run_round (exchange, stop_round, do_round, model_link, decide, round_info, publish,
 * after_pull), then the end.
 * The round itself (do_round) reads top to bottom: finiteness, the algorithm's weights and
 * center (dist/algo.h), the optional slow momentum, the pull coefficients, the BN buffers.
 * Faults: a worker error cancels everyone (NNC_ETHREAD with its message); a stalled worker
 * gives NNC_ETIMEOUT naming it and the round; cancellation is checked at step boundaries.
 * Ranks (MPI build): each rank runs its workers [lo, hi) as above; once they are parked the
 * synchronizers exchange per-worker records (counters, flags, probe norms, LSGD histories,
 * the stop request), so every rank computes the same round over all M workers; the vector
 * reductions go through the transport in global worker order; rank 0's clock decides the end.
 * async counts tau * (local workers) steps per round on each rank.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/run.h"

#define POLL_MS 50

/* Capability of the run's algorithm (dist/algo.h). */
static int has(const nnc_run *R, unsigned flag) { return (R->A->flags & flag) != 0; }

/* ---- synchronizer ---- */

static void sleep_s(double sec)
{
    if (!(sec > 0.0)) return;
    struct timespec ts = {.tv_sec = (time_t)sec, .tv_nsec = (long)((sec - (double)(time_t)sec) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Modelled seconds of one round's collectives on the run's link (0 without one): a ring
 * all-reduce of the exchanged vector (parameters, or the gradient for DP), plus an all-gather
 * of one scalar per worker where the algorithm exchanges norms (GRAWA) or losses (LSGD), which
 * costs 2 (M - 1) latencies (its bytes are negligible). */
static double round_comm_seconds(const nnc_run *R)
{
    const nnc_link *l = &R->c.link;
    if (!(l->bytes_per_s > 0.0) || R->M <= 1) return 0.0;
    double t = nnc_link_allreduce_seconds(l, (double)R->ly.n * sizeof(float), R->M);
    if (R->A->flags & (NNC_ALGO_F_PROBE | NNC_ALGO_F_LOSS_HISTORY)) t += 2.0 * (R->M - 1) * l->latency_s;
    return t;
}

/* The time budget: once the training clock reaches it the deadline flag tells the workers to
 * stop taking local steps and arrive (mu held). */
static void check_deadline(nnc_run *R)
{
    if (R->c.time_budget > 0 && !R->deadline && nnc__run_seconds(R) >= R->c.time_budget) R->deadline = 1;
}

int nnc__run_owner(const nnc_run *R, int i)
{
    int r = 0;
    while (r + 1 < R->tp->size && nnc__transport_first_worker(R->M, R->tp->size, r + 1) <= i) r++;
    return r;
}

int nnc__run_buf_average(nnc_run *R, const int *ok, float *out)
{
    size_t nb = R->buf_ly.n;
    if (nb == 0) return NNC_OK;
    const float *x[NNC_MAX_WORKERS];
    double u[NNC_MAX_WORKERS], usum = 0.0;
    for (int i = 0; i < R->M; i++) {
        x[i] = R->rep[i]->p->buf;
        u[i] = !ok || ok[i] ? 1.0 : 0.0;
    }
    /* sum_i 1.0 * buf_i in worker order, then / count: the plain mean, bitwise. */
    int s = R->tp->ops->reduce_weighted(R->tp, &R->buf_ly, x + R->lo, u + R->lo, R->nloc, 0, R->buf_acc,
                                        &usum);
    if (s) return s;
    for (size_t j = 0; j < nb; j++) out[j] = (float)(R->buf_acc[j] / usum);
    return NNC_OK;
}

/* Multi-rank: every rank's synchronizer learns the other ranks' worker records (its local
 * workers parked, mu not held): each worker's record (dist/record.c, LIVE) followed by its L
 * probe norms, little-endian. A stop request anywhere becomes everyone's. */
static size_t xrec_bytes(const nnc_run *R) { return nnc__worker_bytes(R->ly.L) + (size_t)R->ly.L * 8; }

static int exchange(nnc_run *R)
{
    nnc_transport *t = R->tp;
    if (t->size == 1) return NNC_OK;
    size_t L = (size_t)R->ly.L, rs = xrec_bytes(R), wb = nnc__worker_bytes(R->ly.L);
    unsigned char *b = R->xbuf;
    pthread_mutex_lock(&R->mu);
    for (int i = R->lo; i < R->hi; i++) {
        nnc__worker_encode(R, i, NNC__REC_LIVE, b + (size_t)i * rs);
        for (size_t l = 0; l < L; l++) {
            uint64_t v;
            memcpy(&v, &R->norms[(size_t)i * L + l], 8);
            for (int k = 0; k < 8; k++) b[(size_t)i * rs + wb + 8 * l + k] = (unsigned char)(v >> (8 * k));
        }
    }
    pthread_mutex_unlock(&R->mu);
    size_t bytes[NNC_MAX_WORKERS];
    for (int r = 0; r < t->size; r++)
        bytes[r] = (size_t)(nnc__transport_first_worker(R->M, t->size, r + 1) -
                            nnc__transport_first_worker(R->M, t->size, r)) * rs;
    int s = t->ops->allgather(t, b, bytes);
    if (s) return s;
    int stop = 0;
    pthread_mutex_lock(&R->mu);
    for (int i = 0; i < R->M && !s; i++) {
        const unsigned char *w = b + (size_t)i * rs;
        int local = i >= R->lo && i < R->hi, ws = 0;
        long before = R->rep[i]->steps;
        s = nnc__worker_decode(R, i, w, local ? NNC__REC_NONE : NNC__REC_ROUND, NULL, &ws);
        if (ws && (!stop || ws > 0)) stop = ws;
        if (local || s) continue;
        R->total_steps += R->rep[i]->steps - before;
        for (size_t l = 0; l < L; l++) {
            uint64_t v = 0;
            for (int k = 0; k < 8; k++) v |= (uint64_t)w[wb + 8 * l + k] << (8 * k);
            memcpy(&R->norms[(size_t)i * L + l], &v, 8);
        }
    }
    if (stop && !R->stop_req) {
        R->stop_req = 1;
        R->round_req = 1;
    }
    if (stop > 0 && !R->res->stopped_by_signal) R->res->stopped_by_signal = stop;
    pthread_mutex_unlock(&R->mu);
    return s;
}

/* The round with every worker parked, in fixed worker order: finiteness, the algorithm's
 * weights and center (dist/algo.h), the optional slow momentum, the pull coefficients, then the
 * generic rest (BN buffer average, resets, distances). */
static int do_round(nnc_run *R, nnc_round_info *ri)
{
    const nnc_algo_def *A = R->A;
    int M = R->M, grads = has(R, NNC_ALGO_F_GRADIENTS);
    const float *x[NNC_MAX_WORKERS];
    const char *why[NNC_MAX_WORKERS];
    for (int i = 0; i < M; i++) {
        x[i] = grads ? R->rep[i]->p->grad : R->rep[i]->p->data;   /* read for i in [lo, hi) */
        R->ok[i] = !R->W[i].bad;
        why[i] = grads ? "gradient" : "parameters or loss";
        ri->norm[i] = ri->weight[i] = 0.0;
        ri->distance[i] = NAN;
    }
    int s = A->weights(R, ri, why);
    if (s) return s;
    int nok = 0;
    for (int i = 0; i < M; i++) nok += R->ok[i];
    if (nok == 0)
        return nnc__fail(NNC_EDIVERGED, "all %d workers non-finite at round %ld: training stopped, "
                         "no checkpoint written from this state", M, R->round + 1);
    for (int i = 0; i < M; i++) {
        if (R->ok[i]) {
            R->W[i].bad_rounds = 0;
            continue;
        }
        if (++R->W[i].bad_rounds >= NNC__MAX_BAD_ROUNDS)
            return nnc__fail(NNC_EDIVERGED, "worker %d non-finite %s at %d rounds in a row (round %ld), reset to "
                             "the center each time: training stopped", i, why[i], NNC__MAX_BAD_ROUNDS, R->round + 1);
        nnc__run_log(R, "worker %d non-finite %s at round %ld: weight 0, reset to the center",
                     i, why[i], R->round + 1);
        R->res->resets++;
    }
    if ((s = A->center(R, x, ri))) return s;
    if (R->slow && (s = nnc__slowmo_round(R))) return s;
    for (int i = 0; i < M; i++) R->pull_c[i] = A->pull_coef ? A->pull_coef(R, i) : 0.0;
    if (grads) return NNC_OK;
    if ((s = nnc__run_buf_average(R, R->ok, R->center_buf))) return s;
    for (int i = 0; i < M; i++) R->reset[i] = !R->ok[i];
    if ((s = nnc__run_distances(R, ri))) return s;
    if (R->tp->size > 1) {
        size_t bytes[NNC_MAX_WORKERS];
        for (int r = 0; r < R->tp->size; r++)
            bytes[r] = (size_t)(nnc__transport_first_worker(M, R->tp->size, r + 1) -
                                nnc__transport_first_worker(M, R->tp->size, r)) * sizeof(double);
        s = R->tp->ops->allgather(R->tp, ri->distance, bytes);
    }
    return s;
}

/* Copy of the progress mirrors (under mu) for reports. */
typedef struct progress {
    long total;
    double loss;
    long loss_n, correct, seen;
} progress;

static progress snapshot(nnc_run *R)
{
    progress p = {.total = R->total_steps};
    for (int i = 0; i < R->M; i++) {
        p.loss += R->W[i].wloss;
        p.loss_n += R->W[i].wloss_n;
        p.correct += R->W[i].wcorrect;
        p.seen += R->W[i].wseen;
    }
    return p;
}

static void report(nnc_run *R, progress now, progress *last, double *t_last)
{
    if (!R->c.on_step || now.loss_n == last->loss_n) return;
    double t = nnc__run_seconds(R);
    nnc_step_info si = {.step = now.total,
                        .total_steps = R->plan * R->M,
                        .epoch = R->spe ? (double)now.total / ((double)R->spe * R->M) : 0.0,
                        .seconds = t,
                        .loss = (now.loss - last->loss) / (double)(now.loss_n - last->loss_n),
                        .acc = now.seen > last->seen ? (double)(now.correct - last->correct) / (double)(now.seen - last->seen) : 0.0,
                        .lr = nnc__run_lr(R, R->spe ? now.total / R->M : 0, R->pub_seconds),
                        .images_per_sec = t > *t_last ? (double)(now.seen - last->seen) / (t - *t_last) : 0.0};
    *last = now;
    *t_last = t;
    R->c.on_step(&si, R->c.ud);
}

static int plan_done(nnc_run *R)
{
    if (!R->plan) return 0;
    nnc_ckpt_progress p = nnc__run_progress(R, 0.0);
    if (has(R, NNC_ALGO_F_GRADIENTS)) p.min_steps++; /* a DP round's step is applied after the round */
    return nnc_train_ckpt_finished(&p, R->c.epochs, 0.0);
}

/* The synchronizer's running state between rounds: the report and round-loss windows and the
 * clock of the previous round. */
typedef struct coord {
    long report_every;
    progress last, loss_mark;
    double t_last, prev_secs;
} coord;

/* What a round decided after it ran: end the run, evaluate or save at this boundary. */
typedef struct verdict {
    int ex, eval_due, save_due, ack;
    long epoch, total_after;
    double secs, comm, slept;
} verdict;

/* The absolute time one poll slice (or less, up to the time budget's deadline) from now. */
static struct timespec poll_until(nnc_run *R)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long slice = POLL_MS * 1000000L;
    if (R->c.time_budget > 0 && !R->deadline) {
        /* wake at the deadline, not up to a poll slice after it */
        double left = R->c.time_budget - nnc__run_seconds(R);
        if (left * 1e9 < (double)slice) slice = left > 1e-3 ? (long)(left * 1e9) : 1000000L;
    }
    ts.tv_nsec += slice;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* The first local worker not parked (for messages; mu held). */
static int first_missing(const nnc_run *R)
{
    int w = R->lo;
    while (w < R->hi && R->here[w]) w++;
    return w;
}

/* Waiting (mu held, kept held): until every local worker is parked at the round or one failed,
 * in poll slices that check the time budget, the two stall watchdogs, the stop flag and the
 * progress reports. NNC_ETIMEOUT (mu released) for a stalled worker. */
static int wait_arrivals(nnc_run *R, coord *st)
{
    int nl = R->nloc;
    double timeout = R->c.sync_timeout, first = 0.0, quiet_since = nnc__now();
    long activity = -1;
    while (R->arrived < nl && !R->failed) {
        struct timespec ts = poll_until(R);
        pthread_cond_timedwait(&R->cv_sync, &R->mu, &ts);
        check_deadline(R);
        if (R->arrived > 0 && first == 0.0) first = nnc__now();
        if (R->arrived < nl && first > 0.0 && nnc__now() - first > timeout && !R->failed) {
            int w = first_missing(R);
            pthread_mutex_unlock(&R->mu);
            return nnc__fail(NNC_ETIMEOUT,
                             "sync round %ld: worker %d did not arrive within %.1f s of the first "
                             "worker (stalled?); %d of %d workers waiting",
                             R->round + 1, w, timeout, R->arrived, nl);
        }
        /* Watchdog for the case where no worker arrives at all: no local step, gradient
         * or arrival anywhere for sync_timeout seconds. */
        long act = R->arrived;
        for (int i = R->lo; i < R->hi; i++) act += R->W[i].wsteps + R->W[i].wround;
        if (act != activity) {
            activity = act;
            quiet_since = nnc__now();
        } else if (nnc__now() - quiet_since > timeout && !R->failed) {
            int w = first_missing(R);
            pthread_mutex_unlock(&R->mu);
            return nnc__fail(NNC_ETIMEOUT,
                             "sync round %ld: no worker made progress for %.1f s (worker %d first "
                             "of those not arrived; stalled?); %d of %d workers waiting",
                             R->round + 1, timeout, w, R->arrived, nl);
        }
        if (R->user->stop && *R->user->stop && !R->stop_req) {
            R->stop_req = 1;
            R->round_req = 1;
            R->res->stopped_by_signal = (int)*R->user->stop;
        }
        progress now = snapshot(R);
        if (now.total - st->last.total >= st->report_every) {
            pthread_mutex_unlock(&R->mu);
            report(R, now, &st->last, &st->t_last);
            pthread_mutex_lock(&R->mu);
        }
    }
    return NNC_OK;
}

/* A worker failed (mu held, released): its status as the run's. */
static int worker_failure(nnc_run *R)
{
    int w = R->failed - 1;
    pthread_mutex_unlock(&R->mu);
    /* Out of memory keeps its status (the CLI reports it as such); anything else is the
     * worker's failure. */
    return nnc__fail(R->wstatus[w] == NNC_ENOMEM ? NNC_ENOMEM : NNC_ETHREAD, "worker %d failed at round %ld: %s", w,
                     R->round + 1, R->wmsg[w]);
}

/* The stop request (every worker parked): last.ckpt where the run has a directory, the workers
 * told to exit, NNC_EINTERRUPTED (or the save's failure). */
static int stop_round(nnc_run *R)
{
    int s = R->c.ckpt_dir ? nnc__run_save(R, "last.ckpt") : NNC_OK;
    pthread_mutex_lock(&R->mu);
    R->round_done = 0;
    R->need_ack = 0;
    R->exit_req = 1;
    R->gen++;
    pthread_cond_broadcast(&R->cv_work);
    pthread_mutex_unlock(&R->mu);
    if (s) return s;
    return nnc__fail(NNC_EINTERRUPTED, "stopped by signal %d at round %ld%s", R->res->stopped_by_signal, R->round,
                     R->c.ckpt_dir ? " (checkpoint written)" : "");
}

/* The modelled interconnect: the workers (parked) wait what the round's collectives would cost
 * beyond the real time they took (since t0); the wait is training time. */
static void model_link(nnc_run *R, double t0, verdict *v)
{
    v->comm = round_comm_seconds(R);
    v->slept = 0.0;
    if (!(v->comm > 0.0)) return;
    double real = nnc__now() - t0;
    if (v->comm > real) {
        double t1 = nnc__now();
        sleep_s(v->comm - real);
        v->slept = nnc__now() - t1;
    }
    R->res->comm_model_seconds += v->comm;
}

/* After the round: end the run (plan done, time budget; rank 0's clock and verdict for every
 * rank), or evaluate / save at an epoch boundary or the evaluation grid. */
static int decide(nnc_run *R, coord *st, verdict *v)
{
    int M = R->M, grads = has(R, NNC_ALGO_F_GRADIENTS);
    double secs = nnc__run_seconds(R);
    /* Data-parallel rounds are one step apart: end at the round nearer to the budget (this
     * one, or the next, about round_dt later). Other algorithms' workers stop at the
     * deadline themselves (worker.c), so the round after it closes the run. */
    double round_dt = R->round > 1 && secs > st->prev_secs ? secs - st->prev_secs : 0.0;
    st->prev_secs = secs;
    if (!grads) round_dt = 0.0;
    int ex = plan_done(R) || (R->c.time_budget > 0 && (secs + 0.5 * round_dt >= R->c.time_budget || R->deadline));
    if (R->tp->size > 1) {
        /* Rank 0's clock and verdict for everyone (time budget, time-based schedules). */
        double d[2] = {secs, ex};
        int s = R->tp->ops->broadcast(R->tp, d, sizeof d, 0);
        if (s) return s;
        secs = d[0];
        ex = d[1] != 0.0;
    }
    v->secs = secs;
    v->ex = ex;
    v->total_after = R->total_steps + (grads ? M : 0);
    v->epoch = R->spe ? v->total_after / (R->spe * M) : 0;
    int boundary = !ex && v->epoch > R->last_epoch;
    v->eval_due = boundary && R->c.eval_every_epochs && v->epoch % R->c.eval_every_epochs == 0;
    /* the training-time grid: the first round past k * eval_seconds */
    int grid_due = !ex && R->c.eval_seconds > 0 && secs >= R->next_eval_slot * R->c.eval_seconds;
    if (grid_due) R->next_eval_slot = (long)floor(secs / R->c.eval_seconds) + 1;
    v->eval_due |= grid_due;
    v->save_due = boundary && R->c.ckpt_dir;
    v->ack = v->eval_due || v->save_due;
    if (boundary) R->last_epoch = v->epoch;
    return NNC_OK;
}

/* The round's report (nnc_round_info) and the round-loss window; sync time since t0. */
static void round_info(nnc_run *R, coord *st, const verdict *v, progress now, double t0, nnc_round_info *ri)
{
    ri->round = R->round;
    ri->seconds = v->secs;
    ri->workers = R->M;
    ri->step = v->total_after;
    ri->comm_seconds = v->comm;
    for (int i = 0; i < R->M; i++) ri->local_steps[i] = R->W[i].wround;
    ri->loss = now.loss_n > st->loss_mark.loss_n
                   ? (now.loss - st->loss_mark.loss) / (double)(now.loss_n - st->loss_mark.loss_n)
                   : NAN;
    st->loss_mark = now;
    R->mark_loss = now.loss;
    R->mark_n = now.loss_n;
    R->pub_seconds = v->secs;
    double dt = nnc__now() - t0 - v->slept;
    ri->sync_seconds = dt;
    R->res->sync_seconds += dt;
}

/* Publish the round: the generation bump releases the workers to apply it. */
static void publish(nnc_run *R, const verdict *v)
{
    pthread_mutex_lock(&R->mu);
    R->round_steps = 0;
    R->round_resv = 0;
    R->round_req = 0;
    R->round_done = 1;
    R->exit_req = v->ex;
    R->need_ack = v->ack;
    R->gen++;
    pthread_cond_broadcast(&R->cv_work);
    pthread_mutex_unlock(&R->mu);
}

/* Phase 2: the workers park again after their pull; the evaluation and the epoch checkpoint
 * run on that consistent between-steps state, then the workers go on. */
static int after_pull(nnc_run *R, const verdict *v)
{
    int s = NNC_OK;
    pthread_mutex_lock(&R->mu);
    while (R->arrived2 < R->nloc && !R->failed) pthread_cond_wait(&R->cv_sync, &R->mu);
    R->arrived2 = 0;
    pthread_mutex_unlock(&R->mu);
    if (v->eval_due && (s = nnc__run_evaluate(R))) return s;
    if (v->save_due) {
        double t1 = nnc__now();
        s = nnc__run_save_epoch(R, v->epoch);
        R->t_excluded += nnc__now() - t1;
        if (s) return s;
    }
    pthread_mutex_lock(&R->mu);
    R->gen2++;
    pthread_cond_broadcast(&R->cv_work);
    pthread_mutex_unlock(&R->mu);
    return NNC_OK;
}

/* One round with every local worker parked (mu not held): the exchange, the stop request, the
 * round, the modelled link, the verdict, the report, the publication and phase 2. *ex: the run
 * ends here. */
static int run_round(nnc_run *R, coord *st, int *ex)
{
    double t0 = nnc__now();   /* synchronizer time: the exchange, the round, the decision */
    R->tp->round = R->round + 1;
    int s = exchange(R);
    if (s) return s;
    pthread_mutex_lock(&R->mu);
    progress now = snapshot(R);
    pthread_mutex_unlock(&R->mu);
    if (R->stop_req) return stop_round(R);
    nnc_round_info ri;
    memset(&ri, 0, sizeof ri);
    R->parked = 1;   /* the workers' threads take jobs (dist/parked.c) until the publication */
    s = do_round(R, &ri);
    R->parked = 0;
    if (s) return s;
    R->round++;
    verdict v;
    memset(&v, 0, sizeof v);
    model_link(R, t0, &v);
    if ((s = decide(R, st, &v))) return s;
    round_info(R, st, &v, now, t0, &ri);
    publish(R, &v);
    if (R->c.on_round) R->c.on_round(&ri, R->c.ud);
    if (v.ack && (s = after_pull(R, &v))) return s;
    *ex = v.ex;
    return NNC_OK;
}

/* The synchronizer loop; returns with the workers told to exit (or to be cancelled). */
static int coordinate(nnc_run *R, progress start)
{
    int M = R->M;
    coord st = {.report_every = R->c.log_every > 0 ? R->c.log_every : M * (R->spe / 10 > 0 ? R->spe / 10 : 1),
                .last = start,
                .loss_mark = start};
    st.loss_mark.loss = R->mark_loss;   /* a resumed run continues its round-loss window */
    st.loss_mark.loss_n = R->mark_n;
    st.t_last = st.prev_secs = nnc__run_seconds(R);
    for (;;) {
        pthread_mutex_lock(&R->mu);
        int s = wait_arrivals(R, &st);
        if (s) return s;
        if (R->failed) return worker_failure(R);
        /* Every worker is parked: the round's state is ours until the generation bump. */
        R->arrived = 0;
        memset(R->here, 0, sizeof R->here);
        pthread_mutex_unlock(&R->mu);
        int ex = 0;
        if ((s = run_round(R, &st, &ex))) return s;
        if (ex) {
            pthread_mutex_lock(&R->mu);
            progress fin = snapshot(R);
            pthread_mutex_unlock(&R->mu);
            report(R, fin, &st.last, &st.t_last);
            return NNC_OK;
        }
    }
}

int nnc__run_workers(nnc_run *R)
{
    int M = R->M, nl = R->nloc;
    pthread_t th[NNC_MAX_WORKERS];
    nnc__worker_arg args[NNC_MAX_WORKERS];
    pthread_mutex_init(&R->mu, NULL);
    pthread_cond_init(&R->cv_sync, NULL);
    pthread_cond_init(&R->cv_work, NULL);
    R->res->bytes_per_round = M * nnc__transport_round_bytes(R->ly.n, R->ly.L, R->per_layer);
    int started = 0, s = NNC_OK;
    progress start = snapshot(R);
    R->total_resv = 0;
    for (int i = R->lo; i < R->hi; i++) R->total_resv += R->rep[i]->steps;
    if (nl == M) R->total_resv = R->total_steps;
    R->round_resv = R->round_steps;
    size_t rs = xrec_bytes(R);
    if (R->tp->size > 1 && !(R->xbuf = nnc__calloc((size_t)M, rs)))
        s = nnc__fail(NNC_ENOMEM, "training: cannot allocate the round exchange (%d workers)", M);
    for (; !s && started < nl; started++) {
        args[started] = (nnc__worker_arg){.R = R, .id = R->lo + started};
        if (pthread_create(&th[started], NULL, nnc__worker_entry, &args[started]) != 0) {
            s = nnc__fail(NNC_ETHREAD, "cannot start worker thread %d of %d", R->lo + started, M);
            break;
        }
    }
    if (!s) s = coordinate(R, start);
    /* Keep the coordinator's message: joining does not touch this thread's error buffer. */
    if (s) {
        pthread_mutex_lock(&R->mu);
        R->cancel = 1;
        pthread_cond_broadcast(&R->cv_work);
        pthread_mutex_unlock(&R->mu);
    }
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    /* The last counters of the other ranks' workers (rank 0 reports them). */
    if (!s && R->tp->size > 1) {
        R->tp->round = R->round + 1;
        s = exchange(R);
    }
    pthread_cond_destroy(&R->cv_work);
    pthread_cond_destroy(&R->cv_sync);
    pthread_mutex_destroy(&R->mu);
    nnc__free(R->xbuf);
    R->xbuf = NULL;
    long steps = 0, correct = 0, seen = 0, ln = 0;
    double loss = 0.0;
    for (int i = 0; i < M; i++) {
        R->res->local_steps[i] = R->rep[i]->steps;
        steps += R->rep[i]->steps;
        correct += R->W[i].wcorrect;
        seen += R->W[i].wseen;
        loss += R->W[i].wloss;
        ln += R->W[i].wloss_n;
    }
    R->res->steps = steps;
    R->res->rounds = R->round;
    R->res->train_loss = ln ? loss / ln : NAN;
    R->res->train_acc = seen ? (double)correct / seen : NAN;
    return s;
}
