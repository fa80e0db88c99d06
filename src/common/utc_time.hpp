// Internal: UTC time — formatting and parsing of the ISO-8601, compact (SigV4) and HTTP forms.
//
// No locale, no TZ: every function works in UTC on a proleptic Gregorian calendar. Formatting
// floors to the second (or millisecond), also before 1970, unless a function says otherwise.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fleetpipe/port.hpp"

namespace fleetpipe::detail {

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d);

// ---- formatting ---------------------------------------------------------------------------

/// strftime(fmt) of the UTC time at `unix_ns` (whole seconds; a negative time reads as 0).
std::string utc_format(std::int64_t unix_ns, const char* fmt);
/// "20260125T010203.123Z": sortable, unambiguous, no ':' (safe in keys); negative reads as 0.
std::string utc_compact_ms(std::int64_t unix_ns);
/// "20261125T144700Z": SigV4's x-amz-date, heartbeat key names.
std::string utc_compact(WallTime t);
/// "2026-11-25T14:47:00.123Z".
std::string utc_iso8601_ms(WallTime t);
/// "2026-11-25".
std::string utc_date(WallTime t);

// ---- parsing (nullopt when `s` is not of the form) ----------------------------------------

/// An ISO-8601 / S3 timestamp ("2026-01-25T01:02:03.000Z"; also without fraction, with
/// "+01:00"/"-0130" or no zone, read as UTC) in unix seconds.
std::optional<double> parse_iso8601(std::string_view s);
/// A UTC time as people and fleetpipe write it: ISO-8601 ('T' or ' ', optional fraction, zone
/// "Z", "+00:00" or none), compact "20261101T102030[.fff][Z]", or a date "2026-11-01".
std::optional<WallTime> parse_utc(std::string_view s);
/// "20261101T102030Z" (optionally with a fraction, optionally without the Z).
std::optional<WallTime> parse_utc_compact(std::string_view s);
/// An HTTP Date header ("Sun, 06 Nov 1994 08:49:37 GMT"); bounded to 1970..2200 so a hostile
/// value cannot overflow system_clock.
std::optional<WallTime> parse_http_date(std::string_view s);

}  // namespace fleetpipe::detail
