/* tools/ckpt_model.c - rebuild the model a checkpoint was trained with (eval, predict).
 * The checkpoint's architecture string "<name>/c<in>/s<size>/k<classes>" says which model to
 * build; the parameters come from the reported model's sections (center of a multi-worker run,
 * else the single replica). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "models/models.h"
#include "nn/checkpoint.h"
#include "nn/status.h"
#include "tools/ckpt_model.h"

/* Where the reported model's sections may be: the top level is nnc_train's layout (the replica,
 * or the center of a multi-worker run); model/, center/ and w0/ (worker 0) are accepted for
 * checkpoints assembled by other programs with nnc_ckpt_add_params. */
static const char *PREFIXES[] = {"", "model/", "center/", "w0/"};

/* Bounds on the architecture read from a file (far above any dataset nnc reads). */
#define MAX_CHANNELS 64
#define MAX_IMAGE 4096
#define MAX_CLASSES 100000

const char *cli_resolve_ckpt(const char *path, char *buf, size_t n)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return path;
    /* a folder path too long for buf: NULL, never a truncated (other) file name */
    if ((size_t)snprintf(buf, n, "%s/best.ckpt", path) >= n) return NULL;
    if (stat(buf, &st) != 0) snprintf(buf, n, "%s/last.ckpt", path);
    return buf;
}

int cli_model_from_ckpt(const char *path, const char *want_model, nnc_ckpt **ck_out, nnc_model **m_out)
{
    *ck_out = NULL;
    *m_out = NULL;
    char file[1100];
    const char *given = path;
    path = cli_resolve_ckpt(path, file, sizeof file);
    if (!path) {
        cli_error("--ckpt %.60s...: folder path too long (at most %zu characters)", given, sizeof file - 16);
        return EXIT_USAGE;
    }
    nnc_ckpt *ck = NULL;
    int s = nnc_ckpt_load(path, &ck);
    if (s) {
        cli_error("%s", nnc_error_message());
        return cli_load_exit_code(s);
    }
    const char *arch = nnc_ckpt_arch(ck);
    char name[64];
    nnc_model_config mc = nnc_model_config_default();
    if (cli_parse_arch(arch, name, sizeof name, &mc.in_channels, &mc.image_size, &mc.num_classes)) {
        cli_error("%s: architecture '%s' is not of the form <model>/c<channels>/s<size>/k<classes>", path, arch);
        nnc_ckpt_free(ck);
        return EXIT_USAGE;
    }
    /* The sizes come from the file: bound them before they size a model. */
    if (mc.in_channels < 1 || mc.in_channels > MAX_CHANNELS || mc.image_size < 1 || mc.image_size > MAX_IMAGE ||
        mc.num_classes < 1 || mc.num_classes > MAX_CLASSES) {
        cli_error("%s: architecture '%s': expected channels 1..%d, size 1..%d, classes 1..%d, found c%d s%d k%d",
                  path, arch, MAX_CHANNELS, MAX_IMAGE, MAX_CLASSES, mc.in_channels, mc.image_size, mc.num_classes);
        nnc_ckpt_free(ck);
        return EXIT_USAGE;
    }
    if (want_model && *want_model && strcmp(want_model, name) != 0) {
        cli_error("%s: architecture mismatch: expected model '%s' (--model), found '%s' (checkpoint arch %s)", path,
                  want_model, name, arch);
        nnc_ckpt_free(ck);
        return EXIT_USAGE;
    }
    nnc_model *m = NULL;
    s = nnc_model_new(name, &mc, 0, &m);
    if (s) {
        cli_error("%s: cannot build architecture %s: %s", path, arch, nnc_error_message());
        nnc_ckpt_free(ck);
        return EXIT_USAGE;
    }
    nnc_params *p = nnc_model_params(m);
    const char *prefix = NULL;
    char sec[256];
    for (size_t i = 0; i < sizeof PREFIXES / sizeof *PREFIXES && !prefix && p->count > 0; i++) {
        snprintf(sec, sizeof sec, "%sparam/%s", PREFIXES[i], p->entries[0].name);
        if (nnc_ckpt_has(ck, sec)) prefix = PREFIXES[i];
    }
    if (!prefix) {
        cli_error("%s: no parameters for %s: section 'param/%s' not found at the top level or under model/, center/, w0/",
                  path, arch, p->count ? p->entries[0].name : "?");
        nnc_model_free(m);
        nnc_ckpt_free(ck);
        return EXIT_USAGE;
    }
    s = nnc_ckpt_get_params(ck, prefix, p);
    /* A NaN or Inf weight or BN statistic would only show up as garbage predictions. */
    if (!s) s = nnc_ckpt_check_finite(ck, prefix, p);
    if (s) {
        cli_error("%s", nnc_error_message());
        nnc_model_free(m);
        nnc_ckpt_free(ck);
        return EXIT_USAGE;
    }
    *ck_out = ck;
    *m_out = m;
    return 0;
}
