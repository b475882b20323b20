"""Worker process: consumer loop, sweeper and the HTTP side-port (/metrics, /health, /stats)."""
