/* Optional C accelerator of the native codec's plain-UPDATE fast path (speakers/native/codec.py).
 *
 * The Python functions stay the reference: ``codec.decode_plain_update`` (one UPDATE body) and
 * the session's loop over ``split_messages`` + ``_update`` for a run of UPDATEs. This module does
 * the same for the case a table load is made of (IPv4, 4-byte ASNs, no ADD-PATH, no MP
 * attributes) and declines everything else, which the Python code then handles exactly as without
 * it:
 *
 *   plain_update(body) -> (attrs, announce, withdraw) | None
 *       ``codec.decode_plain_update``: NLRI straight to keys (the NLRI bytes as a big-endian int,
 *       host bits cleared), the attribute block's bytes probed in the codec's cache (a dict);
 *       on a miss ``fast_attrs`` decodes it and caches it as ``codec._plain_miss`` does, or, when
 *       it declines, ``miss(raw)`` (``codec._plain_miss`` itself) decides. Never raises except
 *       what ``miss`` raises (and MemoryError).
 *   fast_attrs(raw) -> Attributes | None
 *       ``codec._fast_attrs`` for a plain block (ORIGIN, AS_PATH, NEXT_HOP and the usual
 *       optional attributes, well formed, no MP attributes), an equal ``Attributes`` with
 *       ``raw4 = raw``; None for anything else (the Python decoder then decides). Its AS paths,
 *       communities and next hops are new objects (the Python decoder shares them through
 *       bounded caches: only the codec's bounded set cache holds them; the RIB keeps marshal
 *       bytes).
 *   plain_updates(buf, max_size, peer, family) -> (events, messages)
 *       Cuts complete, well-framed UPDATE messages off the front of the bytearray ``buf`` while
 *       ``plain_update`` takes them, and returns their ``Update`` events (built as
 *       ``Update.fast`` does) and how many messages were consumed. It stops, leaving the rest in
 *       ``buf``, at the first message that is incomplete, not an UPDATE, badly framed (the
 *       Python framing reports it) or declined.
 *
 * ``setup(cache, miss, attributes_type, update_type, origins, trim, limit)`` binds the Python side
 * once at import (the cache dict, ``_plain_miss``, the types, ``_ORIGINS``, ``_trim`` and
 * ``_CACHE_LIMIT``).
 * Objects are only read from the buffer while it is exported (a bytearray cannot be resized then).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

static PyObject *g_cache;          /* dict: raw attribute block -> Attributes | DecodedAttributes */
static PyObject *g_miss;           /* callable(raw) -> Attributes | None */
static PyTypeObject *g_attrs_type; /* orchestrator.rib.attrs.Attributes */
static PyTypeObject *g_update_type;/* speakers.events.Update */
static Py_ssize_t g_update_off[5]; /* slot offsets of Update: peer, family, attrs, announce, withdraw */
static Py_ssize_t g_attrs_off[11]; /* slot offsets of Attributes, in field order */
static PyObject *g_origins;        /* (Origin.IGP, Origin.EGP, Origin.INCOMPLETE) */
static PyObject *g_trim;           /* callable(cache): drops the older half */
static Py_ssize_t g_cache_limit;

#define HEADER_LEN 19
#define MIN_UPDATE 23
#define MSG_UPDATE 2

/* Host-bit masks for length 0..32 applied to a key of (1 + ceil(len/8)) bytes: the last byte(s)
 * of the address. Computed on the fly. */
static inline unsigned long long clear_host(unsigned long long key, unsigned length)
{
    unsigned spare = (8 - (length & 7)) & 7;
    return spare ? key & ~((1ULL << spare) - 1) : key;
}

/* IPv4 NLRI of data[i:n] appended to ``out`` as keys. 0 ok, 1 malformed (the Python code raises
 * BgpError: the caller declines), -1 Python error. */
