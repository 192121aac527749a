/* flashcache's io_uring ring (see ring.h). Raw syscalls and the kernel's uapi header only.
 * Memory ordering: the SQ tail and CQ head are published with release stores, the kernel's
 * SQ head and CQ tail read with acquire loads, as liburing does. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/io_uring.h>

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif
#ifndef IORING_SETUP_SQE128
#define IORING_SETUP_SQE128 (1U << 10)
#endif
#ifndef IORING_SETUP_CQE32
#define IORING_SETUP_CQE32 (1U << 11)
#endif
#ifndef IORING_URING_CMD_FIXED
#define IORING_URING_CMD_FIXED (1U << 0)
#endif
#define FC_OP_URING_CMD 46

#include "ring.h"

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    int fd = (int)syscall(__NR_io_uring_setup, entries, p);
    return fd < 0 ? -errno : fd;
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
    int ret = (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
    return ret < 0 ? -errno : ret;
}

static int sys_register(int fd, unsigned opcode, const void *arg, unsigned nr)
{
    int ret = (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr);
    return ret < 0 ? -errno : ret;
}

int fc_ring_init(struct fc_ring *r, unsigned entries, unsigned flags)
{
    struct io_uring_params p;
    memset(r, 0, sizeof(*r));
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    int fd = sys_setup(entries, &p);
    if (fd < 0)
        return fd;
    r->fd = fd;
    r->setup_flags = flags;
    r->features = p.features;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;
    r->sqe_size = (flags & IORING_SETUP_SQE128) ? 128 : 64;
    r->cqe_size = (flags & IORING_SETUP_CQE32) ? 32 : 16;
    r->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_len = p.cq_off.cqes + (size_t)p.cq_entries * r->cqe_size;
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_len > r->sq_len)
            r->sq_len = r->cq_len;
        r->cq_len = r->sq_len;
    }
    r->sq_ptr = mmap(0, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (r->sq_ptr == MAP_FAILED) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        r->cq_ptr = r->sq_ptr;
    } else {
        r->cq_ptr = mmap(0, r->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (r->cq_ptr == MAP_FAILED) {
            int e = -errno;
            munmap(r->sq_ptr, r->sq_len);
            close(fd);
            return e;
        }
    }
    r->sqes_len = (size_t)p.sq_entries * r->sqe_size;
    r->sqes = mmap(0, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) {
        int e = -errno;
        if (r->cq_ptr != r->sq_ptr)
            munmap(r->cq_ptr, r->cq_len);
        munmap(r->sq_ptr, r->sq_len);
        close(fd);
        return e;
    }
    char *sq = r->sq_ptr, *cq = r->cq_ptr;
    r->sq_head = (unsigned *)(sq + p.sq_off.head);
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->sq_flags = (unsigned *)(sq + p.sq_off.flags);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (unsigned char *)(cq + p.cq_off.cqes);
    r->sqe_tail = r->sqe_head = *r->sq_tail;
    return 0;
}

void fc_ring_exit(struct fc_ring *r)
{
    if (r->fd <= 0)
        return;
    munmap(r->sqes, r->sqes_len);
    if (r->cq_ptr != r->sq_ptr)
        munmap(r->cq_ptr, r->cq_len);
    munmap(r->sq_ptr, r->sq_len);
    close(r->fd);
    r->fd = -1;
}

unsigned fc_sq_space(struct fc_ring *r)
{
    unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    return r->sq_entries - (r->sqe_tail - head);
}

unsigned fc_sq_pending(struct fc_ring *r)
{
    return r->sqe_tail - r->sqe_head;
}

unsigned fc_cq_ready(struct fc_ring *r)
{
    return __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) - *r->cq_head;
}

static struct io_uring_sqe *get_sqe(struct fc_ring *r)
{
    if (fc_sq_space(r) == 0)
        return NULL;
    unsigned idx = r->sqe_tail & *r->sq_mask;
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)((char *)r->sqes + (size_t)idx * r->sqe_size);
    memset(sqe, 0, r->sqe_size);
    r->sq_array[idx] = idx;
    r->sqe_tail++;
    return sqe;
}

int fc_prep_rw(struct fc_ring *r, int opcode, int fd, void *addr, unsigned len,
               unsigned long long off, unsigned long long user_data, int buf_index)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    if (!sqe)
        return -EBUSY;
    sqe->opcode = (unsigned char)opcode;
    sqe->fd = fd;
    sqe->addr = (unsigned long long)(uintptr_t)addr;
    sqe->len = len;
    sqe->off = off;
    sqe->user_data = user_data;
    if (buf_index >= 0)
        sqe->buf_index = (unsigned short)buf_index;
    return 0;
}

int fc_prep_nop(struct fc_ring *r, unsigned long long user_data)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    if (!sqe)
        return -EBUSY;
    sqe->opcode = IORING_OP_NOP;
    sqe->user_data = user_data;
    return 0;
}

int fc_prep_uring_cmd(struct fc_ring *r, int fd, unsigned cmd_op, const void *cmd, unsigned cmd_len,
                      unsigned long long user_data, int buf_index)
{
    unsigned room = r->sqe_size - 48;
    if (cmd_len > room)
        return -EINVAL;
    struct io_uring_sqe *sqe = get_sqe(r);
    if (!sqe)
        return -EBUSY;
    unsigned char *raw = (unsigned char *)sqe;
    raw[0] = FC_OP_URING_CMD;
    memcpy(raw + 4, &fd, 4);
    memcpy(raw + 8, &cmd_op, 4);          /* cmd_op @8, __pad1 @12 stays 0 */
    memcpy(raw + 32, &user_data, 8);
    if (buf_index >= 0) {
        unsigned flags = IORING_URING_CMD_FIXED;
        unsigned short bi = (unsigned short)buf_index;
        memcpy(raw + 28, &flags, 4);      /* uring_cmd_flags */
        memcpy(raw + 40, &bi, 2);         /* buf_index */
    }
    memcpy(raw + 48, cmd, cmd_len);       /* the command area */
    return 0;
}

