"""Run a plugin folder straight from the test suite, without the daemon.

Used by the benchmarks ("straight to the plugin") and by the plugins' own self-tests.

- :func:`ensure_venv` builds the plugin's virtualenv with uv once, in a cache directory keyed by the
  plugin's dependency files (``requirements.txt`` or ``pyproject.toml`` + ``uv.lock``) and its
  ``meta.runner.version``; concurrent builders are serialised with a file lock.
- :class:`PluginProcess` spawns ``python -m main`` with ``INSTALL_METHOD=local`` in the plugin folder,
  waits for the first heartbeat, writes request lines and collects each session's messages until
  ``end``. Many sessions can run at once (one reader thread demultiplexes by ``session_id``).
  Every wait has a deadline; :meth:`PluginProcess.stop` uses SIGTERM then SIGKILL (stdin EOF does
  not stop the SDK).

Example::

    python = ensure_venv(PLUGINS / "echo_tool")
    with PluginProcess(PLUGINS / "echo_tool", python).start() as plugin:
        messages = plugin.invoke_tool("echo_tool", "echo", {"text": "hi"})
        assert texts(messages) == "hi"
"""

from __future__ import annotations

import base64
import collections
import contextlib
import fcntl
import glob
import hashlib
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from .dify_inner_api import STREAM_ROUTES, parse_frames

PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"
"""``tests/plugins``: the test plugins (echo_tool, noperm_tool, echo_tool_new, mock_llm, broken_start)."""

DEFAULT_CACHE_DIR = Path(os.environ.get("PLUGIN_DAEMON_TEST_CACHE", "~/.cache/plugin-daemon-tests")).expanduser()
"""Where plugin venvs are cached; override with ``PLUGIN_DAEMON_TEST_CACHE``."""

DEPENDENCY_FILES = ("requirements.txt", "pyproject.toml", "uv.lock")
ENV_ALLOW_LIST = (
    "PATH",
    "HOME",
    "LANG",
    "TMPDIR",
    "TEMP",
    "TMP",
    "TZ",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
)
STDERR_TAIL_BYTES = 64 * 1024

# A backwards-invocation handler gets the invoke payload ({"type", "backwards_request_id", "request"})
# and returns the response chunks (dicts) to send back; raising sends an "error" event.
InvokeHandler = Callable[[dict[str, Any]], Iterable[Mapping[str, Any]]]


class PluginDriverError(RuntimeError):
    """The plugin process misbehaved (did not start, exited, timed out)."""


# ---------------------------------------------------------------------------------------------
# virtualenvs
# ---------------------------------------------------------------------------------------------


def runner_version(plugin_dir: Path) -> str:
    """``meta.runner.version`` of the plugin's manifest (e.g. ``"3.11"``)."""
    manifest = yaml.safe_load((Path(plugin_dir) / "manifest.yaml").read_text())
    return str(manifest["meta"]["runner"]["version"])


def find_python(version: str) -> str:
    """Path of a working interpreter for ``version`` ("3.11", "3.12").

    Honours ``PLUGIN_TEST_PYTHON_3_12``-style overrides, then ``pythonX.Y`` on PATH (checked by
    running it: pyenv shims may exist but fail), then pyenv's versions directory.
    """
    override = os.environ.get("PLUGIN_TEST_PYTHON_" + version.replace(".", "_"))
    candidates = [override] if override else []
    if sys.version_info[:2] == tuple(int(p) for p in version.split(".")[:2]):
        candidates.append(sys.executable)
    found = shutil.which(f"python{version}")
    if found:
        candidates.append(found)
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"), reverse=True)
    candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        try:
            out = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return candidate
    raise PluginDriverError(f"no working Python {version} interpreter found (tried {candidates})")


def env_key(plugin_dir: Path) -> str:
    """Cache key of a plugin's environment: runner version and dependency files' content.

    Plugins with the same dependencies (e.g. every ``dify_plugin==0.7.4`` plugin) share one venv.
    """
    plugin_dir = Path(plugin_dir)
    version = runner_version(plugin_dir)
    digest = hashlib.sha256(version.encode())
    for name in DEPENDENCY_FILES:
        path = plugin_dir / name
        if path.exists():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"py{version}-{digest.hexdigest()[:16]}"


