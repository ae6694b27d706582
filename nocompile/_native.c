/* nocompile._native: the per-item part of a version tree, as one C loop.
 *
 * A KV cache of N layers is a list of N objects. The version tree (nocompile/_watch.py) checks
 * each item's class and the version tag of its __dict__; with Dynamo's guard manager that is four
 * nodes an item on every call. ItemsCheck does the same comparisons for every item of one list
 * or tuple in one C loop (the costs are in docs/huggingface.md, "How guards="inputs" handles the
 * cache object"), and is attached to the list's node of the tree as one leaf (a guard manager's
 * "lambda" guard calls it with the list).
 *
 * What it compares is exactly what the nodes it replaces compared: the length of the sequence,
 * and for each watched index the item's class (by identity: ``obj.__class__ = Other`` stores into
 * no dict) and its instance dict's version tag. Version tags are unique to a dict and a store
 * (CPython counts them process-wide), so no item needs to be held: another object, even one
 * created at a freed item's address, has another dict and another tag.
 *
 * Two more leaves do the same for the module part's roots that Dynamo's guard manager checks with
 * a node per value: CellsCheck, a tuple of closure cells whose values must stay equal and of the
 * same type (a decorator's configuration: Hugging Face's forward has 11), and FunctionCheck, a
 * helper function whose code, defaults, keyword defaults and closure contents must stay the very
 * same objects.
 *
 * Ownership: a check holds no reference to what it compares (the classes, the cells' values, the
 * function's parts). They are given to it by nocompile's VersionTree, which holds them itself, in
 * a Python list the garbage collector sees: the guard manager holds its leaves from C++, where the
 * collector cannot follow, so a check owning (say) a closure's contents could make a cycle back
 * to the tree that is never collected. When the tree is dropped it calls release() on each check
 * before what it holds goes (weak reference callbacks run first), and a released check is false
 * for every value: a verified key may keep the tree's guard manager, and so the check, alive. A
 * check never runs Python code except CellsCheck's ==, around which it holds what it compares.
 *
 * Python 3.10 to 3.12 only: 3.13 keeps instance attributes inline, where a store changes no
 * version tag (the watch then does not use version trees at all), and 3.14 has no version tags.
 * Elsewhere the module has no ItemsCheck and nocompile uses one guard-manager node per item.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030D0000 && !defined(Py_GIL_DISABLED)
#define NOCOMPILE_VERSION_TAGS 1
#endif

#ifdef NOCOMPILE_VERSION_TAGS

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* ma_version_tag, deprecated in 3.12 */
#endif
/* Python 3.12 keeps the dict watchers' bits in the tag's low 8 bits (DICT_MAX_WATCHERS): watching
 * a dict (Dynamo's own DICT_VERSION guard does, on 3.12) changes them without a store. The bits
 * above count stores, process-wide, as the whole tag does on 3.10 and 3.11. */
#if PY_VERSION_HEX >= 0x030C0000
#define VERSION_MASK (~(uint64_t)0xFF)
#else
#define VERSION_MASK (~(uint64_t)0)
#endif
static inline uint64_t
dict_version_tag(PyObject *dict)
{
    return ((PyDictObject *)dict)->ma_version_tag & VERSION_MASK;
}
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif

/* The version tag of obj's instance dict through the generic getter (not the class's
 * __getattribute__ or a __dict__ property), as Dynamo's GetGenericDictGuardAccessor reads it.
 * -1 (with an exception set) where obj has none. */
static int
instance_dict_version(PyObject *obj, uint64_t *version)
{
    PyObject *dict = PyObject_GenericGetDict(obj, NULL);
    if (dict == NULL) {
        return -1;
    }
    if (!PyDict_Check(dict)) {
        Py_DECREF(dict);
        PyErr_SetString(PyExc_TypeError, "an instance __dict__ that is not a dict");
        return -1;
    }
    *version = dict_version_tag(dict);
    Py_DECREF(dict);
    return 0;
}

static int
one_argument(PyObject *const *args, size_t nargsf, PyObject *kwnames, const char *message)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, message);
        return -1;
    }
    return 0;
}

/* What the three checks share: a vectorcall slot and the released flag. */
#define CHECK_HEAD        \
    PyObject_HEAD         \
    vectorcallfunc vectorcall; \
    int released; /* release() was called: false for every value */

typedef struct {
    CHECK_HEAD
} Check;

static PyObject *
check_release(Check *self, PyObject *Py_UNUSED(ignored))
{
    self->released = 1;
    Py_RETURN_NONE;
}