int fc_last_sqe(struct fc_ring *r, void *out, unsigned out_len)
{
    if (r->sqe_tail == r->sqe_head)
        return -ENOENT;
    unsigned idx = (r->sqe_tail - 1) & *r->sq_mask;
    unsigned n = out_len < r->sqe_size ? out_len : r->sqe_size;
    memcpy(out, (char *)r->sqes + (size_t)idx * r->sqe_size, n);
    return (int)n;
}

int fc_submit(struct fc_ring *r, unsigned wait_nr)
{
    unsigned pending = r->sqe_tail - r->sqe_head;
    __atomic_store_n(r->sq_tail, r->sqe_tail, __ATOMIC_RELEASE);
    if (pending == 0 && wait_nr == 0)
        return 0;
    int ret;
    do {
        ret = sys_enter(r->fd, pending, wait_nr, wait_nr ? IORING_ENTER_GETEVENTS : 0);
    } while (ret == -EINTR);
    if (ret >= 0) {
        r->sqe_head += (unsigned)ret;
    } else if (ret != -EAGAIN && ret != -EBUSY && pending) {
        /* refused outright (e.g. EEXIST: another thread on a SINGLE_ISSUER ring): the
         * kernel took none of them, so take them back, or every later call on this ring
         * would find SQEs it did not prepare */
        r->sqe_tail = r->sqe_head;
        __atomic_store_n(r->sq_tail, r->sqe_tail, __ATOMIC_RELEASE);
    }
    return ret;
}

int fc_wait(struct fc_ring *r, unsigned min_complete)
{
    int ret;
    while (fc_cq_ready(r) < min_complete) {
        ret = sys_enter(r->fd, 0, min_complete, IORING_ENTER_GETEVENTS);
        if (ret < 0 && ret != -EINTR)
            return ret;
    }
    return (int)fc_cq_ready(r);
}

