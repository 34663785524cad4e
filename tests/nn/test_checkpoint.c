/* tests/nn/test_checkpoint.c - checkpoint format: bit-exact round trip,
 * truncation at every offset, bit flips, bad magic/version, shape/missing/extra tensors, save
 * failures (missing folder, blocked temp, RLIMIT_FSIZE), kill -9 mid-save, stale temp files. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/fault.h"
#include "nn/nnc.h"

/* ---------------------------------------------------------------- helpers */

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/nnc_ckpt_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            if (unlinkat(dirfd(d), e->d_name, 0) < 0) unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
        }
    closedir(d);
    rmdir(dir);
}

static const char *in_dir(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void fill(nnc_rng *r, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = nnc_rng_normal(r);
}

/* A small model: conv + BN (with running stats) + fc, fc having fc_out outputs; extra adds one
 * more parameter, drop_bias leaves fc.bias out. Data filled from seed, with awkward floats. */
static nnc_params *model(int fc_out, int extra, int drop_bias, uint64_t seed)
{
    nnc_params *p;
    cr_assert_eq(nnc_params_new(&p), NNC_OK);
    int cw[4] = {4, 3, 3, 3}, c4[1] = {4}, fw[2] = {fc_out, 64}, fb[1] = {fc_out}, ex[2] = {2, 2};
    cr_assert_geq(nnc_params_add(p, "conv1.weight", 4, cw, 0), 0);
    cr_assert_geq(nnc_params_add(p, "bn1.weight", 1, c4, NNC_PARAM_BN | NNC_PARAM_NO_DECAY), 0);
    cr_assert_geq(nnc_params_add(p, "bn1.bias", 1, c4, NNC_PARAM_BN | NNC_PARAM_NO_DECAY), 0);
    cr_assert_geq(nnc_params_add(p, "bn1.running_mean", 1, c4, NNC_PARAM_BUFFER), 0);
    cr_assert_geq(nnc_params_add(p, "bn1.running_var", 1, c4, NNC_PARAM_BUFFER), 0);
    cr_assert_geq(nnc_params_add(p, "fc.weight", 2, fw, 0), 0);
    if (!drop_bias) cr_assert_geq(nnc_params_add(p, "fc.bias", 1, fb, NNC_PARAM_NO_DECAY), 0);
    if (extra) cr_assert_geq(nnc_params_add(p, "extra", 2, ex, 0), 0);
    cr_assert_eq(nnc_params_finalize(p), NNC_OK);
    nnc_rng r;
    nnc_rng_seed(&r, seed, 0);
    fill(&r, p->data, p->n_data);
    fill(&r, p->buf, p->n_buf);
    p->data[0] = -0.0f;
    p->data[1] = 1e-40f; /* denormal */
    p->data[2] = INFINITY;
    uint32_t nan_payload = 0x7fc12345u;
    memcpy(&p->data[3], &nan_payload, 4);
    return p;
}

/* Every entry's floats equal bit for bit (alignment padding between entries is not state). */
static int same_params(nnc_params *a, nnc_params *b)
{
    cr_assert(nnc_params_same_layout(a, b));
    for (int i = 0; i < a->count; i++)
        if (memcmp(nnc_params_ptr(a, i), nnc_params_ptr(b, i), a->entries[i].numel * sizeof(float))) return 0;
    return 1;
}

static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    cr_assert_eq(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* Loads (from memory) must fail with NNC_EFORMAT and a message containing `want`. */
static void expect_bad(const void *b, size_t n, const char *want)
{
    nnc_ckpt *c = (nnc_ckpt *)1;
    int s = nnc_ckpt_load_mem(b, n, "mem", &c);
    cr_assert_eq(s, NNC_EFORMAT, "len %zu: status %d (%s)", n, s, nnc_error_message());
    cr_assert_null(c);
    cr_assert(strstr(nnc_error_message(), want), "len %zu: '%s' lacks '%s'", n, nnc_error_message(), want);
}

/* The tiny layout of the truncation tests: arch "tiny"; "a" floats (4,8); "bb" 5 bytes.
 * header 28 bytes; a: 33 header + 128 data at 28; bb: 26 header + 5 data at 189; trailer at 220. */
static const float tiny_a[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static unsigned char *tiny_file(size_t *n)
{
    nnc_ckpt *c;
    int sa[2] = {4, 8};
    cr_assert_eq(nnc_ckpt_new("tiny", &c), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_floats(c, "a", 2, sa, tiny_a), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_bytes(c, "bb", "hello", 5), NNC_OK);
    cr_assert_eq(nnc_ckpt_save(c, in_dir("tiny.ckpt")), NNC_OK, "%s", nnc_error_message());
    nnc_ckpt_free(c);
    unsigned char *b = read_file(in_dir("tiny.ckpt"), n);
    cr_assert_eq(*n, 228);
    return b;
}

/* ---------------------------------------------------------------- round trip, format */

Test(nn_checkpoint, round_trip_is_bit_exact, .init = make_dir, .fini = remove_dir)
{
    nnc_params *p = model(10, 0, 0, 1);
    float *mom = calloc(p->n_data, sizeof(float));
    nnc_rng r;
    nnc_rng_seed(&r, 9, 0);
    fill(&r, mom, p->n_data);
    nnc_rng rs;
    nnc_rng_seed(&rs, 77, 3);
    int cs[3] = {2, 3, 5};
    float center[30];
    fill(&r, center, 30);
    uint64_t step = 12345;

    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_new("resnet20/c3/h32/k10", &c), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_params(c, "", p), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_params_like(c, "optim/momentum/", p, mom), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_bytes(c, "rng/worker0", &rs, sizeof rs), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_bytes(c, "step", &step, sizeof step), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_bytes(c, "empty", NULL, 0), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_floats(c, "center", 3, cs, center), NNC_OK);
    cr_assert_eq(nnc_ckpt_save(c, in_dir("m.ckpt")), NNC_OK, "%s", nnc_error_message());
    nnc_ckpt_free(c);

    nnc_ckpt *l;
    cr_assert_eq(nnc_ckpt_load(in_dir("m.ckpt"), &l), NNC_OK, "%s", nnc_error_message());
    cr_assert_str_eq(nnc_ckpt_arch(l), "resnet20/c3/h32/k10");
    nnc_params *q = model(10, 0, 0, 2);
    cr_assert_not(same_params(p, q));
    cr_assert_eq(nnc_ckpt_get_params(l, "", q), NNC_OK, "%s", nnc_error_message());
    cr_assert(same_params(p, q), "params and buffers must round-trip bit for bit");
    float *mom2 = calloc(p->n_data, sizeof(float));
    cr_assert_eq(nnc_ckpt_get_params_like(l, "optim/momentum/", q, mom2), NNC_OK, "%s", nnc_error_message());
    for (int i = 0; i < p->count; i++) {
        const nnc_param_entry *e = &p->entries[i];
        if (e->flags & NNC_PARAM_BUFFER) continue;
        cr_assert_eq(memcmp(mom + e->offset, mom2 + e->offset, e->numel * sizeof(float)), 0, "%s", e->name);
    }
    const void *d;
    size_t nb;
    cr_assert_eq(nnc_ckpt_get_bytes(l, "rng/worker0", &d, &nb), NNC_OK);
    cr_assert_eq(nb, sizeof rs);
    cr_assert_eq(memcmp(d, &rs, sizeof rs), 0);
    cr_assert_eq(nnc_ckpt_get_bytes(l, "step", &d, &nb), NNC_OK);
    uint64_t step2;
    memcpy(&step2, d, sizeof step2);
    cr_assert_eq(step2, 12345);
    cr_assert_eq(nnc_ckpt_get_bytes(l, "empty", &d, &nb), NNC_OK);
    cr_assert_eq(nb, 0);
    float center2[30];
    cr_assert_eq(nnc_ckpt_get_floats(l, "center", 3, cs, center2), NNC_OK);
    cr_assert_eq(memcmp(center, center2, sizeof center), 0);
    cr_assert(nnc_ckpt_has(l, "param/fc.bias"));
    cr_assert(nnc_ckpt_has(l, "buf/bn1.running_var"));
    cr_assert_not(nnc_ckpt_has(l, "param/bn1.running_var"));

    /* the same bytes through load_mem */
    size_t n;
    unsigned char *b = read_file(in_dir("m.ckpt"), &n);
    nnc_ckpt *m;
    cr_assert_eq(nnc_ckpt_load_mem(b, n, "copy", &m), NNC_OK, "%s", nnc_error_message());
    cr_assert_str_eq(nnc_ckpt_arch(m), "resnet20/c3/h32/k10");
    nnc_ckpt_free(m);
    free(b);

    nnc_ckpt_free(l);
    nnc_params_free(p);
    nnc_params_free(q);
    free(mom);
    free(mom2);
}

Test(nn_checkpoint, layout_matches_header, .init = make_dir, .fini = remove_dir)
{
    size_t n;
    unsigned char *b = tiny_file(&n);
    cr_assert_eq(memcmp(b, "NNCCKPT1\1\0\0\0\2\0\0\0\4\0\0\0tiny", 24), 0);
    uint32_t hcrc;
    memcpy(&hcrc, b + 24, 4);
    cr_assert_eq(hcrc, nnc_crc32(0, b, 24));
    cr_assert_eq(memcmp(b + 28, "\1\0\0\0a\0\0\0\0\2\0\0\0\4\0\0\0\x08\0\0\0\x80\0\0\0\0\0\0\0", 29), 0);
    uint32_t scrc;
    memcpy(&scrc, b + 57, 4);
    cr_assert_eq(scrc, nnc_crc32(nnc_crc32(0, b + 28, 29), tiny_a, sizeof tiny_a));
    cr_assert_eq(memcmp(b + 61, tiny_a, sizeof tiny_a), 0);
    cr_assert_eq(memcmp(b + 189, "\2\0\0\0bb\1\0\0\0\0\0\0\0\5\0\0\0\0\0\0\0", 22), 0);
    cr_assert_eq(memcmp(b + 215, "hello", 5), 0);
    cr_assert_eq(memcmp(b + 220, "NNCEND\0\0", 8), 0);
    cr_assert_eq(nnc_crc32(0, "123456789", 9), 0xcbf43926u, "standard CRC-32 check value");
    free(b);
}

Test(nn_checkpoint, truncation_names_the_offset, .init = make_dir, .fini = remove_dir)
{
    size_t n;
    unsigned char *b = tiny_file(&n);
    expect_bad(b, 0, "truncated at offset 0: magic needs 8 bytes, 0 left");
    expect_bad(b, 5, "truncated at offset 0: magic needs 8 bytes, 5 left");
    expect_bad(b, 10, "truncated at offset 8: header needs 12 bytes, 2 left");
    expect_bad(b, 22, "truncated at offset 20: arch string needs 4 bytes, 2 left");
    expect_bad(b, 26, "truncated at offset 24: header CRC needs 4 bytes, 2 left");
    expect_bad(b, 70, "truncated at offset 28: 2 sections need at least 50 bytes, 42 left");
    expect_bad(b, 100, "truncated at offset 61: data of section 'a' needs 128 bytes, 39 left");
    expect_bad(b, 200, "truncated at offset 195: kind and ndim of section 'bb' needs 8 bytes, 5 left");
    expect_bad(b, 205, "truncated at offset 203: shape and size of section 'bb' needs 8 bytes, 2 left");
    expect_bad(b, 213, "truncated at offset 211: CRC of section 'bb' needs 4 bytes, 2 left");
    expect_bad(b, 217, "truncated at offset 215: data of section 'bb' needs 5 bytes, 2 left");
    expect_bad(b, 224, "truncated at offset 220: trailer needs 8 bytes, 4 left");
    for (size_t k = 0; k < n; k++) expect_bad(b, k, "truncated at offset");
    /* a truncated file on disk: the message names the file */
    FILE *f = fopen(in_dir("cut.ckpt"), "wb");
    fwrite(b, 1, 100, f);
    fclose(f);
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_load(in_dir("cut.ckpt"), &c), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "cut.ckpt': truncated at offset 61"), "%s", nnc_error_message());
    free(b);
}

