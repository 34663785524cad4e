/* dist/evaluate.c - evaluation during and after training: the one replica, or (M > 1) the
 * center and the uniform average of the workers, each after BN re-estimation; which of them is
 * the reported model (test_acc, best.ckpt) is the algorithm's NNC_ALGO_F_REPORT_AVERAGE flag
 * (dist/algo.h); data-parallel runs evaluate replica 0 as the center. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/run.h"
#include "nn/fault.h"

#define EVAL_STREAM 0x6576616cULL /* "eval" */

/* The stop flag evaluation and BN re-estimation poll: the caller's, except across MPI ranks,
 * where a stop must become a collective decision at a round (a rank leaving an evaluation alone
 * would leave the others waiting in the next collective). */
static volatile sig_atomic_t *eval_stop(const nnc_run *R)
{
    return R->tp && R->tp->size > 1 ? NULL : R->user->stop;
}

/* Evaluate scratch (params already set) after BN re-estimation. */
static int eval_scratch(nnc_run *R, double *loss, double *acc)
{
    nnc_rng rng;
    nnc_rng_seed(&rng, R->c.seed, EVAL_STREAM + (uint64_t)R->round);
    int s = nnc__bn_reestimate_stop(R->scratch, R->eval_g, R->train, R->c.bn_reestimate_batches, R->c.batch,
                                    &rng, eval_stop(R));
    if (s) return s;
    return nnc__evaluate_stop(R->scratch, R->test, R->c.batch, loss, acc, NULL, eval_stop(R));
}

static void emit_eval(nnc_run *R, double seconds, const char *which, double loss, double acc, int best)
{
    if (!R->c.on_eval) return;
    nnc_eval_info e = {.epoch = R->spe ? (double)R->rep[0]->steps / R->spe : 0.0,
                       .seconds = seconds,
                       .step = R->M == 1 ? R->rep[0]->steps : R->total_steps,
                       .which = which,
                       .loss = loss,
                       .acc = acc,
                       .is_best = best};
    R->c.on_eval(&e, R->c.ud);
}

/* Uniform average of the workers' parameters and buffers into scratch (workers parked). */
static int load_average(nnc_run *R)
{
    nnc_params *p = nnc_model_params(R->scratch);
    const float *x[NNC_MAX_WORKERS];
    double u[NNC_MAX_WORKERS];
    for (int i = 0; i < R->M; i++) {
        x[i] = R->rep[i]->p->data;
        u[i] = 1.0;
    }
    int s = nnc__transport_center(R->tp, &R->ly, x + R->lo, u + R->lo, R->nloc, 0, R->acc, R->usum, p->data);
    if (s) return s;
    return nnc__run_buf_average(R, NULL, p->buf);
}

/* Test hook eval_acc:A1/A2/...: the k-th evaluation of this run reports Ak (one replica). */
static double forced_acc(nnc_run *R, double acc)
{
#ifdef NNC_TESTING
    char arg[256];
    if (nnc__fault_arg("eval_acc", arg, sizeof arg)) {
        const char *p = arg;
        for (int i = 0; i < R->n_evals && p; i++) {
            p = strchr(p, '/');
            if (p) p++;
        }
        if (p && *p) acc = atof(p);
    }
#endif
    R->n_evals++;
    return acc;
}

/* An evaluation that failed with s. A stop (NNC_EINTERRUPTED from the stop flag polled inside
 * the evaluation) ends the run like a stop between steps: last.ckpt gets the state the
 * evaluation started from (workers parked, nothing trained since), and the status says so. */
static int eval_failed(nnc_run *R, int s)
{
    if (s != NNC_EINTERRUPTED) return s;
    R->res->stopped_by_signal = R->user->stop && *R->user->stop ? (int)*R->user->stop : -1;
    long step = R->M == 1 ? R->rep[0]->steps : R->total_steps;
    int w = R->c.ckpt_dir ? nnc__run_save(R, "last.ckpt") : NNC_OK;
    if (w) return w;
    return nnc__fail(NNC_EINTERRUPTED, "stopped by signal %d during the evaluation after step %ld%s",
                     R->res->stopped_by_signal, step, R->c.ckpt_dir ? " (checkpoint written)" : "");
}

