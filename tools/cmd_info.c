/* tools/cmd_info.c - `nnc info --model NAME`: layers, output shapes, parameters and MACs;
 * `nnc info --topology`: the machine (hwloc) and the placement plan of M worker teams. */
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "dist/place.h"
#include "models/models.h"
#include "nn/status.h"
#include "tools/cli.h"

/* Packages, NUMA nodes, cores and the plan nnc_train would make for M workers of T threads. */
static int topology(int M, int T, const char *placement, int json)
{
    int pl = !strcmp(placement, "auto") ? NNC_PLACEMENT_AUTO : !strcmp(placement, "none") ? NNC_PLACEMENT_NONE : -1;
    if (pl < 0) {
        cli_error("--placement: expected auto or none, found '%s'", placement);
        return EXIT_USAGE;
    }
    if (M < 1 || M > NNC_MAX_WORKERS) {
        cli_error("--workers: expected a worker count in 1..%d, found '%d'", NNC_MAX_WORKERS, M);
        return EXIT_USAGE;
    }
    if (T < 0) {
        cli_error("--threads-per-worker: expected an integer >= 0 (0 = cores / workers), found '%d'", T);
        return EXIT_USAGE;
    }
    nnc__topo t;
    int s = nnc__topo_load(NULL, &t);
    if (s) {
        cli_error("info --topology: %s", nnc_error_message());
        return EXIT_RUNTIME;
    }
    if (T == 0) T = t.ncores / M > 1 ? t.ncores / M : 1;
    nnc__plan p;
    s = nnc__plan_make(&t, M, T, pl, &p);
    if (s) {
        nnc__topo_free(&t);
        cli_error("info --topology: %s", nnc_error_message());
        return EXIT_USAGE;
    }
    if (json) {
        size_t n = 256 + (size_t)M * (64 + (size_t)T * 16); /* header ~100 bytes, per worker ~40 + 12 per cpu */
        char *buf = malloc(n);
        if (buf) {
            nnc__plan_json(&t, &p, 0, buf, n);
            printf("%s\n", buf);
        }
        free(buf);
    } else {
        printf("machine: %d package%s, %d NUMA node%s, %d cores, %d hardware threads%s\n", t.npackages,
               t.npackages == 1 ? "" : "s", t.nnodes, t.nnodes == 1 ? "" : "s", t.ncores, t.npus,
               t.thissystem ? "" : " (not this machine: nothing would be pinned)");
        for (int k = 0; k < t.nnodes; k++) {
            int pk = -1, n = 0;
            for (int c = 0; c < t.ncores; c++)
                if (t.core_node[c] == k) {
                    if (pk < 0) pk = t.core_pkg[c];
                    n++;
                }
            printf("  node %d (package %d): %d cores, cpus", k, pk, n);
            for (int c = 0, first = 1; c < t.ncores; c++)
                if (t.core_node[c] == k) {
                    printf("%s%d", first ? " " : ",", t.core_cpu[c]);
                    first = 0;
                }
            printf("\n");
        }
        printf("plan: %d worker%s x %d thread%s, placement %s%s\n", M, M == 1 ? "" : "s", T, T == 1 ? "" : "s",
               placement, p.pinned ? "" : " (not pinned)");
        for (int w = 0; p.pinned && w < M; w++) {
            printf("  worker %d: node %d, cpus", w, p.node[w]);
            for (int i = 0; i < T; i++) printf("%s%d", i ? "," : " ", p.cpus[(size_t)w * T + i]);
            printf("\n");
        }
    }
    fflush(stdout);
    if (p.warning[0]) fprintf(stderr, "nnc: %s\n", p.warning);
    nnc__plan_free(&p);
    nnc__topo_free(&t);
    return EXIT_OK;
}

