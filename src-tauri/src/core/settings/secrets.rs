//! Secrets (the Hugging Face token, API keys of remote endpoints): the OS keyring where one
//! answers (Secret Service on Linux, Keychain on macOS, Credential Manager on Windows),
//! else a file only the user can read (0600) next to the database, and the settings
//! screen says which. Secrets never go to the UI in full: see [`mask`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::core::error::{AppError, AppResult};

/// Service name of the app's keyring entries.
pub const KEYRING_SERVICE: &str = "hmoe-studio";
/// `HMOE_STUDIO_KEYRING=off` forces the file store (tests, portable installs).
pub const KEYRING_ENV: &str = "HMOE_STUDIO_KEYRING";
/// File name of the fallback store in the data folder.
pub const SECRETS_FILE: &str = "secrets.json";
/// Key of the Hugging Face token.
pub const HF_TOKEN: &str = "hf-token";

/// Key of a remote endpoint's API key.
pub fn endpoint_key(id: i64) -> String {
    format!("remote-endpoint-{id}")
}

/// Where secrets are kept (shown in Settings).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SecretStorageInfo {
    /// `keyring` or `file`.
    pub kind: String,
    /// One sentence for the user.
    pub note: String,
}

/// A place that keeps secrets by key.
pub trait SecretBackend: Send + Sync {
    /// The secret, if set.
    fn get(&self, key: &str) -> Result<Option<String>, String>;
    /// Stores a secret.
    fn set(&self, key: &str, value: &str) -> Result<(), String>;
    /// Removes a secret (no error if absent).
    fn delete(&self, key: &str) -> Result<(), String>;
}

/// The app's secret store (cheap to clone).
#[derive(Clone)]
pub struct SecretStore {
    backend: Arc<dyn SecretBackend>,
    info: SecretStorageInfo,
}

impl SecretStore {
    /// The OS keyring if it answers, else the 0600 file in `data`.
    pub fn open(data: &Path) -> Self {
        let off = std::env::var(KEYRING_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("off"));
        if !off {
            match keyring_backend::probe() {
                Ok(b) => {
                    return Self {
                        backend: Arc::new(b),
                        info: SecretStorageInfo {
                            kind: "keyring".into(),
                            note: "Stored in the system keyring.".into(),
                        },
                    }
                }
                Err(e) => tracing::info!("no usable OS keyring ({e}); using {SECRETS_FILE}"),
            }
        }
        Self::file(data.join(SECRETS_FILE))
    }

    /// The file store at `path`.
    pub fn file(path: PathBuf) -> Self {
        let note = format!(
            "No system keyring is available: stored in {} (readable only by you).",
            path.display()
        );
        Self {
            backend: Arc::new(FileSecrets {
                path,
                lock: Mutex::new(()),
            }),
            info: SecretStorageInfo {
                kind: "file".into(),
                note,
            },
        }
    }

    /// A store over any backend (tests).
    pub fn with_backend(backend: Arc<dyn SecretBackend>, info: SecretStorageInfo) -> Self {
        Self { backend, info }
    }

    /// An in-memory store (tests).
    #[cfg(test)]
    pub fn memory() -> Self {
        Self::with_backend(
            Arc::new(MemorySecrets::default()),
            SecretStorageInfo {
                kind: "memory".into(),
                note: "test store".into(),
            },
        )
    }

    /// Where secrets are kept.
    pub fn info(&self) -> &SecretStorageInfo {
        &self.info
    }

    /// Reads a secret.
    pub fn get(&self, key: &str) -> AppResult<Option<String>> {
        self.backend
            .get(key)
            .map_err(|e| AppError::State(format!("reading secret {key}: {e}")))
    }

    /// Stores (non-empty) or removes (`None` or blank) a secret.
    pub fn set(&self, key: &str, value: Option<&str>) -> AppResult<()> {
        let r = match value.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => self.backend.set(key, v),
            None => self.backend.delete(key),
        };
        r.map_err(|e| AppError::State(format!("saving secret {key}: {e}")))
    }

    /// Blocking calls (D-Bus, file I/O) off the async threads.
    pub async fn get_async(&self, key: &str) -> AppResult<Option<String>> {
        let (me, key) = (self.clone(), key.to_string());
        tokio::task::spawn_blocking(move || me.get(&key))
            .await
            .map_err(|e| AppError::State(format!("secret task failed: {e}")))?
    }

    /// See [`SecretStore::set`].
    pub async fn set_async(&self, key: &str, value: Option<String>) -> AppResult<()> {
        let (me, key) = (self.clone(), key.to_string());
        tokio::task::spawn_blocking(move || me.set(&key, value.as_deref()))
            .await
            .map_err(|e| AppError::State(format!("secret task failed: {e}")))?
    }
}

