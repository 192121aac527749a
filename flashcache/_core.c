/* flashcache._hot_c, the core's part: HotPath, the C accelerator of flashcache/core.py's
 * RequestCore.get and .set (RequestCore.accelerate() makes it; tests/test_cache.py's twin test
 * holds it to the Python reference), and the module, which gathers the types of _dram.c and
 * _metrics.c. Shared structs: _hot.h. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_hot.h"
#include "_hooks.h"          /* engines/_hooks.h: the Router's lookup and insert hooks */

/* HotPath: the accelerator of RequestCore.get and RequestCore.set (flashcache/core.py), the
 * whole of Cache.get / Cache.set for the common case in one C call each (RequestCore
 * .accelerate() makes it, with keyword arguments; the Cache binds its get/set over its
 * methods). RequestCore is the reference: the twin test in tests/test_cache.py runs both
 * and compares answers, stats and histogram counts. The common case: the cache is open, the key
 * is bytes of 1..max_key bytes, and for set the value is bytes, key + value within fits_max
 * (every item up to it fits a flash engine), with no ttl and no default TTL, and the cache
 * does not write through. Anything else
 * calls slow_get / slow_set (Cache.get/set, through RequestCore: the same steps, and the
 * errors). The steps are RequestCore's, calling back into Python (its public methods and
 * Navy's) for flash:
 *   get: DRAM; on a miss flash_lookup(key) -> (value, expiry) or None; an expired item
 *        is a miss; a hit is promoted (add, clean), and evicted items are demoted.
 *   set: may_hold(key) -> remove(key) (no stale flash copy may outlive the set); DRAM set;
 *        evicted items are demoted.
 * A get does not depend on how sets are done: with ``sets`` false (RequestCore.accelerate
 * passes it for a default TTL or write-through, whose sets are Python's) only get runs
 * here and every set goes to slow_set.
 * Demotion, RequestCore.demote's steps per item: a clean one (a promoted item) is dropped
 * here if its key changed, skipped if flash still holds it (may_hold: RequestCore.on_flash)
 * and otherwise goes to demote([item]), which writes it back; a dirty one goes to the
 * Router's insert hook (Navy.insert_now's C form; set_insert_hook()) and only one it
 * declines, or any without the hook, to demote([item]).
 * Counters (counters()) merge into RequestCore.counts(); latencies go to the two histograms,
 * one sample per call, as RequestCore's. */
static const char *const HOT_NAMES[H_N] = {"gets", "sets", "misses", "hits_dram", "hits_flash", "item_bytes_set",
                                           "promotions", "demotions", "demotions_raced", "promotions_raced",
                                           "demotions_skipped_clean"};



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
                             "demote", "clock", "slow_get", "slow_set", "max_key", "fits_max", "sets", NULL};
    PyObject *o[10], *order;
    Py_ssize_t max_key, fits_max;
    int sets = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!O!OOOOOOOnn|p", kwlist, &LruType, &o[0], &KeyOrderType, &order,
                                     &HistType, &o[1], &HistType, &o[2], &o[3], &o[4], &o[5], &o[6], &o[7], &o[8],
                                     &o[9], &max_key, &fits_max, &sets))
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
    h->sets = sets;
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

/* demote(list, ticket) in Python: RequestCore.demote, which takes each key's lock itself. */
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
    int r = settle(s, PyTuple_GET_ITEM(e, EV_KEY), PyTuple_GET_ITEM(e, EV_VALUE), PyTuple_GET_ITEM(e, EV_EXPIRY));
    if (et)
        PyErr_Restore(et, ev, tb);
    return et ? 0 : r;
}

/* One evicted item ``e`` (Evicted: key, value, expiry, clean) of demote() below: under its
 * key's lock, dropped if the key changed since ``ticket`` and the item is no longer the
 * key's in flight (a later stamp with the item still in flight was another key's of the
 * same slot), else through the insert hook (counted here, as RequestCore.demote counts); either
 * way settled in the tier under the lock. An item the hook declines goes, still in flight,
 * to demote([item], ticket) after the lock is let go (it takes it again, checks again and
 * settles it). 0, or -1 with an exception. */
