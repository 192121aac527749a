/* flashcache._hot_c: the Cache's per-request structures in C (plain CPython API): the
 * DRAM tier's LRU (Lru, below; flashcache/dram.py subclasses it as DramTier and documents
 * the contract) and the latency histogram (Histogram, at the end; metrics.py's
 * LatencyHistogram).
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
#include <structmember.h>
#include <math.h>
#include <time.h>
#include "_hooks.h"          /* engines/_hooks.h: the Router's lookup and insert hooks */

typedef struct Node {
    PyObject_HEAD
    PyObject *key, *value;      /* bytes, owned */
    double expiry;              /* absolute seconds, 0 = never */
    int clean;                  /* flash holds this very item */
    Py_ssize_t charge;
    struct Node *prev, *next;   /* prev: more recent; next: less recent */
} Node;

static void node_dealloc(Node *n)
{
    Py_XDECREF(n->key);
    Py_XDECREF(n->value);
    PyObject_Free(n);
}

static PyTypeObject NodeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.Node",
    .tp_basicsize = sizeof(Node),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)node_dealloc,
};

typedef struct {
    PyObject_HEAD
    PyObject *map;              /* key -> Node */
    PyObject *pending;          /* key -> Node: evicted dirty, demotion not yet settled */
    PyObject *clock;
    PyTypeObject *evicted;
    Node head;                  /* sentinel: head.next is the most recent, head.prev the least */
    Py_ssize_t capacity, bytes, fixed, expiring;
    long long hits, misses, evictions, expired;
} Lru;

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
static Node *remove_node(Lru *s, Node *n)
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

static int now(Lru *s, double *t)
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
static PyObject *lru_get(Lru *s, PyObject *key)
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
 * ``skipped``: NULL, or where clean evicted items are counted instead of listed (the hot
 * path's demotion skips them anyway). */
static PyObject *put(Lru *s, PyObject *key, PyObject *value, double expiry, int clean, double t,
                     long long *skipped)
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
        if (skipped && clean)
            (*skipped)++;
        else if ((!clean && PyDict_SetItem(s->pending, key, (PyObject *)n) < 0) || append_evicted(s, out, n) < 0)
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
        if (skipped && old->clean) {
            (*skipped)++;
            Py_DECREF(old);
            continue;
        }
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
    return put(s, args[0], args[1], expiry, clean, t, NULL);
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
    PyObject *out = put(s, args[0], args[1], expiry, clean, t, NULL);
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
static int in_flight_is(Lru *s, PyObject *key, PyObject *value, PyObject *expiry)
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
static int settle(Lru *s, PyObject *key, PyObject *value, PyObject *expiry)
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

static PyTypeObject LruType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.Lru",
    .tp_basicsize = sizeof(Lru),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The DRAM tier's LRU (see flashcache/_hot.c; flashcache.dram.DramTier documents it)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)lru_init,
    .tp_dealloc = (destructor)lru_dealloc,
    .tp_traverse = (traverseproc)lru_traverse,
    .tp_clear = (inquiry)lru_clear,
    .tp_methods = lru_methods,
    .tp_members = lru_members,
    .tp_as_sequence = &lru_as_sequence,
};

/* Histogram(bounds): counts per bucket (bucket i holds values <= bounds[i] and above
 * bounds[i - 1]; the last one what is above every bound) and their sum. observe() is one
 * binary search and two additions, atomic under the GIL. */
typedef struct {
    PyObject_HEAD
    double *bounds;
    unsigned long long *counts;
    Py_ssize_t n;               /* bounds; counts has n + 1 */
    double sum;
} Hist;

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
static void observe(Hist *hist, double v)
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

static PyTypeObject HistType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.Histogram",
    .tp_basicsize = sizeof(Hist),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A histogram whose observe() is one C call (see flashcache/_hot.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)hist_init,
    .tp_dealloc = (destructor)hist_dealloc,
    .tp_methods = hist_methods,
    .tp_getset = hist_getset,
    .tp_members = hist_members,
};

