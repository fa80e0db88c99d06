// fleetpipe/asio.hpp — opt-in: run the Uploader on the host's own Boost.Asio io_context.
//
// This is the only public header that includes Boost. Include it only in the host TUs that
// own the io_context; everything else uses fleetpipe/uploader.hpp (Boost-free). fleetpipe is
// built with BOOST_ASIO_SEPARATE_COMPILATION; the host may use Asio header-only or separately
// compiled, but must use the same Boost version (1.74 here).
#pragma once

#include <memory>

#include <boost/asio/io_context.hpp>

#include "fleetpipe/uploader.hpp"

namespace fleetpipe {

/// As Uploader::create, but every handler runs on `ioc`, which the host runs (run(), poll(),
/// run_for() — from one thread, the same one that drives the Buffer). Uploader::poll() and
/// run_for() do nothing for such an uploader. Lifetime: `ioc` must outlive the Uploader; destroy
/// the Uploader from the thread that runs `ioc` (or while it is not running).
Result<std::unique_ptr<Uploader>> create_uploader(boost::asio::io_context& ioc,
                                                  const UploaderConfig& config, Buffer& buffer,
                                                  const Port& port, MetricsRegistry& metrics);

}  // namespace fleetpipe
