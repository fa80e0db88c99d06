// The strict JSON reader of the config: typed getters that name the JSON pointer of every error.
#include "common/json_reader.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace fleetpipe::detail {
namespace {

const nlohmann::json& empty_object() {
  static const nlohmann::json kEmpty = nlohmann::json::object();
  return kEmpty;
}

}  // namespace

std::string escape_pointer_token(std::string_view key) {
  std::string out;
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Splits "1.5GiB" into (1.5, "GiB"); nullopt when the number part is malformed.
std::optional<std::pair<double, std::string>> split_number_unit(std::string_view text) {
  text = trim(text);
  std::string s(text);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || !std::isfinite(v)) return std::nullopt;
  std::string unit(trim(std::string_view(end)));
  return std::make_pair(v, unit);
}

}  // namespace

std::optional<std::uint64_t> parse_byte_size(std::string_view text) {
  auto parts = split_number_unit(text);
  if (!parts || parts->first < 0) return std::nullopt;
  static const std::pair<const char*, double> kUnits[] = {
      {"", 1},          {"B", 1},
      {"KB", 1e3},      {"MB", 1e6},         {"GB", 1e9},           {"TB", 1e12},
      {"KiB", 1024.0},  {"MiB", 1048576.0},  {"GiB", 1073741824.0}, {"TiB", 1099511627776.0},
  };
  for (const auto& [name, mult] : kUnits) {
    if (parts->second == name) {
      double bytes = parts->first * mult;
      if (bytes > 1.8e19 || bytes != std::floor(bytes)) return std::nullopt;
      return static_cast<std::uint64_t>(bytes);
    }
  }
  return std::nullopt;
}

