/* dist/runckpt.c - save and restore a whole training run (nn/checkpoint.h format).
 *
 * Sections: "param/..", "buf/.." the reported model (the replica for one worker; else the model
 * the last evaluation reported - center or worker average with its re-estimated BN statistics -
 * when the checkpoint is taken at that evaluated state, otherwise the center with averaged BN
 * buffers: `nnc eval` loads these); "opt/.." its momentum (one worker);
 * "w<i>/param/..", "w<i>/buf/..", "w<i>/mom/.." every replica and its momentum (M > 1);
 * "run/meta" and "run/workers" counters, RNG states, loader positions, LSGD histories;
 * "run/center", "run/pub", "run/center_buf", "run/ema" the synchronizer state; "metric" the
 * best accuracy as text; "meta/json" the caller's ckpt_meta_json. Written only from a
 * between-steps state (all workers parked), and never when any value is non-finite.
 * Rotation (keep_epochs): epoch-<EEEE>.ckpt is a hard link to the just-renamed last.ckpt made
 * under a temp name and renamed into place; pruning runs only after that, so a crash at any
 * point leaves every complete file it had plus, at worst, a stale temp file.
 * Ranks (MPI build): saving is collective; every worker's whole state travels to rank 0, which
 * alone writes the one file (atomically: temporary + rename, so a rank killed mid-save leaves
 * the previous complete checkpoint) and rotates; the other ranks write
 * nothing. Resuming: rank 0 reads the file and broadcasts the run and every worker, so the
 * other ranks need no copy of the folder. Every value read back is range-checked (counters,
 * indices, loader positions, RNG states, EMAs) and every tensor checked finite before use: a bad
 * one is NNC_EFORMAT naming the file, the section, the field and expected vs found.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist/run.h"
#include "nn/checkpoint.h"

static int ckpt_path(const nnc_run *R, const char *name, char *path, size_t n)
{
    if ((size_t)snprintf(path, n, "%s/%s", R->c.ckpt_dir, name) >= n)
        return nnc__fail(NNC_EINVAL, "checkpoint folder path too long: '%s'", R->c.ckpt_dir);
    return NNC_OK;
}

static int all_finite(const nnc_run *R)
{
    for (int i = 0; i < R->M; i++)
        if (!nnc_params_all_finite(R->rep[i]->p)) return 0;
    nnc_params *p = R->rep[0]->p;
    return nnc__grawa_finite(R->center, p->n_data) && nnc__grawa_finite(R->pub, p->n_data) &&
           nnc__grawa_finite(R->center_buf, p->n_buf) &&
           (!R->slow || (nnc__grawa_finite(R->slow_u, p->n_data) && nnc__grawa_finite(R->slow_x0, p->n_data)));
}

/* One worker's state as it travels between ranks: wire_meta, then data, buf, momentum and
 * pend_buf. */
typedef struct wire_meta {
    int64_t steps, sgd_steps, correct, seen, loader_epoch, loader_batch, pend_epoch, pend_batch, pend_n,
        pend_correct, pend_seen, wround, wsteps, wloss_n, wcorrect, wseen, ema_n;
    double pend_wloss, wloss;
    nnc_rng rng, probe_rng, probe_rng_round, pend_rng;
    nnc_lsgd_hist hist;
} wire_meta;

static size_t wire_bytes(const nnc_run *R)
{
    const nnc_params *p = R->rep[0]->p;
    return sizeof(wire_meta) + (2 * p->n_data + 2 * p->n_buf) * sizeof(float);
}

