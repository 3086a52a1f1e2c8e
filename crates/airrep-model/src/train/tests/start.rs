//! Where a run starts: the depth, centring and unit length chosen, the projector inits.

use super::*;

#[test]
fn identity_projector_starts_at_the_base_geometry() {
    let golden = golden();
    let base = base_checkpoint();
    let data = golden_data(&golden);
    let targets: Vec<usize> = (0..data.targets.len()).collect();
    let subsets: Vec<usize> = (0..data.subsets.len()).collect();
    let scores = |init| {
        let options = TrainOptions {
            projector_init: init,
            ..golden_options(&golden)
        };
        let trainer =
            Trainer::new(&base, &tokenizer_json(), data.clone(), options, &never).unwrap();
        trainer.group_scores(&targets, &subsets).unwrap()
    };
    // The base model's own group scores: mean-pooled states, no projector.
    let encoder =
        crate::Encoder::new(&base, &tokenizer_json(), crate::EncoderOptions::default()).unwrap();
    let embed = |texts: &[String]| {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        encoder.encode(&texts).unwrap()
    };
    // Every example is the union, so a subset's members are their own positions in it.
    let want = airrep_core::group::group_scores(
        &embed(&data.targets),
        &embed(&data.examples),
        &data.subsets,
        Pooling::Attention,
    );
    assert_matrix_rel(
        &scores(ProjectorInit::Identity),
        &want,
        1e-4,
        "identity start",
    );
    let random = scores(ProjectorInit::Random);
    assert!(
        random[0][0] != want[0][0],
        "a random projector changes the scores"
    );
}

/// LDS over every label of `start` (truncated, centred or not, unit length or not) scored
/// by a trainer of that fixed start (the reference for the choice).
fn lds_of_start(data: &TrainData, start: StartPoint, pooling: Pooling) -> f64 {
    let options = TrainOptions {
        steps: 0,
        holdout_fraction: 0.0,
        depth: Depth::Layers(start.layers),
        projector_init: if start.centered {
            ProjectorInit::Centered
        } else {
            ProjectorInit::Identity
        },
        unit_scale: start.unit_scale.map_or(UnitScale::Off, UnitScale::Fixed),
        response_weight: ResponseWeight::Fixed(start.response_weight),
        pooling,
        ..TrainOptions::default()
    };
    let trainer = base_trainer(data, options);
    let (targets, subsets) = everything(data);
    lds(
        &trainer.group_scores(&targets, &subsets).unwrap(),
        &data.losses,
    )
    .0
}

