//! Routing traces: JSON lines, a header then one line per step (docs/notes/trace-format.md).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SchedError};
use crate::sched::{PredictedExpert, RoutedExpert};
use crate::shape::ModelShape;

/// Value of the header's `format` field.
pub const TRACE_FORMAT: &str = "hmoe-trace";
/// Current version.
pub const TRACE_VERSION: u32 = 1;

/// First line of a trace file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// Always [`TRACE_FORMAT`].
    pub format: String,
    /// [`TRACE_VERSION`].
    pub version: u32,
    /// The model's shape.
    pub shape: ModelShape,
    /// Where the trace comes from (`synthetic:qwen3-calibrated seed=1`, `engine:<model path>`).
    pub source: String,
}

impl TraceHeader {
    /// A header for `shape`.
    pub fn new(shape: ModelShape, source: impl Into<String>) -> Self {
        Self {
            format: TRACE_FORMAT.into(),
            version: TRACE_VERSION,
            shape,
            source: source.into(),
        }
    }
}

/// One layer of one step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TraceLayer {
    /// Routed experts (each once).
    pub e: Vec<u16>,
    /// Tokens per expert; empty means one token each (decode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub n: Vec<u32>,
    /// Router weight per expert (summed over tokens).
    pub w: Vec<f32>,
    /// Optional prediction of the next layer's experts made at this layer: (expert, prob).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pred: Vec<(u16, f32)>,
}

impl TraceLayer {
    /// The routed experts in the scheduler's form.
    pub fn routed(&self) -> impl Iterator<Item = RoutedExpert> + '_ {
        self.e.iter().enumerate().map(|(i, &expert)| RoutedExpert {
            expert,
            n_tokens: self.n.get(i).copied().unwrap_or(1),
            weight: self.w.get(i).copied().unwrap_or(0.0),
        })
    }

    /// The prediction in the scheduler's form.
    pub fn predicted(&self) -> impl Iterator<Item = PredictedExpert> + '_ {
        self.pred
            .iter()
            .map(|&(expert, prob)| PredictedExpert { expert, prob })
    }
}

/// One step (a decoded token, or a prefill chunk).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TraceStep {
    /// Step index.
    pub step: u64,
    /// Tokens in the step (1 for decode).
    pub tokens: u32,
    /// One entry per layer.
    pub layers: Vec<TraceLayer>,
}

/// A whole trace in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Header.
    pub header: TraceHeader,
    /// Steps in order.
    pub steps: Vec<TraceStep>,
}

fn check_step(shape: &ModelShape, s: &TraceStep) -> std::result::Result<(), String> {
    if s.layers.len() != shape.n_layers as usize {
        return Err(format!(
            "step {} has {} layers, shape has {}",
            s.step,
            s.layers.len(),
            shape.n_layers
        ));
    }
    for (l, layer) in s.layers.iter().enumerate() {
        if layer.w.len() != layer.e.len() || !(layer.n.is_empty() || layer.n.len() == layer.e.len())
        {
            return Err(format!("step {} layer {l}: e/n/w lengths differ", s.step));
        }
        let mut seen = vec![false; shape.n_experts as usize];
        for &e in layer.e.iter().chain(layer.pred.iter().map(|(e, _)| e)) {
            if e >= shape.n_experts {
                return Err(format!(
                    "step {} layer {l}: expert {e} out of range",
                    s.step
                ));
            }
        }
        for &e in &layer.e {
            if std::mem::replace(&mut seen[e as usize], true) {
                return Err(format!(
                    "step {} layer {l}: expert {e} listed twice",
                    s.step
                ));
            }
        }
    }
    Ok(())
}

