//! The scheduler panel's view settings (issue 6): whether it is docked, which sections are
//! open, the chart window, overlays and palette. Stored like the app settings, as one JSON
//! document in the `settings` table (key `panel`), so no schema change is needed; a field
//! added later gets its default in older documents (`serde(default)`). Kept apart from
//! [`AppSettings`](super::models::AppSettings) so that the settings screen, which saves its
//! whole document, never overwrites what the panel changed meanwhile (and vice versa).

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::core::db::Db;
use crate::core::error::{AppError, AppResult};

/// Key of the panel's document in the `settings` table.
const KEY: &str = "panel";
/// Smallest chart window (steps): fewer points make no line.
pub const MIN_WINDOW_STEPS: u32 = 8;
/// Largest chart window: the steps the panel keeps (`HISTORY_STEPS` in ui/src/lib/schedModel.ts).
pub const MAX_WINDOW_STEPS: u32 = 160;

/// Sections of the panel that can be folded (true = open).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PanelSections {
    /// Counters and sparklines.
    pub counters: bool,
    /// The layers × experts cache map.
    pub cache_map: bool,
    /// The timeline of recent tokens.
    pub timeline: bool,
    /// Policy, budget, prefetch, threads.
    pub controls: bool,
    /// The what-if replay.
    pub what_if: bool,
}

impl Default for PanelSections {
    fn default() -> Self {
        Self {
            counters: true,
            cache_map: true,
            timeline: true,
            controls: true,
            what_if: true,
        }
    }
}

/// Colours of the cache map and timeline.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PanelPalette {
    /// Okabe–Ito colours, told apart with red–green colour blindness.
    Colorblind,
    /// Green hit / amber fetch / violet CPU. Also what a palette name unknown to this
    /// version (saved by a newer one) reads as (`serde(other)` must be the last variant).
    #[default]
    #[serde(other)]
    Default,
}

/// What the panel remembers between runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PanelSettings {
    /// The panel is docked next to the current screen.
    pub docked: bool,
    /// Open sections.
    pub sections: PanelSections,
    /// Steps drawn by the sparklines and the timeline ("the last N tokens").
    pub window_steps: u32,
    /// Use-frequency heat map under the cache map's selections.
    pub heat_overlay: bool,
    /// Flash experts copied into or evicted from VRAM.
    pub cache_marks: bool,
    /// Palette.
    pub palette: PanelPalette,
}

impl Default for PanelSettings {
    fn default() -> Self {
        Self {
            docked: false,
            sections: PanelSections::default(),
            window_steps: 64,
            heat_overlay: true,
            cache_marks: true,
            palette: PanelPalette::Default,
        }
    }
}

/// Checks panel settings from the UI.
pub fn validate(s: &PanelSettings) -> AppResult<()> {
    if !(MIN_WINDOW_STEPS..=MAX_WINDOW_STEPS).contains(&s.window_steps) {
        return Err(AppError::invalid(
            "window_steps",
            format!(
                "{} is outside {MIN_WINDOW_STEPS}..={MAX_WINDOW_STEPS} steps",
                s.window_steps
            ),
        ));
    }
    Ok(())
}

/// Reads a stored document. The panel must open whatever is stored (a document written by
/// a newer version, edited by hand or cut short): unreadable JSON gives the defaults, a
/// window out of range is clamped, unknown fields are ignored, missing ones defaulted.
pub fn parse_stored(raw: &str) -> PanelSettings {
    match serde_json::from_str::<PanelSettings>(raw) {
        Ok(mut s) => {
            s.window_steps = s.window_steps.clamp(MIN_WINDOW_STEPS, MAX_WINDOW_STEPS);
            s
        }
        Err(e) => {
            tracing::warn!("panel settings unreadable ({e}); using the defaults");
            PanelSettings::default()
        }
    }
}

/// Loads the panel settings (defaults when none were saved).
pub async fn load(db: &Db) -> AppResult<PanelSettings> {
    let row = sqlx::query("SELECT value FROM settings WHERE key = ?")
        .bind(KEY)
        .fetch_optional(db)
        .await?;
    Ok(match row {
        None => PanelSettings::default(),
        Some(r) => parse_stored(&r.try_get::<String, _>(0)?),
    })
}

