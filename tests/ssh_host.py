"""A machine to `ray up` over SSH, on this one: Debian's sshd (openssh-server) on 127.0.0.1:22 in
network, PID and mount namespaces of its own (util-linux `unshare`), logging in one user that the
test creates with a key that the test makes, and removes afterwards.

Why each namespace:

- network: 127.0.0.1 inside is a loopback of its own, so the ports a cluster file fixes (SSH 22,
  Ray 6379, the dashboard 8265, MLflow 5000) are free whatever else runs on this machine. Ray's
  launcher has no SSH port setting (ray-schema.json, `auth`: ssh_user, ssh_private_key,
  ssh_proxy_command), so sshd must listen on 22. The `ray` CLI reaches it through `nsenter --net`.
- PID, with a /proc of its own: `ray stop` (the file's head_start_ray_commands, and `ray down`,
  ray.autoscaler._private.commands.teardown_cluster) kills every process it sees whose name is a
  Ray one (ray.autoscaler._private.constants.RAY_PROCESSES); inside, it sees only this host's.
  Killing the namespace's init (sshd) kills everything in it (pid_namespaces(7)).
- mount: the test's folders are bound at /shared (so the file's `mountpoint -q /shared` finds its
  shared folder and mounts no NFS), /tmp (Ray's /tmp/ray and ray_current_cluster, which `ray stop`
  and `ray status` read) and /var/tmp (MLflow's database), for this namespace only; a checkout or
  Python environment of the test that lies under /tmp or /var/tmp is bound back at its own path.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"  # Debian's openssh-server
START_TIMEOUT_S = 30

# The namespace's init, run as root inside the new namespaces: loopback up (SIOCGIFFLAGS, then
# SIOCSIFFLAGS with IFF_UP: what `ip link set lo up` does, without needing iproute2); the closed
# folders that `exposed` names, opened on the way to what lies under them; the bind mounts; then sshd
# as PID 1 (it reaps the orphans that daemonized Ray and MLflow processes become). /run/sshd is
# sshd's privilege-separation folder, which the package's own service would create.
INIT = """
import fcntl, json, os, socket, struct, subprocess, sys
shared, var_tmp, tmp, stash, exposed, kept, sshd, config = sys.argv[1:]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, struct.pack("16sh", b"lo", 0)))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 1))
mount = lambda *args: subprocess.run(["mount", *args], check=True)
for i, (closed, names) in enumerate(json.loads(exposed).items()):
    for name in names:
        os.mkdir(f"{stash}/{i}-{name}")
        mount("--bind", f"{closed}/{name}", f"{stash}/{i}-{name}")
    mount("-t", "tmpfs", "-o", "mode=755,size=1m", "tmpfs", closed)
    for name in names:
        os.mkdir(f"{closed}/{name}")
        mount("--bind", f"{stash}/{i}-{name}", f"{closed}/{name}")
for path, under in json.loads(kept):  # under /tmp or /var/tmp: bound into what replaces them there
    place = os.path.join({"/tmp": tmp, "/var/tmp": var_tmp}[under], os.path.relpath(path, under))
    os.makedirs(place, exist_ok=True)
    mount("--bind", path, place)
