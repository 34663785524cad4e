/* tools/cmd_data.c - `nnc data fetch cifar10|cifar100|mnist|fashion-mnist` and
 * `nnc data info DATASET`. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "nn/status.h"
#include "tools/cli.h"

static int data_fetch(int argc, char **argv)
{
    const char *dir = NULL, *url = NULL, *md5 = NULL;
    flag_spec specs[] = {
        {"data", FLAG_STR, &dir, "data folder (default data-cache/<name>)", 0},
        {"url", FLAG_STR, &url, "download from this URL instead of the official one (mnist, fashion-mnist: "
                                "the base URL of the four .gz files)", 0},
        {"md5", FLAG_STR, &md5, "expected MD5 of the archive (mnist, fashion-mnist: four, comma separated; "
                                "default: the published checksums)", 0},
    };
    const char *pos[1];
    flag_table t = {.command = "data fetch",
                    .usage = "nnc data fetch cifar10|cifar100|mnist|fashion-mnist [--data DIR] [--url URL]",
                    .summary = "Download CIFAR-10 or CIFAR-100 (binary version, extracted), MNIST or Fashion-MNIST\n"
                               "(the four .gz IDX files), checking the published MD5s.",
                    .flags = specs,
                    .nflags = 3,
                    .positional = pos,
                    .max_positional = 1};
    int r = flags_parse(&t, argc, argv);
    if (r == 1) return EXIT_OK;
    if (r) return r;
    if (!t.npositional) {
        cli_error("data fetch: missing DATASET (cifar10, cifar100, mnist or fashion-mnist)");
        return EXIT_USAGE;
    }
    if (!nnc_dataset_downloadable(pos[0])) {
        const char *best = nnc_dataset_suggest(pos[0]);
        if (!nnc_dataset_downloadable(best)) best = NULL;
        cli_error("data fetch: expected cifar10, cifar100, mnist or fashion-mnist, found '%s'%s%s%s%s", pos[0],
                  best ? " (did you mean '" : "", best ? best : "", best ? "'?)" : "",
                  nnc_dataset_exists(pos[0]) ? " (it is read from --data DIR, not downloaded)" : "");
        return EXIT_USAGE;
    }
    const char *where = dir ? dir : nnc_dataset_default_dir(pos[0]);
    if (nnc_dataset_present(pos[0], dir)) {
        printf("%s already present in %s\n", pos[0], where);
        return EXIT_OK;
    }
    printf("downloading %s into %s\n", pos[0], where);
    progress p;
    progress_init(&p, 1);
    nnc_fetch_config fc = {url, md5, cli_fetch_progress, &p};
    int s = nnc_dataset_fetch(pos[0], dir, &fc);
    progress_done(&p);
    if (s) {
        cli_error("%s", nnc_error_message());
        return s == NNC_EINVAL || s == NNC_ECHECKSUM || s == NNC_EFORMAT ? EXIT_USAGE : EXIT_RUNTIME;
    }
    printf("%s ready in %s\n", pos[0], where);
    return EXIT_OK;
}

static void describe(const char *split, const nnc_dataset *d)
{
    printf("%s: %d images, %d x %d x %d (C x H x W), %d classes\n", split, d->n, d->c, d->h, d->w, d->num_classes);
    printf("  mean");
    for (int i = 0; i < d->c && i < 3; i++) printf(" %.4f", d->mean[i]);
    printf("  std");
    for (int i = 0; i < d->c && i < 3; i++) printf(" %.4f", d->std[i]);
    printf("\n  images per class:");
    long *count = calloc((size_t)d->num_classes, sizeof *count);
    if (!count) return;
    for (int i = 0; i < d->n; i++) count[d->labels[i]]++;
    for (int c = 0; c < d->num_classes; c++) {
        if (c % 5 == 0) printf("\n   ");
        if (d->class_names)
            printf(" %3d %-12s %6ld", c, d->class_names[c], count[c]);
        else
            printf(" %3d %6ld", c, count[c]);
    }
    printf("\n");
    free(count);
}

static int data_info(int argc, char **argv)
{
    const char *dir = NULL;
    flag_spec specs[] = {{"data", FLAG_STR, &dir, "data folder (default: the dataset's own)", 0}};
    const char *pos[1];
    flag_table t = {.command = "data info",
                    .usage = "nnc data info DATASET [--data DIR]",
                    .summary = "Load both splits of DATASET (cifar10, cifar100, fashion-mnist, mnist or imagefolder) and print\n"
                               "their sizes, shapes, normalisation and class counts.",
                    .flags = specs,
                    .nflags = 1,
                    .positional = pos,
                    .max_positional = 1};
    int r = flags_parse(&t, argc, argv);
    if (r == 1) return EXIT_OK;
    if (r) return r;
    if (!t.npositional) {
        cli_error("data info: missing DATASET (%s)", nnc_dataset_list());
        return EXIT_USAGE;
    }
    if (!nnc_dataset_exists(pos[0])) {
        nnc_dataset *d = NULL;
        int s = nnc_dataset_load(pos[0], dir, 0, 0, &d); /* the message with "did you mean" */
        nnc_dataset_free(d);
        cli_error("data info: %s", nnc_error_message());
        return cli_load_exit_code(s);
    }
    printf("%s in %s\n", pos[0], dir ? dir : nnc_dataset_default_dir(pos[0]) ? nnc_dataset_default_dir(pos[0]) : "?");
    for (int split = 1; split >= 0; split--) {
        nnc_dataset *d = NULL;
        int s = nnc_dataset_load(pos[0], dir, split, 0, &d);
        if (s) {
            cli_error("%s", nnc_error_message());
            return cli_load_exit_code(s);
        }
        describe(split ? "train" : "test", d);
        nnc_dataset_free(d);
    }
    return EXIT_OK;
}

int cmd_data(int argc, char **argv)
{
    static const char *help = "usage: nnc data fetch cifar10|cifar100|mnist|fashion-mnist [--data DIR] [--url URL]\n"
                              "       nnc data info DATASET [--data DIR]\n\n"
                              "fetch downloads a dataset (checking the published MD5s); info describes both splits.\n"
                              "nnc data fetch --help and nnc data info --help list their flags.\n";
    if (argc < 2) {
        fputs(help, stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(help, stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "fetch")) return data_fetch(argc - 2, argv + 2);
    if (!strcmp(argv[1], "info")) return data_info(argc - 2, argv + 2);
    static const char *const actions[] = {"fetch", "info"};
    const char *best = cli_closest(argv[1], actions, 2);
    cli_error("data: unknown action '%s'%s%s%s; expected fetch or info", argv[1], best ? " (did you mean '" : "",
              best ? best : "", best ? "'?)" : "");
    return EXIT_USAGE;
}
