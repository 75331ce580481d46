/* Optional C accelerator of ``Rib.update``'s announcement loop (orchestrator/rib/table.py).
 *
 * The Python loop stays the reference and the only place that decides between several peers.
 * ``announcer(buckets, path, peer, family, changes, keys)`` is an iterator over ``keys`` that
 * applies, as it goes and in order, the announcements whose outcome needs no decision:
 *
 *   - the prefix's bucket is absent: a new bucket ``[_LO[lo], path]``;
 *   - the prefix is absent from its bucket: the index grows by its two-byte entry, ``path`` appended;
 *   - the prefix's destination is ``path`` already: nothing;
 *   - the destination is the peer's own single Path: replaced by ``path`` (implicit withdraw).
 *
 * and yields every other key (another peer's path, several paths, anything unexpected) for the
 * Python loop body to handle before it goes on, so the order of the changes is the Python one.
 * The best-path changes of the handled keys are appended to ``changes`` (None: none are built) as
 * ``BestChange`` tuples allocated as ``tuple.__new__`` does; the counts of new paths, all of them
 * best, are in ``received`` and ``best`` for the caller to add to the peer's counters.
 *
 * ``setup(path_type, best_change_type, only_path_reason, lo_entries, lo_bits)`` binds the Python
 * side once at import.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

static PyTypeObject *g_path_type;
static PyTypeObject *g_change_type;
static PyObject *g_only;  /* Reason.ONLY_PATH */
static PyObject *g_lo;    /* tuple of the shared two-byte index entries */
static Py_ssize_t g_peer_off; /* offset of Path._peer */
static int g_lo_bits;

typedef struct {
    PyObject_HEAD
    PyObject *buckets; /* dict: hi -> [index, dest, ...] */
    PyObject *path;
    PyObject *peer;
    PyObject *family;
    PyObject *changes; /* list or NULL */
    PyObject *keys;    /* list or tuple (PySequence_Fast) */
    Py_ssize_t pos;
    Py_ssize_t received;
    Py_ssize_t best;
} Announcer;

static int record(Announcer *a, PyObject *key, PyObject *old)
{
    if (a->changes == NULL)
        return 0;
    PyObject *t = g_change_type->tp_alloc(g_change_type, 5);
    if (t == NULL)
        return -1;
    PyObject *items[5] = {a->family, key, old ? old : Py_None, a->path, g_only};
    for (int k = 0; k < 5; k++) {
        Py_INCREF(items[k]);
        PyTuple_SET_ITEM(t, k, items[k]);
    }
    int rc = PyList_Append(a->changes, t);
    Py_DECREF(t);
    return rc;
}

/* The position (1-based, as in the bucket list) of the entry (b0, b1) in the index, 0 if absent. */
static Py_ssize_t find_entry(PyObject *los, unsigned char b0, unsigned char b1)
{
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(los);
    Py_ssize_t n = PyBytes_GET_SIZE(los) & ~(Py_ssize_t)1;
    for (Py_ssize_t k = 0; k < n; k += 2)
        if (p[k] == b0 && p[k + 1] == b1)
            return (k >> 1) + 1;
    return 0;
}

static PyObject *announcer_next(Announcer *a)
{
    PyObject *path = a->path;
    while (a->pos < PySequence_Fast_GET_SIZE(a->keys)) {
        PyObject *key = PySequence_Fast_GET_ITEM(a->keys, a->pos);
        a->pos++;
        if (!PyLong_CheckExact(key))
            goto yield;
        unsigned long long k = PyLong_AsUnsignedLongLong(key);
        if (k == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear(); /* negative or wider than 64 bits: Python's business */
            goto yield;
        }
        unsigned long long lo = k & ((1ULL << g_lo_bits) - 1);
        PyObject *entry = PyTuple_GET_ITEM(g_lo, (Py_ssize_t)lo);
        PyObject *hi = PyLong_FromUnsignedLongLong(k >> g_lo_bits);
        if (hi == NULL)
            return NULL;
        PyObject *bucket = PyDict_GetItemWithError(a->buckets, hi); /* borrowed */
        if (bucket == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(hi);
                return NULL;
            }
            PyObject *fresh = PyList_New(2);
            if (fresh == NULL) {
                Py_DECREF(hi);
                return NULL;
            }
            Py_INCREF(entry);
            PyList_SET_ITEM(fresh, 0, entry);
            Py_INCREF(path);
            PyList_SET_ITEM(fresh, 1, path);
            int rc = PyDict_SetItem(a->buckets, hi, fresh);
            Py_DECREF(fresh);
            Py_DECREF(hi);
            if (rc < 0)
                return NULL;
            a->received++;
            a->best++;
            if (record(a, key, NULL) < 0)
                return NULL;
            continue;
        }
        Py_DECREF(hi);
        if (!PyList_CheckExact(bucket) || PyList_GET_SIZE(bucket) < 1 || !PyBytes_CheckExact(PyList_GET_ITEM(bucket, 0))
            || !PyBytes_CheckExact(entry) || PyBytes_GET_SIZE(entry) != 2)
            goto yield;
        PyObject *los = PyList_GET_ITEM(bucket, 0);
        const unsigned char *e = (const unsigned char *)PyBytes_AS_STRING(entry);
        Py_ssize_t j = find_entry(los, e[0], e[1]);
        if (j == 0) {
            Py_ssize_t n = PyBytes_GET_SIZE(los);
            PyObject *grown = PyBytes_FromStringAndSize(NULL, n + 2);
            if (grown == NULL)
                return NULL;
            char *g = PyBytes_AS_STRING(grown);
            memcpy(g, PyBytes_AS_STRING(los), (size_t)n);
            g[n] = (char)e[0];
            g[n + 1] = (char)e[1];
            if (PyList_Append(bucket, path) < 0) {
                Py_DECREF(grown);
                return NULL;
            }
            PyList_SetItem(bucket, 0, grown); /* steals grown, drops the old index */
            a->received++;
            a->best++;
            if (record(a, key, NULL) < 0)
                return NULL;
            continue;
        }
        if (j >= PyList_GET_SIZE(bucket))
            goto yield;
        PyObject *dest = PyList_GET_ITEM(bucket, j);
        if (dest == path)
            continue;
        if (Py_TYPE(dest) == g_path_type && *(PyObject **)((char *)dest + g_peer_off) == a->peer) {
            /* the peer's own single path: implicit withdraw, the new one is the only path */
            Py_INCREF(dest);
            Py_INCREF(path);
            PyList_SetItem(bucket, j, path);
            int rc = record(a, key, dest);
            Py_DECREF(dest);
            if (rc < 0)
                return NULL;
            continue;
        }
    yield:
        Py_INCREF(key);
        return key;
    }
    return NULL;
}

