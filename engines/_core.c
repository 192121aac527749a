/* engines._core_c: BigHash's blocking hot paths (lookup_item_now, insert_now) as one C call
 * each, plain CPython API. The bucket work itself is _bucket.c (compiled in here as well);
 * this file only strings its steps together with the device's own read and write (called
 * as Python callables, so every Device works and the device keeps its checks, counters and
 * errors) and keeps the counters those steps touch, so a lookup or an insert no longer
 * walks five Python frames and a dozen dict updates.
 *
 * Also Router (Navy's blocking lookup for a bytes key: BlockCache's lookup, then BigHash's
 * core; and the small-item insert) and TagProbe (BlockCache's index arrays for it); see
 * below.
 *
 * BucketCore(offset, bucket_size, nbuckets, generation, bloom, clock, unreadable, corrupt)
 *   bloom       the BloomFilters object (its ``c`` is an fc_bloom *; held for its memory)
 *   clock       the engine's clock (seconds), called for an item with an expiry and per insert
 *   unreadable  bighash._unreadable(bucket, reason, data): logs a corrupt bucket image
 *   corrupt     bighash._corrupt(bucket, why): logs a value checksum mismatch
 * attributes generation and epoch (the write epoch), both read-write;
 * lookup(read, key), insert(read, write, key, value, expiry, stream), bucket(key),
 * set_bloom(bloom), counters() and reset_counters().
 *
 * The same steps, checks and counters as the Python forms in bighash.py (a twin test runs
 * both): BigHash merges counters() into its own and reads generation and epoch through
 * properties, so the generator forms and these share one state. Anything unusual (a key
 * that is not bytes, an item that does not fit, an odd expiry) returns None from insert so
 * the Python form raises its own clear error. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "_bucket.h"
#include "_hooks.h"

enum { C_LOOKUPS, C_HITS, C_MISSES, C_BLOOM_REJECTS, C_FLASH_MISSES, C_EXPIRED_MISSES, C_INSERTS,
       C_REPLACED, C_EVICTIONS, C_EXPIRED_DROPPED, C_INSERTED_BYTES, C_STALE, C_BUCKET_READS,
       C_BUCKET_WRITES, C_BYTES_READ, C_BYTES_WRITTEN, C_WRITE_FAILURES, C_N };
static const char *const NAMES[C_N] = {
    "lookups", "hits", "misses", "bloom_rejects", "flash_misses", "expired_misses", "inserts",
    "replaced", "evictions", "expired_dropped", "inserted_bytes", "stale_buckets", "bucket_reads",
    "bucket_writes", "bytes_read", "bytes_written", "write_failures"};

enum { HEADER = 32, ENTRY = 22, MAX_KEY = 0xFFFF };

/* Attribute and counter names used on every Router call, interned once at import. */
static PyObject *s_index, *s_probe, *s_read, *s_read_into_hook, *s_write, *s_acquire, *s_release,
    *s_generation, *s_clock, *s_counters, *s_regions, *s_open, *s_loaded, *s_fill, *s_view, *s_eviction,
    *s_touch, *s_lookups, *s_misses, *s_hits, *s_entry_reads, *s_bytes_read, *s_buffer_hits;
static struct { PyObject **slot; const char *name; } INTERNED[] = {
    {&s_index, "index"}, {&s_probe, "probe"}, {&s_read, "read"}, {&s_read_into_hook, "read_into_hook"},
    {&s_write, "write"}, {&s_acquire, "acquire"}, {&s_release, "release"}, {&s_generation, "generation"},
    {&s_clock, "clock"}, {&s_counters, "_counters"}, {&s_regions, "regions"}, {&s_open, "open"},
    {&s_loaded, "loaded"}, {&s_fill, "fill"}, {&s_view, "view"}, {&s_eviction, "eviction"},
    {&s_touch, "touch"}, {&s_lookups, "lookups"}, {&s_misses, "misses"}, {&s_hits, "hits"},
    {&s_entry_reads, "entry_reads"}, {&s_bytes_read, "bytes_read"}, {&s_buffer_hits, "buffer_hits"},
};

/* Buckets up to this size are read into the C stack through the hook (no bytes object). */
enum { STACK_BUCKET = 16384 };

/* The read-into hook of the last read's owner, asked once per owner. */
typedef struct {
    PyObject *owner, *cap;              /* the last read's owner and its capsule (or None) */
    struct fc_read_into *fn;
} hook_cache;

typedef struct {
    PyObject_HEAD
    uint64_t offset, nbuckets, generation, epoch;
    uint32_t size;
    fc_bloom *bloom;
    PyObject *bloom_owner, *clock, *unreadable, *corrupt;
    hook_cache hk;
    long long hooked_reads;             /* bucket reads done through the hook */
    long long c[C_N];
} Core;

static int core_traverse(Core *s, visitproc visit, void *arg)
{
    Py_VISIT(s->bloom_owner);
    Py_VISIT(s->clock);
    Py_VISIT(s->unreadable);
    Py_VISIT(s->corrupt);
    Py_VISIT(s->hk.owner);
    Py_VISIT(s->hk.cap);
    return 0;
}

static int core_clear(Core *s)
{
    Py_CLEAR(s->bloom_owner);
    Py_CLEAR(s->clock);
    Py_CLEAR(s->unreadable);
    Py_CLEAR(s->corrupt);
    Py_CLEAR(s->hk.owner);
    Py_CLEAR(s->hk.cap);
    s->hk.fn = NULL;
    s->bloom = NULL;
    return 0;
}

static void core_dealloc(Core *s)
{
    PyObject_GC_UnTrack(s);
    core_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

/* The fc_bloom * a BloomFilters object carries (its ``c_addr``: the address of its ``c``). */
static fc_bloom *bloom_of(PyObject *bloom)
{
    PyObject *addr = PyObject_GetAttrString(bloom, "c_addr");
    if (!addr)
        return NULL;
    unsigned long long a = PyLong_AsUnsignedLongLong(addr);
    Py_DECREF(addr);
    if (a == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (!a) {
        PyErr_SetString(PyExc_ValueError, "BucketCore: the bloom filters have no C view");
        return NULL;
    }
    return (fc_bloom *)(uintptr_t)a;
}

static int set_bloom(Core *s, PyObject *bloom)
{
    fc_bloom *bf = bloom_of(bloom);
    if (!bf)
        return -1;
    if (bf->nbuckets != s->nbuckets) {
        PyErr_Format(PyExc_ValueError, "BucketCore: bloom filters for %llu buckets, the engine has %llu",
                     (unsigned long long)bf->nbuckets, (unsigned long long)s->nbuckets);
        return -1;
    }
    Py_INCREF(bloom);
    Py_XSETREF(s->bloom_owner, bloom);
    s->bloom = bf;
    return 0;
}

static int core_init(Core *s, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"offset", "bucket_size", "nbuckets", "generation", "bloom", "clock",
                             "unreadable", "corrupt", NULL};
    unsigned long long offset, nbuckets, generation;
    unsigned int size;
    PyObject *bloom, *clock, *unreadable, *corrupt;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KIKKOOOO", kwlist, &offset, &size, &nbuckets, &generation,
                                     &bloom, &clock, &unreadable, &corrupt))
        return -1;
    if (size < 512 || size > (1u << 20) || !nbuckets || nbuckets >= (1ull << 32)) {
        PyErr_SetString(PyExc_ValueError, "BucketCore: bucket_size or nbuckets out of range");
        return -1;
    }
    s->offset = offset;
    s->size = size;
    s->nbuckets = nbuckets;
    s->generation = generation;
    s->epoch = 0;
    memset(s->c, 0, sizeof s->c);
    if (set_bloom(s, bloom) < 0)
        return -1;
    Py_INCREF(clock);
    Py_XSETREF(s->clock, clock);
    Py_INCREF(unreadable);
    Py_XSETREF(s->unreadable, unreadable);
    Py_INCREF(corrupt);
    Py_XSETREF(s->corrupt, corrupt);
    return 0;
}

