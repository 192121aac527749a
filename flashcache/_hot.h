/* flashcache._hot_c's shared declarations: one extension module built from one C file per
 * component, whose objects share these structs. _dram.c (beside dram.py): the DRAM tier's
 * Lru and KeyOrder; _metrics.c (beside metrics.py): the latency Histogram; _core.c (beside
 * core.py): HotPath, the accelerator of RequestCore.get/set, and the module. Nothing here
 * is read from Python objects' attributes: what crosses to Python is these types' declared
 * methods and members. Include after Python.h. */
#ifndef FC_HOT_H
#define FC_HOT_H

#include <structmember.h>
#include <math.h>
#include <time.h>

/* Shared between this module's C files only, not exported from the .so. */
#define FC_SHARED __attribute__((visibility("hidden")))

/* -- the DRAM tier (_dram.c) ------------------------------------------------------------- */
/* An evicted item crosses to Python as flashcache.dram.Evicted, a tuple subclass declared in
 * Python; these are its fields in order, declared once here. The module exports them as
 * EVICTED_FIELDS and dram.py checks at import that Evicted's fields agree, naming the first
 * that does not. */
enum { EV_KEY, EV_VALUE, EV_EXPIRY, EV_CLEAN, EV_NFIELDS };
#define EV_FIELD_NAMES "key", "value", "expiry", "clean"

typedef struct Node {
    PyObject_HEAD
    PyObject *key, *value;      /* bytes, owned */
    double expiry;              /* absolute seconds, 0 = never */
    int clean;                  /* flash holds this very item */
    Py_ssize_t charge;
    struct Node *prev, *next;   /* prev: more recent; next: less recent */
} Node;

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

extern FC_SHARED PyTypeObject NodeType, LruType, KeyOrderType, HistType;

/* The Lru's steps HotPath takes (contracts at their definitions in _dram.c). */
FC_SHARED int now(Lru *s, double *t);
FC_SHARED PyObject *lru_get(Lru *s, PyObject *key);
FC_SHARED PyObject *put(Lru *s, PyObject *key, PyObject *value, double expiry, int clean, double t);
FC_SHARED Node *remove_node(Lru *s, Node *n);
FC_SHARED int in_flight_is(Lru *s, PyObject *key, PyObject *value, PyObject *expiry);
FC_SHARED int settle(Lru *s, PyObject *key, PyObject *value, PyObject *expiry);

/* KeyOrder: the order of one key's changes across tiers, shared by every path of a Cache
 * (flashcache/core.py's RequestCore, and HotPath in _core.c: its accelerator). The race it
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
static inline void ko_acquire(KeyOrder *o, unsigned slot)
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

/* -- the latency histogram (_metrics.c) ------------------------------------------------- */
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


FC_SHARED void observe(Hist *hist, double v);

/* -- HotPath (_core.c): the accelerator of RequestCore.get/set ------------------------ */
enum { H_GETS, H_SETS, H_MISSES, H_HITS_DRAM, H_HITS_FLASH, H_ITEM_BYTES_SET, H_PROMOTIONS,
       H_DEMOTIONS, H_DEMOTIONS_RACED, H_PROMOTIONS_RACED, H_DEMOTIONS_SKIPPED_CLEAN, H_N };
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
    int sets;                   /* sets run here too (else each goes to slow_set) */
    int closed;
    long long c[H_N];
} Hot;

extern FC_SHARED PyTypeObject HotType;

/* A set of a checked key and value (bytes, key + value within fits_max, the cache open)
 * through HotPath's steps: RequestCore.set's, counted in h->c. 0, or -1 with an exception. */
FC_SHARED int hot_store(Hot *h, PyObject *key, PyObject *value);

/* A get of a checked key (bytes within max_key, the cache open) through HotPath's steps:
 * RequestCore.get's, flash lookup included (a blocking read), counted in h->c. 1 with a
 * new reference in *value, 0 a miss, -1 with an exception. */
FC_SHARED int hot_fetch(Hot *h, PyObject *key, PyObject **value);

static inline double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* -- the server's text protocol accelerator (_server.c) -------------------------------- */
extern FC_SHARED PyTypeObject TextPathType, ItemIdsType;

#endif
