#!/usr/bin/python3
"""Independent read-back for the uploader, fault and crash tests (boto3, not fleetpipe code).

    uploader_readback.py STATE_DIR mkbucket BUCKET
    uploader_readback.py STATE_DIR get BUCKET KEY OUTFILE   -> JSON {size, etag, content_type, metadata}
    uploader_readback.py STATE_DIR list BUCKET [PREFIX]     -> JSON [{key, size, etag}]
    uploader_readback.py STATE_DIR uploads BUCKET [PREFIX]  -> JSON [{key, upload_id, initiated}]
    uploader_readback.py STATE_DIR mkorphans BUCKET KEY...  -> JSON [{key, upload_id}]
        starts a multipart upload per KEY and stores part 1 (1 KiB), never completes it: what a
        device that crashed (or lost its state) mid-upload leaves behind.
    uploader_readback.py STATE_DIR dump BUCKET PREFIX OUTDIR
        -> JSON {"objects": [{key, size, file}], "uploads": N}; every object under PREFIX is
           written to OUTDIR/<n>; "uploads" counts multipart uploads still open under PREFIX.

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
        prefix = sys.argv[4] if len(sys.argv) > 4 else ""
        r = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        print(json.dumps([{"key": u["Key"], "upload_id": u["UploadId"], "initiated": u["Initiated"].isoformat()}
                          for u in r.get("Uploads", [])]))
    elif cmd == "mkorphans":
        out = []
        for key in sys.argv[4:]:
            uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"o" * 1024)
            out.append({"key": key, "upload_id": uid})
        print(json.dumps(out))
    elif cmd == "dump":
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
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
