-- run once after the regression database is (re)created
CREATE EXTENSION airrep;
-- the crash canary: canary.sql checks that the server never restarted during the suite
CREATE TABLE airrep_canary AS SELECT pg_postmaster_start_time() AS started;
