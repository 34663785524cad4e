/* dist/runckpt.c - save and restore a whole training run (nn/checkpoint.h format).
 *
 * Sections: "param/..", "buf/.." the reported model (the replica for one worker; else the model
 * the last evaluation reported - center or worker average with its re-estimated BN statistics -
 * when the checkpoint is taken at that evaluated state, otherwise the center with averaged BN
 * buffers: `nnc eval` loads these); "opt/.." its momentum (one worker);
 * "w<i>/param/..", "w<i>/buf/..", "w<i>/mom/.." every replica and its momentum (M > 1);
 * "run/meta" and "run/workers" the run counters and one record per worker (counters, RNG
 * states, loader positions, LSGD histories, smoothed norms), little-endian (dist/record.c);
 * "run/center", "run/pub", "run/center_buf" the synchronizer state, "run/slow_u" and
 * "run/slow_x0" the slow momentum when the run has it; "metric" the
 * best accuracy as text; "meta/json" the caller's ckpt_meta_json. Written only from a
 * between-steps state (all workers parked), and never when any value is non-finite.
 * Rotation (keep_epochs): epoch-<EEEE>.ckpt is a hard link to the just-renamed last.ckpt made
 * under a temp name and renamed into place; pruning runs only after that, so a crash at any
 * point leaves every complete file it had plus, at worst, a stale temp file.
 * Ranks (MPI build): saving is collective; every worker's whole state travels to rank 0, which
 * alone writes the one file (atomically: temporary + rename, so a rank killed mid-save leaves
 * the previous complete checkpoint) and rotates; the other ranks write
 * nothing. Resuming: rank 0 reads the file and broadcasts the run and every worker, so the
 * other ranks need no copy of the folder; the records travel in the same encoding. Every value
 * read back is range-checked (dist/record.c) and every tensor checked finite before use: a bad
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

/* The synchronizer's vectors (M > 1): the center, the target, the center's BN buffers, then the
 * algorithm's own state (nnc_algo_def.state). Returns how many. */
static int state_vectors(const nnc_run *R, nnc_algo_vec *v)
{
    const nnc_params *p = R->rep[0]->p;
    int n = 0;
    v[n++] = (nnc_algo_vec){"run/center", R->center, p->n_data};
    v[n++] = (nnc_algo_vec){"run/pub", R->pub, p->n_data};
    if (p->n_buf) v[n++] = (nnc_algo_vec){"run/center_buf", R->center_buf, p->n_buf};
    if (R->A->state) n += R->A->state(R, v + n);
    return n;
}

static int all_finite(const nnc_run *R)
{
    for (int i = 0; i < R->M; i++)
        if (!nnc_params_all_finite(R->rep[i]->p)) return 0;
    nnc_algo_vec v[3 + NNC_ALGO_MAX_STATE];
    for (int k = 0, n = state_vectors(R, v); k < n; k++)
        if (!nnc__grawa_finite(v[k].data, v[k].n)) return 0;
    return 1;
}

/* One worker as it travels between ranks: its record (LIVE), then data, buf, momentum and
 * pend_buf. */
static size_t wire_bytes(const nnc_run *R)
{
    const nnc_params *p = R->rep[0]->p;
    return nnc__worker_bytes(R->ly.L) + (2 * p->n_data + 2 * p->n_buf) * sizeof(float);
}

static void wire_pack(const nnc_run *R, int i, unsigned char *b)
{
    const nnc_replica *r = R->rep[i];
    const nnc_params *p = r->p;
    nnc__worker_encode(R, i, NNC__REC_LIVE, b);
    unsigned char *f = b + nnc__worker_bytes(R->ly.L);
    memcpy(f, p->data, p->n_data * sizeof(float));
    memcpy(f + p->n_data * sizeof(float), p->buf, p->n_buf * sizeof(float));
    memcpy(f + (p->n_data + p->n_buf) * sizeof(float), r->opt->momentum, p->n_data * sizeof(float));
    memcpy(f + (2 * p->n_data + p->n_buf) * sizeof(float), r->pend_buf, p->n_buf * sizeof(float));
}

