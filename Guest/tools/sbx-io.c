/*
 * sbx-io: the guest side of `sandbox bench io` (block, TCP and vsock throughput).
 *
 *   sbx-io blk DEV MIB OPS    on a scratch block device, with O_DIRECT: write MIB MiB
 *                             sequentially in 1 MiB blocks and fsync, read them back,
 *                             then OPS random 4 KiB reads and OPS random 4 KiB writes
 *                             (and an fsync) within those MIB MiB
 *   sbx-io recv tcp PORT | sbx-io recv vsock PORT
 *                             listen, accept one connection, read to EOF, close
 *   sbx-io send tcp IP PORT BYTES | sbx-io send vsock CID PORT BYTES
 *                             connect, write BYTES bytes, shut down the write side,
 *                             read to EOF (the peer closes when it has everything)
 *
 * Every result is one console line "SBX-IO: <metric> key=value ...", times in
 * nanoseconds of the guest's CLOCK_MONOTONIC; errors are "SBX-IO: error <what>: <why>".
 * The host measures network and vsock transfers on its own side as well.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define BLOCK (1u << 20)
#define SMALL 4096u
/* Large socket buffers and large reads: each guest system call is expensive on an emulating host. */
#define NETBUF (1u << 20)

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int fail(const char *what) {
    printf("SBX-IO: error %s: %s\n", what, strerror(errno));
    return 1;
}

static int write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads to EOF; returns the byte count or -1. */
static int64_t drain(int fd, unsigned char *buf, size_t size) {
    int64_t total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, size);
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        if (r == 0) return total;
        total += r;
    }
}

static uint64_t next_random(uint64_t *state) {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return *state >> 33;
}

static int blk(const char *dev, uint64_t mib, uint64_t ops) {
    if (mib == 0) { errno = EINVAL; return fail("size"); }
    int fd = open(dev, O_RDWR | O_DIRECT);
    if (fd < 0) return fail("open");
    unsigned char *buf;
    if (posix_memalign((void **)&buf, SMALL, BLOCK) != 0) return fail("posix_memalign");
    for (size_t i = 0; i < BLOCK; i++) buf[i] = (unsigned char)(i * 131 + 7);
    uint64_t bytes = mib * BLOCK;

    uint64_t t0 = now_ns();
    for (uint64_t off = 0; off < bytes; off += BLOCK)
        if (pwrite(fd, buf, BLOCK, (off_t)off) != (ssize_t)BLOCK) return fail("sequential write");
    if (fsync(fd) < 0) return fail("fsync");
    printf("SBX-IO: blk-seq-write bytes=%llu ns=%llu\n", (unsigned long long)bytes, (unsigned long long)(now_ns() - t0));

    t0 = now_ns();
    for (uint64_t off = 0; off < bytes; off += BLOCK)
        if (pread(fd, buf, BLOCK, (off_t)off) != (ssize_t)BLOCK) return fail("sequential read");
    printf("SBX-IO: blk-seq-read bytes=%llu ns=%llu\n", (unsigned long long)bytes, (unsigned long long)(now_ns() - t0));

    uint64_t blocks = bytes / SMALL, state = 0x5eed;
    t0 = now_ns();
    for (uint64_t i = 0; i < ops; i++)
        if (pread(fd, buf, SMALL, (off_t)(next_random(&state) % blocks * SMALL)) != (ssize_t)SMALL) return fail("random read");
    printf("SBX-IO: blk-rand-read ops=%llu bytes=%llu ns=%llu\n", (unsigned long long)ops,
           (unsigned long long)(ops * SMALL), (unsigned long long)(now_ns() - t0));

    t0 = now_ns();
    for (uint64_t i = 0; i < ops; i++)
        if (pwrite(fd, buf, SMALL, (off_t)(next_random(&state) % blocks * SMALL)) != (ssize_t)SMALL) return fail("random write");
    if (fsync(fd) < 0) return fail("fsync");
    printf("SBX-IO: blk-rand-write ops=%llu bytes=%llu ns=%llu\n", (unsigned long long)ops,
           (unsigned long long)(ops * SMALL), (unsigned long long)(now_ns() - t0));
    close(fd);
    free(buf);
    return 0;
}

