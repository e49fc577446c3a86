// vattention._C: the Python face of Space (plain CPython C-API; no libtorch).
//
// The extension hands out raw device memory as DLPack capsules; vattention.cuda wraps
// them in torch tensors. Driver failures surface as vattention.errors.DriverError
// carrying the driver's error name, misuse as vattention.errors.VAttentionError.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <exception>
#include <new>
#include <stdexcept>
#include <vector>

#include "dlpack.h"
#include "space.h"

namespace {

using vattention::Space;

struct ModuleState {
  PyObject* driver_error;  // vattention.errors.DriverError
  PyObject* usage_error;   // vattention.errors.VAttentionError
  PyObject* space_type;
};

ModuleState* module_state(PyObject* module) {
  return static_cast<ModuleState*>(PyModule_GetState(module));
}

// Translates the exception in flight into a Python exception; returns nullptr.
PyObject* raise_current(ModuleState* state) {
  try {
    throw;
  } catch (const vattention::DriverFailure& e) {
    PyObject* exc = PyObject_CallFunction(state->driver_error, "ssi", e.call.c_str(),
                                          e.name.c_str(), e.code);
    if (exc != nullptr) {
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc)), exc);
      Py_DECREF(exc);
    }
  } catch (const vattention::UsageError& e) {
    PyErr_SetString(state->usage_error, e.what());
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// Runs f without the GIL (driver calls can take milliseconds, and the map-ahead thread
// must not stall the interpreter), then translates any failure.
template <class F>
bool run_unlocked(ModuleState* state, F&& f) {
  std::exception_ptr error;
  Py_BEGIN_ALLOW_THREADS
  try {
    f();
  } catch (...) {
    error = std::current_exception();
  }
  Py_END_ALLOW_THREADS
  if (!error) return true;
  try {
    std::rethrow_exception(error);
  } catch (...) {
    raise_current(state);
  }
  return false;
}

struct SpaceObject {
  PyObject_HEAD
  Space* space;
};

ModuleState* state_of(SpaceObject* self) {
  return static_cast<ModuleState*>(PyType_GetModuleState(Py_TYPE(self)));
}

int Space_init(SpaceObject* self, PyObject* args, PyObject* kwargs) {
  static const char* keywords[] = {"device", "page_size", "num_frames", "num_reservations",
                                   "reservation_bytes", nullptr};
  int device = 0;
  Py_ssize_t page_size = 0, num_frames = 0, num_reservations = 0, reservation_bytes = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "innnn", const_cast<char**>(keywords), &device,
                                   &page_size, &num_frames, &num_reservations,
                                   &reservation_bytes)) {
    return -1;
  }
  if (self->space != nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "Space is already initialised");
    return -1;
  }
  if (page_size <= 0 || num_frames < 0 || num_reservations <= 0 || reservation_bytes <= 0) {
    PyErr_SetString(PyExc_ValueError, "sizes must be positive");
    return -1;
  }
  Space* space = nullptr;
  const bool ok = run_unlocked(state_of(self), [&] {
    space = new Space(device, static_cast<size_t>(page_size), static_cast<size_t>(num_frames),
                      static_cast<size_t>(num_reservations),
                      static_cast<size_t>(reservation_bytes));
  });
  if (!ok) return -1;
  self->space = space;
  return 0;
}

void Space_dealloc(SpaceObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  Space* space = self->space;
  self->space = nullptr;
  if (space != nullptr) {
    Py_BEGIN_ALLOW_THREADS
    delete space;  // unmaps and releases whatever close() did not
    Py_END_ALLOW_THREADS
  }
  type->tp_free(reinterpret_cast<PyObject*>(self));
  Py_DECREF(type);
}

Space* checked(SpaceObject* self) {
  if (self->space == nullptr) {
    PyErr_SetString(state_of(self)->usage_error, "Space is not initialised");
  }
  return self->space;
}

// Parses (first, frames): a page number and a sequence of frame numbers.
bool parse_frames(PyObject* args, size_t* first, std::vector<size_t>* frames) {
  Py_ssize_t f = 0;
  PyObject* seq = nullptr;
  if (!PyArg_ParseTuple(args, "nO", &f, &seq)) return false;
  if (f < 0) {
    PyErr_SetString(PyExc_ValueError, "first must be non-negative");
    return false;
  }
  PyObject* fast = PySequence_Fast(seq, "frames must be a sequence of ints");
  if (fast == nullptr) return false;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
  frames->reserve(static_cast<size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    const Py_ssize_t frame = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(fast, i));
    if (frame < 0) {
      if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "frames must be non-negative");
      Py_DECREF(fast);
      return false;
    }
    frames->push_back(static_cast<size_t>(frame));
  }
  Py_DECREF(fast);
  *first = static_cast<size_t>(f);
  return true;
}

