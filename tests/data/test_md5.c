/* tests/data/test_md5.c - MD5 against the RFC 1321 test suite (appendix A.5), plus split
 * updates across block boundaries. */
#include <criterion/criterion.h>
#include <string.h>

#include "data/data_internal.h"

static void md5_str(const char *s, char hex[33])
{
    nnc__md5 m;
    nnc__md5_init(&m);
    nnc__md5_update(&m, s, strlen(s));
    nnc__md5_final(&m, hex);
}

Test(data_md5, rfc1321_test_suite)
{
    static const char *v[][2] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"a", "0cc175b9c0f1b6a831c399e269772661"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
        {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
         "d174ab98d277d9f5a5611c2c9f419d9f"},
        {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         "57edf4a22be3c955ac49da2e2107b67a"},
    };
    char hex[33];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        md5_str(v[i][0], hex);
        cr_assert_str_eq(hex, v[i][1], "MD5(\"%s\")", v[i][0]);
    }
}

Test(data_md5, split_updates_match_one_shot)
{
    static uint8_t data[1000];
    for (int i = 0; i < 1000; i++) data[i] = (uint8_t)(i * 7 + 3);
    char one[33], split[33];
    nnc__md5 m;
    nnc__md5_init(&m);
    nnc__md5_update(&m, data, sizeof data);
    nnc__md5_final(&m, one);
    for (size_t step = 1; step < 130; step += 7) {
        nnc__md5_init(&m);
        for (size_t o = 0; o < sizeof data; o += step)
            nnc__md5_update(&m, data + o, o + step > sizeof data ? sizeof data - o : step);
        nnc__md5_final(&m, split);
        cr_assert_str_eq(one, split, "step %zu", step);
    }
}
