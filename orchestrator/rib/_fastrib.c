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
 * ``BestChange`` tuples allocated as ``tuple.__new__`` does; the count of new paths (each of them
 * the prefix's only path, so also best) is in ``received`` for the caller to add to the peer's
 * received and best counters.
 *
 * ``setup(path_type, best_change_type, only_path_reason, lo_entries, lo_bits)`` binds the Python
 * side once at import.
 *
 * ``intern(rib, peer, attrs)`` is ``Rib._intern`` (see "interning" below), ``setup_intern(path_type,
 * peer_type, attributes_type, sweep_min)`` binds its slots; ``dumps2(value)`` is the
 * ``marshal.dumps(value, 2)`` it uses, exposed for the differential test. ``announce(rib, peer,
 * attrs, buckets, family, changes, keys)`` is ``announcer`` of ``intern(rib, peer, attrs)`` (its
 * ``path`` attribute), one call per UPDATE. ``run(rib, peer, updates, start, changes, families,
 * buckets)`` is ``Rib.update_many``'s loop over a run of UPDATEs: ``announce`` of each, until one
 * needs Python (see py_run).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>
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
    Py_ssize_t warm_start, warm_end; /* keys[warm_start:warm_end] were warmed (see warm()) */
    PyObject *his[16];               /* their bucket numbers (NULL: taken, or not a plain key) */
} Announcer;

enum { WARM = 16 };

/* CPython 3.11's dict layout (Objects/dictobject.c, Include/internal/pycore_dict.h), copied to
 * prefetch a lookup's steps ahead of it (see warm()); other versions skip that part. Only read
 * here, never written: the lookups themselves go through PyDict_GetItemWithError. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define DICT_PREFETCH 1
typedef struct {
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size;
    uint8_t dk_log2_index_bytes;
    uint8_t dk_kind; /* 0: DICT_KEYS_GENERAL, the combined table of a dict with int keys */
    uint32_t dk_version;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
} Keys311;
typedef struct {
    Py_hash_t me_hash;
    PyObject *me_key;
    PyObject *me_value;
} Entry311;

/* The entry index in the first probed slot of ``hash`` (int keys: a non-negative int below 2**61 is
 * its own hash), -1 when empty, a dummy or past the entries. */
static Py_ssize_t first_slot(const Keys311 *dk, size_t hash)
{
    size_t i = hash & (((size_t)1 << dk->dk_log2_size) - 1);
    Py_ssize_t ix;
    if (dk->dk_log2_size < 8)
        ix = ((const int8_t *)dk->dk_indices)[i];
    else if (dk->dk_log2_size < 16)
        ix = ((const int16_t *)dk->dk_indices)[i];
    else if (dk->dk_log2_size < 32)
        ix = ((const int32_t *)dk->dk_indices)[i];
    else
        ix = (Py_ssize_t)((const int64_t *)dk->dk_indices)[i];
    return ix >= 0 && ix < dk->dk_nentries ? ix : -1;
}

static const void *slot_address(const Keys311 *dk, size_t hash)
{
    size_t i = hash & (((size_t)1 << dk->dk_log2_size) - 1);
    return dk->dk_indices + (i << (dk->dk_log2_index_bytes - dk->dk_log2_size));
}
#endif

/* The table is far bigger than the caches and the keys of an UPDATE are scattered over it: the
 * loop below waits on memory more than it computes. Look up the buckets of the next WARM keys
 * first (independent lookups, which the CPU overlaps) and prefetch what the loop will read of each
 * (the bucket's items and its index); their bucket numbers are kept for the loop. No Python code
 * runs in here (int keys, no GC-tracked allocation), so the borrowed pointers stay valid. */
static void warm(Announcer *a)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(a->keys);
    Py_ssize_t end = a->pos + WARM < n ? a->pos + WARM : n;
    PyObject *buckets[WARM];
    PyObject *stored[WARM] = {NULL}; /* borrowed: the dict's own key object for the key's bucket */
    unsigned long long his[WARM];
    int ok[WARM];
    for (Py_ssize_t i = a->pos; i < end; i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(a->keys, i);
        ok[i - a->pos] = 0;
        if (PyLong_CheckExact(key)) {
            unsigned long long k = PyLong_AsUnsignedLongLong(key);
            if (k == (unsigned long long)-1 && PyErr_Occurred())
                PyErr_Clear();
            else {
                his[i - a->pos] = k >> g_lo_bits;
                ok[i - a->pos] = 1;
            }
        }
    }
#ifdef DICT_PREFETCH
    /* A lookup is four dependent loads (the index slot, the entry, the stored key, which the lookup
     * compares as an object since it is not the same int object, and the bucket): issue each step
     * for all the keys before the next, so the misses overlap instead of queueing one after the
     * other (~0.1 us per prefix in the lookups below otherwise). Hints only: a key whose first
     * probed slot is not its own is left to the lookup. */
    const Keys311 *dk = PyDict_CheckExact(a->buckets) && ((PyDictObject *)a->buckets)->ma_values == NULL
                            ? (const Keys311 *)((PyDictObject *)a->buckets)->ma_keys
                            : NULL;
    if (dk != NULL && dk->dk_kind == 0 && dk->dk_log2_size < 48 && dk->dk_log2_index_bytes >= dk->dk_log2_size
        && dk->dk_log2_index_bytes <= dk->dk_log2_size + 3) {
        const Entry311 *entries = (const Entry311 *)(dk->dk_indices + ((size_t)1 << dk->dk_log2_index_bytes));
        Py_ssize_t ixs[WARM];
        for (Py_ssize_t i = 0; i < end - a->pos; i++)
            if (ok[i] && his[i] < ((unsigned long long)1 << 61) - 1)
                __builtin_prefetch(slot_address(dk, (size_t)his[i]));
        for (Py_ssize_t i = 0; i < end - a->pos; i++) {
            ixs[i] = ok[i] && his[i] < ((unsigned long long)1 << 61) - 1 ? first_slot(dk, (size_t)his[i]) : -1;
            if (ixs[i] >= 0)
                __builtin_prefetch(&entries[ixs[i]]);
        }
        for (Py_ssize_t i = 0; i < end - a->pos; i++)
            if (ixs[i] >= 0 && (unsigned long long)entries[ixs[i]].me_hash == his[i]) {
                stored[i] = entries[ixs[i]].me_key;
                __builtin_prefetch(stored[i]);
                __builtin_prefetch(entries[ixs[i]].me_value);
            }
    }
