"""The API's routers: health (probes and metrics), reports (creating them), reports_read (reading them), feedback
(radiologist sign-offs), admin (the automation switch)."""
