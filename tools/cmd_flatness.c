/* tools/cmd_flatness.c - `nnc flatness --ckpt FILE|RUN [DATASET]`: top Hessian eigenvalues
 * (Lanczos) and the Hessian trace (Hutchinson) of a checkpoint's training loss on a fixed subset
 * of training images (docs/algorithms.md, "Flatness"). */
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dist/dist.h"
#include "nn/checkpoint.h"
#include "nn/status.h"
#include "tools/ckpt_model.h"
#include "tools/flatness.h"

void flatness_opts_init(flatness_opts *o)
{
    *o = (flatness_opts){.images = 320, .iters = 20, .k = 10, .starts = 3, .probes = 10, .batch = 64, .seed = 1,
                         .eps = 1e-2};
}

int flatness_opts_check(const flatness_opts *o)
{
    static const struct {
        const char *name;
        int min, max;
        const char *expected;
    } r[] = {{"images", 1, 1 << 20, "a count of training images in 1..1048576"},
             {"iters", 1, 1000, "Lanczos iterations in 1..1000"},
             {"k", 1, 1000, "a count of eigenvalues in 1..1000"},
             {"starts", 1, FLATNESS_MAX_STARTS, "random starts in 1..32"},
             {"probes", 0, 100000, "Hutchinson probes in 0..100000 (0 = no trace estimate)"},
             {"batch", 1, 1 << 20, "a batch size >= 1"}};
    const int v[] = {o->images, o->iters, o->k, o->starts, o->probes, o->batch};
    for (size_t i = 0; i < sizeof r / sizeof *r; i++)
        if (v[i] < r[i].min || v[i] > r[i].max) {
            cli_error("--%s: expected %s, found %d", r[i].name, r[i].expected, v[i]);
            return EXIT_USAGE;
        }
    if (o->seed < 0) {
        cli_error("--seed: expected a seed >= 0, found %ld", o->seed);
        return EXIT_USAGE;
    }
    if (!(o->eps > 0.0) || !(o->eps <= 1.0)) {
        cli_error("--eps: expected a step in (0, 1], found %g", o->eps);
        return EXIT_USAGE;
    }
    return 0;
}

/* The data folder of the run ckpt belongs to (config.json "data" next to the file, or in the
 * folder given), into buf; 0 when found. */
static int run_data_dir(const char *ckpt, char *buf, size_t n)
{
    char dir[1100], path[1200];
    struct stat st;
    if (snprintf(dir, sizeof dir, "%s", ckpt) >= (int)sizeof dir) return -1;
    const char *folder = !stat(ckpt, &st) && S_ISDIR(st.st_mode) ? dir : dirname(dir);
    snprintf(path, sizeof path, "%s/config.json", folder);
    char *t = cli_read_file(path, NULL);
    if (!t) return -1;
    int rc = jr_str(t, "data", buf, n);
    free(t);
    return rc || !buf[0] ? -1 : 0;
}

static void spread(const double *v, int n, double *mean, double *sd, double *lo, double *hi)
{
    double s = 0.0, q = 0.0;
    *lo = INFINITY, *hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        s += v[i];
        if (v[i] < *lo) *lo = v[i];
        if (v[i] > *hi) *hi = v[i];
    }
    *mean = s / n;
    for (int i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : NAN;
}