#endif
    for (Py_ssize_t i = a->pos; i < end; i++) {
        PyObject *hi = NULL, *bucket = NULL;
        if (ok[i - a->pos]) {
            /* The dict's own key object when it is that int: the lookup then matches it by identity
             * (no int made and freed per prefix, no comparison of two ints) */
            PyObject *same = stored[i - a->pos];
            if (same != NULL && PyLong_CheckExact(same) && Py_SIZE(same) > 0) {
                unsigned long long v = PyLong_AsUnsignedLongLong(same);
                if (v == (unsigned long long)-1 && PyErr_Occurred())
                    PyErr_Clear();
                else if (v == his[i - a->pos]) {
                    hi = same;
                    Py_INCREF(hi);
                }
            }
            if (hi == NULL && (hi = PyLong_FromUnsignedLongLong(his[i - a->pos])) == NULL)
                PyErr_Clear();
            else if ((bucket = PyDict_GetItemWithError(a->buckets, hi)) == NULL)
                PyErr_Clear();
        }
        a->his[i - a->pos] = hi;
        buckets[i - a->pos] = bucket;
        if (bucket != NULL && PyList_CheckExact(bucket))
            __builtin_prefetch(((PyListObject *)bucket)->ob_item);
    }
    for (Py_ssize_t i = a->pos; i < end; i++) {
        PyObject *bucket = buckets[i - a->pos];
        if (bucket != NULL && PyList_CheckExact(bucket) && PyList_GET_SIZE(bucket) > 0) {
            PyObject *los = PyList_GET_ITEM(bucket, 0);
            __builtin_prefetch(los);
            __builtin_prefetch((char *)los + 64);
            __builtin_prefetch(((PyListObject *)bucket)->ob_item + PyList_GET_SIZE(bucket));
        }
    }
    a->warm_start = a->pos;
    a->warm_end = end;
}

static void drop_warm(Announcer *a)
{
    for (Py_ssize_t i = a->warm_start; i < a->warm_end; i++)
        Py_CLEAR(a->his[i - a->warm_start]);
    a->warm_start = a->warm_end = 0;
}

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

/* bucket[0] = los + entry. The index is immutable for everyone else: when the bucket holds the only
 * reference to it, nobody can see it change, so it grows in place (PyObject_Realloc, as
 * _PyBytes_Resize does; pymalloc keeps the block when the size class does not change, which is
 * 7 inserts in 8) instead of a new object and a copy per insert. Same bytes, same size class, so
 * the same memory as a copy. 0, or -1 with MemoryError and the bucket unchanged. */
static int grow_index(PyObject *bucket, PyObject *los, const unsigned char *e)
{
    Py_ssize_t n = PyBytes_GET_SIZE(los);
#ifndef Py_REF_DEBUG /* (debug builds, whose reference bookkeeping _PyBytes_Resize keeps, take the copy) */
    if (Py_REFCNT(los) == 1 && PyBytes_CheckExact(los)) {
        PyBytesObject *sv = PyObject_Realloc(los, offsetof(PyBytesObject, ob_sval) + n + 3);
        if (sv != NULL) {
            if ((PyObject *)sv != los) {
                _Py_NewReference((PyObject *)sv); /* refcount 1, as it was; tracemalloc told */
                PyList_SET_ITEM(bucket, 0, (PyObject *)sv); /* the old block is gone: no decref */
            }
            Py_SET_SIZE(sv, n + 2);
            sv->ob_sval[n] = (char)e[0];
            sv->ob_sval[n + 1] = (char)e[1];
            sv->ob_sval[n + 2] = '\0';
            _Py_COMP_DIAG_PUSH
            _Py_COMP_DIAG_IGNORE_DEPR_DECLS
            sv->ob_shash = -1;
            _Py_COMP_DIAG_POP
            return 0;
        }
    }
#endif
    PyObject *grown = PyBytes_FromStringAndSize(NULL, n + 2);
    if (grown == NULL)
        return -1;
    char *g = PyBytes_AS_STRING(grown);
    memcpy(g, PyBytes_AS_STRING(los), (size_t)n);
    g[n] = (char)e[0];
    g[n + 1] = (char)e[1];
    PyList_SetItem(bucket, 0, grown); /* steals grown, drops the old index */
    return 0;
}

