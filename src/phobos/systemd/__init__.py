"""systemd units for a config: unit names and escaping, the sandbox each unit gets, pure
rendering, and install/uninstall with a manifest."""