static int nlri4(const unsigned char *data, Py_ssize_t i, Py_ssize_t n, PyObject *out)
{
    while (i < n) {
        unsigned length = data[i];
        if (length > 32)
            return 1;
        Py_ssize_t nb = (length + 7) >> 3;
        Py_ssize_t end = i + 1 + nb;
        if (end > n)
            return 1;
        unsigned long long key = 0;
        for (Py_ssize_t k = i; k < end; k++)
            key = (key << 8) | data[k];
        key = clear_host(key, length);
        PyObject *v = PyLong_FromUnsignedLongLong(key);
        if (v == NULL)
            return -1;
        int rc = PyList_Append(out, v);
        Py_DECREF(v);
        if (rc < 0)
            return -1;
        i = end;
    }
    return 0;
}

static PyObject *plain_miss(PyObject *raw);

/* The plain decode of one UPDATE body. Returns a new reference to (attrs, announce, withdraw),
 * Py_None (declined; new reference) or NULL with an exception set. */
static PyObject *decode_plain(const unsigned char *data, Py_ssize_t n)
{
    if (n < 4)
        Py_RETURN_NONE;
    Py_ssize_t astart = 4 + ((data[0] << 8) | data[1]);
    if (astart > n)
        Py_RETURN_NONE;
    Py_ssize_t aend = astart + ((data[astart - 2] << 8) | data[astart - 1]);
    if (aend > n || n == 4)
        Py_RETURN_NONE;
    PyObject *withdraw = PyList_New(0);
    PyObject *announce = PyList_New(0);
    PyObject *raw = NULL, *attrs = NULL;
    if (withdraw == NULL || announce == NULL)
        goto error;
    int rc = nlri4(data, 2, astart - 2, withdraw);
    if (rc == 0)
        rc = nlri4(data, aend, n, announce);
    if (rc < 0)
        goto error;
    if (rc > 0)
        goto decline;
    if (PyList_GET_SIZE(announce) == 0) {
        /* Withdrawals only (the attributes, if any, are not looked at); neither: the general path. */
        if (PyList_GET_SIZE(withdraw) && aend == astart) {
            PyObject *t = PyTuple_Pack(3, Py_None, announce, withdraw);
            Py_DECREF(announce);
            Py_DECREF(withdraw);
            return t;
        }
        goto decline;
    }
    raw = PyBytes_FromStringAndSize((const char *)data + astart, aend - astart);
    if (raw == NULL)
        goto error;
    attrs = PyDict_GetItemWithError(g_cache, raw); /* borrowed */
    if (attrs == NULL) {
        if (PyErr_Occurred())
            goto error;
        attrs = plain_miss(raw); /* new */
        if (attrs == NULL)
            goto error;
    } else {
        Py_INCREF(attrs);
    }
    Py_DECREF(raw);
    raw = NULL;
    if (Py_TYPE(attrs) != g_attrs_type) {
        Py_DECREF(attrs);
        attrs = NULL;
        goto decline;
    }
    PyObject *t = PyTuple_New(3);
    if (t == NULL)
        goto error;
    PyTuple_SET_ITEM(t, 0, attrs);
    PyTuple_SET_ITEM(t, 1, announce);
    PyTuple_SET_ITEM(t, 2, withdraw);
    return t;
decline:
    Py_DECREF(withdraw);
    Py_DECREF(announce);
    Py_RETURN_NONE;
error:
    Py_XDECREF(withdraw);
    Py_XDECREF(announce);
    Py_XDECREF(raw);
    Py_XDECREF(attrs);
    return NULL;
}

static int ready(void)
{
    if (g_cache == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastpath.setup() was not called");
        return 0;
    }
    return 1;
}

/* --- attribute sets: codec._fast_attrs's plain case ------------------------------------------- */

/* The text of the last address made, one per attribute (NEXT_HOP, AGGREGATOR's address, so an
 * aggregator does not evict the next hop): a peer's UPDATEs nearly all carry the same NEXT_HOP,
 * and snprintf + a new str per attribute set was ~2% of a table load. Strings are immutable, so
 * sharing one is invisible to everyone (equal values, as the Python decoder's). */
typedef struct {
    unsigned char addr[4];
    PyObject *text;
} TextCache;
static TextCache g_nh_text, g_agg_text;

