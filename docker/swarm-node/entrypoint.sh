#!/bin/sh
# dockerd inside a node container. Its /var/lib/docker is a volume (a real file system, not
# the outer engine's fuse-overlayfs), so overlay2 works there and is the default; vfs
# (STORAGE_DRIVER=vfs) works anywhere, at a full copy of the image per layer and container.
# The engine listens only on a unix socket in /run/node (a host directory), never on TCP.
set -e
mkdir -p /run/node
rm -f /run/node/docker.sock
# A node stopped hard (a lost machine, in the node-failure test) and started again must not
# trip over the pid files of its previous engine.
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
exec dockerd --storage-driver="${STORAGE_DRIVER:-overlay2}" \
    -H unix:///run/node/docker.sock -H unix:///var/run/docker.sock "$@"