/* KeyOrder: the order of one key's changes across tiers, shared by every path of a Cache
 * (flashcache/cache.py's Python methods, AsyncCache and HotPath below). The race it
 * closes: DRAM evicts an item under the GIL, and the write of it to flash happens later;
 * a delete or set of that key in between must not be undone by the late write, and a get
 * must not promote a flash copy that a newer set or delete has already replaced.
 *
 * The rule (the argument is in flashcache/cache.py's module docstring):
 *   - every set/delete/touch of a key runs its DRAM and flash steps under lock(key) and
 *     stamps the key (a fresh ticket) after them;
 *   - a demotion takes a ticket before the DRAM change that evicted the item, and writes
 *     it to flash under lock(key) only if the key was not stamped after that ticket, or
 *     the item is still the key's in flight in the Lru (then no change of the key came
 *     after its eviction: a later stamp was another key's of the same slot);
 *   - a promotion takes a ticket before its flash lookup, and adds to DRAM only under
 *     try_lock(key) and only if the key was not stamped since (else it just skips).
 * Keys hash into KO_STAMPS stamp slots and KO_LOCKS locks; two keys sharing a slot can
 * only cost a promotion skipped (a later miss), never a wrong value. A lock waits with
 * the GIL released; no path holds two of these locks at once, but lock_all() (clear),
 * which holds none before. */
#define KO_STAMP_BITS 16
#define KO_LOCK_BITS 10

typedef struct {
    PyObject_HEAD
    unsigned long long seq;         /* the last ticket given */
    unsigned long long cleared;     /* ticket of the last clear(): older demotions are dropped */
    unsigned long long stamps[1 << KO_STAMP_BITS];
    PyThread_type_lock locks[1 << KO_LOCK_BITS];
} KeyOrder;

static inline int ko_slot(PyObject *key, unsigned *slot)
{
    Py_hash_t h = PyObject_Hash(key);
    if (h == -1 && PyErr_Occurred())
        return -1;
    *slot = (unsigned)(((unsigned long long)h * 0x9E3779B97F4A7C15ULL) >> (64 - KO_STAMP_BITS));
    return 0;
}

static inline PyThread_type_lock ko_lock_of(KeyOrder *o, unsigned slot)
{
    return o->locks[slot >> (KO_STAMP_BITS - KO_LOCK_BITS)];
}

/* Take slot's lock, waiting with the GIL released. */
static void ko_acquire(KeyOrder *o, unsigned slot)
{
    PyThread_type_lock l = ko_lock_of(o, slot);
    if (PyThread_acquire_lock(l, NOWAIT_LOCK))
        return;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(l, WAIT_LOCK);
    Py_END_ALLOW_THREADS
}

static inline void ko_release(KeyOrder *o, unsigned slot)
{
    PyThread_release_lock(ko_lock_of(o, slot));
}

static inline unsigned long long ko_ticket(KeyOrder *o)
{
    return ++o->seq;
}

static inline unsigned long long ko_stamp(KeyOrder *o, unsigned slot)
{
    return o->stamps[slot] = ++o->seq;
}

/* Whether slot was stamped after ticket (or clear() ran), not counting the stamp ``mine``:
 * a change demoting what its own DRAM step evicted passes its own stamp, since the keys
 * of its slot cannot have changed while it held their lock. */
static inline int ko_changed(KeyOrder *o, unsigned slot, unsigned long long ticket, unsigned long long mine)
{
    return (o->stamps[slot] > ticket && o->stamps[slot] != mine) || o->cleared > ticket;
}

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

static PyTypeObject KeyOrderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.KeyOrder",
    .tp_basicsize = sizeof(KeyOrder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The order of one key's changes across the DRAM tier and flash (see flashcache/_hot.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ko_init,
    .tp_dealloc = (destructor)ko_dealloc,
    .tp_methods = ko_methods,
};

