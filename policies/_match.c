/* Optional C accelerator of the import chain's per-prefix loop (policies/model.py).
 *
 * The Python function stays the reference: ``model.generate_loop`` writes one loop per program
 * shape, ``run(keys, origin, preds, groups, rejected)``, which splits each prefix key into
 * (network, length) and tests the program's steps in order; the first step that hits appends the
 * key to its accepted group or ``(key, rule)`` to ``rejected``. ``Loop`` is the same loop for the
 * steps this module knows (``policies.accel`` builds it from the steps' ``Inline.native``):
 *
 *   ALWAYS  (op 0)  hits every prefix (the default, or an unconditional statement);
 *   LIST    (op 1)  prefix list: ``masks[index(network)] >> length & 1`` (prefixset.PrefixList);
 *   LENGTH  (op 2)  ``length < lo or length > hi`` (rules.LengthOutside);
 *   RPKI    (op 3)  RFC 6811 state == wanted, over the VRPs of ``index(network)`` (rules.RpkiIs);
 *
 * each optionally negated, where ``index`` is ``prefixset.RangeIndex.index``: a bisect over the
 * range starts, within the top-16-bit bucket's bounds when there is a bucket table. Only IPv4
 * (width 32) is handled here; IPv6 keeps the generated loop.
 *
 *   Loop(fallback, steps)            steps: tuples, see loop_new; ValueError on a bad table
 *   loop(keys, origin, preds, groups, rejected) -> None
 *
 * A call handles exactly the inputs the generated loop handles the same way: keys a list or
 * tuple of ints 0 <= key < 2**40 (``split_key`` by table covers bit lengths 0..40), ``origin``
 * None or an int, ``groups`` a list of lists, ``rejected`` a list. For anything else it calls
 * ``fallback`` (the generated loop) with the same arguments before touching any output, so the
 * answer, or the exception, is the Python one.
 *
 * Tables are read through buffers (array.array 'Q' / 'I') acquired once by the constructor and
 * released with the object: an exported array cannot be resized, so a table cannot change under
 * a running loop. Every table is checked once when the Loop is built (lengths, monotone bucket
 * and offset bounds, first start 0), so no lookup can read out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

enum { OP_ALWAYS = 0, OP_LIST = 1, OP_LENGTH = 2, OP_RPKI = 3 };
enum { RPKI_VALID = 0, RPKI_INVALID = 1, RPKI_NOT_FOUND = 2 };

#define WIDTH 32
#define BUCKET_SHIFT 16 /* WIDTH - prefixset.BUCKET_BITS */
#define NBUCKETS (1 << (WIDTH - BUCKET_SHIFT))
#define MAX_KEY_BITS 40 /* IPv4: one length byte + four network bytes */

typedef struct {
    int op, negate, accept, state;
    Py_ssize_t out;
    long long lo, hi;            /* LENGTH */
    PyObject *name;              /* the rule name (str), in ``(key, name)`` of rejected keys */
    Py_buffer starts, bnd, vals, offs; /* LIST: starts, bnd, vals = masks; RPKI: + offs, vals = cands */
    int have_starts, have_bnd, have_vals, have_offs;
    Py_ssize_t nstarts;
} Step;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fallback;
    Py_ssize_t nsteps;
    Py_ssize_t ngroups; /* 1 + the largest output index of an accepting step (0: none) */
    Step *steps;
    Py_ssize_t nidx;    /* steps with a range index (LIST, RPKI), */
    Py_ssize_t *idx;    /* in order: their positions in steps */
} LoopObject;

static void
step_release(Step *s)
{
    if (s->have_starts) PyBuffer_Release(&s->starts);
    if (s->have_bnd) PyBuffer_Release(&s->bnd);
    if (s->have_vals) PyBuffer_Release(&s->vals);
    if (s->have_offs) PyBuffer_Release(&s->offs);
    s->have_starts = s->have_bnd = s->have_vals = s->have_offs = 0;
    Py_CLEAR(s->name);
}

/* A 1-d contiguous buffer of ``fmt`` items ('Q': 8 bytes, 'I': 4). 0 ok, -1 error set. */
static int
get_array(PyObject *obj, Py_buffer *view, int *have, const char *fmt, Py_ssize_t itemsize,
          const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_ND) < 0)
        return -1;
    *have = 1;
    if (view->ndim != 1 || view->itemsize != itemsize || view->format == NULL ||
        strcmp(view->format, fmt) != 0) {
        PyErr_Format(PyExc_ValueError, "%s: expected a contiguous array of '%s'", what, fmt);
        return -1;
    }
    return 0;
}

/* Range index tables: starts ('Q', first 0), optional bucket bounds ('I', NBUCKETS + 1 entries,
 * non-decreasing, <= len(starts)). */
