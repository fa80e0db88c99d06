// Internal: each component parses its own section of the config document. `parse_config`
// (src/common/config.cpp) walks the top level and calls these; each throws detail::ConfigError and
// calls `finish()` on the readers it opens so unknown keys are reported.
#pragma once

#include "common/json_reader.hpp"
#include "fleetpipe/config.hpp"

namespace fleetpipe::detail {

/// "/buffer" (buffer.cpp).
BufferConfig parse_buffer_config(JsonReader& section);
/// "/uploader" (uploader.cpp).
UploaderConfig parse_uploader_config(JsonReader& section);
/// "/streams" and "/triggers" of the root object, with cross-references checked
/// (a trigger naming an unknown stream is an error at the trigger's pointer) (capture.cpp).
void parse_capture_sections(JsonReader& root, Config& out);
/// "/pipeline" (pipeline.cpp).
PipelineOptions parse_pipeline_options(JsonReader& section);

}  // namespace fleetpipe::detail