int cmd_info(int argc, char **argv)
{
    nnc_model_config mc = nnc_model_config_default();
    const char *model = NULL;
    int list = 0, topo = 0, workers = 1, tpw = 0, json = 0;
    const char *placement = "auto";
    flag_spec specs[] = {
        {"model", FLAG_STR, &model, "model name (--list shows them)", 0},
        {"image-size", FLAG_INT, &mc.image_size, "input height = width", 0},
        {"in-channels", FLAG_INT, &mc.in_channels, "input channels", 0},
        {"classes", FLAG_INT, &mc.num_classes, "output classes", 0},
        {"list", FLAG_BOOL, &list, "list the registered models", 0},
        {"topology", FLAG_BOOL, &topo, "instead: packages, NUMA nodes, cores and the placement plan (hwloc)", 0},
        {"workers", FLAG_INT, &workers, "--topology: workers to plan for", 0},
        {"threads-per-worker", FLAG_INT, &tpw, "--topology: threads of each worker (0 = cores / workers)", 0},
        {"placement", FLAG_STR, &placement, "--topology: auto or none", 0},
        {"json", FLAG_BOOL, &json, "--topology: one JSON object", 0},
    };
    flag_table t = {.command = "info",
                    .usage = "nnc info --model NAME [--image-size N --in-channels C --classes K] | nnc info --list | "
                             "nnc info --topology [--workers M --threads-per-worker T] [--json]",
                    .summary = "Describe a model: one line per layer (output shape, parameters, multiply-accumulates),\n"
                               "then the parameter count, tensor count and MACs per image.",
                    .flags = specs,
                    .nflags = (int)(sizeof specs / sizeof *specs)};
    int r = flags_parse(&t, argc - 1, argv + 1);
    if (r == 1) return EXIT_OK;
    if (r) return r;
    if (topo) return topology(workers, tpw, placement, json);
    if (list || !model) {
        if (!model && !list) {
            cli_error("info: --model NAME is required; registered models:");
            for (int i = 0; i < nnc_model_num_registered(); i++) fprintf(stderr, "  %s\n", nnc_model_registered_name(i));
            return EXIT_USAGE;
        }
        for (int i = 0; i < nnc_model_num_registered(); i++) printf("%s\n", nnc_model_registered_name(i));
        return EXIT_OK;
    }
    if (!nnc_model_exists(model)) {
        char all[512];
        nnc_model_list(all, sizeof all);
        const char *best = nnc_model_suggest(model);
        cli_error("--model: unknown model '%s'%s%s%s; models: %s", model, best ? " (did you mean '" : "",
                  best ? best : "", best ? "'?)" : "", all);
        return EXIT_USAGE;
    }
    nnc_model *m = NULL;
    int s = nnc_model_new(model, &mc, 0, &m);
    if (s) {
        cli_error("info: %s", nnc_error_message());
        return cli_load_exit_code(s);
    }
    int n = nnc_model_layers(m, NULL, 0);
    nnc_model_layer_info *li = calloc((size_t)(n > 0 ? n : 1), sizeof *li);
    if (!li) {
        nnc_model_free(m);
        cli_error("out of memory");
        return EXIT_RUNTIME;
    }
    n = nnc_model_layers(m, li, n);
    printf("%s (%s)\n", model, nnc_model_arch(m));
    printf("  %-28s %-12s %-16s %12s %16s\n", "layer", "kind", "output (C,H,W)", "params", "MACs");
    for (int i = 0; i < n; i++) {
        char shape[48];
        snprintf(shape, sizeof shape, "(%d,%d,%d)", li[i].out_shape[0], li[i].out_shape[1], li[i].out_shape[2]);
        printf("  %-28s %-12s %-16s %12ld %16lld\n", li[i].name, li[i].kind, shape, li[i].params, li[i].macs);
    }
    const nnc_params *p = nnc_model_params_const(m);
    long long macs = nnc_model_macs(m);
    printf("layers: %d\nparameters: %zu\ntensors: %d trained (+%d buffers)\nMACs per image: %lld (%.2f M)\n", n,
           nnc_params_num_scalars(p), nnc_params_num_trained(p), p->count - nnc_params_num_trained(p), macs,
           (double)macs / 1e6);
    free(li);
    nnc_model_free(m);
    return EXIT_OK;
}
