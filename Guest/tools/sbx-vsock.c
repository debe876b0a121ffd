/*
 * sbx-vsock: a tiny AF_VSOCK client/server for the guest image's device tests.
 *
 *   sbx-vsock listen PORT     accept one connection, read to EOF, print the byte
 *                             count and an FNV-1a checksum, then send back BYTES
 *                             bytes of the deterministic test pattern if the peer
 *                             asked for them with a first line "SEND <bytes>\n"
 *   sbx-vsock send CID PORT BYTES
 *                             connect, send BYTES bytes of the test pattern,
 *                             shut down the write side, print what was sent
 *
 * The pattern byte i is (i * 131 + 7) mod 251, so both sides can check it
 * without sharing a file. Output lines start with "SBX-VSOCK:".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static unsigned char pattern(uint64_t i) { return (unsigned char)((i * 131 + 7) % 251); }

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}

static int die(const char *what) {
    printf("SBX-VSOCK: error %s: %s\n", what, strerror(errno));
    return 1;
}

static int send_pattern(int fd, uint64_t bytes, uint64_t *sum) {
    unsigned char buf[65536];
    uint64_t sent = 0, h = 1469598103934665603ULL;
    while (sent < bytes) {
        size_t n = bytes - sent < sizeof buf ? (size_t)(bytes - sent) : sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = pattern(sent + i);
        h = fnv(h, buf, n);
        size_t off = 0;
        while (off < n) {
            ssize_t w = write(fd, buf + off, n - off);
            if (w < 0) { if (errno == EINTR) continue; return -1; }
            off += (size_t)w;
        }
        sent += n;
    }
    *sum = h;
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && strcmp(argv[1], "listen") == 0) {
        int s = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (s < 0) return die("socket");
        struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)atoi(argv[2]) };
        if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) return die("bind");
        if (listen(s, 1) < 0) return die("listen");
        printf("SBX-VSOCK: listening %s\n", argv[2]);
        int c = accept(s, NULL, NULL);
        if (c < 0) return die("accept");
        unsigned char buf[65536];
        uint64_t total = 0, h = 1469598103934665603ULL, reply = 0;
        char line[64];
        size_t ln = 0;
        int header = 1;
        for (;;) {
            ssize_t r = read(c, buf, sizeof buf);
            if (r < 0) { if (errno == EINTR) continue; return die("read"); }
            if (r == 0) break;
            size_t start = 0;
            while (header && start < (size_t)r) {
                char ch = (char)buf[start++];
                if (ch == '\n' || ln == sizeof line - 1) {
                    line[ln] = 0;
                    header = 0;
                    if (strncmp(line, "SEND ", 5) == 0) reply = strtoull(line + 5, NULL, 10);
                } else line[ln++] = ch;
            }
            h = fnv(h, buf + start, (size_t)r - start);
            total += (uint64_t)r - start;
            if (reply && !header) break; /* a reply request carries no payload */
        }
        printf("SBX-VSOCK: received %llu bytes fnv %016llx\n", (unsigned long long)total, (unsigned long long)h);
        if (reply) {
            uint64_t sum;
            if (send_pattern(c, reply, &sum) < 0) return die("write");
            printf("SBX-VSOCK: replied %llu bytes fnv %016llx\n", (unsigned long long)reply, (unsigned long long)sum);
        }
        close(c);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "send") == 0) {
        int s = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (s < 0) return die("socket");
        struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = (unsigned)atoi(argv[2]), .svm_port = (unsigned)atoi(argv[3]) };
        if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) return die("connect");
        uint64_t sum, bytes = strtoull(argv[4], NULL, 10);
        if (send_pattern(s, bytes, &sum) < 0) return die("write");
        shutdown(s, SHUT_WR);
        char tail[16];
        while (read(s, tail, sizeof tail) > 0) {}
        printf("SBX-VSOCK: sent %llu bytes fnv %016llx\n", (unsigned long long)bytes, (unsigned long long)sum);
        close(s);
        return 0;
    }
    fprintf(stderr, "usage: sbx-vsock listen PORT | sbx-vsock send CID PORT BYTES\n");
    return 2;
}
