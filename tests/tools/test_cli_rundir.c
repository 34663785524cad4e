/* tests/tools/test_cli_rundir.c - run folders: --resume continues from the run's config.json,
 * used folders are refused (--overwrite, the lock), nothing is written before validation,
 * metrics.csv follows the resumed checkpoint, temp files and long paths, SIGHUP/SIGPIPE/SIGXFSZ,
 * and compare's output folder. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/common/cli_run.h"

static char *data, *work;

static void setup(void)
{
    data = tcli_tmpdir();
    work = tcli_tmpdir();
    cr_assert(data && work);
    cr_assert_eq(tcli_write_cifar10(data, 256), 0);
}

static void teardown(void)
{
    tcli_rmrf(data);
    tcli_rmrf(work);
    free(data);
    free(work);
}

TestSuite(tools_cli_rundir, .init = setup, .fini = teardown, .timeout = 120);

#define TRAIN(run, ...)                                                                                        \
    tcli_run(60, "train", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch", "32",      \
             "--limit-train", "256", "--limit-test", "100", "--lr", "0.05", "--threads", "1", "--log-every", "2", \
             "--run-dir", run, __VA_ARGS__, NULL)

static char *file_in(const char *run, const char *name)
{
    char *p = tcli_path(run, name), *t = tcli_slurp(p);
    free(p);
    return t;
}

static int exists_in(const char *run, const char *name)
{
    char *p = tcli_path(run, name);
    int e = tcli_exists(p);
    free(p);
    return e;
}

static double summary_num(const char *run, const char *key)
{
    char *t = file_in(run, "summary.json");
    cr_assert(t, "summary.json in %s", run);
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    char *p = strstr(t, pat);
    cr_assert(p, "summary.json has %s: %s", key, t);
    double v = strtod(p + strlen(pat), NULL);
    free(t);
    return v;
}

/* The files of a run folder, to compare byte for byte. */
static const char *const FILES[] = {"config.json", "dataset.json", "metrics.csv", "plot.svg",
                                    "summary.json", "last.ckpt",   "best.ckpt"};
#define NFILES (sizeof FILES / sizeof *FILES)

static void snapshot(const char *run, char **texts)
{
    for (size_t i = 0; i < NFILES; i++) texts[i] = file_in(run, FILES[i]);
}

static void assert_unchanged(const char *run, char **before, const char *what)
{
    for (size_t i = 0; i < NFILES; i++) {
        char *now = file_in(run, FILES[i]);
        if (!before[i])
            cr_assert_null(now, "%s: %s appeared", what, FILES[i]);
        else
            cr_assert(now && !strcmp(now, before[i]), "%s: %s changed", what, FILES[i]);
        free(now);
    }
}

static void snapshot_free(char **texts)
{
    for (size_t i = 0; i < NFILES; i++) free(texts[i]);
}

/* Rows of metrics.csv of a kind; every train step above the previous one. */
static int count_rows(const char *run, const char *kind, long *max_step)
{
    char *t = file_in(run, "metrics.csv");
    cr_assert(t);
    int n = 0;
    long last = -1;
    size_t kl = strlen(kind);
    for (char *save = NULL, *l = strtok_r(t, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (strncmp(l, kind, kl) || l[kl] != ',') continue;
        long step = strtol(l + kl + 1, NULL, 10);
        if (!strcmp(kind, "train")) cr_assert_gt(step, last, "train steps increase: %s", l);
        last = step;
        n++;
    }
    if (max_step) *max_step = last;
    free(t);
    return n;
}

/* $NNC_BIN with stdout to out_fd (-1: /dev/null), stderr to /dev/null; the child waits for a
 * byte on *go (when go) before exec, so the caller can prepare things that depend on its pid. */
static pid_t spawn(const char *const *args, int out_fd, int *go)
{
    int p[2] = {-1, -1};
    if (go) cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        if (go) {
            char c;
            close(p[1]);
            if (read(p[0], &c, 1) != 1) _exit(99);
            close(p[0]);
        }
        signal(SIGPIPE, SIG_DFL); /* as from a shell: the test runner may ignore it */
        signal(SIGHUP, SIG_DFL);  /* likewise (nohup) */
        int nul = open("/dev/null", O_RDWR);
        dup2(out_fd >= 0 ? out_fd : nul, 1);
        dup2(nul, 2);
        const char *bin = getenv("NNC_BIN");
        const char *argv[64];
        int n = 0;
        argv[n++] = bin ? bin : "build/test/nnc";
        for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
        argv[n] = NULL;
        execv(argv[0], (char *const *)argv);
        _exit(98);
    }
    if (go) {
        close(p[0]);
        *go = p[1];
    }
    return pid;
}

