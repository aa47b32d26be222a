"""Plugin isolation: what a local plugin process (and a dependency install) may reach.

A plugin may read its own extracted code and virtualenv, the Python it runs on, the system's
libraries and configuration; it may write only its own scratch (``HOME`` and ``TMPDIR``); it
keeps the network. Two mechanisms give that, each used where the machine allows it:

- **a uid of its own** (the daemon runs as root, the container case): every plugin runs under
  an unprivileged uid and gid from ``PLUGIN_ISOLATION_UID_RANGE``, kept per plugin id in
  ``.isolation-uids.json`` in the working path. Its folder is ``root:<gid> 0750`` (readable,
  not writable: code and venv are root's), its scratch ``<uid>:<gid> 0700``, the working path
  and author folders traverse-only (``0711``). Different uids also mean it can neither signal
  nor ptrace the daemon or another plugin, nor read their ``/proc`` entries.
- **Landlock** (Linux 5.13+, any uid): the file-system rules above, enforced by the kernel;
  processes outside the plugin's domain cannot be ptraced or have their ``/proc`` entries read,
  and with ABI 6 (Linux 6.12+) cannot be signalled either.

``PLUGIN_ISOLATION``: ``auto`` uses what is available and logs what is missing; ``required``
refuses to launch (or install) a plugin without complete isolation; ``off`` confines nothing.

Dependency installs run as the daemon (under Landlock where available: the package's folder,
the uv cache and a build scratch writable, nothing else; when the daemon is root, with every
capability dropped), and their result is root-owned and read-only to the plugin. They do not run
under the plugin's uid: uv hard-links venv files from one cache shared by all installs, which
would then have to be writable by every plugin uid, and the venv would be the plugin's own to
change until it was handed back.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import shutil
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from plugin_daemon.config import Settings

from . import landlock

logger = logging.getLogger(__name__)

#: Read-only for plugins and installs: the system's programs, libraries and configuration.
SYSTEM_READ_PATHS = (
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/bin",
    "/sbin",
    "/etc",
    "/proc",
    "/sys",
    "/run/systemd/resolve",
)
#: Character devices a Python program opens (read, write, ioctl).
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")
UID_MAP_FILE = ".isolation-uids.json"
SCRATCH_FOLDER = ".scratch"
_PR_CAPBSET_DROP = 24
_CAP_LAST = 63


class IsolationUnavailable(Exception):
    """``PLUGIN_ISOLATION=required`` and isolation is not complete; the message says what is missing."""


@dataclass
class Confinement:
    """How to start one child: credentials, environment additions, the Landlock ruleset to enforce."""

    uid: int | None = None
    gid: int | None = None
    extra_groups: list[int] | None = None
    umask: int = 0o077
    env: dict[str, str] = field(default_factory=dict)
    ruleset: landlock.Ruleset | None = None
    drop_capabilities: bool = False

    def set_credentials(self) -> None:  # pragma: no cover - runs in the forked child
        """uid, gid and umask (in the child, as uvloop's spawn takes no ``user``/``group``/``umask``)."""
        if self.gid is not None:
            os.setgroups(self.extra_groups or [])
            os.setgid(self.gid)
        if self.uid is not None:
            os.setuid(self.uid)  # real, effective and saved: every capability goes with root
        os.umask(self.umask)

    def in_child(self) -> None:  # pragma: no cover - runs in the forked child, after the uid change
        if self.drop_capabilities:
            _drop_capability_bounding_set()
        if self.ruleset is not None:
            landlock.restrict_self(self.ruleset.fd)

    def close(self) -> None:
        if self.ruleset is not None:
            self.ruleset.close()


def _drop_capability_bounding_set() -> None:  # pragma: no cover - runs in the forked child
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in range(_CAP_LAST + 1):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: no such cap
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _own_folder(path: Path, uid: int | None, *, empty: bool) -> None:
    """A real folder at ``path`` (emptied if asked) owned by ``uid``. The plugin owns what is inside
    its scratch and may have left a link there: it is removed, never followed (a root daemon
    would otherwise hand the link's target to the plugin)."""
    try:
        mode: int | None = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and (empty or not stat.S_ISDIR(mode)):
        if stat.S_ISDIR(mode):
            shutil.rmtree(path)  # a real folder (lstat): rmtree does not follow links inside it
        else:
            path.unlink()
        mode = None
    if mode is None:
        path.mkdir(mode=0o700)
    if uid is not None:
        os.chown(path, uid, uid, follow_symlinks=False)


def parse_uid_range(text: str) -> range:
    first, sep, last = text.partition("-")
    try:
        start, stop = int(first), int(last if sep else first)
    except ValueError:
        raise ValueError(f"PLUGIN_ISOLATION_UID_RANGE {text!r} is not first-last (e.g. 100000-165535)") from None
    if not 0 < start <= stop or stop >= 2**32 - 1:
        raise ValueError(f"PLUGIN_ISOLATION_UID_RANGE {text!r} is not a range of unprivileged uids")
    return range(start, stop + 1)


def _others_can_traverse(path: Path) -> Path | None:
    """The first folder from ``/`` to ``path`` that other users cannot traverse, or None."""
    for folder in [*reversed(path.parents), path]:
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return folder
        except OSError:
            return folder
    return None


def _inside(path: Path, folders: Iterable[str]) -> str | None:
    for folder in folders:
        if path == Path(folder) or Path(folder) in path.parents:
            return folder
    return None


def python_prefix(venv: Path) -> Path | None:
    """The installation prefix of the base interpreter of ``venv`` (from ``pyvenv.cfg``)."""
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                return Path(value.strip()).resolve().parent
    except OSError:
        return None
    return None


class Sandbox:
    """One per local runtime: probes the machine once, then confines every launch and install."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mode = settings.PLUGIN_ISOLATION
        self.working_path = settings.working_path
        self.scratch_root = self.working_path / SCRATCH_FOLDER
        self.is_root = os.geteuid() == 0
        self.landlock_abi = landlock.abi_version() if self.mode != "off" else 0
        self.uid_range = parse_uid_range(settings.PLUGIN_ISOLATION_UID_RANGE)
        self.read_paths = [p.strip() for p in settings.PLUGIN_ISOLATION_READ_PATHS.split(",") if p.strip()]
        self.interpreters: set[Path] = set()
        self.in_force: list[str] = []
        self.missing: list[str] = []
        self.uids = self.is_root and self.mode != "off"
        self._probe()

    # --- what is in force -----------------------------------------------------------------

    def _probe(self) -> None:
        if self.mode == "off":
            self.missing.append("all of it: PLUGIN_ISOLATION=off")
            return
        if self.is_root:
            blocked = _others_can_traverse(self.working_path)
            if blocked is not None:
                self.uids = False
                self.missing.append(
                    f"a uid per plugin: {blocked} is not traversable by other users, so plugins under their "
                    "own uid could not reach their code (move PLUGIN_WORKING_PATH or chmod o+x that folder)"
                )
            else:
                self.in_force.append(f"a uid per plugin (from {self.uid_range.start}-{self.uid_range.stop - 1})")
        if self.landlock_abi >= 1:
            self.in_force.append(f"Landlock ABI {self.landlock_abi} (file system)")
            if self.landlock_abi >= 6:
                self.in_force.append("Landlock signal scoping")
            elif not self.uids:
                self.missing.append(
                    f"signal scoping (Landlock ABI 6, Linux 6.12; this kernel has ABI {self.landlock_abi}): "
                    "plugins can signal processes of the daemon's uid"
                )
        else:
            self.missing.append("Landlock (Linux 5.13+ with landlock in the LSM list): no file-system rules")
        data = [Path(p) for p in (self.settings.home, self.working_path, self.settings.persistence_path)]
        for path in data:
            folder = _inside(path, (*SYSTEM_READ_PATHS, *self.read_paths))
            if folder is not None and self.landlock_abi >= 1 and not self.uids:
                self.missing.append(f"{path} is inside {folder}, which plugins may read")

    @property
    def complete(self) -> bool:
        """Files, signals and ptrace all confined."""
        if self.mode == "off":
            return False
        if self.uids:
            return True
        return self.landlock_abi >= 6 and not any(" which plugins may read" in item for item in self.missing)

    def describe(self) -> str:
        if self.mode == "off":
            return "plugin isolation is off (PLUGIN_ISOLATION=off)"
        text = "plugin isolation: " + (", ".join(self.in_force) or "nothing available")
        if self.missing:
            text += "; missing: " + "; ".join(self.missing)
        return text

    def tighten(self) -> None:
        """At start: plugin folders made before isolation (0755) give other users nothing."""
        if not self.working_path.is_dir():
            return
        shared = 0o711 if self.uids else 0o700
        for author in self.working_path.iterdir():
            if author.name == ".uv-cache":
                author.chmod(0o700)
            if author.name.startswith(".") or not author.is_dir() or author.is_symlink():
                continue
            author.chmod(shared)
            for folder in author.iterdir():
                if folder.is_dir() and not folder.is_symlink():
                    folder.chmod(folder.stat().st_mode & 0o770)

    def log_state(self) -> None:
        (logger.info if self.complete or self.mode == "off" else logger.warning)("%s", self.describe())

    def require(self, what: str) -> None:
        if self.mode == "required" and not self.complete:
            raise IsolationUnavailable(
                f"{what} refused: PLUGIN_ISOLATION=required and isolation is incomplete: " + "; ".join(self.missing)
            )

    # --- plugins ----------------------------------------------------------------------------

    def confine_plugin(self, plugin_id: str, workdir: Path, venv: Path) -> Confinement:
        """Prepare the scratch and ownership of one launch and return how to start it."""
        if self.mode == "off":
            return Confinement(umask=0o022)
        self.require(f"starting {plugin_id}")
        scratch = self.scratch_root / workdir.parent.name / workdir.name
        uid = gid = None
        if self.uids:
            prefix = python_prefix(venv)
            blocked = _others_can_traverse(prefix) if prefix is not None else None
            if blocked is not None:
                raise IsolationUnavailable(
                    f"cannot start {plugin_id} under a uid of its own: its Python ({prefix}) is not reachable by "
                    f"other users ({blocked} is not traversable); use a Python installed for all users "
                    "(PYTHON_INTERPRETER_PATH)"
                )
            uid = gid = self._uid_of(plugin_id)
            self._hand_over(workdir, scratch, uid)
        else:
            for folder in (self.scratch_root, scratch.parent):
                folder.mkdir(mode=0o700, exist_ok=True)
            scratch.mkdir(mode=0o700, exist_ok=True)
        tmp = scratch / "tmp"
        _own_folder(scratch / "home", uid, empty=False)
        _own_folder(tmp, uid, empty=True)
        env = {"HOME": str(scratch / "home"), "TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)}
        ruleset = None
        if self.landlock_abi >= 1:
            ruleset = landlock.Ruleset(self.landlock_abi)
            try:
                ruleset.allow(workdir, landlock.READ_ONLY)
                ruleset.allow(scratch, landlock.READ_WRITE)
                self._allow_system(ruleset, venv)
            except BaseException:
                ruleset.close()
                raise
        return Confinement(uid=uid, gid=gid, extra_groups=[] if uid is not None else None, env=env, ruleset=ruleset)

    def _allow_system(self, ruleset: landlock.Ruleset, venv: Path) -> None:
        prefix = python_prefix(venv)
        if prefix is not None:
            ruleset.allow(prefix, landlock.READ_ONLY)
        ruleset.allow_all((*SYSTEM_READ_PATHS, *self.read_paths), landlock.READ_ONLY)
        for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"):
            if os.environ.get(name):
                ruleset.allow(os.environ[name], landlock.READ_ONLY)
        ruleset.allow_all(DEVICES, landlock.READ_FILE | landlock.WRITE_FILE | landlock.IOCTL_DEV)

    def _hand_over(self, workdir: Path, scratch: Path, uid: int) -> None:
        """Root: code readable (not writable) by the plugin's gid alone; its scratch its own.

        The plugin's folder is ``root:<gid> 0750``, the gate; what is inside is root's and readable
        (as uv leaves the venv, built with umask 022), so no walk needs to change owners.
        """
        for folder in (self.working_path, workdir.parent, self.scratch_root, scratch.parent):
            folder.mkdir(exist_ok=True)
            os.chown(folder, 0, 0)
            os.chmod(folder, 0o711)
        os.chown(workdir, 0, uid)
        os.chmod(workdir, 0o750)
        for root, folders, files in os.walk(workdir):
            if root == str(workdir):
                folders[:] = [name for name in folders if name != ".venv"]  # built with umask 022
            for name in (*folders, *files):
                path = os.path.join(root, name)
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode):  # the folder above is the gate: inside, read (and traverse) for all
                    readable = 0o044 | (0o011 if stat.S_ISDIR(mode) or mode & 0o100 else 0)
                    os.chmod(path, (mode & 0o700) | readable)
        scratch.mkdir(mode=0o700, exist_ok=True)
        os.chown(scratch, uid, uid)
        os.chmod(scratch, 0o700)

    def _uid_of(self, plugin_id: str) -> int:
        """The plugin's uid, the same at every start (kept in the working path, under a lock)."""
        path = self.working_path / UID_MAP_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(os.dup(fd), "rb") as handle:
                raw = handle.read()
            table: dict[str, int] = orjson.loads(raw) if raw.strip() else {}
            if plugin_id in table and table[plugin_id] in self.uid_range:
                return table[plugin_id]
            taken = set(table.values())
            uid = next((candidate for candidate in self.uid_range if candidate not in taken), None)
            if uid is None:
                raise IsolationUnavailable(
                    f"no free uid left for {plugin_id} in PLUGIN_ISOLATION_UID_RANGE "
                    f"{self.settings.PLUGIN_ISOLATION_UID_RANGE}"
                )
            table[plugin_id] = uid
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(orjson.dumps(table, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
            return uid
        finally:
            os.close(fd)

    # --- installs ---------------------------------------------------------------------------

    def confine_install(self, workdir: Path, cache_dir: Path, uv: str | None) -> Confinement:
        """uv and the warm-up: the package folder, its venv, the uv cache and a build scratch."""
        if self.mode == "off":
            return Confinement(umask=0o022)
        self.require(f"installing the dependencies of {workdir.name}")
        build_tmp = self.scratch_root / "build" / workdir.parent.name / workdir.name
        shutil.rmtree(build_tmp, ignore_errors=True)
        build_tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {"TMPDIR": str(build_tmp), "TMP": str(build_tmp), "TEMP": str(build_tmp)}
        ruleset = None
        if self.landlock_abi >= 1:
            ruleset = landlock.Ruleset(self.landlock_abi)
            try:
                ruleset.allow(workdir, landlock.READ_WRITE)  # uv creates .venv inside
                ruleset.allow(cache_dir, landlock.READ_WRITE)
                ruleset.allow(build_tmp, landlock.READ_WRITE)
                if uv:
                    ruleset.allow(Path(uv).resolve(), landlock.EXECUTE | landlock.READ_FILE)
                for folder in self._uv_configuration():
                    ruleset.allow(folder, landlock.READ_ONLY)
                self._allow_system(ruleset, workdir / ".venv")
                ruleset.allow_all(self._interpreter_prefixes(), landlock.READ_ONLY)
                if self.settings.UV_PYTHON_DOWNLOADS != "never":  # uv may download a managed Python there
                    self._managed_pythons().mkdir(parents=True, exist_ok=True)
                    ruleset.allow(self._managed_pythons(), landlock.READ_WRITE)
            except BaseException:
                ruleset.close()
                raise
        return Confinement(umask=0o022, env=env, ruleset=ruleset, drop_capabilities=self.is_root)

    def _uv_configuration(self) -> list[Path]:
        """Where uv reads the operator's configuration (uv.toml, pip.conf, netrc)."""
        home = Path(os.environ.get("HOME", "/nonexistent"))
        config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
        folders = [config / "uv", config / "pip", home / ".netrc", home / ".pip"]
        if os.environ.get("NETRC"):
            folders.append(Path(os.environ["NETRC"]))
        return folders

    def trust_interpreter(self, python: str) -> None:
        """Installs may read the installation of this interpreter (a venv is about to be built on it);
        ``python`` is a path, or a request uv answers with a managed Python (see ``_managed_pythons``)."""
        if os.path.isabs(python):
            self.interpreters.add(Path(python).resolve().parent.parent)

    def _managed_pythons(self) -> Path:
        data = os.environ.get("XDG_DATA_HOME") or Path(os.environ.get("HOME", "/nonexistent")) / ".local/share"
        return Path(data) / "uv" / "python"

    def _interpreter_prefixes(self) -> list[Path]:
        """The interpreters venvs are built on, ``PYTHON_INTERPRETER_PATH`` and uv-managed ones."""
        prefixes: list[Path] = list(self.interpreters)
        if self.settings.PYTHON_INTERPRETER_PATH:
            prefixes.append(Path(self.settings.PYTHON_INTERPRETER_PATH).resolve().parent.parent)
        prefixes.append(self._managed_pythons())
        prefixes.append(Path(sys.base_prefix))
        return prefixes


def prepare_child(confinement: Confinement | None, die_with_parent: Callable[[], None] | None) -> Callable[[], None]:
    """The ``preexec_fn`` of a child: parent-death signal first, then the confinement."""

    def preexec() -> None:  # pragma: no cover - runs in the forked child
        if confinement is not None:
            confinement.set_credentials()  # first: a change of uid clears the parent-death signal
        if die_with_parent is not None:
            die_with_parent()
        if confinement is not None:
            confinement.in_child()

    return preexec
