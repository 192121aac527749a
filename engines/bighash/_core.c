/* engines.bighash._core_c: BigHash's blocking hot paths (lookup_item_now, insert_now) as one
 * C call each, plain CPython API. The bucket work itself is _bucket.c (compiled in here as
 * well); this file strings its steps together with the device's own read and write (called
 * as Python callables, so every Device works and the device keeps its checks, counters and
 * errors) and owns the state those steps touch: the generation, the write epoch, the bloom
 * filters' C view, the lock stripes, the stream and its counters.
 *
 * BucketCore(offset, bucket_size, nbuckets, generation, bloom_bits, bloom_hashes, hits, clock,
 *            unreadable, corrupt, locks, stream, linear=False)
 *   nbuckets    the buckets the extent holds (the capacity); bucket b sits at offset +
 *               b * bucket_size, or with ``linear`` at offset + (nbuckets - 1 - b) *
 *               bucket_size, from the extent's end down, so a BigHash that grows takes
 *               room below it (README, "The split")
 *   linear      the key -> bucket mapping (fc_bucket_of): linear hashing over ``active``
 *               buckets (a BigHash that grows), else the range mapping
 *   bloom_bits  the filters' bytes: a writable buffer of nbuckets * bytes-per-bucket bytes
 *               (BloomFilters.bits; held), bloom_hashes their hash count
 *   hits        the buckets' hit bits (_bucket.h): a writable buffer of nbuckets uint64
 *               (BigHash.hits; held): a lookup sets its entry's bit, an insert hands the
 *               word to fc_bucket_insert and zeroes it once the bucket is written
 *   clock       the engine's clock (seconds), called for an item with an expiry and per insert
 *   unreadable  unreadable(bucket, reason, image): logs a bucket image read as empty
 *   corrupt     corrupt(bucket, why): logs a value checksum mismatch
 *   locks       the lock stripes (a list of threading.RLock): an insert holds
 *               locks[bucket % len(locks)], as BigHash's Python forms do
 *   stream      the placement stream passed back on each write
 * members generation, epoch (the write epoch) and active (the buckets in use, at most
 * nbuckets; BigHash.split moves it), read-write; methods lookup(device,
 * key), insert(device, key, value, expiry), may_hold(key), set_bloom(bits, hashes),
 * engine_ops() (the capsule engines/_engine.h declares), counters() and reset_counters().
 * Module constants: BUCKET_FIELDS and ENTRY_FIELDS (field name -> (offset, size), from the
 * FC_BH_* / FC_BE_* offsets _bucket.c works with), MAGIC, FORMAT_VERSION, KEY_SEED and
 * CHECKSUM_SEED: bighash.py checks its own definitions against them on import.
 *
 * The same steps, checks and counters as the Python forms in bighash.py (a twin test runs
 * both): BigHash merges counters() into its own and reads generation and epoch through
 * properties, so the generator forms and these share one state. Anything unusual (a key
 * that is not bytes, an item that does not fit, an odd expiry) makes insert decline (None)
 * so the Python form raises its own clear error. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "_xxh3.h"
#include "_bucket.h"
#include "_hooks.h"
#include "_device.h"
#include "_engine.h"
#include "_locks.h"
#include "_module.h"

enum { C_LOOKUPS, C_HITS, C_MISSES, C_BLOOM_REJECTS, C_FLASH_MISSES, C_EXPIRED_MISSES, C_INSERTS,
       C_REPLACED, C_EVICTIONS, C_EXPIRED_DROPPED, C_INSERTED_BYTES, C_STALE, C_BUCKET_READS,
       C_BUCKET_WRITES, C_BYTES_READ, C_BYTES_WRITTEN, C_WRITE_FAILURES, C_N };
static const char *const NAMES[C_N] = {
    "lookups", "hits", "misses", "bloom_rejects", "flash_misses", "expired_misses", "inserts",
    "replaced", "evictions", "expired_dropped", "inserted_bytes", "stale_buckets", "bucket_reads",
    "bucket_writes", "bytes_read", "bytes_written", "write_failures"};

enum { MAX_KEY = 0xFFFF };

/* Buckets up to this size are read into the C stack through the hook (no bytes object). */
enum { STACK_BUCKET = 16384 };