static PyObject *ipv4_text(TextCache *c, const unsigned char *p)
{
    if (c->text != NULL && memcmp(p, c->addr, 4) == 0) {
        Py_INCREF(c->text);
        return c->text;
    }
    char text[16];
    int len = snprintf(text, sizeof text, "%u.%u.%u.%u", p[0], p[1], p[2], p[3]);
    PyObject *t = PyUnicode_FromStringAndSize(text, len);
    if (t != NULL) {
        Py_INCREF(t);
        Py_XSETREF(c->text, t);
        memcpy(c->addr, p, 4);
    }
    return t;
}

/* 32-bit attribute values (ASNs, communities, MED, LOCAL_PREF) as ints, through a small
 * direct-mapped cache: the same few ASNs (the peer's, its transits) and communities recur in most
 * attribute sets of a table, and an int made and freed per value was most of the AS_PATH's cost.
 * ints are immutable: sharing one is invisible (as CPython's own small ints). */
enum { INT_SLOTS = 1024 };
static struct {
    unsigned long value;
    PyObject *obj;
} g_ints[INT_SLOTS];

static PyObject *u32_int(unsigned long v)
{
    size_t h = (size_t)((v * 0x9E3779B1u) & 0xFFFFFFFFu) >> (32 - 10); /* Fibonacci hashing, 10 bits */
    if (g_ints[h].obj != NULL && g_ints[h].value == v) {
        Py_INCREF(g_ints[h].obj);
        return g_ints[h].obj;
    }
    PyObject *o = PyLong_FromUnsignedLong(v);
    if (o != NULL) {
        Py_INCREF(o);
        Py_XSETREF(g_ints[h].obj, o);
        g_ints[h].value = v;
    }
    return o;
}

static inline unsigned long u32_at(const unsigned char *p)
{
    return ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) | ((unsigned long)p[2] << 8) | p[3];
}

/* AS_PATH of 4-byte ASNs (codec._as_path(value, 4)): a new tuple, Py_None when malformed, NULL on error. */
static PyObject *as_path4(const unsigned char *v, Py_ssize_t n)
{
    Py_ssize_t i = 0, count = 0;
    while (i < n) { /* validate and count the segments first */
        if (i + 2 > n)
            Py_RETURN_NONE;
        unsigned stype = v[i], c = v[i + 1];
        if (stype < 1 || stype > 4 || c == 0)
            Py_RETURN_NONE;
        i += 2 + 4 * (Py_ssize_t)c;
        if (i > n)
            Py_RETURN_NONE;
        count++;
    }
    PyObject *segs = PyTuple_New(count);
    if (segs == NULL)
        return NULL;
    i = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        unsigned c = v[i + 1];
        PyObject *asns = PyTuple_New(c);
        PyObject *stype = PyLong_FromLong(v[i]);
        PyObject *seg = PyTuple_New(2);
        if (asns == NULL || stype == NULL || seg == NULL) {
            Py_XDECREF(asns);
            Py_XDECREF(stype);
            Py_XDECREF(seg);
            Py_DECREF(segs);
            return NULL;
        }
        PyTuple_SET_ITEM(seg, 0, stype);
        PyTuple_SET_ITEM(seg, 1, asns);
        PyTuple_SET_ITEM(segs, k, seg);
        for (unsigned a = 0; a < c; a++) {
            PyObject *asn = u32_int(u32_at(v + i + 2 + 4 * a));
            if (asn == NULL) {
                Py_DECREF(segs);
                return NULL;
            }
            PyTuple_SET_ITEM(asns, a, asn);
        }
        i += 2 + 4 * (Py_ssize_t)c;
    }
    return segs;
}

#define SEEN(t) (seen[(t) >> 6] & (1ULL << ((t) & 63)))
#define MARK(t) (seen[(t) >> 6] |= (1ULL << ((t) & 63)))

/* The plain attribute set of ``raw`` as ``_fast_attrs`` builds it (an Attributes with raw4 = raw):
 * a new reference; Py_None (new reference) when it is anything else (then the Python decoder
 * decides); NULL on error. */
