/* flashcache.uring._results_c: the bytes objects reads return, made in C where that saves
 * a copy or a wait (plain CPython API; the ring itself is ring.c, compiled in here too and
 * driven through the same struct fc_ring the cffi module set up).
 *
 * Batches: the bytes objects are made before the I/O, so the ring loop can fill each one
 * as its request completes (ring.h, fc_rw_batch_packed_into) while the rest are still in
 * flight, instead of copying them all out after the last completion with the device idle.
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

/* Pread: a psync device's single buffered read in one C call (FileDevice.read's fast
 * path): the bounds and alignment checks, one pread into a new bytes object with the GIL
 * released, and the read counters. Anything else (closed, out of range, misaligned, too
 * long, short or failed) goes to the Python `fallback(offset, length)`, which does it the
 * careful way and raises the error the device names. */
typedef struct {
    PyObject_HEAD
    int fd;
    int closed;
    unsigned long long size, mask, max_io;
    unsigned long long reads, bytes_read;
    PyObject *fallback;
} Pread;

static int Pread_init(Pread *self, PyObject *args, PyObject *kw)
{
    PyObject *fallback;
    (void)kw;
    if (!PyArg_ParseTuple(args, "iKKKO:Pread", &self->fd, &self->size, &self->mask, &self->max_io, &fallback))
        return -1;
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "Pread: fallback must be callable");
        return -1;
    }
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    self->closed = 0;
    return 0;
}

static int Pread_traverse(Pread *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);   /* the fallback is the device's method: a cycle the GC breaks */
    return 0;
}

static int Pread_clear(Pread *self)
{
    Py_CLEAR(self->fallback);
    return 0;
}

static void Pread_dealloc(Pread *self)
{
    PyObject_GC_UnTrack(self);
    Pread_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Pread_read(Pread *self, PyObject *const *args, Py_ssize_t nargs)
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
        (unsigned long long)len > self->max_io || (unsigned long long)off + (unsigned long long)len > self->size)
        goto careful;
    PyObject *b = PyBytes_FromStringAndSize(NULL, len);
    if (!b)
        return NULL;
    ssize_t got;
    Py_BEGIN_ALLOW_THREADS
    got = pread(self->fd, PyBytes_AS_STRING(b), (size_t)len, (off_t)off);
    Py_END_ALLOW_THREADS
    if (got != len) {
        Py_DECREF(b);
        goto careful;
    }
    self->reads++;
    self->bytes_read += (unsigned long long)len;
    return b;
careful:
    if (!self->fallback) {
        PyErr_SetString(PyExc_ValueError, "Pread: read after the object was cleared");
        return NULL;
    }
    return PyObject_Vectorcall(self->fallback, args, nargs, NULL);
}

static PyObject *Pread_close(Pread *self, PyObject *unused)
{
    (void)unused;
    self->closed = 1;
    Py_RETURN_NONE;
}

static PyMethodDef Pread_methods[] = {
    {"read", (PyCFunction)(void (*)(void))Pread_read, METH_FASTCALL,
     "read(offset, length) -> bytes: one checked pread, or the fallback's answer."},
    {"close", (PyCFunction)Pread_close, METH_NOARGS, "Send every later read to the fallback."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Pread_members[] = {
    {"reads", T_ULONGLONG, offsetof(Pread, reads), READONLY, "reads done here"},
    {"bytes_read", T_ULONGLONG, offsetof(Pread, bytes_read), READONLY, "bytes read here"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject PreadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache.uring._results_c.Pread",
    .tp_basicsize = sizeof(Pread),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Pread_traverse,
    .tp_clear = (inquiry)Pread_clear,
    .tp_doc = "Pread(fd, size, block_mask, max_io, fallback): a psync device's checked single read.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pread_init,
    .tp_dealloc = (destructor)Pread_dealloc,
    .tp_methods = Pread_methods,
    .tp_members = Pread_members,
};

/* RingReads: a uring device's single reads in one C call. Each thread reads on its own
 * small ring (adopted here by that thread: thread-specific storage holds its ring and
 * registered buffer), with the bounds checks, a fixed-buffer read with the GIL released,
 * the bytes object and the read counters. A thread with no ring yet, a closing device, a
 * bad request or a read that did not complete whole goes to the Python `fallback(offset,
 * length)`, which makes the thread's ring (and adopts it) or does the careful path and
 * names the error. `busy` counts reads inside the kernel, so close() can wait for them
 * before the rings go; `close()` sends every later read to the fallback. Needs the GIL
 * (the device installs it only where the GIL guards these counters). */
struct thread_ring {
    struct fc_ring *ring;
    char *stage;
};

typedef struct {
    PyObject_HEAD
    int fd;
    int closed;
    int tss_ok;
    Py_tss_t tss;
    unsigned long long size, mask, max_len;
    unsigned long long reads, bytes_read, busy;
    PyObject *fallback;
    PyObject *owned;   /* a list of bytes objects holding the thread_ring structs */
} RingReads;

static int RingReads_init(RingReads *self, PyObject *args, PyObject *kw)
{
    PyObject *fallback;
    (void)kw;
    if (!PyArg_ParseTuple(args, "iKKKO:RingReads", &self->fd, &self->size, &self->mask, &self->max_len, &fallback))
        return -1;
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "RingReads: fallback must be callable");
        return -1;
    }
    if (!self->tss_ok) {
        if (PyThread_tss_create(&self->tss) != 0) {
            PyErr_SetString(PyExc_RuntimeError, "RingReads: no thread-specific storage");
            return -1;
        }
        self->tss_ok = 1;
    }
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    Py_XSETREF(self->owned, PyList_New(0));
    return self->owned ? 0 : -1;
}

static int RingReads_traverse(RingReads *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);
    Py_VISIT(self->owned);
    return 0;
}

