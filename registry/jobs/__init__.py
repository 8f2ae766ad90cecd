"""What runs with nobody waiting: prefetch, popular-tag refresh, garbage collection, pins, tasks."""
