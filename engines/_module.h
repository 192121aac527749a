/* What the engines' extension modules export the same way: an on-flash layout's field
 * table (the C half of engines/formats.py: field -> (offset, size), built from the very
 * offsets the C code reads and writes with), module constants, and a core's counters as
 * a dict. Include after Python.h. */
#ifndef FC_MODULE_H
#define FC_MODULE_H

typedef struct {
    const char *name;
    int offset, size;
} fc_field;

/* {name: (offset, size)} for a table ending in a NULL name; NULL with an exception. */
static inline PyObject *fc_fields_dict(const fc_field *f)
{
    PyObject *d = PyDict_New();
    for (; d && f->name; f++) {
        PyObject *v = Py_BuildValue("(ii)", f->offset, f->size);
        if (!v || PyDict_SetItemString(d, f->name, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

/* Add ``obj`` to the module as ``name``, taking the reference (NULL: an exception is
 * set); 0 or -1. */
static inline int fc_add(PyObject *m, const char *name, PyObject *obj)
{
    int rc = obj ? PyModule_AddObjectRef(m, name, obj) : -1;
    Py_XDECREF(obj);
    return rc;
}

/* {names[i]: c[i]} for n counters; NULL with an exception. */
static inline PyObject *fc_counters_dict(const char *const *names, const long long *c, int n)
{
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < n; i++) {
        PyObject *v = PyLong_FromLongLong(c[i]);
        if (!v || PyDict_SetItemString(d, names[i], v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(v);
    }
    return d;
}

#endif
