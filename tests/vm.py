"""A throwaway QEMU VM whose /sys/fs/cgroup is cgroup v2 with the memory controller: shim's
tests under cgroup v2 on hosts that are v1 (tests/cgroup2_test.py).

    reason = vm.unavailable()                  # None, or why not (for pytest.skip)
    image = vm.Image.build(directory)          # vmlinux + initramfs from this host's kernel
    result = vm.run(image, ["sh", "-c", "cat /proc/self/cgroup"], cwd=work, timeout=300)
    result.returncode, result.stdout, result.stderr

The guest runs this host's own files: the Debian kernel in /boot (its ELF vmlinux, extracted
from the bzImage and booted directly, PVH: no decompression at boot), an initramfs of
busybox-static and the kernel's virtio/9p/overlay modules, the host's / shared read-only over
9p (with throwaway tmpfs overlays on /etc /var /tmp /root /home /opt /srv /usr, so host paths
resolve and writes there vanish), and *cwd* shared read-write at the same path: the only
place where the guest's writes survive. /sys/fs/cgroup is cgroup2 with every controller
enabled in the root's cgroup.subtree_control; the command runs as root, in the root cgroup,
with *env* (a minimal one by default), no network and no stdin.

Software emulation (TCG): the hosts' /dev/kvm is paravirtual and boots no stock kernel. So
6-15 s per boot and ~30x slower than the host: run small programs, few Python starts, and
several checks per boot. QEMU is killed by its pid when the command ends, on the timeout
(raising subprocess.TimeoutExpired) and on any error. Its guest RAM is charged to the
caller's host cgroup.
"""

import lzma
import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
import zlib

QEMU = "qemu-system-x86_64"
CPU = "max,-erms"       # without ERMS the guest kernel clears pages with rep stosq: ~4x faster under TCG
BUSYBOX = "/bin/busybox"
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
OVERLAID = ("etc", "var", "tmp", "root", "home", "opt", "srv", "usr")
NINEP = "trans=virtio,version=9p2000.L,msize=524288"

# pid 1 of the guest. /ctl (the host's control directory) holds `workdir` and `cmd`, and
# gets `status`; the command's own output goes to /ctl/stdout and /ctl/stderr.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "vm init: $*"; poweroff -f; }
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev || fail mounts
while read -r module; do insmod "$module" || fail "insmod $module"; done < /modules
mount -t 9p -o @NINEP@,cache=mmap ctl /ctl || fail "9p ctl"
mount -t 9p -o @NINEP@,cache=loose,ro root /newroot || fail "9p root"
mount -t tmpfs -o mode=755 overlays /overlays
for d in @OVERLAID@; do
    [ -d "/newroot/$d" ] || continue
    mkdir -p "/overlays/$d/upper" "/overlays/$d/work"
    mount -t overlay -o "lowerdir=/newroot/$d,upperdir=/overlays/$d/upper,workdir=/overlays/$d/work" \
        overlay "/newroot/$d" || fail "overlay /$d"
done
mount -t proc proc /newroot/proc && mount -t sysfs sysfs /newroot/sys || fail "proc, sys"
mount -t devtmpfs devtmpfs /newroot/dev && mkdir -p /newroot/dev/pts /newroot/dev/shm || fail /dev
mount -t devpts devpts /newroot/dev/pts && mount -t tmpfs -o mode=1777 shm /newroot/dev/shm || fail /dev/shm
mount -t tmpfs -o mode=755 run /newroot/run || fail /run
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || fail cgroup2
for c in $(cat /newroot/sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > /newroot/sys/fs/cgroup/cgroup.subtree_control || fail "+$c"
done
mkdir -p /newroot/run/vm && mount --bind /ctl /newroot/run/vm || fail "bind /ctl"
work=$(cat /ctl/workdir)
mkdir -p "/newroot$work" && mount -t 9p -o @NINEP@,cache=mmap work "/newroot$work" || fail "9p work"
chroot /newroot /bin/sh /run/vm/cmd < /dev/null > /ctl/stdout 2> /ctl/stderr
echo $? > /ctl/status
sync
poweroff -f
""".replace("@NINEP@", NINEP).replace("@OVERLAID@", " ".join(OVERLAID))


class Unavailable(Exception):
    """No VM can be run here; the message says why (and which Debian package is missing)."""


class VmError(Exception):
    """The guest did not run the command to its end (boot failed, it crashed)."""


def _is_static(path: str) -> bool:
    """Whether the ELF file at *path* has no program interpreter (so runs without a libc)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))   # PT_INTERP


