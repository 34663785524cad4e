/* tools/main.c - the nnc command line: a table of subcommands over the library API.
 * Each subcommand lives in tools/cmd_<name>.c and parses its own flags (tools/flags.c). */
#include <stdio.h>
#include <string.h>

#include "dist/dist.h"
#include "nn/cpu.h"
#include "nn/version.h"
#include "tools/cli.h"

/* OpenBLAS's build description (cblas.h of OpenBLAS; the library is always linked). */
char *openblas_get_config(void);

/* Weak, so that a subcommand whose file is not built yet (its library module not merged) is
 * simply absent from the table rather than a link error. */
#pragma weak cmd_train
#pragma weak cmd_eval
#pragma weak cmd_predict
#pragma weak cmd_info
#pragma weak cmd_data
#pragma weak cmd_compare
#pragma weak cmd_bench
#pragma weak cmd_flatness

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
    const char *summary;
} command;

static const command commands[] = {
    {"train", cmd_train, "train a model (one replica or GRAWA/baseline workers), with a run folder"},
    {"eval", cmd_eval, "accuracy, per-class accuracy and confusion matrix of a checkpoint"},
    {"predict", cmd_predict, "classify image files with a checkpoint"},
    {"info", cmd_info, "layers, parameters and MACs of a model"},
    {"data", cmd_data, "download cifar10/cifar100/mnist/fashion-mnist, describe a dataset"},
    {"compare", cmd_compare, "run several algorithms x seeds on one budget; table and plot"},
    {"flatness", cmd_flatness, "Hessian eigenvalues and trace of a checkpoint's training loss"},
    {"bench", cmd_bench, "training and inference throughput on a random batch"},
    {NULL, NULL, NULL},
};

void cli_print_version(FILE *f)
{
    fprintf(f, "nnc %s\n", NNC_VERSION);
    if (strcmp(nnc_version(), NNC_VERSION) != 0) fprintf(f, "  library: %s (headers %s)\n", nnc_version(), NNC_VERSION);
#if defined(__clang__)
    fprintf(f, "  compiler: clang %s\n", __clang_version__);
#elif defined(__GNUC__)
    fprintf(f, "  compiler: gcc %s\n", __VERSION__);
#else
    fprintf(f, "  compiler: unknown\n");
#endif
    const char *blas = openblas_get_config();
    fprintf(f, "  blas: %s\n", blas && *blas ? blas : "OpenBLAS (configuration unknown)");
#ifdef NNC_MPI
    fprintf(f, "  mpi build: yes (mpirun -np N nnc train ...)\n");
#else
    fprintf(f, "  mpi build: no (threads only; make MPI=1 for the MPI build)\n");
#endif
    fprintf(f, "  cpu kernels: %s (best this CPU supports: %s; NNC_ISA=avx512|avx2|generic lowers it)\n",
            nnc__isa_name(nnc__isa()), nnc__isa_name(nnc__isa_best()));
}

static void usage(FILE *f)
{
    fprintf(f, "usage: nnc <command> [flags]    (nnc <command> --help for its flags)\n"
               "       nnc --version            (version and build facts)\n\ncommands:\n");
    for (const command *c = commands; c->name; c++)
        if (c->run) fprintf(f, "  %-10s %s\n", c->name, c->summary);
    fprintf(f, "\nexit codes: 0 ok, 1 runtime failure, 2 usage/data/file error, 3 numerical divergence,\n"
               "            130/143 stopped by SIGINT/SIGTERM (checkpoint written)\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V") || !strcmp(argv[1], "version")) {
        cli_print_version(stdout);
        return EXIT_OK;
    }
#ifdef NNC_MPI
    /* The MPI build: `train` under mpirun is one rank of a multi-process run (dist/dist.h).
     * Rank 0 alone prints; a failing rank ends the job (its peers may be waiting on it). */
    if (!strcmp(argv[1], "train") && cmd_train) {
        if (nnc_mpi_init(&argc, &argv)) {
            cli_error("%s", nnc_error_message());
            return EXIT_RUNTIME;
        }
        if (nnc_mpi_rank() != 0 && !freopen("/dev/null", "w", stdout)) {
            cli_error("rank %d: cannot silence stdout", nnc_mpi_rank());
            nnc_mpi_abort(EXIT_RUNTIME);
        }
        int rc = cmd_train(argc - 1, argv + 1);
        fflush(stdout);
        fflush(stderr);
        /* A signal stop is agreed by every rank (all write/leave the checkpoint and exit). */
        if (rc != EXIT_OK && rc != EXIT_SIGINT && rc != EXIT_SIGTERM && nnc_mpi_size() > 1) nnc_mpi_abort(rc);
        nnc_mpi_finalize();
        return rc;
    }
#endif
    for (const command *c = commands; c->name; c++)
        if (c->run && !strcmp(c->name, argv[1])) return c->run(argc - 1, argv + 1);
    const char *names[16];
    int n = 0;
    char list[256] = "";
    size_t o = 0;
    for (const command *c = commands; c->name && n < 16; c++)
        if (c->run) {
            names[n++] = c->name;
            o += (size_t)snprintf(list + o, o < sizeof list ? sizeof list - o : 0, "%s%s", o ? ", " : "", c->name);
        }
    const char *best = cli_closest(argv[1], names, n);
    if (best)
        cli_error("unknown command '%s' (did you mean '%s'?); commands: %s", argv[1], best, list);
    else
        cli_error("unknown command '%s'; commands: %s (nnc --help)", argv[1], list);
    return EXIT_USAGE;
}