/// What the UI may see of a secret: that it is set, and its first and last characters.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    // Short secrets show nothing: a few visible characters would be most of them.
    if chars.len() < 12 {
        return "••••••".into();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// Secrets in memory (tests; stands in for the OS keyring).
#[cfg(test)]
#[derive(Default)]
pub struct MemorySecrets(Mutex<BTreeMap<String, String>>);

#[cfg(test)]
impl SecretBackend for MemorySecrets {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.0.lock().map_err(|e| e.to_string())?.get(key).cloned())
    }
    fn set(&self, key: &str, value: &str) -> Result<(), String> {
        self.0
            .lock()
            .map_err(|e| e.to_string())?
            .insert(key.into(), value.into());
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<(), String> {
        self.0.lock().map_err(|e| e.to_string())?.remove(key);
        Ok(())
    }
}

/// JSON map in a file created with mode 0600 and replaced atomically.
struct FileSecrets {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileSecrets {
    fn read(&self) -> Result<BTreeMap<String, String>, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| format!("{}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    fn write(&self, map: &BTreeMap<String, String>) -> Result<(), String> {
        use std::io::Write;
        let text = serde_json::to_string_pretty(map).map_err(|e| e.to_string())?;
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let err = |e: std::io::Error| format!("{}: {e}", tmp.display());
        let mut f = opts.open(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

impl SecretBackend for FileSecrets {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        let _g = self.lock.lock().map_err(|_| "secret store lock poisoned")?;
        Ok(self.read()?.get(key).cloned())
    }

    fn set(&self, key: &str, value: &str) -> Result<(), String> {
        let _g = self.lock.lock().map_err(|_| "secret store lock poisoned")?;
        let mut m = self.read()?;
        m.insert(key.to_string(), value.to_string());
        self.write(&m)
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        let _g = self.lock.lock().map_err(|_| "secret store lock poisoned")?;
        let mut m = self.read()?;
        if m.remove(key).is_some() {
            self.write(&m)?;
        }
        Ok(())
    }
}

mod keyring_backend {
    use super::{SecretBackend, KEYRING_SERVICE};

    /// The platform keyring through the `keyring` crate.
    pub struct OsKeyring;

    /// A read of a key that does not exist: if the keyring answers "no entry", it works.
    pub fn probe() -> Result<OsKeyring, String> {
        OsKeyring.get("probe").map(|_| OsKeyring)
    }

    fn entry(key: &str) -> Result<keyring::Entry, String> {
        keyring::Entry::new(KEYRING_SERVICE, key).map_err(|e| e.to_string())
    }

    impl SecretBackend for OsKeyring {
        fn get(&self, key: &str) -> Result<Option<String>, String> {
            match entry(key)?.get_password() {
                Ok(v) => Ok(Some(v)),
                Err(keyring::Error::NoEntry) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        }

        fn set(&self, key: &str, value: &str) -> Result<(), String> {
            entry(key)?.set_password(value).map_err(|e| e.to_string())
        }

        fn delete(&self, key: &str) -> Result<(), String> {
            match entry(key)?.delete_credential() {
                Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = SecretStore::file(dir.path().join(SECRETS_FILE));
        assert_eq!(s.info().kind, "file");
        assert!(s.info().note.contains("readable only by you"));
        assert_eq!(s.get(HF_TOKEN).unwrap(), None);
        s.set(HF_TOKEN, Some("hf_abcdefghijklmnop")).unwrap();
        s.set(&endpoint_key(3), Some("sk-1")).unwrap();
        assert_eq!(
            s.get(HF_TOKEN).unwrap().as_deref(),
            Some("hf_abcdefghijklmnop")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRETS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        }
        // A fresh store on the same file sees the values (it is the app's next start).
        let again = SecretStore::file(dir.path().join(SECRETS_FILE));
        assert_eq!(
            again.get(&endpoint_key(3)).unwrap().as_deref(),
            Some("sk-1")
        );
        again.set(HF_TOKEN, Some("   ")).unwrap();
        assert_eq!(again.get(HF_TOKEN).unwrap(), None, "blank clears");
        assert_eq!(s.get(&endpoint_key(3)).unwrap().as_deref(), Some("sk-1"));
    }

    #[test]
    fn masks_show_only_the_ends() {
        assert_eq!(mask("hf_abcdefghijklmnopWXYZ"), "hf_…WXYZ");
        assert_eq!(mask("short"), "••••••");
        assert!(!mask("hf_abcdefghijklmnopWXYZ").contains("abcdefgh"));
    }
}