static PyMethodDef check_methods[] = {
    {"release", (PyCFunction)check_release, METH_NOARGS,
     "Be false for every value from now on (what the check compares may be freed after this)."},
    {NULL},
};

/* -- ItemsCheck ------------------------------------------------------------------------------ */

typedef struct {
    CHECK_HEAD
    int is_list;            /* a list (else a tuple), as when built */
    Py_ssize_t length;      /* the sequence's length when built */
    Py_ssize_t count;       /* how many items are watched */
    Py_ssize_t *indices;    /* their indices, ascending */
    PyObject **classes;     /* their classes (borrowed: the version tree holds them) */
    uint64_t *versions;     /* their instance dicts' version tags */
} ItemsCheck;

static PyObject *
items_check_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ItemsCheck *self = (ItemsCheck *)callable;
    if (one_argument(args, nargsf, kwnames, "ItemsCheck takes the one sequence it watches") < 0) {
        return NULL;
    }
    PyObject *sequence = args[0];
    if (self->released || (self->is_list ? !PyList_Check(sequence) : !PyTuple_Check(sequence))) {
        Py_RETURN_FALSE;
    }
    PyObject **items = self->is_list ? ((PyListObject *)sequence)->ob_item : ((PyTupleObject *)sequence)->ob_item;
    Py_ssize_t size = self->is_list ? PyList_GET_SIZE(sequence) : PyTuple_GET_SIZE(sequence);
    if (size != self->length) {
        Py_RETURN_FALSE;
    }
    for (Py_ssize_t k = 0; k < self->count; k++) {
        PyObject *item = items[self->indices[k]];
        if ((PyObject *)Py_TYPE(item) != self->classes[k]) {
            Py_RETURN_FALSE;
        }
        /* No Python code runs here: the generic getter reads the dict (or makes it, which is a
         * new dict with a new tag: false). So the list cannot change under the loop. */
        uint64_t version;
        if (instance_dict_version(item, &version) < 0) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        if (version != self->versions[k]) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

static void
items_check_dealloc(ItemsCheck *self)
{
    PyMem_Free(self->indices);
    PyMem_Free(self->classes);
    PyMem_Free(self->versions);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
items_check_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"sequence", "indices", "classes", NULL};
    PyObject *sequence, *indices, *classes;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O!:ItemsCheck", keywords, &sequence, &PyTuple_Type, &indices,
                                     &PyTuple_Type, &classes)) {
        return NULL;
    }
    int is_list = PyList_Check(sequence);
    if (!is_list && !PyTuple_Check(sequence)) {
        PyErr_Format(PyExc_TypeError, "ItemsCheck watches a list or a tuple, not %.100s", Py_TYPE(sequence)->tp_name);
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(indices);
    if (PyTuple_GET_SIZE(classes) != count) {
        PyErr_Format(PyExc_ValueError, "ItemsCheck: %zd indices but %zd classes", count, PyTuple_GET_SIZE(classes));
        return NULL;
    }
    ItemsCheck *self = (ItemsCheck *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = items_check_vectorcall;
    self->is_list = is_list;
    self->length = is_list ? PyList_GET_SIZE(sequence) : PyTuple_GET_SIZE(sequence);
    self->count = count;
    self->indices = PyMem_New(Py_ssize_t, count > 0 ? count : 1);
    self->classes = PyMem_New(PyObject *, count > 0 ? count : 1);
    self->versions = PyMem_New(uint64_t, count > 0 ? count : 1);
    if (self->indices == NULL || self->classes == NULL || self->versions == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(indices, k));
        if (index == -1 && PyErr_Occurred()) {
            Py_DECREF(self);
            return NULL;
        }
        /* The size now, not when the loop began: making an item's dict can run a collection,
         * and its finalizers Python code that changes the list. */
        Py_ssize_t size = is_list ? PyList_GET_SIZE(sequence) : PyTuple_GET_SIZE(sequence);
        if (index < 0 || index >= size || (k > 0 && index <= self->indices[k - 1])) {
            PyErr_Format(PyExc_ValueError, "ItemsCheck: index %zd out of order or out of range (length %zd)", index,
                         size);
            Py_DECREF(self);
            return NULL;
        }
        PyObject *item = Py_NewRef(is_list ? PyList_GET_ITEM(sequence, index) : PyTuple_GET_ITEM(sequence, index));
        uint64_t version;
        int failed = instance_dict_version(item, &version);
        Py_DECREF(item);
        if (failed < 0) {
            Py_DECREF(self);
            return NULL;
        }
        self->indices[k] = index;
        self->classes[k] = PyTuple_GET_ITEM(classes, k);
        self->versions[k] = version;
    }
    return (PyObject *)self;
}

