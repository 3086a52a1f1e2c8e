-- Part of the install script: included by extension_sql_file! in src/train.rs (name = "training_log").
CREATE TABLE airrep.training_log (
    model_id   bigint NOT NULL REFERENCES airrep.models (id) ON DELETE CASCADE,
    step       int NOT NULL,
    loss       double precision NOT NULL,
    grad_norm  double precision NOT NULL,
    lr         double precision NOT NULL,
    kept_pairs int NOT NULL,
    seconds    double precision NOT NULL,
    validation_lds double precision,
    PRIMARY KEY (model_id, step)
);
COMMENT ON TABLE airrep.training_log IS 'one row per optimiser step of airrep.train; grad_norm is before clipping; validation_lds is the held-out LDS of the weights after the step, on validation steps';
-- Like a model's files, its training log is written only by the model's owner.
ALTER TABLE airrep.training_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY log_visible ON airrep.training_log FOR SELECT USING (true);
CREATE POLICY log_written_by_owner ON airrep.training_log FOR ALL
    USING (EXISTS (SELECT 1 FROM airrep.models m WHERE m.id = model_id AND pg_has_role(current_user, m.owner::oid, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT 1 FROM airrep.models m WHERE m.id = model_id AND pg_has_role(current_user, m.owner::oid, 'MEMBER')));
-- Models are data: pg_dump carries the registry's rows (and the id sequence's position).
SELECT pg_catalog.pg_extension_config_dump('airrep.models', '');
SELECT pg_catalog.pg_extension_config_dump('airrep.model_files', '');
SELECT pg_catalog.pg_extension_config_dump('airrep.training_log', '');
-- An identity sequence's position is dumped only when it is marked itself.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('airrep.models', 'id')::regclass, '');
