/* tests/dist/test_link.c - the modelled interconnect (dist/link.h): parsing --link values and
 * the ring all-reduce cost, against values worked out by hand. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "dist/link.h"
#include "nn/status.h"

static nnc_link parse_ok(const char *s)
{
    nnc_link l = {-1, -1};
    cr_assert_eq(nnc_link_parse(s, &l), NNC_OK, "'%s': %s", s, nnc_error_message());
    return l;
}

Test(dist_link, parses_the_documented_forms)
{
    static const struct {
        const char *text;
        double lat, bps;
    } ok[] = {
        {"100us,1Gbit", 100e-6, 125e6},      /* 1e9 bit/s = 1.25e8 B/s */
        {"2ms,10Gbit", 2e-3, 1.25e9},
        {"5us,100Gbps", 5e-6, 12.5e9},
        {"50us,1.25GB", 50e-6, 1.25e9},
        {"1s,8bit", 1.0, 1.0},
        {"0us,1B", 0.0, 1.0},
        {"3ms,4Mbit/s", 3e-3, 5e5},
        {"0.5ms,2KB/s", 5e-4, 2e3},
        {"10us,100Mbps", 10e-6, 12.5e6},
        {"10us,56Kbit", 10e-6, 7e3},
        {" 20 us , 1 MB ", 20e-6, 1e6},
        {"1e2us,1e3MB", 100e-6, 1e9},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        nnc_link l = parse_ok(ok[i].text);
        cr_assert_float_eq(l.latency_s, ok[i].lat, 1e-12 * (1 + ok[i].lat), "%s latency %g", ok[i].text, l.latency_s);
        cr_assert_float_eq(l.bytes_per_s, ok[i].bps, 1e-9 * ok[i].bps, "%s bandwidth %g", ok[i].text, l.bytes_per_s);
    }
}

Test(dist_link, refuses_anything_else_naming_the_value)
{
    static const char *bad[] = {
        "",            "100us",        "100us,",      ",1Gbit",     "100,1Gbit",   "100us,1",
        "100us,1Gb",   "100us,1gbit",  "100us,1Tbit", "100ns,1Gbit", "-1us,1Gbit", "1us,-1Gbit",
        "1us,0Gbit",   "1us,0B",       "nan us,1GB",  "inf us,1GB", "1us,1GB,2",  "1us,1GiB",
        "1 us,1 G B",  "us,1GB",       "1us,GB",      "1us,1e999GB", "1minute,1GB", "1us,1GB/h",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        nnc_link l = {7, 7};
        cr_assert_eq(nnc_link_parse(bad[i], &l), NNC_EINVAL, "'%s' accepted", bad[i]);
        const char *msg = nnc_error_message();
        cr_assert(strstr(msg, "--link") && strstr(msg, bad[i]), "'%s': message does not show the value: %s", bad[i],
                  msg);
        cr_assert(l.latency_s == 7 && l.bytes_per_s == 7, "'%s': out written on failure", bad[i]);
    }
    cr_assert_eq(nnc_link_parse(NULL, &(nnc_link){0}), NNC_EINVAL);
    cr_assert(strstr(nnc_error_message(), "found nothing"), "%s", nnc_error_message());
    /* the message says what is expected */
    nnc_link_parse("100us,1Gb", &(nnc_link){0});
    cr_assert(strstr(nnc_error_message(), "unknown unit") && strstr(nnc_error_message(), "Gbit"), "%s",
              nnc_error_message());
}

Test(dist_link, ring_allreduce_cost_by_hand)
{
    nnc_link l = parse_ok("100us,1Gbit"); /* 1.25e8 B/s */
    /* M = 4, 1e6 bytes: 2*3/4 * 1e6 / 1.25e8 = 0.012 s; 2*3 * 100 us = 0.0006 s; total 0.0126 s */
    cr_assert_float_eq(nnc_link_allreduce_seconds(&l, 1e6, 4), 0.0126, 1e-15);
    /* M = 2, 1.25e8 bytes: 2*1/2 * 1 s = 1 s; 2 * 100 us; total 1.0002 s */
    cr_assert_float_eq(nnc_link_allreduce_seconds(&l, 1.25e8, 2), 1.0002, 1e-12);
    /* M = 8, ResNet-20's 269722 floats = 1078888 bytes over 10 Gbit (1.25e9 B/s) and 2 ms:
     * 14/8 * 1078888 / 1.25e9 = 0.00151044320 s; 14 * 2 ms = 0.028 s */
    nnc_link f = parse_ok("2ms,10Gbit");
    cr_assert_float_eq(nnc_link_allreduce_seconds(&f, 1078888, 8), 0.0295104432, 1e-12);
    /* one worker, or nothing to send: no communication */
    cr_assert_eq(nnc_link_allreduce_seconds(&l, 1e6, 1), 0.0);
    cr_assert_eq(nnc_link_allreduce_seconds(&l, 0, 4), 0.0);
    /* latency only: 2 (M - 1) messages */
    nnc_link lat = {.latency_s = 1e-3, .bytes_per_s = 1e300};
    cr_assert_float_eq(nnc_link_allreduce_seconds(&lat, 1, 5), 8e-3, 1e-15);
    /* the bandwidth term tends to 2 * bytes / bandwidth for many workers */
    nnc_link bw = {.latency_s = 0, .bytes_per_s = 1e9};
    cr_assert_float_eq(nnc_link_allreduce_seconds(&bw, 1e9, 1000), 2.0 * 999 / 1000, 1e-12);
}

Test(dist_link, format_reads_back)
{
    char buf[64];
    nnc_link l = parse_ok("100us,1Gbit");
    cr_assert_str_eq(nnc_link_format(&l, buf, sizeof buf), "100 us, 1 Gbit/s");
    l = parse_ok("2ms,10MB");
    cr_assert_str_eq(nnc_link_format(&l, buf, sizeof buf), "2 ms, 80 Mbit/s");
}
