//! A fault-injecting OpenAI-compatible server on 127.0.0.1, for the judge's tests and benchmark.
//!
//! It speaks just enough HTTP/1.1 (keep-alive, `Content-Length` bodies) to answer
//! `POST /v1/chat/completions` after a fixed latency, and injects faults chosen per
//! (request body, attempt): 500s, 429 with `Retry-After`, stalls past the client's timeout,
//! dropped connections, malformed and truncated response bodies, and replies whose *content* is
//! prose or truncated JSON (the repair round's business). Its grading is a small deterministic
//! rule set (an answer that contains the reference is correct; a statement sharing a word with
//! the question is relevant; a claim whose numbers all occur in the context is supported), so
//! tests can tell right from wrong answers. The server stops when its handle drops, and on its
//! own after `lifetime`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A correct answer.
    None,
    /// HTTP 500.
    ServerError,
    /// HTTP 429 with `Retry-After: <secs>`.
    RateLimited,
    /// Waits `stall` before answering (past a short client timeout).
    Stall,
    /// Closes the connection without answering.
    Drop,
    /// HTTP 200 with a body that is not JSON.
    MalformedBody,
    /// HTTP 200 whose body is cut off (declared longer than sent).
    TruncatedBody,
    /// A valid response whose content is prose, not JSON.
    ProseContent,
    /// A valid response whose content is JSON cut off mid-object.
    TruncatedContent,
    /// HTTP 401 whose body echoes the bearer token (as some servers do).
    Unauthorized,
}

/// Chooses a fault for (request body, its hash, attempt number of that body).
pub type FaultPlan = Arc<dyn Fn(&Value, u64, u32) -> Fault + Send + Sync>;

/// The content of a correct reply to a request, for servers that are not a judge (the labels
/// tests answer image annotations); `None` keeps the judge grading.
pub type ContentFn = Arc<dyn Fn(&Value) -> String + Send + Sync>;

/// Server settings.
#[derive(Clone)]
pub struct StubConfig {
    pub latency: Duration,
    /// Up to this much more latency per request, fixed by the body's hash (so answers of one
    /// batch finish apart).
    pub latency_spread: Duration,
    pub stall: Duration,
    pub retry_after_s: f64,
    pub plan: FaultPlan,
    pub lifetime: Duration,
    pub content: Option<ContentFn>,
}

impl Default for StubConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            latency_spread: Duration::ZERO,
            stall: Duration::from_secs(5),
            retry_after_s: 0.05,
            plan: Arc::new(|_, _, _| Fault::None),
            lifetime: Duration::from_secs(300),
            content: None,
        }
    }
}

