"""Track state outside the process: the named-arrays record, the fenced Redis store, embedded redis-server."""