static int wait_code(pid_t pid)
{
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int wait_for(const char *path, const char *needle, double timeout)
{
    for (int i = 0; i < (int)(timeout * 100); i++) {
        char *t = tcli_slurp(path);
        int found = t && strstr(t, needle);
        free(t);
        if (found) return 1;
        usleep(10000);
    }
    return 0;
}

/* --resume alone (plus what may change) continues with the run's own flags from config.json. */
Test(tools_cli_rundir, resume_reads_run_config)
{
    char *run = tcli_path(work, "run");
    tcli_result r = TRAIN(run, "--epochs", "1", "--seed", "5", "--momentum", "0.7");
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    r = tcli_run(60, "train", "cifar10", "--run-dir", run, "--resume", "--epochs", "2", "--no-download", NULL);
    cr_assert_eq(r.code, 0, "resume with the run's flags: %s\n%s", r.out, r.err);
    cr_assert(strstr(r.out, "training tiny"), "the run's model: %s", r.out);
    tcli_free(&r);
    cr_assert_float_eq(summary_num(run, "epochs"), 2.0, 1e-6);
    char *cfg = file_in(run, "config.json");
    cr_assert(strstr(cfg, "\"model\": \"tiny\"") && strstr(cfg, "\"epochs\": 2") && strstr(cfg, "\"seed\": 5") &&
                  strstr(cfg, "\"momentum\": 0.7,"),
              "%s", cfg);
    free(cfg);
    /* without DATASET: the run's dataset */
    r = tcli_run(60, "train", "--run-dir", run, "--resume", "--epochs", "3", NULL);
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    cr_assert_float_eq(summary_num(run, "epochs"), 3.0, 1e-6);
    free(run);
}

/* A resume that changes what the checkpoint holds is refused (exit 2, the flag, both values)
 * before any file of the run is touched. */
Test(tools_cli_rundir, resume_refused_leaves_files)
{
    char *run = tcli_path(work, "run");
    tcli_result r = TRAIN(run, "--epochs", "1");
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    char *before[NFILES];
    snapshot(run, before);
    r = TRAIN(run, "--epochs", "2", "--resume", "--model", "resnet8");
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "--model") && strstr(r.err, "'tiny'") && strstr(r.err, "'resnet8'"), "%s", r.err);
    tcli_free(&r);
    assert_unchanged(run, before, "--model refused");
    r = TRAIN(run, "--epochs", "2", "--resume", "--batch", "16");
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "--batch") && strstr(r.err, "'32'") && strstr(r.err, "'16'"), "%s", r.err);
    tcli_free(&r);
    assert_unchanged(run, before, "--batch refused");
    /* an unknown model fails before the data is read or a folder made */
    char *fresh = tcli_path(work, "fresh");
    r = tcli_run(60, "train", "cifar10", "--data", "/nonexistent/d", "--no-download", "--model", "resnet21",
                 "--run-dir", fresh, NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "--model") && strstr(r.err, "resnet21") && !strstr(r.err, "/nonexistent"), "%s", r.err);
    cr_assert_not(tcli_exists(fresh));
    tcli_free(&r);
    snapshot_free(before);
    free(fresh), free(run);
}

/* After a kill lost summary.json, a --resume with nothing left to do changes no file. */
Test(tools_cli_rundir, nothing_to_do_is_read_only)
{
    char *run = tcli_path(work, "run");
    tcli_result r = TRAIN(run, "--epochs", "2");
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    char *sum = tcli_path(run, "summary.json");
    cr_assert_eq(unlink(sum), 0);
    char *before[NFILES];
    snapshot(run, before);
    r = TRAIN(run, "--epochs", "2", "--resume");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "nothing to do"), "%s", r.out);
    tcli_free(&r);
    assert_unchanged(run, before, "nothing to do");
    snapshot_free(before);
    free(sum), free(run);
}

