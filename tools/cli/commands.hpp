// Internal: the CLI's subcommands. Each register_* adds a subcommand whose callback runs the
// command and records its exit status with set_exit_code().
#pragma once

namespace CLI {
class App;
}

namespace fleetpipe::cli {

void register_inspect(CLI::App& app);  // inspect.cpp — buffer contents, quotas, wear
void register_replay(CLI::App& app);   // replay.cpp — dry-run triggers over recorded samples
void register_query(CLI::App& app);    // query.cpp — find events in the bucket
void register_status(CLI::App& app);   // status.cpp — fleet health from heartbeats
void register_export(CLI::App& app);   // export.cpp — WebDataset shards (the Python exporter)
void register_campaign(CLI::App& app); // campaign.cpp — keygen, sign, validate campaigns
void register_report(CLI::App& app);   // report.cpp — the HTML fleet report
void register_unpark(CLI::App& app);   // unpark.cpp — return parked records to the queue
void register_campaign_bucket(CLI::App& campaign);  // campaign_publish.cpp — publish, rollout,
                                                    // suspend, resume
void register_campaign_report(CLI::App& campaign);  // campaign_report.cpp — forecast, status

void set_exit_code(int code);
int exit_code();

}  // namespace fleetpipe::cli