typedef struct {
    PyObject_HEAD
    uint64_t offset, nbuckets, generation, epoch, active;
    uint32_t size;
    int linear;
    fc_bloom bloom;                     /* over bloom_view's bytes */
    Py_buffer bloom_view;
    uint64_t *hits;                     /* over hits_view's bytes: nbuckets words */
    Py_buffer hits_view;
    PyObject *hits_obj;
    PyObject *bloom_bits, *clock, *unreadable, *corrupt, *locks, *stream;
    fc_hook_cache hk;
    long long hooked_reads;             /* bucket reads done through the hook */
    long long c[C_N];
} Core;

static int core_traverse(Core *s, visitproc visit, void *arg)
{
    Py_VISIT(s->bloom_bits);
    Py_VISIT(s->hits_obj);
    Py_VISIT(s->clock);
    Py_VISIT(s->unreadable);
    Py_VISIT(s->corrupt);
    Py_VISIT(s->locks);
    Py_VISIT(s->stream);
    return fc_hook_traverse(&s->hk, visit, arg);
}

static void drop_bloom(Core *s)
{
    if (s->bloom_bits) {
        PyBuffer_Release(&s->bloom_view);
        Py_CLEAR(s->bloom_bits);
    }
    memset(&s->bloom, 0, sizeof s->bloom);
}

static int core_clear(Core *s)
{
    drop_bloom(s);
    if (s->hits_obj) {
        PyBuffer_Release(&s->hits_view);
        Py_CLEAR(s->hits_obj);
    }
    s->hits = NULL;
    Py_CLEAR(s->clock);
    Py_CLEAR(s->unreadable);
    Py_CLEAR(s->corrupt);
    Py_CLEAR(s->locks);
    Py_CLEAR(s->stream);
    fc_hook_clear(&s->hk);
    return 0;
}

static void core_dealloc(Core *s)
{
    PyObject_GC_UnTrack(s);
    core_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

/* Use ``bits`` (a writable buffer of nbuckets * nbytes bytes) with ``hashes`` hashes as the
 * bloom filters from now on; 0 or -1 with an exception (nothing changed). */
static int set_bloom(Core *s, PyObject *bits, int hashes)
{
    Py_buffer view;
    if (PyObject_GetBuffer(bits, &view, PyBUF_SIMPLE | PyBUF_WRITABLE) < 0)
        return -1;
    uint64_t n = s->nbuckets;
    if (view.len % (Py_ssize_t)n || (uint64_t)view.len / n > 4096 || hashes < 1 || hashes > 32) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "BucketCore: bloom filters of %zd bytes and %d hashes do not fit %llu "
                     "buckets (up to 4096 bytes each, 1 to 32 hashes)", view.len, hashes, (unsigned long long)n);
        return -1;
    }
    drop_bloom(s);
    s->bloom_view = view;
    s->bloom_bits = Py_NewRef(bits);
    s->bloom.bits = view.buf;
    s->bloom.nbuckets = n;
    s->bloom.nbytes = (uint32_t)((uint64_t)view.len / n);
    s->bloom.k = (uint32_t)hashes;
    return 0;
}

