/* tools/cmd_train.c - `nnc train DATASET`: flags, data (fetched on first use), signals, progress
 * and the run folder around nnc_train(). train_execute() is shared with `nnc compare`. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "models/models.h"
#include "nn/checkpoint.h"
#include "nn/fileio.h"
#include "nn/status.h"
#include "nn/threads.h"
#include "tools/train.h"

/* ---- signals: the first SIGINT/SIGTERM/SIGHUP asks nnc_train to stop after the current step
 * (it writes a checkpoint); a second SIGINT exits at once. SIGPIPE and SIGXFSZ are ignored: a
 * write to a closed stdout or past `ulimit -f` fails (EPIPE, EFBIG) instead of killing. ---- */
static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    if (g_stop && sig == SIGINT) _exit(EXIT_SIGINT);
    g_stop = sig;
    static const char msg[] = "\nnnc: stopping after this step (checkpoint follows); Ctrl-C again to quit now\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* the terminal went away: stop with a checkpoint, exit 129; unless started ignoring SIGHUP
     * (nohup), which keeps it running */
    struct sigaction hup;
    if (sigaction(SIGHUP, NULL, &hup) || hup.sa_handler != SIG_IGN) sigaction(SIGHUP, &sa, NULL);
    /* The graceful stop of an MPI run: mpirun forwards SIGUSR1 to every rank, while on SIGINT or
     * SIGTERM it stops relaying output and kills the ranks 1 s after a SIGTERM. */
    sigaction(SIGUSR1, &sa, NULL);
}

/* From the start of a run: progress output to a reader that went away (EPIPE) is dropped and
 * the training goes on; a file write over RLIMIT_FSIZE fails with EFBIG (exit 1, the previous
 * checkpoint stays). */
static void ignore_write_signals(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
}

static int stop_exit_code(int sig)
{
    return sig == SIGTERM ? EXIT_SIGTERM : sig == SIGHUP ? EXIT_SIGHUP : EXIT_SIGINT;
}

void train_opts_init(train_opts *o)
{
    nnc_train_config d = nnc_train_config_default();
    memset(o, 0, sizeof *o);
    o->model = d.model ? d.model : "resnet20";
    o->epochs = d.epochs;
    o->time_budget = d.time_budget;
    o->batch = d.batch;
    o->lr = d.lr;
    o->momentum = d.sgd.momentum;
    o->nesterov = d.sgd.nesterov;
    o->decay_bn_bias = d.sgd.decay_bn_bias;
    o->wd = d.sgd.weight_decay;
    o->sched = "auto";
    o->gamma = d.sched.gamma > 0 ? d.sched.gamma : 0.1f;
    o->step_epochs = d.sched.step_epochs > 0 ? d.sched.step_epochs : 30;
    o->drop_time = d.sched.drop_seconds;
    o->seed = (long)d.seed;
    o->threads = 0; /* all online cores for one replica */
    o->precision = nnc_precision_name(d.precision);
    o->augment = -1; /* auto: per dataset, see augment_for() */
    o->download = 1;
    o->workers = d.workers > 0 ? d.workers : 1;
    o->algo = nnc_algo_name(d.algo);
    o->sync = d.sync == NNC_SYNC_LOCKSTEP ? "lockstep" : "async";
    o->norm = d.norm_kind == NNC_NORM_GLOBAL_L2 ? "l2" : "sum";
    o->tau = d.tau;
    o->pull = d.pull;
    o->prox = d.prox;
    o->slow_momentum = d.slow_momentum;
    o->slow_lr = d.slow_lr;
    o->bn_batches = d.bn_reestimate_batches;
    o->sync_timeout = d.sync_timeout;
    o->threads_per_worker = d.threads_per_worker;
    o->placement = d.placement == NNC_PLACEMENT_NONE ? "none" : "auto";
    o->eval_every = d.eval_every_epochs;
    o->log_every = 50;
    o->keep = d.keep_epochs;
    o->nan_policy = d.nan_policy == NNC_NAN_SKIP ? "skip" : "stop";
}