/* Rows of steps that the checkpoint does not hold (a crash rolled them back) leave metrics.csv
 * on resume, a cut-off last row too. */
Test(tools_cli_rundir, resume_drops_rolled_back_rows)
{
    char *run = tcli_path(work, "run");
    tcli_result r = TRAIN(run, "--epochs", "1");
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    long last;
    int n1 = count_rows(run, "train", &last);
    char *m = tcli_path(run, "metrics.csv");
    FILE *f = fopen(m, "a");
    fprintf(f, "train,%ld,1.1,1.0,2.0,0.1,0.05,100.0,\nval,%ld,1.2,1.0,2.0,0.1,,,model\ntrain,%ld,1.3", last + 1,
            last + 2, last + 3);
    fclose(f);
    r = TRAIN(run, "--epochs", "2", "--resume");
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    char *t = tcli_slurp(m);
    cr_assert_null(strstr(t, ",1.1,1.0,2.0,"), "rolled-back row kept: %s", t);
    cr_assert_null(strstr(t, ",1.2,1.0,2.0,"), "%s", t);
    cr_assert_null(strstr(t, ",1.3"), "%s", t);
    cr_assert_eq(strncmp(t, "kind,step,", 10), 0);
    free(t);
    cr_assert_gt(count_rows(run, "train", NULL), n1); /* increasing steps checked there */
    cr_assert_eq(count_rows(run, "val", NULL), 2);
    free(m), free(run);
}

/* A folder holding a run is refused without --resume/--overwrite; --overwrite removes only
 * nnc's files. */
Test(tools_cli_rundir, used_folder_refused_overwrite_clears)
{
    char *run = tcli_path(work, "run");
    tcli_result r = TRAIN(run, "--epochs", "2", "--keep", "1");
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    int rows = count_rows(run, "train", NULL);
    char *note = tcli_path(run, "notes.txt");
    FILE *f = fopen(note, "w");
    fputs("mine\n", f);
    fclose(f);
    char *before[NFILES];
    snapshot(run, before);
    r = TRAIN(run, "--epochs", "1");
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, run) && strstr(r.err, "--overwrite") && strstr(r.err, "--resume"), "%s", r.err);
    tcli_free(&r);
    assert_unchanged(run, before, "refused reuse");
    cr_assert(exists_in(run, "epoch-0002.ckpt"));
    r = TRAIN(run, "--epochs", "1", "--overwrite");
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    cr_assert_lt(count_rows(run, "train", NULL), rows, "one run's rows only");
    cr_assert_eq(count_rows(run, "val", NULL), 1);
    cr_assert_not(exists_in(run, "epoch-0002.ckpt"), "old epoch checkpoint removed");
    char *n = tcli_slurp(note);
    cr_assert(n && !strcmp(n, "mine\n"), "other files stay");
    free(n);
    snapshot_free(before);
    free(note), free(run);
}

/* A second process is kept out of a folder in use (RUN/.lock held with flock). */
Test(tools_cli_rundir, lock_keeps_second_process_out)
{
    char *run = tcli_path(work, "run");
    cr_assert_eq(mkdir(run, 0755), 0);
    char *lock = tcli_path(run, ".lock");
    int fd = open(lock, O_RDWR | O_CREAT, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
    dprintf(fd, "%ld\n", (long)getpid());
    tcli_result r = TRAIN(run, "--epochs", "1");
    char want[64];
    snprintf(want, sizeof want, "in use by process %ld", (long)getpid());
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, want) && strstr(r.err, run), "%s", r.err);
    tcli_free(&r);
    cr_assert_not(exists_in(run, "config.json"));
    close(fd);
    r = TRAIN(run, "--epochs", "1");
    cr_assert_eq(r.code, 0, "free again: %s", r.err);
    tcli_free(&r);
    free(lock), free(run);
}