static int
get_index(Step *s, PyObject *starts, PyObject *bnd)
{
    if (get_array(starts, &s->starts, &s->have_starts, "Q", 8, "starts") < 0)
        return -1;
    s->nstarts = s->starts.len / 8;
    const uint64_t *st = s->starts.buf;
    if (s->nstarts < 1 || st[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "starts: must begin with 0");
        return -1;
    }
    if (bnd == Py_None)
        return 0;
    if (get_array(bnd, &s->bnd, &s->have_bnd, "I", 4, "bnd") < 0)
        return -1;
    const uint32_t *b = s->bnd.buf;
    if (s->bnd.len / 4 != NBUCKETS + 1) {
        PyErr_SetString(PyExc_ValueError, "bnd: expected 65537 bucket bounds");
        return -1;
    }
    for (Py_ssize_t i = 0; i <= NBUCKETS; i++) { /* b[0] >= 1: starts[0] = 0 is <= every address */
        if ((Py_ssize_t)b[i] > s->nstarts || b[i] < (i ? b[i - 1] : 1)) {
            PyErr_SetString(PyExc_ValueError, "bnd: bounds must be >= 1, non-decreasing, <= len(starts)");
            return -1;
        }
    }
    return 0;
}

/* One step from its tuple:
 *   (0, negate, accept, out, name)
 *   (1, negate, accept, out, name, starts, bnd | None, masks)
 *   (2, negate, accept, out, name, lo, hi)
 *   (3, negate, accept, out, name, starts, bnd | None, offsets, cands, state)
 * masks: 'Q', one per range. cands: 'Q', ``asn << 16 | prefix length << 8 | max length`` per VRP,
 * the VRPs of range i being cands[offsets[i]:offsets[i + 1]] (offsets: 'I', one more than ranges,
 * non-decreasing, last <= len(cands)). state: 0 valid, 1 invalid, 2 not found. */
static int
step_init(Step *s, PyObject *t)
{
    static const Py_ssize_t arity[] = {5, 8, 7, 10};
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 5) {
        PyErr_SetString(PyExc_TypeError, "a step is a tuple (op, negate, accept, out, name, ...)");
        return -1;
    }
    PyObject **it = &PyTuple_GET_ITEM(t, 0);
    long op = PyLong_AsLong(it[0]);
    if (op == -1 && PyErr_Occurred())
        return -1;
    if (op < OP_ALWAYS || op > OP_RPKI || PyTuple_GET_SIZE(t) != arity[op]) {
        PyErr_SetString(PyExc_ValueError, "step: unknown op or wrong number of items");
        return -1;
    }
    s->op = (int)op;
    if ((s->negate = PyObject_IsTrue(it[1])) < 0 || (s->accept = PyObject_IsTrue(it[2])) < 0)
        return -1;
    s->out = PyLong_AsSsize_t(it[3]);
    if (s->out == -1 && PyErr_Occurred())
        return -1;
    if (s->accept && (s->out < 0 || s->out > 1 << 20)) { /* rejecting steps have no output (-1) */
        PyErr_SetString(PyExc_ValueError, "step: output index out of range");
        return -1;
    }
    if (!PyUnicode_Check(it[4])) {
        PyErr_SetString(PyExc_TypeError, "step: the rule name must be a str");
        return -1;
    }
    Py_INCREF(it[4]);
    s->name = it[4];
    switch (s->op) {
    case OP_LIST:
        if (get_index(s, it[5], it[6]) < 0 || get_array(it[7], &s->vals, &s->have_vals, "Q", 8, "masks") < 0)
            return -1;
        if (s->vals.len / 8 != s->nstarts) {
            PyErr_SetString(PyExc_ValueError, "masks: one per range expected");
            return -1;
        }
        break;
    case OP_LENGTH:
        s->lo = PyLong_AsLongLong(it[5]);
        if (s->lo == -1 && PyErr_Occurred())
            return -1;
        s->hi = PyLong_AsLongLong(it[6]);
        if (s->hi == -1 && PyErr_Occurred())
            return -1;
        break;
    case OP_RPKI: {
        if (get_index(s, it[5], it[6]) < 0 ||
            get_array(it[7], &s->offs, &s->have_offs, "I", 4, "offsets") < 0 ||
            get_array(it[8], &s->vals, &s->have_vals, "Q", 8, "cands") < 0)
            return -1;
        long state = PyLong_AsLong(it[9]);
        if (state == -1 && PyErr_Occurred())
            return -1;
        if (state < RPKI_VALID || state > RPKI_NOT_FOUND) {
            PyErr_SetString(PyExc_ValueError, "state: 0, 1 or 2");
            return -1;
        }
        s->state = (int)state;
        const uint32_t *o = s->offs.buf;
        Py_ssize_t ncands = s->vals.len / 8;
        if (s->offs.len / 4 != s->nstarts + 1) {
            PyErr_SetString(PyExc_ValueError, "offsets: one more than ranges expected");
            return -1;
        }
        for (Py_ssize_t i = 0; i <= s->nstarts; i++) {
            if ((Py_ssize_t)o[i] > ncands || (i && o[i] < o[i - 1])) {
                PyErr_SetString(PyExc_ValueError, "offsets: must be non-decreasing and <= len(cands)");
                return -1;
            }
        }
        break;
    }
    default:
        break;
    }
    return 0;
}

