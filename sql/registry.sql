-- Part of the install script: included by extension_sql_file! in src/registry.rs (name = "registry_tables").
CREATE TABLE airrep.models (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name <> ''),
    config      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    parent_id   bigint REFERENCES airrep.models (id) ON DELETE SET NULL,
    description text,
    -- bumped whenever the model's files change, so backend caches notice
    version     bigint NOT NULL DEFAULT 1,
    -- only this role (or its members, or a superuser) may change or drop the model
    owner       regrole NOT NULL DEFAULT current_user::regrole
);
COMMENT ON TABLE airrep.models IS 'airrep encoder models; files in airrep.model_files';

CREATE TABLE airrep.model_files (
    model_id bigint NOT NULL REFERENCES airrep.models (id) ON DELETE CASCADE,
    file     text NOT NULL CHECK (file IN ('model.safetensors', 'tokenizer.json')),
    chunk    int NOT NULL CHECK (chunk >= 0),
    data     bytea NOT NULL,
    PRIMARY KEY (model_id, file, chunk)
);
ALTER TABLE airrep.model_files ALTER COLUMN data SET STORAGE EXTERNAL;

-- Ownership: anyone may list models and encode with them, only a model's owner (or a
-- member of the owning role, or a superuser) may change or drop it. The weights are not
-- readable by PUBLIC: airrep reads them for encoding as the extension's owner, and a DBA
-- grants SELECT on airrep.model_files to roles that may copy models out.
ALTER TABLE airrep.models ENABLE ROW LEVEL SECURITY;
CREATE POLICY models_visible ON airrep.models FOR SELECT USING (true);
CREATE POLICY models_added_as_self ON airrep.models FOR INSERT WITH CHECK (owner = current_user::regrole);
CREATE POLICY models_changed_by_owner ON airrep.models FOR UPDATE
    USING (pg_has_role(current_user, owner::oid, 'MEMBER')) WITH CHECK (pg_has_role(current_user, owner::oid, 'MEMBER'));
CREATE POLICY models_dropped_by_owner ON airrep.models FOR DELETE USING (pg_has_role(current_user, owner::oid, 'MEMBER'));
ALTER TABLE airrep.model_files ENABLE ROW LEVEL SECURITY;
CREATE POLICY files_visible ON airrep.model_files FOR SELECT USING (true);
CREATE POLICY files_written_by_owner ON airrep.model_files FOR ALL
    USING (EXISTS (SELECT 1 FROM airrep.models m WHERE m.id = model_id AND pg_has_role(current_user, m.owner::oid, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT 1 FROM airrep.models m WHERE m.id = model_id AND pg_has_role(current_user, m.owner::oid, 'MEMBER')));

CREATE FUNCTION airrep.bump_model_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE airrep.models SET version = version + 1
    WHERE id IN (SELECT model_id FROM changed);
    RETURN NULL;
END $$;
CREATE TRIGGER model_files_changed_insert AFTER INSERT ON airrep.model_files
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION airrep.bump_model_version();
CREATE TRIGGER model_files_changed_update AFTER UPDATE ON airrep.model_files
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION airrep.bump_model_version();
CREATE TRIGGER model_files_changed_delete AFTER DELETE ON airrep.model_files
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION airrep.bump_model_version();

CREATE VIEW airrep.model_list AS
SELECT m.id, m.name, m.owner, p.name AS parent, m.created_at, m.description,
       (m.config ->> 'num_hidden_layers')::int AS layers,
       (m.config ->> 'hidden_size')::int AS hidden_size,
       coalesce(sum(octet_length(f.data)) FILTER (WHERE f.file = 'model.safetensors'), 0) AS weights_bytes,
       coalesce(sum(octet_length(f.data)) FILTER (WHERE f.file = 'tokenizer.json'), 0) AS tokenizer_bytes,
       pg_size_pretty(coalesce(sum(octet_length(f.data)), 0)) AS total_size
FROM airrep.models m
LEFT JOIN airrep.models p ON p.id = m.parent_id
LEFT JOIN airrep.model_files f ON f.model_id = m.id
GROUP BY m.id, p.name;
