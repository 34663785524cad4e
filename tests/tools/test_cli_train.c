/* tests/tools/test_cli_train.c - `nnc train/eval/predict` end to end on generated CIFAR-format
 * files: run folder (plain progress, metrics.csv, config precedence), eval confusion matrix, wrong
 * checkpoints, epochs
 * already reached (D10), SIGINT/SIGTERM + resume (E8), a 2-worker GRAWA run, exit codes (G1). */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "models/models.h"
#include "nn/checkpoint.h"
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

TestSuite(tools_cli_train, .init = setup, .fini = teardown, .timeout = 120);

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

/* metrics.csv: header exactly once, every row has the header's 9 columns, train steps strictly increase. */
static int check_metrics(const char *run, int *nval, int *nround)
{
    char *t = file_in(run, "metrics.csv");
    cr_assert(t);
    const char *header = "kind,step,epoch,seconds,loss,acc,lr,img_per_s,extra\n";
    cr_assert_eq(strncmp(t, header, strlen(header)), 0, "%s", t);
    cr_assert_null(strstr(t + 1, "kind,step"), "header once");
    int ntrain = 0;
    long last = -1;
    *nval = *nround = 0;
    char *save = NULL;
    for (char *line = strtok_r(t + strlen(header), "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int commas = 0;
        for (char *c = line; *c; c++) commas += *c == ',';
        cr_assert_eq(commas, 8, "9 columns: %s", line);
        if (!strncmp(line, "train,", 6)) {
            long step = strtol(line + 6, NULL, 10);
            cr_assert_gt(step, last, "train steps increase: %s", line);
            last = step;
            ntrain++;
        } else if (!strncmp(line, "val,", 4)) {
            (*nval)++;
        } else if (!strncmp(line, "round,", 6)) {
            (*nround)++;
        }
    }
    free(t);
    return ntrain;
}

Test(tools_cli_train, end_to_end_run_folder)
{
    char *run = tcli_path(work, "run");
    tcli_result r = TRAIN(run, "--epochs", "2", "--seed", "3");
    cr_assert_eq(r.code, 0, "exit %d\nstdout %s\nstderr %s", r.code, r.out, r.err);
    /* plain progress lines without \r or ANSI escapes */
    cr_assert_null(strchr(r.out, '\r'));
    cr_assert_null(strchr(r.out, '\033'));
    cr_assert(strstr(r.out, "step") && strstr(r.out, "loss") && strstr(r.out, "img/s") && strstr(r.out, "ETA"),
              "%s", r.out);
    cr_assert(strstr(r.out, "test acc"), "%s", r.out);
    const char *files[] = {"config.json", "metrics.csv", "plot.svg", "summary.json", "last.ckpt", "best.ckpt",
                           "dataset.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char *p = tcli_path(run, files[i]);
        cr_assert(tcli_exists(p), "%s missing", p);
        free(p);
    }
    double acc = summary_num(run, "test_acc");
    cr_assert(acc >= 0 && acc <= 1);
    cr_assert_float_eq(summary_num(run, "epochs"), 2.0, 1e-6);
    cr_assert(isfinite(summary_num(run, "train_loss")));
    cr_assert_gt(summary_num(run, "images_per_sec"), 0);
    cr_assert_geq(summary_num(run, "threads_per_worker"), 1);
    {
        char *sum = file_in(run, "summary.json");
        cr_assert(sum && strstr(sum, "\"placement\": {\"cores\": ") && strstr(sum, "\"workers\": [{\"worker\": 0,"),
                  "the placement plan in summary.json: %s", sum);
        free(sum);
    }
    cr_assert(strstr(r.err, "placement: 1 worker x ") || strstr(r.out, "placement: 1 worker x "),
              "the plan is logged once at the start: %s", r.err);
    int nval, nround;
    cr_assert_geq(check_metrics(run, &nval, &nround), 4);
    cr_assert_geq(nval, 2, "one val row per epoch");
    char *svg = file_in(run, "plot.svg");
    cr_assert(svg && strstr(svg, "<svg") && strstr(svg, "polyline"));
    free(svg);
    char *meta = file_in(run, "dataset.json");
    cr_assert(strstr(meta, "\"mean\"") && strstr(meta, "truck"), "%s", meta);
    free(meta);
    tcli_free(&r);

    /* eval prints top-1, per-class accuracy and a 10x10 confusion matrix summing to 100 */
    char *ck = tcli_path(run, "last.ckpt");
    r = tcli_run(60, "eval", "cifar10", "--ckpt", ck, "--data", data, "--limit", "100", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "top-1 accuracy") && strstr(r.out, "per-class accuracy"), "%s", r.out);
    char *m = strstr(r.out, "confusion matrix");
    cr_assert(m, "%s", r.out);
    m = strchr(m, '\n') + 1;
    m = strchr(m, '\n') + 1; /* column header */
    long sum = 0;
    for (int row = 0; row < 10; row++) {
        char *end;
        long label = strtol(m, &end, 10);
        cr_assert_eq(label, row);
        for (int c = 0; c < 10; c++) {
            m = end;
            sum += strtol(m, &end, 10);
            cr_assert_neq(end, m);
        }
        m = strchr(end, '\n') + 1;
    }
    cr_assert_eq(sum, 100, "confusion matrix sum = test-set size");
    tcli_free(&r);

    /* predict: a generated image of class 4's brightness, top-3 with class names */
    char *img = tcli_path(work, "x.ppm");
    FILE *f = fopen(img, "wb");
    fprintf(f, "P6\n32 32\n255\n");
    for (int i = 0; i < 32 * 32; i++) {
        unsigned char px[3] = {112, 142, 112};
        fwrite(px, 1, 3, f);
    }
    fclose(f);
    r = tcli_run(60, "predict", "--ckpt", ck, img, "--top", "3", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, " 1. ") && strstr(r.out, " 3. ") && !strstr(r.out, " 4. "), "%s", r.out);
    cr_assert(strstr(r.out, "%"), "%s", r.out);
    tcli_free(&r);
    r = tcli_run(60, "predict", "--ckpt", run, img, img, "--top", "1", NULL); /* run folder = best.ckpt */
    cr_assert_eq(r.code, 0, "%s", r.err);
    char *first = strstr(r.out, " 1. ");
    cr_assert(first && strstr(first + 1, " 1. ") && !strstr(r.out, " 2. "), "two images, top-1: %s", r.out);
    cr_assert(strstr(r.out, "airplane") || strstr(r.out, "automobile") || strstr(r.out, "bird") ||
                  strstr(r.out, "cat") || strstr(r.out, "deer") || strstr(r.out, "dog") || strstr(r.out, "frog") ||
                  strstr(r.out, "horse") || strstr(r.out, "ship") || strstr(r.out, "truck"),
              "class names from the run's metadata: %s", r.out);
    tcli_free(&r);
    /* without dataset.json the checkpoint's own meta/json section supplies mean/std and names */
    char *side = tcli_path(run, "dataset.json"), *side_text = tcli_slurp(side);
    cr_assert_eq(unlink(side), 0);
    r = tcli_run(60, "predict", "--ckpt", ck, img, "--top", "10", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "airplane") && strstr(r.out, "truck"), "names from meta/json: %s", r.out);
    tcli_free(&r);
    FILE *sf = fopen(side, "w");
    fputs(side_text, sf);
    fclose(sf);
    free(side), free(side_text);
    r = tcli_run(60, "predict", "--ckpt", ck, "/nonexistent.png", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "/nonexistent.png"), "%s", r.err);
    tcli_free(&r);

    /* the checkpoint refused as another architecture; garbage file; arch vs dataset */
    r = tcli_run(60, "eval", "cifar10", "--ckpt", ck, "--data", data, "--model", "resnet20", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "architecture mismatch") && strstr(r.err, "resnet20") && strstr(r.err, "tiny"), "%s",
              r.err);
    tcli_free(&r);
    r = tcli_run(60, "eval", "cifar10", "--ckpt", img, "--data", data, NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, img), "%s", r.err);
    tcli_free(&r);
    free(img);
    free(ck);
    free(run);
}

