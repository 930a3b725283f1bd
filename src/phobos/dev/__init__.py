"""For people trying phobos and for its tests: the lab of "remote hosts" (sshd in network
namespaces) and ``phobos demo``."""
