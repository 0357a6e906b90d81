//! Stop strings over a text stream: text that could still become a stop string is
//! held back until it is decided.

/// Matches stop strings across streamed pieces.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// The result of pushing a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to emit now (may be empty).
    Continue(String),
    /// A stop string matched: emit this text (before the stop string) and finish.
    Stopped(String),
}

impl StopMatcher {
    /// A matcher for these stop strings (empty ones are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds a piece of text.
    pub fn push(&mut self, piece: &str) -> StopOutcome {
        self.pending.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return StopOutcome::Stopped(out);
        }
        let hold = self.held_suffix_len();
        let emit_to = self.pending.len() - hold;
        let out = self.pending[..emit_to].to_string();
        self.pending.drain(..emit_to);
        StopOutcome::Continue(out)
    }

    /// Whatever is still held back (emitted when the stream ends without a stop).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop string.
    fn held_suffix_len(&self) -> usize {
        let p = &self.pending;
        let mut best = 0;
        for s in &self.stops {
            for (i, _) in p.char_indices() {
                let suffix = &p[i..];
                if suffix.len() > best && s.starts_with(suffix) {
                    best = suffix.len();
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_split_across_pieces() {
        let mut m = StopMatcher::new(&["</end>".to_string()]);
        assert_eq!(m.push("hello </"), StopOutcome::Continue("hello ".into()));
        assert_eq!(m.push("en"), StopOutcome::Continue(String::new()));
        assert_eq!(m.push("d> tail"), StopOutcome::Stopped(String::new()));
    }

    #[test]
    fn false_alarm_is_released() {
        let mut m = StopMatcher::new(&["STOP".to_string()]);
        assert_eq!(m.push("ST"), StopOutcome::Continue(String::new()));
        assert_eq!(m.push("AR"), StopOutcome::Continue("STAR".into()));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let mut m = StopMatcher::new(&["é!".to_string()]);
        assert_eq!(m.push("café"), StopOutcome::Continue("caf".into()));
        assert_eq!(m.push("?"), StopOutcome::Continue("é?".into()));
    }
}
