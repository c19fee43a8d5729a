/*
 * ptload: the guest's workload, a small fio. Each job is a thread that keeps
 * --iodepth O_DIRECT requests outstanding on one disk through Linux AIO (raw
 * system calls, so the static binary needs no libaio) for --duration seconds,
 * then waits for what is in flight, so the counts it prints are every request
 * it completed: the host's tracer must see exactly these. Unlike fio, random offsets
 * are whole even-numbered blocks (see prep()).
 *
 *   ptload --rw randread --bs 4096 --iodepth 8 --jobs 2 --duration 3 --rwmixread 50 [--pin 1] /dev/vda ...
 *
 * With --pin 1, job k of every disk runs on CPU k (modulo the CPUs): Linux's blk-mq then issues its
 * requests on the queue that CPU maps to, so with one virtqueue per guest CPU each job has one of its
 * own; each job's count and CPU are printed too, "ptload job disk=vda job=K cpu=C reads=N writes=M
 * errors=E".
 * Prints one line per disk, "ptload disk=vda reads=N writes=M errors=E", and the time from the
 * first request to the last completion, "ptload elapsed_s=S". Every job stops submitting at the
 * same moment, --duration seconds after the first started, however long the others took to start.
 * A job's first failure is printed as "ptload error: ..."; the exit status is 1 after any failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *rw = "randread";
static long bs = 4096, iodepth = 8, jobs = 1, mixread = 50, pin = 0;
static double duration = 3;
/* when every job stops submitting (CLOCK_MONOTONIC seconds) */
static double deadline;

struct job {
    const char *path;
    int disk;
    int cpu; /* -1: not pinned */
    unsigned seed;
    long reads, writes, errors;
    char first_error[160]; /* what went wrong first, "" while nothing did */
    pthread_t thread;
    int started;
};

