"""The plugin manager: packages, declarations and installations, persisted.

Every method here is synchronous (SQLAlchemy); the API calls them in a worker thread. What the
dispatch hot path needs (installation by tenant and plugin id, the spec of an identifier) is
cached in memory and invalidated on every change made through this object.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, overload

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from plugin_daemon.buckets import Bucket
from plugin_daemon.config import Settings
from plugin_daemon.errors import BadRequest, InternalError, NotFound, UniqueIdentifierError
from plugin_daemon.memory import give_back_memory
from plugin_daemon.packages import (
    DecodedPackage,
    PackageError,
    PluginIdentifier,
    TrustedKey,
    decode_package,
    load_keyring,
)
from plugin_daemon.packages.archive import read_entries
from plugin_daemon.packages.assets import ASSETS_FOLDER
from plugin_daemon.packages.bundle import decode_bundle
from plugin_daemon.packages.keyring import key_paths
from plugin_daemon.packages.readme import DEFAULT_LANGUAGE, is_readme, pick_readme, readmes
from plugin_daemon.runtime import PluginSpec
from plugin_daemon.store.database import Database
from plugin_daemon.store.models import (
    CATEGORY_TABLES,
    EndpointRow,
    InstallationRow,
    PluginDeclarationRow,
    PluginRow,
    VerificationRow,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installation:
    """What dispatch needs to know about a tenant's installation."""

    id: str
    tenant_id: str
    plugin_id: str
    identifier: str
    runtime_type: str


#: A declaration write that loses a race with the same insert is tried again (then it updates).
DECLARATION_WRITE_ATTEMPTS = 3


def _iso(value: Any) -> str:
    text = value.isoformat()
    return text.replace("+00:00", "Z") if text.endswith("+00:00") else text + "Z"


SIGNATURE_REQUIRED = "the package signature is required"
UNSIGNED_HINT = (
    " (FORCE_VERIFYING_SIGNATURE is on: to install a package of your own, sign it with a key listed in"
    " THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS, or turn forcing off)"
)
UNAUTHORIZED_LANGGENIUS = (
    "plugin installation blocked: the plugin's author is langgenius, but no key vouches for the langgenius"
    " category (set ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES=false to allow it, not recommended)"
)


def claims_langgenius_unverified(decoded: DecodedPackage) -> bool:
    """Go's isUnauthorizedLanggenius: author "langgenius" (any case) without the langgenius category."""
    if str(decoded.declaration.get("author", "")).lower() != "langgenius":
        return False
    return decoded.verification is None or decoded.verification.get("authorized_category") != "langgenius"


def parse_identifier(text: str) -> PluginIdentifier:
    try:
        return PluginIdentifier.parse(text)
    except PackageError as exc:
        raise UniqueIdentifierError(exc.message) from exc


