//! A local server that speaks the parts of the Hugging Face Hub protocol the app uses, with
//! faults on demand: a connection cut mid-file, a wrong published checksum, slow responses,
//! hostile file names. Tests start it on `127.0.0.1:0`; the e2e run uses the
//! `hub-test-server` binary. Plain HTTP/1.1 over tokio so every byte is under control.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes written per chunk (and per `slow` pause).
const CHUNK: usize = 64 * 1024;
/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One file of a simulated repository.
#[derive(Clone)]
pub struct SimFile {
    /// Path in the repository.
    pub path: String,
    /// Content.
    pub data: Arc<Vec<u8>>,
    /// SHA-256 published in the listing (normally the real one).
    pub published_sha256: String,
}

impl SimFile {
    /// A file whose listing carries its true SHA-256.
    pub fn new(path: &str, data: Vec<u8>) -> Self {
        let sha = hex::encode(Sha256::digest(&data));
        Self {
            path: path.into(),
            data: Arc::new(data),
            published_sha256: sha,
        }
    }
}

/// Faults to inject.
#[derive(Default)]
pub struct Faults {
    /// Cut the connection after this many body bytes, for this many file responses.
    pub cut_after: Option<(u64, usize)>,
    /// Pause after every chunk.
    pub slow: Option<Duration>,
    /// Require this bearer token.
    pub token: Option<String>,
    /// Send `resolve` through a 302 to `/lfs/...` like the real Hub's CDN redirect.
    pub redirect: bool,
}

/// What the server saw (for assertions).
#[derive(Default, Debug)]
pub struct Seen {
    /// `Range` headers of file requests, in order (None = whole file).
    pub ranges: Mutex<Vec<Option<String>>>,
    /// Authorization headers of file requests.
    pub auth: Mutex<Vec<Option<String>>>,
}

struct Shared {
    commit: String,
    repos: HashMap<String, Vec<SimFile>>,
    extra_siblings: Vec<String>,
    faults: Mutex<Faults>,
    cuts_left: AtomicUsize,
    seen: Seen,
}

/// A running simulated Hub.
pub struct HubSim {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// The commit every simulated repo reports.
pub const SIM_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

impl HubSim {
    /// Starts on `bind` (use `127.0.0.1:0` in tests). `extra_siblings` are names listed
    /// without content (hostile names for validation tests).
    pub async fn start(
        bind: &str,
        repos: HashMap<String, Vec<SimFile>>,
        extra_siblings: Vec<String>,
        faults: Faults,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let cuts = faults.cut_after.map(|c| c.1).unwrap_or(0);
        let shared = Arc::new(Shared {
            commit: SIM_COMMIT.into(),
            repos,
            extra_siblings,
            faults: Mutex::new(faults),
            cuts_left: AtomicUsize::new(cuts),
            seen: Seen::default(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, s).await;
                });
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the server saw.
    pub fn seen(&self) -> &Seen {
        &self.shared.seen
    }

    /// Arms `n` more cuts after `bytes` body bytes.
    pub fn cut_next(&self, bytes: u64, n: usize) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.cut_after = Some((bytes, n));
        }
        self.shared.cuts_left.store(n, Ordering::SeqCst);
    }

    /// Changes the per-chunk delay.
    pub fn set_slow(&self, d: Option<Duration>) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.slow = d;
        }
    }
}

impl Drop for HubSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn write_head(
    sock: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    sock.write_all(h.as_bytes()).await
}

async fn simple(
    sock: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    write_head(
        sock,
        status,
        &[
            ("Content-Type", ctype.into()),
            ("Content-Length", body.len().to_string()),
        ],
    )
    .await?;
    sock.write_all(body).await
}

fn listing(s: &Shared, repo: &str) -> Option<String> {
    let files = s.repos.get(repo)?;
    let mut siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            serde_json::json!({
                "rfilename": f.path, "size": f.data.len(),
                "lfs": { "sha256": f.published_sha256, "size": f.data.len(), "pointerSize": 134 }
            })
        })
        .collect();
    siblings.push(serde_json::json!({ "rfilename": "README.md", "size": 10 }));
    for x in &s.extra_siblings {
        siblings.push(serde_json::json!({ "rfilename": x, "size": 1, "lfs": { "sha256": "0".repeat(64), "size": 1 } }));
    }
    Some(serde_json::json!({ "id": repo, "sha": s.commit, "siblings": siblings }).to_string())
}

