"""Pure parts of the namespace: mountinfo parsing, the inside/outside comparison behind
`phobos ns status`, and which jobs join the namespace."""

from __future__ import annotations

from pathlib import Path

import pytest
from configs import config_from

from phobos import namespace
from phobos.core.locks import Resource
from phobos.tools.mount import containing, mounted_at, parse_mountinfo

OUTSIDE = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
43 27 254:0 /run/phobos/ns /run/phobos/ns rw,relatime - ext4 /dev/vda rw
67 43 0:4 mnt:[4026532177] /run/phobos/ns/mnt rw - nsfs nsfs rw
90 27 0:50 / /with\\040space rw - tmpfs tmpfs rw
"""

INSIDE = """\
122 127 0:21 / /proc rw,relatime - proc proc rw
127 100 254:0 / / rw,relatime - ext4 /dev/vda rw
143 127 254:0 /run/phobos/ns /run/phobos/ns rw,relatime - ext4 /dev/vda rw
168 127 7:3 / /backup rw,relatime - ext4 /dev/loop3 rw
169 143 7:4 / /run/phobos/drives/ext-a rw,relatime - ext4 /dev/loop4 rw
"""


def test_parse_mountinfo() -> None:
    entries = parse_mountinfo(OUTSIDE)
    assert [e.mountpoint for e in entries] == ["/proc", "/", "/run/phobos/ns",
                                              "/run/phobos/ns/mnt", "/with space"]
    ns = mounted_at(entries, Path("/run/phobos/ns/mnt"))
    assert ns is not None and ns.fstype == "nsfs" and ns.root == "mnt:[4026532177]"
    assert mounted_at(entries, "/backup") is None


# A systemd unit's namespace (slave of the host's, shared again in its own peer group)
# and the host's own.
UNIT_VIEW = """\
401 380 254:0 / / ro,relatime shared:210 master:1 - ext4 /dev/vda rw
402 401 254:1 / /srv ro,relatime shared:211 master:30 - ext4 /dev/vdb rw
"""
HOST_VIEW = """\
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 27 254:1 / /srv rw,relatime shared:30 - ext4 /dev/vdb rw
"""


@pytest.mark.parametrize("view, would_propagate", [(UNIT_VIEW, False), (HOST_VIEW, True)])
def test_propagation_of_the_mount_below_the_storage(view: str, would_propagate: bool) -> None:
    entries = parse_mountinfo(view)
    assert containing(entries, Path("/backup")) == entries[0]
    below = containing(entries, Path("/srv/backup"))
    assert below is not None and below.mountpoint == "/srv"
    assert below.reaches_other_namespaces is would_propagate


def test_compare_proves_invisibility() -> None:
    ns = namespace.Namespace(directory=Path("/run/phobos/ns"))
    status = namespace.compare(ns, parse_mountinfo(INSIDE), parse_mountinfo(OUTSIDE))
    assert [e.mountpoint for e in status.hidden] == ["/backup", "/run/phobos/drives/ext-a"]
    assert status.leaked == ()
    # the drive's filesystem mounted anywhere outside would be a leak
    leaky = OUTSIDE + "99 27 7:4 / /mnt/peek rw - ext4 /dev/loop4 rw\n"
    status = namespace.compare(ns, parse_mountinfo(INSIDE), parse_mountinfo(leaky))
    assert [e.mountpoint for e in status.leaked] == ["/run/phobos/drives/ext-a"]


def config(device: str | None) -> object:
    storage = {"device": device} if device else {}
    return config_from({"storage": storage})


@pytest.mark.parametrize(("device", "resources", "inside"), [
    (None, ["drive:ext-a"], True),
    (None, ["repo:main"], False),  # nothing hidden there: stay outside
    (None, ["storage"], False),
    ("UUID=abc", ["repo:main"], True),
    ("UUID=abc", ["holding:luv"], True),
    ("UUID=abc", ["storage"], True),
    ("UUID=abc", ["custom:lamp"], False),
    ("UUID=abc", [], False),
])
def test_which_jobs_join_the_namespace(device: str | None, resources: list[str],
                                       inside: bool) -> None:
    got = namespace.needs_namespace(config(device),  # type: ignore[arg-type]
                                    [Resource(r) for r in resources])
    assert got is inside


def test_namespace_paths() -> None:
    cfg = config(None)
    ns = namespace.of(cfg)  # type: ignore[arg-type]
    assert ns.file == Path("/run/phobos/ns/mnt")
    assert ns.id_file == Path("/run/phobos/ns/id")
    assert ns.lock_file == Path("/run/phobos/ns.lock")