int train_flags(train_opts *o, flag_spec *f)
{
    int n = 0;
#define F(name, type, dest, help) f[n++] = (flag_spec){name, type, dest, help, 0}
    F("dataset", FLAG_STR, &o->dataset, "dataset (or the DATASET argument): cifar10 cifar100 fashion-mnist mnist imagefolder");
    F("data", FLAG_STR, &o->data, "data folder (default: the dataset's own, e.g. data-cache/cifar10)");
    F("download", FLAG_BOOL, &o->download, "download cifar10/cifar100/mnist/fashion-mnist when missing (--no-download to refuse)");
    F("model", FLAG_STR, &o->model, "model name (nnc info --model NAME; resnet20 resnet56 vgg11 ...)");
    F("epochs", FLAG_INT, &o->epochs, "epochs per worker (0 = until the time budget; 0 when only --time-budget is given)");
    F("time-budget", FLAG_DOUBLE, &o->time_budget, "seconds of training (0 = none)");
    F("batch", FLAG_INT, &o->batch, "batch size per worker");
    F("lr", FLAG_FLOAT, &o->lr, "learning rate");
    F("momentum", FLAG_FLOAT, &o->momentum, "SGD momentum");
    F("nesterov", FLAG_BOOL, &o->nesterov, "Nesterov momentum");
    F("wd-bn-bias", FLAG_BOOL, &o->decay_bn_bias, "weight decay on BN gamma/beta and biases too (--no-wd-bn-bias: weights only)");
    F("wd", FLAG_FLOAT, &o->wd, "weight decay");
    F("sched", FLAG_STR, &o->sched, "schedule: auto (cosine over --epochs, constant with only a time budget) constant step multistep cosine time-drop");
    F("gamma", FLAG_FLOAT, &o->gamma, "decay factor of step/multistep/time-drop");
    F("step-epochs", FLAG_LONG, &o->step_epochs, "epochs between decays (--sched step)");
    F("milestones", FLAG_STR, &o->milestones, "epochs of the decays, comma separated (--sched multistep)");
    F("drop-time", FLAG_DOUBLE, &o->drop_time, "seconds after which the lr drops (--sched time-drop)");
    F("warmup-epochs", FLAG_FLOAT, &o->warmup_epochs, "linear warm-up length in epochs");
    F("seed", FLAG_LONG, &o->seed, "random seed");
    F("threads", FLAG_INT, &o->threads, "kernel threads of one replica (0 = all cores; workers > 1: --threads-per-worker)");
    F("precision", FLAG_STR, &o->precision, "conv operands: fp32, or bf16 (AVX512_BF16 dot products, FP32 accumulation, master weights and statistics; docs/precision.md)");
    F("run-dir", FLAG_STR, &o->run_dir, "run folder (default runs/<dataset>-<model>-<time>)");
    F("resume", FLAG_BOOL, &o->resume, "continue the run in RUN-DIR (its config.json + last.ckpt; flags given override)");
    F("overwrite", FLAG_BOOL, &o->overwrite, "start over in a RUN-DIR that holds a run (removes nnc's files there first)");
    F("keep", FLAG_INT, &o->keep, "also keep the N newest per-epoch checkpoints RUN-DIR/epoch-EEEE.ckpt (0 = none)");
    F("nan-policy", FLAG_STR, &o->nan_policy, "non-finite loss/gradient: stop (exit 3, last.ckpt stays the last good one) or skip (skip that step and go on; one worker only)");
    F("limit-train", FLAG_LONG, &o->limit_train, "use only the first N training images (0 = all)");
    F("limit-test", FLAG_LONG, &o->limit_test, "use only the first N test images (0 = all)");
    F("augment", FLAG_BOOL, &o->augment, "random crop (pad 4) + flip; default on for cifar10/cifar100/imagefolder, off for mnist/fashion-mnist");
    F("workers", FLAG_INT, &o->workers, "worker replicas (threads)");
    F("algo", FLAG_STR, &o->algo, "sgd mgrawa lgrawa local-sgd easgd lsgd dp dp-sam slowmo");
    F("sync", FLAG_STR, &o->sync, "async or lockstep");
    F("tau", FLAG_INT, &o->tau, "local steps between rounds (0 = algorithm default)");
    F("pull", FLAG_FLOAT, &o->pull, "pull strength c (< 0 = algorithm default)");
    F("prox", FLAG_FLOAT, &o->prox, "proximity term p (< 0 = algorithm default)");
    F("slow-momentum", FLAG_FLOAT, &o->slow_momentum, "slow momentum beta of the center (slowmo 0.7; mgrawa, lgrawa, local-sgd: 0 = off; < 0 = default)");
    F("slow-lr", FLAG_FLOAT, &o->slow_lr, "slow learning rate alpha of the center (<= 0 = default 1)");
    F("norm", FLAG_STR, &o->norm, "GRAWA gradient norm: sum (of layer norms) or l2");
    F("bn-batches", FLAG_INT, &o->bn_batches, "batches to re-estimate BN statistics of the center (0 = keep)");
    F("sync-timeout", FLAG_DOUBLE, &o->sync_timeout, "seconds a round waits for a worker (0 = 600)");
    F("threads-per-worker", FLAG_INT, &o->threads_per_worker, "kernel threads of each worker's team (0 = all cores divided among the workers, at least 1; more threads than cores: a warning)");
    F("placement", FLAG_STR, &o->placement, "auto (each worker's team pinned to its own cores, inside one NUMA node where it fits) or none (no pinning)");
    F("eval-every", FLAG_INT, &o->eval_every, "evaluate every N epochs (0 = only at the end)");
    F("eval-seconds", FLAG_DOUBLE, &o->eval_seconds, "also evaluate every S seconds of training time (0 = none)");
    F("link", FLAG_STR, &o->link, "modelled interconnect LATENCY,BANDWIDTH such as 100us,1Gbit: collectives wait its cost (empty = none)");
    F("anomaly", FLAG_BOOL, &o->anomaly, "anomaly mode: name the first op producing NaN/Inf");
    F("log-every", FLAG_INT, &o->log_every, "steps between progress lines and metrics rows");
#undef F
    return n;
}

void train_outcome_free(train_outcome *o)
{
    free(o->evals);
    o->evals = NULL;
    o->nevals = o->cap = 0;
}

/* ---- building the nnc_train config ---- */

static int bad_value(const char *flag, const char *expected, const char *found)
{
    /* found is the value as given (or as it reads back); never a description of the problem */
    cli_error("--%s: expected %s, found '%s'", flag, expected, found ? found : "");
    return EXIT_USAGE;
}

/* Augmentation unless --augment/--no-augment says otherwise: crop + flip for natural images,
 * none for the 28x28 IDX sets (flipped digits are wrong, and their one-epoch runs learn faster
 * without it). */
static int augment_for(const train_opts *o)
{
    if (o->augment >= 0) return o->augment;
    return !(o->dataset && (!strcmp(o->dataset, "mnist") || !strcmp(o->dataset, "fashion-mnist")));
}

