/* dist/record.c - the one codec of a run's state outside its tensors: the per-worker record
 * (nnc__worker + the replica's counters, RNG streams, loader cursor, LSGD history, EMA row) and
 * the run meta, written field by field in little-endian with fixed widths, never as a native
 * struct. The same encoding is the checkpoint sections "run/workers" and "run/meta"
 * (docs/checkpoints.md), the round exchange between MPI ranks and the whole-worker transfer.
 * Decoding from a file checks every value against its range before anything uses it: a bad
 * one is NNC_EFORMAT naming the file, the section, the worker, the field and expected vs found. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "dist/run.h"
#include "nn/checkpoint.h"

/* ---- little-endian fields ---- */

enum { T_I32, T_I64, T_U64, T_F64 };

typedef struct field {
    const char *name;
    int type, count;
    size_t off;   /* in the decoded struct */
} field;

static size_t type_bytes(int t) { return t == T_I32 ? 4 : 8; }

static void put_le(unsigned char *b, uint64_t v, size_t n)
{
    for (size_t k = 0; k < n; k++) b[k] = (unsigned char)(v >> (8 * k));
}

static uint64_t get_le(const unsigned char *b, size_t n)
{
    uint64_t v = 0;
    for (size_t k = 0; k < n; k++) v |= (uint64_t)b[k] << (8 * k);
    return v;
}

static size_t table_bytes(const field *f, int nf)
{
    size_t n = 0;
    for (int k = 0; k < nf; k++) n += type_bytes(f[k].type) * (size_t)f[k].count;
    return n;
}

static void encode(const field *f, int nf, const void *src, unsigned char *b)
{
    const unsigned char *s = src;
    for (int k = 0; k < nf; k++)
        for (int e = 0; e < f[k].count; e++) {
            size_t w = type_bytes(f[k].type);
            const unsigned char *p = s + f[k].off + (size_t)e * w;
            uint64_t v;
            if (f[k].type == T_I32) {
                int32_t x;
                memcpy(&x, p, 4);
                v = (uint32_t)x;
            } else {
                memcpy(&v, p, 8); /* int64, uint64 and double bits */
            }
            put_le(b, v, w);
            b += w;
        }
}

static void decode(const field *f, int nf, const unsigned char *b, void *dst)
{
    unsigned char *d = dst;
    for (int k = 0; k < nf; k++)
        for (int e = 0; e < f[k].count; e++) {
            size_t w = type_bytes(f[k].type);
            uint64_t v = get_le(b, w);
            unsigned char *p = d + f[k].off + (size_t)e * w;
            if (f[k].type == T_I32) {
                int32_t x = (int32_t)(uint32_t)v;
                memcpy(p, &x, 4);
            } else {
                memcpy(p, &v, 8);
            }
            b += w;
        }
}

static long table_offset(const field *f, int nf, const char *name)
{
    size_t o = 0;
    for (int k = 0; k < nf; k++) {
        if (!strcmp(f[k].name, name)) return (long)o;
        o += type_bytes(f[k].type) * (size_t)f[k].count;
    }
    return -1;
}

/* ---- checks ---- */

static int bad_field(const char *path, const char *sec, int worker, const char *fld, const char *want,
                     const char *found)
{
    char w[32] = "";
    if (worker >= 0) snprintf(w, sizeof w, " worker %d", worker);
    return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section '%s'%s field '%s': expected %s, found %s", path, sec,
                     w, fld, want, found);
}

static int check_i64(const char *path, const char *sec, int worker, const char *fld, int64_t v, int64_t lo,
                     int64_t hi)
{
    if (v >= lo && v <= hi) return NNC_OK;
    char want[96], found[32];
    snprintf(want, sizeof want, "%lld..%lld", (long long)lo, (long long)hi);
    snprintf(found, sizeof found, "%lld", (long long)v);
    return bad_field(path, sec, worker, fld, want, found);
}

static int check_f64(const char *path, const char *sec, int worker, const char *fld, double v, double lo,
                     double hi)
{
    if (isfinite(v) && v >= lo && v <= hi) return NNC_OK;
    char want[96], found[32];
    snprintf(want, sizeof want, "a finite value in [%g, %g]", lo, hi);
    snprintf(found, sizeof found, "%g", v);
    return bad_field(path, sec, worker, fld, want, found);
}

static int check_rng(const char *path, const char *sec, int worker, const char *fld, const uint64_t *r)
{
    if (r[0] | r[1] | r[2] | r[3]) return NNC_OK;
    return bad_field(path, sec, worker, fld, "a non-zero xoshiro256 state", "all zero");
}

