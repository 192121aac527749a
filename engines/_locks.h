/* The engines' Python locks (threading.RLock objects, which the Python forms of the same
 * operations hold with ``with``) taken and released from C through their documented
 * acquire() and release(). Include after Python.h. */
#ifndef FC_LOCKS_H
#define FC_LOCKS_H

static PyObject *fc_s_acquire, *fc_s_release;

/* lock.acquire() or lock.release(); 0 or -1. An exception already set survives a
 * release (which still runs): the call then returns -1. */
static inline int fc_lock_call(PyObject *lock, int acquire)
{
    if (!fc_s_acquire) {    /* first use: an acquire, with no exception set */
        if (!(fc_s_acquire = PyUnicode_InternFromString("acquire")) ||
            !(fc_s_release = PyUnicode_InternFromString("release")))
            return -1;
    }
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *r = PyObject_CallMethodNoArgs(lock, acquire ? fc_s_acquire : fc_s_release);
    Py_XDECREF(r);
    if (et) {
        if (!r)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    return r ? 0 : -1;
}

static inline int fc_lock(PyObject *lock)
{
    return fc_lock_call(lock, 1);
}

static inline int fc_unlock(PyObject *lock)
{
    return fc_lock_call(lock, 0);
}

#endif
