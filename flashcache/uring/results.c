/* flashcache.uring._results_c: the Python objects reads return and writes take, handled in
 * C where that saves a copy, a wait or the interpreter (plain CPython API; the ring itself
 * is ring.c, compiled in here too and driven through the same struct fc_ring the cffi
 * module set up). Four things:
 *
 *   new_bytes(lens)  the bytes objects a batched read returns, made before the I/O so the
 *                    ring loop fills each as its request completes (fc_rw_batch_packed_into)
 *                    while the rest are in flight;
 *   pin(datas)       a batched write's sources, held still, so the ring loop copies each into
 *                    the staging buffer just before its SQE (fc_rw_batch_packed_from);
 *   read_one(...)    one read on a thread's own ring, returned as bytes (Ring.reader);
 *   Reader           a device's whole single-read hot path: checks, the I/O (pread, a copy
 *                    from a read-only mapping of the file, or the calling thread's ring),
 *                    bytes and counters, with a Python fallback; also into a C caller's
 *                    buffer (read_into_hook: the engines' hook).
 *
 * new_bytes(lens) -> (list of bytes, bytes of pointers): for each length a new bytes
 * object whose contents are NOT yet written, and, packed as native pointers, where each
 * one's data lies. The caller must fill every object (or drop the list) before any other
 * code sees it: the usual CPython idiom PyBytes_FromStringAndSize(NULL, n), split across
 * two calls. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <unistd.h>
#include <linux/io_uring.h>
#include "ring.h"
#include "_hooks.h"          /* engines/_hooks.h: struct fc_read_into */
#include <stdlib.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <pthread.h>

/* Reader modes (see direct_stage) */
enum { MODE_PSYNC = 0, MODE_RING = 1, MODE_DIRECT = 2 };
#define DIRECT_STAGE (64u << 10)

/* What new_bytes and pin start with: the argument as a sequence, a list of as many items
 * and a bytes object with room for as many pointers. 0, or -1 with an exception set and
 * nothing left to release. */
static int start_lists(PyObject *arg, const char *what, PyObject **seq, PyObject **list, PyObject **addrs)
{
    *seq = PySequence_Fast(arg, what);
    if (!*seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(*seq);
    *list = PyList_New(n);
    *addrs = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(char *));
    if (*list && *addrs)
        return 0;
    Py_CLEAR(*seq);
    Py_CLEAR(*list);
    Py_CLEAR(*addrs);
    return -1;
}

static PyObject *new_bytes(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *seq, *list, *addrs;
    if (start_lists(arg, "new_bytes() wants a sequence of lengths", &seq, &list, &addrs) < 0)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    char **a = (char **)PyBytes_AS_STRING(addrs);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len = PyLong_AsSsize_t(items[i]);
        if (len < 0) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "new_bytes(): length %zd at index %zd is negative", len, i);
            goto fail;
        }
        /* NULL contents: a fresh object (0 bytes gives the shared empty one: nothing to fill) */
        PyObject *b = PyBytes_FromStringAndSize(NULL, len);
        if (!b)
            goto fail;
        a[i] = PyBytes_AS_STRING(b);
        PyList_SET_ITEM(list, i, b);
    }
    Py_DECREF(seq);
    return Py_BuildValue("(NN)", list, addrs);
fail:
    Py_DECREF(seq);
    Py_XDECREF(list);
    Py_XDECREF(addrs);
    return NULL;
}

/* read_one(ring, fd, stage, length, offset) -> bytes, or the int result if the read did
 * not complete whole (-errno or a short count: the caller takes its careful path).
 * ring: the address of a struct fc_ring only this thread uses, with nothing in flight;
 * stage: the address of its registered buffer 0 (page aligned, so O_DIRECT works too).
 * The GIL is released in the kernel. Reading into the hot registered buffer and copying
 * beats reading straight into a fresh bytes object (cold memory, and an unregistered
 * buffer): ~1.6 vs ~2.0 us per page-cache hit here. */
static PyObject *read_one(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "read_one(ring, fd, stage, length, offset)");
        return NULL;
    }
    struct fc_ring *r = PyLong_AsVoidPtr(args[0]);
    int fd = (int)PyLong_AsLong(args[1]);
    char *stage = PyLong_AsVoidPtr(args[2]);
    Py_ssize_t len = PyLong_AsSsize_t(args[3]);
    unsigned long long off = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    if (!r || !stage || len < 0 || len > 0x7fffffff) {
        PyErr_Format(PyExc_ValueError, "read_one(): no ring or staging buffer, or length %zd out of range", len);
        return NULL;
    }
    int res;
    Py_BEGIN_ALLOW_THREADS
    res = fc_rw_one(r, IORING_OP_READ_FIXED, fd, stage, (unsigned)len, off, 0);
    Py_END_ALLOW_THREADS
    if (res != len)
        return PyLong_FromLong(res);
    return PyBytes_FromStringAndSize(stage, len);
}