/* Temp files are created fresh: a symlink planted under the old fixed name is not written through. */
Test(tools_cli_rundir, temp_symlinks_not_followed)
{
    char *run = tcli_path(work, "run"), *victim = tcli_path(work, "victim");
    cr_assert_eq(mkdir(run, 0755), 0);
    FILE *f = fopen(victim, "w");
    fputs("precious\n", f);
    fclose(f);
    const char *args[] = {"train", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch", "32",
                          "--limit-train", "256", "--limit-test", "100", "--threads", "1", "--epochs", "1",
                          "--run-dir", run, NULL};
    int go;
    pid_t pid = spawn(args, -1, &go);
    const char *names[] = {"config.json", "dataset.json", "summary.json"};
    for (int i = 0; i < 3; i++) {
        char link[1200];
        snprintf(link, sizeof link, "%s/%s.tmp.%ld", run, names[i], (long)pid);
        cr_assert_eq(symlink(victim, link), 0);
    }
    cr_assert_eq(write(go, "x", 1), 1);
    close(go);
    cr_assert_eq(wait_code(pid), 0);
    char *v = tcli_slurp(victim);
    cr_assert(v && !strcmp(v, "precious\n"), "victim overwritten: %s", v ? v : "(gone)");
    free(v);
    char *cfg = file_in(run, "config.json");
    cr_assert(cfg && strstr(cfg, "\"model\": \"tiny\""));
    free(cfg);
    free(victim), free(run);
}

/* Paths too long for the run folder's files are refused before anything is made. */
Test(tools_cli_rundir, long_run_dir_refused)
{
    char seg[202], path[1300], first[400];
    memset(seg, 'd', 200);
    seg[200] = 0;
    snprintf(first, sizeof first, "%s/%s", work, seg);
    int n = snprintf(path, sizeof path, "%s", first);
    while (n < 1010) n += snprintf(path + n, sizeof path - (size_t)n, "/%s", seg);
    tcli_result r = TRAIN(path, "--epochs", "1");
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "--run-dir") && strstr(r.err, "900"), "%s", r.err);
    tcli_free(&r);
    cr_assert_not(tcli_exists(first), "nothing created");
    char *out = tcli_path(path, "cmp");
    r = tcli_run(60, "compare", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--out", out, NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "--out"), "%s", r.err);
    tcli_free(&r);
    cr_assert_not(tcli_exists(first), "nothing created");
    free(out);
}

/* SIGHUP (terminal closed) stops like SIGTERM: checkpoint, exit 129; the printed hint resumes. */
Test(tools_cli_rundir, sighup_checkpoints_and_hint_resumes)
{
    char *run = tcli_path(work, "run");
    const char *args[] = {"train", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch", "8",
                          "--limit-train", "2560", "--limit-test", "100", "--threads", "1", "--log-every", "1",
                          "--run-dir", run, "--epochs", "3", NULL};
    pid_t pid = tcli_spawn(work, args);
    char *out = tcli_path(work, "out.txt");
    cr_assert(wait_for(out, "step 3", 60), "training started");
    kill(pid, SIGHUP);
    int code = tcli_wait(pid, 30);
    char *o = tcli_slurp(out);
    cr_assert_eq(code, 129, "exit %d; %s", code, o);
    char *hint = strstr(o, "resume with: nnc ");
    cr_assert(hint, "%s", o);
    free(o);
    char *s = file_in(run, "summary.json");
    cr_assert(s && strstr(s, "\"status\": \"interrupted\""), "%s", s);
    free(s);
    cr_assert(exists_in(run, "last.ckpt"));
    /* exactly the hint: nnc train DATASET --run-dir RUN --resume */
    tcli_result r = tcli_run(60, "train", "cifar10", "--run-dir", run, "--resume", NULL);
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    cr_assert_float_eq(summary_num(run, "epochs"), 3.0, 1e-6);
    free(out), free(run);
}

/* A reader that goes away (SIGPIPE on stdout) does not kill the run: it trains on, checkpoints
 * and finishes. */