static PyObject *announcer_next(Announcer *a)
{
    PyObject *path = a->path;
    while (a->pos < PySequence_Fast_GET_SIZE(a->keys)) {
        if (a->pos >= a->warm_end) {
            drop_warm(a);
            warm(a);
        }
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
        PyObject *hi = NULL;
        if (a->pos - 1 >= a->warm_start && a->pos - 1 < a->warm_end) {
            hi = a->his[a->pos - 1 - a->warm_start]; /* taken: the reference moves here */
            a->his[a->pos - 1 - a->warm_start] = NULL;
        }
        if (hi == NULL && (hi = PyLong_FromUnsignedLongLong(k >> g_lo_bits)) == NULL)
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
            if (record(a, key, NULL) < 0)
                return NULL;
            continue;
        }
        Py_DECREF(hi);
        if (!PyList_CheckExact(bucket) || PyList_GET_SIZE(bucket) < 1 || !PyBytes_CheckExact(PyList_GET_ITEM(bucket, 0)))
            goto yield;
        PyObject *los = PyList_GET_ITEM(bucket, 0);
        const unsigned char *e = (const unsigned char *)PyBytes_AS_STRING(entry);
        Py_ssize_t j = find_entry(los, e[0], e[1]);
        if (j == 0) {
            if (PyList_Append(bucket, path) < 0)
                return NULL;
            if (grow_index(bucket, los, e) < 0) {
                /* undo the append: the bucket stays as it was (the list only shrinks, no allocation) */
                PyList_SetSlice(bucket, PyList_GET_SIZE(bucket) - 1, PyList_GET_SIZE(bucket), NULL);
                return NULL;
            }
            a->received++;
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
    drop_warm(a);
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
    {"path", T_OBJECT, offsetof(Announcer, path), READONLY, "the Path announced"},
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

static PyObject *make_announcer(PyObject *buckets, PyObject *path, PyObject *peer, PyObject *family,
                                PyObject *changes, PyObject *keys)
{
    if (!PyDict_Check(buckets)) {
        PyErr_SetString(PyExc_TypeError, "buckets must be a dict");
        return NULL;
    }
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
    a->warm_start = a->warm_end = 0;
    memset(a->his, 0, sizeof a->his);
    PyObject_GC_Track(a);
    return (PyObject *)a;
}

static PyObject *py_announcer(PyObject *self, PyObject *args)
{
    PyObject *buckets, *path, *peer, *family, *changes, *keys;
    if (!PyArg_ParseTuple(args, "O!OOOOO", &PyDict_Type, &buckets, &path, &peer, &family, &changes, &keys))
        return NULL;
    return make_announcer(buckets, path, peer, family, changes, keys);
}

static int slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *off)
{
    PyObject *d = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (d == NULL || Py_TYPE(d) != &PyMemberDescr_Type || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s must be a slot", type->tp_name, name);
        return -1;
    }
    *off = ((PyMemberDescrObject *)d)->d_member->offset;
    return 0;
}

static PyObject *intern_path(PyObject *rib, PyObject *peer, PyObject *attrs);

/* ``announce(rib, peer, attrs, buckets, family, changes, keys)``: ``announcer`` of the interned
 * ``intern(rib, peer, attrs)`` (its ``path``), one call per UPDATE instead of two. */
static PyObject *py_announce(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "announce(rib, peer, attrs, buckets, family, changes, keys)");
        return NULL;
    }
    PyObject *path = intern_path(args[0], args[1], args[2]);
    if (path == NULL || path == Py_None) /* None: an AS loop, the caller withdraws */
        return path;
    PyObject *run = make_announcer(args[3], path, args[1], args[4], args[5], args[6]);
    Py_DECREF(path);
    return run;
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
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(lo); i++) { /* the loop reads them without checks */
        PyObject *entry = PyTuple_GET_ITEM(lo, i);
        if (!PyBytes_CheckExact(entry) || PyBytes_GET_SIZE(entry) != 2) {
            PyErr_SetString(PyExc_ValueError, "lo_entries must be 2-byte bytes objects");
            return NULL;
        }
    }
    if (slot_offset((PyTypeObject *)path_type, "_peer", &g_peer_off) < 0)
        return NULL;
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

/* --- marshal version 2 of an attribute tuple -------------------------------------------------------
 *
 * ``marshal.dumps(t, 2)`` byte for byte for the values attribute sets are made of (None, False,
 * True, exact ints of up to 63 bits, exact bytes, ASCII str, exact tuples; as Python/marshal.c
 * writes them at version 2: no references, no short forms); 1 with anything else, and the caller
 * asks marshal itself (which also raises what it raises). */
typedef struct {
    char *p;
    Py_ssize_t n, cap;
    char small[256];
} WBuf;

static int w_grow(WBuf *b, Py_ssize_t more)
{
    Py_ssize_t cap = b->cap * 2 > b->n + more ? b->cap * 2 : b->n + more;
    char *q = b->p == b->small ? PyMem_Malloc((size_t)cap) : PyMem_Realloc(b->p, (size_t)cap);
    if (q == NULL)
        return -1;
    if (b->p == b->small)
        memcpy(q, b->small, (size_t)b->n);
    b->p = q;
    b->cap = cap;
    return 0;
}

#define W_ROOM(b, more) ((b)->n + (more) <= (b)->cap || w_grow((b), (more)) == 0)

static inline void w_i32(char *p, int32_t x)
{
    uint32_t u = (uint32_t)x;
    p[0] = (char)u;
    p[1] = (char)(u >> 8);
    p[2] = (char)(u >> 16);
    p[3] = (char)(u >> 24);
}