/* pin(datas) -> (lens, addrs, keep): for a batched write whose bytes the ring loop copies
 * itself (ring.h, fc_rw_batch_packed_from) with the GIL released: each item's length, where
 * its bytes lie (native pointers, packed), and what keeps them there: a memoryview of every
 * item that is not bytes (its buffer export stops a bytearray from being resized or freed
 * until `keep` is dropped; bytes are immutable and the caller's list keeps them alive).
 * TypeError for an item that is not a C-contiguous bytes-like object. */
static PyObject *pin(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *seq, *lens, *addrs;
    if (start_lists(arg, "pin(): datas must be a sequence", &seq, &lens, &addrs) < 0)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *keep = PyList_New(0);
    if (!keep)
        goto fail;
    char **a = (char **)PyBytes_AS_STRING(addrs);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = items[i];
        Py_ssize_t len;
        if (PyBytes_CheckExact(o)) {
            a[i] = PyBytes_AS_STRING(o);
            len = PyBytes_GET_SIZE(o);
        } else {
            PyObject *mv = PyMemoryView_FromObject(o);
            if (!mv)
                goto fail;
            Py_buffer *v = PyMemoryView_GET_BUFFER(mv);
            if (!PyBuffer_IsContiguous(v, 'C')) {
                Py_DECREF(mv);
                PyErr_Format(PyExc_TypeError, "pin(): item %zd is not C-contiguous", i);
                goto fail;
            }
            int r = PyList_Append(keep, mv);
            Py_DECREF(mv);
            if (r < 0)
                goto fail;
            a[i] = v->buf;
            len = v->len;
        }
        PyObject *l = PyLong_FromSsize_t(len);
        if (!l)
            goto fail;
        PyList_SET_ITEM(lens, i, l);
    }
    Py_DECREF(seq);
    return Py_BuildValue("(NNN)", lens, addrs, keep);
fail:
    Py_DECREF(seq);
    Py_XDECREF(lens);
    Py_XDECREF(addrs);
    Py_XDECREF(keep);
    return NULL;
}

/* Reader: a device's single reads in one C call, the hot path under FileDevice.read
 * (psync: one pread into a new bytes object) and UringDevice.read (ring: a fixed-buffer
 * read on the calling thread's own small ring, which that thread hands over with adopt();
 * thread-specific storage holds it). Either way: the bounds and alignment checks, the I/O
 * with the GIL released, the bytes object and the read counters. Anything unusual
 * (closed, out of range, misaligned, too long, not an int, short or failed, or a thread
 * with no ring yet) goes to the Python `fallback(offset, length)`, which does it the
 * careful way, makes the thread's ring, and raises the error the device names. `busy`
 * counts reads inside the kernel so close() can wait for them before the rings go;
 * `close()` sends every later read to the fallback. Needs the GIL (the devices install
 * it only where the GIL guards these counters). */
struct thread_ring {
    struct fc_ring *ring;
    char *stage;
};

typedef struct {
    PyObject_HEAD
    struct fc_read_into hook;
    int fd;
    int ring_mode;
    int closed;
    int tss_ok;
    Py_tss_t tss;
    unsigned long long size, mask, max_len;
    char *map;                  /* map_reads(): the file's first size bytes, read-only; or NULL */
    unsigned long map_forks;    /* forks_seen when it was mapped: a forked child has no mapping */
    unsigned long long reads, bytes_read, busy;
    unsigned long long writes, bytes_written;
    PyObject *fallback;
    PyObject *write_fallback;   /* set_write(): the device's Python write; NULL: write() unused */
    PyObject *stream_bytes;     /* bytes written here per stream name (a dict) */
    PyObject *streams;          /* set_write(): the device's streams by name; a write's stream
                                   must be one of them (or None), else the fallback says why */
    PyObject *owned;   /* ring mode: bytes objects holding the adopted thread_ring structs */
    /* set_program(): a device whose writes are accounted in an FTL first (the emulated
     * SSD): its C function, its state, what keeps that alive, the placement table and the
     * lock the device's own write path holds over the accounting and the write */
    int (*program)(void *ftl, uint64_t lpn, uint64_t npages, uint32_t rg, uint32_t ruh);
    void *ftl;
    PyObject *ftl_owner;
    PyObject *pids;             /* dict: placement identifier -> (reclaim group, handle); or None */
    PyObject *lock_acquire, *lock_release;
    unsigned lba_shift;
    unsigned long long lbas_per_page;
} Reader;

static int Reader_init(Reader *self, PyObject *args, PyObject *kw)
{
    PyObject *fallback;
    (void)kw;
    if (!PyArg_ParseTuple(args, "iKKKOi:Reader", &self->fd, &self->size, &self->mask, &self->max_len, &fallback,
                          &self->ring_mode))
        return -1;
    if (self->ring_mode < MODE_PSYNC || self->ring_mode > MODE_DIRECT) {
        PyErr_SetString(PyExc_ValueError, "Reader: mode must be 0 (psync), 1 (ring) or 2 (psync, O_DIRECT)");
        return -1;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "Reader: fallback must be callable");
        return -1;
    }
    if (!self->tss_ok) {
        if (PyThread_tss_create(&self->tss) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "Reader: no thread-specific storage");
            return -1;
        }
        self->tss_ok = 1;
    }
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    Py_XSETREF(self->owned, PyList_New(0));
    self->closed = 0;
    return self->owned ? 0 : -1;
}

