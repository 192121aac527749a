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
#include <linux/io_uring.h>
#include "ring.h"

static PyObject *new_bytes(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "new_bytes() wants a sequence of lengths");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *list = PyList_New(n);
    PyObject *addrs = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(char *));
    if (!list || !addrs)
        goto fail;
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

static PyMethodDef methods[] = {
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
    return PyModule_Create(&module);
}