mount("--bind", shared, "/shared")
mount("--rbind", var_tmp, "/var/tmp")  # --rbind: with the kept folders bound into it
mount("--rbind", tmp, "/tmp")
os.makedirs("/run/sshd", exist_ok=True)
os.execv(sshd, [sshd, "-D", "-e", "-f", config])
"""


def kept(paths: list[Path]) -> list[tuple[str, str]]:
    """(path, /tmp or /var/tmp) of each of `paths` that lies under a folder the namespace replaces
    (a checkout and its environment under /tmp): bound back at the same path inside."""
    found = []
    for path in paths:
        real = path.resolve()
        for under in ("/var/tmp", "/tmp"):
            if real.is_relative_to(under):
                found.append((str(real), under))
                break
    return found


def exposed(paths: list[Path]) -> dict[str, list[str]]:
    """{closed folder: [names under it]} that make `paths` reachable for every user inside.

    The Python that runs this test may live where only root can enter (pyenv under /root, mode 700):
    inside, such a folder is covered by an empty tmpfs that holds only the way on (the folder under
    it, bound back), so the SSH user reaches the interpreter and nothing else of root's home, and
    nothing changes outside. A second closed folder further down is refused: widen it by hand.
    """
    found: dict[str, set[str]] = {}
    for path in paths:
        way = [*reversed(path.resolve().parents[:-1]), path.resolve()]
        closed = [i for i, folder in enumerate(way) if not folder.stat().st_mode & 0o001]
        assert len(closed) <= 1 and (not closed or closed[0] < len(way) - 1), (
            f"other users cannot enter {[str(way[i]) for i in closed]} on the way to {path}: the SSH user needs it"
        )
        if closed:
            found.setdefault(str(way[closed[0]]), set()).add(way[closed[0] + 1].name)
    return {folder: sorted(names) for folder, names in found.items()}


SSHD_CONFIG = """\
ListenAddress 127.0.0.1:22
HostKey /tmp/sshd/host_ed25519
PidFile none
AllowUsers {user}
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
"""


class SSHHost:
    """`start()` creates the user, the keys and the namespaces; `stop()` ends them all."""

    def __init__(self, folder: Path, user: str, reachable: list[Path]):
        self.folder = folder
        self.user = user
        self.reachable = reachable  # folders the SSH user must be able to read (the Python environment)
        self.key = folder / "id_ed25519"  # the private key `ray up` logs in with
        self.shared = folder / "shared"  # /shared inside
        self.tmp = folder / "tmp"  # /tmp inside
        self.var_tmp = folder / "var-tmp"  # /var/tmp inside
        self.log = folder / "sshd.log"
        self.home: Path | None = None
        self.unshare: subprocess.Popen | None = None
        self.init_pid: int | None = None
        self.made_shared_mountpoint = False

    def start(self) -> None:
        self.folder.mkdir(parents=True)
        # "*": no password, yet not locked (sshd refuses a locked account when it runs without PAM)
        useradd = ["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", self.user]
        subprocess.run(useradd, check=True, capture_output=True, timeout=30)
        account = pwd.getpwnam(self.user)
        self.home = Path(account.pw_dir)
        owner = (account.pw_uid, account.pw_gid)
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run([*keygen, "-C", self.user, "-f", str(self.key)], check=True, timeout=30)
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(self.key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        for path in (ssh_dir, authorized):
            os.chown(path, *owner)

        for folder in (self.tmp, self.var_tmp):
            folder.mkdir()
            folder.chmod(0o1777)
        self.shared.mkdir()
        os.chown(self.shared, *owner)
        sshd_dir = self.tmp / "sshd"
        sshd_dir.mkdir(mode=0o700)
        subprocess.run([*keygen, "-f", str(sshd_dir / "host_ed25519")], check=True, timeout=30)
        (sshd_dir / "sshd_config").write_text(SSHD_CONFIG.format(user=self.user))
        stash = self.folder / "stash"  # where exposed folders are bound on their way to their place
        stash.mkdir()
        if not os.path.lexists("/shared"):  # a mount point must exist; removed again in stop()
            os.mkdir("/shared")
            self.made_shared_mountpoint = True

        with open(self.log, "w") as log:
            self.unshare = subprocess.Popen(
                ["unshare", "--net", "--pid", "--mount", "--fork", "--mount-proc", "--kill-child",
                 sys.executable, "-c", INIT, str(self.shared), str(self.var_tmp), str(self.tmp), str(stash),
                 json.dumps(exposed(self.reachable)), json.dumps(kept(self.reachable)), SSHD, "/tmp/sshd/sshd_config"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Server listening on 127.0.0.1 port 22" not in self.log.read_text():
            assert self.unshare.poll() is None, f"sshd did not start:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"sshd not listening in {START_TIMEOUT_S} s:\n{self.log.read_text()}"
            time.sleep(0.1)
        children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children").read_text().split()
        self.init_pid = int(children[0])

    def nsenter(self) -> list[str]:
        """The prefix that runs a command of this machine in the host's network namespace."""
        return ["nsenter", f"--target={self.init_pid}", "--net", "--"]

    def processes(self) -> list[tuple[int, str, str]]:
        """(pid on this machine, name, command line) of the live processes inside the host."""
        if self.init_pid is None:
            return []
        try:
            namespace = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        except OSError:
            return []
        found = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                    continue
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if stat[stat.rindex(")") + 2] not in "ZX":
                found.append((int(entry), stat[stat.index("(") + 1 : stat.rindex(")")], cmdline.strip()))
        return found

    def stop(self) -> list[str]:
        """Kill the namespace (its init first, so every process in it dies), remove the user with its
        home and the /shared mount point this made. Returns what is left (nothing, normally)."""
        left = []
        if self.unshare is not None:
            if self.init_pid is not None:
                try:
                    os.kill(self.init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.killpg(self.unshare.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.unshare.wait(timeout=30)
            deadline = time.monotonic() + 30
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
            left += [f"{pid} {name} (in the SSH host's namespace)" for pid, name, _ in self.processes()]
        if self.home is not None:
            userdel = ["userdel", "--remove", self.user]
            removed = subprocess.run(userdel, check=False, capture_output=True, text=True, timeout=30)
            if removed.returncode not in (0, 12):  # 12: the home could not be removed; reported below
                left.append(f"user {self.user}: userdel failed: {removed.stderr.strip()}")
            if self.home.exists():
                shutil.rmtree(self.home, ignore_errors=True)
                left += [f"{self.home} (could not be removed)"] if self.home.exists() else []
        if self.made_shared_mountpoint:
            os.rmdir("/shared")
        return left
