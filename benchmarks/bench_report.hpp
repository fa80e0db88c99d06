// Writes bench-results/NAME.json in the project's format:
//   {"bench": NAME, "git": SHA, "figures": [{"id", "value", "unit", "baseline", "goal", "pass"}]}
// Every timing figure is a ratio against a baseline measured in the same run.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fleetpipe::bench {

struct Figure {
  std::string id;
  double value = 0;
  std::string unit;      ///< "ratio", "ns", "MB/s", ...
  std::string baseline;  ///< what it is compared with, in words, with the baseline's own figure
  std::string goal;      ///< ">= 0.7", "<= 20", "== 0", or "" (reported only)
  bool pass = true;
};

/// Evaluates "<= X", ">= X", "== X", "< X", "> X"; an empty goal passes.
inline bool meets(double v, const std::string& goal) {
  if (goal.empty()) return true;
  std::string op = goal.substr(0, goal.find(' '));
  double x = std::atof(goal.substr(goal.find(' ') + 1).c_str());
  if (op == "<=") return v <= x;
  if (op == ">=") return v >= x;
  if (op == "==") return v == x;
  if (op == "<") return v < x;
  if (op == ">") return v > x;
  return false;
}

class Report {
 public:
  explicit Report(std::string bench) : bench_(std::move(bench)) {}

  void add(std::string id, double value, std::string unit, std::string baseline,
           std::string goal = "") {
    Figure f{std::move(id), value, std::move(unit), std::move(baseline), std::move(goal), true};
    f.pass = meets(f.value, f.goal);
    std::printf("%-28s %14.4f %-8s goal %-8s %s   (%s)\n", f.id.c_str(), f.value, f.unit.c_str(),
                f.goal.empty() ? "-" : f.goal.c_str(), f.pass ? "PASS" : "FAIL",
                f.baseline.c_str());
    std::fflush(stdout);
    figures_.push_back(std::move(f));
  }

  /// Writes $FLEETPIPE_BENCH_OUT (a directory, default "bench-results") / NAME.json.
  /// The git SHA comes from $FLEETPIPE_GIT_SHA (scripts/bench sets it).
  bool write() const {
    const char* dir = std::getenv("FLEETPIPE_BENCH_OUT");
    const char* sha = std::getenv("FLEETPIPE_GIT_SHA");
    std::string path = std::string(dir ? dir : "bench-results") + "/" + bench_ + ".json";
    nlohmann::json j;
    j["bench"] = bench_;
    j["git"] = sha ? sha : "unknown";
    j["figures"] = nlohmann::json::array();
    for (const auto& f : figures_) {
      j["figures"].push_back({{"id", f.id}, {"value", f.value}, {"unit", f.unit},
                              {"baseline", f.baseline}, {"goal", f.goal}, {"pass", f.pass}});
    }
    std::ofstream out(path);
    out << j.dump(2) << "\n";
    return static_cast<bool>(out);
  }

 private:
  std::string bench_;
  std::vector<Figure> figures_;
};

}  // namespace fleetpipe::bench
