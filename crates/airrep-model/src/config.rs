//! The subset of a Hugging Face `config.json` that shapes a BERT encoder.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pooling::ResponseWeighting;

/// Architectures whose weights follow the BERT layout (`model_type` in config.json).
const BERT_FAMILY: [&str; 2] = ["bert", "airrep"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// Response tokens weighted in the mean pooling (`pooling`); absent: the plain mean,
    /// as in every model not trained by airrep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_weighting: Option<ResponseWeighting>,
}

fn default_hidden_act() -> String {
    "gelu".to_string()
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_type_vocab_size() -> usize {
    2
}

impl BertConfig {
    /// Parses config.json, refusing architectures other than BERT and settings the
    /// encoder does not implement (it would otherwise compute silently wrong vectors).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Config(format!("config.json is not valid JSON: {e}")))?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::Config("config.json has no \"model_type\"".into()))?;
        if !BERT_FAMILY.contains(&model_type) {
            return Err(Error::Config(format!(
                "unsupported architecture model_type {model_type:?}: airrep runs BERT-family \
                 encoders (model_type \"bert\" or \"airrep\")"
            )));
        }
        if let Some(kind) = value
            .get("position_embedding_type")
            .and_then(|v| v.as_str())
        {
            if kind != "absolute" {
                return Err(Error::Config(format!(
                    "position_embedding_type {kind:?} is not supported (only \"absolute\")"
                )));
            }
        }
        let config: BertConfig = serde_json::from_value(value)
            .map_err(|e| Error::Config(format!("config.json: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// config.json for a model saved in the AirRep layout.
    pub fn to_airrep_json(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("a plain struct serialises");
        value["model_type"] = "airrep".into();
        value["architectures"] = serde_json::json!(["ReferenceModel"]);
        serde_json::to_vec_pretty(&value).expect("a JSON value serialises")
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    fn validate(&self) -> Result<()> {
        // HF's "gelu" is the exact erf form; the tanh approximations would drift.
        if self.hidden_act != "gelu" {
            return Err(Error::Config(format!(
                "hidden_act {:?} is not supported (only \"gelu\", the exact erf GELU)",
                self.hidden_act
            )));
        }
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, size)| *size == 0) {
            return Err(Error::Config(format!("{name} must be positive")));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        // Written so that NaN is rejected too.
        if self.layer_norm_eps.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(Error::Config("layer_norm_eps must be positive".into()));
        }
        match &self.response_weighting {
            Some(weighting) => weighting.check(self.vocab_size),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &[u8] = include_bytes!("../../../tests/golden/tiny-airrep/config.json");

    #[test]
    fn parses_tiny_airrep() {
        let config = BertConfig::from_json(TINY).unwrap();
        assert_eq!(config.hidden_size, 32);
        assert_eq!(config.num_hidden_layers, 2);
        assert_eq!(config.head_dim(), 8);
        assert_eq!(config.layer_norm_eps, 1e-12);
    }

    #[test]
    fn rejects_other_architectures_by_name() {
        let err = BertConfig::from_json(br#"{"model_type": "llama", "hidden_size": 8}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"llama\""), "{err}");
    }

    #[test]
    fn rejects_approximate_gelu() {
        let mut value: serde_json::Value = serde_json::from_slice(TINY).unwrap();
        value["hidden_act"] = "gelu_new".into();
        let err = BertConfig::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(err.to_string().contains("gelu_new"), "{err}");
    }

    #[test]
    fn airrep_json_round_trips() {
        let mut config = BertConfig::from_json(TINY).unwrap();
        assert_eq!(
            BertConfig::from_json(&config.to_airrep_json()).unwrap(),
            config
        );
        config.response_weighting = Some(ResponseWeighting {
            marker: vec![5, 6],
            weight: 2.0,
        });
        assert_eq!(
            BertConfig::from_json(&config.to_airrep_json()).unwrap(),
            config
        );
    }

    #[test]
    fn rejects_a_response_weighting_outside_the_vocabulary() {
        let mut value: serde_json::Value = serde_json::from_slice(TINY).unwrap();
        let vocab = value["vocab_size"].as_u64().unwrap();
        value["response_weighting"] = serde_json::json!({"marker": [vocab], "weight": 2.0});
        let err = BertConfig::from_json(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(err.to_string().contains("beyond the vocabulary"), "{err}");
    }
}
