/* flashcache.server._sender_c: Sender, the server's writer thread. The event loop hands it
 * each connection's replies (copied) and goes on; one POSIX thread, which never touches a
 * Python object and so never takes the GIL, does the send(2) calls beside the loop, on
 * another core. On this 2-core machine the loopback send (with the receiver's TCP work the
 * kernel does in the sender's context) was a third of the server's CPU time and the
 * largest single cost once the C text path answered most requests (tools/bench_server.py).
 *
 * send() only queues: the loop calls kick() once per loop iteration (after every
 * connection that was ready has been answered), which wakes the thread if it sleeps, so
 * a batch of replies costs one wake-up, not one each.
 *
 * Per connection (an integer handle from open(fd)): a FIFO of reply buffers, sent in
 * order on a dup of the socket's fd that the thread owns, so the fd number cannot be
 * reused under it whatever the loop does with its own. A send that would block arms
 * EPOLLOUT for that fd and the thread goes on with other connections (a slow reader holds
 * up nobody). The loop learns two things through an eventfd (notify_fd) and events():
 *   DRAINED  a connection whose queue had gone over high_water is back under low_water
 *            (the server resumes reading it: backpressure);
 *   CLOSED   a connection asked to close(h) has sent everything queued (or its peer went
 *            away, or release(h) dropped it): the thread closed its fd; the loop now
 *            closes the transport, so the FIN follows the last reply.
 * Locking: one mutex over every queue and the ready list; the thread drops it for each
 * send(2). Only the thread frees buffers and connections. Handles carry a generation, so
 * a stale one is refused, never aliased. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

enum { EV_DRAINED = 1, EV_CLOSED = 2 };
enum { F_QUEUED = 1, F_BLOCKED = 2, F_CLOSING = 4, F_RELEASED = 8, F_OVER = 16, F_POLLED = 32 };
#define SLOT_BITS 24
#define WAKE_TOKEN UINT64_MAX

typedef struct buf {
    struct buf *next;
    size_t len, off;
    char data[];
} buf;

typedef struct conn {
    int fd;                     /* the thread's dup of the socket */
    unsigned flags;
    int error;                  /* errno of a failed send (then everything queued is dropped) */
    size_t pending;             /* bytes queued, not yet sent */
    buf *head, *tail;
    struct conn *next_ready;
    uint64_t handle;
} conn;

typedef struct {
    uint64_t handle;
    int kind;
} event;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_t thread;
    int started, stopping, idle;
    int epfd, wake_fd, notify_fd;
    size_t high_water, low_water;
    conn **slots;
    uint32_t *gens;
    unsigned nslots, *free_slots, nfree;
    conn *ready_head, *ready_tail;
    event *events;
    size_t nevents, cap_events;
    unsigned long long sends, bytes_sent, would_block, failed, live, wakes;
} Sender;

static inline unsigned slot_of(uint64_t h) { return (unsigned)(h & ((1u << SLOT_BITS) - 1)); }

/* The connection behind handle h, or NULL if it is finished or h is stale (under mu). */
static conn *lookup(Sender *s, uint64_t h)
{
    unsigned i = slot_of(h);
    if (i >= s->nslots || !s->slots[i] || s->slots[i]->handle != h)
        return NULL;
    return s->slots[i];
}

static void push_ready(Sender *s, conn *c)
{
    if (c->flags & (F_QUEUED | F_BLOCKED))
        return;
    c->flags |= F_QUEUED;
    c->next_ready = NULL;
    if (s->ready_tail)
        s->ready_tail->next_ready = c;
    else
        s->ready_head = c;
    s->ready_tail = c;
}

