/* nocompile._native: the per-item part of a version tree, as one C loop.
 *
 * A KV cache of 80 layers is a list of 80 objects. The version tree (nocompile/_watch.py) checks
 * each item's class and the version tag of its __dict__; with Dynamo's guard manager that is four
 * nodes an item, about 30 ns each item on every call. ItemsCheck does the same comparisons for
 * every item of one list or tuple in a loop of a few nanoseconds an item, and is attached to the
 * list's node of the tree as one leaf (a guard manager's "lambda" guard calls it with the list).
 *
 * What it compares is exactly what the nodes it replaces compared: the length of the sequence,
 * and for each watched index the item's class (by identity: ``obj.__class__ = Other`` stores into
 * no dict) and its instance dict's version tag. Version tags are unique to a dict and a store
 * (CPython counts them process-wide), so no item needs to be held: another object, even one
 * created at a freed item's address, has another dict and another tag. The classes are held, so
 * their addresses stay their own.
 *
 * Two more leaves do the same for the module part's roots that Dynamo's guard manager checks with
 * a node per value: CellsCheck, a tuple of closure cells whose values must stay equal and of the
 * same type (a decorator's configuration: Hugging Face's forward has 11), and FunctionCheck, a
 * helper function whose code, defaults, keyword defaults and closure contents must stay the very
 * same objects. Both hold what they compare, as the guard manager's leaves did, until release():
 * a version tree releases its checks when it is dropped (a verified key may keep the tree's guard
 * manager, and so the check, alive; it must not keep the user's objects alive with it), and a
 * released check is false for every value.
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

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int is_list;            /* a list (else a tuple), as when built */
    Py_ssize_t length;      /* the sequence's length when built */
    Py_ssize_t count;       /* how many items are watched */
    Py_ssize_t *indices;    /* their indices, ascending */
    PyObject **classes;     /* their classes (strong references) */
    uint64_t *versions;     /* their instance dicts' version tags */
    int released;           /* release() was called: false for every value */
} ItemsCheck;

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

