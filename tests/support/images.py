"""A tiny test image, made without any registry: a static busybox `docker import`ed.

Needs `/bin/busybox` from the Debian package `busybox-static`
(`apt-get install -y busybox-static`; `scripts/setup` installs it).
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from pathlib import Path

from orchestrator.engine.base import ContainerEngine

TEST_IMAGE = "orchestrator-test-busybox:latest"
BUSYBOX_APPLETS = ("sh", "sleep", "echo", "cat", "true", "false", "env", "nc", "httpd", "ls")
_BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def find_static_busybox() -> Path:
    """Path of the host's static busybox.

    Raises:
        FileNotFoundError: busybox-static is not installed (says how to install it).
    """
    for candidate in _BUSYBOX_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "no static busybox found; install it with `apt-get install -y busybox-static`"
    )


def write_rootfs_tarball(busybox: Path, target: Path) -> Path:
    """A minimal root filesystem: /bin/busybox, applet symlinks, /tmp and /etc/passwd."""
    with tarfile.open(target, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        tmp = tarfile.TarInfo("tmp")
        tmp.type = tarfile.DIRTYPE
        tmp.mode = 0o1777
        tar.addfile(tmp)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
        entry = tarfile.TarInfo("etc/passwd")
        entry.size = len(passwd)
        tar.addfile(entry, io.BytesIO(passwd))
    return target


def ensure_test_image(engine: ContainerEngine, tag: str = TEST_IMAGE) -> str:
    """Import the busybox test image unless it is already there; return its tag.

    Raises:
        FileNotFoundError: busybox-static is not installed.
        orchestrator.errors.ImageBuildError: the engine rejected the import.
    """
    if engine.image_exists(tag):
        return tag
    workdir = Path(tempfile.mkdtemp(prefix="orch-test-image-"))
    try:
        tarball = write_rootfs_tarball(find_static_busybox(), workdir / "rootfs.tar")
        engine.import_image(
            tarball, tag=tag, changes=('ENV PATH=/bin', 'CMD ["/bin/sh"]')
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return tag