static int build_config(const train_opts *o, const nnc_dataset *train, nnc_train_config *c)
{
    char fb[64], fb2[160]; /* the offending value, as text */
    *c = nnc_train_config_default();
    c->model = o->model;
    {
        /* Valid ranges of the integer flags (the parser has refused values that overflow them). */
        static const flag_range ranges[] = {
            {"batch", 1, 2147483647, "a batch size >= 1"},
            {"workers", 1, NNC_MAX_WORKERS, "a worker count in 1..64"},
            {"epochs", 0, 2147483647, "a count >= 0 (0 = until --time-budget)"},
            {"step-epochs", 1, 2147483647, "epochs >= 1"},
            {"threads", 0, 4096, "threads in 0..4096 (0 = all cores)"},
            {"threads-per-worker", 0, 4096, "threads in 0..4096 (0 = cores / workers)"},
            {"keep", 0, 2147483647, "a count >= 0 (0 = no epoch checkpoints)"},
            {"limit-train", 0, 2147483647, "a count of images in 0..2147483647 (0 = all)"},
            {"limit-test", 0, 2147483647, "a count of images in 0..2147483647 (0 = all)"},
            {"tau", 0, 2147483647, "steps >= 0 (0 = algorithm default)"},
            {"bn-batches", 0, 2147483647, "a count >= 0 (0 = keep the statistics)"},
            {"eval-every", 0, 2147483647, "epochs >= 0 (0 = only at the end)"},
            {"log-every", 0, 2147483647, "steps >= 0 (0 = 50)"},
        };
        train_opts copy = *o;
        flag_spec specs[TRAIN_MAX_FLAGS];
        flag_table t = {.command = "train", .flags = specs, .nflags = train_flags(&copy, specs)};
        int r = flags_check_ranges(&t, ranges, (int)(sizeof ranges / sizeof ranges[0]));
        if (r) return r;
    }
    if (!o->model || !nnc_model_exists(o->model)) {
        char list[512];
        nnc_model_list(list, sizeof list);
        const char *best = nnc_model_suggest(o->model);
        cli_error("--model: unknown model '%s'%s%s%s; models: %s", o->model ? o->model : "", best ? " (did you mean '" : "",
                  best ? best : "", best ? "'?)" : "", list);
        return EXIT_USAGE;
    }
    if (o->time_budget < 0)
        return bad_value("time-budget", "seconds >= 0 (0 = none)", cli_format_double(o->time_budget, fb, sizeof fb));
    if (o->epochs == 0 && o->time_budget <= 0)
        return bad_value("epochs", "a count >= 1 (or --time-budget SECONDS > 0; both are 0)", "0");
    if (!(o->lr > 0)) return bad_value("lr", "a number > 0", cli_format_float(o->lr, fb, sizeof fb));
    if (!(o->momentum >= 0)) return bad_value("momentum", "a number >= 0", cli_format_float(o->momentum, fb, sizeof fb));
    if (!(o->wd >= 0)) return bad_value("wd", "a number >= 0", cli_format_float(o->wd, fb, sizeof fb));
    if (!(o->gamma > 0)) return bad_value("gamma", "a number > 0", cli_format_float(o->gamma, fb, sizeof fb));
    if (!(o->eval_seconds >= 0) || !isfinite(o->eval_seconds))
        return bad_value("eval-seconds", "seconds >= 0 (0 = none)", cli_format_double(o->eval_seconds, fb, sizeof fb));
    if (o->sync_timeout < 0)
        return bad_value("sync-timeout", "seconds >= 0 (0 = 600)", cli_format_double(o->sync_timeout, fb, sizeof fb));
    c->batch = o->batch;
    c->augment = augment_for(o);
    c->limit_train = o->limit_train;
    c->limit_test = o->limit_test;
    c->lr = o->lr;
    c->sgd.momentum = o->momentum;
    c->sgd.nesterov = o->nesterov;
    c->sgd.decay_bn_bias = o->decay_bn_bias;
    c->sgd.weight_decay = o->wd;
    if (!strcmp(o->sched, "auto"))
        c->sched.kind = o->epochs > 0 ? NNC_SCHED_COSINE : NNC_SCHED_CONSTANT;
    else if (nnc_sched_parse_kind(o->sched, &c->sched.kind))
        return bad_value("sched", "auto, constant, step, multistep, cosine or time-drop", o->sched);
    if (c->sched.kind == NNC_SCHED_COSINE && o->epochs <= 0)
        return bad_value("epochs", "a count >= 1 for --sched cosine (its horizon)", "0");
    c->sched.base_lr = o->lr;
    c->sched.gamma = o->gamma;
    c->sched.step_epochs = (int)o->step_epochs;
    c->sched.drop_seconds = o->drop_time;
    c->sched.nmilestones = 0;
    if (o->milestones && *o->milestones) {
        const char *p = o->milestones;
        while (*p) {
            char *end;
            errno = 0;
            long long v = strtoll(p, &end, 10);
            if (end == p || (*end && *end != ',')) {
                snprintf(fb, sizeof fb, "%.*s", (int)strcspn(p, ","), p);
                snprintf(fb2, sizeof fb2, "epochs separated by commas (such as 80,120), not '%s'", fb);
                return bad_value("milestones", fb2, o->milestones);
            }
            if (errno == ERANGE || v < 0 || v > 2147483647) {
                snprintf(fb, sizeof fb, "%.*s", (int)(end - p), p);
                snprintf(fb2, sizeof fb2, "epochs in 0..2147483647, not '%s'", fb);
                return bad_value("milestones", fb2, o->milestones);
            }
            if (c->sched.nmilestones >= NNC_SCHED_MAX_MILESTONES)
                return bad_value("milestones", "at most 8 epochs", o->milestones);
            if (c->sched.nmilestones && v <= c->sched.milestones[c->sched.nmilestones - 1])
                return bad_value("milestones", "ascending epochs", o->milestones);
            c->sched.milestones[c->sched.nmilestones++] = (int)v;
            p = *end == ',' ? end + 1 : end;
        }
    }
    if (c->sched.kind == NNC_SCHED_MULTISTEP && !c->sched.nmilestones)
        return bad_value("milestones", "a list such as 100,150 for --sched multistep", o->milestones ? o->milestones : "");
    if (c->sched.kind == NNC_SCHED_TIME_DROP && !(o->drop_time > 0))
        return bad_value("drop-time", "seconds > 0 for --sched time-drop", cli_format_double(o->drop_time, fb, sizeof fb));
    long per_worker = train->n / o->workers;
    long spe = per_worker / o->batch;
    if (spe < 1) {
        cli_error("--batch: expected at most the %ld training images per worker (%d images, %d workers), found '%d'",
                  per_worker, train->n, o->workers, o->batch);
        return EXIT_USAGE;
    }
    c->sched.steps_per_epoch = spe;
    c->sched.total_steps = (long)o->epochs * spe;
    if (!(o->warmup_epochs >= 0))
        return bad_value("warmup-epochs", "epochs >= 0", cli_format_float(o->warmup_epochs, fb, sizeof fb));
    c->sched.warmup_steps = (long)lround(o->warmup_epochs * (double)spe);
    c->epochs = o->epochs;
    c->time_budget = o->time_budget;
    c->seed = (uint64_t)o->seed;
    c->threads = o->threads ? o->threads : nnc_cpu_count();
    if (c->threads < 1) c->threads = 1;
    if (nnc_precision_parse(o->precision, &c->precision)) return bad_value("precision", "fp32 or bf16", o->precision);
    if (c->precision == NNC_PRECISION_BF16 && !nnc_precision_bf16_available()) {
        cli_error("--precision: bf16 needs a CPU with AVX512_BF16 (and NNC_ISA at avx512); use --precision fp32");
        return cli_exit_code(NNC_EUNSUPPORTED);
    }
    c->workers = o->workers;
    if (nnc_algo_parse(o->algo, &c->algo)) { /* the registry's message: did you mean, every name */
        cli_error("--algo: %s", nnc_error_message());
        return EXIT_USAGE;
    }
    if (c->algo == NNC_ALGO_SGD && o->workers > 1) {
        cli_error("--algo: expected a distributed algorithm for --workers %d (mgrawa, lgrawa, local-sgd, easgd, lsgd, "
                  "dp, dp-sam or slowmo), found 'sgd'", o->workers);
        return EXIT_USAGE;
    }
    if (!strcmp(o->sync, "async")) c->sync = NNC_SYNC_ASYNC;
    else if (!strcmp(o->sync, "lockstep")) c->sync = NNC_SYNC_LOCKSTEP;
    else return bad_value("sync", "async or lockstep", o->sync);
    if (!strcmp(o->norm, "sum")) c->norm_kind = NNC_NORM_SUM_LAYERS;
    else if (!strcmp(o->norm, "l2")) c->norm_kind = NNC_NORM_GLOBAL_L2;
    else return bad_value("norm", "sum or l2", o->norm);
    c->tau = o->tau;
    c->pull = o->pull;
    c->prox = o->prox;
    c->slow_momentum = o->slow_momentum;
    c->slow_lr = o->slow_lr;
    c->bn_reestimate_batches = o->bn_batches;
    c->sync_timeout = o->sync_timeout;
    c->threads_per_worker = o->threads_per_worker;
    if (!strcmp(o->placement, "auto")) {
        c->placement = NNC_PLACEMENT_AUTO;
    } else if (!strcmp(o->placement, "none")) {
        c->placement = NNC_PLACEMENT_NONE;
    } else {
        return bad_value("placement", "auto or none", o->placement);
    }
    c->eval_every_epochs = o->eval_every;
    c->eval_seconds = o->eval_seconds;
    if (o->link && *o->link) {
        if (nnc_link_parse(o->link, &c->link)) {
            cli_error("%s", nnc_error_message());
            return EXIT_USAGE;
        }
    }
    c->anomaly = o->anomaly;
    c->keep_epochs = o->keep;
    if (!strcmp(o->nan_policy, "stop")) c->nan_policy = NNC_NAN_STOP;
    else if (!strcmp(o->nan_policy, "skip")) c->nan_policy = NNC_NAN_SKIP;
    else return bad_value("nan-policy", "stop or skip", o->nan_policy);
    if (c->nan_policy == NNC_NAN_SKIP && (o->workers > 1 || c->algo != NNC_ALGO_SGD)) {
        cli_error("--nan-policy skip: needs one replica (--workers 1 --algo sgd), found --workers %d --algo %s; "
                  "with workers a non-finite worker is reset to the center instead", o->workers, o->algo);
        return EXIT_USAGE;
    }
    return 0;
}

