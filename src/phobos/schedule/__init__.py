"""When jobs run: the schedule window and its conflicts, its rendering, overdue detection, and the
built-in daemon (with its drive watcher) for machines without systemd."""
