/* tests/dist/test_runckpt.c - run-folder checkpoints: epoch rotation with keep_epochs,
 * stale temp files and a kill -9 in the middle of a save never cost the newest complete
 * checkpoint, and best.ckpt is replaced only when the evaluated accuracy improves (forced
 * accuracies through the eval_acc fault hook). */
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "nn/fault.h"

#include "tests/dist/dist_fixture.h"

static void arm(const char *spec)
{
    setenv("NNC_FAULT", spec, 1);
    nnc__fault_reload();
}

static int exists_in(const char *dir, const char *name)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* Listing: counts of epoch-*.ckpt, temp files, and the highest epoch. */
static void list_dir(const char *dir, int *nepoch, int *ntmp, long *newest)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    *nepoch = *ntmp = 0;
    *newest = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (strstr(e->d_name, ".tmp.")) {
            (*ntmp)++;
        } else if (!strncmp(e->d_name, "epoch-", 6)) {
            long v = strtol(e->d_name + 6, NULL, 10);
            (*nepoch)++;
            if (v > *newest) *newest = v;
        }
    }
    closedir(d);
}

/* The checkpoint loads and holds finite parameters. */
static void assert_loads(const char *dir, const char *name)
{
    nnc_model *m = fx_load_model(dir, name, "");
    cr_assert(nnc_params_all_finite(nnc_model_params(m)), "%s/%s finite", dir, name);
    nnc_model_free(m);
}

static void touch(const char *dir, const char *name)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("partial", f);
    fclose(f);
}

static pid_t dead_pid(void)
{
    pid_t p = fork();
    if (p == 0) _exit(0);
    waitpid(p, NULL, 0);
    return p;
}

Test(dist_runckpt, keep_rotation_and_resume, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(64, 2);
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    char dir[64], name[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    c.epochs = 5;
    c.eval_every_epochs = 1;
    c.keep_epochs = 3;
    /* Stale temp files of a dead process (last.ckpt and an epoch link) are ignored/cleaned. */
    pid_t dead = dead_pid();
    snprintf(name, sizeof name, "last.ckpt.tmp.%ld", (long)dead);
    touch(dir, name);
    snprintf(name, sizeof name, "epoch-0009.ckpt.tmp.%ld", (long)dead);
    touch(dir, name);
    fx_trace t;
    fx_hook(&c, &t);
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, te, &r), NNC_OK, "%s", nnc_error_message());
    int ne, nt;
    long newest;
    list_dir(dir, &ne, &nt, &newest);
    cr_assert_eq(ne, 3, "exactly the 3 newest epoch files");
    cr_assert_eq(nt, 0, "stale temp files removed");
    cr_assert_eq(newest, 5);
    cr_assert(!exists_in(dir, "epoch-0001.ckpt") && !exists_in(dir, "epoch-0002.ckpt"));
    for (int e = 3; e <= 5; e++) {
        snprintf(name, sizeof name, "epoch-%04d.ckpt", e);
        cr_assert(exists_in(dir, name), "%s", name);
        assert_loads(dir, name);
    }
    assert_loads(dir, "last.ckpt");
    assert_loads(dir, "best.ckpt");
    /* The final epoch file is the final last.ckpt. */
    char p1[300], p2[300];
    struct stat s1, s2;
    snprintf(p1, sizeof p1, "%s/last.ckpt", dir);
    snprintf(p2, sizeof p2, "%s/epoch-0005.ckpt", dir);
    cr_assert(stat(p1, &s1) == 0 && stat(p2, &s2) == 0);
    cr_assert(s1.st_ino == s2.st_ino || s1.st_size == s2.st_size);
    /* Epoch 3 differs from epoch 5 (it is an older state, not a copy). */
    nnc_model *m3 = fx_load_model(dir, "epoch-0003.ckpt", ""), *m5 = fx_load_model(dir, "epoch-0005.ckpt", "");
    cr_assert(!fx_same_params(m3, m5));
    nnc_model_free(m3);
    nnc_model_free(m5);
    /* Resuming to 7 epochs with keep 2 continues the numbering and trims to 6 and 7. */
    c.resume = 1;
    c.epochs = 7;
    c.keep_epochs = 2;
    fx_hook(&c, &t);
    cr_assert_eq(nnc_train(&c, tr, te, &r), NNC_OK, "%s", nnc_error_message());
    list_dir(dir, &ne, &nt, &newest);
    cr_assert_eq(ne, 2);
    cr_assert_eq(newest, 7);
    cr_assert(exists_in(dir, "epoch-0006.ckpt") && exists_in(dir, "epoch-0007.ckpt"));
    /* keep 0 (the default) writes no epoch files. */
    char dir2[64];
    c = fx_config(NNC_ALGO_SGD, 1);
    c.epochs = 2;
    c.ckpt_dir = fx_tmpdir(dir2, sizeof dir2);
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_OK, "%s", nnc_error_message());
    list_dir(dir2, &ne, &nt, &newest);
    cr_assert_eq(ne, 0);
    cr_assert(exists_in(dir2, "last.ckpt"));
    c.keep_epochs = -1;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "keep must be >= 0") && strstr(nnc_error_message(), "found -1"), "%s",
              nnc_error_message());
    fx_rmdir(dir2);
    fx_rmdir(dir);
    fx_dataset_free(tr);
    fx_dataset_free(te);
}

