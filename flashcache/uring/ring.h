/* flashcache's io_uring ring: small primitives in the style of liburing, no liburing needed.
 * Every function returns >= 0 on success or a negative errno; none allocates on the I/O path.
 * Also the declarations cffi reads (keep this file plain C that cffi's parser accepts). */

struct fc_ring {
    int fd;
    unsigned setup_flags;
    unsigned features;
    unsigned sq_entries;
    unsigned cq_entries;
    unsigned sqe_size;
    unsigned cqe_size;
    void *sq_ptr;
    size_t sq_len;
    void *cq_ptr;
    size_t cq_len;
    void *sqes;
    size_t sqes_len;
    unsigned *sq_head;
    unsigned *sq_tail;
    unsigned *sq_mask;
    unsigned *sq_array;
    unsigned *sq_flags;
    unsigned *cq_head;
    unsigned *cq_tail;
    unsigned *cq_mask;
    unsigned char *cqes;
    unsigned sqe_tail;   /* SQEs prepared locally, published on submit */
    unsigned sqe_head;   /* SQEs already handed to the kernel */
};

struct fc_cqe {
    unsigned long long user_data;
    int res;
    unsigned flags;
    unsigned long long big0;   /* big_cqe[0] with CQE32 (NVMe completion DW0/DW1), else 0 */
};

int fc_ring_init(struct fc_ring *r, unsigned entries, unsigned flags);
void fc_ring_exit(struct fc_ring *r);
unsigned fc_sq_space(struct fc_ring *r);
unsigned fc_sq_pending(struct fc_ring *r);
unsigned fc_cq_ready(struct fc_ring *r);

int fc_prep_rw(struct fc_ring *r, int opcode, int fd, void *addr, unsigned len,
               unsigned long long off, unsigned long long user_data, int buf_index);
int fc_prep_nop(struct fc_ring *r, unsigned long long user_data);
int fc_prep_uring_cmd(struct fc_ring *r, int fd, unsigned cmd_op, const void *cmd, unsigned cmd_len,
                      unsigned long long user_data, int buf_index);
/* A copy of the raw SQE most recently prepared (for tests of the byte layout). */
int fc_last_sqe(struct fc_ring *r, void *out, unsigned out_len);

int fc_submit(struct fc_ring *r, unsigned wait_nr);
int fc_wait(struct fc_ring *r, unsigned min_complete);
int fc_reap(struct fc_ring *r, struct fc_cqe *out, unsigned max);

int fc_register_buffers(struct fc_ring *r, void **addrs, size_t *lens, unsigned n);
int fc_unregister_buffers(struct fc_ring *r);
int fc_register_eventfd(struct fc_ring *r, int efd);
int fc_unregister_eventfd(struct fc_ring *r);

/* Prepare n reads or writes from arrays, submit, and wait for all n: res_out[i] gets the
 * result of request i (bytes or -errno), matched by user_data whatever the completion
 * order. buf_index may be NULL (no fixed buffers) or hold -1 for non-fixed entries.
 * Returns 0, or -errno if submission itself failed (then res_out is not meaningful). */
int fc_rw_batch(struct fc_ring *r, int opcode, int fd, unsigned n, void **addrs,
                const unsigned *lens, const unsigned long long *offs, const int *buf_index,
                int *res_out);

/* fc_rw_batch where request i uses the buffer at base + i*stride (all in registered
 * buffer buf_index, or none if -1): the staging-slot layout of the uring device. */
int fc_rw_batch_strided(struct fc_ring *r, int opcode, int fd, unsigned n, char *base,
                        unsigned stride, const unsigned *lens, const unsigned long long *offs,
                        int buf_index, int *res_out);

/* fc_rw_batch where the n buffers lie back to back from base (request i at base plus
 * the lengths of requests 0..i-1), all in registered buffer buf_index or none if -1: the
 * uring device's packed small requests. n is not bounded by the ring's size. */
int fc_rw_batch_packed(struct fc_ring *r, int opcode, int fd, unsigned n, char *base,
                       const unsigned *lens, const unsigned long long *offs, int buf_index,
                       int *res_out);

/* fc_rw_batch_packed for reads whose bytes go on to dst[i] (len lens[i]; fewer if the
 * request completed short, res_out says): each request is copied as it completes, with
 * the ring refilled first, so the copying overlaps the I/O still in flight. src_scratch
 * and ready_scratch hold n entries each (the function's working space). */
int fc_rw_batch_packed_into(struct fc_ring *r, int opcode, int fd, unsigned n, char *base,
                            const unsigned *lens, const unsigned long long *offs, int buf_index,
                            int *res_out, char **dst, char **src_scratch, unsigned *ready_scratch);

/* fc_rw_batch_packed for writes whose bytes come from from[i] (lens[i] each): each is
 * copied into its place in the packed buffer just before its SQE is prepared, so after the
 * first ring-full the copying overlaps the I/O in flight. The sources must stay put and
 * unresized until the call returns. */
int fc_rw_batch_packed_from(struct fc_ring *r, int opcode, int fd, unsigned n, char *base,
                            const unsigned *lens, const unsigned long long *offs, int buf_index,
                            int *res_out, char *const *from);

/* Any number of reads or writes, each at most stage_bytes, staged through the buffer at
 * stage (registered buffer buf_index, or -1) reused as a ring of bytes, so the ring stays
 * full however large the batch: a write's bytes come from user[i] (copied just before its
 * SQE), a read's go to user[i] (copied once it is done). A short completion is resubmitted
 * for the rest, so res_out[i] is final: lens[i], -errno, or the bytes done before a
 * completion that made no progress. The scratch arrays hold n entries each. Returns 0,
 * -EINVAL for a request of 0 bytes or larger than the stage, or -errno from the ring. */
int fc_rw_batch_staged(struct fc_ring *r, int opcode, int fd, unsigned n, char *stage, size_t stage_bytes,
                       const unsigned *lens, const unsigned long long *offs, int buf_index, int *res_out,
                       char *const *user, size_t *pos_scratch, unsigned *done_scratch,
                       unsigned char *state_scratch, unsigned *ready_scratch);

/* One read or write, submitted and waited for: returns bytes done or -errno (the result
 * of the I/O; a failure to submit is also a -errno). */
int fc_rw_one(struct fc_ring *r, int opcode, int fd, void *addr, unsigned len,
              unsigned long long off, int buf_index);

/* Same for NVMe passthrough: n 72-byte struct nvme_uring_cmd in cmds (already holding
 * their data addresses, inside registered buffer buf_index unless it is -1);
 * res_out[i] = cqe.res, dw0_out[i] = big_cqe[0]. */
int fc_uring_cmd_batch(struct fc_ring *r, int fd, unsigned cmd_op, unsigned n, const void *cmds,
                       int buf_index, int *res_out, unsigned long long *dw0_out);

/* n NVMe Reads or Writes (NVME_URING_CMD_IO) of nbytes[i] at slbas[i], data at
 * base + i*stride (in registered buffer buf_index, or -1); a write with pids[i] >= 0 is
 * tagged DTYPE 2 / DSPEC pids[i]. The 72-byte commands are built in cmds (n*72 bytes). */
int fc_nvme_rw_batch(struct fc_ring *r, int fd, unsigned nsid, int write, unsigned n, char *base,
                     unsigned stride, const unsigned long long *slbas, const unsigned *nbytes,
                     const int *pids, unsigned lba_shift, int buf_index, void *cmds, int *res_out);
