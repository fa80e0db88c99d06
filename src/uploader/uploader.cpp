// The Uploader facade: create, drive (poll / run_for on its own io_context, or the host's), and
// the host controls, forwarded to the engine (uploader/engine.hpp lists where each part lives).
#include "fleetpipe/uploader.hpp"

#include <boost/asio/io_context.hpp>

#include "uploader/engine.hpp"
#include "fleetpipe/asio.hpp"
#include "fleetpipe/config.hpp"

namespace fleetpipe {

namespace net = boost::asio;

namespace {
constexpr std::uint64_t kMinPart = 5ull << 20;
}  // namespace

struct Uploader::Impl {
  std::unique_ptr<net::io_context> own_ioc;  // null when the host's context is used
  net::io_context* ioc = nullptr;
  std::shared_ptr<uploader_internal::Engine> engine;
  ~Impl() {
    if (engine) engine->shutdown();
    engine.reset();
  }
};

struct UploaderFactory {
  static Result<std::unique_ptr<Uploader>> make(std::unique_ptr<net::io_context> own,
                                                net::io_context& ioc, const UploaderConfig& config,
                                                Buffer& buffer, const Port& port,
                                                MetricsRegistry& metrics) {
    if (config.bucket.empty()) {
      return Error(errc::invalid_config, "/uploader/bucket: must be set", "/uploader/bucket");
    }
    if (config.part_bytes < kMinPart || config.multipart_threshold_bytes < kMinPart) {
      return Error(errc::invalid_config, "/uploader/objects/part_size: must be >= 5 MiB",
                   "/uploader/objects/part_size");
    }
    if (auto v = validate_config(config); !v) return std::move(v).error();
    auto impl = std::make_unique<Uploader::Impl>();
    impl->own_ioc = std::move(own);
    impl->ioc = &ioc;
    impl->engine = std::make_shared<uploader_internal::Engine>(ioc, config, buffer, port, metrics);
    auto r = impl->engine->init();
    if (!r) return std::move(r).error();
    return std::unique_ptr<Uploader>(new Uploader(std::move(impl)));
  }
};

Uploader::Uploader(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Uploader::~Uploader() = default;

Result<std::unique_ptr<Uploader>> Uploader::create(const UploaderConfig& config, Buffer& buffer,
                                                   const Port& port, MetricsRegistry& metrics) {
  auto ioc = std::make_unique<net::io_context>(1);
  auto& ref = *ioc;
  return UploaderFactory::make(std::move(ioc), ref, config, buffer, port, metrics);
}

Result<std::unique_ptr<Uploader>> create_uploader(boost::asio::io_context& ioc,
                                                  const UploaderConfig& config, Buffer& buffer,
                                                  const Port& port, MetricsRegistry& metrics) {
  return UploaderFactory::make(nullptr, ioc, config, buffer, port, metrics);
}

std::size_t Uploader::poll() {
  if (!impl_->own_ioc) return 0;
  if (impl_->own_ioc->stopped()) impl_->own_ioc->restart();
  return impl_->own_ioc->poll();
}

std::size_t Uploader::run_for(std::chrono::nanoseconds d) {
  if (!impl_->own_ioc) return 0;
  if (impl_->own_ioc->stopped()) impl_->own_ioc->restart();
  return impl_->own_ioc->run_for(d);
}

void Uploader::set_rate(double bps, std::uint64_t burst) { impl_->engine->set_rate(bps, burst); }
void Uploader::pause() { impl_->engine->pause(); }
void Uploader::resume() { impl_->engine->resume(); }
void Uploader::flush() { impl_->engine->flush(); }
void Uploader::shutdown() {
  impl_->engine->shutdown();
  if (impl_->own_ioc) impl_->own_ioc->stop();
}
void Uploader::fetch_object(std::string key, std::string if_none_match,
                            std::function<void(Result<FetchReply>)> done) {
  impl_->engine->fetch_object(std::move(key), std::move(if_none_match), std::move(done));
}
Result<void> Uploader::prepare_fetch() { return impl_->engine->prepare_fetch(); }

void Uploader::send_heartbeat(std::string_view device, const std::function<Result<std::string>()>& build,
                              std::function<void(const HeartbeatOutcome&)> done) {
  impl_->engine->send_heartbeat(device, build, std::move(done));
}
bool Uploader::idle() const { return impl_->engine->idle(); }
UploaderStatus Uploader::status() const { return impl_->engine->status(); }

}  // namespace fleetpipe
