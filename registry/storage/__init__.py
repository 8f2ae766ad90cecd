"""Where bytes live: the blob store interface, the filesystem and S3 stores, named locks."""