static void wire_pack(const nnc_run *R, int i, unsigned char *b)
{
    const nnc_replica *r = R->rep[i];
    const nnc_params *p = r->p;
    wire_meta w;
    memset(&w, 0, sizeof w);
    w = (wire_meta){.steps = r->steps, .sgd_steps = r->opt->steps, .correct = r->correct, .seen = r->seen,
                    .loader_epoch = nnc_loader_epoch(r->loader), .loader_batch = nnc_loader_batch_index(r->loader),
                    .pend_epoch = r->pend_epoch, .pend_batch = r->pend_batch, .pend_n = r->pend_n,
                    .pend_correct = r->pend_correct, .pend_seen = r->pend_seen, .wround = R->W[i].wround,
                    .wsteps = R->W[i].wsteps, .wloss_n = R->W[i].wloss_n, .wcorrect = R->W[i].wcorrect,
                    .wseen = R->W[i].wseen, .ema_n = R->W[i].ema_n, .pend_wloss = r->pend_wloss, .wloss = R->W[i].wloss,
                    .rng = r->rng, .probe_rng = r->probe_rng, .probe_rng_round = r->probe_rng_round,
                    .pend_rng = r->pend_rng, .hist = R->W[i].hist};
    memcpy(b, &w, sizeof w);
    float *f = (float *)(b + sizeof w);
    memcpy(f, p->data, p->n_data * sizeof(float));
    memcpy(f + p->n_data, p->buf, p->n_buf * sizeof(float));
    memcpy(f + p->n_data + p->n_buf, r->opt->momentum, p->n_data * sizeof(float));
    memcpy(f + 2 * p->n_data + p->n_buf, r->pend_buf, p->n_buf * sizeof(float));
}

static void wire_unpack(nnc_run *R, int i, const unsigned char *b)
{
    nnc_replica *r = R->rep[i];
    nnc_params *p = r->p;
    wire_meta w;
    memcpy(&w, b, sizeof w);
    r->steps = w.steps;
    r->opt->steps = w.sgd_steps;
    r->correct = w.correct;
    r->seen = w.seen;
    nnc_loader_seek(r->loader, w.loader_epoch, w.loader_batch);
    r->pend_epoch = w.pend_epoch;
    r->pend_batch = w.pend_batch;
    r->pend_n = w.pend_n;
    r->pend_correct = w.pend_correct;
    r->pend_seen = w.pend_seen;
    r->pend_wloss = w.pend_wloss;
    r->rng = w.rng;
    r->probe_rng = w.probe_rng;
    r->probe_rng_round = w.probe_rng_round;
    r->pend_rng = w.pend_rng;
    R->W[i].wround = w.wround;
    R->W[i].wsteps = w.wsteps;
    R->W[i].wloss_n = w.wloss_n;
    R->W[i].wcorrect = w.wcorrect;
    R->W[i].wseen = w.wseen;
    R->W[i].wloss = w.wloss;
    R->W[i].ema_n = w.ema_n;
    R->W[i].hist = w.hist;
    const float *f = (const float *)(b + sizeof w);
    memcpy(p->data, f, p->n_data * sizeof(float));
    memcpy(p->buf, f + p->n_data, p->n_buf * sizeof(float));
    memcpy(r->opt->momentum, f + p->n_data + p->n_buf, p->n_data * sizeof(float));
    memcpy(r->pend_buf, f + 2 * p->n_data + p->n_buf, p->n_buf * sizeof(float));
}

/* Send worker i from `root` to every rank (those other than root overwrite their copy). */
static int wire_bcast(nnc_run *R, int i, int root, unsigned char *b)
{
    size_t nb = wire_bytes(R);
    if (R->tp->rank == root) wire_pack(R, i, b);
    int s = R->tp->ops->broadcast(R->tp, b, nb, root);
    if (!s && R->tp->rank != root) wire_unpack(R, i, b);
    return s;
}

int nnc__run_gather_workers(nnc_run *R)
{
    if (R->tp->size == 1) return NNC_OK;
    unsigned char *b = nnc__alloc(wire_bytes(R));
    if (!b) return nnc__fail(NNC_ENOMEM, "checkpoint: cannot allocate the worker transfer (%zu bytes)", wire_bytes(R));
    int s = NNC_OK;
    for (int i = 0; !s && i < R->M; i++) {
        int owner = nnc__run_owner(R, i);
        long before = R->rep[i]->steps;
        if (owner != 0) s = wire_bcast(R, i, owner, b);
        if (!s && owner != R->tp->rank) R->total_steps += R->rep[i]->steps - before;
    }
    nnc__free(b);
    return s;
}