static PyObject *
items_check_get_count(ItemsCheck *self, void *closure)
{
    return PyLong_FromSsize_t(self->count);
}

static PyGetSetDef items_check_getset[] = {
    {"count", (getter)items_check_get_count, NULL, "How many items the check compares.", NULL},
    {NULL},
};

static PyTypeObject ItemsCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nocompile._native.ItemsCheck",
    .tp_doc = PyDoc_STR(
        "ItemsCheck(sequence, indices, classes): called with a sequence, True while it is a list (or\n"
        "tuple, as built) of the same length whose items at ``indices`` are of ``classes`` and have\n"
        "the instance dict version tags they had when built. Holds none of them: the caller does."),
    .tp_basicsize = sizeof(ItemsCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = items_check_new,
    .tp_methods = check_methods,
    .tp_dealloc = (destructor)items_check_dealloc,
    .tp_vectorcall_offset = offsetof(ItemsCheck, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_getset = items_check_getset,
};

/* -- CellsCheck ------------------------------------------------------------------------------ */

typedef struct {
    CHECK_HEAD
    PyObject *values; /* a tuple: each cell's value when built (borrowed: the version tree holds it) */
} CellsCheck;

static PyObject *
cells_check_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    CellsCheck *self = (CellsCheck *)callable;
    if (one_argument(args, nargsf, kwnames, "CellsCheck takes the one tuple of cells it watches") < 0) {
        return NULL;
    }
    if (self->released) {
        Py_RETURN_FALSE;
    }
    PyObject *cells = args[0];
    /* Held for the call: an == below runs Python code, which may release the check and drop the
     * tree that holds the values. */
    PyObject *values = Py_NewRef(self->values);
    PyObject *result = Py_False;
    Py_ssize_t n = PyTuple_GET_SIZE(values);
    if (!PyTuple_Check(cells) || PyTuple_GET_SIZE(cells) != n) {
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *cell = PyTuple_GET_ITEM(cells, k);
        if (!PyCell_Check(cell)) {
            goto done;
        }
        PyObject *now = PyCell_GET(cell);
        PyObject *then = PyTuple_GET_ITEM(values, k);
        if (now == then) {
            continue;
        }
        if (now == NULL || Py_TYPE(now) != Py_TYPE(then)) { /* emptied, or another type */
            goto done;
        }
        /* An equal value of the same type is the same configuration (Dynamo's EQUALS_MATCH). */
        Py_INCREF(now);
        int equal = PyObject_RichCompareBool(now, then, Py_EQ);
        Py_DECREF(now);
        if (equal < 0) {
            PyErr_Clear();
        }
        if (equal <= 0 || self->released || PyTuple_GET_SIZE(cells) != n) {
            goto done;
        }
    }
    result = Py_True;
done:
    Py_DECREF(values);
    return Py_NewRef(result);
}

static PyObject *
cells_check_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"values", NULL};
    PyObject *values;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:CellsCheck", keywords, &PyTuple_Type, &values)) {
        return NULL;
    }
    CellsCheck *self = (CellsCheck *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = cells_check_vectorcall;
    self->values = values;
    return (PyObject *)self;
}

