//! Gemma 3 (Gemma Team, 2025, "Gemma 3 Technical Report"), text decoder from a llama.cpp GGUF;
//! reference: Hugging Face `transformers` `Gemma3ForCausalLM` and llama.cpp `llm_build_gemma3`.
//! Not candle-transformers' `quantized_gemma3`, whose MLP uses SiLU where Gemma uses GELU (tanh).

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
    pub rope_global_base: f32,
    /// Sliding-window layers use their own base; GGUF files do not store it (llama.cpp
    /// hard-codes 10,000 for Gemma 3).
    pub rope_local_base: f32,
    pub sliding_window: usize,
    /// Every `global_every`-th layer attends globally, the others in a sliding window (5:1).
    pub global_every: usize,
    /// Positions the RoPE tables and the cache are sized for.
    pub max_seq_len: usize,
}

impl Config {
    pub fn from_gguf(g: &Gguf, max_seq_len: usize) -> Result<Self> {
        let key = |k: &str| format!("gemma3.{k}");
        let num_heads = g.usize(&key("attention.head_count"))?;
        let head_dim = g.usize(&key("attention.key_length"))?;
        let vocab_size = match g.content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims().first().copied().unwrap_or(0),
            None => return Err(g.error("missing tensor token_embd.weight")),
        };
        let context = g.usize(&key("context_length"))?;
        Ok(Self {
            vocab_size,
            hidden_size: g.usize(&key("embedding_length"))?,
            intermediate_size: g.usize(&key("feed_forward_length"))?,
            num_layers: g.usize(&key("block_count"))?,
            num_heads,
            num_kv_heads: g.usize(&key("attention.head_count_kv"))?,
            head_dim,
            rms_norm_eps: g.f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_global_base: g
                .optional_f32(&key("rope.freq_base"))?
                .unwrap_or(1_000_000.0),
            rope_local_base: 10_000.0,
            sliding_window: g.usize(&key("attention.sliding_window"))?,
            global_every: 6,
            max_seq_len: max_seq_len.min(context),
        })
    }

    fn is_global(&self, layer: usize) -> bool {
        (layer + 1).is_multiple_of(self.global_every)
    }
}

struct Attention {
    attn_q: Linear,
    attn_k: Linear,
    attn_v: Linear,
    attn_output: Linear,
    attn_q_norm: RmsNorm,
    attn_k_norm: RmsNorm,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    /// Gemma 3 270M scales queries by `query_pre_attn_scalar^-1/2` = `head_dim^-1/2`.
    scale: f64,
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
        // (b, t, h*d) -> (b, t, h, d): q/k norms act per head, before RoPE.
        let q = self
            .attn_q
            .forward(xs)?
            .reshape((b, t, self.num_heads, self.head_dim))?;
        let k = self
            .attn_k
            .forward(xs)?
            .reshape((b, t, self.num_kv_heads, self.head_dim))?;
        let v = self
            .attn_v
            .forward(xs)?
            .reshape((b, t, self.num_kv_heads, self.head_dim))?;
        let q = self.attn_q_norm.forward(&q)?.transpose(1, 2)?;
        let k = self.attn_k_norm.forward(&k)?.transpose(1, 2)?;
        // v stays position-major (b, t, kv_heads, d), as the cache holds it.
        let q = (rope.apply(&q, &positions)? * self.scale)?;
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
    post_attention_norm: RmsNorm,
    ffn_norm: RmsNorm,
    mlp: Mlp,
    post_ffw_norm: RmsNorm,
    global: bool,
}

pub struct Model {
    token_embd: Arc<QuantMatrix>,
    blocks: Vec<Block>,
    output_norm: RmsNorm,
    /// Tied to `token_embd`.
    output: Linear,
    rope_global: RotaryEmbedding,
    rope_local: RotaryEmbedding,
    cfg: Config,
}