static int save_file(nnc_run *R, const char *name);

int nnc__run_save(nnc_run *R, const char *name)
{
    if (R->tp->size > 1) {
        int s = nnc__run_gather_workers(R);
        if (s || R->tp->rank != 0) return s;
    }
    return save_file(R, name);
}

static int save_file(nnc_run *R, const char *name)
{
    char path[4096], prefix[32], metric[64];
    int s = ckpt_path(R, name, path, sizeof path);
    if (s) return s;
    if (mkdir(R->c.ckpt_dir, 0777) != 0 && errno != EEXIST)
        return nnc__fail(NNC_EIO, "cannot create checkpoint folder '%s': %s", R->c.ckpt_dir, strerror(errno));
    if (!all_finite(R))
        return nnc__fail(NNC_EDIVERGED, "refusing to write checkpoint '%s': non-finite parameters", path);
    int M = R->M, single = (R->A->flags & NNC_ALGO_F_SINGLE) != 0;
    nnc_params *sp = nnc_model_params(R->scratch);
    nnc__run_meta meta = {.version = NNC__RUN_META_VERSION, .workers = M, .algo = (int32_t)R->c.algo,
                     .sync = (int32_t)R->c.sync, .layers = R->ly.L, .round = R->round,
                     .total_steps = R->total_steps, .round_steps = R->round_steps,
                     .last_epoch = R->last_epoch, .steps_per_epoch = R->spe,
                     .seconds = nnc__run_seconds(R), .best_acc = R->best_acc,
                     .pub_seconds = R->pub_seconds, .mark_loss = R->mark_loss, .mark_n = R->mark_n};
    nnc__worker_meta *wm = nnc__calloc((size_t)M, sizeof *wm);
    if (!wm) return nnc__fail(NNC_ENOMEM, "checkpoint: out of memory");
    for (int i = 0; i < M; i++) {
        nnc_replica *r = R->rep[i];
        wm[i] = (nnc__worker_meta){.steps = r->steps, .sgd_steps = r->opt->steps, .wround = R->W[i].wround,
                              .loader_epoch = nnc_loader_epoch(r->loader),
                              .loader_batch = nnc_loader_batch_index(r->loader), .ema_n = R->W[i].ema_n,
                              .correct = r->correct, .seen = r->seen, .wsteps = R->W[i].wsteps,
                              .wloss_n = R->W[i].wloss_n, .wcorrect = R->W[i].wcorrect, .wseen = R->W[i].wseen,
                              .wloss = R->W[i].wloss, .rng = r->rng, .probe_rng = r->probe_rng_round,
                              .hist = R->W[i].hist};
        if ((R->A->flags & NNC_ALGO_F_GRADIENTS) && R->W[i].wround) {
            /* A stop arrived between this worker's gradient and its round: save the state from
             * before that step, so the resumed run recomputes it. */
            wm[i].wround = 0;
            wm[i].loader_epoch = r->pend_epoch;
            wm[i].loader_batch = r->pend_batch;
            wm[i].rng = r->pend_rng;
            wm[i].correct -= r->pend_correct;
            wm[i].seen -= r->pend_seen;
            wm[i].wcorrect -= r->pend_correct;
            wm[i].wseen -= r->pend_seen;
            wm[i].wloss = r->pend_wloss;
            wm[i].wloss_n -= r->pend_n;
            /* Only a stop saves here, and the run ends after it: undo the BN updates too. */
            NNC_ASSERT(R->stop_req, "pending DP step outside a stop");
            memcpy(r->p->buf, r->pend_buf, r->p->n_buf * sizeof(float));
        }
    }
    snprintf(metric, sizeof metric, "test_acc=%.6f", R->best_acc);
    nnc_ckpt *c = NULL;
    s = nnc_ckpt_new(nnc_model_arch(R->scratch), &c);
    if (!s) s = nnc_ckpt_add_bytes(c, "run/meta", &meta, sizeof meta);
    if (!s) s = nnc_ckpt_add_bytes(c, "run/workers", wm, (size_t)M * sizeof *wm);
    if (!s) s = nnc_ckpt_add_bytes(c, "metric", metric, strlen(metric));
    if (!s && R->c.ckpt_meta_json)
        s = nnc_ckpt_add_bytes(c, "meta/json", R->c.ckpt_meta_json, strlen(R->c.ckpt_meta_json));
    if (single) {
        if (!s) s = nnc_ckpt_add_params(c, "", R->rep[0]->p);
        if (!s) s = nnc_ckpt_add_params_like(c, "opt/", R->rep[0]->p, R->rep[0]->opt->momentum);
    } else {
        /* The model sections: the model the last evaluation reported when it was taken at this
         * state (its accuracy is the one recorded), else the center with the averaged buffers. */
        int evaluated = R->model_valid && R->model_round == R->round && R->model_steps == R->total_steps;
        memcpy(sp->data, evaluated ? R->model_data : R->center, sp->n_data * sizeof(float));
        memcpy(sp->buf, evaluated ? R->model_buf : R->center_buf, sp->n_buf * sizeof(float));
        if (!s) s = nnc_ckpt_add_params(c, "", sp);
        int n = (int)sp->n_data, nb = (int)sp->n_buf;
        if (!s) s = nnc_ckpt_add_floats(c, "run/center", 1, &n, R->center);
        if (!s) s = nnc_ckpt_add_floats(c, "run/pub", 1, &n, R->pub);
        if (!s && nb) s = nnc_ckpt_add_floats(c, "run/center_buf", 1, &nb, R->center_buf);
        size_t ne = (size_t)M * (R->ly.L > 0 ? R->ly.L : 1);
        if (!s) s = nnc_ckpt_add_bytes(c, "run/ema", R->ema, ne * sizeof(double));
        if (!s && R->slow) s = nnc_ckpt_add_floats(c, "run/slow_u", 1, &n, R->slow_u);
        if (!s && R->slow) s = nnc_ckpt_add_floats(c, "run/slow_x0", 1, &n, R->slow_x0);
    }
    for (int i = 0; !single && !s && i < M; i++) {
        snprintf(prefix, sizeof prefix, "w%d/", i);
        s = nnc_ckpt_add_params(c, prefix, R->rep[i]->p);
        snprintf(prefix, sizeof prefix, "w%d/mom/", i);
        if (!s) s = nnc_ckpt_add_params_like(c, prefix, R->rep[i]->p, R->rep[i]->opt->momentum);
    }
    if (!s) s = nnc_ckpt_save(c, path);
    nnc_ckpt_free(c);
    nnc__free(wm);
    return s;
}

