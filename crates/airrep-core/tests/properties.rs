//! Properties over random inputs: the text form never panics and round-trips; group states
//! merge in any split and order to the serial result.

use airrep_core::group::{GroupState, Pooling};
use airrep_core::vector::{format, parse};
use proptest::prelude::*;

proptest! {
    #[test]
    fn parse_never_panics(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn parse_never_panics_on_vector_like_text(text in "[\\[\\] 0-9.,eE+\\-naNIf]{0,40}") {
        let _ = parse(&text);
    }

    #[test]
    fn format_round_trips_bit_exactly(v in prop::collection::vec(any::<f32>().prop_filter("finite", |x| x.is_finite()), 1..64)) {
        let back = parse(&format(&v)).unwrap();
        prop_assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn merge_matches_serial(scores in prop::collection::vec(-1e4f64..1e4, 1..50), cut in 0usize..50, swap in any::<bool>()) {
        let cut = cut.min(scores.len());
        let mut serial = GroupState::default();
        scores.iter().for_each(|&s| serial.push(s));
        let (mut a, mut b) = (GroupState::default(), GroupState::default());
        scores[..cut].iter().for_each(|&s| a.push(s));
        scores[cut..].iter().for_each(|&s| b.push(s));
        if swap { std::mem::swap(&mut a, &mut b); }
        a.merge(&b);
        let (want, got) = (serial.result(Pooling::Attention).unwrap(), a.result(Pooling::Attention).unwrap());
        prop_assert!((want - got).abs() <= 1e-9 * want.abs().max(1.0), "{} vs {}", got, want);
        let min = scores.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        prop_assert!(got >= min - 1e-9 * min.abs() && got <= max + 1e-9 * max.abs());
    }
}
