/* dist/link.c - the modelled interconnect (see dist/link.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/link.h"
#include "nn/status.h"

typedef struct unit {
    const char *name;
    double scale;
} unit;

static const unit LATENCY_UNITS[] = {{"us", 1e-6}, {"ms", 1e-3}, {"s", 1.0}};
/* bytes per second per unit */
static const unit RATE_UNITS[] = {
    {"bit", 1.0 / 8},  {"Kbit", 1e3 / 8}, {"Mbit", 1e6 / 8}, {"Gbit", 1e9 / 8},
    {"bps", 1.0 / 8},  {"Kbps", 1e3 / 8}, {"Mbps", 1e6 / 8}, {"Gbps", 1e9 / 8},
    {"B", 1.0},        {"KB", 1e3},       {"MB", 1e6},       {"GB", 1e9},
};

#define LINK_EXPECTED "expected LATENCY,BANDWIDTH such as 100us,1Gbit or 50us,1.25GB (latency in us, ms or s; " \
                      "bandwidth in bit, Kbit, Mbit, Gbit, bps .. Gbps, B, KB, MB or GB per second)"

/* One "<number><unit>" field [s, e) -> value in base units. Returns 0, or -1 with why set. */
static int field(const char *s, const char *e, const unit *units, int nu, int rate, double *out, const char **why)
{
    char buf[64];
    size_t len = (size_t)(e - s);
    while (len && (*s == ' ' || *s == '\t')) s++, len--;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
    if (!len) {
        *why = "empty";
        return -1;
    }
    if (len >= sizeof buf) {
        *why = "too long";
        return -1;
    }
    memcpy(buf, s, len);
    buf[len] = 0;
    if (rate && len > 2 && !strcmp(buf + len - 2, "/s")) buf[len -= 2] = 0;
    char *end;
    errno = 0;
    if (!(buf[0] >= '0' && buf[0] <= '9') && buf[0] != '.') {
        *why = "expected a number first";
        return -1;
    }
    double v = strtod(buf, &end);
    if (end == buf || errno == ERANGE || !isfinite(v)) {
        *why = "not a finite number";
        return -1;
    }
    while (*end == ' ') end++;
    if (!*end) {
        *why = "missing unit";
        return -1;
    }
    for (int i = 0; i < nu; i++)
        if (!strcmp(end, units[i].name)) {
            *out = v * units[i].scale;
            return 0;
        }
    *why = "unknown unit";
    return -1;
}

int nnc_link_parse(const char *text, nnc_link *out)
{
    if (!text) return nnc__fail(NNC_EINVAL, "--link: " LINK_EXPECTED ", found nothing");
    const char *comma = strchr(text, ',');
    if (!comma || strchr(comma + 1, ','))
        return nnc__fail(NNC_EINVAL, "--link: " LINK_EXPECTED ", found '%.80s' (%s)", text,
                         comma ? "more than one comma" : "no comma");
    const char *why = NULL;
    double lat, bw;
    if (field(text, comma, LATENCY_UNITS, 3, 0, &lat, &why))
        return nnc__fail(NNC_EINVAL, "--link: latency '%.*s': %s; " LINK_EXPECTED ", found '%.80s'",
                         (int)(comma - text > 40 ? 40 : comma - text), text, why, text);
    if (field(comma + 1, comma + 1 + strlen(comma + 1), RATE_UNITS, (int)(sizeof RATE_UNITS / sizeof *RATE_UNITS), 1,
              &bw, &why))
        return nnc__fail(NNC_EINVAL, "--link: bandwidth '%.40s': %s; " LINK_EXPECTED ", found '%.80s'", comma + 1, why,
                         text);
    if (!(lat >= 0.0))
        return nnc__fail(NNC_EINVAL, "--link: latency must be >= 0, found '%.80s'", text);
    if (!(bw > 0.0) || !isfinite(bw))
        return nnc__fail(NNC_EINVAL, "--link: bandwidth must be > 0, found '%.80s'", text);
    out->latency_s = lat;
    out->bytes_per_s = bw;
    return NNC_OK;
}

double nnc_link_allreduce_seconds(const nnc_link *l, double bytes, int M)
{
    if (M <= 1 || !(bytes > 0.0)) return 0.0;
    double steps = 2.0 * (M - 1);
    return steps / M * bytes / l->bytes_per_s + steps * l->latency_s;
}

const char *nnc_link_format(const nnc_link *l, char *buf, size_t n)
{
    double lat = l->latency_s, bits = l->bytes_per_s * 8;
    const char *lu = "s", *bu = "bit/s";
    if (lat < 1e-3) lat *= 1e6, lu = "us";
    else if (lat < 1.0) lat *= 1e3, lu = "ms";
    if (bits >= 1e9) bits /= 1e9, bu = "Gbit/s";
    else if (bits >= 1e6) bits /= 1e6, bu = "Mbit/s";
    else if (bits >= 1e3) bits /= 1e3, bu = "Kbit/s";
    snprintf(buf, n, "%g %s, %g %s", lat, lu, bits, bu);
    return buf;
}