/// The start 'auto' keeps from `data` is the one of best LDS among every depth, centring,
/// unit length and `response_weights`, each scored as a trainer of that fixed start scores.
fn auto_start_keeps_the_best(data: &TrainData, response_weights: &[f32]) {
    let weights = response_weights;
    for pooling in [Pooling::Attention, Pooling::Sum] {
        // centred at each depth, then the base unchanged (last: it wins ties), each as it
        // is and at every unit length
        let starts: Vec<StartPoint> = [(1, true), (2, true), (2, false)]
            .into_iter()
            .flat_map(|(layers, centered)| {
                // (with sum pooling 'auto' keeps the raw dot product)
                let lengths = match pooling {
                    Pooling::Sum => 0,
                    Pooling::Attention => AUTO_UNIT_SCALES.len(),
                };
                weights.iter().flat_map(move |&response_weight| {
                    std::iter::once(None)
                        .chain(AUTO_UNIT_SCALES[..lengths].iter().map(|&s| Some(s)))
                        .map(move |unit_scale| StartPoint {
                            layers,
                            centered,
                            unit_scale,
                            response_weight,
                        })
                })
            })
            .collect();
        let want: Vec<f64> = starts
            .iter()
            .map(|&start| lds_of_start(data, start, pooling))
            .collect();
        let options = TrainOptions {
            steps: 0,
            pooling,
            train_layers: TrainLayers::Projector,
            ..TrainOptions::default()
        };
        let trainer = Trainer::new(
            &base_checkpoint(),
            &tokenizer_json(),
            data.clone(),
            options,
            &never,
        )
        .unwrap();
        let choice = trainer.start_choice().unwrap().clone();
        assert_eq!(choice.of, 2);
        assert_eq!(choice.scores.len(), starts.len());
        for (score, (&start, want)) in choice.scores.iter().zip(starts.iter().zip(&want)) {
            assert_eq!(score.start, start);
            assert!((score.lds - want).abs() < 1e-9, "{score:?} against {want}");
        }
        // the best, the later on a tie
        let best = (0..starts.len())
            .max_by(|&a, &b| want[a].total_cmp(&want[b]).then(a.cmp(&b)))
            .unwrap();
        assert_eq!(choice.kept, starts[best], "{pooling}: {want:?}");
        // The pooled states the choice computed serve the projector's training as they
        // are: the trainer scores exactly as a trainer built for that start does.
        let all_targets: Vec<usize> = (0..data.targets.len()).collect();
        let all_subsets: Vec<usize> = (0..data.subsets.len()).collect();
        let scores = trainer.group_scores(&all_targets, &all_subsets).unwrap();
        let got = lds(&scores, &data.losses).0;
        assert!(
            (got - want[best]).abs() < 1e-9,
            "{got} against {}",
            want[best]
        );
        let (checkpoint, selection) = trainer.into_checkpoint().unwrap();
        assert_eq!(checkpoint.config.num_hidden_layers, starts[best].layers);
        assert_eq!(checkpoint.unit_scale(), starts[best].unit_scale);
        let weight = starts[best].response_weight;
        assert_eq!(
            checkpoint
                .config
                .response_weighting
                .as_ref()
                .map(|w| w.weight),
            (weight != 1.0).then_some(weight)
        );
        let bias_is_zero = checkpoint.tensors()[PROJECTOR_BIAS]
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            == 0.0;
        assert_eq!(bias_is_zero, !starts[best].centered);
        assert!(selection.reason.starts_with(&choice.describe()));
    }
}

/// Texts without the template's marker score the plain mean only; in the template, each
/// of the 'auto' response weights too.
#[test]
fn auto_depth_keeps_the_start_with_the_best_lds_at_step_0() {
    let cases = [
        (selection_data(), &[1.0][..]),
        (template_data(), &AUTO_RESPONSE_WEIGHTS[..]),
    ];
    for (data, weights) in cases {
        auto_start_keeps_the_best(&data, weights);
    }
    let data = selection_data();
    // Training the top 2 layers leaves only the full depth, centred or not.
    let options = TrainOptions {
        steps: 0,
        train_layers: TrainLayers::Top(2),
        ..TrainOptions::default()
    };
    let trainer =
        Trainer::new(&base_checkpoint(), &tokenizer_json(), data, options, &never).unwrap();
    let choice = trainer.start_choice().unwrap();
    assert!(choice.scores.iter().all(|s| s.start.layers == 2));
    assert_eq!(choice.scores.len(), 2 * (1 + AUTO_UNIT_SCALES.len()));
    // The choice is cancellable at every poll: in its forward pass and before each start
    // it scores.
    let polls = AtomicUsize::new(0);
    let counting = || {
        polls.fetch_add(1, Ordering::Relaxed);
        false
    };
    let trainer = Trainer::new(
        &base_checkpoint(),
        &tokenizer_json(),
        selection_data(),
        TrainOptions::default(),
        &counting,
    )
    .unwrap();
    let total = polls.load(Ordering::Relaxed);
    assert!(
        total > trainer.start_choice().unwrap().scores.len(),
        "{total} polls"
    );
    for cancel_at in 1..=total {
        let polled = AtomicUsize::new(0);
        let cancel = || polled.fetch_add(1, Ordering::Relaxed) + 1 >= cancel_at;
        let cancelled = Trainer::new(
            &base_checkpoint(),
            &tokenizer_json(),
            selection_data(),
            TrainOptions::default(),
            &cancel,
        );
        assert!(
            matches!(cancelled, Err(Error::Cancelled)),
            "poll {cancel_at}"
        );
    }
}

