"""Borg repositories as phobos knows them: access and Borg steps, repositories on a server
over SSH (key, pinning, telling SSH failures), lock resources, waiting out Borg's own
locks, operations (init, info, list, key export), restore drills, summaries and key-export
records."""
