"""A tenant's installations by plugin category, as the Go daemon lists them.

Three listings: the plugin ids of one category (``management/installation/ids``), the
installations of one category, filtered and paged (``management/{category}/list``), and which
installation serves each model provider (``management/models/bindings``).

The category of an installation is its declaration's (:func:`plugin_category`); ``extension`` is
what is neither tool, model, datasource, agent strategy nor trigger (an endpoints-only plugin).
Every listing is newest installation first, as in the Go daemon. Every function here is
synchronous (SQLAlchemy); the API calls them in a worker thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select

from plugin_daemon.errors import BadRequest, InternalError
from plugin_daemon.manager import PluginManager, parse_identifier
from plugin_daemon.packages import plugin_category
from plugin_daemon.store.models import CATEGORY_TABLES, InstallationRow, PluginDeclarationRow

#: category name (as Dify sends it) -> declaration key of its per-category table (extension has none)
CATEGORY_KEYS: dict[str, str | None] = {
    "tool": "tool",
    "model": "model",
    "extension": None,
    "agent-strategy": "agent_strategy",
    "datasource": "datasource",
    "trigger": "trigger",
}
#: the tags a listing may filter on (the Go daemon's plugin tags)
PLUGIN_TAGS = frozenset(
    {
        "search",
        "image",
        "videos",
        "weather",
        "finance",
        "design",
        "travel",
        "social",
        "news",
        "medical",
        "productivity",
        "education",
        "business",
        "entertainment",
        "utilities",
        "agent",
        "rag",
        "other",
        "trigger",
    }
)
#: the languages a query may be matched in (labels and descriptions fall back to en_US)
LIST_LANGUAGES = ("en_US", "zh_Hans", "ja_JP", "pt_BR")
DEFAULT_LANGUAGE = "en_US"
MAX_QUERY_LENGTH = 256
MAX_TAGS = 128
#: installations read at a time while looking for a page of matches
SCAN_CHUNK = 256


def check_category(category: str) -> str | None:
    """The declaration key of ``category``'s table (None for extension); BadRequest if unknown."""
    if category not in CATEGORY_KEYS:
        raise BadRequest(f"invalid plugin category {category!r}: expected one of {', '.join(CATEGORY_KEYS)}")
    return CATEGORY_KEYS[category]


@dataclass(frozen=True)
class ListFilters:
    """What ``{category}/list`` narrows to: any of ``tags`` (none: all), and ``query`` found, case
    insensitively, in the plugin id, the name, or the label or description in ``language``."""

    query: str = ""
    tags: tuple[str, ...] = ()
    language: str = ""

    def matches(self, plugin_id: str, declaration: Mapping[str, Any]) -> bool:
        if self.tags and not set(self.tags) & set(declaration.get("tags") or ()):
            return False
        if not self.query:
            return True
        wanted = self.query.lower()
        candidates = (
            plugin_id,
            str(declaration.get("name") or ""),
            _localized(declaration.get("label"), self.language),
            _localized(declaration.get("description"), self.language),
        )
        return any(wanted in candidate.lower() for candidate in candidates)


def _localized(text: Any, language: str) -> str:
    if not isinstance(text, Mapping):
        return ""
    chosen = text.get(language) if language in LIST_LANGUAGES else None
    return str(chosen or text.get(DEFAULT_LANGUAGE) or "")


def _declarations(session: Any, identifiers: Iterable[str]) -> dict[str, PluginDeclarationRow]:
    wanted = set(identifiers)
    if not wanted:
        return {}
    rows = session.scalars(
        select(PluginDeclarationRow).where(PluginDeclarationRow.plugin_unique_identifier.in_(wanted))
    )
    return {row.plugin_unique_identifier: row for row in rows}


def _declaration_of(declarations: Mapping[str, PluginDeclarationRow], identifier: str) -> PluginDeclarationRow:
    row = declarations.get(identifier)
    if row is None:
        raise InternalError(
            f"failed to get plugin declaration: plugin {identifier} is installed but its declaration is not known"
        )
    return row


def _newest_installations(session: Any, tenant_id: str) -> Iterator[list[InstallationRow]]:
    """The tenant's installations, newest first, SCAN_CHUNK at a time."""
    offset = 0
    while True:
        chunk = list(
            session.scalars(
                select(InstallationRow)
                .where(InstallationRow.tenant_id == tenant_id)
                .order_by(InstallationRow.created_at.desc(), InstallationRow.id.desc())
                .offset(offset)
                .limit(SCAN_CHUNK)
            )
        )
        if chunk:
            yield chunk
        if len(chunk) < SCAN_CHUNK:
            return
        offset += SCAN_CHUNK


