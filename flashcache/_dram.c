/* flashcache._hot_c, the DRAM tier's part (plain CPython API): the LRU (Lru, below;
 * flashcache/dram.py subclasses it as DramTier and documents the contract) and KeyOrder
 * (at the end: the order of one key's changes across DRAM and flash). Shared structs:
 * _hot.h.
 *
 * Lru: One node object per item, a dict
 * from key to node, and an intrusive doubly linked list for recency: a get is a dict probe
 * and two pointer moves instead of an OrderedDict probe, a tuple unpack and a lock.
 *
 * Thread safety without a lock: every method runs with the GIL held and calls no Python
 * code while the structure is inconsistent. The only Python code it may call is the clock
 * (a Python function in tests), always before it looks at the structure (get() looks the
 * key up again after asking the time), and allocations of tuples and lists (which can run
 * the cyclic GC, and so finalizers), made only between whole steps. So another thread
 * only ever sees the tier between steps, as with the Python lock it replaces.
 *
 * Lru(capacity_bytes, clock, fixed_charge, evicted_type): an item costs
 * len(key) + len(value) + fixed_charge bytes; keys and values must be bytes. Evicted items
 * come back as evicted_type(key, value, expiry, clean) (a tuple subclass).
 *
 * In flight: a dirty item the budget pushes out is on its way to flash, written by the
 * caller later, after other threads may have run; until then neither the tier nor flash
 * holds it. So the tier keeps its node in ``pending`` (key -> node, outside the map and the
 * budget) from the eviction, in the same step, until the caller's demotion ``settle``s it,
 * and any later event of the key in the tier (an insert, a removal, a touch) forgets it: a
 * pending node is the key's newest value whenever the map lacks the key. ``latest`` reads
 * it (Cache's read-modify-write, under the key's lock). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_hot.h"

static void node_dealloc(Node *n)
{
    Py_XDECREF(n->key);
    Py_XDECREF(n->value);
    PyObject_Free(n);
}

FC_SHARED PyTypeObject NodeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.Node",
    .tp_basicsize = sizeof(Node),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)node_dealloc,
};

static inline void unlink_node(Node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
}

static inline void push_front(Lru *s, Node *n)
{
    n->prev = &s->head;
    n->next = s->head.next;
    s->head.next->prev = n;
    s->head.next = n;
}

/* Forget key's in-flight node: the key has a newer event in the tier. 1 if there was one.
 * Freeing the node runs no Python code (a node and bytes). */
static inline int forget_pending(Lru *s, PyObject *key)
{
    if (!PyDict_GET_SIZE(s->pending))
        return 0;
    if (PyDict_DelItem(s->pending, key) == 0)
        return 1;
    PyErr_Clear();                                /* KeyError: none was pending */
    return 0;
}

/* Take a node out of the map and the list and uncharge it; returns the map's reference. */
FC_SHARED Node *remove_node(Lru *s, Node *n)
{
    Py_INCREF(n);
    unlink_node(n);
    s->bytes -= n->charge;
    if (n->expiry)
        s->expiring--;
    if (PyDict_DelItem(s->map, n->key) < 0)       /* cannot fail: the key is there */
        PyErr_Clear();
    forget_pending(s, n->key);
    return n;
}

static int lru_traverse(Lru *s, visitproc visit, void *arg)
{
    Py_VISIT(s->map);
    Py_VISIT(s->pending);
    Py_VISIT(s->clock);
    Py_VISIT(s->evicted);
    return 0;
}

static int lru_clear(Lru *s)
{
    /* the map owns the nodes; the list only points at them */
    s->head.next = s->head.prev = &s->head;
    s->bytes = s->expiring = 0;
    Py_CLEAR(s->map);
    Py_CLEAR(s->pending);
    Py_CLEAR(s->clock);
    Py_CLEAR(s->evicted);
    return 0;
}

