// Test helper: a log sink that keeps every line ("component: message"), thread-safe.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "fleetpipe/port.hpp"

namespace fleetpipe::test {

struct LogCapture {
  std::mutex mu;
  std::vector<std::string> lines;
  CallbackLogSink sink;

  explicit LogCapture(LogLevel min_level = LogLevel::trace)
      : sink([this](LogLevel, std::string_view c, std::string_view m) {
          std::lock_guard<std::mutex> g(mu);
          lines.push_back(std::string(c) + ": " + std::string(m));
        }, min_level) {}
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  /// True when some line holds `s`.
  bool contains(const std::string& s) {
    std::lock_guard<std::mutex> g(mu);
    for (const auto& l : lines)
      if (l.find(s) != std::string::npos) return true;
    return false;
  }
  /// Every line, one a line (for INFO).
  std::string all() {
    std::lock_guard<std::mutex> g(mu);
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }
};

}  // namespace fleetpipe::test