/// `GET /api/models?search=Q`: repositories whose id contains Q (case-insensitive), plus
/// the hostile ids among the extra names (a client must drop them).
fn search(s: &Shared, target: &str) -> String {
    let q = target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("search="))
        .map(percent_decode)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut hits: Vec<serde_json::Value> = s
        .repos
        .keys()
        .filter(|id| id.to_ascii_lowercase().contains(&q))
        .map(|id| serde_json::json!({ "id": id, "downloads": 42, "likes": 7, "tags": ["gguf"] }))
        .collect();
    for x in &s.extra_siblings {
        hits.push(serde_json::json!({ "id": x, "downloads": 1 }));
    }
    serde_json::Value::Array(hits).to_string()
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = match b[i] {
            b'%' if i + 2 < b.len() => hex(b[i + 1]).zip(hex(b[i + 2])).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (decoded, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve(mut sock: TcpStream, s: Arc<Shared>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut tmp).await?;
        if n == 0 || buf.len() > MAX_HEAD {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let req = lines.next().unwrap_or("");
    let mut parts = req.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let path = target.split('?').next().unwrap_or("/");

    let (token, slow, redirect) = match s.faults.lock() {
        Ok(f) => (f.token.clone(), f.slow, f.redirect),
        Err(_) => return Ok(()),
    };
    if let Some(t) = token {
        if headers.get("authorization") != Some(&format!("Bearer {t}"))
            && !path.starts_with("/lfs/")
        {
            return simple(&mut sock, "401 Unauthorized", "text/plain", b"unauthorized").await;
        }
    }

    if path == "/api/models" {
        return simple(
            &mut sock,
            "200 OK",
            "application/json",
            search(&s, target).as_bytes(),
        )
        .await;
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let repo = rest.split("/revision/").next().unwrap_or(rest);
        return match listing(&s, repo) {
            Some(body) => simple(&mut sock, "200 OK", "application/json", body.as_bytes()).await,
            None => {
                simple(
                    &mut sock,
                    "404 Not Found",
                    "application/json",
                    br#"{"error":"Repository not found"}"#,
                )
                .await
            }
        };
    }

    // /{org}/{name}/resolve/{rev}/{file...}  or  /lfs/{org}/{name}/{file...}
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (repo, file, via_lfs) = if segs.len() >= 5 && segs[2] == "resolve" {
        (
            format!("{}/{}", segs[0], segs[1]),
            segs[4..].join("/"),
            false,
        )
    } else if segs.len() >= 4 && segs[0] == "lfs" {
        (
            format!("{}/{}", segs[1], segs[2]),
            segs[3..].join("/"),
            true,
        )
    } else {
        return simple(&mut sock, "404 Not Found", "text/plain", b"not found").await;
    };
    let Some(f) = s
        .repos
        .get(&repo)
        .and_then(|fs| fs.iter().find(|f| f.path == file))
        .cloned()
    else {
        return simple(&mut sock, "404 Not Found", "text/plain", b"entry not found").await;
    };
    let etag = format!("\"{}\"", hex::encode(Sha256::digest(&*f.data)));
    if redirect && !via_lfs {
        let loc = format!("/lfs/{repo}/{file}");
        let hs = [
            ("Location", loc),
            ("X-Repo-Commit", s.commit.clone()),
            ("X-Linked-Etag", etag),
            ("Content-Length", "0".into()),
        ];
        return write_head(&mut sock, "302 Found", &hs).await;
    }

    let total = f.data.len() as u64;
    let range = headers.get("range").cloned();
    if let Ok(mut r) = s.seen.ranges.lock() {
        r.push(range.clone());
    }
    if let Ok(mut a) = s.seen.auth.lock() {
        a.push(headers.get("authorization").cloned());
    }
    let if_range_ok = headers.get("if-range").is_none_or(|v| *v == etag);
    let start = match range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
    {
        Some(n) if if_range_ok => match n.parse::<u64>() {
            Ok(n) if n < total => Some(n),
            _ => {
                let hs = [
                    ("Content-Range", format!("bytes */{total}")),
                    ("Content-Length", "0".into()),
                ];
                return write_head(&mut sock, "416 Range Not Satisfiable", &hs).await;
            }
        },
        _ => None,
    };
    let from = start.unwrap_or(0);
    let len = total - from;
    let mut hs = vec![
        ("Content-Length", len.to_string()),
        ("Content-Type", "application/octet-stream".to_string()),
        ("Accept-Ranges", "bytes".to_string()),
        ("ETag", etag),
        ("X-Repo-Commit", s.commit.clone()),
    ];
    let status = if let Some(st) = start {
        hs.push(("Content-Range", format!("bytes {st}-{}/{total}", total - 1)));
        "206 Partial Content"
    } else {
        "200 OK"
    };
    write_head(&mut sock, status, &hs).await?;
    if method == "HEAD" {
        return Ok(());
    }
    let cut_at = match s.faults.lock().ok().and_then(|f| f.cut_after) {
        Some((bytes, _)) if s.cuts_left.load(Ordering::SeqCst) > 0 => {
            s.cuts_left.fetch_sub(1, Ordering::SeqCst);
            Some(bytes)
        }
        _ => None,
    };
    let body = &f.data[from as usize..];
    let mut sent = 0usize;
    for chunk in body.chunks(CHUNK) {
        let chunk = match cut_at {
            Some(c) if (sent + chunk.len()) as u64 > c => {
                let keep = (c as usize).saturating_sub(sent);
                sock.write_all(&chunk[..keep]).await?;
                sock.flush().await?;
                // Cut: close without sending the rest (the client sees a short body).
                return Ok(());
            }
            _ => chunk,
        };
        sock.write_all(chunk).await?;
        sent += chunk.len();
        if let Some(d) = slow {
            tokio::time::sleep(d).await;
        }
    }
    sock.flush().await
}
