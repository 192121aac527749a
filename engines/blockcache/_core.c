/* engines.blockcache._core_c: BlockCache's C, plain CPython API.
 *
 * - The entry format (entry.py's docstring) in C: the E_* offsets below are its one C
 *   definition; ENTRY_FIELDS (field -> (offset, size)), MAGIC, FORMAT_VERSION,
 *   HEADER_SIZE, KEY_SEED and CHECKSUM_SEED export them, and entry.py checks its own
 *   definition against them on import. encode_entry(buf, pos, khash, generation, expiry,
 *   key, value, seq, flags) -> length writes one entry (entry.encode_into's C form).
 * - IndexTable(tag, addr, size, hits): the DRAM index's four arrays (index.py: numpy,
 *   uint32 tag and addr, uint16 size hint, uint8 hits; held) as C views. find(tag), put(tag,
 *   addr, code, allow_new) and swap(tag, addr, size, hits), which replaces all four in one
 *   step, so a reader without BlockCache's lock sees the old table or the new one.
 * - Core(offset, region_size, alignment, io_alignment, clock, lock, forget, corrupt):
 *   BlockCache's lookup in C for a bytes key (lookup_item_now; the Python reference is
 *   the generator in blockcache.py, with a twin test), owning the state it touches: the
 *   generation, the open region's buffer and cursor (open_region, fill, loaded: Regions
 *   reads and writes them here), the index table in use (``index``), and its counters.
 *   ``lock`` is BlockCache's lock (taken for a lookup the index does not rule out),
 *   ``clock`` its clock, ``forget(tag, addr)`` drops an index entry that proved stale,
 *   expired or corrupt, ``corrupt(offset, region, why)`` logs a corrupt entry, and
 *   ``on_hit(region)`` (None or the eviction policy's touch) hears of each hit.
 *   Methods lookup(device, key), may_hold(key), engine_ops(), counters(),
 *   reset_counters(); member buffer (the open region's bytearray, read-only). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include "_xxh3.h"
#include "_hooks.h"
#include "_device.h"
#include "_engine.h"
#include "_locks.h"
#include "_module.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the entry layout is little-endian; this code assumes a little-endian host"
#endif

/* ------------------------------------------------------------------ the entry format */

/* Each field's offset, then the header's size. */
enum {
    E_MAGIC = 0, E_VERSION = 4, E_HEADER_SIZE = 6, E_CHECKSUM = 8, E_GENERATION = 16, E_KEY_HASH = 24,
    E_VALUE_LEN = 32, E_EXPIRY = 36, E_KEY_LEN = 40, E_FLAGS = 42, E_SEQ = 44, E_SIZE = 52,
    E_FORMAT_VERSION = 2
};
static const char E_MAGIC_BYTES[4] = {'F', 'C', 'B', 'C'};
static const uint64_t KEY_SEED = 0x510E527FADE682D1ull;
static const uint64_t CHECKSUM_SEED = 0x9B05688C2B3E6C1Full;

static const fc_field ENTRY_FIELDS[] = {
    {"magic", E_MAGIC, 4}, {"version", E_VERSION, 2}, {"header_size", E_HEADER_SIZE, 2},
    {"checksum", E_CHECKSUM, 8}, {"generation", E_GENERATION, 8}, {"key_hash", E_KEY_HASH, 8},
    {"value_len", E_VALUE_LEN, 4}, {"expiry", E_EXPIRY, 4}, {"key_len", E_KEY_LEN, 2}, {"flags", E_FLAGS, 2},
    {"seq", E_SEQ, 8},
    {NULL, 0, 0}};

static inline uint16_t le16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* The checksum of the entry at h (length bytes): xxh3 over header bytes [0, E_CHECKSUM)
 * then [E_CHECKSUM + 8, length), taken as one run with the checksum field overwritten by
 * the header's first 8 bytes meanwhile, then put back. */
static uint64_t entry_checksum(uint8_t *h, uint64_t length)
{
    uint8_t saved[8];
    memcpy(saved, h + E_CHECKSUM, 8);
    memcpy(h + E_CHECKSUM, h, 8);
    uint64_t sum = fc_hash(h + E_CHECKSUM, length - E_CHECKSUM, CHECKSUM_SEED);
    memcpy(h + E_CHECKSUM, saved, 8);
    return sum;
}

