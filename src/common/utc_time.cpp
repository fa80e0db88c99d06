// UTC time: formatting and parsing of the ISO-8601, compact (SigV4) and HTTP forms.
#include "common/utc_time.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <utility>

namespace fleetpipe::detail {

namespace {

// Floor division of a count of `unit` per second: (seconds, remainder in [0, unit)).
std::pair<std::int64_t, std::int64_t> floor_split(std::int64_t v, std::int64_t unit) {
  std::int64_t q = v / unit, r = v % unit;
  if (r < 0) {
    --q;
    r += unit;
  }
  return {q, r};
}

std::tm utc_tm(std::int64_t secs) {
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return tm;
}

std::int64_t unix_ms(WallTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

// Digits s[at, at+n) as a number, -1 when any is not a digit or the range is out of s.
int digits(std::string_view s, std::size_t at, std::size_t n) {
  if (at + n > s.size()) return -1;
  int v = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

bool valid_date(int Y, int M, int D) { return Y >= 1970 && M >= 1 && M <= 12 && D >= 1 && D <= 31; }
bool valid_time(int h, int mi, int sec) { return h >= 0 && h <= 23 && mi >= 0 && mi <= 59 && sec >= 0 && sec <= 60; }

WallTime make_time(int Y, int M, int D, int h, int mi, int sec, std::int64_t frac_ns) {
  std::int64_t days = days_from_civil(Y, static_cast<unsigned>(M), static_cast<unsigned>(D));
  std::int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec;
  return WallTime(std::chrono::seconds(secs)) +
         std::chrono::duration_cast<WallTime::duration>(std::chrono::nanoseconds(frac_ns));
}

// ".ddd" at s[i] (at least one digit): the fraction in nanoseconds (digits past the ninth are
// read and dropped); i moves past it. nullopt when malformed.
std::optional<std::int64_t> fraction_ns(std::string_view s, std::size_t& i) {
  if (i >= s.size() || s[i] != '.') return std::int64_t{0};
  std::int64_t ns = 0, scale = 100000000;
  std::size_t n = 0;
  for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, ++n) {
    ns += (s[i] - '0') * scale;
    scale /= 10;
  }
  if (n == 0) return std::nullopt;
  return ns;
}

// A date and time of day as written, checked; the fraction in nanoseconds.
struct Stamp {
  int Y, M, D, h, mi, sec;
  std::int64_t frac_ns;
  WallTime time() const { return make_time(Y, M, D, h, mi, sec, frac_ns); }
};

// Fields at the given offsets of `s` (Y M D h mi sec), then the optional fraction at `i`.
std::optional<Stamp> read_stamp(std::string_view s, const std::size_t (&at)[6], std::size_t i_end, std::size_t& i) {
  Stamp st{digits(s, at[0], 4), digits(s, at[1], 2), digits(s, at[2], 2),
           digits(s, at[3], 2), digits(s, at[4], 2), digits(s, at[5], 2), 0};
  if (!valid_date(st.Y, st.M, st.D) || !valid_time(st.h, st.mi, st.sec)) return std::nullopt;
  i = i_end;
  auto frac = fraction_ns(s, i);
  if (!frac) return std::nullopt;
  st.frac_ns = *frac;
  return st;
}

// "YYYY-MM-DDTHH:MM:SS[.f]" ('T', 't' or ' '); `i` ends past it.
std::optional<Stamp> read_iso(std::string_view s, std::size_t& i) {
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      s[13] != ':' || s[16] != ':') {
    return std::nullopt;
  }
  return read_stamp(s, {0, 5, 8, 11, 14, 17}, 19, i);
}

}  // namespace

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
  std::size_t i = 0;
  auto st = read_iso(s, i);
  if (!st) return std::nullopt;
  int offset_min = 0;
  if (i < s.size()) {
    if (s[i] == 'Z' || s[i] == 'z') {
      ++i;
    } else if (s[i] == '+' || s[i] == '-') {
      int sign = s[i] == '-' ? -1 : 1;
      int oh = digits(s, i + 1, 2), om = -1;
      if (i + 3 < s.size() && s[i + 3] == ':') {
        om = digits(s, i + 4, 2);
        i += 6;
      } else {
        om = digits(s, i + 3, 2);
        i += 5;
      }
      if (oh < 0 || oh > 23 || om < 0 || om > 59) return std::nullopt;
      offset_min = sign * (oh * 60 + om);
    } else {
      return std::nullopt;
    }
  }
  if (i != s.size()) return std::nullopt;
  std::int64_t secs = std::chrono::duration_cast<std::chrono::seconds>(
                         make_time(st->Y, st->M, st->D, st->h, st->mi, st->sec, 0).time_since_epoch())
                         .count() -
                     offset_min * 60LL;
  return static_cast<double>(secs) + static_cast<double>(st->frac_ns) / 1e9;
}

std::string utc_compact(WallTime t) {
  std::tm tm = utc_tm(floor_split(unix_ms(t), 1000).first);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string utc_iso8601_ms(WallTime t) {
  auto [secs, ms] = floor_split(unix_ms(t), 1000);
  std::tm tm = utc_tm(secs);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::string utc_date(WallTime t) {
  std::tm tm = utc_tm(floor_split(unix_ms(t), 1000).first);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
  return buf;
}

std::optional<WallTime> parse_utc_compact(std::string_view s) {
  if (s.size() < 15 || s[8] != 'T') return std::nullopt;
  std::size_t i = 0;
  auto st = read_stamp(s, {0, 4, 6, 9, 11, 13}, 15, i);
  if (!st) return std::nullopt;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) ++i;
  if (i != s.size()) return std::nullopt;
  return st->time();
}

std::optional<WallTime> parse_utc(std::string_view s) {
  if (s.size() == 10) {
    if (s[4] != '-' || s[7] != '-') return std::nullopt;
    int Y = digits(s, 0, 4), M = digits(s, 5, 2), D = digits(s, 8, 2);
    if (!valid_date(Y, M, D)) return std::nullopt;
    return make_time(Y, M, D, 0, 0, 0, 0);
  }
  if (s.size() >= 15 && s[8] == 'T' && s.find('-') == std::string_view::npos) return parse_utc_compact(s);
  // ISO-8601 in UTC only: a zone other than Z / +00:00 is refused, not converted.
  std::size_t i = 0;
  auto st = read_iso(s, i);
  if (!st) return std::nullopt;
  std::string_view zone = s.substr(i);
  if (!(zone.empty() || zone == "Z" || zone == "z" || zone == "+00:00")) return std::nullopt;
  return st->time();
}

std::optional<WallTime> parse_http_date(std::string_view s) {
  std::tm tm{};
  std::string text(s);
  if (!strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S", &tm)) return std::nullopt;
  std::time_t t = timegm(&tm);
  // Bounded: a hostile Date far in the future must not overflow system_clock (ns, ~2262).
  if (t <= 0 || t > 7258118400 /* 2200-01-01 */) return std::nullopt;
  return std::chrono::system_clock::from_time_t(t);
}

}  // namespace fleetpipe::detail
