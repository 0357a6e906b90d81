//! Deterministic English benchmark prompts of a target token length.
//!
//! The text is a fixed passage repeated word by word up to a word count. The client
//! cannot know the server's tokenizer, so the word count is calibrated against the
//! server: a probe request with `max_tokens` = 1 reports `usage.prompt_tokens` (chat
//! template included), and the word count is scaled by target / measured until the
//! count is within [`TOLERANCE_FRACTION`] of the target.

/// A fixed passage (written for this project; no external text).
pub const PASSAGE: &str = "The lighthouse keeper on the northern island kept a careful \
log of every ship that passed. Each morning she climbed the spiral stairs, cleaned the \
great lens, and wrote down the wind, the color of the sea, and the shapes of the clouds. \
In winter the storms came from the west and the waves climbed the rocks until the spray \
reached the lamp room windows. In summer the fishing boats returned at dusk, their decks \
full of silver fish, and the children of the village ran along the harbor wall to greet \
them. One year a ship arrived with no flag and no name painted on its bow. It anchored \
beyond the reef for three days, and nobody came ashore. On the fourth day a small boat \
rowed to the landing with a single passenger, an old man carrying a wooden box of maps. \
He said the maps showed currents that no chart had recorded, rivers inside the ocean that \
could carry a ship across the world in half the usual time. The keeper studied the maps \
by lamplight for many nights, comparing them with her own records of drifting wreckage and \
migrating birds. Slowly she understood that the old man was right, and that her log, \
written patiently over thirty years, held the proof.";

/// Instruction appended after the passage so the model has something to answer.
pub const INSTRUCTION: &str = "\n\nSummarize the story above and explain what it says about patience and careful observation.";

/// First guess of words per token for English with a BPE tokenizer (~1.3 tokens/word).
pub const WORDS_PER_TOKEN_GUESS: f64 = 0.75;
/// Calibration stops when the measured length is within this fraction of the target.
pub const TOLERANCE_FRACTION: f64 = 0.01;
/// Calibration probes at most this many times.
pub const MAX_CALIBRATION_ROUNDS: usize = 5;

/// The prompt made of the first `words` words of the repeated passage plus the instruction.
pub fn prompt_of_words(words: usize) -> String {
    let mut out = String::new();
    let passage: Vec<&str> = PASSAGE.split_whitespace().collect();
    for (i, w) in passage.iter().cycle().take(words.max(1)).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(w);
    }
    out.push_str(INSTRUCTION);
    out
}

/// Initial word count for a token target.
pub fn initial_words(target_tokens: usize) -> usize {
    ((target_tokens as f64 * WORDS_PER_TOKEN_GUESS).round() as usize).max(1)
}

/// Next word count after a probe measured `measured` tokens for `words` words.
/// `None` when the measurement is already within tolerance.
pub fn next_words(words: usize, measured: usize, target: usize) -> Option<usize> {
    let tolerance = ((target as f64 * TOLERANCE_FRACTION).ceil() as usize).max(1);
    if measured.abs_diff(target) <= tolerance || measured == 0 {
        return None;
    }
    // The template and instruction are a fixed overhead, so scale only the rest.
    let scaled = words as f64 * target as f64 / measured as f64;
    let next = (scaled.round() as usize).max(1);
    (next != words).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_deterministic_and_sized() {
        assert_eq!(prompt_of_words(300), prompt_of_words(300));
        let n = prompt_of_words(1000).split_whitespace().count();
        assert_eq!(n, 1000 + INSTRUCTION.split_whitespace().count());
    }

    #[test]
    fn calibration_converges_on_a_linear_tokenizer() {
        // Simulated tokenizer: 1.4 tokens per word plus 20 tokens of template.
        let count = |w: usize| (w as f64 * 1.4).round() as usize + 20;
        let target = 2048;
        let mut words = initial_words(target);
        for _ in 0..MAX_CALIBRATION_ROUNDS {
            match next_words(words, count(words), target) {
                Some(w) => words = w,
                None => break,
            }
        }
        assert!(
            count(words).abs_diff(target) <= 21,
            "{} vs {target}",
            count(words)
        );
    }
}
