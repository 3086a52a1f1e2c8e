-- Last in the suite: no test crashed a backend (a crash restarts the postmaster).
SELECT started = pg_postmaster_start_time() AS no_restart FROM airrep_canary;
DROP TABLE airrep_canary;