static inline Py_ssize_t
range_of(const Step *s, uint64_t network)
{
    const uint64_t *a = s->starts.buf;
    Py_ssize_t lo = 0, hi = s->nstarts;
    if (s->have_bnd) {
        const uint32_t *b = s->bnd.buf;
        uint64_t k = network >> BUCKET_SHIFT; /* network < 2**32: k < NBUCKETS */
        lo = b[k];
        hi = b[k + 1];
    }
    while (lo < hi) { /* bisect_right */
        Py_ssize_t mid = (lo + hi) >> 1;
        if (network < a[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo - 1; /* >= 0: starts[0] == 0 <= network, and bucket bounds are >= 1 (get_index) */
}

/* Does step ``s`` hit a prefix of ``length`` whose network lies in range ``r`` of the step's index
 * (``range_of``; unused by steps without one)? */
static inline int
step_hits(const Step *s, Py_ssize_t r, unsigned length, int have_origin, uint64_t origin)
{
    int hit;
    switch (s->op) {
    case OP_LIST: {
        uint64_t mask = ((const uint64_t *)s->vals.buf)[r];
        hit = length < 64 && (mask >> length & 1);
        break;
    }
    case OP_LENGTH:
        hit = (long long)length < s->lo || (long long)length > s->hi;
        break;
    case OP_RPKI: {
        const uint32_t *o = s->offs.buf;
        const uint64_t *c = s->vals.buf;
        int state = RPKI_NOT_FOUND;
        for (uint32_t j = o[r]; j < o[r + 1]; j++) {
            uint64_t v = c[j];
            unsigned plen = (v >> 8) & 0xff, maxlen = v & 0xff;
            uint64_t asn = v >> 16;
            if (plen <= length) {
                if (have_origin && asn == origin && asn && length <= maxlen) {
                    state = RPKI_VALID;
                    break;
                }
                state = RPKI_INVALID;
            }
        }
        hit = state == s->state;
        break;
    }
    default:
        hit = 1;
        break;
    }
    return hit ^ s->negate;
}

static int
loop_traverse(LoopObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);
    for (Py_ssize_t i = 0; i < self->nsteps; i++) {
        Step *s = &self->steps[i];
        if (s->have_starts) Py_VISIT(s->starts.obj);
        if (s->have_bnd) Py_VISIT(s->bnd.obj);
        if (s->have_vals) Py_VISIT(s->vals.obj);
        if (s->have_offs) Py_VISIT(s->offs.obj);
    }
    return 0;
}

static int
loop_clear(LoopObject *self)
{
    Py_CLEAR(self->fallback);
    for (Py_ssize_t i = 0; i < self->nsteps; i++)
        step_release(&self->steps[i]);
    PyMem_Free(self->steps);
    PyMem_Free(self->idx);
    self->steps = NULL;
    self->idx = NULL;
    self->nsteps = self->nidx = 0;
    self->ngroups = 0;
    return 0;
}

static void
loop_dealloc(LoopObject *self)
{
    PyObject_GC_UnTrack(self);
    loop_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *loop_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static PyObject *
loop_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *fallback, *steps;
    static char *kwlist[] = {"fallback", "steps", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Loop", kwlist, &fallback, &steps))
        return NULL;
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return NULL;
    }
    PyObject *seq = PySequence_Tuple(steps);
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    if (n == 0) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a loop needs at least one step");
        return NULL;
    }
    LoopObject *self = (LoopObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    self->vectorcall = loop_vectorcall;
    Py_INCREF(fallback);
    self->fallback = fallback;
    self->steps = PyMem_Calloc((size_t)n, sizeof(Step));
    self->idx = PyMem_Calloc((size_t)n, sizeof(Py_ssize_t));
    if (self->steps == NULL || self->idx == NULL) {
        Py_DECREF(seq);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->nsteps = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        Step *s = &self->steps[i];
        if (step_init(s, PyTuple_GET_ITEM(seq, i)) < 0) {
            Py_DECREF(seq);
            Py_DECREF(self);
            return NULL;
        }
        if (s->accept && s->out + 1 > self->ngroups)
            self->ngroups = s->out + 1;
        if (s->op == OP_LIST || s->op == OP_RPKI)
            self->idx[self->nidx++] = i;
    }
    Py_DECREF(seq);
    return (PyObject *)self;
}

#define SMALL 64    /* keys of an UPDATE held on the stack; more go to the heap */
#define SMALL_IDX 8 /* indexed steps, likewise */

static PyObject *
loop_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    LoopObject *self = (LoopObject *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL || nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "loop(keys, origin, preds, groups, rejected)");
        return NULL;
    }
    PyObject *keys = args[0], *origin = args[1], *groups = args[3], *rejected = args[4];
    /* What the generated loop would treat differently (or raise on) goes to it, untouched. */
    if (!(PyList_CheckExact(keys) || PyTuple_CheckExact(keys)) || !PyList_CheckExact(groups) ||
        !PyList_CheckExact(rejected) || PyList_GET_SIZE(groups) < self->ngroups ||
        !(origin == Py_None || PyLong_CheckExact(origin)))
        goto fallback;
    for (Py_ssize_t g = 0; g < self->ngroups; g++)
        if (!PyList_CheckExact(PyList_GET_ITEM(groups, g)))
            goto fallback;
    int have_origin = 0;
    uint64_t org = 0;
    if (origin != Py_None) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(origin, &overflow);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        /* VRP ASNs are 0..2**32-1: an origin outside that equals none of them. */
        if (!overflow && v >= 0 && v <= 0xFFFFFFFFLL) {
            have_origin = 1;
            org = (uint64_t)v;
        }
    }

    /* Pass 1: own a reference to every key and its value (a finalizer run by an allocation below
     * may change a list; the owned copy keeps this call consistent). */
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys), nidx = self->nidx;
    PyObject *small_obj[SMALL];
    uint64_t small_val[SMALL];
    uint32_t small_len[SMALL];
    Py_ssize_t small_rng[SMALL * SMALL_IDX];
    PyObject **objs = small_obj;
    uint64_t *vals = small_val;
    uint32_t *lens = small_len;
    Py_ssize_t *rng = small_rng;
    void *heap = NULL;
    if (n > SMALL || nidx > SMALL_IDX) { /* one block: range indexes, values, objects, lengths */
        if ((size_t)n > PY_SSIZE_T_MAX / ((size_t)nidx + 3) / sizeof(uint64_t))
            return PyErr_NoMemory();
        heap = PyMem_Malloc((size_t)n * ((size_t)nidx * sizeof(Py_ssize_t) + sizeof(uint64_t) +
                                         sizeof(PyObject *) + sizeof(uint32_t)) + 1);
        if (heap == NULL)
            return PyErr_NoMemory();
        rng = heap;
        vals = (uint64_t *)(rng + n * nidx);
        objs = (PyObject **)(vals + n);
        lens = (uint32_t *)(objs + n);
    }
    PyObject **items = PySequence_Fast_ITEMS(keys);
    Py_ssize_t taken = 0;
    for (; taken < n; taken++) {
        PyObject *k = items[taken];
        if (!PyLong_CheckExact(k))
            break;
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(k, &overflow);
        if (v == -1 && PyErr_Occurred())
            break;
        if (overflow || v < 0 || v >= (1LL << MAX_KEY_BITS))
            break;
        Py_INCREF(k);
        objs[taken] = k;
        vals[taken] = (uint64_t)v;
    }
    PyObject *result = NULL;
    if (taken < n) {
        if (PyErr_Occurred())
            goto done;
        goto release_fallback;
    }

    /* Pass 2: split each key as split_key does (vals[i] becomes the network, lens[i] the length),
     * and look every key up in every indexed step before testing any: the lookups of an UPDATE's
     * keys are independent, so done in stages with prefetches their cache misses overlap instead of
     * queueing one after another (a random-order table misses on nearly every level). */
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t key = vals[i];
        unsigned bl = key ? 64 - (unsigned)__builtin_clzll(key) : 0; /* int.bit_length */
        unsigned sh = bl ? (((bl + 7) >> 3) - 1) << 3 : 0;
        lens[i] = (unsigned)(key >> sh);
        vals[i] = bl ? (key & ((1ULL << sh) - 1)) << (WIDTH - sh) : 0;
        for (Py_ssize_t x = 0; x < nidx; x++) {
            const Step *s = &self->steps[self->idx[x]];
            if (s->have_bnd)
                __builtin_prefetch((const uint32_t *)s->bnd.buf + (vals[i] >> BUCKET_SHIFT));
        }
    }
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t x = 0; x < nidx; x++) {
            const Step *s = &self->steps[self->idx[x]];
            if (s->have_bnd) {
                const uint32_t *b = (const uint32_t *)s->bnd.buf + (vals[i] >> BUCKET_SHIFT);
                __builtin_prefetch((const uint64_t *)s->starts.buf + ((b[0] + b[1]) >> 1));
            }
        }
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t x = 0; x < nidx; x++) {
            const Step *s = &self->steps[self->idx[x]];
            Py_ssize_t r = rng[i * nidx + x] = range_of(s, vals[i]);
            __builtin_prefetch(s->op == OP_RPKI ? (const void *)((const uint32_t *)s->offs.buf + r)
                                                : (const void *)((const uint64_t *)s->vals.buf + r));
        }
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t x = 0; x < nidx; x++) {
            const Step *s = &self->steps[self->idx[x]];
            if (s->op == OP_RPKI) {
                const uint32_t *o = s->offs.buf;
                __builtin_prefetch((const uint64_t *)s->vals.buf + o[rng[i * nidx + x]]);
            }
        }
    /* Pass 3: the first step that hits decides. */
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned length = lens[i];
        for (Py_ssize_t j = 0, x = 0; j < self->nsteps; j++) {
            const Step *s = &self->steps[j];
            Py_ssize_t r = 0;
            if (s->op == OP_LIST || s->op == OP_RPKI)
                r = rng[i * nidx + x++];
            if (!step_hits(s, r, length, have_origin, org))
                continue;
            if (s->accept) {
                if (s->out >= PyList_GET_SIZE(groups)) {
                    PyErr_SetString(PyExc_RuntimeError, "groups changed during the loop");
                    goto done;
                }
                PyObject *group = PyList_GET_ITEM(groups, s->out);
                if (!PyList_Check(group)) {
                    PyErr_SetString(PyExc_RuntimeError, "groups changed during the loop");
                    goto done;
                }
                if (PyList_Append(group, objs[i]) < 0)
                    goto done;
            } else {
                PyObject *pair = PyTuple_Pack(2, objs[i], s->name);
                if (pair == NULL)
                    goto done;
                int rc = PyList_Append(rejected, pair);
                Py_DECREF(pair);
                if (rc < 0)
                    goto done;
            }
            break;
        }
    }
    Py_INCREF(Py_None);
    result = Py_None;
    goto done;

