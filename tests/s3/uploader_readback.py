#!/usr/bin/python3
"""Independent read-back for the uploader tests (boto3, not fleetpipe code).

    uploader_readback.py STATE_DIR mkbucket BUCKET
    uploader_readback.py STATE_DIR get BUCKET KEY OUTFILE   -> JSON {size, etag, content_type, metadata}
    uploader_readback.py STATE_DIR list BUCKET [PREFIX]     -> JSON [{key, size, etag}]
    uploader_readback.py STATE_DIR uploads BUCKET           -> JSON [{key, upload_id}]

Runs with /usr/bin/python3 and the CA of the state dir only (AWS_CA_BUNDLE etc. are ignored).
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
    elif cmd == "get":
        key, out = sys.argv[4], sys.argv[5]
        r = s3.get_object(Bucket=bucket, Key=key)
        body = r["Body"].read()
        with open(out, "wb") as f:
            f.write(body)
        print(json.dumps({"size": len(body), "etag": r["ETag"].strip('"'),
                          "content_type": r.get("ContentType", ""), "metadata": r.get("Metadata", {})}))
    elif cmd == "list":
        prefix = sys.argv[4] if len(sys.argv) > 4 else ""
        keys = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                keys.append({"key": o["Key"], "size": o["Size"], "etag": o["ETag"].strip('"')})
        print(json.dumps(keys))
    elif cmd == "uploads":
        r = s3.list_multipart_uploads(Bucket=bucket)
        print(json.dumps([{"key": u["Key"], "upload_id": u["UploadId"]} for u in r.get("Uploads", [])]))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