static PyObject *
items_check_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ItemsCheck *self = (ItemsCheck *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "ItemsCheck takes the one sequence it watches");
        return NULL;
    }
    if (self->released) {
        Py_RETURN_FALSE;
    }
    PyObject *sequence = args[0];
    PyObject **items;
    Py_ssize_t size;
    if (self->is_list ? !PyList_Check(sequence) : !PyTuple_Check(sequence)) {
        Py_RETURN_FALSE;
    }
    if (self->is_list) {
        items = ((PyListObject *)sequence)->ob_item;
        size = PyList_GET_SIZE(sequence);
    }
    else {
        items = ((PyTupleObject *)sequence)->ob_item;
        size = PyTuple_GET_SIZE(sequence);
    }
    if (size != self->length) {
        Py_RETURN_FALSE;
    }
    for (Py_ssize_t k = 0; k < self->count; k++) {
        PyObject *item = items[self->indices[k]];
        if ((PyObject *)Py_TYPE(item) != self->classes[k]) {
            Py_RETURN_FALSE;
        }
        uint64_t version;
        /* No Python code runs here: the generic getter reads (or, once, creates) the dict. */
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

static int
items_check_clear(ItemsCheck *self)
{
    if (self->classes != NULL) {
        for (Py_ssize_t k = 0; k < self->count; k++) {
            Py_CLEAR(self->classes[k]);
        }
    }
    return 0;
}

static int
items_check_traverse(ItemsCheck *self, visitproc visit, void *arg)
{
    if (self->classes != NULL) {
        for (Py_ssize_t k = 0; k < self->count; k++) {
            Py_VISIT(self->classes[k]);
        }
    }
    return 0;
}

static void
items_check_dealloc(ItemsCheck *self)
{
    PyObject_GC_UnTrack(self);
    items_check_clear(self);
    PyMem_Free(self->indices);
    PyMem_Free(self->classes);
    PyMem_Free(self->versions);
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
}

static PyObject *
items_check_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"sequence", "indices", NULL};
    PyObject *sequence, *indices;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!:ItemsCheck", keywords, &sequence, &PyTuple_Type, &indices)) {
        return NULL;
    }
    int is_list = PyList_Check(sequence);
    if (!is_list && !PyTuple_Check(sequence)) {
        PyErr_Format(PyExc_TypeError, "ItemsCheck watches a list or a tuple, not %.100s", Py_TYPE(sequence)->tp_name);
        return NULL;
    }
    Py_ssize_t length = is_list ? PyList_GET_SIZE(sequence) : PyTuple_GET_SIZE(sequence);
    Py_ssize_t count = PyTuple_GET_SIZE(indices);
    ItemsCheck *self = (ItemsCheck *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = items_check_vectorcall;
    self->is_list = is_list;
    self->length = length;
    self->count = 0; /* raised as the arrays fill, so a failure part-way frees only what was taken */
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
        if (index < 0 || index >= length || (k > 0 && index <= self->indices[k - 1])) {
            PyErr_Format(PyExc_ValueError, "ItemsCheck: index %zd out of order or out of range (length %zd)", index,
                         length);
            Py_DECREF(self);
            return NULL;
        }
        PyObject *item = is_list ? PyList_GET_ITEM(sequence, index) : PyTuple_GET_ITEM(sequence, index);
        uint64_t version;
        if (instance_dict_version(item, &version) < 0) {
            Py_DECREF(self);
            return NULL;
        }
        self->indices[k] = index;
        self->classes[k] = Py_NewRef((PyObject *)Py_TYPE(item));
        self->versions[k] = version;
        self->count = k + 1;
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

static PyObject *
items_check_release(ItemsCheck *self, PyObject *Py_UNUSED(ignored))
{
    items_check_clear(self);
    self->released = 1;
    Py_RETURN_NONE;
}

static PyMethodDef items_check_methods[] = {
    {"release", (PyCFunction)items_check_release, METH_NOARGS,
     "Drop the references the check holds; from then on it is false for every value."},
    {NULL},
};

static PyTypeObject ItemsCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nocompile._native.ItemsCheck",
    .tp_doc = PyDoc_STR(
        "ItemsCheck(sequence, indices): called with a sequence, True while it is a list (or tuple,\n"
        "as built) of the same length whose items at ``indices`` have the class and the instance\n"
        "dict version tag they had when built."),
    .tp_basicsize = sizeof(ItemsCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = items_check_new,
    .tp_methods = items_check_methods,
    .tp_dealloc = (destructor)items_check_dealloc,
    .tp_traverse = (traverseproc)items_check_traverse,
    .tp_clear = (inquiry)items_check_clear,
    .tp_vectorcall_offset = offsetof(ItemsCheck, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_getset = items_check_getset,
};

/* -- CellsCheck ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *values; /* a tuple: each cell's value when built */
    int released;           /* release() was called: false for every value */
} CellsCheck;

static PyObject *
cells_check_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    CellsCheck *self = (CellsCheck *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "CellsCheck takes the one tuple of cells it watches");
        return NULL;
    }
    if (self->released) {
        Py_RETURN_FALSE;
    }
    PyObject *cells = args[0];
    Py_ssize_t n = PyTuple_GET_SIZE(self->values);
    if (!PyTuple_Check(cells) || PyTuple_GET_SIZE(cells) != n) {
        Py_RETURN_FALSE;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *cell = PyTuple_GET_ITEM(cells, k);
        if (!PyCell_Check(cell)) {
            Py_RETURN_FALSE;
        }
        PyObject *now = PyCell_GET(cell);
        PyObject *then = PyTuple_GET_ITEM(self->values, k);
        if (now == then) {
            continue;
        }
        if (now == NULL || Py_TYPE(now) != Py_TYPE(then)) { /* emptied, or another type */
            Py_RETURN_FALSE;
        }
        /* An equal value of the same type is the same configuration (Dynamo's EQUALS_MATCH). */
        Py_INCREF(now);
        int equal = PyObject_RichCompareBool(now, then, Py_EQ);
        Py_DECREF(now);
        if (equal < 0) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        if (!equal) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

static PyObject *
cells_check_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"cells", NULL};
    PyObject *cells;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:CellsCheck", keywords, &PyTuple_Type, &cells)) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(cells);
    PyObject *values = PyTuple_New(n);
    if (values == NULL) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *cell = PyTuple_GET_ITEM(cells, k);
        if (!PyCell_Check(cell)) {
            PyErr_Format(PyExc_TypeError, "CellsCheck: item %zd is a %.100s, not a cell", k, Py_TYPE(cell)->tp_name);
            Py_DECREF(values);
            return NULL;
        }
        PyObject *value = PyCell_GET(cell);
        if (value == NULL) {
            PyErr_Format(PyExc_ValueError, "CellsCheck: cell %zd is empty", k);
            Py_DECREF(values);
            return NULL;
        }
        PyTuple_SET_ITEM(values, k, Py_NewRef(value));
    }
    CellsCheck *self = (CellsCheck *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(values);
        return NULL;
    }
    self->vectorcall = cells_check_vectorcall;
    self->values = values;
    return (PyObject *)self;
}

