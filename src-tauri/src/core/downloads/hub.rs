//! The Hugging Face Hub protocol, the parts downloads need:
//! `GET {endpoint}/api/models/{repo}[/revision/{rev}]?blobs=true` (siblings with sizes and LFS
//! sha256) and `GET {endpoint}/{repo}/resolve/{rev}/{file}` (redirects, ETag, Range).

use std::time::Duration;

use serde::Deserialize;

use super::models::{HubConfig, HubFile, HubRepoListing, HubSearchHit};
use super::validate;
use crate::core::error::{AppError, AppResult};
use crate::core::library::helpers::split_parts;

/// Connect timeout; a dead mirror should fail fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Read timeout between bytes: a stalled transfer counts as a network drop and is retried.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
struct ApiLfs {
    sha256: String,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct ApiSibling {
    rfilename: String,
    size: Option<u64>,
    lfs: Option<ApiLfs>,
}

/// Longest search text sent to the Hub.
pub const MAX_SEARCH_CHARS: usize = 100;
/// Results asked for per search.
const SEARCH_LIMIT: &str = "30";

#[derive(Debug, Deserialize)]
struct ApiSearchHit {
    id: String,
    downloads: Option<u64>,
    likes: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ApiModel {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<ApiSibling>,
}

/// A file of a repository that can be downloaded (validated).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteFile {
    /// Path inside the repository.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 the Hub publishes.
    pub sha256: String,
}

/// HTTP client for one endpoint.
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    cfg: HubConfig,
}

impl HubClient {
    /// A client for `cfg` (rustls; redirects followed; auth dropped on cross-host redirects).
    pub fn new(cfg: HubConfig) -> AppResult<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("hmoe-studio/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AppError::Hub(format!("http client: {e}")))?;
        Ok(Self { http, cfg })
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cfg.token {
            Some(t) if !t.is_empty() => rb.bearer_auth(t),
            _ => rb,
        }
    }

    /// The `resolve` URL of a file.
    pub fn file_url(&self, repo: &str, revision: &str, file: &str) -> AppResult<String> {
        validate::repo(repo)?;
        validate::revision(revision)?;
        validate::file_path(file)?;
        Ok(format!(
            "{}/{repo}/resolve/{revision}/{file}",
            self.cfg.endpoint
        ))
    }

    /// A GET for a file, from `offset` on.
    pub fn get_file(&self, url: &str, offset: u64, etag: Option<&str>) -> reqwest::RequestBuilder {
        let mut rb = self.auth(self.http.get(url));
        if offset > 0 {
            rb = rb.header(reqwest::header::RANGE, format!("bytes={offset}-"));
            if let Some(e) = etag {
                // If the file changed since, the server sends it whole (200) instead of a range.
                rb = rb.header(reqwest::header::IF_RANGE, e);
            }
        }
        rb
    }

    /// Repositories with GGUF files whose name matches `query`, most downloaded first
    /// (`GET /api/models?search=..&filter=gguf`). Ids that are not a valid `org/name` are
    /// dropped: they come from the network.
    pub async fn search(&self, query: &str) -> AppResult<Vec<HubSearchHit>> {
        let q = query.trim();
        if q.is_empty() || q.chars().count() > MAX_SEARCH_CHARS || q.chars().any(char::is_control) {
            return Err(AppError::invalid(
                "query",
                format!("search text must be 1 to {MAX_SEARCH_CHARS} characters"),
            ));
        }
        let url = format!("{}/api/models", self.cfg.endpoint);
        let resp = self
            .auth(self.http.get(&url))
            .query(&[
                ("search", q),
                ("filter", "gguf"),
                ("sort", "downloads"),
                ("direction", "-1"),
                ("limit", SEARCH_LIMIT),
            ])
            .send()
            .await
            .map_err(|e| AppError::Hub(format!("{url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(AppError::Hub(format!("{url}: HTTP {}", resp.status())));
        }
        let hits: Vec<ApiSearchHit> = resp
            .json()
            .await
            .map_err(|e| AppError::Hub(format!("{url}: bad search answer: {e}")))?;
        Ok(hits
            .into_iter()
            .filter(|h| validate::repo(&h.id).is_ok())
            .map(|h| HubSearchHit {
                repo: h.id,
                downloads: h.downloads,
                likes: h.likes,
            })
            .collect())
    }

    /// Every `.gguf` file of `repo` at `revision` (validated), and the commit.
    pub async fn list_remote(
        &self,
        repo: &str,
        revision: &str,
    ) -> AppResult<(Option<String>, Vec<RemoteFile>)> {
        validate::repo(repo)?;
        validate::revision(revision)?;
        let url = if revision == "main" {
            format!("{}/api/models/{repo}?blobs=true", self.cfg.endpoint)
        } else {
            format!(
                "{}/api/models/{repo}/revision/{revision}?blobs=true",
                self.cfg.endpoint
            )
        };
        let resp = self
            .auth(self.http.get(&url))
            .send()
            .await
            .map_err(|e| AppError::Hub(format!("{url}: {e}")))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => {
                return Err(AppError::Hub(format!(
                    "{repo} needs an access token (set one in Settings)"
                )))
            }
            404 => {
                return Err(AppError::Hub(format!(
                    "repository {repo} (revision {revision}) not found"
                )))
            }
            s => return Err(AppError::Hub(format!("{url}: HTTP {s}"))),
        }
        let api: ApiModel = resp
            .json()
            .await
            .map_err(|e| AppError::Hub(format!("{url}: bad listing: {e}")))?;
        let commit = match api.sha {
            Some(s) if s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit()) => {
                Some(s.to_ascii_lowercase())
            }
            Some(s) => {
                return Err(AppError::Hub(format!(
                    "listing has a malformed commit {s:?}"
                )))
            }
            None => None,
        };
        let mut files = Vec::new();
        for s in api.siblings {
            if !s.rfilename.ends_with(".gguf") {
                continue;
            }
            // Names from the network are validated before anything else looks at them.
            if let Err(e) = validate::file_path(&s.rfilename) {
                tracing::warn!("skipping {}: {e}", s.rfilename.escape_debug());
                continue;
            }
            let Some(lfs) = s.lfs else {
                tracing::warn!("skipping {}: no LFS sha256 to verify against", s.rfilename);
                continue;
            };
            let sha = lfs.sha256.to_ascii_lowercase();
            if let Err(e) = validate::sha256(&sha) {
                tracing::warn!("skipping {}: {e}", s.rfilename);
                continue;
            }
            files.push(RemoteFile {
                path: s.rfilename,
                size: s.size.unwrap_or(lfs.size),
                sha256: sha,
            });
        }
        Ok((commit, files))
    }