def _uv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


def _run(cmd: list[str], *, env: Mapping[str, str], cwd: Path | None, deadline: float) -> None:
    remaining = max(1.0, deadline - time.monotonic())
    try:
        proc = subprocess.run(cmd, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=remaining)
    except subprocess.TimeoutExpired as exc:
        raise PluginDriverError(f"timed out: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise PluginDriverError(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")


def ensure_venv(plugin_dir: Path, cache_dir: Path | None = None, *, timeout: float = 600.0) -> Path:
    """Build (once) and return the python executable of the plugin's venv.

    ``requirements.txt`` → ``uv pip install -r``; ``pyproject.toml`` + ``uv.lock`` →
    ``uv sync --frozen --no-dev --no-install-project``.
    """
    plugin_dir = Path(plugin_dir).resolve()
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR) / "venvs"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = env_key(plugin_dir)
    venv = cache_dir / key
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if ready.exists():
        return python
    deadline = time.monotonic() + timeout
    with open(cache_dir / f"{key}.lock", "w") as lock:
        while True:  # flock with a deadline
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PluginDriverError(f"timed out waiting for another build of {key}") from None
                time.sleep(0.2)
        if ready.exists():
            return python
        interpreter = find_python(runner_version(plugin_dir))
        build = cache_dir / f"{key}.build-{os.getpid()}"
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)
        env = _uv_env()
        try:
            if (plugin_dir / "requirements.txt").exists():
                _run(
                    ["uv", "venv", "-q", "--python", interpreter, str(build)],
                    env=env,
                    cwd=None,
                    deadline=deadline,
                )
                _run(
                    [
                        "uv",
                        "pip",
                        "install",
                        "-q",
                        "--compile-bytecode",
                        "--python",
                        str(build / "bin" / "python"),
                        "-r",
                        str(plugin_dir / "requirements.txt"),
                    ],
                    env=env,
                    cwd=plugin_dir,
                    deadline=deadline,
                )
            elif (plugin_dir / "pyproject.toml").exists():
                env["UV_PROJECT_ENVIRONMENT"] = str(build)
                _run(
                    [
                        "uv",
                        "sync",
                        "-q",
                        "--frozen",
                        "--no-dev",
                        "--no-install-project",
                        "--compile-bytecode",
                        "--python",
                        interpreter,
                        "--project",
                        str(plugin_dir),
                    ],
                    env=env,
                    cwd=plugin_dir,
                    deadline=deadline,
                )
            else:
                raise PluginDriverError(f"{plugin_dir} has neither requirements.txt nor pyproject.toml")
            # venvs are not relocatable in general, but uv's are (relative paths in pyvenv/scripts
            # are not used by `python -m`); the rename keeps the cache entry atomic.
            build.rename(venv)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        ready.write_text(key)
    return python


# ---------------------------------------------------------------------------------------------
# the plugin process
# ---------------------------------------------------------------------------------------------

_EXITED = object()  # sentinel pushed to session queues when stdout closes


