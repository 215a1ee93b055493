"""Load tests against any V2 server: open-loop arrivals, latency from the scheduled send time."""
