/*
 * loadgen: a small epoll load generator for reactorkit's benchmarks.
 *
 * Modes (all on 127.0.0.1, bounded by a duration, closed loop):
 *
 *   loadgen rr PORT CONNS SECONDS REQUEST REPLY_BYTES
 *       Request/response: each connection sends REQUEST, waits for
 *       REPLY_BYTES bytes back, and repeats. REQUEST may be "@N" for N
 *       bytes of 'x' (echo), or a string with \r \n escapes ("PING\r\n").
 *       Prints requests, requests/s, p50 and p99 latency in microseconds.
 *
 *   loadgen fanout PORT RECEIVERS SECONDS [PORT2]
 *       Chat broadcast: RECEIVERS connections plus one sender; greetings
 *       and join notices are skipped (read until 0.3 s of quiet). The
 *       sender sends one line; once every receiver
 *       has it, the next one. Prints messages, deliveries/s (messages x
 *       receivers) and p50/p99 of the time for a message to reach all.
 *       With PORT2, every other receiver connects there instead (a second
 *       chat server sharing the room through a bus); the sender stays on PORT.
 *
 *   loadgen idle PORT CONNS SECONDS
 *       Opens CONNS connections, prints "ready", holds them SECONDS, exits.
 *
 * rr and fanout print "go" when the timed part starts, then, at the end,
 * one line of key=value pairs, which bench/run.py parses.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_US 1000000 /* latency histogram: 1 us buckets up to 1 s */

static long hist[MAX_US + 1];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void record(double seconds) {
    long us = (long)(seconds * 1e6);
    if (us > MAX_US) us = MAX_US;
    if (us < 0) us = 0;
    hist[us]++;
}

static long percentile(long total, double p) {
    long want = (long)(total * p), seen = 0;
    for (long i = 0; i <= MAX_US; i++) {
        seen += hist[i];
        if (seen > want) return i;
    }
    return MAX_US;
}

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) { perror("socket"); exit(2); }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); exit(2); }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static size_t unescape(const char *in, char *out) {
    size_t n = 0;
    for (; *in; in++) {
        if (*in == '\\' && in[1] == 'r') { out[n++] = '\r'; in++; }
        else if (*in == '\\' && in[1] == 'n') { out[n++] = '\n'; in++; }
        else out[n++] = *in;
    }
    return n;
}

static void send_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = send(fd, buf, len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { usleep(50); continue; }
            perror("send"); exit(2);
        }
        buf += n; len -= (size_t)n;
    }
}

/* "go" on a line of its own: connected (and, for fanout, the greetings
 * skipped); the measured part starts now. bench/run.py reads the server's
 * CPU time at this line, so connection set-up is not counted. */
static void go(void) {
    printf("go\n");
    fflush(stdout);
}

typedef struct { int fd; size_t got; double sent_at; } conn_t;

static int mode_rr(int port, int conns, double seconds, const char *req_arg, long reply) {
    static char req[1 << 20];
    size_t req_len;
    if (req_arg[0] == '@') { req_len = (size_t)atol(req_arg + 1); memset(req, 'x', req_len); }
    else req_len = unescape(req_arg, req);
    int ep = epoll_create1(0);
    conn_t *c = calloc((size_t)conns, sizeof *c);
    for (int i = 0; i < conns; i++) {
        c[i].fd = dial(port);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
    }
    go();
    double start = now(), end = start + seconds;
    for (int i = 0; i < conns; i++) { c[i].sent_at = now(); send_all(c[i].fd, req, req_len); }
    long done = 0;
    static char buf[1 << 16];
    struct epoll_event evs[512];
    double t;
    while ((t = now()) < end) {
        int n = epoll_wait(ep, evs, 512, 100);
        for (int k = 0; k < n; k++) {
            conn_t *x = &c[evs[k].data.u32];
            ssize_t r = recv(x->fd, buf, sizeof buf, 0);
            if (r <= 0) { fprintf(stderr, "connection closed by the server\n"); return 2; }
            x->got += (size_t)r;
            if ((long)x->got >= reply) {
                double at = now();
                x->got -= (size_t)reply;
                record(at - x->sent_at);
                done++;
                x->sent_at = at;
                if (at < end) send_all(x->fd, req, req_len);
            }
        }
    }
    double elapsed = now() - start;
    printf("requests=%ld rps=%.0f p50_us=%ld p99_us=%ld\n", done, done / elapsed,
           percentile(done, 0.50), percentile(done, 0.99));
    return 0;
}

