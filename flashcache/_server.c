/* flashcache._hot_c, the server's part: TextPath, the C accelerator of the memcached text
 * protocol's common case in flashcache/server/ (protocol.Parser -> handler.Handler.get /
 * .storage -> store.Store -> AsyncCache -> RequestCore), and ItemIds, the server's CAS
 * counter and flush_all watermark (store.Store's, shared with TextPath).
 *
 * TextPath.serve(buf, pos) answers the whole requests at ``pos`` that it can finish
 * without I/O, in order, and stops at the first one it cannot (anything else goes to the
 * Python path unchanged, which parses it again from ``pos``):
 *   get/gets <key>*  every key a live server item in DRAM (held, not expiring within a
 *                    second, version 1, CAS above the flush_all watermark): each key is
 *                    RequestCore.get_step's DRAM hit (the Lru's get, the core's counters
 *                    gets/hits_dram in HotPath's array, one get latency sample), then the
 *                    reply Handler.get builds. A key that misses DRAM needs a flash read:
 *                    the whole request goes to Python, nothing touched before; except,
 *                    where the cache reads flash inline (AsyncCache.inline: the read is a
 *                    memory copy, so the Python path would block on it too), a single-key
 *                    get/gets of a key DRAM does not hold: HotPath's whole get in C
 *                    (hot_fetch, the C form of RequestCore.get that AsyncCache.get runs),
 *                    then Store._live and Handler.get's reply and counters.
 *   set <key> <flags> 0 <bytes> [noreply]   the HotPath takes sets (not with write-through
 *                    or a default TTL), exptime 0, the value within item_size_max and
 *                    the flash engines' fits_max, the key not held by a read-modify-write
 *                    (store.KeyLocks.held): Store.put's item (header + data, the next CAS
 *                    from ItemIds) through HotPath's set steps (hot_store in _core.c), the
 *                    reply STORED (none with noreply).
 * It also stops at a partial line, a line over 2048 bytes or with a NUL, more than 24
 * keys, a key the parser's rules (KEY_MAX, strict_keys) or the cache's max_key refuse, a
 * number it does not take in its plainest form, a data block not all here or not ending
 * in \r\n, a closed cache, and once its replies reach batch_max bytes. The counters it
 * bumps are its own (counters(): Handler's cmd_get/cmd_set/get_hits; commands(): the
 * server's per-command counts), merged by Handler.counts() and Server.command_counts(). If
 * a set's cache step raises, serve returns after that request with the replies before it
 * and keeps the exception for take_error() (the server answers it SERVER_ERROR as the
 * Python path does). The Python path is the reference: tests/server/test_fastpath.py feeds
 * both the same byte streams and compares replies, items and counters. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_hot.h"

#define ITEM_HEADER 18          /* store.HEADER: version u8, bits u8, flags u32, cas u64, expiry u32 */
#define ITEM_VERSION 1
#define KEY_MAX 250             /* protocol.KEY_MAX */
#define LINE_MAX_FAST 2048      /* protocol.LONG_LINE: longer lines are the parser's business */
#define KEYS_MAX 24

/* -- ItemIds ------------------------------------------------------------------------------ */
typedef struct {
    PyObject_HEAD
    unsigned long long cas;         /* the last CAS unique given */
    unsigned long long flush_cas;   /* flush_all's watermark: an item with a CAS at or below it is gone */
} Ids;

static PyObject *ids_next(Ids *s, PyObject *unused)
{
    (void)unused;
    return PyLong_FromUnsignedLongLong(++s->cas);
}

static PyMethodDef ids_methods[] = {
    {"next", (PyCFunction)ids_next, METH_NOARGS, "the next CAS unique (cas + 1, kept)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef ids_members[] = {
    {"cas", T_ULONGLONG, offsetof(Ids, cas), 0, "the last CAS unique given"},
    {"flush_cas", T_ULONGLONG, offsetof(Ids, flush_cas), 0, "flush_all's watermark: CAS at or below it is gone"},
    {NULL, 0, 0, 0, NULL},
};

FC_SHARED PyTypeObject ItemIdsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.ItemIds",
    .tp_basicsize = sizeof(Ids),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The server's CAS counter and flush_all watermark (store.Store's; see flashcache/_server.c)",
    .tp_new = PyType_GenericNew,
    .tp_methods = ids_methods,
    .tp_members = ids_members,
};

