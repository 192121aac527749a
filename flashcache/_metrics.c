/* flashcache._hot_c, the metrics' part: the latency Histogram (metrics.py's
 * LatencyHistogram subclasses it). The struct is in _hot.h (HotPath observes into it). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_hot.h"

static void hist_dealloc(Hist *h)
{
    PyMem_Free(h->bounds);
    PyMem_Free(h->counts);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static int hist_init(Hist *h, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"bounds", NULL};
    PyObject *arg;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O", kwlist, &arg))
        return -1;
    PyObject *seq = PySequence_Fast(arg, "Histogram(bounds): bounds must be a sequence of numbers");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    double *b = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    unsigned long long *c = PyMem_Calloc((size_t)n + 1, sizeof(unsigned long long));
    if (!b || !c) {
        PyMem_Free(b);
        PyMem_Free(c);
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        b[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if ((b[i] == -1 && PyErr_Occurred()) || (i && !(b[i] > b[i - 1]))) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "Histogram(bounds): bounds must increase (index %zd)", i);
            PyMem_Free(b);
            PyMem_Free(c);
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    PyMem_Free(h->bounds);
    PyMem_Free(h->counts);
    h->bounds = b;
    h->counts = c;
    h->n = n;
    h->sum = 0;
    return 0;
}

/* Count v: bisect_left over the bounds (the first bound >= v) picks the bucket. */
FC_SHARED void observe(Hist *hist, double v)
{
    Py_ssize_t lo = 0, hi = hist->n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (hist->bounds[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    hist->counts[lo]++;
    hist->sum += v;
}

static PyObject *hist_observe(Hist *h, PyObject *arg)
{
    double v = PyFloat_AsDouble(arg);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    observe(h, v);
    Py_RETURN_NONE;
}

static PyObject *hist_counts(Hist *h, void *unused)
{
    (void)unused;
    PyObject *l = PyList_New(h->n + 1);
    for (Py_ssize_t i = 0; l && i <= h->n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(h->counts[i]);
        if (!v) {
            Py_CLEAR(l);
            break;
        }
        PyList_SET_ITEM(l, i, v);
    }
    return l;
}

static PyObject *hist_bounds(Hist *h, void *unused)
{
    (void)unused;
    PyObject *t = PyTuple_New(h->n);
    for (Py_ssize_t i = 0; t && i < h->n; i++) {
        PyObject *v = PyFloat_FromDouble(h->bounds[i]);
        if (!v) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyMethodDef hist_methods[] = {
    {"observe", (PyCFunction)hist_observe, METH_O, "observe(seconds): count one value"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef hist_getset[] = {
    {"counts", (getter)hist_counts, NULL, "counts per bucket (a new list; the last: above every bound)", NULL},
    {"bounds", (getter)hist_bounds, NULL, "the buckets' upper bounds", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef hist_members[] = {
    {"sum", T_DOUBLE, offsetof(Hist, sum), READONLY, "the sum of every value observed"},
    {NULL, 0, 0, 0, NULL},
};

FC_SHARED PyTypeObject HistType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.Histogram",
    .tp_basicsize = sizeof(Hist),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A histogram whose observe() is one C call (see flashcache/_metrics.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)hist_init,
    .tp_dealloc = (destructor)hist_dealloc,
    .tp_methods = hist_methods,
    .tp_getset = hist_getset,
    .tp_members = hist_members,
};
