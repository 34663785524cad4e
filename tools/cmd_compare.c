/* tools/cmd_compare.c - `nnc compare DATASET --algos A,B --seeds N`: every algorithm x seed as a
 * full in-process training run on the same data and budget, then compare.md/.csv/.svg. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/compare.h"
#include "tools/flatness.h"
#include "tools/train.h"

#define MAX_ALGOS 16

static const char *const REPORT_FILES[] = {"compare.md", "compare.csv", "compare.svg"};

/* The report files of an earlier compare in out_dir (lstat: a symlink counts): 1 when any. */
static int report_present(const char *out_dir, const char **which)
{
    for (size_t i = 0; i < sizeof REPORT_FILES / sizeof *REPORT_FILES; i++) {
        char path[RUN_DIR_MAX + 32];
        struct stat st;
        if (run_path(path, sizeof path, out_dir, REPORT_FILES[i])) return 0;
        if (!lstat(path, &st)) {
            *which = REPORT_FILES[i];
            return 1;
        }
    }
    return 0;
}

/* bytes_per_round of run_dir/summary.json (NAN when absent: a failed run). */
static double summary_bytes_per_round(const char *run_dir)
{
    char path[RUN_DIR_MAX + 32];
    double v = NAN;
    if (run_path(path, sizeof path, run_dir, "summary.json")) return NAN;
    char *t = cli_read_file(path, NULL);
    if (t && jr_num(t, "bytes_per_round", &v)) v = NAN;
    free(t);
    return v;
}

/* RUN/flatness.json (the --json object of `nnc flatness`) is written after each --flatness
 * measurement; a later compare --resume reuses it when it was taken with the same settings and
 * after the run's checkpoints were last written, instead of measuring again. */
static int flatness_cached(const char *run_dir, const flatness_opts *fo, double *lambda, double *topk)
{
    char path[RUN_DIR_MAX + 32], ck[RUN_DIR_MAX + 32];
    struct stat js, cs;
    if (run_path(path, sizeof path, run_dir, "flatness.json") || stat(path, &js)) return 0;
    const char *ckpts[] = {"best.ckpt", "last.ckpt"};
    for (int i = 0; i < 2; i++) {
        if (run_path(ck, sizeof ck, run_dir, ckpts[i])) return 0;
        if (!stat(ck, &cs) && (cs.st_mtim.tv_sec > js.st_mtim.tv_sec ||
                               (cs.st_mtim.tv_sec == js.st_mtim.tv_sec && cs.st_mtim.tv_nsec >= js.st_mtim.tv_nsec)))
            return 0; /* a checkpoint newer than the measurement */
    }
    char *t = cli_read_file(path, NULL);
    if (!t) return 0;
    double images, iters, k, starts, seed, batch, eps, l, top;
    int ok = !jr_num(t, "images", &images) && !jr_num(t, "iters", &iters) && !jr_num(t, "k", &k) &&
             !jr_num(t, "starts", &starts) && !jr_num(t, "seed", &seed) && !jr_num(t, "batch", &batch) &&
             !jr_num(t, "eps", &eps) && !jr_num(t, "lambda_max", &l) && !jr_num(t, "topk_sum", &top) &&
             images == fo->images && iters == fo->iters && k == fo->k && starts == fo->starts &&
             seed == (double)fo->seed && batch == fo->batch && eps == fo->eps && isfinite(l) && isfinite(top);
    free(t);
    if (ok) *lambda = l, *topk = top;
    return ok;
}

static void flatness_save(const char *run_dir, const flatness_opts *fo, const flatness_result *fr)
{
    char path[RUN_DIR_MAX + 32], *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f || run_path(path, sizeof path, run_dir, "flatness.json")) {
        if (f) fclose(f);
        free(buf);
        return;
    }
    flatness_print_json(f, fo, fr);
    fclose(f);
    if (cli_write_atomic(path, buf, len)) /* only a cache: the report goes on without it */
        fprintf(stderr, "nnc: warning: cannot write %s: %s\n", path, strerror(errno));
    free(buf);
}