/* encode_entry(buf, pos, khash, generation, expiry, key, value) -> the entry's unaligned
 * length: entry.encode_into in one call (buf a bytearray the caller checked the entry
 * fits, key and value bytes; the header, key, value and checksum written, the padding
 * after left as it is). */
static PyObject *encode_entry(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    unsigned long long pos, khash, generation, expiry, seq, fl;
    if (nargs != 9 || !PyByteArray_CheckExact(args[0]) || !PyBytes_CheckExact(args[5]) ||
        !PyBytes_CheckExact(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_entry(buf: bytearray, pos, khash, generation, expiry, key: bytes, value: bytes, "
                        "seq, flags)");
        return NULL;
    }
    pos = PyLong_AsUnsignedLongLong(args[1]);
    khash = PyLong_AsUnsignedLongLong(args[2]);
    generation = PyLong_AsUnsignedLongLong(args[3]);
    expiry = PyLong_AsUnsignedLongLong(args[4]);
    seq = PyLong_AsUnsignedLongLong(args[7]);
    fl = PyLong_AsUnsignedLongLong(args[8]);
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t klen = PyBytes_GET_SIZE(args[5]), vlen = PyBytes_GET_SIZE(args[6]);
    uint64_t length = E_SIZE + (uint64_t)klen + (uint64_t)vlen;
    if (klen > 0xFFFF || (uint64_t)vlen > 0xFFFFFFFFu || expiry > 0xFFFFFFFFu || fl > 0xFFFF ||
        pos + length > (uint64_t)PyByteArray_GET_SIZE(args[0])) {
        PyErr_SetString(PyExc_ValueError, "encode_entry: the entry does not fit the buffer, or a field overflows");
        return NULL;
    }
    uint8_t *h = (uint8_t *)PyByteArray_AS_STRING(args[0]) + pos;
    uint16_t version = E_FORMAT_VERSION, hsize = E_SIZE, kl = (uint16_t)klen, flags = (uint16_t)fl;
    uint32_t vl = (uint32_t)vlen, ex = (uint32_t)expiry;
    memcpy(h + E_MAGIC, E_MAGIC_BYTES, 4);
    memcpy(h + E_VERSION, &version, 2);
    memcpy(h + E_HEADER_SIZE, &hsize, 2);
    memcpy(h + E_GENERATION, &generation, 8);
    memcpy(h + E_KEY_HASH, &khash, 8);
    memcpy(h + E_VALUE_LEN, &vl, 4);
    memcpy(h + E_EXPIRY, &ex, 4);
    memcpy(h + E_KEY_LEN, &kl, 2);
    memcpy(h + E_FLAGS, &flags, 2);
    memcpy(h + E_SEQ, &seq, 8);
    memcpy(h + E_SIZE, PyBytes_AS_STRING(args[5]), (size_t)klen);
    memcpy(h + E_SIZE + klen, PyBytes_AS_STRING(args[6]), (size_t)vlen);
    uint64_t sum = entry_checksum(h, length);
    memcpy(h + E_CHECKSUM, &sum, 8);
    return PyLong_FromUnsignedLongLong(length);
}

/* ------------------------------------------------------------------ the index table */

enum { IDX_EMPTY = 0xFFFFFFFFu, IDX_TOMB = 0xFFFFFFFEu, MAX_HITS = 0xFF };

typedef struct {
    PyObject_HEAD
    PyObject *obj[4];
    Py_buffer view[4];                  /* tag, addr, size, hits */
    uint64_t cap;
} Table;

static PyTypeObject TableType;

static inline uint32_t *t_tag(Table *t) { return t->view[0].buf; }
static inline uint32_t *t_addr(Table *t) { return t->view[1].buf; }
static inline uint16_t *t_size(Table *t) { return t->view[2].buf; }
static inline uint8_t *t_hits(Table *t) { return t->view[3].buf; }

static void table_release(Table *t)
{
    for (int i = 0; i < 4; i++)
        if (t->obj[i]) {
            PyBuffer_Release(&t->view[i]);
            Py_CLEAR(t->obj[i]);
        }
    t->cap = 0;
}

static void table_dealloc(Table *t)
{
    table_release(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* Take the four arrays (replacing any held): 0, or -1 with an exception (nothing changed). */
static int table_take(Table *t, PyObject *const *o)
{
    static const Py_ssize_t width[4] = {4, 4, 2, 1};
    Py_buffer v[4];
    int i;
    for (i = 0; i < 4; i++)
        if (PyObject_GetBuffer(o[i], &v[i], PyBUF_SIMPLE | PyBUF_WRITABLE) < 0)
            break;
    Py_ssize_t cap = i == 4 ? v[0].len / 4 : 0;
    if (i == 4 && cap)
        for (int j = 0; j < 4; j++)
            if (v[j].len != cap * width[j])
                cap = 0;
    if (i < 4 || !cap) {
        while (i--)
            PyBuffer_Release(&v[i]);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError,
                            "IndexTable: tag and addr must be uint32 arrays, size uint16 and hits uint8, all of one length");
        return -1;
    }
    table_release(t);
    for (i = 0; i < 4; i++) {
        t->view[i] = v[i];
        t->obj[i] = Py_NewRef(o[i]);
    }
    t->cap = (uint64_t)cap;
    return 0;
}

static int table_init(Table *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"tag", "addr", "size", "hits", NULL};
    PyObject *o[4];
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO", kwlist, &o[0], &o[1], &o[2], &o[3]))
        return -1;
    return table_take(t, o);
}

/* The slot holding tag t, or -1: linear probing from the home slot t * cap >> 32. */
static int64_t table_find(Table *t, uint32_t tg)
{
    const uint32_t *tag = t_tag(t), *addr = t_addr(t);
    uint64_t cap = t->cap, i = ((uint64_t)tg * cap) >> 32;
    for (uint64_t n = 0; n < cap; n++) {
        uint32_t x = addr[i];
        if (x == IDX_EMPTY)
            return -1;
        if (x != IDX_TOMB && tag[i] == tg)
            return (int64_t)i;
        if (++i == cap)
            i = 0;
    }
    return -1;   /* a table with no empty slot (never at the index's load limits) */
}

/* Point tag tg at address a (size code, hits 0). The address it replaced (>= 0); -1 when
 * it took an empty slot; -2 a tombstone; -3 when it would need an empty slot and allow_new
 * is 0 (nothing written: the caller grows the table first). */
static int64_t table_put(Table *t, uint32_t tg, uint32_t a, uint16_t code, int allow_new)
{
    uint32_t *tag = t_tag(t), *addr = t_addr(t);
    uint64_t cap = t->cap, i = ((uint64_t)tg * cap) >> 32, n;
    int64_t tomb = -1;
    for (n = 0; n < cap; n++) {
        uint32_t x = addr[i];
        if (x == IDX_EMPTY)
            break;
        if (x == IDX_TOMB) {
            if (tomb < 0)
                tomb = (int64_t)i;
        } else if (tag[i] == tg) {
            addr[i] = a;
            t_size(t)[i] = code;
            t_hits(t)[i] = 0;
            return x;
        }
        if (++i == cap)
            i = 0;
    }
    int64_t ret = -2;
    if (tomb >= 0)
        i = (uint64_t)tomb;
    else if (!allow_new || n == cap)
        return -3;
    else
        ret = -1;
    tag[i] = tg;
    addr[i] = a;
    t_size(t)[i] = code;
    t_hits(t)[i] = 0;
    return ret;
}

static int u32_arg(PyObject *o, uint32_t *out, const char *what)
{
    unsigned long v = PyLong_AsUnsignedLong(o);
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v > 0xFFFFFFFFul) {
        PyErr_Format(PyExc_OverflowError, "IndexTable: %s is 32 bits", what);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static PyObject *table_find_py(Table *t, PyObject *arg)
{
    uint32_t tg;
    if (u32_arg(arg, &tg, "a tag") < 0)
        return NULL;
    return PyLong_FromLongLong(table_find(t, tg));
}

static PyObject *table_put_py(Table *t, PyObject *const *args, Py_ssize_t nargs)
{
    uint32_t tg, a, code;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "IndexTable.put(tag, addr, code, allow_new)");
        return NULL;
    }
    if (u32_arg(args[0], &tg, "a tag") < 0 || u32_arg(args[1], &a, "an address") < 0 ||
        u32_arg(args[2], &code, "a size code") < 0)
        return NULL;
    int allow = PyObject_IsTrue(args[3]);
    if (allow < 0)
        return NULL;
    return PyLong_FromLongLong(table_put(t, tg, a, (uint16_t)code, allow));
}