impl Trace {
    /// Reads and validates a trace file.
    pub fn load(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|source| SchedError::Io {
            op: "open",
            path: path.into(),
            source,
        })?;
        Self::read(BufReader::new(f), path)
    }

    /// Reads a trace from any reader (`path` only names it in errors).
    pub fn read(r: impl BufRead, path: &Path) -> Result<Self> {
        let bad = |line, msg: String| SchedError::BadTrace {
            path: path.into(),
            line,
            msg,
        };
        let mut lines = r.lines().enumerate();
        let header: TraceHeader = match lines.next() {
            Some((_, Ok(l))) => serde_json::from_str(&l).map_err(|source| SchedError::Json {
                path: path.into(),
                line: 1,
                source,
            })?,
            Some((_, Err(source))) => {
                return Err(SchedError::Io {
                    op: "read",
                    path: path.into(),
                    source,
                })
            }
            None => return Err(bad(1, "empty file".into())),
        };
        if header.format != TRACE_FORMAT || header.version != TRACE_VERSION {
            return Err(bad(
                1,
                format!(
                    "format {} v{} (want {TRACE_FORMAT} v{TRACE_VERSION})",
                    header.format, header.version
                ),
            ));
        }
        let mut steps = Vec::new();
        for (i, l) in lines {
            let l = l.map_err(|source| SchedError::Io {
                op: "read",
                path: path.into(),
                source,
            })?;
            if l.trim().is_empty() {
                continue;
            }
            let s: TraceStep = serde_json::from_str(&l).map_err(|source| SchedError::Json {
                path: path.into(),
                line: i + 1,
                source,
            })?;
            check_step(&header.shape, &s).map_err(|m| bad(i + 1, m))?;
            steps.push(s);
        }
        Ok(Self { header, steps })
    }

    /// Writes the trace.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut w = TraceWriter::create(path, &self.header)?;
        for s in &self.steps {
            w.write_step(s)?;
        }
        w.finish()
    }

    /// Per-expert use counts (flat-indexed) over the first `steps` steps.
    pub fn counts(&self, steps: usize) -> Vec<u64> {
        let shape = &self.header.shape;
        let mut c = vec![0u64; shape.total_experts()];
        for s in self.steps.iter().take(steps) {
            for (l, layer) in s.layers.iter().enumerate() {
                for &e in &layer.e {
                    c[l * shape.n_experts as usize + e as usize] += 1;
                }
            }
        }
        c
    }
}

/// Streams a trace to a file, a step at a time (the engine's recorder).
pub struct TraceWriter {
    out: BufWriter<std::fs::File>,
    path: PathBuf,
    shape: ModelShape,
}

impl TraceWriter {
    /// Creates `path` and writes the header.
    pub fn create(path: &Path, header: &TraceHeader) -> Result<Self> {
        let f = std::fs::File::create(path).map_err(|source| SchedError::Io {
            op: "create",
            path: path.into(),
            source,
        })?;
        let mut w = Self {
            out: BufWriter::new(f),
            path: path.into(),
            shape: header.shape.clone(),
        };
        w.line(header)?;
        Ok(w)
    }

    fn line<T: Serialize>(&mut self, v: &T) -> Result<()> {
        let io = |source| SchedError::Io {
            op: "write",
            path: self.path.clone(),
            source,
        };
        serde_json::to_writer(&mut self.out, v).map_err(|e| io(std::io::Error::other(e)))?;
        self.out.write_all(b"\n").map_err(io)
    }

    /// Appends a step (validated against the header's shape).
    pub fn write_step(&mut self, step: &TraceStep) -> Result<()> {
        check_step(&self.shape, step).map_err(SchedError::InvalidArg)?;
        self.line(step)
    }

    /// Flushes the file.
    pub fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(|source| SchedError::Io {
            op: "flush",
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Trace {
        let shape = ModelShape::tiny(2, 6, 2);
        let layer = |e: Vec<u16>, n: Vec<u32>, pred| TraceLayer {
            w: vec![0.5; e.len()],
            e,
            n,
            pred,
        };
        Trace {
            header: TraceHeader::new(shape, "test"),
            steps: vec![
                TraceStep {
                    step: 0,
                    tokens: 5,
                    layers: vec![
                        layer(vec![1, 4], vec![3, 2], vec![(2, 0.75)]),
                        layer(vec![0, 5], vec![5, 5], vec![]),
                    ],
                },
                TraceStep {
                    step: 1,
                    tokens: 1,
                    layers: vec![
                        layer(vec![4, 2], vec![], vec![]),
                        layer(vec![3, 1], vec![], vec![]),
                    ],
                },
            ],
        }
    }

    #[test]
    fn record_then_replay_round_trips() {
        let dir = std::env::temp_dir().join(format!("hmoe-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.jsonl");
        let t = sample();
        t.save(&p).unwrap();
        let back = Trace::load(&p).unwrap();
        assert_eq!(back, t);
        let routed: Vec<_> = back.steps[1].layers[0].routed().collect();
        assert_eq!(routed[1].expert, 2);
        assert_eq!(routed[1].n_tokens, 1);
        assert_eq!(back.counts(2)[4], 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_traces_name_the_line() {
        let mut t = sample();
        t.steps[1].layers[1].e[0] = 9;
        let mut text = serde_json::to_string(&t.header).unwrap() + "\n";
        for s in &t.steps {
            text += &(serde_json::to_string(s).unwrap() + "\n");
        }
        let err = Trace::read(text.as_bytes(), Path::new("x.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.jsonl:3") && err.contains("out of range"),
            "{err}"
        );
        let err = Trace::read("{}".as_bytes(), Path::new("y"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("y:1"), "{err}");
    }
}
