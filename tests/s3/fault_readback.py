#!/usr/bin/python3
"""Independent read-back for the fault matrix and crash tests (boto3, not fleetpipe code).

    fault_readback.py STATE_DIR mkbucket BUCKET
    fault_readback.py STATE_DIR dump BUCKET PREFIX OUTDIR
        -> JSON {"objects": [{"key", "size", "file"}], "uploads": N}; every object under PREFIX
           is written to OUTDIR/<n>; "uploads" counts multipart uploads still open under PREFIX.
    fault_readback.py STATE_DIR uploads BUCKET PREFIX
        -> JSON [{"key", "upload_id"}]: the multipart uploads open under PREFIX.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "s3server"))
import s3env  # noqa: E402


def main():
    state, cmd, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
    env = s3env.load_env(state)
    s3 = s3env.boto3_client(env, https=True)
    if cmd == "mkbucket":
        s3env.ensure_bucket(s3, bucket)
        print(json.dumps({"bucket": bucket}))
        return
    if cmd == "uploads":
        r = s3.list_multipart_uploads(Bucket=bucket, Prefix=sys.argv[4])
        print(json.dumps([{"key": u["Key"], "upload_id": u["UploadId"]} for u in r.get("Uploads", [])]))
        return
    prefix, out = sys.argv[4], sys.argv[5]
    os.makedirs(out, exist_ok=True)
    objs = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            f = os.path.join(out, str(len(objs)))
            with open(f, "wb") as fh:
                fh.write(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
            objs.append({"key": o["Key"], "size": o["Size"], "file": f})
    ups = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    print(json.dumps({"objects": objs, "uploads": len(ups)}))


if __name__ == "__main__":
    main()