static PyObject *table_swap(Table *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "IndexTable.swap(tag, addr, size, hits)");
        return NULL;
    }
    if (table_take(t, args) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef table_methods[] = {
    {"find", (PyCFunction)table_find_py, METH_O, "find(tag) -> the slot holding tag, or -1"},
    {"put", (PyCFunction)(void (*)(void))table_put_py, METH_FASTCALL,
     "put(tag, addr, code, allow_new) -> the address replaced (>= 0), -1 new in an empty slot, -2 new in a "
     "tombstone, -3 needs an empty slot and allow_new is false (nothing written)"},
    {"swap", (PyCFunction)(void (*)(void))table_swap, METH_FASTCALL,
     "swap(tag, addr, size, hits): use these arrays from now on, all four in one step"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef table_members[] = {
    {"capacity", T_ULONGLONG, offsetof(Table, cap), READONLY, "slots"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engines.blockcache._core_c.IndexTable",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "BlockCache's index arrays as C views (see engines/blockcache/_core.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)table_init,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_methods = table_methods,
    .tp_members = table_members,
};

/* The units an index size hint stands for (index.code_units). */
static inline uint64_t code_units(uint16_t code)
{
    return code < 0x8000 ? (uint64_t)code + 1 : ((uint64_t)(code & 0x7FFF) + 1) * 16;
}

/* ------------------------------------------------------------------ the lookup core */

enum { C_LOOKUPS, C_HITS, C_MISSES, C_BUFFER_HITS, C_COLLISION_MISSES, C_EXPIRED_MISSES, C_STALE_MISSES,
       C_CHECKSUM_FAILURES, C_ENTRY_READS, C_BYTES_READ, C_N };
static const char *const NAMES[C_N] = {
    "lookups", "hits", "misses", "buffer_hits", "collision_misses", "expired_misses", "stale_misses",
    "checksum_failures", "entry_reads", "bytes_read"};

enum { STACK = 32768 };

typedef struct {
    PyObject_HEAD
    uint64_t offset, region_size, align, upr, io, generation;
    uint64_t open_region, fill;          /* the open region and its buffer's units in use */
    int loaded;                          /* the buffer holds the open region (see regions.py) */
    PyObject *buffer;                    /* the open region's buffer: a bytearray of region_size */
    Table *index;
    PyObject *clock, *lock, *forget, *corrupt, *on_hit;
    fc_hook_cache hk;
    long long hooked_reads;
    long long c[C_N];
} Core;

static int core_traverse(Core *s, visitproc visit, void *arg)
{
    Py_VISIT(s->buffer);
    Py_VISIT(s->index);
    Py_VISIT(s->clock);
    Py_VISIT(s->lock);
    Py_VISIT(s->forget);
    Py_VISIT(s->corrupt);
    Py_VISIT(s->on_hit);
    return fc_hook_traverse(&s->hk, visit, arg);
}

static int core_clear(Core *s)
{
    Py_CLEAR(s->buffer);
    Py_CLEAR(s->index);
    Py_CLEAR(s->clock);
    Py_CLEAR(s->lock);
    Py_CLEAR(s->forget);
    Py_CLEAR(s->corrupt);
    Py_CLEAR(s->on_hit);
    fc_hook_clear(&s->hk);
    return 0;
}

static void core_dealloc(Core *s)
{
    PyObject_GC_UnTrack(s);
    core_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int core_init(Core *s, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"offset", "region_size", "alignment", "io_alignment", "clock", "lock", "forget",
                             "corrupt", NULL};
    unsigned long long offset, region, align, io;
    PyObject *clock, *lock, *forget, *corrupt;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KKKKOOOO", kwlist, &offset, &region, &align, &io, &clock, &lock,
                                     &forget, &corrupt))
        return -1;
    if (!align || !io || region % align || region % io || region / align > 0xFFFFFFFFull) {
        PyErr_SetString(PyExc_ValueError, "Core: region_size must be a multiple of alignment and io_alignment");
        return -1;
    }
    core_clear(s);
    if (!(s->buffer = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)region)))
        return -1;
    memset(PyByteArray_AS_STRING(s->buffer), 0, (size_t)region);
    s->offset = offset;
    s->region_size = region;
    s->align = align;
    s->upr = region / align;
    s->io = io;
    s->generation = 0;
    s->open_region = s->fill = 0;
    s->loaded = 1;
    s->clock = Py_NewRef(clock);
    s->lock = Py_NewRef(lock);
    s->forget = Py_NewRef(forget);
    s->corrupt = Py_NewRef(corrupt);
    s->on_hit = Py_NewRef(Py_None);
    memset(s->c, 0, sizeof s->c);
    return 0;
}