class PluginProcess:
    """One plugin process speaking the SDK's stdio protocol.

    Attributes filled by the reader thread: ``manifest`` (the bare JSON first frame), ``heartbeats``
    (count), ``logs`` (``event: log`` payloads), ``global_errors`` (``event: error`` payloads) and
    ``unparsed`` (non-JSON stdout lines).
    """

    def __init__(
        self,
        plugin_dir: Path,
        python: Path | str,
        *,
        env: Mapping[str, str] | None = None,
        heartbeat_interval: float | None = None,
    ) -> None:
        self.plugin_dir = Path(plugin_dir).resolve()
        self.python = str(python)
        self.env = self._build_env(env, heartbeat_interval)
        self.proc: subprocess.Popen[bytes] | None = None
        self.manifest: dict[str, Any] | None = None
        self.heartbeats = 0
        self.logs: list[dict[str, Any]] = []
        self.global_errors: list[dict[str, Any]] = []
        self.unparsed: list[bytes] = []
        self._cond = threading.Condition()
        self._sessions: dict[str, queue.Queue[Any]] = {}
        self._write_lock = threading.Lock()
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._stdout_closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ids = itertools.count(1)

    @classmethod
    def for_plugin(cls, name_or_dir: str | Path, cache_dir: Path | None = None, **kwargs: Any) -> PluginProcess:
        """Build the venv of ``tests/plugins/<name>`` (or a folder) if needed and return a process."""
        plugin_dir = Path(name_or_dir)
        if not plugin_dir.is_absolute() and not plugin_dir.exists():
            plugin_dir = PLUGINS_DIR / plugin_dir
        return cls(plugin_dir, ensure_venv(plugin_dir, cache_dir), **kwargs)

    @staticmethod
    def _build_env(extra: Mapping[str, str] | None, heartbeat_interval: float | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW_LIST or k.startswith("LC_")}
        env["INSTALL_METHOD"] = "local"
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep tests/plugins free of __pycache__
        if heartbeat_interval is not None:
            env["HEARTBEAT_INTERVAL"] = str(heartbeat_interval)
        env.update(extra or {})
        return env

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> PluginProcess:
        """Spawn the plugin and wait for its first heartbeat (its readiness signal)."""
        if self.proc is not None:
            raise PluginDriverError("already started")
        self.proc = subprocess.Popen(
            [self.python, "-m", "main"],
            cwd=self.plugin_dir,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for target in (self._read_stdout, self._read_stderr):
            thread = threading.Thread(target=target, name=f"plugin-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.heartbeats == 0:
                if self._stdout_closed.is_set():
                    code = self._wait_exit(5.0)
                    raise PluginDriverError(
                        f"plugin exited before its first heartbeat (rc={code}); stderr:\n{self.stderr_tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.stop()
                    raise PluginDriverError(f"no heartbeat within {timeout}s; stderr:\n{self.stderr_tail()}")
                self._cond.wait(min(remaining, 0.5))
        return self

    def _wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout)
        return None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            if self._wait_exit(timeout) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                self._wait_exit(timeout)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        for thread in self._threads:
            thread.join(timeout)
        return proc.returncode

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit on its own; raises on timeout."""
        code = self._wait_exit(timeout)
        if code is None:
            raise PluginDriverError(f"plugin still running after {timeout}s")
        return code

    def __enter__(self) -> PluginProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- reader threads --------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                line = raw.strip()
                if line:
                    self._dispatch(line)
        except (OSError, ValueError):
            pass
        finally:
            self._stdout_closed.set()
            with self._cond:
                for q in self._sessions.values():
                    q.put(_EXITED)
                self._cond.notify_all()

    def _dispatch(self, line: bytes) -> None:
        try:
            frame = json.loads(line)
        except ValueError:
            self.unparsed.append(line)
            return
        if not isinstance(frame, dict):
            self.unparsed.append(line)
            return
        event = frame.get("event")
        with self._cond:
            if event is None:
                self.manifest = frame
            elif event == "heartbeat":
                self.heartbeats += 1
                self._cond.notify_all()
            elif event == "log":
                self.logs.append(frame.get("data") or {})
            elif event == "error":
                self.global_errors.append(frame.get("data") or {})
                self._cond.notify_all()
            elif event == "session":
                sid = str(frame.get("session_id"))
                self._sessions.setdefault(sid, queue.Queue()).put(frame.get("data") or {})
            else:
                self.unparsed.append(line)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            while chunk := os.read(self.proc.stderr.fileno(), 65536):
                self._stderr.append(chunk)
                self._stderr_size += len(chunk)
                while self._stderr_size > STDERR_TAIL_BYTES and len(self._stderr) > 1:
                    self._stderr_size -= len(self._stderr.popleft())

    def stderr_tail(self, limit: int = 4000) -> str:
        """The last ``limit`` characters the plugin wrote on stderr."""
        return b"".join(self._stderr).decode("utf-8", "replace")[-limit:]

    def wait_heartbeats(self, count: int, timeout: float) -> None:
        """Wait until at least ``count`` heartbeats have been seen."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.heartbeats < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stdout_closed.is_set():
                    raise PluginDriverError(f"saw {self.heartbeats} heartbeats, wanted {count}")
                self._cond.wait(remaining)

    def wait_global_error(self, timeout: float) -> dict[str, Any]:
        """Wait for an ``event: error`` frame (session_id null) and return its data."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.global_errors:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PluginDriverError("no global error frame")
                self._cond.wait(remaining)
            return self.global_errors[-1]

    # -- writing ---------------------------------------------------------------------------

    def send(self, message: Mapping[str, Any]) -> None:
        """Write one JSON line to the plugin's stdin."""
        self.send_raw(json.dumps(message).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise PluginDriverError("not started")
        with self._write_lock:
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise PluginDriverError(f"plugin stdin closed; stderr:\n{self.stderr_tail()}") from exc

    # -- sessions --------------------------------------------------------------------------

    def new_session_id(self) -> str:
        return f"drv-{os.getpid()}-{next(self._ids)}"

    def open_session(self, data: Mapping[str, Any], *, session_id: str | None = None, **envelope: Any) -> PluginSession:
        """Send a request line and return a handle that yields the session's messages."""
        sid = session_id or self.new_session_id()
        with self._cond:
            q = self._sessions.setdefault(sid, queue.Queue())
            if self._stdout_closed.is_set():
                q.put(_EXITED)
        line = {
            "session_id": sid,
            "event": "request",
            "conversation_id": None,
            "message_id": None,
            "app_id": None,
            "endpoint_id": None,
            "context": {},
            "data": dict(data),
        }
        line.update(envelope)
        self.send(line)
        return PluginSession(self, sid, q)

    def request(
        self,
        data: Mapping[str, Any],
        *,
        session_id: str | None = None,
        timeout: float = 30.0,
        on_invoke: InvokeHandler | None = None,
        **envelope: Any,
    ) -> list[dict[str, Any]]:
        """Send a request and return all of its session messages, ``end`` included.

        Each message is a SessionMessage dict: ``{"type": "stream"|"invoke"|"error"|"end", "data": ...}``.
        ``invoke`` messages are answered with ``on_invoke`` (see :data:`InvokeHandler`).
        """
        session = self.open_session(data, session_id=session_id, **envelope)
        return session.collect(timeout=timeout, on_invoke=on_invoke)

    def invoke_tool(
        self,
        provider: str,
        tool: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        credentials: Mapping[str, Any] | None = None,
        user_id: str = "user-1",
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        return self.request(tool_request(provider, tool, parameters, credentials, user_id=user_id), **kwargs)

    def _forget(self, session_id: str) -> None:
        with self._cond:
            self._sessions.pop(session_id, None)


class PluginSession:
    """The messages of one session, as they arrive."""

    def __init__(self, plugin: PluginProcess, session_id: str, q: queue.Queue[Any]) -> None:
        self.plugin = plugin
        self.session_id = session_id
        self._queue = q

    def messages(self, *, timeout: float = 30.0, on_invoke: InvokeHandler | None = None) -> Iterator[dict[str, Any]]:
        """Yield messages until (and including) ``end``; ``timeout`` bounds the whole session."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise queue.Empty
                    message = self._queue.get(timeout=remaining)
                except queue.Empty:
                    raise PluginDriverError(
                        f"session {self.session_id}: no end within {timeout}s; stderr:\n{self.plugin.stderr_tail()}"
                    ) from None
                if message is _EXITED:
                    raise PluginDriverError(
                        f"session {self.session_id}: plugin exited (rc={self.plugin.returncode}); "
                        f"stderr:\n{self.plugin.stderr_tail()}"
                    )
                yield message
                if message.get("type") == "invoke":
                    self._answer(message.get("data") or {}, on_invoke)
                elif message.get("type") == "end":
                    return
        finally:
            self.plugin._forget(self.session_id)

    def collect(self, *, timeout: float = 30.0, on_invoke: InvokeHandler | None = None) -> list[dict[str, Any]]:
        return list(self.messages(timeout=timeout, on_invoke=on_invoke))

    def _answer(self, invoke: dict[str, Any], handler: InvokeHandler | None) -> None:
        request_id = invoke.get("backwards_request_id")

        def reply(event: str, data: Any = None, message: str = "") -> None:
            self.plugin.send(
                {
                    "session_id": self.session_id,
                    "event": "backwards_response",
                    "data": {
                        "backwards_request_id": request_id,
                        "event": event,
                        "message": message,
                        "data": data,
                    },
                }
            )

        try:
            if handler is None:
                raise PluginDriverError(f"no backwards-invocation handler for {invoke.get('type')}")
            for chunk in handler(invoke):
                reply("response", dict(chunk), "stream")
        except Exception as exc:  # the plugin sees it as Exception(message)
            reply("error", None, str(exc))
        reply("end")


# ---------------------------------------------------------------------------------------------
# request builders and message helpers
# ---------------------------------------------------------------------------------------------


def tool_request(
    provider: str,
    tool: str,
    parameters: Mapping[str, Any] | None = None,
    credentials: Mapping[str, Any] | None = None,
    *,
    user_id: str = "user-1",
) -> dict[str, Any]:
    """``data`` of a tool/invoke_tool request (provider = the provider's identity.name)."""
    return {
        "type": "tool",
        "action": "invoke_tool",
        "user_id": user_id,
        "provider": provider,
        "tool": tool,
        "credentials": dict(credentials or {}),
        "credential_type": "api-key",
        "tool_parameters": dict(parameters or {}),
    }


def validate_tool_credentials_request(provider: str, credentials: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool",
        "action": "validate_tool_credentials",
        "user_id": "user-1",
        "provider": provider,
        "credentials": dict(credentials),
    }


def llm_request(
    provider: str,
    model: str,
    credentials: Mapping[str, Any],
    prompt: str = "hello",
    *,
    stream: bool = True,
    model_parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``data`` of a model/invoke_llm request."""
    return {
        "type": "model",
        "action": "invoke_llm",
        "user_id": "user-1",
        "provider": provider,
        "model_type": "llm",
        "model": model,
        "credentials": dict(credentials),
        "prompt_messages": [{"role": "user", "content": prompt}],
        "model_parameters": dict(model_parameters or {}),
        "stop": [],
        "tools": [],
        "stream": stream,
    }


def validate_provider_credentials_request(provider: str, credentials: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "model",
        "action": "validate_provider_credentials",
        "user_id": "user-1",
        "provider": provider,
        "credentials": dict(credentials),
    }


def validate_model_credentials_request(provider: str, model: str, credentials: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "model",
        "action": "validate_model_credentials",
        "user_id": "user-1",
        "provider": provider,
        "model_type": "llm",
        "model": model,
        "credentials": dict(credentials),
    }


def streams(messages: Iterable[Mapping[str, Any]]) -> list[Any]:
    """Payloads of the ``stream`` messages."""
    return [m.get("data") for m in messages if m.get("type") == "stream"]


def texts(messages: Iterable[Mapping[str, Any]]) -> str:
    """Concatenated text of the ``text`` tool messages."""
    return "".join(s["message"]["text"] for s in streams(messages) if isinstance(s, dict) and s.get("type") == "text")


def errors(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Payloads of the ``error`` messages (``error_type``, ``message``, ``args``)."""
    return [m.get("data") or {} for m in messages if m.get("type") == "error"]


def blobs(messages: Iterable[Mapping[str, Any]]) -> dict[str, bytes]:
    """Reassemble ``blob_chunk`` tool messages by id."""
    parts: dict[str, dict[int, bytes]] = {}
    for s in streams(messages):
        if isinstance(s, dict) and s.get("type") == "blob_chunk":
            msg = s["message"]
            parts.setdefault(msg["id"], {})[msg["sequence"]] = base64.b64decode(msg["blob"])
    return {i: b"".join(chunks[k] for k in sorted(chunks)) for i, chunks in parts.items()}


def llm_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """Concatenated assistant content of LLMResultChunk stream payloads."""
    out = []
    for s in streams(messages):
        content = (((s or {}).get("delta") or {}).get("message") or {}).get("content")
        if isinstance(content, str):
            out.append(content)
    return "".join(out)


class MemoryStorage:
    """An in-memory stand-in for the daemon's storage backwards invocation (hex values)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.calls: list[dict[str, Any]] = []

    def __call__(self, invoke: dict[str, Any]) -> Iterable[Mapping[str, Any]]:
        self.calls.append(invoke)
        if invoke.get("type") != "storage":
            raise PluginDriverError(f"unexpected backwards invocation {invoke.get('type')}")
        request = invoke.get("request") or {}
        opt, key = request.get("opt"), str(request.get("key"))
        if opt == "set":
            self.data[key] = request.get("value", "")
            return [{"data": "ok"}]
        if opt == "get":
            if key not in self.data:
                raise ValueError("load data failed, please check if the key is correct or you have not set it")
            return [{"data": self.data[key]}]
        if opt == "del":
            deleted = int(self.data.pop(key, None) is not None)
            return [{"data": "ok", "deleted_num": deleted}]
        if opt == "exist":
            return [{"data": key in self.data, "exist_num": int(key in self.data)}]
        raise PluginDriverError(f"unknown storage opt {opt}")


INNER_API_PATHS = {
    "llm": "invoke/llm",
    "llm_structured_output": "invoke/llm/structured-output",
    "text_embedding": "invoke/text-embedding",
    "multimodal_embedding": "invoke/multimodal-embedding",
    "rerank": "invoke/rerank",
    "multimodal_rerank": "invoke/multimodal-rerank",
    "tts": "invoke/tts",
    "speech2text": "invoke/speech2text",
    "moderation": "invoke/moderation",
    "tool": "invoke/tool",
    "app": "invoke/app",
    "fetch_app": "fetch/app/info",
    "system_summary": "invoke/summary",
    "node_parameter_extractor": "invoke/parameter-extractor",
    "node_question_classifier": "invoke/question-classifier",
    "upload_file": "upload/file/request",
}
"""SDK invoke type → Dify inner API path (protocol.md §5)."""


class InnerAPIForwarder:
    """An :data:`InvokeHandler` forwarding backwards invocations to a Dify inner API (or its stand-in).

    Storage goes to ``storage`` (a :class:`MemoryStorage` by default), as the daemon serves it itself.
    No permission checks: this is a driver, not the daemon.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        tenant_id: str = "tenant-1",
        user_id: str = "user-1",
        storage: InvokeHandler | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.storage = storage or MemoryStorage()
        self.timeout = timeout

    def __call__(self, invoke: dict[str, Any]) -> Iterable[Mapping[str, Any]]:
        kind = str(invoke.get("type"))
        if kind == "storage":
            return self.storage(invoke)
        path = INNER_API_PATHS.get(kind)
        if path is None:
            raise PluginDriverError(f"unsupported backwards invocation {kind}")
        body = {
            **(invoke.get("request") or {}),
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "type": kind,
        }
        response = httpx.post(
            f"{self.url}/inner/api/{path}",
            json=body,
            headers={"X-Inner-Api-Key": self.key},
            timeout=self.timeout,
        )
        if response.status_code != 200:
            raise PluginDriverError(f"request failed with status code: {response.status_code}")
        payloads = parse_frames(response.content) if path in STREAM_ROUTES else [response.json()]
        out = []
        for payload in payloads:
            if payload.get("error"):
                raise PluginDriverError(f"request failed: {payload['error']}")
            if payload.get("data") is not None:
                out.append(payload["data"])
        return out