static int announcer_traverse(Announcer *a, visitproc visit, void *arg)
{
    Py_VISIT(a->buckets);
    Py_VISIT(a->path);
    Py_VISIT(a->peer);
    Py_VISIT(a->family);
    Py_VISIT(a->changes);
    Py_VISIT(a->keys);
    return 0;
}

static int announcer_clear(Announcer *a)
{
    Py_CLEAR(a->buckets);
    Py_CLEAR(a->path);
    Py_CLEAR(a->peer);
    Py_CLEAR(a->family);
    Py_CLEAR(a->changes);
    Py_CLEAR(a->keys);
    return 0;
}

static void announcer_dealloc(Announcer *a)
{
    PyObject_GC_UnTrack(a);
    announcer_clear(a);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

static PyMemberDef announcer_members[] = {
    {"received", T_PYSSIZET, offsetof(Announcer, received), READONLY, "new paths (all best) applied"},
    {"best", T_PYSSIZET, offsetof(Announcer, best), READONLY, "of them, best paths (all of them)"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject AnnouncerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "orchestrator.rib._fastrib.Announcer",
    .tp_basicsize = sizeof(Announcer),
    .tp_dealloc = (destructor)announcer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)announcer_traverse,
    .tp_clear = (inquiry)announcer_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)announcer_next,
    .tp_members = announcer_members,
};

static PyObject *py_announcer(PyObject *self, PyObject *args)
{
    PyObject *buckets, *path, *peer, *family, *changes, *keys;
    if (!PyArg_ParseTuple(args, "O!OOOOO", &PyDict_Type, &buckets, &path, &peer, &family, &changes, &keys))
        return NULL;
    if (g_path_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastrib.setup() was not called");
        return NULL;
    }
    if (changes != Py_None && !PyList_CheckExact(changes)) {
        PyErr_SetString(PyExc_TypeError, "changes must be a list or None");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(keys, "keys must be iterable");
    if (seq == NULL)
        return NULL;
    Announcer *a = PyObject_GC_New(Announcer, &AnnouncerType);
    if (a == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_INCREF(buckets);
    a->buckets = buckets;
    Py_INCREF(path);
    a->path = path;
    Py_INCREF(peer);
    a->peer = peer;
    Py_INCREF(family);
    a->family = family;
    if (changes == Py_None) {
        a->changes = NULL;
    } else {
        Py_INCREF(changes);
        a->changes = changes;
    }
    a->keys = seq;
    a->pos = 0;
    a->received = 0;
    a->best = 0;
    PyObject_GC_Track(a);
    return (PyObject *)a;
}

static PyObject *py_setup(PyObject *self, PyObject *args)
{
    PyObject *path_type, *change_type, *only, *lo;
    int lo_bits;
    if (!PyArg_ParseTuple(args, "O!O!OO!i", &PyType_Type, &path_type, &PyType_Type, &change_type, &only,
                          &PyTuple_Type, &lo, &lo_bits))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)change_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "best_change_type must be a tuple subclass");
        return NULL;
    }
    if (lo_bits < 1 || lo_bits > 16 || PyTuple_GET_SIZE(lo) != ((Py_ssize_t)1 << lo_bits)) {
        PyErr_SetString(PyExc_ValueError, "lo_entries must have 2**lo_bits entries");
        return NULL;
    }
    PyObject *d = PyDict_GetItemString(((PyTypeObject *)path_type)->tp_dict, "_peer"); /* borrowed */
    if (d == NULL || Py_TYPE(d) != &PyMemberDescr_Type || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_SetString(PyExc_TypeError, "Path._peer must be a slot");
        return NULL;
    }
    g_peer_off = ((PyMemberDescrObject *)d)->d_member->offset;
    g_lo_bits = lo_bits;
    Py_INCREF(path_type);
    Py_XSETREF(g_path_type, (PyTypeObject *)path_type);
    Py_INCREF(change_type);
    Py_XSETREF(g_change_type, (PyTypeObject *)change_type);
    Py_INCREF(only);
    Py_XSETREF(g_only, only);
    Py_INCREF(lo);
    Py_XSETREF(g_lo, lo);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", py_setup, METH_VARARGS, "setup(path_type, best_change_type, only_path_reason, lo_entries, lo_bits)"},
    {"announcer", py_announcer, METH_VARARGS, "announcer(buckets, path, peer, family, changes, keys) -> iterator"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastrib", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastrib(void)
{
    if (PyType_Ready(&AnnouncerType) < 0)
        return NULL;
    return PyModule_Create(&module);
}
