#include "fleetpipe/uploader.hpp"

#include "detail/config_parsers.hpp"

namespace fleetpipe::detail {

UploaderConfig parse_uploader_config(JsonReader& r) {
  UploaderConfig c;
  c.endpoint = r.string("endpoint", c.endpoint);
  r.finish();
  return c;
}

}  // namespace fleetpipe::detail
