/* The Engine interface's C face (engines/engine.py): an engine whose blocking operations
 * have a C form offers them as ``Engine.c_ops()`` -> a capsule named "engines.engine.ops"
 * holding this struct, which the router's C (engines/_router.c) calls. ctx is the engine's
 * C core; the capsule keeps it alive. Each function is the C twin of a Python method of
 * the engine (its reference, with a twin test), called with the GIL held; it takes
 * whatever lock the engine's own rules need. A NULL function: the engine has no C form of
 * that step, and the router takes the Python one. Include after Python.h. */
#ifndef FC_ENGINE_H
#define FC_ENGINE_H

struct fc_engine_ops {
    /* Engine.may_hold(key) for a bytes key, decided in DRAM: 1 maybe, 0 surely not, -1
     * with an exception. */
    int (*may_hold)(void *ctx, PyObject *key);
    /* Engine.lookup_item_now(device, key) for a bytes key: 1 with a new reference in
     * *value and the expiry in *expiry, 0 a miss, -1 with an exception. */
    int (*lookup)(void *ctx, PyObject *device, PyObject *key, PyObject **value, double *expiry);
    /* Engine.insert_now(device, key, value, expiry): 1 the item is stored, 0 declined
     * having changed nothing (the caller takes the Python form, which judges the item
     * and raises its own clear error), -1 with an exception. */
    int (*insert)(void *ctx, PyObject *device, PyObject *key, PyObject *value, PyObject *expiry);
    void *ctx;
};

#define FC_ENGINE_OPS "engines.engine.ops"

/* A capsule named FC_ENGINE_OPS around ``ops`` (copied) that keeps ``owner`` (the engine's
 * C core) alive; NULL with an exception. */
static inline void fc_engine_ops_free(PyObject *cap)
{
    PyMem_Free(PyCapsule_GetPointer(cap, FC_ENGINE_OPS));
    Py_XDECREF((PyObject *)PyCapsule_GetContext(cap));
}

static inline PyObject *fc_engine_ops_capsule(const struct fc_engine_ops *ops, PyObject *owner)
{
    struct fc_engine_ops *h = PyMem_Malloc(sizeof *h);
    if (!h)
        return PyErr_NoMemory();
    *h = *ops;
    PyObject *cap = PyCapsule_New(h, FC_ENGINE_OPS, fc_engine_ops_free);
    if (!cap) {
        PyMem_Free(h);
        return NULL;
    }
    if (PyCapsule_SetContext(cap, Py_NewRef(owner)) < 0) {
        Py_DECREF(owner);
        Py_DECREF(cap);
        return NULL;
    }
    return cap;
}

#endif