PyObject* Space_map(SpaceObject* self, PyObject* args) {
  size_t first = 0;
  std::vector<size_t> frames;
  Space* space = checked(self);
  if (space == nullptr || !parse_frames(args, &first, &frames)) return nullptr;
  if (!run_unlocked(state_of(self), [&] { space->map(first, frames); })) return nullptr;
  Py_RETURN_NONE;
}

PyObject* Space_unmap(SpaceObject* self, PyObject* args) {
  Py_ssize_t f = 0, c = 0;
  int synchronize = 1;
  Space* space = checked(self);
  if (space == nullptr || !PyArg_ParseTuple(args, "nn|p", &f, &c, &synchronize)) return nullptr;
  if (f < 0 || c < 0) {
    PyErr_SetString(PyExc_ValueError, "first and count must be non-negative");
    return nullptr;
  }
  const size_t first = static_cast<size_t>(f), count = static_cast<size_t>(c);
  if (!run_unlocked(state_of(self), [&] { space->unmap(first, count, synchronize != 0); })) {
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* Space_close(SpaceObject* self, PyObject*) {
  Space* space = checked(self);
  if (space == nullptr) return nullptr;
  if (!run_unlocked(state_of(self), [&] { space->close(); })) return nullptr;
  Py_RETURN_NONE;
}

PyObject* Space_base(SpaceObject* self, PyObject* arg) {
  Space* space = checked(self);
  if (space == nullptr) return nullptr;
  const size_t r = PyLong_AsSize_t(arg);
  if (r == static_cast<size_t>(-1) && PyErr_Occurred()) return nullptr;
  try {
    return PyLong_FromUnsignedLongLong(space->base(r));
  } catch (...) {
    return raise_current(state_of(self));
  }
}

// --- DLPack export -------------------------------------------------------------------------

struct Export {
  vattention::dlpack::ManagedTensor managed;
  int64_t shape[1];
  int64_t strides[1];
  PyObject* owner;  // the SpaceObject: the reservation must outlive every tensor over it
};

void export_deleter(vattention::dlpack::ManagedTensor* managed) {
  auto* exported = static_cast<Export*>(managed->manager_ctx);
  // torch may drop the tensor on a thread that does not hold the GIL.
  if (Py_IsInitialized()) {
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_XDECREF(exported->owner);
    PyGILState_Release(gil);
  }
  delete exported;
}

void capsule_destructor(PyObject* capsule) {
  // A consumer renames the capsule when it takes ownership; only an unconsumed one is ours.
  if (PyCapsule_IsValid(capsule, "dltensor")) {
    auto* managed = static_cast<vattention::dlpack::ManagedTensor*>(
        PyCapsule_GetPointer(capsule, "dltensor"));
    managed->deleter(managed);
  }
}

PyObject* Space_dlpack(SpaceObject* self, PyObject* arg) {
  Space* space = checked(self);
  if (space == nullptr) return nullptr;
  const size_t r = PyLong_AsSize_t(arg);
  if (r == static_cast<size_t>(-1) && PyErr_Occurred()) return nullptr;
  CUdeviceptr base = 0;
  try {
    base = space->base(r);
  } catch (...) {
    return raise_current(state_of(self));
  }
  auto* exported = new (std::nothrow) Export{};
  if (exported == nullptr) return PyErr_NoMemory();
  exported->shape[0] = static_cast<int64_t>(space->reservation_bytes());
  exported->strides[0] = 1;
  auto& t = exported->managed.dl_tensor;
  t.data = reinterpret_cast<void*>(static_cast<uintptr_t>(base));
  t.device = {vattention::dlpack::kDLCUDA, space->device()};
  t.ndim = 1;
  t.dtype = {vattention::dlpack::kDLUInt, 8, 1};  // bytes; the caller views them as its dtype
  t.shape = exported->shape;
  t.strides = exported->strides;
  t.byte_offset = 0;
  exported->managed.manager_ctx = exported;
  exported->managed.deleter = export_deleter;
  exported->owner = reinterpret_cast<PyObject*>(self);
  Py_INCREF(self);
  PyObject* capsule = PyCapsule_New(&exported->managed, "dltensor", capsule_destructor);
  if (capsule == nullptr) export_deleter(&exported->managed);
  return capsule;
}

PyObject* Space_get_num_pages(SpaceObject* self, void*) {
  Space* space = checked(self);
  return space == nullptr ? nullptr : PyLong_FromSize_t(space->num_pages());
}

PyObject* Space_get_num_frames(SpaceObject* self, void*) {
  Space* space = checked(self);
  return space == nullptr ? nullptr : PyLong_FromSize_t(space->num_frames());
}

PyObject* Space_get_page_size(SpaceObject* self, void*) {
  Space* space = checked(self);
  return space == nullptr ? nullptr : PyLong_FromSize_t(space->page_size());
}

PyMethodDef space_methods[] = {
    {"map", reinterpret_cast<PyCFunction>(Space_map), METH_VARARGS,
     "map(first, frames): back page first+i of every reservation with frame frames[i]"},
    {"unmap", reinterpret_cast<PyCFunction>(Space_unmap), METH_VARARGS,
     "unmap(first, count, synchronize=True): unmap pages [first, first+count) of every "
     "reservation, after all queued device work unless synchronize is false"},
    {"close", reinterpret_cast<PyCFunction>(Space_close), METH_NOARGS,
     "close(): unmap everything, release the pool and the reservations"},
    {"base", reinterpret_cast<PyCFunction>(Space_base), METH_O,
     "base(r): device address of reservation r"},
    {"dlpack", reinterpret_cast<PyCFunction>(Space_dlpack), METH_O,
     "dlpack(r): reservation r as a DLPack capsule of bytes"},
    {nullptr, nullptr, 0, nullptr},
};

PyGetSetDef space_getset[] = {
    {"num_pages", reinterpret_cast<getter>(Space_get_num_pages), nullptr,
     "physical pages in the pool (num_frames x reservations)", nullptr},
    {"num_frames", reinterpret_cast<getter>(Space_get_num_frames), nullptr,
     "frames in the pool (one page in every reservation each)", nullptr},
    {"page_size", reinterpret_cast<getter>(Space_get_page_size), nullptr, "bytes per page",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyType_Slot space_slots[] = {
    {Py_tp_doc, const_cast<char*>(
                    "Space(device, page_size, num_frames, num_reservations, reservation_bytes)")},
    {Py_tp_new, reinterpret_cast<void*>(PyType_GenericNew)},
    {Py_tp_init, reinterpret_cast<void*>(Space_init)},
    {Py_tp_dealloc, reinterpret_cast<void*>(Space_dealloc)},
    {Py_tp_methods, space_methods},
    {Py_tp_getset, space_getset},
    {0, nullptr},
};

PyType_Spec space_spec = {
    "vattention._C.Space",
    sizeof(SpaceObject),
    0,
    Py_TPFLAGS_DEFAULT,
    space_slots,
};

// --- module --------------------------------------------------------------------------------

PyObject* granularity(PyObject* module, PyObject* arg) {
  const long device = PyLong_AsLong(arg);
  if (device == -1 && PyErr_Occurred()) return nullptr;
  size_t result = 0;
  if (!run_unlocked(module_state(module), [&] {
        result = vattention::allocation_granularity(static_cast<int>(device));
      })) {
    return nullptr;
  }
  return PyLong_FromSize_t(result);
}

int module_exec(PyObject* module) {
  ModuleState* state = module_state(module);
  PyObject* errors = PyImport_ImportModule("vattention.errors");
  if (errors == nullptr) return -1;
  state->driver_error = PyObject_GetAttrString(errors, "DriverError");
  state->usage_error = PyObject_GetAttrString(errors, "VAttentionError");
  Py_DECREF(errors);
  if (state->driver_error == nullptr || state->usage_error == nullptr) return -1;
  state->space_type = PyType_FromModuleAndSpec(module, &space_spec, nullptr);
  if (state->space_type == nullptr) return -1;
  Py_INCREF(state->space_type);
  if (PyModule_AddObject(module, "Space", state->space_type) < 0) {
    Py_DECREF(state->space_type);
    return -1;
  }
  return 0;
}

int module_traverse(PyObject* module, visitproc visit, void* arg) {
  ModuleState* state = module_state(module);
  Py_VISIT(state->driver_error);
  Py_VISIT(state->usage_error);
  Py_VISIT(state->space_type);
  return 0;
}

int module_clear(PyObject* module) {
  ModuleState* state = module_state(module);
  Py_CLEAR(state->driver_error);
  Py_CLEAR(state->usage_error);
  Py_CLEAR(state->space_type);
  return 0;
}

void module_free(void* module) { module_clear(static_cast<PyObject*>(module)); }

PyMethodDef module_methods[] = {
    {"granularity", granularity, METH_O,
     "granularity(device): the smallest physical page the driver maps on a device"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, reinterpret_cast<void*>(module_exec)},
    {0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "vattention._C",
    "CUDA driver-API virtual memory for the vattention KV cache",
    sizeof(ModuleState),
    module_methods,
    module_slots,
    module_traverse,
    module_clear,
    module_free,
};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModuleDef_Init(&module_def); }