static void
check_dealloc(PyObject *self)
{
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject CellsCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nocompile._native.CellsCheck",
    .tp_doc = PyDoc_STR(
        "CellsCheck(values): called with a tuple of closure cells, True while there are as many as\n"
        "values and each holds its value or an equal one of the same type. Holds not the values:\n"
        "the caller does."),
    .tp_basicsize = sizeof(CellsCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = cells_check_new,
    .tp_methods = check_methods,
    .tp_dealloc = (destructor)check_dealloc,
    .tp_vectorcall_offset = offsetof(CellsCheck, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* -- FunctionCheck --------------------------------------------------------------------------- */

typedef struct {
    CHECK_HEAD
    /* All borrowed (the version tree holds them), compared by identity, never dereferenced
     * except contents, a tuple read only while the check is not released. */
    PyObject *code;       /* __code__ */
    PyObject *defaults;   /* __defaults__ (None when it has none) */
    PyObject *kwdefaults; /* __kwdefaults__ (None when it has none) */
    PyObject *contents;   /* a tuple: each closure cell's contents */
} FunctionCheck;

static inline PyObject *
or_none(PyObject *value)
{
    return value != NULL ? value : Py_None;
}

static PyObject *
function_check_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FunctionCheck *self = (FunctionCheck *)callable;
    if (one_argument(args, nargsf, kwnames, "FunctionCheck takes the one function it watches") < 0) {
        return NULL;
    }
    PyObject *fn = args[0];
    if (self->released || !PyFunction_Check(fn) || PyFunction_GET_CODE(fn) != self->code ||
        or_none(PyFunction_GET_DEFAULTS(fn)) != self->defaults ||
        or_none(PyFunction_GET_KW_DEFAULTS(fn)) != self->kwdefaults) {
        Py_RETURN_FALSE;
    }
    PyObject *closure = PyFunction_GET_CLOSURE(fn);
    Py_ssize_t n = PyTuple_GET_SIZE(self->contents);
    Py_ssize_t cells = (closure != NULL && closure != Py_None && PyTuple_Check(closure)) ? PyTuple_GET_SIZE(closure) : 0;
    if (cells != n) {
        Py_RETURN_FALSE;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *cell = PyTuple_GET_ITEM(closure, k);
        if (!PyCell_Check(cell) || PyCell_GET(cell) != PyTuple_GET_ITEM(self->contents, k)) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

static PyObject *
function_check_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"code", "defaults", "kwdefaults", "contents", NULL};
    PyObject *code, *defaults, *kwdefaults, *contents;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOO!:FunctionCheck", keywords, &PyCode_Type, &code, &defaults,
                                     &kwdefaults, &PyTuple_Type, &contents)) {
        return NULL;
    }
    FunctionCheck *self = (FunctionCheck *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = function_check_vectorcall;
    self->code = code;
    self->defaults = defaults;
    self->kwdefaults = kwdefaults;
    self->contents = contents;
    return (PyObject *)self;
}

static PyTypeObject FunctionCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nocompile._native.FunctionCheck",
    .tp_doc = PyDoc_STR(
        "FunctionCheck(code, defaults, kwdefaults, contents): called with a function, True while its\n"
        "__code__, __defaults__ and __kwdefaults__ (None for none) and each closure cell's contents\n"
        "are the very objects given. Holds none of them: the caller does."),
    .tp_basicsize = sizeof(FunctionCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = function_check_new,
    .tp_methods = check_methods,
    .tp_dealloc = (destructor)check_dealloc,
    .tp_vectorcall_offset = offsetof(FunctionCheck, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* -- WatchCheck ------------------------------------------------------------------------------ */

/* The trace watch's per-call part (nocompile/_trace_watch.py): every dict on the paths Dynamo's
 * guards read outside the call's arguments keeps the version tag it had, and every object on them
 * its class. Called with no arguments: None when all hold, else the index of the first dict whose
 * tag changed (the caller then checks the names the trace read in it, and calls update(index)
 * when they are unchanged), or -1 for a class that changed. It holds strong references to the
 * dicts and objects (traversed by the garbage collector). */
typedef struct {
    CHECK_HEAD
    Py_ssize_t dict_count;
    PyObject **dicts;       /* owned */
    uint64_t *versions;
    PyObject **names;       /* owned: per dict, a tuple of (key, expected) pairs the trace read, or NULL */
    PyObject *missing;      /* owned: the expected value that means "no such key", or NULL */
    Py_ssize_t object_count;
    PyObject **objects;     /* owned */
    PyObject **classes;     /* owned */
    Py_ssize_t read_count;
    PyObject **holders;     /* owned */
    PyObject **attributes;  /* owned: the names read */
    PyObject **expected;    /* owned */
    int *read_kinds;        /* READ_* */
    PyObject *owner;        /* owned: a weak reference to the module whose method this is, or NULL */
    PyObject *owner_class;  /* owned: its class when built */
    PyObject *fallback;     /* owned: called with the call's arguments when the checks do not pass, or NULL */
} WatchCheck;

/* How a read is done: a function's or a cell's field directly, a class's MRO, or getattr. */
enum {
    READ_GETATTR, READ_CODE, READ_DEFAULTS, READ_KWDEFAULTS, READ_CLOSURE, READ_FUNCTION_NAME, READ_CELL, READ_MRO,
    READ_TYPE_NAME, READ_METHOD_FUNCTION
};

/* Whether a class's __name__ is its heap type's name field: a class made by type itself (a
 * metaclass could define __name__, and a class of type cannot be given another one). */
static int
plain_type_name(PyObject *holder)
{
    return Py_IS_TYPE(holder, &PyType_Type) && PyType_HasFeature((PyTypeObject *)holder, Py_TPFLAGS_HEAPTYPE);
}

static int
read_kind(PyObject *holder, PyObject *name)
{
    if (PyFunction_Check(holder)) {
        if (PyUnicode_CompareWithASCIIString(name, "__code__") == 0) return READ_CODE;
        if (PyUnicode_CompareWithASCIIString(name, "__defaults__") == 0) return READ_DEFAULTS;
        if (PyUnicode_CompareWithASCIIString(name, "__kwdefaults__") == 0) return READ_KWDEFAULTS;
        if (PyUnicode_CompareWithASCIIString(name, "__closure__") == 0) return READ_CLOSURE;
        if (PyUnicode_CompareWithASCIIString(name, "__name__") == 0) return READ_FUNCTION_NAME;
    }
    if (PyCell_Check(holder) && PyUnicode_CompareWithASCIIString(name, "cell_contents") == 0) return READ_CELL;
    if (PyType_Check(holder) && PyUnicode_CompareWithASCIIString(name, "__mro__") == 0) return READ_MRO;
    if (PyUnicode_CompareWithASCIIString(name, "__name__") == 0 && plain_type_name(holder)) return READ_TYPE_NAME;
    if (PyMethod_Check(holder) && PyUnicode_CompareWithASCIIString(name, "__func__") == 0) return READ_METHOD_FUNCTION;
    return READ_GETATTR;
}

/* 1 when holder.name is expected (by identity), 0 when not, -1 with an exception set. */
static int
read_holds(int kind, PyObject *holder, PyObject *name, PyObject *expected)
{
    PyObject *now;
    switch (kind) {
    case READ_CODE: now = PyFunction_GET_CODE(holder); break;
    case READ_DEFAULTS: now = PyFunction_GET_DEFAULTS(holder); break;
    case READ_KWDEFAULTS: now = PyFunction_GET_KW_DEFAULTS(holder); break;
    case READ_CLOSURE: now = PyFunction_GET_CLOSURE(holder); break;
    case READ_FUNCTION_NAME: now = ((PyFunctionObject *)holder)->func_name; break;
    case READ_CELL: now = PyCell_GET(holder); break;
    case READ_MRO: now = ((PyTypeObject *)holder)->tp_mro; break;
    case READ_TYPE_NAME: now = ((PyHeapTypeObject *)holder)->ht_name; break;
    case READ_METHOD_FUNCTION: now = PyMethod_GET_FUNCTION(holder); break;
    default: {
        PyObject *value = PyObject_GetAttr(holder, name);
        if (value == NULL) {
            return -1;
        }
        int same = value == expected;
        Py_DECREF(value);
        return same;
    }
    }
    if (now == NULL) {
        now = Py_None; /* an unset field reads as None */
    }
    return now == expected;
}

/* Whether every name the trace read in dict k (a namespace whose tag changed) still holds the very
 * object it held, or an equal int, float, complex, bool, str or bytes, or is still missing. Only str
 * keys (their lookup runs no Python code); anything else is left to the caller (0). */
static int
same_names(WatchCheck *self, Py_ssize_t k)
{
    PyObject *pairs = self->names[k];
    PyObject *dict = self->dicts[k];
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pairs); i++) {
        PyObject *pair = PyTuple_GET_ITEM(pairs, i);
        PyObject *key = PyTuple_GET_ITEM(pair, 0), *expected = PyTuple_GET_ITEM(pair, 1);
        if (!PyUnicode_CheckExact(key)) {
            return 0;
        }
        PyObject *now = PyDict_GetItemWithError(dict, key); /* borrowed */
        if (now == NULL) {
            if (PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
            if (expected != self->missing) {
                return 0;
            }
            continue;
        }
        if (now == expected) {
            continue;
        }
        PyTypeObject *kind = Py_TYPE(now);
        if (kind != Py_TYPE(expected) || !(kind == &PyLong_Type || kind == &PyFloat_Type || kind == &PyUnicode_Type ||
                                           kind == &PyBytes_Type || kind == &PyComplex_Type || kind == &PyBool_Type)) {
            return 0;
        }
        int equal = PyObject_RichCompareBool(now, expected, Py_EQ);
        if (equal != 1) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

/* -1 when every check passes, else what the probe returns: a dict's index, or -2 for anything
 * else (a class, a read, a released check). */
static Py_ssize_t
watch_check_run(WatchCheck *self)
{
    if (self->released) {
        return -2;
    }
    for (Py_ssize_t k = 0; k < self->dict_count; k++) {
        if (dict_version_tag(self->dicts[k]) != self->versions[k]) {
            if (self->names[k] == NULL || !same_names(self, k)) {
                return k;
            }
            self->versions[k] = dict_version_tag(self->dicts[k]);
        }
    }
    for (Py_ssize_t k = 0; k < self->object_count; k++) {
        if ((PyObject *)Py_TYPE(self->objects[k]) != self->classes[k]) {
            return -2;
        }
    }
    for (Py_ssize_t k = 0; k < self->read_count; k++) {
        int holds = read_holds(self->read_kinds[k], self->holders[k], self->attributes[k], self->expected[k]);
        if (holds <= 0) {
            PyErr_Clear();
            return -2;
        }
        if (self->released) { /* a getattr ran Python code that released the check */
            return -2;
        }
    }
    return -1;
}

/* The probe: None when every check passes, else the index of the first changed dict, or -1. */
static PyObject *
watch_check_probe(WatchCheck *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t found = watch_check_run(self);
    if (found == -1) {
        Py_RETURN_NONE;
    }
    return PyLong_FromSsize_t(found >= 0 ? found : -1);
}

/* Called with a call's arguments: True when the owner is the call's first argument (of its class)
 * and every check passes, else whatever the fallback returns for the same arguments. */
static PyObject *
watch_check_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    WatchCheck *self = (WatchCheck *)callable;
    if (self->fallback == NULL) {
        PyErr_SetString(PyExc_TypeError, "WatchCheck without a fallback is not a predicate: use probe()");
        return NULL;
    }
    if (self->owner != NULL) {
        PyObject *owner = PyWeakref_GetObject(self->owner); /* borrowed */
        if (PyVectorcall_NARGS(nargsf) < 1 || owner != args[0] || (PyObject *)Py_TYPE(owner) != self->owner_class) {
            return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
        }
    }
    if (watch_check_run(self) == -1) {
        Py_RETURN_TRUE;
    }
    return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

#define SWAP(a, b, T) do { T swapped_ = (a); (a) = (b); (b) = swapped_; } while (0)

/* Take other's checks (and give it ours): a rebuilt watch keeps the object the per-call path holds. */
static PyObject *
watch_check_take(WatchCheck *self, PyObject *arg)
{
    if (Py_TYPE(arg) != Py_TYPE(self)) {
        PyErr_SetString(PyExc_TypeError, "WatchCheck.take takes another WatchCheck");
        return NULL;
    }
    WatchCheck *other = (WatchCheck *)arg;
    SWAP(self->dict_count, other->dict_count, Py_ssize_t);
    SWAP(self->dicts, other->dicts, PyObject **);
    SWAP(self->versions, other->versions, uint64_t *);
    SWAP(self->names, other->names, PyObject **);
    SWAP(self->missing, other->missing, PyObject *);
    SWAP(self->object_count, other->object_count, Py_ssize_t);
    SWAP(self->objects, other->objects, PyObject **);
    SWAP(self->classes, other->classes, PyObject **);
    SWAP(self->read_count, other->read_count, Py_ssize_t);
    SWAP(self->holders, other->holders, PyObject **);
    SWAP(self->attributes, other->attributes, PyObject **);
    SWAP(self->expected, other->expected, PyObject **);
    SWAP(self->read_kinds, other->read_kinds, int *);
    SWAP(self->owner, other->owner, PyObject *);
    SWAP(self->owner_class, other->owner_class, PyObject *);
    SWAP(self->released, other->released, int);
    Py_RETURN_NONE;
}

static PyObject *
watch_check_update(WatchCheck *self, PyObject *index)
{
    Py_ssize_t k = PyLong_AsSsize_t(index);
    if (k == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (k < 0 || k >= self->dict_count) {
        PyErr_Format(PyExc_IndexError, "WatchCheck.update: no dict %zd", k);
        return NULL;
    }
    self->versions[k] = dict_version_tag(self->dicts[k]);
    Py_RETURN_NONE;
}

static void
watch_check_free_arrays(WatchCheck *self)
{
    for (Py_ssize_t k = 0; k < self->dict_count; k++) {
        Py_CLEAR(self->dicts[k]);
        Py_CLEAR(self->names[k]);
    }
    Py_CLEAR(self->missing);
    for (Py_ssize_t k = 0; k < self->object_count; k++) {
        Py_CLEAR(self->objects[k]);
        Py_CLEAR(self->classes[k]);
    }
    for (Py_ssize_t k = 0; k < self->read_count; k++) {
        Py_CLEAR(self->holders[k]);
        Py_CLEAR(self->attributes[k]);
        Py_CLEAR(self->expected[k]);
    }
    Py_CLEAR(self->owner);
    Py_CLEAR(self->owner_class);
    Py_CLEAR(self->fallback);
}

static int
watch_check_traverse(WatchCheck *self, visitproc visit, void *arg)
{
    for (Py_ssize_t k = 0; k < self->dict_count; k++) {
        Py_VISIT(self->dicts[k]);
        Py_VISIT(self->names[k]);
    }
    Py_VISIT(self->missing);
    for (Py_ssize_t k = 0; k < self->object_count; k++) {
        Py_VISIT(self->objects[k]);
        Py_VISIT(self->classes[k]);
    }
    for (Py_ssize_t k = 0; k < self->read_count; k++) {
        Py_VISIT(self->holders[k]);
        Py_VISIT(self->attributes[k]);
        Py_VISIT(self->expected[k]);
    }
    Py_VISIT(self->owner);
    Py_VISIT(self->owner_class);
    Py_VISIT(self->fallback);
    return 0;
}

static int
watch_check_clear(WatchCheck *self)
{
    self->released = 1;
    watch_check_free_arrays(self);
    return 0;
}

static void
watch_check_dealloc(WatchCheck *self)
{
    PyObject_GC_UnTrack(self);
    watch_check_free_arrays(self);
    PyMem_Free(self->dicts);
    PyMem_Free(self->versions);
    PyMem_Free(self->names);
    PyMem_Free(self->objects);
    PyMem_Free(self->classes);
    PyMem_Free(self->holders);
    PyMem_Free(self->attributes);
    PyMem_Free(self->expected);
    PyMem_Free(self->read_kinds);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
watch_check_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"dicts", "objects", "reads", "owner", "fallback", "names", "missing", NULL};
    PyObject *dicts, *objects, *reads, *owner = Py_None, *fallback = Py_None, *names = Py_None, *missing = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!|OOOO:WatchCheck", keywords, &PyTuple_Type, &dicts,
                                     &PyTuple_Type, &objects, &PyTuple_Type, &reads, &owner, &fallback, &names,
                                     &missing)) {
        return NULL;
    }
    if (names != Py_None && (!PyTuple_Check(names) || PyTuple_GET_SIZE(names) != PyTuple_GET_SIZE(dicts))) {
        PyErr_SetString(PyExc_TypeError, "WatchCheck: names must be a tuple with an entry per dict");
        return NULL;
    }
    if (names != Py_None) {
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(names); k++) {
            PyObject *pairs = PyTuple_GET_ITEM(names, k);
            if (pairs == Py_None) {
                continue;
            }
            if (!PyTuple_Check(pairs)) {
                PyErr_SetString(PyExc_TypeError, "WatchCheck: each names entry is None or a tuple of pairs");
                return NULL;
            }
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pairs); i++) {
                PyObject *pair = PyTuple_GET_ITEM(pairs, i);
                if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                    PyErr_SetString(PyExc_TypeError, "WatchCheck: a names pair is (key, expected)");
                    return NULL;
                }
            }
        }
    }
    if (owner != Py_None && (!PyWeakref_CheckRef(owner) || PyWeakref_GetObject(owner) == Py_None)) {
        PyErr_SetString(PyExc_TypeError, "WatchCheck: owner must be a live weak reference");
        return NULL;
    }
    if (fallback != Py_None && !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "WatchCheck: fallback must be callable");
        return NULL;
    }
    Py_ssize_t read_count = PyTuple_GET_SIZE(reads);
    for (Py_ssize_t k = 0; k < read_count; k++) {
        PyObject *read = PyTuple_GET_ITEM(reads, k);
        if (!PyTuple_Check(read) || PyTuple_GET_SIZE(read) != 3 || !PyUnicode_Check(PyTuple_GET_ITEM(read, 1))) {
            PyErr_SetString(PyExc_TypeError, "WatchCheck: reads must be (holder, name, expected) triples");
            return NULL;
        }
    }
    Py_ssize_t dict_count = PyTuple_GET_SIZE(dicts), object_count = PyTuple_GET_SIZE(objects);
    for (Py_ssize_t k = 0; k < dict_count; k++) {
        if (!PyDict_Check(PyTuple_GET_ITEM(dicts, k))) {
            PyErr_SetString(PyExc_TypeError, "WatchCheck: dicts must be dicts");
            return NULL;
        }
    }
    WatchCheck *self = (WatchCheck *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = watch_check_vectorcall;
    self->dicts = PyMem_New(PyObject *, dict_count > 0 ? dict_count : 1);
    self->versions = PyMem_New(uint64_t, dict_count > 0 ? dict_count : 1);
    self->names = PyMem_New(PyObject *, dict_count > 0 ? dict_count : 1);
    self->objects = PyMem_New(PyObject *, object_count > 0 ? object_count : 1);
    self->classes = PyMem_New(PyObject *, object_count > 0 ? object_count : 1);
    self->holders = PyMem_New(PyObject *, read_count > 0 ? read_count : 1);
    self->attributes = PyMem_New(PyObject *, read_count > 0 ? read_count : 1);
    self->expected = PyMem_New(PyObject *, read_count > 0 ? read_count : 1);
    self->read_kinds = PyMem_New(int, read_count > 0 ? read_count : 1);
    if (self->dicts == NULL || self->versions == NULL || self->names == NULL || self->objects == NULL ||
        self->classes == NULL || self->holders == NULL || self->attributes == NULL || self->expected == NULL ||
        self->read_kinds == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < dict_count; k++) {
        PyObject *dict = PyTuple_GET_ITEM(dicts, k);
        self->dicts[k] = Py_NewRef(dict);
        self->versions[k] = dict_version_tag(dict);
        PyObject *pairs = names == Py_None ? Py_None : PyTuple_GET_ITEM(names, k);
        self->names[k] = pairs == Py_None ? NULL : Py_NewRef(pairs);
    }
    self->dict_count = dict_count;
    for (Py_ssize_t k = 0; k < object_count; k++) {
        PyObject *obj = PyTuple_GET_ITEM(objects, k);
        self->objects[k] = Py_NewRef(obj);
        self->classes[k] = Py_NewRef((PyObject *)Py_TYPE(obj));
    }
    self->object_count = object_count;
    for (Py_ssize_t k = 0; k < read_count; k++) {
        PyObject *read = PyTuple_GET_ITEM(reads, k);
        self->holders[k] = Py_NewRef(PyTuple_GET_ITEM(read, 0));
        self->attributes[k] = Py_NewRef(PyTuple_GET_ITEM(read, 1));
        self->expected[k] = Py_NewRef(PyTuple_GET_ITEM(read, 2));
        self->read_kinds[k] = read_kind(self->holders[k], self->attributes[k]);
    }
    self->read_count = read_count;
    if (owner != Py_None) {
        self->owner = Py_NewRef(owner);
        self->owner_class = Py_NewRef((PyObject *)Py_TYPE(PyWeakref_GetObject(owner)));
    }
    if (fallback != Py_None) {
        self->fallback = Py_NewRef(fallback);
    }
    self->missing = missing == Py_None ? NULL : Py_NewRef(missing);
    return (PyObject *)self;
}