impl Model {
    pub fn new(cfg: &Config, g: &mut Gguf) -> Result<Self> {
        let (dim, hd) = (cfg.hidden_size, cfg.head_dim);
        let eps = cfg.rms_norm_eps;
        let token_embd = g.quant_matrix("token_embd.weight", &[cfg.vocab_size, dim])?;
        let output = Linear::new(token_embd.clone());
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = |n: &str| format!("blk.{i}.{n}");
            let mut norm = |n: &str, len: usize| -> Result<RmsNorm> {
                Ok(RmsNorm::new(g.f32_tensor(&p(n), &[len])?, eps))
            };
            let attn_norm = norm("attn_norm.weight", dim)?;
            let post_attention_norm = norm("post_attention_norm.weight", dim)?;
            let ffn_norm = norm("ffn_norm.weight", dim)?;
            let post_ffw_norm = norm("post_ffw_norm.weight", dim)?;
            let attn_q_norm = norm("attn_q_norm.weight", hd)?;
            let attn_k_norm = norm("attn_k_norm.weight", hd)?;
            let attn = Attention {
                attn_q: g.linear(&p("attn_q.weight"), &[cfg.num_heads * hd, dim])?,
                attn_k: g.linear(&p("attn_k.weight"), &[cfg.num_kv_heads * hd, dim])?,
                attn_v: g.linear(&p("attn_v.weight"), &[cfg.num_kv_heads * hd, dim])?,
                attn_output: g.linear(&p("attn_output.weight"), &[dim, cfg.num_heads * hd])?,
                attn_q_norm,
                attn_k_norm,
                num_heads: cfg.num_heads,
                num_kv_heads: cfg.num_kv_heads,
                head_dim: hd,
                scale: 1.0 / (hd as f64).sqrt(),
            };
            let mlp = Mlp {
                ffn_gate_up: g.gated_up(
                    &p("ffn_gate.weight"),
                    &p("ffn_up.weight"),
                    &[cfg.intermediate_size, dim],
                    GatedActivation::GeluTanh,
                )?,
                ffn_down: g.linear(&p("ffn_down.weight"), &[dim, cfg.intermediate_size])?,
            };
            blocks.push(Block {
                attn_norm,
                attn,
                post_attention_norm,
                ffn_norm,
                mlp,
                post_ffw_norm,
                global: cfg.is_global(i),
            });
        }
        let output_norm = RmsNorm::new(g.f32_tensor("output_norm.weight", &[dim])?, eps);
        let rope_global = RotaryEmbedding::new(
            cfg.rope_global_base,
            hd,
            cfg.max_seq_len,
            RopeLayout::Halves,
        )?;
        let rope_local =
            RotaryEmbedding::new(cfg.rope_local_base, hd, cfg.max_seq_len, RopeLayout::Halves)?;
        Ok(Self {
            token_embd,
            blocks,
            output_norm,
            output,
            rope_global,
            rope_local,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Run `tokens` after the positions already in `cache`, laid out as `span` says (one
    /// sequence, or branches after a root); logits `(1, t - logits_from, vocab)`
    /// for positions `logits_from..t` of `tokens` only, since the 262k-wide head dominates
    /// the cost of a decode step.
    pub fn forward(
        &self,
        tokens: &[u32],
        span: &Span,
        cache: &mut KvCache,
        logits_from: usize,
    ) -> Result<Tensor> {
        // Gemma scales embeddings by sqrt(hidden_size).
        let mut xs = (embed(&self.token_embd, tokens)? * (self.cfg.hidden_size as f64).sqrt())?;
        for (i, block) in self.blocks.iter().enumerate() {
            let (rope, window) = if block.global {
                (&self.rope_global, None)
            } else {
                (&self.rope_local, Some(self.cfg.sliding_window))
            };
            let h = block.attn_norm.forward(&xs)?;
            let h = block.attn.forward(&h, rope, window, cache, i, span)?;
            xs = (xs + block.post_attention_norm.forward(&h)?)?;
            let h = block.mlp.forward(&block.ffn_norm.forward(&xs)?)?;
            xs = (xs + block.post_ffw_norm.forward(&h)?)?;
        }
        let xs = positions_from(&xs, logits_from)?;
        let xs = self.output_norm.forward(&xs)?;
        self.output.forward(&xs)
    }
}
