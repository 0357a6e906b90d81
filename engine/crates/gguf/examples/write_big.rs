//! Stream a large GGUF file through the writer and read it back, to check that memory
//! stays flat however big the file is. Usage: `write_big PATH GIB` (then watch max RSS,
//! e.g. with `/usr/bin/time -v`). Data is a cheap deterministic pattern, Q8_0 typed.

use std::path::PathBuf;
use std::time::Instant;

use hmoe_gguf::{GgmlDType, GgufError, GgufFile, GgufWriter, MetaValue, TensorDesc};

/// Q8_0 rows of 4096 elements: 128 blocks of 34 bytes.
const ROW: u64 = 4096;
const ROWS_PER_TENSOR: u64 = 64 * 1024;
const CHUNK: usize = 1 << 20;

fn main() -> Result<(), GgufError> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().unwrap_or_else(|| "big.gguf".into()));
    let gib: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(4);
    let per_tensor = GgmlDType::Q8_0
        .bytes_for(ROW * ROWS_PER_TENSOR)
        .unwrap_or(0);
    let n = (gib << 30).div_ceil(per_tensor);
    let descs: Vec<_> = (0..n)
        .map(|i| TensorDesc::new(format!("t.{i}"), &[ROW, ROWS_PER_TENSOR], GgmlDType::Q8_0))
        .collect();
    let meta = vec![(
        "general.architecture".to_owned(),
        MetaValue::String("test".into()),
    )];
    let start = Instant::now();
    let mut w = GgufWriter::create(&path, meta, descs)?;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
    while w.next_tensor().is_some() {
        let k = (w.remaining_in_tensor() as usize).min(CHUNK);
        w.write_chunk(&chunk[..k])?;
    }
    w.finish()?;
    let secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let f = GgufFile::open(&path)?;
    let open_ms = start.elapsed().as_secs_f64() * 1e3;
    let total = f.file_size_total();
    let last = f.tensors().last().map(|t| f.tensor_data(t)[..16].to_vec());
    println!(
        "wrote {n} tensors, {:.2} GiB in {secs:.1} s ({:.0} MiB/s); open {open_ms:.2} ms; last tensor starts {last:?}",
        total as f64 / (1u64 << 30) as f64,
        total as f64 / (1u64 << 20) as f64 / secs
    );
    Ok(())
}
