//! A persistent response cache in front of any `LanguageModel`.
//!
//! Answers live in SQLite in WAL mode: each answer is one committed transaction, so several
//! processes may write at once and a process killed mid-run (kill -9) leaves every answer it
//! had finished. The key hashes a struct (model name, which for an API holds backend, base URL
//! and model; request kind; the full prompt and parameters), never a hand-joined string.
//! Sampled generations are cached with their seed, which is part of the parameters. API keys
//! are not part of anything stored.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::chat::ChatMessage;
use crate::error::{LlmError, Result};
use crate::{Completion, GenerateParams, LanguageModel, Prompt, Usage};

/// Bumped when what a key or a stored value means changes, so old rows are never misread.
const FORMAT: u32 = 1;

/// The SQLite file of cached answers.
pub struct ResponseCache {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("path", &self.path)
            .finish()
    }
}

impl ResponseCache {
    /// Where the CLI keeps the cache: `$SPAE_HOME/responses.sqlite`.
    pub fn default_path() -> PathBuf {
        spae_assets::default_home().join("responses.sqlite")
    }

    /// Open (creating if absent) the cache at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |e: rusqlite::Error| LlmError::Cache {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LlmError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        // Other processes may hold the write lock for a moment; wait rather than fail.
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LlmError::Cache {
                path: path.to_path_buf(),
                message: format!("could not switch to WAL mode (got {mode})"),
            });
        }
        // In WAL mode NORMAL loses nothing when a process dies, only on power loss.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS responses (
                 key BLOB PRIMARY KEY,
                 kind TEXT NOT NULL,
                 model TEXT NOT NULL,
                 value TEXT NOT NULL,
                 created INTEGER NOT NULL
             )",
        )
        .map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, message: impl ToString) -> LlmError {
        LlmError::Cache {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| LlmError::Poisoned)
    }

    /// The stored answer under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<String>> {
        self.lock()?
            .query_row(
                "SELECT value FROM responses WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    /// Store `value` under `key` (one committed transaction).
    pub fn put(&self, key: &[u8], kind: &str, model: &str, value: &str) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.lock()?
            .execute(
                "INSERT OR REPLACE INTO responses (key, kind, model, value, created)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, kind, model, value, now],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// How many answers are stored.
    pub fn len(&self) -> Result<usize> {
        let n: i64 = self
            .lock()?
            .query_row("SELECT COUNT(*) FROM responses", [], |row| row.get(0))
            .map_err(|e| self.error(e))?;
        Ok(n as usize)
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// What a cache key is made of.
#[derive(Serialize)]
struct CacheKey<'a> {
    format: u32,
    model: &'a str,
    /// Absent for APIs, so that their keys (and caches) are unchanged by this field.
    #[serde(skip_serializing_if = "Option::is_none")]
    arithmetic: Option<&'static str>,
    request: Request<'a>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Request<'a> {
    Generate {
        prompt: &'a Prompt,
        params: &'a GenerateParams,
    },
    Score {
        prompt: &'a Prompt,
        continuations: &'a [String],
    },
    Chat {
        messages: &'a [ChatMessage],
        params: &'a GenerateParams,
    },
}

impl Request<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Request::Generate { .. } => "generate",
            Request::Score { .. } => "score",
            Request::Chat { .. } => "chat",
        }
    }
}

