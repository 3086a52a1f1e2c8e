//! The memory trick's gradients against one full autograd graph, cached and uncached.

use super::*;

/// The gradient without any trick: each subset's members encoded with gradients on their
/// own (shared and repeated members encoded again each time), pooling and the ranking loss
/// in candle ops, one backward. Returns the loss and the gradients of `trainer.vars`.
fn direct_loss_and_gradients(trainer: &Trainer, batch: &Batch) -> (f64, Vec<Tensor>) {
    let tokenizer = TextTokenizer::from_bytes(&tokenizer_json(), DEFAULT_MAX_LENGTH).unwrap();
    let data = &trainer.data;
    let encode = |texts: Vec<&str>| {
        let ids = tokenizer.encode_all(&texts).unwrap();
        let sequences: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        trainer
            .model
            .forward(&TokenBatch::new(&sequences, tokenizer.pad_id()))
            .unwrap()
    };
    let t = encode(
        batch
            .targets
            .iter()
            .map(|&d| data.targets[d].as_str())
            .collect(),
    );
    let scores: Vec<Tensor> = batch
        .members
        .iter()
        .map(|members| {
            let m = encode(members.iter().map(|&i| data.examples[i].as_str()).collect());
            let s = t.matmul(&m.t().unwrap()).unwrap();
            match trainer.options.pooling {
                Pooling::Sum => s.sum(1).unwrap(),
                Pooling::Attention => {
                    let a = candle_nn::ops::softmax(&s.abs().unwrap(), 1).unwrap();
                    (a * s).unwrap().sum(1).unwrap()
                }
            }
        })
        .collect();
    let scores = Tensor::stack(&scores, 1).unwrap(); // [target, subset]
    let (mut winners, mut losers, mut weights) = (vec![], vec![], vec![]);
    let ns = batch.subsets.len();
    for (row, &d) in batch.targets.iter().enumerate() {
        for j in 0..ns {
            for k in 0..ns {
                let gap = trainer.labels[d][batch.subsets[j]] - trainer.labels[d][batch.subsets[k]];
                if gap > trainer.options.t_min {
                    winners.push((row * ns + j) as u32);
                    losers.push((row * ns + k) as u32);
                    weights.push(gap.min(trainer.options.t_max) as f32);
                }
            }
        }
    }
    let n = weights.len();
    assert!(n > 0, "the batch keeps no pairs");
    let pick = |idx: Vec<u32>| {
        let idx = Tensor::from_vec(idx, n, scores.device()).unwrap();
        scores.flatten_all().unwrap().index_select(&idx, 0).unwrap()
    };
    let margin = (pick(winners) - pick(losers)).unwrap();
    // softplus(-margin) = log(1 + exp(-margin)); margins here are small.
    let softplus = (margin.neg().unwrap().exp().unwrap() + 1.0)
        .unwrap()
        .log()
        .unwrap();
    let weights = Tensor::from_vec(weights, n, scores.device()).unwrap();
    let loss = ((softplus * weights).unwrap().sum_all().unwrap() / n as f64).unwrap();
    let grads = loss.backward().unwrap();
    let per_var = trainer
        .vars
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .expect("every trainable weight has a gradient")
                .clone()
        })
        .collect();
    (f64::from(loss.to_scalar::<f32>().unwrap()), per_var)
}

fn trainable_names(trainer: &Trainer) -> Vec<String> {
    let ids: Vec<_> = trainer.vars.iter().map(|v| v.as_tensor().id()).collect();
    trainer
        .model
        .named_vars()
        .into_iter()
        .filter(|(_, v)| ids.contains(&v.as_tensor().id()))
        .map(|(n, _)| n)
        .collect()
}

fn trick_gradients(trainer: &Trainer) -> (f64, Batch, Vec<Tensor>) {
    let batch = trainer.sample_batch(&mut trainer.rng.clone());
    let (ranked, grads) = trainer.loss_and_gradients(&batch, &never).unwrap();
    assert!(ranked.kept_pairs > 0);
    let grads = grads.sums.into_iter().map(Option::unwrap).collect();
    (ranked.loss, batch, grads)
}

