/* dist/single.c - the plain single-replica loop of `--workers 1 --algo sgd` on the calling
 * thread: steps, the non-finite policy, progress reports, epoch-end evaluation and checkpoints. */
#include <math.h>
#include <string.h>

#include "dist/run.h"

static void emit_step(nnc_run *R, double loss_sum, long n, long correct, long seen, double *img_t0,
                      long *img_seen0, float lr)
{
    if (!R->c.on_step || n == 0) return;
    double now = nnc__run_seconds(R);
    nnc_step_info si = {.step = R->rep[0]->steps,
                        .total_steps = R->plan,
                        .epoch = R->spe ? (double)R->rep[0]->steps / R->spe : 0.0,
                        .seconds = now,
                        .loss = loss_sum / n,
                        .acc = seen ? (double)correct / seen : 0.0,
                        .lr = lr,
                        .images_per_sec = now > *img_t0 ? (double)(seen) / (now - *img_t0) : 0.0};
    *img_t0 = now;
    *img_seen0 = 0;
    R->c.on_step(&si, R->c.ud);
}

int nnc__run_single(nnc_run *R)
{
    nnc_replica *r = R->rep[0];
    nnc_train_result *res = R->res;
    int log_every = R->c.log_every > 0 ? R->c.log_every : (int)(R->spe / 10 > 0 ? R->spe / 10 : 1);
    double wloss = 0.0, eloss = 0.0, t_img = nnc__run_seconds(R);
    long wn = 0, wc = 0, ws = 0, en = 0, ec = 0, es = 0, img0 = 0;
    float lr = R->c.lr;
    double est = 0.0;
    int skip = R->c.nan_policy == NNC_NAN_SKIP;
    for (;;) {
        if (R->user->stop && *R->user->stop) {
            res->stopped_by_signal = (int)*R->user->stop;
            res->steps = res->local_steps[0] = r->steps; /* so epochs/summary describe the stopped run */
            int s = R->c.ckpt_dir ? nnc__run_save(R, "last.ckpt") : NNC_OK;
            if (s) return s;
            return nnc__fail(NNC_EINTERRUPTED, "stopped by signal %d after step %ld%s", res->stopped_by_signal,
                             r->steps, R->c.ckpt_dir ? " (checkpoint written)" : "");
        }
        if (R->plan && r->steps >= R->plan) break;
        /* the time budget: stop when ending now is nearer to it than ending after one more step
         * (est: smoothed seconds per step) */
        if (R->c.time_budget > 0 && nnc__run_seconds(R) + 0.5 * est >= R->c.time_budget) break;
        double t_step = nnc__now();
        lr = nnc__run_lr(R, r->steps, nnc__run_seconds(R));
        double loss = NAN;
        long c0 = r->correct, s0 = r->seen;
        if (skip) memcpy(r->buf_save, r->p->buf, r->p->n_buf * sizeof(float));
        int s = nnc__replica_step(r, lr, &loss);
        if (s == NNC_EDIVERGED && !skip)
            return nnc__fail(NNC_EDIVERGED, "%s at step %ld (epoch %.2f); stopped (--nan-policy stop), "
                             "parameters and the last checkpoint are from before this step",
                             isfinite(loss) ? "non-finite gradient" : "non-finite loss", r->steps + 1,
                             (double)r->steps / R->spe);
        if (s == NNC_EDIVERGED) {
            /* Skip: parameters and momentum were not touched; undo the forward's BN updates and
             * its counts, consume the step. */
            memcpy(r->p->buf, r->buf_save, r->p->n_buf * sizeof(float));
            r->correct = c0, r->seen = s0;
            r->steps++;
            res->skipped_steps++;
            nnc__run_log(R, "step %ld: non-finite %s (loss %g), step skipped (%ld skipped so far)", r->steps,
                         isfinite(loss) ? "gradient" : "loss", loss, res->skipped_steps);
        } else if (s) {
            return s;
        } else {
            long dc = r->correct - c0, dsn = r->seen - s0;
            wloss += loss, wn++, wc += dc, ws += dsn;
            eloss += loss, en++, ec += dc, es += dsn;
            img0 += dsn;
        }
        double dt = nnc__now() - t_step;
        est = est > 0 ? 0.7 * est + 0.3 * dt : dt;
        if (r->steps % log_every == 0) {
            emit_step(R, wloss, wn, wc, ws, &t_img, &img0, lr);
            wloss = 0.0, wn = wc = ws = 0;
        }
        if (R->c.eval_seconds > 0 && !(R->plan && r->steps >= R->plan)) {
            /* the training-time grid: the first step boundary past k * eval_seconds */
            double t = nnc__run_seconds(R);
            /* not when the run ends here (the final evaluation) or the epoch end evaluates */
            int epoch_eval = r->steps % R->spe == 0 && R->c.eval_every_epochs &&
                             (r->steps / R->spe) % R->c.eval_every_epochs == 0;
            if (t >= R->next_eval_slot * R->c.eval_seconds) {
                R->next_eval_slot = (long)floor(t / R->c.eval_seconds) + 1;
                if (!epoch_eval && !(R->c.time_budget > 0 && t + 0.5 * est >= R->c.time_budget) &&
                    (s = nnc__run_evaluate(R)))
                    return s;
            }
        }
        if (r->steps % R->spe == 0) {
            res->train_loss = en ? eloss / en : NAN;
            res->train_acc = es ? (double)ec / es : 0.0;
            eloss = 0.0, en = ec = es = 0;
            long epoch = r->steps / R->spe;
            int last = R->plan && r->steps >= R->plan;
            if (!last && R->c.eval_every_epochs && epoch % R->c.eval_every_epochs == 0 &&
                (s = nnc__run_evaluate(R)))
                return s;
            if (R->c.ckpt_dir) {
                double t1 = nnc__now();
                s = nnc__run_save_epoch(R, epoch);
                R->t_excluded += nnc__now() - t1;
                if (s) return s;
            }
        }
    }
    if (wn) emit_step(R, wloss, wn, wc, ws, &t_img, &img0, lr);
    if (en) {
        res->train_loss = eloss / en;
        res->train_acc = es ? (double)ec / es : 0.0;
    }
    res->local_steps[0] = r->steps;
    res->steps = r->steps;
    return NNC_OK;
}