int fc_reap(struct fc_ring *r, struct fc_cqe *out, unsigned max)
{
    unsigned head = *r->cq_head;
    unsigned tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    unsigned n = 0;
    while (head != tail && n < max) {
        unsigned char *c = r->cqes + (size_t)(head & *r->cq_mask) * r->cqe_size;
        memcpy(&out[n].user_data, c, 8);
        memcpy(&out[n].res, c + 8, 4);
        memcpy(&out[n].flags, c + 12, 4);
        if (r->cqe_size == 32)
            memcpy(&out[n].big0, c + 16, 8);
        else
            out[n].big0 = 0;
        head++;
        n++;
    }
    __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    return (int)n;
}

int fc_register_buffers(struct fc_ring *r, void **addrs, size_t *lens, unsigned n)
{
    struct iovec iov[n ? n : 1];
    for (unsigned i = 0; i < n; i++) {
        iov[i].iov_base = addrs[i];
        iov[i].iov_len = lens[i];
    }
    return sys_register(r->fd, IORING_REGISTER_BUFFERS, iov, n);
}

int fc_unregister_buffers(struct fc_ring *r)
{
    return sys_register(r->fd, IORING_UNREGISTER_BUFFERS, NULL, 0);
}

int fc_register_eventfd(struct fc_ring *r, int efd)
{
    return sys_register(r->fd, IORING_REGISTER_EVENTFD, &efd, 1);
}

int fc_unregister_eventfd(struct fc_ring *r)
{
    return sys_register(r->fd, IORING_UNREGISTER_EVENTFD, NULL, 0);
}

/* Submit what is prepared, wait for at least `want` completions, store them by user_data
 * (an index into res/dw0). Completions for other user_data (>= n) are not expected here:
 * the batch functions own the ring while they run. Returns how many were reaped. */
static int drain(struct fc_ring *r, unsigned want, unsigned base, unsigned n, int *res, unsigned long long *dw0)
{
    struct fc_cqe cqes[64];
    unsigned got = 0;
    while (got < want) {
        int ret;
        if (fc_sq_pending(r)) {
            ret = fc_submit(r, 1);
            if (ret < 0 && ret != -EBUSY && ret != -EAGAIN)
                return ret;
        } else if (fc_cq_ready(r) == 0) {
            ret = fc_wait(r, 1);
            if (ret < 0)
                return ret;
        }
        int k = fc_reap(r, cqes, 64);
        for (int i = 0; i < k; i++) {
            unsigned long long ud = cqes[i].user_data - base;
            if (ud < n) {
                res[ud] = cqes[i].res;
                if (dw0)
                    dw0[ud] = cqes[i].big0;
            }
        }
        got += (unsigned)k;
    }
    return (int)got;
}

#define FC_BATCH_BASE 0x10000000ULL

/* What one batch prepares: request i of a batch, with user_data FC_BATCH_BASE + i. */
struct batch {
    int opcode, fd, buf_index;
    unsigned cmd_op, stride;
    void **addrs;
    char *base;
    const unsigned *lens;
    const unsigned long long *offs;
    const int *buf_indexes;
    const char *cmds;
    char *packed;          /* packed batches: the next request's buffer (lens[i] bytes on) */
    char **dst;            /* reads into results: request i's bytes go on to dst[i]... */
    char **src;            /* ...from its buffer, noted here when it is prepared */
    unsigned *ready;       /* completed requests whose bytes are not yet copied */
    unsigned nready;
    char *const *from;     /* writes from sources: request i's bytes are copied into its
                              buffer just before it is prepared (overlapping the I/O) */
};

static int prep_one(struct fc_ring *r, struct batch *b, unsigned i)
{
    unsigned long long ud = FC_BATCH_BASE + i;
    if (b->cmds)
        return fc_prep_uring_cmd(r, b->fd, b->cmd_op, b->cmds + (size_t)i * 72, 72, ud, b->buf_index);
    void *addr = b->packed ? b->packed : b->addrs ? b->addrs[i] : b->base + (size_t)i * b->stride;
    int bi = b->buf_indexes ? b->buf_indexes[i] : b->buf_index;
    if (b->from && fc_sq_space(r))
        memcpy(addr, b->from[i], b->lens[i]);
    int ret = fc_prep_rw(r, b->opcode, b->fd, addr, b->lens[i], b->offs[i], ud, bi);
    if (ret == 0 && b->packed)
        b->packed += b->lens[i];
    if (ret == 0 && b->dst)
        b->src[i] = addr;
    return ret;
}

