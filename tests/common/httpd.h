/* tests/common/httpd.h - a tiny HTTP/1.0 server for download tests: one thread on
 * 127.0.0.1:<ephemeral port> serving one in-memory body to every GET, one connection at a
 * time. Modes: full body; truncated (Content-Length says the full size, half is sent, then
 * the connection closes); 404 for everything. GET /redirect answers 302 to /data in every
 * mode but 404. Thread-safety: start/stop from one test thread. */
#ifndef NNC_TEST_HTTPD_H
#define NNC_TEST_HTTPD_H

#include <stddef.h>
#include <stdint.h>

enum { HTTPD_FULL, HTTPD_TRUNCATE, HTTPD_404 };

typedef struct httpd httpd;
/* Start serving body (not copied; must outlive the server). Returns NULL on failure. */
httpd *httpd_start(const uint8_t *body, size_t len, int mode);
/* "http://127.0.0.1:PORT<path>" into buf. */
void httpd_url(const httpd *h, const char *path, char *buf, size_t n);
/* Number of requests answered so far. */
int httpd_requests(httpd *h);
/* Stop the thread (joined) and free. */
void httpd_stop(httpd *h);

#endif
