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
#include <structmember.h>
#include <time.h>
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
    int kick_pending;           /* the loop's thread only: a kick() is scheduled (ConnBase) */
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

/* Queue a copy of len bytes at p for handle h: the bytes now queued for h (0 for a
 * finished connection: the data is dropped), or -1 if memory ran out (no exception set).
 * The loop's thread, with the GIL. */
static long long queue_reply(Sender *s, uint64_t h, const void *p, size_t len)
{
    buf *b = len ? malloc(sizeof *b + len) : NULL;
    if (len && !b)
        return -1;
    if (b) {
        b->next = NULL;
        b->len = len;
        b->off = 0;
        memcpy(b->data, p, len);
    }
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
    return (long long)pending;
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
    long long pending = queue_reply(s, h, v.buf, (size_t)v.len);
    PyBuffer_Release(&v);
    if (pending < 0)
        return PyErr_NoMemory();
    return PyLong_FromLongLong(pending);
}

/* kick(): wake the thread if it sleeps while replies wait; True if it had to. */
static PyObject *sender_kick(Sender *s, PyObject *unused)
{
    (void)unused;
    s->kick_pending = 0;                /* the next reply schedules the next kick */
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

/* ---------------------------------------------------------------------------------------
 * Traffic: the server's byte counters (bytes_in, bytes_out), one object shared by its
 * connections, counted from C and Python alike.
 *
 * ConnBase: the C half of a server connection (flashcache/server/server.py's Connection
 * subclasses it). uvloop calls data_received(data) for each read; in the common case (the
 * connection has nothing buffered, running or paused: parser_idle, no running request, not
 * write_paused, not closing) this one C call counts the bytes, stamps last_active, lets
 * the C text path (``fast.serve``, flashcache/_server.c) answer what it can, queues the
 * replies on the writer thread (send_reply) and returns; whatever the text path leaves
 * goes to the Python method data_received_slow(rest), as all of it does otherwise. The
 * state that decides this lives here, as members the Python side reads and writes:
 * closing, write_paused, running, parser_idle (which the Python side may set true only
 * after seeing its parser idle, and sets false before feeding it), last_active, out (the
 * writer thread's handle or None). send_reply(data) is the one way replies leave: queued
 * on the Sender (a connection over write_buffer calls pause_writing(); the loop's one
 * kick per iteration is scheduled through kick_soon), or, with no handle, write_direct. */
typedef struct {
    PyObject_HEAD
    unsigned long long bytes_in, bytes_out;
} Traffic;

static PyMemberDef traffic_members[] = {
    {"bytes_in", T_ULONGLONG, offsetof(Traffic, bytes_in), 0, "bytes received from clients"},
    {"bytes_out", T_ULONGLONG, offsetof(Traffic, bytes_out), 0, "reply bytes handed to the sockets"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject TrafficType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache.server._sender_c.Traffic",
    .tp_basicsize = sizeof(Traffic),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Traffic(): the server's bytes_in and bytes_out",
    .tp_new = PyType_GenericNew,
    .tp_members = traffic_members,
};

typedef struct {
    PyObject_HEAD
    PyObject *dict;             /* the Python subclass's attributes */
    PyObject *fast, *serve;     /* the TextPath and its bound serve, or NULL */
    PyObject *traffic;          /* Traffic */
    PyObject *sender;           /* Sender, or NULL */
    PyObject *kick_soon;        /* schedules the loop's kick (call_soon(server.kick)), or NULL */
    PyObject *out;              /* the writer thread's handle (int), or NULL/None */
    PyObject *running;          /* the request that waits, or NULL/None */
    unsigned long long write_buffer;
    double last_active;
    char closing, write_paused, parser_idle;
} ConnBase;

static PyObject *s_slow, *s_pause_writing, *s_write_direct, *s_error, *s_serve;

static int connbase_traverse(ConnBase *c, visitproc visit, void *arg)
{
    Py_VISIT(c->dict);
    Py_VISIT(c->fast);
    Py_VISIT(c->serve);
    Py_VISIT(c->traffic);
    Py_VISIT(c->sender);
    Py_VISIT(c->kick_soon);
    Py_VISIT(c->out);
    Py_VISIT(c->running);
    return 0;
}

static int connbase_clear(ConnBase *c)
{
    Py_CLEAR(c->dict);
    Py_CLEAR(c->fast);
    Py_CLEAR(c->serve);
    Py_CLEAR(c->traffic);
    Py_CLEAR(c->sender);
    Py_CLEAR(c->kick_soon);
    Py_CLEAR(c->out);
    Py_CLEAR(c->running);
    return 0;
}

static void connbase_dealloc(ConnBase *c)
{
    PyObject_GC_UnTrack(c);
    connbase_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);            /* time.monotonic()'s clock */
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* setup(fast, traffic, sender, kick_soon, write_buffer): what the connection serves with. */
static PyObject *connbase_setup(ConnBase *c, PyObject *args)
{
    PyObject *fast, *traffic, *sender, *kick_soon;
    unsigned long long wb;
    if (!PyArg_ParseTuple(args, "OO!OOK:setup", &fast, &TrafficType, &traffic, &sender, &kick_soon, &wb))
        return NULL;
    if (sender != Py_None && !PyObject_TypeCheck(sender, &SenderType)) {
        PyErr_SetString(PyExc_TypeError, "ConnBase.setup: sender must be a Sender or None");
        return NULL;
    }
    if ((sender != Py_None) != (kick_soon != Py_None) || (kick_soon != Py_None && !PyCallable_Check(kick_soon))) {
        PyErr_SetString(PyExc_TypeError, "ConnBase.setup: kick_soon must be callable with a sender, None without");
        return NULL;
    }
    PyObject *serve = fast == Py_None ? NULL : PyObject_GetAttr(fast, s_serve);
    if (fast != Py_None && !serve)
        return NULL;
    Py_XSETREF(c->fast, fast == Py_None ? NULL : Py_NewRef(fast));
    Py_XSETREF(c->serve, serve);
    Py_XSETREF(c->traffic, Py_NewRef(traffic));
    Py_XSETREF(c->sender, sender == Py_None ? NULL : Py_NewRef(sender));
    Py_XSETREF(c->kick_soon, kick_soon == Py_None ? NULL : Py_NewRef(kick_soon));
    c->write_buffer = wb;
    c->last_active = monotonic();
    Py_RETURN_NONE;
}

static inline int is_none(PyObject *o) { return !o || o == Py_None; }

/* send_reply(data): see above. 0, or -1 with an exception. */
static int send_reply(ConnBase *c, PyObject *data)
{
    if (is_none(c->out) || !c->sender) {
        PyObject *r = PyObject_CallMethodOneArg((PyObject *)c, s_write_direct, data);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    Sender *s = (Sender *)c->sender;
    uint64_t h;
    Py_buffer v;
    if (handle_arg(c->out, &h) < 0 || check_started(s) < 0 || PyObject_GetBuffer(data, &v, PyBUF_SIMPLE) < 0)
        return -1;
    long long pending = queue_reply(s, h, v.buf, (size_t)v.len);
    PyBuffer_Release(&v);
    if (pending < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if ((unsigned long long)pending > c->write_buffer) {
        PyObject *r = PyObject_CallMethodNoArgs((PyObject *)c, s_pause_writing);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    if (!s->kick_pending) {             /* one wake-up of the thread per loop iteration */
        s->kick_pending = 1;
        PyObject *r = PyObject_CallNoArgs(c->kick_soon);
        if (!r) {
            s->kick_pending = 0;
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *connbase_send_reply(ConnBase *c, PyObject *data)
{
    if (send_reply(c, data) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *connbase_data_received(ConnBase *c, PyObject *data)
{
    if (!c->traffic) {
        PyErr_SetString(PyExc_RuntimeError, "ConnBase: data_received before setup()");
        return NULL;
    }
    Py_ssize_t n = PyObject_Length(data);
    if (n < 0)
        return NULL;
    ((Traffic *)c->traffic)->bytes_in += (unsigned long long)n;
    c->last_active = monotonic();
    if (c->closing)
        Py_RETURN_NONE;
    PyObject *rest = Py_NewRef(data);
    if (c->serve && PyBytes_CheckExact(data) && is_none(c->running) && !c->write_paused && c->parser_idle) {
        PyObject *zero = PyLong_FromLong(0);
        PyObject *argv[2] = {data, zero};
        PyObject *res = zero ? PyObject_Vectorcall(c->serve, argv, 2, NULL) : NULL;
        Py_XDECREF(zero);
        if (!res)
            goto fail;
        Py_ssize_t pos;
        if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2 ||
            ((pos = PyLong_AsSsize_t(PyTuple_GET_ITEM(res, 0))) == -1 && PyErr_Occurred())) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "ConnBase: serve() must return (pos, reply or None)");
            Py_DECREF(res);
            goto fail;
        }
        PyObject *out = PyTuple_GET_ITEM(res, 1);
        if (out != Py_None) {
            ((Traffic *)c->traffic)->bytes_out += (unsigned long long)PyBytes_GET_SIZE(out);
            if (!PyBytes_Check(out) || send_reply(c, out) < 0) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "ConnBase: serve() must return (pos, reply or None)");
                Py_DECREF(res);
                goto fail;
            }
        }
        Py_DECREF(res);
        PyObject *err = PyObject_GetAttr(c->fast, s_error);
        if (!err)
            goto fail;
        int clean = err == Py_None;
        Py_DECREF(err);
        if (clean && pos == n) {
            Py_DECREF(rest);
            Py_RETURN_NONE;
        }
        Py_SETREF(rest, PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + pos, n - pos));
        if (!rest)
            return NULL;
    }
    PyObject *r = PyObject_CallMethodOneArg((PyObject *)c, s_slow, rest);
    Py_DECREF(rest);
    return r;
fail:
    Py_DECREF(rest);
    return NULL;
}

static PyMethodDef connbase_methods[] = {
    {"setup", (PyCFunction)connbase_setup, METH_VARARGS,
     "setup(fast, traffic, sender, kick_soon, write_buffer): the TextPath (or None), the server's Traffic, "
     "the writer thread (or None), what schedules its kick, the queued bytes that pause reading"},
    {"data_received", (PyCFunction)connbase_data_received, METH_O,
     "asyncio.Protocol.data_received: the C text path first, the rest to data_received_slow(rest)"},
    {"send_reply", (PyCFunction)connbase_send_reply, METH_O,
     "send_reply(data): after every earlier reply: queued on the writer thread (or write_direct(data))"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef connbase_members[] = {
    {"closing", T_BOOL, offsetof(ConnBase, closing), 0, "closing: nothing more is read or run"},
    {"write_paused", T_BOOL, offsetof(ConnBase, write_paused), 0, "the peer is not reading our replies"},
    {"parser_idle", T_BOOL, offsetof(ConnBase, parser_idle), 0,
     "the Python parser holds nothing (true only once seen so; false before feeding it)"},
    {"running", T_OBJECT, offsetof(ConnBase, running), 0, "the request that waits (a coroutine), or None"},
    {"out", T_OBJECT, offsetof(ConnBase, out), 0, "the writer thread's handle, or None"},
    {"last_active", T_DOUBLE, offsetof(ConnBase, last_active), 0, "time.monotonic() of the last read"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject ConnBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flashcache.server._sender_c.ConnBase",
    .tp_basicsize = sizeof(ConnBase),
    .tp_dictoffset = offsetof(ConnBase, dict),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The C half of a server connection (see flashcache/server/_sender.c)",
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)connbase_traverse,
    .tp_clear = (inquiry)connbase_clear,
    .tp_dealloc = (destructor)connbase_dealloc,
    .tp_methods = connbase_methods,
    .tp_members = connbase_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "flashcache.server._sender_c",
    "The server's writer thread: replies sent beside the event loop (flashcache/server/_sender.c)",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sender_c(void)
{
    if (PyType_Ready(&SenderType) < 0 || PyType_Ready(&TrafficType) < 0 || PyType_Ready(&ConnBaseType) < 0)
        return NULL;
    if (!(s_slow = PyUnicode_InternFromString("data_received_slow")) ||
        !(s_pause_writing = PyUnicode_InternFromString("pause_writing")) ||
        !(s_write_direct = PyUnicode_InternFromString("write_direct")) ||
        !(s_error = PyUnicode_InternFromString("error")) || !(s_serve = PyUnicode_InternFromString("serve")))
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "DRAINED", EV_DRAINED) == 0 && PyModule_AddIntConstant(m, "CLOSED", EV_CLOSED) == 0 &&
        PyModule_AddObjectRef(m, "Sender", (PyObject *)&SenderType) == 0 &&
        PyModule_AddObjectRef(m, "Traffic", (PyObject *)&TrafficType) == 0 &&
        PyModule_AddObjectRef(m, "ConnBase", (PyObject *)&ConnBaseType) == 0)
        return m;
    Py_XDECREF(m);
    return NULL;
}
