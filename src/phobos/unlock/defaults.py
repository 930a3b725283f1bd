"""What ``phobos unlock`` assumes when not told otherwise. Imports nothing: the command
line parser shows these defaults in ``--help`` without loading the client."""

DEFAULT_PORT = 2222  # the -p usually put into DROPBEAR_OPTIONS for dropbear-initramfs
