// How long KVM_SET_USER_MEMORY_REGION takes before and after KVM_CREATE_IRQCHIP on this
// host, each order on a fresh VM, alternating. The second order is what a VMM that
// creates its interrupt controllers first pays on its way to the first guest instruction.
//   cc -O2 -o /tmp/memslot-order Bench/memslot-order.c && /tmp/memslot-order [RUNS]
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Milliseconds the memory registration took, registered before or after the irqchip.
static double one_run(int kvm, int memory_first) {
    size_t size = 128 << 20;
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) { perror("KVM_CREATE_VM"); exit(1); }
    void *ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED) { perror("mmap"); exit(1); }
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = size, .userspace_addr = (unsigned long)ram,
    };
    if (!memory_first && ioctl(vm, KVM_CREATE_IRQCHIP, 0) != 0) { perror("KVM_CREATE_IRQCHIP"); exit(1); }
    double start = now_ms();
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) != 0) { perror("KVM_SET_USER_MEMORY_REGION"); exit(1); }
    double took = now_ms() - start;
    if (memory_first && ioctl(vm, KVM_CREATE_IRQCHIP, 0) != 0) { perror("KVM_CREATE_IRQCHIP"); exit(1); }
    close(vm);
    munmap(ram, size);
    return took;
}

int main(int argc, char **argv) {
    int runs = argc > 1 ? atoi(argv[1]) : 9;
    if (runs < 1 || runs > 1000) { fprintf(stderr, "RUNS: 1..1000\n"); return 64; }
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) { perror("/dev/kvm"); return 1; }
    double *first = calloc(runs, sizeof *first), *after = calloc(runs, sizeof *after);
    for (int i = 0; i < runs; i++) {
        if (i % 2 == 0) { first[i] = one_run(kvm, 1); after[i] = one_run(kvm, 0); }
        else { after[i] = one_run(kvm, 0); first[i] = one_run(kvm, 1); }
    }
    qsort(first, runs, sizeof *first, compare);
    qsort(after, runs, sizeof *after, compare);
    printf("KVM_SET_USER_MEMORY_REGION, 128 MiB, %d runs each (ms): before the irqchip median %.2f (min %.2f, max %.2f); "
           "after it median %.2f (min %.2f, max %.2f)\n",
           runs, first[runs / 2], first[0], first[runs - 1], after[runs / 2], after[0], after[runs - 1]);
    return 0;
}