int flatness_measure(const char *ckpt, const char *dataset, const char *data_dir, const flatness_opts *o,
                     flatness_result *r)
{
    memset(r, 0, sizeof *r);
    int rc = flatness_opts_check(o);
    if (rc) return rc;
    double t0 = cli_now();
    nnc_ckpt *ck;
    nnc_model *m;
    rc = cli_model_from_ckpt(ckpt, NULL, &ck, &m);
    if (rc) return rc;
    const char *file = cli_resolve_ckpt(ckpt, r->ckpt, sizeof r->ckpt);
    if (file != r->ckpt) snprintf(r->ckpt, sizeof r->ckpt, "%s", file ? file : ckpt);
    snprintf(r->arch, sizeof r->arch, "%s", nnc_ckpt_arch(ck));
    const void *meta;
    size_t meta_len;
    if (nnc_ckpt_get_bytes(ck, "meta/json", &meta, &meta_len) == 0 && meta_len < (1u << 20)) {
        char *text = malloc(meta_len + 1);
        if (text) {
            memcpy(text, meta, meta_len);
            text[meta_len] = 0;
            if (jr_str(text, "dataset", r->trained_on, sizeof r->trained_on)) r->trained_on[0] = 0;
            free(text);
        }
    }
    nnc_ckpt_free(ck);
    if (!dataset || !*dataset) {
        if (!r->trained_on[0]) {
            cli_error("flatness: %s does not name the dataset it was trained on (no meta/json section): give "
                      "DATASET", r->ckpt);
            nnc_model_free(m);
            return EXIT_USAGE;
        }
        dataset = r->trained_on;
    }
    if (!nnc_dataset_exists(dataset)) {
        const char *best = nnc_dataset_suggest(dataset);
        cli_error("flatness: unknown dataset '%s'%s%s%s; datasets: %s", dataset, best ? " (did you mean '" : "",
                  best ? best : "", best ? "'?)" : "", nnc_dataset_list());
        nnc_model_free(m);
        return EXIT_USAGE;
    }
    snprintf(r->dataset, sizeof r->dataset, "%s", dataset);
    char run_data[1024];
    if (!data_dir && !strcmp(dataset, r->trained_on) && !run_data_dir(ckpt, run_data, sizeof run_data))
        data_dir = run_data;
    nnc_dataset *d = NULL;
    int s = nnc_dataset_load(dataset, data_dir, 1, o->images, &d);
    if (s) {
        cli_error("%s", nnc_error_message());
        nnc_model_free(m);
        return cli_load_exit_code(s);
    }
    nnc_model_config mc = nnc_model_get_config(m);
    if (d->c != mc.in_channels || d->h != mc.image_size || d->w != mc.image_size || d->num_classes != mc.num_classes) {
        cli_error("%s: architecture mismatch: checkpoint %s expects %d channels, %dx%d images, %d classes; %s has %d "
                  "channels, %dx%d images, %d classes",
                  r->ckpt, r->arch, mc.in_channels, mc.image_size, mc.image_size, mc.num_classes, dataset, d->c, d->h,
                  d->w, d->num_classes);
        nnc_dataset_free(d);
        nnc_model_free(m);
        return EXIT_USAGE;
    }
    nnc_hessian_config hc = nnc_hessian_config_default();
    hc.iterations = o->iters;
    hc.starts = o->starts;
    hc.samples = d->n;
    hc.chunk = o->batch;
    hc.top = o->k;
    hc.eps = o->eps;
    hc.seed = (uint64_t)o->seed;
    r->images = d->n;
    r->starts = o->starts;
    r->probes = o->probes;
    s = nnc_hessian_top_starts(m, d, &hc, r->lambda_max, r->top_sum);
    r->trace = r->trace_se = NAN;
    if (!s && o->probes > 0) s = nnc_hessian_trace(m, d, &hc, o->probes, &r->trace, &r->trace_se);
    nnc_dataset_free(d);
    nnc_model_free(m);
    if (s) {
        cli_error("flatness: %s", nnc_error_message());
        return cli_exit_code(s);
    }
    spread(r->lambda_max, r->starts, &r->lambda_mean, &r->lambda_sd, &r->lambda_min, &r->lambda_max_over_starts);
    spread(r->top_sum, r->starts, &r->top_mean, &r->top_sd, &r->top_min, &r->top_max);
    r->seconds = cli_now() - t0;
    return EXIT_OK;
}

static void line(FILE *f, const char *label, double mean, double sd, double lo, double hi, int starts)
{
    fprintf(f, "%-22s %.6g", label, mean);
    if (starts > 1)
        fprintf(f, "  (mean of %d starts; sd %.3g, min %.6g, max %.6g)\n", starts, sd, lo, hi);
    else
        fprintf(f, "  (1 start)\n");
}

void flatness_print(FILE *f, const flatness_opts *o, const flatness_result *r)
{
    fprintf(f, "checkpoint %s (%s%s%s)\n", r->ckpt, r->arch, r->trained_on[0] ? ", trained on " : "", r->trained_on);
    fprintf(f, "loss: mean cross-entropy over the first %d %s training images, train mode, batches of %d\n", r->images,
            r->dataset, o->batch);
    line(f, "lambda_max", r->lambda_mean, r->lambda_sd, r->lambda_min, r->lambda_max_over_starts, r->starts);
    char label[32];
    snprintf(label, sizeof label, "top-%d sum", o->k);
    line(f, label, r->top_mean, r->top_sd, r->top_min, r->top_max, r->starts);
    if (r->probes > 1)
        fprintf(f, "%-22s %.6g ± %.3g  (Hutchinson, %d Rademacher probes; ± one standard error)\n", "trace", r->trace,
                r->trace_se, r->probes);
    else if (r->probes == 1)
        fprintf(f, "%-22s %.6g  (Hutchinson, 1 probe: no standard error)\n", "trace", r->trace);
    fprintf(f, "Lanczos %d iterations x %d starts, eps %g, seed %ld; %.1f s\n", o->iters, r->starts, o->eps, o->seed,
            r->seconds);
}

static void json_list(json_out *j, const char *key, const double *v, int n)
{
    char buf[FLATNESS_MAX_STARTS * 24 + 4];
    size_t at = 0;
    buf[at++] = '[';
    for (int i = 0; i < n; i++) {
        const char *sep = i ? ", " : "";
        if (isfinite(v[i]))
            at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%.9g", sep, v[i]);
        else
            at += (size_t)snprintf(buf + at, sizeof buf - at, "%snull", sep);
    }
    snprintf(buf + at, sizeof buf - at, "]");
    json_raw(j, key, buf);
}