static int
cells_check_traverse(CellsCheck *self, visitproc visit, void *arg)
{
    Py_VISIT(self->values);
    return 0;
}

static int
cells_check_clear(CellsCheck *self)
{
    Py_CLEAR(self->values);
    return 0;
}

static void
cells_check_dealloc(CellsCheck *self)
{
    PyObject_GC_UnTrack(self);
    cells_check_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
cells_check_get_values(CellsCheck *self, void *closure)
{
    return self->values != NULL ? Py_NewRef(self->values) : PyTuple_New(0);
}

static PyGetSetDef cells_check_getset[] = {
    {"values", (getter)cells_check_get_values, NULL, "Each cell's value when the check was built.", NULL},
    {NULL},
};

static PyObject *
cells_check_release(CellsCheck *self, PyObject *Py_UNUSED(ignored))
{
    cells_check_clear(self);
    self->released = 1;
    Py_RETURN_NONE;
}

static PyMethodDef cells_check_methods[] = {
    {"release", (PyCFunction)cells_check_release, METH_NOARGS,
     "Drop the references the check holds; from then on it is false for every value."},
    {NULL},
};

static PyTypeObject CellsCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nocompile._native.CellsCheck",
    .tp_doc = PyDoc_STR(
        "CellsCheck(cells): called with a tuple of cells, True while it has as many cells, each\n"
        "holding the value it held when built or an equal one of the same type."),
    .tp_basicsize = sizeof(CellsCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = cells_check_new,
    .tp_methods = cells_check_methods,
    .tp_dealloc = (destructor)cells_check_dealloc,
    .tp_traverse = (traverseproc)cells_check_traverse,
    .tp_clear = (inquiry)cells_check_clear,
    .tp_vectorcall_offset = offsetof(CellsCheck, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_getset = cells_check_getset,
};

/* -- FunctionCheck --------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *code;       /* __code__ */
    PyObject *defaults;   /* __defaults__ (None when it has none) */
    PyObject *kwdefaults; /* __kwdefaults__ (None when it has none) */
    PyObject *contents;   /* a tuple: each closure cell's contents (an empty cell is not built) */
    int released;           /* release() was called: false for every value */
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
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "FunctionCheck takes the one function it watches");
        return NULL;
    }
    if (self->released) {
        Py_RETURN_FALSE;
    }
    PyObject *fn = args[0];
    if (!PyFunction_Check(fn) || PyFunction_GET_CODE(fn) != self->code ||
        or_none(PyFunction_GET_DEFAULTS(fn)) != self->defaults ||
        or_none(PyFunction_GET_KW_DEFAULTS(fn)) != self->kwdefaults) {
        Py_RETURN_FALSE;
    }
    PyObject *closure = PyFunction_GET_CLOSURE(fn);
    Py_ssize_t n = PyTuple_GET_SIZE(self->contents);
    if (closure == NULL || closure == Py_None) {
        if (n == 0) {
            Py_RETURN_TRUE;
        }
        Py_RETURN_FALSE;
    }
    if (!PyTuple_Check(closure) || PyTuple_GET_SIZE(closure) != n) {
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
    static char *keywords[] = {"function", NULL};
    PyObject *fn;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:FunctionCheck", keywords, &PyFunction_Type, &fn)) {
        return NULL;
    }
    PyObject *closure = PyFunction_GET_CLOSURE(fn);
    Py_ssize_t n = (closure != NULL && closure != Py_None) ? PyTuple_GET_SIZE(closure) : 0;
    PyObject *contents = PyTuple_New(n);
    if (contents == NULL) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *value = PyCell_GET(PyTuple_GET_ITEM(closure, k));
        if (value == NULL) {
            PyErr_Format(PyExc_ValueError, "FunctionCheck: closure cell %zd of %R is empty", k, fn);
            Py_DECREF(contents);
            return NULL;
        }
        PyTuple_SET_ITEM(contents, k, Py_NewRef(value));
    }
    FunctionCheck *self = (FunctionCheck *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(contents);
        return NULL;
    }
    self->vectorcall = function_check_vectorcall;
    self->code = Py_NewRef(PyFunction_GET_CODE(fn));
    self->defaults = Py_NewRef(or_none(PyFunction_GET_DEFAULTS(fn)));
    self->kwdefaults = Py_NewRef(or_none(PyFunction_GET_KW_DEFAULTS(fn)));
    self->contents = contents;
    return (PyObject *)self;
}

