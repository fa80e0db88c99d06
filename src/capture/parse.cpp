// Capture config parsing: the "/streams" and "/triggers" sections of a JSON config.
#include <functional>
#include <memory>
#include <vector>

#include "common/config_parsers.hpp"
#include "common/json_reader.hpp"
#include "fleetpipe/config.hpp"
#include "trigger/parse.hpp"
#include "trigger/validate.hpp"

namespace fleetpipe::detail {

namespace {
StreamConfig parse_stream(JsonReader& r) {
  StreamConfig s;
  s.name = r.required_string("name");
  r.string("description", "");
  s.kind = r.one_of("kind", "numeric", {"numeric", "blob"}) == "numeric" ? StreamKind::numeric
                                                                          : StreamKind::blob;
  s.channels = r.string_array("channels");
  if (s.kind == StreamKind::numeric && s.channels.empty()) {
    r.fail("channels", "is required for a numeric stream (channel names in push order)");
  }
  if (s.kind == StreamKind::blob && !s.channels.empty()) {
    r.fail("channels", "a blob stream has no channels");
  }
  s.ring_seconds = r.seconds("ring_seconds", s.ring_seconds, 0, JsonReader::kInf, true);
  s.ring_bytes = r.bytes("ring_bytes", s.ring_bytes, 64);
  s.ring_max_blobs =
      static_cast<std::uint32_t>(r.integer("ring_max_blobs", s.ring_max_blobs, 1, 1 << 24));
  s.compression =
      r.one_of("compression", "none", {"none", "zstd"}) == "zstd" ? Compression::zstd
                                                                  : Compression::none;
  s.zstd_level = static_cast<int>(r.integer("zstd_level", s.zstd_level, 1, 19));
  s.content_type = r.string("content_type", "");
  r.finish();
  return s;
}
}  // namespace

void parse_capture_sections(JsonReader& root, Config& out) {
  for (auto& s : root.objects("streams")) out.streams.push_back(parse_stream(s));
  for (auto& t : root.objects("triggers")) out.triggers.push_back(parse_trigger_config(t, false));
  // Custom triggers get their implementation from the host after parsing: skip that check here.
  std::vector<TriggerConfig> check = out.triggers;
  struct Placeholder final : CustomTrigger {
    bool evaluate(double, std::uint32_t, const double*, std::size_t, std::size_t) noexcept override {
      return false;
    }
  };
  auto placeholder = std::make_shared<Placeholder>();
  std::function<void(TriggerConfig&)> fill = [&](TriggerConfig& c) {
    if (c.type == TriggerType::custom && !c.custom) c.custom = placeholder;
    for (auto& ch : c.children) fill(ch);
  };
  for (auto& c : check) fill(c);
  throw_if_invalid(validate_capture_config(out.streams, check));
}

}  // namespace fleetpipe::detail