/* HotPath: Cache.get and Cache.set for the common case in one C call each (the Cache binds
 * them over its methods when it has no codec). The common case: the cache is open, the key
 * is bytes of 1..max_key bytes, and for set the value is bytes, key + value within fits_max
 * (every item up to it fits a flash engine), with no ttl and no default TTL, and the cache
 * does not write through. Anything else
 * calls slow_get / slow_set (the Python methods, which do the same steps and raise the
 * errors). The steps are the Python methods', calling back into Python for flash:
 *   get: DRAM; on a miss flash_lookup(key) -> (value, expiry) or None; an expired item
 *        is a miss; a hit is promoted (add, clean), and evicted items that are dirty go
 *        to demote(list) (clean ones are counted as skipped).
 *   set: may_hold(key) -> remove(key) (no stale flash copy may outlive the set); DRAM set;
 *        dirty evicted items to demote(list).
 * With set_insert_hook(), each dirty evicted item goes to the Router's insert hook first
 * (Navy.insert_now's C form) and only one it declines to demote([item]).
 * Counters (counters()) merge into the Cache's; latencies go to the two histograms. */
enum { H_GETS, H_SETS, H_MISSES, H_HITS_DRAM, H_HITS_FLASH, H_ITEM_BYTES_SET, H_SKIPPED_CLEAN, H_PROMOTIONS,
       H_DEMOTIONS, H_DEMOTIONS_RACED, H_PROMOTIONS_RACED, H_N };
static const char *const HOT_NAMES[H_N] = {"gets", "sets", "misses", "hits_dram", "hits_flash", "item_bytes_set",
                                           "demotions_skipped_clean", "promotions", "demotions",
                                           "demotions_raced", "promotions_raced"};

typedef struct {
    PyObject_HEAD
    Lru *dram;
    KeyOrder *order;
    Hist *get_hist, *set_hist;
    PyObject *flash_lookup, *may_hold, *remove, *demote, *clock, *slow_get, *slow_set;
    PyObject *lookup_cap;       /* the hook's capsule, or NULL */
    struct fc_lookup *lookup;
    PyObject *insert_cap;       /* the insert hook's capsule, or NULL */
    struct fc_insert *insert;
    Py_ssize_t max_key, fits_max;
    int closed;
    long long c[H_N];
} Hot;

static PyTypeObject HotType;

static int hot_traverse(Hot *h, visitproc visit, void *arg)
{
    Py_VISIT(h->dram);
    Py_VISIT(h->order);
    Py_VISIT(h->get_hist);
    Py_VISIT(h->set_hist);
    Py_VISIT(h->flash_lookup);
    Py_VISIT(h->may_hold);
    Py_VISIT(h->remove);
    Py_VISIT(h->demote);
    Py_VISIT(h->clock);
    Py_VISIT(h->slow_get);
    Py_VISIT(h->slow_set);
    Py_VISIT(h->lookup_cap);
    Py_VISIT(h->insert_cap);
    return 0;
}

static int hot_clear(Hot *h)
{
    Py_CLEAR(h->dram);
    Py_CLEAR(h->order);
    Py_CLEAR(h->get_hist);
    Py_CLEAR(h->set_hist);
    Py_CLEAR(h->flash_lookup);
    Py_CLEAR(h->may_hold);
    Py_CLEAR(h->remove);
    Py_CLEAR(h->demote);
    Py_CLEAR(h->clock);
    Py_CLEAR(h->slow_get);
    Py_CLEAR(h->slow_set);
    Py_CLEAR(h->lookup_cap);
    h->lookup = NULL;
    Py_CLEAR(h->insert_cap);
    h->insert = NULL;
    return 0;
}

