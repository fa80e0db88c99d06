#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.hpp"

namespace fleetpipe::cli {

// Placeholder until the owning component lands its implementation.
void register_status(CLI::App& app) {
  auto* cmd = app.add_subcommand("status", "not yet available in this build");
  cmd->callback([] {
    std::fprintf(stderr, "fleetpipe status: not yet available in this build\n");
    set_exit_code(2);
  });
}

}  // namespace fleetpipe::cli
