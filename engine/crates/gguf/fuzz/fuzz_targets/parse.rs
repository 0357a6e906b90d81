//! Fuzz the GGUF parser. Beyond "never panic", every file the parser accepts must be
//! re-writable by the writer, and the rewrite must be a fixed point (write ∘ parse twice
//! gives the same bytes), which checks that reader and writer agree on the format.
#![no_main]

use hmoe_gguf::{parse, GgufHeader, GgufWriter, MetaValue, TensorDesc};
use libfuzzer_sys::fuzz_target;

/// Larger alignments are valid but make the rewrite pad megabytes; not interesting.
const MAX_REWRITE_ALIGNMENT: u64 = 4096;

fn rewrite(h: &GgufHeader, data: &[u8]) -> Vec<u8> {
    let meta = h
        .metadata
        .iter()
        .map(|(k, v)| match k.as_str() {
            // The parser accepts any unsigned width; the writer writes the spec's u32.
            "general.alignment" => (k.clone(), MetaValue::U32(h.alignment as u32)),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let descs = h
        .tensors
        .iter()
        .map(|t| TensorDesc::new(t.name.clone(), &t.dims, t.dtype))
        .collect();
    let mut w = GgufWriter::new(Vec::new(), meta, descs).expect("accepted header must be writable");
    for t in &h.tensors {
        let bytes = &data[t.offset as usize..(t.offset + t.n_bytes) as usize];
        w.write_tensor(&t.name, bytes)
            .expect("tensor data of the declared size");
    }
    w.finish().expect("all tensors written")
}

fuzz_target!(|data: &[u8]| {
    let Ok(h) = parse(data) else { return };
    if h.alignment > MAX_REWRITE_ALIGNMENT {
        return;
    }
    let once = rewrite(&h, data);
    let h2 = parse(&once).expect("writer output must parse");
    assert_eq!(h2.tensors.len(), h.tensors.len());
    assert_eq!(rewrite(&h2, &once), once, "rewrite is not a fixed point");
});
