"""Getting studies in: folder ingest with quarantine, source strings, de-identification."""