#[test]
fn a_truncated_checkpoint_encodes_as_the_full_one_pooled_at_that_depth() {
    let full = base_checkpoint();
    let tokenizer = TextTokenizer::for_model(&tokenizer_json(), 32, &full.config).unwrap();
    let texts = [
        "a short text",
        "another text that is a little longer than that",
    ];
    let ids = tokenizer.encode_all(&texts).unwrap();
    let sequences: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = TokenBatch::new(&sequences, tokenizer.pad_id());
    let model = |c: &Checkpoint| {
        crate::trainable::TrainableModel::new(
            c,
            ProjectorInit::Identity,
            0,
            &candle_core::Device::Cpu,
        )
        .unwrap()
    };
    let whole = model(&full);
    let (input_ids, mask) = batch.to_tensors(whole.device()).unwrap();
    let sums = whole
        .model()
        .summed_by_depth(&input_ids, &mask, std::slice::from_ref(&mask))
        .unwrap()
        .remove(0);
    assert_eq!(sums.len(), 2);
    let tokens = mask.sum_keepdim(1).unwrap();
    for layers in 1..=2 {
        let truncated = full.truncated(layers).unwrap();
        assert_eq!(truncated.config.num_hidden_layers, layers);
        let got = model(&truncated).forward(&batch).unwrap();
        let mean = sums[layers - 1].broadcast_div(&tokens).unwrap();
        let want = whole.model().project(&mean).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }
    for bad in [0, 3] {
        let err = full.truncated(bad).unwrap_err().to_string();
        assert!(err.contains("keep 1 to 2"), "{err}");
    }
}

/// The start's pooled parts give, at every depth and response weight, what a truncated
/// model that weights its response by that much pools (its own forward pass).
#[test]
fn pooled_parts_pool_as_a_model_with_that_weighting() {
    let full = base_checkpoint();
    let tokenizer = TextTokenizer::for_model(&tokenizer_json(), 64, &full.config).unwrap();
    let marker = crate::pooling::response_marker(&tokenizer).unwrap();
    let data = template_data();
    let mut texts: Vec<&str> = data.examples.iter().map(String::as_str).collect();
    texts.push("a text without the template");
    let ids = tokenizer.encode_all(&texts).unwrap();
    let model = |c: &Checkpoint| {
        TrainableModel::new(c, ProjectorInit::Identity, 0, &candle_core::Device::Cpu).unwrap()
    };
    let parts = crate::train::start::PooledParts::new(
        &model(&full),
        &ids,
        tokenizer.pad_id(),
        &marker,
        5,
        &|| Ok(()),
    )
    .unwrap();
    let sequences: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let batch = TokenBatch::new(&sequences, tokenizer.pad_id());
    for layers in 1..=2 {
        for weight in [1.0, 2.5, 20.0] {
            let mut truncated = full.truncated(layers).unwrap();
            truncated.config.response_weighting = Some(crate::pooling::ResponseWeighting {
                marker: marker.clone(),
                weight,
            });
            let want = model(&truncated)
                .forward(&batch)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let got = parts
                .pooled(layers, weight)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (g, w) in got.iter().zip(&want) {
                let w: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
                let error = crate::testing::relative_l2_error(g, &w);
                assert!(error < 1e-5, "{layers} layers, weight {weight}: {error:e}");
            }
        }
    }
}

