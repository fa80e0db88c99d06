// Internal: the persisted resume state of one multipart upload ("uploader/mpu/<key>").
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fleetpipe/buffer.hpp"

namespace fleetpipe::uploader_internal {

struct MultipartState {
  std::string upload_id;
  std::uint64_t size = 0, part_size = 0;
  std::vector<RecordId> ids;
  std::int64_t created_unix = 0;
  std::map<std::uint32_t, std::string> parts;  // number -> md5 hex
  std::uint32_t part_count() const {
    return static_cast<std::uint32_t>((size + part_size - 1) / part_size);
  }
};

/// JSON text of `m` for the state table (multipart.cpp).
std::string mpu_to_json(const MultipartState& m, const std::string& key);
/// nullopt when `text` is not a readable state (or names part size 0).
std::optional<MultipartState> mpu_from_json(const std::string& text);

}  // namespace fleetpipe::uploader_internal