static void wake(int fd)
{
    uint64_t one = 1;
    ssize_t r;
    do
        r = write(fd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
}

/* An event for the loop (under mu); 0, or -1 if memory ran out (the event is lost: the
 * loop's own close then still happens on connection_lost). */
static int post(Sender *s, uint64_t h, int kind)
{
    if (s->nevents == s->cap_events) {
        size_t cap = s->cap_events ? s->cap_events * 2 : 64;
        event *e = realloc(s->events, cap * sizeof *e);
        if (!e)
            return -1;
        s->events = e;
        s->cap_events = cap;
    }
    s->events[s->nevents++] = (event){h, kind};
    if (s->nevents == 1)
        wake(s->notify_fd);
    return 0;
}

static void drop_queue(Sender *s, conn *c)
{
    (void)s;
    for (buf *b = c->head, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    c->head = c->tail = NULL;
    c->pending = 0;
}

/* The connection is done (under mu): its fd closed, its slot free, CLOSED posted. The
 * loop may have queued it again while its last send ran: it leaves the ready list too. */
static void finish(Sender *s, conn *c)
{
    if (c->flags & F_QUEUED) {
        conn *prev = NULL;
        for (conn *r = s->ready_head; r; prev = r, r = r->next_ready)
            if (r == c) {
                if (prev)
                    prev->next_ready = c->next_ready;
                else
                    s->ready_head = c->next_ready;
                if (s->ready_tail == c)
                    s->ready_tail = prev;
                break;
            }
    }
    drop_queue(s, c);
    if (c->flags & F_POLLED)
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    unsigned i = slot_of(c->handle);
    s->slots[i] = NULL;
    s->gens[i]++;
    s->free_slots[s->nfree++] = i;
    s->live--;
    post(s, c->handle, EV_CLOSED);
    free(c);
}

/* Send what c has queued until it is empty or the socket is full (under mu, dropped
 * around each send). */
static void pump(Sender *s, conn *c)
{
    while (c->head && !(c->flags & F_RELEASED) && !c->error) {
        buf *b = c->head;
        char *p = b->data + b->off;
        size_t n = b->len - b->off;
        pthread_mutex_unlock(&s->mu);
        ssize_t got = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        int err = errno;
        pthread_mutex_lock(&s->mu);
        if (got > 0) {
            s->sends++;
            s->bytes_sent += (unsigned long long)got;
            b->off += (size_t)got;
            c->pending -= (size_t)got;
            if (b->off == b->len) {
                c->head = b->next;
                if (!c->head)
                    c->tail = NULL;
                free(b);
            }
        } else if (got < 0 && err == EINTR) {
            continue;
        } else if (got < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
            s->would_block++;
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLONESHOT, .data.u64 = c->handle};
            int op = c->flags & F_POLLED ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
            if (epoll_ctl(s->epfd, op, c->fd, &ev) == 0) {
                c->flags |= F_BLOCKED | F_POLLED;
                return;
            }
            c->error = errno;               /* cannot wait for it: give the connection up */
        } else {
            c->error = got < 0 ? err : EPIPE;
        }
    }
    if (c->error) {
        s->failed++;
        drop_queue(s, c);
    }
}

static void *writer(void *arg)
{
    Sender *s = arg;
    struct epoll_event evs[64];
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        conn *c = s->ready_head;
        if (!c) {
            s->idle = 1;
            pthread_mutex_unlock(&s->mu);
            int n = epoll_wait(s->epfd, evs, 64, -1);
            pthread_mutex_lock(&s->mu);
            s->idle = 0;
            for (int i = 0; i < n; i++) {
                if (evs[i].data.u64 == WAKE_TOKEN) {
                    uint64_t v;
                    ssize_t r = read(s->wake_fd, &v, sizeof v);
                    (void)r;
                    continue;
                }
                conn *b = lookup(s, evs[i].data.u64);
                if (b && (b->flags & F_BLOCKED)) {
                    b->flags &= ~F_BLOCKED;
                    push_ready(s, b);
                }
            }
            continue;
        }
        s->ready_head = c->next_ready;
        if (!s->ready_head)
            s->ready_tail = NULL;
        c->flags &= ~F_QUEUED;
        pump(s, c);
        if ((c->flags & F_OVER) && c->pending <= s->low_water) {
            c->flags &= ~F_OVER;
            post(s, c->handle, EV_DRAINED);
        }
        if (c->error || (c->flags & F_RELEASED) || (!c->head && (c->flags & F_CLOSING)))
            finish(s, c);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* -- the loop's side ---------------------------------------------------------------------- */
static int sender_init(Sender *s, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"high_water", "low_water", NULL};
    Py_ssize_t high, low = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "n|n", kwlist, &high, &low))
        return -1;
    if (high < 1 || low > high) {
        PyErr_SetString(PyExc_ValueError, "Sender: high_water must be >= 1 and low_water <= high_water");
        return -1;
    }
    if (s->started) {
        PyErr_SetString(PyExc_RuntimeError, "Sender: already initialised");
        return -1;
    }
    s->high_water = (size_t)high;
    s->low_water = low < 0 ? (size_t)high / 4 : (size_t)low;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    s->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_TOKEN};
    if (s->epfd < 0 || s->wake_fd < 0 || s->notify_fd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wake_fd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    pthread_mutex_init(&s->mu, NULL);
    int err = pthread_create(&s->thread, NULL, writer, s);
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    s->started = 1;
    return 0;
}

static PyObject *sender_stop(Sender *s, PyObject *unused)
{
    (void)unused;
    if (!s->started)
        Py_RETURN_NONE;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_mutex_unlock(&s->mu);
    wake(s->wake_fd);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(s->thread, NULL);
    Py_END_ALLOW_THREADS
    s->started = 0;
    for (unsigned i = 0; i < s->nslots; i++)
        if (s->slots[i]) {
            drop_queue(s, s->slots[i]);
            close(s->slots[i]->fd);
            free(s->slots[i]);
            s->slots[i] = NULL;
        }
    s->live = 0;
    Py_RETURN_NONE;
}

