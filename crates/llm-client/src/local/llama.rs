//! Llama (Touvron et al., 2023) decoder from a llama.cpp GGUF, as used by SmolLM2; reference:
//! Hugging Face `transformers` `LlamaForCausalLM` and llama.cpp `llm_build_llama`.

use std::sync::Arc;

use candle_core::Tensor;

use super::cache::KvCache;
use super::gguf::Gguf;
use super::kernels::{GatedActivation, QuantMatrix, Span};
use super::nn::{
    attention, embed, positions_from, GatedUp, Linear, RmsNorm, RopeLayout, RotaryEmbedding,
};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_base: f32,
    pub max_seq_len: usize,
}

impl Config {
    pub fn from_gguf(g: &Gguf, max_seq_len: usize) -> Result<Self> {
        let key = |k: &str| format!("llama.{k}");
        let hidden_size = g.usize(&key("embedding_length"))?;
        let num_heads = g.usize(&key("attention.head_count"))?;
        let vocab_size = match g.content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims().first().copied().unwrap_or(0),
            None => return Err(g.error("missing tensor token_embd.weight")),
        };
        let head_dim = g
            .optional_usize(&key("rope.dimension_count"))?
            .unwrap_or(hidden_size / num_heads.max(1));
        if head_dim * num_heads != hidden_size {
            return Err(g.error(format!(
                "{num_heads} heads of {head_dim} do not make hidden size {hidden_size}"
            )));
        }
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size: g.usize(&key("feed_forward_length"))?,
            num_layers: g.usize(&key("block_count"))?,
            num_heads,
            num_kv_heads: g
                .optional_usize(&key("attention.head_count_kv"))?
                .unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: g.f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_base: g.optional_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            max_seq_len: max_seq_len.min(g.usize(&key("context_length"))?),
        })
    }
}

struct Attention {
    attn_q: Linear,
    attn_k: Linear,
    attn_v: Linear,
    attn_output: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn forward(
        &self,
        xs: &Tensor,
        rope: &RotaryEmbedding,
        window: Option<usize>,
        cache: &mut KvCache,
        layer: usize,
        span: &Span,
    ) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let offset = cache.len();
        let positions = span.positions(offset);
        // (b, t, h*d) -> (b, h, t, d)
        let q = self
            .attn_q
            .forward(xs)?
            .reshape((b, t, self.num_heads, self.head_dim))?
            .transpose(1, 2)?;
        let k = self
            .attn_k
            .forward(xs)?
            .reshape((b, t, self.num_kv_heads, self.head_dim))?
            .transpose(1, 2)?;
        let v = self
            .attn_v
            .forward(xs)?
            .reshape((b, t, self.num_kv_heads, self.head_dim))?;
        // v stays position-major (b, t, kv_heads, d), as the cache holds it.
        let q = (rope.apply(&q, &positions)? * (1.0 / (self.head_dim as f64).sqrt()))?;
        let k = rope.apply(&k, &positions)?;
        cache.append(layer, &k.transpose(1, 2)?, &v)?;
        let out = attention(&q, cache, layer, offset, span, window)?;
        self.attn_output.forward(&out)
    }
}

struct Mlp {
    /// `act(gate) * up`.
    ffn_gate_up: GatedUp,
    ffn_down: Linear,
}

impl Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.ffn_down.forward(&self.ffn_gate_up.forward(xs)?)
    }
}

struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    mlp: Mlp,
}

pub struct Model {
    token_embd: Arc<QuantMatrix>,
    blocks: Vec<Block>,
    output_norm: RmsNorm,
    /// `output.weight` if the file has one, else tied to `token_embd` (SmolLM2).
    output: Linear,
    rope: RotaryEmbedding,
    cfg: Config,
}

impl Model {
    pub fn new(cfg: &Config, g: &mut Gguf) -> Result<Self> {
        let (dim, hd) = (cfg.hidden_size, cfg.head_dim);
        let eps = cfg.rms_norm_eps;
        let token_embd = g.quant_matrix("token_embd.weight", &[cfg.vocab_size, dim])?;
        let output = if g.has_tensor("output.weight") {
            g.linear("output.weight", &[cfg.vocab_size, dim])?
        } else {
            Linear::new(token_embd.clone())
        };
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = |n: &str| format!("blk.{i}.{n}");
            let attn = Attention {
                attn_q: g.linear(&p("attn_q.weight"), &[cfg.num_heads * hd, dim])?,
                attn_k: g.linear(&p("attn_k.weight"), &[cfg.num_kv_heads * hd, dim])?,
                attn_v: g.linear(&p("attn_v.weight"), &[cfg.num_kv_heads * hd, dim])?,
                attn_output: g.linear(&p("attn_output.weight"), &[dim, cfg.num_heads * hd])?,
                num_heads: cfg.num_heads,
                num_kv_heads: cfg.num_kv_heads,
                head_dim: hd,
            };
            let mlp = Mlp {
                ffn_gate_up: g.gated_up(
                    &p("ffn_gate.weight"),
                    &p("ffn_up.weight"),
                    &[cfg.intermediate_size, dim],
                    GatedActivation::Silu,
                )?,
                ffn_down: g.linear(&p("ffn_down.weight"), &[dim, cfg.intermediate_size])?,
            };
            blocks.push(Block {
                attn_norm: RmsNorm::new(g.f32_tensor(&p("attn_norm.weight"), &[dim])?, eps),
                attn,
                ffn_norm: RmsNorm::new(g.f32_tensor(&p("ffn_norm.weight"), &[dim])?, eps),
                mlp,
            });
        }
        let output_norm = RmsNorm::new(g.f32_tensor("output_norm.weight", &[dim])?, eps);
        let rope =
            RotaryEmbedding::new(cfg.rope_base, hd, cfg.max_seq_len, RopeLayout::Interleaved)?;
        Ok(Self {
            token_embd,
            blocks,
            output_norm,
            output,
            rope,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Run `tokens` after the positions already in `cache`, laid out as `span` says (one
    /// sequence, or branches after a root); logits `(1, t - logits_from, vocab)`.
    pub fn forward(
        &self,
        tokens: &[u32],
        span: &Span,
        cache: &mut KvCache,
        logits_from: usize,
    ) -> Result<Tensor> {
        let mut xs = embed(&self.token_embd, tokens)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let h = block.attn_norm.forward(&xs)?;
            let h = block.attn.forward(&h, &self.rope, None, cache, i, span)?;
            xs = (xs + h)?;
            let h = block.mlp.forward(&block.ffn_norm.forward(&xs)?)?;
            xs = (xs + h)?;
        }
        let xs = positions_from(&xs, logits_from)?;
        let xs = self.output_norm.forward(&xs)?;
        self.output.forward(&xs)
    }
}
