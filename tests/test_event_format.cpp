#include "capture/event_format.hpp"

#include <catch2/catch.hpp>

#include <cstring>

#include <nlohmann/json.hpp>

using namespace fleetpipe;
using namespace fleetpipe::detail;

namespace {

struct Fixture {
  StreamConfig imu, cam;
  std::string rows, blobs;
  Fixture() {
    imu.name = "imu";
    imu.channels = {"a", "b"};
    cam.name = "cam";
    cam.kind = StreamKind::blob;
    cam.content_type = "image/jpeg";
    for (int i = 0; i < 3; ++i) {
      double r[3] = {i * 0.5, double(i), -double(i)};
      rows.append(reinterpret_cast<const char*>(r), sizeof r);
    }
    for (int i = 0; i < 2; ++i) {
      double t = i;
      std::uint64_t n = 5 + i;
      char h[16];
      std::memcpy(h, &t, 8);
      std::memcpy(h + 8, &n, 8);
      blobs.append(h, 16);
      blobs.append(std::string(n, char('p' + i)));
    }
  }
  std::string encode(const std::string& id, bool zstd = false) {
    imu.compression = zstd ? Compression::zstd : Compression::none;
    EventIn ev;
    ev.event_id = id;
    ev.device = "dev";
    ev.triggers = {"t1", "t2"};
    ev.priority = 5;
    ev.t_start = 0;
    ev.t_end = 1;
    ev.closed = "time";
    std::vector<SectionIn> secs = {{&imu, rows, 3, 0, 1}, {&cam, blobs, 2, 0, 1}};
    std::string out, scratch;
    REQUIRE(encode_event(ev, secs, out, scratch).ok());
    return out;
  }
};

}  // namespace

TEST_CASE("event format: header layout and index", "[event_format]") {
  Fixture f;
  auto p = f.encode("e1");
  REQUIRE(p.size() > kEventHeaderSize);
  CHECK(p.substr(0, 4) == "FPEV");
  std::uint16_t version, hsize;
  std::uint32_t ilen;
  std::uint64_t dlen;
  std::memcpy(&version, p.data() + 4, 2);
  std::memcpy(&hsize, p.data() + 6, 2);
  std::memcpy(&ilen, p.data() + 8, 4);
  std::memcpy(&dlen, p.data() + 16, 8);
  CHECK(version == 1);
  CHECK(hsize == 24);
  CHECK(p.size() == 24 + ilen + dlen);
  auto idx = nlohmann::json::parse(p.substr(24, ilen));
  CHECK(idx["format"] == "fleetpipe.event");
  CHECK(idx["sections"][0]["encoding"] == "f64le-rows");
  CHECK(idx["sections"][1]["encoding"] == "blob-records");
  CHECK(idx["sections"][1]["offset"] == f.rows.size());
}

TEST_CASE("event format: concatenated events decode one by one", "[event_format]") {
  Fixture f;
  std::string all = f.encode("e1") + f.encode("e2", true) + f.encode("e3");
  auto evs = decode_events(all);
  REQUIRE(evs.ok());
  REQUIRE(evs->size() == 3);
  CHECK((*evs)[1].event_id == "e2");
  const auto& e = (*evs)[1];
  CHECK(e.triggers == std::vector<std::string>{"t1", "t2"});
  CHECK(e.priority == 5);
  REQUIRE(e.sections.size() == 2);
  CHECK(e.sections[0].rows == std::vector<double>{0, 0, 0, 0.5, 1, -1, 1.0, 2, -2});
  REQUIRE(e.sections[1].blobs.size() == 2);
  CHECK(e.sections[1].blobs[1] == std::make_pair(1.0, std::string("qqqqqq")));
}

TEST_CASE("event format: corrupt input is a decode_error with the offset", "[event_format]") {
  Fixture f;
  std::string one = f.encode("e1");
  auto r = decode_events(one + one.substr(0, 30));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().is(errc::decode_error));
  CHECK(r.error().message == "event at offset " + std::to_string(one.size()) + ": truncated event");
  std::string bad = one;
  bad[0] = 'X';
  CHECK(decode_events(bad).error().message == "event at offset 0: bad magic");
  CHECK(decode_events(std::string_view()).ok());
}