    /// The listing the UI shows: split files grouped, quant guessed from the name.
    pub async fn list(&self, repo: &str, revision: &str) -> AppResult<HubRepoListing> {
        let (commit, files) = self.list_remote(repo, revision).await?;
        Ok(HubRepoListing {
            repo: repo.to_string(),
            revision: revision.to_string(),
            commit,
            files: group(files),
        })
    }
}

/// Groups split parts (`-00001-of-00003.gguf`) into one entry; incomplete splits are dropped.
pub fn group(files: Vec<RemoteFile>) -> Vec<HubFile> {
    let mut out: Vec<HubFile> = Vec::new();
    let mut splits: std::collections::BTreeMap<(String, u32), Vec<(u32, RemoteFile)>> =
        Default::default();
    for f in files {
        let name = f.path.rsplit('/').next().unwrap_or(&f.path).to_string();
        match split_parts(&name) {
            Some((_, idx, total)) => {
                let key = f.path[..f.path.len() - "-00001-of-00003.gguf".len()].to_string();
                splits.entry((key, total)).or_default().push((idx, f));
            }
            None => out.push(HubFile {
                name: f.path.clone(),
                quant: guess_quant(&f.path),
                files: vec![f.path],
                size: f.size,
                sha256: vec![f.sha256],
            }),
        }
    }
    for ((base, total), mut parts) in splits {
        parts.sort_by_key(|p| p.0);
        if parts.len() != total as usize
            || parts.iter().enumerate().any(|(i, p)| p.0 != i as u32 + 1)
        {
            continue;
        }
        out.push(HubFile {
            name: format!("{base}.gguf"),
            quant: guess_quant(&base),
            size: parts.iter().map(|p| p.1.size).sum(),
            sha256: parts.iter().map(|p| p.1.sha256.clone()).collect(),
            files: parts.into_iter().map(|p| p.1.path).collect(),
        });
    }
    out.sort_by_key(|f| f.size);
    out
}

/// Quant names as llama.cpp spells them, longest first so `Q4_K_M` wins over `Q4_K`.
const QUANTS: &[&str] = &[
    "IQ4_XS", "IQ4_NL", "IQ3_XXS", "IQ3_M", "IQ2_XXS", "IQ2_M", "IQ1_S", "Q2_K_XL", "Q3_K_XL",
    "Q4_K_XL", "Q5_K_XL", "Q6_K_XL", "Q8_K_XL", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M",
    "Q5_K_S", "Q5_K_M", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q8_0", "BF16", "F16", "F32",
];

/// `Qwen3-30B-A3B-Q4_K_M.gguf` → `Q4_K_M`.
pub fn guess_quant(name: &str) -> Option<String> {
    let up = name.to_ascii_uppercase();
    QUANTS
        .iter()
        .find(|q| up.contains(*q))
        .map(|q| q.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rf(p: &str, size: u64) -> RemoteFile {
        RemoteFile {
            path: p.into(),
            size,
            sha256: "0".repeat(64),
        }
    }

    #[test]
    fn groups_split_files_and_drops_incomplete_ones() {
        let g = group(vec![
            rf("m-Q8_0.gguf", 30),
            rf("Q4_K_M/m-Q4_K_M-00002-of-00002.gguf", 7),
            rf("Q4_K_M/m-Q4_K_M-00001-of-00002.gguf", 10),
            rf("m-Q2_K-00001-of-00003.gguf", 5),
        ]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name, "Q4_K_M/m-Q4_K_M.gguf");
        assert_eq!(g[0].size, 17);
        assert_eq!(g[0].files[0], "Q4_K_M/m-Q4_K_M-00001-of-00002.gguf");
        assert_eq!(g[0].quant.as_deref(), Some("Q4_K_M"));
        assert_eq!(g[1].quant.as_deref(), Some("Q8_0"));
    }
}
