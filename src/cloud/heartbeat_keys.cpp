// The heartbeat keys of a fleet's window from one flat listing (see heartbeat_keys.hpp).
#include "cloud/heartbeat_keys.hpp"

#include <algorithm>
#include <chrono>
#include <tuple>

#include "common/utc_time.hpp"
#include "s3/bucket_layout.hpp"

namespace fleetpipe::detail {
namespace {

// The window's listing starts this much before the window, so the baseline of a device that
// beats more often than hourly comes with it (a page holds 1,000 keys: 12 more cost nothing).
constexpr std::chrono::hours kMargin{1};

/// A start-after string that sorts before every key of second `t` in either key format
/// ("...T120000.123Z-5.json", "...T120000Z.json"): the compact time without its "Z".
std::string before_second(WallTime t) {
  std::string s = utc_compact(t);
  if (!s.empty() && s.back() == 'Z') s.pop_back();
  return s;
}

/// The literal start of a glob (up to its first wildcard): every matching device begins so.
std::string literal_prefix(std::string_view glob) {
  return std::string(glob.substr(0, std::min(glob.size(), glob.find_first_of("*?[\\"))));
}

bool key_less(const HeartbeatKey& a, const HeartbeatKey& b) {
  return std::tie(a.time, a.seq, a.key) < std::tie(b.time, b.seq, b.key);
}

struct Acc {
  std::string segment;  ///< the device as its keys spell it
  bool matches = false;
  std::vector<HeartbeatKey> keys;
  /// The listing jumped from this key (exclusive) to the window's margin: keys between are
  /// unseen. Empty: the device was listed without a gap from its first key.
  std::string gap_from;
  WallTime gap_from_time{};
};

}  // namespace

Result<std::vector<DeviceKeys>> list_heartbeat_keys(
    BucketReader::Impl& r, std::string_view glob, WallTime from,
    const std::function<bool(std::size_t)>& need_baseline) {
  const BucketLayout layout(r.config.prefix, r.config.key_template);
  const std::string devices_prefix = layout.heartbeats_prefix() + "device=";
  const WallTime margin_start = from - kMargin;
  const std::string margin_name = before_second(margin_start);
  auto add = [&](Acc& acc, const std::string& key) {
    ParsedKey k = layout.parse(key);
    if (k.kind != KeyKind::heartbeat || !k.time) return;
    acc.keys.push_back({*k.time, k.seq.value_or(0), k.seq.has_value(), key});
  };

  std::vector<Acc> devs;
  const std::string list_prefix = devices_prefix + literal_prefix(glob);
  std::string start_after, token;
  for (;;) {
    auto page = r.list_page(list_prefix, start_after, token, false, r.heartbeat_page_keys);
    if (!page) return std::move(page).error();
    for (const auto& o : page->objects) {
      const std::size_t slash = o.key.find('/', devices_prefix.size());
      if (o.key.compare(0, devices_prefix.size(), devices_prefix) != 0 || slash == std::string::npos) continue;
      std::string seg = o.key.substr(devices_prefix.size(), slash - devices_prefix.size());
      if (devs.empty() || devs.back().segment != seg) {
        Acc a;
        a.matches = !seg.empty() && (glob.empty() || glob_match(glob, seg));
        a.segment = std::move(seg);
        devs.push_back(std::move(a));
      }
      if (devs.back().matches) add(devs.back(), o.key);
    }
    if (page->next.empty()) break;
    token.clear();
    start_after.clear();
    const std::string jump = devs.empty() || page->objects.empty() ? std::string()
                             : !devs.back().matches
                                 // Past every key of that device ("device=X/..." < "device=X0").
                                 ? devices_prefix + devs.back().segment + "0"
                                 : devs.back().keys.empty() || devs.back().keys.back().time >= margin_start
                                       ? std::string()  // inside the window: read on
                                       : devices_prefix + devs.back().segment + "/" + margin_name;
    if (jump.empty() || jump <= page->objects.back().key) {
      token = page->next;  // (a jump never goes back)
      continue;
    }
    if (Acc& last = devs.back(); last.matches) {
      // Still before the window: jump to its margin, remembering where the unseen keys begin.
      last.gap_from = last.keys.back().key;
      last.gap_from_time = last.keys.back().time;
    }
    start_after = jump;
  }

  std::vector<DeviceKeys> out;
  for (auto& acc : devs) {
    if (!acc.matches || acc.keys.empty()) continue;
    std::sort(acc.keys.begin(), acc.keys.end(), key_less);
    acc.keys.erase(std::unique(acc.keys.begin(), acc.keys.end(),
                               [](const auto& a, const auto& b) { return a.key == b.key; }),
                   acc.keys.end());
    auto first = std::find_if(acc.keys.begin(), acc.keys.end(),
                              [&](const HeartbeatKey& k) { return k.time >= from; });
    const std::size_t in_window = static_cast<std::size_t>(acc.keys.end() - first);
    // The baseline is the key before `first`, unless the listing skipped keys between it and
    // the margin (then it may be older than the one we want).
    const bool unsure = first != acc.keys.begin() && !acc.gap_from.empty() &&
                        std::prev(first)->time < margin_start;
    if (unsure && need_baseline(in_window)) {
      // Probe back from the margin, 4x further each time, down to the gap's start: the newest
      // key there is the baseline (the gap's start itself when there is none).
      const std::string dev_prefix = devices_prefix + acc.segment + "/";
      const std::string bound = dev_prefix + margin_name;
      std::vector<HeartbeatKey> found;
      for (auto back = kMargin * 4;; back *= 4) {
        const bool last_probe = from - back <= acc.gap_from_time;
        std::string after = last_probe ? acc.gap_from : dev_prefix + before_second(from - back);
        std::string tok;
        for (;;) {
          auto page = r.list_page(dev_prefix, tok.empty() ? after : std::string(), tok, false,
                                 r.heartbeat_page_keys);
          if (!page) return std::move(page).error();
          bool reached = false;
          for (const auto& o : page->objects) {
            if (o.key >= bound) {
              reached = true;
              break;
            }
            Acc probe;
            add(probe, o.key);
            if (!probe.keys.empty()) found.push_back(std::move(probe.keys.front()));
          }
          if (reached || page->next.empty()) break;
          tok = page->next;
        }
        if (!found.empty() || last_probe) break;
      }
      if (!found.empty()) {
        acc.keys.push_back(std::move(*std::max_element(found.begin(), found.end(), key_less)));
        std::sort(acc.keys.begin(), acc.keys.end(), key_less);
        first = std::find_if(acc.keys.begin(), acc.keys.end(),
                             [&](const HeartbeatKey& k) { return k.time >= from; });
      }
    }
    DeviceKeys d;
    d.device = acc.segment;
    auto begin = first;
    if (begin != acc.keys.begin() && need_baseline(in_window)) --begin;
    d.first_in_window = static_cast<std::size_t>(first - begin);
    d.keys.assign(std::make_move_iterator(begin), std::make_move_iterator(acc.keys.end()));
    if (d.keys.empty()) continue;
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace fleetpipe::detail