/* Counters are far below this (2^40 steps, images or rounds); it keeps every sum and product of
 * them in range. */
#define COUNT_MAX ((int64_t)1 << 40)
#define SECONDS_MAX 1e12

/* ---- the per-worker record ---- */

typedef struct wrec {
    int64_t steps, sgd_steps, correct, seen, loader_epoch, loader_batch;
    int64_t wround, wsteps, wloss_n, wcorrect, wseen, ema_n;
    double wloss;
    uint64_t rng[4], probe_rng[4];
    double hist_loss[NNC_LSGD_HISTORY];
    int32_t hist_count, hist_next, bad, stop;
    int64_t bad_rounds;
    int64_t pend_epoch, pend_batch, pend_n, pend_correct, pend_seen;
    double pend_wloss;
    uint64_t pend_rng[4], probe_rng_round[4];
} wrec;

#define F(name, type, count, member) {name, type, count, offsetof(wrec, member)}
static const field WF[] = {
    F("steps", T_I64, 1, steps), F("sgd_steps", T_I64, 1, sgd_steps), F("correct", T_I64, 1, correct),
    F("seen", T_I64, 1, seen), F("loader_epoch", T_I64, 1, loader_epoch),
    F("loader_batch", T_I64, 1, loader_batch), F("wround", T_I64, 1, wround), F("wsteps", T_I64, 1, wsteps),
    F("wloss_n", T_I64, 1, wloss_n), F("wcorrect", T_I64, 1, wcorrect), F("wseen", T_I64, 1, wseen),
    F("ema_n", T_I64, 1, ema_n), F("wloss", T_F64, 1, wloss), F("rng", T_U64, 4, rng),
    F("probe_rng", T_U64, 4, probe_rng), F("hist.loss", T_F64, NNC_LSGD_HISTORY, hist_loss),
    F("hist.count", T_I32, 1, hist_count), F("hist.next", T_I32, 1, hist_next), F("bad", T_I32, 1, bad),
    F("stop", T_I32, 1, stop), F("bad_rounds", T_I64, 1, bad_rounds), F("pend_epoch", T_I64, 1, pend_epoch),
    F("pend_batch", T_I64, 1, pend_batch),
    F("pend_n", T_I64, 1, pend_n), F("pend_correct", T_I64, 1, pend_correct),
    F("pend_seen", T_I64, 1, pend_seen), F("pend_wloss", T_F64, 1, pend_wloss),
    F("pend_rng", T_U64, 4, pend_rng), F("probe_rng_round", T_U64, 4, probe_rng_round),
};
#undef F
#define NWF ((int)(sizeof WF / sizeof *WF))

static int ema_stride(int L) { return L > 0 ? L : 1; }

size_t nnc__worker_bytes(int layers) { return table_bytes(WF, NWF) + (size_t)ema_stride(layers) * 8; }

long nnc__worker_field_offset(const char *name)
{
    if (!strcmp(name, "ema")) return (long)table_bytes(WF, NWF);
    return table_offset(WF, NWF, name);
}

static void rng_out(uint64_t *d, const nnc_rng *r) { memcpy(d, r->s, sizeof r->s); }
static void rng_in(nnc_rng *r, const uint64_t *d) { memcpy(r->s, d, sizeof r->s); }

