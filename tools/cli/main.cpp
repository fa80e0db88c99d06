// The `fleetpipe` command line: each subcommand lives in its own file and registers itself here.
#include <CLI/CLI.hpp>

#include "cli/commands.hpp"
#include "fleetpipe/version.hpp"

int main(int argc, char** argv) {
  CLI::App app{"fleetpipe — inspect a device buffer, dry-run triggers, query the bucket"};
  app.set_version_flag("--version", fleetpipe::kVersion);
  app.require_subcommand(1);
  fleetpipe::cli::register_inspect(app);
  fleetpipe::cli::register_replay(app);
  fleetpipe::cli::register_query(app);
  fleetpipe::cli::register_status(app);
  fleetpipe::cli::register_unpark(app);
  CLI11_PARSE(app, argc, argv);
  return fleetpipe::cli::exit_code();
}