static PyMethodDef watch_check_methods[] = {
    {"release", (PyCFunction)check_release, METH_NOARGS, "Be false (-1) from now on."},
    {"update", (PyCFunction)watch_check_update, METH_O, "Take dict number index's version tag as it is now."},
    {"take", (PyCFunction)watch_check_take, METH_O, "Swap checks with another WatchCheck (not the fallback)."},
    {"probe", (PyCFunction)watch_check_probe, METH_NOARGS,
     "None while every check passes, else the index of the first changed dict, or -1."},
    {NULL},
};

static PyTypeObject WatchCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nocompile._native.WatchCheck",
    .tp_doc = PyDoc_STR(
        "WatchCheck(dicts, objects, reads, owner=None, fallback=None): probe() is None while every dict\n"
        "has the version tag it had, every object its class and every (holder, name, expected) read\n"
        "gives expected itself; else the index of the first changed dict, or -1. Called with a call's\n"
        "arguments (with a fallback): True when those hold and the owner (a weak reference) is the first\n"
        "argument, else fallback(*arguments)."),
    .tp_basicsize = sizeof(WatchCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_HAVE_GC,
    .tp_new = watch_check_new,
    .tp_methods = watch_check_methods,
    .tp_traverse = (traverseproc)watch_check_traverse,
    .tp_clear = (inquiry)watch_check_clear,
    .tp_dealloc = (destructor)watch_check_dealloc,
    .tp_vectorcall_offset = offsetof(WatchCheck, vectorcall),
    .tp_call = PyVectorcall_Call,
};

#endif /* NOCOMPILE_VERSION_TAGS */

static int
native_exec(PyObject *module)
{
#ifdef NOCOMPILE_VERSION_TAGS
    PyTypeObject *types[] = {&ItemsCheckType, &CellsCheckType, &FunctionCheckType, &WatchCheckType};
    const char *names[] = {"ItemsCheck", "CellsCheck", "FunctionCheck", "WatchCheck"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) {
            return -1;
        }
        Py_INCREF(types[i]);
        if (PyModule_AddObject(module, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            return -1;
        }
    }
#endif
    return 0;
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
    {0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nocompile._native",
    .m_doc = "Optional C speed-ups of nocompile's per-call check (nocompile works without them).",
    .m_size = 0,
    .m_slots = native_slots,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}
