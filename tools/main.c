/* tools/main.c - the nnc command line: a table of subcommands over the library API. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: nnc <command> [options]\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "nnc: unknown command '%s'\n", argv[1]);
    return 2;
}