/* ---- data ---- */

/* Load one split, fetching a downloadable dataset once when its files are missing. */
static int load_split(const train_opts *o, int train, long limit, nnc_dataset **out)
{
    int s = nnc_dataset_load(o->dataset, o->data, train, (int)limit, out);
    int fetchable = nnc_dataset_downloadable(o->dataset);
    char first[1024];
    snprintf(first, sizeof first, "%s", nnc_error_message());
    if (s == NNC_EIO && fetchable && !nnc_dataset_present(o->dataset, o->data)) {
        if (!o->download) {
            cli_error("%s", first);
            cli_error("%s is not in %s and --no-download was given (nnc data fetch %s)", o->dataset,
                      o->data ? o->data : nnc_dataset_default_dir(o->dataset), o->dataset);
            return EXIT_USAGE;
        }
        printf("downloading %s into %s\n", o->dataset, o->data ? o->data : nnc_dataset_default_dir(o->dataset));
        progress p;
        progress_init(&p, 1);
        nnc_fetch_config fc = {NULL, NULL, cli_fetch_progress, &p};
        int f = nnc_dataset_fetch(o->dataset, o->data, &fc);
        progress_done(&p);
        if (f) {
            cli_error("download failed: %s", nnc_error_message());
            return cli_load_exit_code(f);
        }
        s = nnc_dataset_load(o->dataset, o->data, train, (int)limit, out);
    }
    if (s) {
        cli_error("%s", nnc_error_message());
        return cli_load_exit_code(s);
    }
    return 0;
}

