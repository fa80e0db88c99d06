#include "fleetpipe/capture.hpp"

#include "detail/config_parsers.hpp"

namespace fleetpipe::detail {

void parse_capture_sections(JsonReader& root, Config& out) {
  for (auto& s : root.objects("streams")) {
    StreamConfig sc;
    sc.name = s.required_string("name");
    s.finish();
    out.streams.push_back(sc);
  }
  for (auto& t : root.objects("triggers")) {
    TriggerConfig tc;
    tc.name = t.required_string("name");
    t.finish();
    out.triggers.push_back(tc);
  }
}

}  // namespace fleetpipe::detail