release_fallback:
    for (Py_ssize_t i = 0; i < taken; i++)
        Py_DECREF(objs[i]);
    taken = 0;
    PyMem_Free(heap);
fallback:
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);

done:
    for (Py_ssize_t i = 0; i < taken; i++)
        Py_DECREF(objs[i]);
    PyMem_Free(heap);
    return result;
}

static PyObject *
loop_get_steps(LoopObject *self, void *closure)
{
    return PyLong_FromSsize_t(self->nsteps);
}

static PyGetSetDef loop_getset[] = {
    {"steps", (getter)loop_get_steps, NULL, "number of steps", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef loop_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(LoopObject, vectorcall), READONLY, NULL},
    {"fallback", T_OBJECT, offsetof(LoopObject, fallback), READONLY, "the generated Python loop"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "policies._match.Loop",
    .tp_doc = PyDoc_STR("Loop(fallback, steps): the import chain's per-prefix loop in C (see the module)."),
    .tp_basicsize = sizeof(LoopObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = loop_new,
    .tp_dealloc = (destructor)loop_dealloc,
    .tp_traverse = (traverseproc)loop_traverse,
    .tp_clear = (inquiry)loop_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(LoopObject, vectorcall),
    .tp_getset = loop_getset,
    .tp_members = loop_members,
};

/* ---------------------------------------------------------------------------------------------
 * Gates(gates): the import chain's attribute gates of one peer (policies/rules.py, each
 * ``Condition.bind``'s test) in one call: ``gates(as_path)`` is the index of the first gate that
 * fires, -1 when none does, or None when the path is not the plain shape handled here (a tuple of
 * (int, tuple of ints) segments, ints within 64 bits, at most MAX_PATH ASNs): the Python tests
 * then run. Gates, each a tuple:
 *   (0, starts, ends)   an ASN in a range: bisect_right(starts, asn) - 1 = i >= 0, asn <= ends[i]
 *                       ('q' arrays: PathHasAsnIn's sorted inclusive ranges)
 *   (1, asn)            the path holds ``asn`` (PathHasLocalAs)
 *   (2, limit)          RFC 4271 9.1.2.2 a) length > limit: sequence = its ASNs, set = 1 (PathLongerThan)
 *   (3, peer)           the first AS of the first non-empty sequence (Attributes.neighbor_as) is
 *                       not ``peer``, or there is none (FirstAsNotPeer)
 *   (4, asns)           the path holds one of ``asns`` (sorted 'q' array; PathHasTransitAs)
 *   (5,)                never fires
 */

#define MAX_PATH 256
#define SEG_SET 1
#define SEG_SEQUENCE 2

enum { GATE_ASN_IN = 0, GATE_HAS = 1, GATE_LONGER = 2, GATE_FIRST_NOT = 3, GATE_ANY_IN = 4, GATE_NEVER = 5 };

typedef struct {
    int kind;
    long long value;
    Py_buffer a, b; /* ASN_IN: starts, ends; ANY_IN: a = sorted ASNs */
    int have_a, have_b;
    Py_ssize_t n;
} Gate;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t ngates;
    Gate *gates;
} GatesObject;

static void
gates_release(GatesObject *self)
{
    for (Py_ssize_t i = 0; i < self->ngates; i++) {
        Gate *g = &self->gates[i];
        if (g->have_a) PyBuffer_Release(&g->a);
        if (g->have_b) PyBuffer_Release(&g->b);
        g->have_a = g->have_b = 0;
    }
    PyMem_Free(self->gates);
    self->gates = NULL;
    self->ngates = 0;
}

static void
gates_dealloc(GatesObject *self)
{
    gates_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
gate_init(Gate *g, PyObject *t)
{
    static const Py_ssize_t arity[] = {3, 2, 2, 2, 2, 1};
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 1) {
        PyErr_SetString(PyExc_TypeError, "a gate is a tuple (kind, ...)");
        return -1;
    }
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
    if (kind == -1 && PyErr_Occurred())
        return -1;
    if (kind < GATE_ASN_IN || kind > GATE_NEVER || PyTuple_GET_SIZE(t) != arity[kind]) {
        PyErr_SetString(PyExc_ValueError, "gate: unknown kind or wrong number of items");
        return -1;
    }
    g->kind = (int)kind;
    switch (g->kind) {
    case GATE_ASN_IN:
        if (get_array(PyTuple_GET_ITEM(t, 1), &g->a, &g->have_a, "q", 8, "starts") < 0 ||
            get_array(PyTuple_GET_ITEM(t, 2), &g->b, &g->have_b, "q", 8, "ends") < 0)
            return -1;
        g->n = g->a.len / 8;
        if (g->b.len / 8 != g->n) {
            PyErr_SetString(PyExc_ValueError, "gate: one end per start");
            return -1;
        }
        break;
    case GATE_ANY_IN:
        if (get_array(PyTuple_GET_ITEM(t, 1), &g->a, &g->have_a, "q", 8, "asns") < 0)
            return -1;
        g->n = g->a.len / 8;
        break;
    case GATE_HAS:
    case GATE_LONGER:
    case GATE_FIRST_NOT:
        g->value = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 1));
        if (g->value == -1 && PyErr_Occurred())
            return -1;
        break;
    default:
        break;
    }
    return 0;
}