static int wire_unpack(nnc_run *R, int i, const unsigned char *b)
{
    nnc_replica *r = R->rep[i];
    nnc_params *p = r->p;
    int s = nnc__worker_decode(R, i, b, NNC__REC_ALL, NULL, NULL);
    if (s) return s;
    const unsigned char *f = b + nnc__worker_bytes(R->ly.L);
    memcpy(p->data, f, p->n_data * sizeof(float));
    memcpy(p->buf, f + p->n_data * sizeof(float), p->n_buf * sizeof(float));
    memcpy(r->opt->momentum, f + (p->n_data + p->n_buf) * sizeof(float), p->n_data * sizeof(float));
    memcpy(r->pend_buf, f + (2 * p->n_data + p->n_buf) * sizeof(float), p->n_buf * sizeof(float));
    return NNC_OK;
}

/* Send worker i from `root` to every rank (those other than root overwrite their copy). */
static int wire_bcast(nnc_run *R, int i, int root, unsigned char *b)
{
    size_t nb = wire_bytes(R);
    if (R->tp->rank == root) wire_pack(R, i, b);
    int s = R->tp->ops->broadcast(R->tp, b, nb, root);
    if (!s && R->tp->rank != root) s = wire_unpack(R, i, b);
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
    nnc__meta meta;
    nnc__meta_get(R, &meta);
    unsigned char mb[256];
    nnc__meta_encode(&meta, mb);
    size_t rb = nnc__worker_bytes(R->ly.L);
    unsigned char *wb = nnc__alloc((size_t)M * rb);
    if (!wb) return nnc__fail(NNC_ENOMEM, "checkpoint: out of memory");
    for (int i = 0; i < M; i++) {
        nnc_replica *r = R->rep[i];
        if ((R->A->flags & NNC_ALGO_F_GRADIENTS) && R->W[i].wround) {
            /* The record undoes the step whose gradient waits for its round; only a stop saves
             * here, and the run ends after it: undo that step's BN updates too. */
            NNC_ASSERT(R->stop_req, "pending DP step outside a stop");
            memcpy(r->p->buf, r->pend_buf, r->p->n_buf * sizeof(float));
        }
        nnc__worker_encode(R, i, NNC__REC_SAVE, wb + (size_t)i * rb);
    }
    snprintf(metric, sizeof metric, "test_acc=%.6f", R->best_acc);
    nnc_ckpt *c = NULL;
    s = nnc_ckpt_new(nnc_model_arch(R->scratch), &c);
    if (!s) s = nnc_ckpt_add_bytes(c, "run/meta", mb, nnc__meta_bytes());
    if (!s) s = nnc_ckpt_add_bytes(c, "run/workers", wb, (size_t)M * rb);
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
        nnc_algo_vec v[3 + NNC_ALGO_MAX_STATE];
        for (int k = 0, nv = state_vectors(R, v); !s && k < nv; k++) {
            int n = (int)v[k].n;
            s = nnc_ckpt_add_floats(c, v[k].name, 1, &n, v[k].data);
        }
    }
    for (int i = 0; !single && !s && i < M; i++) {
        snprintf(prefix, sizeof prefix, "w%d/", i);
        s = nnc_ckpt_add_params(c, prefix, R->rep[i]->p);
        snprintf(prefix, sizeof prefix, "w%d/mom/", i);
        if (!s) s = nnc_ckpt_add_params_like(c, prefix, R->rep[i]->p, R->rep[i]->opt->momentum);
    }
    if (!s) s = nnc_ckpt_save(c, path);
    nnc_ckpt_free(c);
    nnc__free(wb);
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

static const unsigned char *get_exact(const nnc_ckpt *c, const char *path, const char *name, size_t n, int *s)
{
    const void *d;
    size_t nb;
    if (nnc_ckpt_get_bytes(c, name, &d, &nb)) {
        *s = nnc__fail(NNC_EFORMAT, "checkpoint '%s': missing section '%s'", path, name);
        return NULL;
    }
    if (nb != n) {
        *s = nnc__fail(NNC_EFORMAT, "checkpoint '%s': section '%s' has %zu bytes, expected %zu", path, name, nb, n);
        return NULL;
    }
    return d;
}

/* A float section into dst, checked finite. */
static int get_floats(const nnc_ckpt *c, const char *name, float *dst, size_t n)
{
    int ni = (int)n;
    int s = nnc_ckpt_get_floats(c, name, 1, &ni, dst);
    return s ? s : nnc_ckpt_check_finite_floats(c, name, dst, n);
}

