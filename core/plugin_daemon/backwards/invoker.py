"""Backwards invocation: a plugin, in the middle of a session, asks Dify (or the daemon) for something.

Runtime-independent: the runtime hands over the ``invoke`` payload and the session's channel;
the answer goes back on that channel as ``backwards_response`` lines — ``response`` items, then
always ``end`` (an ``error`` line first when it fails).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anyio

from plugin_daemon.backwards.dify_client import DifyCallError, DifyInnerAPI, timeout_message
from plugin_daemon.backwards.permissions import denial
from plugin_daemon.backwards.storage import PluginStorage, StorageError
from plugin_daemon.config import Settings
from plugin_daemon.errors import internal_error
from plugin_daemon.protocol.messages import encode_backwards_response
from plugin_daemon.runtime import SessionChannel
from plugin_daemon.sessions import Session
from plugin_daemon.store.database import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    path: str
    streaming: bool
    failure: str  # how a failure is introduced, as the Go daemon words it


ROUTES: dict[str, Route] = {
    "tool": Route("invoke/tool", True, "invoke tool failed"),
    "llm": Route("invoke/llm", True, "invoke llm model failed"),
    "llm_structured_output": Route(
        "invoke/llm/structured-output", True, "invoke llm with structured output model failed"
    ),
    "system_summary": Route("invoke/summary", False, "invoke summary failed"),
    "text_embedding": Route("invoke/text-embedding", False, "invoke text-embedding model failed"),
    "multimodal_embedding": Route("invoke/multimodal-embedding", False, "invoke multimodal embedding model failed"),
    "rerank": Route("invoke/rerank", False, "invoke rerank model failed"),
    "multimodal_rerank": Route("invoke/multimodal-rerank", False, "invoke multimodal rerank model failed"),
    "tts": Route("invoke/tts", True, "invoke tts model failed"),
    "speech2text": Route("invoke/speech2text", False, "invoke speech2text model failed"),
    "moderation": Route("invoke/moderation", False, "invoke moderation model failed"),
    "app": Route("invoke/app", True, "invoke app failed"),
    "fetch_app": Route("fetch/app/info", False, "fetch app failed"),
    "node_parameter_extractor": Route("invoke/parameter-extractor", False, "invoke parameter extractor failed"),
    "node_question_classifier": Route("invoke/question-classifier", False, "invoke question classifier failed"),
    "upload_file": Route("upload/file/request", False, "upload file failed"),
}


class BackwardsInvoker:
    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.dify = DifyInnerAPI(settings)
        self.storage = PluginStorage(database, settings.persistence_path, settings.PERSISTENCE_STORAGE_MAX_SIZE)

    async def aclose(self) -> None:
        await self.dify.aclose()

    async def handle(self, session: Session, channel: SessionChannel, payload: Any) -> None:
        """Answer one ``invoke`` message of ``session``; never raises for the plugin's mistakes."""
        request_id = payload.get("backwards_request_id") if isinstance(payload, dict) else None

        async def reply(event: str, message: str = "", data: Any = None) -> None:
            await channel.send(encode_backwards_response(session.id, request_id or "", event, message, data))

        failure: str | None = None
        try:
            invoke_type, request = self._check(session, payload)
            if invoke_type == "storage":
                result = await anyio.to_thread.run_sync(
                    self.storage.handle, session.tenant_id, session.plugin_id, session.declaration, request
                )
                await reply("response", "struct", result)
            else:
                await self._call_dify_for_the_caller(session, invoke_type, request, reply)
        except (BackwardsRefused, StorageError, DifyCallError) as exc:
            failure = str(exc)
        except TimeoutError:
            failure = timeout_message(self.dify.read_deadline)
        except Exception as exc:  # a fault inside the daemon (a database gone, a bug): still answer
            log.exception("backwards invocation %s of session %s failed", request_id, session.id)
            failure = f"the plugin daemon failed to answer this call: {internal_error(exc).message}"
        try:
            if failure is not None:
                await reply("error", failure)
            await reply("end")
        except Exception as exc:  # the plugin stopped listening: nobody to answer
            log.warning("backwards invocation %s of session %s ended early: %s", request_id, session.id, exc)

    def _check(self, session: Session, payload: Any) -> tuple[str, dict[str, Any]]:
        if not isinstance(payload, dict):
            raise BackwardsRefused("invoke request must be an object")
        invoke_type = payload.get("type")
        if not isinstance(invoke_type, str):
            raise BackwardsRefused(f"invoke request missing type: {payload}")
        if not isinstance(payload.get("backwards_request_id"), str):
            raise BackwardsRefused("invoke request missing backwards_request_id")
        request = payload.get("request")
        if not isinstance(request, dict):
            raise BackwardsRefused("invoke request missing request")
        if session.access_type == "model":
            raise BackwardsRefused("you can not invoke dify from model")
        refused = denial(session.declaration, invoke_type)
        if refused:
            raise BackwardsRefused(refused)
        return invoke_type, request

    async def _call_dify_for_the_caller(
        self, session: Session, invoke_type: str, request: dict[str, Any], reply: Any
    ) -> None:
        """Call Dify while the session's caller is there: a call made after the caller has gone is
        refused, and one under way is stopped when it goes (nobody would read its answer, and an LLM
        call costs money)."""
        if session.watch_caller is not None:
            session.watch_caller()
        if session.abandoned:
            raise BackwardsRefused(CALLER_GONE)
        with anyio.CancelScope() as scope:
            forget = session.when_abandoned(scope.cancel)
            try:
                await self._call_dify(session, invoke_type, request, reply)
            finally:
                forget()
        if scope.cancelled_caught:
            raise BackwardsRefused(CALLER_GONE)

    async def _call_dify(self, session: Session, invoke_type: str, request: dict[str, Any], reply: Any) -> None:
        route = ROUTES[invoke_type]
        body = {**request, "tenant_id": session.tenant_id, "user_id": session.user_id, "type": invoke_type}
        try:
            with anyio.fail_after(self.dify.read_deadline):
                if route.streaming:
                    async for item in self.dify.stream(route.path, body):
                        await reply("response", "stream", item)
                else:
                    await reply("response", "struct", await self.dify.call(route.path, body))
        except DifyCallError as exc:
            raise DifyCallError(f"{route.failure}: {exc}") from None


CALLER_GONE = "the caller of this session has gone, so Dify is not called for it any more"


class BackwardsRefused(Exception):
    pass