static inline uint64_t key_hash(PyObject *key)
{
    return fc_hash(PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key), KEY_SEED);
}

static int index_ready(Core *s)
{
    if (!s->index) {
        PyErr_SetString(PyExc_RuntimeError, "BlockCache core: no index table set");
        return -1;
    }
    return 0;
}

/* Why d[pos:end] is not an intact entry (with ``verify``: its checksum too), as
 * entry.decode says it, or NULL when it is (*h the header) or on an error (an exception
 * set). */
static PyObject *bad_entry(uint8_t *d, uint64_t pos, uint64_t end, int verify)
{
    if (pos + E_SIZE > end)
        return PyUnicode_FromFormat("no room for a %d-byte header at %llu (ends at %llu)", E_SIZE,
                                    (unsigned long long)pos, (unsigned long long)end);
    uint8_t *h = d + pos;
    if (memcmp(h + E_MAGIC, E_MAGIC_BYTES, 4)) {
        PyObject *m = PyBytes_FromStringAndSize((const char *)h + E_MAGIC, 4);
        PyObject *why = m ? PyUnicode_FromFormat("bad magic %R", m) : NULL;
        Py_XDECREF(m);
        return why;
    }
    if (le16(h + E_VERSION) != E_FORMAT_VERSION || le16(h + E_HEADER_SIZE) != E_SIZE)
        return PyUnicode_FromFormat("format version %u header %u B, this code reads %d", le16(h + E_VERSION),
                                    le16(h + E_HEADER_SIZE), E_FORMAT_VERSION);
    uint64_t length = E_SIZE + (uint64_t)le16(h + E_KEY_LEN) + le32(h + E_VALUE_LEN);
    if (pos + length > end)
        return PyUnicode_FromFormat("key %u B + value %u B overrun the %llu bytes read", le16(h + E_KEY_LEN),
                                    le32(h + E_VALUE_LEN), (unsigned long long)(end - pos));
    if (verify && entry_checksum(h, length) != le64(h + E_CHECKSUM))
        return PyUnicode_FromString("checksum mismatch");
    return NULL;
}

