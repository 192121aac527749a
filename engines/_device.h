/* The Device protocol (engines/device.py) as the engines' C cores use it: a device's
 * optional read-into hook (struct fc_read_into in _hooks.h), looked up behind its read
 * method and remembered per device. Include after Python.h and _hooks.h. */
#ifndef FC_DEVICE_H
#define FC_DEVICE_H

/* The read-into hook of the last read's owner, asked once per owner. */
typedef struct {
    PyObject *owner, *cap;              /* the last read's owner and its capsule (or None) */
    struct fc_read_into *fn;
} fc_hook_cache;

static inline int fc_hook_traverse(fc_hook_cache *hc, visitproc visit, void *arg)
{
    Py_VISIT(hc->owner);
    Py_VISIT(hc->cap);
    return 0;
}

static inline void fc_hook_clear(fc_hook_cache *hc)
{
    Py_CLEAR(hc->owner);
    Py_CLEAR(hc->cap);
    hc->fn = NULL;
}

/* The read-into hook behind ``read`` (a bound C method whose object offers the documented
 * read_into_hook()), or NULL; remembered per object, so asked once. NULL with an
 * exception only if asking failed other than by the object having no hook. */
static inline struct fc_read_into *fc_hook_for(fc_hook_cache *hc, PyObject *read)
{
    if (!PyCFunction_Check(read))
        return NULL;
    PyObject *owner = PyCFunction_GET_SELF(read);
    if (!owner || PyModule_Check(owner))
        return NULL;
    if (owner == hc->owner)
        return hc->fn;
    struct fc_read_into *h = NULL;
    PyObject *cap = PyObject_CallMethod(owner, "read_into_hook", NULL);
    if (!cap) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        cap = Py_NewRef(Py_None);
    } else if (!(h = PyCapsule_GetPointer(cap, "engines.device.read_into"))) {
        Py_DECREF(cap);
        return NULL;
    }
    Py_XSETREF(hc->owner, Py_NewRef(owner));
    Py_XSETREF(hc->cap, cap);
    hc->fn = h;
    return h;
}

/* device.read and device.write (the Device protocol's methods), new references, or NULL
 * with an exception. Looked up on every call: a device's read may be replaced (a spy). */
static PyObject *fc_s_read, *fc_s_write;

static inline PyObject *fc_device_method(PyObject *device, PyObject **name, const char *text)
{
    if (!*name && !(*name = PyUnicode_InternFromString(text)))
        return NULL;
    return PyObject_GetAttr(device, *name);
}

static inline PyObject *fc_device_read(PyObject *device)
{
    return fc_device_method(device, &fc_s_read, "read");
}

static inline PyObject *fc_device_write(PyObject *device)
{
    return fc_device_method(device, &fc_s_write, "write");
}

#endif