Test(nn_checkpoint, every_single_bit_flip_is_rejected, .init = make_dir, .fini = remove_dir)
{
    size_t n;
    unsigned char *b = tiny_file(&n);
    b[61 + 17] ^= 0x10; /* tensor data of 'a' */
    expect_bad(b, n, "CRC mismatch in section 'a'");
    b[61 + 17] ^= 0x10;
    b[216] ^= 0x01; /* bytes data of 'bb' */
    expect_bad(b, n, "CRC mismatch in section 'bb'");
    b[216] ^= 0x01;
    b[32] ^= 0x02; /* the name 'a' itself */
    expect_bad(b, n, "CRC mismatch in section 'c'");
    b[32] ^= 0x02;
    for (size_t i = 0; i < n * 8; i++) {
        b[i / 8] ^= (unsigned char)(1u << (i % 8));
        nnc_ckpt *c;
        int s = nnc_ckpt_load_mem(b, n, "mem", &c);
        cr_assert_eq(s, NNC_EFORMAT, "bit %zu flipped: loaded anyway", i);
        b[i / 8] ^= (unsigned char)(1u << (i % 8));
    }
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_load_mem(b, n, "mem", &c), NNC_OK);
    nnc_ckpt_free(c);
    free(b);
}

Test(nn_checkpoint, magic_version_trailer_and_structure_errors, .init = make_dir, .fini = remove_dir)
{
    size_t n;
    unsigned char *b = tiny_file(&n);
    unsigned char *x = malloc(n + 8);
    memcpy(x, b, n);
    memcpy(x, "GARBAGE!", 8);
    expect_bad(x, n, "bad magic: expected NNCCKPT1, found GARBAGE!");
    expect_bad("hello world, not a checkpoint", 29, "bad magic: expected NNCCKPT1, found hello wo");
    memcpy(x, b, n);
    x[8] = 7;
    expect_bad(x, n, "version 7 not supported (expected 1)");
    memcpy(x, b, n);
    x[20] = 'T'; /* arch changed: header CRC */
    expect_bad(x, n, "CRC mismatch in header");
    memcpy(x, b, n);
    memcpy(x + 220, "NNCXXX\0\0", 8);
    expect_bad(x, n, "bad trailer at offset 220: expected NNCEND, found NNCXXX??");
    memcpy(x, b, n);
    memcpy(x + n, "junk", 4);
    expect_bad(x, n + 4, "4 unexpected bytes after the trailer at offset 228");
    /* a header claiming 2^32-1 sections must fail on size, not try to allocate them */
    memcpy(x, b, n);
    x[12] = x[13] = x[14] = x[15] = 0xff;
    uint32_t crc = nnc_crc32(0, x, 24);
    memcpy(x + 24, &crc, 4);
    expect_bad(x, n, "4294967295 sections need at least");
    /* a section claiming an absurd size */
    memcpy(x, b, n);
    memset(x + 49, 0xff, 8);
    expect_bad(x, n, "section 'a': shape (4,8) needs 128 bytes, header says 18446744073709551615");
    /* a duplicate section: save x and y, then rename y to x and fix its CRC */
    nnc_ckpt *c;
    float v[2] = {1, 2};
    int s1[1] = {2};
    cr_assert_eq(nnc_ckpt_new("dup", &c), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_floats(c, "x", 1, s1, v), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_floats(c, "y", 1, s1, v), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_floats(c, "y", 1, s1, v), NNC_EINVAL, "writer refuses duplicates");
    cr_assert_eq(nnc_ckpt_save(c, in_dir("dup.ckpt")), NNC_OK);
    nnc_ckpt_free(c);
    size_t dn;
    unsigned char *d = read_file(in_dir("dup.ckpt"), &dn);
    /* header 27 bytes; x at 27 (25 bytes of fields + 4 crc + 8 data); y at 64, its name at 68 */
    cr_assert_eq(d[68], 'y');
    d[68] = 'x';
    crc = nnc_crc32(nnc_crc32(0, d + 64, 25), v, sizeof v);
    memcpy(d + 64 + 25, &crc, 4);
    expect_bad(d, dn, "duplicate section 'x' at offsets 27 and 64");
    free(d);
    free(x);
    free(b);
}

