/* The C hooks passed between flashcache's extension modules in capsules, declared once.
 * engines/_router.c makes the Navy ones and flashcache/_core.c (the cache's HotPath) takes
 * them; flashcache/uring/results.c makes the device one and the engines' C cores
 * (engines/bighash/_core.c, engines/blockcache/_core.c, through engines/_device.h) take it.
 * The engines' own C face for the router is engines/_engine.h. Include after Python.h. */
#ifndef FC_HOOKS_H
#define FC_HOOKS_H

/* A device's optional read-into hook (engines/device.py, "read_into_hook"): the object
 * behind a device's read, when read is a C method, may offer read_into_hook() -> a capsule
 * named "engines.device.read_into" holding this struct. fn(ctx, buf, len, off) reads len
 * bytes at off into buf and returns 1, counted as the device's read; or returns 0 having
 * done and counted nothing, and the caller takes the device's read() instead (which says
 * what went wrong). Called with the GIL held; it may release it. */
struct fc_read_into {
    int (*fn)(void *ctx, char *buf, unsigned long long len, unsigned long long off);
    void *ctx;
};

/* Navy's lookup hook (Router.lookup_hook(), capsule "engines.navy.lookup"): Navy's lookup
 * for a bytes key without the (value, expiry) tuple: 1 with a new reference in *value,
 * 0 for a miss, -1 with an exception. The capsule keeps the Router alive. */
struct fc_lookup {
    int (*fn)(void *ctx, PyObject *key, PyObject **value, double *expiry);
    void *ctx;
};

/* Navy's insert hook (Router.insert_hook(), capsule "engines.navy.insert"): 1 having put
 * the item on flash, 0 having declined and changed nothing (the caller takes Navy's
 * Python insert_now), -1 with an exception. The capsule keeps the Router alive. */
struct fc_insert {
    int (*fn)(void *ctx, PyObject *key, PyObject *value, PyObject *expiry);
    void *ctx;
};

/* A Python lookup's answer, (value, expiry) or None, consumed: 1 with a new reference in
 * *value and *expiry, 0 for None, -1 with an exception (``who`` names the caller in the
 * TypeError for anything else). */
static inline int fc_item_of(PyObject *item, PyObject **value, double *expiry, const char *who)
{
    if (item == Py_None) {
        Py_DECREF(item);
        return 0;
    }
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
        Py_DECREF(item);
        PyErr_Format(PyExc_TypeError, "%s must return (value, expiry) or None", who);
        return -1;
    }
    *expiry = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 1));
    if (*expiry == -1 && PyErr_Occurred()) {
        Py_DECREF(item);
        return -1;
    }
    *value = Py_NewRef(PyTuple_GET_ITEM(item, 0));
    Py_DECREF(item);
    return 1;
}

#endif
