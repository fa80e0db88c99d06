// fleetpipe/error.hpp — one error story for every component.
//
// Every fallible call returns `Result<T>`: either a value or an `Error` carrying a
// `std::error_code` (category "fleetpipe", values of `fleetpipe::errc`) and a human message.
// No exception crosses the library boundary unless the host calls `Result::value()` on an error,
// which throws `fleetpipe::Exception` (an explicit opt-in).
//
// Hosts built without exceptions (-fno-exceptions): every public header compiles; `value()` is
// then not callable (using it is a compile error naming the alternative), so nothing in these
// headers throws or aborts. Check `ok()` and use `*` / `->`, or `value_or(fallback)`.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace fleetpipe {

/// Error conditions of all fleetpipe components. Stable numeric values: they are exported in
/// metrics and logs, so never renumber.
enum class errc {
  invalid_config = 1,     ///< the JSON config (or a constructed config) is rejected
  invalid_argument = 2,   ///< a call argument is out of its documented range
  io_error = 3,           ///< the OS refused a file operation (see message for errno text)
  storage_full = 4,       ///< a quota or filesystem headroom is reached and the policy rejects
  wear_budget_exhausted = 5,  ///< the daily flash-write budget refuses this priority
  corrupt_database = 6,   ///< the store could not be opened; it was quarantined
  not_found = 7,          ///< the id / key / object does not exist
  network_error = 8,      ///< connect, DNS, reset, short read: retryable
  tls_error = 9,          ///< handshake or certificate verification failed
  timeout = 10,           ///< an operation exceeded its deadline: retryable
  http_error = 11,        ///< malformed or unexpected HTTP response
  s3_throttled = 12,      ///< 503 SlowDown / 429: retryable with backoff
  s3_server_error = 13,   ///< 5xx: retryable
  s3_clock_skew = 14,     ///< RequestTimeTooSkewed: retry after clock correction
  s3_permanent = 15,      ///< permanent 4xx (NoSuchBucket, AccessDenied, ...): parked, not retried
  auth_error = 16,        ///< credentials missing or rejected (InvalidAccessKeyId, Signature...)
  paused = 17,            ///< uploads are paused by the host or a schedule window
  would_block = 18,       ///< no progress possible now (back-pressure); try again later
  cancelled = 19,         ///< the operation was cancelled by shutdown
  decode_error = 20,      ///< a payload or server reply could not be parsed
  unsupported = 21,       ///< the feature is not available in this build or on this server
  insecure_refused = 22,  ///< plain HTTP without `allow_insecure_http`
  internal = 23,          ///< a bug in fleetpipe: please report it
  out_of_memory = 24,     ///< an allocation failed; the work was dropped and counted
};

}  // namespace fleetpipe

namespace std {
template <>
struct is_error_code_enum<fleetpipe::errc> : true_type {};
}  // namespace std

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define FLEETPIPE_HAS_EXCEPTIONS 1
#else
#define FLEETPIPE_HAS_EXCEPTIONS 0
#endif

namespace fleetpipe {

namespace detail {
template <class>
inline constexpr bool kAlwaysFalse = false;
}  // namespace detail

/// The category of `errc`; name() is "fleetpipe".
const std::error_category& error_category() noexcept;

/// Makes `errc` usable as `std::error_code` (found by ADL).
std::error_code make_error_code(errc e) noexcept;

/// A failed call: a machine-readable code plus a message for people.
/// `json_pointer` is set only for config errors (e.g. "/uploader/bandwidth/bytes_per_second").
/// Messages never contain credentials.
struct Error {
  std::error_code code;
  std::string message;
  std::string json_pointer;

  Error() = default;
  Error(errc e, std::string msg, std::string pointer = {})
      : code(make_error_code(e)), message(std::move(msg)), json_pointer(std::move(pointer)) {}
  Error(std::error_code c, std::string msg) : code(c), message(std::move(msg)) {}

  /// True when `code` equals `e`.
  bool is(errc e) const noexcept { return code == make_error_code(e); }
};

/// Thrown only by `Result::value()` on an error, and by language bindings. Declared in
/// -fno-exceptions builds too (harmless: nothing there throws it).
class Exception : public std::runtime_error {
 public:
  explicit Exception(Error e) : std::runtime_error(e.message), error_(std::move(e)) {}
  const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

/// A value or an Error. Check with `ok()` / `explicit operator bool` before `*` or `->`.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT
  Result(errc e, std::string msg) : v_(std::in_place_index<1>, Error(e, std::move(msg))) {}

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  /// Unchecked access: precondition ok().
  T& operator*() & noexcept { return *std::get_if<0>(&v_); }
  const T& operator*() const& noexcept { return *std::get_if<0>(&v_); }
  T* operator->() noexcept { return std::get_if<0>(&v_); }
  const T* operator->() const noexcept { return std::get_if<0>(&v_); }

  /// A copy of the value, or `fallback` when this holds an error. Never throws (beyond T's copy).
  template <class U>
  T value_or(U&& fallback) const& {
    return ok() ? **this : static_cast<T>(std::forward<U>(fallback));
  }

#if FLEETPIPE_HAS_EXCEPTIONS
  /// Checked access: throws fleetpipe::Exception when this holds an error.
  T& value() & {
    if (!ok()) throw Exception(error());
    return **this;
  }
  const T& value() const& {
    if (!ok()) throw Exception(error());
    return **this;
  }
  T&& value() && {
    if (!ok()) throw Exception(error());
    return std::move(**this);
  }
#else
  /// Without exceptions there is no checked access: test ok() and use `*`, or value_or().
  template <class U = T>
  U& value() {
    static_assert(detail::kAlwaysFalse<U>,
                  "fleetpipe::Result::value() throws; built with -fno-exceptions, test ok() "
                  "and use operator* or value_or()");
    return **this;
  }
#endif

  /// Precondition: !ok().
  const Error& error() const& noexcept { return *std::get_if<1>(&v_); }
  Error&& error() && noexcept { return std::move(*std::get_if<1>(&v_)); }

 private:
  std::variant<T, Error> v_;
};

/// Result of a call that returns nothing on success.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT
  Result(errc e, std::string msg) : error_(e, std::move(msg)), ok_(false) {}

  bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
#if FLEETPIPE_HAS_EXCEPTIONS
  /// Throws fleetpipe::Exception when this holds an error.
  void value() const {
    if (!ok_) throw Exception(error_);
  }
#else
  /// Without exceptions there is no checked access: test ok().
  template <class U = void>
  void value() const {
    static_assert(detail::kAlwaysFalse<U>,
                  "fleetpipe::Result<void>::value() throws; built with -fno-exceptions, test ok()");
  }
#endif
  const Error& error() const& noexcept { return error_; }
  Error&& error() && noexcept { return std::move(error_); }

 private:
  Error error_;
  bool ok_ = true;
};

}  // namespace fleetpipe