int cmd_compare(int argc, char **argv)
{
    train_opts o;
    train_opts_init(&o);
    o.workers = 4;
    o.sched = "time-drop";
    o.time_budget = 60;
    o.epochs = 0;
    const char *algos = "mgrawa,lgrawa,easgd,lsgd,dp,local-sgd,slowmo", *out_dir = "compare";
    int seeds = 1, flatness = 0;
    double target_acc = 0;
    flatness_opts fo;
    flatness_opts_init(&fo);
    fo.starts = 1;
    fo.probes = 0;
    flag_spec specs[TRAIN_MAX_FLAGS + 8];
    int nf = train_flags(&o, specs);
    specs[nf++] = (flag_spec){"algos", FLAG_STR, &algos, "algorithms to compare, comma separated", 0};
    specs[nf++] = (flag_spec){"seeds", FLAG_INT, &seeds, "runs per algorithm (seeds --seed, --seed+1, ...)", 0};
    specs[nf++] = (flag_spec){"out", FLAG_STR, &out_dir, "folder for compare.md/.csv/.svg and the run folders", 0};
    specs[nf++] = (flag_spec){"target-acc", FLAG_DOUBLE, &target_acc,
                              "report the training time to reach this test accuracy (a fraction: 0.85 = 85%)", 0};
    specs[nf++] = (flag_spec){"flatness", FLAG_BOOL, &flatness,
                              "measure lambda_max and the top-k Hessian eigenvalue sum of each run's best.ckpt", 0};
    specs[nf++] = (flag_spec){"flatness-images", FLAG_INT, &fo.images, "--flatness: first N training images", 0};
    specs[nf++] = (flag_spec){"flatness-iters", FLAG_INT, &fo.iters, "--flatness: Lanczos iterations", 0};
    specs[nf++] = (flag_spec){"flatness-k", FLAG_INT, &fo.k, "--flatness: eigenvalues summed", 0};
    const char *pos[1];
    flag_table t = {.command = "compare",
                    .usage = "nnc compare DATASET --time-budget S --algos mgrawa,lgrawa,easgd,lsgd,dp,local-sgd,slowmo "
                             "--seeds N --workers M [train flags]",
                    .summary = "Run every algorithm x seed on the same data and budget, one after the other, each a full\n"
                               "training run in OUT/<algo>-s<seed>/, then write OUT/compare.md (table), compare.csv and\n"
                               "compare.svg (test accuracy vs training time). --drop-time defaults to 3/4 of the budget\n"
                               "with --sched time-drop. An OUT that holds a comparison is refused unless --resume\n"
                               "(continue each run) or --overwrite (start over). compare.md also has the bytes moved,\n"
                               "with --link the modelled communication seconds,\n"
                               "with --target-acc A the time to reach accuracy A (evaluated every --eval-seconds, default\n"
                               "budget/20), with --flatness the Hessian's lambda_max\n"
                               "and top-k sum (nnc flatness, 1 start, on best.ckpt), and a paired t comparison of every\n"
                               "algorithm with the best baseline over the same seeds (docs/compare.md).",
                    .flags = specs,
                    .nflags = nf,
                    .positional = pos,
                    .max_positional = 1};
    int r = flags_parse(&t, argc - 1, argv + 1);
    if (r == 1) return EXIT_OK;
    if (r) return r;
    if (t.npositional) o.dataset = pos[0];
    if (!o.dataset || !*o.dataset) {
        cli_error("compare: missing DATASET (cifar10, cifar100, fashion-mnist, mnist, imagefolder)");
        return EXIT_USAGE;
    }
    if (!out_dir || !*out_dir || strlen(out_dir) > RUN_DIR_MAX - 64) {
        cli_error("--out: expected a folder path of 1..%d characters, found %zu", RUN_DIR_MAX - 64,
                  out_dir ? strlen(out_dir) : 0);
        return EXIT_USAGE;
    }
    if (seeds < 1 || seeds > 100) {
        cli_error("--seeds: expected 1..100, found %d", seeds);
        return EXIT_USAGE;
    }
    if (!(target_acc >= 0 && target_acc <= 1)) {
        cli_error("--target-acc: expected a test accuracy as a fraction in (0, 1], e.g. 0.85 for 85%%, found %g",
                  target_acc);
        return EXIT_USAGE;
    }
    if (flatness && flatness_opts_check(&fo)) return EXIT_USAGE;
    if (!strcmp(o.sched, "time-drop") && !(o.drop_time > 0) && o.time_budget > 0) o.drop_time = 0.75 * o.time_budget;
    /* time to accuracy is read from evaluations: on a training-time grid (20 points over the
     * budget unless --eval-seconds says otherwise), so every algorithm is sampled alike */
    flag_spec *fes = flags_find(&t, "eval-seconds");
    if (target_acc > 0 && o.time_budget > 0 && fes && !fes->set && !o.resume) o.eval_seconds = o.time_budget / 20.0;
    if (o.run_dir) {
        cli_error("compare: --run-dir does not apply (each run gets OUT/<algo>-s<seed>)");
        return EXIT_USAGE;
    }
    if (o.resume && o.overwrite) {
        cli_error("--resume and --overwrite: expected one of them (continue the runs, or replace them), found both");
        return EXIT_USAGE;
    }
    char list[512], *names[MAX_ALGOS];
    int na = 0;
    if ((size_t)snprintf(list, sizeof list, "%s", algos) >= sizeof list) {
        cli_error("--algos: expected at most %zu characters, found %zu", sizeof list - 1, strlen(algos));
        return EXIT_USAGE;
    }
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        nnc_algo a;
        if (nnc_algo_parse(tok, &a)) {
            cli_error("--algos: %s", nnc_error_message());
            return EXIT_USAGE;
        }
        if (na == MAX_ALGOS) {
            cli_error("--algos: at most %d algorithms", MAX_ALGOS);
            return EXIT_USAGE;
        }
        for (int i = 0; i < na; i++)
            if (!strcmp(names[i], tok)) {
                cli_error("--algos: expected each algorithm once, found '%s' twice (its runs would share %s/%s-s<seed>)",
                          tok, out_dir, tok);
                return EXIT_USAGE;
            }
        names[na++] = tok;
    }
    if (!na) {
        cli_error("--algos: expected at least one algorithm, found '%s'", algos);
        return EXIT_USAGE;
    }
    /* Everything checked before anything is written: each run's flags, and whether OUT holds an
     * earlier comparison (refused unless --resume or --overwrite, like a run folder). */
    for (int a = 0; a < na; a++) {
        train_opts ro = o;
        ro.algo = names[a];
        if (!strcmp(names[a], "sgd")) ro.workers = 1;
        ro.resume = ro.overwrite = 0;
        int e = train_validate(&ro);
        if (e) return e;
    }
    const char *which = NULL;
    char used[300] = "";
    for (int a = 0; a < na && !which; a++)
        for (int s = 0; s < seeds && !which; s++) {
            char dir[RUN_DIR_MAX + 1], what[256];
            snprintf(dir, sizeof dir, "%s/%s-s%ld", out_dir, names[a], o.seed + s);
            if (run_dir_used(dir, what, sizeof what)) {
                snprintf(used, sizeof used, "%s-s%ld/%s", names[a], o.seed + s, what);
                which = used;
            }
        }
    if (!which) report_present(out_dir, &which);
    if (which && !o.resume && !o.overwrite) {
        cli_error("compare: %s already holds a comparison (%s): continue it with --resume, replace it with "
                  "--overwrite, or choose another --out",
                  out_dir, which);
        return EXIT_USAGE;
    }
    struct stat ost;
    int created = stat(out_dir, &ost) != 0;
    if (cli_mkdirs(out_dir)) return EXIT_USAGE;
    if (o.overwrite)
        for (size_t i = 0; i < sizeof REPORT_FILES / sizeof *REPORT_FILES; i++) {
            char path[RUN_DIR_MAX + 32];
            run_path(path, sizeof path, out_dir, REPORT_FILES[i]);
            if (unlink(path) && errno != ENOENT) {
                cli_error("--overwrite: cannot remove %s: %s", path, strerror(errno));
                return EXIT_RUNTIME;
            }
        }
    int n = na * seeds;
    compare_run *runs = calloc((size_t)n, sizeof *runs);
    train_outcome *outs = calloc((size_t)n, sizeof *outs);
    double **es = calloc((size_t)n, sizeof *es), **ea = calloc((size_t)n, sizeof *ea);
    if (!runs || !outs || !es || !ea) {
        cli_error("out of memory");
        free(runs), free(outs), free(es), free(ea);
        return EXIT_RUNTIME;
    }
    int rc = EXIT_OK, k = 0;
    for (int a = 0; a < na && rc != EXIT_SIGINT && rc != EXIT_SIGTERM; a++)
        for (int s = 0; s < seeds; s++, k++) {
            train_opts ro = o;
            char dir[RUN_DIR_MAX + 1], ck[RUN_DIR_MAX + 32], what[256];
            snprintf(dir, sizeof dir, "%s/%s-s%ld", out_dir, names[a], o.seed + s);
            ro.algo = names[a];
            ro.seed = o.seed + s;
            ro.run_dir = dir;
            if (o.resume) {
                /* continue the runs that have a checkpoint; start the others (over) */
                struct stat st;
                snprintf(ck, sizeof ck, "%s/last.ckpt", dir);
                ro.resume = !stat(ck, &st);
                ro.overwrite = !ro.resume && run_dir_used(dir, what, sizeof what);
            }
            if (!strcmp(names[a], "sgd")) ro.workers = 1;
            printf("== compare: %s seed %ld (%d/%d)\n", names[a], ro.seed, k + 1, n);
            fflush(stdout);
            int e = train_execute(&ro, &outs[k]);
            compare_run *cr = &runs[k];
            snprintf(cr->algo, sizeof cr->algo, "%s", names[a]);
            cr->seed = ro.seed;
            cr->exit_code = e;
            const nnc_train_result *res = &outs[k].res;
            cr->test_acc = res->test_acc;
            cr->center_acc = ro.workers > 1 ? res->center_test_acc : NAN;
            cr->average_acc = ro.workers > 1 ? res->average_test_acc : NAN;
            cr->rounds = res->rounds;
            for (int w = 0; w < ro.workers && w < NNC_MAX_WORKERS; w++) cr->local_steps += res->local_steps[w];
            if (!cr->local_steps) cr->local_steps = res->steps;
            cr->img_per_s = res->images_per_sec;
            cr->seconds = res->seconds;
            cr->comm_s = res->comm_model_seconds;
            cr->bytes_per_round = ro.workers > 1 ? summary_bytes_per_round(dir) : 0;
            cr->flat_lambda = cr->flat_topk = NAN;
            es[k] = calloc((size_t)outs[k].nevals + 1, sizeof(double));
            ea[k] = calloc((size_t)outs[k].nevals + 1, sizeof(double));
            for (int i = 0; es[k] && ea[k] && i < outs[k].nevals; i++) {
                if (outs[k].evals[i].which) continue; /* the reported model only */
                es[k][cr->nevals] = outs[k].evals[i].seconds;
                ea[k][cr->nevals++] = outs[k].evals[i].acc;
            }
            cr->eval_s = es[k];
            cr->eval_acc = ea[k];
            if (e == EXIT_SIGINT || e == EXIT_SIGTERM) {
                rc = e;
                k++;
                break;
            }
            if (e && !rc) rc = e;
            if (e == EXIT_USAGE) { /* the same flags would fail every run */
                a = na;
                k++;
                break;
            }
        }
    for (int i = 0; flatness && i < k && rc != EXIT_SIGINT && rc != EXIT_SIGTERM; i++) {
        if (runs[i].exit_code) continue;
        char dir[RUN_DIR_MAX + 1];
        snprintf(dir, sizeof dir, "%s/%s-s%ld", out_dir, runs[i].algo, runs[i].seed);
        if (flatness_cached(dir, &fo, &runs[i].flat_lambda, &runs[i].flat_topk)) {
            printf("== flatness: %s seed %ld (%d/%d): lambda_max %.6g, top-%d sum %.6g (from %s/flatness.json)\n",
                   runs[i].algo, runs[i].seed, i + 1, k, runs[i].flat_lambda, fo.k, runs[i].flat_topk, dir);
            continue;
        }
        printf("== flatness: %s seed %ld (%d/%d)\n", runs[i].algo, runs[i].seed, i + 1, k);
        fflush(stdout);
        flatness_result fr;
        int e = flatness_measure(dir, o.dataset, o.data, &fo, &fr);
        if (e) {
            if (!rc) rc = e;
            continue;
        }
        runs[i].flat_lambda = fr.lambda_mean;
        runs[i].flat_topk = fr.top_mean;
        flatness_save(dir, &fo, &fr);
        printf("   lambda_max %.6g, top-%d sum %.6g (%.1f s)\n", fr.lambda_mean, fo.k, fr.top_mean, fr.seconds);
    }
    compare_opts copts = {.target_acc = target_acc, .flatness = flatness, .flat_k = fo.k};
    int any = 0;
    for (int i = 0; i < k; i++) any |= runs[i].exit_code != EXIT_USAGE;
    if (!any && rc == EXIT_USAGE) {
        /* nothing ran (data or flags refused): no report, and no folder made for it */
        if (created) rmdir(out_dir);
    } else if (compare_write_opts(out_dir, runs, k, &copts)) rc = rc ? rc : EXIT_RUNTIME;
    else printf("wrote %s/compare.md, compare.csv, compare.svg (%d runs)\n", out_dir, k);
    for (int i = 0; i < n; i++) {
        train_outcome_free(&outs[i]);
        free(es[i]), free(ea[i]);
    }
    free(runs), free(outs), free(es), free(ea);
    return rc;
}
