// UTC time: formatting and parsing of the ISO-8601 and compact forms fleetpipe uses.
#include "common/utc_time.hpp"

#include <cstdio>
#include <ctime>

namespace fleetpipe::detail {

std::string utc_format(std::int64_t ns, const char* fmt) {
  std::time_t t = static_cast<std::time_t>(ns / 1000000000);
  if (ns < 0) t = 0;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, fmt, &tm);
  return buf;
}

std::string utc_compact_ms(std::int64_t ns) {
  char ms[8];
  std::snprintf(ms, sizeof ms, ".%03d", static_cast<int>((ns < 0 ? 0 : ns) / 1000000 % 1000));
  return utc_format(ns, "%Y%m%dT%H%M%S") + ms + "Z";
}

std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

std::optional<double> parse_iso8601(std::string_view s) {
  auto num = [&](std::size_t at, std::size_t n) -> int {
    if (at + n > s.size()) return -1;
    int v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return -1;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      s[13] != ':' || s[16] != ':') {
    return std::nullopt;
  }
  int Y = num(0, 4), M = num(5, 2), D = num(8, 2), h = num(11, 2), mi = num(14, 2), sec = num(17, 2);
  if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 ||
      sec > 60) {
    return std::nullopt;
  }
  std::size_t i = 19;
  double frac = 0;
  if (i < s.size() && s[i] == '.') {
    double scale = 0.1;
    std::size_t digits = 0;
    for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++digits) {
      frac += (s[i] - '0') * scale;
      scale /= 10;
    }
    if (digits == 0) return std::nullopt;
  }
  int offset_min = 0;
  if (i < s.size()) {
    if (s[i] == 'Z' || s[i] == 'z') {
      ++i;
    } else if (s[i] == '+' || s[i] == '-') {
      int sign = s[i] == '-' ? -1 : 1;
      int oh = num(i + 1, 2), om = -1;
      if (i + 3 < s.size() && s[i + 3] == ':') {
        om = num(i + 4, 2);
        i += 6;
      } else {
        om = num(i + 3, 2);
        i += 5;
      }
      if (oh < 0 || oh > 23 || om < 0 || om > 59) return std::nullopt;
      offset_min = sign * (oh * 60 + om);
    } else {
      return std::nullopt;
    }
  }
  if (i != s.size()) return std::nullopt;
  std::int64_t days = days_from_civil(Y, static_cast<unsigned>(M), static_cast<unsigned>(D));
  std::int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_min * 60LL;
  return static_cast<double>(secs) + frac;
}

}  // namespace fleetpipe::detail