void nnc__worker_encode(const nnc_run *R, int i, int view, unsigned char *b)
{
    const nnc_replica *r = R->rep[i];
    const nnc__worker *W = &R->W[i];
    wrec w;
    memset(&w, 0, sizeof w);
    w.steps = r->steps, w.sgd_steps = r->opt->steps, w.correct = r->correct, w.seen = r->seen;
    w.loader_epoch = nnc_loader_epoch(r->loader), w.loader_batch = nnc_loader_batch_index(r->loader);
    w.wround = W->wround, w.wsteps = W->wsteps, w.wloss_n = W->wloss_n, w.wcorrect = W->wcorrect;
    w.wseen = W->wseen, w.ema_n = W->ema_n, w.wloss = W->wloss;
    rng_out(w.rng, &r->rng);
    memcpy(w.hist_loss, W->hist.loss, sizeof w.hist_loss);
    w.hist_count = W->hist.count, w.hist_next = W->hist.next;
    w.bad_rounds = W->bad_rounds;
    if (view == NNC__REC_SAVE) {
        /* Between steps: the probe stream as the round started; a data-parallel step whose
         * gradient waits for its round (a stop arrived in between) is undone, so the resumed run
         * recomputes it (the caller restores its BN buffers). */
        rng_out(w.probe_rng, &r->probe_rng_round);
        rng_out(w.probe_rng_round, &r->probe_rng_round);
        if ((R->A->flags & NNC_ALGO_F_GRADIENTS) && W->wround) {
            w.wround = 0;
            w.loader_epoch = r->pend_epoch, w.loader_batch = r->pend_batch;
            rng_out(w.rng, &r->pend_rng);
            w.correct -= r->pend_correct, w.seen -= r->pend_seen;
            w.wcorrect -= r->pend_correct, w.wseen -= r->pend_seen;
            w.wloss = r->pend_wloss, w.wloss_n -= r->pend_n;
        }
    } else {
        rng_out(w.probe_rng, &r->probe_rng);
        rng_out(w.probe_rng_round, &r->probe_rng_round);
        w.bad = W->bad;
        w.stop = R->stop_req ? (R->res->stopped_by_signal ? R->res->stopped_by_signal : -1) : 0;
        w.pend_epoch = r->pend_epoch, w.pend_batch = r->pend_batch, w.pend_n = r->pend_n;
        w.pend_correct = r->pend_correct, w.pend_seen = r->pend_seen, w.pend_wloss = r->pend_wloss;
        rng_out(w.pend_rng, &r->pend_rng);
    }
    encode(WF, NWF, &w, b);
    int Ls = ema_stride(R->ly.L);
    unsigned char *e = b + table_bytes(WF, NWF);
    for (int l = 0; l < Ls; l++) {
        uint64_t v;
        memcpy(&v, &R->ema[(size_t)i * Ls + l], 8);
        put_le(e + 8 * (size_t)l, v, 8);
    }
}

/* Smoothed norm l of an encoded record's EMA row. */
static double ema_at(const unsigned char *b, int l)
{
    uint64_t v = get_le(b + table_bytes(WF, NWF) + 8 * (size_t)l, 8);
    double x;
    memcpy(&x, &v, 8);
    return x;
}

/* Every field of a record read from a file, against its range. */
static int check_wrec(const nnc_run *R, const char *path, int i, const wrec *w, const unsigned char *b, int Ls)
{
    const char *S = "run/workers";
    int s;
    int64_t spe = R->spe, tau_max = (int64_t)(R->c.tau > 0 ? R->c.tau : 1) * R->M;
    if ((s = check_i64(path, S, i, "steps", w->steps, 0, COUNT_MAX)) ||
        (s = check_i64(path, S, i, "sgd_steps", w->sgd_steps, 0, COUNT_MAX)) ||
        (s = check_i64(path, S, i, "wround", w->wround, 0, tau_max)) ||
        (s = check_i64(path, S, i, "loader_epoch", w->loader_epoch, 0, COUNT_MAX / spe)) ||
        (s = check_i64(path, S, i, "loader_batch", w->loader_batch, 0, spe)) ||
        (s = check_i64(path, S, i, "ema_n", w->ema_n, 0, COUNT_MAX)) ||
        (s = check_i64(path, S, i, "seen", w->seen, 0, COUNT_MAX)) ||
        (s = check_i64(path, S, i, "correct", w->correct, 0, w->seen)) ||
        (s = check_i64(path, S, i, "wsteps", w->wsteps, 0, COUNT_MAX)) ||
        (s = check_i64(path, S, i, "wloss_n", w->wloss_n, 0, COUNT_MAX)) ||
        (s = check_i64(path, S, i, "wseen", w->wseen, 0, COUNT_MAX)) ||
        (s = check_i64(path, S, i, "wcorrect", w->wcorrect, 0, w->wseen)) ||
        (s = check_f64(path, S, i, "wloss", w->wloss, -1e300, 1e300)) ||
        (s = check_rng(path, S, i, "rng", w->rng)) || (s = check_rng(path, S, i, "probe_rng", w->probe_rng)) ||
        (s = check_rng(path, S, i, "probe_rng_round", w->probe_rng_round)) ||
        (s = check_i64(path, S, i, "hist.count", w->hist_count, 0, NNC_LSGD_HISTORY)) ||
        (s = check_i64(path, S, i, "hist.next", w->hist_next, 0, NNC_LSGD_HISTORY - 1)) ||
        (s = check_i64(path, S, i, "bad", w->bad, 0, 0)) || (s = check_i64(path, S, i, "stop", w->stop, 0, 0)) ||
        (s = check_i64(path, S, i, "bad_rounds", w->bad_rounds, 0, NNC__MAX_BAD_ROUNDS - 1)) ||
        (s = check_i64(path, S, i, "pend_epoch", w->pend_epoch, 0, 0)) ||
        (s = check_i64(path, S, i, "pend_batch", w->pend_batch, 0, 0)) ||
        (s = check_i64(path, S, i, "pend_n", w->pend_n, 0, 0)) ||
        (s = check_i64(path, S, i, "pend_correct", w->pend_correct, 0, 0)) ||
        (s = check_i64(path, S, i, "pend_seen", w->pend_seen, 0, 0)) ||
        (s = check_f64(path, S, i, "pend_wloss", w->pend_wloss, 0.0, 0.0)))
        return s;
    if (w->hist_count < NNC_LSGD_HISTORY && w->hist_next != w->hist_count) {
        char want[64], found[32];
        snprintf(want, sizeof want, "%d (= hist.count while the history is not full)", w->hist_count);
        snprintf(found, sizeof found, "%d", w->hist_next);
        return bad_field(path, S, i, "hist.next", want, found);
    }
    for (int k = 0; k < NNC_LSGD_HISTORY; k++)
        if (!isfinite(w->hist_loss[k])) {
            char f[32], v[32];
            snprintf(f, sizeof f, "hist.loss[%d]", k);
            snprintf(v, sizeof v, "%g", w->hist_loss[k]);
            return bad_field(path, S, i, f, "a finite loss", v);
        }
    for (int l = 0; l < Ls; l++)
        if (!(isfinite(ema_at(b, l)) && ema_at(b, l) >= 0.0)) {
            char f[48], v[32];
            snprintf(f, sizeof f, "ema[%d]", l);
            snprintf(v, sizeof v, "%g", ema_at(b, l));
            return bad_field(path, S, i, f, "a finite smoothed norm >= 0", v);
        }
    return NNC_OK;
}