static int core_init(Core *s, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"offset", "bucket_size", "nbuckets", "generation", "bloom_bits", "bloom_hashes",
                             "hits", "clock", "unreadable", "corrupt", "locks", "stream", "linear", NULL};
    unsigned long long offset, nbuckets, generation;
    unsigned int size;
    int hashes;
    PyObject *bits, *hits, *clock, *unreadable, *corrupt, *locks, *stream;
    int linear = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KIKKOiOOOOO!O|p", kwlist, &offset, &size, &nbuckets, &generation,
                                     &bits, &hashes, &hits, &clock, &unreadable, &corrupt, &PyList_Type, &locks,
                                     &stream, &linear))
        return -1;
    if (size < 512 || size > (1u << 20) || !nbuckets || nbuckets >= (1ull << 32) || !PyList_GET_SIZE(locks)) {
        PyErr_SetString(PyExc_ValueError, "BucketCore: bucket_size, nbuckets or locks out of range");
        return -1;
    }
    core_clear(s);
    s->offset = offset;
    s->size = size;
    s->nbuckets = s->active = nbuckets;
    s->linear = linear;
    s->generation = generation;
    s->epoch = 0;
    memset(s->c, 0, sizeof s->c);
    if (set_bloom(s, bits, hashes) < 0)
        return -1;
    if (PyObject_GetBuffer(hits, &s->hits_view, PyBUF_SIMPLE | PyBUF_WRITABLE) < 0)
        return -1;
    s->hits_obj = Py_NewRef(hits);
    if ((uint64_t)s->hits_view.len != nbuckets * 8) {
        PyErr_Format(PyExc_ValueError, "BucketCore: hits of %zd bytes do not fit %llu buckets (8 bytes each)",
                     s->hits_view.len, nbuckets);
        return -1;
    }
    s->hits = s->hits_view.buf;
    s->clock = Py_NewRef(clock);
    s->unreadable = Py_NewRef(unreadable);
    s->corrupt = Py_NewRef(corrupt);
    s->locks = Py_NewRef(locks);
    s->stream = Py_NewRef(stream);
    return 0;
}

static inline uint64_t key_hash(const char *key, Py_ssize_t len)
{
    return fc_hash(key, (size_t)len, fc_key_seed);
}

/* The bucket count the mapping uses (active, kept within the capacity). */
static inline uint64_t bucket_of_n(const Core *s)
{
    uint64_t n = s->active;
    return n && n <= s->nbuckets ? n : s->nbuckets;
}

/* The key hash's bucket (fc_bucket_of, the one mapping). */
static inline uint64_t bucket_of(const Core *s, uint64_t kh)
{
    return fc_bucket_of(kh, bucket_of_n(s), s->linear);
}

/* Bucket b's device offset: from the extent's start up, or with ``linear`` (a BigHash that
 * grows) from its end down. */