/* a resnet20 checkpoint labelled resnet32 (the loader names the first mismatching tensor
 * and shapes), and a 100-class checkpoint evaluated on CIFAR-10. */
Test(tools_cli_train, wrong_architecture_checkpoint)
{
    nnc_model *m;
    nnc_model_config mc = nnc_model_config_default();
    cr_assert_eq(nnc_model_new("resnet20", &mc, 1, &m), 0);
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_new("resnet32/c3/s32/k10", &c), 0);
    cr_assert_eq(nnc_ckpt_add_params(c, "", nnc_model_params(m)), 0);
    char *p = tcli_path(work, "bad.ckpt");
    cr_assert_eq(nnc_ckpt_save(c, p), 0);
    nnc_ckpt_free(c);
    tcli_result r = tcli_run(60, "eval", "cifar10", "--ckpt", p, "--data", data, NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, p) && strstr(r.err, "shape mismatch") && strstr(r.err, "expected (16,16,3,3)") &&
                  strstr(r.err, "found (32,16,3,3)"),
              "%s", r.err);
    tcli_free(&r);
    nnc_model_free(m);

    mc.num_classes = 100;
    nnc_model *m100;
    cr_assert_eq(nnc_model_new("tiny", &mc, 1, &m100), 0);
    cr_assert_eq(nnc_ckpt_new(nnc_model_arch(m100), &c), 0);
    cr_assert_eq(nnc_ckpt_add_params(c, "", nnc_model_params(m100)), 0);
    cr_assert_eq(nnc_ckpt_save(c, p), 0);
    nnc_ckpt_free(c);
    r = tcli_run(60, "eval", "cifar10", "--ckpt", p, "--data", data, NULL);
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "100 classes") && strstr(r.err, "10 classes"), "%s", r.err);
    tcli_free(&r);
    nnc_model_free(m100);
    free(p);
}

