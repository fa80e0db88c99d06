// Buffer: durable LMDB store (implementation in progress; API is final).
#include "fleetpipe/buffer.hpp"

#include "detail/config_parsers.hpp"

namespace fleetpipe {

struct Lease::Impl {
  std::vector<LeasedRecord> records;
};
Lease::Lease() noexcept = default;
Lease::Lease(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Lease::Lease(Lease&&) noexcept = default;
Lease& Lease::operator=(Lease&&) noexcept = default;
Lease::~Lease() = default;
const std::vector<LeasedRecord>& Lease::records() const noexcept {
  static const std::vector<LeasedRecord> empty;
  return impl_ ? impl_->records : empty;
}
std::uint64_t Lease::payload_bytes() const noexcept { return 0; }
Result<std::string_view> Lease::payload(std::size_t) const {
  return Error(errc::unsupported, "not yet implemented");
}
void Lease::release() noexcept {}

struct Buffer::Impl {
  BufferConfig config;
};
Buffer::Buffer(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Buffer::~Buffer() = default;
Result<std::unique_ptr<Buffer>> Buffer::open(const BufferConfig&, const Port&, MetricsRegistry&) {
  return Error(errc::unsupported, "not yet implemented");
}
AppendOutcome Buffer::append(const RecordMeta&, std::string_view) { return {}; }
std::vector<AppendOutcome> Buffer::append_batch(
    const std::vector<std::pair<RecordMeta, std::string_view>>& r) {
  return std::vector<AppendOutcome>(r.size());
}
Result<Lease> Buffer::lease(std::uint64_t, std::size_t) { return Lease(); }
Result<void> Buffer::ack(const std::vector<RecordId>&) { return {}; }
Result<void> Buffer::nack(const std::vector<RecordId>&) { return {}; }
Result<void> Buffer::park(const std::vector<RecordId>&, std::string_view) { return {}; }
Result<std::size_t> Buffer::read_payload(RecordId, std::uint64_t, char*, std::size_t) {
  return std::size_t{0};
}
Result<void> Buffer::put_state(std::string_view, std::string_view) { return {}; }
Result<std::optional<std::string>> Buffer::get_state(std::string_view) {
  return std::optional<std::string>{};
}
Result<void> Buffer::erase_state(std::string_view) { return {}; }
Result<std::vector<std::pair<std::string, std::string>>> Buffer::list_state(std::string_view) {
  return std::vector<std::pair<std::string, std::string>>{};
}
Result<void> Buffer::poll() { return {}; }
Result<void> Buffer::flush() { return {}; }
BufferStats Buffer::stats() const { return {}; }
const BufferConfig& Buffer::config() const noexcept { return impl_->config; }
Result<BufferReport> inspect_buffer(const std::string&) {
  return Error(errc::unsupported, "not yet implemented");
}

}  // namespace fleetpipe

namespace fleetpipe::detail {

BufferConfig parse_buffer_config(JsonReader& r) {
  BufferConfig c;
  c.path = r.string("path", c.path);
  r.finish();
  return c;
}

}  // namespace fleetpipe::detail
