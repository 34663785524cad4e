/* tools/cmd_predict.c - `nnc predict --ckpt FILE IMAGE...`: top-k classes with probabilities.
 * Normalisation (mean/std) and class names come from the checkpoint's "meta/json" section, or
 * from dataset.json in the checkpoint's folder (both written by `nnc train`). The class-name
 * table is sized by the checkpoint's class count (any count the model accepts); names are used
 * only when the metadata lists exactly that many, else classes are shown by number. */
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data.h"
#include "nn/fileio.h"
#include "nn/status.h"
#include "tools/ckpt_model.h"

#define MAX_IMAGES 256
#define MAX_META_BYTES (64 << 20) /* dataset.json: a million class names fit */

/* A metadata file read whole (malloc'd, NUL-terminated), or NULL when it is missing; one that
 * exists but is not a regular file (a FIFO would block) or is over MAX_META_BYTES is reported
 * and treated as missing. */
static char *read_meta_file(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return NULL;
    int status;
    FILE *f = nnc__fopen_regular(path, "dataset metadata", &status);
    if (!f) {
        cli_error("%s", nnc_error_message());
        return NULL;
    }
    char *t = NULL;
    if (fstat(fileno(f), &st) != 0 || st.st_size > MAX_META_BYTES) {
        cli_error("%s: not read (over %d bytes)", path, MAX_META_BYTES);
    } else if ((t = malloc((size_t)st.st_size + 1))) {
        size_t n = fread(t, 1, (size_t)st.st_size, f);
        t[n] = 0;
    }
    fclose(f);
    return t;
}

/* Metadata text (malloc'd) from the checkpoint or its folder's dataset.json; NULL if neither. */
static char *load_meta(const nnc_ckpt *ck, const char *ckpt_path, char *source, size_t n)
{
    const void *data;
    size_t len;
    if (nnc_ckpt_get_bytes(ck, "meta/json", &data, &len) == 0) {
        char *t = malloc(len + 1);
        if (!t) return NULL;
        memcpy(t, data, len);
        t[len] = 0;
        snprintf(source, n, "%s (meta/json)", ckpt_path);
        return t;
    }
    char dir[1024], path[1100];
    if (strlen(ckpt_path) >= sizeof dir) { /* never read a truncated path's dataset.json */
        snprintf(source, n, "dataset.json next to the checkpoint (path too long)");
        return NULL;
    }
    snprintf(dir, sizeof dir, "%s", ckpt_path);
    snprintf(path, sizeof path, "%s/dataset.json", dirname(dir));
    snprintf(source, n, "%s", path);
    return read_meta_file(path);
}

static int parse_triple(const char *flag, const char *s, double *v, int c)
{
    int n = 0;
    const char *p = s;
    while (*p && n < 3) {
        char *end;
        v[n++] = strtod(p, &end);
        if (end == p) break;
        p = *end == ',' ? end + 1 : end;
        if (!*end) break;
    }
    if (n != c || *p) {
        cli_error("--%s: expected %d comma-separated numbers (one per channel), found '%s'", flag, c, s);
        return EXIT_USAGE;
    }
    return 0;
}

