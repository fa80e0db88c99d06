// `fleetpipe export`: runs the Python exporter (python3 -m fleetpipe.export) with every argument.
//
// The exporter is Python on purpose: it is built on fleetpipe.Dataset (parallel fetches, cache,
// bad-data skips, lineage) and writes .npy arrays with numpy; a C++ copy of all that would be a
// second implementation to keep in step. This command only finds the package and the
// interpreter: $FLEETPIPE_PYTHONPATH, else <dir of this program>/python (the build tree); the
// interpreter is $FLEETPIPE_PYTHON, else /usr/bin/python3.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cli/commands.hpp"

namespace fleetpipe::cli {
namespace {

std::string program_dir() {
  std::vector<char> buf(4096);
  ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return ".";
  std::string path(buf.data(), static_cast<std::size_t>(n));
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

int run(const std::vector<std::string>& args) {
  const char* env_path = std::getenv("FLEETPIPE_PYTHONPATH");
  std::string package = env_path && *env_path ? env_path : program_dir() + "/python";
  const char* old = std::getenv("PYTHONPATH");
  std::string pythonpath = package + (old && *old ? ":" + std::string(old) : "");
  setenv("PYTHONPATH", pythonpath.c_str(), 1);
  const char* env_python = std::getenv("FLEETPIPE_PYTHON");
  std::string python = env_python && *env_python ? env_python : "/usr/bin/python3";

  std::vector<std::string> argv_s = {python, "-m", "fleetpipe.export"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  execv(python.c_str(), argv.data());
  std::fprintf(stderr, "fleetpipe export: cannot run %s: %s\n", python.c_str(),
               std::strerror(errno));
  return 1;
}

}  // namespace

void register_export(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "export",
      "export matching events as WebDataset tar shards with a lineage file "
      "(runs python3 -m fleetpipe.export)");
  sub->set_help_flag();  // --help goes to the exporter, which knows the options
  sub->prefix_command();
  sub->allow_extras();
  sub->callback([sub] {
    std::vector<std::string> rest = sub->remaining();
    set_exit_code(run(rest));
  });
}

}  // namespace fleetpipe::cli
