"""Where a Ray started by this process listens: loopback only.

Ray binds its servers (GCS, raylet and object manager, each worker's gRPC server, the dashboard
agent, the runtime-env agent and two Prometheus metrics endpoints that answer without a token)
either to the node's IP address on all interfaces or, when that IP is a loopback address, to
127.0.0.1 only. ``ray.init(_node_ip_address="127.0.0.1")`` does not get there: Ray replaces a
loopback node address by the machine's outward address. What does is the switch Ray uses for its
single-machine mode on macOS and Windows: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
(``ray._private.ray_constants.ENABLE_RAY_CLUSTER``) makes the node IP 127.0.0.1 on Linux too.
Ray reads it when ``ray`` is imported, so :func:`bind_local_ray_to_loopback` must run before
that; this module itself does not import Ray. The variable is inherited by the processes Ray
starts. It only suits a Ray that stays on this machine: such a node cannot join a cluster, and
a driver that joins one (``--address``) must not set it.
"""

from __future__ import annotations

import os
import sys

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def bind_local_ray_to_loopback() -> str | None:
    """Ask for a loopback-only local Ray; returns why that cannot take effect, or None if it will."""
    if os.environ.get(LOOPBACK_ENV, "0") != "0":
        return f"{LOOPBACK_ENV}={os.environ[LOOPBACK_ENV]} is set: Ray's servers listen on all interfaces"
    os.environ[LOOPBACK_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")  # read once, when ray was imported
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", True):
        return "Ray was imported before its servers could be bound to 127.0.0.1: they listen on all interfaces"
    return None
