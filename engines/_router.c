/* engines._router_c: the router's blocking forms in C (navy.py is the router; its
 * generators are the reference, with twin tests), over a list of engines it knows only
 * through the Engine interface: each engine's C operations (Engine.c_ops(), the struct of
 * engines/_engine.h) where it has them, its Python methods where it does not.
 *
 * Router(device): the router's blocking forms on ``device``.
 *   add(ops, limit, lookup, may_hold, remove): the next engine, in lookup order. ``ops`` is
 *     its capsule "engines.engine.ops" or None; ``limit`` the largest key + value its size
 *     class takes; lookup(key) -> (value, expiry) or None and may_hold(key) -> bool are
 *     its blocking Python forms (used when ops lacks them), remove(key) its blocking
 *     remove (Python: the router drops an item from the other engines after an insert).
 *   lookup(key): Navy.lookup_item_now for a bytes key: the engines in order until one
 *     has the key; counts lookups, hits and misses (counters(), merged by Navy).
 *   may_hold(key): whether any engine may hold a bytes key (DRAM only).
 *   insert(key, value, expiry): Navy.insert_now under an admission policy that accepts
 *     all (``accept_all``, kept by Navy): the smallest size class that fits, counted as an
 *     insert, then the key dropped from the other engines. True when done here; None
 *     having changed nothing when the item is for Navy's Python form (the engine has no C
 *     insert or declines the item, or it fits no size class).
 *   place(engine, key, value, expiry): the same for an item admission already accepted
 *     (and counted) for the engine added ``engine``-th.
 *   lookup_hook() / insert_hook(): lookup and insert for a C caller (the cache's hot
 *     path), as capsules "engines.navy.lookup" / "engines.navy.insert" (engines/_hooks.h).
 *   tick, tick_every: when ``tick`` is a callable, it is called with no arguments after
 *     every ``tick_every``-th insert done here (Navy's moving split paces itself by it;
 *     Navy's Python forms count their own inserts). An exception from it fails the insert
 *     that called it: Navy's tick raises none.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include "_hooks.h"
#include "_engine.h"

enum { MAX_ENGINES = 8 };

typedef struct {
    PyObject *cap;                       /* the ops capsule, or NULL */
    struct fc_engine_ops *ops;           /* its struct, or NULL: the Python forms */
    PyObject *lookup, *may_hold, *remove;
    Py_ssize_t limit;
} engine;

typedef struct {
    PyObject_HEAD
    PyObject *device;
    int n;
    engine e[MAX_ENGINES];               /* in lookup order */
    int by_size[MAX_ENGINES];            /* indices into e, smallest size class first */
    int accept_all;
    long long lookups, hits, misses, inserts;
    PyObject *tick;                      /* a callable, or None */
    int tick_every, since;
} Router;

static int router_traverse(Router *r, visitproc visit, void *arg)
{
    Py_VISIT(r->device);
    Py_VISIT(r->tick);
    for (int i = 0; i < r->n; i++) {
        Py_VISIT(r->e[i].cap);
        Py_VISIT(r->e[i].lookup);
        Py_VISIT(r->e[i].may_hold);
        Py_VISIT(r->e[i].remove);
    }
    return 0;
}

static int router_clear(Router *r)
{
    Py_CLEAR(r->device);
    Py_CLEAR(r->tick);
    for (int i = 0; i < r->n; i++) {
        Py_CLEAR(r->e[i].cap);
        Py_CLEAR(r->e[i].lookup);
        Py_CLEAR(r->e[i].may_hold);
        Py_CLEAR(r->e[i].remove);
        r->e[i].ops = NULL;
    }
    r->n = 0;
    return 0;
}

static void router_dealloc(Router *r)
{
    PyObject_GC_UnTrack(r);
    router_clear(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int router_init(Router *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"device", NULL};
    PyObject *device;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O", kwlist, &device))
        return -1;
    router_clear(r);
    r->device = Py_NewRef(device);
    r->accept_all = 0;
    r->lookups = r->hits = r->misses = r->inserts = 0;
    r->tick = Py_NewRef(Py_None);
    r->tick_every = 1;
    r->since = 0;
    return 0;
}

static PyObject *router_add(Router *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "Router.add(ops, limit, lookup, may_hold, remove)");
        return NULL;
    }
    if (r->n == MAX_ENGINES) {
        PyErr_Format(PyExc_ValueError, "Router: at most %d engines", MAX_ENGINES);
        return NULL;
    }
    struct fc_engine_ops *ops = NULL;
    if (args[0] != Py_None && !(ops = PyCapsule_GetPointer(args[0], FC_ENGINE_OPS)))
        return NULL;
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    engine *e = &r->e[r->n];
    e->cap = ops ? Py_NewRef(args[0]) : NULL;
    e->ops = ops;
    e->limit = limit;
    e->lookup = Py_NewRef(args[2]);
    e->may_hold = Py_NewRef(args[3]);
    e->remove = Py_NewRef(args[4]);
    /* insertion sort by limit, stable: equal size classes keep their lookup order */
    int j = r->n;
    while (j > 0 && r->e[r->by_size[j - 1]].limit > limit) {
        r->by_size[j] = r->by_size[j - 1];
        j--;
    }
    r->by_size[j] = r->n++;
    Py_RETURN_NONE;
}

