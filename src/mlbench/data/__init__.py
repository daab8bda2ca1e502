"""Real dataset formats, download + checksum, partitioning across ranks, batch loading."""
