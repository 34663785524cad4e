/* tests/tools/test_bench.c - `nnc bench`: --json ends the output with one JSON object line
 * holding the model, batch, threads and positive throughputs; bad flags give exit code 2 with a
 * message naming the flag; --layers prints one row per conv layer and a total. Runs the release binary (NNC_RELEASE_BIN, set by make check) on tiny
 * models and batches so each case takes well under a second. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *bin(void)
{
    const char *b = getenv("NNC_RELEASE_BIN");
    cr_assert_not_null(b, "NNC_RELEASE_BIN is not set (run through make check)");
    return b;
}

/* Run `bin args 2>&1`, capture up to cap-1 bytes of output, return the exit status. */
static int run(const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin(), args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *last_line(char *out)
{
    size_t n = strlen(out);
    while (n && out[n - 1] == '\n') out[--n] = 0;
    char *nl = strrchr(out, '\n');
    return nl ? nl + 1 : out;
}

static double num_after(const char *json, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(json, pat);
    cr_assert_not_null(p, "key %s missing in %s", key, json);
    return strtod(p + strlen(pat), NULL);
}

static void check_json(const char *args, const char *model, int batch, int threads)
{
    char out[8192];
    cr_assert_eq(run(args, out, sizeof out), 0, "nnc %s failed:\n%s", args, out);
    const char *j = last_line(out);
    cr_assert(j[0] == '{' && j[strlen(j) - 1] == '}', "last line is not one JSON object: %s", j);
    char want[64];
    snprintf(want, sizeof want, "\"model\": \"%s\"", model);
    cr_expect(strstr(j, want) != NULL, "model missing: %s", j);
    cr_expect_eq((int)num_after(j, "batch"), batch);
    cr_expect_eq((int)num_after(j, "threads"), threads);
    cr_expect_gt(num_after(j, "train_images_per_sec"), 0.0, "%s", j);
    cr_expect_gt(num_after(j, "infer_images_per_sec"), 0.0, "%s", j);
    cr_expect_gt(num_after(j, "peak_rss_mib"), 0.0, "%s", j);
}

Test(tools_bench, json_line_tiny_model, .timeout = 30)
{
    check_json("bench --model tiny --batch 4 --runs 2 --warmup 1 --json --image-size 8", "tiny", 4, 1);
}

Test(tools_bench, json_line_resnet8_two_threads, .timeout = 30)
{
    check_json("bench --model resnet8 --batch 3 --threads 2 --runs 1 --warmup 1 --json --image-size 8", "resnet8", 3, 2);
}

Test(tools_bench, bad_flags_exit_2_with_message, .timeout = 30)
{
    char out[8192];
    cr_expect_eq(run("bench --batch 0", out, sizeof out), 2);
    cr_expect(strstr(out, "--batch") != NULL, "message should name --batch: %s", out);
    cr_expect_eq(run("bench --threads 5000 --model tiny", out, sizeof out), 2);
    cr_expect(strstr(out, "threads") != NULL, "message should name threads: %s", out);
    cr_expect_eq(run("bench --model nosuchnet", out, sizeof out), 2);
    cr_expect(strstr(out, "nosuchnet") != NULL, "message should name the model: %s", out);
    cr_expect_eq(run("bench --bogus 1", out, sizeof out), 2);
}

/* --workers: M workers vs one replica through nnc_train; the JSON line carries both throughputs,
 * their ratio, the rounds and the synchronizer's share. */
Test(tools_bench, workers_json_line, .timeout = 60)
{
    char out[8192];
    const char *args = "bench --model tiny --workers 2 --algo mgrawa --threads 1 --batch 4 --seconds 0.5 --json";
    cr_assert_eq(run(args, out, sizeof out), 0, "nnc %s failed:\n%s", args, out);
    const char *j = last_line(out);
    cr_assert(j[0] == '{' && j[strlen(j) - 1] == '}', "last line is not one JSON object: %s", j);
    cr_expect(strstr(j, "\"algo\": \"mgrawa\"") != NULL, "%s", j);
    cr_expect_eq((int)num_after(j, "workers"), 2);
    double one = num_after(j, "single_images_per_sec"), many = num_after(j, "workers_images_per_sec");
    cr_expect_gt(one, 0.0, "%s", j);
    cr_expect_gt(many, 0.0, "%s", j);
    cr_expect_float_eq(num_after(j, "ratio"), many / one, 1e-3 * (many / one) + 1e-4, "%s", j);
    cr_expect_geq(num_after(j, "rounds"), 1.0, "%s", j);
    double share = num_after(j, "sync_share");
    cr_expect(share >= 0.0 && share < 1.0, "%s", j);
    cr_expect_eq(run("bench --model tiny --workers 2 --algo nope", out, sizeof out), 2);
    cr_expect(strstr(out, "--algo") != NULL, "message should name --algo: %s", out);
    cr_expect_eq(run("bench --model tiny --workers 2 --seconds 0", out, sizeof out), 2);
    cr_expect(strstr(out, "--seconds") != NULL, "message should name --seconds: %s", out);
}

/* --layers: one row per conv layer of the model (resnet8: 7) with the path and three timings,
 * then the training total and the per-step summary; a bad --conv-path is a usage error. */
Test(tools_bench, layers_rows_per_conv_layer, .timeout = 30)
{
    char out[16384];
    const char *args = "bench --model resnet8 --layers --batch 2 --runs 1 --image-size 8";
    cr_assert_eq(run(args, out, sizeof out), 0, "nnc %s failed:\n%s", args, out);
    const char *names[] = {"conv1 ", "layers.0.conv1 ", "layers.0.conv2 ", "layers.1.conv1 ", "layers.1.conv2 ",
                           "layers.2.conv1 ", "layers.2.conv2 ", "total (training)", "conv time per training step"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        cr_expect(strstr(out, names[i]) != NULL, "missing row %s in:\n%s", names[i], out);
    cr_expect(strstr(out, "32>64 4x4 3/2/1") != NULL, "shape column of the stride-2 layer:\n%s", out);
    cr_expect_eq(run("bench --model resnet8 --layers --batch 2 --runs 1 --image-size 8 --conv-path direct", out,
                     sizeof out), 0, "%s", out);
    cr_expect(strstr(out, " d/d ") != NULL && strstr(out, " s/s ") == NULL, "forced direct path:\n%s", out);
    cr_expect_eq(run("bench --model resnet8 --layers --conv-path fastest", out, sizeof out), 2);
    cr_expect(strstr(out, "--conv-path") != NULL, "message should name --conv-path: %s", out);
    cr_expect_eq(run("bench --model resnet8 --layers --peak-gflops 0", out, sizeof out), 2);
    cr_expect(strstr(out, "--peak-gflops") != NULL, "message should name --peak-gflops: %s", out);
}