/// Hits and misses of a `CachedModel` so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// Scores as stored: bit patterns, so `-inf` survives.
#[derive(Serialize, serde::Deserialize)]
struct StoredScores(#[serde(with = "crate::f32_bits")] Vec<f32>);

/// `inner`, answering from `cache` what it answered before.
pub struct CachedModel<M> {
    inner: M,
    cache: std::sync::Arc<ResponseCache>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<M: LanguageModel> CachedModel<M> {
    pub fn new(inner: M, cache: std::sync::Arc<ResponseCache>) -> Self {
        Self {
            inner,
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn inner(&self) -> &M {
        &self.inner
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    fn key(&self, request: Request<'_>) -> Result<(Vec<u8>, &'static str)> {
        let kind = request.kind();
        let key = CacheKey {
            format: FORMAT,
            model: self.inner.name(),
            arithmetic: self.inner.arithmetic(),
            request,
        };
        let bytes = serde_json::to_vec(&key).map_err(|e| self.cache.error(e))?;
        Ok((Sha256::digest(&bytes).to_vec(), kind))
    }

    /// The cached answer to `request`, or `compute`'s, stored before it is returned.
    async fn cached<T, F>(&self, request: Request<'_>, compute: F) -> Result<T>
    where
        T: Serialize + serde::de::DeserializeOwned,
        F: std::future::Future<Output = Result<T>>,
    {
        let (key, kind) = self.key(request)?;
        if let Some(value) = self.cache.get(&key)? {
            // A row that does not parse is a broken cache, not a miss.
            let answer = serde_json::from_str(&value)
                .map_err(|e| self.cache.error(format!("stored {kind} answer: {e}")))?;
            self.hits.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(model = self.inner.name(), kind, "cache hit");
            return Ok(answer);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let answer = compute.await?;
        let value = serde_json::to_string(&answer).map_err(|e| self.cache.error(e))?;
        self.cache.put(&key, kind, self.inner.name(), &value)?;
        Ok(answer)
    }
}

#[async_trait::async_trait]
impl<M: LanguageModel> LanguageModel for CachedModel<M> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn context_length(&self) -> usize {
        self.inner.context_length()
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.inner.tokenize(text)
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self.inner.detokenize(ids)
    }

    fn bos_token(&self) -> Option<u32> {
        self.inner.bos_token()
    }

    async fn generate(&self, prompt: &Prompt, params: &GenerateParams) -> Result<Completion> {
        params.validate()?;
        let request = Request::Generate { prompt, params };
        self.cached(request, self.inner.generate(prompt, params))
            .await
    }

    async fn score(&self, prompt: &Prompt, continuations: &[String]) -> Result<Vec<f32>> {
        let request = Request::Score {
            prompt,
            continuations,
        };
        let compute = async { Ok(StoredScores(self.inner.score(prompt, continuations).await?)) };
        Ok(self.cached(request, compute).await?.0)
    }

    async fn chat(&self, messages: &[ChatMessage], params: &GenerateParams) -> Result<Completion> {
        params.validate()?;
        let request = Request::Chat { messages, params };
        self.cached(request, self.inner.chat(messages, params))
            .await
    }

    fn usage(&self) -> Usage {
        self.inner.usage()
    }

    fn arithmetic(&self) -> Option<&'static str> {
        self.inner.arithmetic()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_json_is_pinned() {
        // The key is a hash of this exact JSON: a change here invalidates every cache.
        let params = GenerateParams::greedy(4);
        let prompt = Prompt::Text("hi".into());
        let key = CacheKey {
            format: FORMAT,
            model: "openai:m",
            arithmetic: None,
            request: Request::Generate {
                prompt: &prompt,
                params: &params,
            },
        };
        assert_eq!(
            serde_json::to_string(&key).unwrap(),
            r#"{"format":1,"model":"openai:m","request":{"kind":"generate","prompt":{"type":"text","value":"hi"},"params":{"max_tokens":4,"temperature":0.0,"top_p":1.0,"seed":0,"stop":[]}}}"#
        );
        // A local model's key names its arithmetic: answers of other kernels are not reused.
        let local = CacheKey {
            format: FORMAT,
            model: "local:gemma3-270m",
            arithmetic: Some(crate::local::ARITHMETIC),
            request: Request::Generate {
                prompt: &prompt,
                params: &params,
            },
        };
        assert!(serde_json::to_string(&local)
            .unwrap()
            .contains(r#""arithmetic":"int8-blocks-32""#));
    }
}