static int Reader_traverse(Reader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);   /* the fallback is the device's method: a cycle the GC breaks */
    Py_VISIT(self->owned);
    Py_VISIT(self->write_fallback);
    Py_VISIT(self->stream_bytes);
    Py_VISIT(self->streams);
    Py_VISIT(self->ftl_owner);
    Py_VISIT(self->pids);
    Py_VISIT(self->lock_acquire);
    Py_VISIT(self->lock_release);
    return 0;
}

static int Reader_clear(Reader *self)
{
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->owned);
    Py_CLEAR(self->write_fallback);
    Py_CLEAR(self->stream_bytes);
    Py_CLEAR(self->streams);
    self->program = NULL;               /* the FTL's state is gone with its owner */
    self->ftl = NULL;
    Py_CLEAR(self->ftl_owner);
    Py_CLEAR(self->pids);
    Py_CLEAR(self->lock_acquire);
    Py_CLEAR(self->lock_release);
    return 0;
}

static void unmap(Reader *self);

static void Reader_dealloc(Reader *self)
{
    PyObject_GC_UnTrack(self);
    unmap(self);
    Reader_clear(self);
    if (self->tss_ok)
        PyThread_tss_delete(&self->tss);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Modes: psync (pread/pwrite into and from the caller's memory), ring (the calling
 * thread's own io_uring, adopted), psync with O_DIRECT (pread/pwrite through the calling
 * thread's page-aligned staging buffer of DIRECT_STAGE bytes, one copy each way; larger
 * I/O goes to the fallback). */

static void stage_free(PyObject *cap)
{
    free(PyCapsule_GetPointer(cap, "flashcache.stage"));
}

/* The calling thread's aligned staging buffer (direct mode), made on first use and freed
 * with the Reader; NULL with no exception when it cannot be made (the caller falls back),
 * or when ``make`` is 0 and there is none yet. The GIL must be held. */
static struct thread_ring *direct_stage(Reader *self, int make)
{
    struct thread_ring *t = PyThread_tss_get(&self->tss);
    if (t || !make || !self->owned)
        return t;
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, DIRECT_STAGE) != 0)
        return NULL;
    PyObject *cap = PyCapsule_New(buf, "flashcache.stage", stage_free);
    if (!cap) {
        free(buf);
        PyErr_Clear();
        return NULL;
    }
    PyObject *holder = PyBytes_FromStringAndSize(NULL, sizeof(struct thread_ring));
    if (!holder || PyList_Append(self->owned, cap) < 0 || PyList_Append(self->owned, holder) < 0) {
        Py_XDECREF(holder);
        Py_DECREF(cap);
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(cap);                         /* the list keeps both */
    Py_DECREF(holder);
    t = (struct thread_ring *)PyBytes_AS_STRING(holder);
    t->ring = NULL;
    t->stage = buf;
    if (PyThread_tss_set(&self->tss, t) != 0)
        return NULL;
    return t;
}

/* Mapped reads (map_reads()): a read of at most MAPPED_MAX bytes on a psync Reader copies
 * from a read-only shared mapping of the file instead of calling pread: the same page
 * cache, so the same bytes (pwrite, hole punching and other processes' writes show at
 * once), without a system call per read, which on a virtual machine costs more than the
 * copy. Bounded to a page because a page not in memory is read on its own at the fault
 * (MADV_RANDOM: no readahead, as pread of one page reads one), so a longer read of pages
 * not in memory would be several reads where pread makes one. The copy runs with the GIL
 * released (a fault may wait for the disk) and counted in busy, as pread does.
 *
 * The surprise: where pread fails with EIO, a copy from a mapping raises SIGBUS (a page
 * the disk cannot read, or a file cut short under the mapping). A SIGBUS handler, put in
 * once per process in front of whatever handler was there, jumps out of a mapped copy of
 * the thread that faulted (the read then goes to pread, whose error the device reports);
 * any other SIGBUS goes back to the handler before it (a fault repeats into it, a sent
 * signal is raised again). The mapping is MADV_DONTFORK: a forked child has none, so it
 * neither reads through it (its reads go to pread, which its devices refuse) nor unmaps
 * what is not its own (forks_seen tells). */
#define MAPPED_MAX 4096u

static struct sigaction bus_prev;
static int bus_installed;
static volatile unsigned long forks_seen;    /* bumped in each forked child (pthread_atfork) */

static void forked_child(void)
{
    forks_seen++;
}
/* the calling thread's mapped copy in progress: volatile, and fenced around the copy, so
 * the compiler neither drops the store (the copy reads no global) nor moves the copy past it */
