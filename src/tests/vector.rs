//! The vector type and group influence inside Postgres: golden values through SQL, parallel
//! aggregation, the binary wire format, and robustness against garbage input.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;
    use serde_json::Value;

    use airrep_model::testing::relative_error;

    use crate::tests::support::{one_f64, sql_error};

    /// `[a,b,...]` with enough digits that the value reaches Postgres unchanged.
    fn vector_literal(values: &[Value]) -> String {
        let items: Vec<String> = values
            .iter()
            .map(|v| format!("{:?}", v.as_f64().unwrap() as f32))
            .collect();
        format!("'[{}]'::airrep_vector", items.join(","))
    }

    #[pg_test]
    fn golden_group_influence_through_sql() {
        let golden: Value =
            serde_json::from_str(include_str!("../../tests/golden/group_influence.json")).unwrap();
        let cases = golden["cases"].as_array().unwrap();
        assert!(!cases.is_empty());
        for (index, case) in cases.iter().enumerate() {
            let target = vector_literal(case["target"].as_array().unwrap());
            let rows: Vec<String> = case["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| format!("({})", vector_literal(m.as_array().unwrap())))
                .collect();
            let from = format!("FROM (VALUES {}) AS m(member)", rows.join(","));
            let attention = one_f64(&format!("SELECT group_influence({target}, member) {from}"));
            let sum = one_f64(&format!(
                "SELECT group_influence({target}, member, 'sum') {from}"
            ));
            let expected_attention = case["attention"].as_f64().unwrap();
            let expected_sum = case["sum"].as_f64().unwrap();
            assert!(
                relative_error(attention, expected_attention) <= 1e-6,
                "case {index}: attention {attention} vs {expected_attention}"
            );
            assert!(
                relative_error(sum, expected_sum) <= 1e-6,
                "case {index}: sum {sum} vs {expected_sum}"
            );
        }
    }

    const FORCE_PARALLEL: &str = "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; \
         SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2;";

    fn explain(query: &str) -> String {
        Spi::connect(|client| {
            client
                .select(&format!("EXPLAIN (COSTS OFF) {query}"), None, &[])
                .unwrap()
                .map(|row| row.get::<String>(1).unwrap().unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[pg_test]
    fn parallel_aggregation_matches_serial() {
        // 200k random 384-dim rows; the target is one fixed random vector.
        Spi::run(
            "SELECT setseed(0.42);
             CREATE TABLE pool (id int, grp int, v airrep_vector(384));
             INSERT INTO pool
             SELECT i, i % 4, (SELECT array_agg(random() * 2 - 1 + d * 0 + i * 0) FROM generate_series(1, 384) AS d)
             FROM generate_series(1, 200000) AS i;
             ANALYZE pool;",
        )
        .unwrap();
        // The target is a constant, as when a client passes a target embedding as a parameter.
        let target = Spi::get_one::<String>("SELECT v::text FROM pool WHERE id = 1")
            .unwrap()
            .unwrap();
        let target = format!("'{target}'::airrep_vector");
        let queries = [
            format!("SELECT group_influence({target}, v) FROM pool"),
            format!("SELECT group_influence({target}, v, 'sum') FROM pool"),
            "SELECT airrep_norm(avg(v)) FROM pool".into(),
            "SELECT airrep_norm(sum(v)) FROM pool".into(),
            "SELECT (avg(v)::real[])[17]::float8 FROM pool".into(),
        ];
        Spi::run("SET max_parallel_workers_per_gather = 0").unwrap();
        let serial: Vec<f64> = queries.iter().map(|q| one_f64(q)).collect();
        Spi::run(FORCE_PARALLEL).unwrap();
        for (query, serial) in queries.iter().zip(serial) {
            let plan = explain(query);
            assert!(
                plan.contains("Partial Aggregate"),
                "no parallel plan for {query}:\n{plan}"
            );
            let parallel = one_f64(query);
            assert!(
                relative_error(parallel, serial) <= 1e-9,
                "{query}: parallel {parallel} vs serial {serial}"
            );
        }
        // The grouped form splits too.
        let grouped = format!("SELECT sum(g) FROM (SELECT grp, group_influence({target}, v) AS g FROM pool GROUP BY grp) s");
        let plan = explain(&grouped);
        assert!(
            plan.contains("Partial"),
            "no parallel plan for the grouped query:\n{plan}"
        );
        let parallel = one_f64(&grouped);
        Spi::run("SET max_parallel_workers_per_gather = 0").unwrap();
        let serial = one_f64(&grouped);
        assert!(
            relative_error(parallel, serial) <= 1e-9,
            "grouped: {parallel} vs {serial}"
        );
    }

    #[pg_test]
    fn binary_send_uses_pgvector_wire_format() {
        // int16 dim = 2, int16 unused = 0, then big-endian float4 1.0 = 3f800000 and -2.5 = c0200000.
        let bytes = Spi::get_one::<Vec<u8>>("SELECT airrep_vector_send('[1,-2.5]')")
            .unwrap()
            .unwrap();
        assert_eq!(bytes, vec![0, 2, 0, 0, 0x3f, 0x80, 0, 0, 0xc0, 0x20, 0, 0]);
    }

    /// A server-side COPY file, removed when the test ends, passed or not.
    struct CopyFile(std::path::PathBuf);

    impl CopyFile {
        fn new(stem: &str) -> Self {
            Self(std::env::temp_dir().join(format!("{stem}-{}.bin", std::process::id())))
        }
    }

    impl Drop for CopyFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[pg_test]
    fn binary_copy_round_trip() {
        let file = CopyFile::new("airrep-copy");
        let path = file.0.display();
        Spi::run(&format!(
            "CREATE TABLE source (id int, v airrep_vector);
             INSERT INTO source VALUES (1, '[1,-2.5,3e-7]'), (2, '[3.4028235e38]'), (3, NULL),
                                       (4, '[0.1,0.2,0.3,0.4]');
             COPY source TO '{path}' (FORMAT binary);
             CREATE TABLE copied (id int, v airrep_vector);
             COPY copied FROM '{path}' (FORMAT binary);"
        ))
        .unwrap();
        let mismatches = Spi::get_one::<i64>(
            "SELECT count(*) FROM source s FULL JOIN copied c USING (id)
             WHERE s.v::text IS DISTINCT FROM c.v::text",
        )
        .unwrap()
        .unwrap();
        assert_eq!(mismatches, 0);
        let copied = Spi::get_one::<i64>("SELECT count(*) FROM copied")
            .unwrap()
            .unwrap();
        assert_eq!(copied, 4);
    }

    #[pg_test]
    fn binary_copy_rejects_bad_values() {
        let file = CopyFile::new("airrep-copy-bad");
        let path = file.0.display();
        // A real[] column written in binary has a different layout; a vector column of
        // dimension 3 cannot be loaded into airrep_vector(2).
        Spi::run(&format!(
            "CREATE TABLE wide (v airrep_vector); INSERT INTO wide VALUES ('[1,2,3]');
             COPY wide TO '{path}' (FORMAT binary);
             CREATE TABLE narrow (v airrep_vector(2));"
        ))
        .unwrap();
        let message = sql_error(&format!("COPY narrow FROM '{path}' (FORMAT binary)"));
        assert_eq!(message, "expected 2 dimensions, not 3");
    }

    #[pg_test]
    fn random_garbage_text_never_crashes_and_accepted_values_round_trip() {
        // A property test in PL/pgSQL: each random string either parses, and then its text form
        // parses back to the same text, or raises an ordinary error that a subtransaction catches.
        let summary = Spi::get_one::<String>(
            r#"
            CREATE FUNCTION pg_temp.fuzz(n int) RETURNS text LANGUAGE plpgsql AS $$
            DECLARE
                alphabet text := '[]0123456789.,eE+- naNifyIt' || chr(9) || chr(10) || 'x\"''{}';
                s text; accepted int := 0; rejected int := 0; v airrep_vector;
            BEGIN
                PERFORM setseed(0.7);
                FOR i IN 1..n LOOP
                    s := '';
                    FOR j IN 1..(1 + floor(random() * 24))::int LOOP
                        s := s || substr(alphabet, 1 + floor(random() * length(alphabet))::int, 1);
                    END LOOP;
                    IF random() < 0.5 THEN s := '[' || s || ']'; END IF;
                    BEGIN
                        v := s::airrep_vector;
                        IF v::text::airrep_vector::text <> v::text THEN
                            RAISE EXCEPTION 'round trip failed for %', s;
                        END IF;
                        accepted := accepted + 1;
                    EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range
                              OR data_exception THEN
                        rejected := rejected + 1;
                    END;
                END LOOP;
                RETURN accepted || ' accepted, ' || rejected || ' rejected';
            END $$;
            SELECT pg_temp.fuzz(20000);
            "#,
        )
        .unwrap()
        .unwrap();
        let counts: Vec<u32> = summary
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|s| s.parse().ok())
            .collect();
        assert_eq!(counts.iter().sum::<u32>(), 20000, "{summary}");
        assert!(
            counts[0] > 0 && counts[1] > 0,
            "both outcomes should occur: {summary}"
        );
    }
}