static inline uint64_t key_hash(const char *key, Py_ssize_t len)
{
    return fc_xxh3_64(key, (size_t)len, fc_key_seed);
}

static inline uint64_t bucket_of(const Core *s, uint64_t kh)
{
    return (kh >> 32) * s->nbuckets >> 32;
}

/* The clock's time as a double, or -1 with an exception set. */
static double now(Core *s)
{
    PyObject *t = PyObject_CallNoArgs(s->clock);
    if (!t)
        return -1;
    double v = PyFloat_AsDouble(t);
    Py_DECREF(t);
    return v == -1 && PyErr_Occurred() ? -1 : v;
}

/* read(offset, size) into *view, counted as a bucket read; the length checked as
 * bighash._bucket_read does. Returns the object read (its buffer in *view), or NULL. */
static PyObject *read_bucket(Core *s, PyObject *read, uint64_t b, Py_buffer *view)
{
    PyObject *args[2];
    args[0] = PyLong_FromUnsignedLongLong(s->offset + b * s->size);
    if (!args[0])
        return NULL;
    args[1] = PyLong_FromUnsignedLong(s->size);
    if (!args[1]) {
        Py_DECREF(args[0]);
        return NULL;
    }
    PyObject *data = PyObject_Vectorcall(read, args, 2, NULL);
    Py_DECREF(args[0]);
    Py_DECREF(args[1]);
    if (!data)
        return NULL;
    s->c[C_BUCKET_READS]++;
    s->c[C_BYTES_READ] += s->size;
    if (PyObject_GetBuffer(data, view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(data);
        return NULL;
    }
    if (view->len != (Py_ssize_t)s->size) {
        PyErr_Format(PyExc_ValueError, "BigHash: bucket %llu read returned %zd bytes, expected %u",
                     (unsigned long long)b, view->len, s->size);
        PyBuffer_Release(view);
        Py_DECREF(data);
        return NULL;
    }
    return data;
}

/* The read-into hook behind ``read`` (a bound C method whose object offers
 * read_into_hook()), or NULL; remembered per object, so asked once. NULL with an
 * exception only if asking failed other than by the object having no hook. */
static struct fc_read_into *hook_for(hook_cache *hc, PyObject *read)
{
    if (!PyCFunction_Check(read))
        return NULL;
    PyObject *owner = PyCFunction_GET_SELF(read);
    if (!owner || PyModule_Check(owner))
        return NULL;
    if (owner == hc->owner)
        return hc->fn;
    struct fc_read_into *h = NULL;
    PyObject *cap = PyObject_CallMethodNoArgs(owner, s_read_into_hook);
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

/* Bucket b's bytes: through the device's read-into hook into ``stack`` (STACK_BUCKET
 * bytes) when it has one and takes the read (*data = NULL), else read() (*data the
 * object, its buffer in *view; release with drop_bucket). NULL with an exception. */
static const char *get_bucket(Core *s, PyObject *read, uint64_t b, char *stack, PyObject **data, Py_buffer *view)
{
    *data = NULL;
    if (s->size <= STACK_BUCKET) {
        struct fc_read_into *h = hook_for(&s->hk, read);
        if (h && h->fn(h->ctx, stack, s->size, s->offset + b * s->size)) {
            s->hooked_reads++;
            s->c[C_BUCKET_READS]++;
            s->c[C_BYTES_READ] += s->size;
            return stack;
        }
        if (PyErr_Occurred())
            return NULL;
    }
    *data = read_bucket(s, read, b, view);
    return *data ? view->buf : NULL;
}

static void drop_bucket(PyObject **data, Py_buffer *view)
{
    if (*data) {
        PyBuffer_Release(view);
        Py_CLEAR(*data);
    }
}

/* An image that read as empty: counted (stale) or handed to the engine's logger (as the
 * object read, or a copy of ``img`` when it was read into the stack). 0 or -1. */
static int unreadable(Core *s, uint64_t b, int reason, const char *img, PyObject *data)
{
    if (reason == FC_STALE) {
        s->c[C_STALE]++;
        return 0;
    }
    PyObject *obj = data ? Py_NewRef(data) : PyBytes_FromStringAndSize(img, s->size);
    if (!obj)
        return -1;
    PyObject *r = PyObject_CallFunction(s->unreadable, "KiO", (unsigned long long)b, reason, obj);
    Py_DECREF(obj);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* BigHash.lookup_item_now for a bytes key: 1 and (*value, *expiry) on a hit, 0 on a miss
 * of any kind (counted), -1 with an exception. */
static int core_find(Core *s, PyObject *read, PyObject *key, PyObject **value, double *expiry_out)
{
    const char *k = PyBytes_AS_STRING(key);
    Py_ssize_t klen = PyBytes_GET_SIZE(key);
    s->c[C_LOOKUPS]++;
    uint64_t kh = key_hash(k, klen), b = bucket_of(s, kh);
    if (!fc_bloom_may_contain(s->bloom, b, kh)) {
        s->c[C_BLOOM_REJECTS]++;
        s->c[C_MISSES]++;
        return 0;
    }
    uint64_t epoch = s->epoch;
    PyObject *bloom_owner = s->bloom_owner;   /* a recover() during the read may swap it */
    Py_INCREF(bloom_owner);
    Py_buffer view;
    PyObject *data;
    int out = -1;
    char stack[STACK_BUCKET];
    const char *img = get_bucket(s, read, b, stack, &data, &view);
    if (!img)
        goto release;
    int64_t r = fc_bucket_lookup(img, s->size, (uint32_t)b, s->generation, kh, k, (uint32_t)klen,
                                 epoch == s->epoch && bloom_owner == s->bloom_owner ? s->bloom : NULL);
    if (r < 0 && unreadable(s, b, (int)-r, img, data) < 0)
        goto release;
    if (r <= 0) {
        s->c[C_MISSES]++;
        s->c[C_FLASH_MISSES]++;
        out = 0;
        goto release;
    }
    const uint8_t *d = (const uint8_t *)img;
    uint32_t vstart = (uint32_t)(r & FC_LEN_MASK), vlen = (uint32_t)(r >> FC_VLEN_SHIFT & FC_LEN_MASK);
    uint32_t expiry = 0;
    if (r & FC_HAS_EXPIRY) {
        memcpy(&expiry, d + vstart - (uint32_t)(r >> FC_KLEN_SHIFT & 0xFFFF) - 10, 4);
        double t = now(s);
        if (t == -1 && PyErr_Occurred())
            goto release;
        if (expiry <= t) {
            s->c[C_EXPIRED_MISSES]++;
            s->c[C_MISSES]++;
            out = 0;
            goto release;
        }
    }
    if (!(r & FC_SUM_OK)) {
        PyObject *res = PyObject_CallFunction(s->corrupt, "KN", (unsigned long long)b,
                                              PyUnicode_FromFormat("value checksum mismatch for a key of %u B",
                                                                   (unsigned)(r >> FC_KLEN_SHIFT & 0xFFFF)));
        if (!res)
            goto release;
        Py_DECREF(res);
        s->c[C_MISSES]++;
        out = 0;
        goto release;
    }
    *value = PyBytes_FromStringAndSize((const char *)d + vstart, vlen);
    if (*value) {
        s->c[C_HITS]++;
        *expiry_out = (double)expiry;
        out = 1;
    }
release:
    drop_bucket(&data, &view);
    Py_DECREF(bloom_owner);
    return out;
}

/* lookup(read, key) -> (value, expiry) or None: BigHash.lookup_item_now for a bytes key. */
static PyObject *core_lookup(Core *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "BucketCore.lookup(read, key): key must be bytes");
        return NULL;
    }
    PyObject *value;
    double expiry;
    int r = core_find(s, args[0], args[1], &value, &expiry);
    return r < 0 ? NULL : r ? Py_BuildValue("(Nd)", value, expiry) : Py_NewRef(Py_None);
}

/* The expiry as stored (whole seconds, rounded up), or -1 if Python must judge it. */
static long long expiry_of(PyObject *e)
{
    if (PyLong_CheckExact(e)) {
        long long v = PyLong_AsLongLong(e);
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        return v >= 0 && v <= 0xFFFFFFFFll ? v : -1;
    }
    if (PyFloat_CheckExact(e)) {
        double v = PyFloat_AS_DOUBLE(e);
        return v >= 0 && v <= 4294967295.0 ? (long long)ceil(v) : -1;
    }
    return -1;
}

/* insert(read, write, key, value, expiry, stream) -> the C core's packed result (an int,
 * see fc_bucket_insert), or None when the item is for the Python form to judge (a key or
 * value that is not bytes, a size that does not fit, an odd expiry): BigHash.insert_now. */
static PyObject *core_insert(Core *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "BucketCore.insert(read, write, key, value, expiry, stream)");
        return NULL;
    }
    PyObject *read = args[0], *write = args[1], *key = args[2], *value = args[3], *stream = args[5];
    long long expiry = expiry_of(args[4]);
    if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(value) || expiry < 0)
        Py_RETURN_NONE;
    Py_ssize_t klen = PyBytes_GET_SIZE(key), vlen = PyBytes_GET_SIZE(value);
    if (klen > MAX_KEY || ENTRY + klen + vlen > (Py_ssize_t)s->size - HEADER)
        Py_RETURN_NONE;
    const char *k = PyBytes_AS_STRING(key);
    uint64_t kh = key_hash(k, klen), b = bucket_of(s, kh);
    Py_buffer view;
    PyObject *data, *image = NULL, *out = NULL;
    char stack[STACK_BUCKET];
    const char *img = get_bucket(s, read, b, stack, &data, &view);
    if (!img)
        goto release;
    image = PyBytes_FromStringAndSize(NULL, s->size);
    if (!image)
        goto release;
    double t = now(s);
    if (t == -1 && PyErr_Occurred())
        goto release;
    int64_t r = fc_bucket_insert(img, PyBytes_AS_STRING(image), s->size, (uint32_t)b, s->generation, t, kh,
                                 k, (uint32_t)klen, PyBytes_AS_STRING(value), (uint32_t)vlen, (uint32_t)expiry);
    if (r < 0) {
        PyErr_Format(PyExc_RuntimeError, "BigHash: the C core refused an item of %zd + %zd B", klen, vlen);
        goto release;
    }
    if ((r & FC_REASON_MASK) && unreadable(s, b, (int)(r & FC_REASON_MASK), img, data) < 0)
        goto release;
    drop_bucket(&data, &view);
    PyObject *wargs[3] = {PyLong_FromUnsignedLongLong(s->offset + b * s->size), image, stream};
    if (!wargs[0])
        goto release;
    PyObject *w = PyObject_Vectorcall(write, wargs, 3, NULL);
    Py_DECREF(wargs[0]);
    if (!w) {
        /* the bucket on flash may now be old, new or torn: its filter must not lie (and
         * BigHash's item count, which the failure makes approximate) */
        if (s->bloom->nbytes)
            memset(s->bloom->bits + b * s->bloom->nbytes, 0xFF, s->bloom->nbytes);
        s->epoch++;
        s->c[C_WRITE_FAILURES]++;
        goto release;
    }
    Py_DECREF(w);
    s->epoch++;
    s->c[C_BUCKET_WRITES]++;
    s->c[C_BYTES_WRITTEN] += s->size;
    if (s->bloom->nbytes)
        fc_bloom_rebuild_image(s->bloom, b, PyBytes_AS_STRING(image), s->size);
    s->c[C_INSERTS]++;
    s->c[C_INSERTED_BYTES] += klen + vlen;
    s->c[C_REPLACED] += (r & FC_REPLACED) != 0;
    s->c[C_EVICTIONS] += r >> FC_EVICTED_SHIFT & FC_COUNT_MASK;
    s->c[C_EXPIRED_DROPPED] += r >> FC_EXPIRED_SHIFT & FC_COUNT_MASK;
    out = PyLong_FromLongLong(r);
