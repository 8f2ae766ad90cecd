"""The /v2/ pull API: views, responses, routing."""
