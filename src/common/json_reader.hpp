// Internal: a strict reader over one JSON object of the config, tracking its JSON pointer.
//
// Every getter marks its key as known; `finish()` then rejects any key nobody read, so a typo
// never passes silently. Errors are thrown as `ConfigError` (internal only: `parse_config`
// catches it and returns a `Result`), with the exact message format
//   "/uploader/bandwidth/bytes_per_second: must be > 0, got -5".
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fleetpipe/error.hpp"

namespace fleetpipe::detail {

/// Thrown by JsonReader; caught at the config boundary.
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string pointer, const std::string& reason)
      : std::runtime_error(pointer + ": " + reason), pointer_(std::move(pointer)) {}
  const std::string& pointer() const noexcept { return pointer_; }

 private:
  std::string pointer_;
};

/// Throws the ConfigError of a failed validate() (its pointer and reason); no-op when ok, so a
/// parser reports the first error of the document whichever check finds it.
void throw_if_invalid(const Result<void>& checked);

/// A bound as the range messages print it ("0.001", "86400").
std::string format_bound(double bound);
/// One JSON pointer token: '~' -> "~0", '/' -> "~1".
std::string escape_pointer_token(std::string_view key);

/// Parses "64MiB", "1.5GB", "512 KiB", "100" into bytes. nullopt when malformed.
std::optional<std::uint64_t> parse_byte_size(std::string_view text);
/// Parses "500ms", "2s", "1.5m", "1h", "1d", "250us" into seconds. nullopt when malformed.
std::optional<double> parse_duration_seconds(std::string_view text);

class JsonReader {
 public:
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  /// `node` must outlive the reader. Throws ConfigError when `node` is not an object.
  JsonReader(const nlohmann::json& node, std::string pointer);

  const std::string& pointer() const noexcept { return pointer_; }
  const nlohmann::json& node() const noexcept { return node_; }
  /// JSON pointer of `key` below this object (with ~0 / ~1 escaping).
  std::string pointer_of(std::string_view key) const;

  bool has(std::string_view key) const;

  std::string string(std::string_view key, std::string def);
  std::string required_string(std::string_view key);
  /// One of `allowed`; error "must be one of a, b, got \"x\"".
  std::string one_of(std::string_view key, std::string def, const std::vector<std::string>& allowed);
  bool boolean(std::string_view key, bool def);
  /// A finite number within [min, max] (or (min, max] when `min_exclusive`).
  double number(std::string_view key, double def, double min = -kInf, double max = kInf,
                bool min_exclusive = false);
  double required_number(std::string_view key, double min = -kInf, double max = kInf,
                         bool min_exclusive = false);
  std::int64_t integer(std::string_view key, std::int64_t def,
                       std::int64_t min = std::numeric_limits<std::int64_t>::min(),
                       std::int64_t max = std::numeric_limits<std::int64_t>::max());
  /// A byte count: an integer or a string like "64MiB".
  std::uint64_t bytes(std::string_view key, std::uint64_t def, std::uint64_t min = 0,
                      std::uint64_t max = std::numeric_limits<std::uint64_t>::max());
  /// A duration in seconds: a number or a string like "500ms", "2h".
  double seconds(std::string_view key, double def, double min = 0, double max = kInf,
                 bool min_exclusive = false);
  std::vector<std::string> string_array(std::string_view key);
  std::map<std::string, std::string> string_map(std::string_view key);

  /// The child object at `key`; an empty object (all defaults) when the key is absent.
  JsonReader object(std::string_view key);
  /// True and the child when present.
  std::optional<JsonReader> optional_object(std::string_view key);
  /// Each element of the array at `key` as an object reader (empty when absent).
  std::vector<JsonReader> objects(std::string_view key);
  /// The raw value at `key` (marks it known); nullptr when absent.
  const nlohmann::json* raw(std::string_view key);

  /// Marks `key` as known without reading it.
  void accept(std::string_view key) { seen_.emplace(key); }

  [[noreturn]] void fail(std::string_view key, const std::string& reason) const;
  [[noreturn]] void fail_here(const std::string& reason) const;

  /// Throws for the first key that no getter read ("unknown key", with a suggestion).
  void finish() const;

 private:
  const nlohmann::json* lookup(std::string_view key);
  static std::string show(const nlohmann::json& v);

  const nlohmann::json& node_;
  std::string pointer_;
  std::set<std::string, std::less<>> seen_;
};

}  // namespace fleetpipe::detail
