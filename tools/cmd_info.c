/* tools/cmd_info.c - `nnc info --model NAME`: layers, output shapes, parameters and MACs. */
#include <stdlib.h>
#include <string.h>

#include "models/models.h"
#include "nn/status.h"
#include "tools/cli.h"

int cmd_info(int argc, char **argv)
{
    nnc_model_config mc = nnc_model_config_default();
    const char *model = NULL;
    int list = 0;
    flag_spec specs[] = {
        {"model", FLAG_STR, &model, "model name (--list shows them)", 0},
        {"image-size", FLAG_INT, &mc.image_size, "input height = width", 0},
        {"in-channels", FLAG_INT, &mc.in_channels, "input channels", 0},
        {"classes", FLAG_INT, &mc.num_classes, "output classes", 0},
        {"list", FLAG_BOOL, &list, "list the registered models", 0},
    };
    flag_table t = {.command = "info",
                    .usage = "nnc info --model NAME [--image-size N --in-channels C --classes K] | nnc info --list",
                    .summary = "Describe a model: one line per layer (output shape, parameters, multiply-accumulates),\n"
                               "then the parameter count, tensor count and MACs per image.",
                    .flags = specs,
                    .nflags = (int)(sizeof specs / sizeof *specs)};
    int r = flags_parse(&t, argc - 1, argv + 1);
    if (r == 1) return EXIT_OK;
    if (r) return r;
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