def installed_plugin_ids(manager: PluginManager, tenant_id: str, category: str) -> dict[str, list[str]]:
    """``{"plugin_ids": [...]}``: the plugins of ``category`` installed for the tenant, newest first."""
    key = check_category(category)
    with manager.db.transaction() as session:
        if key is None:
            return {"plugin_ids": _extension_plugin_ids(session, tenant_id)}
        table = CATEGORY_TABLES[key]
        plugin_ids = session.scalars(
            select(table.plugin_id)
            .where(table.tenant_id == tenant_id)
            .order_by(table.created_at.desc(), table.id.desc())
        )
        # a plugin with several providers of its category has several rows
        return {"plugin_ids": list(dict.fromkeys(plugin_ids))}


def _extension_plugin_ids(session: Any, tenant_id: str) -> list[str]:
    """Extensions have no table of their own: the installations whose declaration is one."""
    found = []
    for chunk in _newest_installations(session, tenant_id):
        declarations = _declarations(session, (row.plugin_unique_identifier for row in chunk))
        for row in chunk:
            parsed = parse_identifier(row.plugin_unique_identifier)
            declaration = _declaration_of(declarations, row.plugin_unique_identifier).declaration
            if plugin_category(declaration) == "extension":
                found.append(parsed.plugin_id)
    return found


def list_plugins(
    manager: PluginManager, tenant_id: str, category: str, page: int, page_size: int, filters: ListFilters
) -> dict[str, Any]:
    """``{"list": [...], "has_more": bool}``: page ``page`` of the tenant's installations of
    ``category`` that pass ``filters``, newest first; items are those of ``management/list``."""
    check_category(category)
    skip = (page - 1) * page_size
    wanted = page_size + 1  # one more than a page tells whether there is more
    items: list[dict[str, Any]] = []
    with manager.db.transaction() as session:
        for chunk in _newest_installations(session, tenant_id):
            declarations = _declarations(session, (row.plugin_unique_identifier for row in chunk))
            for row in chunk:
                parsed = parse_identifier(row.plugin_unique_identifier)
                declaration_row = _declaration_of(declarations, row.plugin_unique_identifier)
                declaration = declaration_row.declaration
                if plugin_category(declaration) != category or not filters.matches(parsed.plugin_id, declaration):
                    continue
                if skip:
                    skip -= 1
                    continue
                items.append(manager.installation_entity(row, declaration_row))
                if len(items) == wanted:
                    break
            if len(items) == wanted:
                break
    return {"list": items[:page_size], "has_more": len(items) > page_size}


def model_bindings(manager: PluginManager, tenant_id: str) -> list[dict[str, Any]]:
    """Which installation serves each of the tenant's model providers, newest installation first.

    A provider row counts only if it belongs to the version installed now; one binding per
    (plugin, provider) even if the provider was recorded twice.
    """
    models = CATEGORY_TABLES["model"]
    query = (
        select(
            models.provider,
            InstallationRow.id,
            InstallationRow.plugin_id,
            InstallationRow.plugin_unique_identifier,
            InstallationRow.runtime_type,
            InstallationRow.source,
        )
        .join(
            InstallationRow,
            and_(
                InstallationRow.tenant_id == models.tenant_id,
                InstallationRow.plugin_id == models.plugin_id,
                InstallationRow.plugin_unique_identifier == models.plugin_unique_identifier,
            ),
        )
        .where(models.tenant_id == tenant_id)
        .order_by(InstallationRow.created_at.desc(), InstallationRow.id.desc(), models.created_at, models.id)
    )
    bindings: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    with manager.db.transaction() as session:
        rows = list(session.execute(query))
        declarations = _declarations(session, (row.plugin_unique_identifier for row in rows))
        for provider, installation_id, plugin_id, identifier, runtime_type, source in rows:
            parsed = parse_identifier(identifier)
            if (plugin_id, provider) in seen:
                continue
            seen.add((plugin_id, provider))
            declaration = _declaration_of(declarations, identifier).declaration
            bindings.append(
                {
                    "provider": provider,
                    "installation_id": installation_id,
                    "plugin_id": plugin_id,
                    "plugin_unique_identifier": identifier,
                    "runtime_type": runtime_type,
                    "source": source,
                    "version": parsed.version,
                    "verified": bool(declaration.get("verified")),
                }
            )
    return bindings