/* N in "epoch-N.ckpt" (digits only), or -1. */
static long epoch_of(const char *name)
{
    if (strncmp(name, "epoch-", 6) != 0 || name[6] < '0' || name[6] > '9') return -1;
    char *end;
    long e = strtol(name + 6, &end, 10);
    return strcmp(end, ".ckpt") == 0 ? e : -1;
}

/* Delete epoch-*.ckpt files beyond the `keep` newest (by epoch number; `newest`, the file just
 * written, always counts as kept), and temp files of epoch links left by dead processes. */
static int prune_epochs(nnc_run *R, long newest, int keep)
{
    DIR *d = opendir(R->c.ckpt_dir);
    if (!d) return nnc__fail(NNC_EIO, "checkpoint rotation: cannot list '%s': %s", R->c.ckpt_dir, strerror(errno));
    long *ep = NULL;
    size_t n = 0, cap = 0;
    int s = NNC_OK;
    for (struct dirent *e; (e = readdir(d));) {
        const char *tmp = strstr(e->d_name, ".ckpt.tmp.");
        if (tmp && strncmp(e->d_name, "epoch-", 6) == 0) {
            long pid = strtol(tmp + 10, NULL, 10);
            if (pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH) unlinkat(dirfd(d), e->d_name, 0);
            continue;
        }
        long v = epoch_of(e->d_name);
        if (v < 0 || v == newest) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            long *g = nnc__alloc(cap * sizeof *g);
            if (!g) {
                s = nnc__fail(NNC_ENOMEM, "checkpoint rotation: out of memory");
                break;
            }
            if (n) memcpy(g, ep, n * sizeof *g);
            nnc__free(ep);
            ep = g;
        }
        ep[n++] = v;
    }
    /* Second pass: keep the keep - 1 highest of the others, delete the rest. */
    rewinddir(d);
    for (struct dirent *e; !s && (e = readdir(d));) {
        long v = epoch_of(e->d_name);
        if (v < 0 || v == newest) continue;
        size_t higher = 0;
        for (size_t j = 0; j < n; j++) higher += ep[j] > v;
        if (higher + 1 < (size_t)keep) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) < 0 && errno != ENOENT)
            s = nnc__fail(NNC_EIO, "checkpoint rotation: cannot delete '%s/%s': %s", R->c.ckpt_dir, e->d_name,
                          strerror(errno));
    }
    closedir(d);
    nnc__free(ep);
    return s;
}

