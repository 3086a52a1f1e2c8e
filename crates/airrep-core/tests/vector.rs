//! The text form of `airrep_vector` over arbitrary input: it never panics, and it reads back
//! exactly what it wrote.

use airrep_core::vector::{format, parse, VectorError};
use proptest::prelude::*;

fn finite_vector() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(any::<f32>().prop_filter("finite", |x| x.is_finite()), 1..64)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #[test]
    fn parse_never_panics(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn parse_never_panics_on_vector_like_text(text in "[\\[\\] \t0-9.,eE+\\-naNIfxy]{0,40}") {
        if let Err(e) = parse(&text) {
            prop_assert_eq!(e.sqlstate().len(), 5);
        }
    }

    #[test]
    fn format_round_trips_bit_exactly(v in finite_vector()) {
        prop_assert_eq!(bits(&parse(&format(&v)).unwrap()), bits(&v));
    }

    #[test]
    fn whitespace_around_elements_is_ignored(v in finite_vector(), pad in "[ \t\n]{0,3}") {
        let items: Vec<String> = v.iter().map(|x| format!("{pad}{x}{pad}")).collect();
        let text = format!("{pad}[{}]{pad}", items.join(","));
        prop_assert_eq!(bits(&parse(&text).unwrap()), bits(&v));
    }

    #[test]
    fn junk_after_the_vector_is_a_syntax_error(v in finite_vector(), junk in "[a-z0-9\\]\\[,]{1,5}") {
        let text = format!("{} {junk}", format(&v));
        prop_assert_eq!(parse(&text), Err(VectorError::InvalidSyntax(text)));
    }
}