static inline uint64_t bucket_at(const Core *s, uint64_t b)
{
    return s->offset + (s->linear ? s->nbuckets - 1 - b : b) * s->size;
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
    args[0] = PyLong_FromUnsignedLongLong(bucket_at(s, b));
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

/* Bucket b's bytes: through the device's read-into hook into ``stack`` (STACK_BUCKET
 * bytes) when it has one and takes the read (*data = NULL), else read() (*data the
 * object, its buffer in *view; release with drop_bucket). NULL with an exception. */
static const char *get_bucket(Core *s, PyObject *read, uint64_t b, char *stack, PyObject **data, Py_buffer *view)
{
    *data = NULL;
    if (s->size <= STACK_BUCKET) {
        struct fc_read_into *h = fc_hook_for(&s->hk, read);
        if (h && h->fn(h->ctx, stack, s->size, bucket_at(s, b))) {
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

/* BigHash.lookup_item for a bytes key, with ``read`` (a device's read): 1 and (*value,
 * *expiry) on a hit, 0 on a miss of any kind (counted), -1 with an exception. */
static int core_find(Core *s, PyObject *read, PyObject *key, PyObject **value, double *expiry_out)
{
    const char *k = PyBytes_AS_STRING(key);
    Py_ssize_t klen = PyBytes_GET_SIZE(key);
    s->c[C_LOOKUPS]++;
    uint64_t kh = key_hash(k, klen), b = bucket_of(s, kh);
    if (!fc_bloom_may_contain(&s->bloom, b, kh)) {
        s->c[C_BLOOM_REJECTS]++;
        s->c[C_MISSES]++;
        return 0;
    }
    uint64_t epoch = s->epoch;
    PyObject *bloom_bits = Py_NewRef(s->bloom_bits);   /* a recover() during the read may swap it */
    Py_buffer view;
    PyObject *data;
    int out = -1;
    char stack[STACK_BUCKET];
    const char *img = get_bucket(s, read, b, stack, &data, &view);
    if (!img)
        goto release;
    int same = epoch == s->epoch && bloom_bits == s->bloom_bits;   /* no write landed during the read */
    int64_t r = fc_bucket_lookup(img, s->size, (uint32_t)b, s->generation, kh, k, (uint32_t)klen,
                                 same ? &s->bloom : NULL, same ? s->hits + b : NULL);
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
    uint32_t klen_stored = (uint32_t)(r >> FC_KLEN_SHIFT & 0xFFFF);
    uint32_t expiry = 0;
    if (r & FC_HAS_EXPIRY) {
        memcpy(&expiry, d + vstart - klen_stored - FC_BE_SIZE + FC_BE_EXPIRY, 4);
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
                                                                   (unsigned)klen_stored));
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
    Py_DECREF(bloom_bits);
    return out;
}

static int ops_lookup(void *ctx, PyObject *device, PyObject *key, PyObject **value, double *expiry)
{
    PyObject *read = fc_device_read(device);
    if (!read)
        return -1;
    int r = core_find((Core *)ctx, read, key, value, expiry);
    Py_DECREF(read);
    return r;
}

/* lookup(device, key) -> (value, expiry) or None: BigHash.lookup_item_now for a bytes key. */
static PyObject *core_lookup(Core *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "BucketCore.lookup(device, key): key must be bytes");
        return NULL;
    }
    PyObject *value;
    double expiry;
    int r = ops_lookup(s, args[0], args[1], &value, &expiry);
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

/* The bucket write of an insert, the caller holding the bucket's lock stripe: 1 with the
 * packed result (see fc_bucket_insert) in *packed, -1 with an exception. */
static int put_locked(Core *s, PyObject *device, PyObject *key, PyObject *value, long long expiry, uint64_t kh,
                      uint64_t b, int64_t *packed)
{
    Py_ssize_t klen = PyBytes_GET_SIZE(key), vlen = PyBytes_GET_SIZE(value);
    Py_buffer view;
    PyObject *data = NULL, *image = NULL, *read = NULL, *write = NULL;
    int out = -1;
    char stack[STACK_BUCKET];
    if (!(read = fc_device_read(device)) || !(write = fc_device_write(device)))
        goto release;
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
                                 PyBytes_AS_STRING(key), (uint32_t)klen, PyBytes_AS_STRING(value), (uint32_t)vlen,
                                 (uint32_t)expiry, s->hits[b], bucket_of_n(s), s->linear);
    if (r < 0) {
        PyErr_Format(PyExc_RuntimeError, "BigHash: the C core refused an item of %zd + %zd B", klen, vlen);
        goto release;
    }
    if ((r & FC_REASON_MASK) && unreadable(s, b, (int)(r & FC_REASON_MASK), img, data) < 0)
        goto release;
    drop_bucket(&data, &view);
    PyObject *wargs[3] = {PyLong_FromUnsignedLongLong(bucket_at(s, b)), image, s->stream};
    if (!wargs[0])
        goto release;
    PyObject *w = PyObject_Vectorcall(write, wargs, 3, NULL);
    Py_DECREF(wargs[0]);
    if (!w) {
        /* the bucket on flash may now be old, new or torn: its filter must not lie (and
         * BigHash's item count, which the failure makes approximate) */
        if (s->bloom.nbytes)
            memset(s->bloom.bits + b * s->bloom.nbytes, 0xFF, s->bloom.nbytes);
        s->hits[b] = 0;
        s->epoch++;
        s->c[C_WRITE_FAILURES]++;
        goto release;
    }
    Py_DECREF(w);
    s->hits[b] = 0;
    s->epoch++;
    s->c[C_BUCKET_WRITES]++;
    s->c[C_BYTES_WRITTEN] += s->size;
    if (s->bloom.nbytes)
        fc_bloom_rebuild_image(&s->bloom, b, PyBytes_AS_STRING(image), s->size);
    s->c[C_INSERTS]++;
    s->c[C_INSERTED_BYTES] += klen + vlen;
    s->c[C_REPLACED] += (r & FC_REPLACED) != 0;
    s->c[C_EVICTIONS] += r >> FC_EVICTED_SHIFT & FC_COUNT_MASK;
    s->c[C_EXPIRED_DROPPED] += r >> FC_EXPIRED_SHIFT & FC_COUNT_MASK;
    *packed = r;
    out = 1;
release:
    drop_bucket(&data, &view);
    Py_XDECREF(image);
    Py_XDECREF(read);
    Py_XDECREF(write);
    return out;
}

/* BigHash.insert_now for what C takes (bytes key and value that fit a bucket, a plain
 * expiry), under the bucket's lock stripe: 1 with *packed, 0 declined having changed
 * nothing, -1 with an exception (the lock released either way). */
static int core_put(Core *s, PyObject *device, PyObject *key, PyObject *value, PyObject *expiry_obj,
                    int64_t *packed)
{
    long long expiry = expiry_of(expiry_obj);
    if (!PyBytes_CheckExact(key) || !PyBytes_CheckExact(value) || expiry < 0)
        return 0;
    Py_ssize_t klen = PyBytes_GET_SIZE(key), vlen = PyBytes_GET_SIZE(value);
    if (klen > MAX_KEY || FC_BE_SIZE + klen + vlen > (Py_ssize_t)s->size - FC_BH_SIZE)
        return 0;
    uint64_t kh = key_hash(PyBytes_AS_STRING(key), klen);
    for (;;) {
        /* a split (which holds every stripe) may move the key while we wait for the lock:
         * the bucket is chosen again under it, and the lock too if that changed it */
        uint64_t b = bucket_of(s, kh);
        PyObject *lock = Py_NewRef(PyList_GET_ITEM(s->locks, (Py_ssize_t)(b % (uint64_t)PyList_GET_SIZE(s->locks))));
        int out = -1, again = 0;
        if (fc_lock(lock) == 0) {
            if (bucket_of(s, kh) == b)
                out = put_locked(s, device, key, value, expiry, kh, b, packed);
            else
                again = 1;
            if (fc_unlock(lock) < 0)
                out = -1, again = 0;
        }
        Py_DECREF(lock);
        if (!again)
            return out;
    }
}

static int ops_insert(void *ctx, PyObject *device, PyObject *key, PyObject *value, PyObject *expiry)
{
    int64_t packed;
    return core_put((Core *)ctx, device, key, value, expiry, &packed);
}

/* insert(device, key, value, expiry) -> the C core's packed result (an int, see
 * fc_bucket_insert), or None when the item is for the Python form to judge. */
static PyObject *core_insert(Core *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "BucketCore.insert(device, key, value, expiry)");
        return NULL;
    }
    int64_t packed;
    int r = core_put(s, args[0], args[1], args[2], args[3], &packed);
    return r < 0 ? NULL : r ? PyLong_FromLongLong(packed) : Py_NewRef(Py_None);
}