/* 0 written, 1 not a value handled here, -1 memory error */
static int w_value(WBuf *b, PyObject *v, int depth)
{
    if (!W_ROOM(b, 5 + 2 * 5)) /* any scalar below: type, count, up to five 15-bit digits */
        return -1;
    char *p = b->p + b->n;
    PyTypeObject *type = Py_TYPE(v);
    if (type == &PyLong_Type) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow)
            return 1;
        if (x >= INT32_MIN && x <= INT32_MAX) { /* TYPE_INT */
            p[0] = 'i';
            w_i32(p + 1, (int32_t)x);
            b->n += 5;
            return 0;
        }
        /* TYPE_LONG: signed count of base 2**15 digits, then the magnitude's digits, low first */
        uint64_t m = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
        int32_t l = 0;
        for (uint64_t t = m; t; t >>= 15)
            l++;
        if (!W_ROOM(b, 5 + 2 * l))
            return -1;
        p = b->p + b->n;
        p[0] = 'l';
        w_i32(p + 1, x < 0 ? -l : l);
        p += 5;
        for (int32_t k = 0; k < l; k++, m >>= 15) {
            *p++ = (char)(m & 0xFF);
            *p++ = (char)((m >> 8) & 0x7F);
        }
        b->n += 5 + 2 * l;
        return 0;
    }
    if (type == &PyTuple_Type) {
        Py_ssize_t n = PyTuple_GET_SIZE(v);
        if (n > INT32_MAX || depth > 64)
            return 1;
        p[0] = '('; /* TYPE_TUPLE: version < 4 has no small tuple */
        w_i32(p + 1, (int32_t)n);
        b->n += 5;
        for (Py_ssize_t k = 0; k < n; k++) {
            int rc = w_value(b, PyTuple_GET_ITEM(v, k), depth + 1);
            if (rc)
                return rc;
        }
        return 0;
    }
    if (v == Py_None || v == Py_False || v == Py_True) {
        p[0] = v == Py_None ? 'N' : v == Py_False ? 'F' : 'T';
        b->n += 1;
        return 0;
    }
    const char *data;
    Py_ssize_t size;
    char code;
    if (type == &PyBytes_Type) {
        data = PyBytes_AS_STRING(v);
        size = PyBytes_GET_SIZE(v);
        code = 's'; /* TYPE_STRING */
    } else if (type == &PyUnicode_Type && PyUnicode_IS_READY(v) && PyUnicode_IS_ASCII(v)) {
        data = (const char *)PyUnicode_DATA(v);
        size = PyUnicode_GET_LENGTH(v);
        code = 'u'; /* TYPE_UNICODE: version < 3 has no interned or short ASCII forms */
    } else {
        return 1;
    }
    if (size > INT32_MAX)
        return 1;
    if (!W_ROOM(b, 5 + size))
        return -1;
    p = b->p + b->n;
    p[0] = code;
    w_i32(p + 1, (int32_t)size);
    memcpy(p + 5, data, (size_t)size);
    b->n += 5 + size;
    return 0;
}

static PyObject *dumps2(PyObject *v)
{
    WBuf b;
    b.p = b.small;
    b.n = 0;
    b.cap = sizeof b.small;
    int rc = w_value(&b, v, 0);
    PyObject *out = rc == 0 ? PyBytes_FromStringAndSize(b.p, b.n) : NULL;
    if (b.p != b.small)
        PyMem_Free(b.p);
    if (rc < 0)
        return PyErr_NoMemory();
    return rc == 0 ? out : PyMarshal_WriteObjectToString(v, 2);
}

static PyObject *py_dumps2(PyObject *self, PyObject *v)
{
    return dumps2(v);
}

/* --- interning (``Rib._intern`` and ``Rib._rank``, the reference) --------------------------------
 *
 * ``intern(rib, peer, attrs)`` -> the peer's ``Path`` for ``attrs``: ``encode_attrs`` (the same
 * marshal version 2 of the same tuple), the probe of ``peer.cache``, and on a miss the rank of the
 * common case (one non-empty AS_SEQUENCE, int fields) packed in C, the ``Path`` built with its
 * slots filled, stored, and the cache swept as ``rib._sweep_peer(peer)`` does when it reached
 * ``peer.sweep_at``.
 * Whatever is not exactly that (another type, an unset slot, an odd AS path or field) goes to
 * ``rib._intern`` / ``rib._rank``, so errors and odd values are the Python ones.
 */

static PyTypeObject *g_peer_type, *g_attrs_type;
static Py_ssize_t g_blob_off, g_rank_off;
static Py_ssize_t g_cache_off, g_sweep_off, g_ebgp_off, g_base_off, g_lp_off, g_loop_off;
enum { A_NH, A_ORIGIN, A_PATH, A_MED, A_LP, A_COMM, A_LCOMM, A_ATOMIC, A_AGGR, A_OTHER, A_N };
static const char *const g_attr_names[A_N] = {
    "next_hop", "origin", "as_path", "med", "local_pref", "communities", "large_communities",
    "atomic_aggregate", "aggregator", "other",
};
static Py_ssize_t g_attr_off[A_N];
static PyObject *g_missing_name; /* "_missing_med_rank", interned */

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* Rank layout (orchestrator/rib/decide.py): bit shifts of each field. */
enum { MED_SHIFT = 81, ORIGIN_SHIFT = 113, ASPATH_SHIFT = 115, LP_SHIFT = 131, RANK_WORDS = 3 };

static void put_bits(uint64_t *w, uint64_t value, int shift)
{
    w[shift >> 6] |= value << (shift & 63);
    if ((shift & 63) && (shift >> 6) + 1 < RANK_WORDS)
        w[(shift >> 6) + 1] |= value >> (64 - (shift & 63));
}

/* OR a non-negative int of at most 192 bits into w; -1 (error cleared) when it is not one. The
 * peer's and the RIB's constant parts of the rank are the same few objects call after call: their
 * words are kept, by identity (a strong reference held), in a small cache. */