/* ---------------------------------------------------------------- model mismatches */

static void save_model(const nnc_params *p, const char *path)
{
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_new("net", &c), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_params(c, "", p), NNC_OK);
    cr_assert_eq(nnc_ckpt_save(c, path), NNC_OK, "%s", nnc_error_message());
    nnc_ckpt_free(c);
}

/* Loading the checkpoint of `saved` into `into` fails with `want` and leaves `into` unchanged. */
static void expect_mismatch(nnc_params *saved, nnc_params *into, const char *want)
{
    save_model(saved, in_dir("a.ckpt"));
    nnc_params *snap;
    cr_assert_eq(nnc_params_clone(into, &snap), NNC_OK);
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_load(in_dir("a.ckpt"), &c), NNC_OK);
    cr_assert_eq(nnc_ckpt_get_params(c, "", into), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), want), "'%s' lacks '%s'", nnc_error_message(), want);
    cr_assert(strstr(nnc_error_message(), "a.ckpt"), "message names the file: %s", nnc_error_message());
    cr_assert(same_params(into, snap), "params changed by a failed load");
    nnc_ckpt_free(c);
    nnc_params_free(snap);
    nnc_params_free(saved);
    nnc_params_free(into);
}

Test(nn_checkpoint, shape_mismatch_names_tensor_and_shapes, .init = make_dir, .fini = remove_dir)
{
    expect_mismatch(model(100, 0, 0, 1), model(10, 0, 0, 2),
                    "shape mismatch for tensor 'param/fc.weight': expected (10,64) found (100,64)");
}

