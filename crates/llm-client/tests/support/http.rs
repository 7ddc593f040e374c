//! A scripted HTTP/1.1 server on loopback: each request gets the reply a script picks, so
//! tests can answer 429, 503, stall, reset the connection or send broken JSON.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: String,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("request body is JSON")
    }
}

/// What to answer.
pub enum Reply {
    /// Status, extra headers, body.
    Http(u16, Vec<(&'static str, String)>, String),
    /// Read the request and never answer.
    Stall,
    /// Close the connection with a TCP reset.
    Reset,
    /// Wait, then answer.
    After(Duration, Box<Reply>),
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Self {
        Reply::Http(200, Vec::new(), body.into())
    }
}

type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

pub struct ScriptServer {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ScriptServer {
    /// Serve on 127.0.0.1; `script(n, request)` answers the n-th request (from 0).
    pub async fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = Self {
            addr,
            hits: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            seen: Arc::default(),
        };
        let script: Arc<Script> = Arc::new(script);
        let (hits, seen) = (server.hits.clone(), server.seen.clone());
        let (in_flight, max_in_flight) = (server.in_flight.clone(), server.max_in_flight.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, hits, seen) = (script.clone(), hits.clone(), seen.clone());
                let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
                tokio::spawn(async move {
                    connection(stream, script, hits, seen, in_flight, max_in_flight).await;
                });
            }
        });
        server
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The most requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

async fn connection(
    mut stream: TcpStream,
    script: Arc<Script>,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let n = hits.fetch_add(1, Ordering::SeqCst);
        seen.lock().expect("seen").push(request.clone());
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        max_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut reply = script(n, &request);
        let keep = loop {
            match reply {
                Reply::After(delay, next) => {
                    tokio::time::sleep(delay).await;
                    reply = *next;
                }
                Reply::Stall => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    break false;
                }
                Reply::Reset => {
                    #[allow(deprecated)]
                    let _ = stream.set_linger(Some(Duration::ZERO));
                    break false;
                }
                Reply::Http(status, headers, body) => {
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                        body.len()
                    );
                    for (k, v) in headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let ok = stream.write_all(head.as_bytes()).await.is_ok()
                        && stream.write_all(body.as_bytes()).await.is_ok();
                    break ok;
                }
            }
        };
        in_flight.fetch_sub(1, Ordering::SeqCst);
        if !keep {
            return;
        }
    }
}

/// One request (head and a content-length body) from the stream.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                buf.drain(..end + 4 + len);
                return Some(Seen { head, body });
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A `/v1/completions` answer with `text`, one logprob per character, and usage.
pub fn completion_body(text: &str) -> String {
    let tokens: Vec<String> = text.chars().map(String::from).collect();
    serde_json::json!({
        "id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
        "choices": [{
            "index": 0, "text": text, "finish_reason": "length",
            "logprobs": { "tokens": tokens, "token_logprobs": vec![-0.5; tokens.len()] },
        }],
        "usage": { "prompt_tokens": 3, "completion_tokens": tokens.len(), "total_tokens": 3 + tokens.len() },
    })
    .to_string()
}