enum { WORD_CACHE = 8 };
#if PY_VERSION_HEX >= 0x030D0000 /* 3.13 added with_exceptions */
#define LONG_AS_BYTES(v, buf, n) _PyLong_AsByteArray((PyLongObject *)(v), (buf), (n), 1, 0, 1)
#else
#define LONG_AS_BYTES(v, buf, n) _PyLong_AsByteArray((PyLongObject *)(v), (buf), (n), 1, 0)
#endif
static struct { PyObject *obj; uint64_t w[RANK_WORDS]; } g_words[WORD_CACHE];
static int g_words_next;

static int or_int(uint64_t *w, PyObject *v)
{
    if (v == NULL) /* an unset slot; also what the cache's empty entries hold */
        return -1;
    for (int c = 0; c < WORD_CACHE; c++)
        if (g_words[c].obj == v) {
            for (int i = 0; i < RANK_WORDS; i++)
                w[i] |= g_words[c].w[i];
            return 0;
        }
    unsigned char buf[8 * RANK_WORDS];
    if (!PyLong_CheckExact(v) || _PyLong_Sign(v) < 0
        || LONG_AS_BYTES(v, buf, sizeof buf) < 0) {
        PyErr_Clear();
        return -1;
    }
    int c = g_words_next;
    g_words_next = (c + 1) % WORD_CACHE;
    Py_INCREF(v);
    Py_XSETREF(g_words[c].obj, v);
    for (int i = 0; i < RANK_WORDS; i++) {
        uint64_t x = 0;
        for (int b = 7; b >= 0; b--)
            x = (x << 8) | buf[8 * i + b];
        g_words[c].w[i] = x;
        w[i] |= x;
    }
    return 0;
}

/* ``Rib._rank`` for the common case; NULL without an error set: not that case, ask Python. */
static PyObject *fast_rank(PyObject *rib, PyObject *peer, PyObject *attrs)
{
    uint64_t w[RANK_WORDS] = {0, 0, 0};
    PyObject *as_path = SLOT(attrs, g_attr_off[A_PATH]);
    if (!PyTuple_CheckExact(as_path) || PyTuple_GET_SIZE(as_path) != 1)
        return NULL;
    PyObject *seg = PyTuple_GET_ITEM(as_path, 0);
    if (!PyTuple_CheckExact(seg) || PyTuple_GET_SIZE(seg) != 2)
        return NULL;
    PyObject *stype = PyTuple_GET_ITEM(seg, 0), *asns = PyTuple_GET_ITEM(seg, 1);
    if (!PyLong_CheckExact(stype) || !PyTuple_CheckExact(asns) || PyTuple_GET_SIZE(asns) == 0)
        return NULL;
    int overflow = 0;
    if (PyLong_AsLongAndOverflow(stype, &overflow) != 2 || overflow) /* AS_SEQUENCE */
        return NULL;
    PyObject *nas = PyTuple_GET_ITEM(asns, 0);
    PyObject *origin = SLOT(attrs, g_attr_off[A_ORIGIN]);
    PyObject *med = SLOT(attrs, g_attr_off[A_MED]);
    PyObject *lp = SLOT(attrs, g_attr_off[A_LP]);
    PyObject *ebgp = SLOT(peer, g_ebgp_off);
    if (!PyLong_CheckExact(nas) || !PyLong_Check(origin) || (med != Py_None && !PyLong_CheckExact(med))
        || (lp != Py_None && !PyLong_CheckExact(lp)) || ebgp == NULL || !PyBool_Check(ebgp))
        return NULL;
    Py_ssize_t as_len = PyTuple_GET_SIZE(asns);
    /* ``x & mask`` of Python ints (two's complement for negatives) is the low bits of the C mask */
    put_bits(w, PyLong_AsUnsignedLongLongMask(nas) & 0xFFFFFFFFu, 0);
    put_bits(w, (uint64_t)(as_len < 0xFFFF ? as_len : 0xFFFF), ASPATH_SHIFT);
    put_bits(w, PyLong_AsUnsignedLongLongMask(origin) & 3u, ORIGIN_SHIFT);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return NULL;
    }
    if (ebgp == Py_True || lp == Py_None) {
        if (or_int(w, SLOT(peer, g_lp_off)) < 0)
            return NULL;
    } else {
        put_bits(w, 0xFFFFFFFFu - (PyLong_AsUnsignedLongLongMask(lp) & 0xFFFFFFFFu), LP_SHIFT);
    }
    if (med == Py_None) {
        PyObject *missing = PyObject_GetAttr(rib, g_missing_name);
        if (missing == NULL) {
            PyErr_Clear();
            return NULL;
        }
        int rc = or_int(w, missing);
        Py_DECREF(missing);
        if (rc < 0)
            return NULL;
    } else {
        put_bits(w, PyLong_AsUnsignedLongLongMask(med) & 0xFFFFFFFFu, MED_SHIFT);
    }
    if (or_int(w, SLOT(peer, g_base_off)) < 0)
        return NULL;
    unsigned char buf[8 * RANK_WORDS];
    for (int i = 0; i < RANK_WORDS; i++)
        for (int b = 0; b < 8; b++)
            buf[8 * i + b] = (unsigned char)(w[i] >> (8 * b));
    return _PyLong_FromByteArray(buf, sizeof buf, 1, 0);
}

/* ``rib._sweep_peer(peer)``: drop the entries whose Path only the cache holds, then
 * ``peer.sweep_at = max(_SWEEP_MIN, 2 * len(cache))``. */
static Py_ssize_t g_sweep_min = 4096;

