// Internal: how the CLI prints sizes for people.
#pragma once

#include <string>

namespace fleetpipe::cli {

// "512 B", "1.5 KiB", "3.2 GiB": binary units, `decimals` digits after the point above bytes.
std::string human_bytes(double bytes, int decimals = 1);

}  // namespace fleetpipe::cli
