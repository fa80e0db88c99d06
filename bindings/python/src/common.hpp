// Internal to the Python module: the Python-side owners of Buffer (shared by Capture and
// Uploader bindings) and small conversion helpers.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <set>

#include "bindings.hpp"
#include "fleetpipe/buffer.hpp"
#include "fleetpipe/metrics.hpp"

namespace fleetpipe::py {

/// push_rows' arguments read in place through the buffer protocol (numpy arrays, array.array,
/// memoryview): `times` 1-D float64 of n, `values` float64 of n x channels (2-D (n, channels)
/// or 1-D n * channels), both C-contiguous. Nothing is copied; the views stay valid while this
/// object lives. Raises fleetpipe.Error (invalid_argument) on another type, shape or layout.
struct RowsView {
  pybind11::buffer_info times, values;
  std::size_t n = 0;
  RowsView(const pybind11::buffer& t, const pybind11::buffer& v, std::size_t channels);
  const double* t() const { return static_cast<const double*>(times.ptr); }
  const double* v() const { return static_cast<const double*>(values.ptr); }
};

/// A MetricsRegistry Python object: `obj` when given, else a new registry.
pybind11::object metrics_or_new(pybind11::handle obj);

struct PyLease;

/// Owns a Buffer plus what must outlive it (the metrics registry object, the Port).
/// Leases, Captures and Uploaders built on it count as dependents: close() refuses while a
/// Capture or Uploader uses it, and returns open leases' records first.
struct PyBuffer {
  pybind11::object metrics;  // a MetricsRegistry (kept alive)
  Port port;
  std::unique_ptr<Buffer> buffer;
  int dependents = 0;
  std::set<PyLease*> leases;

  Buffer& get();  // raises fleetpipe.Error when closed
  void close();
};

struct PyLease {
  pybind11::object owner;  // the PyBuffer
  PyBuffer* buf = nullptr;
  std::unique_ptr<Lease> lease;
  ~PyLease();
  void release();
  Lease& get();
};

pybind11::dict record_meta_dict(const RecordMeta& m);
RecordMeta record_meta_from(const std::string& stream, const std::string& event_id,
                            const std::vector<std::string>& trigger_ids, int priority,
                            std::int64_t start_ns, std::int64_t end_ns,
                            const std::string& content_type,
                            const std::map<std::string, std::string>& metadata);
pybind11::dict append_outcome_dict(const AppendOutcome& o);

}  // namespace fleetpipe::py