Test(nn_checkpoint, missing_tensor, .init = make_dir, .fini = remove_dir)
{
    expect_mismatch(model(10, 0, 0, 1), model(10, 1, 0, 2), "missing tensor 'param/extra' (expected shape (2,2))");
}

Test(nn_checkpoint, extra_tensor, .init = make_dir, .fini = remove_dir)
{
    expect_mismatch(model(10, 0, 0, 1), model(10, 0, 1, 2),
                    "unexpected tensor 'param/fc.bias' (the model has no such parameter)");
}

Test(nn_checkpoint, lookups_check_kind_and_shape, .init = make_dir, .fini = remove_dir)
{
    size_t n;
    unsigned char *b = tiny_file(&n);
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_load_mem(b, n, "tiny", &c), NNC_OK);
    float dst[32] = {0};
    int wrong[2] = {8, 4};
    cr_assert_eq(nnc_ckpt_get_floats(c, "a", 2, wrong, dst), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "shape mismatch for tensor 'a': expected (8,4) found (4,8)"));
    for (int i = 0; i < 32; i++) cr_assert_eq(dst[i], 0.0f, "dst written on failure");
    cr_assert_eq(nnc_ckpt_get_floats(c, "bb", 2, wrong, dst), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "'bb' holds bytes"));
    const void *d;
    size_t nb;
    cr_assert_eq(nnc_ckpt_get_bytes(c, "a", &d, &nb), NNC_EFORMAT);
    cr_assert_eq(nnc_ckpt_get_bytes(c, "zz", &d, &nb), NNC_EFORMAT);
    cr_assert(strstr(nnc_error_message(), "missing section 'zz'"));
    nnc_ckpt_free(c);
    free(b);
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[299] = 0;
    cr_assert_eq(nnc_ckpt_new("x", &c), NNC_OK);
    cr_assert_eq(nnc_ckpt_add_bytes(c, longname, "x", 1), NNC_EINVAL);
    cr_assert_eq(nnc_ckpt_add_bytes(c, "", "x", 1), NNC_EINVAL);
    cr_assert_eq(nnc_ckpt_add_floats(c, "f", 0, wrong, dst), NNC_EINVAL);
    cr_assert_eq(nnc_ckpt_add_floats(c, "f", 5, wrong, dst), NNC_EINVAL);
    nnc_ckpt_free(c);
    cr_assert_eq(nnc_ckpt_load(in_dir("does-not-exist"), &c), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "does-not-exist': cannot open: No such file or directory"));
}