static void hot_dealloc(Hot *h)
{
    PyObject_GC_UnTrack(h);
    hot_clear(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

static int hot_init(Hot *h, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"dram", "order", "get_hist", "set_hist", "flash_lookup", "may_hold", "remove",
                             "demote", "clock", "slow_get", "slow_set", "max_key", "fits_max", NULL};
    PyObject *o[10], *order;
    Py_ssize_t max_key, fits_max;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!O!OOOOOOOnn", kwlist, &LruType, &o[0], &KeyOrderType, &order,
                                     &HistType, &o[1], &HistType, &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8],
                                     &o[9], &max_key, &fits_max))
        return -1;
    hot_clear(h);
    for (int i = 0; i < 10; i++)
        Py_INCREF(o[i]);
    h->order = (KeyOrder *)Py_NewRef(order);
    h->dram = (Lru *)o[0];
    h->get_hist = (Hist *)o[1];
    h->set_hist = (Hist *)o[2];
    h->flash_lookup = o[3];
    h->may_hold = o[4];
    h->remove = o[5];
    h->demote = o[6];
    h->clock = o[7];
    h->slow_get = o[8];
    h->slow_set = o[9];
    h->max_key = max_key;
    h->fits_max = fits_max;
    /* flash_lookup bound to an object with lookup_hook(): call its C function directly */
    if (PyCFunction_Check(o[3]) && PyCFunction_GET_SELF(o[3]) && !PyModule_Check(PyCFunction_GET_SELF(o[3]))) {
        PyObject *cap = PyObject_CallMethod(PyCFunction_GET_SELF(o[3]), "lookup_hook", NULL);
        if (cap) {
            h->lookup = PyCapsule_GetPointer(cap, "engines.navy.lookup");
            if (!h->lookup) {
                Py_DECREF(cap);
                return -1;
            }
            h->lookup_cap = cap;
        } else if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
        } else {
            return -1;
        }
    }
    h->closed = 0;
    memset(h->c, 0, sizeof h->c);
    return 0;
}

static inline double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* demote(list, ticket) in Python: Cache._demote, which takes each key's lock itself. */
static int demote_py(Hot *h, PyObject *items, unsigned long long ticket, unsigned long long mine)
{
    PyObject *t = PyLong_FromUnsignedLongLong(ticket), *m = PyLong_FromUnsignedLongLong(mine);
    PyObject *args[3] = {items, t, m};
    PyObject *r = t && m ? PyObject_Vectorcall(h->demote, args, 3, NULL) : NULL;
    Py_XDECREF(t);
    Py_XDECREF(m);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Settle a key's in-flight item (its demotion is over), keeping any error already set:
 * that one wins. -1 if the settle failed and no error was set before. */
static int settle_keeping_error(Lru *s, PyObject *e)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    int r = settle(s, PyTuple_GET_ITEM(e, 0), PyTuple_GET_ITEM(e, 1), PyTuple_GET_ITEM(e, 2));
    if (et)
        PyErr_Restore(et, ev, tb);
    return et ? 0 : r;
}

/* One evicted item ``e`` (Evicted: key, value, expiry, clean) of demote() below: under its
 * key's lock, dropped if the key changed since ``ticket`` and the item is no longer the
 * key's in flight (a later stamp with the item still in flight was another key's of the
 * same slot), else through the insert hook (counted here, as Cache._demote counts); either
 * way settled in the tier under the lock. An item the hook declines goes, still in flight,
 * to demote([item], ticket) after the lock is let go (it takes it again, checks again and
 * settles it). 0, or -1 with an exception. */