static PyObject *fast_attrs(PyObject *raw)
{
    const unsigned char *r = (const unsigned char *)PyBytes_AS_STRING(raw);
    Py_ssize_t n = PyBytes_GET_SIZE(raw), i = 0;
    unsigned long long seen[4] = {0, 0, 0, 0};
    unsigned origin = 0;
    int atomic = 0;
    PyObject *path = NULL, *nh = NULL, *med = NULL, *lp = NULL, *agg = NULL, *comms = NULL, *large = NULL;
    PyObject *result = NULL;
    while (i < n) {
        if (i + 3 > n)
            goto decline;
        unsigned flags = r[i], atype = r[i + 1];
        Py_ssize_t s, length;
        if (flags & 0x10) {
            s = i + 4;
            if (s > n)
                goto decline;
            length = (r[i + 2] << 8) | r[i + 3];
        } else {
            s = i + 3;
            length = r[i + 2];
        }
        Py_ssize_t e = s + length;
        if (e > n || SEEN(atype))
            goto decline;
        MARK(atype);
        unsigned kind = flags & 0xC0;
        const unsigned char *v = r + s;
        switch (atype) {
        case 2: /* AS_PATH */
            if (kind != 0x40)
                goto decline;
            path = as_path4(v, length);
            if (path == NULL)
                goto error;
            if (path == Py_None)
                goto decline;
            break;
        case 1: /* ORIGIN */
            if (kind != 0x40 || length != 1 || v[0] > 2)
                goto decline;
            origin = v[0];
            break;
        case 3: /* NEXT_HOP */
            if (kind != 0x40 || length != 4)
                goto decline;
            if ((nh = ipv4_text(&g_nh_text, v)) == NULL)
                goto error;
            break;
        case 4: /* MED */
            if (kind != 0x80 || length != 4)
                goto decline;
            if ((med = u32_int(u32_at(v))) == NULL)
                goto error;
            break;
        case 5: /* LOCAL_PREF */
            if (kind != 0x40 || length != 4)
                goto decline;
            if ((lp = u32_int(u32_at(v))) == NULL)
                goto error;
            break;
        case 8: /* COMMUNITIES */
            if (kind != 0xC0 || length & 3)
                goto decline;
            if ((comms = PyTuple_New(length >> 2)) == NULL)
                goto error;
            for (Py_ssize_t k = 0; k < length >> 2; k++) {
                PyObject *c = u32_int(u32_at(v + 4 * k));
                if (c == NULL)
                    goto error;
                PyTuple_SET_ITEM(comms, k, c);
            }
            break;
        case 6: /* ATOMIC_AGGREGATE */
            if (kind != 0x40 || length)
                goto decline;
            atomic = 1;
            break;
        case 7: /* AGGREGATOR */
            if (kind != 0xC0 || length != 8)
                goto decline;
            if ((agg = Py_BuildValue("(kN)", u32_at(v), ipv4_text(&g_agg_text, v + 4))) == NULL)
                goto error;
            break;
        case 32: /* LARGE_COMMUNITY */
            if (kind != 0xC0 || length % 12 || !length)
                goto decline;
            if ((large = PyTuple_New(length / 12)) == NULL)
                goto error;
            for (Py_ssize_t k = 0; k < length / 12; k++) {
                const unsigned char *q = v + 12 * k;
                PyObject *t = Py_BuildValue("(kkk)", u32_at(q), u32_at(q + 4), u32_at(q + 8));
                if (t == NULL)
                    goto error;
                PyTuple_SET_ITEM(large, k, t);
            }
            break;
        case 14: /* MP_REACH_NLRI, MP_UNREACH_NLRI: not a plain block */
        case 15:
            goto decline;
        default: /* optional non-transitive we do not keep (ORIGINATOR_ID, CLUSTER_LIST, ...): skip */
            if (kind != 0x80)
                goto decline;
        }
        i = e;
    }
    if (!(SEEN(1) && SEEN(2)) && (seen[0] | seen[1] | seen[2] | seen[3]))
        goto decline; /* missing ORIGIN or AS_PATH: the general parser reports it */
    if (nh == NULL)
        goto decline; /* no next hop: the general parser decides */
    result = g_attrs_type->tp_alloc(g_attrs_type, 0);
    if (result == NULL)
        goto error;
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL)
        goto error;
    PyObject *vals[11] = {
        nh, PyTuple_GET_ITEM(g_origins, origin), path ? path : empty, med ? med : Py_None, lp ? lp : Py_None,
        comms ? comms : empty, large ? large : empty, atomic ? Py_True : Py_False, agg ? agg : Py_None, empty, raw,
    };
    for (int k = 0; k < 11; k++) {
        PyObject **slot = (PyObject **)((char *)result + g_attrs_off[k]);
        Py_INCREF(vals[k]);
        Py_XSETREF(*slot, vals[k]);
    }
    Py_DECREF(empty);
    goto done;
