"""HTTP API process: aiohttp routes, validation, auth (DESIGN.md section 3)."""