/* -- TextPath ----------------------------------------------------------------------------- */
enum { T_CMD_GET, T_CMD_SET, T_GET_HITS, T_GET_MISSES, T_N_GET, T_N_GETS, T_N_SET, T_FOREIGN, T_N };

typedef struct {
    PyObject_HEAD
    Hot *hot;
    Ids *ids;
    PyObject *locks;            /* store.KeyLocks.held: key -> entry while a read-modify-write holds it */
    PyObject *error;            /* a failed set's exception, for take_error() */
    Py_ssize_t item_size_max, batch_max;
    int strict_keys;
    int flash;                  /* a single-key get that misses DRAM reads flash here (inline reads) */
    long long c[T_N];
} Text;

static int text_traverse(Text *t, visitproc visit, void *arg)
{
    Py_VISIT(t->hot);
    Py_VISIT(t->ids);
    Py_VISIT(t->locks);
    Py_VISIT(t->error);
    return 0;
}

static int text_clear(Text *t)
{
    Py_CLEAR(t->hot);
    Py_CLEAR(t->ids);
    Py_CLEAR(t->locks);
    Py_CLEAR(t->error);
    return 0;
}

static void text_dealloc(Text *t)
{
    PyObject_GC_UnTrack(t);
    text_clear(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static int text_init(Text *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"hot", "ids", "locks", "item_size_max", "strict_keys", "batch_max", "flash", NULL};
    PyObject *hot, *ids, *locks;
    Py_ssize_t item_size_max, batch_max;
    int strict, flash = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!npn|p", kwlist, &HotType, &hot, &ItemIdsType, &ids,
                                     &PyDict_Type, &locks, &item_size_max, &strict, &batch_max, &flash))
        return -1;
    if (item_size_max < 0 || item_size_max > INT32_MAX - 2 || batch_max < 1) {
        PyErr_SetString(PyExc_ValueError, "TextPath: item_size_max must be 0..2**31-3 and batch_max >= 1");
        return -1;
    }
    text_clear(t);
    t->hot = (Hot *)Py_NewRef(hot);
    t->ids = (Ids *)Py_NewRef(ids);
    t->locks = Py_NewRef(locks);
    t->item_size_max = item_size_max;
    t->batch_max = batch_max;
    t->strict_keys = strict;
    t->flash = flash;
    memset(t->c, 0, sizeof t->c);
    return 0;
}

/* The reply being built: a growing buffer. */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
    char stack[8192];
} Out;

