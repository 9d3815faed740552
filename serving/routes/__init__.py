"""The API's routers: health (probes and metrics), reports (creating them), reports_read (reading them)."""