static int demote_one_py(Hot *h, PyObject *e, unsigned long long ticket, unsigned long long mine)
{
    PyObject *one = PyList_New(1);
    if (!one)
        return -1;
    PyList_SET_ITEM(one, 0, Py_NewRef(e));
    int failed = demote_py(h, one, ticket, mine) < 0;
    Py_DECREF(one);
    return failed ? -1 : 0;
}

/* A clean evicted item ``e`` (a promoted one: flash held this very item) of demote() below,
 * RequestCore.demote's steps for it under its key's lock: dropped if the key changed since
 * ``ticket`` (a clean item is never the key's in flight), else skipped if flash still holds
 * it (may_hold: RequestCore.on_flash, decided in DRAM), both counted here. One still in
 * flight (never seen: the tier keeps only dirty items in flight) or that flash no longer
 * holds goes to demote([item], ticket) after the lock is let go, which takes it again,
 * decides again and writes it back (CacheLib's rule). 0, or -1 with an exception. */
static int demote_clean(Hot *h, PyObject *e, unsigned long long ticket, unsigned long long mine)
{
    PyObject *key = PyTuple_GET_ITEM(e, EV_KEY);
    unsigned slot;
    if (ko_slot(key, &slot) < 0)
        return -1;
    ko_acquire(h->order, slot);
    int held = in_flight_is(h->dram, key, PyTuple_GET_ITEM(e, EV_VALUE), PyTuple_GET_ITEM(e, EV_EXPIRY));
    if (held == 0 && ko_changed(h->order, slot, ticket, mine)) {
        ko_release(h->order, slot);
        h->c[H_DEMOTIONS_RACED]++;
        return 0;
    }
    if (held == 0) {
        PyObject *m = PyObject_CallOneArg(h->may_hold, key);
        held = m ? PyObject_IsTrue(m) : -1;
        Py_XDECREF(m);
        if (held > 0)
            h->c[H_DEMOTIONS_SKIPPED_CLEAN]++;
        else if (held == 0)
            held = 2;                   /* flash evicted its copy: written back by demote() */
    } else if (held > 0) {
        held = 2;                       /* in flight after all: demote() decides it */
    }
    ko_release(h->order, slot);
    if (held < 0)
        return -1;
    return held == 2 ? demote_one_py(h, e, ticket, mine) : 0;
}

static int demote_one(Hot *h, PyObject *e, unsigned long long ticket, unsigned long long mine)
{
    if (PyTuple_GET_ITEM(e, EV_CLEAN) == Py_True)
        return demote_clean(h, e, ticket, mine);
    if (!h->insert)
        return demote_one_py(h, e, ticket, mine);
    unsigned slot;
    if (ko_slot(PyTuple_GET_ITEM(e, EV_KEY), &slot) < 0)
        return -1;
    ko_acquire(h->order, slot);
    int fresh = in_flight_is(h->dram, PyTuple_GET_ITEM(e, EV_KEY), PyTuple_GET_ITEM(e, EV_VALUE), PyTuple_GET_ITEM(e, EV_EXPIRY));
    if (fresh < 0 || (!fresh && ko_changed(h->order, slot, ticket, mine))) {
        int failed = fresh < 0 || settle_keeping_error(h->dram, e) < 0;
        ko_release(h->order, slot);
        h->c[H_DEMOTIONS_RACED] += !failed;
        return failed ? -1 : 0;
    }
    int done = h->insert->fn(h->insert->ctx, PyTuple_GET_ITEM(e, EV_KEY), PyTuple_GET_ITEM(e, EV_VALUE),
                             PyTuple_GET_ITEM(e, EV_EXPIRY));
    if (done != 0 && settle_keeping_error(h->dram, e) < 0)     /* written, or failed */
        done = -1;
    ko_release(h->order, slot);
    if (done < 0)
        return -1;
    if (done) {
        h->c[H_DEMOTIONS]++;
        return 0;
    }
    return demote_one_py(h, e, ticket, mine);
}

