"""Remote unlock of the NAS at boot: the admin-side client (``phobos unlock HOST``), the
pinning of the initramfs's host key, and the NAS-side files of the setup."""