int nnc__run_save_epoch(nnc_run *R, long epoch)
{
    int s = nnc__run_save(R, "last.ckpt");
    /* Ranks: rank 0 holds every worker now and alone writes and rotates. */
    if (s || R->c.keep_epochs <= 0 || epoch <= 0 || R->tp->rank != 0) return s;
    char last[4096], name[64], path[4096], tmp[4200];
    snprintf(name, sizeof name, "epoch-%04ld.ckpt", epoch);
    if ((s = ckpt_path(R, "last.ckpt", last, sizeof last)) || (s = ckpt_path(R, name, path, sizeof path))) return s;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    unlink(tmp);
    if (link(last, tmp) == 0) {
        if (rename(tmp, path) < 0) {
            s = nnc__fail(NNC_EIO, "checkpoint rotation: renaming '%s' to '%s': %s", tmp, path, strerror(errno));
            unlink(tmp);
            return s;
        }
        int dfd = open(R->c.ckpt_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0)
            s = nnc__fail(NNC_EIO, "checkpoint rotation: fsync of folder '%s': %s", R->c.ckpt_dir, strerror(errno));
        if (dfd >= 0) close(dfd);
    } else {
        s = save_file(R, name); /* no hard links here: write the same state again (this rank) */
    }
    return s ? s : prune_epochs(R, epoch, R->c.keep_epochs);
}

static int get_exact(const nnc_ckpt *c, const char *path, const char *name, void *dst, size_t n)
{
    const void *d;
    size_t nb;
    int s = nnc_ckpt_get_bytes(c, name, &d, &nb);
    if (s) return nnc__fail(NNC_EFORMAT, "checkpoint '%s': missing section '%s'", path, name);
    if (nb != n)
        return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section '%s' has %zu bytes, expected %zu", path,
                         name, nb, n);
    memcpy(dst, d, n);
    return NNC_OK;
}

static int load_file(nnc_run *R);

/* The run-level state rank 0 read, for the other ranks. */
typedef struct run_wire {
    int64_t round, total_steps, round_steps, last_epoch, mark_n;
    double t_resumed, best_acc, pub_seconds, mark_loss;
} run_wire;

