/* tools/main.c - the nnc command line: a table of subcommands over the library API.
 * Each subcommand lives in tools/cmd_<name>.c and parses its own flags (tools/flags.c). */
#include <stdio.h>
#include <string.h>

#include "dist/dist.h"
#include "tools/cli.h"

/* Weak, so that a subcommand whose file is not built yet (its library module not merged) is
 * simply absent from the table rather than a link error. */
#pragma weak cmd_train
#pragma weak cmd_eval
#pragma weak cmd_predict
#pragma weak cmd_info
#pragma weak cmd_data
#pragma weak cmd_compare
#pragma weak cmd_bench

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
    {"data", cmd_data, "fetch cifar10/cifar100, describe a dataset"},
    {"compare", cmd_compare, "run several algorithms x seeds on one budget; table and plot"},
    {"bench", cmd_bench, "training and inference throughput on a random batch"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: nnc <command> [flags]    (nnc <command> --help for its flags)\n\ncommands:\n");
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
    cli_error("unknown command '%s' (run 'nnc --help' for the list)", argv[1]);
    return EXIT_USAGE;
}