static PyObject *gates_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames);

static PyObject *
gates_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *spec;
    static char *kwlist[] = {"gates", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Gates", kwlist, &spec))
        return NULL;
    PyObject *seq = PySequence_Tuple(spec);
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    GatesObject *self = (GatesObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    self->vectorcall = gates_vectorcall;
    self->gates = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Gate));
    if (self->gates == NULL) {
        Py_DECREF(seq);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->ngates = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (gate_init(&self->gates[i], PyTuple_GET_ITEM(seq, i)) < 0) {
            Py_DECREF(seq);
            Py_DECREF(self);
            return NULL;
        }
    }
    Py_DECREF(seq);
    return (PyObject *)self;
}

static inline Py_ssize_t
bisect_right_q(const long long *a, Py_ssize_t n, long long x)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) >> 1;
        if (x < a[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static PyObject *
gates_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    GatesObject *self = (GatesObject *)callable;
    if (kwnames != NULL || PyVectorcall_NARGS(nargsf) != 1) {
        PyErr_SetString(PyExc_TypeError, "gates(as_path)");
        return NULL;
    }
    /* The path, flattened: segment types and where each segment's ASNs start in ``asn``. */
    PyObject *path = args[0];
    if (!PyTuple_CheckExact(path) || PyTuple_GET_SIZE(path) > MAX_PATH)
        Py_RETURN_NONE;
    Py_ssize_t nseg = PyTuple_GET_SIZE(path), total = 0;
    long long asn[MAX_PATH];
    long seg_type[MAX_PATH];
    Py_ssize_t seg_start[MAX_PATH + 1];
    for (Py_ssize_t s = 0; s < nseg; s++) {
        PyObject *seg = PyTuple_GET_ITEM(path, s);
        if (!PyTuple_CheckExact(seg) || PyTuple_GET_SIZE(seg) != 2)
            Py_RETURN_NONE;
        PyObject *st = PyTuple_GET_ITEM(seg, 0), *asns = PyTuple_GET_ITEM(seg, 1);
        if (!PyLong_CheckExact(st) || !PyTuple_CheckExact(asns))
            Py_RETURN_NONE;
        int overflow;
        long t = PyLong_AsLongAndOverflow(st, &overflow);
        if (overflow)
            Py_RETURN_NONE;
        seg_type[s] = t;
        seg_start[s] = total;
        Py_ssize_t k = PyTuple_GET_SIZE(asns);
        if (total + k > MAX_PATH)
            Py_RETURN_NONE;
        for (Py_ssize_t j = 0; j < k; j++) {
            PyObject *x = PyTuple_GET_ITEM(asns, j);
            if (!PyLong_CheckExact(x))
                Py_RETURN_NONE;
            asn[total] = PyLong_AsLongLongAndOverflow(x, &overflow);
            if (overflow)
                Py_RETURN_NONE;
            total++;
        }
    }
    seg_start[nseg] = total;
    for (Py_ssize_t i = 0; i < self->ngates; i++) {
        const Gate *g = &self->gates[i];
        int fires = 0;
        switch (g->kind) {
        case GATE_ASN_IN: {
            const long long *starts = g->a.buf, *ends = g->b.buf;
            for (Py_ssize_t j = 0; j < total && !fires; j++) {
                Py_ssize_t r = bisect_right_q(starts, g->n, asn[j]) - 1;
                fires = r >= 0 && asn[j] <= ends[r];
            }
            break;
        }
        case GATE_ANY_IN: {
            const long long *set = g->a.buf;
            for (Py_ssize_t j = 0; j < total && !fires; j++) {
                Py_ssize_t r = bisect_right_q(set, g->n, asn[j]) - 1;
                fires = r >= 0 && set[r] == asn[j];
            }
            break;
        }
        case GATE_HAS:
            for (Py_ssize_t j = 0; j < total && !fires; j++)
                fires = asn[j] == g->value;
            break;
        case GATE_LONGER: {
            long long length = 0;
            for (Py_ssize_t s = 0; s < nseg; s++)
                length += seg_type[s] == SEG_SEQUENCE ? seg_start[s + 1] - seg_start[s]
                                                      : seg_type[s] == SEG_SET;
            fires = length > g->value;
            break;
        }
        case GATE_FIRST_NOT: {
            fires = 1; /* no first AS: None != peer */
            for (Py_ssize_t s = 0; s < nseg; s++) {
                if (seg_type[s] == SEG_SEQUENCE && seg_start[s + 1] > seg_start[s]) {
                    fires = asn[seg_start[s]] != g->value;
                    break;
                }
            }
            break;
        }
        default:
            break;
        }
        if (fires)
            return PyLong_FromSsize_t(i);
    }
    return PyLong_FromLong(-1);
}

static PyMemberDef gates_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(GatesObject, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject GatesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "policies._match.Gates",
    .tp_doc = PyDoc_STR("Gates(gates): the index of the first attribute gate that fires on an AS path."),
    .tp_basicsize = sizeof(GatesObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = gates_new,
    .tp_dealloc = (destructor)gates_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(GatesObject, vectorcall),
    .tp_members = gates_members,
};

/* ---------------------------------------------------------------------------------------------
 * Copier(type, slots, replaced, fallback): ``copier(obj, *values)`` is a new ``type`` object with
 * every slot of ``obj`` copied but the ``replaced`` ones, set to ``values`` in that order; what
 * ``Attributes.fast(obj.next_hop, ..., <values in their places>)`` builds, without the Python
 * attribute reads and slot setters. ``slots``: all of the type's slots (its ``__slots__``; the type
 * must derive from object directly, with no ``__dict__``), each an object slot. An ``obj`` of
 * another type, or with an unset slot, goes to ``fallback(obj, *values)``.
 */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyTypeObject *type;
    PyObject *fallback;
    Py_ssize_t nslots, nrep;
    Py_ssize_t off[32];   /* offsets of the slots */
    Py_ssize_t rep[32];   /* per slot: index of its value among the call's values, or -1 (copied) */
} CopierObject;

static Py_ssize_t
slot_offset(PyTypeObject *type, PyObject *name)
{
    PyObject *d = PyDict_GetItemWithError(type->tp_dict, name); /* borrowed */
    if (d == NULL || Py_TYPE(d) != &PyMemberDescr_Type) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "%s.%U is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX || m->offset <= 0 ||
        m->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
        PyErr_Format(PyExc_ValueError, "%s.%U is not an object slot", type->tp_name, name);
        return -1;
    }
    return m->offset;
}