int nnc__worker_decode(nnc_run *R, int i, const unsigned char *b, int what, const char *path, int *stop)
{
    wrec w;
    decode(WF, NWF, b, &w);
    int Ls = ema_stride(R->ly.L);
    if (stop) *stop = w.stop;
    if (path) {
        int s = check_wrec(R, path, i, &w, b, Ls);
        if (s) return s;
    }
    if (what == NNC__REC_NONE) return NNC_OK;
    nnc_replica *r = R->rep[i];
    nnc__worker *W = &R->W[i];
    r->steps = w.steps;
    W->wround = w.wround, W->wsteps = w.wsteps, W->wloss_n = w.wloss_n, W->wcorrect = w.wcorrect;
    W->wseen = w.wseen, W->wloss = w.wloss, W->bad = w.bad;
    memcpy(W->hist.loss, w.hist_loss, sizeof w.hist_loss);
    W->hist.count = w.hist_count, W->hist.next = w.hist_next;
    if (what == NNC__REC_ROUND) return NNC_OK;
    int s = nnc_loader_seek(r->loader, w.loader_epoch, w.loader_batch);
    if (s) return s;
    r->opt->steps = w.sgd_steps, r->correct = w.correct, r->seen = w.seen;
    rng_in(&r->rng, w.rng);
    rng_in(&r->probe_rng, w.probe_rng);
    rng_in(&r->probe_rng_round, w.probe_rng_round);
    W->ema_n = w.ema_n;
    W->bad_rounds = w.bad_rounds;
    for (int l = 0; l < Ls; l++) R->ema[(size_t)i * Ls + l] = ema_at(b, l);
    r->pend_epoch = w.pend_epoch, r->pend_batch = w.pend_batch, r->pend_n = w.pend_n;
    r->pend_correct = w.pend_correct, r->pend_seen = w.pend_seen, r->pend_wloss = w.pend_wloss;
    rng_in(&r->pend_rng, w.pend_rng);
    return NNC_OK;
}

/* ---- the run meta ---- */

#define M(name, type, member) {name, type, 1, offsetof(nnc__meta, member)}
static const field MF[] = {
    M("version", T_I32, version), M("workers", T_I32, workers), M("algo", T_I32, algo), M("sync", T_I32, sync),
    M("layers", T_I32, layers), M("slow", T_I32, slow), M("round", T_I64, round),
    M("total_steps", T_I64, total_steps), M("round_steps", T_I64, round_steps),
    M("last_epoch", T_I64, last_epoch), M("steps_per_epoch", T_I64, steps_per_epoch),
    M("mark_n", T_I64, mark_n), M("seconds", T_F64, seconds), M("best_acc", T_F64, best_acc),
    M("pub_seconds", T_F64, pub_seconds), M("mark_loss", T_F64, mark_loss),
    /* version 3; a version 2 meta ends before these */
    M("comm_seconds", T_F64, comm_seconds), M("budget_done", T_F64, budget_done),
};
#undef M
#define NMF ((int)(sizeof MF / sizeof *MF))