/* resume appends to metrics.csv without a second header; a lower --epochs exits 0
 * with "already at epoch" and leaves the folder untouched. */
Test(tools_cli_train, resume_appends_and_d10)
{
    char *run = tcli_path(work, "run");
    tcli_result r = TRAIN(run, "--epochs", "1");
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    r = TRAIN(run, "--epochs", "2", "--resume");
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    int nval, nround;
    check_metrics(run, &nval, &nround);
    cr_assert_geq(nval, 2);
    cr_assert_float_eq(summary_num(run, "epochs"), 2.0, 1e-6);
    char *before = file_in(run, "metrics.csv"), *ck_before = file_in(run, "last.ckpt");
    r = TRAIN(run, "--epochs", "1", "--resume");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "already at epoch 2 >= target 1"), "%s", r.out);
    tcli_free(&r);
    char *after = file_in(run, "metrics.csv"), *ck_after = file_in(run, "last.ckpt");
    cr_assert_str_eq(before, after);
    cr_assert(ck_before && ck_after);
    free(before), free(after), free(ck_before), free(ck_after);
    /* a different worker count is refused with an explanation, not resumed wrongly */
    r = TRAIN(run, "--epochs", "3", "--resume", "--workers", "2", "--algo", "mgrawa");
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert(strstr(r.err, "resum"), "%s", r.err);
    tcli_free(&r);
    char *none = tcli_path(work, "none");
    r = TRAIN(none, "--epochs", "1", "--resume");
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "last.ckpt"), "%s", r.err);
    tcli_free(&r);
    free(none);
    free(run);
}

