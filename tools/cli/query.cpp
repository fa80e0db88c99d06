// `fleetpipe query`: find events in the bucket by stream, trigger, device glob and time range,
// print them (text or JSON lines), optionally download and decode them.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/bucket_options.hpp"
#include "cli/bucket_reader.hpp"
#include "cli/commands.hpp"
#include "capture/event_format.hpp"
#include "fleetpipe/query.hpp"

namespace fleetpipe::cli {
namespace {

struct QueryOptions {
  BucketOptions bucket;
  std::vector<std::string> streams, triggers, labels;
  std::string campaign;
  std::string device, since, until, download_dir;
  int min_priority = 0;
  std::size_t limit = 0;
  bool json = false, decode = false;
};

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::string time_of(std::int64_t ns) {
  return format_query_time(WallTime(std::chrono::duration_cast<WallTime::duration>(
      std::chrono::nanoseconds(ns))));
}

nlohmann::json to_json(const EventEntry& e) {
  return {{"object_key", e.object_key}, {"offset", e.offset}, {"length", e.length},
          {"stream", e.stream}, {"device", e.device}, {"date", e.date},
          {"event_id", e.event_id}, {"trigger_ids", e.trigger_ids}, {"priority", e.priority},
          {"start_ns", e.start_ns}, {"end_ns", e.end_ns}, {"start_time", time_of(e.start_ns)},
          {"end_time", time_of(e.end_ns)}, {"record_count", e.record_count},
          {"content_type", e.content_type}, {"manifest_key", e.manifest_key},
          {"metadata", e.metadata}, {"campaigns", event_campaigns(e)}};
}

std::string safe_name(std::string s) {
  for (auto& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
  return s;
}

int run(const QueryOptions& o) {
  UploaderConfig cfg;
  if (!o.bucket.resolve(cfg)) return 2;
  EventQuery q;
  q.streams = o.streams;
  q.triggers = o.triggers;
  q.device_glob = o.device;
  q.min_priority = o.min_priority;
  q.limit = o.limit;
  q.campaign = o.campaign;
  if (!parse_time_flag("query", o.since, q.since) || !parse_time_flag("query", o.until, q.until)) return 2;
  auto reader = open_reader("query", cfg);
  if (!reader) return 1;
  LabelSelector selector;
  for (const auto& l : o.labels) {
    auto kv = parse_label_selector(l);
    if (!kv) {
      std::fprintf(stderr, "fleetpipe query: %s\n", kv.error().message.c_str());
      return 2;
    }
    selector[kv->first] = kv->second;
  }
  auto events = query_labeled(**reader, q, selector);
  if (!events) {
    std::fprintf(stderr, "fleetpipe query: %s\n", events.error().message.c_str());
    return 1;
  }
  if (!o.download_dir.empty()) ::mkdir(o.download_dir.c_str(), 0777);
  int rc = 0;
  for (const auto& e : *events) {
    if (o.json) {
      std::printf("%s\n", to_json(e).dump().c_str());
    } else {
      std::printf("%s  %-12s %-10s %-24s p%d  %s  %s", time_of(e.start_ns).c_str(),
                  e.device.c_str(), e.stream.c_str(), join(e.trigger_ids, ",").c_str(),
                  e.priority, e.event_id.empty() ? "-" : e.event_id.c_str(), e.object_key.c_str());
      if (e.length > 0) std::printf("[%llu+%llu]", static_cast<unsigned long long>(e.offset),
                                    static_cast<unsigned long long>(e.length));
      if (auto c = event_campaigns(e); !c.empty()) std::printf("  %s", join(c, ",").c_str());
      std::printf("\n");
    }
    if (o.download_dir.empty() && !o.decode) continue;
    auto bytes = (*reader)->download(e);
    if (!bytes) {
      std::fprintf(stderr, "fleetpipe query: %s\n", bytes.error().message.c_str());
      rc = 1;
      continue;
    }
    if (!o.download_dir.empty()) {
      std::string base = e.event_id.empty()
                             ? e.object_key.substr(e.object_key.rfind('/') + 1)
                             : e.event_id + ".fpev";
      std::string path = o.download_dir + "/" + safe_name(e.device) + "-" + safe_name(base);
      std::ofstream out(path, std::ios::binary);
      out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
      if (!out) {
        std::fprintf(stderr, "fleetpipe query: cannot write %s\n", path.c_str());
        rc = 1;
      } else {
        std::fprintf(stderr, "  -> %s (%zu bytes)\n", path.c_str(), bytes->size());
      }
    }
    if (o.decode) {
      auto decoded = detail::decode_events(*bytes);
      if (!decoded) {
        std::fprintf(stderr, "fleetpipe query: %s: %s\n", e.object_key.c_str(),
                     decoded.error().message.c_str());
        rc = 1;
        continue;
      }
      for (const auto& ev : *decoded) {
        std::printf("    event %s triggers=%s priority=%d bytes=%zu\n", ev.event_id.c_str(),
                    join(ev.triggers, ",").c_str(), ev.priority, ev.encoded_size);
        for (const auto& s : ev.sections) {
          std::printf("      %-10s %s count=%llu%s%s\n", s.stream.c_str(),
                      s.kind == StreamKind::numeric ? "numeric" : "blob",
                      static_cast<unsigned long long>(s.count),
                      s.channels.empty() ? "" : " channels=", join(s.channels, ",").c_str());
        }
      }
    }
  }
  if (!o.json) std::fprintf(stderr, "%zu event(s)\n", events->size());
  return rc;
}

}  // namespace

void register_query(CLI::App& app) {
  auto opts = std::make_shared<QueryOptions>();
  auto* cmd = app.add_subcommand(
      "query", "find events in the bucket (manifests + object metadata), optionally download");
  opts->bucket.add_to(cmd);
  cmd->add_option("--stream", opts->streams, "stream name (repeatable: any of)");
  cmd->add_option("--trigger", opts->triggers, "trigger id (repeatable: any of)");
  cmd->add_option("--device", opts->device, "device glob, e.g. 'cart-0*'");
  cmd->add_option("--label", opts->labels, "KEY=GLOB, e.g. site=store-01* (repeatable: all of)");
  cmd->add_option("--campaign", opts->campaign,
                  "ID or ID@VERSION: events captured under that campaign (docs/campaigns.md)");
  cmd->add_option("--since", opts->since, "events ending at/after (2026-11-01[T10:00:00Z])");
  cmd->add_option("--until", opts->until, "events starting before");
  cmd->add_option("--min-priority", opts->min_priority, "0..7")->check(CLI::Range(0, 7));
  cmd->add_option("--limit", opts->limit, "at most N events (oldest first)");
  cmd->add_flag("--json", opts->json, "one JSON object per line");
  cmd->add_option("--download", opts->download_dir, "write each event's bytes into DIR");
  cmd->add_flag("--decode", opts->decode, "download and print each event's decoded index");
  cmd->callback([opts] { set_exit_code(run(*opts)); });
}

}  // namespace fleetpipe::cli
