/* tools/cmd_eval.c - `nnc eval DATASET --ckpt FILE`: top-1, loss, per-class accuracy and the
 * confusion matrix (rows = true class, columns = predicted) of a checkpoint on a test split. */
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "nn/status.h"
#include "nn/checkpoint.h"
#include "tools/ckpt_model.h"

int cmd_eval(int argc, char **argv)
{
    const char *dataset = NULL, *data = NULL, *ckpt = NULL, *model = NULL;
    int batch = 100, confusion = 0, train_split = 0;
    long limit = 0;
    const char *precision = "fp32";
    flag_spec specs[] = {
        {"ckpt", FLAG_STR, &ckpt, "checkpoint file (last.ckpt / best.ckpt of a run folder)", 0},
        {"data", FLAG_STR, &data, "data folder (default: the dataset's own)", 0},
        {"model", FLAG_STR, &model, "refuse the checkpoint unless its architecture is this model", 0},
        {"batch", FLAG_INT, &batch, "evaluation batch size", 0},
        {"limit", FLAG_LONG, &limit, "use only the first N test images (0 = all)", 0},
        {"train-split", FLAG_BOOL, &train_split, "evaluate on the training split instead of the test split", 0},
        {"confusion", FLAG_BOOL, &confusion, "print the confusion matrix even for more than 20 classes", 0},
        {"precision", FLAG_STR, &precision, "conv operands: fp32 or bf16 (AVX512_BF16; docs/precision.md)", 0},
    };
    const char *pos[1];
    flag_table t = {.command = "eval",
                    .usage = "nnc eval DATASET --ckpt FILE [--data DIR] [flags]",
                    .summary = "Evaluate a checkpoint on DATASET's test split (DATASET: cifar10, cifar100, fashion-mnist,\n"
                               "mnist or imagefolder): top-1 accuracy, mean loss, per-class accuracy and the confusion\n"
                               "matrix (rows = true class, columns = predicted). A checkpoint trained on another dataset\n"
                               "of the same shape is evaluated with a warning; another shape is refused (exit 2).",
                    .flags = specs,
                    .nflags = (int)(sizeof specs / sizeof *specs),
                    .positional = pos,
                    .max_positional = 1};
    int r = flags_parse(&t, argc - 1, argv + 1);
    if (r == 1) return EXIT_OK;
    if (r) return r;
    if ((r = cli_set_precision(precision))) return r;
    if (t.npositional) dataset = pos[0];
    if (!dataset) {
        cli_error("eval: missing DATASET (see nnc eval --help)");
        return EXIT_USAGE;
    }
    if (!ckpt) {
        cli_error("eval: --ckpt FILE is required");
        return EXIT_USAGE;
    }
    static const flag_range ranges[] = {
        {"batch", 1, 2147483647, "a batch size >= 1"},
        {"limit", 0, 2147483647, "a count of images in 0..2147483647 (0 = all)"},
    };
    r = flags_check_ranges(&t, ranges, 2);
    if (r) return r;
    if (!nnc_dataset_exists(dataset)) {
        const char *best = nnc_dataset_suggest(dataset);
        cli_error("eval: unknown dataset '%s'%s%s%s; datasets: %s", dataset, best ? " (did you mean '" : "",
                  best ? best : "", best ? "'?)" : "", nnc_dataset_list());
        return EXIT_USAGE;
    }
    nnc_ckpt *ck;
    nnc_model *m;
    r = cli_model_from_ckpt(ckpt, model, &ck, &m);
    if (r) return r;
    /* The dataset the checkpoint was trained on (its meta/json, written by nnc train). */
    char trained_on[64] = "";
    const void *meta;
    size_t meta_len;
    if (nnc_ckpt_get_bytes(ck, "meta/json", &meta, &meta_len) == 0) {
        char *text = malloc(meta_len + 1);
        if (text) {
            memcpy(text, meta, meta_len);
            text[meta_len] = 0;
            if (jr_str(text, "dataset", trained_on, sizeof trained_on)) trained_on[0] = 0;
            free(text);
        }
    }
    nnc_dataset *d = NULL;
    int s = nnc_dataset_load(dataset, data, train_split, (int)limit, &d);
    if (s) {
        cli_error("%s", nnc_error_message());
        nnc_model_free(m);
        nnc_ckpt_free(ck);
        return cli_load_exit_code(s);
    }
    nnc_model_config mc = nnc_model_get_config(m);
    int other = trained_on[0] && strcmp(trained_on, dataset) != 0;
    if (d->c != mc.in_channels || d->h != mc.image_size || d->w != mc.image_size || d->num_classes != mc.num_classes) {
        char note[128] = "";
        if (other) snprintf(note, sizeof note, " (the checkpoint was trained on %s, not %s)", trained_on, dataset);
        cli_error("%s: architecture mismatch: checkpoint %s expects %d channels, %dx%d images, %d classes; %s has %d "
                  "channels, %dx%d images, %d classes%s",
                  ckpt, nnc_ckpt_arch(ck), mc.in_channels, mc.image_size, mc.image_size, mc.num_classes, dataset, d->c,
                  d->h, d->w, d->num_classes, note);
        nnc_dataset_free(d);
        nnc_model_free(m);
        nnc_ckpt_free(ck);
        return EXIT_USAGE;
    }
    if (other) {
        fflush(stdout);
        fprintf(stderr,
                "nnc: warning: %s was trained on %s but is evaluated on %s (same %dx%dx%d images and %d classes, "
                "different data: the accuracy below is not the model's accuracy on %s)\n",
                ckpt, trained_on, dataset, d->c, d->h, d->w, d->num_classes, trained_on);
    }
    int k = d->num_classes;
    long *conf = calloc((size_t)k * (size_t)k, sizeof *conf);
    double loss = 0, acc = 0;
    s = conf ? nnc_evaluate(m, d, batch, &loss, &acc, conf) : NNC_ENOMEM;
    if (s) {
        cli_error("evaluation failed: %s", nnc_error_message());
        free(conf);
        nnc_dataset_free(d);
        nnc_model_free(m);
        nnc_ckpt_free(ck);
        return cli_exit_code(s);
    }
    long total = 0;
    for (long i = 0; i < (long)k * k; i++) total += conf[i];
    printf("checkpoint %s (%s%s%s) on %s %s split, %d images\n", ckpt, nnc_ckpt_arch(ck),
           trained_on[0] ? ", trained on " : "", trained_on, dataset, train_split ? "train" : "test", d->n);
    printf("top-1 accuracy %.2f%%  mean loss %.4f\n", 100 * acc, loss);
    printf("\nper-class accuracy:\n");
    for (int c = 0; c < k; c++) {
        long row = 0;
        for (int j = 0; j < k; j++) row += conf[(long)c * k + j];
        const char *name = d->class_names ? d->class_names[c] : NULL;
        char label[64];
        snprintf(label, sizeof label, "%d%s%s", c, name ? " " : "", name ? name : "");
        if (row)
            printf("  %-20s %6.2f%%  (%ld/%ld)\n", label, 100.0 * (double)conf[(long)c * k + c] / (double)row,
                   conf[(long)c * k + c], row);
        else
            printf("  %-20s      -   (0 images)\n", label);
    }
    if (k <= 20 || confusion) {
        printf("\nconfusion matrix (rows = true class, columns = predicted), total %ld:\n      ", total);
        for (int j = 0; j < k; j++) printf(" %6d", j);
        printf("\n");
        for (int c = 0; c < k; c++) {
            printf("  %3d ", c);
            for (int j = 0; j < k; j++) printf(" %6ld", conf[(long)c * k + j]);
            printf("\n");
        }
    } else {
        printf("\n(confusion matrix of %d classes not shown; --confusion prints it), total %ld\n", k, total);
    }
    free(conf);
    nnc_dataset_free(d);
    nnc_model_free(m);
    nnc_ckpt_free(ck);
    return EXIT_OK;
}