int cmd_predict(int argc, char **argv)
{
    const char *ckpt = NULL, *mean_s = NULL, *std_s = NULL;
    int topk = 5, max_dim = 4096;
    const char *precision = "fp32";
    flag_spec specs[] = {
        {"ckpt", FLAG_STR, &ckpt, "checkpoint file", 0},
        {"top", FLAG_INT, &topk, "classes shown per image", 0},
        {"mean", FLAG_STR, &mean_s, "per-channel mean, e.g. 0.49,0.48,0.45 (default: from the checkpoint)", 0},
        {"std", FLAG_STR, &std_s, "per-channel std (default: from the checkpoint)", 0},
        {"max-dim", FLAG_INT, &max_dim, "reject images larger than this in either dimension", 0},
        {"precision", FLAG_STR, &precision, "conv operands: fp32 or bf16 (AVX512_BF16; docs/precision.md)", 0},
    };
    const char *pos[MAX_IMAGES];
    flag_table t = {.command = "predict",
                    .usage = "nnc predict --ckpt FILE IMAGE... [--top K]",
                    .summary = "Classify images (PNG, JPEG (libjpeg-turbo), BMP, PPM/PGM) with a trained checkpoint: the\n"
                               "top-K classes "
                               "and their probabilities per image. Images are resized to the model's input size.",
                    .flags = specs,
                    .nflags = (int)(sizeof specs / sizeof *specs),
                    .positional = pos,
                    .max_positional = MAX_IMAGES};
    int r = flags_parse(&t, argc - 1, argv + 1);
    if (r == 1) return EXIT_OK;
    if (r) return r;
    if ((r = cli_set_precision(precision))) return r;
    if (!ckpt) {
        cli_error("predict: --ckpt FILE is required");
        return EXIT_USAGE;
    }
    if (!t.npositional) {
        cli_error("predict: no IMAGE given (see nnc predict --help)");
        return EXIT_USAGE;
    }
    if (topk <= 0) {
        cli_error("--top: expected a positive integer, found %d", topk);
        return EXIT_USAGE;
    }
    char resolved[1100];
    const char *given = ckpt;
    ckpt = cli_resolve_ckpt(ckpt, resolved, sizeof resolved);
    if (!ckpt) {
        cli_error("--ckpt %.60s...: folder path too long (at most %zu characters)", given, sizeof resolved - 16);
        return EXIT_USAGE;
    }
    nnc_ckpt *ck;
    nnc_model *m;
    r = cli_model_from_ckpt(ckpt, NULL, &ck, &m);
    if (r) return r;
    nnc_model_config mc = nnc_model_get_config(m);
    int c = mc.in_channels, sz = mc.image_size, k = mc.num_classes;
    if (c != 1 && c != 3) { /* images are grey or RGB; mean/std below hold 3 values */
        cli_error("%s: model takes %d input channels; predict reads 1-channel (grey) or 3-channel "
                  "(RGB) images only",
                  ckpt, c);
        nnc_model_free(m);
        nnc_ckpt_free(ck);
        return EXIT_USAGE;
    }
    double mean[3] = {0, 0, 0}, stdv[3] = {1, 1, 1};
    char source[1200];
    char *meta = load_meta(ck, ckpt, source, sizeof source);
    char **names = calloc((size_t)k, sizeof *names); /* k >= 1: the model checked it */
    int nnames = 0;
    if (!names) {
        cli_error("out of memory");
        r = EXIT_RUNTIME;
    } else if (meta) {
        if (jr_nums(meta, "mean", mean, 3) != c || jr_nums(meta, "std", stdv, 3) != c) {
            cli_error("%s: expected mean and std with %d values each", source, c);
            r = EXIT_USAGE;
        }
        nnames = jr_strs(meta, "classes", names, k); /* stores at most k, returns the count */
        int stored = nnames < 0 ? 0 : nnames < k ? nnames : k;
        int ok = nnames == k;
        for (int i = 0; i < stored; i++) ok = ok && names[i];
        if (!ok) { /* wrong count (or no memory for a name): show class numbers only */
            for (int i = 0; i < stored; i++) free(names[i]), names[i] = NULL;
            nnames = 0;
        }
    } else if (!mean_s || !std_s) {
        cli_error("%s has no meta/json section and %s is missing: pass --mean and --std", ckpt, source);
        r = EXIT_USAGE;
    }
    if (!r && mean_s) r = parse_triple("mean", mean_s, mean, c);
    if (!r && std_s) r = parse_triple("std", std_s, stdv, c);
    for (int i = 0; !r && i < c; i++)
        if (!(stdv[i] > 0)) {
            cli_error("std of channel %d: expected > 0, found %g", i, stdv[i]);
            r = EXIT_USAGE;
        }
    size_t per = (size_t)c * (size_t)sz * (size_t)sz;
    uint8_t *img = malloc(per);
    float *x = malloc(per * sizeof *x);
    float *prob = malloc((size_t)k * sizeof *prob);
    int *order = malloc((size_t)k * sizeof *order);
    nnc_graph *g = NULL;
    if (!r && (!img || !x || !prob || !order || nnc_graph_new(0, &g))) {
        cli_error("out of memory");
        r = EXIT_RUNTIME;
    }
    if (g) nnc_graph_set_grad(g, 0);
    if (topk > k) topk = k;
    for (int i = 0; !r && i < t.npositional; i++) {
        int s = nnc_image_load(pos[i], c, sz, max_dim, img);
        if (s) {
            cli_error("%s", nnc_error_message());
            r = cli_load_exit_code(s);
            break;
        }
        /* (C, H, W) uint8 -> normalised float */
        for (size_t j = 0; j < per; j++) {
            int ch = (int)(j / ((size_t)sz * (size_t)sz));
            x[j] = (float)((img[j] / 255.0 - mean[ch]) / stdv[ch]);
        }
        nnc_graph_reset(g);
        int shape[4] = {1, c, sz, sz};
        nnc_tensor *in = nnc_tensor_wrap(g, x, 4, shape);
        nnc_tensor *logits = nnc_model_forward_infer(m, g, in);
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j < k; j++) mx = fmax(mx, logits->data[j]);
        for (int j = 0; j < k; j++) sum += prob[j] = (float)exp(logits->data[j] - mx);
        for (int j = 0; j < k; j++) prob[j] = (float)(prob[j] / sum), order[j] = j;
        for (int a = 0; a < topk; a++) /* partial selection sort: top-k first */
            for (int b = a + 1; b < k; b++)
                if (prob[order[b]] > prob[order[a]]) {
                    int tmp = order[a];
                    order[a] = order[b];
                    order[b] = tmp;
                }
        printf("%s\n", pos[i]);
        for (int a = 0; a < topk; a++)
            printf("  %2d. %-16s %6.2f%%  (class %d)\n", a + 1, nnames ? names[order[a]] : "",
                   100.0 * prob[order[a]], order[a]);
    }
    for (int i = 0; i < nnames; i++) free(names[i]);
    free(names);
    nnc_graph_free(g);
    free(meta), free(img), free(x), free(prob), free(order);
    nnc_model_free(m);
    nnc_ckpt_free(ck);
    return r;
}