static void sender_dealloc(Sender *s)
{
    PyObject *r = sender_stop(s, NULL);
    Py_XDECREF(r);
    if (s->epfd > 0)
        close(s->epfd);
    if (s->wake_fd > 0)
        close(s->wake_fd);
    if (s->notify_fd > 0)
        close(s->notify_fd);
    free(s->slots);
    free(s->gens);
    free(s->free_slots);
    free(s->events);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int check_started(Sender *s)
{
    if (s->started && !s->stopping)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "Sender: stopped (or never started)");
    return -1;
}

/* open(fd) -> handle: the thread's own dup of the socket fd. */
static PyObject *sender_open(Sender *s, PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "Sender.open(fd): not a file descriptor");
        return NULL;
    }
    if (check_started(s) < 0)
        return NULL;
    int mine = fcntl((int)fd, F_DUPFD_CLOEXEC, 0);
    if (mine < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(mine);
        return PyErr_NoMemory();
    }
    c->fd = mine;
    pthread_mutex_lock(&s->mu);
    if (!s->nfree) {
        unsigned n = s->nslots ? s->nslots * 2 : 256;
        conn **sl = n < (1u << SLOT_BITS) ? realloc(s->slots, n * sizeof *sl) : NULL;
        if (sl)
            s->slots = sl;
        uint32_t *g = sl ? realloc(s->gens, n * sizeof *g) : NULL;
        if (g)
            s->gens = g;
        unsigned *f = g ? realloc(s->free_slots, n * sizeof *f) : NULL;
        if (!f) {
            pthread_mutex_unlock(&s->mu);
            close(mine);
            free(c);
            return PyErr_NoMemory();
        }
        s->free_slots = f;
        for (unsigned i = s->nslots; i < n; i++) {
            s->slots[i] = NULL;
            s->gens[i] = 0;
        }
        for (unsigned i = n; i > s->nslots; i--)
            s->free_slots[s->nfree++] = i - 1;
        s->nslots = n;
    }
    unsigned i = s->free_slots[--s->nfree];
    c->handle = ((uint64_t)s->gens[i] << SLOT_BITS) | i;
    s->slots[i] = c;
    s->live++;
    pthread_mutex_unlock(&s->mu);
    return PyLong_FromUnsignedLongLong(c->handle);
}

static int handle_arg(PyObject *o, uint64_t *h)
{
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *h = v;
    return 0;
}

/* send(h, data) -> the bytes now queued for h (0 for a finished connection: data dropped) */
static PyObject *sender_send(Sender *s, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t h;
    Py_buffer v;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "Sender.send(handle, data)");
        return NULL;
    }
    if (handle_arg(args[0], &h) < 0 || check_started(s) < 0 || PyObject_GetBuffer(args[1], &v, PyBUF_SIMPLE) < 0)
        return NULL;
    buf *b = v.len ? malloc(sizeof *b + (size_t)v.len) : NULL;
    if (v.len && !b) {
        PyBuffer_Release(&v);
        return PyErr_NoMemory();
    }
    if (b) {
        b->next = NULL;
        b->len = (size_t)v.len;
        b->off = 0;
        memcpy(b->data, v.buf, (size_t)v.len);
    }
    PyBuffer_Release(&v);
    size_t pending = 0;
    pthread_mutex_lock(&s->mu);
    conn *c = lookup(s, h);
    if (c && b && !(c->flags & (F_CLOSING | F_RELEASED)) && !c->error) {
        if (c->tail)
            c->tail->next = b;
        else
            c->head = b;
        c->tail = b;
        c->pending += b->len;
        b = NULL;
        if (c->pending > s->high_water)
            c->flags |= F_OVER;
        push_ready(s, c);
        pending = c->pending;
    } else if (c) {
        pending = c->pending;
    }
    pthread_mutex_unlock(&s->mu);
    free(b);
    return PyLong_FromSize_t(pending);
}

/* kick(): wake the thread if it sleeps while replies wait; True if it had to. */
static PyObject *sender_kick(Sender *s, PyObject *unused)
{
    (void)unused;
    if (!s->started)
        Py_RETURN_FALSE;
    pthread_mutex_lock(&s->mu);
    int do_wake = s->idle && s->ready_head;
    if (do_wake)
        s->idle = 0;                    /* one wake-up is enough until it sleeps again */
    pthread_mutex_unlock(&s->mu);
    if (do_wake) {
        s->wakes++;
        wake(s->wake_fd);
    }
    return PyBool_FromLong(do_wake);
}

