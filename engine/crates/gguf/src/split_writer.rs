//! [`SplitWriter`]: writes a model as llama.cpp-style split parts, streaming like
//! [`GgufWriter`]. Tensors go to parts in declaration order, balanced by bytes.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::split::{split_keys, split_path};
use crate::{GgufError, GgufWriter, MetaValue, TensorDesc};

type Part = (Vec<(String, MetaValue)>, Vec<TensorDesc>);

/// Streaming writer of `<prefix>-0000k-of-0000N.gguf` parts.
pub struct SplitWriter {
    paths: Vec<PathBuf>,
    pending: std::vec::IntoIter<Part>,
    current: Option<GgufWriter<BufWriter<File>>>,
    part: usize,
}

/// Cut `sizes` into `n_parts` non-empty contiguous groups of roughly equal bytes;
/// returns the start index of each group.
fn plan(sizes: &[u64], n_parts: usize) -> Vec<usize> {
    let total: u128 = sizes.iter().map(|&s| s as u128).sum();
    let mut starts = vec![0];
    let mut acc = 0u128;
    for (i, &s) in sizes.iter().enumerate() {
        let part = starts.len() - 1;
        let start = starts[part];
        let must_cut = sizes.len() - i == n_parts - part - 1;
        let full = acc * n_parts as u128 >= total * (part as u128 + 1);
        if i > start && part + 1 < n_parts && (full || must_cut) {
            starts.push(i);
        }
        acc += s as u128;
    }
    starts
}

impl SplitWriter {
    /// Plan `n_parts` parts for `tensors` and write the first part's header.
    ///
    /// The first part gets `metadata` plus the `split.*` keys; the others get the
    /// `split.*` keys (and `general.alignment` if set). Each part holds at least one tensor.
    pub fn create(
        prefix: &Path,
        metadata: Vec<(String, MetaValue)>,
        tensors: Vec<TensorDesc>,
        n_parts: usize,
    ) -> Result<SplitWriter, GgufError> {
        if n_parts == 0 || n_parts > tensors.len().max(1) || n_parts > u16::MAX as usize {
            let msg = format!(
                "cannot split {} tensors into {n_parts} parts",
                tensors.len()
            );
            return Err(GgufError::Writer(msg));
        }
        let total = tensors.len();
        let mut sizes = Vec::with_capacity(total);
        for t in &tensors {
            sizes.push(t.n_bytes()?);
        }
        let starts = plan(&sizes, n_parts);
        let alignment: Vec<_> = metadata
            .iter()
            .filter(|(k, _)| k == "general.alignment")
            .cloned()
            .collect();
        let mut first_meta = Some(metadata);
        let mut rest = tensors.into_iter();
        let mut parts = Vec::with_capacity(n_parts);
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(total);
            let group: Vec<TensorDesc> = rest.by_ref().take(end - start).collect();
            let mut meta = first_meta.take().unwrap_or_else(|| alignment.clone());
            meta.extend(split_keys(i, n_parts, total));
            parts.push((meta, group));
        }
        let paths = (0..n_parts)
            .map(|i| split_path(prefix, i, n_parts))
            .collect();
        let mut w = SplitWriter {
            paths,
            pending: parts.into_iter(),
            current: None,
            part: 0,
        };
        w.open_next()?;
        Ok(w)
    }

    fn open_next(&mut self) -> Result<(), GgufError> {
        if let Some(w) = self.current.take() {
            w.finish()?;
            self.part += 1;
        }
        if let Some((meta, group)) = self.pending.next() {
            self.current = Some(GgufWriter::create(&self.paths[self.part], meta, group)?);
        }
        Ok(())
    }

    /// Paths of all parts, first to last.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Name of the tensor whose data is expected next.
    pub fn next_tensor(&self) -> Option<&str> {
        self.current.as_ref().and_then(|w| w.next_tensor())
    }

    fn writer(&mut self) -> Result<&mut GgufWriter<BufWriter<File>>, GgufError> {
        self.current
            .as_mut()
            .ok_or_else(|| GgufError::Writer("data written after the last tensor".into()))
    }

    /// Append bytes to the current tensor (see [`GgufWriter::write_chunk`]).
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<(), GgufError> {
        self.writer()?.write_chunk(data)?;
        self.advance()
    }

    /// Write the whole data of the next tensor (see [`GgufWriter::write_tensor`]).
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        self.writer()?.write_tensor(name, data)?;
        self.advance()
    }

    fn advance(&mut self) -> Result<(), GgufError> {
        if self
            .current
            .as_ref()
            .is_some_and(|w| w.next_tensor().is_none())
        {
            self.open_next()?;
        }
        Ok(())
    }

    /// Check every tensor was written and close the last part; returns the part paths.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, GgufError> {
        // A part with tensors left is reported by its own writer; a complete part has
        // already been closed by `advance`, except a part with no tensors at all.
        if let Some(w) = self.current.take() {
            w.finish()?;
        }
        if self.pending.len() > 0 {
            let msg = format!(
                "{} of {} parts not written",
                self.pending.len(),
                self.paths.len()
            );
            return Err(GgufError::Writer(msg));
        }
        Ok(self.paths)
    }
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn plans_are_balanced_and_non_empty() {
        assert_eq!(plan(&[10, 10, 10, 10, 10, 10], 3), [0, 2, 4]);
        assert_eq!(plan(&[100, 1, 1, 1], 3), [0, 1, 2]);
        assert_eq!(plan(&[1, 1, 1, 100], 3), [0, 2, 3]);
        assert_eq!(plan(&[5, 5, 5], 3), [0, 1, 2]);
        assert_eq!(plan(&[5, 5, 5], 1), [0]);
    }
}
