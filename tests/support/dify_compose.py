"""The environment Dify's ``docker/docker-compose.yaml`` (langgenius/dify) gives its ``plugin_daemon``
service when ``.env`` sets nothing: the service's own block, plus the Go settings (and a few others)
of the shared ``x-shared-env`` block it merges. Values as the compose file's defaults write them.
"""

from __future__ import annotations

#: from the shared block (``<<: *shared-api-worker-env``): what the Go daemon reads, and a few it does not
SHARED = {
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "UV_CACHE_DIR": "/tmp/.uv-cache",
    "LOG_LEVEL": "INFO",
    "LOG_OUTPUT_FORMAT": "text",
    "LOG_FILE": "/app/logs/server.log",
    "LOG_FILE_MAX_SIZE": "20",
    "LOG_FILE_BACKUP_COUNT": "5",
    "DEPLOY_ENV": "PRODUCTION",
    "MIGRATION_ENABLED": "true",
    "DB_TYPE": "postgresql",
    "DB_USERNAME": "postgres",
    "DB_PASSWORD": "difyai123456",
    "DB_HOST": "db_postgres",
    "DB_PORT": "5432",
    "REDIS_HOST": "redis",
    "REDIS_PORT": "6379",
    "REDIS_USERNAME": "",
    "REDIS_PASSWORD": "difyai123456",
    "REDIS_USE_SSL": "false",
    "REDIS_SSL_CERT_REQS": "CERT_NONE",
    "REDIS_SSL_CA_CERTS": "",
    "REDIS_DB": "0",
    "REDIS_USE_SENTINEL": "false",
    "REDIS_SENTINELS": "",
    "REDIS_SENTINEL_SERVICE_NAME": "",
    "REDIS_SENTINEL_USERNAME": "",
    "REDIS_SENTINEL_PASSWORD": "",
    "REDIS_SENTINEL_SOCKET_TIMEOUT": "0.1",
    "S3_ENDPOINT": "",
}

#: the plugin_daemon service's own block (it wins over the shared one)
PLUGIN_DAEMON = {
    "DB_DATABASE": "dify_plugin",
    "DB_SSL_MODE": "disable",
    "SERVER_PORT": "5002",
    "SERVER_KEY": "lYkiYYT6owG+71oLerGzA7GXCgOT++6ovaezWAjpCjf+Sjc3ZtU+qUEi",
    "MAX_PLUGIN_PACKAGE_SIZE": "52428800",
    "PPROF_ENABLED": "false",
    "DIFY_INNER_API_URL": "http://api:5001",
    "DIFY_INNER_API_KEY": "QaHbTe77CtuXmsfyhR7+vRjI/+XbV1AaFy691iy+kGDv2Jvy0/eAh8Y1",
    "PLUGIN_REMOTE_INSTALLING_HOST": "0.0.0.0",
    "PLUGIN_REMOTE_INSTALLING_PORT": "5003",
    "PLUGIN_WORKING_PATH": "/app/storage/cwd",
    "FORCE_VERIFYING_SIGNATURE": "true",
    "PYTHON_ENV_INIT_TIMEOUT": "120",
    "PLUGIN_MAX_EXECUTION_TIMEOUT": "600",
    "PLUGIN_STDIO_BUFFER_SIZE": "1024",
    "PLUGIN_STDIO_MAX_BUFFER_SIZE": "5242880",
    "PIP_MIRROR_URL": "",
    "PLUGIN_STORAGE_TYPE": "local",
    "PLUGIN_STORAGE_LOCAL_ROOT": "/app/storage",
    "PLUGIN_INSTALLED_PATH": "plugin",
    "PLUGIN_PACKAGE_CACHE_PATH": "plugin_packages",
    "PLUGIN_MEDIA_CACHE_PATH": "assets",
    "PLUGIN_STORAGE_OSS_BUCKET": "",
    "S3_USE_AWS_MANAGED_IAM": "false",
    "S3_USE_AWS": "false",
    "S3_ENDPOINT": "",
    "S3_USE_PATH_STYLE": "false",
    "AWS_ACCESS_KEY": "",
    "AWS_SECRET_KEY": "",
    "AWS_REGION": "",
    "AZURE_BLOB_STORAGE_CONNECTION_STRING": "",
    "AZURE_BLOB_STORAGE_CONTAINER_NAME": "",
    "TENCENT_COS_SECRET_KEY": "",
    "TENCENT_COS_SECRET_ID": "",
    "TENCENT_COS_REGION": "",
    "ALIYUN_OSS_REGION": "",
    "ALIYUN_OSS_ENDPOINT": "",
    "ALIYUN_OSS_ACCESS_KEY_ID": "",
    "ALIYUN_OSS_ACCESS_KEY_SECRET": "",
    "ALIYUN_OSS_AUTH_VERSION": "v4",
    "ALIYUN_OSS_PATH": "",
    "VOLCENGINE_TOS_ENDPOINT": "",
    "VOLCENGINE_TOS_ACCESS_KEY": "",
    "VOLCENGINE_TOS_SECRET_KEY": "",
    "VOLCENGINE_TOS_REGION": "",
    "SENTRY_ENABLED": "false",
    "SENTRY_DSN": "",
}


def plugin_daemon_environment(**changes: str) -> dict[str, str]:
    """The service's environment, with ``changes`` (what an operator's ``.env`` would set)."""
    return {**SHARED, **PLUGIN_DAEMON, **changes}
