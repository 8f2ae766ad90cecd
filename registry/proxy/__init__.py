"""The pull-through logic: manifests, blobs and listings, fills, the answer memory."""