static int sweep(PyObject *peer, PyObject *cache)
{
    PyObject *dead = PyList_New(0);
    if (dead == NULL)
        return -1;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(cache, &pos, &k, &v))
        if (Py_REFCNT(v) <= 1 && PyList_Append(dead, k) < 0) { /* sys.getrefcount(v) <= 2 in Python */
            Py_DECREF(dead);
            return -1;
        }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(dead); i++)
        if (PyDict_DelItem(cache, PyList_GET_ITEM(dead, i)) < 0) {
            Py_DECREF(dead);
            return -1;
        }
    Py_DECREF(dead);
    Py_ssize_t at = 2 * PyDict_GET_SIZE(cache);
    PyObject *n = PyLong_FromSsize_t(at > g_sweep_min ? at : g_sweep_min);
    if (n == NULL)
        return -1;
    Py_XSETREF(SLOT(peer, g_sweep_off), n);
    return 0;
}

/* ``Rib._looped``: 1 when the AS_PATH holds the peer's ``loop_as`` (>= 0), 0 when not, -1 with an
 * exception. The plain shape (a tuple of (type, tuple of ints) segments) is read here; anything else
 * asks the Python method. */
static int looped(PyObject *rib, PyObject *peer, PyObject *attrs)
{
    PyObject *loop_as = SLOT(peer, g_loop_off), *as_path = SLOT(attrs, g_attr_off[A_PATH]);
    if (loop_as == NULL || !PyLong_CheckExact(loop_as) || as_path == NULL || !PyTuple_CheckExact(as_path))
        goto ask;
    int overflow = 0;
    long long asn = PyLong_AsLongLongAndOverflow(loop_as, &overflow);
    if (overflow || (asn == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        goto ask;
    }
    if (asn < 0)
        return 0;
    for (Py_ssize_t s = 0; s < PyTuple_GET_SIZE(as_path); s++) {
        PyObject *seg = PyTuple_GET_ITEM(as_path, s);
        if (!PyTuple_CheckExact(seg) || PyTuple_GET_SIZE(seg) != 2 || !PyTuple_CheckExact(PyTuple_GET_ITEM(seg, 1)))
            goto ask;
        PyObject *asns = PyTuple_GET_ITEM(seg, 1);
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(asns); k++) {
            PyObject *a = PyTuple_GET_ITEM(asns, k);
            if (!PyLong_CheckExact(a))
                goto ask;
            long long v = PyLong_AsLongLongAndOverflow(a, &overflow);
            if (v == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                goto ask;
            }
            if (!overflow && v == asn)
                return 1;
        }
    }
    return 0;
ask:;
    PyObject *r = PyObject_CallMethod(rib, "_looped", "OO", peer, attrs);
    if (r == NULL)
        return -1;
    int truth = PyObject_IsTrue(r);
    Py_DECREF(r);
    return truth;
}