int nnc__run_load(nnc_run *R)
{
    nnc_transport *t = R->tp;
    if (t->size == 1) return load_file(R);
    /* Rank 0 reads; its verdict first, so a bad file stops every rank alike. */
    int32_t st[1] = {t->rank == 0 ? load_file(R) : NNC_OK};
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", st[0] ? nnc_error_message() : "");
    int s = t->ops->broadcast(t, st, sizeof st, 0);
    if (s) return s;
    if (st[0]) return t->rank == 0 ? nnc__fail(st[0], "%s", msg) : nnc__fail(st[0], "resume failed on rank 0");
    nnc_params *p = nnc_model_params(R->scratch);
    run_wire w = {.round = R->round, .total_steps = R->total_steps, .round_steps = R->round_steps,
                  .last_epoch = R->last_epoch, .mark_n = R->mark_n, .t_resumed = R->t_resumed,
                  .best_acc = R->best_acc, .pub_seconds = R->pub_seconds, .mark_loss = R->mark_loss};
    size_t ne = (size_t)R->M * (R->ly.L > 0 ? R->ly.L : 1);
    if ((s = t->ops->broadcast(t, &w, sizeof w, 0))) return s;
    if ((s = t->ops->broadcast(t, R->center, p->n_data * sizeof(float), 0))) return s;
    if ((s = t->ops->broadcast(t, R->pub, p->n_data * sizeof(float), 0))) return s;
    if (p->n_buf && (s = t->ops->broadcast(t, R->center_buf, p->n_buf * sizeof(float), 0))) return s;
    if ((s = t->ops->broadcast(t, R->ema, ne * sizeof(double), 0))) return s;
    if (R->slow && ((s = t->ops->broadcast(t, R->slow_u, p->n_data * sizeof(float), 0)) ||
                    (s = t->ops->broadcast(t, R->slow_x0, p->n_data * sizeof(float), 0))))
        return s;
    R->round = w.round;
    R->total_steps = w.total_steps;
    R->round_steps = w.round_steps;
    R->last_epoch = w.last_epoch;
    R->mark_n = w.mark_n;
    R->t_resumed = w.t_resumed;
    R->best_acc = w.best_acc;
    R->pub_seconds = w.pub_seconds;
    R->mark_loss = w.mark_loss;
    unsigned char *b = nnc__alloc(wire_bytes(R));
    if (!b) return nnc__fail(NNC_ENOMEM, "resume: cannot allocate the worker transfer");
    for (int i = 0; !s && i < R->M; i++) s = wire_bcast(R, i, 0, b);
    nnc__free(b);
    return s;
}

/* Range checks on values decoded from a checkpoint: a field outside its range is refused with
 * NNC_EFORMAT naming the file, the section, the field and the expected range, before anything
 * uses it (an index, a loader position, a count that sizes or addresses memory). */
static int bad_field(const char *path, const char *sec, int worker, const char *field, const char *want,
                     const char *found)
{
    char w[32] = "";
    if (worker >= 0) snprintf(w, sizeof w, " worker %d", worker);
    return nnc__fail(NNC_EFORMAT, "checkpoint '%s': section '%s'%s field '%s': expected %s, found %s", path, sec,
                     w, field, want, found);
}

static int check_i64(const char *path, const char *sec, int worker, const char *field, int64_t v, int64_t lo,
                     int64_t hi)
{
    if (v >= lo && v <= hi) return NNC_OK;
    char want[96], found[32];
    snprintf(want, sizeof want, "%lld..%lld", (long long)lo, (long long)hi);
    snprintf(found, sizeof found, "%lld", (long long)v);
    return bad_field(path, sec, worker, field, want, found);
}

static int check_f64(const char *path, const char *sec, int worker, const char *field, double v, double lo,
                     double hi)
{
    if (isfinite(v) && v >= lo && v <= hi) return NNC_OK;
    char want[96], found[32];
    snprintf(want, sizeof want, "a finite value in [%g, %g]", lo, hi);
    snprintf(found, sizeof found, "%g", v);
    return bad_field(path, sec, worker, field, want, found);
}

static int check_rng(const char *path, const char *sec, int worker, const char *field, const nnc_rng *r)
{
    if (r->s[0] | r->s[1] | r->s[2] | r->s[3]) return NNC_OK;
    return bad_field(path, sec, worker, field, "a non-zero xoshiro256 state", "all zero");
}

/* Counters are far below this (2^40 steps, images or rounds); it keeps every sum and product of
 * them in range. */
#define COUNT_MAX ((int64_t)1 << 40)
#define SECONDS_MAX 1e12

static int check_meta(const nnc_run *R, const char *path, const nnc__run_meta *m)
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
        (s = check_f64(path, S, -1, "mark_loss", m->mark_loss, -1e300, 1e300)))
        return s;
    if (m->best_acc != -1.0 && (s = check_f64(path, S, -1, "best_acc", m->best_acc, 0.0, 1.0)))
        return s;
    return NNC_OK;
}