static int out_put(Out *o, const char *s, Py_ssize_t n)
{
    if (o->len + n > o->cap) {
        Py_ssize_t cap = o->cap * 2;
        while (cap < o->len + n)
            cap *= 2;
        char *p = o->p == o->stack ? PyMem_Malloc(cap) : PyMem_Realloc(o->p, cap);
        if (!p) {
            PyErr_NoMemory();
            return -1;
        }
        if (o->p == o->stack)
            memcpy(p, o->stack, o->len);
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    return 0;
}

typedef struct {
    const char *p;
    Py_ssize_t n;
} Tok;

/* protocol.Parser._line's split: on spaces only, empty tokens dropped. The count, or
 * max + 1 if there are more than max. */
static int tokenize(const char *s, Py_ssize_t n, Tok *toks, int max)
{
    int k = 0;
    Py_ssize_t i = 0;
    while (i < n) {
        while (i < n && s[i] == ' ')
            i++;
        if (i == n)
            break;
        Py_ssize_t j = i;
        while (j < n && s[j] != ' ')
            j++;
        if (k == max)
            return max + 1;
        toks[k].p = s + i;
        toks[k].n = j - i;
        k++;
        i = j;
    }
    return k;
}

static inline int tok_is(const Tok *t, const char *s, Py_ssize_t n)
{
    return t->n == n && memcmp(t->p, s, n) == 0;
}

/* Plain decimal digits only (what protocol.strto* read with no sign), at most 10 of them. */
static int digits(const Tok *t, unsigned long long *v)
{
    if (t->n < 1 || t->n > 10)
        return 0;
    unsigned long long x = 0;
    for (Py_ssize_t i = 0; i < t->n; i++) {
        unsigned char c = (unsigned char)t->p[i];
        if (c < '0' || c > '9')
            return 0;
        x = x * 10 + (c - '0');
    }
    *v = x;
    return 1;
}

/* protocol.key_ok (strict_keys) or key_len_ok, and the cache's own key limit. */
static int key_ok(Text *t, const Tok *k)
{
    if (k->n > KEY_MAX || k->n > t->hot->max_key)
        return 0;
    if (t->strict_keys)
        for (Py_ssize_t i = 0; i < k->n; i++) {
            unsigned char c = (unsigned char)k->p[i];
            if (c < 0x20 || c == 0x7f)
                return 0;
        }
    return 1;
}

static inline unsigned long long le64(const unsigned char *p)
{
    unsigned long long v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline unsigned long le32(const unsigned char *p)
{
    return (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16 | (unsigned long)p[3] << 24;
}

/* Whether key holds a live server item in DRAM that a get serves now with no doubt: held,
 * not expiring within a second (lru_get, called right after, asks the clock again),
 * version 1, CAS above the watermark (Store._live). 1 yes, 0 no, NOT_IN_DRAM (DRAM holds
 * nothing under key), -1 with an exception. */
#define NOT_IN_DRAM 3
static int dram_live(Text *t, PyObject *key, double *tnow, int *have_now)
{
    Lru *d = t->hot->dram;
    Node *n = (Node *)PyDict_GetItemWithError(d->map, key);
    if (!n)
        return PyErr_Occurred() ? -1 : NOT_IN_DRAM;
    if (n->expiry) {
        if (!*have_now) {
            if (now(d, tnow) < 0)
                return -1;
            *have_now = 1;
            n = (Node *)PyDict_GetItemWithError(d->map, key);
            if (!n)
                return PyErr_Occurred() ? -1 : NOT_IN_DRAM;
        }
        if (n->expiry <= *tnow + 1.0)
            return 0;
    }
    const unsigned char *v = (const unsigned char *)PyBytes_AS_STRING(n->value);
    return PyBytes_GET_SIZE(n->value) >= ITEM_HEADER && v[0] == ITEM_VERSION && le64(v + 6) > t->ids->flush_cas;
}

static void keep_error(Text *t)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb && ev)
        PyException_SetTraceback(ev, tb);
    Py_XSETREF(t->error, ev ? ev : Py_NewRef(Py_None));
    Py_XDECREF(et);
    Py_XDECREF(tb);
}

/* " <n>" in decimal at p; returns the bytes written (at most 21). snprintf cost a few
 * per cent of the loop's thread here (glibc's positional-argument machinery). */
static int put_num(char *p, unsigned long long n)
{
    char tmp[20];
    int k = 0;
    do
        tmp[k++] = (char)('0' + n % 10);
    while ((n /= 10));
    p[0] = ' ';
    for (int i = 0; i < k; i++)
        p[1 + i] = tmp[k - 1 - i];
    return k + 1;
}

/* One VALUE line of a get/gets reply for the server item v (Handler.get's). 0, or -1 with an exception. */
static int put_value(Out *o, PyObject *key, PyObject *val, int with_cas)
{
    const unsigned char *v = (const unsigned char *)PyBytes_AS_STRING(val);
    Py_ssize_t dlen = PyBytes_GET_SIZE(val) - ITEM_HEADER;
    char head[72];                      /* " flags len cas\r\n": 3 numbers of at most 21 bytes, and 2 */
    int hn = put_num(head, le32(v + 2));
    hn += put_num(head + hn, (unsigned long long)dlen);
    if (with_cas)
        hn += put_num(head + hn, le64(v + 6));
    head[hn++] = '\r';
    head[hn++] = '\n';
    if (out_put(o, "VALUE ", 6) < 0 || out_put(o, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)) < 0 ||
        out_put(o, head, hn) < 0 || out_put(o, (const char *)v + ITEM_HEADER, dlen) < 0 ||
        out_put(o, "\r\n", 2) < 0)
        return -1;
    return 0;
}