def _natural(text):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def kernel():
    """(version, path of the bzImage) of the newest kernel in /boot whose modules are installed."""
    found = []
    for name in os.listdir("/boot") if os.path.isdir("/boot") else ():
        if name.startswith("vmlinuz-"):
            version = name[len("vmlinuz-"):]
            if os.path.exists("/lib/modules/%s/modules.dep" % version):
                found.append(version)
    if not found:
        raise Unavailable("no kernel in /boot with its modules in /lib/modules (Debian package linux-image-amd64)")
    version = max(found, key=_natural)
    return version, "/boot/vmlinuz-" + version


def unavailable():
    """None when a VM can run here, else why not."""
    if os.uname().machine != "x86_64":
        return "the VM runner boots x86_64 guests only (this is %s)" % os.uname().machine
    if shutil.which(QEMU) is None:
        return "%s is not installed (Debian package qemu-system-x86)" % QEMU
    if not os.path.exists(BUSYBOX) or not _is_static(BUSYBOX):
        return "%s is missing or not static (Debian package busybox-static)" % BUSYBOX
    if shutil.which("modprobe") is None:
        return "modprobe is not installed (Debian package kmod)"
    try:
        _, path = kernel()
    except Unavailable as e:
        return str(e)
    if not os.access(path, os.R_OK):
        return "%s is not readable (not root)" % path
    return None


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (the method of the kernel's scripts/extract-vmlinux)."""
    for magic, decompress in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(b)),
                              (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b))):
        start = bzimage.find(magic)
        while start >= 0:
            try:
                elf = decompress(bzimage[start:])
            except (lzma.LZMAError, zlib.error, EOFError):
                elf = b""
            if elf[:4] == b"\x7fELF":
                return elf
            start = bzimage.find(magic, start + 1)
    raise Unavailable("no xz- or gzip-compressed ELF kernel found in the bzImage")


def _cpio(entries) -> bytes:
    """An uncompressed newc cpio archive of (name, mode, data, rdev major, rdev minor)."""
    out = []
    for ino, (name, mode, data, major, minor) in enumerate(list(entries) + [("TRAILER!!!", 0, b"", 0, 0)], 1):
        encoded = name.encode() + b"\0"
        out.append(b"070701" + b"".join(b"%08X" % v for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(encoded), 0)))
        out.append(encoded + b"\0" * (-(110 + len(encoded)) % 4))
        out.append(data + b"\0" * (-len(data) % 4))
    return b"".join(out)


class Image:
    """A bootable kernel and initramfs, built from this host's files."""

    def __init__(self, version: str, vmlinux: str, initramfs: str):
        self.version, self.vmlinux, self.initramfs = version, vmlinux, initramfs

    @classmethod
    def build(cls, directory: str) -> "Image":
        """Write vmlinux-VERSION and initramfs-VERSION into *directory* (reused when there)."""
        reason = unavailable()
        if reason:
            raise Unavailable(reason)
        version, bzimage = kernel()
        vmlinux = os.path.join(directory, "vmlinux-" + version)
        initramfs = os.path.join(directory, "initramfs-" + version)
        if not os.path.exists(vmlinux):
            with open(bzimage, "rb") as f:
                elf = extract_vmlinux(f.read())
            _write(vmlinux, elf)
        if not os.path.exists(initramfs):
            _write(initramfs, _cpio(_initramfs_entries(version)))
        return cls(version, vmlinux, initramfs)


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False) as f:
        f.write(data)
    os.replace(f.name, path)