static int demote_one(Hot *h, PyObject *e, unsigned long long ticket, unsigned long long mine)
{
    unsigned slot;
    if (ko_slot(PyTuple_GET_ITEM(e, 0), &slot) < 0)
        return -1;
    ko_acquire(h->order, slot);
    int fresh = in_flight_is(h->dram, PyTuple_GET_ITEM(e, 0), PyTuple_GET_ITEM(e, 1), PyTuple_GET_ITEM(e, 2));
    if (fresh < 0 || (!fresh && ko_changed(h->order, slot, ticket, mine))) {
        int failed = fresh < 0 || settle_keeping_error(h->dram, e) < 0;
        ko_release(h->order, slot);
        h->c[H_DEMOTIONS_RACED] += !failed;
        return failed ? -1 : 0;
    }
    int done = h->insert->fn(h->insert->ctx, PyTuple_GET_ITEM(e, 0), PyTuple_GET_ITEM(e, 1),
                             PyTuple_GET_ITEM(e, 2));
    if (done != 0 && settle_keeping_error(h->dram, e) < 0)     /* written, or failed */
        done = -1;
    ko_release(h->order, slot);
    if (done < 0)
        return -1;
    if (done) {
        h->c[H_DEMOTIONS]++;
        return 0;
    }
    PyObject *one = PyList_New(1);
    if (!one)
        return -1;
    PyList_SET_ITEM(one, 0, Py_NewRef(e));
    int failed = demote_py(h, one, ticket, mine) < 0;
    Py_DECREF(one);
    return failed ? -1 : 0;
}

/* Demote the evicted items in ``out`` (dirty ones: put() counted the clean), evicted by a
 * DRAM change made after ``ticket`` (KeyOrder's rule), each by demote_one() when there is
 * an insert hook, else demote(out, ticket) in Python. After an error the rest are not
 * written, only settled (no longer in flight), and the first error is raised. */
static int demote(Hot *h, PyObject *out, unsigned long long ticket, unsigned long long mine)
{
    Py_ssize_t n = PyList_GET_SIZE(out);
    if (!n)
        return 0;
    if (!h->insert)
        return demote_py(h, out, ticket, mine);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (demote_one(h, PyList_GET_ITEM(out, i), ticket, mine) < 0) {
            while (++i < n)
                settle_keeping_error(h->dram, PyList_GET_ITEM(out, i));
            return -1;
        }
    }
    return 0;
}

/* set_insert_hook(capsule or None): demotions through the Router's insert hook (the Cache
 * gives it when its device is the Navy's own). */
static PyObject *hot_set_insert_hook(Hot *h, PyObject *cap)
{
    struct fc_insert *ins = NULL;
    if (cap != Py_None && !(ins = PyCapsule_GetPointer(cap, "engines.navy.insert")))
        return NULL;
    Py_XSETREF(h->insert_cap, cap == Py_None ? NULL : Py_NewRef(cap));
    h->insert = ins;
    Py_RETURN_NONE;
}

/* The flash lookup: through the Router's lookup hook when flash_lookup offers one (no
 * tuple), else flash_lookup(key) -> (value, expiry) or None. 1 with a new reference in
 * *value, 0 for a miss, -1 with an exception. */
static int flash_find(Hot *h, PyObject *key, PyObject **value, double *expiry)
{
    if (h->lookup)
        return h->lookup->fn(h->lookup->ctx, key, value, expiry);
    PyObject *item = PyObject_CallOneArg(h->flash_lookup, key);
    return item ? fc_item_of(item, value, expiry, "HotPath: flash_lookup") : -1;
}

static inline int plain_key(Hot *h, PyObject *key)
{
    return PyBytes_CheckExact(key) && PyBytes_GET_SIZE(key) > 0 && PyBytes_GET_SIZE(key) <= h->max_key;
}