static int load_file(nnc_run *R)
{
    char path[4096], prefix[32];
    int s = ckpt_path(R, "last.ckpt", path, sizeof path);
    if (s) return s;
    nnc_ckpt *c = NULL;
    if ((s = nnc_ckpt_load(path, &c))) return nnc__fail_prefix(s, "resume");
    int M = R->M, single = (R->A->flags & NNC_ALGO_F_SINGLE) != 0;
    nnc__meta meta;
    const void *mb;
    size_t mn;
    size_t rb = nnc__worker_bytes(R->ly.L);
    const unsigned char *wb;
    if (strcmp(nnc_ckpt_arch(c), nnc_model_arch(R->scratch)) != 0) {
        s = nnc__fail(NNC_EINVAL, "resume: checkpoint '%s' holds architecture %s, this run builds %s", path,
                      nnc_ckpt_arch(c), nnc_model_arch(R->scratch));
        goto done;
    }
    if (nnc_ckpt_get_bytes(c, "run/meta", &mb, &mn)) {
        s = nnc__fail(NNC_EFORMAT, "checkpoint '%s': missing section 'run/meta'", path);
        goto done;
    }
    if ((s = nnc__meta_decode(mb, mn, path, &meta))) goto done;
    if (meta.workers != M || meta.algo != (int32_t)R->c.algo || meta.sync != (int32_t)R->c.sync ||
        meta.layers != R->ly.L || meta.steps_per_epoch != R->spe || meta.slow != R->slow) {
        s = nnc__fail(NNC_EINVAL,
                      "resume: checkpoint '%s' was written by a run with %d worker(s), algorithm %s%s, "
                      "sync %d, %lld steps per epoch; this run has %d, %s%s, sync %d, %ld: resuming needs "
                      "the same workers, algorithm, slow momentum, sync mode, data and batch",
                      path, meta.workers, nnc_algo_name((nnc_algo)meta.algo), meta.slow ? " with slow momentum" : "",
                      meta.sync, (long long)meta.steps_per_epoch, M, nnc_algo_name(R->c.algo),
                      R->slow ? " with slow momentum" : "", (int)R->c.sync, R->spe);
        goto done;
    }
    if ((s = nnc__meta_check(R, path, &meta))) goto done;
    if (!(wb = get_exact(c, path, "run/workers", (size_t)M * rb, &s))) goto done;
    /* Every record is checked before any is applied. */
    for (int i = 0; i < M; i++)
        if ((s = nnc__worker_decode(R, i, wb + (size_t)i * rb, NNC__REC_NONE, path, NULL))) goto done;
    if (single) {
        nnc_params *p = R->rep[0]->p;
        if ((s = nnc_ckpt_get_params(c, "", p)) || (s = nnc_ckpt_check_finite(c, "", p))) goto done;
        if ((s = nnc_ckpt_get_params_like(c, "opt/", p, R->rep[0]->opt->momentum)) ||
            (s = nnc_ckpt_check_finite_like(c, "opt/", p, R->rep[0]->opt->momentum)))
            goto done;
    } else {
        nnc_algo_vec v[3 + NNC_ALGO_MAX_STATE];
        for (int k = 0, nv = state_vectors(R, v); k < nv; k++)
            if ((s = get_floats(c, v[k].name, v[k].data, v[k].n))) goto done;
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
    for (int i = 0; i < M; i++)
        if ((s = nnc__worker_decode(R, i, wb + (size_t)i * rb, NNC__REC_ALL, path, NULL))) goto done;
    nnc__meta_apply(R, &meta);
done:
    nnc_ckpt_free(c);
    return s;
}

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
    /* The run meta in its file encoding (seconds: the resumed clock). */
    nnc__meta m;
    nnc__meta_get(R, &m);
    m.seconds = R->t_resumed;
    unsigned char mb[256];
    nnc__meta_encode(&m, mb);
    if ((s = t->ops->broadcast(t, mb, nnc__meta_bytes(), 0))) return s;
    if (t->rank != 0) {
        if ((s = nnc__meta_decode(mb, nnc__meta_bytes(), "(rank 0)", &m))) return s;
        nnc__meta_apply(R, &m);
    }
    nnc_algo_vec v[3 + NNC_ALGO_MAX_STATE];
    for (int k = 0, nv = state_vectors(R, v); k < nv; k++)
        if ((s = t->ops->broadcast(t, v[k].data, v[k].n * sizeof(float), 0))) return s;
    unsigned char *b = nnc__alloc(wire_bytes(R));
    if (!b) return nnc__fail(NNC_ENOMEM, "resume: cannot allocate the worker transfer");
    for (int i = 0; !s && i < R->M; i++) s = wire_bcast(R, i, 0, b);
    nnc__free(b);
    return s;
}