def _initramfs_entries(version):
    modules = []
    for name in MODULES:
        shown = subprocess.run(["modprobe", "-S", version, "--show-depends", name], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, check=False)
        if shown.returncode != 0:
            raise Unavailable("modprobe cannot find module %s of kernel %s: %s" % (name, version, shown.stderr.strip()))
        for line in shown.stdout.splitlines():
            words = line.split()
            if words[:1] == ["insmod"] and words[1] not in modules:     # "builtin NAME": nothing to load
                modules.append(words[1])
    dirs = ["bin", "dev", "proc", "sys", "ctl", "newroot", "overlays", "lib", "lib/modules"]
    entries = [(d, 0o40755, b"", 0, 0) for d in dirs]
    entries.append(("dev/console", 0o20600, b"", 5, 1))
    with open(BUSYBOX, "rb") as f:
        entries.append(("bin/busybox", 0o100755, f.read(), 0, 0))
    entries.append(("init", 0o100755, INIT.encode(), 0, 0))
    listed = []
    for i, path in enumerate(modules):
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".xz"):
            data = lzma.decompress(data)
        name = "lib/modules/%02d-%s" % (i, os.path.basename(path).split(".ko")[0] + ".ko")
        entries.append((name, 0o100644, data, 0, 0))
        listed.append("/" + name)
    entries.append(("modules", 0o100644, ("\n".join(listed) + "\n").encode(), 0, 0))
    return entries


def _tsc_khz():
    """The host's TSC rate for tsc_early_khz: without it the guest's clock once ran ~40x fast."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


DEFAULT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "LANG": "C.UTF-8"}


def run(image: Image, argv, cwd=None, env=None, timeout: float = 300, memory: str = "2G", cpus: int = 2):
    """Run *argv* in a fresh VM, in *cwd* (shared read-write); a CompletedProcess with its output
    and exit status (128+N for a signal). Raises subprocess.TimeoutExpired after *timeout* s
    (QEMU killed), VmError when the guest did not get to the end of the command."""
    cwd = os.path.abspath(cwd or os.getcwd())
    env = DEFAULT_ENV if env is None else env
    argv = [str(a) for a in argv]
    with tempfile.TemporaryDirectory(prefix="shim-vm-") as tmp:
        ctl = os.path.join(tmp, "ctl")
        os.mkdir(ctl)
        with open(os.path.join(ctl, "workdir"), "w") as f:
            f.write(cwd + "\n")
        with open(os.path.join(ctl, "cmd"), "w") as f:
            f.write("cd %s || exit 125\nexec env -i %s %s\n" % (
                shlex.quote(cwd), " ".join(shlex.quote("%s=%s" % kv) for kv in env.items()),
                " ".join(shlex.quote(a) for a in argv)))
        console = os.path.join(tmp, "console.log")
        append = "console=ttyS0 quiet panic=-1 rdinit=/init mitigations=off"
        khz = _tsc_khz()
        if khz:
            append += " tsc_early_khz=%d" % khz
        qemu = [QEMU, "-nodefaults", "-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", CPU,
                "-m", memory, "-smp", str(cpus), "-display", "none", "-net", "none", "-no-reboot",
                "-serial", "file:" + console, "-kernel", image.vmlinux, "-initrd", image.initramfs,
                "-append", append]
        # multidevs=remap: the host's / spans filesystems whose inode numbers collide (the roots
        # of /proc and /sys are both 1), which the guest's 9p cache would take for one directory.
        for tag, path, extra in (("root", "/", ",readonly=on,multidevs=remap"), ("work", cwd, ""), ("ctl", ctl, "")):
            qemu += ["-fsdev", "local,id=%s,path=%s,security_model=none%s" % (tag, path.replace(",", ",,"), extra),
                     "-device", "virtio-9p-pci,fsdev=%s,mount_tag=%s" % (tag, tag)]
        with open(os.path.join(tmp, "qemu.log"), "wb") as log:
            proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise subprocess.TimeoutExpired(argv, timeout, _read(ctl, "stdout"), _read(ctl, "stderr")) from None
        finally:
            if proc.poll() is None:
                proc.kill()                  # by pid: this QEMU, nothing else
                proc.wait()
        status = _read(ctl, "status").strip()
        if not status.isdigit():
            raise VmError("the VM ended without running the command to its end (QEMU exit %s)\n%s%s"
                          % (proc.returncode, _read(tmp, "qemu.log")[-2000:], _read(tmp, "console.log")[-4000:]))
        return subprocess.CompletedProcess(argv, int(status), _read(ctl, "stdout"), _read(ctl, "stderr"))


def _read(directory, name):
    try:
        with open(os.path.join(directory, name), errors="replace") as f:
            return f.read()
    except OSError:
        return ""