static __thread sigjmp_buf *volatile bus_jump __attribute__((tls_model("initial-exec")));

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    sigjmp_buf *j = bus_jump;
    if (j) {
        bus_jump = NULL;
        siglongjmp(*j, 1);
    }
    sigaction(SIGBUS, &bus_prev, NULL);
    if (si->si_code <= 0)       /* sent (kill, tgkill), not a fault: it would not repeat */
        raise(sig);
}

/* 0, or -1 with errno. Only with the GIL held (once per process). */
static int install_sigbus(void)
{
    if (bus_installed)
        return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;   /* NODEFER: the jump leaves SIGBUS unblocked */
    sigemptyset(&sa.sa_mask);
    if (pthread_atfork(NULL, NULL, forked_child) != 0 || sigaction(SIGBUS, &sa, &bus_prev) != 0)
        return -1;
    bus_installed = 1;
    return 0;
}

/* Copy len bytes at off from the mapping into buf, the GIL released, counted in busy: 1,
 * or 0 if a page could not be read (SIGBUS; nothing is counted as read) or the Reader was
 * closed since the caller's check (making the caller's bytes object may have run Python
 * code: from this check to busy++ none runs, and close() unmaps only once busy is 0). */
static int mapped_copy(Reader *self, char *buf, unsigned long long len, unsigned long long off)
{
    volatile int ok = 0;
    sigjmp_buf jb;
    if (self->closed || !self->map)
        return 0;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    if (!sigsetjmp(jb, 0)) {
        bus_jump = &jb;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        memcpy(buf, self->map + off, (size_t)len);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        ok = 1;
    }
    bus_jump = NULL;
    Py_END_ALLOW_THREADS
    self->busy--;
    return ok;
}

/* Whether a read of len bytes copies from the mapping: one of up to a page, in the process
 * that mapped it (in a forked child the read goes to pread, as an unmapped one does). */
static inline int mapped(Reader *self, unsigned long long len)
{
    return self->map && len <= MAPPED_MAX && self->map_forks == forks_seen;
}

static void unmap(Reader *self)
{
    if (self->map && self->map_forks == forks_seen)
        munmap(self->map, (size_t)self->size);
    self->map = NULL;
}

/* map_reads() -> whether reads of up to a page now copy from a mapping (psync mode only);
 * False, changing nothing, where the file cannot be mapped (the reads stay preads). */
static PyObject *Reader_map_reads(Reader *self, PyObject *unused)
{
    (void)unused;
    if (self->ring_mode != MODE_PSYNC) {
        PyErr_SetString(PyExc_ValueError, "Reader.map_reads: only a psync Reader (mode 0) maps its file");
        return NULL;
    }
    if (self->closed)
        Py_RETURN_FALSE;
    if (self->map)
        Py_RETURN_TRUE;
    if (!self->size || install_sigbus() < 0)
        Py_RETURN_FALSE;
    void *m = mmap(NULL, (size_t)self->size, PROT_READ, MAP_SHARED, self->fd, 0);
    if (m == MAP_FAILED)
        Py_RETURN_FALSE;
    if (madvise(m, (size_t)self->size, MADV_RANDOM) != 0 || madvise(m, (size_t)self->size, MADV_DONTFORK) != 0) {
        munmap(m, (size_t)self->size);
        Py_RETURN_FALSE;
    }
    self->map = m;
    self->map_forks = forks_seen;
    Py_RETURN_TRUE;
}

/* unmap(): drop the mapping (the device calls it once closed and busy is 0: the mapping
 * holds the file, and with it the device's lock, until then). */
static PyObject *Reader_unmap(Reader *self, PyObject *unused)
{
    (void)unused;
    if (self->busy && self->map) {
        PyErr_SetString(PyExc_RuntimeError, "Reader.unmap: reads are still copying from the mapping");
        return NULL;
    }
    unmap(self);
    Py_RETURN_NONE;
}

/* pread or pwrite of len bytes at off through buf, the GIL released, counted in busy. */
static ssize_t psync_rw(Reader *self, int write, char *buf, unsigned long long len, unsigned long long off)
{
    ssize_t got;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    got = write ? pwrite(self->fd, buf, (size_t)len, (off_t)off) : pread(self->fd, buf, (size_t)len, (off_t)off);
    Py_END_ALLOW_THREADS
    self->busy--;
    return got;
}

/* One read or write of len bytes at off on the calling thread's ring, from or into its
 * registered buffer 0, the GIL released; counted in ``busy`` while in the kernel (the
 * device's close() waits for it). The result: bytes done or -errno. */
static int thread_rw(Reader *self, struct thread_ring *t, int opcode, unsigned long long len,
                     unsigned long long off)
{
    int res;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    res = fc_rw_one(t->ring, opcode, self->fd, t->stage, (unsigned)len, off, 0);
    Py_END_ALLOW_THREADS
    self->busy--;
    return res;
}