/* dataset.json / checkpoint metadata: what `nnc predict` needs to prepare an image. */
static char *dataset_meta_json(const nnc_dataset *d)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    json_out j;
    json_begin(&j, f);
    json_str(&j, "dataset", d->name);
    json_int(&j, "channels", d->c);
    json_int(&j, "image_size", d->h);
    json_int(&j, "num_classes", d->num_classes);
    char arr[256];
    int o = snprintf(arr, sizeof arr, "[");
    for (int i = 0; i < d->c && i < 3; i++) o += snprintf(arr + o, sizeof arr - (size_t)o, "%s%.9g", i ? ", " : "", d->mean[i]);
    snprintf(arr + o, sizeof arr - (size_t)o, "]");
    json_raw(&j, "mean", arr);
    o = snprintf(arr, sizeof arr, "[");
    for (int i = 0; i < d->c && i < 3; i++) o += snprintf(arr + o, sizeof arr - (size_t)o, "%s%.9g", i ? ", " : "", d->std[i]);
    snprintf(arr + o, sizeof arr - (size_t)o, "]");
    json_raw(&j, "std", arr);
    if (d->class_names) {
        fprintf(f, ",\n  \"classes\": [");
        for (int i = 0; i < d->num_classes; i++) {
            fprintf(f, "%s\"", i ? ", " : "");
            for (const char *s = d->class_names[i]; s && *s; s++) {
                if (*s == '"' || *s == '\\') fputc('\\', f);
                if ((unsigned char)*s >= 0x20) fputc(*s, f);
            }
            fputc('"', f);
        }
        fputc(']', f);
    }
    json_end(&j);
    fclose(f);
    return buf;
}

/* ---- run folder ---- */

static int write_text(const char *dir, const char *name, const char *text)
{
    char path[RUN_DIR_MAX + 32];
    if (run_path(path, sizeof path, dir, name)) return EXIT_USAGE;
    if (cli_write_atomic(path, text, strlen(text))) {
        cli_error("cannot write %s: %s", path, strerror(errno));
        return EXIT_RUNTIME;
    }
    return 0;
}

static int write_config(const train_opts *o, const char *run_dir)
{
    train_opts copy = *o;
    copy.resume = 0;
    copy.overwrite = 0;
    copy.run_dir = run_dir;
    copy.augment = augment_for(o);
    flag_spec specs[TRAIN_MAX_FLAGS];
    flag_table t = {.command = "train", .flags = specs, .nflags = train_flags(&copy, specs)};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return EXIT_RUNTIME;
    flags_write_json(&t, f);
    fclose(f);
    int r = write_text(run_dir, "config.json", buf);
    free(buf);
    return r;
}

static int write_summary(const train_opts *o, const nnc_train_result *r, const char *run_dir, const char *status)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return EXIT_RUNTIME;
    json_out j;
    json_begin(&j, f);
    json_str(&j, "status", status);
    json_str(&j, "dataset", o->dataset);
    json_str(&j, "model", o->model);
    json_str(&j, "algo", o->algo);
    json_int(&j, "workers", r->workers > 0 ? r->workers : o->workers);
    json_num(&j, "test_acc", r->test_acc);
    json_num(&j, "test_loss", r->test_loss);
    json_num(&j, "train_loss", r->train_loss);
    json_num(&j, "train_acc", r->train_acc);
    json_num(&j, "epochs", r->epochs);
    json_num(&j, "seconds", r->seconds);
    json_num(&j, "images_per_sec", r->images_per_sec);
    json_int(&j, "steps", r->steps);
    json_int(&j, "resets", r->resets);
    json_int(&j, "skipped_steps", r->skipped_steps);
    if (r->threads_per_worker > 0) json_int(&j, "threads_per_worker", r->threads_per_worker);
    if (r->placement[0]) json_raw(&j, "placement", r->placement);
    if (o->workers > 1) {
        json_num(&j, "center_test_acc", r->center_test_acc);
        json_num(&j, "average_test_acc", r->average_test_acc);
        json_int(&j, "rounds", r->rounds);
        json_num(&j, "bytes_per_round", r->bytes_per_round);
        char arr[64 * 24];
        int off = snprintf(arr, sizeof arr, "[");
        for (int i = 0; i < o->workers && i < NNC_MAX_WORKERS; i++)
            off += snprintf(arr + off, sizeof arr - (size_t)off, "%s%ld", i ? ", " : "", r->local_steps[i]);
        snprintf(arr + off, sizeof arr - (size_t)off, "]");
        json_raw(&j, "local_steps", arr);
        json_num(&j, "sync_seconds", r->sync_seconds);
        json_num(&j, "comm_model_seconds", r->comm_model_seconds);
        json_str(&j, "link", o->link && *o->link ? o->link : "");
    }
    json_end(&j);
    fclose(f);
    int rc = write_text(run_dir, "summary.json", buf);
    free(buf);
    return rc;
}

/* ---- validation and resume ---- */

int train_validate(const train_opts *o)
{
    if (!o->dataset || !*o->dataset) {
        cli_error("train: missing DATASET (%s)", nnc_dataset_list());
        return EXIT_USAGE;
    }
    if (!nnc_dataset_exists(o->dataset)) {
        const char *best = nnc_dataset_suggest(o->dataset);
        cli_error("train: unknown dataset '%s'%s%s%s; datasets: %s", o->dataset, best ? " (did you mean '" : "",
                  best ? best : "", best ? "'?)" : "", nnc_dataset_list());
        return EXIT_USAGE;
    }
    if (o->resume && o->overwrite) {
        cli_error("--resume and --overwrite: expected one of them (continue the run, or replace it), found both");
        return EXIT_USAGE;
    }
    /* every value build_config checks (the model name with a "did you mean" among them), before
     * the data is loaded: a training set of any size (its size is checked again against the real
     * one) */
    nnc_dataset any;
    memset(&any, 0, sizeof any);
    any.n = INT_MAX;
    nnc_train_config cfg;
    return build_config(o, &any, &cfg);
}

/* Flags a resumed run may change: where/how long/how fast it runs and what it reports. Every
 * other flag must equal the run's config.json. */
