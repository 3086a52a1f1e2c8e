//! Encoder tests inside Postgres: the registry, parity with PyTorch through SQL, and errors.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use airrep_model::testing::relative_l2_error;
    use pgrx::prelude::*;
    use serde_json::Value;

    use crate::tests::support::{error_message, sql_error, FIXTURES};

    fn golden_embeddings() -> Value {
        serde_json::from_str(include_str!("../../tests/golden/embeddings.json")).unwrap()
    }

    fn load(name: &str, dir: &str) -> i64 {
        Spi::get_one::<i64>(&format!(
            "SELECT airrep.load_model('{name}', '{FIXTURES}/{dir}')"
        ))
        .unwrap()
        .unwrap()
    }

    /// Every golden text through `airrep.encode` one at a time and as one array, with
    /// `airrep.amx` on (AMX split products where the CPU has them) and off (f32 FMA).
    fn check_parity(model: &str, golden_key: &str) {
        for amx in ["on", "off"] {
            Spi::run(&format!("SET airrep.amx = {amx}")).unwrap();
            check_parity_now(model, golden_key);
        }
        Spi::run("RESET airrep.amx").unwrap();
    }

    fn amx_setting() -> String {
        Spi::get_one::<String>("SHOW airrep.amx").unwrap().unwrap()
    }

    fn check_parity_now(model: &str, golden_key: &str) {
        let golden = golden_embeddings();
        let texts: Vec<String> = golden["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        let expected = golden[golden_key].as_array().unwrap();
        let batched: Vec<Vec<f32>> = Spi::connect(|client| {
            client
                .select(
                    "SELECT e::real[] FROM unnest(airrep.encode($1, $2)) AS e",
                    None,
                    &[model.into(), texts.clone().into()],
                )
                .unwrap()
                .map(|row| row.get::<Vec<f32>>(1).unwrap().unwrap())
                .collect()
        });
        assert_eq!(batched.len(), texts.len());
        for (i, text) in texts.iter().enumerate() {
            let want: Vec<f64> = expected[i]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let single = Spi::get_one_with_args::<Vec<f32>>(
                "SELECT airrep.encode($1, $2)::real[]",
                &[model.into(), text.as_str().into()],
            )
            .unwrap()
            .unwrap();
            let error = relative_l2_error(&single, &want);
            assert!(
                error <= 1e-4,
                "{model} text {i}: relative L2 error {error:e}, airrep.amx {}",
                amx_setting()
            );
            let error = relative_l2_error(&batched[i], &want);
            assert!(
                error <= 1e-4,
                "{model} text {i} (batched): relative L2 error {error:e}, airrep.amx {}",
                amx_setting()
            );
        }
    }

    #[pg_test]
    fn tiny_airrep_parity_through_sql() {
        load("tiny", "tiny-airrep");
        check_parity("tiny", "tiny-airrep");
    }

    #[pg_test]
    fn tiny_airrep_bf16_parity_through_sql() {
        load("tiny-bf16", "tiny-airrep-bf16");
        check_parity("tiny-bf16", "tiny-airrep-bf16");
    }

    #[pg_test]
    fn minilm_parity_through_sql() {
        // scripts/test.sh stages the PyPI model; a missing model is a failure, not a skip.
        load("minilm", "minilm");
        check_parity("minilm", "minilm-base");
    }

    #[pg_test]
    fn import_model_from_bytes_matches_load_model() {
        let dir = format!("{FIXTURES}/tiny-airrep");
        let config = std::fs::read_to_string(format!("{dir}/config.json")).unwrap();
        let weights = std::fs::read(format!("{dir}/model.safetensors")).unwrap();
        let tokenizer = std::fs::read(format!("{dir}/tokenizer.json")).unwrap();
        Spi::run_with_args(
            "SELECT airrep.import_model('imported', $1::jsonb, $2, $3)",
            &[config.as_str().into(), weights.into(), tokenizer.into()],
        )
        .unwrap();
        load("loaded", "tiny-airrep");
        let same = Spi::get_one::<bool>(
            "SELECT airrep.encode('imported', 'a tiny test')::text = airrep.encode('loaded', 'a tiny test')::text",
        )
        .unwrap()
        .unwrap();
        assert!(same);
        let sizes = Spi::get_one::<i64>(
            "SELECT weights_bytes FROM airrep.model_list WHERE name = 'imported'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            sizes as usize,
            std::fs::metadata(format!("{dir}/model.safetensors"))
                .unwrap()
                .len() as usize
        );
    }

    #[pg_test]
    fn format_follows_the_airrep_template() {
        let text =
            Spi::get_one::<String>("SELECT airrep.format('  What   is 2+2? ', '4, of course.')")
                .unwrap()
                .unwrap();
        assert_eq!(text, "Question: What is 2+2?\nAnswer: 4, of course.");
        let long_prompt: String = (0..300).map(|i| format!("w{i} ")).collect();
        let text = Spi::get_one_with_args::<String>(
            "SELECT airrep.format($1, 'r')",
            &[long_prompt.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            text.split_whitespace().count(),
            1 + 256 + 2,
            "Question: + 256 words + Answer: r"
        );
    }

    #[pg_test]
    fn registry_errors_name_the_problem_and_leave_nothing_behind() {
        load("tiny", "tiny-airrep");
        let models_before = Spi::get_one::<i64>("SELECT count(*) FROM airrep.models")
            .unwrap()
            .unwrap();
        let files_before = Spi::get_one::<i64>("SELECT count(*) FROM airrep.model_files")
            .unwrap()
            .unwrap();

        let duplicate = sql_error(&format!(
            "SELECT airrep.load_model('tiny', '{FIXTURES}/tiny-airrep')"
        ));
        assert_eq!(duplicate, "model \"tiny\" already exists");
        let missing = sql_error("SELECT airrep.load_model('nowhere', '/nonexistent/model')");
        assert!(
            missing.starts_with("could not read file \"/nonexistent/model/config.json\""),
            "{missing}"
        );
        let relative = sql_error("SELECT airrep.load_model('rel', 'models/x')");
        assert!(relative.contains("absolute path"), "{relative}");

        let dir = format!("{FIXTURES}/tiny-airrep");
        let weights = std::fs::read(format!("{dir}/model.safetensors")).unwrap();
        let tokenizer = std::fs::read(format!("{dir}/tokenizer.json")).unwrap();
        let import = |config: &str| {
            let (config, weights, tokenizer) =
                (config.to_string(), weights.clone(), tokenizer.clone());
            error_message(move || {
                Spi::run_with_args(
                    "SELECT airrep.import_model('broken', $1::jsonb, $2, $3)",
                    &[config.as_str().into(), weights.into(), tokenizer.into()],
                )
                .unwrap()
            })
        };
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/config.json")).unwrap())
                .unwrap();
        let mut gpt = config.clone();
        gpt["model_type"] = "gpt2".into();
        let message = import(&gpt.to_string());
        assert!(message.contains("gpt2"), "non-BERT architecture: {message}");
        let mut wide = config.clone();
        wide["hidden_size"] = 64.into();
        let message = import(&wide.to_string());
        assert!(message.contains("shape"), "wrong shape: {message}");
        let message = import("{\"model_type\": \"bert\"}");
        assert!(
            message.starts_with("model \"broken\" cannot be loaded"),
            "missing fields: {message}"
        );

        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM airrep.models")
                .unwrap()
                .unwrap(),
            models_before
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM airrep.model_files")
                .unwrap()
                .unwrap(),
            files_before
        );

        assert_eq!(
            sql_error("SELECT airrep.encode('nope', 'x')"),
            "model \"nope\" does not exist"
        );
        Spi::run("SELECT airrep.drop_model('tiny')").unwrap();
        assert_eq!(
            sql_error("SELECT airrep.encode('tiny', 'x')"),
            "model \"tiny\" does not exist"
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM airrep.model_files")
                .unwrap()
                .unwrap(),
            0
        );
    }

    #[pg_test]
    fn load_model_needs_server_file_privileges() {
        Spi::run("CREATE ROLE airrep_tester; SET ROLE airrep_tester").unwrap();
        let message = sql_error(&format!(
            "SELECT airrep.load_model('x', '{FIXTURES}/tiny-airrep')"
        ));
        assert_eq!(message, "permission denied for function load_model");
        // the file privilege alone is not enough to write the registry
        Spi::run("RESET ROLE; GRANT pg_read_server_files TO airrep_tester; SET ROLE airrep_tester")
            .unwrap();
        let message = sql_error(&format!(
            "SELECT airrep.load_model('x', '{FIXTURES}/tiny-airrep')"
        ));
        assert_eq!(
            message,
            "permission denied: airrep.load_model needs INSERT on airrep.models, \
             airrep.model_files and UPDATE on airrep.models"
        );
        // the version trigger updates airrep.models, so INSERT alone is not enough either
        Spi::run(
            "RESET ROLE; GRANT INSERT ON airrep.models, airrep.model_files TO airrep_tester;
             SET ROLE airrep_tester",
        )
        .unwrap();
        let message = sql_error(&format!(
            "SELECT airrep.load_model('x', '{FIXTURES}/tiny-airrep')"
        ));
        assert_eq!(
            message,
            "permission denied: airrep.load_model needs UPDATE on airrep.models"
        );
        Spi::run(
            "RESET ROLE; GRANT UPDATE ON airrep.models TO airrep_tester; SET ROLE airrep_tester",
        )
        .unwrap();
        load("granted", "tiny-airrep");
        // and encoding needs no grant at all
        Spi::run("RESET ROLE; CREATE ROLE airrep_reader; SET ROLE airrep_reader").unwrap();
        let dims =
            Spi::get_one::<i32>("SELECT airrep_dims(airrep.encode('granted', 'x'))").unwrap();
        assert_eq!(dims, Some(32));
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn models_belong_to_their_owner_and_weights_are_not_public() {
        Spi::run(
            "CREATE ROLE airrep_alice; CREATE ROLE airrep_bob;
             GRANT pg_read_server_files TO airrep_alice;
             GRANT INSERT, UPDATE, DELETE ON airrep.models, airrep.model_files TO airrep_alice, airrep_bob;
             SET ROLE airrep_alice",
        )
        .unwrap();
        load("alices", "tiny-airrep");
        let owner =
            Spi::get_one::<String>("SELECT owner::text FROM airrep.models WHERE name = 'alices'")
                .unwrap();
        assert_eq!(owner.as_deref(), Some("airrep_alice"));
        Spi::run("SET ROLE airrep_bob").unwrap();
        // bob may use the model, not read its weights, change them or drop it
        let dims = Spi::get_one::<i32>("SELECT airrep_dims(airrep.encode('alices', 'x'))").unwrap();
        assert_eq!(dims, Some(32));
        assert_eq!(
            sql_error("SELECT count(*) FROM airrep.model_files"),
            "permission denied for table model_files"
        );
        assert_eq!(
            sql_error("SELECT airrep.drop_model('alices')"),
            "must be owner of model \"alices\""
        );
        Spi::run("DELETE FROM airrep.models WHERE name = 'alices'").unwrap();
        Spi::run("UPDATE airrep.models SET name = 'bobs' WHERE name = 'alices'").unwrap();
        // nor claim a model in someone else's name
        let message = sql_error(
            "INSERT INTO airrep.models (name, config, owner) VALUES ('forged', '{}', 'airrep_alice')",
        );
        assert!(message.contains("row-level security"), "{message}");
        Spi::run("RESET ROLE").unwrap();
        let left = Spi::get_one::<i64>("SELECT count(*) FROM airrep.models WHERE name = 'alices'")
            .unwrap();
        assert_eq!(left, Some(1));
        // the owner, or a superuser, may drop it
        Spi::run("SET ROLE airrep_alice; SELECT airrep.drop_model('alices'); RESET ROLE").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM airrep.models").unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    fn cuda_device_is_a_clear_error_on_a_cpu_build() {
        load("tiny", "tiny-airrep");
        Spi::run("SET airrep.device = 'cuda'").unwrap();
        let message = sql_error("SELECT airrep.encode('tiny', 'x')");
        assert!(message.contains("built without CUDA support"), "{message}");
        // Said before any weights are read (issue 27): even before the model is looked up.
        let message = sql_error("SELECT airrep.encode('no such model', 'x')");
        assert!(message.contains("built without CUDA support"), "{message}");
        Spi::run("SET airrep.device = 'tpu'").unwrap();
        let message = sql_error("SELECT airrep.encode('tiny', 'x')");
        assert!(message.contains("unknown device"), "{message}");
        Spi::run("RESET airrep.device").unwrap();
        // the backend stays usable on the CPU
        assert!(
            Spi::get_one::<i32>("SELECT airrep_dims(airrep.encode('tiny', 'x'))")
                .unwrap()
                .unwrap()
                == 32
        );
    }

    #[pg_test]
    fn precision_setting_selects_bf16_and_rejects_unknown_values() {
        load("tiny", "tiny-airrep");
        let golden = golden_embeddings();
        let text = golden["texts"][8].as_str().unwrap().replace('\'', "''");
        let want: Vec<f64> = golden["tiny-airrep"][8]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let encode = || {
            Spi::get_one::<Vec<f32>>(&format!("SELECT airrep.encode('tiny', '{text}')::real[]"))
                .unwrap()
                .unwrap()
        };
        let f32_error = relative_l2_error(&encode(), &want);
        Spi::run("SET airrep.precision = 'bf16'").unwrap();
        let bf16_error = relative_l2_error(&encode(), &want);
        // mixed precision: close to the golden values, but not the f32 result
        assert!(
            f32_error < 1e-4 && bf16_error > 1e-4 && bf16_error < 1e-2,
            "{f32_error} {bf16_error}"
        );
        Spi::run("SET airrep.precision = 'f16'").unwrap();
        let message = sql_error("SELECT airrep.encode('tiny', 'x')");
        assert!(
            message.contains("airrep.precision") && message.contains("f16"),
            "{message}"
        );
        Spi::run("RESET airrep.precision").unwrap();
        assert!(relative_l2_error(&encode(), &want) < 1e-4);
    }

    #[pg_test]
    fn cache_notices_a_changed_model() {
        load("tiny", "tiny-airrep");
        let before = Spi::get_one::<String>("SELECT airrep.encode('tiny', 'cache check')::text")
            .unwrap()
            .unwrap();
        // Replace the weights with the bf16 model's: the version bump must evict the cached copy.
        Spi::run("DELETE FROM airrep.model_files WHERE model_id = (SELECT id FROM airrep.models WHERE name = 'tiny')")
            .unwrap();
        load("bf16", "tiny-airrep-bf16");
        Spi::run(
            "INSERT INTO airrep.model_files (model_id, file, chunk, data)
             SELECT (SELECT id FROM airrep.models WHERE name = 'tiny'), file, chunk, data
             FROM airrep.model_files WHERE model_id = (SELECT id FROM airrep.models WHERE name = 'bf16')",
        )
        .unwrap();
        let after = Spi::get_one::<String>("SELECT airrep.encode('tiny', 'cache check')::text")
            .unwrap()
            .unwrap();
        let bf16 = Spi::get_one::<String>("SELECT airrep.encode('bf16', 'cache check')::text")
            .unwrap()
            .unwrap();
        assert_ne!(before, after);
        assert_eq!(after, bf16);
    }
}
