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
-- Heartbeats are fleetpipe.heartbeat/2 (time "t" in unix ms, backlog [records, bytes, leased,
-- parked]) or, from older devices, /1 (time_unix_ns, backlog {"records", "bytes"}). Two
-- heartbeats can share a millisecond; their "seq" orders them (as their keys do).
WITH beats AS (
  SELECT device, labels,
         coalesce(time_unix_ns, t * 1000000) AS time_unix_ns,
         CAST(coalesce(time_unix_ns, t * 1000000) AS HUGEINT) * 1000000000 + coalesce(seq, 0) AS ord,
         coalesce(CAST(json_extract(backlog, '$.records') AS BIGINT),
                  CAST(json_extract(backlog, '$[0]') AS BIGINT)) AS backlog_records
  FROM read_json('{{root}}/_heartbeat/*/*.json', format = 'newline_delimited',
                 hive_partitioning = true,
                 columns = {schema: 'VARCHAR', t: 'BIGINT', time_unix_ns: 'BIGINT', seq: 'BIGINT',
                            labels: 'JSON', backlog: 'JSON'})
)
SELECT device,
       max(time_unix_ns) AS last_time_unix_ns,
       arg_max(backlog_records, ord) AS backlog_records,
       arg_max(coalesce(json_extract_string(labels, '$.site'), ''), ord) AS site,
       count(*) AS heartbeats
FROM beats
GROUP BY device
ORDER BY device;
