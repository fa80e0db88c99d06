#!/usr/bin/python3
"""Small boto3 helper for C++ tests, examples' smoke tests and scripts/demo (not a pytest file).

    s3_bucket_tool.py make BUCKET            create the bucket if missing
    s3_bucket_tool.py list BUCKET [PREFIX]   one "SIZE KEY" line per object
    s3_bucket_tool.py get BUCKET KEY         the object's bytes on stdout
    s3_bucket_tool.py empty BUCKET [PREFIX]  delete every object (and unfinished multipart upload)
                                             under PREFIX; prints how many objects it deleted

The server comes from $FLEETPIPE_S3_STATE (tests/s3server/start's state dir); HTTPS with the
server's own CA only. Exit status 0 on success, 1 with a message on stderr otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "s3server"))
import s3env  # noqa: E402


def main(argv):
    if len(argv) < 3 or argv[1] not in ("make", "list", "get", "empty"):
        sys.stderr.write(__doc__)
        return 2
    state = os.environ.get("FLEETPIPE_S3_STATE")
    if not state:
        sys.stderr.write("s3_bucket_tool: FLEETPIPE_S3_STATE is not set\n")
        return 1
    client = s3env.boto3_client(s3env.load_env(state))
    cmd, bucket = argv[1], argv[2]
    if cmd == "make":
        s3env.ensure_bucket(client, bucket)
    elif cmd == "list":
        prefix = argv[3] if len(argv) > 3 else ""
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                sys.stdout.write("%d %s\n" % (obj["Size"], obj["Key"]))
    elif cmd == "empty":
        prefix = argv[3] if len(argv) > 3 else ""
        deleted = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])  # one by one: s3api's bulk delete is optional
                deleted += 1
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for up in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        sys.stdout.write("%d\n" % deleted)
    else:
        body = client.get_object(Bucket=bucket, Key=argv[3])["Body"].read()
        sys.stdout.buffer.write(body)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Exception as e:  # noqa: BLE001 - report any boto3 failure as a message
        sys.stderr.write("s3_bucket_tool: %s: %s\n" % (type(e).__name__, e))
        sys.exit(1)
