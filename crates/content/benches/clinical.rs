//! What opening clinical content costs (not a test): parsing and rendering a 5 MB
//! C-CDA, and reading a 20 MB XDM package (checking every document's SHA-1), each run
//! `BENCH_RUNS` times (default 20). Prints min, p50 and max in milliseconds.
//!
//! `cargo bench -p directmail-content --bench clinical`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use directmail_content::cda::{CdaLimits, RenderOptions, parse_cda, render_document};
use directmail_content::xdm::{XdmLimits, read_xdm};

mod fixtures;

fn time(name: &str, runs: usize, mut f: impl FnMut() -> usize) {
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "{name:<44} min {:>7.1} ms   p50 {:>7.1} ms   max {:>7.1} ms   ({runs} runs)",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}

fn main() {
    let runs = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cda = fixtures::big_cda(5 * 1024 * 1024);
    let limits = CdaLimits::default();
    time(
        &format!("C-CDA {:.1} MB: parse", cda.len() as f64 / 1048576.0),
        runs,
        || parse_cda(&cda, &limits).expect("parses").sections().len(),
    );
    time(
        &format!(
            "C-CDA {:.1} MB: parse and render",
            cda.len() as f64 / 1048576.0
        ),
        runs,
        || {
            let doc = parse_cda(&cda, &limits).expect("parses");
            render_document(&doc, &RenderOptions::new("/leave?to=")).len()
        },
    );

    let package = fixtures::big_xdm(&cda);
    let xdm_limits = XdmLimits::default();
    time(
        &format!(
            "XDM {:.1} MB: read and check",
            package.len() as f64 / 1048576.0
        ),
        runs,
        || {
            let p = read_xdm(&package, &xdm_limits).expect("reads");
            assert!(p.problems.is_empty());
            p.documents().count()
        },
    );
}