release:
    drop_bucket(&data, &view);
    Py_XDECREF(image);
    return out;
}

/* bucket(key) -> the bucket index of a bytes key (what a lock stripe is chosen by). */
static PyObject *core_bucket(Core *s, PyObject *key)
{
    if (!PyBytes_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "BucketCore.bucket(key): key must be bytes");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(bucket_of(s, key_hash(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))));
}

static PyObject *core_counters(Core *s, PyObject *unused)
{
    (void)unused;
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < C_N; i++) {
        PyObject *v = PyLong_FromLongLong(s->c[i]);
        if (!v || PyDict_SetItemString(d, NAMES[i], v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    return d;
}

static PyObject *core_reset_counters(Core *s, PyObject *unused)
{
    (void)unused;
    memset(s->c, 0, sizeof s->c);
    Py_RETURN_NONE;
}

static PyObject *core_set_bloom(Core *s, PyObject *bloom)
{
    if (set_bloom(s, bloom) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    {"lookup", (PyCFunction)(void (*)(void))core_lookup, METH_FASTCALL,
     "lookup(read, key) -> (value, expiry) or None (BigHash.lookup_item_now for a bytes key)"},
    {"insert", (PyCFunction)(void (*)(void))core_insert, METH_FASTCALL,
     "insert(read, write, key, value, expiry, stream) -> packed result, or None: use the Python form"},
    {"bucket", (PyCFunction)core_bucket, METH_O, "bucket(key) -> bucket index of a bytes key"},
    {"set_bloom", (PyCFunction)core_set_bloom, METH_O, "set_bloom(bloom): use these filters from now on"},
    {"counters", (PyCFunction)core_counters, METH_NOARGS, "the counters this core kept, as a dict"},
    {"reset_counters", (PyCFunction)core_reset_counters, METH_NOARGS, "zero this core's counters"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef core_members[] = {
    {"generation", T_ULONGLONG, offsetof(Core, generation), 0, "the buckets' generation"},
    {"epoch", T_ULONGLONG, offsetof(Core, epoch), 0, "bumped by every completed (or failed) bucket write"},
    {"nbuckets", T_ULONGLONG, offsetof(Core, nbuckets), READONLY, "buckets"},
    {"hooked_reads", T_LONGLONG, offsetof(Core, hooked_reads), READONLY,
     "bucket reads done through the device's read-into hook (the rest went through read())"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engines._core_c.BucketCore",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "BigHash's blocking lookup and insert in one C call each (see engines/_core.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)core_init,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
};

/* TagProbe(tag, addr, size, hits): BlockCache's index arrays (numpy; uint32 tag and
 * addr, uint16 size hint and hits; held) as C pointers, for probing and for counting a
 * hit from C; engines/blockcache/index.py makes a new one whenever it allocates them. */
typedef struct {
    PyObject_HEAD
    PyObject *obj[4];
    Py_buffer tag, addr, size, hits;
    uint64_t cap;
} Probe;

static void probe_dealloc(Probe *p)
{
    Py_buffer *views[4] = {&p->tag, &p->addr, &p->size, &p->hits};
    for (int i = 0; i < 4; i++)
        if (p->obj[i]) {
            PyBuffer_Release(views[i]);
            Py_DECREF(p->obj[i]);
        }
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static int probe_init(Probe *p, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"tag", "addr", "size", "hits", NULL};
    PyObject *o[4];
    Py_buffer *views[4] = {&p->tag, &p->addr, &p->size, &p->hits};
    static const Py_ssize_t width[4] = {4, 4, 2, 2};
    if (p->obj[0]) {
        PyErr_SetString(PyExc_RuntimeError, "TagProbe: already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO", kwlist, &o[0], &o[1], &o[2], &o[3]))
        return -1;
    int i;
    for (i = 0; i < 4; i++)
        if (PyObject_GetBuffer(o[i], views[i], PyBUF_SIMPLE | PyBUF_WRITABLE) < 0)
            break;
    Py_ssize_t cap = i == 4 ? p->tag.len / 4 : 0;
    if (i == 4 && cap)
        for (int j = 0; j < 4; j++)
            if (views[j]->len != cap * width[j])
                cap = 0;
    if (i < 4 || !cap) {
        while (i--)
            PyBuffer_Release(views[i]);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError,
                            "TagProbe: tag and addr must be uint32 arrays, size and hits uint16, all of one length");
        return -1;
    }
    for (i = 0; i < 4; i++)
        p->obj[i] = Py_NewRef(o[i]);
    p->cap = (uint64_t)cap;
    return 0;
}

/* find(tag) -> the slot holding tag, or -1 (Index.find: one object read, so a reader
 * without BlockCache's lock sees one whole table even while a rebuild replaces it). */
static PyObject *probe_find_py(Probe *p, PyObject *arg)
{
    unsigned long t = PyLong_AsUnsignedLong(arg);
    if (t == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (t > 0xFFFFFFFFul) {
        PyErr_SetString(PyExc_OverflowError, "TagProbe.find: a tag is 32 bits");
        return NULL;
    }
    if (!p->obj[0]) {
        PyErr_SetString(PyExc_RuntimeError, "TagProbe: not initialised");
        return NULL;
    }
    return PyLong_FromLongLong(fc_index_find(p->tag.buf, p->addr.buf, p->cap, (uint32_t)t));
}

static PyMethodDef probe_methods[] = {
    {"find", (PyCFunction)probe_find_py, METH_O, "find(tag) -> the slot holding tag, or -1"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ProbeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engines._core_c.TagProbe",
    .tp_basicsize = sizeof(Probe),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "BlockCache's index arrays as C pointers (see engines/_core.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)probe_init,
    .tp_dealloc = (destructor)probe_dealloc,
    .tp_methods = probe_methods,
};

/* Router(bighash_core, blockcache, bc_lookup, device, bc_seed): Navy.lookup_item_now for a
 * bytes key in one C call: BlockCache first when its index (blockcache.index.probe, read
 * on every call: the index may be replaced) holds the key's tag, then BigHash's core with
 * device.read (also looked up on every call). Either engine may be None. BlockCache's
 * lookup is bc_lookup(key) (Python: under its lock) until set_bc(lock, found) is called;
 * after that it runs here too (bc_find below), under the same lock, with the entry read
 * through the device's read-into hook when it has one. Counts lookups, hits and misses
 * (counters(), merged by Navy). */
typedef struct {
    PyObject_HEAD
    Core *bh;
    PyObject *bc, *bc_lookup, *device;
    PyObject *locks, *stream, *bc_remove;   /* insert's, from set_insert(); NULL until then */
    PyObject *bc_lock, *bc_found;            /* BlockCache's lookup in C, from set_bc(); NULL until then */
    uint64_t bc_offset, bc_align, bc_upr, bc_io;
    hook_cache hk;
    long long bc_hooked;                     /* BlockCache entry reads done through the hook */
    Py_ssize_t small_max;
    int accept_all;
    uint64_t bc_seed;
    long long lookups, hits, misses, inserts;
} Router;

static int router_traverse(Router *r, visitproc visit, void *arg)
{
    Py_VISIT(r->bh);
    Py_VISIT(r->bc);
    Py_VISIT(r->bc_lookup);
    Py_VISIT(r->device);
    Py_VISIT(r->locks);
    Py_VISIT(r->stream);
    Py_VISIT(r->bc_remove);
    Py_VISIT(r->bc_lock);
    Py_VISIT(r->bc_found);
    Py_VISIT(r->hk.owner);
    Py_VISIT(r->hk.cap);
    return 0;
}

static int router_clear(Router *r)
{
    Py_CLEAR(r->bh);
    Py_CLEAR(r->bc);
    Py_CLEAR(r->bc_lookup);
    Py_CLEAR(r->device);
    Py_CLEAR(r->locks);
    Py_CLEAR(r->stream);
    Py_CLEAR(r->bc_remove);
    Py_CLEAR(r->bc_lock);
    Py_CLEAR(r->bc_found);
    Py_CLEAR(r->hk.owner);
    Py_CLEAR(r->hk.cap);
    r->hk.fn = NULL;
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
    static char *kwlist[] = {"bighash_core", "blockcache", "bc_lookup", "device", "bc_seed", NULL};
    PyObject *bh, *bc, *bcl, *device;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOK", kwlist, &bh, &bc, &bcl, &device, &seed))
        return -1;
    if (bh != Py_None && !PyObject_TypeCheck(bh, &CoreType)) {
        PyErr_SetString(PyExc_TypeError, "Router: bighash_core must be a BucketCore or None");
        return -1;
    }
    router_clear(r);
    r->bh = bh == Py_None ? NULL : (Core *)Py_NewRef(bh);
    r->bc = bc == Py_None ? NULL : Py_NewRef(bc);
    r->bc_lookup = Py_NewRef(bcl);
    r->device = Py_NewRef(device);
    r->bc_seed = seed;
    r->lookups = r->hits = r->misses = r->inserts = 0;
    r->accept_all = 0;
    return 0;
}

/* BlockCache's index arrays (blockcache.index.probe, read on every call: the index may be
 * replaced), a new reference, or NULL with an exception. */
static Probe *probe_of(Router *r)
{
    PyObject *index = PyObject_GetAttr(r->bc, s_index);
    if (!index)
        return NULL;
    PyObject *probe = PyObject_GetAttr(index, s_probe);
    Py_DECREF(index);
    if (probe && !PyObject_TypeCheck(probe, &ProbeType)) {
        Py_DECREF(probe);
        PyErr_SetString(PyExc_TypeError, "Router: blockcache.index.probe must be a TagProbe");
        return NULL;
    }
    return (Probe *)probe;
}

static inline int64_t probe_find(Probe *p, uint32_t tag)
{
    return fc_index_find(p->tag.buf, p->addr.buf, p->cap, tag);
}

static inline uint64_t bc_key_hash(Router *r, PyObject *key)
{
    return fc_xxh3_64(PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key), r->bc_seed);
}

/* 1 if BlockCache's index holds the tag of the key hashing to kh (bc_key_hash), 0 if not,
 * -1 with an exception. */
static int bc_may_hold(Router *r, uint64_t kh)
{
    Probe *p = probe_of(r);
    if (!p)
        return -1;
    int64_t slot = probe_find(p, (uint32_t)(kh >> 32));
    Py_DECREF(p);
    return slot >= 0;
}

static int lock_call(PyObject *lock, PyObject *name);

/* BlockCache's entry (engines/blockcache/entry.py): a 44-byte little-endian header, then
 * key and value. */
enum { BC_HEADER = 44, BC_VERSION = 1, BC_STACK = 32768, BC_MAX_HITS = 0xFFFF };
static const uint64_t BC_CHECKSUM_SEED = 0x9B05688C2B3E6C1Full;

static inline uint16_t le16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* counters[name] += n in BlockCache's counter dict; 0 or -1. */
static int bump(PyObject *counters, PyObject *name, long long n)
{
    PyObject *v = PyDict_GetItemWithError(counters, name);
    if (!v) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_KeyError, "Router: BlockCache has no counter %R", name);
        return -1;
    }
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    PyObject *nv = PyLong_FromLongLong(x + n);
    if (!nv)
        return -1;
    int rc = PyDict_SetItem(counters, name, nv);
    Py_DECREF(nv);
    return rc;
}

/* An attribute that is an int, as uint64_t; 0 or -1 with an exception. */
static int attr_u64(PyObject *o, PyObject *name, uint64_t *out)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (!v)
        return -1;
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    Py_DECREF(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *out = x;
    return 0;
}

/* The units an index size hint stands for (index.code_units). */
static inline uint64_t code_units(uint16_t code)
{
    return code < 0x8000 ? (uint64_t)code + 1 : ((uint64_t)(code & 0x7FFF) + 1) * 16;
}

/* entry.checksum of the entry at h (length bytes): xxh3 over header bytes [0, 8) then
 * [16, length), taken as one run with the checksum field overwritten by the header's first
 * 8 bytes meanwhile, then put back. */
static uint64_t entry_checksum(uint8_t *h, uint64_t length)
{
    uint8_t saved[8];
    memcpy(saved, h + 8, 8);
    memcpy(h + 8, h, 8);
    uint64_t sum = fc_xxh3_64((const char *)h + 8, length - 8, BC_CHECKSUM_SEED);
    memcpy(h + 8, saved, 8);
    return sum;
}

/* Whether d[pos:end] is an intact entry (with ``verify``: its checksum too) of BlockCache's
 * generation, for this key, not expired: 1 with *vstart, *vlen, *expiry; 0 for anything
 * else (BlockCache._lookup_found then judges, counts and logs it); -1 with an exception.
 * With ``verify`` d is ours to write (entry_checksum writes, then restores, 8 bytes). */
static int bc_entry(Router *r, uint8_t *d, uint64_t pos, uint64_t end, int verify, PyObject *key, uint64_t kh,
                    uint64_t *vstart, uint32_t *vlen, uint32_t *expiry)
{
    if (pos + BC_HEADER > end)
        return 0;
    uint8_t *h = d + pos;
    uint16_t klen = le16(h + 40);
    uint64_t length = BC_HEADER + (uint64_t)klen + le32(h + 32);
    if (memcmp(h, "FCBC", 4) || le16(h + 4) != BC_VERSION || le16(h + 6) != BC_HEADER || pos + length > end)
        return 0;
    if (verify && entry_checksum(h, length) != le64(h + 8))
        return 0;
    uint64_t generation;
    if (attr_u64(r->bc, s_generation, &generation) < 0)
        return -1;
    if (le64(h + 16) != generation || le64(h + 24) != kh || klen != PyBytes_GET_SIZE(key) ||
        memcmp(h + BC_HEADER, PyBytes_AS_STRING(key), klen))
        return 0;
    *expiry = le32(h + 36);
    if (*expiry) {
        PyObject *t = PyObject_CallMethodNoArgs(r->bc, s_clock);
        if (!t)
            return -1;
        double now = PyFloat_AsDouble(t);
        Py_DECREF(t);
        if (now == -1 && PyErr_Occurred())
            return -1;
        if (*expiry <= now)
            return 0;
    }
    *vstart = pos + BC_HEADER + klen;
    *vlen = le32(h + 32);
    return 1;
}

/* BlockCache.lookup_item_now for a bytes key, the caller holding BlockCache's lock: the
 * same plan (index probe; the open region's buffer, or one read of the entry's aligned
 * extent through the device's read-into hook or its read()), the entry checked here, and
 * for a hit the same counters, index hit count and eviction touch. Any other outcome goes,
 * with the bytes already read, to BlockCache._lookup_found (Python), which counts and logs
 * it as the Python form does. 1 with (*value, *expiry), 0 a miss, -1 with an exception. */
static int bc_find_locked(Router *r, PyObject *key, uint64_t kh, PyObject **value, double *expiry_out)
{
    int out = -1, from_buffer = 0, have_view = 0;
    PyObject *counters, *regions = NULL, *read = NULL, *data = NULL, *obj = NULL;
    Probe *p = NULL;
    Py_buffer view;
    uint8_t stack[BC_STACK], *heap = NULL, *d;
    uint64_t pos, start = 0, length = 0, end, open, fill;
    uint32_t tag = (uint32_t)(kh >> 32);
    if (!(counters = PyObject_GetAttr(r->bc, s_counters)))
        return -1;
    if (!PyDict_CheckExact(counters)) {
        PyErr_SetString(PyExc_TypeError, "Router: blockcache._counters must be a dict");
        goto done;
    }
    if (bump(counters, s_lookups, 1) < 0 || !(p = probe_of(r)))
        goto done;
    int64_t slot = probe_find(p, tag);
    if (slot < 0) {
        out = bump(counters, s_misses, 1) < 0 ? -1 : 0;
        goto done;
    }
    uint64_t addr = ((uint32_t *)p->addr.buf)[slot], units = code_units(((uint16_t *)p->size.buf)[slot]);
    uint64_t region = addr / r->bc_upr, unit = addr % r->bc_upr;
    if (!(regions = PyObject_GetAttr(r->bc, s_regions)) || attr_u64(regions, s_open, &open) < 0)
        goto done;
    if (region == open) {
        if (!(obj = PyObject_GetAttr(regions, s_loaded)))
            goto done;
        int loaded = PyObject_IsTrue(obj);
        Py_CLEAR(obj);
        if (loaded < 0)
            goto done;
        from_buffer = loaded;
    }
    if (from_buffer) {          /* the open region's DRAM buffer: nothing to read or verify */
        pos = unit * r->bc_align;
        if (attr_u64(regions, s_fill, &fill) < 0 || !(obj = PyObject_GetAttr(regions, s_view)) ||
            PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
            goto done;
        have_view = 1;
        end = fill * r->bc_align;
        if (end > (uint64_t)view.len)
            end = (uint64_t)view.len;
        d = view.buf;
    } else {
        start = r->bc_offset + addr * r->bc_align;
        uint64_t stop = start + (units < r->bc_upr - unit ? units : r->bc_upr - unit) * r->bc_align;
        if (r->bc_io > r->bc_align) {   /* widen to the device's blocks (regions are whole blocks) */
            pos = start % r->bc_io;
            start -= pos;
            stop = (stop + r->bc_io - 1) / r->bc_io * r->bc_io;
        } else {
            pos = 0;
        }
        length = stop - start;
        d = length <= BC_STACK ? stack : (heap = PyMem_Malloc(length));
        if (!d) {
            PyErr_NoMemory();
            goto done;
        }
        if (!(read = PyObject_GetAttr(r->device, s_read)))
            goto done;
        struct fc_read_into *h = hook_for(&r->hk, read);
        if (h && h->fn(h->ctx, (char *)d, length, start)) {
            r->bc_hooked++;
            end = length;
        } else {
            if (PyErr_Occurred())
                goto done;
            if (!(data = PyObject_CallFunction(read, "KK", (unsigned long long)start, (unsigned long long)length)) ||
                PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
                goto done;
            have_view = 1;
            end = (uint64_t)view.len;
            if (end > length) {
                PyMem_Free(heap);
                if (!(d = heap = PyMem_Malloc(end))) {
                    PyErr_NoMemory();
                    goto done;
                }
            }
            memcpy(d, view.buf, end);
        }
    }
    uint64_t vstart = 0;
    uint32_t vlen = 0, expiry = 0;
    int ok = bc_entry(r, d, pos, end, !from_buffer, key, kh, &vstart, &vlen, &expiry);
    if (ok < 0)
        goto done;
    if (!ok) {                  /* not a plain hit: BlockCache's Python judges it */
        PyObject *st = from_buffer ? Py_NewRef(Py_None) : PyLong_FromUnsignedLongLong(start);
        PyObject *plan = st ? Py_BuildValue("(OKIKKNK)", key, (unsigned long long)kh, (unsigned)tag,
                                            (unsigned long long)addr, (unsigned long long)pos, st,
                                            (unsigned long long)length) : NULL;
        if (!plan)
            goto done;
        PyObject *arg = from_buffer ? Py_NewRef(Py_None)
                        : data ? Py_NewRef(data) : PyBytes_FromStringAndSize((const char *)d, (Py_ssize_t)end);
        if (!arg) {
            Py_DECREF(plan);
            goto done;
        }
        PyObject *item = PyObject_CallFunctionObjArgs(r->bc_found, plan, arg, NULL);
        Py_DECREF(plan);
        Py_DECREF(arg);
        if (!item)
            goto done;
        out = fc_item_of(item, value, expiry_out, "Router: BlockCache._lookup_found");
        goto done;
    }
    if (!(*value = PyBytes_FromStringAndSize((const char *)d + vstart, vlen)))
        goto done;
    *expiry_out = (double)expiry;
    if (from_buffer ? bump(counters, s_buffer_hits, 1) < 0
                    : bump(counters, s_entry_reads, 1) < 0 || bump(counters, s_bytes_read, (long long)length) < 0)
        goto fail;
    if (bump(counters, s_hits, 1) < 0)
        goto fail;
    Py_DECREF(p);               /* a Python read() may have let the index be rebuilt */
    if (!(p = probe_of(r)))
        goto fail;
    slot = probe_find(p, tag);
    if (slot >= 0 && ((uint32_t *)p->addr.buf)[slot] == addr) {
        uint16_t *hits = (uint16_t *)p->hits.buf + slot;
        if (*hits < BC_MAX_HITS)
            ++*hits;
        if (!(obj = PyObject_GetAttr(r->bc, s_eviction)))
            goto fail;
        PyObject *reg = PyLong_FromUnsignedLongLong(region);
        PyObject *t = reg ? PyObject_CallMethodOneArg(obj, s_touch, reg) : NULL;
        Py_XDECREF(reg);
        if (!t)
            goto fail;
        Py_DECREF(t);
    }
    out = 1;
    goto done;
fail:
    Py_CLEAR(*value);
done:
    if (have_view)
        PyBuffer_Release(&view);
    PyMem_Free(heap);
    Py_XDECREF(obj);
    Py_XDECREF(data);
    Py_XDECREF(read);
    Py_XDECREF(regions);
    Py_XDECREF((PyObject *)p);
    Py_DECREF(counters);
    return out;
}

/* The lookup under BlockCache's lock, taken and released through its own methods. */
static int bc_find(Router *r, PyObject *key, uint64_t kh, PyObject **value, double *expiry)
{
    if (lock_call(r->bc_lock, s_acquire) < 0)
        return -1;
    int found = bc_find_locked(r, key, kh, value, expiry);
    if (lock_call(r->bc_lock, s_release) < 0) {
        if (found > 0)
            Py_DECREF(*value);
        return -1;
    }
    return found;
}

/* Navy's lookup for a bytes key: 1 and (*value, *expiry) on a hit, 0 on a miss, -1 with an
 * exception. */
static int router_find(Router *r, PyObject *key, PyObject **value, double *expiry)
{
    r->lookups++;
    if (r->bc) {
        uint64_t kh = bc_key_hash(r, key);      /* one hash for the probe and the lookup */
        int may = bc_may_hold(r, kh);
        if (may < 0)
            return -1;
        if (may) {
            int found;
            if (r->bc_found) {
                found = bc_find(r, key, kh, value, expiry);
            } else {
                PyObject *item = PyObject_CallOneArg(r->bc_lookup, key);
                found = item ? fc_item_of(item, value, expiry, "Router: bc_lookup") : -1;
            }
            if (found < 0)
                return -1;
            if (found) {
                r->hits++;
                return 1;
            }
        }
    }
    if (r->bh) {
        PyObject *read = PyObject_GetAttr(r->device, s_read);
        if (!read)
            return -1;
        int found = core_find(r->bh, read, key, value, expiry);
        Py_DECREF(read);
        if (found > 0)
            r->hits++;
        if (found)
            return found;
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

static int router_find_hook(void *ctx, PyObject *key, PyObject **value, double *expiry)
{
    return router_find((Router *)ctx, key, value, expiry);
}

/* A capsule named ``name`` around h (PyMem_Malloc'd, freed with it) that keeps the Router
 * alive; NULL with an exception (h freed). */
static void hook_capsule_free(PyObject *cap)
{
    PyMem_Free(PyCapsule_GetPointer(cap, PyCapsule_GetName(cap)));
    Py_XDECREF((PyObject *)PyCapsule_GetContext(cap));
}

static PyObject *router_capsule(Router *r, void *h, const char *name)
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
    h->fn = router_find_hook;
    h->ctx = r;
    return router_capsule(r, h, "engines.navy.lookup");
}

/* may_hold(key): False when neither engine can hold a bytes key (BlockCache's index,
 * BigHash's bloom filter), decided in DRAM alone: Navy.may_hold. */
static PyObject *router_may_hold(Router *r, PyObject *key)
{
    if (!PyBytes_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "Router.may_hold(key): key must be bytes");
        return NULL;
    }
    if (r->bc) {
        int may = bc_may_hold(r, bc_key_hash(r, key));
        if (may)
            return may < 0 ? NULL : Py_NewRef(Py_True);
    }
    if (r->bh) {
        uint64_t kh = key_hash(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
        return PyBool_FromLong(fc_bloom_may_contain(r->bh->bloom, bucket_of(r->bh, kh), kh) != 0);
    }
    Py_RETURN_FALSE;
}

/* bc_may_hold(key): whether BlockCache's index holds a bytes key's tag. */
static PyObject *router_bc_may_hold(Router *r, PyObject *key)
{
    if (!PyBytes_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "Router.bc_may_hold(key): key must be bytes");
        return NULL;
    }
    if (!r->bc)
        Py_RETURN_FALSE;
    int may = bc_may_hold(r, bc_key_hash(r, key));
    return may < 0 ? NULL : PyBool_FromLong(may);
}

/* set_insert(locks, stream, small_max, bc_remove): what insert() needs: BigHash's lock
 * stripes (a list of locks, picked by bucket), its stream, Navy's small_item_max, and
 * bc_remove(key) (Python: BlockCache's remove under its lock). */
static PyObject *router_set_insert(Router *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyList_GET_SIZE(args[0])) {
        PyErr_SetString(PyExc_TypeError, "Router.set_insert(locks, stream, small_max, bc_remove): locks a list");
        return NULL;
    }
    Py_ssize_t small = PyLong_AsSsize_t(args[2]);
    if (small == -1 && PyErr_Occurred())
        return NULL;
    Py_XSETREF(r->locks, Py_NewRef(args[0]));
    Py_XSETREF(r->stream, Py_NewRef(args[1]));
    Py_XSETREF(r->bc_remove, Py_NewRef(args[3]));
    r->small_max = small;
    Py_RETURN_NONE;
}

/* set_bc(lock, found): what BlockCache's lookup in C needs: its lock (Navy's _bc_lock)
 * and found (BlockCache._lookup_found, for every outcome other than a plain hit); its
 * geometry (offset, alignment, units per region, io_alignment: fixed at its init) is read
 * here once. Until called, lookups go through bc_lookup (Python). */
static PyObject *router_set_bc(Router *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !r->bc) {
        PyErr_SetString(PyExc_TypeError, "Router.set_bc(lock, found): needs a Router with a BlockCache");
        return NULL;
    }
    uint64_t v[4];
    static const char *const names[4] = {"offset", "alignment", "_upr", "io_alignment"};
    for (int i = 0; i < 4; i++) {
        PyObject *name = PyUnicode_FromString(names[i]);
        int rc = name ? attr_u64(r->bc, name, &v[i]) : -1;
        Py_XDECREF(name);
        if (rc < 0)
            return NULL;
        if (i && !v[i]) {
            PyErr_Format(PyExc_ValueError, "Router.set_bc: blockcache.%s is 0", names[i]);
            return NULL;
        }
    }
    r->bc_offset = v[0];
    r->bc_align = v[1];
    r->bc_upr = v[2];
    r->bc_io = v[3];
    Py_XSETREF(r->bc_lock, Py_NewRef(args[0]));
    Py_XSETREF(r->bc_found, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

/* Call lock.acquire() or lock.release(); 0 or -1. An exception already set survives a
 * release. */
static int lock_call(PyObject *lock, PyObject *name)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *r = PyObject_CallMethodNoArgs(lock, name);
    Py_XDECREF(r);
    if (et) {
        if (!r)
            PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    return r ? 0 : -1;
}

/* Navy.insert_now's steps for an item this can do (a bytes key and value small enough for
 * BigHash, entry header included, admission accepting all, a plain expiry): count the
 * insert, BigHash's core under the bucket's lock stripe, then drop any BlockCache copy.
 * 1 done, 0 declined having changed nothing (Navy's Python form must do it), -1 with an
 * exception. */
static int router_put(Router *r, PyObject *key, PyObject *value, PyObject *expiry)
{
    if (!r->accept_all || !r->bh || !r->locks || !PyBytes_CheckExact(key) || !PyBytes_CheckExact(value) ||
        expiry_of(expiry) < 0)
        return 0;
    Py_ssize_t klen = PyBytes_GET_SIZE(key), vlen = PyBytes_GET_SIZE(value);
    if (klen + vlen > r->small_max || klen > MAX_KEY || ENTRY + klen + vlen > (Py_ssize_t)r->bh->size - HEADER)
        return 0;
    r->inserts++;
    uint64_t b = bucket_of(r->bh, key_hash(PyBytes_AS_STRING(key), klen));
    PyObject *lock = Py_NewRef(PyList_GET_ITEM(r->locks, (Py_ssize_t)(b % (uint64_t)PyList_GET_SIZE(r->locks))));
    PyObject *res = NULL, *read = NULL, *write = NULL;
    if (lock_call(lock, s_acquire) < 0) {
        Py_DECREF(lock);
        return -1;
    }
    if ((read = PyObject_GetAttr(r->device, s_read)) && (write = PyObject_GetAttr(r->device, s_write))) {
        PyObject *iargs[6] = {read, write, key, value, expiry, r->stream};
        res = core_insert(r->bh, iargs, 6);
    }
    Py_XDECREF(read);
    Py_XDECREF(write);
    int released = lock_call(lock, s_release);
    Py_DECREF(lock);
    if (!res || released < 0) {
        Py_XDECREF(res);
        return -1;
    }
    Py_DECREF(res);         /* an int: we checked everything that makes it None */
    if (r->bc) {
        int may = bc_may_hold(r, bc_key_hash(r, key));
        if (may < 0)
            return -1;
        if (may) {
            PyObject *x = PyObject_CallOneArg(r->bc_remove, key);
            if (!x)
                return -1;
            Py_DECREF(x);
        }
    }
    return 1;
}

/* insert(key, value, expiry) -> True when done here, None when Navy's Python form must do
 * it (router_put). */
static PyObject *router_insert(Router *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "Router.insert(key, value, expiry)");
        return NULL;
    }
    int done = router_put(r, args[0], args[1], args[2]);
    return done < 0 ? NULL : done ? Py_NewRef(Py_True) : Py_NewRef(Py_None);
}

static int router_put_hook(void *ctx, PyObject *key, PyObject *value, PyObject *expiry)
{
    return router_put((Router *)ctx, key, value, expiry);
}

static PyObject *router_insert_hook(Router *r, PyObject *unused)
{
    (void)unused;
    struct fc_insert *h = PyMem_Malloc(sizeof *h);
    if (!h)
        return PyErr_NoMemory();
    h->fn = router_put_hook;
    h->ctx = r;
    return router_capsule(r, h, "engines.navy.insert");
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
    {"lookup", (PyCFunction)router_lookup, METH_O, "lookup(key) -> (value, expiry) or None"},
    {"lookup_hook", (PyCFunction)router_lookup_hook, METH_NOARGS,
     "lookup_hook() -> capsule 'engines.navy.lookup': lookup for a C caller, no tuple"},
    {"may_hold", (PyCFunction)router_may_hold, METH_O, "may_hold(key): False if neither engine can hold it"},
    {"insert", (PyCFunction)(void (*)(void))router_insert, METH_FASTCALL,
     "insert(key, value, expiry) -> True when done here, None: use Navy's Python form"},
    {"insert_hook", (PyCFunction)router_insert_hook, METH_NOARGS,
     "insert_hook() -> capsule 'engines.navy.insert': insert for a C caller, no bool"},
    {"set_insert", (PyCFunction)(void (*)(void))router_set_insert, METH_FASTCALL,
     "set_insert(locks, stream, small_max, bc_remove): what insert() needs"},
    {"bc_may_hold", (PyCFunction)router_bc_may_hold, METH_O, "bc_may_hold(key): BlockCache's index holds its tag"},
    {"set_bc", (PyCFunction)(void (*)(void))router_set_bc, METH_FASTCALL,
     "set_bc(lock, found): BlockCache's lookup in C (see engines/_core.c)"},
    {"counters", (PyCFunction)router_counters, METH_NOARGS, "lookups, hits and misses counted here"},
    {"reset_counters", (PyCFunction)router_reset_counters, METH_NOARGS, "zero the counters"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef router_members[] = {
    {"accept_all", T_INT, offsetof(Router, accept_all), 0,
     "whether admission accepts everything (insert() does the work only then); Navy keeps it"},
    {"bc_hooked_reads", T_LONGLONG, offsetof(Router, bc_hooked), READONLY,
     "BlockCache entry reads done through the device's read-into hook"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RouterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engines._core_c.Router",
    .tp_basicsize = sizeof(Router),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Navy's blocking lookup for a bytes key in one C call (see engines/_core.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)router_init,
    .tp_dealloc = (destructor)router_dealloc,
    .tp_traverse = (traverseproc)router_traverse,
    .tp_clear = (inquiry)router_clear,
    .tp_methods = router_methods,
    .tp_members = router_members,
};

/* encode_entry(buf, pos, khash, generation, expiry, key, value) -> the entry's unaligned
 * length: BlockCache's entry.encode_into in one call (buf a bytearray the caller checked
 * the entry fits, key and value bytes; the header, key, value and checksum written as
 * engines/blockcache/entry.py lays them out, the padding after left as it is). */
static PyObject *encode_entry(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    unsigned long long pos, khash, generation, expiry;
    if (nargs != 7 || !PyByteArray_CheckExact(args[0]) || !PyBytes_CheckExact(args[5]) ||
        !PyBytes_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_entry(buf: bytearray, pos, khash, generation, expiry, key: bytes, value: bytes)");
        return NULL;
    }
    pos = PyLong_AsUnsignedLongLong(args[1]);
    khash = PyLong_AsUnsignedLongLong(args[2]);
    generation = PyLong_AsUnsignedLongLong(args[3]);
    expiry = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t klen = PyBytes_GET_SIZE(args[5]), vlen = PyBytes_GET_SIZE(args[6]);
    uint64_t length = BC_HEADER + (uint64_t)klen + (uint64_t)vlen;
    if (klen > 0xFFFF || (uint64_t)vlen > 0xFFFFFFFFu || expiry > 0xFFFFFFFFu ||
        pos + length > (uint64_t)PyByteArray_GET_SIZE(args[0])) {
        PyErr_SetString(PyExc_ValueError, "encode_entry: the entry does not fit the buffer, or a field overflows");
        return NULL;
    }
    uint8_t *h = (uint8_t *)PyByteArray_AS_STRING(args[0]) + pos;
    uint16_t version = BC_VERSION, hsize = BC_HEADER, kl = (uint16_t)klen, flags = 0;
    uint32_t vl = (uint32_t)vlen, ex = (uint32_t)expiry;
    memcpy(h, "FCBC", 4);
    memcpy(h + 4, &version, 2);
    memcpy(h + 6, &hsize, 2);
    memcpy(h + 16, &generation, 8);
    memcpy(h + 24, &khash, 8);
    memcpy(h + 32, &vl, 4);
    memcpy(h + 36, &ex, 4);
    memcpy(h + 40, &kl, 2);
    memcpy(h + 42, &flags, 2);
    memcpy(h + BC_HEADER, PyBytes_AS_STRING(args[5]), (size_t)klen);
    memcpy(h + BC_HEADER + klen, PyBytes_AS_STRING(args[6]), (size_t)vlen);
    uint64_t sum = entry_checksum(h, length);
    memcpy(h + 8, &sum, 8);
    return PyLong_FromUnsignedLongLong(length);
}

static PyMethodDef module_methods[] = {
    {"encode_entry", (PyCFunction)(void (*)(void))encode_entry, METH_FASTCALL,
     "encode_entry(buf, pos, khash, generation, expiry, key, value) -> length: BlockCache's entry.encode_into"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "engines._core_c",
    "BigHash's blocking hot paths in C (see engines/_core.c)", -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core_c(void)
{
    if (PyType_Ready(&CoreType) < 0 || PyType_Ready(&ProbeType) < 0 || PyType_Ready(&RouterType) < 0)
        return NULL;
    for (size_t i = 0; i < sizeof INTERNED / sizeof INTERNED[0]; i++)
        if (!(*INTERNED[i].slot = PyUnicode_InternFromString(INTERNED[i].name)))
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "BucketCore", (PyObject *)&CoreType) < 0 ||
        PyModule_AddObjectRef(m, "TagProbe", (PyObject *)&ProbeType) < 0 ||
        PyModule_AddObjectRef(m, "Router", (PyObject *)&RouterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
