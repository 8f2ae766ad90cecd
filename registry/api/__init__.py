"""The /v2/ pull API: the views, how answers go on the wire, and the access policy they ask."""
