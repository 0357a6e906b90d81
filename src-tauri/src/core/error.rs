//! The one error type every command returns. It serialises as `{ kind, message }` so the UI
//! can branch on `kind` and show `message` as is.

use serde::{Serialize, Serializer};

/// Errors a command can return to the UI.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A row the caller named does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of thing (`conversation`, `message`, `model`, `download`).
        what: &'static str,
        /// Its id as given.
        id: String,
    },
    /// The caller's input is invalid (names the field and why).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or argument.
        field: &'static str,
        /// Why it is rejected.
        reason: String,
    },
    /// The operation does not fit the current state (e.g. no model loaded).
    #[error("{0}")]
    State(String),
    /// SQLite failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Running the embedded migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A file-system operation failed (names the path).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The engine refused or failed.
    #[error("engine: {0}")]
    Engine(String),
    /// Talking to the Hub failed.
    #[error("hub: {0}")]
    Hub(String),
    /// A remote OpenAI-compatible endpoint refused or failed.
    #[error("remote endpoint: {0}")]
    Remote(String),
    /// A JSON value in the database or from the network is malformed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl AppError {
    /// Shorthand for [`AppError::Io`].
    pub fn io(op: &'static str, path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        AppError::Io {
            op,
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// Shorthand for [`AppError::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        AppError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// Machine-readable kind for the UI.
    pub fn kind(&self) -> &'static str {
        match self {
            AppError::NotFound { .. } => "not_found",
            AppError::Invalid { .. } => "invalid",
            AppError::State(_) => "state",
            AppError::Db(_) | AppError::Migrate(_) => "database",
            AppError::Io { .. } => "io",
            AppError::Engine(_) => "engine",
            AppError::Hub(_) => "hub",
            AppError::Remote(_) => "remote",
            AppError::Json(_) => "json",
        }
    }
}

impl Serialize for AppError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("AppError", 2)?;
        st.serialize_field("kind", self.kind())?;
        st.serialize_field("message", &self.to_string())?;
        st.end()
    }
}

/// Result alias for commands and services.
pub type AppResult<T> = Result<T, AppError>;