static int check_worker(const nnc_run *R, const char *path, int i, const nnc__worker_meta *w)
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
        (s = check_rng(path, S, i, "rng", &w->rng)) || (s = check_rng(path, S, i, "probe_rng", &w->probe_rng)) ||
        (s = check_i64(path, S, i, "hist.count", w->hist.count, 0, NNC_LSGD_HISTORY)) ||
        (s = check_i64(path, S, i, "hist.next", w->hist.next, 0, NNC_LSGD_HISTORY - 1)))
        return s;
    if (w->hist.count < NNC_LSGD_HISTORY && w->hist.next != w->hist.count) {
        char want[64], found[32];
        snprintf(want, sizeof want, "%d (= hist.count while the history is not full)", w->hist.count);
        snprintf(found, sizeof found, "%d", w->hist.next);
        return bad_field(path, S, i, "hist.next", want, found);
    }
    for (int k = 0; k < NNC_LSGD_HISTORY; k++)
        if (!isfinite(w->hist.loss[k])) {
            char f[32], v[32];
            snprintf(f, sizeof f, "hist.loss[%d]", k);
            snprintf(v, sizeof v, "%g", w->hist.loss[k]);
            return bad_field(path, S, i, f, "a finite loss", v);
        }
    return NNC_OK;
}

/* The smoothed gradient norms: finite and >= 0. */
static int check_ema(const char *path, const double *ema, size_t n)
{
    for (size_t j = 0; j < n; j++)
        if (!(isfinite(ema[j]) && ema[j] >= 0.0)) {
            char f[48], v[32];
            snprintf(f, sizeof f, "ema[%zu]", j);
            snprintf(v, sizeof v, "%g", ema[j]);
            return bad_field(path, "run/ema", -1, f, "a finite value >= 0", v);
        }
    return NNC_OK;
}

