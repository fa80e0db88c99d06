#include "detail/config_parsers.hpp"

namespace fleetpipe::detail {

PipelineOptions parse_pipeline_options(JsonReader& r) {
  PipelineOptions o;
  o.heartbeat_interval_s = r.seconds("heartbeat_interval", o.heartbeat_interval_s);
  o.poll_budget_s = r.seconds("poll_budget", o.poll_budget_s, 0, 10, /*min_exclusive=*/true);
  r.finish();
  return o;
}

}  // namespace fleetpipe::detail