/* Copy the completed requests' bytes on to their results (what completed, short or not;
 * a short one is finished by the caller). Called with the ring refilled, so the copying
 * overlaps the I/O still in flight. */
static void copy_ready(struct batch *b, const int *res)
{
    for (unsigned k = 0; k < b->nready; k++) {
        unsigned i = b->ready[k];
        int got = res[i];
        if (got > 0)
            memcpy(b->dst[i], b->src[i], (unsigned)got < b->lens[i] ? (unsigned)got : b->lens[i]);
    }
    b->nready = 0;
}

/* Store the completions ready now by user_data (see drain); returns how many. */
static unsigned reap_into(struct fc_ring *r, unsigned base, unsigned n, int *res, unsigned long long *dw0,
                          struct batch *b)
{
    struct fc_cqe cqes[64];
    unsigned got = 0;
    int k;
    while ((k = fc_reap(r, cqes, 64)) > 0) {
        for (int i = 0; i < k; i++) {
            unsigned long long ud = cqes[i].user_data - base;
            if (ud < n) {
                res[ud] = cqes[i].res;
                if (dw0)
                    dw0[ud] = cqes[i].big0;
                if (b->dst)
                    b->ready[b->nready++] = (unsigned)ud;
            }
        }
        got += (unsigned)k;
    }
    return got;
}

/* Hand the prepared SQEs to the kernel (waiting for one completion if wait). Returns 1 if
 * all of them completed inside the call (page-cache hits), 0 if not, or -errno. Busy
 * (-EBUSY/-EAGAIN: the kernel is short of room) counts as "not yet": the SQEs stay
 * prepared and the caller reaps before trying again. */
static int submit_some(struct fc_ring *r, int wait)
{
    unsigned before = fc_cq_ready(r);
    int ret = fc_submit(r, wait ? 1 : 0);
    if (ret == -EBUSY || ret == -EAGAIN)
        return 0;
    if (ret < 0)
        return ret;
    return !wait && ret > 0 && fc_cq_ready(r) - before >= (unsigned)ret;
}

/* Keep the ring as full as it allows until all n requests completed: reap whatever is
 * ready, refill at once, sleep (min_complete 1) only when nothing is ready.
 *
 * How many SQEs go into one io_uring_enter adapts. I/O that completes asynchronously
 * (O_DIRECT, page-cache misses) is submitted one SQE per enter, as fio does with its
 * default iodepth_batch_submit=1: each request reaches the device as soon as it is
 * prepared. Handing it 32 at a time (one plug, one doorbell) turns the queue into waves
 * that start and finish together, ~10-20% fewer IOPS on a virtio disk at QD32. I/O that
 * completes inside the enter (page-cache hits) is submitted a ring at a time, where the
 * syscall itself is the cost. */
static int run_batch(struct fc_ring *r, struct batch *b, unsigned n, int *res, unsigned long long *dw0)
{
    const unsigned base = (unsigned)FC_BATCH_BASE;
    unsigned i = 0, inflight = 0, done = 0;
    unsigned chunk = 1;    /* SQEs per enter: 1 while I/O completes asynchronously, else the ring */
    while (done < n) {
        int ret;
        while (i < n && inflight < r->sq_entries) {
            ret = prep_one(r, b, i);
            if (ret == -EBUSY)
                break;
            if (ret < 0)
                return ret;
            i++;
            inflight++;
            if (fc_sq_pending(r) >= chunk) {
                ret = submit_some(r, 0);
                if (ret < 0)
                    return ret;
                chunk = ret ? r->sq_entries : 1;
            }
        }
        if (b->nready) {                     /* the ring is full again: copy while it works */
            if (fc_sq_pending(r)) {
                ret = submit_some(r, 0);
                if (ret < 0)
                    return ret;
            }
            copy_ready(b, res);
        }
        unsigned got = reap_into(r, base, n, res, dw0, b);
        if (!got) {
            if (fc_sq_pending(r)) {          /* hand over the rest and wait in the same enter */
                ret = submit_some(r, 1);
                if (ret < 0)
                    return ret;
            } else {
                ret = fc_wait(r, 1);
                if (ret < 0)
                    return ret;
            }
            got = reap_into(r, base, n, res, dw0, b);
        } else if (fc_sq_pending(r)) {
            ret = submit_some(r, 0);
            if (ret < 0)
                return ret;
        }
        inflight -= got;
        done += got;
    }
    if (b->nready)
        copy_ready(b, res);
    return 0;
}