static void lru_dealloc(Lru *s)
{
    PyObject_GC_UnTrack(s);
    lru_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int lru_init(Lru *s, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"capacity_bytes", "clock", "fixed_charge", "evicted_type", NULL};
    Py_ssize_t cap, fixed;
    PyObject *clock, *evicted;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "nOnO", kwlist, &cap, &clock, &fixed, &evicted))
        return -1;
    if (cap < 0) {
        PyErr_Format(PyExc_ValueError, "DRAM tier capacity %zd must be >= 0", cap);
        return -1;
    }
    if (!PyType_Check(evicted) || !PyType_IsSubtype((PyTypeObject *)evicted, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "Lru: evicted_type must be a tuple subclass");
        return -1;
    }
    PyObject *map = PyDict_New(), *pending = PyDict_New();
    if (!map || !pending) {
        Py_XDECREF(map);
        Py_XDECREF(pending);
        return -1;
    }
    Py_XSETREF(s->map, map);
    Py_XSETREF(s->pending, pending);
    Py_INCREF(clock);
    Py_XSETREF(s->clock, clock);
    Py_INCREF(evicted);
    Py_XSETREF(s->evicted, (PyTypeObject *)evicted);
    s->head.next = s->head.prev = &s->head;
    s->capacity = cap;
    s->fixed = fixed;
    s->bytes = s->expiring = 0;
    s->hits = s->misses = s->evictions = s->expired = 0;
    return 0;
}

FC_SHARED int now(Lru *s, double *t)
{
    PyObject *r = PyObject_CallNoArgs(s->clock);
    if (!r)
        return -1;
    *t = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return *t == -1 && PyErr_Occurred() ? -1 : 0;
}

static int check_bytes(PyObject *key, PyObject *value)
{
    if (PyBytes_CheckExact(key) && (!value || PyBytes_Check(value)))
        return 0;
    PyErr_Format(PyExc_TypeError, "DRAM tier: keys and values are bytes, not %s",
                 Py_TYPE(PyBytes_CheckExact(key) ? value : key)->tp_name);
    return -1;
}

static PyObject *evicted_item(Lru *s, Node *n)
{
    PyObject *t = s->evicted->tp_alloc(s->evicted, 4);
    if (!t)
        return NULL;
    PyObject *e = PyFloat_FromDouble(n->expiry);
    if (!e) {
        Py_DECREF(t);
        return NULL;
    }
    Py_INCREF(n->key);
    Py_INCREF(n->value);
    PyTuple_SET_ITEM(t, 0, n->key);
    PyTuple_SET_ITEM(t, 1, n->value);
    PyTuple_SET_ITEM(t, 2, e);
    PyTuple_SET_ITEM(t, 3, Py_NewRef(n->clean ? Py_True : Py_False));
    return t;
}

/* Append node n to list out as Evicted. 0, or -1 with an exception set. */
static int append_evicted(Lru *s, PyObject *out, Node *n)
{
    PyObject *e = evicted_item(s, n);
    int r = e ? PyList_Append(out, e) : -1;
    Py_XDECREF(e);
    return r;
}

/* get(key) -> value (now the most recent) or None (absent, or expired and dropped). */
FC_SHARED PyObject *lru_get(Lru *s, PyObject *key)
{
    if (!PyBytes_CheckExact(key) && check_bytes(key, NULL) < 0)
        return NULL;
    Node *n = (Node *)PyDict_GetItemWithError(s->map, key);
    if (n && n->expiry) {
        double t;
        if (now(s, &t) < 0)
            return NULL;
        n = (Node *)PyDict_GetItemWithError(s->map, key);     /* the clock may have let others run */
        if (n && n->expiry && n->expiry <= t) {
            Py_DECREF(remove_node(s, n));
            s->expired++;
            n = NULL;
        }
    }
    if (!n) {
        if (PyErr_Occurred())
            return NULL;
        s->misses++;
        Py_RETURN_NONE;
    }
    unlink_node(n);
    push_front(s, n);
    s->hits++;
    return Py_NewRef(n->value);
}

/* Store (key, value) most recent, then evict down to the budget into a new list. The
 * caller has removed any node of the key. ``t``: the time, or NaN if no item expires.
 * Clean evicted items are listed too: their demotion decides whether flash still holds
 * them (RequestCore.on_flash). */
