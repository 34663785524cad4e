/* tools/cmd_bench.c - `nnc bench`: training and inference throughput of a model on a random
 * batch, the nnc side of the side-by-side measurement with PyTorch (tools/bench.sh runs tools/torch_bench.py;
 * docs/benchmarking.md has the method).
 *
 * Training step = forward + softmax cross-entropy + backward + SGD(momentum 0.9, weight decay
 * 5e-4, lr 0.01) on a fixed random batch (N,C,S,S) with random labels; inference = eval-mode
 * forward with grad off. Warm-up steps are excluded; each run times `iters` steps and the
 * reported figure is the median over runs. --json ends the output with one JSON object line. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "nn/nnc.h"
#include "nn/precision.h"
#include "nn/threads.h"
#include "tools/bench_layers.h"
#include "tools/cli.h"

typedef struct bench_state {
    nnc_model *model;
    nnc_sgd *opt;
    nnc_graph *graph;
    float *x;
    int *labels;
    int batch, chans, size;
    nnc_rng rng;       /* dropout masks */
} bench_state;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int train_step(bench_state *s)
{
    nnc_graph_reset(s->graph);
    nnc_graph_set_grad(s->graph, 1);
    nnc_params_zero_grad(nnc_model_params(s->model));
    int shape[4] = {s->batch, s->chans, s->size, s->size};
    nnc_tensor *x = nnc_tensor_wrap(s->graph, s->x, 4, shape);
    nnc_tensor *logits = nnc_model_forward(s->model, s->graph, x, 1, &s->rng);
    nnc_tensor *loss = nnc_softmax_cross_entropy(s->graph, logits, s->labels, NNC_REDUCE_MEAN, 0.0f);
    int st = nnc_backward(s->graph, loss);
    if (st) return st;
    nnc_sgd_step(s->opt, 0.01f);
    return NNC_OK;
}

static void infer_step(bench_state *s)
{
    nnc_graph_reset(s->graph);
    nnc_graph_set_grad(s->graph, 0);
    int shape[4] = {s->batch, s->chans, s->size, s->size};
    nnc_tensor *x = nnc_tensor_wrap(s->graph, s->x, 4, shape);
    (void)nnc_model_forward_infer(s->model, s->graph, x);
}

/* Median images/s over runs of iters steps each, after warmup steps. */
static int measure(bench_state *s, int train, int warmup, int runs, int iters, double *out)
{
    double *v = malloc(sizeof(double) * (size_t)runs);
    if (!v) return nnc__fail(NNC_ENOMEM, "bench: out of memory");
    for (int i = 0; i < warmup; i++) {
        if (!train) {
            infer_step(s);
            continue;
        }
        int st = train_step(s);
        if (st) {
            free(v);
            return st;
        }
    }
    for (int r = 0; r < runs; r++) {
        double t0 = cli_now();
        for (int i = 0; i < iters; i++) {
            if (!train) {
                infer_step(s);
                continue;
            }
            int st = train_step(s);
            if (st) {
                free(v);
                return st;
            }
        }
        v[r] = (double)s->batch * iters / (cli_now() - t0);
    }
    *out = median(v, runs);
    free(v);
    return NNC_OK;
}