/* Engine i's lookup: 1 with (*value, *expiry), 0 a miss, -1 with an exception. */
static int engine_lookup(Router *r, engine *e, PyObject *key, PyObject **value, double *expiry)
{
    if (e->ops && e->ops->lookup)
        return e->ops->lookup(e->ops->ctx, r->device, key, value, expiry);
    PyObject *item = PyObject_CallOneArg(e->lookup, key);
    return item ? fc_item_of(item, value, expiry, "Router: an engine's lookup") : -1;
}

/* Engine i's may_hold: 1, 0, or -1 with an exception. */
static int engine_may_hold(engine *e, PyObject *key)
{
    if (e->ops && e->ops->may_hold && PyBytes_CheckExact(key))
        return e->ops->may_hold(e->ops->ctx, key);
    PyObject *m = PyObject_CallOneArg(e->may_hold, key);
    if (!m)
        return -1;
    int may = PyObject_IsTrue(m);
    Py_DECREF(m);
    return may;
}

/* Navy's lookup for a bytes key: 1 and (*value, *expiry) on a hit, 0 on a miss, -1 with an
 * exception. */
static int router_find(Router *r, PyObject *key, PyObject **value, double *expiry)
{
    r->lookups++;
    for (int i = 0; i < r->n; i++) {
        int found = engine_lookup(r, &r->e[i], key, value, expiry);
        if (found) {
            r->hits += found > 0;
            return found;
        }
    }
    r->misses++;
    return 0;
}

static PyObject *router_lookup(Router *r, PyObject *key)
{
    if (!PyBytes_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "Router.lookup(key): key must be bytes");
        return NULL;
    }
    PyObject *value;
    double expiry;
    int found = router_find(r, key, &value, &expiry);
    return found < 0 ? NULL : found ? Py_BuildValue("(Nd)", value, expiry) : Py_NewRef(Py_None);
}

static PyObject *router_may_hold(Router *r, PyObject *key)
{
    if (!PyBytes_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "Router.may_hold(key): key must be bytes");
        return NULL;
    }
    for (int i = 0; i < r->n; i++) {
        int may = engine_may_hold(&r->e[i], key);
        if (may)
            return may < 0 ? NULL : Py_NewRef(Py_True);
    }
    Py_RETURN_FALSE;
}

/* Put the item into engine ``at`` (-1: the smallest size class that fits, counted as an
 * insert, only under accept_all), having first dropped the key from the others that may
 * hold it. 1 done, 0 declined (nothing inserted; the removes may have run, which the
 * Python form would do anyway), -1 with an exception. */
static int router_put(Router *r, int at, PyObject *key, PyObject *value, PyObject *expiry)
{
    int counted = at < 0;
    if (counted) {
        if (!r->accept_all || !PyBytes_CheckExact(key) || !PyBytes_CheckExact(value))
            return 0;
        Py_ssize_t size = PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value);
        for (int k = 0; k < r->n && at < 0; k++)
            if (size <= r->e[r->by_size[k]].limit)
                at = r->by_size[k];
        if (at < 0)
            return 0;            /* fits no engine: Navy's Python form says so */
    }
    engine *e = &r->e[at];
    if (!e->ops || !e->ops->insert)
        return 0;
    /* the key leaves the other engines first (a BlockCache remove writes its tombstone
     * before returning), so no crash leaves an older copy beside the new one (navy.py) */
    for (int i = 0; i < r->n; i++) {
        if (i == at)
            continue;
        int may = engine_may_hold(&r->e[i], key);
        if (may < 0)
            return -1;
        if (may) {
            PyObject *x = PyObject_CallOneArg(r->e[i].remove, key);
            if (!x)
                return -1;
            Py_DECREF(x);
        }
    }
    int done = e->ops->insert(e->ops->ctx, r->device, key, value, expiry);
    if (!done)
        return 0;               /* declined: the Python form inserts it (the removes above stand) */
    if (counted)
        r->inserts++;           /* as Navy's admission step counts it: before the write's outcome */
    if (done < 0)
        return -1;
    if (r->tick && r->tick != Py_None && ++r->since >= r->tick_every) {
        r->since = 0;
        PyObject *x = PyObject_CallNoArgs(r->tick);
        if (!x)
            return -1;
        Py_DECREF(x);
    }
    return 1;
}

static PyObject *put_result(int done)
{
    return done < 0 ? NULL : done ? Py_NewRef(Py_True) : Py_NewRef(Py_None);
}

static PyObject *router_insert(Router *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "Router.insert(key, value, expiry)");
        return NULL;
    }
    return put_result(router_put(r, -1, args[0], args[1], args[2]));
}