FC_SHARED PyObject *put(Lru *s, PyObject *key, PyObject *value, double expiry, int clean, double t)
{
    Py_ssize_t charge = PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value) + s->fixed;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    /* a Node is no GC object: making it runs no other thread, so the steps from here to
     * the pending entry below are one */
    Node *n = PyObject_New(Node, &NodeType);
    if (!n) {
        Py_DECREF(out);
        return NULL;
    }
    n->key = Py_NewRef(key);
    n->value = Py_NewRef(value);
    n->expiry = expiry;
    n->clean = clean;
    n->charge = charge;
    forget_pending(s, key);
    if (charge > s->capacity) {          /* too big for DRAM at all: straight to flash */
        if ((!clean && PyDict_SetItem(s->pending, key, (PyObject *)n) < 0) || append_evicted(s, out, n) < 0)
            Py_CLEAR(out);
        Py_DECREF(n);
        return out;
    }
    if (PyDict_SetItem(s->map, key, (PyObject *)n) < 0) {
        Py_DECREF(n);
        Py_DECREF(out);
        return NULL;
    }
    Py_DECREF(n);                        /* the map holds it */
    push_front(s, n);
    s->bytes += charge;
    if (expiry)
        s->expiring++;
    while (s->bytes > s->capacity && s->head.prev != &s->head) {
        Node *old = remove_node(s, s->head.prev);       /* consistent again from here */
        if (old->expiry && old->expiry <= t) {       /* t is NaN when nothing expires */
            s->expired++;
            Py_DECREF(old);
            continue;
        }
        s->evictions++;
        int failed = (!old->clean && PyDict_SetItem(s->pending, old->key, (PyObject *)old) < 0) ||
                     append_evicted(s, out, old) < 0;
        Py_DECREF(old);
        if (failed) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static int parse_item(Lru *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, int dflt_clean,
                      const char *what, double *expiry, int *clean, double *t)
{
    PyObject *clean_arg = nargs == 4 ? args[3] : NULL;
    if (kwnames && PyTuple_GET_SIZE(kwnames)) {      /* only clean= */
        if (PyTuple_GET_SIZE(kwnames) != 1 || nargs != 3 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0)) ||
            PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "clean")) {
            nargs = 0;
        } else {
            clean_arg = args[3];
            nargs = 4;
        }
    }
    if (nargs < 3 || nargs > 4) {
        PyErr_Format(PyExc_TypeError, "DramTier.%s(key, value, expiry, clean=%s)", what,
                     dflt_clean ? "True" : "False");
        return -1;
    }
    if (check_bytes(args[0], args[1]) < 0)
        return -1;
    *expiry = PyFloat_AsDouble(args[2]);
    if (*expiry == -1 && PyErr_Occurred())
        return -1;
    *clean = dflt_clean;
    if (clean_arg && (*clean = PyObject_IsTrue(clean_arg)) < 0)
        return -1;
    *t = NAN;
    if ((s->expiring || *expiry) && now(s, t) < 0)   /* before touching anything */
        return -1;
    return 0;
}

/* set(key, value, expiry, clean=False) -> [Evicted, ...] oldest first. */
static PyObject *lru_set(Lru *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double expiry, t;
    int clean;
    if (parse_item(s, args, nargs, kwnames, 0, "set", &expiry, &clean, &t) < 0)
        return NULL;
    Node *old = (Node *)PyDict_GetItemWithError(s->map, args[0]);
    if (old)
        Py_DECREF(remove_node(s, old));
    else if (PyErr_Occurred())
        return NULL;
    return put(s, args[0], args[1], expiry, clean, t);
}

/* add(key, value, expiry, clean=True) -> (added, [Evicted, ...]): only if absent. */
static PyObject *lru_add(Lru *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    double expiry, t;
    int clean;
    if (parse_item(s, args, nargs, kwnames, 1, "add", &expiry, &clean, &t) < 0)
        return NULL;
    int has = PyDict_Contains(s->map, args[0]);
    if (has < 0)
        return NULL;
    if (has)
        return Py_BuildValue("(ON)", Py_False, PyList_New(0));
    PyObject *out = put(s, args[0], args[1], expiry, clean, t);
    return out ? Py_BuildValue("(ON)", Py_True, out) : NULL;
}

static PyObject *lru_delete(Lru *s, PyObject *key)
{
    if (check_bytes(key, NULL) < 0)
        return NULL;
    Node *n = (Node *)PyDict_GetItemWithError(s->map, key);
    if (!n) {
        if (PyErr_Occurred())
            return NULL;
        return PyBool_FromLong(forget_pending(s, key));   /* one in flight is deleted too */
    }
    Py_DECREF(remove_node(s, n));
    Py_RETURN_TRUE;
}

/* touch(key, expiry) -> a live item gets a new expiry and becomes dirty (flash's copy has
 * the old one) and most recent; False if absent or expired. */
static PyObject *lru_touch(Lru *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "DramTier.touch(key, expiry)");
        return NULL;
    }
    if (check_bytes(args[0], NULL) < 0)
        return NULL;
    double expiry = PyFloat_AsDouble(args[1]), t = NAN;
    if (expiry == -1 && PyErr_Occurred())
        return NULL;
    if (s->expiring && now(s, &t) < 0)
        return NULL;
    Node *n = (Node *)PyDict_GetItemWithError(s->map, args[0]);
    if (!n) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE;
    }
    if (n->expiry && n->expiry <= t)
        Py_RETURN_FALSE;
    forget_pending(s, args[0]);
    s->expiring += (expiry != 0) - (n->expiry != 0);
    n->expiry = expiry;
    n->clean = 0;
    unlink_node(n);
    push_front(s, n);
    Py_RETURN_TRUE;
}