int nnc__run_evaluate(nnc_run *R)
{
    if (!R->test) return NNC_OK;
    double t0 = nnc__now();
    /* The training time of the evaluated state: the evaluation itself (BN re-estimation
     * included) is excluded from the clock, and after training the clock is stopped. */
    double at = R->ended ? R->end_seconds : nnc__run_seconds(R);
#ifdef NNC_TESTING
    char slow[32];
    if (nnc__fault_arg("eval_sleep", slow, sizeof slow) && atoi(slow) > 0) {
        /* a slow evaluation: its time must not count as training time */
        struct timespec ts = {.tv_sec = atoi(slow) / 1000, .tv_nsec = (long)(atoi(slow) % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
#endif
    double loss = NAN, acc = NAN;
    int s = NNC_OK, best = 0;
    nnc_train_result *res = R->res;
    if (R->A->flags & NNC_ALGO_F_SINGLE) {
        if ((s = nnc__evaluate_stop(R->rep[0]->model, R->test, R->c.batch, &loss, &acc, NULL, eval_stop(R))))
            return eval_failed(R, s);
        acc = forced_acc(R, acc);
        best = acc > R->best_acc;
        res->test_acc = acc;
        res->test_loss = loss;
        emit_eval(R, at, "model", loss, acc, best);
    } else {
        nnc_params *p = nnc_model_params(R->scratch);
        if (R->A->flags & NNC_ALGO_F_GRADIENTS) {
            /* Every replica holds the same parameters; BN buffers are replica 0's (rank 0). */
            memcpy(R->center, R->rep[R->lo]->p->data, p->n_data * sizeof(float));
            memcpy(R->center_buf, R->rep[0]->p->buf, p->n_buf * sizeof(float));
            if (R->tp->size > 1 && p->n_buf &&
                (s = R->tp->ops->broadcast(R->tp, R->center_buf, p->n_buf * sizeof(float), 0)))
                return s;
        }
        memcpy(p->data, R->center, p->n_data * sizeof(float));
        memcpy(p->buf, R->center_buf, p->n_buf * sizeof(float));
        double closs, cacc, aloss, aacc;
        int use_avg = (R->A->flags & NNC_ALGO_F_REPORT_AVERAGE) != 0;
        if ((s = eval_scratch(R, &closs, &cacc))) return eval_failed(R, s);
        if (!use_avg) {
            memcpy(R->model_data, p->data, p->n_data * sizeof(float));
            memcpy(R->model_buf, p->buf, p->n_buf * sizeof(float));
        }
        if ((s = load_average(R))) return s;
        if ((s = eval_scratch(R, &aloss, &aacc))) return eval_failed(R, s);
        if (use_avg) {
            memcpy(R->model_data, p->data, p->n_data * sizeof(float));
            memcpy(R->model_buf, p->buf, p->n_buf * sizeof(float));
        }
        R->model_valid = 1;
        R->model_round = R->round;
        R->model_steps = R->total_steps;
        if (R->tp->size > 1) {
            /* Every rank evaluated (in parallel); rank 0's numbers decide for all (best.ckpt is
             * collective), even where another machine's kernels round differently. */
            double v[4] = {closs, cacc, aloss, aacc};
            if ((s = R->tp->ops->broadcast(R->tp, v, sizeof v, 0))) return s;
            closs = v[0], cacc = v[1], aloss = v[2], aacc = v[3];
        }
        loss = use_avg ? aloss : closs;
        acc = use_avg ? aacc : cacc;
        best = acc > R->best_acc;
        res->center_test_acc = cacc;
        res->average_test_acc = aacc;
        res->test_acc = acc;
        res->test_loss = loss;
        emit_eval(R, at, "center", closs, cacc, best && !use_avg);
        emit_eval(R, at, "average", aloss, aacc, best && use_avg);
    }
    if (best) R->best_acc = acc;
    R->t_excluded += nnc__now() - t0;
    if (best && R->c.ckpt_dir) {
        double t1 = nnc__now();
        s = nnc__run_save(R, "best.ckpt");
        R->t_excluded += nnc__now() - t1;
    }
    return s;
}
