"""Track state outside the process: binary token codec, Redis store, embedded redis-server."""