/* peek_expiry(key) -> the item's expiry (0 = never) without touching recency, or None. */
static PyObject *lru_peek_expiry(Lru *s, PyObject *key)
{
    if (check_bytes(key, NULL) < 0)
        return NULL;
    Node *n = (Node *)PyDict_GetItemWithError(s->map, key);
    if (!n) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    return PyFloat_FromDouble(n->expiry);
}

/* latest(key) -> (value, expiry) of the key's newest item the tier knows, expired or not,
 * without touching recency: the one held, else the one in flight to flash; None if
 * neither. Value and expiry are taken before the tuple is made (that may run the GC, and
 * so other threads). */
static PyObject *lru_latest(Lru *s, PyObject *key)
{
    if (check_bytes(key, NULL) < 0)
        return NULL;
    Node *n = (Node *)PyDict_GetItemWithError(s->map, key);
    if (!n && !PyErr_Occurred() && PyDict_GET_SIZE(s->pending))
        n = (Node *)PyDict_GetItemWithError(s->pending, key);
    if (!n) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *v = Py_NewRef(n->value), *e = PyFloat_FromDouble(n->expiry);
    PyObject *t = e ? PyTuple_Pack(2, v, e) : NULL;
    Py_DECREF(v);
    Py_XDECREF(e);
    return t;
}

/* Whether key's in-flight node is this very item (the same value object and expiry: a
 * newer eviction of the key has another). 1, 0, or -1 with an exception. */
FC_SHARED int in_flight_is(Lru *s, PyObject *key, PyObject *value, PyObject *expiry)
{
    if (!PyDict_GET_SIZE(s->pending))
        return 0;
    Node *n = (Node *)PyDict_GetItemWithError(s->pending, key);
    if (!n)
        return PyErr_Occurred() ? -1 : 0;
    double e = PyFloat_AsDouble(expiry);
    if (e == -1 && PyErr_Occurred())
        return -1;
    return n->value == value && n->expiry == e;
}

/* Forget key's in-flight node if it is this item (its demotion is over). 1 if it was
 * (no event of the key in the tier since its eviction), 0 if not, -1 with an exception. */
FC_SHARED int settle(Lru *s, PyObject *key, PyObject *value, PyObject *expiry)
{
    int r = in_flight_is(s, key, value, expiry);
    return r > 0 && PyDict_DelItem(s->pending, key) < 0 ? -1 : r;
}

/* settle(key, value, expiry) -> whether the item was still in flight: its demotion is
 * over (written, or dropped) and the tier forgets it. */
static PyObject *lru_settle(Lru *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "DramTier.settle(key, value, expiry)");
        return NULL;
    }
    int r = check_bytes(args[0], NULL) < 0 ? -1 : settle(s, args[0], args[1], args[2]);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

/* in_flight() -> how many evicted items wait for their demotion to settle. */
static PyObject *lru_in_flight(Lru *s, PyObject *unused)
{
    (void)unused;
    return PyLong_FromSsize_t(PyDict_GET_SIZE(s->pending));
}

/* clear(): drop every item, returning and demoting none, and forget those in flight. The
 * new map is made first (that may run the GC), then swapped in whole; freeing the old one
 * runs no Python code (nodes and bytes only). */
static PyObject *lru_empty(Lru *s, PyObject *unused)
{
    (void)unused;
    PyObject *map = PyDict_New();
    if (!map)
        return NULL;
    PyObject *old = s->map;
    s->map = map;
    s->head.next = s->head.prev = &s->head;
    s->bytes = s->expiring = 0;
    Py_DECREF(old);
    PyDict_Clear(s->pending);
    Py_RETURN_NONE;
}