/* ``Rib._intern``: the peer's Path for ``attrs``, or None (a new reference) for an AS loop. */
static PyObject *intern_path(PyObject *rib, PyObject *peer, PyObject *attrs)
{
    if (g_attrs_type == NULL || Py_TYPE(attrs) != g_attrs_type || Py_TYPE(peer) != g_peer_type)
        return PyObject_CallMethod(rib, "_intern", "OO", peer, attrs);
    PyObject *cache = SLOT(peer, g_cache_off);
    if (cache == NULL || !PyDict_CheckExact(cache))
        return PyObject_CallMethod(rib, "_intern", "OO", peer, attrs);
    PyObject *t = PyTuple_New(A_N);
    if (t == NULL)
        return NULL;
    for (int k = 0; k < A_N; k++) {
        PyObject *v = SLOT(attrs, g_attr_off[k]);
        if (v == NULL) { /* an unset slot: the Python AttributeError */
            Py_DECREF(t);
            return PyObject_CallMethod(rib, "_intern", "OO", peer, attrs);
        }
        if (k == A_ORIGIN) {
            v = PyNumber_Long(v); /* int(attrs.origin) */
            if (v == NULL) {
                Py_DECREF(t);
                return NULL;
            }
        } else {
            Py_INCREF(v);
        }
        PyTuple_SET_ITEM(t, k, v);
    }
    PyObject *blob = dumps2(t);
    Py_DECREF(t);
    if (blob == NULL)
        return NULL;
    PyObject *path = PyDict_GetItemWithError(cache, blob);
    if (path != NULL) {
        Py_DECREF(blob);
        Py_INCREF(path);
        return path;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(blob);
        return NULL;
    }
    int loop = looped(rib, peer, attrs);
    if (loop != 0) {
        Py_DECREF(blob);
        if (loop < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *rank = fast_rank(rib, peer, attrs);
    if (rank == NULL) {
        if (PyErr_Occurred() || (rank = PyObject_CallMethod(rib, "_rank", "OO", peer, attrs)) == NULL) {
            Py_DECREF(blob);
            return NULL;
        }
    }
    path = g_path_type->tp_alloc(g_path_type, 0);
    if (path == NULL) {
        Py_DECREF(blob);
        Py_DECREF(rank);
        return NULL;
    }
    Py_INCREF(peer);
    SLOT(path, g_peer_off) = peer;
    SLOT(path, g_blob_off) = blob; /* the references taken above move into the slots */
    SLOT(path, g_rank_off) = rank;
    if (PyDict_SetItem(cache, blob, path) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    /* ``if len(peer.cache) >= peer.sweep_at: rib._sweep_peer(peer)`` */
    PyObject *sweep_at = SLOT(peer, g_sweep_off);
    int due;
    if (sweep_at != NULL && PyLong_CheckExact(sweep_at)) {
        int overflow = 0;
        long long at = PyLong_AsLongLongAndOverflow(sweep_at, &overflow);
        due = overflow ? overflow < 0 : PyDict_GET_SIZE(cache) >= at;
    } else {
        PyObject *size = PyLong_FromSsize_t(PyDict_GET_SIZE(cache));
        due = size == NULL ? -1 : PyObject_RichCompareBool(size, sweep_at ? sweep_at : Py_None, Py_GE);
        Py_XDECREF(size);
    }
    if (due > 0 && sweep(peer, cache) < 0)
        due = -1;
    if (due < 0) {
        Py_DECREF(path);
        return NULL;
    }
    return path;
}

static PyObject *py_intern(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "intern(rib, peer, attrs)");
        return NULL;
    }
    return intern_path(args[0], args[1], args[2]);
}

static PyObject *py_setup_intern(PyObject *self, PyObject *args)
{
    PyTypeObject *path_type, *peer_type, *attrs_type;
    Py_ssize_t sweep_min = 4096;
    if (!PyArg_ParseTuple(args, "O!O!O!|n", &PyType_Type, &path_type, &PyType_Type, &peer_type, &PyType_Type,
                          &attrs_type, &sweep_min))
        return NULL;
    Py_ssize_t off[A_N], blob_off, rank_off, cache_off, sweep_off, ebgp_off, base_off, lp_off, loop_off;
    for (int k = 0; k < A_N; k++)
        if (slot_offset(attrs_type, g_attr_names[k], &off[k]) < 0)
            return NULL;
    if (slot_offset(path_type, "blob", &blob_off) < 0
        || slot_offset(path_type, "rank", &rank_off) < 0 || slot_offset(peer_type, "cache", &cache_off) < 0
        || slot_offset(peer_type, "sweep_at", &sweep_off) < 0 || slot_offset(peer_type, "ebgp", &ebgp_off) < 0
        || slot_offset(peer_type, "rank_base", &base_off) < 0 || slot_offset(peer_type, "lp_rank", &lp_off) < 0
        || slot_offset(peer_type, "loop_as", &loop_off) < 0)
        return NULL;
    if (g_path_type != NULL && g_path_type != path_type) {
        PyErr_SetString(PyExc_ValueError, "setup_intern: not the Path type given to setup()");
        return NULL;
    }
    if (g_path_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastrib.setup() was not called");
        return NULL;
    }
    if (g_missing_name == NULL && (g_missing_name = PyUnicode_InternFromString("_missing_med_rank")) == NULL)
        return NULL;
    memcpy(g_attr_off, off, sizeof off);
    g_sweep_min = sweep_min;
    g_blob_off = blob_off;
    g_rank_off = rank_off;
    g_cache_off = cache_off;
    g_sweep_off = sweep_off;
    g_ebgp_off = ebgp_off;
    g_base_off = base_off;
    g_lp_off = lp_off;
    g_loop_off = loop_off;
    Py_INCREF(peer_type);
    Py_XSETREF(g_peer_type, peer_type);
    Py_INCREF(attrs_type);
    Py_XSETREF(g_attrs_type, attrs_type);
    Py_RETURN_NONE;
}

/* ``run(rib, peer, updates, start, changes, families, buckets)``: ``Rib.update_many``'s loop over a
 * run of one peer's UPDATEs (``updates``: list or tuple) from ``updates[start]``, for a RIB without
 * ``on_update``. Each UPDATE that has no withdrawals, announces with attributes in one of
 * ``families`` (the family of ``buckets[i]`` is ``families[i]``) and keys in a list or tuple is
 * interned and announced here (``announce``); an UPDATE without prefixes is skipped. Returns
 * ``(i, None, None)`` when ``updates[i]`` is one to apply in Python from its start (i == len: all
 * done), or ``(i, announcer, key)`` when the announcer of ``updates[i]`` yielded ``key``: the
 * Python loop body takes ``key`` and the rest of the announcer, then adds its ``received``. The new
 * paths of the UPDATEs finished here are added to the peer's ``received`` and ``best`` counters
 * before returning, also when raising (the UPDATEs before the one that raised stay applied). */
static PyTypeObject *g_update_type; /* the last type whose four fields were slots, and their offsets */
static Py_ssize_t g_u_off[4];
static const char *const g_u_names[4] = {"family", "attrs", "announce", "withdraw"};

static int update_fields(PyObject *u, PyObject **out) /* new references; -1 with an exception */
{
    if (Py_TYPE(u) != g_update_type) {
        Py_ssize_t off[4];
        int slots = 1;
        for (int k = 0; k < 4 && slots; k++)
            if (slot_offset(Py_TYPE(u), g_u_names[k], &off[k]) < 0) {
                PyErr_Clear();
                slots = 0;
            }
        if (slots) {
            Py_INCREF(Py_TYPE(u));
            Py_XSETREF(g_update_type, Py_TYPE(u));
            memcpy(g_u_off, off, sizeof off);
        }
    }
    for (int k = 0; k < 4; k++) {
        PyObject *v = Py_TYPE(u) == g_update_type ? SLOT(u, g_u_off[k]) : NULL;
        if (v != NULL)
            Py_INCREF(v);
        else if ((v = PyObject_GetAttrString(u, g_u_names[k])) == NULL) {
            while (k--)
                Py_CLEAR(out[k]);
            return -1;
        }
        out[k] = v;
    }
    return 0;
}

static int add_to(PyObject *peer, const char *name, const Py_ssize_t *n, Py_ssize_t nf)
{
    PyObject *counts = PyObject_GetAttrString(peer, name);
    if (counts == NULL)
        return -1;
    int rc = 0;
    for (Py_ssize_t fi = 0; fi < nf && rc == 0; fi++) {
        if (n[fi] == 0)
            continue;
        PyObject *old = PySequence_GetItem(counts, fi);
        PyObject *add = PyLong_FromSsize_t(n[fi]);
        PyObject *sum = old && add ? PyNumber_Add(old, add) : NULL;
        rc = sum == NULL ? -1 : PySequence_SetItem(counts, fi, sum);
        Py_XDECREF(old);
        Py_XDECREF(add);
        Py_XDECREF(sum);
    }
    Py_DECREF(counts);
    return rc;
}

enum { RUN_FAMILIES = 4 };

static PyObject *py_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "run(rib, peer, updates, start, changes, families, buckets)");
        return NULL;
    }
    PyObject *rib = args[0], *peer = args[1], *updates = args[2], *changes = args[4];
    PyObject *families = args[5], *buckets = args[6];
    Py_ssize_t i = PyLong_AsSsize_t(args[3]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (!(PyList_CheckExact(updates) || PyTuple_CheckExact(updates)) || !PyTuple_CheckExact(families)
        || !(PyList_CheckExact(buckets) || PyTuple_CheckExact(buckets))
        || PyTuple_GET_SIZE(families) > RUN_FAMILIES || PySequence_Fast_GET_SIZE(buckets) < PyTuple_GET_SIZE(families)) {
        PyErr_SetString(PyExc_TypeError, "run: updates a list or tuple, families a tuple of at most 4, "
                                         "buckets a list or tuple as long");
        return NULL;
    }
    Py_ssize_t nf = PyTuple_GET_SIZE(families);
    Py_ssize_t fresh[RUN_FAMILIES] = {0, 0, 0, 0};
    PyObject *yielded_run = NULL, *yielded_key = NULL;
    int failed = 0;
    if (i < 0)
        i = 0;
    for (; i < PySequence_Fast_GET_SIZE(updates); i++) {
        PyObject *f[4]; /* family, attrs, announce, withdraw */
        PyObject *u = PySequence_Fast_GET_ITEM(updates, i);
        Py_INCREF(u); /* held while a getattr may run Python code */
        int got = update_fields(u, f);
        Py_DECREF(u);
        if (got < 0) {
            failed = 1;
            break;
        }
        PyObject *family = f[0], *attrs = f[1], *announce = f[2], *withdraw = f[3];
        Py_ssize_t fi = 0;
        while (fi < nf && PyTuple_GET_ITEM(families, fi) != family)
            fi++;
        int python = fi == nf || attrs == Py_None || !(PyList_CheckExact(withdraw) || PyTuple_CheckExact(withdraw))
                     || PySequence_Fast_GET_SIZE(withdraw) != 0
                     || !(PyList_CheckExact(announce) || PyTuple_CheckExact(announce));
        PyObject *bucket_dict = python ? NULL : PySequence_Fast_GET_ITEM(buckets, fi);
        if (!python && !PyDict_Check(bucket_dict))
            python = 1;
        if (python || PySequence_Fast_GET_SIZE(announce) == 0) {
            for (int k = 0; k < 4; k++)
                Py_DECREF(f[k]);
            if (python)
                break;
            continue;
        }
        PyObject *path = intern_path(rib, peer, attrs);
        if (path == Py_None) { /* an AS loop: the Python loop applies it as withdrawals */
            Py_DECREF(path);
            for (int k = 0; k < 4; k++)
                Py_DECREF(f[k]);
            break;
        }
        PyObject *a = path == NULL ? NULL : make_announcer(bucket_dict, path, peer, family, changes, announce);
        Py_XDECREF(path);
        for (int k = 0; k < 4; k++)
            Py_DECREF(f[k]);
        if (a == NULL) {
            failed = 1;
            break;
        }
        PyObject *key = announcer_next((Announcer *)a);
        if (key != NULL) { /* its received so far is the Python loop's to add, with the rest */
            yielded_run = a;
            yielded_key = key;
            break;
        }
        fresh[fi] += ((Announcer *)a)->received; /* done, or raised half-way: what it applied */
        Py_DECREF(a);
        if (PyErr_Occurred()) {
            failed = 1;
            break;
        }
    }
    /* The counters, also when raising (the exception raised stays the one set) */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int counted = add_to(peer, "received", fresh, nf) == 0 && add_to(peer, "best", fresh, nf) == 0;
    if (counted && type != NULL)
        PyErr_Restore(type, value, tb);
    else {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    PyObject *out = counted && !failed ? Py_BuildValue("(nOO)", i, yielded_run ? yielded_run : Py_None,
                                                       yielded_key ? yielded_key : Py_None)
                                       : NULL;
    Py_XDECREF(yielded_run);
    Py_XDECREF(yielded_key);
    return out;
}

static PyMethodDef methods[] = {
    {"setup", py_setup, METH_VARARGS, "setup(path_type, best_change_type, only_path_reason, lo_entries, lo_bits)"},
    {"announcer", py_announcer, METH_VARARGS, "announcer(buckets, path, peer, family, changes, keys) -> iterator"},
    {"setup_intern", py_setup_intern, METH_VARARGS, "setup_intern(path_type, peer_type, attributes_type, sweep_min=4096)"},
    {"intern", (PyCFunction)(void (*)(void))py_intern, METH_FASTCALL, "intern(rib, peer, attrs) -> Path"},
    {"dumps2", py_dumps2, METH_O, "dumps2(value) -> marshal.dumps(value, 2)"},
    {"announce", (PyCFunction)(void (*)(void))py_announce, METH_FASTCALL,
     "announce(rib, peer, attrs, buckets, family, changes, keys) -> announcer of intern(rib, peer, attrs)"},
    {"run", (PyCFunction)(void (*)(void))py_run, METH_FASTCALL,
     "run(rib, peer, updates, start, changes, families, buckets) -> (i, announcer or None, key or None)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastrib", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastrib(void)
{
    if (PyType_Ready(&AnnouncerType) < 0)
        return NULL;
    return PyModule_Create(&module);
}