/* A single-key get/gets of a key DRAM does not hold, with inline flash reads: HotPath's
 * whole get (hot_fetch: the flash lookup, promotion, demotion), then Store._live (a value
 * that is no server item is counted foreign; one flushed is a miss) and Handler.get's
 * counting and reply. The same return values as serve_get; a failed get is counted as
 * the Python path counts it (the command, not cmd_get). */
static int serve_flash_get(Text *t, PyObject *key, int with_cas, Out *o)
{
    t->c[with_cas ? T_N_GETS : T_N_GET]++;
    PyObject *v;
    int found = hot_fetch(t->hot, key, &v);
    if (found < 0) {
        keep_error(t);
        return 2;
    }
    t->c[T_CMD_GET]++;
    if (found) {
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(v);
        if (PyBytes_GET_SIZE(v) < ITEM_HEADER || p[0] != ITEM_VERSION) {
            t->c[T_FOREIGN]++;
            found = 0;
        } else if (le64(p + 6) <= t->ids->flush_cas) {
            found = 0;
        }
        if (!found)
            Py_DECREF(v);
    }
    if (!found) {
        t->c[T_GET_MISSES]++;
        return out_put(o, "END\r\n", 5) < 0 ? -1 : 1;
    }
    t->c[T_GET_HITS]++;
    int r = put_value(o, key, v, with_cas) < 0 || out_put(o, "END\r\n", 5) < 0 ? -1 : 1;
    Py_DECREF(v);
    return r;
}

/* get/gets: 1 served (reply in o), 0 not ours (nothing touched), -1 with an exception,
 * 2 served but failed (the error kept, no reply). */
static int serve_get(Text *t, const Tok *toks, int ntok, int with_cas, Out *o)
{
    PyObject *keys[KEYS_MAX], *vals[KEYS_MAX];
    int nk = ntok - 1, made = 0, got = 0, r = 0;
    double tnow = 0;
    int have_now = 0;
    for (int i = 0; i < nk; i++)
        if (!key_ok(t, &toks[i + 1]))
            return 0;
    for (; made < nk; made++) {
        keys[made] = PyBytes_FromStringAndSize(toks[made + 1].p, toks[made + 1].n);
        if (!keys[made]) {
            r = -1;
            goto done;
        }
        int live = dram_live(t, keys[made], &tnow, &have_now);
        if (live == NOT_IN_DRAM && nk == 1 && t->flash) {
            made++;
            r = serve_flash_get(t, keys[0], with_cas, o);
            goto done;
        }
        if (live != 1) {
            made++;
            r = live == NOT_IN_DRAM ? 0 : live;
            goto done;
        }
    }
    /* every key is a DRAM hit: Handler.get's counting, then each key's get_step */
    t->c[with_cas ? T_N_GETS : T_N_GET]++;
    t->c[T_CMD_GET] += nk;
    Hot *h = t->hot;
    for (; got < nk; got++) {
        double t0 = mono();
        h->c[H_GETS]++;
        PyObject *v = lru_get(h->dram, keys[got]);
        if (!v || v == Py_None) {
            if (v == Py_None) {
                Py_DECREF(v);
                PyErr_SetString(PyExc_RuntimeError, "TextPath: a DRAM item checked live was gone at its get");
            }
            keep_error(t);
            r = 2;
            goto done;
        }
        vals[got] = v;
        h->c[H_HITS_DRAM]++;
        observe(h->get_hist, mono() - t0);
    }
    t->c[T_GET_HITS] += nk;
    r = 1;
    for (int i = 0; i < nk && r == 1; i++)
        if (put_value(o, keys[i], vals[i], with_cas) < 0)
            r = -1;
    if (r == 1 && out_put(o, "END\r\n", 5) < 0)
        r = -1;
done:
    for (int i = 0; i < made; i++)
        Py_DECREF(keys[i]);
    for (int i = 0; i < got; i++)
        Py_DECREF(vals[i]);
    return r;
}