static void failed(struct job *j, const char *what, int err)
{
    if (!j->first_error[0])
        snprintf(j->first_error, sizeof(j->first_error), "%s: %s: %s", j->path, what, strerror(err));
    j->errors++;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void prep(struct job *j, struct iocb *cb, char *buf, int fd, uint64_t nblocks, uint64_t *seq)
{
    int random = strstr(rw, "rand") != NULL;
    int mixed = !strcmp(rw, "rw") || !strcmp(rw, "randrw");
    int is_read = mixed ? (long)(rand_r(&j->seed) % 100) < mixread : strstr(rw, "write") == NULL;
    /* random offsets are every other block: no two requests are ever contiguous, so QEMU's
       virtio-blk request merging never joins two and each guest request is one io_uring SQE */
    uint64_t block = random ? (((uint64_t)rand_r(&j->seed) << 16 ^ rand_r(&j->seed)) % (nblocks / 2)) * 2
                            : (*seq)++ % nblocks;
    memset(cb, 0, sizeof(*cb));
    cb->aio_fildes = fd;
    cb->aio_lio_opcode = is_read ? IOCB_CMD_PREAD : IOCB_CMD_PWRITE;
    cb->aio_buf = (uint64_t)(uintptr_t)buf;
    cb->aio_nbytes = bs;
    cb->aio_offset = block * bs;
    cb->aio_data = (uint64_t)(uintptr_t)cb;
}

static void *run_job(void *arg)
{
    struct job *j = arg;
    if (j->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(j->cpu, &set);
        int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        if (err) {
            failed(j, "pin to its CPU", err);
            return NULL;
        }
    }
    int writes = strstr(rw, "write") || strstr(rw, "rw");
    int fd = open(j->path, (writes ? O_RDWR : O_RDONLY) | O_DIRECT);
    uint64_t size = 0, seq = 0;
    aio_context_t ctx = 0;
    if (fd < 0) {
        failed(j, "open", errno);
        return NULL;
    }
    if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
        failed(j, "size", errno);
        return NULL;
    }
    if (size < (uint64_t)bs) {
        failed(j, "smaller than one block", EINVAL);
        return NULL;
    }
    if (syscall(SYS_io_setup, iodepth, &ctx) < 0) {
        failed(j, "io_setup", errno);
        return NULL;
    }
    uint64_t nblocks = size / bs;
    struct iocb *cbs = calloc(iodepth, sizeof(*cbs));
    char *bufs;
    int err = posix_memalign((void **)&bufs, 4096, iodepth * bs);
    if (err || !cbs) {
        failed(j, "buffers", err ? err : ENOMEM);
        return NULL;
    }
    memset(bufs, 0x5a, iodepth * bs);
    struct io_event *events = calloc(iodepth, sizeof(*events));
    long inflight = 0;
    for (long i = 0; i < iodepth && now() < deadline; i++) {
        struct iocb *p = &cbs[i];
        prep(j, p, bufs + i * bs, fd, nblocks, &seq);
        if (syscall(SYS_io_submit, ctx, 1, &p) == 1)
            inflight++;
        else
            failed(j, "io_submit", errno);
    }
    while (inflight > 0) {
        long n = syscall(SYS_io_getevents, ctx, 1, iodepth, events, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            failed(j, "io_getevents", errno);
            break;
        }
        int more = now() < deadline;
        for (long i = 0; i < n; i++) {
            struct iocb *p = (struct iocb *)(uintptr_t)events[i].data;
            if (events[i].res != bs)
                failed(j, p->aio_lio_opcode == IOCB_CMD_PREAD ? "read" : "write",
                       events[i].res < 0 ? (int)-events[i].res : EIO);
            else if (p->aio_lio_opcode == IOCB_CMD_PREAD)
                j->reads++;
            else
                j->writes++;
            inflight--;
            if (more) {
                prep(j, p, (char *)(uintptr_t)p->aio_buf, fd, nblocks, &seq);
                if (syscall(SYS_io_submit, ctx, 1, &p) == 1)
                    inflight++;
                else
                    failed(j, "io_submit", errno);
            }
        }
    }
    syscall(SYS_io_destroy, ctx);
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        const char *k = argv[i] + 2, *v = argv[i + 1];
        if (!strcmp(k, "rw")) rw = v;
        else if (!strcmp(k, "bs")) bs = atol(v);
        else if (!strcmp(k, "iodepth")) iodepth = atol(v);
        else if (!strcmp(k, "jobs")) jobs = atol(v);
        else if (!strcmp(k, "duration")) duration = atof(v);
        else if (!strcmp(k, "rwmixread")) mixread = atol(v);
        else if (!strcmp(k, "pin")) pin = atol(v);
        else { fprintf(stderr, "ptload: unknown option --%s\n", k); return 2; }
    }
    int ndisks = argc - i;
    if (ndisks <= 0 || bs <= 0 || bs % 512 || iodepth <= 0 || jobs <= 0) {
        fprintf(stderr, "usage: ptload [--rw M --bs N --iodepth N --jobs N --duration S] DISK...\n");
        return 2;
    }
    struct job *all = calloc(ndisks * jobs, sizeof(*all));
    long ncpus = sysconf(_SC_NPROCESSORS_ONLN);
    double start = now();
    deadline = start + duration;
    for (int d = 0; d < ndisks; d++)
        for (long k = 0; k < jobs; k++) {
            struct job *j = &all[d * jobs + k];
            j->path = argv[i + d];
            j->disk = d;
            j->cpu = pin && ncpus > 0 ? (int)(k % ncpus) : -1;
            j->seed = 1 + d * 1000 + k;
            int err = pthread_create(&j->thread, NULL, run_job, j);
            if (err)
                failed(j, "cannot start a job", err);
            else
                j->started = 1;
        }
    int status = 0;
    for (long n = 0; n < ndisks * jobs; n++) {
        if (all[n].started)
            pthread_join(all[n].thread, NULL);
        if (all[n].first_error[0]) {
            printf("ptload error: %s\n", all[n].first_error);
            status = 1;
        }
    }
    printf("ptload elapsed_s=%.6f\n", now() - start);
    for (int d = 0; d < ndisks; d++) {
        long r = 0, w = 0, e = 0;
        for (long k = 0; k < jobs; k++) {
            r += all[d * jobs + k].reads;
            w += all[d * jobs + k].writes;
            e += all[d * jobs + k].errors;
        }
        const char *name = strrchr(argv[i + d], '/');
        printf("ptload disk=%s reads=%ld writes=%ld errors=%ld\n", name ? name + 1 : argv[i + d], r, w, e);
        for (long k = 0; pin && k < jobs; k++) {
            struct job *j = &all[d * jobs + k];
            printf("ptload job disk=%s job=%ld cpu=%d reads=%ld writes=%ld errors=%ld\n", name ? name + 1 : argv[i + d],
                   k, j->cpu, j->reads, j->writes, j->errors);
        }
    }
    fflush(stdout);
    return status;
}
