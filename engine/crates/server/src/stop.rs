//! Stop sequences on streamed text: the stop string itself is never sent (OpenAI
//! semantics), and text that could be the start of a stop string is held back until
//! the next piece decides it.

/// Result of feeding one text piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopStep {
    /// Text safe to send now (may be empty).
    Continue(String),
    /// A stop sequence matched; this is the text before it, and generation must end.
    Stopped(String),
}

/// Incremental stop-sequence matcher.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// Matcher for these sequences (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Feeds the next piece of generated text.
    pub fn push(&mut self, piece: &str) -> StopStep {
        self.pending.push_str(piece);
        if self.stops.is_empty() {
            return StopStep::Continue(std::mem::take(&mut self.pending));
        }
        let first_match = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first_match {
            let before = self.pending[..at].to_string();
            self.pending.clear();
            return StopStep::Stopped(before);
        }
        let keep = self.held_back_len();
        let emit_to = self.pending.len() - keep;
        let rest = self.pending.split_off(emit_to);
        StopStep::Continue(std::mem::replace(&mut self.pending, rest))
    }

    /// Text still held back when the generation ends without a match.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of a stop string.
    fn held_back_len(&self) -> usize {
        let p = &self.pending;
        let mut best = 0;
        for (start, _) in p.char_indices() {
            let suffix = &p[start..];
            if self
                .stops
                .iter()
                .any(|s| s.len() > suffix.len() && s.starts_with(suffix))
            {
                best = best.max(suffix.len());
                break; // char_indices runs from the longest suffix down
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopStep::Continue(t) => out.push_str(&t),
                StopStep::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_split_across_pieces_is_removed() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), true)
        );
    }

    #[test]
    fn false_prefix_is_released() {
        assert_eq!(run(&["END"], &["a E", "x b"]), ("a Ex b".into(), false));
        assert_eq!(run(&["END"], &["tail E"]), ("tail E".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["zz", "b"], &["a b zz"]), ("a ".into(), true));
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        assert_eq!(run(&["é!"], &["caféé", "?"]), ("caféé?".into(), false));
        assert_eq!(run(&["é!"], &["café", "!x"]), ("caf".into(), true));
    }

    #[test]
    fn no_stops_passes_through() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
    }
}