Test(tools_cli_rundir, closed_stdout_run_continues)
{
    char *run = tcli_path(work, "run");
    const char *args[] = {"train", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch", "8",
                          "--limit-train", "4096", "--limit-test", "100", "--threads", "1", "--log-every", "1",
                          "--run-dir", run, "--epochs", "3", NULL}; /* more lines than a pipe holds */
    int p[2];
    cr_assert_eq(pipe2(p, O_CLOEXEC), 0); /* the child holds only the write end */
    pid_t pid = spawn(args, p[1], NULL);
    close(p[1]);
    char buf[4096];
    size_t got = 0;
    while (got < sizeof buf - 1) {
        ssize_t k = read(p[0], buf + got, sizeof buf - 1 - got);
        if (k <= 0) break;
        got += (size_t)k;
        buf[got] = 0;
        if (strstr(buf, "step 3")) break;
    }
    close(p[0]);
    cr_assert(strstr(buf, "step 3"), "%s", buf);
    cr_assert_eq(wait_code(pid), 0);
    char *s = file_in(run, "summary.json");
    cr_assert(s && strstr(s, "\"status\": \"ok\""), "%s", s);
    free(s);
    cr_assert_float_eq(summary_num(run, "epochs"), 3.0, 1e-6);
    free(run);
}

/* Over `ulimit -f` a checkpoint write fails (EFBIG, not SIGXFSZ): exit 1, the previous
 * last.ckpt intact. */
Test(tools_cli_rundir, file_size_limit_exits_1_keeps_checkpoint)
{
    char *run = tcli_path(work, "run");
    tcli_result r = tcli_run(60, "train", "cifar10", "--data", data, "--no-download", "--model", "resnet8", "--batch",
                             "32", "--limit-train", "64", "--limit-test", "32", "--threads", "1", "--epochs", "1",
                             "--run-dir", run, NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    char *ck = file_in(run, "last.ckpt");
    cr_assert(ck);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 64 * 1024; /* config/metrics fit, a resnet8 checkpoint (~0.6 MB) does not */
    signal(SIGXFSZ, SIG_DFL);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    r = tcli_run(60, "train", "--run-dir", run, "--resume", "--epochs", "2", NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    cr_assert_eq(r.code, 1, "exit %d: %s", r.code, r.err);
    tcli_free(&r);
    char *after = file_in(run, "last.ckpt");
    cr_assert(after && !memcmp(after, ck, 64), "last.ckpt intact");
    char *p = tcli_path(run, "last.ckpt");
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    cr_assert_gt(st.st_size, 64 * 1024);
    free(p), free(after), free(ck), free(run);
}

#define COMPARE(out, algos, ...)                                                                               \
    tcli_run(100, "compare", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch", "32",     \
             "--limit-train", "256", "--limit-test", "100", "--threads", "1", "--epochs", "1", "--time-budget",  \
             "0", "--sched", "constant", "--workers", "2", "--tau", "2", "--algos", algos, "--out", out,          \
             __VA_ARGS__)

/* compare: nothing written without a dataset; an algorithm named twice refused; a used OUT
 * refused unless --overwrite or --resume. */
Test(tools_cli_rundir, compare_validates_and_refuses_used_out)
{
    char *out = tcli_path(work, "cmp");
    tcli_result r = tcli_run(60, "compare", "--data", data, "--no-download", "--model", "tiny", "--out", out, NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "DATASET"), "%s", r.err);
    cr_assert_not(tcli_exists(out), "no report without a dataset");
    tcli_free(&r);
    r = COMPARE(out, "dp,dp", NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "--algos") && strstr(r.err, "'dp' twice"), "%s", r.err);
    cr_assert_not(tcli_exists(out));
    tcli_free(&r);
    r = COMPARE(out, "dp", NULL);
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    char *md = file_in(out, "compare.md");
    cr_assert(md);
    r = COMPARE(out, "dp", NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, out) && strstr(r.err, "--overwrite"), "%s", r.err);
    tcli_free(&r);
    char *md2 = file_in(out, "compare.md");
    cr_assert_str_eq(md, md2);
    r = COMPARE(out, "dp", "--resume", NULL);
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    cr_assert(strstr(r.out, "nothing to do"), "%s", r.out);
    tcli_free(&r);
    char *md3 = file_in(out, "compare.md");
    cr_assert(md3 && strstr(md3, "| dp | 1 |"), "%s", md3);
    r = COMPARE(out, "dp", "--overwrite", NULL);
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    char *sub = tcli_path(out, "dp-s1");
    cr_assert_eq(count_rows(sub, "val", NULL), 1, "one run's rows");
    free(sub), free(md), free(md2), free(md3), free(out);
}
