/* tests/common/httpd.c - see httpd.h. */
#include "tests/common/httpd.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct httpd {
    int fd, port, mode;
    const uint8_t *body;
    size_t len;
    atomic_int stop, requests;
    pthread_t th;
};

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        c += w, n -= (size_t)w;
    }
}

static void serve(httpd *h, int c)
{
    char req[8192];
    size_t got = 0;
    while (got < sizeof req - 1) {
        ssize_t r = recv(c, req + got, sizeof req - 1 - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
        req[got] = 0;
        if (strstr(req, "\r\n\r\n")) break;
    }
    req[got] = 0;
    char path[1024] = "/";
    sscanf(req, "GET %1023s", path);
    char hdr[256];
    if (h->mode == HTTPD_404) {
        const char *m = "HTTP/1.0 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found";
        send_all(c, m, strlen(m));
    } else if (strcmp(path, "/redirect") == 0) {
        snprintf(hdr, sizeof hdr, "HTTP/1.0 302 Found\r\nLocation: /data\r\nContent-Length: 0\r\n\r\n");
        send_all(c, hdr, strlen(hdr));
    } else {
        snprintf(hdr, sizeof hdr,
                 "HTTP/1.0 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 h->len);
        send_all(c, hdr, strlen(hdr));
        send_all(c, h->body, h->mode == HTTPD_TRUNCATE ? h->len / 2 : h->len);
    }
    atomic_fetch_add(&h->requests, 1);
    shutdown(c, SHUT_RDWR);
    close(c);
}

static void *loop(void *arg)
{
    httpd *h = arg;
    while (!atomic_load(&h->stop)) {
        struct pollfd p = {h->fd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        int c = accept(h->fd, NULL, NULL);
        if (c >= 0) serve(h, c);
    }
    return NULL;
}

httpd *httpd_start(const uint8_t *body, size_t len, int mode)
{
    httpd *h = calloc(1, sizeof *h);
    h->body = body, h->len = len, h->mode = mode;
    h->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (h->fd < 0 || bind(h->fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(h->fd, 8) != 0 ||
        getsockname(h->fd, (struct sockaddr *)&a, &al) != 0) {
        if (h->fd >= 0) close(h->fd);
        free(h);
        return NULL;
    }
    h->port = ntohs(a.sin_port);
    if (pthread_create(&h->th, NULL, loop, h) != 0) {
        close(h->fd);
        free(h);
        return NULL;
    }
    return h;
}

void httpd_url(const httpd *h, const char *path, char *buf, size_t n)
{
    snprintf(buf, n, "http://127.0.0.1:%d%s", h->port, path);
}

int httpd_requests(httpd *h) { return atomic_load(&h->requests); }

void httpd_stop(httpd *h)
{
    if (!h) return;
    atomic_store(&h->stop, 1);
    pthread_join(h->th, NULL);
    close(h->fd);
    free(h);
}