/* ---------------------------------------------------------------- save failures */

/* A checkpoint of one float section of n values v, v+1, ...; arch names v. */
static nnc_ckpt *pattern_ckpt(float *buf, int n, float v)
{
    for (int i = 0; i < n; i++) buf[i] = v + (float)i;
    char arch[32];
    snprintf(arch, sizeof arch, "pattern-%g", v);
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_new(arch, &c), NNC_OK);
    int s[1] = {n};
    cr_assert_eq(nnc_ckpt_add_floats(c, "w", 1, s, buf), NNC_OK);
    return c;
}

/* The file at path loads and holds pattern v (n values); returns 1, or 0 if it holds another v. */
static int holds_pattern(const char *path, int n, float v)
{
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_load(path, &c), NNC_OK, "%s", nnc_error_message());
    float *got = malloc((size_t)n * sizeof(float));
    int s[1] = {n};
    cr_assert_eq(nnc_ckpt_get_floats(c, "w", 1, s, got), NNC_OK);
    int ok = got[0] == v;
    for (int i = 0; i < n; i++) cr_assert_eq(got[i], got[0] + (float)i, "mixed contents at %d", i);
    free(got);
    nnc_ckpt_free(c);
    return ok;
}

/* Names in dir other than `keep` and `keep`.tmp.*: count them (must be 0). Counts temps too. */
static int foreign_files(const char *keep, int *temps)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int bad = 0;
    size_t kl = strlen(keep);
    *temps = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, keep)) continue;
        if (!strncmp(e->d_name, keep, kl) && !strncmp(e->d_name + kl, ".tmp.", 5))
            (*temps)++;
        else
            bad++;
    }
    closedir(d);
    return bad;
}