/* forget(tag, addr) in Python (BlockCache._forget); 0 or -1. */
static int forget(Core *s, uint32_t tag, uint64_t addr)
{
    PyObject *r = PyObject_CallFunction(s->forget, "kK", (unsigned long)tag, (unsigned long long)addr);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* A miss of kind ``counter`` (counted with misses), the index entry dropped if ``drop``:
 * 0, or -1 with an exception. */
static int miss(Core *s, int counter, int drop, uint32_t tag, uint64_t addr)
{
    s->c[counter]++;
    s->c[C_MISSES]++;
    return drop ? forget(s, tag, addr) : 0;
}

/* BlockCache's lookup for a bytes key, the caller holding its lock: the steps and counters
 * of blockcache.py's _lookup_plan and _lookup_found. 1 with (*value, *expiry), 0 a miss,
 * -1 with an exception. */
static int find_locked(Core *s, PyObject *device, PyObject *key, uint64_t kh, PyObject **value, double *expiry_out)
{
    int out = -1, from_buffer = 0, have_view = 0;
    PyObject *read = NULL, *data = NULL, *why = NULL;
    Py_buffer view;
    uint8_t stack[STACK], *heap = NULL, *d;
    uint64_t pos, start = 0, length = 0, end;
    uint32_t tag = (uint32_t)(kh >> 32);
    s->c[C_LOOKUPS]++;
    if (index_ready(s) < 0)
        return -1;
    Table *t = (Table *)Py_NewRef(s->index);
    int64_t slot = table_find(t, tag);
    if (slot < 0) {
        s->c[C_MISSES]++;
        out = 0;
        goto done;
    }
    uint64_t addr = t_addr(t)[slot], units = code_units(t_size(t)[slot]);
    uint64_t region = addr / s->upr, unit = addr % s->upr;
    if (region == s->open_region && s->loaded) {   /* the open region's DRAM buffer: nothing to read or verify */
        from_buffer = 1;
        pos = unit * s->align;
        end = s->fill * s->align;
        if (end > (uint64_t)PyByteArray_GET_SIZE(s->buffer))
            end = (uint64_t)PyByteArray_GET_SIZE(s->buffer);
        d = (uint8_t *)PyByteArray_AS_STRING(s->buffer);
    } else {
        start = s->offset + addr * s->align;
        uint64_t stop = start + (units < s->upr - unit ? units : s->upr - unit) * s->align;
        if (s->io > s->align) {   /* widen to the device's blocks (regions are whole blocks) */
            pos = start % s->io;
            start -= pos;
            stop = (stop + s->io - 1) / s->io * s->io;
        } else {
            pos = 0;
        }
        length = stop - start;
        d = length <= STACK ? stack : (heap = PyMem_Malloc(length));
        if (!d) {
            PyErr_NoMemory();
            goto done;
        }
        if (!(read = fc_device_read(device)))
            goto done;
        struct fc_read_into *h = fc_hook_for(&s->hk, read);
        if (h && h->fn(h->ctx, (char *)d, length, start)) {
            s->hooked_reads++;
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
            memcpy(d, view.buf, end);   /* ours to write: the checksum rewrites 8 bytes for a moment */
        }
        s->c[C_ENTRY_READS]++;
        s->c[C_BYTES_READ] += (long long)length;
    }
    if ((why = bad_entry(d, pos, end, !from_buffer))) {
        s->c[C_CHECKSUM_FAILURES]++;
        s->c[C_MISSES]++;
        PyObject *r = PyObject_CallFunction(s->corrupt, "KKO", (unsigned long long)(s->offset + addr * s->align),
                                            (unsigned long long)region, why);
        Py_XDECREF(r);
        out = r && forget(s, tag, addr) == 0 ? 0 : -1;
        goto done;
    }
    if (PyErr_Occurred())
        goto done;
    uint8_t *e = d + pos;
    if (le64(e + E_GENERATION) != s->generation) {
        out = miss(s, C_STALE_MISSES, 1, tag, addr);
        goto done;
    }
    uint16_t klen = le16(e + E_KEY_LEN);
    if (le64(e + E_KEY_HASH) != kh || klen != PyBytes_GET_SIZE(key) ||
        memcmp(e + E_SIZE, PyBytes_AS_STRING(key), klen)) {
        out = miss(s, C_COLLISION_MISSES, 0, tag, addr);   /* the slot belongs to another key with the same tag */
        goto done;
    }
    uint32_t expiry = le32(e + E_EXPIRY);
    if (expiry) {
        PyObject *tm = PyObject_CallNoArgs(s->clock);
        if (!tm)
            goto done;
        double now = PyFloat_AsDouble(tm);
        Py_DECREF(tm);
        if (now == -1 && PyErr_Occurred())
            goto done;
        if (expiry <= now) {
            out = miss(s, C_EXPIRED_MISSES, 1, tag, addr);
            goto done;
        }
    }
    if (!(*value = PyBytes_FromStringAndSize((const char *)e + E_SIZE + klen, le32(e + E_VALUE_LEN))))
        goto done;
    *expiry_out = (double)expiry;
    s->c[C_HITS]++;
    if (from_buffer)
        s->c[C_BUFFER_HITS]++;
    Py_SETREF(t, (Table *)Py_NewRef(s->index));   /* a Python read() may have let the table change */
    slot = table_find(t, tag);
    if (slot >= 0 && t_addr(t)[slot] == addr) {
        uint8_t *hits = t_hits(t) + slot;
        if (*hits < MAX_HITS)
            ++*hits;
        if (s->on_hit != Py_None) {
            PyObject *r = PyObject_CallFunction(s->on_hit, "K", (unsigned long long)region);
            if (!r) {
                Py_CLEAR(*value);
                goto done;
            }
            Py_DECREF(r);
        }
    }
    out = 1;
done:
    if (have_view)
        PyBuffer_Release(&view);
    PyMem_Free(heap);
    Py_XDECREF(why);
    Py_XDECREF(data);
    Py_XDECREF(read);
    Py_DECREF(t);
    return out;
}

/* 1 if the index holds the tag of the key hashing to kh, 0 if not, -1 with an exception. */
static int holds(Core *s, uint64_t kh)
{
    if (index_ready(s) < 0)
        return -1;
    return table_find(s->index, (uint32_t)(kh >> 32)) >= 0;
}

/* BlockCache.lookup_item_now for a bytes key. A key the index rules out is a miss counted
 * at once (under the GIL, as the locked form counts it); otherwise the lookup runs under
 * BlockCache's lock. */
static int ops_lookup(void *ctx, PyObject *device, PyObject *key, PyObject **value, double *expiry)
{
    Core *s = ctx;
    uint64_t kh = key_hash(key);
    int may = holds(s, kh);
    if (may <= 0) {
        if (!may) {
            s->c[C_LOOKUPS]++;
            s->c[C_MISSES]++;
        }
        return may;
    }
    if (fc_lock(s->lock) < 0)
        return -1;
    int found = find_locked(s, device, key, kh, value, expiry);
    if (fc_unlock(s->lock) < 0) {
        if (found > 0)
            Py_DECREF(*value);
        return -1;
    }
    return found;
}

static int ops_may_hold(void *ctx, PyObject *key)
{
    return holds((Core *)ctx, key_hash(key));
}

static PyObject *core_lookup(Core *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "Core.lookup(device, key): key must be bytes");
        return NULL;
    }
    PyObject *value;
    double expiry;
    int r = ops_lookup(s, args[0], args[1], &value, &expiry);
    return r < 0 ? NULL : r ? Py_BuildValue("(Nd)", value, expiry) : Py_NewRef(Py_None);
}

