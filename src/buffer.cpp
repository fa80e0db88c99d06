#include "fleetpipe/buffer.hpp"

#include "detail/config_parsers.hpp"

namespace fleetpipe::detail {

BufferConfig parse_buffer_config(JsonReader& r) {
  BufferConfig c;
  c.path = r.string("path", c.path);
  r.finish();
  return c;
}

}  // namespace fleetpipe::detail
