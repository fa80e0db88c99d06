#!/usr/bin/python3
"""Local copy of a bucket prefix for the SQL test (boto3, an independent client).

    download_bucket.py BUCKET PREFIX DIR    every object under PREFIX/ written to DIR/<key minus PREFIX/>

The server comes from $FLEETPIPE_S3_STATE (tests/s3server/start's state dir), HTTPS with the
server's own CA. Prints the number of objects copied.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "s3server"))
import s3env  # noqa: E402


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    bucket, prefix, out = argv[1], argv[2].rstrip("/") + "/", argv[3]
    client = s3env.boto3_client(s3env.load_env(os.environ["FLEETPIPE_S3_STATE"]))
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            path = os.path.join(out, obj["Key"][len(prefix):])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            client.download_file(bucket, obj["Key"], path)
            n += 1
    sys.stdout.write("%d\n" % n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
