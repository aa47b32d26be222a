-- The Go plugin daemon's database schema on PostgreSQL, as GORM's AutoMigrate leaves it.
--
-- Derived by hand from langgenius/dify-plugin-daemon at commit bdb5642a (gorm v1.30.0,
-- gorm.io/driver/postgres v1.5.11): the models of internal/types/models/*.go, in the order
-- internal/db/init.go migrates them. GORM's PostgreSQL types: Go int -> bigint, string with a
-- size -> varchar(size), string without one and every json-serialized field -> text,
-- time.Time -> timestamptz, bool -> boolean, `type:uuid` -> uuid. Ids are uuid primary keys
-- without a database default: the Go daemon sets a UUID v7 itself before each insert
-- (models.Model.BeforeCreate). `index` makes idx_<table>_<column>; `unique` makes a
-- uni_<table>_<column> constraint; named indexes keep their names. Columns are nullable unless
-- the model says `not null`.

CREATE TABLE plugins (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    plugin_unique_identifier varchar(255),
    plugin_id varchar(255),
    refers bigint DEFAULT 0,
    install_type varchar(127),
    manifest_type varchar(127),
    remote_declaration text,
    source varchar(63) DEFAULT '',
    PRIMARY KEY (id)
);
CREATE UNIQUE INDEX idx_plugin_unique_identifier ON plugins (plugin_unique_identifier);
CREATE INDEX idx_plugins_plugin_id ON plugins (plugin_id);
CREATE INDEX idx_plugins_install_type ON plugins (install_type);

CREATE TABLE plugin_installations (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    tenant_id uuid,
    plugin_id varchar(255),
    plugin_unique_identifier varchar(255),
    runtime_type varchar(127),
    endpoints_setups bigint,
    endpoints_active bigint,
    source varchar(63),
    meta text,
    PRIMARY KEY (id)
);
CREATE INDEX idx_plugin_installations_tenant_id ON plugin_installations (tenant_id);
CREATE UNIQUE INDEX idx_tenant_plugin ON plugin_installations (tenant_id, plugin_id);
CREATE INDEX idx_plugin_installations_plugin_id ON plugin_installations (plugin_id);
CREATE INDEX idx_plugin_installations_plugin_unique_identifier ON plugin_installations (plugin_unique_identifier);

CREATE TABLE plugin_declarations (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    plugin_unique_identifier varchar(255),
    plugin_id varchar(255),
    declaration text,
    PRIMARY KEY (id),
    CONSTRAINT uni_plugin_declarations_plugin_unique_identifier UNIQUE (plugin_unique_identifier)
);
CREATE INDEX idx_plugin_declarations_plugin_id ON plugin_declarations (plugin_id);

CREATE TABLE endpoints (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    name varchar(127) DEFAULT 'default',
    hook_id varchar(127),
    tenant_id varchar(64),
    user_id varchar(64),
    plugin_id varchar(64),
    expired_at timestamptz,
    enabled boolean,
    settings text,
    PRIMARY KEY (id),
    CONSTRAINT uni_endpoints_hook_id UNIQUE (hook_id)
);
CREATE INDEX idx_endpoints_tenant_id ON endpoints (tenant_id);
CREATE INDEX idx_endpoints_user_id ON endpoints (user_id);
CREATE INDEX idx_endpoints_plugin_id ON endpoints (plugin_id);

CREATE TABLE serverless_runtimes (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    plugin_unique_identifier varchar(255),
    function_url varchar(255),
    function_name varchar(127),
    type varchar(127),
    checksum varchar(127),
    PRIMARY KEY (id),
    CONSTRAINT uni_serverless_runtimes_plugin_unique_identifier UNIQUE (plugin_unique_identifier)
);
CREATE INDEX idx_serverless_runtimes_checksum ON serverless_runtimes (checksum);

CREATE TABLE datasource_installations (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    tenant_id uuid NOT NULL,
    provider varchar(127) NOT NULL,
    plugin_unique_identifier varchar(255),
    plugin_id varchar(255),
    PRIMARY KEY (id)
);
CREATE INDEX idx_datasource_installations_tenant_id ON datasource_installations (tenant_id);
CREATE INDEX idx_datasource_installations_provider ON datasource_installations (provider);
CREATE INDEX idx_datasource_installations_plugin_unique_identifier ON datasource_installations (plugin_unique_identifier);
CREATE INDEX idx_datasource_installations_plugin_id ON datasource_installations (plugin_id);

CREATE TABLE tool_installations (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    tenant_id uuid NOT NULL,
    provider varchar(127) NOT NULL,
    plugin_unique_identifier varchar(255),
    plugin_id varchar(255),
    PRIMARY KEY (id)
);
CREATE INDEX idx_tool_installations_tenant_id ON tool_installations (tenant_id);
CREATE INDEX idx_tool_installations_provider ON tool_installations (provider);
CREATE INDEX idx_tool_installations_plugin_unique_identifier ON tool_installations (plugin_unique_identifier);
CREATE INDEX idx_tool_installations_plugin_id ON tool_installations (plugin_id);

CREATE TABLE ai_model_installations (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    provider varchar(127) NOT NULL,
    tenant_id uuid NOT NULL,
    plugin_unique_identifier varchar(255),
    plugin_id varchar(255),
    PRIMARY KEY (id)
);
CREATE INDEX idx_ai_model_installations_provider ON ai_model_installations (provider);
CREATE INDEX idx_ai_model_installations_tenant_id ON ai_model_installations (tenant_id);
CREATE INDEX idx_ai_model_installations_plugin_unique_identifier ON ai_model_installations (plugin_unique_identifier);
CREATE INDEX idx_ai_model_installations_plugin_id ON ai_model_installations (plugin_id);

CREATE TABLE install_tasks (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    status varchar(50) NOT NULL,
    tenant_id uuid NOT NULL,
    total_plugins bigint NOT NULL,
    completed_plugins bigint NOT NULL,
    plugins text,
    PRIMARY KEY (id)
);
CREATE INDEX idx_install_tasks_status ON install_tasks (status);

CREATE TABLE tenant_storages (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    tenant_id varchar(255) NOT NULL,
    plugin_id varchar(255) NOT NULL,
    size bigint NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX idx_tenant_storages_tenant_id ON tenant_storages (tenant_id);
CREATE INDEX idx_tenant_storages_plugin_id ON tenant_storages (plugin_id);

CREATE TABLE agent_strategy_installations (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    tenant_id uuid NOT NULL,
    provider varchar(127) NOT NULL,
    plugin_unique_identifier varchar(255),
    plugin_id varchar(255),
    PRIMARY KEY (id)
);
CREATE INDEX idx_agent_strategy_installations_tenant_id ON agent_strategy_installations (tenant_id);
CREATE INDEX idx_agent_strategy_installations_provider ON agent_strategy_installations (provider);
CREATE INDEX idx_agent_strategy_installations_plugin_unique_identifier ON agent_strategy_installations (plugin_unique_identifier);
CREATE INDEX idx_agent_strategy_installations_plugin_id ON agent_strategy_installations (plugin_id);

CREATE TABLE trigger_installations (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    tenant_id uuid NOT NULL,
    provider varchar(127) NOT NULL,
    plugin_unique_identifier varchar(255),
    plugin_id varchar(255),
    PRIMARY KEY (id)
);
CREATE INDEX idx_trigger_installations_tenant_id ON trigger_installations (tenant_id);
CREATE INDEX idx_trigger_installations_provider ON trigger_installations (provider);
CREATE INDEX idx_trigger_installations_plugin_unique_identifier ON trigger_installations (plugin_unique_identifier);
CREATE INDEX idx_trigger_installations_plugin_id ON trigger_installations (plugin_id);

CREATE TABLE plugin_readme_records (
    id uuid NOT NULL,
    created_at timestamptz,
    updated_at timestamptz,
    plugin_unique_identifier varchar(255) NOT NULL,
    language varchar(10) NOT NULL,
    content text NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX idx_plugin_readme_records_plugin_unique_identifier ON plugin_readme_records (plugin_unique_identifier);