class PluginManager:
    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.db = database
        #: laid out as the Go daemon's buckets: packages by identifier, the packages of installed
        #: local plugins (which the Go daemon launches at start), assets by media id
        self.packages = Bucket(settings.package_path)
        self.installed = Bucket(settings.installed_path)
        self.media = Bucket(settings.media_path)
        self._lock = threading.Lock()
        self._installations: dict[tuple[str, str], Installation | None] = {}
        self._specs: dict[str, PluginSpec] = {}
        self._signature_keys: list[TrustedKey] | None = None
        if settings.THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED:
            self.signature_keys()  # a bad key file stops the start, not the first upload

    def signature_keys(self) -> list[TrustedKey]:
        """Dify's official key, then the third-party keys; loaded once (cryptography only when needed)."""
        if self._signature_keys is None:
            try:
                self._signature_keys = load_keyring(
                    self.settings.THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED,
                    key_paths(self.settings.THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS),
                )
            except PackageError as exc:
                raise ValueError(exc.message) from None
        return self._signature_keys

    # --- packages ---------------------------------------------------------------------

    def upload(self, data: bytes, *, verify_signature: bool) -> dict[str, Any]:
        """Decode, validate and keep a package; returns the Dify ``PluginDecodeResponse``."""
        try:
            return self._upload(data, verify_signature=verify_signature)
        finally:
            give_back_memory()  # the package's files, read in pieces, are let go by now

    def _upload(self, data: bytes, *, verify_signature: bool) -> dict[str, Any]:
        decoded = self._decode(data, verify_signature=verify_signature)
        self._keep(decoded, data)
        return self._decode_response(str(decoded.identifier), decoded.declaration, decoded.verification)

    def upload_bundle(self, data: bytes, *, verify_signature: bool) -> list[dict[str, Any]]:
        """Decode a bundle and keep the packages it carries (all of them, or none if one is bad);
        returns its dependencies as Dify's ``PluginBundleDependency`` list, in the bundle's order."""
        if len(data) > self.settings.MAX_BUNDLE_PACKAGE_SIZE:
            raise BadRequest(
                f"plugin bundle is {len(data)} bytes, over MAX_BUNDLE_PACKAGE_SIZE "
                f"({self.settings.MAX_BUNDLE_PACKAGE_SIZE} bytes)"
            )
        try:
            return self._upload_bundle(data, verify_signature=verify_signature)
        finally:
            give_back_memory()  # what the bundle's packages held is let go by now

    def _upload_bundle(self, data: bytes, *, verify_signature: bool) -> list[dict[str, Any]]:
        refusal = None
        try:
            bundle = decode_bundle(
                data,
                max_size=self.settings.MAX_BUNDLE_PACKAGE_SIZE,
                max_entries=self.settings.MAX_PLUGIN_PACKAGE_ENTRIES,
                max_dependencies=self.settings.MAX_BUNDLE_DEPENDENCIES,
                max_yaml_size=self.settings.MAX_PLUGIN_YAML_SIZE,
            )
        except PackageError as exc:
            refusal = exc.message  # raised below, so that the traceback (and what it holds) goes now
        if refusal is not None:
            raise BadRequest(refusal)
        decoded: dict[str, DecodedPackage] = {}  # path -> package, decoded once however often it is listed
        for path, carried in bundle.packages.items():
            try:
                # its files are not needed any more: only what is kept stays in memory
                decoded[path] = replace(self._decode(carried, verify_signature=verify_signature), files={})
            except BadRequest as exc:
                refusal = f"bundle package {path!r}: {exc.message}"
            if refusal is not None:
                raise BadRequest(refusal)
        for path, package in decoded.items():
            self._keep(package, bundle.packages[path])
        result = []
        for dependency in bundle.dependencies:
            if dependency.type != "package":
                result.append({"type": dependency.type, "value": dependency.value})
                continue
            kept = decoded[dependency.value["path"]]
            value = {"unique_identifier": str(kept.identifier), "manifest": kept.declaration}
            result.append({"type": "package", "value": value})
        return result

    def _decode(self, data: bytes, *, verify_signature: bool) -> DecodedPackage:
        if len(data) > self.settings.MAX_PLUGIN_PACKAGE_SIZE:
            raise BadRequest(
                f"plugin package is {len(data)} bytes, over MAX_PLUGIN_PACKAGE_SIZE "
                f"({self.settings.MAX_PLUGIN_PACKAGE_SIZE} bytes)"
            )
        forced = self.settings.FORCE_VERIFYING_SIGNATURE
        refusal: str | None = None
        try:
            decoded = decode_package(
                data,
                max_size=self.settings.MAX_PLUGIN_PACKAGE_SIZE,
                max_entries=self.settings.MAX_PLUGIN_PACKAGE_ENTRIES,
                keys=_KeysWhenRead(self.signature_keys),
                require_signature=verify_signature or forced,
                max_yaml_size=self.settings.MAX_PLUGIN_YAML_SIZE,
            )
        except PackageError as exc:
            hint = UNSIGNED_HINT if forced and exc.message.startswith(SIGNATURE_REQUIRED) else ""
            refusal = exc.message + hint  # raised below, so that the traceback (and the files it holds) goes now
        if refusal is not None:
            raise BadRequest(refusal)
        if self.settings.ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES and claims_langgenius_unverified(decoded):
            raise BadRequest(UNAUTHORIZED_LANGGENIUS)
        return decoded

    def _keep(self, decoded: DecodedPackage, data: bytes) -> None:
        for media_id, content in decoded.assets.items():
            self.media.put(media_id, content)
        self.packages.put(str(decoded.identifier), data)
        self.register_declaration(str(decoded.identifier), decoded.declaration, decoded.verification)

    @staticmethod
    def _decode_response(identifier: str, declaration: dict[str, Any], verification: Any) -> dict[str, Any]:
        return {"unique_identifier": identifier, "manifest": declaration, "verification": verification}

    def declaration_row(self, identifier: str) -> PluginDeclarationRow | None:
        with self.db.transaction() as session:
            return session.scalar(
                select(PluginDeclarationRow).where(PluginDeclarationRow.plugin_unique_identifier == identifier)
            )

    def decode_from_identifier(self, identifier: str) -> dict[str, Any]:
        parse_identifier(identifier)
        row = self.declaration_row(identifier)
        if row is None:
            raise NotFound(f"plugin package {identifier} is not known; upload it first")
        with self.db.transaction() as session:
            verification = session.get(VerificationRow, identifier)
        return self._decode_response(identifier, row.declaration, verification.verification if verification else None)

    def manifest(self, identifier: str) -> dict[str, Any]:
        try:
            return self.decode_from_identifier(identifier)["manifest"]
        except NotFound:  # Go's answer (internal/service/plugin_decoder.go), which Dify's client expects
            raise BadRequest("plugin not found") from None

    def readme(self, identifier: str, language: str) -> dict[str, str]:
        """The package's readme in ``language`` (else en_US, else any): ``{"content", "language"}``."""
        language = language or DEFAULT_LANGUAGE
        picked = pick_readme(readmes(self._package_entries(identifier, is_readme)), language)
        if picked is None:  # Go's answer (internal/service/plugin_readme.go): Dify then shows no readme
            raise NotFound("no readme content available for this plugin")
        return {"content": picked[1], "language": picked[0]}

    def extract_asset(self, identifier: str, file_path: str) -> bytes:
        """The bytes of ``_assets/<file_path>`` in the package (errors have HTTP status 404: Dify takes
        the body of any 200 answer for the asset)."""
        wanted = ASSETS_FOLDER + file_path
        try:
            found = self._package_entries(identifier, lambda name: name == wanted)
        except NotFound as exc:
            raise NotFound(exc.message, http_status=404) from exc
        if wanted not in found:
            raise NotFound(f"plugin package {identifier} has no asset {file_path!r}", http_status=404)
        return found[wanted]

    def _package_entries(self, identifier: str, wanted: Callable[[str], bool]) -> dict[str, bytes]:
        parse_identifier(identifier)
        row = self.declaration_row(identifier)
        path = self.package_file(identifier) if row is not None else None
        data = path.read_bytes() if path is not None else None
        if data is None:
            raise NotFound(f"plugin package {identifier} is not known; upload it first")
        try:
            return read_entries(data, wanted, max_size=self.settings.MAX_PLUGIN_PACKAGE_SIZE)
        except PackageError as exc:
            raise InternalError(f"plugin package {identifier} cannot be read: {exc.message}") from exc

    def package_known(self, identifier: str) -> bool:
        parse_identifier(identifier)
        return self.declaration_row(identifier) is not None

    def register_declaration(
        self, identifier: str, declaration: dict[str, Any], verification: dict[str, Any] | None = None
    ) -> None:
        """Keep (or replace) the declaration of an identifier: an uploaded package's, or a debug plugin's."""
        parsed = parse_identifier(identifier)
        for attempt in range(DECLARATION_WRITE_ATTEMPTS):
            try:
                with self.db.transaction() as session:
                    row = session.scalar(
                        select(PluginDeclarationRow).where(PluginDeclarationRow.plugin_unique_identifier == identifier)
                    )
                    if row is None:
                        session.add(
                            PluginDeclarationRow(
                                plugin_unique_identifier=identifier,
                                plugin_id=parsed.plugin_id,
                                declaration=declaration,
                            )
                        )
                    else:
                        row.declaration = declaration
                    session.merge(VerificationRow(plugin_unique_identifier=identifier, verification=verification))
                break
            except IntegrityError:
                # the same new package uploaded at the same time: the other insert won; update its row
                if attempt == DECLARATION_WRITE_ATTEMPTS - 1:
                    raise
        self.forget_spec(identifier)

    def remove_interrupted_uploads(self) -> int:
        """Remove what uploads cut short by the last stop left (their temporary files); returns how many."""
        return sum(bucket.remove_temporary() for bucket in (self.packages, self.installed, self.media))

    def package_file(self, identifier: str) -> Path | None:
        """Where the package of ``identifier`` is (PLUGIN_PACKAGE_CACHE_PATH/<identifier>, as Go keeps it),
        None when it is not kept. A package this daemon kept by checksum before is moved into place."""
        parsed = parse_identifier(identifier)
        target = self.packages.path(str(parsed))
        if target.is_file():
            return target
        for legacy in (
            self.packages.root / f"{parsed.checksum}.difypkg",
            self.settings.home / "packages" / f"{parsed.checksum}.difypkg",
        ):
            if legacy.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(legacy, target)
                return target
        return None

    def keep_installed_copies(self) -> int:
        """Give every installed local plugin its copy under PLUGIN_INSTALLED_PATH, as the Go daemon keeps
        them (it launches what it finds there); returns how many were missing."""
        with self.db.transaction() as session:
            identifiers = list(
                session.scalars(select(PluginRow.plugin_unique_identifier).where(PluginRow.install_type == "local"))
            )
        made = 0
        for identifier in identifiers:
            if not self.installed.exists(identifier):
                package = self.package_file(identifier)
                if package is not None:
                    self.installed.put(identifier, package.read_bytes())
                    made += 1
        return made

    # --- specs for runtimes -----------------------------------------------------------
    def spec(self, identifier: str) -> PluginSpec:
        spec = self._specs.get(identifier)
        if spec is not None:
            return spec
        row = self.declaration_row(identifier)
        if row is None:
            raise NotFound(f"plugin package {identifier} is not known")
        spec = PluginSpec(
            identifier=identifier,
            plugin_id=row.plugin_id,
            checksum=row.checksum,
            declaration=row.declaration,
            package_path=self.package_file(identifier),
        )
        self._specs[identifier] = spec
        return spec

    # --- installations ----------------------------------------------------------------
    def installation(self, tenant_id: str, plugin_id: str) -> Installation | None:
        """The tenant's installation of ``plugin_id`` (cached; the dispatch hot path)."""
        key = (tenant_id, plugin_id)
        try:
            return self._installations[key]
        except KeyError:
            pass
        with self.db.transaction() as session:
            row = session.scalar(
                select(InstallationRow).where(
                    InstallationRow.tenant_id == tenant_id, InstallationRow.plugin_id == plugin_id
                )
            )
            found = (
                Installation(row.id, row.tenant_id, row.plugin_id, row.plugin_unique_identifier, row.runtime_type)
                if row
                else None
            )
        self._installations[key] = found
        return found

    def cached_installation(self, tenant_id: str, plugin_id: str) -> Installation | None | bool:
        """The installation if it is cached (None: known to be absent); False when not cached yet."""
        return self._installations.get((tenant_id, plugin_id), False)

    def cached_spec(self, identifier: str) -> PluginSpec | None:
        return self._specs.get(identifier)

    def forget_spec(self, identifier: str) -> None:
        """Drop the cached spec of an identifier (its declaration changed or it is gone)."""
        self._specs.pop(identifier, None)

    def _forget(self, tenant_id: str, plugin_id: str) -> None:
        self._installations.pop((tenant_id, plugin_id), None)

    def install(
        self,
        tenant_id: str,
        identifier: str,
        *,
        runtime_type: str,
        source: str,
        meta: dict[str, Any] | None = None,
    ) -> tuple[Installation, Installation | None]:
        """Record an installation (idempotent). Another version of the same plugin is upgraded in
        place: the installation keeps its id, creation time and endpoints, as in the Go daemon.

        Returns the installation, and the one it replaced when no tenant uses that version any more
        (its plugin can be retired).
        """
        parsed = parse_identifier(identifier)
        row = self.declaration_row(identifier)
        if row is None:
            raise NotFound(f"plugin package {identifier} is not known; upload it first")
        declaration = row.declaration
        retired = None
        if runtime_type == "local":  # as Go's InstallToLocal: the package is copied to the installed bucket first
            package = self.package_file(identifier)
            if package is not None and not self.installed.exists(identifier):
                self.installed.put(identifier, package.read_bytes())
        with self._lock, self.db.transaction() as session:
            installation = session.scalar(
                select(InstallationRow).where(
                    InstallationRow.tenant_id == tenant_id, InstallationRow.plugin_id == parsed.plugin_id
                )
            )
            if installation is not None and installation.plugin_unique_identifier == identifier:
                return Installation(
                    installation.id, tenant_id, parsed.plugin_id, identifier, installation.runtime_type
                ), None
            if installation is None:
                installation = InstallationRow(tenant_id=tenant_id, plugin_id=parsed.plugin_id)
                session.add(installation)
            else:  # another version of the same plugin: an upgrade
                replaced = Installation(
                    installation.id,
                    tenant_id,
                    parsed.plugin_id,
                    installation.plugin_unique_identifier,
                    installation.runtime_type,
                )
                if self._release(session, installation) is not None:
                    retired = replaced
            installation.plugin_unique_identifier = identifier
            installation.runtime_type = runtime_type
            installation.source = source
            installation.meta = meta or {}
            plugin = session.scalar(select(PluginRow).where(PluginRow.plugin_unique_identifier == identifier))
            if plugin is None:
                plugin = PluginRow(
                    plugin_unique_identifier=identifier,
                    plugin_id=parsed.plugin_id,
                    refers=0,
                    install_type=runtime_type,
                    source=source,
                    remote_declaration=declaration if runtime_type == "remote" else None,
                )
                session.add(plugin)
            plugin.refers += 1
            for key, table in CATEGORY_TABLES.items():
                provider = declaration.get(key)
                if provider:
                    session.add(
                        table(
                            tenant_id=tenant_id,
                            provider=_provider_name(provider),
                            plugin_unique_identifier=identifier,
                            plugin_id=parsed.plugin_id,
                        )
                    )
            session.flush()
            result = Installation(installation.id, tenant_id, parsed.plugin_id, identifier, runtime_type)
        self._forget(tenant_id, parsed.plugin_id)
        if retired is not None:
            self.installed.delete(retired.identifier)
        return result, retired

    def _release(self, session: Any, installation: InstallationRow) -> str | None:
        """Drop what an installation holds of its version: its category rows and its reference to the
        plugin. Returns the identifier if no tenant uses it any more."""
        identifier = installation.plugin_unique_identifier
        for table in CATEGORY_TABLES.values():
            session.execute(
                delete(table).where(
                    table.tenant_id == installation.tenant_id, table.plugin_unique_identifier == identifier
                )
            )
        plugin = session.scalar(select(PluginRow).where(PluginRow.plugin_unique_identifier == identifier))
        if plugin is not None:
            plugin.refers -= 1
            if plugin.refers <= 0:
                session.delete(plugin)
                return identifier
        return None

    def _remove_installation(self, session: Any, installation: InstallationRow) -> str | None:
        """Delete an installation, its category rows and (unless a debug plugin's) its endpoints.

        Returns the identifier if no tenant uses it any more.
        """
        if installation.runtime_type != "remote":
            session.execute(
                delete(EndpointRow).where(
                    EndpointRow.tenant_id == installation.tenant_id, EndpointRow.plugin_id == installation.plugin_id
                )
            )
        unused = self._release(session, installation)
        session.delete(installation)
        return unused

    def uninstall(self, tenant_id: str, installation_id: str) -> tuple[Installation | None, bool]:
        """Remove an installation; returns it (None if absent) and whether no tenant uses its package now."""
        with self._lock, self.db.transaction() as session:
            row = session.scalar(
                select(InstallationRow).where(
                    InstallationRow.id == installation_id, InstallationRow.tenant_id == tenant_id
                )
            )
            if row is None:
                return None, False
            removed = Installation(row.id, tenant_id, row.plugin_id, row.plugin_unique_identifier, row.runtime_type)
            unused = self._remove_installation(session, row)
        self._forget(tenant_id, removed.plugin_id)
        if unused is not None:  # no tenant uses it: the Go daemon would no longer launch it either
            self.installed.delete(unused)
        return removed, unused is not None

    def drop_unused_declaration(self, identifier: str) -> bool:
        """Delete the declaration of an identifier that no installation uses and no kept package
        backs (a debugging plugin's, once it has gone); returns whether it was deleted."""
        parsed = parse_identifier(identifier)
        if self.package_file(str(parsed)) is not None:
            return False
        with self._lock, self.db.transaction() as session:
            used = session.scalar(
                select(func.count())
                .select_from(InstallationRow)
                .where(InstallationRow.plugin_unique_identifier == identifier)
            )
            if used:
                return False
            deleted = session.execute(
                delete(PluginDeclarationRow).where(PluginDeclarationRow.plugin_unique_identifier == identifier)
            )
        self.forget_spec(identifier)
        return bool(deleted.rowcount)  # type: ignore[attr-defined]

    def uninstall_plugin(self, tenant_id: str, plugin_id: str) -> tuple[Installation | None, bool]:
        found = self.installation(tenant_id, plugin_id)
        if found is None:
            return None, False
        return self.uninstall(tenant_id, found.id)

    def installed_identifiers(self, runtime_type: str | None = None) -> list[str]:
        """Every identifier installed for some tenant (optionally of one runtime type)."""
        with self.db.transaction() as session:
            query = select(InstallationRow.plugin_unique_identifier).distinct()
            if runtime_type:
                query = query.where(InstallationRow.runtime_type == runtime_type)
            return list(session.scalars(query))

    def installations_of_runtime(self, runtime_type: str) -> list[Installation]:
        """Every tenant's installations of one runtime type."""
        with self.db.transaction() as session:
            rows = session.scalars(select(InstallationRow).where(InstallationRow.runtime_type == runtime_type))
            return [
                Installation(row.id, row.tenant_id, row.plugin_id, row.plugin_unique_identifier, row.runtime_type)
                for row in rows
            ]

    # --- listings for the Dify API ------------------------------------------------------
    def _declarations(self, session: Any, identifiers: set[str]) -> dict[str, PluginDeclarationRow]:
        if not identifiers:
            return {}
        rows = session.scalars(
            select(PluginDeclarationRow).where(PluginDeclarationRow.plugin_unique_identifier.in_(identifiers))
        )
        return {row.plugin_unique_identifier: row for row in rows}

    def installation_entity(self, row: InstallationRow, declaration: PluginDeclarationRow | None) -> dict[str, Any]:
        """An installation as Dify's listings show it (``management/list`` and the category listings)."""
        parsed = PluginIdentifier.parse(row.plugin_unique_identifier)
        return {
            "id": row.id,
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at),
            "name": parsed.name,
            "tenant_id": row.tenant_id,
            "plugin_id": row.plugin_id,
            "plugin_unique_identifier": row.plugin_unique_identifier,
            "installation_id": row.id,
            "endpoints_setups": row.endpoints_setups,
            "endpoints_active": row.endpoints_active,
            "runtime_type": row.runtime_type,
            "source": row.source,
            "meta": row.meta or {},
            "version": parsed.version,
            "checksum": parsed.checksum,
            "declaration": declaration.declaration if declaration else None,
        }

    def list_installations(self, tenant_id: str, page: int, page_size: int) -> dict[str, Any]:
        with self.db.transaction() as session:
            condition = InstallationRow.tenant_id == tenant_id
            total = session.scalar(select(func.count()).select_from(InstallationRow).where(condition)) or 0
            rows = list(
                session.scalars(
                    select(InstallationRow)
                    .where(condition)
                    .order_by(InstallationRow.created_at.desc(), InstallationRow.id.desc())  # newest first, as Go
                    .offset((page - 1) * page_size)
                    .limit(page_size)
                )
            )
            declarations = self._declarations(session, {row.plugin_unique_identifier for row in rows})
            items = [self.installation_entity(row, declarations.get(row.plugin_unique_identifier)) for row in rows]
        return {"list": items, "total": total}

    def installations_by_plugin_ids(self, tenant_id: str, plugin_ids: list[str]) -> list[dict[str, Any]]:
        if not plugin_ids:
            return []
        with self.db.transaction() as session:
            rows = list(
                session.scalars(
                    select(InstallationRow).where(
                        InstallationRow.tenant_id == tenant_id, InstallationRow.plugin_id.in_(plugin_ids)
                    )
                )
            )
            declarations = self._declarations(session, {row.plugin_unique_identifier for row in rows})
            return [self.installation_entity(row, declarations.get(row.plugin_unique_identifier)) for row in rows]

    def missing(self, tenant_id: str, identifiers: list[str]) -> list[dict[str, Any]]:
        """Identifiers the tenant lacks, with the identifier it has for the same plugin, if any."""
        with self.db.transaction() as session:
            rows = session.scalars(select(InstallationRow).where(InstallationRow.tenant_id == tenant_id))
            by_plugin = {row.plugin_id: row.plugin_unique_identifier for row in rows}
        missing = []
        for identifier in identifiers:
            parsed = parse_identifier(identifier)
            current = by_plugin.get(parsed.plugin_id)
            if current != identifier:
                missing.append({"plugin_unique_identifier": identifier, "current_identifier": current})
        return missing

    def list_category(self, key: str, tenant_id: str, page: int, page_size: int) -> list[dict[str, Any]]:
        table = CATEGORY_TABLES[key]
        with self.db.transaction() as session:
            rows = list(
                session.scalars(
                    select(table)
                    .where(table.tenant_id == tenant_id)
                    .order_by(table.created_at, table.id)
                    .offset((page - 1) * page_size)
                    .limit(page_size)
                )
            )
            declarations = self._declarations(session, {row.plugin_unique_identifier for row in rows})
        return [self._category_entity(key, row, declarations.get(row.plugin_unique_identifier)) for row in rows]

    def category_provider(self, key: str, tenant_id: str, plugin_id: str, provider: str) -> dict[str, Any] | None:
        table = CATEGORY_TABLES[key]
        with self.db.transaction() as session:
            row = session.scalar(
                select(table).where(
                    table.tenant_id == tenant_id, table.plugin_id == plugin_id, table.provider == provider
                )
            )
            if row is None:
                return None
            declarations = self._declarations(session, {row.plugin_unique_identifier})
        return self._category_entity(key, row, declarations.get(row.plugin_unique_identifier))

    @staticmethod
    def _category_entity(key: str, row: Any, declaration: PluginDeclarationRow | None) -> dict[str, Any]:
        full = declaration.declaration if declaration else {}
        entity = {
            "id": row.id,
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at),
            "tenant_id": row.tenant_id,
            "provider": row.provider,
            "plugin_unique_identifier": row.plugin_unique_identifier,
            "plugin_id": row.plugin_id,
            "declaration": full.get(key),
        }
        if key == "agent_strategy":
            entity["meta"] = full.get("meta") or {}
        return entity

    def tools_exist(self, tenant_id: str, providers: list[dict[str, str]]) -> list[bool]:
        table = CATEGORY_TABLES["tool"]
        with self.db.transaction() as session:
            rows = session.execute(select(table.plugin_id, table.provider).where(table.tenant_id == tenant_id))
            present = {(plugin_id, provider) for plugin_id, provider in rows}
        return [(item.get("plugin_id", ""), item.get("provider_name", "")) in present for item in providers]


def _provider_name(provider: dict[str, Any]) -> str:
    identity = provider.get("identity") or {}
    return str(identity.get("name") or provider.get("provider") or "")


class _KeysWhenRead(Sequence[TrustedKey]):
    """The signature keys, loaded at their first use: a package without a signature never needs
    them, and loading them imports cryptography (about 7 MB of the daemon's memory)."""

    def __init__(self, load: Callable[[], list[TrustedKey]]) -> None:
        self._load = load

    @overload
    def __getitem__(self, index: int) -> TrustedKey: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[TrustedKey]: ...
    def __getitem__(self, index: int | slice) -> TrustedKey | Sequence[TrustedKey]:
        return self._load()[index]

    def __len__(self) -> int:
        return len(self._load())