/// Embeddings `[texts, dim]` of `texts` by `checkpoint` as saved (its own projector).
fn embeddings_of(checkpoint: &Checkpoint, texts: &[String]) -> Tensor {
    let tokenizer = TextTokenizer::for_model(&tokenizer_json(), 64, &checkpoint.config).unwrap();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = tokenizer.encode_all(&texts).unwrap();
    let sequences: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let model = TrainableModel::new(
        checkpoint,
        ProjectorInit::Identity,
        0,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    model
        .forward(&TokenBatch::new(&sequences, tokenizer.pad_id()))
        .unwrap()
}

#[test]
fn a_centered_start_is_the_base_less_the_examples_mean() {
    let data = selection_data();
    for depth in [Depth::All, Depth::Layers(1)] {
        let options = TrainOptions {
            steps: 0,
            depth,
            unit_scale: UnitScale::Off,
            ..TrainOptions::default()
        };
        assert_eq!(options.projector_init, ProjectorInit::Centered);
        let trainer = Trainer::new(
            &base_checkpoint(),
            &tokenizer_json(),
            data.clone(),
            options,
            &never,
        )
        .unwrap();
        let (centered, _) = trainer.into_checkpoint().unwrap();
        // The examples' embeddings average to zero...
        let examples = embeddings_of(&centered, &data.examples);
        let mean = examples.mean(0).unwrap().abs().unwrap().max(0).unwrap();
        assert!(mean.to_scalar::<f32>().unwrap() < 1e-5, "{depth}");
        // ...and differ from the uncentred base at that depth by one shared vector.
        let kept = centered.config.num_hidden_layers;
        let base = base_checkpoint().truncated(kept).unwrap();
        let raw = embeddings_of(&base, &data.examples);
        let offset = (raw.clone() - &examples).unwrap();
        let spread = offset
            .broadcast_sub(&offset.get(0).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(spread.to_scalar::<f32>().unwrap() < 1e-5, "{depth}");
    }
    // A trained model keeps its own projector.
    let airrep = Checkpoint::from_dir(golden_dir("tiny-airrep")).unwrap();
    let options = TrainOptions {
        steps: 0,
        depth: Depth::All,
        ..TrainOptions::default()
    };
    let trainer = Trainer::new(&airrep, &tokenizer_json(), data.clone(), options, &never).unwrap();
    let (kept, _) = trainer.into_checkpoint().unwrap();
    for name in [PROJECTOR_WEIGHT, PROJECTOR_BIAS] {
        let diff = (&kept.tensors()[name] - &airrep.tensors()[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }
}

#[test]
fn projector_inits_give_a_base_model_its_projector_once() {
    let mean = Tensor::from_vec((0..32).map(|i| i as f32).collect(), 32, &Device::Cpu).unwrap();
    let projector = |init: ProjectorInit, mean: Option<&Tensor>| {
        let mut ckpt = base_checkpoint();
        assert!(init.give(&mut ckpt, 7, mean).unwrap());
        assert!(
            !init.give(&mut ckpt, 7, mean).unwrap(),
            "a projector is kept"
        );
        let w = ckpt.tensors()[PROJECTOR_WEIGHT].to_vec2::<f32>().unwrap();
        let b = ckpt.tensors()[PROJECTOR_BIAS].to_vec1::<f32>().unwrap();
        (w, b)
    };
    let is_identity =
        |w: &[Vec<f32>]| (0..32).all(|i| (0..32).all(|j| w[i][j] == (i == j) as u8 as f32));
    // torch.nn.Linear's init: U(±1/sqrt(in)), weight and bias
    let (w, b) = projector(ProjectorInit::Random, None);
    let bound = 1.0 / 32f32.sqrt();
    assert!(w.iter().flatten().chain(&b).all(|x| x.abs() <= bound));
    assert!(w.iter().flatten().any(|x| x.abs() > bound / 2.0));
    let (w, b) = projector(ProjectorInit::Identity, None);
    assert!(is_identity(&w) && b.iter().all(|&x| x == 0.0));
    // centred: x - mean; without a mean (a start kept uncentred) the identity
    let (w, b) = projector(ProjectorInit::Centered, Some(&mean));
    assert!(is_identity(&w) && b.iter().enumerate().all(|(i, &x)| x == -(i as f32)));
    let (w, b) = projector(ProjectorInit::Centered, None);
    assert!(is_identity(&w) && b.iter().all(|&x| x == 0.0));
}

/// A start that weights the response is saved with its weighting, a run that caches the
/// frozen bottom pools it alike, and the encoder that loads it (the fused CPU model) ranks
/// as the trainer scored: the same pooling on every side, against the plain mean that
/// ranks otherwise.
#[test]
fn a_response_weighted_start_encodes_as_it_was_scored() {
    let data = template_data();
    let (targets, subsets) = everything(&data);
    let scores_of = |response_weight, train_layers| {
        let options = TrainOptions {
            steps: 0,
            depth: Depth::All,
            unit_scale: UnitScale::Off,
            response_weight,
            train_layers,
            ..TrainOptions::default()
        };
        let trainer = base_trainer(&data, options);
        let scores = trainer.group_scores(&targets, &subsets).unwrap();
        (scores, trainer.into_checkpoint().unwrap().0)
    };
    let (plain, _) = scores_of(ResponseWeight::Fixed(1.0), TrainLayers::Projector);
    let (weighted, checkpoint) = scores_of(ResponseWeight::Fixed(3.0), TrainLayers::Projector);
    // The cached bottom of a top-layer run pools each text by its own token weights.
    let (cached, _) = scores_of(ResponseWeight::Fixed(3.0), TrainLayers::Top(1));
    assert_matrix_rel(&cached, &weighted, 1e-5, "cached hidden states, weighted");
    let weighting = checkpoint.config.response_weighting.clone().unwrap();
    assert_eq!(weighting.weight, 3.0);
    let saved = Checkpoint::from_bytes(
        &checkpoint.config.to_airrep_json(),
        &checkpoint.to_safetensors().unwrap(),
    )
    .unwrap();
    let encoder =
        crate::Encoder::new(&saved, &tokenizer_json(), crate::EncoderOptions::default()).unwrap();
    let embed = |texts: &[String]| {
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        encoder.encode(&texts).unwrap()
    };
    let encoded = airrep_core::group::group_scores(
        &embed(&data.targets),
        &embed(&data.examples),
        &data.subsets,
        Pooling::Attention,
    );
    assert_matrix_rel(&weighted, &encoded, 1e-4, "saved weighting");
    let differs = plain
        .iter()
        .flatten()
        .zip(weighted.iter().flatten())
        .any(|(p, w)| (p - w).abs() > 1e-3 * p.abs().max(1e-3));
    assert!(differs, "weighting the response changes the scores");
}

#[test]
fn the_depth_choice_is_described_by_the_kept_start_the_runner_up_and_the_base() {
    let start = |layers, centered, unit_scale| StartPoint {
        layers,
        centered,
        unit_scale,
        response_weight: 1.0,
    };
    let scored = |start, lds| StartScore { start, lds };
    let choice = StartChoice {
        kept: start(2, true, Some(2.0)),
        of: 6,
        scores: vec![
            scored(start(1, true, None), 0.12),
            scored(start(2, true, Some(2.0)), 0.15),
            scored(start(3, true, Some(2.0)), f64::NAN),
            scored(start(2, true, None), 0.14),
            scored(start(6, false, None), 0.03),
        ],
    };
    assert_eq!(
        choice.describe(),
        "kept 2 of 6 layers, centred, unit length x2 by LDS at step 0 over every label: 0.1500, \
         against 0.1400 for the next best (2 centred) and 0.0300 for the base as it is; \
         5 starts scored"
    );
    let weighted = StartChoice {
        kept: StartPoint {
            response_weight: 2.0,
            ..start(1, true, None)
        },
        of: 2,
        scores: vec![],
    };
    assert!(weighted
        .describe()
        .starts_with("kept 1 of 2 layers, centred, response x2 by LDS"));
    assert_eq!(weighted.kept.to_string(), "1 centred response x2");
}