static int ops_may_hold(void *ctx, PyObject *key)
{
    Core *s = ctx;
    uint64_t kh = key_hash(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
    return fc_bloom_may_contain(&s->bloom, bucket_of(s, kh), kh) != 0;
}

/* may_hold(key): the bloom filter's answer for a bytes key (BigHash.may_hold). */
static PyObject *core_may_hold(Core *s, PyObject *key)
{
    if (!PyBytes_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "BucketCore.may_hold(key): key must be bytes");
        return NULL;
    }
    return PyBool_FromLong(ops_may_hold(s, key));
}

static PyObject *core_engine_ops(Core *s, PyObject *unused)
{
    (void)unused;
    struct fc_engine_ops ops = {.may_hold = ops_may_hold, .lookup = ops_lookup, .insert = ops_insert, .ctx = s};
    return fc_engine_ops_capsule(&ops, (PyObject *)s);
}

static PyObject *core_counters(Core *s, PyObject *unused)
{
    (void)unused;
    return fc_counters_dict(NAMES, s->c, C_N);
}

static PyObject *core_reset_counters(Core *s, PyObject *unused)
{
    (void)unused;
    memset(s->c, 0, sizeof s->c);
    Py_RETURN_NONE;
}

static PyObject *core_set_bloom(Core *s, PyObject *const *args, Py_ssize_t nargs)
{
    long hashes;
    if (nargs != 2 || ((hashes = PyLong_AsLong(args[1])) == -1 && PyErr_Occurred())) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "BucketCore.set_bloom(bits, hashes)");
        return NULL;
    }
    if (set_bloom(s, args[0], hashes < 0 || hashes > 32 ? 0 : (int)hashes) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    {"lookup", (PyCFunction)(void (*)(void))core_lookup, METH_FASTCALL,
     "lookup(device, key) -> (value, expiry) or None (BigHash.lookup_item_now for a bytes key)"},
    {"insert", (PyCFunction)(void (*)(void))core_insert, METH_FASTCALL,
     "insert(device, key, value, expiry) -> packed result, or None: use the Python form"},
    {"may_hold", (PyCFunction)core_may_hold, METH_O, "may_hold(key): the bloom filter's answer for a bytes key"},
    {"set_bloom", (PyCFunction)(void (*)(void))core_set_bloom, METH_FASTCALL,
     "set_bloom(bits, hashes): use these filters from now on"},
    {"engine_ops", (PyCFunction)core_engine_ops, METH_NOARGS,
     "engine_ops() -> capsule 'engines.engine.ops': may_hold, lookup and insert for the router's C"},
    {"counters", (PyCFunction)core_counters, METH_NOARGS, "the counters this core kept, as a dict"},
    {"reset_counters", (PyCFunction)core_reset_counters, METH_NOARGS, "zero this core's counters"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef core_members[] = {
    {"generation", T_ULONGLONG, offsetof(Core, generation), 0, "the buckets' generation"},
    {"epoch", T_ULONGLONG, offsetof(Core, epoch), 0, "bumped by every completed (or failed) bucket write"},
    {"nbuckets", T_ULONGLONG, offsetof(Core, nbuckets), READONLY, "the buckets the extent holds"},
    {"active", T_ULONGLONG, offsetof(Core, active), 0, "the buckets in use (1..nbuckets; BigHash.split grows it)"},
    {"linear", T_INT, offsetof(Core, linear), READONLY, "1: linear hashing over active buckets, 0: the range mapping"},
    {"stream", T_OBJECT, offsetof(Core, stream), READONLY, "the placement stream passed back on each write"},
    {"hooked_reads", T_LONGLONG, offsetof(Core, hooked_reads), READONLY,
     "bucket reads done through the device's read-into hook (the rest went through read())"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engines.bighash._core_c.BucketCore",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "BigHash's blocking lookup and insert in one C call each (see engines/bighash/_core.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)core_init,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
};

/* The on-flash layout as _bucket.c reads and writes it: field -> (offset, size). */
static const fc_field BUCKET_FIELDS[] = {
    {"magic", FC_BH_MAGIC, 4}, {"version", FC_BH_VERSION, 2}, {"header_size", FC_BH_HEADER_SIZE, 2},
    {"checksum", FC_BH_CHECKSUM, 8}, {"generation", FC_BH_GENERATION, 8}, {"item_count", FC_BH_ITEM_COUNT, 4},
    {"used_bytes", FC_BH_USED_BYTES, 4}, {NULL, 0, 0}};
static const fc_field ENTRY_FIELDS[] = {
    {"key_hash", FC_BE_KEY_HASH, 8}, {"value_sum", FC_BE_VALUE_SUM, 4}, {"expiry", FC_BE_EXPIRY, 4},
    {"value_len", FC_BE_VALUE_LEN, 4}, {"key_len", FC_BE_KEY_LEN, 2}, {NULL, 0, 0}};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "engines.bighash._core_c",
    "BigHash's blocking hot paths in C (see engines/bighash/_core.c)", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core_c(void)
{
    if (PyType_Ready(&CoreType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "BucketCore", (PyObject *)&CoreType) < 0 ||
        fc_add(m, "BUCKET_FIELDS", fc_fields_dict(BUCKET_FIELDS)) < 0 ||
        fc_add(m, "ENTRY_FIELDS", fc_fields_dict(ENTRY_FIELDS)) < 0 ||
        fc_add(m, "MAGIC", PyBytes_FromStringAndSize(fc_bucket_magic, 4)) < 0 ||
        PyModule_AddIntConstant(m, "FORMAT_VERSION", FC_BH_FORMAT_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "BUCKET_HEADER_SIZE", FC_BH_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "ENTRY_HEADER_SIZE", FC_BE_SIZE) < 0 ||
        fc_add(m, "KEY_SEED", PyLong_FromUnsignedLongLong(fc_key_seed)) < 0 ||
        fc_add(m, "CHECKSUM_SEED", PyLong_FromUnsignedLongLong(fc_checksum_seed)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