std::optional<double> parse_duration_seconds(std::string_view text) {
  auto parts = split_number_unit(text);
  if (!parts || parts->first < 0) return std::nullopt;
  static const std::pair<const char*, double> kUnits[] = {
      {"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1},
      {"m", 60},    {"min", 60},  {"h", 3600},  {"d", 86400},
  };
  for (const auto& [name, mult] : kUnits) {
    if (parts->second == name) return parts->first * mult;
  }
  return std::nullopt;
}

JsonReader::JsonReader(const nlohmann::json& node, std::string pointer)
    : node_(node), pointer_(std::move(pointer)) {
  if (!node_.is_object()) fail_here("must be an object, got " + show(node_));
}

std::string JsonReader::pointer_of(std::string_view key) const {
  return pointer_ + "/" + escape_pointer_token(key);
}

bool JsonReader::has(std::string_view key) const {
  return node_.find(std::string(key)) != node_.end();
}

const nlohmann::json* JsonReader::lookup(std::string_view key) {
  seen_.emplace(key);
  auto it = node_.find(std::string(key));
  if (it == node_.end()) return nullptr;
  return &*it;
}

const nlohmann::json* JsonReader::raw(std::string_view key) { return lookup(key); }

std::string JsonReader::show(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

void JsonReader::fail(std::string_view key, const std::string& reason) const {
  throw ConfigError(pointer_of(key), reason);
}

void JsonReader::fail_here(const std::string& reason) const {
  throw ConfigError(pointer_.empty() ? std::string("/") : pointer_, reason);
}

std::string JsonReader::string(std::string_view key, std::string def) {
  const auto* v = lookup(key);
  if (!v) return def;
  if (!v->is_string()) fail(key, "must be a string, got " + show(*v));
  return v->get<std::string>();
}

std::string JsonReader::required_string(std::string_view key) {
  const auto* v = lookup(key);
  if (!v) fail(key, "is required");
  if (!v->is_string()) fail(key, "must be a string, got " + show(*v));
  auto s = v->get<std::string>();
  if (s.empty()) fail(key, "must not be empty");
  return s;
}

std::string JsonReader::one_of(std::string_view key, std::string def,
                               const std::vector<std::string>& allowed) {
  std::string s = string(key, std::move(def));
  if (std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    fail(key, "must be one of " + list + ", got " + show(nlohmann::json(s)));
  }
  return s;
}

bool JsonReader::boolean(std::string_view key, bool def) {
  const auto* v = lookup(key);
  if (!v) return def;
  if (!v->is_boolean()) fail(key, "must be true or false, got " + show(*v));
  return v->get<bool>();
}

void throw_if_invalid(const Result<void>& checked) {
  if (checked) return;
  const Error& e = checked.error();
  throw ConfigError(e.json_pointer,
                    e.message.substr(std::min(e.message.size(), e.json_pointer.size() + 2)));
}

std::string format_bound(double b) {
  std::ostringstream os;
  os.precision(15);
  os << b;
  return os.str();
}

double JsonReader::number(std::string_view key, double def, double min, double max,
                          bool min_exclusive) {
  if (!has(key)) {
    seen_.emplace(key);
    return def;
  }
  return required_number(key, min, max, min_exclusive);
}

double JsonReader::required_number(std::string_view key, double min, double max,
                                   bool min_exclusive) {
  const auto* v = lookup(key);
  if (!v) fail(key, "is required");
  if (!v->is_number()) fail(key, "must be a number, got " + show(*v));
  double d = v->get<double>();
  if (!std::isfinite(d)) fail(key, "must be finite, got " + show(*v));
  if (min_exclusive ? !(d > min) : !(d >= min)) {
    fail(key, std::string("must be ") + (min_exclusive ? "> " : ">= ") + format_bound(min) +
                  ", got " + show(*v));
  }
  if (d > max) fail(key, "must be <= " + format_bound(max) + ", got " + show(*v));
  return d;
}

std::int64_t JsonReader::integer(std::string_view key, std::int64_t def, std::int64_t min,
                                 std::int64_t max) {
  const auto* v = lookup(key);
  if (!v) return def;
  if (!v->is_number_integer()) fail(key, "must be an integer, got " + show(*v));
  std::int64_t i = 0;
  if (v->is_number_unsigned()) {
    auto u = v->get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      fail(key, "must be <= " + std::to_string(max) + ", got " + show(*v));
    }
    i = static_cast<std::int64_t>(u);
  } else {
    i = v->get<std::int64_t>();
  }
  if (i < min) fail(key, "must be >= " + std::to_string(min) + ", got " + show(*v));
  if (i > max) fail(key, "must be <= " + std::to_string(max) + ", got " + show(*v));
  return i;
}

std::uint64_t JsonReader::bytes(std::string_view key, std::uint64_t def, std::uint64_t min,
                                std::uint64_t max) {
  const auto* v = lookup(key);
  if (!v) return def;
  std::uint64_t b = 0;
  if (v->is_number_integer()) {
    if (v->is_number_unsigned()) {
      b = v->get<std::uint64_t>();
    } else {
      auto i = v->get<std::int64_t>();
      if (i < 0) fail(key, "must be >= " + std::to_string(min) + ", got " + show(*v));
      b = static_cast<std::uint64_t>(i);
    }
  } else if (v->is_string()) {
    auto parsed = parse_byte_size(v->get<std::string>());
    if (!parsed) {
      fail(key, "must be a byte size like 1048576 or \"64MiB\", got " + show(*v));
    }
    b = *parsed;
  } else {
    fail(key, "must be a byte size like 1048576 or \"64MiB\", got " + show(*v));
  }
  if (b < min) fail(key, "must be >= " + std::to_string(min) + ", got " + show(*v));
  if (b > max) fail(key, "must be <= " + std::to_string(max) + ", got " + show(*v));
  return b;
}

double JsonReader::seconds(std::string_view key, double def, double min, double max,
                           bool min_exclusive) {
  const auto* v = lookup(key);
  if (!v) return def;
  double s = 0;
  if (v->is_number()) {
    s = v->get<double>();
    if (!std::isfinite(s)) fail(key, "must be finite, got " + show(*v));
  } else if (v->is_string()) {
    auto parsed = parse_duration_seconds(v->get<std::string>());
    if (!parsed) fail(key, "must be a duration like 2.5 (seconds) or \"500ms\", got " + show(*v));
    s = *parsed;
  } else {
    fail(key, "must be a duration like 2.5 (seconds) or \"500ms\", got " + show(*v));
  }
  if (min_exclusive ? !(s > min) : !(s >= min)) {
    fail(key, std::string("must be ") + (min_exclusive ? "> " : ">= ") + format_bound(min) +
                  " s, got " + show(*v));
  }
  if (s > max) fail(key, "must be <= " + format_bound(max) + " s, got " + show(*v));
  return s;
}

std::vector<std::string> JsonReader::string_array(std::string_view key) {
  std::vector<std::string> out;
  const auto* v = lookup(key);
  if (!v) return out;
  if (!v->is_array()) fail(key, "must be an array of strings, got " + show(*v));
  for (std::size_t i = 0; i < v->size(); ++i) {
    const auto& e = (*v)[i];
    if (!e.is_string()) {
      throw ConfigError(pointer_of(key) + "/" + std::to_string(i),
                        "must be a string, got " + show(e));
    }
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::map<std::string, std::string> JsonReader::string_map(std::string_view key) {
  std::map<std::string, std::string> out;
  const auto* v = lookup(key);
  if (!v) return out;
  if (!v->is_object()) fail(key, "must be an object of strings, got " + show(*v));
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it.value().is_string()) {
      throw ConfigError(pointer_of(key) + "/" + escape_pointer_token(it.key()),
                        "must be a string, got " + show(it.value()));
    }
    out.emplace(it.key(), it.value().get<std::string>());
  }
  return out;
}

JsonReader JsonReader::object(std::string_view key) {
  const auto* v = lookup(key);
  return JsonReader(v ? *v : empty_object(), pointer_of(key));
}

std::optional<JsonReader> JsonReader::optional_object(std::string_view key) {
  const auto* v = lookup(key);
  if (!v) return std::nullopt;
  return JsonReader(*v, pointer_of(key));
}

std::vector<JsonReader> JsonReader::objects(std::string_view key) {
  std::vector<JsonReader> out;
  const auto* v = lookup(key);
  if (!v) return out;
  if (!v->is_array()) fail(key, "must be an array, got " + show(*v));
  out.reserve(v->size());
  for (std::size_t i = 0; i < v->size(); ++i) {
    out.emplace_back((*v)[i], pointer_of(key) + "/" + std::to_string(i));
  }
  return out;
}

void JsonReader::finish() const {
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    if (seen_.count(it.key())) continue;
    std::string best;
    std::size_t best_d = 3;  // suggest only close matches
    for (const auto& known : seen_) {
      std::size_t d = edit_distance(it.key(), known);
      if (d < best_d) {
        best_d = d;
        best = known;
      }
    }
    std::string reason = "unknown key";
    if (!best.empty()) reason += " (did you mean \"" + best + "\"?)";
    throw ConfigError(pointer_of(it.key()), reason);
  }
}

}  // namespace fleetpipe::detail
