#!/usr/bin/python3
"""Writes a generated heartbeat history for bench_fleet (not a pytest file).

    bench_fleet_gen.py BUCKET PREFIX DEVICES FROM_H TO_H END_UNIX_S TEMPLATE.json [THREADS]

For each of DEVICES devices ("gen-0000" ...), one compact heartbeat every 5 minutes for the hours
[FROM_H, TO_H) before END_UNIX_S (hour 0 ends at END_UNIX_S), as real objects under
PREFIX/_heartbeat/device=D/<YYYYMMDDTHHMMSS.mmmZ>-<seq>.json (the device's key form). The
documents are the TEMPLATE (a real Pipeline heartbeat) with device, time, seq, uptime and
counters varied. Writes over plain HTTP with THREADS parallel boto3 clients (default 16).
Prints "objects SECONDS" on stdout.
"""
import concurrent.futures
import copy
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "s3server"))
import s3env  # noqa: E402

INTERVAL_S = 300


def key_time(unix_ms):
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(unix_ms // 1000)) + ".%03dZ" % (unix_ms % 1000)


def main(argv):
    if len(argv) < 8:
        sys.stderr.write(__doc__)
        return 2
    bucket, prefix = argv[1], argv[2]
    devices, from_h, to_h, end_s = int(argv[3]), int(argv[4]), int(argv[5]), int(argv[6])
    with open(argv[7]) as f:
        template = json.load(f)
    threads = int(argv[8]) if len(argv) > 8 else 16
    env = s3env.load_env(os.environ["FLEETPIPE_S3_STATE"])
    local = threading.local()

    def client():
        if not hasattr(local, "c"):
            local.c = s3env.boto3_client(env, https=False)
        return local.c

    per_hour = 3600 // INTERVAL_S
    total_beats = to_h * per_hour  # seq 0 is the oldest of the whole history

    def device_job(d):
        dev = "gen-%04d" % d
        n = 0
        for i in range(from_h * per_hour, to_h * per_hour):
            seq = total_beats - 1 - i  # i counts back from the newest
            t_ms = (end_s - i * INTERVAL_S) * 1000 + d  # devices a millisecond apart
            doc = copy.deepcopy(template)
            doc.update({"device": dev, "t": t_ms, "seq": seq, "up": seq * INTERVAL_S})
            doc["labels"] = {"site": "site-%02d" % (d % 20), "model": "m%d" % (d % 3)}
            doc["tx"] = seq * 1000 + d
            # The device's trailing day as a pipeline reports it (docs/pipeline.md "day").
            day_s = min(seq * INTERVAL_S, 86400)
            doc["day"] = [day_s, day_s // INTERVAL_S * 1000, 0]
            key = "%s/_heartbeat/device=%s/%s-%d.json" % (prefix, dev, key_time(t_ms), seq)
            client().put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, separators=(",", ":")).encode(),
                                ContentType="application/json")
            n += 1
        return n

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        written = sum(pool.map(device_job, range(devices)))
    print(written, "%.1f" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