Test(dist_runckpt, multi_worker_rotation, .timeout = 60)
{
    nnc_dataset *tr = fx_dataset(256, 1);
    nnc_train_config c = fx_config(NNC_ALGO_MGRAWA, 2);
    char dir[64];
    c.tau = 2;
    c.epochs = 3;
    c.keep_epochs = 2;
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_OK, "%s", nnc_error_message());
    int ne, nt;
    long newest;
    list_dir(dir, &ne, &nt, &newest);
    cr_assert_eq(ne, 2);
    cr_assert_eq(newest, 3);
    cr_assert(exists_in(dir, "epoch-0002.ckpt") && exists_in(dir, "epoch-0003.ckpt"));
    assert_loads(dir, "epoch-0002.ckpt");
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

/* A child trains with slow checkpoint writes and is killed at seeded random times; whatever
 * the kill interrupted, every complete file still loads, the newest epoch file seen before the
 * kill is still there, and the next (resumed) run cleans up and rotates on. */
Test(dist_runckpt, kill9_never_loses_newest, .timeout = 120)
{
    nnc_dataset *tr = fx_dataset(128, 1);
    char dir[64];
    fx_tmpdir(dir, sizeof dir);
    nnc_rng rng;
    nnc_rng_seed(&rng, 8, 0);
    long seen_newest = 0;
    int mid_save = 0;
    for (int k = 0; k < 8; k++) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            arm("ckpt_slow_write:15");
            nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
            c.ckpt_dir = dir;
            c.keep_epochs = 2;
            c.epochs = 200;
            char lp[128];
            snprintf(lp, sizeof lp, "%s/last.ckpt", dir);
            c.resume = access(lp, F_OK) == 0;
            nnc_train_result r;
            _exit(nnc_train(&c, tr, NULL, &r) == NNC_OK ? 0 : 1);
        }
        usleep((useconds_t)(60000 + nnc_rng_below(&rng, 90000)));
        kill(pid, SIGKILL);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFSIGNALED(st), "the run must still be going when killed");
        int ne, nt;
        long newest;
        list_dir(dir, &ne, &nt, &newest);
        cr_assert_geq(newest, seen_newest, "epoch %ld was deleted (newest now %ld)", seen_newest, newest);
        cr_assert_leq(ne, 3, "at most keep + 1 epoch files (one newer not yet pruned)");
        seen_newest = newest;
        mid_save += nt > 0;
        if (exists_in(dir, "last.ckpt")) assert_loads(dir, "last.ckpt");
        DIR *d = opendir(dir);
        for (struct dirent *e; (e = readdir(d));)
            if (!strncmp(e->d_name, "epoch-", 6) && !strstr(e->d_name, ".tmp.")) assert_loads(dir, e->d_name);
        closedir(d);
    }
    cr_assert_gt(seen_newest, 0, "some epochs completed");
    cr_assert_geq(mid_save, 4, "the slow hook must let kills land mid-save (%d of 8)", mid_save);
    /* A final resumed run without faults finishes rotation and removes the stale temp files. */
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    c.ckpt_dir = dir;
    c.keep_epochs = 2;
    c.resume = 1;
    c.epochs = (int)seen_newest + 2;
    arm("");
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, NULL, &r), NNC_OK, "%s", nnc_error_message());
    int ne, nt;
    long newest;
    list_dir(dir, &ne, &nt, &newest);
    cr_assert_eq(ne, 2);
    cr_assert_eq(newest, seen_newest + 2);
    cr_assert_eq(nt, 0, "stale temp files of the killed runs removed");
    fx_rmdir(dir);
    fx_dataset_free(tr);
}