size_t nnc__meta_bytes(void) { return table_bytes(MF, NMF); }
long nnc__meta_field_offset(const char *name) { return table_offset(MF, NMF, name); }
void nnc__meta_encode(const nnc__meta *m, unsigned char *b) { encode(MF, NMF, m, b); }

int nnc__meta_decode(const unsigned char *b, size_t n, const char *path, nnc__meta *m)
{
    memset(m, 0, sizeof *m);
    /* The version first: it decides the layout of everything else. */
    int32_t version = n >= 4 ? (int32_t)(uint32_t)get_le(b, 4) : -1;
    /* Version 2 is version 3 without its last two fields (comm_seconds, budget_done: then 0). */
    int nf = version == 2 ? NMF - 2 : NMF;
    if (version != NNC__RUN_META_VERSION && version != 2)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section 'run/meta' field 'version': expected %d, found %d (%s)",
                         path, NNC__RUN_META_VERSION, version,
                         version == 1 ? "written by an nnc before the little-endian run record; finish that run with "
                                        "the nnc that wrote it, or start over" : "not a run state this nnc reads");
    if (n != table_bytes(MF, nf))
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section 'run/meta' (version %d) has %zu bytes, expected %zu",
                         path, (int)version, n, table_bytes(MF, nf));
    decode(MF, nf, b, m);
    return NNC_OK;
}

void nnc__meta_get(const nnc_run *R, nnc__meta *m)
{
    memset(m, 0, sizeof *m);
    *m = (nnc__meta){.version = NNC__RUN_META_VERSION, .workers = R->M, .algo = (int32_t)R->c.algo,
                     .sync = (int32_t)R->c.sync, .layers = R->ly.L, .slow = R->slow, .round = R->round,
                     .total_steps = R->total_steps, .round_steps = R->round_steps, .last_epoch = R->last_epoch,
                     .steps_per_epoch = R->spe, .mark_n = R->mark_n, .seconds = nnc__run_seconds(R),
                     .best_acc = R->best_acc, .pub_seconds = R->pub_seconds, .mark_loss = R->mark_loss,
                     .comm_seconds = R->res ? R->res->comm_model_seconds : 0.0,
                     .budget_done = R->budget_done};
}

int nnc__meta_check(const nnc_run *R, const char *path, const nnc__meta *m)
{
    const char *S = "run/meta";
    int s;
    int64_t M = R->M;
    if ((s = check_i64(path, S, -1, "round", m->round, 0, COUNT_MAX)) ||
        (s = check_i64(path, S, -1, "total_steps", m->total_steps, 0, COUNT_MAX)) ||
        (s = check_i64(path, S, -1, "round_steps", m->round_steps, 0, m->total_steps)) ||
        (s = check_i64(path, S, -1, "last_epoch", m->last_epoch, 0,
                       (m->total_steps + M) / ((int64_t)R->spe * M))) ||
        (s = check_i64(path, S, -1, "mark_n", m->mark_n, 0, m->total_steps)) ||
        (s = check_f64(path, S, -1, "seconds", m->seconds, 0.0, SECONDS_MAX)) ||
        (s = check_f64(path, S, -1, "pub_seconds", m->pub_seconds, 0.0, SECONDS_MAX)) ||
        (s = check_f64(path, S, -1, "mark_loss", m->mark_loss, -1e300, 1e300)) ||
        (s = check_f64(path, S, -1, "comm_seconds", m->comm_seconds, 0.0, SECONDS_MAX)) ||
        (s = check_f64(path, S, -1, "budget_done", m->budget_done, 0.0, SECONDS_MAX)))
        return s;
    if (m->best_acc != -1.0 && (s = check_f64(path, S, -1, "best_acc", m->best_acc, 0.0, 1.0))) return s;
    return NNC_OK;
}

void nnc__meta_apply(nnc_run *R, const nnc__meta *m)
{
    R->round = m->round;
    R->total_steps = m->total_steps;
    R->round_steps = m->round_steps;
    R->last_epoch = m->last_epoch;
    R->t_resumed = m->seconds;
    R->best_acc = m->best_acc;
    R->pub_seconds = m->pub_seconds;
    R->mark_loss = m->mark_loss;
    R->mark_n = m->mark_n;
    if (R->res) R->res->comm_model_seconds = m->comm_seconds;
    R->budget_done = m->budget_done;
}