static int resume_may_change(const char *flag)
{
    static const char *const ok[] = {"data",     "download", "epochs",  "time-budget",  "threads",
                                     "run-dir",  "resume",   "overwrite", "keep",       "nan-policy",
                                     "anomaly",  "log-every", "eval-every", "sync-timeout", "eval-seconds",
                                     "threads-per-worker", "placement"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (!strcmp(ok[i], flag)) return 1;
    return 0;
}

/* A flag's value as config.json writes it. */
static void flag_text(const flag_spec *f, char *buf, size_t n)
{
    switch (f->type) {
    case FLAG_INT: snprintf(buf, n, "%d", *(int *)f->dest); break;
    case FLAG_LONG: snprintf(buf, n, "%ld", *(long *)f->dest); break;
    case FLAG_FLOAT: snprintf(buf, n, "%.9g", *(float *)f->dest); break;
    case FLAG_DOUBLE: snprintf(buf, n, "%.17g", *(double *)f->dest); break;
    case FLAG_BOOL: snprintf(buf, n, "%s", *(int *)f->dest ? "true" : "false"); break;
    case FLAG_STR: snprintf(buf, n, "%s", *(const char **)f->dest ? *(const char **)f->dest : ""); break;
    }
}

/* The run's flags (run_dir/config.json) against o: EXIT_USAGE naming the first flag that a
 * resumed run cannot change. */
static int resume_check(const train_opts *o, const char *run_dir)
{
    char path[RUN_DIR_MAX + 32];
    if (run_path(path, sizeof path, run_dir, "config.json")) return EXIT_USAGE;
    int fd = nnc__open_regular(path, "config");
    if (fd < 0) {
        cli_error("--resume: %s: %s (the flags of the run to continue)", path, nnc_error_message());
        return EXIT_USAGE;
    }
    close(fd);
    train_opts run, given = *o;
    train_opts_init(&run);
    flag_spec rs[TRAIN_MAX_FLAGS], gs[TRAIN_MAX_FLAGS];
    flag_table rt = {.command = "train", .flags = rs, .nflags = train_flags(&run, rs)};
    int ng = train_flags(&given, gs);
    char *argv[] = {"--config", path};
    int r = flags_parse(&rt, 2, argv);
    if (r) return r == 1 ? EXIT_USAGE : r;
    run.augment = augment_for(&run);
    given.augment = augment_for(o);
    for (int i = 0; i < ng && i < rt.nflags; i++) {
        if (resume_may_change(gs[i].name)) continue;
        char a[512], b[512];
        flag_text(&rs[i], a, sizeof a);
        flag_text(&gs[i], b, sizeof b);
        int differ = strcmp(a, b);
        if (gs[i].type == FLAG_STR) { /* whole strings, not the printed (maybe shortened) ones */
            const char *x = *(const char **)rs[i].dest, *y = *(const char **)gs[i].dest;
            differ = strcmp(x ? x : "", y ? y : "");
        }
        if (differ) {
            cli_error("--resume: --%s: the run in %s has '%s' (its config.json), found '%s'; a resumed run keeps "
                      "its --%s (drop the flag, or train into a new --run-dir)",
                      gs[i].name, run_dir, a, b, gs[i].name);
            return EXIT_USAGE;
        }
    }
    return 0;
}

/* How far last.ckpt got (its run state, through the library's progress query). */
static int read_progress(const char *path, nnc_ckpt_progress *p)
{
    int s = nnc_train_ckpt_progress(path, p);
    if (s) {
        cli_error("--resume: %s", nnc_error_message());
        return cli_load_exit_code(s);
    }
    return 0;
}

/* Everything train_execute checks before it touches the run folder (rank 0). Sets *nothing
 * when --resume has nothing left to train. */
static int check_run_dir(const train_opts *o, const char *run_dir, nnc_ckpt_progress *prog, int *nothing)
{
    *nothing = 0;
    int rc = run_lock_probe(run_dir);
    if (rc) return rc;
    if (!o->resume) {
        char what[300];
        if (!o->overwrite && run_dir_used(run_dir, what, sizeof what)) {
            cli_error("run folder %s already holds a run (%s): continue it with --resume, replace it with "
                      "--overwrite, or choose another --run-dir",
                      run_dir, what);
            return EXIT_USAGE;
        }
        return 0;
    }
    char ck[RUN_DIR_MAX + 32];
    struct stat st;
    if (run_path(ck, sizeof ck, run_dir, "last.ckpt")) return EXIT_USAGE;
    if (stat(ck, &st)) {
        cli_error("--resume: %s: %s", ck, strerror(errno));
        return EXIT_USAGE;
    }
    if (!S_ISREG(st.st_mode)) {
        cli_error("--resume: %s: %s", ck, S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
        return EXIT_USAGE;
    }
    if ((rc = resume_check(o, run_dir))) return rc;
    if ((rc = read_progress(ck, prog))) return rc;
    if (nnc_mpi_size() > 1) return 0; /* ranks: the library decides */
    if (o->epochs > 0 && nnc_train_ckpt_finished(prog, o->epochs, 0.0)) {
        printf("already at epoch %g >= target %d: nothing to do (%s unchanged)\n", prog->epoch, o->epochs, run_dir);
        *nothing = 1;
    } else if (o->time_budget > 0 && nnc_train_ckpt_finished(prog, 0, o->time_budget)) {
        printf("already trained %.1f s of --time-budget %g: nothing to do (%s unchanged)\n", prog->seconds,
               o->time_budget, run_dir);
        *nothing = 1;
    }
    return 0;
}

/* A run with nothing left to train (compare --resume): its results from summary.json and its
 * evaluations from metrics.csv, read only. */
static void outcome_from_files(const char *run_dir, train_outcome *out)
{
    char path[RUN_DIR_MAX + 32];
    nnc_train_result *r = &out->res;
    r->test_acc = r->test_loss = r->center_test_acc = r->average_test_acc = NAN;
    out->status = NNC_OK;
    if (run_path(path, sizeof path, run_dir, "summary.json")) return;
    char *t = cli_read_file(path, NULL);
    if (t) {
        double v;
        if (!jr_num(t, "test_acc", &v)) r->test_acc = v;
        if (!jr_num(t, "test_loss", &v)) r->test_loss = v;
        if (!jr_num(t, "center_test_acc", &v)) r->center_test_acc = v;
        if (!jr_num(t, "average_test_acc", &v)) r->average_test_acc = v;
        if (!jr_num(t, "epochs", &v)) r->epochs = v;
        if (!jr_num(t, "seconds", &v)) r->seconds = v;
        if (!jr_num(t, "images_per_sec", &v)) r->images_per_sec = v;
        if (!jr_num(t, "steps", &v)) r->steps = (long)v;
        if (!jr_num(t, "rounds", &v)) r->rounds = (long)v;
        if (!jr_num(t, "workers", &v)) r->workers = (int)v;
        if (!jr_num(t, "comm_model_seconds", &v)) r->comm_model_seconds = v;
        double ls[NNC_MAX_WORKERS];
        int n = jr_nums(t, "local_steps", ls, NNC_MAX_WORKERS);
        for (int i = 0; i < n; i++) r->local_steps[i] = (long)ls[i];
        free(t);
    }
    if (run_path(path, sizeof path, run_dir, "metrics.csv")) return;
    t = cli_read_file(path, NULL);
    for (char *save = NULL, *line = t ? strtok_r(t, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
        double f[5];
        int k = 0;
        if (strncmp(line, "val,", 4)) continue;
        for (char *p = line + 4; k < 5; k++) { /* step,epoch,seconds,loss,acc */
            char *e;
            f[k] = strtod(p, &e);
            if (e == p || *e != ',') break;
            p = e + 1;
        }
        if (k < 5) continue;
        if (out->nevals == out->cap) {
            int cap = out->cap ? out->cap * 2 : 16;
            train_eval_point *q = realloc(out->evals, sizeof *q * (size_t)cap);
            if (!q) break;
            out->evals = q;
            out->cap = cap;
        }
        out->evals[out->nevals++] = (train_eval_point){f[2], f[1], f[3], f[4], (long)f[0], 0};
    }
    free(t);
}

int train_execute(const train_opts *o, train_outcome *out)
{
    ignore_write_signals();
    int rc = train_validate(o);
    if (rc) return rc;
    char run_dir[RUN_DIR_MAX + 1];
    if (o->run_dir && *o->run_dir) {
        if (strlen(o->run_dir) > RUN_DIR_MAX) {
            cli_error("--run-dir: expected a path of at most %d characters, found %zu", RUN_DIR_MAX,
                      strlen(o->run_dir));
            return EXIT_USAGE;
        }
        snprintf(run_dir, sizeof run_dir, "%s", o->run_dir);
    } else {
        if (o->resume) {
            cli_error("--resume needs --run-dir DIR (the folder holding last.ckpt)");
            return EXIT_USAGE;
        }
        char stamp[32];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
        int k = snprintf(run_dir, sizeof run_dir, "runs/%s-%s-%s", o->dataset, o->model, stamp);
        if (k < 0 || k > RUN_DIR_MAX) {
            cli_error("DATASET/--model: too long for a run folder name (%d characters at most)", RUN_DIR_MAX);
            return EXIT_USAGE;
        }
    }
    if (out) snprintf(out->run_dir, sizeof out->run_dir, "%s", run_dir);
    /* MPI build: ranks other than 0 neither read nor write the run folder (dist/dist.h). */
    int rank0 = nnc_mpi_rank() == 0;
    nnc_ckpt_progress prog = {0};
    if (rank0) {
        int nothing = 0;
        if ((rc = check_run_dir(o, run_dir, &prog, &nothing))) return rc;
        if (nothing) {
            if (out) outcome_from_files(run_dir, out);
            return EXIT_OK;
        }
    }

    nnc_dataset *train = NULL, *test = NULL;
    rc = load_split(o, 1, o->limit_train, &train);
    if (!rc) rc = load_split(o, 0, o->limit_test, &test);
    nnc_train_config cfg;
    if (!rc) rc = build_config(o, train, &cfg);
    int lock = -1;
    if (!rc && rank0) rc = cli_mkdirs(run_dir);
    if (!rc && rank0) rc = run_lock_acquire(run_dir, &lock);
    if (!rc && rank0 && !o->resume) {
        /* again under the lock: another process may have started a run here meanwhile */
        char what[300];
        if (o->overwrite) {
            rc = run_dir_clear(run_dir);
        } else if (run_dir_used(run_dir, what, sizeof what)) {
            cli_error("run folder %s already holds a run (%s): continue it with --resume, replace it with "
                      "--overwrite, or choose another --run-dir",
                      run_dir, what);
            rc = EXIT_USAGE;
        }
    }
    if (!rc && rank0 && o->resume) {
        /* metrics.csv keeps the history of the model being resumed: rows of steps after
         * last.ckpt (a crash rolled them back) go */
        long d = metrics_truncate(run_dir, prog.steps);
        if (d < 0) rc = (int)-d;
        else if (d > 0) printf("metrics.csv: dropped %ld row(s) after step %ld (not in last.ckpt)\n", d, prog.steps);
    }
    char *meta = NULL;
    if (!rc) {
        meta = dataset_meta_json(train);
        if (rank0) rc = write_config(o, run_dir);
        if (!rc && meta && rank0) rc = write_text(run_dir, "dataset.json", meta);
    }
    run_ctx ctx = {.o = o, .out = out, .run_dir = run_dir};
    if (!rc && rank0 && metrics_open(&ctx.ml, run_dir)) rc = EXIT_USAGE;
    if (rc) {
        free(meta);
        nnc_dataset_free(train);
        nnc_dataset_free(test);
        run_lock_release(lock);
        return rc;
    }
    progress_init(&ctx.prog, 1);
    int every = o->log_every > 0 ? o->log_every : 50;
    cfg.log_every = ctx.prog.tty && every > 10 ? 10 : every; /* a terminal bar redraws more often */
    cfg.ckpt_dir = run_dir;
    cfg.resume = o->resume;
    cfg.ckpt_meta_json = meta;
    cfg.stop = &g_stop;
    cfg.on_step = train_on_step;
    cfg.on_round = train_on_round;
    cfg.on_eval = train_on_eval;
    cfg.on_log = train_on_log;
    cfg.ud = &ctx;
    /* two short lines rather than one that wraps on an 80-column terminal */
    printf("training %s on %s -> %s\n", o->model, o->dataset, run_dir);
    printf("  %d train / %d test, %dx%dx%d, %d classes | %d worker%s, %s\n", train->n, test->n, train->c, train->h,
           train->w, train->num_classes, o->workers, o->workers > 1 ? "s" : "", o->algo);
    fflush(stdout);
    g_stop = 0;
    install_signals();
    nnc_train_result res;
    memset(&res, 0, sizeof res);
    int s = nnc_train(&cfg, train, test, &res);
    progress_done(&ctx.prog);
    if (out) {
        out->res = res;
        out->status = s;
    }
    metrics_close(&ctx.ml);
    if (rank0) plot_metrics_svg(run_dir);
    if (s == NNC_EINTERRUPTED && res.steps < ctx.step) {
        /* the trainer may not count the steps of a stopped run: use what the callbacks saw */
        res.steps = ctx.step;
        res.epochs = ctx.epoch;
    }
    if ((s == NNC_OK || s == NNC_EINTERRUPTED) && !rank0) {
        rc = s == NNC_OK ? EXIT_OK : stop_exit_code(g_stop);
    } else if (s == NNC_OK || s == NNC_EINTERRUPTED) {
        rc = write_summary(o, &res, run_dir, s == NNC_OK ? "ok" : "interrupted");
        if (s == NNC_EINTERRUPTED) {
            printf("stopped at step %ld (epoch %.2f); resume with: nnc train %s --run-dir %s --resume\n", res.steps,
                   res.epochs, o->dataset, run_dir);
            if (!rc) rc = stop_exit_code(g_stop);
        } else {
            printf("test acc %.2f%% loss %.4f | train loss %.4f | %.2f epochs %.1fs %.0f img/s\n", 100 * res.test_acc,
                   res.test_loss, res.train_loss, res.epochs, res.seconds, res.images_per_sec);
            if (o->workers > 1)
                printf("  center %.2f%% average %.2f%% | rounds %ld\n", 100 * res.center_test_acc,
                       100 * res.average_test_acc, res.rounds);
            if (res.skipped_steps) printf("  %ld non-finite step(s) skipped\n", res.skipped_steps);
        }
    } else {
        cli_error("training failed: %s", nnc_error_message());
        rc = cli_exit_code(s);
        /* Across ranks a stalled peer is caught by the round deadline: exit 3. */
        if (s == NNC_ETIMEOUT && nnc_mpi_size() > 1) rc = EXIT_DIVERGED;
    }
    fflush(stdout);
    free(meta);
    nnc_dataset_free(train);
    nnc_dataset_free(test);
    run_lock_release(lock);
    return rc;
}

/* --resume: the run's config.json is the base, then --config files, then the command line
 * (flags_parse applies --config files in order before the command line). */
static int parse_with_run_config(flag_table *t, int argc, char **argv, const char *run_dir)
{
    char path[RUN_DIR_MAX + 32];
    struct stat st;
    /* an over-long path or a missing config.json: train_execute names the problem */
    if (strlen(run_dir) > RUN_DIR_MAX) return flags_parse(t, argc, argv);
    snprintf(path, sizeof path, "%s/config.json", run_dir);
    if (stat(path, &st)) return flags_parse(t, argc, argv);
    char **v = malloc(sizeof *v * (size_t)(argc + 2));
    if (!v) return EXIT_RUNTIME;
    static char cfg_path[RUN_DIR_MAX + 32];
    snprintf(cfg_path, sizeof cfg_path, "%s", path);
    v[0] = "--config";
    v[1] = cfg_path;
    for (int i = 0; i < argc; i++) v[i + 2] = argv[i];
    int r = flags_parse(t, argc + 2, v);
    free(v); /* string flags point into argv and the config text, not into v */
    return r;
}

int cmd_train(int argc, char **argv)
{
    train_opts o;
    train_opts_init(&o);
    flag_spec specs[TRAIN_MAX_FLAGS];
    const char *pos[1];
    flag_table t = {.command = "train",
                    .usage = "nnc train DATASET [flags]",
                    .summary = "Train a model on DATASET (cifar10, cifar100, fashion-mnist, mnist, imagefolder) with one\n"
                               "replica or --workers M replicas (--algo). Writes a run folder: config.json, metrics.csv,\n"
                               "plot.svg, train.log, last.ckpt, best.ckpt (epoch-EEEE.ckpt with --keep N), summary.json.\n"
                               "Ctrl-C stops after the current step with a checkpoint (exit 130; SIGTERM 143, SIGHUP\n"
                               "129); --run-dir DIR --resume continues it with the run's own config.json. A folder\n"
                               "that holds a run is refused unless --resume or --overwrite (docs/run-folders.md).",
                    .flags = specs,
                    .nflags = train_flags(&o, specs),
                    .positional = pos,
                    .max_positional = 1};
    int r = flags_parse(&t, argc - 1, argv + 1);
    if (r == 1) return EXIT_OK;
    if (r) return r;
    if (o.resume && o.run_dir && *o.run_dir) {
        const char *run_dir = o.run_dir;
        train_opts_init(&o);
        for (int i = 0; i < t.nflags; i++) specs[i].set = 0;
        r = parse_with_run_config(&t, argc - 1, argv + 1, run_dir);
        if (r == 1) return EXIT_OK;
        if (r) return r;
    }
    if (t.npositional) o.dataset = pos[0];
    /* A time budget given without --epochs is the run's only bound (the default of one epoch
     * would otherwise end it first). */
    flag_spec *fe = flags_find(&t, "epochs"), *ft = flags_find(&t, "time-budget");
    if (fe && ft && ft->set && !fe->set && o.time_budget > 0) o.epochs = 0;
    return train_execute(&o, NULL);
}