/* close(h) / release(h): finish h once its queue is sent / at once, dropping it. */
static PyObject *finish_call(Sender *s, PyObject *arg, unsigned flag)
{
    uint64_t h;
    if (handle_arg(arg, &h) < 0)
        return NULL;
    if (!s->started)
        Py_RETURN_FALSE;
    int do_wake = 0;
    pthread_mutex_lock(&s->mu);
    conn *c = lookup(s, h);
    if (c) {
        c->flags |= flag;
        if (flag == F_RELEASED)
            c->flags &= ~F_BLOCKED;     /* no longer waits for the socket */
        push_ready(s, c);
        do_wake = s->idle;
    }
    pthread_mutex_unlock(&s->mu);
    if (do_wake)
        wake(s->wake_fd);
    return PyBool_FromLong(c != NULL);
}

static PyObject *sender_close(Sender *s, PyObject *arg) { return finish_call(s, arg, F_CLOSING); }
static PyObject *sender_release(Sender *s, PyObject *arg) { return finish_call(s, arg, F_RELEASED); }

static PyObject *sender_pending(Sender *s, PyObject *arg)
{
    uint64_t h;
    if (handle_arg(arg, &h) < 0)
        return NULL;
    pthread_mutex_lock(&s->mu);
    conn *c = s->started ? lookup(s, h) : NULL;
    size_t p = c ? c->pending : 0;
    pthread_mutex_unlock(&s->mu);
    return PyLong_FromSize_t(p);
}

/* events() -> [(handle, kind)], kind 1 DRAINED or 2 CLOSED; clears notify_fd. */
static PyObject *sender_events(Sender *s, PyObject *unused)
{
    (void)unused;
    uint64_t v;
    ssize_t r = read(s->notify_fd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&s->mu);
    event *e = s->events;
    size_t n = s->nevents;
    s->events = NULL;
    s->nevents = s->cap_events = 0;
    pthread_mutex_unlock(&s->mu);
    PyObject *out = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; out && i < n; i++) {
        PyObject *t = Py_BuildValue("(Ki)", (unsigned long long)e[i].handle, e[i].kind);
        if (!t) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, t);
    }
    free(e);
    return out;
}

static PyObject *sender_stats(Sender *s, PyObject *unused)
{
    (void)unused;
    pthread_mutex_lock(&s->mu);
    PyObject *d = Py_BuildValue("{sKsKsKsKsKsK}", "sends", s->sends, "bytes_sent", s->bytes_sent, "would_block",
                                s->would_block, "failed", s->failed, "connections", s->live, "wakes", s->wakes);
    pthread_mutex_unlock(&s->mu);
    return d;
}

static PyObject *sender_notify_fd(Sender *s, void *unused)
{
    (void)unused;
    return PyLong_FromLong(s->notify_fd);
}

static PyMethodDef sender_methods[] = {
    {"open", (PyCFunction)sender_open, METH_O, "open(fd) -> handle: send on a dup of this socket fd"},
    {"send", (PyCFunction)(void (*)(void))sender_send, METH_FASTCALL,
     "send(handle, data) -> bytes queued for it: data (copied) goes out after what was queued before, "
     "once kick() is called"},
    {"kick", (PyCFunction)sender_kick, METH_NOARGS, "kick() -> bool: wake the thread if replies wait (once per batch)"},
    {"close", (PyCFunction)sender_close, METH_O, "close(handle): once its queue is sent, close the dup; CLOSED"},
    {"release", (PyCFunction)sender_release, METH_O, "release(handle): drop its queue and close the dup; CLOSED"},
    {"pending", (PyCFunction)sender_pending, METH_O, "pending(handle) -> bytes queued, not yet sent"},
    {"events", (PyCFunction)sender_events, METH_NOARGS, "events() -> [(handle, 1 DRAINED | 2 CLOSED)]"},
    {"stats", (PyCFunction)sender_stats, METH_NOARGS, "sends, bytes_sent, would_block, failed, connections, wakes"},
    {"stop", (PyCFunction)sender_stop, METH_NOARGS, "stop the thread (what is queued is dropped)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sender_getset[] = {
    {"notify_fd", (getter)sender_notify_fd, NULL, "readable when events() has something", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache.server._sender_c.Sender",
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sender(high_water, low_water=high_water // 4): the server's writer thread "
              "(see flashcache/server/_sender.c)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)sender_init,
    .tp_dealloc = (destructor)sender_dealloc,
    .tp_methods = sender_methods,
    .tp_getset = sender_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "flashcache.server._sender_c",
    "The server's writer thread: replies sent beside the event loop (flashcache/server/_sender.c)",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sender_c(void)
{
    if (PyType_Ready(&SenderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "DRAINED", EV_DRAINED) == 0 && PyModule_AddIntConstant(m, "CLOSED", EV_CLOSED) == 0 &&
        PyModule_AddObjectRef(m, "Sender", (PyObject *)&SenderType) == 0)
        return m;
    Py_XDECREF(m);
    return NULL;
}