Test(nn_checkpoint, save_failures_report_path_and_keep_old_file, .init = make_dir, .fini = remove_dir)
{
    float buf[64];
    nnc_ckpt *c = pattern_ckpt(buf, 64, 1);
    int s = nnc_ckpt_save(c, in_dir("no/such/folder/x.ckpt"));
    cr_assert_eq(s, NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "no/such/folder/x.ckpt"), "%s", nnc_error_message());
    cr_assert(strstr(nnc_error_message(), "No such file or directory"), "%s", nnc_error_message());

    cr_assert_eq(nnc_ckpt_save(c, in_dir("good.ckpt")), NNC_OK);
    nnc_ckpt_free(c);
    /* a path whose folder is a regular file */
    c = pattern_ckpt(buf, 64, 100);
    cr_assert_eq(nnc_ckpt_save(c, in_dir("good.ckpt/x.ckpt")), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "Not a directory"), "%s", nnc_error_message());
    nnc_ckpt_free(c);
}

/* Temp names are fresh and created exclusively: a folder or a symlink planted under the name a
 * save would once have used (<path>.tmp.<pid>) neither blocks the save nor is followed. */
Test(nn_checkpoint, planted_temp_names_are_not_followed, .init = make_dir, .fini = remove_dir)
{
    float buf[64];
    nnc_ckpt *c = pattern_ckpt(buf, 64, 1);
    cr_assert_eq(nnc_ckpt_save(c, in_dir("good.ckpt")), NNC_OK);
    nnc_ckpt_free(c);

    char victim[300], tmp[300];
    snprintf(victim, sizeof victim, "%s", in_dir("victim.txt"));
    FILE *f = fopen(victim, "w");
    fputs("precious", f);
    fclose(f);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", in_dir("good.ckpt"), (long)getpid());
    cr_assert_eq(symlink(victim, tmp), 0);

    c = pattern_ckpt(buf, 64, 2);
    cr_assert_eq(nnc_ckpt_save(c, in_dir("good.ckpt")), NNC_OK, "%s", nnc_error_message());
    nnc_ckpt_free(c);
    cr_assert(holds_pattern(in_dir("good.ckpt"), 64, 2));
    char text[32] = {0};
    f = fopen(victim, "r");
    cr_assert(fgets(text, sizeof text, f));
    fclose(f);
    cr_assert_str_eq(text, "precious", "the symlink's target was written through");
    struct stat st;
    cr_assert(lstat(in_dir("good.ckpt"), &st) == 0 && S_ISREG(st.st_mode), "the checkpoint is a regular file");

    /* a folder under the old temp name does not block the save either */
    unlink(tmp);
    cr_assert_eq(mkdir(tmp, 0755), 0);
    c = pattern_ckpt(buf, 64, 3);
    cr_assert_eq(nnc_ckpt_save(c, in_dir("good.ckpt")), NNC_OK, "%s", nnc_error_message());
    nnc_ckpt_free(c);
    cr_assert(holds_pattern(in_dir("good.ckpt"), 64, 3));
    rmdir(tmp);
}