/* Demote the evicted items in ``out``, evicted by a DRAM change made after ``ticket``
 * (KeyOrder's rule), each by demote_one(): a clean one here (demote_clean), a dirty one
 * through the insert hook when there is one, else by demote([item], ticket) in Python.
 * After an error the rest are not written, only settled (no longer in flight), and the
 * first error is raised. */
static int demote(Hot *h, PyObject *out, unsigned long long ticket, unsigned long long mine)
{
    Py_ssize_t n = PyList_GET_SIZE(out);
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

/* A get of a checked key (RequestCore.get's steps: DRAM, else the flash lookup, expiry,
 * promotion and the demotion it causes, counters and the latency sample). 1 with a new
 * reference in *value, 0 for a miss, -1 with an exception. HotPath.get and the server's
 * TextPath (_server.c) both run it. */
FC_SHARED int hot_fetch(Hot *h, PyObject *key, PyObject **value)
{
    double t0 = mono();
    h->c[H_GETS]++;
    PyObject *v = lru_get(h->dram, key);
    if (!v)
        return -1;
    if (v != Py_None) {
        h->c[H_HITS_DRAM]++;
        observe(h->get_hist, mono() - t0);
        *value = v;
        return 1;
    }
    Py_DECREF(v);
    double expiry = 0, t = 0;
    unsigned slot;
    if (ko_slot(key, &slot) < 0)
        return -1;
    unsigned long long ticket = ko_ticket(h->order);
    int found = flash_find(h, key, &v, &expiry);
    if (found < 0 || (found && expiry && now(h->dram, &t) < 0)) {
        if (found > 0)
            Py_DECREF(v);
        return -1;
    }
    if (!found || (expiry && expiry <= t)) {
        if (found)
            Py_DECREF(v);
        h->c[H_MISSES]++;
        observe(h->get_hist, mono() - t0);
        return 0;
    }
    h->c[H_HITS_FLASH]++;
    /* promotion: DramTier.add(key, v, expiry, clean=True), the time asked first (the item's
     * expiry check may have asked it already); only under the key's lock, free at once,
     * and only if the key did not change since the lookup began (RequestCore.promote) */
    Lru *d = h->dram;
    if (!expiry && d->expiring && now(d, &t) < 0) {
        Py_DECREF(v);
        return -1;
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
        out = has ? NULL : put(d, key, v, expiry, 1, t);
        ko_release(h->order, slot);
        if (has < 0 || (!has && !out)) {
            Py_DECREF(v);
            return -1;
        }
    }
    if (out) {
        h->c[H_PROMOTIONS]++;
        int failed = demote(h, out, ticket, 0) < 0;
        Py_DECREF(out);
        if (failed) {
            Py_DECREF(v);
            return -1;
        }
    }
    observe(h->get_hist, mono() - t0);
    *value = v;
    return 1;
}

/* get(key, default=None) */
static PyObject *hot_get(Hot *h, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (h->closed || kwnames || nargs < 1 || nargs > 2 || !plain_key(h, args[0]))
        return PyObject_Vectorcall(h->slow_get, args, nargs, kwnames);
    PyObject *v;
    int r = hot_fetch(h, args[0], &v);
    return r > 0 ? v : r == 0 ? Py_NewRef(nargs == 2 ? args[1] : Py_None) : NULL;
}

/* The set's steps once its checks passed (the common case): counted, under the key's lock
 * (KeyOrder) flash's older copy out, DRAM's in, the key stamped; what the DRAM change
 * evicted demoted after the lock is let go; the latency sampled. HotPath.set and the
 * server's TextPath (_server.c) both run it. 0, or -1 with an exception. */
FC_SHARED int hot_store(Hot *h, PyObject *key, PyObject *value)
{
    double t0 = mono();
    h->c[H_SETS]++;
    h->c[H_ITEM_BYTES_SET] += PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value);
    unsigned slot;
    if (ko_slot(key, &slot) < 0)
        return -1;
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
            out = put(d, key, value, 0.0, 0, t);
    }
    unsigned long long mine = ko_stamp(h->order, slot);   /* even on an error: flash's copy may be gone */
    ko_release(h->order, slot);
    if (!out)
        return -1;
    int failed = demote(h, out, ticket, mine) < 0;
    Py_DECREF(out);
    if (failed)
        return -1;
    observe(h->set_hist, mono() - t0);
    return 0;
}