int fc_rw_batch(struct fc_ring *r, int opcode, int fd, unsigned n, void **addrs,
                const unsigned *lens, const unsigned long long *offs, const int *buf_index,
                int *res_out)
{
    struct batch b = {.opcode = opcode, .fd = fd, .buf_index = -1, .addrs = addrs, .lens = lens,
                      .offs = offs, .buf_indexes = buf_index};
    return run_batch(r, &b, n, res_out, NULL);
}

int fc_rw_batch_strided(struct fc_ring *r, int opcode, int fd, unsigned n, char *base,
                        unsigned stride, const unsigned *lens, const unsigned long long *offs,
                        int buf_index, int *res_out)
{
    struct batch b = {.opcode = opcode, .fd = fd, .buf_index = buf_index, .base = base, .stride = stride,
                      .lens = lens, .offs = offs};
    return run_batch(r, &b, n, res_out, NULL);
}

int fc_rw_batch_packed(struct fc_ring *r, int opcode, int fd, unsigned n, char *base,
                       const unsigned *lens, const unsigned long long *offs, int buf_index, int *res_out)
{
    struct batch b = {.opcode = opcode, .fd = fd, .buf_index = buf_index, .packed = base,
                      .lens = lens, .offs = offs};
    return run_batch(r, &b, n, res_out, NULL);
}

int fc_rw_batch_packed_into(struct fc_ring *r, int opcode, int fd, unsigned n, char *base,
                            const unsigned *lens, const unsigned long long *offs, int buf_index,
                            int *res_out, char **dst, char **src_scratch, unsigned *ready_scratch)
{
    struct batch b = {.opcode = opcode, .fd = fd, .buf_index = buf_index, .packed = base,
                      .lens = lens, .offs = offs, .dst = dst, .src = src_scratch,
                      .ready = ready_scratch};
    return run_batch(r, &b, n, res_out, NULL);
}

int fc_rw_batch_packed_from(struct fc_ring *r, int opcode, int fd, unsigned n, char *base,
                            const unsigned *lens, const unsigned long long *offs, int buf_index,
                            int *res_out, char *const *from)
{
    struct batch b = {.opcode = opcode, .fd = fd, .buf_index = buf_index, .packed = base,
                      .lens = lens, .offs = offs, .from = from};
    return run_batch(r, &b, n, res_out, NULL);
}

/* Staged batches: any number of requests of any total size, each at most the staging
 * buffer's size, with the buffer reused as a ring of bytes. Request i is given the next
 * lens[i] bytes of it (from the start again when the end is too near) once the requests
 * before it that held those bytes are finished, so the queue stays full however much the
 * batch moves; space is given back in request order (completions out of order wait for
 * the oldest). A write's bytes are copied in from user[i] just before its SQE; a read's
 * are copied out to user[i] when it is finished, after the ring is refilled. A request
 * the kernel completes short is resubmitted for the rest at once (it keeps its bytes of
 * the buffer until done), so every result is final: lens[i], -errno, or the bytes done
 * before a completion that made no progress (end of file, no space). */
struct staged {
    char *stage;
    size_t size, head, tail;     /* next allocation; start of the oldest live request */
    int wrapped;                 /* live requests run from tail to the end, then from 0 */
    unsigned wrap_at;            /* first request allocated at 0 after the wrap */
    unsigned oldest, next;       /* requests [oldest, next) hold staging */
    size_t *pos;                 /* request i's place in the stage */
    unsigned *done;              /* bytes done so far */
    unsigned char *state;        /* 0 waiting, 1 in flight, 2 finished (result final), 3 released */
};

