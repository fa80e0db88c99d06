// Config: the JSON document walked section by section, each checked by its validate_config().
#include "fleetpipe/config.hpp"

#include <fstream>
#include <sstream>

#include "campaign/settings.hpp"
#include "common/config_parsers.hpp"

namespace fleetpipe {
using detail::throw_if_invalid;

Result<Config> parse_config(std::string_view json_text) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text.begin(), json_text.end(), nullptr,
                                /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range (1e400)
    // nlohmann's message names the byte offset, which is what a person needs here.
    return Error(errc::invalid_config, std::string("/: not valid JSON: ") + e.what(), "/");
  }
  try {
    detail::JsonReader root(doc, "");
    Config c;
    c.device_id = root.required_string("device_id");
    throw_if_invalid(validate_device_id(c.device_id));
    c.labels = root.string_map("labels");
    throw_if_invalid(validate_labels(c.labels));
    auto level = parse_log_level(root.one_of(
        "log_level", "warning", {"trace", "debug", "info", "warning", "error", "off"}));
    c.log_level = *level;
    detail::parse_capture_sections(root, c);
    {
      auto section = root.object("buffer");
      c.buffer = detail::parse_buffer_config(section);
      throw_if_invalid(validate_config(c.buffer));
    }
    {
      auto section = root.object("uploader");
      c.uploader = detail::parse_uploader_config(section);
      throw_if_invalid(validate_config(c.uploader));
    }
    {
      auto section = root.object("pipeline");
      c.pipeline = detail::parse_pipeline_options(section);
      throw_if_invalid(validate_config(c.pipeline));
    }
    if (root.has("campaigns")) {
      auto section = root.object("campaigns");
      c.campaigns = detail::parse_campaign_settings(section);
    }
    root.finish();
    return c;
  } catch (const detail::ConfigError& e) {
    return Error(errc::invalid_config, e.what(), e.pointer());
  } catch (const nlohmann::json::exception& e) {
    return Error(errc::invalid_config, std::string("/: ") + e.what(), "/");
  }
}

Result<Config> load_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(errc::io_error, "cannot open config file " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Error(errc::io_error, "cannot read config file " + path);
  return parse_config(ss.str());
}

}  // namespace fleetpipe