static PyObject *core_may_hold(Core *s, PyObject *key)
{
    if (!PyBytes_CheckExact(key)) {
        PyErr_SetString(PyExc_TypeError, "Core.may_hold(key): key must be bytes");
        return NULL;
    }
    int may = ops_may_hold(s, key);
    return may < 0 ? NULL : PyBool_FromLong(may);
}

static PyObject *core_engine_ops(Core *s, PyObject *unused)
{
    (void)unused;
    struct fc_engine_ops ops = {.may_hold = ops_may_hold, .lookup = ops_lookup, .insert = NULL, .ctx = s};
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

static PyObject *core_get_index(Core *s, void *closure)
{
    (void)closure;
    return Py_NewRef(s->index ? (PyObject *)s->index : Py_None);
}

static int core_set_index(Core *s, PyObject *v, void *closure)
{
    (void)closure;
    if (!v || !PyObject_TypeCheck(v, &TableType)) {
        PyErr_SetString(PyExc_TypeError, "Core.index must be an IndexTable");
        return -1;
    }
    Py_XSETREF(s->index, (Table *)Py_NewRef(v));
    return 0;
}

static PyObject *core_get_on_hit(Core *s, void *closure)
{
    (void)closure;
    return Py_NewRef(s->on_hit);
}

static int core_set_on_hit(Core *s, PyObject *v, void *closure)
{
    (void)closure;
    if (!v || (v != Py_None && !PyCallable_Check(v))) {
        PyErr_SetString(PyExc_TypeError, "Core.on_hit must be None or a callable taking the region");
        return -1;
    }
    Py_XSETREF(s->on_hit, Py_NewRef(v));
    return 0;
}

static PyObject *core_get_loaded(Core *s, void *closure)
{
    (void)closure;
    return PyBool_FromLong(s->loaded);
}

static int core_set_loaded(Core *s, PyObject *v, void *closure)
{
    (void)closure;
    int b = v ? PyObject_IsTrue(v) : -1;
    if (b < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "Core.loaded cannot be deleted");
        return -1;
    }
    s->loaded = b;
    return 0;
}

