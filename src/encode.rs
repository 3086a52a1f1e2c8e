//! Encoding text with a registry model: `airrep.encode`, `airrep.format`, `airrep.embed`
//! (a procedure in `sql/embed.sql`).
//!
//! Models are cached per backend (never in the postmaster), keyed by the model's identity
//! (registry id, version and writing transaction) and the settings it was loaded with. Compute runs on the backend's pool (`runtime.rs`); only the backend's own
//! thread talks to Postgres, and interrupts are checked between batches.

use std::cell::RefCell;
use std::rc::Rc;

use airrep_model::{DeviceSpec, Encoder, EncoderOptions, Precision};
use pgrx::prelude::*;

use crate::error::raise_model;
use crate::runtime::{cancel_requested, device, precision, thread_pool};
use crate::vector_type::Vector;
use crate::{gucs, registry};

#[derive(PartialEq, Eq, Clone, Copy)]
struct CacheKey {
    model: registry::ModelIdentity,
    max_length: usize,
    device: DeviceSpec,
    /// None: the device's default (`airrep.precision = auto`).
    precision: Option<Precision>,
    amx: bool,
    /// The SIMD tier at load time: it decides whether AMX products are used.
    simd: airrep_core::simd::Tier,
}

thread_local! {
    /// Most recently used last, with the bytes of its weights; bounded by
    /// [`gucs::model_cache_size`] and [`gucs::model_cache_bytes`].
    static MODELS: RefCell<Vec<(CacheKey, Rc<Encoder>, usize)>> = const { RefCell::new(Vec::new()) };
}

/// The loaded encoder for model `name`, from the backend cache or the registry.
pub fn encoder(name: &str) -> Rc<Encoder> {
    let device = device();
    let model = registry::model_identity(name);
    let model_id = model.id;
    let key = CacheKey {
        model,
        max_length: gucs::MAX_LENGTH.get() as usize,
        device,
        precision: precision(),
        amx: gucs::AMX.get(),
        simd: airrep_core::simd::tier(),
    };
    if let Some(hit) = MODELS.with_borrow_mut(|models| {
        let index = models.iter().position(|(k, _, _)| *k == key)?;
        let entry = models.remove(index);
        models.push(entry);
        models.last().map(|(_, e, _)| e.clone())
    }) {
        return hit;
    }
    let (config, weights, tokenizer) = registry::model_files(model_id);
    let options = EncoderOptions {
        max_length: key.max_length,
        // `encode_texts` batches by the current airrep.batch_size; each call is one batch.
        batch_size: usize::MAX,
        device,
        dtype: key.precision,
        amx: key.amx,
    };
    let loaded = thread_pool()
        .install(|| Encoder::from_bytes(&config, &weights, &tokenizer, options))
        .unwrap_or_else(|e| raise_model(e, |e| format!("could not load model \"{name}\": {e}")));
    let loaded = Rc::new(loaded);
    MODELS.with_borrow_mut(|models| {
        models.retain(|(k, _, _)| k.model.id != model_id);
        models.push((key, loaded.clone(), weights.len()));
        // Evict the least recently used beyond either bound; the new model always stays.
        let (count, bytes) = (gucs::model_cache_size(), gucs::model_cache_bytes());
        while models.len() > 1
            && (models.len() > count || models.iter().map(|(_, _, b)| b).sum::<usize>() > bytes)
        {
            models.remove(0);
        }
    });
    loaded
}

/// Embeddings of `texts`, one forward pass per `airrep.batch_size` texts, checking for
/// cancel and statement_timeout between passes.
pub fn encode_texts(encoder: &Encoder, texts: &[&str]) -> Vec<Vec<f32>> {
    let pool = thread_pool();
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(gucs::batch_size()) {
        pgrx::check_for_interrupts!();
        let embedded = pool
            .install(|| encoder.encode_checked(batch, &cancel_requested))
            .unwrap_or_else(|e| raise_model(e, |e| format!("encoding failed: {e}")));
        out.extend(embedded);
    }
    out
}

#[pg_extern(schema = "airrep", stable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn encode(model: &str, input: &str) -> Vector {
    let encoder = encoder(model);
    Vector(
        encode_texts(&encoder, &[input])
            .pop()
            .expect("one text, one embedding"),
    )
}

#[pg_extern(schema = "airrep", name = "encode", stable, strict, parallel_safe, requires = ["airrep_vector_type"])]
fn encode_array(model: &str, inputs: Array<'_, &str>) -> Vec<Option<Vector>> {
    let encoder = encoder(model);
    let texts: Vec<Option<&str>> = inputs.iter().collect();
    let present: Vec<&str> = texts.iter().flatten().copied().collect();
    let mut embeddings = encode_texts(&encoder, &present).into_iter();
    // NULL texts give NULL embeddings, in place.
    texts
        .iter()
        .map(|t| t.map(|_| Vector(embeddings.next().expect("one per text"))))
        .collect()
}

/// The text AirRep encodes for an instruction pair (DESIGN section 1).
#[pg_extern(schema = "airrep", immutable, strict, parallel_safe)]
fn format(prompt: &str, response: &str) -> String {
    airrep_model::format_pair(prompt, response)
}

extension_sql_file!(
    "../sql/embed.sql",
    name = "embed_procedure",
    requires = [encode_array]
);