static PyObject *Reader_read(Reader *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "read(offset, length)");
        return NULL;
    }
    long long off = PyLong_AsLongLong(args[0]);
    long long len = PyLong_AsLongLong(args[1]);
    if ((off == -1 || len == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        goto careful;                       /* not plain ints in range: let Python say why */
    }
    if (self->closed || off < 0 || len < 0 || ((unsigned long long)(off | len) & self->mask) ||
        (unsigned long long)len > self->max_len || (unsigned long long)off + (unsigned long long)len > self->size)
        goto careful;
    PyObject *b;
    if (self->ring_mode == MODE_RING) {
        struct thread_ring *t = PyThread_tss_get(&self->tss);
        if (!t)
            goto careful;                   /* this thread's ring is made by the fallback */
        int res = thread_rw(self, t, IORING_OP_READ_FIXED, (unsigned long long)len, (unsigned long long)off);
        if (res != len)
            goto careful;
        b = PyBytes_FromStringAndSize(t->stage, len);
        if (!b)
            return NULL;
    } else if (self->ring_mode == MODE_DIRECT) {
        struct thread_ring *t = len <= DIRECT_STAGE ? direct_stage(self, 1) : NULL;
        if (!t || psync_rw(self, 0, t->stage, (unsigned long long)len, (unsigned long long)off) != len)
            goto careful;
        b = PyBytes_FromStringAndSize(t->stage, len);
        if (!b)
            return NULL;
    } else {
        b = PyBytes_FromStringAndSize(NULL, len);
        if (!b)
            return NULL;
        if (mapped(self, (unsigned long long)len)
                ? !mapped_copy(self, PyBytes_AS_STRING(b), (unsigned long long)len, (unsigned long long)off)
                : psync_rw(self, 0, PyBytes_AS_STRING(b), (unsigned long long)len, (unsigned long long)off) != len) {
            Py_DECREF(b);
            goto careful;
        }
    }
    self->reads++;
    self->bytes_read += (unsigned long long)len;
    return b;
careful:
    if (!self->fallback) {
        PyErr_SetString(PyExc_ValueError, "Reader: read after the object was cleared");
        return NULL;
    }
    return PyObject_Vectorcall(self->fallback, args, nargs, NULL);
}

/* Reader_read's fast path into the caller's buffer: the read-into hook's fn. */
static int Reader_read_into(void *ctx, char *buf, unsigned long long len, unsigned long long off)
{
    Reader *self = ctx;
    if (self->closed || !len || ((off | len) & self->mask) || len > self->max_len || off + len > self->size)
        return 0;
    if (self->ring_mode == MODE_RING) {
        struct thread_ring *t = PyThread_tss_get(&self->tss);
        if (!t)
            return 0;
        int res = thread_rw(self, t, IORING_OP_READ_FIXED, len, off);
        if (res < 0 || (unsigned long long)res != len)
            return 0;
        memcpy(buf, t->stage, len);
    } else if (self->ring_mode == MODE_DIRECT) {
        struct thread_ring *t = len <= DIRECT_STAGE ? direct_stage(self, 1) : NULL;
        ssize_t got = t ? psync_rw(self, 0, t->stage, len, off) : -1;
        if (got < 0 || (unsigned long long)got != len)
            return 0;
        memcpy(buf, t->stage, len);
    } else if (mapped(self, len)) {
        if (!mapped_copy(self, buf, len, off))
            return 0;
    } else {
        ssize_t got = psync_rw(self, 0, buf, len, off);
        if (got < 0 || (unsigned long long)got != len)
            return 0;
    }
    self->reads++;
    self->bytes_read += len;
    return 1;
}

static void hook_capsule_free(PyObject *cap)
{
    Py_XDECREF((PyObject *)PyCapsule_GetContext(cap));
}

/* read_into_hook() -> the capsule "engines.device.read_into" (see struct fc_read_into); it
 * keeps this Reader alive. */
static PyObject *Reader_read_into_hook(Reader *self, PyObject *unused)
{
    (void)unused;
    self->hook.fn = Reader_read_into;
    self->hook.ctx = self;
    PyObject *cap = PyCapsule_New(&self->hook, "engines.device.read_into", hook_capsule_free);
    if (!cap)
        return NULL;
    if (PyCapsule_SetContext(cap, Py_NewRef(self)) < 0) {
        Py_DECREF(self);
        Py_DECREF(cap);
        return NULL;
    }
    return cap;
}

/* adopt(ring, stage): the calling thread's ring (the address of its struct fc_ring, used by
 * no other thread) and its registered buffer 0 (at least max_len bytes). */