static int load_file(nnc_run *R)
{
    char path[4096], prefix[32];
    int s = ckpt_path(R, "last.ckpt", path, sizeof path);
    if (s) return s;
    nnc_ckpt *c = NULL;
    if ((s = nnc_ckpt_load(path, &c))) return nnc__fail_prefix(s, "resume");
    int M = R->M, single = (R->A->flags & NNC_ALGO_F_SINGLE) != 0;
    nnc__run_meta meta;
    nnc__worker_meta *wm = nnc__calloc((size_t)M, sizeof *wm);
    nnc_params *sp = nnc_model_params(R->scratch);
    if (!wm) {
        s = nnc__fail(NNC_ENOMEM, "resume: out of memory");
        goto done;
    }
    if (strcmp(nnc_ckpt_arch(c), nnc_model_arch(R->scratch)) != 0) {
        s = nnc__fail(NNC_EINVAL, "resume: checkpoint '%s' holds architecture %s, this run builds %s", path,
                      nnc_ckpt_arch(c), nnc_model_arch(R->scratch));
        goto done;
    }
    if ((s = get_exact(c, path, "run/meta", &meta, sizeof meta))) goto done;
    if (meta.version != NNC__RUN_META_VERSION || meta.workers != M || meta.algo != (int32_t)R->c.algo ||
        meta.sync != (int32_t)R->c.sync || meta.layers != R->ly.L || meta.steps_per_epoch != R->spe) {
        s = nnc__fail(NNC_EINVAL,
                      "resume: checkpoint '%s' was written by a run with %d worker(s), algorithm %s, "
                      "sync %d, %lld steps per epoch; this run has %d, %s, sync %d, %ld: resuming needs "
                      "the same workers, algorithm, sync mode, data and batch",
                      path, meta.workers, nnc_algo_name((nnc_algo)meta.algo), meta.sync,
                      (long long)meta.steps_per_epoch, M, nnc_algo_name(R->c.algo), (int)R->c.sync, R->spe);
        goto done;
    }
    if ((s = check_meta(R, path, &meta))) goto done;
    if ((s = get_exact(c, path, "run/workers", wm, (size_t)M * sizeof *wm))) goto done;
    for (int i = 0; i < M; i++)
        if ((s = check_worker(R, path, i, &wm[i]))) goto done;
    if (single) {
        nnc_params *p = R->rep[0]->p;
        if ((s = nnc_ckpt_get_params(c, "", p)) || (s = nnc_ckpt_check_finite(c, "", p))) goto done;
        if ((s = nnc_ckpt_get_params_like(c, "opt/", p, R->rep[0]->opt->momentum)) ||
            (s = nnc_ckpt_check_finite_like(c, "opt/", p, R->rep[0]->opt->momentum)))
            goto done;
    } else {
        int n = (int)sp->n_data, nb = (int)sp->n_buf;
        if ((s = nnc_ckpt_get_floats(c, "run/center", 1, &n, R->center)) ||
            (s = nnc_ckpt_check_finite_floats(c, "run/center", R->center, sp->n_data)))
            goto done;
        if ((s = nnc_ckpt_get_floats(c, "run/pub", 1, &n, R->pub)) ||
            (s = nnc_ckpt_check_finite_floats(c, "run/pub", R->pub, sp->n_data)))
            goto done;
        if (nb && ((s = nnc_ckpt_get_floats(c, "run/center_buf", 1, &nb, R->center_buf)) ||
                   (s = nnc_ckpt_check_finite_floats(c, "run/center_buf", R->center_buf, sp->n_buf))))
            goto done;
        size_t ne = (size_t)M * (R->ly.L > 0 ? R->ly.L : 1);
        if ((s = get_exact(c, path, "run/ema", R->ema, ne * sizeof(double))) || (s = check_ema(path, R->ema, ne)))
            goto done;
        if (R->slow && ((s = nnc_ckpt_get_floats(c, "run/slow_u", 1, &n, R->slow_u)) ||
                        (s = nnc_ckpt_check_finite_floats(c, "run/slow_u", R->slow_u, sp->n_data)) ||
                        (s = nnc_ckpt_get_floats(c, "run/slow_x0", 1, &n, R->slow_x0)) ||
                        (s = nnc_ckpt_check_finite_floats(c, "run/slow_x0", R->slow_x0, sp->n_data))))
            goto done;
        for (int i = 0; i < M; i++) {
            nnc_params *p = R->rep[i]->p;
            snprintf(prefix, sizeof prefix, "w%d/", i);
            if ((s = nnc_ckpt_get_params(c, prefix, p)) || (s = nnc_ckpt_check_finite(c, prefix, p))) goto done;
            snprintf(prefix, sizeof prefix, "w%d/mom/", i);
            if ((s = nnc_ckpt_get_params_like(c, prefix, p, R->rep[i]->opt->momentum)) ||
                (s = nnc_ckpt_check_finite_like(c, prefix, p, R->rep[i]->opt->momentum)))
                goto done;
        }
    }
    for (int i = 0; i < M; i++) {
        nnc_replica *r = R->rep[i];
        r->steps = wm[i].steps;
        r->opt->steps = wm[i].sgd_steps;
        r->correct = wm[i].correct;
        r->seen = wm[i].seen;
        r->rng = wm[i].rng;
        r->probe_rng = r->probe_rng_round = wm[i].probe_rng;
        nnc_loader_seek(r->loader, wm[i].loader_epoch, wm[i].loader_batch);
        R->W[i].wround = wm[i].wround;
        R->W[i].wsteps = wm[i].wsteps;
        R->W[i].wloss = wm[i].wloss;
        R->W[i].wloss_n = wm[i].wloss_n;
        R->W[i].wcorrect = wm[i].wcorrect;
        R->W[i].wseen = wm[i].wseen;
        R->W[i].ema_n = wm[i].ema_n;
        R->W[i].hist = wm[i].hist;
    }
    R->round = meta.round;
    R->total_steps = meta.total_steps;
    R->round_steps = meta.round_steps;
    R->last_epoch = meta.last_epoch;
    R->t_resumed = meta.seconds;
    R->best_acc = meta.best_acc;
    R->pub_seconds = meta.pub_seconds;
    R->mark_loss = meta.mark_loss;
    R->mark_n = meta.mark_n;
done:
    nnc__free(wm);
    nnc_ckpt_free(c);
    return s;
}
