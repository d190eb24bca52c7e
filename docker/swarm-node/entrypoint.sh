#!/bin/sh
# dockerd inside a node container. Its /var/lib/docker is a volume (a real file system, not
# the outer engine's fuse-overlayfs), so overlay2 works there and is the default; vfs
# (STORAGE_DRIVER=vfs) works anywhere, at a full copy of the image per layer and container.
# The engine listens only on a unix socket in /run/node (a host directory), never on TCP.
set -e
mkdir -p /run/node
rm -f /run/node/docker.sock
exec dockerd --storage-driver="${STORAGE_DRIVER:-overlay2}" \
    -H unix:///run/node/docker.sock -H unix:///var/run/docker.sock "$@"