static int RingReads_clear(RingReads *self)
{
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->owned);
    return 0;
}

static void RingReads_dealloc(RingReads *self)
{
    PyObject_GC_UnTrack(self);
    RingReads_clear(self);
    if (self->tss_ok)
        PyThread_tss_delete(&self->tss);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *RingReads_read(RingReads *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "read(offset, length)");
        return NULL;
    }
    long long off = PyLong_AsLongLong(args[0]);
    long long len = PyLong_AsLongLong(args[1]);
    if ((off == -1 || len == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        goto careful;
    }
    if (self->closed || off < 0 || len < 0 || ((unsigned long long)(off | len) & self->mask) ||
        (unsigned long long)len > self->max_len || (unsigned long long)off + (unsigned long long)len > self->size)
        goto careful;
    struct thread_ring *t = PyThread_tss_get(&self->tss);
    if (!t)
        goto careful;                       /* this thread's ring is made by the fallback */
    int res;
    self->busy++;
    Py_BEGIN_ALLOW_THREADS
    res = fc_rw_one(t->ring, IORING_OP_READ_FIXED, self->fd, t->stage, (unsigned)len, (unsigned long long)off, 0);
    Py_END_ALLOW_THREADS
    self->busy--;
    if (res != len)
        goto careful;
    self->reads++;
    self->bytes_read += (unsigned long long)len;
    return PyBytes_FromStringAndSize(t->stage, len);
careful:
    if (!self->fallback) {
        PyErr_SetString(PyExc_ValueError, "RingReads: read after the object was cleared");
        return NULL;
    }
    return PyObject_Vectorcall(self->fallback, args, nargs, NULL);
}

/* adopt(ring, stage): the calling thread's ring (the address of its struct fc_ring, used by
 * no other thread) and its registered buffer 0 (at least max_len bytes). */
static PyObject *RingReads_adopt(RingReads *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "adopt(ring, stage)");
        return NULL;
    }
    void *ring = PyLong_AsVoidPtr(args[0]);
    void *stage = PyLong_AsVoidPtr(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (!ring || !stage) {
        PyErr_SetString(PyExc_ValueError, "adopt(): no ring or no staging buffer");
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

static PyObject *RingReads_close(RingReads *self, PyObject *unused)
{
    (void)unused;
    self->closed = 1;
    Py_RETURN_NONE;
}

static PyMethodDef RingReads_methods[] = {
    {"read", (PyCFunction)(void (*)(void))RingReads_read, METH_FASTCALL,
     "read(offset, length) -> bytes: one checked read on this thread's ring, or the fallback's answer."},
    {"adopt", (PyCFunction)(void (*)(void))RingReads_adopt, METH_FASTCALL,
     "adopt(ring, stage): the calling thread's own ring and its registered buffer."},
    {"close", (PyCFunction)RingReads_close, METH_NOARGS, "Send every later read to the fallback."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef RingReads_members[] = {
    {"reads", T_ULONGLONG, offsetof(RingReads, reads), READONLY, "reads done here"},
    {"bytes_read", T_ULONGLONG, offsetof(RingReads, bytes_read), READONLY, "bytes read here"},
    {"busy", T_ULONGLONG, offsetof(RingReads, busy), READONLY, "reads inside the kernel now"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RingReadsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache.uring._results_c.RingReads",
    .tp_basicsize = sizeof(RingReads),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)RingReads_traverse,
    .tp_clear = (inquiry)RingReads_clear,
    .tp_doc = "RingReads(fd, size, block_mask, max_len, fallback): a uring device's checked single reads.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RingReads_init,
    .tp_dealloc = (destructor)RingReads_dealloc,
    .tp_methods = RingReads_methods,
    .tp_members = RingReads_members,
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
    if (PyType_Ready(&PreadType) < 0 || PyType_Ready(&RingReadsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Pread", (PyObject *)&PreadType) < 0 ||
        PyModule_AddObjectRef(m, "RingReads", (PyObject *)&RingReadsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