/* ---- the public progress query ---- */

int nnc_train_ckpt_finished(const nnc_ckpt_progress *p, long epochs, double time_budget)
{
    const nnc_algo_def *A = nnc_algo_get(p->algo);
    if (!A) return 0;
    /* A budget run ends up to half a step (or round) before its budget, nearer to it than one
     * more would be: it is finished for that budget and any smaller one. */
    if (time_budget > 0 && (p->seconds >= time_budget || (p->budget_done > 0 && time_budget <= p->budget_done)))
        return 1;
    if (epochs <= 0) return 0;
    long target = epochs * p->steps_per_epoch;
    /* The rule training stops by (sync.c plan_done calls this): asynchronous averaging counts the
     * steps of all workers together; otherwise every worker trains its own epochs. */
    if (!(A->flags & NNC_ALGO_F_SINGLE) && p->workers > 1 && p->sync == NNC_SYNC_ASYNC &&
        !(A->flags & NNC_ALGO_F_GRADIENTS))
        return p->steps >= target * p->workers;
    return p->min_steps >= target;
}

int nnc_train_ckpt_progress(const char *path, nnc_ckpt_progress *out)
{
    NNC_ASSERT(path && out, "nnc_train_ckpt_progress: NULL path or result");
    memset(out, 0, sizeof *out);
    nnc_ckpt *c = NULL;
    int s = nnc_ckpt_load(path, &c);
    if (s) return s;
    const void *d = NULL, *wb = NULL;
    size_t nb = 0, nw = 0;
    nnc__meta m;
    if (nnc_ckpt_get_bytes(c, "run/meta", &d, &nb)) {
        s = nnc__fail(NNC_EFORMAT, "checkpoint '%s': not a training checkpoint (no section 'run/meta')", path);
    } else if (!(s = nnc__meta_decode(d, nb, path, &m))) {
        const nnc_algo_def *A = nnc_algo_get((nnc_algo)m.algo);
        size_t rb = nnc__worker_bytes(m.layers);
        if (m.workers < 1 || m.workers > NNC_MAX_WORKERS || !A || m.layers < 0 || m.layers > (1 << 20) ||
            m.steps_per_epoch < 1 || m.steps_per_epoch > COUNT_MAX || !isfinite(m.seconds) || m.seconds < 0)
            s = nnc__fail(NNC_EFORMAT, "checkpoint '%s': section 'run/meta': workers %d, algorithm %d, layers %d, "
                          "steps per epoch %lld, seconds %g out of range", path, m.workers, m.algo, m.layers,
                          (long long)m.steps_per_epoch, m.seconds);
        else if (nnc_ckpt_get_bytes(c, "run/workers", &wb, &nw) || nw != (size_t)m.workers * rb)
            s = nnc__fail(NNC_EFORMAT, "checkpoint '%s': section 'run/workers' has %zu bytes, expected %zu (%d "
                          "workers)", path, nw, (size_t)m.workers * rb, m.workers);
        else {
            long off = nnc__worker_field_offset("steps");
            for (int i = 0; i < m.workers; i++) {
                int64_t st = (int64_t)get_le((const unsigned char *)wb + (size_t)i * rb + off, 8);
                if (st < 0 || st > COUNT_MAX) {
                    char f[32];
                    snprintf(f, sizeof f, "%lld", (long long)st);
                    s = bad_field(path, "run/workers", i, "steps", "0..2^40", f);
                    break;
                }
                if (i == 0 || st < out->min_steps) out->min_steps = (long)st;
                if (i == 0) out->epoch = (double)st / (double)m.steps_per_epoch;
                if (i == 0 && (A->flags & NNC_ALGO_F_SINGLE)) out->steps = (long)st;
            }
            if (!(A->flags & NNC_ALGO_F_SINGLE)) out->steps = (long)m.total_steps;
            out->workers = m.workers;
            out->algo = A->id;
            out->steps_per_epoch = (long)m.steps_per_epoch;
            out->seconds = m.seconds;
            out->rounds = (long)m.round;
            out->sync = (nnc_sync_mode)m.sync;
            out->budget_done = m.budget_done;
        }
    }
    nnc_ckpt_free(c);
    if (s) memset(out, 0, sizeof *out);
    return s;
}