static int staged_alloc(struct staged *s, unsigned i, unsigned len)
{
    if (s->oldest == s->next) {                      /* nothing live: start from 0 */
        s->head = s->tail = 0;
        s->wrapped = 0;
    }
    if (!s->wrapped) {
        if (s->head + len <= s->size) {
            s->pos[i] = s->head;
        } else if (len <= s->tail) {
            s->pos[i] = 0;
            s->wrapped = 1;
            s->wrap_at = i;
        } else {
            return 0;
        }
    } else if (s->head + len <= s->tail) {
        s->pos[i] = s->head;
    } else {
        return 0;
    }
    s->head = s->pos[i] + len;
    return 1;
}

static void staged_release(struct staged *s)
{
    while (s->oldest < s->next && s->state[s->oldest] == 2)
        s->state[s->oldest++] = 3;
    if (s->oldest < s->next) {
        s->tail = s->pos[s->oldest];
        if (s->wrapped && s->oldest >= s->wrap_at)
            s->wrapped = 0;
    }
}

int fc_rw_batch_staged(struct fc_ring *r, int opcode, int fd, unsigned n, char *stage, size_t stage_bytes,
                       const unsigned *lens, const unsigned long long *offs, int buf_index, int *res,
                       char *const *user, size_t *pos_scratch, unsigned *done_scratch,
                       unsigned char *state_scratch, unsigned *ready_scratch)
{
    const unsigned long long base = FC_BATCH_BASE;
    const int writing = opcode == IORING_OP_WRITE || opcode == IORING_OP_WRITE_FIXED;
    struct staged s = {.stage = stage, .size = stage_bytes, .pos = pos_scratch, .done = done_scratch,
                       .state = state_scratch};
    unsigned inflight = 0, finished = 0, nready = 0, chunk = 1;
    int ret;
    for (unsigned i = 0; i < n; i++) {
        if (lens[i] == 0 || lens[i] > stage_bytes)
            return -EINVAL;
        done_scratch[i] = 0;
        state_scratch[i] = 0;
    }
    while (finished < n || nready) {
        /* refill: as many as the ring and the stage allow */
        while (s.next < n && inflight < r->sq_entries && fc_sq_space(r) && staged_alloc(&s, s.next, lens[s.next])) {
            unsigned i = s.next++;
            char *addr = stage + s.pos[i];
            if (writing)
                memcpy(addr, user[i], lens[i]);
            if ((ret = fc_prep_rw(r, opcode, fd, addr, lens[i], offs[i], base + i, buf_index)) < 0)
                return ret;
            state_scratch[i] = 1;
            inflight++;
            if (fc_sq_pending(r) >= chunk) {
                if ((ret = submit_some(r, 0)) < 0)
                    return ret;
                chunk = ret ? r->sq_entries : 1;
            }
        }
        if (fc_sq_pending(r) && (ret = submit_some(r, 0)) < 0)
            return ret;
        /* the finished reads' bytes out, while the ring works; then their space back */
        for (unsigned k = 0; k < nready; k++) {
            unsigned i = ready_scratch[k];
            if (res[i] > 0)
                memcpy(user[i], stage + s.pos[i], (unsigned)res[i]);
            state_scratch[i] = 2;
        }
        if (nready) {
            nready = 0;
            staged_release(&s);
            continue;                                /* space freed: refill before waiting */
        }
        struct fc_cqe cqes[64];
        int k = fc_reap(r, cqes, 64);
        if (k == 0) {
            if ((ret = fc_wait(r, 1)) < 0)
                return ret;
            continue;
        }
        for (int c = 0; c < k; c++) {
            unsigned long long ud = cqes[c].user_data - base;
            if (ud >= n || state_scratch[ud] != 1)
                continue;                            /* not this batch's */
            unsigned i = (unsigned)ud;
            int got = cqes[c].res;
            if (got > 0 && done_scratch[i] + (unsigned)got < lens[i]) {
                /* short: the rest at once, from where it stopped (the SQ has room: each
                 * SQE in flight was submitted, and this one's slot is free again) */
                done_scratch[i] += (unsigned)got;
                unsigned d = done_scratch[i];
                if ((ret = fc_prep_rw(r, opcode, fd, stage + s.pos[i] + d, lens[i] - d, offs[i] + d,
                                      base + i, buf_index)) < 0)
                    return ret;
                continue;
            }
            res[i] = got < 0 ? got : (int)(done_scratch[i] + (unsigned)got);
            inflight--;
            finished++;
            if (writing)
                state_scratch[i] = 2;
            else
                ready_scratch[nready++] = i;
        }
        if (writing)
            staged_release(&s);
    }
    return 0;
}

