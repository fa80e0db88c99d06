// Internal: the replay machinery of `fleetpipe replay`, also run by `fleetpipe campaign
// forecast` and `publish --max-bytes-per-day` over a campaign's trigger set.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fleetpipe/config.hpp"

namespace fleetpipe::cli {

/// Runs `config`'s streams and triggers over the JSONL samples file (replay.cpp's format) and
/// fills `out` with what `fleetpipe replay --json` prints (plus "trigger_order"). Returns 0, or
/// 2 with `error` set ("FILE:LINE: reason", an unreadable file, a custom trigger).
int replay_config(const Config& config, const std::string& samples_path, std::uint64_t fleet,
                  const std::string& dump_dir, nlohmann::json& out, std::string& error);

}  // namespace fleetpipe::cli
