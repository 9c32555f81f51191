/*
 * floor: the physical floor for reactorkit's benchmarks, a C epoll server.
 *
 *   floor MODE PORT
 *
 * MODE is one of:
 *   echo   RFC 862: every byte read is written back.
 *   line   one "+PONG\r\n" per line read (the bare line server, in C).
 *   chat   every complete line goes to every other client as
 *          "<guest> LINE\r\n" (the bare broadcast server, in C).
 *   http   one fixed 13-byte 200 response per request head ("\r\n\r\n");
 *          no parsing, no routing: what answering costs at the least.
 *
 * It prints "ready" once listening on 127.0.0.1:PORT and runs until killed.
 * One thread, level-triggered epoll, non-blocking sockets, TCP_NODELAY (as
 * asyncio sets it). A connection holds ~48 bytes until it needs a buffer:
 * the output buffer is only allocated for what send() did not take, and
 * while it holds bytes the connection stops reading (echo, line, http) or,
 * for chat, is closed once it lags by more than MAX_OUT bytes. A chat line
 * longer than MAX_LINE closes its connection. So no buffer is unbounded.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_OUT (1 << 20)
#define MAX_LINE 65536

enum mode { ECHO, LINE, CHAT, HTTP };

typedef struct conn {
    int fd;
    int dead;                 /* chat: lagged too far; dropped on its next event */
    int head_match;           /* http: how much of "\r\n\r\n" the last read ended with */
    char *out, *in;           /* unsent output; chat: an incomplete line */
    size_t out_len, out_cap, in_len, in_cap;
    struct conn *prev, *next; /* chat: every member, for the broadcast */
} conn_t;

static enum mode mode;
static int ep;
static conn_t *members;
static char buf[1 << 16];
static const char PONG[] = "+PONG\r\n";
static const char HTTP_OK[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";

static void watch(conn_t *c, unsigned events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void drop(conn_t *c) {
    close(c->fd); /* also leaves the epoll set */
    if (mode == CHAT) {
        if (c->prev) c->prev->next = c->next; else members = c->next;
        if (c->next) c->next->prev = c->prev;
    }
    free(c->out);
    free(c->in);
    free(c);
}

static int append(char **p, size_t *len, size_t *cap, const char *data, size_t n) {
    if (*len + n > *cap) {
        size_t want = *cap ? *cap : 4096;
        while (want < *len + n) want *= 2;
        char *grown = realloc(*p, want);
        if (!grown) return -1;
        *p = grown;
        *cap = want;
    }
    memcpy(*p + *len, data, n);
    *len += n;
    return 0;
}

/* Send now; keep what the kernel did not take. Returns -1 if `c` must close. */
static int write_out(conn_t *c, const char *data, size_t n) {
    if (!c->out_len) {
        ssize_t sent = send(c->fd, data, n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno != EAGAIN && errno != EINTR) return -1;
            sent = 0;
        }
        data += sent;
        n -= (size_t)sent;
        if (!n) return 0;
    }
    if (c->out_len + n > MAX_OUT) return -1;
    if (append(&c->out, &c->out_len, &c->out_cap, data, n) < 0) return -1;
    watch(c, mode == CHAT ? EPOLLIN | EPOLLOUT : EPOLLOUT);
    return 0;
}

static int flush_out(conn_t *c) {
    ssize_t sent = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (sent < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    memmove(c->out, c->out + sent, c->out_len - (size_t)sent);
    c->out_len -= (size_t)sent;
    if (!c->out_len) watch(c, EPOLLIN);
    return 0;
}

static void broadcast(conn_t *from, const char *line, size_t n) {
    static char msg[MAX_LINE + 16];
    if (n && line[n - 1] == '\r') n--;
    memcpy(msg, "<guest> ", 8);
    memcpy(msg + 8, line, n);
    memcpy(msg + 8 + n, "\r\n", 2);
    for (conn_t *c = members; c; c = c->next)
        if (c != from && !c->dead && write_out(c, msg, n + 10) < 0) {
            /* Not freed here: its event may be pending in this batch. The
             * shutdown makes epoll report it, and the loop drops it then. */
            c->dead = 1;
            shutdown(c->fd, SHUT_RDWR);
        }
}

/* Returns -1 if `c` must close. */
static int received(conn_t *c, const char *data, size_t n) {
    switch (mode) {
    case ECHO:
        return write_out(c, data, n);
    case LINE: {
        static char replies[sizeof buf * (sizeof PONG - 1)];
        size_t count = 0;
        for (const char *p = data; (p = memchr(p, '\n', (size_t)(data + n - p))); p++) count++;
        for (size_t i = 0; i < count; i++) memcpy(replies + i * 7, PONG, 7);
        return count ? write_out(c, replies, count * 7) : 0;
    }
    case HTTP: {
        static const char end[] = "\r\n\r\n";
        size_t count = 0;
        for (size_t i = 0; i < n; i++) {
            if (data[i] == end[c->head_match]) {
                if (++c->head_match == 4) { count++; c->head_match = 0; }
            } else {
                c->head_match = data[i] == '\r' ? 1 : 0;
            }
        }
        for (size_t i = 0; i < count; i++)
            if (write_out(c, HTTP_OK, sizeof HTTP_OK - 1) < 0) return -1;
        return 0;
    }
    case CHAT: {
        const char *p = data, *end = data + n, *nl;
        while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
            if (c->in_len) {
                if (c->in_len + (size_t)(nl - p) > MAX_LINE) return -1;
                if (append(&c->in, &c->in_len, &c->in_cap, p, (size_t)(nl - p)) < 0) return -1;
                broadcast(c, c->in, c->in_len);
                c->in_len = 0;
            } else {
                if (nl - p > MAX_LINE) return -1;
                broadcast(c, p, (size_t)(nl - p));
            }
            p = nl + 1;
        }
        if (p < end) {
            if (c->in_len + (size_t)(end - p) > MAX_LINE) return -1;
            if (append(&c->in, &c->in_len, &c->in_cap, p, (size_t)(end - p)) < 0) return -1;
        }
        return 0;
    }
    }
    return -1;
}

static void accept_all(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) return; /* EAGAIN, or EMFILE: retried on the next event */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        if (!c) { close(fd); continue; }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        if (mode == CHAT) {
            c->next = members;
            if (members) members->prev = c;
            members = c;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) goto usage;
    if (!strcmp(argv[1], "echo")) mode = ECHO;
    else if (!strcmp(argv[1], "line")) mode = LINE;
    else if (!strcmp(argv[1], "chat")) mode = CHAT;
    else if (!strcmp(argv[1], "http")) mode = HTTP;
    else goto usage;
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("floor: bind/listen");
        return 1;
    }
    ep = epoll_create1(0);
    static conn_t listener;
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    printf("ready\n");
    fflush(stdout);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            if (c == &listener) { accept_all(lfd); continue; }
            if (evs[k].events & EPOLLOUT && c->out_len && flush_out(c) < 0) { drop(c); continue; }
            if (!(evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            if (c->out_len && mode != CHAT) continue; /* not reading until drained */
            if (c->dead) { drop(c); continue; }
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0 || received(c, buf, (size_t)r) < 0) drop(c);
        }
    }
usage:
    fprintf(stderr, "usage: floor echo|line|chat|http PORT\n");
    return 2;
}