static PyObject *router_place(Router *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "Router.place(engine, key, value, expiry)");
        return NULL;
    }
    long at = PyLong_AsLong(args[0]);
    if (at == -1 && PyErr_Occurred())
        return NULL;
    if (at < 0 || at >= r->n) {
        PyErr_Format(PyExc_IndexError, "Router.place: no engine %ld (%d added)", at, r->n);
        return NULL;
    }
    return put_result(router_put(r, (int)at, args[1], args[2], args[3]));
}

static int find_hook(void *ctx, PyObject *key, PyObject **value, double *expiry)
{
    return router_find((Router *)ctx, key, value, expiry);
}

static int put_hook(void *ctx, PyObject *key, PyObject *value, PyObject *expiry)
{
    return router_put((Router *)ctx, -1, key, value, expiry);
}

/* A capsule named ``name`` around h (PyMem_Malloc'd, freed with it) that keeps the Router
 * alive; NULL with an exception (h freed). */
static void hook_capsule_free(PyObject *cap)
{
    PyMem_Free(PyCapsule_GetPointer(cap, PyCapsule_GetName(cap)));
    Py_XDECREF((PyObject *)PyCapsule_GetContext(cap));
}

static PyObject *hook_capsule(Router *r, void *h, const char *name)
{
    PyObject *cap = PyCapsule_New(h, name, hook_capsule_free);
    if (!cap) {
        PyMem_Free(h);
        return NULL;
    }
    if (PyCapsule_SetContext(cap, Py_NewRef((PyObject *)r)) < 0) {
        Py_DECREF((PyObject *)r);
        Py_DECREF(cap);
        return NULL;
    }
    return cap;
}

static PyObject *router_lookup_hook(Router *r, PyObject *unused)
{
    (void)unused;
    struct fc_lookup *h = PyMem_Malloc(sizeof *h);
    if (!h)
        return PyErr_NoMemory();
    h->fn = find_hook;
    h->ctx = r;
    return hook_capsule(r, h, "engines.navy.lookup");
}

static PyObject *router_insert_hook(Router *r, PyObject *unused)
{
    (void)unused;
    struct fc_insert *h = PyMem_Malloc(sizeof *h);
    if (!h)
        return PyErr_NoMemory();
    h->fn = put_hook;
    h->ctx = r;
    return hook_capsule(r, h, "engines.navy.insert");
}

static PyObject *router_counters(Router *r, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("{sLsLsLsL}", "lookups", r->lookups, "hits", r->hits, "misses", r->misses,
                         "inserts", r->inserts);
}

static PyObject *router_reset_counters(Router *r, PyObject *unused)
{
    (void)unused;
    r->lookups = r->hits = r->misses = r->inserts = 0;
    Py_RETURN_NONE;
}

static PyMethodDef router_methods[] = {
    {"add", (PyCFunction)(void (*)(void))router_add, METH_FASTCALL,
     "add(ops, limit, lookup, may_hold, remove): the next engine, in lookup order"},
    {"lookup", (PyCFunction)router_lookup, METH_O, "lookup(key) -> (value, expiry) or None"},
    {"lookup_hook", (PyCFunction)router_lookup_hook, METH_NOARGS,
     "lookup_hook() -> capsule 'engines.navy.lookup': lookup for a C caller, no tuple"},
    {"may_hold", (PyCFunction)router_may_hold, METH_O, "may_hold(key): False if no engine can hold it"},
    {"insert", (PyCFunction)(void (*)(void))router_insert, METH_FASTCALL,
     "insert(key, value, expiry) -> True when done here, None: use Navy's Python form"},
    {"place", (PyCFunction)(void (*)(void))router_place, METH_FASTCALL,
     "place(engine, key, value, expiry) -> True when done here, None: use Navy's Python form"},
    {"insert_hook", (PyCFunction)router_insert_hook, METH_NOARGS,
     "insert_hook() -> capsule 'engines.navy.insert': insert for a C caller, no bool"},
    {"counters", (PyCFunction)router_counters, METH_NOARGS, "lookups, hits, misses and inserts counted here"},
    {"reset_counters", (PyCFunction)router_reset_counters, METH_NOARGS, "zero the counters"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef router_members[] = {
    {"accept_all", T_INT, offsetof(Router, accept_all), 0,
     "whether admission accepts everything (insert() does the work only then); Navy keeps it"},
    {"engines", T_INT, offsetof(Router, n), READONLY, "engines added"},
    {"tick", T_OBJECT, offsetof(Router, tick), 0, "None, or called after every tick_every-th insert done here"},
    {"tick_every", T_INT, offsetof(Router, tick_every), 0, "inserts between two calls of tick"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RouterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engines._router_c.Router",
    .tp_basicsize = sizeof(Router),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Navy's blocking lookup and insert over its engines, in C (see engines/_router.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)router_init,
    .tp_dealloc = (destructor)router_dealloc,
    .tp_traverse = (traverseproc)router_traverse,
    .tp_clear = (inquiry)router_clear,
    .tp_methods = router_methods,
    .tp_members = router_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "engines._router_c", "The router's blocking forms in C (see engines/_router.c)", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__router_c(void)
{
    if (PyType_Ready(&RouterType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Router", (PyObject *)&RouterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