/// A plan that injects each fault in `faults` with probability `rate / faults.len()` per
/// attempt, seeded by (body hash, attempt), and never faults after attempt `clean_after`.
pub fn random_plan(faults: Vec<Fault>, rate: f64, clean_after: u32) -> FaultPlan {
    Arc::new(move |_, h, attempt| {
        if attempt >= clean_after || faults.is_empty() {
            return Fault::None;
        }
        let x = splitmix(h ^ ((u64::from(attempt) << 32) | 0x9e37));
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        if u < rate {
            faults[((u / rate) * faults.len() as f64) as usize % faults.len()]
        } else {
            Fault::None
        }
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct StubLog {
    pub requests: AtomicU64,
    /// Correct replies written out in full.
    pub answered: AtomicU64,
    /// When each correct reply was written out.
    pub answered_at: Mutex<Vec<std::time::Instant>>,
    pub by_fault: Mutex<HashMap<String, u64>>,
    /// Requests per body hash (attempts included).
    pub by_body: Mutex<HashMap<u64, u32>>,
    /// Every `Authorization` header value seen.
    pub auth: Mutex<Vec<String>>,
}

/// A running server; dropping it stops it.
pub struct StubServer {
    pub addr: SocketAddr,
    pub log: Arc<StubLog>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StubServer {
    /// Binds 127.0.0.1 on a free port and serves on a background thread.
    pub fn start(config: StubConfig) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let log = Arc::new(StubLog::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let log2 = log.clone();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else {
                    return;
                };
                let config = Arc::new(config);
                let lifetime = tokio::time::sleep(config.lifetime);
                tokio::pin!(lifetime);
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        _ = &mut lifetime => break,
                        conn = listener.accept() => {
                            if let Ok((stream, _)) = conn {
                                tokio::spawn(serve_conn(stream, config.clone(), log2.clone()));
                            }
                        }
                    }
                }
            });
            // Dropping the runtime cancels the connection tasks still running.
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        Ok(Self {
            addr,
            log,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_conn(mut stream: TcpStream, config: Arc<StubConfig>, log: Arc<StubLog>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    loop {
        let Some((head_end, content_length, auth, path)) = read_head(&mut stream, &mut buf).await
        else {
            return;
        };
        while buf.len() < head_end + content_length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf[head_end..head_end + content_length].to_vec();
        buf.drain(..head_end + content_length);
        if let Some(a) = auth {
            if let Ok(mut v) = log.auth.lock() {
                v.push(a);
            }
        }
        let keep = respond(&mut stream, &path, &body, &config, &log).await;
        if !keep {
            return;
        }
    }
}

/// Reads one request head; returns (head length, content length, authorization, path).
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(usize, usize, Option<String>, String)> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
            let mut lines = head.split("\r\n");
            let path = lines.next()?.split_whitespace().nth(1)?.to_owned();
            let (mut len, mut auth) = (0, None);
            for l in lines {
                let (k, v) = l.split_once(':')?;
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().ok()?,
                    "authorization" => auth = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
            return Some((pos + 4, len, auth, path));
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn write(
    stream: &mut TcpStream,
    status: &str,
    extra: &str,
    body: &[u8],
    declared: usize,
) -> bool {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n{extra}\r\n"
    );
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    stream.write_all(&msg).await.is_ok()
}

/// Answers one request; returns whether to keep the connection.
async fn respond(
    stream: &mut TcpStream,
    path: &str,
    body: &[u8],
    config: &StubConfig,
    log: &StubLog,
) -> bool {
    log.requests.fetch_add(1, Ordering::Relaxed);
    if path.ends_with("/models") {
        let b = json!({"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "vlmtest"}]}).to_string();
        return write(stream, "200 OK", "", b.as_bytes(), b.len()).await;
    }
    let h = {
        let d = Sha256::digest(body);
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    };
    let attempt = {
        let mut m = log.by_body.lock().ok();
        m.as_mut().map_or(0, |m| {
            let e = m.entry(h).or_insert(0);
            *e += 1;
            *e - 1
        })
    };
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        let b = br#"{"error": {"message": "body is not JSON"}}"#;
        return write(stream, "400 Bad Request", "", b, b.len()).await;
    };
    let fault = (config.plan)(&req, h, attempt);
    if let Ok(mut m) = log.by_fault.lock() {
        *m.entry(format!("{fault:?}")).or_insert(0) += 1;
    }
    let spread = config.latency_spread.as_micros() as u64;
    let extra = if spread == 0 { 0 } else { splitmix(h) % spread };
    let latency = config.latency + Duration::from_micros(extra);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Fault::ServerError => {
            let b = br#"{"error": {"message": "injected 500"}}"#;
            write(stream, "500 Internal Server Error", "", b, b.len()).await
        }
        Fault::RateLimited => {
            let b = br#"{"error": {"message": "rate limited"}}"#;
            let extra = format!("retry-after: {}\r\n", config.retry_after_s);
            write(stream, "429 Too Many Requests", &extra, b, b.len()).await
        }
        Fault::Stall => {
            tokio::time::sleep(config.stall).await;
            false
        }
        Fault::Drop => false,
        Fault::MalformedBody => {
            let b = b"<html>502 bad gateway</html>";
            write(stream, "200 OK", "", b, b.len()).await
        }
        Fault::TruncatedBody => {
            let full = completion(&req, reply(&req, config)).to_string();
            let half = &full.as_bytes()[..full.len() / 2];
            let _ = write(stream, "200 OK", "", half, full.len()).await;
            false
        }
        Fault::Unauthorized => {
            let seen = log
                .auth
                .lock()
                .ok()
                .and_then(|v| v.last().cloned())
                .unwrap_or_default();
            let key = seen.trim_start_matches("Bearer ").to_owned();
            let b = json!({"error": {"message": format!("Incorrect API key provided: {key}")}})
                .to_string();
            write(stream, "401 Unauthorized", "", b.as_bytes(), b.len()).await
        }
        Fault::ProseContent => {
            let b =
                completion(&req, "I think the answer looks fine, maybe a 4.".into()).to_string();
            write(stream, "200 OK", "", b.as_bytes(), b.len()).await
        }
        Fault::TruncatedContent => {
            let g = reply(&req, config);
            let cut: String = g.chars().take(g.chars().count() / 2).collect();
            let b = completion(&req, cut).to_string();
            write(stream, "200 OK", "", b.as_bytes(), b.len()).await
        }
        Fault::None => {
            let b = completion(&req, reply(&req, config)).to_string();
            let sent = write(stream, "200 OK", "", b.as_bytes(), b.len()).await;
            if sent {
                log.answered.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut v) = log.answered_at.lock() {
                    v.push(std::time::Instant::now());
                }
            }
            sent
        }
    }
}

/// A correct reply's content: the configured one, else the judge grading.
fn reply(req: &Value, config: &StubConfig) -> String {
    match &config.content {
        Some(f) => f(req),
        None => grade(req),
    }
}

/// A chat completion around `content`, with logprobs for a rubric score when asked.
fn completion(req: &Value, content: String) -> Value {
    let prompt_chars: usize = req["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| x["content"].as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    let mut choice = json!({
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
    });
    if req["logprobs"].as_bool() == Some(true) {
        if let Some(lp) = score_logprobs(&content) {
            choice["logprobs"] = lp;
        }
    }
    json!({
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "model": req["model"],
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_chars / 4 + 1, "completion_tokens": content.len() / 4 + 1,
                  "total_tokens": prompt_chars / 4 + content.len() / 4 + 2},
    })
}

/// Splits `{"reason": …, "score": N}` into three tokens, the score token carrying 0.7 on N and
/// 0.15 on each neighbour.
fn score_logprobs(content: &str) -> Option<Value> {
    let key = content.rfind("\"score\":")? + 8;
    let at = key + (content[key..].len() - content[key..].trim_start().len());
    let end = at + content[at..].find(|c: char| !c.is_ascii_digit())?;
    let n: i64 = content[at..end].parse().ok()?;
    let alts: Vec<Value> = [(n, 0.7f64), (n - 1, 0.15), (n + 1, 0.15)]
        .iter()
        .map(|(s, p)| json!({"token": s.to_string(), "logprob": p.ln()}))
        .collect();
    Some(json!({"content": [
        {"token": &content[..at], "logprob": 0.0, "top_logprobs": []},
        {"token": &content[at..end], "logprob": (0.7f64).ln(), "top_logprobs": alts},
        {"token": &content[end..], "logprob": 0.0, "top_logprobs": []},
    ]}))
}

/// The section of the last user message that follows `label:\n`, up to the next blank line.
fn section<'a>(user: &'a str, label: &str) -> Option<&'a str> {
    let start = user.find(&format!("\n{label}:\n"))? + label.len() + 3;
    let rest = &user[start..];
    Some(rest.split("\n\n").next().unwrap_or(rest).trim())
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 3)
        .map(str::to_lowercase)
        .collect()
}

