/* tests/nn/test_numerics.c - fast-math guard: the build never uses -ffast-math or
 * -Ofast, and NaN/Inf detection works in code compiled with the release flags. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/nnc.h"

/* Compiled with the same CFLAGS as the library (the Makefile uses one ALL_CFLAGS for both). */
#ifdef __FAST_MATH__
#error "nnc must not be built with -ffast-math / -Ofast: it breaks NaN detection"
#endif
#if defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
#error "nnc must not be built with -ffinite-math-only"
#endif

Test(nn_numerics, makefile_has_no_fast_math)
{
    FILE *f = fopen("Makefile", "r");
    cr_assert_not_null(f, "run from the repository root");
    char line[1024];
    int cflags_seen = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        cr_assert_null(strstr(line, "-ffast-math"), "Makefile: %s", line);
        cr_assert_null(strstr(line, "-Ofast"), "Makefile: %s", line);
        cr_assert_null(strstr(line, "-ffinite-math-only"), "Makefile: %s", line);
        cr_assert_null(strstr(line, "-funsafe-math-optimizations"), "Makefile: %s", line);
        if (strstr(line, "CFLAGS ?=")) cflags_seen = 1;
    }
    fclose(f);
    cr_assert(cflags_seen, "the Makefile defines CFLAGS");
}

Test(nn_numerics, nan_and_inf_are_detected)
{
    /* volatile: the values are produced at run time, as a diverging step would. */
    volatile float zero = 0.0f, big = 3e38f;
    float nan = zero / zero, inf = big * 10.0f;
    cr_assert_not(isfinite(nan));
    cr_assert(isnan(nan));
    cr_assert_not(isfinite(inf));
    cr_assert(isinf(inf));
    cr_assert(nan != nan, "NaN compares unequal to itself");

    /* the library's own checks, compiled with the release flags */
    nnc_params *p;
    int s[1] = {8};
    cr_assert_eq(nnc_params_new(&p), NNC_OK);
    cr_assert_geq(nnc_params_add(p, "w", 1, s, 0), 0);
    cr_assert_eq(nnc_params_finalize(p), NNC_OK);
    cr_assert(nnc_params_all_finite(p));
    p->data[5] = nan;
    cr_assert_not(nnc_params_all_finite(p), "injected NaN must be detected");
    p->data[5] = inf;
    cr_assert_not(nnc_params_all_finite(p), "injected Inf must be detected");
    nnc_params_free(p);
}