int cli_set_precision(const char *value)
{
    nnc_precision p;
    if (nnc_precision_parse(value, &p)) {
        cli_error("--precision: expected fp32 or bf16, found '%s'", value ? value : "");
        return EXIT_USAGE;
    }
    int st = nnc_set_precision(p);
    if (st) {
        cli_error("--precision: %s", nnc_error_message());
        return cli_exit_code(st);
    }
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    const char *model = "resnet20";
    int batch = 128, threads = -1, runs = 5, warmup = 2, iters = 1, json = 0, image = 0, train_only = 0, infer_only = 0;
    int layers = 0;
    const char *conv_path = "auto", *precision = "fp32";
    double peak = 246.6;
    int workers = 0;
    double seconds = 60;
    const char *algo = "mgrawa";
    long seed = 1;
    int tpw = 0, scaling = 0;
    const char *placement = "auto";
    flag_spec flags[] = {
        {"model", FLAG_STR, &model, "model name (resnet20, vgg16, ...; nnc info --list shows all)", 0},
        {"batch", FLAG_INT, &batch, "batch size N of the random (N,C,S,S) batch", 0},
        {"threads", FLAG_INT, &threads, "kernel threads (default 1; 0 = all cores); --workers: of the single replica "
                                        "(default all cores)", 0},
        {"runs", FLAG_INT, &runs, "timed runs; the median is reported", 0},
        {"warmup", FLAG_INT, &warmup, "untimed steps before the runs", 0},
        {"iters", FLAG_INT, &iters, "steps per timed run", 0},
        {"image-size", FLAG_INT, &image, "image side S (0 = the model's default)", 0},
        {"train-only", FLAG_BOOL, &train_only, "skip the inference measurement", 0},
        {"infer-only", FLAG_BOOL, &infer_only, "skip the training measurement", 0},
        {"seed", FLAG_LONG, &seed, "seed of the model and the random batch", 0},
        {"precision", FLAG_STR, &precision, "conv operands: fp32, or bf16 (AVX512_BF16 dot products, FP32 "
                                            "accumulation and master weights; docs/precision.md)", 0},
        {"json", FLAG_BOOL, &json, "end with one JSON line holding the figures", 0},
        {"layers", FLAG_BOOL, &layers, "instead: time each conv layer (forward, input and weight gradient)", 0},
        {"conv-path", FLAG_STR, &conv_path, "with --layers: auto, direct, gemm or small (where it runs) for every layer", 0},
        {"peak-gflops", FLAG_DOUBLE, &peak, "with --layers: FP32 peak per thread for the % column (docs/benchmarking.md)", 0},
        {"workers", FLAG_INT, &workers, "instead: train M workers (--threads-per-worker each) vs one replica "
                                        "(--threads) through nnc_train on synthetic CIFAR-shaped data", 0},
        {"threads-per-worker", FLAG_INT, &tpw, "--workers: kernel threads of each worker (0 = cores / M, at least 1)", 0},
        {"placement", FLAG_STR, &placement, "--workers: auto (pinned teams, NUMA-local) or none", 0},
        {"scaling", FLAG_BOOL, &scaling, "--workers: also a table over M = 1, 2, 4, ... up to the core count", 0},
        {"algo", FLAG_STR, &algo, "--workers: the algorithm (mgrawa, lgrawa, easgd, lsgd, local-sgd, dp)", 0},
        {"seconds", FLAG_DOUBLE, &seconds, "--workers: training seconds of each of the two runs", 0},
    };
    flag_table t = {"bench", "nnc bench [--model NAME] [--batch N] [--threads T] [--runs R] [--json | --layers | --workers M]",
                    "Measure training (forward + cross-entropy + backward + SGD momentum 0.9, weight "
                    "decay 5e-4) and eval-mode inference throughput on a random batch with random labels; "
                    "prints medians over runs (warm-up excluded) and the process's peak RSS.",
                    flags, (int)(sizeof flags / sizeof flags[0]), NULL, 0, 0};
    int rc = flags_parse(&t, argc - 1, argv + 1);
    if (rc) return rc == 1 ? EXIT_OK : rc;
    const struct { const char *name; int v, lo; } checks[] = {
        {"batch", batch, 1}, {"threads", threads < 0 ? 0 : threads, 0}, {"workers", workers, 0},
        {"threads-per-worker", tpw, 0}, {"runs", runs, 1}, {"warmup", warmup, 0}, {"iters", iters, 1},
        {"image-size", image, 0}};
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
        if (checks[i].v < checks[i].lo) {
            cli_error("--%s: expected an integer >= %d, found '%d'", checks[i].name, checks[i].lo, checks[i].v);
            return EXIT_USAGE;
        }
    int path = !strcmp(conv_path, "auto") ? 0 : !strcmp(conv_path, "direct") ? 1 : !strcmp(conv_path, "gemm") ? 2
             : !strcmp(conv_path, "small") ? 3 : -1;
    if (path < 0) {
        cli_error("--conv-path: expected auto, direct, gemm or small, found '%s'", conv_path);
        return EXIT_USAGE;
    }
    if (!(peak > 0)) {
        char b[32];
        cli_error("--peak-gflops: expected a number > 0, found '%s'", cli_format_double(peak, b, sizeof b));
        return EXIT_USAGE;
    }
    if (!nnc_model_exists(model)) {
        char list[512];
        nnc_model_list(list, sizeof list);
        const char *best = nnc_model_suggest(model);
        cli_error("--model: unknown model '%s'%s%s%s; models: %s", model, best ? " (did you mean '" : "",
                  best ? best : "", best ? "'?)" : "", list);
        return EXIT_USAGE;
    }
    if (threads > 4096 || tpw > 4096) {
        cli_error("--%s: expected threads in 0..4096, found '%d'", threads > 4096 ? "threads" : "threads-per-worker",
                  threads > 4096 ? threads : tpw);
        return EXIT_USAGE;
    }
    if ((rc = cli_set_precision(precision))) return rc;
    if (workers > 0) {
        if (!(seconds > 0)) {
            char b[32];
            cli_error("--seconds: expected a number > 0, found '%s'", cli_format_double(seconds, b, sizeof b));
            return EXIT_USAGE;
        }
        if (strcmp(placement, "auto") && strcmp(placement, "none")) {
            cli_error("--placement: expected auto or none, found '%s'", placement);
            return EXIT_USAGE;
        }
        if (workers > NNC_MAX_WORKERS) {
            cli_error("--workers: expected a worker count in 1..%d, found '%d'", NNC_MAX_WORKERS, workers);
            return EXIT_USAGE;
        }
        bench_workers_opts bo = {.model = model, .algo = algo, .workers = workers, .threads = threads < 0 ? 0 : threads,
                                 .threads_per_worker = tpw, .placement = strcmp(placement, "none") ? NNC_PLACEMENT_AUTO
                                                                                                   : NNC_PLACEMENT_NONE,
                                 .batch = batch, .json = json, .scaling = scaling, .seconds = seconds, .seed = seed};
        return bench_workers(&bo);
    }
    if (threads < 0) threads = 1;
    if (threads == 0) threads = nnc_cpu_count();
    int st = nnc_set_threads(threads);
    if (st) {
        cli_error("--threads: %s", nnc_error_message());
        return cli_exit_code(st);
    }
    nnc_blas_set_threads(1);

    bench_state s;
    memset(&s, 0, sizeof s);
    nnc_model_config cfg = nnc_model_config_default();
    if (image) cfg.image_size = image;
    double train_ips = 0, infer_ips = 0;
    st = nnc_model_new(model, &cfg, (uint64_t)seed, &s.model);
    if (st) {
        cli_error("--model: %s", nnc_error_message());
        nnc_set_threads(1);
        return cli_exit_code(st);
    }
    if (layers) {
        st = bench_layers(s.model, batch, threads, runs, peak, path);
        nnc_model_free(s.model);
        nnc_set_threads(1);
        if (st) cli_error("bench --layers: %s", nnc_error_message());
        return st ? cli_exit_code(st) : EXIT_OK;
    }
    s.batch = batch;
    s.chans = cfg.in_channels;
    s.size = cfg.image_size;
    size_t nx = (size_t)batch * s.chans * s.size * s.size;
    s.x = malloc(nx * sizeof(float));
    s.labels = malloc(sizeof(int) * (size_t)batch);
    nnc_sgd_config oc = nnc_sgd_config_default();
    oc.momentum = 0.9f;
    oc.weight_decay = 5e-4f;
    if (!s.x || !s.labels) st = nnc__fail(NNC_ENOMEM, "bench: out of memory for the batch");
    if (!st) st = nnc_sgd_new(nnc_model_params(s.model), &oc, &s.opt);
    if (!st) st = nnc_graph_new(0, &s.graph);
    if (!st) nnc_graph_set_recycle(s.graph, 1); /* as the trainer does (dist/replica.c) */
    if (!st) {
        nnc_rng rng;
        nnc_rng_seed(&rng, (uint64_t)seed, 7);
        nnc_rng_seed(&s.rng, (uint64_t)seed, 8);
        for (size_t i = 0; i < nx; i++) s.x[i] = nnc_rng_normal(&rng);
        for (int i = 0; i < batch; i++) s.labels[i] = (int)nnc_rng_below(&rng, (uint32_t)cfg.num_classes);
        if (!infer_only) st = measure(&s, 1, warmup, runs, iters, &train_ips);
    }
    if (!st && !train_only) st = measure(&s, 0, warmup, runs, iters, &infer_ips);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mib = (double)ru.ru_maxrss / 1024.0;
    nnc_graph_free(s.graph);
    nnc_sgd_free(s.opt);
    nnc_model_free(s.model);
    free(s.x);
    free(s.labels);
    nnc_set_threads(1);
    if (st) {
        cli_error("bench: %s", nnc_error_message());
        return cli_exit_code(st);
    }
    printf("%s batch %d threads %d precision %s: train %.1f img/s, inference %.1f img/s (median of %d runs x %d "
           "steps, %d warm-up), peak RSS %.1f MiB\n",
           model, batch, threads, precision, train_ips, infer_ips, runs, iters, warmup, rss_mib);
    if (json)
        printf("{\"model\": \"%s\", \"batch\": %d, \"threads\": %d, \"precision\": \"%s\", "
               "\"train_images_per_sec\": %.2f, \"infer_images_per_sec\": %.2f, \"peak_rss_mib\": %.1f, \"runs\": %d, "
               "\"iters\": %d}\n",
               model, batch, threads, precision, train_ips, infer_ips, rss_mib, runs, iters);
    return EXIT_OK;
}