static PyObject *Reader_adopt(Reader *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "adopt(ring, stage)");
        return NULL;
    }
    void *ring = PyLong_AsVoidPtr(args[0]);
    void *stage = PyLong_AsVoidPtr(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (self->ring_mode != MODE_RING || !ring || !stage || !self->owned) {
        PyErr_SetString(PyExc_ValueError, "adopt(): not a ring reader, or no ring or staging buffer");
        return NULL;
    }
    PyObject *holder = PyBytes_FromStringAndSize(NULL, sizeof(struct thread_ring));
    if (!holder)
        return NULL;
    struct thread_ring *t = (struct thread_ring *)PyBytes_AS_STRING(holder);
    t->ring = ring;
    t->stage = stage;
    if (PyList_Append(self->owned, holder) < 0 || PyThread_tss_set(&self->tss, t) != 0) {
        Py_DECREF(holder);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "adopt(): thread-specific storage refused");
        return NULL;
    }
    Py_DECREF(holder);                      /* the list keeps it */
    Py_RETURN_NONE;
}

/* set_write(fallback, streams): turn on write(), ``fallback`` being the device's Python
 * write, which does the same and says what went wrong, ``streams`` the device's dict of
 * its open streams by name (the same dict as it grows). */
static PyObject *Reader_set_write(Reader *self, PyObject *args)
{
    PyObject *fallback, *streams;
    if (!PyArg_ParseTuple(args, "OO!:set_write", &fallback, &PyDict_Type, &streams))
        return NULL;
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_ValueError, "set_write(fallback, streams): fallback must be callable");
        return NULL;
    }
    if (!self->stream_bytes && !(self->stream_bytes = PyDict_New()))
        return NULL;
    Py_XSETREF(self->write_fallback, Py_NewRef(fallback));
    Py_XSETREF(self->streams, Py_NewRef(streams));
    Py_RETURN_NONE;
}

static PyObject *s_name, *s_default, *s_pid;

/* set_program(function, state, owner, lba_shift, lbas_per_page, pids, lock): every later
 * write() is first accounted by ``function(state, lpn, npages, rg, ruh)`` (the emulated
 * SSD's FTL, fc_ftl_write: whole mapping units, as its Python write path does), with the
 * write's placement identifier (its stream's ``pid``) looked up in ``pids`` ({pid: (rg,
 * handle)}, None: FDP off, every write on (0, 0)), and ``lock`` (the device's, which its
 * Python path holds over the accounting and the write) held over both. ``owner`` keeps
 * ``state`` alive. A pid not in the table, a lock another thread holds, or the function
 * failing goes to the fallback, which does it all the careful way (logs the event, waits
 * for the lock, says what went wrong). */
static PyObject *Reader_set_program(Reader *self, PyObject *args)
{
    unsigned long long fn, state, per_page;
    unsigned shift;
    PyObject *owner, *pids, *lock;
    if (!PyArg_ParseTuple(args, "KKOIKOO:set_program", &fn, &state, &owner, &shift, &per_page, &pids, &lock))
        return NULL;
    if (!fn || !state || shift > 20 || !per_page || (pids != Py_None && !PyDict_Check(pids))) {
        PyErr_SetString(PyExc_ValueError, "set_program(function, state, owner, lba_shift, lbas_per_page, pids, lock): "
                        "non-zero addresses, a shift up to 20, a page of at least one block, pids a dict or None");
        return NULL;
    }
    PyObject *acq = PyObject_GetAttrString(lock, "acquire"), *rel = acq ? PyObject_GetAttrString(lock, "release") : NULL;
    if (!rel) {
        Py_XDECREF(acq);
        return NULL;
    }
    self->program = (int (*)(void *, uint64_t, uint64_t, uint32_t, uint32_t))(uintptr_t)fn;
    self->ftl = (void *)(uintptr_t)state;
    Py_XSETREF(self->ftl_owner, Py_NewRef(owner));
    Py_XSETREF(self->pids, Py_NewRef(pids));
    Py_XSETREF(self->lock_acquire, acq);
    Py_XSETREF(self->lock_release, rel);
    self->lba_shift = shift;
    self->lbas_per_page = per_page;
    Py_RETURN_NONE;
}

/* The placement of a write to a set_program() device: 0 with *rg, *ruh set; 1 when only
 * the fallback can place it (an identifier outside the table); -1 with an exception. */
static int placement_of(Reader *self, PyObject *stream, uint32_t *rg, uint32_t *ruh)
{
    *rg = *ruh = 0;
    if (stream == Py_None || self->pids == Py_None)
        return 0;
    PyObject *pid = PyObject_GetAttr(stream, s_pid);
    if (!pid)
        return -1;
    if (pid == Py_None) {               /* a stream without an identifier: the default handle */
        Py_DECREF(pid);
        return 0;
    }
    PyObject *to = PyDict_GetItemWithError(self->pids, pid);
    Py_DECREF(pid);
    if (!to)
        return PyErr_Occurred() ? -1 : 1;
    unsigned long a, b;
    if (!PyTuple_Check(to) || PyTuple_GET_SIZE(to) != 2 ||
        ((a = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(to, 0))) == (unsigned long)-1 && PyErr_Occurred()) ||
        ((b = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(to, 1))) == (unsigned long)-1 && PyErr_Occurred()))
        return PyErr_Occurred() ? -1 : 1;
    *rg = (uint32_t)a;
    *ruh = (uint32_t)b;
    return 0;
}

