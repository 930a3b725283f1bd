"""Borg repositories as phobos knows them: access and Borg steps, lock resources, waiting
out Borg's own locks, operations (init, info, list, key export), restore drills, summaries
and key-export records."""