/* get(key, default=None) */
static PyObject *hot_get(Hot *h, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (h->closed || kwnames || nargs < 1 || nargs > 2 || !plain_key(h, args[0]))
        return PyObject_Vectorcall(h->slow_get, args, nargs, kwnames);
    PyObject *key = args[0], *dflt = nargs == 2 ? args[1] : Py_None;
    double t0 = mono();
    h->c[H_GETS]++;
    PyObject *v = lru_get(h->dram, key);
    if (!v)
        return NULL;
    if (v != Py_None) {
        h->c[H_HITS_DRAM]++;
        observe(h->get_hist, mono() - t0);
        return v;
    }
    Py_DECREF(v);
    double expiry = 0, t = 0;
    unsigned slot;
    if (ko_slot(key, &slot) < 0)
        return NULL;
    unsigned long long ticket = ko_ticket(h->order);
    int found = flash_find(h, key, &v, &expiry);
    if (found < 0 || (found && expiry && now(h->dram, &t) < 0)) {
        if (found > 0)
            Py_DECREF(v);
        return NULL;
    }
    if (!found || (expiry && expiry <= t)) {
        if (found)
            Py_DECREF(v);
        h->c[H_MISSES]++;
        observe(h->get_hist, mono() - t0);
        return Py_NewRef(dflt);
    }
    h->c[H_HITS_FLASH]++;
    /* promotion: DramTier.add(key, v, expiry, clean=True), the time asked first (the item's
     * expiry check may have asked it already); only under the key's lock, free at once,
     * and only if the key did not change since the lookup began (Cache._promote) */
    Lru *d = h->dram;
    if (!expiry && d->expiring && now(d, &t) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    if (!expiry && !d->expiring)
        t = NAN;
    PyObject *out = NULL;
    int locked = PyThread_acquire_lock(ko_lock_of(h->order, slot), NOWAIT_LOCK);
    if (!locked || ko_changed(h->order, slot, ticket, 0)) {
        if (locked)
            ko_release(h->order, slot);
        h->c[H_PROMOTIONS_RACED]++;
    } else {
        ticket = ko_ticket(h->order);               /* for what this DRAM change evicts */
        int has = PyDict_Contains(d->map, key);
        out = has ? NULL : put(d, key, v, expiry, 1, t, &h->c[H_SKIPPED_CLEAN]);
        ko_release(h->order, slot);
        if (has < 0 || (!has && !out)) {
            Py_DECREF(v);
            return NULL;
        }
    }
    if (out) {
        h->c[H_PROMOTIONS]++;
        int failed = demote(h, out, ticket, 0) < 0;
        Py_DECREF(out);
        if (failed) {
            Py_DECREF(v);
            return NULL;
        }
    }
    observe(h->get_hist, mono() - t0);
    return v;
}

/* set(key, value, ttl=None) */
static PyObject *hot_set(Hot *h, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (h->closed || kwnames || nargs != 2 || !plain_key(h, args[0]) || !PyBytes_CheckExact(args[1]) ||
        PyBytes_GET_SIZE(args[0]) + PyBytes_GET_SIZE(args[1]) > h->fits_max)
        return PyObject_Vectorcall(h->slow_set, args, nargs, kwnames);
    PyObject *key = args[0];
    double t0 = mono();
    h->c[H_SETS]++;
    h->c[H_ITEM_BYTES_SET] += PyBytes_GET_SIZE(args[0]) + PyBytes_GET_SIZE(args[1]);
    /* under the key's lock (KeyOrder): flash's older copy out, DRAM's in, the key stamped;
     * what the DRAM change evicted is demoted after the lock is let go */
    unsigned slot;
    if (ko_slot(key, &slot) < 0)
        return NULL;
    ko_acquire(h->order, slot);
    PyObject *out = NULL;
    unsigned long long ticket = 0;
    PyObject *held = PyObject_CallOneArg(h->may_hold, key);
    int yes = held ? PyObject_IsTrue(held) : -1;
    Py_XDECREF(held);
    if (yes > 0) {
        PyObject *r = PyObject_CallOneArg(h->remove, key);
        yes = r ? 0 : -1;
        Py_XDECREF(r);
    }
    /* DramTier.set(key, value, 0): the time asked first, then the old item out */
    Lru *d = h->dram;
    double t = NAN;
    if (yes == 0 && !(d->expiring && now(d, &t) < 0)) {
        ticket = ko_ticket(h->order);
        Node *old = (Node *)PyDict_GetItemWithError(d->map, key);
        if (old)
            Py_DECREF(remove_node(d, old));
        if (old || !PyErr_Occurred())
            out = put(d, key, args[1], 0.0, 0, t, &h->c[H_SKIPPED_CLEAN]);
    }
    unsigned long long mine = ko_stamp(h->order, slot);   /* even on an error: flash's copy may be gone */
    ko_release(h->order, slot);
    if (!out)
        return NULL;
    int failed = demote(h, out, ticket, mine) < 0;
    Py_DECREF(out);
    if (failed)
        return NULL;
    observe(h->set_hist, mono() - t0);
    Py_RETURN_NONE;
}

static PyObject *hot_counters(Hot *h, PyObject *unused)
{
    (void)unused;
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < H_N; i++) {
        PyObject *v = PyLong_FromLongLong(h->c[i]);
        if (!v || PyDict_SetItemString(d, HOT_NAMES[i], v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
        } else {
            Py_DECREF(v);
        }
    }
    return d;
}

static PyMethodDef hot_methods[] = {
    {"get", (PyCFunction)(void (*)(void))hot_get, METH_FASTCALL | METH_KEYWORDS,
     "get(key, default=None): Cache.get, the common case in C (see flashcache/_hot.c)"},
    {"set", (PyCFunction)(void (*)(void))hot_set, METH_FASTCALL | METH_KEYWORDS,
     "set(key, value, ttl=None): Cache.set, the common case in C (see flashcache/_hot.c)"},
    {"counters", (PyCFunction)hot_counters, METH_NOARGS, "the counters this path kept, as a dict"},
    {"set_insert_hook", (PyCFunction)hot_set_insert_hook, METH_O,
     "set_insert_hook(capsule or None): demote through the Router's C insert (see flashcache/_hot.c)"},
    {NULL, NULL, 0, NULL},
};

static PyObject *hot_hooked(Hot *h, void *unused)
{
    (void)unused;
    return PyBool_FromLong(h->lookup != NULL);
}

static PyObject *hot_insert_hooked(Hot *h, void *unused)
{
    (void)unused;
    return PyBool_FromLong(h->insert != NULL);
}

static PyGetSetDef hot_getset[] = {
    {"hooked", (getter)hot_hooked, NULL, "whether flash lookups go through the Router's C hook", NULL},
    {"insert_hooked", (getter)hot_insert_hooked, NULL, "whether demotions go through the Router's C insert hook",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef hot_members[] = {
    {"closed", T_INT, offsetof(Hot, closed), 0, "set when the cache closes: every call takes the slow path"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject HotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.HotPath",
    .tp_basicsize = sizeof(Hot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Cache.get and Cache.set for the common case in one C call each (see flashcache/_hot.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)hot_init,
    .tp_dealloc = (destructor)hot_dealloc,
    .tp_traverse = (traverseproc)hot_traverse,
    .tp_clear = (inquiry)hot_clear,
    .tp_methods = hot_methods,
    .tp_members = hot_members,
    .tp_getset = hot_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "flashcache._hot_c",
    "The Cache's per-request structures in C: the DRAM tier's LRU and the latency histogram "
    "(see flashcache/_hot.c)", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hot_c(void)
{
    if (PyType_Ready(&NodeType) < 0 || PyType_Ready(&LruType) < 0 || PyType_Ready(&HistType) < 0 ||
        PyType_Ready(&KeyOrderType) < 0 || PyType_Ready(&HotType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Lru", (PyObject *)&LruType) < 0 ||
        PyModule_AddObjectRef(m, "Histogram", (PyObject *)&HistType) < 0 ||
        PyModule_AddObjectRef(m, "KeyOrder", (PyObject *)&KeyOrderType) < 0 ||
        PyModule_AddObjectRef(m, "HotPath", (PyObject *)&HotType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
