// fleetpipe/fleetpipe.hpp — the umbrella header: the whole public API.
#pragma once

#include "fleetpipe/version.hpp"
#include "fleetpipe/error.hpp"
#include "fleetpipe/port.hpp"
#include "fleetpipe/metrics.hpp"
#include "fleetpipe/config.hpp"
#include "fleetpipe/trigger.hpp"
#include "fleetpipe/capture.hpp"
#include "fleetpipe/buffer.hpp"
#include "fleetpipe/uploader.hpp"
#include "fleetpipe/pipeline.hpp"
#include "fleetpipe/pipeline_thread.hpp"