int fc_uring_cmd_batch(struct fc_ring *r, int fd, unsigned cmd_op, unsigned n, const void *cmds,
                       int buf_index, int *res_out, unsigned long long *dw0_out)
{
    struct batch b = {.fd = fd, .cmd_op = cmd_op, .buf_index = buf_index, .cmds = cmds};
    return run_batch(r, &b, n, res_out, dw0_out);
}

int fc_rw_one(struct fc_ring *r, int opcode, int fd, void *addr, unsigned len,
              unsigned long long off, int buf_index)
{
    /* Submit, then wait only if the I/O did not complete inline: an I/O the kernel hands to
     * an io-wq worker (a buffered write on most filesystems) is often done by the time the
     * second enter runs, and the waiter then never sleeps; one enter that submits and waits
     * sleeps at once and is woken across CPUs. As fio does; measured in the note of
     * issue 2 (a 2-vCPU guest: 11-13k -> 15-17k punted writes/s at QD1). */
    int ret = fc_prep_rw(r, opcode, fd, addr, len, off, FC_BATCH_BASE, buf_index);
    if (ret < 0)
        return ret;
    struct fc_cqe cqe;
    ret = fc_submit(r, 0);
    if (ret <= 0) {
        int res = 0;
        if (ret < 0 && ret != -EAGAIN && ret != -EBUSY)
            return ret;
        /* not taken yet (a full CQ, no memory): the batch loop retries as it reaps */
        ret = drain(r, 1, (unsigned)FC_BATCH_BASE, 1, &res, NULL);
        return ret < 0 ? ret : res;
    }
    for (;;) {
        if (fc_cq_ready(r) == 0 && (ret = fc_wait(r, 1)) < 0)
            return ret;
        if (fc_reap(r, &cqe, 1) == 1 && cqe.user_data == FC_BATCH_BASE)
            return cqe.res;
    }
}


int fc_nvme_rw_batch(struct fc_ring *r, int fd, unsigned nsid, int write, unsigned n, char *base,
                     unsigned stride, const unsigned long long *slbas, const unsigned *nbytes,
                     const int *pids, unsigned lba_shift, int buf_index, void *cmds, int *res_out)
{
    unsigned char *c = cmds;
    for (unsigned i = 0; i < n; i++, c += 72) {
        unsigned cdw12 = (nbytes[i] >> lba_shift) - 1, cdw13 = 0;
        unsigned long long addr = (unsigned long long)(uintptr_t)(base + (size_t)i * stride);
        unsigned lo = (unsigned)slbas[i], hi = (unsigned)(slbas[i] >> 32);
        memset(c, 0, 72);
        c[0] = write ? 0x01 : 0x02;                 /* opcode */
        memcpy(c + 4, &nsid, 4);
        memcpy(c + 24, &addr, 8);                   /* addr */
        memcpy(c + 36, &nbytes[i], 4);              /* data_len */
        memcpy(c + 40, &lo, 4);                     /* cdw10: SLBA low */
        memcpy(c + 44, &hi, 4);                     /* cdw11: SLBA high */
        if (write && pids[i] >= 0) {
            cdw12 |= 2u << 20;                      /* DTYPE 2: data placement */
            cdw13 = (unsigned)pids[i] << 16;        /* DSPEC: placement identifier */
        }
        memcpy(c + 48, &cdw12, 4);
        memcpy(c + 52, &cdw13, 4);
    }
    return fc_uring_cmd_batch(r, fd, 0xC0484E80u /* NVME_URING_CMD_IO */, n, cmds, buf_index, res_out, NULL);
}
