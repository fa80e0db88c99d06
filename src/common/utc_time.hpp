// Internal: UTC time — formatting and parsing of the ISO-8601 and compact forms fleetpipe uses.
//
// No locale, no TZ: every function works in UTC on a proleptic Gregorian calendar.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fleetpipe::detail {

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d);

/// strftime(fmt) of the UTC time at `unix_ns` (whole seconds; a negative time reads as 0).
std::string utc_format(std::int64_t unix_ns, const char* fmt);

/// "20260125T010203.123Z": sortable, unambiguous, no ':' (safe in keys); negative reads as 0.
std::string utc_compact_ms(std::int64_t unix_ns);

/// An ISO-8601 / S3 timestamp ("2026-01-25T01:02:03.000Z"; also without fraction, with
/// "+01:00"/"-0130" or no zone, read as UTC) in unix seconds; nullopt when it is not one.
std::optional<double> parse_iso8601(std::string_view s);

}  // namespace fleetpipe::detail