#[test]
fn union_gradients_equal_full_graph_gradients_with_shared_and_repeated_members() {
    let golden = golden();
    // (unit length: the gradient also flows through the normalisation and into the scale)
    let cases = [
        (Pooling::Attention, None, UnitScale::Off),
        (Pooling::Attention, Some(3), UnitScale::Off),
        (Pooling::Sum, None, UnitScale::Off),
        (Pooling::Sum, Some(3), UnitScale::Off),
        (Pooling::Attention, None, UnitScale::Fixed(1.5)),
        (Pooling::Sum, Some(3), UnitScale::Fixed(1.5)),
    ];
    for (pooling, max_members, unit_scale) in cases {
        let options = TrainOptions {
            targets_per_step: 3,
            max_members_per_subset: max_members,
            pooling,
            unit_scale,
            chunk_rows: 3, // several chunks for the targets and the union
            ..golden_options(&golden)
        };
        let trainer = tiny_trainer(overlapping_data(&golden), options).unwrap();
        let (loss, batch, trick) = trick_gradients(&trainer);
        if max_members.is_none() {
            let union: usize = batch.members.iter().map(Vec::len).sum();
            assert!(union > trainer.data.examples.len(), "members must overlap");
        }
        let (want_loss, direct) = direct_loss_and_gradients(&trainer, &batch);
        let names = trainable_names(&trainer);
        let scaled = names.iter().any(|n| n == PROJECTOR_SCALE);
        assert_eq!(scaled, unit_scale != UnitScale::Off);
        let what = format!("{pooling:?}, max members {max_members:?}, {unit_scale}");
        assert_relative(loss, want_loss, 1e-5, &format!("{what}: loss"));
        assert_gradients_close(&names, &trick, &direct, &what);
    }
}

#[test]
fn cached_frozen_layers_give_the_uncached_gradient() {
    let golden = golden();
    for (layers, unit_scale) in [
        (TrainLayers::Projector, UnitScale::Off),
        (TrainLayers::Top(1), UnitScale::Off),
        (TrainLayers::Top(2), UnitScale::Off),
        (TrainLayers::Projector, UnitScale::Fixed(2.0)),
        (TrainLayers::Top(1), UnitScale::Fixed(2.0)),
    ] {
        let options = TrainOptions {
            targets_per_step: 3,
            chunk_rows: 4,
            unit_scale,
            ..golden_options(&golden)
        };
        let all = tiny_trainer(overlapping_data(&golden), options.clone()).unwrap();
        let cached = tiny_trainer(
            overlapping_data(&golden),
            TrainOptions {
                train_layers: layers,
                ..options
            },
        )
        .unwrap();
        let names = trainable_names(&cached);
        assert!(names.len() < trainable_names(&all).len());
        assert!(names.iter().any(|n| n.starts_with("projector.")));
        let (loss_all, _, grads_all) = trick_gradients(&all);
        let (loss_cached, _, grads_cached) = trick_gradients(&cached);
        assert_relative(loss_cached, loss_all, 1e-5, &format!("{layers} loss"));
        let all_names = trainable_names(&all);
        let want: Vec<Tensor> = names
            .iter()
            .map(|n| grads_all[all_names.iter().position(|m| m == n).unwrap()].clone())
            .collect();
        assert_gradients_close(
            &names,
            &grads_cached,
            &want,
            &format!("train_layers {layers}"),
        );
    }
    let too_many = TrainOptions {
        train_layers: TrainLayers::Top(3),
        ..golden_options(&golden)
    };
    assert!(matches!(
        tiny_trainer(golden_data(&golden), too_many),
        Err(Error::Input(m)) if m.contains("train_layers 3 exceeds the model's 2 layers")
    ));
    // checked before a depth is chosen, too
    let too_many = TrainOptions {
        train_layers: TrainLayers::Top(3),
        holdout_fraction: 0.0,
        ..TrainOptions::default()
    };
    assert!(matches!(
        tiny_trainer(golden_data(&golden), too_many),
        Err(Error::Input(m)) if m == "train_layers 3 exceeds the model's 2 layers"
    ));
}