/* drain() -> every live item as Evicted, least recent first; the tier is left empty. */
static PyObject *lru_drain(Lru *s, PyObject *unused)
{
    (void)unused;
    double t = NAN;
    if (s->expiring && now(s, &t) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    while (s->head.prev != &s->head) {
        Node *n = remove_node(s, s->head.prev);
        int failed = !(n->expiry && n->expiry <= t) && append_evicted(s, out, n) < 0;
        Py_DECREF(n);
        if (failed) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* snapshot() -> every item (expired ones too) as Evicted, least recent first; nothing changes. */
static PyObject *lru_snapshot(Lru *s, PyObject *unused)
{
    (void)unused;
    Py_ssize_t n = PyDict_GET_SIZE(s->map), i = 0;
    PyObject *out = PyList_New(n);
    if (!out)
        return NULL;
    /* no allocation may run the GC between taking a node and storing it: build the tuples
     * with the list already sized, walking a structure no one else can change meanwhile
     * only if nothing allocates a GC object; so copy the node pointers first */
    Node **nodes = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Node *));
    if (!nodes) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    for (Node *x = s->head.prev; x != &s->head && i < n; x = x->prev) {
        Py_INCREF(x);
        nodes[i++] = x;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *e = j < i ? evicted_item(s, nodes[j]) : Py_NewRef(Py_None);
        if (!e) {
            for (Py_ssize_t k = j; k < i; k++)
                Py_DECREF(nodes[k]);
            PyMem_Free(nodes);
            Py_DECREF(out);
            return NULL;
        }
        if (j < i)
            Py_DECREF(nodes[j]);
        PyList_SET_ITEM(out, j, e);
    }
    PyMem_Free(nodes);
    return out;
}

static Py_ssize_t lru_len(Lru *s)
{
    return PyDict_GET_SIZE(s->map);
}

static PyMethodDef lru_methods[] = {
    {"get", (PyCFunction)lru_get, METH_O, NULL},
    {"set", (PyCFunction)(void (*)(void))lru_set, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"add", (PyCFunction)(void (*)(void))lru_add, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"delete", (PyCFunction)lru_delete, METH_O, NULL},
    {"touch", (PyCFunction)(void (*)(void))lru_touch, METH_FASTCALL, NULL},
    {"peek_expiry", (PyCFunction)lru_peek_expiry, METH_O, NULL},
    {"latest", (PyCFunction)lru_latest, METH_O, NULL},
    {"settle", (PyCFunction)(void (*)(void))lru_settle, METH_FASTCALL, NULL},
    {"in_flight", (PyCFunction)lru_in_flight, METH_NOARGS, NULL},
    {"clear", (PyCFunction)lru_empty, METH_NOARGS, NULL},
    {"_drain", (PyCFunction)lru_drain, METH_NOARGS, NULL},
    {"snapshot", (PyCFunction)lru_snapshot, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef lru_members[] = {
    {"capacity", T_PYSSIZET, offsetof(Lru, capacity), READONLY, NULL},
    {"used_bytes", T_PYSSIZET, offsetof(Lru, bytes), READONLY, NULL},
    {"hits", T_LONGLONG, offsetof(Lru, hits), 0, NULL},
    {"misses", T_LONGLONG, offsetof(Lru, misses), 0, NULL},
    {"evictions", T_LONGLONG, offsetof(Lru, evictions), 0, NULL},
    {"expired", T_LONGLONG, offsetof(Lru, expired), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods lru_as_sequence = {.sq_length = (lenfunc)lru_len};

FC_SHARED PyTypeObject LruType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.Lru",
    .tp_basicsize = sizeof(Lru),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The DRAM tier's LRU (see flashcache/_dram.c; flashcache.dram.DramTier documents it)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)lru_init,
    .tp_dealloc = (destructor)lru_dealloc,
    .tp_traverse = (traverseproc)lru_traverse,
    .tp_clear = (inquiry)lru_clear,
    .tp_methods = lru_methods,
    .tp_members = lru_members,
    .tp_as_sequence = &lru_as_sequence,
};

/* KeyOrder: the struct, the rule and the inline steps are in _hot.h. */
static void ko_dealloc(KeyOrder *o)
{
    for (int i = 0; i < (1 << KO_LOCK_BITS); i++)
        if (o->locks[i])
            PyThread_free_lock(o->locks[i]);
    Py_TYPE(o)->tp_free((PyObject *)o);
}

static int ko_init(KeyOrder *o, PyObject *args, PyObject *kw)
{
    if ((kw && PyDict_GET_SIZE(kw)) || !PyArg_ParseTuple(args, ":KeyOrder")) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "KeyOrder() takes no arguments");
        return -1;
    }
    for (int i = 0; i < (1 << KO_LOCK_BITS); i++)
        if (!o->locks[i] && !(o->locks[i] = PyThread_allocate_lock())) {
            PyErr_NoMemory();
            return -1;
        }
    return 0;
}

static PyObject *ko_py_lock(KeyOrder *o, PyObject *key)
{
    unsigned s;
    if (ko_slot(key, &s) < 0)
        return NULL;
    ko_acquire(o, s);
    Py_RETURN_NONE;
}

static PyObject *ko_py_try_lock(KeyOrder *o, PyObject *key)
{
    unsigned s;
    if (ko_slot(key, &s) < 0)
        return NULL;
    return PyBool_FromLong(PyThread_acquire_lock(ko_lock_of(o, s), NOWAIT_LOCK));
}

static PyObject *ko_py_unlock(KeyOrder *o, PyObject *key)
{
    unsigned s;
    if (ko_slot(key, &s) < 0)
        return NULL;
    ko_release(o, s);
    Py_RETURN_NONE;
}

static PyObject *ko_py_stamp(KeyOrder *o, PyObject *key)
{
    unsigned s;
    if (ko_slot(key, &s) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(ko_stamp(o, s));
}

static PyObject *ko_py_ticket(KeyOrder *o, PyObject *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLongLong(ko_ticket(o));
}

static PyObject *ko_py_changed(KeyOrder *o, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned s;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "KeyOrder.changed_since(key, ticket, mine=0)");
        return NULL;
    }
    unsigned long long t = PyLong_AsUnsignedLongLong(args[1]);
    unsigned long long mine = nargs == 3 ? PyLong_AsUnsignedLongLong(args[2]) : 0;
    if (PyErr_Occurred() || ko_slot(args[0], &s) < 0)
        return NULL;
    return PyBool_FromLong(ko_changed(o, s, t, mine));
}

/* lock_all(): take every key's lock, in order (Cache.clear: no change of any key runs
 * meanwhile). The caller holds none of them; no other path holds two, so none deadlocks. */
static PyObject *ko_py_lock_all(KeyOrder *o, PyObject *unused)
{
    (void)unused;
    for (unsigned i = 0; i < (1u << KO_LOCK_BITS); i++)
        ko_acquire(o, i << (KO_STAMP_BITS - KO_LOCK_BITS));
    Py_RETURN_NONE;
}

static PyObject *ko_py_unlock_all(KeyOrder *o, PyObject *unused)
{
    (void)unused;
    for (unsigned i = 0; i < (1u << KO_LOCK_BITS); i++)
        ko_release(o, i << (KO_STAMP_BITS - KO_LOCK_BITS));
    Py_RETURN_NONE;
}

static PyObject *ko_py_clear(KeyOrder *o, PyObject *unused)
{
    (void)unused;
    o->cleared = ko_ticket(o);
    Py_RETURN_NONE;
}

static PyMethodDef ko_methods[] = {
    {"lock", (PyCFunction)ko_py_lock, METH_O, "lock(key): take the key's lock (waits with the GIL released)"},
    {"try_lock", (PyCFunction)ko_py_try_lock, METH_O, "try_lock(key) -> bool: take the key's lock if free"},
    {"unlock", (PyCFunction)ko_py_unlock, METH_O, "unlock(key): release the key's lock"},
    {"stamp", (PyCFunction)ko_py_stamp, METH_O,
     "stamp(key) -> int: the key changed (call under its lock, after the change); the stamp"},
    {"ticket", (PyCFunction)ko_py_ticket, METH_NOARGS, "ticket() -> int: now, for a later changed_since()"},
    {"changed_since", (PyCFunction)(void (*)(void))ko_py_changed, METH_FASTCALL,
     "changed_since(key, ticket, mine=0) -> bool: the key (or its slot) was stamped after ticket by "
     "another change than the one that stamped ``mine``, or clear() ran"},
    {"clear", (PyCFunction)ko_py_clear, METH_NOARGS, "clear(): every key changed (a flush of the whole cache)"},
    {"lock_all", (PyCFunction)ko_py_lock_all, METH_NOARGS,
     "lock_all(): take every key's lock (waits with the GIL released; the caller must hold none)"},
    {"unlock_all", (PyCFunction)ko_py_unlock_all, METH_NOARGS, "unlock_all(): release every key's lock"},
    {NULL, NULL, 0, NULL},
};

FC_SHARED PyTypeObject KeyOrderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.KeyOrder",
    .tp_basicsize = sizeof(KeyOrder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The order of one key's changes across the DRAM tier and flash (see flashcache/_dram.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ko_init,
    .tp_dealloc = (destructor)ko_dealloc,
    .tp_methods = ko_methods,
};