/* set: the bytes it took (line and data block) with the reply in o, 0 not ours (nothing
 * touched), -1 with an exception; *failed set when the cache step raised (error kept). */
static Py_ssize_t serve_set(Text *t, const Tok *toks, int ntok, const char *data, Py_ssize_t avail, Out *o,
                            int *failed)
{
    unsigned long long flags, exptime, vlen;
    int noreply = tok_is(&toks[ntok - 1], "noreply", 7);
    if (!key_ok(t, &toks[1]) || !digits(&toks[2], &flags) || flags > 0xFFFFFFFFULL || !digits(&toks[3], &exptime) ||
        exptime != 0 || !digits(&toks[4], &vlen) || vlen > (unsigned long long)t->item_size_max)
        return 0;
    if ((Py_ssize_t)vlen + 2 > avail || data[vlen] != '\r' || data[vlen + 1] != '\n')
        return 0;
    if (!t->hot->sets || toks[1].n + ITEM_HEADER + (Py_ssize_t)vlen > t->hot->fits_max)
        return 0;               /* sets through Python (write-through), or too big for flash */
    PyObject *key = PyBytes_FromStringAndSize(toks[1].p, toks[1].n);
    if (!key)
        return -1;
    if (PyDict_GET_SIZE(t->locks)) {
        int held = PyDict_Contains(t->locks, key);
        if (held != 0) {
            Py_DECREF(key);
            return held < 0 ? -1 : 0;
        }
    }
    PyObject *value = PyBytes_FromStringAndSize(NULL, ITEM_HEADER + (Py_ssize_t)vlen);
    if (!value) {
        Py_DECREF(key);
        return -1;
    }
    /* Handler.storage's count, then Store.put -> Store.write's item: header + data */
    t->c[T_N_SET]++;
    t->c[T_CMD_SET]++;
    unsigned long long cas = ++t->ids->cas;
    unsigned char *v = (unsigned char *)PyBytes_AS_STRING(value);
    v[0] = ITEM_VERSION;
    v[1] = 0;
    for (int i = 0; i < 4; i++)
        v[2 + i] = (unsigned char)(flags >> (8 * i));
    for (int i = 0; i < 8; i++)
        v[6 + i] = (unsigned char)(cas >> (8 * i));
    memset(v + 14, 0, 4);
    memcpy(v + ITEM_HEADER, data, vlen);
    int r = hot_store(t->hot, key, value);
    Py_DECREF(key);
    Py_DECREF(value);
    if (r < 0) {
        keep_error(t);
        *failed = 1;
    } else if (!noreply && out_put(o, "STORED\r\n", 8) < 0) {
        return -1;
    }
    return (Py_ssize_t)vlen + 2;
}

/* serve(buf, pos) -> (the position after the requests answered, their replies or None) */
static PyObject *text_serve(Text *t, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "TextPath.serve(buf: bytes, pos: int)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    if (pos < 0 || pos > n) {
        PyErr_SetString(PyExc_ValueError, "TextPath.serve: pos outside the buffer");
        return NULL;
    }
    Out o;
    o.p = o.stack;
    o.len = 0;
    o.cap = sizeof o.stack;
    Tok toks[KEYS_MAX + 1];
    int err = 0;
    while (pos < n && o.len < t->batch_max && !t->hot->closed && !t->error) {
        const char *s = buf + pos;
        const char *nl = memchr(s, '\n', n - pos);
        if (!nl)
            break;
        Py_ssize_t len = nl - s;
        if (len > 1 && s[len - 1] == '\r')
            len--;
        if (len > LINE_MAX_FAST || memchr(s, 0, len))
            break;
        int ntok = tokenize(s, len, toks, KEYS_MAX + 1);
        if (ntok < 1 || ntok > KEYS_MAX + 1)
            break;
        Py_ssize_t next = nl + 1 - buf;
        if (tok_is(&toks[0], "get", 3) || tok_is(&toks[0], "gets", 4)) {
            if (ntok < 2)
                break;
            int r = serve_get(t, toks, ntok, toks[0].n == 4, &o);
            if (r <= 0) {
                err = r < 0;
                break;
            }
        } else if (tok_is(&toks[0], "set", 3) && (ntok == 5 || ntok == 6)) {
            int failed = 0;
            Py_ssize_t took = serve_set(t, toks, ntok, buf + next, n - next, &o, &failed);
            if (took <= 0) {
                err = took < 0;
                break;
            }
            next += took;
        } else {
            break;
        }
        pos = next;
    }
    PyObject *res = NULL;
    if (!err) {
        PyObject *p = PyLong_FromSsize_t(pos);
        PyObject *r = o.len ? PyBytes_FromStringAndSize(o.p, o.len) : Py_NewRef(Py_None);
        if (p && r)
            res = PyTuple_Pack(2, p, r);
        Py_XDECREF(p);
        Py_XDECREF(r);
    }
    if (o.p != o.stack)
        PyMem_Free(o.p);
    return res;
}

