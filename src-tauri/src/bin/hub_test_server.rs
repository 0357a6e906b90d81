//! Local Hub simulator for the end-to-end test: serves one repository holding a synthetic
//! tiny model (a real GGUF the app can load), cutting the first transfer mid-file.
//!
//! `hub-test-server --port-file PATH [--cut-after BYTES] [--slow-ms MS]`

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use hmoe_studio::hubsim::{Faults, HubSim, SimFile};

/// Repository the e2e test asks for.
const REPO: &str = "hmoe-test/tiny-moe-GGUF";
/// File name inside it.
const FILE: &str = "tiny-moe-Q8_0.gguf";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let port_file = arg("--port-file").context("--port-file PATH is required")?;
    let cut: Option<u64> = arg("--cut-after").map(|s| s.parse()).transpose()?;
    let slow: Option<u64> = arg("--slow-ms").map(|s| s.parse()).transpose()?;

    let dir = tempfile_dir()?;
    let model = dir.join(FILE);
    let opts = hmoe_engine::synth::SynthOptions {
        preset: hmoe_engine::synth::preset("tiny")?,
        recipe: hmoe_engine::synth::Recipe::parse("q8_0")?,
        seed: 11,
        layers: Some(2),
    };
    hmoe_engine::synth::write_synthetic(&opts, &model, |_, _| {})?;
    let data = std::fs::read(&model)?;
    let mut repos = HashMap::new();
    repos.insert(REPO.to_string(), vec![SimFile::new(FILE, data)]);
    let faults = Faults {
        cut_after: cut.map(|c| (c, 1)),
        slow: slow.map(Duration::from_millis),
        redirect: true,
        token: None,
    };
    let sim = HubSim::start("127.0.0.1:0", repos, vec![], faults).await?;
    std::fs::write(&port_file, sim.addr.port().to_string())?;
    println!(
        "hub-test-server listening on {} serving {REPO}/{FILE}",
        sim.endpoint()
    );
    // Runs until the test kills it (SIGTERM).
    std::future::pending::<()>().await;
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("hmoe-hubsim-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