decline:
    result = Py_None;
    Py_INCREF(result);
    goto done;
error:
    Py_CLEAR(result);
done:
    Py_XDECREF(path);
    Py_XDECREF(nh);
    Py_XDECREF(med);
    Py_XDECREF(lp);
    Py_XDECREF(agg);
    Py_XDECREF(comms);
    Py_XDECREF(large);
    return result;
}

/* A cache miss of the plain path: the C decoder first, the Python one (``miss``) when it declines;
 * what C decoded is cached here as ``_plain_miss`` would (trimmed by the Python ``_trim``). */
static PyObject *plain_miss(PyObject *raw)
{
    PyObject *attrs = fast_attrs(raw);
    if (attrs != Py_None)
        goto store;
    Py_DECREF(attrs);
    return PyObject_CallOneArg(g_miss, raw);
store:
    if (attrs == NULL)
        return NULL;
    if (PyDict_GET_SIZE(g_cache) >= g_cache_limit) {
        PyObject *rc = PyObject_CallOneArg(g_trim, g_cache);
        if (rc == NULL) {
            Py_DECREF(attrs);
            return NULL;
        }
        Py_DECREF(rc);
    }
    if (PyDict_SetItem(g_cache, raw, attrs) < 0) {
        Py_DECREF(attrs);
        return NULL;
    }
    return attrs;
}

static PyObject *py_fast_attrs(PyObject *self, PyObject *arg)
{
    if (!ready())
        return NULL;
    if (!PyBytes_CheckExact(arg)) {
        PyErr_SetString(PyExc_TypeError, "fast_attrs needs bytes");
        return NULL;
    }
    return fast_attrs(arg);
}

static PyObject *py_plain_update(PyObject *self, PyObject *arg)
{
    if (!ready())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = decode_plain((const unsigned char *)view.buf, view.len);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *make_update(PyObject *peer, PyObject *family, PyObject *decoded)
{
    PyObject *ev = g_update_type->tp_alloc(g_update_type, 0);
    if (ev == NULL)
        return NULL;
    PyObject *vals[5] = {
        peer, family, PyTuple_GET_ITEM(decoded, 0), PyTuple_GET_ITEM(decoded, 1), PyTuple_GET_ITEM(decoded, 2),
    };
    for (int k = 0; k < 5; k++) {
        PyObject **slot = (PyObject **)((char *)ev + g_update_off[k]);
        Py_INCREF(vals[k]);
        Py_XSETREF(*slot, vals[k]);
    }
    return ev;
}

static PyObject *py_plain_updates(PyObject *self, PyObject *args)
{
    PyObject *buf, *peer, *family;
    Py_ssize_t max_size;
    if (!PyArg_ParseTuple(args, "O!nOO", &PyByteArray_Type, &buf, &max_size, &peer, &family))
        return NULL;
    if (!ready())
        return NULL;
    PyObject *events = PyList_New(0);
    if (events == NULL)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(events);
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len, pos = 0, count = 0;
    int failed = 0;
    while (pos + HEADER_LEN <= n) {
        const unsigned char *h = p + pos;
        int marker = 1;
        for (int k = 0; k < 16; k++)
            marker &= h[k] == 0xFF;
        Py_ssize_t length = (h[16] << 8) | h[17];
        if (!marker || h[18] != MSG_UPDATE || length < MIN_UPDATE || length > max_size || pos + length > n)
            break; /* not ours, or incomplete: the Python framing takes it from here */
        PyObject *dec = decode_plain(h + HEADER_LEN, length - HEADER_LEN);
        if (dec == NULL) {
            failed = 1;
            break;
        }
        if (dec == Py_None) {
            Py_DECREF(dec);
            break;
        }
        PyObject *ev = make_update(peer, family, dec);
        Py_DECREF(dec);
        if (ev == NULL || PyList_Append(events, ev) < 0) {
            Py_XDECREF(ev);
            failed = 1;
            break;
        }
        Py_DECREF(ev);
        pos += length;
        count++;
    }
    PyBuffer_Release(&view);
    if (failed) {
        if (count == 0) {
            Py_DECREF(events);
            return NULL;
        }
        /* Hand back what was done; the failing message stays in buf and the Python path meets the
         * same error on it. */
        PyErr_Clear();
    }
    if (pos && PySequence_DelSlice(buf, 0, pos) < 0) {
        Py_DECREF(events);
        return NULL;
    }
    PyObject *r = Py_BuildValue("(Nn)", events, count);
    return r;
}

static Py_ssize_t slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *d = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (d == NULL || Py_TYPE(d) != &PyMemberDescr_Type) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    return m->offset;
}

