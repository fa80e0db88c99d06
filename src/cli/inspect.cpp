#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.hpp"

namespace fleetpipe::cli {

// Placeholder until the owning component lands its implementation.
void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "not yet available in this build");
  cmd->callback([] {
    std::fprintf(stderr, "fleetpipe inspect: not yet available in this build\n");
    set_exit_code(2);
  });
}

}  // namespace fleetpipe::cli