void flatness_print_json(FILE *f, const flatness_opts *o, const flatness_result *r)
{
    json_out j;
    json_begin(&j, f);
    json_str(&j, "ckpt", r->ckpt);
    json_str(&j, "arch", r->arch);
    json_str(&j, "trained_on", r->trained_on);
    json_str(&j, "dataset", r->dataset);
    json_int(&j, "images", r->images);
    json_int(&j, "batch", o->batch);
    json_int(&j, "iters", o->iters);
    json_int(&j, "k", o->k);
    json_int(&j, "starts", r->starts);
    json_int(&j, "probes", r->probes);
    json_int(&j, "seed", o->seed);
    json_num(&j, "eps", o->eps);
    json_num(&j, "lambda_max", r->lambda_mean);
    json_num(&j, "lambda_max_sd", r->lambda_sd);
    json_num(&j, "lambda_max_min", r->lambda_min);
    json_num(&j, "lambda_max_max", r->lambda_max_over_starts);
    json_list(&j, "lambda_max_starts", r->lambda_max, r->starts);
    json_num(&j, "topk_sum", r->top_mean);
    json_num(&j, "topk_sum_sd", r->top_sd);
    json_list(&j, "topk_sum_starts", r->top_sum, r->starts);
    json_num(&j, "trace", r->trace);
    json_num(&j, "trace_se", r->trace_se);
    json_num(&j, "seconds", r->seconds);
    json_end(&j);
}

int cmd_flatness(int argc, char **argv)
{
    flatness_opts o;
    flatness_opts_init(&o);
    const char *ckpt = NULL, *data = NULL;
    int json = 0;
    flag_spec specs[] = {
        {"ckpt", FLAG_STR, &ckpt, "checkpoint file, or a run folder (its best.ckpt, else last.ckpt)", 0},
        {"data", FLAG_STR, &data, "data folder (default: the run's --data, else the dataset's own)", 0},
        {"images", FLAG_INT, &o.images, "the loss is over the first N training images", 0},
        {"iters", FLAG_INT, &o.iters, "Lanczos iterations per start", 0},
        {"k", FLAG_INT, &o.k, "report the sum of the top k eigenvalues", 0},
        {"starts", FLAG_INT, &o.starts, "random Lanczos starts (mean and spread reported)", 0},
        {"probes", FLAG_INT, &o.probes, "Hutchinson probes for the trace (0 = no trace)", 0},
        {"batch", FLAG_INT, &o.batch, "images per forward/backward (BN batch statistics per batch)", 0},
        {"seed", FLAG_LONG, &o.seed, "seed of the start and probe vectors", 0},
        {"eps", FLAG_DOUBLE, &o.eps, "central-difference step of the Hessian-vector products", 0},
        {"json", FLAG_BOOL, &json, "print one JSON object instead of the text report", 0},
    };
    const char *pos[1];
    flag_table t = {.command = "flatness",
                    .usage = "nnc flatness --ckpt FILE|RUN [DATASET] [--images N] [--json] [flags]",
                    .summary = "Sharpness of a trained model: the largest Hessian eigenvalues of its training loss (Lanczos,\n"
                               "from --starts random vectors: lambda_max and the sum of the top --k, mean and spread over\n"
                               "the starts) and the Hessian trace (Hutchinson, --probes Rademacher vectors, mean ± standard\n"
                               "error). The loss is the mean cross-entropy over the first --images training images of\n"
                               "DATASET (default: the dataset the checkpoint was trained on), without augmentation, in\n"
                               "train mode. Smaller values mean a flatter minimum. Cost: 2 gradients over the images per\n"
                               "Lanczos iteration and per probe.",
                    .flags = specs,
                    .nflags = (int)(sizeof specs / sizeof *specs),
                    .positional = pos,
                    .max_positional = 1};
    int r = flags_parse(&t, argc - 1, argv + 1);
    if (r == 1) return EXIT_OK;
    if (r) return r;
    if (!ckpt || !*ckpt) {
        cli_error("flatness: --ckpt FILE|RUN is required (a checkpoint file or a run folder)");
        return EXIT_USAGE;
    }
    r = flatness_opts_check(&o);
    if (r) return r;
    flatness_result *res = malloc(sizeof *res);
    if (!res) {
        cli_error("out of memory");
        return EXIT_RUNTIME;
    }
    r = flatness_measure(ckpt, t.npositional ? pos[0] : NULL, data, &o, res);
    if (!r) {
        if (json)
            flatness_print_json(stdout, &o, res);
        else
            flatness_print(stdout, &o, res);
    }
    free(res);
    return r;
}
