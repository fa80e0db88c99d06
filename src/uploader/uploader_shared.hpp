// Internal: what the pipeline's heartbeat borrows from the Uploader, so that it goes out under the
// same rate cap (one token bucket for every byte fleetpipe sends), signs with the same clock
// correction (RequestTimeTooSkewed) and stays quiet while uploads are paused.
// All three are for the thread that drives the Uploader's io_context only.
#pragma once

#include "s3/token_bucket.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/uploader.hpp"

namespace fleetpipe::detail {

/// The uploader's token bucket; valid as long as the Uploader.
TokenBucket* uploader_token_bucket(Uploader& u) noexcept;
/// The Port's wall clock corrected by the offset the uploader learned from the server.
WallTime uploader_signing_wall(const Uploader& u);
/// True while uploads are paused: host pause and network state as of now, schedule window as of
/// the uploader's last tick (at most idle_poll_interval ago).
bool uploader_paused(const Uploader& u) noexcept;

}  // namespace fleetpipe::detail
