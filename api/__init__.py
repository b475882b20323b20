"""HTTP API process: aiohttp routes, validation, auth (docs/design.md section 3)."""