static PyGetSetDef core_getset[] = {
    {"index", (getter)core_get_index, (setter)core_set_index, "the IndexTable lookups probe", NULL},
    {"on_hit", (getter)core_get_on_hit, (setter)core_set_on_hit,
     "None, or a callable told the region of every hit (the eviction policy's touch)", NULL},
    {"loaded", (getter)core_get_loaded, (setter)core_set_loaded,
     "whether the buffer holds the open region (False after a recovery until read back)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef core_methods[] = {
    {"lookup", (PyCFunction)(void (*)(void))core_lookup, METH_FASTCALL,
     "lookup(device, key) -> (value, expiry) or None (BlockCache.lookup_item_now for a bytes key)"},
    {"may_hold", (PyCFunction)core_may_hold, METH_O, "may_hold(key): the index holds a bytes key's tag"},
    {"engine_ops", (PyCFunction)core_engine_ops, METH_NOARGS,
     "engine_ops() -> capsule 'engines.engine.ops': may_hold and lookup for the router's C"},
    {"counters", (PyCFunction)core_counters, METH_NOARGS, "the counters this core kept, as a dict"},
    {"reset_counters", (PyCFunction)core_reset_counters, METH_NOARGS, "zero this core's counters"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef core_members[] = {
    {"generation", T_ULONGLONG, offsetof(Core, generation), 0, "the generation entries are written with"},
    {"open_region", T_ULONGLONG, offsetof(Core, open_region), 0, "the region the buffer fills"},
    {"fill", T_ULONGLONG, offsetof(Core, fill), 0, "alignment units of the buffer in use"},
    {"buffer", T_OBJECT, offsetof(Core, buffer), READONLY, "the open region's buffer (a bytearray)"},
    {"hooked_reads", T_LONGLONG, offsetof(Core, hooked_reads), READONLY,
     "entry reads done through the device's read-into hook"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "engines.blockcache._core_c.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "BlockCache's lookup in C and the state it touches (see engines/blockcache/_core.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)core_init,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
    .tp_getset = core_getset,
};

/* ------------------------------------------------------------------ the module */

static PyMethodDef module_methods[] = {
    {"encode_entry", (PyCFunction)(void (*)(void))encode_entry, METH_FASTCALL,
     "encode_entry(buf, pos, khash, generation, expiry, key, value, seq, flags) -> length: entry.encode_into in C"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "engines.blockcache._core_c",
    "BlockCache's C: the entry format, the index table, the lookup (see engines/blockcache/_core.c)", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core_c(void)
{
    if (PyType_Ready(&TableType) < 0 || PyType_Ready(&CoreType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "IndexTable", (PyObject *)&TableType) < 0 ||
        PyModule_AddObjectRef(m, "Core", (PyObject *)&CoreType) < 0 ||
        fc_add(m, "ENTRY_FIELDS", fc_fields_dict(ENTRY_FIELDS)) < 0 ||
        fc_add(m, "MAGIC", PyBytes_FromStringAndSize(E_MAGIC_BYTES, 4)) < 0 ||
        PyModule_AddIntConstant(m, "FORMAT_VERSION", E_FORMAT_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_SIZE", E_SIZE) < 0 ||
        fc_add(m, "KEY_SEED", PyLong_FromUnsignedLongLong(KEY_SEED)) < 0 ||
        fc_add(m, "CHECKSUM_SEED", PyLong_FromUnsignedLongLong(CHECKSUM_SEED)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
