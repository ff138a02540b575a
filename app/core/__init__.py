"""Platform pieces shared by every domain: settings, database, cache, telemetry."""
