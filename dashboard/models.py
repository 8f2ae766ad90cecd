"""Statistics models arrive with the dashboard; the app exists so its migrations have a home."""