/* A FIFO given as a checkpoint is refused at once (opening it for reading would wait for a
 * writer forever). */
Test(nn_checkpoint, fifo_is_refused_not_waited_on, .init = make_dir, .fini = remove_dir, .timeout = 10)
{
    cr_assert_eq(mkfifo(in_dir("pipe.ckpt"), 0644), 0);
    nnc_ckpt *c;
    cr_assert_eq(nnc_ckpt_load(in_dir("pipe.ckpt"), &c), NNC_EIO);
    cr_assert(strstr(nnc_error_message(), "pipe.ckpt"), "%s", nnc_error_message());
    cr_assert(strstr(nnc_error_message(), "FIFO"), "%s", nnc_error_message());
}

Test(nn_checkpoint, file_size_limit_fails_cleanly, .init = make_dir, .fini = remove_dir, .timeout = 20)
{
    float small[16];
    nnc_ckpt *c = pattern_ckpt(small, 16, 1);
    cr_assert_eq(nnc_ckpt_save(c, in_dir("m.ckpt")), NNC_OK);
    nnc_ckpt_free(c);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* RLIMIT_FSIZE raises SIGXFSZ on the failing write; the program must ignore it. */
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        static float big[100000];
        nnc_ckpt *b = pattern_ckpt(big, 100000, 500);
        int s = nnc_ckpt_save(b, in_dir("m.ckpt"));
        const char *m = nnc_error_message();
        if (write(fds[1], m, strlen(m) + 1) < 0) _exit(3);
        _exit(s == NNC_EIO ? 0 : 1);
    }
    close(fds[1]);
    char msg[1024] = {0};
    ssize_t got = 0, k;
    while ((k = read(fds[0], msg + got, sizeof msg - 1 - (size_t)got)) > 0) got += k;
    close(fds[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d, message '%s'", st, msg);
    cr_assert(strstr(msg, "m.ckpt"), "message names the path: %s", msg);
    cr_assert(strstr(msg, "File too large"), "message gives strerror: %s", msg);
    cr_assert(holds_pattern(in_dir("m.ckpt"), 16, 1), "previous checkpoint intact");
    int temps;
    cr_assert_eq(foreign_files("m.ckpt", &temps), 0);
    cr_assert_eq(temps, 0, "failed save removes its temp file");
}

#define BIG (256 * 1024) /* 1 MiB of floats: 16 chunks of 64 KiB */

Test(nn_checkpoint, kill9_during_save_keeps_previous, .init = make_dir, .fini = remove_dir, .timeout = 30)
{
    float *old = malloc(BIG * sizeof(float)), *neu = malloc(BIG * sizeof(float));
    nnc_ckpt *c = pattern_ckpt(old, BIG, 1);
    cr_assert_eq(nnc_ckpt_save(c, in_dir("m.ckpt")), NNC_OK);
    nnc_ckpt_free(c);
    /* A save takes 16 chunks x 4 ms plus fsync: the first kill comes late (the save normally
     * completes), then 20 kills at seeded random times within the first 80 ms. */
    nnc_rng r;
    nnc_rng_seed(&r, 33, 0);
    int interrupted = 0;
    for (int t = 0; t < 21; t++) {
        int delay_us = t == 0 ? 400000 : (int)nnc_rng_below(&r, 80000);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            setenv("NNC_FAULT", "ckpt_slow_write:4", 1);
            nnc__fault_reload();
            nnc_ckpt *n = pattern_ckpt(neu, BIG, 2);
            _exit(nnc_ckpt_save(n, in_dir("m.ckpt")) == NNC_OK ? 0 : 1);
        }
        usleep((useconds_t)delay_us);
        kill(pid, SIGKILL);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        if (WIFSIGNALED(st))
            interrupted++;
        else
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "save in child failed");
        /* whatever happened, the final name holds a complete checkpoint, old or new */
        int is_old = holds_pattern(in_dir("m.ckpt"), BIG, 1);
        if (!is_old) {
            cr_assert(holds_pattern(in_dir("m.ckpt"), BIG, 2));
            c = pattern_ckpt(old, BIG, 1);
            cr_assert_eq(nnc_ckpt_save(c, in_dir("m.ckpt")), NNC_OK);
            nnc_ckpt_free(c);
        } else {
            cr_assert(WIFSIGNALED(st), "a completed save must have replaced the file");
        }
        int temps;
        cr_assert_eq(foreign_files("m.ckpt", &temps), 0, "only the checkpoint and temp files");
    }
    cr_assert_geq(interrupted, 15, "the slow hook must let most kills land mid-save (%d)", interrupted);
    int temps;
    foreign_files("m.ckpt", &temps);
    cr_assert_gt(temps, 0, "killed saves leave temp files behind");
    /* the next save cleans the stale temp files of dead processes */
    c = pattern_ckpt(neu, BIG, 3);
    cr_assert_eq(nnc_ckpt_save(c, in_dir("m.ckpt")), NNC_OK);
    nnc_ckpt_free(c);
    cr_assert_eq(foreign_files("m.ckpt", &temps), 0);
    cr_assert_eq(temps, 0, "stale temp files removed");
    cr_assert(holds_pattern(in_dir("m.ckpt"), BIG, 3));
    free(old);
    free(neu);
}