typedef struct best_obs {
    fx_trace t;         /* first member: the fixture callbacks get &best_obs as their fx_trace */
    const char *dir;
    int n;
    ino_t ino[8];       /* best.ckpt before evaluation k's possible save (0 = absent) */
    double acc[8];
    int is_best[8];
} best_obs;

static void best_on_eval(const nnc_eval_info *e, void *ud)
{
    best_obs *b = ud;
    char path[300];
    struct stat st;
    snprintf(path, sizeof path, "%s/best.ckpt", b->dir);
    if (b->n < 8) {
        b->ino[b->n] = stat(path, &st) == 0 ? st.st_ino : 0;
        b->acc[b->n] = e->acc;
        b->is_best[b->n] = e->is_best;
        b->n++;
    }
}

static ino_t ino_of(const char *dir, const char *name)
{
    char path[300];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

Test(dist_runckpt, best_only_when_metric_improves, .timeout = 60)
{
    arm("eval_acc:0.5/0.3/0.7/0.6/0.7");
    nnc_dataset *tr = fx_dataset(256, 1), *te = fx_dataset(64, 2);
    nnc_train_config c = fx_config(NNC_ALGO_SGD, 1);
    char dir[64];
    c.ckpt_dir = fx_tmpdir(dir, sizeof dir);
    c.epochs = 5;
    c.eval_every_epochs = 1;
    best_obs b;
    fx_hook(&c, &b.t);
    memset(&b, 0, sizeof b);
    b.dir = dir;
    c.on_eval = best_on_eval;
    c.ud = &b;
    nnc_train_result r;
    cr_assert_eq(nnc_train(&c, tr, te, &r), NNC_OK, "%s", nnc_error_message());
    cr_assert_eq(b.n, 5, "epochs 1-4 and the end");
    static const int want_best[5] = {1, 0, 1, 0, 0};
    for (int i = 0; i < 5; i++) cr_assert_eq(b.is_best[i], want_best[i], "eval %d acc %g", i, b.acc[i]);
    cr_assert_eq(b.ino[0], 0, "no best.ckpt before the first evaluation");
    cr_assert_neq(b.ino[1], 0);
    cr_assert_eq(b.ino[2], b.ino[1], "0.3 < 0.5: best.ckpt untouched");
    cr_assert_neq(b.ino[3], b.ino[2], "0.7 > 0.5: best.ckpt replaced");
    cr_assert_eq(b.ino[4], b.ino[3], "0.6 < 0.7: untouched");
    cr_assert_eq(ino_of(dir, "best.ckpt"), b.ino[4], "0.7 does not improve on 0.7: untouched");
    /* The file records the best metric: the max of the evaluated accuracies. */
    char path[300];
    snprintf(path, sizeof path, "%s/best.ckpt", dir);
    nnc_ckpt *ck;
    cr_assert_eq(nnc_ckpt_load(path, &ck), NNC_OK, "%s", nnc_error_message());
    const void *m;
    size_t n;
    cr_assert_eq(nnc_ckpt_get_bytes(ck, "metric", &m, &n), NNC_OK);
    cr_assert(n == strlen("test_acc=0.700000") && !memcmp(m, "test_acc=0.700000", n), "%.*s", (int)n,
              (const char *)m);
    nnc_ckpt_free(ck);
    /* It holds the model of epoch 3 (the 0.7 evaluation), not the final one. */
    nnc_model *bm = fx_load_model(dir, "best.ckpt", ""), *lm = fx_load_model(dir, "last.ckpt", "");
    cr_assert(!fx_same_params(bm, lm));
    nnc_model_free(bm);
    nnc_model_free(lm);
    arm("");
    fx_rmdir(dir);
    fx_dataset_free(tr);
    fx_dataset_free(te);
}