static PyObject *
copier_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    CopierObject *self = (CopierObject *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL || nargs != 1 + self->nrep) {
        PyErr_Format(PyExc_TypeError, "copier(obj, *values) takes %zd positional arguments", 1 + self->nrep);
        return NULL;
    }
    PyObject *obj = args[0];
    if (Py_TYPE(obj) != self->type)
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    PyObject *out = self->type->tp_alloc(self->type, 0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < self->nslots; k++) { /* no allocation (no Python code) from here on */
        PyObject *v = self->rep[k] < 0 ? *(PyObject **)((char *)obj + self->off[k]) : args[1 + self->rep[k]];
        if (v == NULL) { /* an unset slot: the Python function raises AttributeError */
            Py_DECREF(out);
            return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
        }
        Py_INCREF(v);
        Py_XSETREF(*(PyObject **)((char *)out + self->off[k]), v);
    }
    return out;
}

static PyObject *
copier_new(PyTypeObject *cls, PyObject *args, PyObject *kwds)
{
    PyObject *type, *slots, *replaced, *fallback;
    static char *kwlist[] = {"type", "slots", "replaced", "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O:Copier", kwlist, &PyType_Type, &type, &PyTuple_Type,
                                     &slots, &PyTuple_Type, &replaced, &fallback))
        return NULL;
    PyTypeObject *t = (PyTypeObject *)type;
    Py_ssize_t n = PyTuple_GET_SIZE(slots), nrep = PyTuple_GET_SIZE(replaced);
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return NULL;
    }
    if (t->tp_base != &PyBaseObject_Type || t->tp_dictoffset != 0 || n < 1 || n > 32 || nrep > n) {
        PyErr_SetString(PyExc_ValueError, "Copier: a slotted type deriving from object, 1..32 slots");
        return NULL;
    }
    CopierObject *self = (CopierObject *)cls->tp_alloc(cls, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = copier_vectorcall;
    Py_INCREF(type);
    self->type = t;
    Py_INCREF(fallback);
    self->fallback = fallback;
    self->nslots = n;
    self->nrep = nrep;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *name = PyTuple_GET_ITEM(slots, k);
        if (!PyUnicode_Check(name) || (self->off[k] = slot_offset(t, name)) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "slot names must be str");
            Py_DECREF(self);
            return NULL;
        }
        self->rep[k] = -1;
        for (Py_ssize_t r = 0; r < nrep; r++) {
            int eq = PyObject_RichCompareBool(name, PyTuple_GET_ITEM(replaced, r), Py_EQ);
            if (eq < 0) {
                Py_DECREF(self);
                return NULL;
            }
            if (eq)
                self->rep[k] = r;
        }
    }
    for (Py_ssize_t r = 0; r < nrep; r++) { /* every replaced name is one of the slots */
        int found = 0;
        for (Py_ssize_t k = 0; k < n; k++)
            found |= self->rep[k] == r;
        if (!found) {
            PyErr_SetString(PyExc_ValueError, "Copier: a replaced name is not among the slots");
            Py_DECREF(self);
            return NULL;
        }
    }
    return (PyObject *)self;
}