static PyObject *py_setup(PyObject *self, PyObject *args)
{
    PyObject *cache, *miss, *attrs_type, *update_type, *origins, *trim;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O!OO!O!O!On", &PyDict_Type, &cache, &miss, &PyType_Type, &attrs_type, &PyType_Type,
                          &update_type, &PyTuple_Type, &origins, &trim, &limit))
        return NULL;
    if (PyTuple_GET_SIZE(origins) != 3) {
        PyErr_SetString(PyExc_ValueError, "origins must have 3 entries");
        return NULL;
    }
    static const char *anames[11] = {
        "next_hop", "origin", "as_path", "med", "local_pref", "communities", "large_communities",
        "atomic_aggregate", "aggregator", "other", "raw4",
    };
    Py_ssize_t aoff[11];
    for (int k = 0; k < 11; k++) {
        aoff[k] = slot_offset((PyTypeObject *)attrs_type, anames[k]);
        if (aoff[k] < 0)
            return NULL;
    }
    static const char *names[5] = {"peer", "family", "attrs", "announce", "withdraw"};
    Py_ssize_t off[5];
    for (int k = 0; k < 5; k++) {
        off[k] = slot_offset((PyTypeObject *)update_type, names[k]);
        if (off[k] < 0)
            return NULL;
    }
    memcpy(g_update_off, off, sizeof off);
    memcpy(g_attrs_off, aoff, sizeof aoff);
    g_cache_limit = limit;
    Py_INCREF(origins);
    Py_XSETREF(g_origins, origins);
    Py_INCREF(trim);
    Py_XSETREF(g_trim, trim);
    Py_INCREF(cache);
    Py_XSETREF(g_cache, cache);
    Py_INCREF(miss);
    Py_XSETREF(g_miss, miss);
    Py_INCREF(attrs_type);
    Py_XSETREF(g_attrs_type, (PyTypeObject *)attrs_type);
    Py_INCREF(update_type);
    Py_XSETREF(g_update_type, (PyTypeObject *)update_type);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setup", py_setup, METH_VARARGS, "setup(cache, miss, attributes_type, update_type, origins, trim, limit)"},
    {"fast_attrs", py_fast_attrs, METH_O, "fast_attrs(raw) -> Attributes | None (the plain case of _fast_attrs)"},
    {"plain_update", py_plain_update, METH_O, "plain_update(body) -> (attrs, announce, withdraw) | None"},
    {"plain_updates", py_plain_updates, METH_VARARGS, "plain_updates(buf, max_size, peer, family) -> (events, n)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastpath(void) { return PyModule_Create(&module); }