static int release_lock(Reader *self)
{
    PyObject *r = PyObject_CallNoArgs(self->lock_release);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* write(offset, data, stream=None): a device's single write in one C call: the checks,
 * one pwrite of the whole bytes or bytearray (psync), or in ring mode a copy into the
 * calling thread's registered buffer and one WRITE_FIXED on its own ring (the GIL released
 * in the kernel either way), and the counters (writes, bytes, bytes per stream name: the
 * device's stats() adds them to its own). Anything else (other types, keywords, a bad
 * offset or length, a closed device, a thread without its ring yet, a failed or short
 * write) goes to the fallback from the start: it checks, writes (again: a write is
 * idempotent), counts and raises the device's clear error. */
static PyObject *Reader_write(Reader *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_buffer view;
    if (!self->write_fallback) {
        PyErr_SetString(PyExc_ValueError, "Reader: write() before set_write(), or after the object was cleared");
        return NULL;
    }
    if (kwnames || nargs < 2 || nargs > 3 || self->closed ||
        !(PyBytes_CheckExact(args[1]) || PyByteArray_CheckExact(args[1])))
        goto careful;
    long long off = PyLong_AsLongLong(args[0]);
    if (off == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto careful;
    }
    PyObject *stream = nargs == 3 ? args[2] : Py_None;
    PyObject *name = stream == Py_None ? Py_NewRef(s_default) : PyObject_GetAttr(stream, s_name);
    if (!name) {
        PyErr_Clear();
        goto careful;
    }
    uint32_t rg = 0, ruh = 0;
    if (self->program) {
        int p = placement_of(self, stream, &rg, &ruh);
        if (p) {
            PyErr_Clear();
            Py_DECREF(name);
            goto careful;
        }
    }
    /* a stream this device did not open (another device's, or no stream at all): the
     * fallback refuses it, before any I/O */
    if (stream != Py_None && (!PyUnicode_CheckExact(name) || PyDict_GetItemWithError(self->streams, name) != stream)) {
        PyErr_Clear();
        Py_DECREF(name);
        goto careful;
    }
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {   /* a bytearray cannot resize now */
        Py_DECREF(name);
        return NULL;
    }
    unsigned long long len = (unsigned long long)view.len;
    /* closed is checked again here: the stream's name lookup may have run Python code
     * (and let close() run) since the first check; from here to the kernel nothing does */
    if (self->closed || off < 0 || (((unsigned long long)off | len) & self->mask) || len > self->max_len ||
        (unsigned long long)off + len > self->size) {
        PyBuffer_Release(&view);
        Py_DECREF(name);
        goto careful;
    }
    int locked = 0;
    if (self->program) {
        /* the device's lock, without waiting (the fallback waits); taking it may run other
         * threads' Python code, so closed is checked once more after it */
        PyObject *got = PyObject_CallOneArg(self->lock_acquire, Py_False);
        locked = got == Py_True;
        Py_XDECREF(got);
        if (!got)
            PyErr_Clear();
        if (!locked || self->closed) {
            PyBuffer_Release(&view);
            Py_DECREF(name);
            goto unlock_careful;
        }
        uint64_t blk = (unsigned long long)off >> self->lba_shift, nlb = len >> self->lba_shift;
        uint64_t first = blk / self->lbas_per_page, last = (blk + nlb - 1) / self->lbas_per_page;
        if (!nlb || self->program(self->ftl, first, last - first + 1, rg, ruh) < 0) {
            PyBuffer_Release(&view);        /* nothing was accounted: the fallback says why */
            Py_DECREF(name);
            goto unlock_careful;
        }
    }
    ssize_t put;
    if (self->ring_mode != MODE_PSYNC) {
        struct thread_ring *t = self->ring_mode == MODE_RING ? PyThread_tss_get(&self->tss) :
                                len <= DIRECT_STAGE ? direct_stage(self, 1) : NULL;
        if (!t) {                           /* this thread's ring is made by the fallback */
            PyBuffer_Release(&view);
            Py_DECREF(name);
            goto unlock_careful;
        }
        memcpy(t->stage, view.buf, (size_t)len);
        PyBuffer_Release(&view);
        put = self->ring_mode == MODE_RING ? thread_rw(self, t, IORING_OP_WRITE_FIXED, len, (unsigned long long)off)
                                           : psync_rw(self, 1, t->stage, len, (unsigned long long)off);
    } else {
        put = psync_rw(self, 1, view.buf, len, (unsigned long long)off);
        PyBuffer_Release(&view);
    }
    if (locked && release_lock(self) < 0) {
        Py_DECREF(name);
        return NULL;
    }
    if (put < 0 || (unsigned long long)put != len) {
        /* the fallback retries the whole write and says what is wrong; with set_program()
         * it accounts it again, as a drive counts a host's retried write twice */
        Py_DECREF(name);
        goto careful;
    }
    self->writes++;
    self->bytes_written += len;
    PyObject *was = PyDict_GetItemWithError(self->stream_bytes, name);
    PyObject *n = PyLong_FromUnsignedLongLong(len), *now = NULL;
    if (n)
        now = was ? PyNumber_Add(was, n) : PyErr_Occurred() ? NULL : Py_NewRef(n);
    int rc = now ? PyDict_SetItem(self->stream_bytes, name, now) : -1;
    Py_XDECREF(n);
    Py_XDECREF(now);
    Py_DECREF(name);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
unlock_careful:
    if (locked && release_lock(self) < 0)
        return NULL;
careful:
    return PyObject_Vectorcall(self->write_fallback, args, nargs, kwnames);
}