/* flag > config file > default, and the dumped config.json reproduces the run. */
Test(tools_cli_train, config_precedence_and_reproduction)
{
    char *cfg = tcli_path(work, "cfg.txt");
    FILE *f = fopen(cfg, "w");
    fputs("# key = value lines\nepochs = 1\nbatch = 16\nmomentum = 0.5\nseed = 11\nwd-bn-bias = false\n", f);
    fclose(f);
    char *run1 = tcli_path(work, "r1"), *run2 = tcli_path(work, "r2");
    tcli_result r = TRAIN(run1, "--config", cfg, "--momentum", "0.8");
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    char *dump = file_in(run1, "config.json");
    cr_assert(strstr(dump, "\"batch\": 32"), "flag beats config: %s", dump);
    cr_assert(strstr(dump, "\"epochs\": 1"), "config beats default: %s", dump);
    cr_assert(strstr(dump, "\"seed\": 11"), "%s", dump);
    cr_assert(strstr(dump, "\"momentum\": 0.8"), "%s", dump);
    cr_assert(strstr(dump, "\"wd\": "), "defaults dumped too: %s", dump);
    cr_assert(strstr(dump, "\"resume\": false"));
    cr_assert(strstr(dump, "\"wd-bn-bias\": false"), "%s", dump);
    free(dump);
    char *dumped = tcli_path(run1, "config.json");
    r = tcli_run(60, "train", "--config", dumped, "--run-dir", run2, NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    cr_assert_eq(summary_num(run1, "test_loss"), summary_num(run2, "test_loss"), "same run from the dump");
    cr_assert_eq(summary_num(run1, "train_loss"), summary_num(run2, "train_loss"));
    /* the same run with weight decay on BN and biases too reaches other parameters */
    char *run3 = tcli_path(work, "r3");
    r = tcli_run(60, "train", "--config", dumped, "--run-dir", run3, "--wd-bn-bias", NULL);
    cr_assert_eq(r.code, 0, "%s", r.err);
    tcli_free(&r);
    cr_assert_neq(summary_num(run1, "train_loss"), summary_num(run3, "train_loss"), "--wd-bn-bias reaches the optimizer");
    free(run3);
    free(dumped), free(cfg), free(run1), free(run2);
}

/* Wait until path contains needle (or timeout); returns 1 if found. */
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

/* SIGINT mid-run finishes the step, writes last.ckpt, exits 130; the run resumes. SIGTERM 143. */
static void interrupt_and_resume(int sig, int want)
{
    char *run = tcli_path(work, "run");
    const char *args[] = {"train", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch", "32",
                          "--limit-train", "256", "--limit-test", "100", "--lr", "0.05", "--threads", "1",
                          "--log-every", "1", "--run-dir", run, "--epochs", "100000", NULL};
    pid_t pid = tcli_spawn(work, args);
    char *out = tcli_path(work, "out.txt");
    cr_assert(wait_for(out, "step 3", 60), "training started");
    kill(pid, sig);
    int code = tcli_wait(pid, 30);
    char *o = tcli_slurp(out);
    cr_assert_eq(code, want, "exit %d after signal %d; stdout %s", code, sig, o);
    cr_assert(strstr(o, "resume with"), "%s", o);
    free(o);
    char *ck = tcli_path(run, "last.ckpt");
    cr_assert(tcli_exists(ck));
    double done = summary_num(run, "epochs");
    cr_assert(done < 100000);
    char target[32];
    snprintf(target, sizeof target, "%d", (int)done + 1);
    tcli_result r = TRAIN(run, "--epochs", target, "--resume");
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    int nval, nround;
    check_metrics(run, &nval, &nround);
    cr_assert_float_eq(summary_num(run, "epochs"), (double)((int)done + 1), 1e-6);
    free(ck), free(out), free(run);
}

Test(tools_cli_train, sigint_checkpoint_resume) { interrupt_and_resume(SIGINT, 130); }
Test(tools_cli_train, sigterm_exits_143) { interrupt_and_resume(SIGTERM, 143); }

Test(tools_cli_train, workers2_mgrawa_rounds)
{
    char *run = tcli_path(work, "run");
    tcli_result r = TRAIN(run, "--epochs", "1", "--workers", "2", "--algo", "mgrawa", "--tau", "2", "--sync",
                          "lockstep", "--bn-batches", "1");
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    cr_assert(strstr(r.out, "round ") && strstr(r.out, " norm "), "%s", r.out);
    tcli_free(&r);
    int nval, nround;
    check_metrics(run, &nval, &nround);
    cr_assert_geq(nround, 1);
    double c = summary_num(run, "center_test_acc"), a = summary_num(run, "average_test_acc");
    cr_assert(c >= 0 && c <= 1 && a >= 0 && a <= 1);
    cr_assert_geq(summary_num(run, "rounds"), 1);
    char *s = file_in(run, "summary.json");
    cr_assert(strstr(s, "\"local_steps\": [") && strstr(s, "\"bytes_per_round\"") && strstr(s, "\"sync_seconds\""),
              "%s", s);
    free(s);
    free(run);
}

/* The modelled link and the round rows: --link is charged (summary comm_model_seconds = the
 * sum of the rows' comm_s), recorded in config.json and kept by --resume (a different value is
 * refused); each round row carries the global step at that round (lockstep: tau * M per round). */
Test(tools_cli_train, link_and_round_rows)
{
    char *run = tcli_path(work, "run");
    tcli_result r = TRAIN(run, "--epochs", "1", "--workers", "2", "--algo", "mgrawa", "--tau", "2", "--sync",
                          "lockstep", "--bn-batches", "1", "--link", "10ms,1Gbit", "--eval-every", "0");
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    char *m = file_in(run, "metrics.csv");
    cr_assert(m);
    double comm = 0.0;
    long k = 0;
    for (char *save = NULL, *line = strtok_r(m, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "round,", 6)) continue;
        k++;
        cr_assert_eq(strtol(line + 6, NULL, 10), k * 2 * 2, "round %ld: %s", k, line);
        char *c = strstr(line, "comm_s=");
        cr_assert(c, "%s", line);
        comm += strtod(c + 7, NULL);
    }
    free(m);
    cr_assert_geq(k, 2);
    cr_assert_eq((long)summary_num(run, "rounds"), k);
    /* per round: 2 latencies of the ring (M = 2) + 2 of the norm all-gather = 40 ms and the bytes */
    cr_assert(comm >= k * 0.040 - 1e-3, "comm %.4f over %ld rounds", comm, k);
    cr_assert(fabs(summary_num(run, "comm_model_seconds") - comm) < 1e-3 * k);
    cr_assert_geq(summary_num(run, "seconds"), k * 0.040);
    char *cfg = file_in(run, "config.json");
    cr_assert(cfg && strstr(cfg, "\"link\": \"10ms,1Gbit\""), "%s", cfg);
    free(cfg);
    r = TRAIN(run, "--resume", "--epochs", "2", "--link", "1ms,1Gbit");
    cr_assert_eq(r.code, 2, "%s\n%s", r.out, r.err);
    cr_assert(strstr(r.err, "--link"), "%s", r.err);
    tcli_free(&r);
    r = TRAIN(run, "--resume", "--epochs", "2");
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    char *sm = file_in(run, "summary.json");
    cr_assert(strstr(sm, "\"link\": \"10ms,1Gbit\""), "resume keeps the link: %s", sm);
    free(sm);
    cr_assert_gt(summary_num(run, "comm_model_seconds"), 0.0);
    r = TRAIN(run, "--overwrite", "--epochs", "1", "--link", "10ms");
    cr_assert_eq(r.code, 2, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    r = TRAIN(run, "--overwrite", "--epochs", "1", "--eval-seconds", "-1");
    cr_assert_eq(r.code, 2, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    free(run);
}

/* G1: usage errors exit 2 before touching anything; divergence exits 3. */
Test(tools_cli_train, exit_codes)
{
    char *run = tcli_path(work, "run");
    tcli_result r = TRAIN(run, "--epochs", "1", "--sched", "linear");
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--sched") && strstr(r.err, "'linear'"), "%s", r.err);
    tcli_free(&r);
    r = TRAIN(run, "--epochs", "1", "--algo", "grawaa");
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--algo") && strstr(r.err, "'grawaa'"), "%s", r.err);
    tcli_free(&r);
    r = TRAIN(run, "--epochs", "1", "--model", "resnet21");
    cr_assert_eq(r.code, 2, "%s", r.err);
    tcli_free(&r);
    r = TRAIN(run, "--epochs", "1", "--sched", "multistep");
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--milestones"), "%s", r.err);
    tcli_free(&r);
    r = tcli_run(60, "train", "cifar10", "--data", "/nonexistent/d", "--no-download", "--epochs", "1", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "/nonexistent/d") && strstr(r.err, "No such file"), "%s", r.err);
    tcli_free(&r);
    setenv("NNC_FAULT", "backward_nan:conv2d", 1);
    r = TRAIN(run, "--epochs", "1", "--anomaly");
    unsetenv("NNC_FAULT");
    cr_assert_eq(r.code, 3, "divergence exits 3: %d %s", r.code, r.err);
    tcli_free(&r);
    free(run);
}

/* compare: algorithms x seeds, each a run folder; compare.md has one row per algorithm with
 * mean +- std, compare.csv one row per run, compare.svg a series per algorithm. */
Test(tools_cli_train, compare_table_and_plot)
{
    char *out = tcli_path(work, "cmp");
    tcli_result r = tcli_run(100, "compare", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch",
                             "32", "--limit-train", "256", "--limit-test", "100", "--threads", "1", "--epochs", "1",
                             "--time-budget", "0", "--sched", "constant", "--workers", "2", "--tau", "2", "--algos",
                             "mgrawa,dp", "--seeds", "2", "--seed", "0", "--out", out, NULL);
    cr_assert_eq(r.code, 0, "%s\n%s", r.out, r.err);
    tcli_free(&r);
    char *md = file_in(out, "compare.md"), *csv = file_in(out, "compare.csv"), *svg = file_in(out, "compare.svg");
    cr_assert(md && csv && svg);
    cr_assert(strstr(md, "| algorithm |") && strstr(md, "| mgrawa | 2 |") && strstr(md, "| dp | 2 |"), "%s", md);
    cr_assert(strstr(md, "±"), "%s", md);
    int lines = 0;
    for (char *p = csv; *p; p++) lines += *p == '\n';
    cr_assert_eq(lines, 5, "header + 4 runs: %s", csv);
    cr_assert(strstr(csv, "\nmgrawa,0,0,") && strstr(csv, "\ndp,1,0,"), "%s", csv);
    cr_assert(strstr(svg, ">mgrawa<") && strstr(svg, ">dp<"), "%s", svg);
    char *sub = tcli_path(out, "dp-s1/summary.json");
    cr_assert(tcli_exists(sub));
    free(sub), free(md), free(csv), free(svg), free(out);
}

/* G1: a checkpoint that cannot be written (file size limit) is a runtime failure: exit 1,
 * with the path in the message. */
Test(tools_cli_train, checkpoint_write_failure_exits_1)
{
    char *run = tcli_path(work, "run");
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 64 * 1024; /* config/metrics fit, a resnet8 checkpoint (~0.6 MB) does not */
    signal(SIGXFSZ, SIG_IGN);   /* inherited: writes fail with EFBIG instead of killing */
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    tcli_result r = tcli_run(60, "train", "cifar10", "--data", data, "--no-download", "--model", "resnet8", "--batch",
                             "32", "--limit-train", "64", "--limit-test", "32", "--threads", "1", "--epochs", "1",
                             "--run-dir", run, NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    cr_assert_eq(r.code, 1, "exit %d: %s", r.code, r.err);
    cr_assert(strstr(r.err, "ckpt"), "names the checkpoint: %s", r.err);
    tcli_free(&r);
    free(run);
}

/* with worker 1 stalled (fault hook) the first SIGINT cannot finish a step; the second one
 * exits at once with 130. The same stall with --sync-timeout 1 exits 1 naming worker 1. */
Test(tools_cli_train, second_sigint_and_stalled_worker)
{
    char *run = tcli_path(work, "run");
    const char *args[] = {"train", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch", "32",
                          "--limit-train", "256", "--limit-test", "100", "--threads", "1", "--workers", "2",
                          "--algo", "mgrawa", "--sync", "lockstep", "--tau", "2", "--sync-timeout", "60",
                          "--run-dir", run, "--overwrite", "--epochs", "5", NULL};
    setenv("NNC_FAULT", "worker_stall:1", 1);
    pid_t pid = tcli_spawn(work, args);
    char *out = tcli_path(work, "out.txt");
    cr_assert(wait_for(out, "training tiny", 30), "started");
    usleep(300000);
    kill(pid, SIGINT);
    cr_assert_eq(tcli_wait(pid, 0.5), -1, "a stalled run cannot stop after the first SIGINT");
    /* tcli_wait killed it on timeout: start again and send two SIGINTs */
    pid = tcli_spawn(work, args);
    cr_assert(wait_for(out, "training tiny", 30), "started");
    usleep(300000);
    kill(pid, SIGINT);
    usleep(200000);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kill(pid, SIGINT);
    int code = tcli_wait(pid, 5);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_eq(code, 130, "second SIGINT exits 130, got %d", code);
    cr_assert_lt((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9, 2.0, "at once");

    char *run2 = tcli_path(work, "run2");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tcli_result r = tcli_run(30, "train", "cifar10", "--data", data, "--no-download", "--model", "tiny", "--batch",
                             "32", "--limit-train", "256", "--limit-test", "100", "--threads", "1", "--workers", "2",
                             "--algo", "mgrawa", "--sync", "lockstep", "--tau", "2", "--sync-timeout", "1",
                             "--run-dir", run2, "--epochs", "5", NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    unsetenv("NNC_FAULT");
    cr_assert_eq(r.code, 1, "stall is a runtime failure: %d %s", r.code, r.err);
    cr_assert(strstr(r.err, "worker 1"), "names the worker: %s", r.err);
    cr_assert_lt((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9, 1 + 5.0, "within the timeout");
    tcli_free(&r);
    free(run), free(run2), free(out);
}
