"""Where files live: this machine's disk, or an object store (`s3://bucket/prefix`)."""