Test(nn_checkpoint, stale_temp_files_do_not_break_save, .init = make_dir, .fini = remove_dir)
{
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    char p_dead[300], p_live[300], p_own[300];
    snprintf(p_dead, sizeof p_dead, "%s.tmp.%ld", in_dir("m.ckpt"), (long)dead);
    snprintf(p_live, sizeof p_live, "%s.tmp.%ld", in_dir("m.ckpt"), (long)getppid());
    snprintf(p_own, sizeof p_own, "%s.tmp.%ld", in_dir("m.ckpt"), (long)getpid());
    const char *paths[3] = {p_dead, p_live, p_own};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(paths[i], "wb");
        for (int k = 0; k < 1000; k++) fputs("stale partial checkpoint ", f);
        fclose(f);
    }
    float buf[32];
    nnc_ckpt *c = pattern_ckpt(buf, 32, 5);
    cr_assert_eq(nnc_ckpt_save(c, in_dir("m.ckpt")), NNC_OK, "%s", nnc_error_message());
    nnc_ckpt_free(c);
    cr_assert(holds_pattern(in_dir("m.ckpt"), 32, 5));
    cr_assert_eq(access(p_dead, F_OK), -1, "temp of a dead process removed");
    cr_assert_eq(access(p_own, F_OK), -1, "stale temp under this pid (a reused pid) removed");
    cr_assert_eq(access(p_live, F_OK), 0, "temp of a live process kept");
}

/* The committed fuzz seeds and crash regressions (tools/fuzz/corpus/ckpt) load or fail cleanly. */
Test(nn_checkpoint, fuzz_corpus_loads_or_fails_cleanly)
{
    const char *cdir = "tools/fuzz/corpus/ckpt";
    DIR *d = opendir(cdir);
    cr_assert_not_null(d, "run from the repository root: %s", cdir);
    struct dirent *e;
    int files = 0, ok = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", cdir, e->d_name);
        nnc_ckpt *c;
        int s = nnc_ckpt_load(path, &c);
        cr_assert(s == NNC_OK || s == NNC_EFORMAT, "%s: status %d", path, s);
        if (s == NNC_OK) {
            ok++;
            nnc_ckpt_free(c);
        } else {
            cr_assert(strstr(nnc_error_message(), path), "%s", nnc_error_message());
        }
        files++;
    }
    closedir(d);
    cr_assert_geq(files, 6);
    cr_assert_geq(ok, 2, "tiny.ckpt and params.ckpt are valid");
}