/* set(key, value, ttl=None) */
static PyObject *hot_set(Hot *h, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* set(key, value) or set(key, value, None): ttl None is the default TTL, which is 0 here
     * (accelerate() declines a cache with another); AsyncCache passes it explicitly */
    if (!h->sets || h->closed || kwnames || (nargs != 2 && !(nargs == 3 && args[2] == Py_None)) ||
        !plain_key(h, args[0]) ||
        !PyBytes_CheckExact(args[1]) ||
        PyBytes_GET_SIZE(args[0]) + PyBytes_GET_SIZE(args[1]) > h->fits_max)
        return PyObject_Vectorcall(h->slow_set, args, nargs, kwnames);
    if (hot_store(h, args[0], args[1]) < 0)
        return NULL;
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
     "get(key, default=None): RequestCore.get behind Cache.get, the common case in C (see flashcache/_core.c)"},
    {"set", (PyCFunction)(void (*)(void))hot_set, METH_FASTCALL | METH_KEYWORDS,
     "set(key, value, ttl=None): RequestCore.set behind Cache.set, the common case in C (see flashcache/_core.c)"},
    {"counters", (PyCFunction)hot_counters, METH_NOARGS, "the counters this path kept, as a dict"},
    {"set_insert_hook", (PyCFunction)hot_set_insert_hook, METH_O,
     "set_insert_hook(capsule or None): demote through the Router's C insert (see flashcache/_core.c)"},
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
    {"sets", T_INT, offsetof(Hot, sets), READONLY, "whether sets run here (else every set takes slow_set)"},
    {NULL, 0, 0, 0, NULL},
};

FC_SHARED PyTypeObject HotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.HotPath",
    .tp_basicsize = sizeof(Hot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The accelerator of RequestCore.get/set: their common case in one C call each (see flashcache/_core.c)",
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
    "The Cache's per-request structures in C: the DRAM tier's LRU and KeyOrder (flashcache/_dram.c), "
    "the latency histogram (_metrics.c), the accelerator of RequestCore.get/set (_core.c) and the server's "
    "text protocol accelerator (_server.c)", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hot_c(void)
{
    if (PyType_Ready(&NodeType) < 0 || PyType_Ready(&LruType) < 0 || PyType_Ready(&HistType) < 0 ||
        PyType_Ready(&KeyOrderType) < 0 || PyType_Ready(&HotType) < 0 ||
        PyType_Ready(&ItemIdsType) < 0 || PyType_Ready(&TextPathType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Lru", (PyObject *)&LruType) < 0 ||
        PyModule_AddObjectRef(m, "Histogram", (PyObject *)&HistType) < 0 ||
        PyModule_AddObjectRef(m, "KeyOrder", (PyObject *)&KeyOrderType) < 0 ||
        PyModule_AddObjectRef(m, "HotPath", (PyObject *)&HotType) < 0 ||
        PyModule_AddObjectRef(m, "ItemIds", (PyObject *)&ItemIdsType) < 0 ||
        PyModule_AddObjectRef(m, "TextPath", (PyObject *)&TextPathType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *fields = Py_BuildValue("(ssss)", EV_FIELD_NAMES);
    int added = fields ? PyModule_AddObjectRef(m, "EVICTED_FIELDS", fields) : -1;
    Py_XDECREF(fields);
    if (added < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

