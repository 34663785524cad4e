/* dist/link.h - a modelled interconnect: what a round's communication would cost on a network of
 * given latency and bandwidth (docs/algorithms.md, "Modelled interconnect").
 *
 * Pure functions, no state: parse "--link LATENCY,BANDWIDTH" and the ring all-reduce cost
 * t(bytes, M) = 2 (M - 1) / M * bytes / bandwidth + 2 (M - 1) * latency (M = 1: 0).
 * Thread-safety: reentrant. */
#ifndef NNC_DIST_LINK_H
#define NNC_DIST_LINK_H

#include <stddef.h>

typedef struct nnc_link {
    double latency_s;        /* one message's latency, seconds (>= 0) */
    double bytes_per_s;      /* bandwidth of one link, bytes per second (> 0) */
} nnc_link;

/* Parse "LATENCY,BANDWIDTH": LATENCY a number with unit us, ms or s; BANDWIDTH a number with a
 * bit rate unit bit, Kbit, Mbit, Gbit (or bps, Kbps, Mbps, Gbps) or a byte rate unit B, KB, MB,
 * GB, each optionally followed by "/s". Prefixes are decimal (K = 1e3, M = 1e6, G = 1e9) and the
 * unit is case-sensitive ("b" alone is refused: bit or byte?). Examples: "100us,1Gbit",
 * "2ms,10Gbit", "5us,100Gbps", "50us,1.25GB". Anything else is NNC_EINVAL with a message that
 * shows the value and what was expected; *out is written only on success. */
int nnc_link_parse(const char *text, nnc_link *out);

/* Seconds of one ring all-reduce of `bytes` bytes over M workers (bandwidth-optimal ring:
 * reduce-scatter then all-gather, 2 (M - 1) steps of bytes / M each):
 * 2 (M - 1) / M * bytes / bytes_per_s + 2 (M - 1) * latency_s; 0 for M <= 1 or bytes <= 0. */
double nnc_link_allreduce_seconds(const nnc_link *l, double bytes, int M);

/* "100 us, 1 Gbit/s"-style text of l into buf (n bytes); returns buf. */
const char *nnc_link_format(const nnc_link *l, char *buf, size_t n);

#endif