static int
copier_traverse(CopierObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->type);
    Py_VISIT(self->fallback);
    return 0;
}

static int
copier_clear(CopierObject *self)
{
    Py_CLEAR(self->type);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
copier_dealloc(CopierObject *self)
{
    PyObject_GC_UnTrack(self);
    copier_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef copier_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(CopierObject, vectorcall), READONLY, NULL},
    {"fallback", T_OBJECT, offsetof(CopierObject, fallback), READONLY, "the Python function it stands for"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CopierType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "policies._match.Copier",
    .tp_doc = PyDoc_STR("Copier(type, slots, replaced, fallback): a copy with some slots replaced."),
    .tp_basicsize = sizeof(CopierObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = copier_new,
    .tp_dealloc = (destructor)copier_dealloc,
    .tp_traverse = (traverseproc)copier_traverse,
    .tp_clear = (inquiry)copier_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(CopierObject, vectorcall),
    .tp_members = copier_members,
};

static struct PyModuleDef matchmodule = {
    PyModuleDef_HEAD_INIT,
    .m_name = "policies._match",
    .m_doc = PyDoc_STR("C accelerator of the import chain's per-prefix loop (see policies/accel.py)."),
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__match(void)
{
    if (PyType_Ready(&LoopType) < 0 || PyType_Ready(&CopierType) < 0 || PyType_Ready(&GatesType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&matchmodule);
    if (m == NULL)
        return NULL;
    if (PyModule_AddType(m, &LoopType) < 0 || PyModule_AddType(m, &CopierType) < 0 ||
        PyModule_AddType(m, &GatesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