/* Read and discard what arrives on any of `fds` until `quiet` seconds pass
 * with nothing (greetings and join notices), all connections at once. */
static void drain_quiet(const int *fds, int n, double quiet) {
    static char buf[65536];
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    struct epoll_event evs[512];
    int ready;
    while ((ready = epoll_wait(ep, evs, 512, (int)(quiet * 1000))) > 0)
        for (int k = 0; k < ready; k++)
            if (recv(fds[evs[k].data.u32], buf, sizeof buf, 0) <= 0) {
                fprintf(stderr, "closed while draining\n");
                exit(2);
            }
    close(ep);
}

static int mode_fanout(int port, int receivers, double seconds, int port2) {
    int *fds = calloc((size_t)receivers + 1, sizeof(int));
    long *lines = calloc((size_t)receivers, sizeof(long));
    for (int i = 0; i < receivers; i++) fds[i] = dial(port2 && i % 2 ? port2 : port);
    int sender = fds[receivers] = dial(port);
    drain_quiet(fds, receivers + 1, 0.3);
    go();
    int ep = epoll_create1(0);
    for (int i = 0; i < receivers; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    static const char msg[] = "the quick brown fox jumps over the lazy dog\n";
    double start = now(), end = start + seconds, sent_at = now();
    long messages = 0, complete = 0;
    send_all(sender, msg, sizeof msg - 1);
    static char buf[65536];
    struct epoll_event evs[512];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 512, 100);
        for (int k = 0; k < n; k++) {
            int i = (int)evs[k].data.u32;
            ssize_t r = recv(fds[i], buf, sizeof buf, 0);
            if (r <= 0) { fprintf(stderr, "receiver closed\n"); return 2; }
            for (ssize_t j = 0; j < r; j++)
                if (buf[j] == '\n' && ++lines[i] == messages + 1) complete++;
        }
        if (complete == receivers) {
            double at = now();
            record(at - sent_at);
            messages++;
            complete = 0;
            sent_at = at;
            if (at < end) send_all(sender, msg, sizeof msg - 1);
        }
    }
    double elapsed = now() - start;
    printf("messages=%ld deliveries=%ld deliveries_per_s=%.0f p50_us=%ld p99_us=%ld\n",
           messages, messages * receivers, messages * receivers / elapsed,
           percentile(messages, 0.50), percentile(messages, 0.99));
    return 0;
}

static int mode_idle(int port, int conns, double seconds) {
    int *fds = calloc((size_t)conns, sizeof(int));
    for (int i = 0; i < conns; i++) fds[i] = dial(port);
    printf("ready\n");
    fflush(stdout);
    usleep((useconds_t)(seconds * 1e6));
    for (int i = 0; i < conns; i++) close(fds[i]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 7 && !strcmp(argv[1], "rr"))
        return mode_rr(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), argv[5], atol(argv[6]));
    if (argc >= 5 && !strcmp(argv[1], "fanout"))
        return mode_fanout(atoi(argv[2]), atoi(argv[3]), atof(argv[4]),
                           argc >= 6 ? atoi(argv[5]) : 0);
    if (argc >= 5 && !strcmp(argv[1], "idle"))
        return mode_idle(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
    fprintf(stderr, "usage: loadgen rr PORT CONNS SECONDS REQUEST REPLY_BYTES\n"
                    "       loadgen fanout PORT RECEIVERS SECONDS [PORT2]\n"
                    "       loadgen idle PORT CONNS SECONDS\n");
    return 2;
}