static void large_buffers(int s) {
    int size = (int)NETBUF;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
}

static int recv_one(const char *family, const char *port) {
    int vsock = strcmp(family, "vsock") == 0;
    int s = socket(vsock ? AF_VSOCK : AF_INET, SOCK_STREAM, 0);
    if (s < 0) return fail("socket");
    int one = 1;
    if (!vsock) setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    large_buffers(s);
    struct sockaddr_vm vm = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)atoi(port) };
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)), .sin_addr.s_addr = htonl(INADDR_ANY) };
    int rc = vsock ? bind(s, (struct sockaddr *)&vm, sizeof vm) : bind(s, (struct sockaddr *)&in, sizeof in);
    if (rc < 0) return fail("bind");
    if (listen(s, 1) < 0) return fail("listen");
    printf("SBX-IO: %s-listening port=%s\n", family, port);
    int c = accept(s, NULL, NULL);
    if (c < 0) return fail("accept");
    unsigned char *buf = malloc(NETBUF);
    if (!buf) return fail("malloc");
    uint64_t t0 = now_ns();
    int64_t total = drain(c, buf, NETBUF);
    if (total < 0) return fail("read");
    printf("SBX-IO: %s-received bytes=%lld ns=%llu\n", family, (long long)total, (unsigned long long)(now_ns() - t0));
    close(c);
    close(s);
    free(buf);
    return 0;
}

static int send_one(const char *family, const char *to, const char *port, const char *count) {
    int vsock = strcmp(family, "vsock") == 0;
    int s = socket(vsock ? AF_VSOCK : AF_INET, SOCK_STREAM, 0);
    if (s < 0) return fail("socket");
    large_buffers(s);
    struct sockaddr_vm vm = { .svm_family = AF_VSOCK, .svm_cid = (unsigned)atoi(to), .svm_port = (unsigned)atoi(port) };
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
    if (!vsock && inet_pton(AF_INET, to, &in.sin_addr) != 1) { errno = EINVAL; return fail("address"); }
    uint64_t t0 = now_ns();
    int rc = vsock ? connect(s, (struct sockaddr *)&vm, sizeof vm) : connect(s, (struct sockaddr *)&in, sizeof in);
    if (rc < 0) return fail("connect");
    unsigned char *buf = malloc(NETBUF);
    if (!buf) return fail("malloc");
    for (size_t i = 0; i < NETBUF; i++) buf[i] = (unsigned char)(i * 131 + 7);
    uint64_t bytes = strtoull(count, NULL, 10), sent = 0;
    while (sent < bytes) {
        size_t n = bytes - sent < NETBUF ? (size_t)(bytes - sent) : NETBUF;
        if (write_all(s, buf, n) < 0) return fail("write");
        sent += n;
    }
    shutdown(s, SHUT_WR);
    if (drain(s, buf, NETBUF) < 0) return fail("read");
    printf("SBX-IO: %s-sent bytes=%llu ns=%llu\n", family, (unsigned long long)sent, (unsigned long long)(now_ns() - t0));
    close(s);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && strcmp(argv[1], "blk") == 0)
        return blk(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    if (argc == 4 && strcmp(argv[1], "recv") == 0 && (!strcmp(argv[2], "tcp") || !strcmp(argv[2], "vsock")))
        return recv_one(argv[2], argv[3]);
    if (argc == 6 && strcmp(argv[1], "send") == 0 && (!strcmp(argv[2], "tcp") || !strcmp(argv[2], "vsock")))
        return send_one(argv[2], argv[3], argv[4], argv[5]);
    fprintf(stderr, "usage: sbx-io blk DEV MIB OPS | recv tcp|vsock PORT | send tcp IP PORT BYTES | send vsock CID PORT BYTES\n");
    return 2;
}
