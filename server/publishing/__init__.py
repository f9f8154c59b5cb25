"""Where TrackResults go after a batch: gRPC watchers (WatchHub), Redis Streams, ..."""
