-- The fleet-view queries of docs/fleet-view.md, in DuckDB's dialect, over a local copy of a
-- bucket prefix ({{root}}). Each query is named by the "-- name:" line before it.

-- name: events_per_trigger_per_site
-- Manifests hold one line per delivered object; at-least-once delivery can repeat a record, so
-- records are deduplicated on (key, offset, event_id) first, as `fleetpipe query` does.
WITH lines AS (
  SELECT "key", device, labels, unnest(records) AS r
  FROM read_json('{{root}}/_manifests/*/*/*.jsonl', format = 'newline_delimited',
                 hive_partitioning = true,
                 columns = {"key": 'VARCHAR', stream: 'VARCHAR', labels: 'JSON',
                            records: 'STRUCT(event_id VARCHAR, "offset" BIGINT, size BIGINT,
                                             start_ns BIGINT, end_ns BIGINT, priority INTEGER,
                                             trigger_ids VARCHAR[])[]'})
), events AS (
  SELECT DISTINCT "key", r."offset" AS "offset", r.event_id, device,
         coalesce(json_extract_string(labels, '$.site'), '') AS site, r.trigger_ids
  FROM lines
)
SELECT site, "trigger", count(*) AS events
FROM (SELECT site, unnest(trigger_ids) AS "trigger" FROM events)
GROUP BY site, "trigger"
ORDER BY site, "trigger";

-- name: last_heartbeat_per_device
SELECT device,
       max(time_unix_ns) AS last_time_unix_ns,
       arg_max(backlog.records, time_unix_ns) AS backlog_records,
       arg_max(coalesce(json_extract_string(labels, '$.site'), ''), time_unix_ns) AS site,
       count(*) AS heartbeats
FROM read_json('{{root}}/_heartbeat/*/*.json', format = 'newline_delimited',
               hive_partitioning = true,
               columns = {"time": 'VARCHAR', time_unix_ns: 'BIGINT', labels: 'JSON',
                          backlog: 'STRUCT(records BIGINT, bytes BIGINT)'})
GROUP BY device
ORDER BY device;