fn numbers(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn sentences(s: &str) -> Vec<String> {
    s.split(['.', '!', '?', '\n'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The stub's deterministic judgement, shaped by the request's schema.
fn grade(req: &Value) -> String {
    let user = req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|x| x["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    // A repair request's last user turn is the complaint: grade the original prompt instead.
    let user = if user.starts_with("Your reply could not be used") {
        req["messages"]
            .as_array()
            .and_then(|m| m.get(1))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
    } else {
        user
    };
    let system = req["messages"][0]["content"].as_str().unwrap_or_default();
    let answer = section(user, "Answer").unwrap_or_default();
    if system.contains("{\"steps\"") {
        let criteria = user.strip_prefix("Criteria: ").unwrap_or(user);
        let criteria = criteria.split('\n').next().unwrap_or_default();
        let steps: Vec<String> = sentences(criteria)
            .into_iter()
            .map(|s| format!("Check: {s}"))
            .collect();
        json!({"steps": steps}).to_string()
    } else if system.contains("\"score\"") {
        let (lo, hi) = score_range(system);
        let reference = section(user, "Reference answer").unwrap_or_default();
        let ok = !reference.is_empty() && answer.to_lowercase().contains(&reference.to_lowercase());
        let score = if ok { hi } else { lo };
        let reason = if ok {
            "the answer states the reference"
        } else {
            "the answer misses the reference"
        };
        json!({"reason": reason, "score": score}).to_string()
    } else if system.contains("\"statements\"") {
        let q = words(section(user, "Question").unwrap_or_default());
        let st: Vec<Value> = sentences(answer)
            .into_iter()
            .map(|s| {
                let rel = if words(&s).iter().any(|w| q.contains(w)) {
                    "yes"
                } else {
                    "no"
                };
                json!({"statement": s, "relevant": rel})
            })
            .collect();
        json!({"statements": st, "reason": "statements sharing a word with the question are relevant"}).to_string()
    } else {
        let evidence = format!(
            "{} {}",
            section(user, "Context").unwrap_or_default(),
            section(user, "Reference answer").unwrap_or_default()
        );
        let known = numbers(&evidence);
        let claims: Vec<Value> = sentences(answer)
            .into_iter()
            .map(|s| {
                let ok = numbers(&s).iter().all(|n| known.contains(n));
                json!({"claim": s, "supported": if ok { "yes" } else { "no" }})
            })
            .collect();
        json!({"claims": claims, "reason": "claims whose numbers occur in the evidence are supported"}).to_string()
    }
}

fn score_range(system: &str) -> (i64, i64) {
    let parse = |s: &str| {
        s.split(|c: char| !c.is_ascii_digit() && c != '-')
            .next()
            .and_then(|n| n.parse().ok())
    };
    let Some(at) = system.find("integer from ").map(|i| i + 13) else {
        return (1, 5);
    };
    let lo = parse(&system[at..]).unwrap_or(1);
    let hi = system[at..]
        .find(" to ")
        .and_then(|i| parse(&system[at + i + 4..]))
        .unwrap_or(5);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_plan_is_deterministic_and_clean_after_the_limit() {
        let plan = random_plan(vec![Fault::ServerError, Fault::Stall], 0.5, 3);
        let v = Value::Null;
        let a: Vec<Fault> = (0..200).map(|h| plan(&v, h, 0)).collect();
        let b: Vec<Fault> = (0..200).map(|h| plan(&v, h, 0)).collect();
        assert_eq!(a, b);
        let faulted = a.iter().filter(|f| **f != Fault::None).count();
        assert!((60..140).contains(&faulted), "{faulted}");
        assert!((0..200).all(|h| plan(&v, h, 3) == Fault::None));
    }

    #[test]
    fn grades_by_its_rules() {
        let req = |system: &str, user: &str| json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]});
        let sys = "Reply {\"reason\": \"..\", \"score\": <integer from 1 (worst) to 5 (best)>}.";
        let g = grade(&req(
            sys,
            "Criteria: c\n\nReference answer:\n45 Nm\n\nAnswer:\nIt is 45 Nm.\n",
        ));
        assert_eq!(
            g,
            r#"{"reason":"the answer states the reference","score":5}"#
        );
        let g = grade(&req(
            sys,
            "Criteria: c\n\nReference answer:\n45 Nm\n\nAnswer:\nIt is 40 Nm.\n",
        ));
        assert!(g.ends_with("\"score\":1}"), "{g}");
        let lp = score_logprobs(r#"{"reason": "x", "score": 4}"#).unwrap();
        assert_eq!(lp["content"][1]["token"], "4");
    }
}