static PyObject *Reader_close(Reader *self, PyObject *unused)
{
    (void)unused;
    self->closed = 1;
    Py_RETURN_NONE;
}

static PyMethodDef Reader_methods[] = {
    {"read", (PyCFunction)(void (*)(void))Reader_read, METH_FASTCALL,
     "read(offset, length) -> bytes: one checked read, or the fallback's answer."},
    {"adopt", (PyCFunction)(void (*)(void))Reader_adopt, METH_FASTCALL,
     "adopt(ring, stage): the calling thread's own ring and its registered buffer (ring mode)."},
    {"close", (PyCFunction)Reader_close, METH_NOARGS, "Send every later read and write to the fallbacks."},
    {"map_reads", (PyCFunction)Reader_map_reads, METH_NOARGS,
     "map_reads() -> bool: reads of up to a page copy from a read-only mapping of the file (psync mode)."},
    {"unmap", (PyCFunction)Reader_unmap, METH_NOARGS,
     "unmap(): drop map_reads()'s mapping (after close(), once busy is 0: it holds the file)."},
    {"set_write", (PyCFunction)Reader_set_write, METH_VARARGS,
     "set_write(fallback, streams): turn on write(); fallback is the device's Python write, "
     "streams its dict of open streams by name."},
    {"set_program", (PyCFunction)Reader_set_program, METH_VARARGS,
     "set_program(function, state, owner, lba_shift, lbas_per_page, pids, lock): account every "
     "write() in an FTL first (the emulated SSD), under the device's lock."},
    {"write", (PyCFunction)(void (*)(void))Reader_write, METH_FASTCALL | METH_KEYWORDS,
     "write(offset, data, stream=None): one checked pwrite, or the fallback's answer."},
    {"read_into_hook", (PyCFunction)Reader_read_into_hook, METH_NOARGS,
     "read_into_hook() -> capsule 'engines.device.read_into': read() into a C caller's buffer."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Reader_members[] = {
    {"reads", T_ULONGLONG, offsetof(Reader, reads), READONLY, "reads done here"},
    {"bytes_read", T_ULONGLONG, offsetof(Reader, bytes_read), READONLY, "bytes read here"},
    {"busy", T_ULONGLONG, offsetof(Reader, busy), READONLY,
     "I/Os inside the kernel now (the device's close() waits for none before closing the fd)"},
    {"writes", T_ULONGLONG, offsetof(Reader, writes), READONLY, "writes done here"},
    {"bytes_written", T_ULONGLONG, offsetof(Reader, bytes_written), READONLY, "bytes written here"},
    {"stream_bytes", T_OBJECT, offsetof(Reader, stream_bytes), READONLY,
     "bytes written here per stream name (None until set_write())"},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *Reader_get_mapped(Reader *self, void *unused)
{
    (void)unused;
    return PyBool_FromLong(self->map && self->map_forks == forks_seen);
}

static PyGetSetDef Reader_getset[] = {
    {"mapped", (getter)Reader_get_mapped, NULL, "whether reads of up to a page copy from a mapping (map_reads())",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache.uring._results_c.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_doc = "Reader(fd, size, block_mask, max_len, fallback, mode): a device's checked single reads "
              "(and, after set_write(), its single writes); mode 0 psync, 1 the thread's own ring "
              "(adopt()), 2 psync with O_DIRECT through the thread's aligned buffer.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_methods = Reader_methods,
    .tp_members = Reader_members,
    .tp_getset = Reader_getset,
};

static PyMethodDef methods[] = {
    {"pin", pin, METH_O,
     "pin(datas) -> (lens, addrs, keep): a batched write's sources, held still for C."},
    {"read_one", (PyCFunction)(void (*)(void))read_one, METH_FASTCALL,
     "read_one(ring, fd, stage, length, offset) -> bytes, or the int result of a read that "
     "did not complete whole."},
    {"new_bytes", new_bytes, METH_O,
     "new_bytes(lens) -> (list of bytes, bytes of pointers): unwritten bytes objects to be "
     "filled in C before anything else sees them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_results_c", NULL, 0, methods};

PyMODINIT_FUNC PyInit__results_c(void)
{
    if (PyType_Ready(&ReaderType) < 0 || !(s_name = PyUnicode_InternFromString("name")) ||
        !(s_default = PyUnicode_InternFromString("default")) ||
        !(s_pid = PyUnicode_InternFromString("pid")))
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