/// Validates and stores the panel settings.
pub async fn save(db: &Db, s: &PanelSettings) -> AppResult<()> {
    validate(s)?;
    sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(KEY)
        .bind(serde_json::to_string(s)?)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[sqlx::test(migrations = "../migrations")]
    async fn round_trip_and_defaults(db: Db) {
        assert_eq!(load(&db).await.unwrap(), PanelSettings::default());
        let s = PanelSettings {
            docked: true,
            sections: PanelSections {
                timeline: false,
                what_if: false,
                ..Default::default()
            },
            window_steps: 32,
            heat_overlay: false,
            cache_marks: false,
            palette: PanelPalette::Colorblind,
        };
        save(&db, &s).await.unwrap();
        assert_eq!(load(&db).await.unwrap(), s);
        // Saving again replaces the document (one row per key).
        let s2 = PanelSettings {
            window_steps: 160,
            ..s.clone()
        };
        save(&db, &s2).await.unwrap();
        assert_eq!(load(&db).await.unwrap(), s2);
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM settings WHERE key = 'panel'")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn invalid_window_is_refused_and_nothing_stored(db: Db) {
        for w in [0, MIN_WINDOW_STEPS - 1, MAX_WINDOW_STEPS + 1, u32::MAX] {
            let e = save(
                &db,
                &PanelSettings {
                    window_steps: w,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
            match e {
                AppError::Invalid { field, reason } => {
                    assert_eq!(field, "window_steps");
                    assert!(reason.contains(&w.to_string()), "{reason}");
                }
                other => panic!("expected invalid window_steps, got {other}"),
            }
        }
        for w in [MIN_WINDOW_STEPS, MAX_WINDOW_STEPS] {
            let s = PanelSettings {
                window_steps: w,
                ..Default::default()
            };
            validate(&s).unwrap();
        }
        assert_eq!(load(&db).await.unwrap(), PanelSettings::default());
    }

    #[sqlx::test(migrations = "../migrations")]
    async fn the_app_settings_document_is_separate(db: Db) {
        let app = crate::core::settings::models::AppSettings {
            threads: 3,
            ..Default::default()
        };
        crate::core::settings::helpers::save(&db, &app)
            .await
            .unwrap();
        save(
            &db,
            &PanelSettings {
                docked: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // Each save touches its own document only.
        crate::core::settings::helpers::save(&db, &app)
            .await
            .unwrap();
        assert!(load(&db).await.unwrap().docked);
        let back = crate::core::settings::helpers::load(&db).await.unwrap();
        assert_eq!(back.threads, 3);
    }

    #[test]
    fn stored_documents_of_other_versions_still_load() {
        // Written before a field existed: the missing ones take their defaults.
        let old = json!({ "docked": true, "sections": { "timeline": false } }).to_string();
        let s = parse_stored(&old);
        assert!(s.docked);
        assert!(!s.sections.timeline && s.sections.cache_map && s.sections.what_if);
        assert_eq!(s.window_steps, PanelSettings::default().window_steps);
        // Written by a newer version: unknown fields ignored.
        let newer = json!({ "window_steps": 16, "minimap": true, "palette": "colorblind" });
        let s = parse_stored(&newer.to_string());
        assert_eq!(s.window_steps, 16);
        assert_eq!(s.palette, PanelPalette::Colorblind);
        // Out of range (hand-edited): clamped, not refused.
        assert_eq!(
            parse_stored(r#"{"window_steps":100000}"#).window_steps,
            MAX_WINDOW_STEPS
        );
        assert_eq!(
            parse_stored(r#"{"window_steps":1}"#).window_steps,
            MIN_WINDOW_STEPS
        );
        // A palette this version does not know: the default one, the rest kept.
        let s = parse_stored(r#"{"palette":"neon","docked":true}"#);
        assert_eq!((s.palette, s.docked), (PanelPalette::Default, true));
        // Unreadable (cut short, wrong types): defaults rather than a panel that fails.
        assert_eq!(parse_stored("{\"docked\": tr"), PanelSettings::default());
        assert_eq!(
            parse_stored(r#"{"window_steps":"many"}"#),
            PanelSettings::default()
        );
    }
}