static PyObject *text_take_error(Text *t, PyObject *unused)
{
    (void)unused;
    PyObject *e = t->error ? t->error : Py_NewRef(Py_None);
    t->error = NULL;
    return e;
}

static PyObject *text_counters(Text *t, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("{sLsLsLsL}", "cmd_get", t->c[T_CMD_GET], "cmd_set", t->c[T_CMD_SET], "get_hits",
                         t->c[T_GET_HITS], "get_misses", t->c[T_GET_MISSES]);
}

static PyObject *text_commands(Text *t, PyObject *unused)
{
    (void)unused;
    static const char *const names[] = {"get", "gets", "set"};
    static const int idx[] = {T_N_GET, T_N_GETS, T_N_SET};
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < 3; i++) {
        if (!t->c[idx[i]])
            continue;
        PyObject *k = PyBytes_FromString(names[i]), *v = PyLong_FromLongLong(t->c[idx[i]]);
        if (!k || !v || PyDict_SetItem(d, k, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    return d;
}

static PyObject *text_reset_counters(Text *t, PyObject *unused)
{
    (void)unused;
    t->c[T_CMD_GET] = t->c[T_CMD_SET] = t->c[T_GET_HITS] = t->c[T_GET_MISSES] = 0;
    Py_RETURN_NONE;
}

static PyObject *text_get_error(Text *t, void *unused)
{
    (void)unused;
    return Py_NewRef(t->error ? t->error : Py_None);
}

static PyMethodDef text_methods[] = {
    {"serve", (PyCFunction)(void (*)(void))text_serve, METH_FASTCALL,
     "serve(buf, pos) -> (pos after the requests answered, their reply bytes or None); see flashcache/_server.c"},
    {"take_error", (PyCFunction)text_take_error, METH_NOARGS, "the kept exception of a failed set (then None)"},
    {"counters", (PyCFunction)text_counters, METH_NOARGS, "Handler's counters this path bumped: cmd_get, cmd_set, "
     "get_hits, get_misses"},
    {"commands", (PyCFunction)text_commands, METH_NOARGS, "the requests this path ran, by command (non-zero only)"},
    {"reset_counters", (PyCFunction)text_reset_counters, METH_NOARGS, "stats reset: zero counters()"},
    {NULL, NULL, 0, NULL},
};

static PyObject *text_get_foreign(Text *t, void *unused)
{
    (void)unused;
    return PyLong_FromLongLong(t->c[T_FOREIGN]);
}

static PyGetSetDef text_getset[] = {
    {"error", (getter)text_get_error, NULL, "a failed set's exception, kept until take_error(); None", NULL},
    {"foreign", (getter)text_get_foreign, NULL, "values a flash get found that are not server items "
     "(Store.foreign's share from this path)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

FC_SHARED PyTypeObject TextPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache._hot_c.TextPath",
    .tp_basicsize = sizeof(Text),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The memcached text protocol's common case in C: DRAM get/gets hits and plain sets "
              "(see flashcache/_server.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)text_init,
    .tp_dealloc = (destructor)text_dealloc,
    .tp_traverse = (traverseproc)text_traverse,
    .tp_clear = (inquiry)text_clear,
    .tp_methods = text_methods,
    .tp_getset = text_getset,
};