static int
function_check_traverse(FunctionCheck *self, visitproc visit, void *arg)
{
    Py_VISIT(self->code);
    Py_VISIT(self->defaults);
    Py_VISIT(self->kwdefaults);
    Py_VISIT(self->contents);
    return 0;
}

static int
function_check_clear(FunctionCheck *self)
{
    Py_CLEAR(self->code);
    Py_CLEAR(self->defaults);
    Py_CLEAR(self->kwdefaults);
    Py_CLEAR(self->contents);
    return 0;
}

static void
function_check_dealloc(FunctionCheck *self)
{
    PyObject_GC_UnTrack(self);
    function_check_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
function_check_release(FunctionCheck *self, PyObject *Py_UNUSED(ignored))
{
    function_check_clear(self);
    self->released = 1;
    Py_RETURN_NONE;
}

static PyMethodDef function_check_methods[] = {
    {"release", (PyCFunction)function_check_release, METH_NOARGS,
     "Drop the references the check holds; from then on it is false for every value."},
    {NULL},
};

static PyTypeObject FunctionCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nocompile._native.FunctionCheck",
    .tp_doc = PyDoc_STR(
        "FunctionCheck(function): called with a function, True while its __code__, __defaults__,\n"
        "__kwdefaults__ and each closure cell's contents are the very objects they were when built."),
    .tp_basicsize = sizeof(FunctionCheck),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = function_check_new,
    .tp_methods = function_check_methods,
    .tp_dealloc = (destructor)function_check_dealloc,
    .tp_traverse = (traverseproc)function_check_traverse,
    .tp_clear = (inquiry)function_check_clear,
    .tp_vectorcall_offset = offsetof(FunctionCheck, vectorcall),
    .tp_call = PyVectorcall_Call,
};

#endif /* NOCOMPILE_VERSION_TAGS */

static int
native_exec(PyObject *module)
{
#ifdef NOCOMPILE_VERSION_TAGS
    PyTypeObject *types[] = {&ItemsCheckType, &CellsCheckType, &FunctionCheckType};
    const char *names[] = {"ItemsCheck", "CellsCheck", "FunctionCheck"};
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
